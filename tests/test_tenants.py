"""Tenants provisioned on creation: base currency, chart of accounts and posting roles, through the engine."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, add_user, assert_envelope, login

from gateway import tenants
from gateway.db import QUERIES
from gateway.forms import Registry
from gateway.posting import ROLE_DEFAULTS
from gateway.tenants import SetupError, create_tenant, provision


def chart_rows(chart: str) -> list[tuple[str, str | None, str, str, str | None]]:
    """The chart file as the tests read it, independently of the code under test."""
    with open(tenants.CHARTS_DIR / tenants.CHART_FILES[chart], encoding="utf-8-sig", newline="") as fh:
        return [(r["AccountCode"], r["ParentCode"] or None, r["AccountType"], r["AccountName"],
                 r["OtherName"] or None) for r in csv.DictReader(fh)]


async def stored_accounts(db: asyncpg.Connection, tenant_id: int) -> list[tuple[Any, ...]]:
    rows = await db.fetch("SELECT account_code, parent_code, account_type, account_name, other_name"
                          " FROM account WHERE tenant_id = $1 AND NOT deleted", tenant_id)
    return sorted(tuple(r) for r in rows)


async def roles_of(db: asyncpg.Connection, tenant_id: int) -> dict[str, str]:
    rows = await db.fetch("SELECT role, account_code FROM posting_account WHERE tenant_id = $1", tenant_id)
    return {r["role"]: r["account_code"] for r in rows}


async def test_a_new_tenant_has_vnd_with_no_decimals_the_c200_chart_and_its_posting_roles(
        db: asyncpg.Connection, registry: Registry) -> None:
    tenant_id = await create_tenant(db, registry, "shop1", "Shop One")
    tenant = await db.fetchrow("SELECT code, name, base_currency, chart FROM tenant WHERE id = $1", tenant_id)
    assert tuple(tenant) == ("shop1", "Shop One", "VND", "c200")
    currency = await db.fetchrow("SELECT currency_code, currency_name, decimal_places, status, deleted"
                                 " FROM currency WHERE tenant_id = $1", tenant_id)
    assert tuple(currency) == ("VND", "Vietnamese dong", 0, "1", False)

    accounts = await stored_accounts(db, tenant_id)
    assert accounts == sorted(chart_rows("c200"))
    codes = {a[0] for a in accounts}
    parents = {a[1] for a in accounts if a[1] is not None}
    assert parents and parents <= codes  # a real hierarchy, every parent present
    assert any(a[1] is None for a in accounts)
    assert {a[2] for a in accounts} <= {"asset", "liability", "equity", "revenue", "expense"}

    roles = await roles_of(db, tenant_id)
    assert roles == tenants.CHART_ROLES["c200"] and len(roles) == 17
    # Circular 200: returns on 5212 (5213 is price allowances), goods bought in on 1561.
    assert (roles["sales_returns"], roles["inventory"], roles["vat_output"]) == ("5212", "1561", "33311")
    assert set(roles.values()) <= codes


async def test_provisioning_again_creates_nothing_and_keeps_what_the_tenant_changed(
        db: asyncpg.Connection, registry: Registry, client: httpx.AsyncClient) -> None:
    # A tenant from before provisioning existed: nothing but its row.
    tenant_id = await db.fetchval(QUERIES["tenant_add"], "old", "Old tenant")
    first = await provision(db, registry, tenant_id, "VND", "c200")
    assert first == {"currencies": 1, "accounts": len(chart_rows("c200")), "roles": 17}

    await add_user(db, "clerk", tenant="old")
    api = Api(client, await login(client, "clerk"))
    renamed = {"AccountCode": "131", "AccountName": "Customers, ours", "AccountType": "asset"}
    deleted = {"AccountCode": "1381", "action": "delete"}
    assert assert_envelope(await api.sync("setAccount", [renamed, deleted]))["records"] == 2
    assert assert_envelope(await api.sync("setCurrency", [
        {"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0}]))["records"] == 1
    await db.execute("UPDATE posting_account SET account_code = '1311'"
                     " WHERE tenant_id = $1 AND role = 'receivable'", tenant_id)
    changes = await db.fetchval("SELECT count(*) FROM change_log WHERE tenant_id = $1", tenant_id)

    again = await provision(db, registry, tenant_id, "VND", "c200")
    assert again == {"currencies": 0, "accounts": 0, "roles": 0}
    row = await db.fetchrow("SELECT account_name, other_name, parent_code FROM account"
                            " WHERE tenant_id = $1 AND account_code = '131'", tenant_id)
    assert tuple(row) == ("Customers, ours", None, None)
    assert await db.fetchval("SELECT deleted FROM account WHERE tenant_id = $1 AND account_code = '1381'",
                             tenant_id) is True
    assert await db.fetchval("SELECT currency_name FROM currency WHERE tenant_id = $1", tenant_id) == "Dong"
    assert (await roles_of(db, tenant_id))["receivable"] == "1311"
    assert await db.fetchval("SELECT count(*) FROM change_log WHERE tenant_id = $1", tenant_id) == changes


async def test_a_missing_account_or_role_is_added_to_an_existing_tenant(
        db: asyncpg.Connection, registry: Registry) -> None:
    tenant_id = await create_tenant(db, registry, "shop1", "Shop One", chart="none")
    await db.execute("INSERT INTO posting_account VALUES ($1, 'revenue', '5118')", tenant_id)
    created = await provision(db, registry, tenant_id, "VND", "c200")
    assert created == {"currencies": 0, "accounts": len(chart_rows("c200")), "roles": 16}
    assert (await roles_of(db, tenant_id))["revenue"] == "5118"
    # Now provisioned with a chart, the tenant keeps it as the chart later setups complete.
    assert await db.fetchval("SELECT chart FROM tenant WHERE id = $1", tenant_id) == "c200"
    await provision(db, registry, tenant_id, "VND", "c133")
    assert await db.fetchval("SELECT chart FROM tenant WHERE id = $1", tenant_id) == "c200"


async def test_a_usd_tenant_rounds_to_cents_and_an_unlisted_currency_gets_two_decimals(
        db: asyncpg.Connection, registry: Registry) -> None:
    usd = await create_tenant(db, registry, "us", "US shop", base_currency="USD")
    odd = await create_tenant(db, registry, "odd", "Odd shop", base_currency="XTS", chart="none")
    rows = await db.fetch("SELECT tenant_id, currency_code, currency_name, decimal_places FROM currency"
                          " ORDER BY tenant_id")
    assert [tuple(r) for r in rows] == [(usd, "USD", "US dollar", 2), (odd, "XTS", "XTS", 2)]
    assert await db.fetchval("SELECT base_currency FROM tenant WHERE id = $1", usd) == "USD"


async def test_chart_none_gives_the_currency_but_no_accounts_and_no_roles(
        db: asyncpg.Connection, registry: Registry) -> None:
    tenant_id = await create_tenant(db, registry, "bare", "Bare", chart="none")
    assert await db.fetchval("SELECT count(*) FROM currency WHERE tenant_id = $1", tenant_id) == 1
    assert await stored_accounts(db, tenant_id) == []
    assert await roles_of(db, tenant_id) == {}


async def test_a_c133_tenant_gets_the_c133_chart_and_books_sales_returns_against_revenue(
        db: asyncpg.Connection, registry: Registry) -> None:
    tenant_id = await create_tenant(db, registry, "small", "Small firm", chart="c133")
    assert await stored_accounts(db, tenant_id) == sorted(chart_rows("c133"))
    roles = await roles_of(db, tenant_id)
    # Circular 133 has no 521 (returns reduce revenue) and no sub-accounts of 156.
    assert roles["sales_returns"] == "5111" and roles["revenue"] == "5111" and roles["inventory"] == "156"
    assert roles["purchased_services"] == "6422"  # 642 of Circular 133 has no outside-service sub-account
    differ = {"sales_returns", "inventory", "purchased_services"}
    assert {k: v for k, v in roles.items() if k not in differ} == {
        k: v for k, v in tenants.CHART_ROLES["c200"].items() if k not in differ}


@pytest.mark.parametrize("chart", ["c200", "c133"])
def test_every_posting_role_maps_to_an_account_of_the_chart(chart: str) -> None:
    codes = {row[0] for row in chart_rows(chart)}
    roles = tenants.chart_roles(chart)
    assert set(ROLE_DEFAULTS) <= set(roles)  # every role a posting rule can ask for
    missing = {role: code for role, code in roles.items() if code not in codes}
    assert not missing


async def test_provisioning_refuses_a_role_mapped_to_an_account_the_chart_lacks(
        db: asyncpg.Connection, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tenants.CHART_ROLES, "c200", {**tenants.CHART_ROLES["c200"], "receivable": "999"})
    with pytest.raises(SetupError, match="receivable -> 999"):
        await create_tenant(db, registry, "shop1", "Shop One")
    assert await db.fetchval("SELECT count(*) FROM tenant") == 0
    assert await db.fetchval("SELECT count(*) FROM account") == 0


async def test_a_chart_file_with_an_orphan_parent_is_refused(
        db: asyncpg.Connection, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vn_c133.csv").write_text(
        "AccountCode,ParentCode,AccountType,AccountName,OtherName\n"
        "111,,asset,Tiền mặt,Cash\n"
        "1111,111,asset,Tiền Việt Nam,Vietnamese dong\n"
        "1121,112,asset,Tiền gửi,Bank\n",
        encoding="utf-8")
    monkeypatch.setattr(tenants, "CHARTS_DIR", tmp_path)
    tenants.chart_accounts.cache_clear()
    try:
        with pytest.raises(SetupError, match="parent 112"):
            await create_tenant(db, registry, "shop1", "Shop One", chart="c133")
    finally:
        tenants.chart_accounts.cache_clear()
    assert await db.fetchval("SELECT count(*) FROM tenant") == 0


async def test_provisioned_accounts_and_currency_come_through_the_change_feed(
        db: asyncpg.Connection, registry: Registry, client: httpx.AsyncClient) -> None:
    await create_tenant(db, registry, "shop1", "Shop One")
    await add_user(db, "clerk", role="reader", tenant="shop1")
    api = Api(client, await login(client, "clerk"))

    pulled: list[dict[str, Any]] = []
    since: Any = 0
    while True:
        body = assert_envelope(await api.get("getAccount", since=since, limit=100))
        pulled += body["data"]
        since = body["next_since"]
        if not body["more"]:
            break
    expected = {row[0]: row for row in chart_rows("c200")}
    assert len(pulled) == len(expected)
    for record in pulled:
        _, parent, account_type, name, other = expected[record["AccountCode"]]
        assert (record["ParentCode"], record["AccountType"], record["AccountName"], record["OtherName"],
                record["Deleted"]) == (parent, account_type, name, other, False)

    currencies = assert_envelope(await api.get("getCurrency", since=0))["data"]
    assert [(c["CurrencyCode"], c["DecimalPlaces"]) for c in currencies] == [("VND", 0)]
