"""Tenants that work on their first request: base currency, chart of accounts and posting roles.

Fast has no form to create a tenant's currency or chart, so the gateway provisions them when it creates the
tenant, and `gateway tenant setup` adds what is missing to an existing one. The currency and the accounts
go through the master sync engine, so they carry change stamps and reach integrators through the change
feed like any synced record.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import re
from typing import Any

import asyncpg

from .config import SQL_DIR
from .db import QUERIES, ensure_stage
from .engine import prepare, write
from .forms import SYNC_DATA, MasterForm, Registry

CHARTS_DIR = SQL_DIR / "charts"
# Vietnamese charts of accounts: Circular 200/2014/TT-BTC (enterprises) and 133/2016/TT-BTC (small ones).
CHART_FILES = {"c200": "vn_c200.csv", "c133": "vn_c133.csv"}
NO_CHART = "none"
CHARTS = (*CHART_FILES, NO_CHART)
DEFAULT_CHART = "c200"
DEFAULT_CURRENCY = "VND"
CHART_HEADER = ("AccountCode", "ParentCode", "AccountType", "AccountName", "OtherName")

# The account each posting role posts to (table posting_account), per chart. gateway.posting.ROLE_DEFAULTS
# is only the fallback for a tenant without these rows.
_C200_ROLES = {
    "receivable": "131",
    "payable": "331",
    "revenue": "5111",
    # Circular 200 art. 81: 5212 is sales returns (5211 trade discounts, 5213 price allowances).
    "sales_returns": "5212",
    "vat_output": "33311",
    "vat_input": "1331",
    # Goods are bought in at purchase price on 1561; 1562 holds the costs of buying them.
    "inventory": "1561",
    "cash": "1111",
    "bank": "1121",
    "cost_of_sales": "632",
    "goods_received_not_invoiced": "3388",
    "inventory_surplus": "3381",
    "purchased_services": "6427",
    "fx_gain": "515",
    "fx_loss": "635",
    "rounding_gain": "711",
    "rounding_loss": "811",
}
CHART_ROLES: dict[str, dict[str, str]] = {
    "c200": _C200_ROLES,
    # Circular 133 has no account 521: sales returns are deducted from revenue directly.
    "c133": {**_C200_ROLES, "sales_returns": "5111", "inventory": "156", "purchased_services": "6422"},
    NO_CHART: {},
}

# ISO 4217 minor units (the decimal places amounts are rounded to) and English names; a code not listed
# gets 2 decimal places and its code as its name.
CURRENCIES: dict[str, tuple[int, str]] = {
    "VND": (0, "Vietnamese dong"),
    "JPY": (0, "Japanese yen"),
    "KRW": (0, "South Korean won"),
    "CLP": (0, "Chilean peso"),
    "ISK": (0, "Icelandic krona"),
    "PYG": (0, "Paraguayan guarani"),
    "UGX": (0, "Ugandan shilling"),
    "XAF": (0, "Central African CFA franc"),
    "XOF": (0, "West African CFA franc"),
    "USD": (2, "US dollar"),
    "EUR": (2, "Euro"),
    "GBP": (2, "Pound sterling"),
    "CNY": (2, "Chinese yuan renminbi"),
    "SGD": (2, "Singapore dollar"),
    "THB": (2, "Thai baht"),
    "AUD": (2, "Australian dollar"),
    "NZD": (2, "New Zealand dollar"),
    "CAD": (2, "Canadian dollar"),
    "CHF": (2, "Swiss franc"),
    "HKD": (2, "Hong Kong dollar"),
    "TWD": (2, "New Taiwan dollar"),
    "MYR": (2, "Malaysian ringgit"),
    "IDR": (2, "Indonesian rupiah"),
    "PHP": (2, "Philippine peso"),
    "INR": (2, "Indian rupee"),
    "LAK": (2, "Lao kip"),
    "KHR": (2, "Cambodian riel"),
    "MMK": (2, "Myanmar kyat"),
    "SEK": (2, "Swedish krona"),
    "NOK": (2, "Norwegian krone"),
    "DKK": (2, "Danish krone"),
    "AED": (2, "UAE dirham"),
    "BHD": (3, "Bahraini dinar"),
    "KWD": (3, "Kuwaiti dinar"),
    "OMR": (3, "Omani rial"),
    "JOD": (3, "Jordanian dinar"),
    "TND": (3, "Tunisian dinar"),
}

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


class SetupError(ValueError):
    """A tenant cannot be provisioned as asked: an unknown chart, a broken chart file, a bad currency code."""


def check_currency_code(code: str) -> str:
    if not isinstance(code, str) or not _CURRENCY_CODE.fullmatch(code):
        raise SetupError("base currency must be an ISO 4217 code of three capital letters (e.g. VND),"
                         f" got {code!r}")
    return code


def currency_record(code: str) -> dict[str, Any]:
    """The setCurrency record of a base currency."""
    decimals, name = CURRENCIES.get(check_currency_code(code), (2, code))
    return {"CurrencyCode": code, "CurrencyName": name, "DecimalPlaces": decimals}


def chart_roles(chart: str) -> dict[str, str]:
    """Posting role -> account code for a chart, each account checked to be in the chart."""
    accounts = {a["AccountCode"] for a in chart_accounts(chart)}
    roles = CHART_ROLES[chart]
    missing = sorted(f"{role} -> {code}" for role, code in roles.items() if code not in accounts)
    if missing:
        raise SetupError(f"chart {chart}: posting roles map to accounts not in it: {', '.join(missing)}")
    return dict(roles)


@functools.cache
def chart_accounts(chart: str) -> tuple[dict[str, Any], ...]:
    """The chart's accounts as setAccount records (read once per process); `none` has none."""
    if chart not in CHARTS:
        raise SetupError(f"unknown chart {chart!r}; known: {', '.join(CHARTS)}")
    if chart == NO_CHART:
        return ()
    path = CHARTS_DIR / CHART_FILES[chart]
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            if header != CHART_HEADER:
                raise SetupError(f"{path}: header must be {','.join(CHART_HEADER)}, got {','.join(header)}")
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise SetupError(f"chart {chart}: file {path} is missing") from None
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if len(row) != len(CHART_HEADER):
            raise SetupError(f"{path}:{line}: expected {len(CHART_HEADER)} fields, got {len(row)}")
        code, parent, account_type, name, other = (cell.strip() for cell in row)
        if code in seen:
            raise SetupError(f"{path}:{line}: account {code} appears twice")
        seen.add(code)
        records.append({"AccountCode": code, "ParentCode": parent or None, "AccountType": account_type,
                        "AccountName": name, "OtherName": other or None})
    for record in records:
        if record["ParentCode"] is not None and record["ParentCode"] not in seen:
            raise SetupError(f"{path}: account {record['AccountCode']} has parent {record['ParentCode']},"
                             " which is not in the chart")
    return tuple(records)


def _forms(registry: Registry) -> tuple[MasterForm, MasterForm]:
    currency, account = (registry.resolve(SYNC_DATA, name)[0] for name in ("setCurrency", "setAccount"))
    if not isinstance(currency, MasterForm) or not isinstance(account, MasterForm):
        raise SetupError("the registry's setCurrency and setAccount must be master forms")
    return currency, account


async def stage(conn: asyncpg.Connection, registry: Registry) -> None:
    """Create the staging tables provisioning writes through; call it outside a transaction.

    Created inside a transaction that then rolls back, they would vanish while the connection still counts
    them as created.
    """
    for form in _forms(registry):
        await ensure_stage(conn, form.stage_table, form.sql["stage_create"])


async def _sync(conn: asyncpg.Connection, form: MasterForm, tenant_id: int,
                records: list[dict[str, Any]]) -> int:
    batch = prepare(form, records)
    if batch.errors:
        first = batch.errors[0]
        raise SetupError(f"{form.name} {first['key']}: {first['path'] or '/'} {first['message']}"
                         f" ({len(batch.errors)} error(s))")
    return (await write(conn, form, tenant_id, batch)).inserted


async def provision(conn: asyncpg.Connection, registry: Registry, tenant_id: int, base_currency: str,
                    chart: str) -> dict[str, int]:
    """Create what the tenant lacks: its base currency, the chart's accounts and the posting roles.

    Idempotent, and it never overwrites: a currency or account the tenant has (even changed, even deleted)
    and a role it has set are left as they are. Returns how many of each it created.
    """
    currency = currency_record(base_currency)
    accounts = chart_accounts(chart)
    roles = chart_roles(chart)  # checked before anything is written
    currency_form, account_form = _forms(registry)
    if not conn.is_in_transaction():
        await stage(conn, registry)
    created = {"currencies": 0, "accounts": 0, "roles": 0}
    async with conn.transaction():
        # The tenant's gate first, as every write of its data takes it (gateway/feed.py).
        await conn.execute(QUERIES["reference_gate_shared"], tenant_id)
        if await conn.fetchval(QUERIES["tenant_lock_for_setup"], tenant_id) is None:
            raise SetupError(f"no tenant with id {tenant_id}")
        if not await conn.fetch(QUERIES["currency_codes_present"], tenant_id, [base_currency]):
            created["currencies"] = await _sync(conn, currency_form, tenant_id, [currency])
        present = {r["account_code"] for r in await conn.fetch(
            QUERIES["account_codes_present"], tenant_id, [a["AccountCode"] for a in accounts])}
        missing = [dict(a) for a in accounts if a["AccountCode"] not in present]
        if missing:
            created["accounts"] = await _sync(conn, account_form, tenant_id, missing)
        if roles:
            names = sorted(roles)
            accounts_of = [roles[n] for n in names]
            added = await conn.fetch(QUERIES["posting_roles_add"], tenant_id, names, accounts_of)
            created["roles"] = len(added)
        await conn.execute(QUERIES["tenant_set_chart"], tenant_id, chart)
    return created


async def create_tenant(conn: asyncpg.Connection, registry: Registry, code: str, name: str,
                        base_currency: str = DEFAULT_CURRENCY, chart: str = DEFAULT_CHART) -> int:
    """Create a tenant and provision it, in one transaction; its id.

    Raises asyncpg.UniqueViolationError for a code taken, asyncpg.CheckViolationError for a malformed one.
    """
    check_currency_code(base_currency)
    chart_roles(chart)  # a missing or broken chart file fails before the tenant is created
    if not conn.is_in_transaction():
        await stage(conn, registry)
    async with conn.transaction():
        tenant_id: int = await conn.fetchval(QUERIES["tenant_create"], code, name, base_currency)
        await provision(conn, registry, tenant_id, base_currency, chart)
    return tenant_id


async def lock_period(conn: asyncpg.Connection, code: str, until: dt.date | None) -> bool:
    """Lock the tenant's vouchers dated up to `until` (None: unlock); False when there is no such tenant.

    The reference gate is taken first, so that voucher writes under way, checked against the old period, commit
    before the new one holds, and those that start later wait and check against the new one.
    """
    async with conn.transaction():
        row = await conn.fetchrow(QUERIES["tenant_by_code"], code)
        if row is None:
            return False
        await conn.execute(QUERIES["reference_gate_exclusive"], row["id"])
        await conn.execute(QUERIES["tenant_lock"], row["id"], until)
    return True
