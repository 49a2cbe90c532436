"""Posting rules: what a voucher writes to the general ledger, to stock and to invoice allocations.

Rules are declared with their form (forms/vouchers.py names one of forms/postings.py) as data; this module turns them into set-based SQL that
reposts every changed voucher of a batch in the transaction that replaced it. Amounts are posted in the
base currency (voucher amount x exchange rate). Every identifier and expression here comes from the
declarations in code, never from a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from .sqlnames import word

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


@dataclass(frozen=True)
class Move:
    """A stock movement for every line with an item: in or out of the line's `site` column."""

    direction: str  # "in" or "out"
    site: str = "site_code"
    value: str | None = None  # SQL over l.* for the cost of an inflow; None: valued at average cost
    where: str | None = None  # SQL over l.* and v.*: only the lines it holds for


@dataclass(frozen=True)
class Posting:
    entries: tuple[Entry, ...] = ()
    journal: bool = False  # the lines themselves are the entries (account_code, debit, credit)
    moves: tuple[Move, ...] = ()
    allocates: str | None = None  # the invoice form that the `allocation` sub-table pays
    sql: dict[str, str] = field(default_factory=dict, compare=False)

    def build(self) -> Posting:
        parts = []
        for rule, entry in enumerate(self.entries):
            source = "FROM v" if entry.per_voucher else f"FROM v {_LINES}"
            if entry.where:
                source += f" WHERE {entry.where}"
            line_no = "0" if entry.per_voucher else "l.line_no"
            analytic = "NULL, NULL" if entry.per_voucher else "l.job_code, l.dept_code"
            for side, account in ((0, entry.debit), (1, entry.credit)):
                amount = f"({entry.amount}) * v.exchange_rate"
                debit, credit = (amount, "0") if side == 0 else ("0", amount)
                parts.append(
                    f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, {line_no} AS line_no, {side} AS side,"
                    f" v.voucher_date, {account.sql()} AS account_code, {debit} AS debit, {credit} AS credit,"
                    f" v.partner_code, {analytic} {source}")
        if self.journal:
            parts.append(
                "SELECT v.tenant_id, v.form, v.voucher_id, 0, l.line_no, 0, v.voucher_date, l.account_code,"
                " COALESCE(l.debit, 0) * v.exchange_rate, COALESCE(l.credit, 0) * v.exchange_rate,"
                f" NULL::text, l.job_code, l.dept_code FROM v {_LINES}")
        if parts:
            self.sql["gl"] = (
                "INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit,"
                " credit, partner_code, job_code, dept_code)\n"
                "SELECT tenant_id, form, voucher_id,"
                " row_number() OVER (PARTITION BY voucher_id ORDER BY rule, line_no, side), voucher_date,"
                " account_code, debit, credit, partner_code, job_code, dept_code\n"
                "FROM (" + "\nUNION ALL ".join(parts) + ") x(tenant_id, form, voucher_id, rule, line_no, side,"
                " voucher_date, account_code, debit, credit, partner_code, job_code, dept_code)\n"
                "WHERE account_code IS NOT NULL AND (debit <> 0 OR credit <> 0)"
            )
        moves = []
        for rule, move in enumerate(self.moves):
            site = f"l.{word(move.site)}"
            qty_in, qty_out = (_BASE_QUANTITY, "0") if move.direction == "in" else ("0", _BASE_QUANTITY)
            value = f"({move.value}) * v.exchange_rate" if move.value else "NULL::numeric"
            moves.append(
                f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, l.line_no, v.voucher_date,"
                f" l.item_code, {site}, {qty_in}, {qty_out}, {value} FROM v {_LINES} {_STOCK_ITEM}"
                f" WHERE {site} IS NOT NULL AND l.quantity <> 0{f' AND ({move.where})' if move.where else ''}")
        if moves:
            self.sql["stock"] = (
                "INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code,"
                " qty_in, qty_out, value_in)\n"
                "SELECT tenant_id, form, voucher_id, row_number() OVER (PARTITION BY voucher_id ORDER BY rule,"
                " line_no), voucher_date, item_code, site_code, qty_in, qty_out, value_in\n"
                "FROM (" + "\nUNION ALL ".join(moves) + ") x(tenant_id, form, voucher_id, rule, line_no,"
                " voucher_date, item_code, site_code, qty_in, qty_out, value_in)"
            )
        if self.allocates:
            self.sql["allocation"] = (
                "INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)\n"
                f"SELECT v.tenant_id, v.form, v.voucher_id, e.ord, '{word(self.allocates)}', e.a->>'InvoiceId',"
                " (e.a->>'Amount')::numeric\n"
                "FROM v CROSS JOIN LATERAL jsonb_array_elements(COALESCE(v.document->'allocation', '[]'))"
                " WITH ORDINALITY AS e(a, ord)"
            )
        return self

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


def _delete_by_keys(table: str) -> str:
    return f"DELETE FROM {word(table)} WHERE ctid = ANY(ARRAY({by_keys(table, 'ctid')}))"


# The vouchers' stored rows, as the `v` and `l` sources of a posting statement.
STORED_SOURCES = f"v AS MATERIALIZED ({STORED_VOUCHERS}),\nl AS MATERIALIZED ({by_keys('voucher_line')})"
# One statement (data-modifying CTEs) instead of one round trip per table. Rows go by their ctid, found
# through the primary key; a row deleted here is never updated elsewhere (lines and postings are only
# inserted and deleted, under the lock of their voucher's row), so the ctid cannot go stale.
UNPOST = (f"WITH g AS ({_delete_by_keys('gl_entry')}), s AS ({_delete_by_keys('stock_move')})"
          f" {_delete_by_keys('voucher_allocation')}")
# The same, with the vouchers' lines.
UNPOST_WITH_LINES = f"WITH d AS ({_delete_by_keys('voucher_line')}), {UNPOST.removeprefix('WITH ')}"
# Settings for the writing transaction. Parameters become constants of each plan, so the planner knows how
# many vouchers and lines a statement handles instead of assuming a handful (a cached generic plan would join
# them in nested loops); custom planning costs far less than such a loop over a batch of 1,000 lines. Joins
# are made in the order written: vouchers to their lines (hash or merge join), then each line to its item and unit
# conversion by primary key. Otherwise a guess about a never-analysed table (say that few items are stock
# tracked) could put the item scan first and then join every line to every voucher of the batch.
PLAN_SETTINGS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL join_collapse_limit = 1"


async def unpost(conn: asyncpg.Connection, tenant_id: int, form: str, voucher_ids: list[str]) -> None:
    await conn.execute(UNPOST, tenant_id, form, voucher_ids)


async def repost(conn: asyncpg.Connection, posting: Posting | None, tenant_id: int, form: str,
                 voucher_ids: list[str]) -> None:
    """Replace what these stored vouchers posted with what their stored lines post."""
    await unpost(conn, tenant_id, form, voucher_ids)
    statement = posting.statement(STORED_SOURCES) if posting is not None else None
    if statement:
        await conn.execute(statement, tenant_id, form, voucher_ids)
