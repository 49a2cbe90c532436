"""The audit log: the rows the gateway writes for writes and authentication events, getAuditLog, retention."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, add_user, assert_envelope, issue_token, login
from test_cli import Gateway, gateway  # noqa: F401  (the CLI fixture)

from gateway import audit, auth

CUSTOMERS = [{"CustomerCode": "C1", "CustomerName": "One"}, {"CustomerCode": "C2", "CustomerName": "Two"}]


@pytest.fixture(autouse=True)
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    # A `since` page stops before rows younger than a second; the tests read what they wrote a moment ago.
    monkeypatch.setattr(audit, "SINCE_SETTLE_SECONDS", 0.0)


async def rows(db: asyncpg.Connection, kind: str | None = None) -> list[dict[str, Any]]:
    records = await db.fetch("SELECT * FROM audit_log WHERE $1::text IS NULL OR kind = $1 ORDER BY id", kind)
    return [dict(r) for r in records]


def assert_no_secret(row: dict[str, Any], *secrets: str) -> None:
    text = json.dumps(row, default=str)
    for secret in secrets:
        assert secret not in text, (secret, row)


async def tenant_id(db: asyncpg.Connection, code: str = "acme") -> int:
    return await db.fetchval("SELECT id FROM tenant WHERE code = $1", code)


# --- authentication events ------------------------------------------------------------------------------

async def test_a_login_its_failures_and_its_throttling_are_recorded_without_the_password(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await login(client, "alice")
    resp = await client.post("/api/getToken", json={"username": "alice", "password": "Tr0ub4dor&3"},
                             headers={"X-Request-ID": "login-2"})
    assert resp.status_code == 401
    # A password typed where the name goes: no user has that name, so it is not kept.
    assert (await client.post("/api/getToken", json={"username": PASSWORD, "password": "x"})).status_code == 401
    await db.execute("UPDATE app_user SET disabled = true WHERE username = 'alice'")
    assert (await client.post("/api/getToken", json={"username": "alice", "password": PASSWORD})).status_code == 401

    ok, wrong, unknown, disabled = await rows(db)
    acme = await tenant_id(db)
    assert (ok["kind"], ok["username"], ok["tenant_id"], ok["endpoint"], ok["status"]) == (
        "login", "alice", acme, "getToken", 200)
    assert ok["client_addr"] == "127.0.0.1" and len(ok["request_id"]) == 32 and ok["duration_ms"] >= 0
    assert (wrong["kind"], wrong["username"], wrong["tenant_id"], wrong["status"], wrong["detail"]) == (
        "login_failed", "alice", acme, 401, "wrong password")
    assert wrong["request_id"] == "login-2"
    assert (unknown["kind"], unknown["username"], unknown["tenant_id"], unknown["detail"]) == (
        "login_failed", None, None, "unknown user")
    assert (disabled["kind"], disabled["username"], disabled["detail"]) == ("login_failed", "alice", "user disabled")
    for row in (ok, wrong, unknown, disabled):
        assert_no_secret(row, PASSWORD, "Tr0ub4dor&3", token)
        assert row["counts"] is None and row["form"] is None


async def test_a_throttled_login_is_recorded(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        assert (await client.post("/api/getToken", json={"username": "alice", "password": "bad"})).status_code == 401
    resp = await client.post("/api/getToken", json={"username": "alice", "password": PASSWORD})
    assert resp.status_code == 429
    throttled = await rows(db, "login_throttled")
    assert len(throttled) == 1
    row = throttled[0]
    assert (row["username"], row["tenant_id"], row["status"], row["endpoint"]) == (
        "alice", await tenant_id(db), 429, "getToken")
    assert "Too many failed logins" in row["detail"]
    assert_no_secret(row, PASSWORD)
    assert len(await rows(db, "login_failed")) == auth.MAX_FAILURES_PER_PAIR


async def test_refused_tokens_are_recorded_with_the_user_only_when_the_token_is_ours(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                             headers={"Authorization": forged, "X-Request-ID": "forged-1"})
    assert resp.status_code == 401
    token = await issue_token(app, db, "alice")
    await db.execute("UPDATE app_user SET token_version = token_version + 1 WHERE username = 'alice'")
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": token})
    assert resp.status_code == 401
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                             headers={"Authorization": token})
    assert resp.status_code == 401

    refused = await rows(db, "token_refused")
    assert len(refused) == 3
    first, stale_read, stale_write = refused
    assert (first["username"], first["tenant_id"], first["status"], first["detail"], first["request_id"]) == (
        None, None, 401, "Token is invalid", "forged-1")
    for row in (stale_read, stale_write):
        assert (row["username"], row["tenant_id"], row["status"], row["detail"]) == (
            "alice", await tenant_id(db), 401, "Token is no longer valid")
    for row in refused:
        assert_no_secret(row, forged, token, token.split(".")[2])
    assert await rows(db, "write") == [], "a refused token is no write"


async def test_the_cli_user_changes_are_recorded(gateway: Gateway, db: asyncpg.Connection) -> None:  # noqa: F811
    await add_user(db, "alice")
    new_password = "a new password 123"
    assert (await gateway("user", "passwd", "alice", "--password", new_password))[0] == 0
    assert (await gateway("user", "role", "alice", "reader"))[0] == 0
    assert (await gateway("user", "disable", "alice"))[0] == 0
    assert (await gateway("user", "enable", "alice"))[0] == 0
    assert (await gateway("user", "disable", "nobody"))[0] == 2
    events = await rows(db)
    assert [r["kind"] for r in events] == ["password_changed", "role_changed", "user_disabled", "user_enabled"]
    acme = await tenant_id(db)
    for row in events:
        assert (row["username"], row["tenant_id"], row["endpoint"]) == ("alice", acme, "cli")
        assert "gateway CLI as " in row["detail"]
        assert_no_secret(row, new_password, PASSWORD)
    assert events[1]["detail"].startswith("role reader; ")


# --- write requests -------------------------------------------------------------------------------------

async def test_a_write_is_recorded_with_its_counts_key_and_request_id(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, token: str) -> None:
    headers = {"Authorization": token, "X-Request-ID": "req-1"}
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS}, headers=headers)
    assert assert_envelope(resp)["result"]["inserted"] == 2
    changed = [CUSTOMERS[0], {**CUSTOMERS[1], "CustomerName": "Two again"}]
    headers = {"Authorization": token, "X-Request-ID": "req-2", "Idempotency-Key": "key-2"}
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": changed}, headers=headers)
    assert assert_envelope(resp)["result"]["updated"] == 1
    replay = await client.post("/api/SyncData", json={"form": "setCustomer", "data": changed}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"

    first, second, replayed = await rows(db, "write")
    acme = await tenant_id(db)
    assert (first["tenant_id"], first["username"], first["endpoint"], first["form"], first["status"]) == (
        acme, "writer1", "SyncData", "setCustomer", 200)
    assert json.loads(first["counts"]) == {"inserted": 2, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert (first["request_id"], first["idempotency_key"], first["client_addr"]) == ("req-1", None, "127.0.0.1")
    assert first["duration_ms"] > 0 and first["detail"] is None
    assert json.loads(second["counts"]) == {"inserted": 0, "updated": 1, "unchanged": 1, "deleted": 0, "failed": 0}
    assert (second["request_id"], second["idempotency_key"]) == ("req-2", "key-2")
    assert (replayed["idempotency_key"], replayed["detail"], replayed["status"]) == ("key-2", "replayed", 200)
    for row in (first, second, replayed):
        assert_no_secret(row, token, "Two again", "One")  # no token, no record of the body


async def test_refused_writes_are_recorded(app: Any, client: httpx.AsyncClient, db: asyncpg.Connection,
                                           token: str) -> None:
    invalid = [CUSTOMERS[0], {"CustomerCode": "C2"}]  # no CustomerName: the batch is refused whole
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": invalid},
                             headers={"Authorization": token})
    assert assert_envelope(resp)["code"] == 601
    # The same with an Idempotency-Key: that answer is rendered where the key's row keeps it.
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": invalid},
                             headers={"Authorization": token, "Idempotency-Key": "k601"})
    assert assert_envelope(resp)["code"] == 601
    await add_user(db, "reader1", "reader")
    reader = await issue_token(app, db, "reader1")
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                             headers={"Authorization": reader})
    assert resp.status_code == 403
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                             headers={"Authorization": token, "Idempotency-Key": ""})
    assert resp.status_code == 400
    resp = await client.post("/api/SyncVoucher", content=b'{"form": "setSaleInvoice", "data": [',
                             headers={"Authorization": token})
    assert resp.status_code == 400
    resp = await client.post("/api/SyncData", json={"form": "setNothing", "data": CUSTOMERS},
                             headers={"Authorization": token})
    assert assert_envelope(resp)["code"] == 201
    assert await db.fetchval("SELECT count(*) FROM customer") == 0

    plain, keyed, forbidden, bad_key, bad_json, no_form = await rows(db, "write")
    failed = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 1}
    assert (plain["status"], json.loads(plain["counts"]), plain["username"]) == (601, failed, "writer1")
    assert plain["detail"] == "Data structure error"  # not the message, which quotes the records
    assert_no_secret(plain, "C2", "C1")
    assert (keyed["status"], json.loads(keyed["counts"]), keyed["idempotency_key"]) == (601, failed, "k601")
    assert (forbidden["status"], forbidden["username"], forbidden["counts"]) == (403, "reader1", None)
    assert forbidden["tenant_id"] == await tenant_id(db)
    assert (bad_key["status"], bad_key["idempotency_key"]) == (400, None)
    assert (bad_json["endpoint"], bad_json["form"], bad_json["status"]) == ("SyncVoucher", None, 400)
    assert "not valid JSON" in bad_json["detail"]
    assert (no_form["form"], no_form["status"], no_form["detail"]) == (None, 201, "Form 'setNothing' does not exist")
    assert await rows(db, "token_refused") == []


async def test_a_failing_audit_insert_leaves_the_write_answered(
        client: httpx.AsyncClient, db: asyncpg.Connection, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    await db.execute("ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    try:
        resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                                 headers={"Authorization": token})
        assert assert_envelope(resp)["result"]["inserted"] == 2
    finally:
        await db.execute("ALTER TABLE audit_log DROP CONSTRAINT refuse_all")
    assert await db.fetchval("SELECT count(*) FROM customer") == 2
    assert await rows(db) == []
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["event"] == "audit_failed" and line["kind"] == "write" for line in logged), logged


# --- getAuditLog ----------------------------------------------------------------------------------------

async def _admin(app: Any, db: asyncpg.Connection, name: str = "boss", tenant: str = "acme") -> str:
    await add_user(db, name, "admin", tenant=tenant)
    return await issue_token(app, db, name)


async def _read(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    resp = await client.post("/api/GetData", json={"form": "getAuditLog", **params},
                             headers={"Authorization": token})
    return assert_envelope(resp)


async def test_get_audit_log_filters_pages_and_follows(app: Any, client: httpx.AsyncClient,
                                                       db: asyncpg.Connection, token: str) -> None:
    admin = await _admin(app, db)
    for i in range(3):
        resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS[:1]},
                                 headers={"Authorization": token, "Idempotency-Key": f"k{i}"})
        assert resp.status_code == 200
    resp = await client.post("/api/SyncData", json={"form": "setSupplier",
                                                    "data": [{"SupplierCode": "S1", "SupplierName": "S"}]},
                             headers={"Authorization": token})
    assert resp.status_code == 200
    await add_user(db, "alice")
    await client.post("/api/getToken", json={"username": "alice", "password": "nope"})
    # Another tenant's events are not this admin's to read.
    await add_user(db, "other", tenant="globex")
    await login(client, "other")

    body = await _read(client, admin)
    kinds = [r["Kind"] for r in body["data"]]
    assert kinds == ["login_failed", "write", "write", "write", "write"]  # newest first; globex's login absent
    assert body["records"] == 5 and body["next"] is None
    newest = body["data"][0]
    assert newest["Username"] == "alice" and newest["Detail"] == "wrong password" and newest["At"].endswith("Z")
    assert body["data"][1]["Form"] == "setSupplier"
    assert body["data"][2]["Counts"] == {"inserted": 0, "updated": 0, "unchanged": 1, "deleted": 0, "failed": 0}

    writes = await _read(client, admin, kind="write", formName="SETCUSTOMER", username="writer1")
    assert [r["IdempotencyKey"] for r in writes["data"]] == ["k2", "k1", "k0"]
    assert (await _read(client, admin, kind=["login", "login_failed"]))["records"] == 1
    assert (await _read(client, admin, dateFrom="2000-01-01", dateTo="2000-12-31"))["records"] == 0
    today = newest["At"][:10]
    assert (await _read(client, admin, dateFrom=today, dateTo=today))["records"] == 5

    page1 = await _read(client, admin, limit=2)
    page2 = await _read(client, admin, limit=2, next=page1["next"])
    page3 = await _read(client, admin, limit=2, next=page2["next"])
    ids = [r["Id"] for page in (page1, page2, page3) for r in page["data"]]
    assert ids == [r["Id"] for r in body["data"]] and page3["next"] is None

    followed = await _read(client, admin, since=0, limit=3)
    assert [r["Id"] for r in followed["data"]] == sorted(ids)[:3] and followed["since"] == sorted(ids)[2]
    rest = await _read(client, admin, since=followed["since"])
    assert [r["Id"] for r in rest["data"]] == sorted(ids)[3:]
    assert (await _read(client, admin, since=rest["since"]))["data"] == []
    await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                      headers={"Authorization": token})
    after = await _read(client, admin, since=rest["since"])
    assert [r["Kind"] for r in after["data"]] == ["write"] and after["since"] > rest["since"]

    for bad in ({"kind": "lunch"}, {"limit": 0}, {"limit": 5000}, {"next": "x"}, {"since": 1, "next": 2},
                {"dateFrom": "2026-02-01", "dateTo": "2026-01-01"}, {"colour": "red"}):
        resp = await client.post("/api/GetData", json={"form": "getAuditLog", **bad},
                                 headers={"Authorization": admin})
        assert assert_envelope(resp)["code"] == 400, bad


async def test_every_get_audit_log_parameter_with_a_wrong_kind_of_value_gets_a_400_naming_it(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, token: str) -> None:
    from test_reports_fast import WRONG_KINDS

    admin = await _admin(app, db)
    await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                      headers={"Authorization": token})
    form = next(f for f in audit.FORMS if f.get_name == "getAuditLog")
    for param in form.params:
        for value in WRONG_KINDS:
            resp = await client.post("/api/GetData", json={"form": "getAuditLog", param: value},
                                     headers={"Authorization": admin})
            body = assert_envelope(resp)
            if body["code"] != 200:
                assert body["code"] == 400 and len(body["messages"]) < 500, (param, value, body)
                assert body.get("field", "").lower() == param.lower(), (param, value, body)


async def test_only_admins_read_the_audit_log(app: Any, client: httpx.AsyncClient, db: asyncpg.Connection,
                                              token: str) -> None:
    await add_user(db, "reader1", "reader")
    for user_token in (token, await issue_token(app, db, "reader1")):
        resp = await client.post("/api/GetData", json={"form": "getAuditLog"},
                                 headers={"Authorization": user_token})
        body = assert_envelope(resp)
        assert resp.status_code == 403 and body["code"] == 403


async def test_a_tenant_role_naming_the_audit_log_reads_it_and_a_wildcard_does_not(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, gateway: Gateway, token: str) -> None:  # noqa: F811
    for name, allow in (("auditor", "read:getAuditLog"), ("browser", "read:get*")):
        assert (await gateway("role", "create", "acme", name, "--allow", allow))[0] == 0
        await add_user(db, f"{name}1", "reader")
        assert (await gateway("user", "role", f"{name}1", name))[0] == 0
    answers = {}
    for name in ("auditor", "browser"):
        resp = await client.post("/api/GetData", json={"form": "getAuditLog"},
                                 headers={"Authorization": await issue_token(app, db, f"{name}1")})
        answers[name] = (resp.status_code, assert_envelope(resp))
    assert answers["auditor"][0] == 200 and isinstance(answers["auditor"][1]["data"], list)
    assert answers["browser"][0] == 403
    assert answers["browser"][1]["messages"] == "Role 'browser' lacks read on getAuditLog"


# --- retention ------------------------------------------------------------------------------------------

async def test_old_rows_are_purged_by_the_cli_and_by_writes(
        gateway: Gateway, client: httpx.AsyncClient, db: asyncpg.Connection, token: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def age(days: int, count: int) -> None:
        await db.execute("INSERT INTO audit_log (at, kind, tenant_id) SELECT now() - make_interval(days => $1),"
                         " 'write', $2 FROM generate_series(1, $3)", days, await tenant_id(db), count)

    await age(400, 3)
    await age(100, 2)
    assert (await gateway("audit", "purge", "--days", "200"))[0] == 0
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 2
    assert (await gateway("audit", "purge"))[0] == 0  # the default retention, 365 days, keeps them
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 2

    await age(366, 4)
    monkeypatch.setattr(audit, "PURGE_CHANCE", 1.0)  # every write purges, at most PURGE_BATCH rows
    monkeypatch.setattr(audit, "PURGE_BATCH", 3)
    resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": CUSTOMERS},
                             headers={"Authorization": token})
    assert resp.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE at < now() - interval '365 days'") == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 2 + 1 + 1


def test_the_retention_setting_is_read_from_the_environment() -> None:
    from gateway.config import ConfigError, Settings

    assert Settings.from_env({}).audit_retention_days == 365
    assert Settings.from_env({"GATEWAY_AUDIT_RETENTION_DAYS": "30"}).audit_retention_days == 30
    with pytest.raises(ConfigError):
        Settings.from_env({"GATEWAY_AUDIT_RETENTION_DAYS": "0"})
