"""Posting rules: what a voucher writes to the general ledger, to stock and to invoice allocations.

Rules are declared per form (forms/postings.py) as data; this module turns them into set-based SQL that
reposts every changed voucher of a batch in the transaction that replaced it. Amounts are posted in the
base currency (voucher amount x exchange rate). Every identifier and expression here comes from the
declarations in code, never from a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import asyncpg

# Accounts by role when a tenant has not set its own (posting_account); a Vietnamese chart (Circular 200).
ROLE_DEFAULTS = {
    "receivable": "131",
    "payable": "331",
    "revenue": "5111",
    "sales_returns": "5212",  # Circular 200: 5212 sales returns (5213 is price allowances)
    "vat_output": "33311",
    "vat_input": "1331",
    "inventory": "156",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_VOUCHERS = "v.tenant_id = $1 AND v.form = $2 AND v.voucher_id = ANY($3::text[])"
_LINES = "JOIN voucher_line l ON l.tenant_id = v.tenant_id AND l.form = v.form AND l.voucher_id = v.voucher_id"
# Only items whose stock is tracked move (not services), each line joined to its item and to the conversion of
# its unit by primary key, so the plan stays a keyed lookup per line even on never-analysed tables.
_STOCK_ITEM = (
    "JOIN item i ON i.tenant_id = l.tenant_id AND i.item_code = l.item_code"
    " AND i.stock_tracked = 1 AND NOT i.deleted"
    " LEFT JOIN unit_conversion c ON c.tenant_id = l.tenant_id AND c.item_code = l.item_code"
    " AND c.uom = l.uom AND NOT c.deleted"
)
# Stock is kept in the item's base unit: a line in another unit moves quantity x coefficient. A unit without a
# live conversion gives NULL, which the NOT NULL quantity columns refuse: the voucher fails rather than moving
# a wrong quantity. A line in the base unit, or of an item with no base unit, moves its quantity as is.
_BASE_QUANTITY = ("CASE WHEN NULLIF(i.uom, '') IS NULL OR l.uom IS NULL OR l.uom = i.uom THEN l.quantity"
                  " ELSE l.quantity * c.coefficient END")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"unsafe identifier in a posting rule: {name!r}")
    return name


@dataclass(frozen=True)
class Account:
    """Where an entry's account comes from: a posting role, a line column or a header field."""

    role: str | None = None
    line: str | None = None
    header: str | None = None

    def sql(self) -> str:
        if self.role:
            default = ROLE_DEFAULTS[self.role]
            return (f"COALESCE((SELECT pa.account_code FROM posting_account pa WHERE pa.tenant_id = v.tenant_id"
                    f" AND pa.role = '{_ident(self.role)}'), '{default}')")
        if self.line:
            return f"l.{_ident(self.line)}"
        if self.header:
            return f"(v.document->>'{_ident(self.header)}')"
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


@dataclass(frozen=True)
class Move:
    """A stock movement for every line with an item: in or out of the line's `site` column."""

    direction: str  # "in" or "out"
    site: str = "site_code"
    value: str | None = None  # SQL over l.* for the cost of an inflow; None: valued at average cost


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
            source = "FROM voucher v" if entry.per_voucher else f"FROM voucher v {_LINES}"
            line_no = "0" if entry.per_voucher else "l.line_no"
            analytic = "NULL, NULL" if entry.per_voucher else "l.job_code, l.dept_code"
            for side, account in ((0, entry.debit), (1, entry.credit)):
                amount = f"({entry.amount}) * v.exchange_rate"
                debit, credit = (amount, "0") if side == 0 else ("0", amount)
                parts.append(
                    f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, {line_no} AS line_no, {side} AS side,"
                    f" v.voucher_date, {account.sql()} AS account_code, {debit} AS debit, {credit} AS credit,"
                    f" v.partner_code, {analytic} {source} WHERE {_VOUCHERS}")
        if self.journal:
            parts.append(
                "SELECT v.tenant_id, v.form, v.voucher_id, 0, l.line_no, 0, v.voucher_date, l.account_code,"
                " COALESCE(l.debit, 0) * v.exchange_rate, COALESCE(l.credit, 0) * v.exchange_rate,"
                f" NULL::text, l.job_code, l.dept_code FROM voucher v {_LINES} WHERE {_VOUCHERS}")
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
            site = f"l.{_ident(move.site)}"
            qty_in, qty_out = (_BASE_QUANTITY, "0") if move.direction == "in" else ("0", _BASE_QUANTITY)
            value = f"({move.value}) * v.exchange_rate" if move.value else "NULL::numeric"
            moves.append(
                f"SELECT v.tenant_id, v.form, v.voucher_id, {rule} AS rule, l.line_no, v.voucher_date,"
                f" l.item_code, {site}, {qty_in}, {qty_out}, {value} FROM voucher v {_LINES} {_STOCK_ITEM}"
                f" WHERE {_VOUCHERS} AND {site} IS NOT NULL AND l.quantity <> 0")
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
                f"SELECT v.tenant_id, v.form, v.voucher_id, e.ord, '{_ident(self.allocates)}', e.a->>'InvoiceId',"
                " (e.a->>'Amount')::numeric\n"
                "FROM voucher v CROSS JOIN LATERAL jsonb_array_elements(COALESCE(v.document->'allocation', '[]'))"
                f" WITH ORDINALITY AS e(a, ord) WHERE {_VOUCHERS}"
            )
        return self


_UNPOST = [
    "DELETE FROM gl_entry WHERE tenant_id = $1 AND form = $2 AND voucher_id = ANY($3::text[])",
    "DELETE FROM stock_move WHERE tenant_id = $1 AND form = $2 AND voucher_id = ANY($3::text[])",
    "DELETE FROM voucher_allocation WHERE tenant_id = $1 AND form = $2 AND voucher_id = ANY($3::text[])",
]


async def unpost(conn: asyncpg.Connection, tenant_id: int, form: str, voucher_ids: list[str]) -> None:
    for statement in _UNPOST:
        await conn.execute(statement, tenant_id, form, voucher_ids)


async def repost(conn: asyncpg.Connection, posting: Posting | None, tenant_id: int, form: str,
                 voucher_ids: list[str]) -> None:
    """Replace what these vouchers posted with what their current lines post."""
    await unpost(conn, tenant_id, form, voucher_ids)
    if posting is None:
        return
    for statement in posting.sql.values():
        await conn.execute(statement, tenant_id, form, voucher_ids)
