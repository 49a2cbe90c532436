"""Reports through GetData, computed in SQL over the postings (no Python loop over ledger rows).

Each report is a GetData form: {"form": "getTrialBalance", "dateFrom": "2026-01-01", "dateTo": "2026-03-31"}.
Amounts are in the base currency (posted amount x exchange rate), except where a field says otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import lenient
from .errors import BadRequest, shorten
from .forms import GET_DATA
from .posting import ROLE_DEFAULTS
from .responses import plain

EARLIEST = dt.date(1, 1, 1)
LATEST = dt.date(9999, 12, 31)

Runner = Callable[[asyncpg.Connection, int, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class ReportForm:
    get_name: str
    run: Runner = field(repr=False)
    params: tuple[str, ...] = ("dateFrom", "dateTo")  # as documented; matched case-insensitively
    description: str = ""
    get_aliases: tuple[str, ...] = ()
    endpoint: str = field(default=GET_DATA, init=False)

    @property
    def name(self) -> str:
        return self.get_name

    def sync_names(self) -> tuple[str, ...]:
        return ()

    def get_names(self) -> tuple[str, ...]:
        return (self.get_name, *self.get_aliases)

    def load(self) -> ReportForm:
        return self

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


# The report queries keep one plan shape whatever the statistics say (a new tenant's reports run on tables
# never analysed, beside other tenants' rows; tests/test_report_plans.py). The tenant's postings are summed
# first and the master rows (account, customer, item) looked up once per summed row by primary key, in
# lateral subqueries the planner cannot flatten (OFFSET 0): joined to the postings directly, the master
# table guessed small was planned as a nested loop filtering all the tenant's accounts for every posting.
# A voucher looked up from a posting or an allocation names its id and tenant only, its form checked
# outside the subquery (as gateway/posting.py STORED_VOUCHERS does): with the form inside, voucher_by_date
# (tenant_id, form, ...) matches as many columns as voucher_by_key, and without statistics the planner may
# take it and read every voucher of the tenant's form for each posting (an account ledger of 3,000 postings
# took 0.45-0.6 s instead of 20 ms until ANALYZE; bench/report_plans.py).
_ACCOUNT = ("LEFT JOIN LATERAL (SELECT a.account_name FROM account a"
            " WHERE a.tenant_id = $1 AND a.account_code = g.account_code OFFSET 0) a ON true")
_CUSTOMER = ("LEFT JOIN LATERAL (SELECT c.customer_name FROM customer c"
             " WHERE c.tenant_id = $1 AND c.customer_code = g.partner_code OFFSET 0) c ON true")

TRIAL_BALANCE = f"""
SELECT g.account_code AS "AccountCode", a.account_name AS "AccountName",
       g.opening AS "Opening", g.debit AS "Debit", g.credit AS "Credit", g.closing AS "Closing"
FROM (SELECT account_code,
             COALESCE(sum(debit - credit) FILTER (WHERE entry_date < $2), 0) AS opening,
             COALESCE(sum(debit) FILTER (WHERE entry_date >= $2), 0) AS debit,
             COALESCE(sum(credit) FILTER (WHERE entry_date >= $2), 0) AS credit,
             COALESCE(sum(debit - credit), 0) AS closing
      FROM gl_entry WHERE tenant_id = $1 AND entry_date <= $3
      GROUP BY account_code) g
{_ACCOUNT}
ORDER BY g.account_code
"""


async def trial_balance(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """By account: balance before dateFrom, debits and credits from dateFrom to dateTo, balance at dateTo.

    Balances are signed: debit positive, credit negative.
    """
    start, end = _date(params, "dateFrom", EARLIEST), _date(params, "dateTo", LATEST)
    data = _rows(await conn.fetch(TRIAL_BALANCE, tenant_id, start, end))
    return {"data": data}


ACCOUNT_LEDGER = """
WITH opening AS (
    SELECT COALESCE(sum(debit - credit), 0) AS balance FROM gl_entry
    WHERE tenant_id = $1 AND account_code = $2 AND entry_date < $3
)
SELECT g.entry_date AS "EntryDate", g.form AS "Form", g.voucher_id AS "VoucherId",
       v.voucher_number AS "VoucherNumber", v.description AS "Description", g.partner_code AS "PartnerCode",
       g.debit AS "Debit", g.credit AS "Credit",
       (SELECT balance FROM opening)
         + sum(g.debit - g.credit) OVER (ORDER BY g.entry_date, g.form, g.voucher_id, g.entry_no) AS "Balance"
FROM gl_entry g
LEFT JOIN LATERAL (SELECT v.form, v.voucher_number, v.description FROM voucher v
                   WHERE v.voucher_id = g.voucher_id AND v.tenant_id = $1 OFFSET 0) v ON v.form = g.form
WHERE g.tenant_id = $1 AND g.account_code = $2 AND g.entry_date BETWEEN $3 AND $4
ORDER BY g.entry_date, g.form, g.voucher_id, g.entry_no
"""


async def account_ledger(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """One account's entries from dateFrom to dateTo, with the running balance (debit positive)."""
    account = _code(params, "the account code")
    if account is None:
        raise BadRequest("Field 'Id' must name the account", field="Id")
    start, end = _date(params, "dateFrom", EARLIEST), _date(params, "dateTo", LATEST)
    opening = await conn.fetchval(
        "SELECT COALESCE(sum(debit - credit), 0) FROM gl_entry"
        " WHERE tenant_id = $1 AND account_code = $2 AND entry_date < $3", tenant_id, account, start)
    data = _rows(await conn.fetch(ACCOUNT_LEDGER, tenant_id, account, start, end))
    closing = data[-1]["Balance"] if data else opening
    return {"data": data, "opening": plain(opening), "closing": plain(closing)}


STOCK = """
WITH moves AS (
    SELECT item_code, site_code,
           COALESCE(sum(qty_in - qty_out) FILTER (WHERE move_date < $3), 0) AS opening,
           COALESCE(sum(qty_in) FILTER (WHERE move_date >= $3), 0) AS qty_in,
           COALESCE(sum(qty_out) FILTER (WHERE move_date >= $3), 0) AS qty_out,
           sum(qty_in - qty_out) AS quantity,
           -- Weighted average cost per item of the priced inflows up to the date: the item's sites summed
           -- in the same pass over the moves, not by a second scan joined back on the item.
           sum(sum(value_in)) OVER (PARTITION BY item_code)
             / NULLIF(sum(sum(qty_in) FILTER (WHERE value_in IS NOT NULL)) OVER (PARTITION BY item_code), 0)
             AS unit_cost
    FROM stock_move WHERE tenant_id = $1 AND move_date <= $2{item}
    GROUP BY item_code, site_code
)
SELECT m.item_code AS "ItemCode", i.item_name AS "ItemName", i.uom AS "Uom", m.site_code AS "SiteCode",
       m.opening AS "OpeningQuantity", m.qty_in AS "QuantityIn", m.qty_out AS "QuantityOut",
       m.quantity AS "Quantity", round(m.unit_cost, 4) AS "UnitCost",
       round(m.quantity * m.unit_cost, 2) AS "Value"
FROM moves m
LEFT JOIN LATERAL (SELECT i.item_name, i.uom FROM item i
                   WHERE i.tenant_id = $1 AND i.item_code = m.item_code OFFSET 0) i ON true
WHERE m.quantity <> 0 OR ($4 AND (m.qty_in <> 0 OR m.qty_out <> 0))
ORDER BY m.item_code, m.site_code
"""
# Two fixed texts rather than "$5 IS NULL OR item_code = $5", so that a cached generic plan for one item
# still reads the stock_move_item index.
STOCK_ALL = STOCK.format(item="")
STOCK_ITEM = STOCK.format(item=" AND item_code = $5")
_MOVEMENT = ("OpeningQuantity", "QuantityIn", "QuantityOut")


def _stock(default_to: Callable[[], dt.date]) -> Runner:
    async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
        """On hand by item and site at dateTo, in the item's base unit, at weighted average cost.

        With dateFrom also the quantity before it and what came in and went out from it to dateTo.
        """
        start, end = _period(params, default_to())
        item = _code(params, "an item code")
        args: list[Any] = [tenant_id, end, start or EARLIEST, start is not None]
        sql = STOCK_ALL if item is None else STOCK_ITEM
        data = _rows(await conn.fetch(sql, *args, *([] if item is None else [item])))
        if start is None:
            for row in data:
                for name in _MOVEMENT:
                    del row[name]
        return {"data": data}

    return report


BALANCE = """
SELECT g.partner_code AS "CustomerCode", c.customer_name AS "CustomerName",
       g.opening AS "Opening", g.debit AS "Debit", g.credit AS "Credit", g.closing AS "Closing"
FROM (SELECT partner_code,
             COALESCE(sum(debit - credit) FILTER (WHERE entry_date < $3), 0) AS opening,
             COALESCE(sum(debit) FILTER (WHERE entry_date >= $3), 0) AS debit,
             COALESCE(sum(credit) FILTER (WHERE entry_date >= $3), 0) AS credit,
             sum(debit - credit) AS closing
      FROM gl_entry
      WHERE tenant_id = $1 AND account_code = $2 AND entry_date <= $4 AND partner_code IS NOT NULL{partner}
      GROUP BY partner_code
      HAVING sum(debit - credit) <> 0 OR bool_or(entry_date >= $3 AND (debit <> 0 OR credit <> 0))) g
{customer}
ORDER BY g.partner_code
"""
BALANCE_ALL = BALANCE.format(partner="", customer=_CUSTOMER)
BALANCE_ONE = BALANCE.format(partner=" AND partner_code = $5", customer=_CUSTOMER)
RECEIVABLE_ACCOUNT = "SELECT account_code FROM posting_account WHERE tenant_id = $1 AND role = $2"


async def customer_balance(conn: asyncpg.Connection, tenant_id: int,
                           params: dict[str, Any]) -> dict[str, Any]:
    """Fast's getBalance: each customer's receivable, from the ledger.

    The balance before dateFrom, the debits and credits from dateFrom to dateTo, the balance at dateTo;
    debit positive (the customer owes). The account is the tenant's receivable role (131 by default).
    """
    start, end = _period(params, dt.date.today())
    customer = _code(params, "a customer code")
    account = await conn.fetchval(RECEIVABLE_ACCOUNT, tenant_id, "receivable") or ROLE_DEFAULTS["receivable"]
    args: list[Any] = [tenant_id, account, start or EARLIEST, end]
    sql = BALANCE_ALL if customer is None else BALANCE_ONE
    return {"data": _rows(await conn.fetch(sql, *args, *([] if customer is None else [customer])))}


OPEN_ITEMS = """
WITH invoices AS (
    SELECT v.voucher_id, v.voucher_date, v.partner_code, v.total_amount, v.exchange_rate,
           COALESCE((v.document->>'DueDate')::date, v.voucher_date) AS due_date,
           COALESCE(a.paid, 0) AS paid
    FROM voucher v
    -- Summed once per invoice (as a scalar subquery it was evaluated again for every use of `paid`
    -- below); each paying voucher found by its id and tenant, its form checked outside (see above).
    CROSS JOIN LATERAL (
        SELECT sum(a.amount) AS paid FROM voucher_allocation a
        CROSS JOIN LATERAL (SELECT p.form, p.deleted, p.voucher_date FROM voucher p
                            WHERE p.voucher_id = a.voucher_id AND p.tenant_id = $1 OFFSET 0) p
        WHERE a.tenant_id = $1 AND a.invoice_form = v.form AND a.invoice_id = v.voucher_id
          AND p.form = a.form AND NOT p.deleted AND p.voucher_date <= $3) a
    WHERE v.tenant_id = $1 AND v.form = $2 AND NOT v.deleted AND v.voucher_date <= $3
),
items AS (
    SELECT *, total_amount - paid AS outstanding, {as_of} - {due_date} AS days_overdue,
           CASE WHEN total_amount - paid <= 0 THEN 'paid'
                WHEN due_date < $3 THEN 'overdue'
                WHEN paid > 0 THEN 'partially_paid'
                ELSE 'open' END AS status
    FROM invoices
)
SELECT partner_code AS "PartnerCode",
       sum(outstanding * exchange_rate) FILTER (WHERE days_overdue <= 0) AS "Current",
       sum(outstanding * exchange_rate) FILTER (WHERE days_overdue BETWEEN 1 AND 30) AS "Days1To30",
       sum(outstanding * exchange_rate) FILTER (WHERE days_overdue BETWEEN 31 AND 60) AS "Days31To60",
       sum(outstanding * exchange_rate) FILTER (WHERE days_overdue BETWEEN 61 AND 90) AS "Days61To90",
       sum(outstanding * exchange_rate) FILTER (WHERE days_overdue > 90) AS "Over90",
       sum(outstanding * exchange_rate) AS "Total",
       jsonb_agg(jsonb_build_object(
           'VoucherId', voucher_id, 'VoucherDate', voucher_date, 'DueDate', due_date,
           'TotalAmount', total_amount, 'Paid', paid, 'Outstanding', outstanding,
           'DaysOverdue', GREATEST(days_overdue, 0), 'Status', status) ORDER BY voucher_date, voucher_id)
         AS "Invoices"
FROM items
WHERE outstanding > 0 OR $4
GROUP BY partner_code
ORDER BY partner_code
"""
# The driver sends (and stores) 0001-01-01 and 9999-12-31 as -infinity and infinity, which compare as those
# days do but cannot be subtracted: the days between them are counted from the calendar's ends instead.
_FINITE = "(CASE WHEN isfinite({0}) THEN {0} WHEN {0} > date '2000-01-01' THEN date '9999-12-31'" \
          " ELSE date '0001-01-01' END)"
OPEN_ITEMS = OPEN_ITEMS.format(as_of=_FINITE.format("$3::date"), due_date=_FINITE.format("due_date"))


def _open_items(invoice_form: str) -> Runner:
    async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
        include_paid = params.get("include_paid", False)
        if not isinstance(include_paid, bool):
            raise BadRequest("Field 'include_paid' must be true or false", field="include_paid")
        as_of = _date(params, "dateTo", dt.date.today())
        rows = _rows(await conn.fetch(OPEN_ITEMS, tenant_id, invoice_form, as_of, include_paid))
        for row in rows:
            for bucket in ("Current", "Days1To30", "Days31To60", "Days61To90", "Over90"):
                row[bucket] = row[bucket] or 0
        return {"data": rows, "as_of": as_of}

    return report


SALES_SUMMARY = """
SELECT {key} AS "Key",
       sum(sign * l.quantity) AS "Quantity",
       sum(sign * (l.amount - COALESCE(l.discount, 0)) * v.exchange_rate) AS "NetAmount",
       sum(sign * COALESCE(l.tax_amount, 0) * v.exchange_rate) AS "TaxAmount",
       sum(sign * COALESCE(l.total_amount, 0) * v.exchange_rate) AS "TotalAmount"
FROM (SELECT *, CASE WHEN form = 'setSaleReturn' THEN -1 ELSE 1 END AS sign FROM voucher
      WHERE tenant_id = $1 AND form IN ('setSaleInvoice', 'setSaleReturn') AND NOT deleted
        AND voucher_date BETWEEN $2 AND $3) v
JOIN voucher_line l ON l.tenant_id = v.tenant_id AND l.form = v.form AND l.voucher_id = v.voucher_id
GROUP BY 1
ORDER BY 1
"""
_GROUPS = {"period": "to_char(v.voucher_date, 'YYYY-MM')", "customer": "v.partner_code", "item": "l.item_code"}


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
    sql = SALES_SUMMARY.format(key=_GROUPS[group])  # one of three fixed expressions
    return {"data": _rows(await conn.fetch(sql, tenant_id, start, end)), "group_by": group}


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
    ReportForm("getSalesSummary", sales_summary, params=("dateFrom", "dateTo", "group_by"),
               description="Sales net of returns by period, customer or item."),
]
