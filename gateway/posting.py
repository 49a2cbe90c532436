"""Posting rules: what a voucher writes to the general ledger, to stock and to invoice allocations.

Rules are declared with their form (forms/vouchers.py names one of forms/postings.py) as data; this module turns them into set-based SQL that
reposts every changed voucher of a batch in the transaction that replaced it. Amounts are posted in the
base currency (voucher amount x exchange rate, each ledger amount rounded to its decimals, what rounding
leaves on a voucher posted to the rounding roles: _rounded_gl). Every identifier and expression here comes from the
declarations in code, never from a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import asyncpg

from .db import QUERIES
from .sqlnames import word

if TYPE_CHECKING:
    from .settlement import Settles

# Accounts by role when a tenant has not set its own (posting_account); a Vietnamese chart (Circular 200).
ROLE_DEFAULTS = {
    "receivable": "131",
    "payable": "331",
    "revenue": "5111",
    "sales_returns": "5212",  # Circular 200: 5212 sales returns (5213 is price allowances)
    "vat_output": "33311",
    "vat_input": "1331",
    "inventory": "156",
    "cost_of_sales": "632",
    # Goods received before their purchase invoice: a declared liability until the invoice comes (Circular
    # 200 has no account of its own for it; 3388 "other payables" by default, a tenant may set its own).
    "goods_received_not_invoiced": "3388",
    # Goods that come in without a price (a receipt at price 0): valued at the average cost, pending
    # resolution as surplus assets (3381).
    "inventory_surplus": "3381",
    # Purchase invoice lines of items whose stock is not tracked (services): an expense, not inventory.
    "purchased_services": "6427",  # outside service costs
    # Realised exchange differences on settlement (Circular 200: 515 financial income, 635 financial expenses).
    "fx_gain": "515",
    "fx_loss": "635",
    # What rounding to the base currency leaves between a voucher's debits and credits.
    "rounding_gain": "711",
    "rounding_loss": "811",
}

# Every statement below reads two row sources named `v` (the vouchers being posted: voucher columns) and `l`
# (their lines: voucher_line columns), supplied as CTEs by the caller: the write path builds them from the
# batch's own arrays, repost() from the stored rows by primary key. Nothing here scans by (tenant, form), so
# no plan depends on table statistics.
_LINES = "JOIN l ON l.voucher_id = v.voucher_id"
# Only items whose stock is tracked move (not services), each line joined to its item and to the conversion of
# its unit by primary key. The lookups are lateral subqueries the planner cannot flatten (OFFSET 0), so they
# stay a keyed lookup per line whatever it guesses about never-analysed tables: left to itself it preferred
# reading every item of the table (or of the tenant) and hashing them.
_STOCK_ITEM = (
    "JOIN LATERAL (SELECT i.uom FROM item i WHERE i.tenant_id = l.tenant_id AND i.item_code = l.item_code"
    " AND i.stock_tracked = 1 AND NOT i.deleted OFFSET 0) i ON true"
    " LEFT JOIN LATERAL (SELECT c.coefficient FROM unit_conversion c WHERE c.tenant_id = l.tenant_id"
    " AND c.item_code = l.item_code AND c.uom = l.uom AND NOT c.deleted OFFSET 0) c ON true"
)
# Stock is kept in the item's base unit: a line in another unit moves quantity x coefficient. A unit without a
# live conversion gives NULL, which the NOT NULL quantity columns refuse: the voucher fails rather than moving
# a wrong quantity. A line in the base unit, or of an item with no base unit, moves its quantity as is.
_BASE_QUANTITY = ("CASE WHEN NULLIF(i.uom, '') IS NULL OR l.uom IS NULL OR l.uom = i.uom THEN l.quantity"
                  " ELSE l.quantity * c.coefficient END")


@dataclass(frozen=True)
class Account:
    """Where an entry's account comes from: a posting role, a line column or a header field."""

    role: str | None = None
    line: str | None = None
    header: str | None = None

    def sql(self) -> str:
        if self.role:
            default = ROLE_DEFAULTS[self.role]
            return (f"COALESCE((SELECT pa.account_code FROM posting_account pa WHERE pa.tenant_id = $1"
                    f" AND pa.role = '{word(self.role)}'), '{default}')")
        if self.line:
            return f"l.{word(self.line)}"
        if self.header:
            return f"(v.document->>'{word(self.header)}')"
        raise ValueError("an Account needs a role, a line column or a header field")


def role(name: str) -> Account:
    return Account(role=name)


def line(column: str) -> Account:
    return Account(line=column)


def header(name: str) -> Account:
    return Account(header=name)


@dataclass(frozen=True)
class Entry:
    """Debit one account and credit another with `amount`: for every line, or once per voucher."""

    debit: Account
    credit: Account
    amount: str  # SQL over l.* (per line) or v.* (per voucher), in the voucher's currency
    per_voucher: bool = False
    where: str | None = None  # SQL over l.* and v.*: only the lines (or vouchers) it holds for
    # `amount` is already in the base currency (a value another voucher posted, e.g. the goods receipt that a
    # purchase invoice line relieves): not multiplied by this voucher's exchange rate.
    base: bool = False


@dataclass(frozen=True)
class Move:
    """A stock movement for every line with an item: in or out of the line's `site` column.

    How it is valued (gateway/costing.py) follows from `basis`: an inflow with a `value` that is neither 0 nor
    NULL is 'priced' at it, one without at the average cost of its item and site ('average'); 'sale' values a
    return at the cost of the sale line it cites (`ref`); 'transfer' marks both legs of a transfer, the in at
    exactly its out's cost. An inflow whose quantity is 0 but value is not adds that value ('value').
    """

    direction: str  # "in" or "out"
    site: str = "site_code"
    value: str | None = None  # SQL over l.* for the cost of an inflow; None: valued at average cost
    where: str | None = None  # SQL over l.* and v.*: only the lines it holds for
    basis: str | None = None  # 'sale' or 'transfer'; None: by `value` (see above)
    # The posting role of the cost entry's other side: Dr it / Cr inventory for an outflow, Dr inventory / Cr it
    # for an inflow valued by costing. None: no cost entry (a transfer; a priced inflow, which its rule posts);
    # an inflow without a price takes inventory_surplus.
    counter: str | None = None
    ref: tuple[str, str] | None = None  # line columns naming the cited voucher and its line (RefNumber)
    quantity: str | None = None  # SQL over l.* for the quantity in base units; None: the line's, converted
    base: bool = False  # `value` is already in the base currency (not multiplied by the exchange rate)


# The decimal places of the tenant's ($1) base currency, read once per statement: every ledger amount is
# rounded to them. A base currency missing from the catalog gets the catalog's default, 2.
_BASE_PLACES = ("SELECT COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id"
                " AND c.currency_code = t.base_currency WHERE t.id = $1), 2) AS n")
# A voucher's rounding difference comes after all its other entries.
_ROUNDING_RULE = 1_000_000


def _rounded_gl(parts: list[str]) -> str:
    """The insert of the ledger entries `parts` select (columns as below, amounts in the base currency),
    each amount rounded to the base currency's decimals (half away from zero, as round(numeric) does).

    What rounding moves a voucher's debits and credits apart by (a foreign-currency journal's lines, each
    rounded on its own) is posted as one more entry: credited to rounding_gain when the debits come out
    higher, debited to rounding_loss when the credits do, so that every voucher balances exactly. Only the
    difference rounding made is posted: a voucher unbalanced before rounding stays visibly unbalanced.
    Entries of 0 (before or after rounding) are dropped.
    """
    columns = ("tenant_id, form, voucher_id, rule, line_no, side, voucher_date, account_code, debit, credit,"
               " partner_code, job_code, dept_code")
    gain, loss = Account(role="rounding_gain").sql(), Account(role="rounding_loss").sql()
    return (
        "INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit,"
        " credit, partner_code, job_code, dept_code)\n"
        f"WITH gl_places AS MATERIALIZED ({_BASE_PLACES}),\n"
        "gl_rounded AS MATERIALIZED (SELECT x.tenant_id, x.form, x.voucher_id, x.rule, x.line_no, x.side,"
        " x.voucher_date, x.account_code, round(x.debit, p.n) AS debit, round(x.credit, p.n) AS credit,"
        " x.partner_code, x.job_code, x.dept_code, x.debit - x.credit AS exact\n"
        "FROM (" + "\nUNION ALL ".join(parts) + f") x({columns})\n"
        "CROSS JOIN gl_places p WHERE x.account_code IS NOT NULL),\n"
        # The gap at the base currency's scale (1, not 1.0000: the exact amounts carry the rate's decimals).
        "gl_gaps AS (SELECT g.*, round(g.gap_exact, p.n) AS gap FROM (SELECT tenant_id, form, voucher_id,"
        " voucher_date, sum(debit - credit - exact) AS gap_exact FROM gl_rounded"
        " GROUP BY tenant_id, form, voucher_id, voucher_date) g CROSS JOIN gl_places p WHERE g.gap_exact <> 0)\n"
        "SELECT tenant_id, form, voucher_id,"
        " row_number() OVER (PARTITION BY voucher_id ORDER BY rule, line_no, side), voucher_date,"
        " account_code, debit, credit, partner_code, job_code, dept_code\n"
        f"FROM (SELECT {columns} FROM gl_rounded\n"
        f"UNION ALL SELECT tenant_id, form, voucher_id, {_ROUNDING_RULE}, 0, 0, voucher_date,"
        f" CASE WHEN gap > 0 THEN {gain} ELSE {loss} END, GREATEST(-gap, 0), GREATEST(gap, 0), NULL, NULL, NULL"
        " FROM gl_gaps) y\n"
        "WHERE debit <> 0 OR credit <> 0"
    )


# A movement's basis (see Move) from its declaration and its figures, and its place among its item's movements
# of the day: priced inflows, transfers out, transfers in, outflows, then returns and other derived inflows.
_BASIS = ("CASE WHEN declared IS NOT NULL THEN declared WHEN qty_in = 0 AND qty_out = 0 THEN 'value'"
          " WHEN qty_out = 0 AND COALESCE(value_in, 0) <> 0 THEN 'priced' ELSE 'average' END")
_DAY_ORDER = ("CASE WHEN basis = 'priced' THEN 0 WHEN basis = 'transfer' AND qty_out <> 0 THEN 1"
              " WHEN basis = 'transfer' THEN 2 WHEN qty_out <> 0 THEN 3 ELSE 4 END")


def _move_source(rule: int, move: Move) -> str:
    """The rows of one Move rule, over the `v` and `l` sources."""
    site = f"l.{word(move.site)}"
    quantity = move.quantity or _BASE_QUANTITY
    qty_in, qty_out = (quantity, "0") if move.direction == "in" else ("0", quantity)
    rate = "" if move.base else " * v.exchange_rate"
    value = f"({move.value}){rate}" if move.value else "NULL::numeric"
    # Only lines that move something: a quantity, or (a value-only inflow) a value.
    moving = f"({quantity}) <> 0 OR COALESCE({value}, 0) <> 0" if move.quantity else "l.quantity <> 0"
    declared = f"'{word(move.basis)}'" if move.basis else "NULL"
    counter = f"'{word(move.counter)}'" if move.counter else "NULL"
    ref = f"l.{word(move.ref[0])}, l.{word(move.ref[1])}" if move.ref else "NULL, NULL::integer"
    return (f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, l.line_no, v.voucher_date,"
            f" l.item_code, {site}, {qty_in}, {qty_out}, {value}, {declared}, {counter}, {ref},"
            f" l.job_code, l.dept_code FROM v {_LINES} {_STOCK_ITEM}"
            f" WHERE {site} IS NOT NULL AND ({moving}){f' AND ({move.where})' if move.where else ''}")


@dataclass(frozen=True)
class Posting:
    """A rule as declared (forms/postings.py); build() compiles it into a new Posting holding its statements,
    so that one declaration, shared by the forms that name it, stays as written however often it is built."""

    entries: tuple[Entry, ...] = ()
    journal: bool = False  # the lines themselves are the entries (account_code, debit, credit)
    moves: tuple[Move, ...] = ()
    allocates: str | None = None  # the invoice form that the `allocation` sub-table pays
    settles: Settles | None = None  # the invoices it settles (allocations, returns) and the entries that go with it
    # Filled by build(): the CTEs of the posting statement by name, in the order they run (empty as declared).
    sql: dict[str, str] = field(default_factory=dict, repr=False)

    def build(self) -> Posting:
        """The rule compiled: a new Posting with its statements; the declaration is left as it is."""
        sql: dict[str, str] = {}
        if self.settles is not None:
            sql.update(self.settles.ctes())  # read by the ledger entries and the allocation rows below
        parts = []
        for rule, entry in enumerate(self.entries):
            source = "FROM v" if entry.per_voucher else f"FROM v {_LINES}"
            if entry.where:
                source += f" WHERE {entry.where}"
            line_no = "0" if entry.per_voucher else "l.line_no"
            analytic = "NULL, NULL" if entry.per_voucher else "l.job_code, l.dept_code"
            for side, account in ((0, entry.debit), (1, entry.credit)):
                amount = f"({entry.amount})" if entry.base else f"({entry.amount}) * v.exchange_rate"
                debit, credit = (amount, "0") if side == 0 else ("0", amount)
                parts.append(
                    f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, {line_no} AS line_no, {side} AS side,"
                    f" v.voucher_date, {account.sql()} AS account_code, {debit} AS debit, {credit} AS credit,"
                    f" v.partner_code, {analytic} {source}")
        if self.journal:
            parts.append(
                "SELECT v.tenant_id, v.form, v.voucher_id, 0, l.line_no, 0, v.voucher_date, l.account_code,"
                " COALESCE(l.debit, 0) * v.exchange_rate, COALESCE(l.credit, 0) * v.exchange_rate,"
                f" l.customer_code, l.job_code, l.dept_code FROM v {_LINES}")
        if self.settles is not None:
            parts += self.settles.gl_parts(len(self.entries))
        if parts:
            sql["gl"] = _rounded_gl(parts)
        moves = []
        for rule, move in enumerate(self.moves):
            moves.append(_move_source(rule, move))
        if moves:
            # Written uncosted (cost and running state NULL): gateway/costing.py values them after the write,
            # in order with the item's other movements.
            sql["stock"] = (
                "INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code,"
                " qty_in, qty_out, value_in, line_no, day_order, basis, counter, ref_voucher_id, ref_line,"
                " job_code, dept_code)\n"
                "SELECT tenant_id, form, voucher_id, row_number() OVER (PARTITION BY voucher_id ORDER BY rule,"
                f" line_no), voucher_date, item_code, site_code, qty_in, qty_out, value_in, line_no, {_DAY_ORDER},"
                " basis, counter, ref_voucher_id, ref_line, job_code, dept_code\n"
                f"FROM (SELECT *, {_BASIS} AS basis FROM (" + "\nUNION ALL ".join(moves) + ") x(tenant_id, form,"
                " voucher_id, rule, line_no, voucher_date, item_code, site_code, qty_in, qty_out, value_in,"
                " declared, counter, ref_voucher_id, ref_line, job_code, dept_code)) y"
            )
        if self.settles is not None:
            sql["allocation"] = self.settles.insert()
        return replace(self, sql=sql)

    def statement(self, sources: str, lines: str | None = None) -> str | None:
        """One statement writing every posting (and, given `lines`, the lines themselves) from `sources`,
        the CTEs `v` and `l`; None when there is nothing to write."""
        parts = [f"ins_lines AS ({lines})"] if lines else []
        parts += [f"{name} AS ({sql})" for name, sql in self.sql.items()]
        if not parts:
            return None
        return f"WITH {sources},\n" + ",\n".join(parts) + "\nSELECT 1"


def by_keys(table: str, columns: str = "*") -> str:
    """The rows of `table` of the vouchers $3 (tenant $1, form $2), found key by key through the primary key.

    A lateral subquery per key, which the planner cannot flatten (OFFSET 0): a plain `voucher_id = ANY(...)`
    on a never-analysed table was planned as a scan of every row of the tenant through a smaller index that
    leads with tenant_id (voucher_line_item, gl_entry_account, ...), then filtered. Not for `voucher` itself:
    see STORED_VOUCHERS.
    """
    inner = "ctid" if columns == "ctid" else "*"
    return (f"SELECT r.{columns} FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL"
            f" (SELECT {inner} FROM {word(table)} WHERE tenant_id = $1 AND form = $2"
            f" AND voucher_id = k.voucher_id OFFSET 0) r")


# The stored vouchers $3 (tenant $1, form $2), key by key through voucher_by_key (migration 0007). The form
# is checked outside the lateral subquery (OFFSET 0 keeps it there): with it inside, the primary key and
# voucher_by_date would match too, and without statistics the planner rates a scan of all the tenant's
# vouchers of the form as cheap as a key lookup.
STORED_VOUCHERS = ("SELECT r.* FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL"
                   " (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r"
                   " WHERE r.form = $2")


# The vouchers' stored rows, as the `v` and `l` sources of a posting statement.
STORED_SOURCES = f"v AS MATERIALIZED ({STORED_VOUCHERS}),\nl AS MATERIALIZED ({by_keys('voucher_line')})"
# Removing what vouchers posted, and the settings of the writing transaction: sql/queries.sql's
# voucher_unpost, voucher_unpost_with_lines and voucher_write_settings.


async def unpost(conn: asyncpg.Connection, tenant_id: int, form: str, voucher_ids: list[str]) -> None:
    await conn.execute(QUERIES["voucher_unpost"], tenant_id, form, voucher_ids)


async def repost(conn: asyncpg.Connection, posting: Posting | None, tenant_id: int, form: str,
                 voucher_ids: list[str]) -> None:
    """Replace what these stored vouchers posted with what their stored lines post."""
    await unpost(conn, tenant_id, form, voucher_ids)
    statement = posting.statement(STORED_SOURCES) if posting is not None else None
    if statement:
        await conn.execute(statement, tenant_id, form, voucher_ids)
