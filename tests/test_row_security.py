"""Row-level security, the second wall between tenants (sql/migrations/0019_row_security.sql).

The API connects as gateway_app (tests/conftest.py `settings`), held to the policies; `db` is the superuser
that arranges and checks. Queries here leave the tenant filter out on purpose: what stops them is PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from conftest import add_user, assert_envelope, issue_token, with_database
from test_ledger import S1, LedgerApi, purchase, receipt

from gateway import auth
from gateway import db as gwdb
from gateway.app import create_app
from gateway.config import Settings
from gateway.db import with_user
from gateway.forms import Registry
from gateway.tenants import create_tenant

# Tables without tenant rows, left without row security; the migration gives each its reason.
EXEMPT = {"tenant", "login_throttle", "revoked_access", "rate_limit_window", "schema_migrations"}
# The webhook job queue's own tables (gateway/webhook_worker.py), which hold no tenant column.
QUEUE_TABLES = "procrastinate_"

TABLES = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       EXISTS (SELECT FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant,
       array(SELECT p.polname::text FROM pg_policy p WHERE p.polrelid = c.oid ORDER BY 1) AS policies
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""


async def test_every_tenant_table_has_row_security_enabled_and_forced(db: asyncpg.Connection) -> None:
    rows = await db.fetch(TABLES)
    tenant_tables = [r for r in rows if r["has_tenant"]]
    assert len(tenant_tables) >= 25
    for r in tenant_tables:
        assert (r["relrowsecurity"], r["relforcerowsecurity"]) == (True, True), r["relname"]
        assert r["policies"] == ["gateway_maintenance", "gateway_tenant"], r["relname"]
    unsecured = {r["relname"] for r in rows if not r["relrowsecurity"]}
    assert {name for name in unsecured if not name.startswith(QUEUE_TABLES)} == EXEMPT


async def test_the_api_connects_as_a_role_held_to_row_security(app: Any) -> None:
    pool = app.state.gateway.pool
    row = await pool.fetchrow("SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles"
                              " WHERE rolname = current_user")
    assert dict(row) == {"name": gwdb.APP_ROLE, "rolsuper": False, "rolbypassrls": False}
    assert await pool.fetchval("SELECT has_table_privilege('schema_migrations', 'SELECT')") is False
    assert await pool.fetchval("SELECT has_table_privilege('tenant', 'UPDATE')") is False


async def test_a_role_that_bypasses_row_security_is_warned_of(settings: Settings, db_url: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for url, warned in ((db_url, True), (settings.database_url, False)):
        assert url is not None
        pool = await gwdb.create_pool(url, settings)
        await pool.close()
        out = capsys.readouterr().out
        assert ("row_security_off" in out) is warned, out
        if warned:
            assert "superuser" in out and "second wall between tenants is off" in out


async def test_a_second_database_of_the_server_migrates_with_the_role_it_shares(db: asyncpg.Connection,
                                                                               db_url: str) -> None:
    name = f"gw_second_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE DATABASE "{name}"')
    try:
        owner = await asyncpg.connect(with_database(db_url, name))
        try:
            assert "0019_row_security.sql" in await gwdb.migrate(owner)  # the role exists already: kept as it is
        finally:
            await owner.close()
        api = await asyncpg.connect(with_user(with_database(db_url, name), gwdb.APP_ROLE))
        try:
            assert await api.fetchval("SELECT count(*) FROM customer") == 0
            assert await api.fetchval("SELECT has_table_privilege('customer', 'INSERT')") is True
        finally:
            await api.close()
    finally:
        await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert await db.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", gwdb.APP_ROLE) == 1


# --- two tenants' books, read and written with the tenant filter left out ----------------------------------

async def _books(client: httpx.AsyncClient, token: str, idempotency_key: str) -> None:
    """Masters, vouchers with their postings and stock, a payment allocated, an idempotent write, a refresh
    token, audit rows: rows in most tenant tables."""
    api = LedgerApi(client, token)
    for form, data in (
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"}]),
        ("setSupplier", [{"SupplierCode": "NCC1", "SupplierName": "Supplies"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"},
                     {"ItemCode": "SV1", "ItemName": "Installation", "ItemType": "DV", "StockTracked": 0}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main"}]),
    ):
        assert (await api.sync(form, data)).status_code == 200, form
    await api.send("setPurchaseInvoice", [purchase("P1", "2026-01-10", 10, 100)])
    await api.send("setSaleInvoice", [S1])
    await api.send("setCashReceipt", [receipt(1000, 1000)])
    resp = await client.post("/api/SyncData", headers={"Authorization": token, "Idempotency-Key": idempotency_key},
                             json={"form": "setDepartment", "data": [{"DepartmentCode": "D1",
                                                                       "DepartmentName": "Sales"}]})
    assert resp.status_code == 200, resp.text


@pytest.fixture
async def two_tenants(app: Any, client: httpx.AsyncClient, db: asyncpg.Connection,
                      registry: Registry) -> dict[str, int]:
    ids = {}
    for code, user in (("north", "north1"), ("south", "south1")):
        ids[code] = await create_tenant(db, registry, code, code.title())
        await add_user(db, user, "admin", tenant=code)
        await db.execute("INSERT INTO tenant_role (tenant_id, name, permissions) VALUES ($1, 'cashier', $2)",
                         ids[code], ["read:*"])
        await db.execute("UPDATE tenant SET negative_stock = 'allow' WHERE id = $1", ids[code])
        await _books(client, await issue_token(app, db, user), f"key-{code}")
        resp = await client.post("/api/getToken", json={"username": user, "password": "correct horse battery",
                                                         "refresh": True})
        assert resp.status_code == 200, resp.text
    return ids


@pytest.fixture
async def app_conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the API's role, outside the app."""
    assert settings.database_url is not None
    conn = await gwdb.connect(settings.database_url)
    yield conn
    await conn.close()


async def _tenant_tables(db: asyncpg.Connection) -> list[str]:
    return [r["relname"] for r in await db.fetch(TABLES) if r["has_tenant"]]


async def _counts(conn: asyncpg.Connection, table: str) -> dict[int, int]:
    # No tenant filter: whatever row security lets through.
    return {r["tenant_id"]: r["n"] for r in await conn.fetch(
        f'SELECT tenant_id, count(*) AS n FROM "{table}" GROUP BY tenant_id')}


async def test_without_a_tenant_filter_the_api_sees_only_its_tenants_rows(
        two_tenants: dict[str, int], db: asyncpg.Connection, app_conn: asyncpg.Connection) -> None:
    north, south = two_tenants["north"], two_tenants["south"]
    tables = await _tenant_tables(db)
    everything = {t: await _counts(db, t) for t in tables}
    # The books reached most tables for both tenants: the checks below are about rows that are there.
    filled = [t for t in tables if everything[t].get(south) and everything[t].get(north)]
    assert len(filled) >= 15, sorted(set(tables) - set(filled))

    # No tenant set yet: nothing at all.
    for table in tables:
        assert await _counts(app_conn, table) == {}, table

    principal = await app_conn.fetchrow(gwdb.QUERIES["user_for_token"], "north1", "jti")
    assert principal["tenant_id"] == north
    for table in tables:
        seen = await _counts(app_conn, table)
        assert seen == {k: v for k, v in everything[table].items() if k == north}, table

    # The reset the pool sends puts the connection back to nothing.
    await app_conn.execute(gwdb.QUERIES["tenant_reset"])
    for table in tables:
        assert await _counts(app_conn, table) == {}, table


async def test_the_api_cannot_write_another_tenants_rows(two_tenants: dict[str, int], db: asyncpg.Connection,
                                                         app_conn: asyncpg.Connection) -> None:
    north, south = two_tenants["north"], two_tenants["south"]
    await app_conn.fetchrow(gwdb.QUERIES["user_for_token"], "north1", "jti")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await app_conn.execute("INSERT INTO customer (tenant_id, customer_code, customer_name, change_seq)"
                               " VALUES ($1, 'KH9', 'Planted', 1)", south)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await app_conn.execute("UPDATE customer SET tenant_id = $1", south)  # moving its own rows over
    # Unfiltered updates and deletes reach the tenant's own rows only.
    async with app_conn.transaction():
        assert await app_conn.execute("UPDATE customer SET customer_name = 'Renamed'") == "UPDATE 1"
        assert await app_conn.execute("DELETE FROM refresh_token") == "DELETE 1"
    assert await db.fetchval("SELECT customer_name FROM customer WHERE tenant_id = $1", south) == "Alpha"
    assert await db.fetchval("SELECT count(*) FROM refresh_token WHERE tenant_id = $1", south) == 1
    assert await db.fetchval("SELECT count(*) FROM refresh_token WHERE tenant_id = $1", north) == 0
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("UPDATE tenant SET name = 'Mine' WHERE id = $1", south)  # the directory: read only


async def test_a_connection_goes_back_to_the_pool_without_its_tenant(
        two_tenants: dict[str, int], settings: Settings) -> None:
    assert settings.database_url is not None
    pool = await gwdb.create_pool(settings.database_url, Settings(
        data_dir=settings.data_dir, pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire() as conn:
            await auth.principal_for(conn, {"sub": "south1", "jti": "x", "tenant": "south", "iat": 2**40})
            assert await conn.fetchval("SELECT count(*) FROM customer") == 1
            pid = conn.get_server_pid()
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same connection, reset
            assert await conn.fetchval("SELECT gateway_tenant()") is None
            assert await conn.fetchval("SELECT count(*) FROM customer") == 0
    finally:
        await pool.close()


async def test_a_write_requests_audit_row_clears_its_tenant_so_the_pool_has_nothing_to_reset(
        two_tenants: dict[str, int], settings: Settings, registry: Any, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit row is a write request's last statement: it clears the tenant in the same round trip. A
    refused write (a 601; a 422 raised once the user's row was read) leaves its connection the same way."""
    resets: list[str] = []
    reset_query = gwdb.GatewayConnection.get_reset_query

    def watched(conn: gwdb.GatewayConnection) -> str:
        resets.append(reset_query(conn))
        return resets[-1]

    monkeypatch.setattr(gwdb.GatewayConnection, "get_reset_query", watched)
    app = create_app(dataclasses.replace(settings, pool_min_size=1, pool_max_size=1), registry)
    async with app.router.lifespan_context(app):
        pool = app.state.gateway.pool
        token = await issue_token(app, db, "south1")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            for record, key, code in (({"CustomerCode": "KH7", "CustomerName": "Seven"}, "k1", 200),
                                      ({"CustomerCode": "KH8"}, "k2", 601),  # no name
                                      ({"CustomerCode": "KH9", "CustomerName": "Nine"}, "k1", 422)):  # k1 reused
                resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": [record]},
                                         headers={"Authorization": token, "Idempotency-Key": key})
                assert resp.json()["code"] == code, resp.text
                assert resets[-1] == ""  # the request left nothing for the pool's reset to do
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT gateway_tenant()") is None
                    assert await conn.fetchval("SELECT count(*) FROM customer") == 0
    rows = await db.fetch("SELECT status FROM audit_log WHERE kind = 'write' AND idempotency_key IN ('k1', 'k2')"
                          " ORDER BY id")
    assert [r["status"] for r in rows] == [200, 601, 422]


async def test_the_streamed_pull_reads_the_tenants_rows_on_its_own_connection(
        two_tenants: dict[str, int], client: httpx.AsyncClient, app: Any, db: asyncpg.Connection) -> None:
    token = await issue_token(app, db, "south1")
    resp = await client.post("/api/GetData", headers={"Authorization": token}, json={"form": "getItem"})
    body = assert_envelope(resp)
    assert sorted(r["ItemCode"] for r in body["data"]) == ["IT1", "SV1"]


# --- X-Tenant-ID -------------------------------------------------------------------------------------------

async def _customers(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM customer")


async def test_a_matching_x_tenant_id_passes_by_code_or_id(client: httpx.AsyncClient, token: str,
                                                           db: asyncpg.Connection) -> None:
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    for n, header in enumerate(("acme", str(tenant_id))):
        resp = await client.post("/api/SyncData", headers={"Authorization": token, "X-Tenant-ID": header},
                                 json={"form": "setCustomer", "data": [{"CustomerCode": f"C{n}",
                                                                         "CustomerName": "Name"}]})
        assert assert_envelope(resp)["code"] == 200
    resp = await client.post("/api/GetData", headers={"Authorization": token, "X-Tenant-ID": "acme"},
                             json={"form": "getCustomer", "limit": 10})
    assert len(assert_envelope(resp)["data"]) == 2


@pytest.mark.parametrize("header", ["other", "ACME", "not a tenant!", "999", "0001", ""])
async def test_another_tenant_in_x_tenant_id_is_refused_and_nothing_written(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, header: str) -> None:
    await db.execute("INSERT INTO tenant (code, name) VALUES ('other', 'Other')")
    for endpoint, body in (("SyncData", {"form": "setCustomer", "data": [{"CustomerCode": "C1",
                                                                          "CustomerName": "Name"}]}),
                           ("SyncVoucher", {"form": "setSaleInvoice", "data": [S1]}),
                           ("GetData", {"form": "getCustomer"}),
                           ("revokeToken", {"all": True})):
        resp = await client.post(f"/api/{endpoint}", headers={"Authorization": token, "X-Tenant-ID": header},
                                 content=msgspec.json.Encoder(decimal_format="number").encode(body))
        answer = assert_envelope(resp)
        assert (resp.status_code, answer["code"]) == (403, 403), (endpoint, answer)
        assert "X-Tenant-ID" in answer["messages"] and "'acme'" in answer["messages"]
    assert await _customers(db) == 0
    assert await db.fetchval("SELECT count(*) FROM voucher") == 0
    # The token was not revoked: it still writes.
    resp = await client.post("/api/SyncData", headers={"Authorization": token},
                             json={"form": "setCustomer", "data": [{"CustomerCode": "C1", "CustomerName": "Name"}]})
    assert assert_envelope(resp)["code"] == 200


async def test_a_browser_page_may_send_x_tenant_id(settings: Settings, registry: Registry) -> None:
    origin = "https://pos.example.com"
    app = create_app(dataclasses.replace(settings, cors_origins=(origin,)), registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client:
        resp = await client.options("/api/SyncData", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-tenant-id"})
    assert resp.status_code == 200, resp.text
    assert "x-tenant-id" in resp.headers["access-control-allow-headers"].lower()
