"""Reports through GetData, computed in SQL over the postings (no Python loop over ledger rows).

Each report is a GetData form: {"form": "getTrialBalance", "dateFrom": "2026-01-01", "dateTo": "2026-03-31"}.
Amounts are in the base currency (posted amount x exchange rate), except where a field says otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from . import grni, lenient, reconciliation, settlement
from .db import QUERIES
from .errors import BadRequest, shorten
from .forms import GET_DATA
from .posting import ROLE_DEFAULTS
from .responses import plain

EARLIEST = dt.date(1, 1, 1)
LATEST = dt.date(9999, 12, 31)

Runner = Callable[[asyncpg.Connection, int, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ReportForm:
    """A report served through GetData; declared in FORMS below and never changed."""

    get_name: str
    run: Runner = field(repr=False)
    params: tuple[str, ...] = ("dateFrom", "dateTo")  # as documented; matched case-insensitively
    description: str = ""
    get_aliases: tuple[str, ...] = ()
    # Only the tenant's administrators may read it (gateway/permissions.py): no wildcard or group reaches it.
    admin_only: bool = False
    endpoint: str = field(default=GET_DATA, init=False)

    @property
    def name(self) -> str:
        return self.get_name

    def sync_names(self) -> tuple[str, ...]:
        return ()

    def get_names(self) -> tuple[str, ...]:
        return (self.get_name, *self.get_aliases)

    def load(self) -> ReportForm:
        """A new ReportForm equal to the declaration: a report has nothing to compile, and, as with every
        form, the registry holds what load() returns, never the module's declaration."""
        return replace(self)

    async def pull(self, conn: asyncpg.Connection, tenant_id: int, body: dict[str, Any], *, pool: Any = None,
                   cursors: Any = None) -> dict[str, Any]:
        return await run(conn, self, tenant_id, body)


def parse_date(value: Any, name: str) -> dt.date | None:
    """The date a report parameter names (None when empty), by the gateway's one date rule."""
    try:
        return lenient.parse_date(value)
    except ValueError:
        raise BadRequest(f"Field '{name}' must be a date yyyy-MM-dd or an ISO date-time, got "
                         f"{lenient.quoted(value)}", field=name) from None


def _date(params: dict[str, Any], name: str, default: dt.date) -> dt.date:
    parsed = parse_date(params.get(name.lower()), name)
    return default if parsed is None else parsed


def _period(params: dict[str, Any], default_to: dt.date) -> tuple[dt.date | None, dt.date]:
    start, end = parse_date(params.get("datefrom"), "dateFrom"), _date(params, "dateTo", default_to)
    if start is not None and start > end:
        raise BadRequest(f"Field 'dateFrom' ({start}) is after 'dateTo' ({end})", field="dateFrom")
    return start, end


def _code(params: dict[str, Any], what: str) -> str | None:
    """Fast's `Id`: one record's code, or empty for all."""
    value = params.get("id")
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a code sent as a number, as for codes in records
    if not isinstance(value, str):
        raise BadRequest(f"Field 'Id' must be {what} (text) or empty", field="Id")
    problem = lenient.text_problem(value)
    if problem:
        raise BadRequest(f"Field 'Id' {problem}", field="Id")
    return value


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{k: plain(v) for k, v in r.items()} for r in records]


async def run(conn: asyncpg.Connection, form: ReportForm, tenant_id: int,
              body: dict[str, Any]) -> dict[str, Any]:
    known = {p.lower() for p in form.params}
    unknown = sorted(k for k in body if k.lower() != "form" and k.lower() not in known)
    if unknown:
        shown = shorten(unknown[0])
        raise BadRequest(f"Unknown request field '{shown}' for {form.get_name}; known: "
                         f"{', '.join(form.params)}", field=shown)
    params = {k.lower(): v for k, v in body.items() if k.lower() != "form"}
    out = await form.run(conn, tenant_id, params)
    out["records"] = len(out["data"])
    return out


# The report statements are sql/queries.sql's report_* (with why their plans do not depend on statistics).
async def trial_balance(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """By account: balance before dateFrom, debits and credits from dateFrom to dateTo, balance at dateTo.

    Balances are signed: debit positive, credit negative.
    """
    start, end = _date(params, "dateFrom", EARLIEST), _date(params, "dateTo", LATEST)
    data = _rows(await conn.fetch(QUERIES["report_trial_balance"], tenant_id, start, end))
    return {"data": data}


async def account_ledger(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """One account's entries from dateFrom to dateTo, with the running balance (debit positive)."""
    account = _code(params, "the account code")
    if account is None:
        raise BadRequest("Field 'Id' must name the account", field="Id")
    start, end = _date(params, "dateFrom", EARLIEST), _date(params, "dateTo", LATEST)
    opening = await conn.fetchval(QUERIES["report_account_opening"], tenant_id, account, start)
    data = _rows(await conn.fetch(QUERIES["report_account_ledger"], tenant_id, account, start, end, opening))
    closing = data[-1]["Balance"] if data else opening
    return {"data": data, "opening": plain(opening), "closing": plain(closing)}


_MOVEMENT = ("OpeningQuantity", "QuantityIn", "QuantityOut")


def _stock(default_to: Callable[[], dt.date]) -> Runner:
    async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
        """On hand by item and site at dateTo, in the item's base unit, at weighted average cost.

        With dateFrom also the quantity before it and what came in and went out from it to dateTo.
        """
        start, end = _period(params, default_to())
        item = _code(params, "an item code")
        args: list[Any] = [tenant_id, end, start or EARLIEST, start is not None]
        sql = QUERIES["report_stock_all" if item is None else "report_stock_item"]
        data = _rows(await conn.fetch(sql, *args, *([] if item is None else [item])))
        if start is None:
            for row in data:
                for name in _MOVEMENT:
                    del row[name]
        return {"data": data}

    return report


async def customer_balance(conn: asyncpg.Connection, tenant_id: int,
                           params: dict[str, Any]) -> dict[str, Any]:
    """Fast's getBalance: each customer's receivable, from the ledger.

    The balance before dateFrom, the debits and credits from dateFrom to dateTo, the balance at dateTo;
    debit positive (the customer owes). The account is the tenant's receivable role (131 by default).
    """
    start, end = _period(params, dt.date.today())
    customer = _code(params, "a customer code")
    account = (await conn.fetchval(QUERIES["report_posting_account"], tenant_id, "receivable")
               or ROLE_DEFAULTS["receivable"])
    args: list[Any] = [tenant_id, account, start or EARLIEST, end]
    sql = QUERIES["report_balance_all" if customer is None else "report_balance_one"]
    return {"data": _rows(await conn.fetch(sql, *args, *([] if customer is None else [customer])))}


async def open_items(conn: asyncpg.Connection, tenant_id: int, invoice_form: str, as_of: dt.date,
                     include_paid: bool) -> list[asyncpg.Record]:
    """Per partner: the open invoices of `invoice_form` at `as_of` with their aging, and the unapplied items."""
    side = settlement.INVOICES[invoice_form]
    return await conn.fetch(QUERIES["report_open_items"], tenant_id, invoice_form, as_of, include_paid, side,
                            ROLE_DEFAULTS[side], settlement.SIGN[side])


def _open_items(invoice_form: str) -> Runner:
    async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
        include_paid = params.get("include_paid", False)
        if not isinstance(include_paid, bool):
            raise BadRequest("Field 'include_paid' must be true or false", field="include_paid")
        as_of = _date(params, "dateTo", dt.date.today())
        rows = _rows(await open_items(conn, tenant_id, invoice_form, as_of, include_paid))
        return {"data": rows, "as_of": as_of}

    return report


# What the sales summary may be grouped by (report_sales_summary's $4).
_GROUPS = ("period", "customer", "item")


async def sales_summary(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """Sales net of returns by month ("period"), customer or item, from dateFrom to dateTo."""
    group = params.get("group_by")
    if group is None or group == "":
        group = "period"
    if not isinstance(group, str) or group.lower() not in _GROUPS:
        raise BadRequest(f"Field 'group_by' must be one of {', '.join(_GROUPS)}, got {lenient.quoted(group)}",
                         field="group_by")
    group = group.lower()
    start, end = _date(params, "dateFrom", EARLIEST), _date(params, "dateTo", LATEST)
    data = _rows(await conn.fetch(QUERIES["report_sales_summary"], tenant_id, start, end, group))
    if group != "item":  # the unit is the item's: other groups mix items
        for row in data:
            del row["Uom"]
    return {"data": data, "group_by": group}


FORMS = [
    ReportForm("getTrialBalance", trial_balance,
               description="By account: opening balance, debits, credits, closing balance (debit positive)."),
    ReportForm("getAccountLedger", account_ledger, params=("Id", "dateFrom", "dateTo"),
               description="One account's entries with the running balance."),
    # Fast's getStock answers "on hand now" by default; getStockBalance, the older report, counts every
    # posted movement, future-dated ones included, and its callers rely on that.
    ReportForm("getStock", _stock(dt.date.today), params=("Id", "dateFrom", "dateTo"),
               description="Fast's stock report: on hand by item and site in the base unit at dateTo (today"
                           " by default); with dateFrom also opening quantity, quantity in and out."),
    ReportForm("getStockBalance", _stock(lambda: LATEST), params=("dateTo",),
               description="Stock on hand by item and site at a date, at weighted average cost."),
    ReportForm("getBalance", customer_balance, params=("Id", "dateFrom", "dateTo"),
               description="Fast's customer balance: receivable opening, debit, credit and closing"
                           " per customer."),
    ReportForm("getReceivables", _open_items("setSaleInvoice"), params=("dateTo", "include_paid"),
               description="Open sales invoices by customer with aging buckets."),
    ReportForm("getPayables", _open_items("setPurchaseInvoice"), params=("dateTo", "include_paid"),
               description="Open purchase invoices by supplier with aging buckets."),
    ReportForm("getGoodsReceivedNotInvoiced", grni.open_receipts, params=("dateTo",),
               description="Goods receipt lines not yet invoiced at dateTo, by supplier, with their open value."),
    ReportForm("getSalesSummary", sales_summary, params=("dateFrom", "dateTo", "group_by"),
               description="Sales net of returns by period, customer or item."),
    ReportForm("getReconciliation", reconciliation.report, params=("dateTo",),
               description="Control accounts (receivable, payable, inventory, goods received not invoiced)"
                           " against their sub-ledgers at dateTo, with the difference."),
]
