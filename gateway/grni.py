"""Goods received not invoiced: goods receipts and the purchase invoices that cite them.

A goods receipt (setReceipt) brings its goods into stock at the line's amount and owes that value to the
supplier in a declared account (posting role goods_received_not_invoiced), not yet in the payable: nothing is
payable before the invoice. A purchase invoice line that cites the receipt's line (ReceiptId,
ReceiptRefNumber) moves that debt to the payable: it relieves the receipt's value of the quantity invoiced
(as the receipt posted it, in the base currency at the receipt's rate) and credits the payable with its own
amount; the goods are not brought into stock again, and the difference between the two (price, or rate) is a
value-only adjustment of the stock (and the inventory account) at the receipt line's site. So the payable
holds only invoices and payments, and the declared account holds exactly the goods received and not yet
invoiced: `not_invoiced_value`, the sub-ledger of the reconciliation, and the report
getGoodsReceivedNotInvoiced.

The SQL fragments here are shared by the posting rules (forms/postings.py); the sub-ledger's statement
(sql/queries.sql grni_open_receipts, the report, whose total is the sub-ledger) writes the same formulas out,
and tests/test_grni.py checks that it still does, so that what is posted and what the sub-ledger counts are one
formula.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from . import costing, posting
from .db import QUERIES
from .responses import plain

RECEIPT_FORM = "setReceipt"
INVOICE_FORM = "setPurchaseInvoice"

# The base currency's decimal places (tenant $1), looked up once per statement; the catalog's default, 2, for
# a base currency missing from it (as the ledger's rounding does, gateway/posting.py).
_BASE_PLACES = ("COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id"
                " AND c.currency_code = t.base_currency WHERE t.id = $1), 2)")


def base_round(expr: str) -> str:
    """`expr` (an amount in the base currency) rounded to the base currency's decimals, half away from zero."""
    return f"round({expr}, {_BASE_PLACES})"


def relief(invoiced: str, received: str, amount: str, rate: str) -> str:
    """The base-currency value of `invoiced` units of a receipt line of `received` units worth `amount` at
    `rate`: the whole line's value when all of it is invoiced at once, else its share, rounded."""
    return base_round(f"CASE WHEN {invoiced} = {received} THEN {amount} ELSE {amount} * {invoiced}"
                      f" / NULLIF({received}, 0) END * {rate}")


def same_tenant(column: str, tenant: str = "$1") -> str:
    """The line's tenant, compared in a form no index serves. Lines are looked up by the key that cites them
    (voucher_line_receipt_key, voucher_line_receipt: migration 0014); with `tenant_id = $1`, an index leading
    with tenant_id would be a path too, and on a never-analysed table the planner may take it for one line and
    read all the tenant's lines for each look-up."""
    return f"{column} IS NOT DISTINCT FROM {tenant}"


# Over the lines `l` (voucher_line columns): the item's stock is tracked (goods, not a service). A keyed
# lookup per line that the planner cannot turn into a scan of the tenant's items (OFFSET 0).
STOCK_TRACKED = ("COALESCE((SELECT i.stock_tracked FROM item i WHERE i.tenant_id = l.tenant_id"
                 " AND i.item_code = l.item_code AND NOT i.deleted OFFSET 0), 0) = 1")
CITES_RECEIPT = "l.receipt_id IS NOT NULL"
CITES_NO_RECEIPT = "l.receipt_id IS NULL"

# Over a purchase invoice line `l` and its voucher `v` (see gateway/posting.py): the receipt line's value
# that the line relieves (base currency), and the line's own amount in the base currency.
RELIEF = (
    f"(SELECT {relief('l.quantity', 'r.quantity', 'r.amount', 'rv.exchange_rate')}"
    f" FROM (SELECT r.tenant_id, r.voucher_id, r.quantity, r.amount FROM voucher_line r"
    f" WHERE r.voucher_id = l.receipt_id AND r.line_no = l.receipt_line AND {same_tenant('r.tenant_id', 'l.tenant_id')}"
    f" AND r.form = '{RECEIPT_FORM}' OFFSET 0) r"
    f" CROSS JOIN LATERAL (SELECT rv.form, rv.exchange_rate FROM voucher rv"
    f" WHERE rv.voucher_id = r.voucher_id AND rv.tenant_id = r.tenant_id OFFSET 0) rv"
    f" WHERE rv.form = '{RECEIPT_FORM}')"
)
INVOICED = base_round("l.amount * v.exchange_rate")

# What the invoice line costs beyond the receipt value it relieves (negative when it costs less): a value-only
# adjustment of the stock and of the inventory account.
VARIANCE = f"{INVOICED} - {RELIEF}"


async def not_invoiced_value(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    """The base-currency value of the goods received and not invoiced at `as_of`: per receipt line, its posted
    value minus what the purchase invoices dated up to then relieved of it. Equal to the balance of the
    goods_received_not_invoiced account at that date, unless other vouchers post to that account."""
    # The report is the sub-ledger: the sum of its suppliers' open values (lines wholly invoiced add 0).
    rows = await conn.fetch(QUERIES["grni_open_receipts"], tenant_id, as_of)
    return sum((Decimal(r["Value"]) for r in rows), Decimal(0))


async def open_receipts(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """getGoodsReceivedNotInvoiced: the receipt lines not yet (wholly) invoiced at dateTo, per supplier."""
    from .reports import _date  # the reports' one date rule; imported here as reports lists this form

    as_of = _date(params, "dateTo", dt.date.today())
    records = await conn.fetch(QUERIES["grni_open_receipts"], tenant_id, as_of)
    rows = [{k: plain(v) for k, v in r.items()} for r in records]
    return {"data": rows, "as_of": as_of}


@functools.cache
def _invoice_rule() -> posting.Posting:
    """The purchase invoice's posting rule, compiled once (the declaration stays as written)."""
    # The rule is declared with its form, whose module imports this one.
    from forms.postings import PURCHASE_INVOICE

    return PURCHASE_INVOICE.build()


async def repost_invoices(conn: asyncpg.Connection, tenant_id: int, receipts: list[str]) -> None:
    """Repost the purchase invoices citing these (replaced) receipts: what they relieve follows the receipt's
    value (amount, quantity, rate), and so does the price difference they put into stock, costed again."""
    ids = sorted({vid for r in await _invoiced(conn, tenant_id, receipts, []) for vid in r["invoices"]})
    if not ids:
        return
    before = await costing.stored_moves(conn, tenant_id, INVOICE_FORM, ids)
    await posting.repost(conn, _invoice_rule(), tenant_id, INVOICE_FORM, ids)
    # Movements of no quantity: they cannot take stock below nothing, so there is no shortfall to answer.
    await costing.recost(conn, tenant_id, INVOICE_FORM, ids, before)


# --- checks (inside the write transaction, see gateway/vouchers.py) ------------------------------------------

class Batch(Protocol):
    upserts: dict[str, tuple[int, dict[str, Any]]]
    deletes: dict[str, int]

    def fail(self, index: int, key: Any, path: str, message: str) -> None: ...


def _invoices(ids: list[str]) -> str:
    return f"{INVOICE_FORM} {', '.join(ids)}"


async def _invoiced(conn: asyncpg.Connection, tenant_id: int, receipts: list[str],
                    other_than: list[str]) -> list[asyncpg.Record]:
    """Per cited line of `receipts` (receipt_id, receipt_line): the quantity that live purchase invoices (not
    among `other_than`) invoice of it, their item, unit and site, and those invoices."""
    rows: list[asyncpg.Record] = await conn.fetch(QUERIES["grni_invoiced"], tenant_id, receipts, other_than)
    return rows


async def check_invoices(conn: asyncpg.Connection, tenant_id: int, batch: Batch,
                         docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> None:
    """Purchase invoice lines that cite a goods receipt line: a live receipt of the same supplier, the line
    there with the same item and unit, and no more than is not yet invoiced of it.

    The cited receipts are locked (in key order) before what is invoiced of them is read: a second invoice
    citing one waits for this batch to commit, then counts its lines; a receipt's cancellation or
    replacement waits too.
    """
    cites = [(key, index, doc, i, line) for key, (index, doc) in docs for i, line in enumerate(doc["detail"])
             if line.get("ReceiptId") is not None or line.get("ReceiptRefNumber") is not None]
    if not cites:
        return
    receipts = sorted({line["ReceiptId"] for *_, line in cites if isinstance(line.get("ReceiptId"), str)})
    partners = {r["voucher_id"]: r["partner_code"]
                for r in await conn.fetch(QUERIES["grni_lock_receipts"], tenant_id, receipts)}
    wanted = sorted({(line["ReceiptId"], line["ReceiptRefNumber"]) for *_, line in cites
                     if line.get("ReceiptId") in partners and line.get("ReceiptRefNumber") is not None})
    lines = {(r["voucher_id"], r["line_no"]): r for r in await conn.fetch(
        QUERIES["grni_receipt_lines"], tenant_id, [w[0] for w in wanted], [w[1] for w in wanted])}
    invoiced = {(r["receipt_id"], r["receipt_line"]): (r["quantity"], list(r["invoices"])) for r in
                await _invoiced(conn, tenant_id, sorted(partners), sorted({*batch.upserts, *batch.deletes}))}
    in_batch: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for key, index, doc, i, line in cites:
        receipt, ref = line.get("ReceiptId"), line.get("ReceiptRefNumber")
        at = f"/detail/{i}"
        if receipt is None or ref is None:
            missing = "ReceiptRefNumber" if receipt is not None else "ReceiptId"
            batch.fail(index, key, f"{at}/{missing}", f"{missing} is required with "
                       f"{'ReceiptId' if receipt is not None else 'ReceiptRefNumber'} (line {line.get('RefNumber')})")
            continue
        if receipt not in partners:
            batch.fail(index, key, f"{at}/ReceiptId", f"ReceiptId '{receipt}' is not a live {RECEIPT_FORM}")
            continue
        supplier = doc.get("SupplierCode")
        if partners[receipt] != supplier:
            batch.fail(index, key, f"{at}/ReceiptId", f"ReceiptId '{receipt}' received goods from "
                       f"'{partners[receipt]}', not from SupplierCode '{supplier}'")
        got = lines.get((receipt, ref))
        if got is None:
            batch.fail(index, key, f"{at}/ReceiptRefNumber", f"{RECEIPT_FORM} '{receipt}' has no line {ref}")
            continue
        problems = _line_problems(receipt, ref, line, got)
        for name, message in problems:
            batch.fail(index, key, f"{at}/{name}", message)
        if problems:
            continue
        done, by = invoiced.get((receipt, ref), (Decimal(0), []))
        quantity = Decimal(line.get("Quantity") or 0)
        open_ = got["quantity"] - done - in_batch[(receipt, ref)]
        if quantity > open_:
            others = f" by {_invoices(by)}" if by else ""
            batch.fail(index, key, f"{at}/Quantity",
                       f"Quantity {quantity} is more than is not yet invoiced of {RECEIPT_FORM} '{receipt}' line "
                       f"{ref}: received {got['quantity']}, invoiced {done}{others}"
                       f"{f', {in_batch[(receipt, ref)]} earlier in this request' if in_batch[(receipt, ref)] else ''}"
                       f", open {open_}")
        in_batch[(receipt, ref)] += quantity


def _line_problems(receipt: str, ref: int, line: dict[str, Any], got: asyncpg.Record) -> list[tuple[str, str]]:
    """How an invoice line differs from the receipt line it cites (item, unit, site, a service line)."""
    where = f"{RECEIPT_FORM} '{receipt}' line {ref}"
    if line.get("ItemCode") != got["item_code"]:
        message = f"ItemCode '{line.get('ItemCode')}' is not the item of {where} ('{got['item_code']}')"
        return [("ItemCode", message)]
    if not got["tracked"]:
        message = (f"{where} is of item '{got['item_code']}', whose stock is not tracked: the receipt posted "
                   "nothing to invoice against; leave ReceiptId out")
        return [("ReceiptRefNumber", message)]
    problems = []
    if line.get("Uom") != got["uom"]:
        message = f"Uom '{line.get('Uom')}' is not the unit of {where} ('{got['uom']}'): invoice in the receipt's unit"
        problems.append(("Uom", message))
    if line.get("SiteCode") != got["site_code"]:
        message = f"SiteCode '{line.get('SiteCode')}' is not the site of {where} ('{got['site_code']}')"
        problems.append(("SiteCode", message))
    return problems


async def check_receipts(conn: asyncpg.Connection, tenant_id: int, batch: Batch,
                         docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> None:
    """A goods receipt that live purchase invoices cite cannot be cancelled, nor replaced so that a cited line
    goes, changes item, unit or site, or receives less than is invoiced of it, nor moved to another partner.

    The stored receipts are locked first (key order), then the invoices citing them are read: an invoice
    citing one in a concurrent request either committed before (and is counted) or waits for this one.
    """
    keys = sorted({*batch.upserts, *batch.deletes})
    if not keys:
        return
    partners = {r["voucher_id"]: r["partner_code"]
                for r in await conn.fetch(QUERIES["grni_lock_receipts"], tenant_id, keys)}
    if not partners:
        return
    cited: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in await _invoiced(conn, tenant_id, sorted(partners), []):
        cited[row["receipt_id"]].append(row)
    for receipt in sorted(cited):
        rows = sorted(cited[receipt], key=lambda r: r["receipt_line"])
        by = _invoices(sorted({vid for r in rows for vid in r["invoices"]}))
        if receipt in batch.deletes:
            index = batch.deletes.pop(receipt)
            batch.fail(index, receipt, "/Status", f"{RECEIPT_FORM} '{receipt}' is invoiced by {by}: it cannot be "
                       "cancelled while they cite it")
            continue
        if receipt not in batch.upserts:
            continue
        index, doc = batch.upserts[receipt]
        if doc.get("CustomerCode") != partners[receipt]:
            batch.fail(index, receipt, "/CustomerCode", f"CustomerCode '{doc.get('CustomerCode')}' is not "
                       f"'{partners[receipt]}', the supplier of the goods that {by} invoice")
        for path, message in _replacement_problems(doc, rows):
            batch.fail(index, receipt, path, message)


def _replacement_problems(doc: dict[str, Any], cited: list[asyncpg.Record]) -> list[tuple[str, str]]:
    """What a receipt sent again changes of its lines that invoices cite."""
    at = {line.get("RefNumber"): (i, line) for i, line in enumerate(doc["detail"])}
    problems = []
    for row in cited:
        ref, by = row["receipt_line"], _invoices(list(row["invoices"]))
        if ref not in at:
            problems.append(("/detail", f"line {ref} is invoiced by {by}: it cannot be left out"))
            continue
        i, line = at[ref]
        for name, column in (("ItemCode", "item_code"), ("Uom", "uom"), ("SiteCode", "site_code")):
            if line.get(name) != row[column]:
                message = f"{name} '{line.get(name)}' of line {ref} is not '{row[column]}', which {by} invoice"
                problems.append((f"/detail/{i}/{name}", message))
        if Decimal(line.get("Quantity") or 0) < row["quantity"]:
            message = (f"Quantity {line.get('Quantity')} of line {ref} is less than the {row['quantity']} that {by}"
                       " invoice")
            problems.append((f"/detail/{i}/Quantity", message))
    return problems
