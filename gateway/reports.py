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

from . import costing, grni, lenient, reconciliation, settlement
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
           -- The value at the date, on the basis the inventory account is posted on (gateway/costing.py):
           -- what each movement up to then added and took, at moving average cost.
           sum({value_change}) AS value
    FROM stock_move WHERE tenant_id = $1 AND move_date <= $2{item}
    GROUP BY item_code, site_code
)
SELECT m.item_code AS "ItemCode", i.item_name AS "ItemName", i.uom AS "Uom", m.site_code AS "SiteCode",
       m.opening AS "OpeningQuantity", m.qty_in AS "QuantityIn", m.qty_out AS "QuantityOut",
       m.quantity AS "Quantity", round(m.value / NULLIF(m.quantity, 0), 4) AS "UnitCost", m.value AS "Value"
FROM moves m
LEFT JOIN LATERAL (SELECT i.item_name, i.uom FROM item i
                   WHERE i.tenant_id = $1 AND i.item_code = m.item_code OFFSET 0) i ON true
WHERE m.quantity <> 0 OR m.value <> 0 OR ($4 AND (m.qty_in <> 0 OR m.qty_out <> 0))
ORDER BY m.item_code, m.site_code
"""
# Two fixed texts rather than "$5 IS NULL OR item_code = $5", so that a cached generic plan for one item
# still reads an index that leads with the tenant and the item (stock_move_order).
STOCK = STOCK.replace("{value_change}", costing.VALUE_CHANGE)
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


# The open items of one side of the books: $2 the invoice form, $5 the control account's role and $6 its
# default account, $7 the sign that makes what is owed positive (1 receivable, -1 payable). In the base
# currency an invoice is open for what it posted to the control account less what settlements took off it at
# book value; a partner's other entries on the account are unapplied items (payments not allocated, returns
# citing no invoice, journal lines), each net of what it settled. A settlement counts when both its voucher
# and its invoice are dated up to the date, on both sides, so that per partner the open items plus the
# unapplied items equal the account's balance at any date (gateway/settlement.py). The entries on the account
# are read once, through its index, and summed per voucher: the invoices' amounts come from there too.
OPEN_ITEMS = """
WITH control AS MATERIALIZED (
    SELECT COALESCE((SELECT account_code FROM posting_account WHERE tenant_id = $1 AND role = $5), $6) AS account
),
entries AS MATERIALIZED (
    SELECT g.partner_code, g.form, g.voucher_id, min(g.entry_date) AS entry_date,
           $7::integer * sum(g.debit - g.credit) AS posted
    FROM gl_entry g
    WHERE g.tenant_id = $1 AND g.account_code = (SELECT account FROM control) AND g.entry_date <= $3
    GROUP BY g.partner_code, g.form, g.voucher_id
),
invoice_rows AS MATERIALIZED (
    SELECT v.form, v.voucher_id, v.voucher_date, v.partner_code, v.currency, v.total_amount, v.exchange_rate,
           COALESCE((v.document->>'DueDate')::date, v.voucher_date) AS due_date
    FROM voucher v
    WHERE v.tenant_id = $1 AND v.form = $2 AND NOT v.deleted AND v.voucher_date <= $3
),
-- What live vouchers dated up to the date settle of each invoice; each settling voucher found by its id and
-- tenant, its form checked outside (see above).
settled AS MATERIALIZED (
    SELECT i.voucher_id AS invoice_id, i.partner_code, a.form, a.voucher_id,
           COALESCE(a.invoice_amount, a.amount) AS paid,
           COALESCE(a.base_amount, COALESCE(a.invoice_amount, a.amount) * i.exchange_rate) AS base
    FROM invoice_rows i
    CROSS JOIN LATERAL (SELECT a.form, a.voucher_id, a.amount, a.invoice_amount, a.base_amount
                        FROM voucher_allocation a
                        WHERE a.tenant_id = $1 AND a.invoice_form = i.form AND a.invoice_id = i.voucher_id
                        OFFSET 0) a
    CROSS JOIN LATERAL (SELECT p.form, p.deleted, p.voucher_date FROM voucher p
                        WHERE p.voucher_id = a.voucher_id AND p.tenant_id = $1 OFFSET 0) p
    WHERE p.form = a.form AND NOT p.deleted AND p.voucher_date <= $3
),
items AS (
    SELECT i.*, COALESCE(s.paid, 0) AS paid, COALESCE(e.posted, 0) - COALESCE(s.base, 0) AS due,
           i.total_amount - COALESCE(s.paid, 0) AS outstanding, {as_of} - {due_date} AS days_overdue,
           CASE WHEN i.total_amount - COALESCE(s.paid, 0) <= 0 THEN 'paid'
                WHEN i.due_date < $3 THEN 'overdue'
                WHEN s.paid > 0 THEN 'partially_paid'
                ELSE 'open' END AS status
    FROM invoice_rows i
    LEFT JOIN (SELECT invoice_id, sum(paid) AS paid, sum(base) AS base FROM settled GROUP BY invoice_id) s
           ON s.invoice_id = i.voucher_id
    LEFT JOIN entries e ON e.form = i.form AND e.voucher_id = i.voucher_id
),
open AS (
    SELECT partner_code,
           sum(due) FILTER (WHERE days_overdue <= 0) AS current,
           sum(due) FILTER (WHERE days_overdue BETWEEN 1 AND 30) AS days1to30,
           sum(due) FILTER (WHERE days_overdue BETWEEN 31 AND 60) AS days31to60,
           sum(due) FILTER (WHERE days_overdue BETWEEN 61 AND 90) AS days61to90,
           sum(due) FILTER (WHERE days_overdue > 90) AS over90,
           sum(due) AS total,
           jsonb_agg(jsonb_build_object(
               'VoucherId', voucher_id, 'VoucherDate', voucher_date, 'DueDate', due_date, 'Currency', currency,
               'TotalAmount', total_amount, 'Paid', paid, 'Outstanding', outstanding, 'BaseOutstanding', due,
               'DaysOverdue', GREATEST(days_overdue, 0), 'Status', status) ORDER BY voucher_date, voucher_id)
             AS invoices
    FROM items
    WHERE outstanding > 0 OR due <> 0 OR $4
    GROUP BY partner_code
),
-- Every other voucher with entries on the account or settling an invoice: its entries plus what it settled.
unapplied AS (
    SELECT COALESCE(e.partner_code, s.partner_code) AS partner_code, COALESCE(e.form, s.form) AS form,
           COALESCE(e.voucher_id, s.voucher_id) AS voucher_id, e.entry_date,
           COALESCE(e.posted, 0) + COALESCE(s.base, 0) AS amount
    FROM (SELECT * FROM entries WHERE form <> $2) e
    FULL JOIN (SELECT partner_code, form, voucher_id, sum(base) AS base FROM settled
               GROUP BY partner_code, form, voucher_id) s
           ON s.partner_code = e.partner_code AND s.form = e.form AND s.voucher_id = e.voucher_id
),
credits AS (
    SELECT partner_code, sum(amount) AS amount,
           jsonb_agg(jsonb_build_object('Form', form, 'VoucherId', voucher_id, 'VoucherDate', entry_date,
                                        'Amount', amount) ORDER BY entry_date, form, voucher_id) AS items
    FROM unapplied
    WHERE amount <> 0
    GROUP BY partner_code
)
SELECT COALESCE(o.partner_code, c.partner_code) AS "PartnerCode",
       COALESCE(o.current, 0) AS "Current", COALESCE(o.days1to30, 0) AS "Days1To30",
       COALESCE(o.days31to60, 0) AS "Days31To60", COALESCE(o.days61to90, 0) AS "Days61To90",
       COALESCE(o.over90, 0) AS "Over90", COALESCE(o.total, 0) AS "Total",
       COALESCE(o.invoices, '[]') AS "Invoices",
       COALESCE(c.amount, 0) AS "Unapplied", COALESCE(c.items, '[]') AS "UnappliedItems",
       COALESCE(o.total, 0) + COALESCE(c.amount, 0) AS "Balance"
FROM open o FULL JOIN credits c ON c.partner_code = o.partner_code
ORDER BY 1
"""
# The driver sends (and stores) 0001-01-01 and 9999-12-31 as -infinity and infinity, which compare as those
# days do but cannot be subtracted: the days between them are counted from the calendar's ends instead.
_FINITE = "(CASE WHEN isfinite({0}) THEN {0} WHEN {0} > date '2000-01-01' THEN date '9999-12-31'" \
          " ELSE date '0001-01-01' END)"
OPEN_ITEMS = OPEN_ITEMS.format(as_of=_FINITE.format("$3::date"), due_date=_FINITE.format("due_date"))


async def open_items(conn: asyncpg.Connection, tenant_id: int, invoice_form: str, as_of: dt.date,
                     include_paid: bool) -> list[asyncpg.Record]:
    """Per partner: the open invoices of `invoice_form` at `as_of` with their aging, and the unapplied items."""
    side = settlement.INVOICES[invoice_form]
    return await conn.fetch(OPEN_ITEMS, tenant_id, invoice_form, as_of, include_paid, side, ROLE_DEFAULTS[side],
                            settlement.SIGN[side])


def _open_items(invoice_form: str) -> Runner:
    async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
        include_paid = params.get("include_paid", False)
        if not isinstance(include_paid, bool):
            raise BadRequest("Field 'include_paid' must be true or false", field="include_paid")
        as_of = _date(params, "dateTo", dt.date.today())
        rows = _rows(await open_items(conn, tenant_id, invoice_form, as_of, include_paid))
        return {"data": rows, "as_of": as_of}

    return report


# Quantities in each item's base unit, by the rule stock moves by (gateway/posting.py): a line in its item's
# base unit, or of an item without one, counts as sent; a line in another unit, times the coefficient of the
# item's conversion for it (the last one known: a sale stays counted after its conversion is deleted).
# Amounts in the base currency, each line rounded to its decimals as the ledger posts it. The lines are summed
# per key, item and unit first; then each item and unit of the sums is looked up once, by primary key (OFFSET
# 0, see above), for its factor to the base unit.
SALES_SUMMARY = """
WITH s AS MATERIALIZED (
    SELECT {key} AS key, l.item_code, COALESCE(l.uom, '') AS uom, sum(sign * l.quantity) AS quantity,
           sum(sign * round((l.amount - COALESCE(l.discount, 0)) * v.exchange_rate, p.n)) AS net,
           sum(sign * round(COALESCE(l.tax_amount, 0) * v.exchange_rate, p.n)) AS tax,
           sum(sign * round(COALESCE(l.total_amount, 0) * v.exchange_rate, p.n)) AS total
    FROM (SELECT *, CASE WHEN form = 'setSaleReturn' THEN -1 ELSE 1 END AS sign FROM voucher
          WHERE tenant_id = $1 AND form IN ('setSaleInvoice', 'setSaleReturn') AND NOT deleted
            AND voucher_date BETWEEN $2 AND $3) v
    JOIN voucher_line l ON l.tenant_id = v.tenant_id AND l.form = v.form AND l.voucher_id = v.voucher_id
    CROSS JOIN (SELECT COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id
                                     AND c.currency_code = t.base_currency WHERE t.id = $1), 2) AS n) p
    GROUP BY 1, 2, 3
),
u AS MATERIALIZED (
    SELECT d.item_code, d.uom, NULLIF(i.uom, '') AS base,
           CASE WHEN NULLIF(i.uom, '') IS NULL OR d.uom IN ('', i.uom) THEN 1 ELSE c.coefficient END AS factor
    FROM (SELECT DISTINCT item_code, uom FROM s) d
    LEFT JOIN LATERAL (SELECT i.uom FROM item i WHERE i.tenant_id = $1 AND i.item_code = d.item_code OFFSET 0) i
      ON true
    LEFT JOIN LATERAL (SELECT c.coefficient FROM unit_conversion c
                       WHERE c.tenant_id = $1 AND c.item_code = d.item_code AND c.uom = d.uom OFFSET 0) c ON true
)
SELECT s.key AS "Key",{columns}
       sum(s.quantity * u.factor) AS "Quantity",
       sum(s.net) AS "NetAmount", sum(s.tax) AS "TaxAmount", sum(s.total) AS "TotalAmount"
FROM s JOIN u ON u.item_code = s.item_code AND u.uom = s.uom
GROUP BY 1
ORDER BY 1
"""
# Per grouping: the key, and the columns beside it. By item, the unit its quantities are in: the item's base
# unit, else the one unit its lines were sold in.
_ITEM_UOM = ("\n       COALESCE(max(u.base), CASE WHEN min(s.uom) = max(s.uom) THEN NULLIF(min(s.uom), '') END)"
             " AS \"Uom\",")
_GROUPS = {"period": ("to_char(v.voucher_date, 'YYYY-MM')", ""), "customer": ("v.partner_code", ""),
           "item": ("l.item_code", _ITEM_UOM)}


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
    key, columns = _GROUPS[group]
    sql = SALES_SUMMARY.format(key=key, columns=columns)  # one of three fixed texts
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
    ReportForm("getGoodsReceivedNotInvoiced", grni.open_receipts, params=("dateTo",),
               description="Goods receipt lines not yet invoiced at dateTo, by supplier, with their open value."),
    ReportForm("getSalesSummary", sales_summary, params=("dateFrom", "dateTo", "group_by"),
               description="Sales net of returns by period, customer or item."),
    ReportForm("getReconciliation", reconciliation.report, params=("dateTo",),
               description="Control accounts (receivable, payable, inventory, goods received not invoiced)"
                           " against their sub-ledgers at dateTo, with the difference."),
]
