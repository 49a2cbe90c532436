"""Settlement of invoices: what payments and sale returns take off the invoices they name, checked in the write.

A cash receipt (disbursement) pays sales (purchase) invoices through its `allocation` list; a sale return nets
against the invoice its lines cite (SaleInvId). Each settling voucher writes a voucher_allocation row per
invoice (per citing line for a return) recording what it settles in the invoice's currency (`invoice_amount`)
and, in the base currency, what it takes off the control account at the invoice's book rate (`base_amount`):
the invoice's posted amount on that account in proportion, the last settlement taking whatever is left, so
that an invoice settled in full leaves exactly 0 there. A payment's value at its own rate differs from that by
the realised exchange difference, posted with the payment to fx_gain or fx_loss.

The open-items reports (getReceivables, getPayables) derive everything from these rows and the ledger: an
invoice's outstanding amount in the base currency is what it posted to the control account less what was
settled, and a partner's other entries on the account (payments not allocated, returns citing no invoice,
journal lines) are its unapplied items, so that open items plus unapplied items equal the account's balance
per partner. subledger_total() is that figure for the whole account, which the reconciliation report
compares with the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import asyncpg

from .db import QUERIES
from .posting import ROLE_DEFAULTS, Account
from .sqlnames import word

if TYPE_CHECKING:
    from .vouchers import VoucherBatch, VoucherForm

Docs = list[tuple[str, tuple[int, dict[str, Any]]]]

# The decimal places of the tenant's ($1) base currency, as the ledger's rounding reads them (gateway/posting.py).
BASE_PLACES = ("COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id"
               " AND c.currency_code = t.base_currency WHERE t.id = $1), 2)")
# The control account of each side, and the sign that makes what the partner owes (receivable) or is owed
# (payable) positive.
SIGN = {"receivable": 1, "payable": -1}
# The invoice forms and the side of the books they post to.
INVOICES = {"setSaleInvoice": "receivable", "setPurchaseInvoice": "payable"}
EXACT_DIGITS = 200


@dataclass(frozen=True)
class Settles:
    """What a voucher settles: invoices of `invoice_form` on the `control` role's account.

    Without `line_id` the voucher's `allocation` list names the invoices (payments), the settled part valued
    at the payment's own rate and the difference from the invoice's book value posted as a realised exchange
    difference. With it, each line naming an invoice in the `line_id` column (and its line in `line_ref`)
    settles its own total (a sale return), at the invoice's book value.
    """

    invoice_form: str
    control: str  # "receivable" | "payable"
    account_field: str = ""  # the line field naming the account the payment posts against the control account
    line_id: str | None = None
    line_ref: str | None = None

    def ctes(self) -> dict[str, str]:
        """The CTEs, SQL over `v` and `l` for Posting.statement(): `settle_req` what each voucher asks to
        settle, `settle_inv` with its invoice, `settle_share` what it does settle in the invoice's currency,
        `settle` that at book value and the exchange difference (`gain`)."""
        form = word(self.invoice_form)
        control = Account(role=self.control).sql()
        sign = SIGN[self.control]
        if self.line_id is None:
            request = (
                "SELECT v.tenant_id, v.form, v.voucher_id, v.voucher_date, v.partner_code, v.exchange_rate,"
                " e.ord::integer AS seq, e.a->>'InvoiceId' AS invoice_id, NULL::integer AS invoice_line,"
                " NULL::numeric AS quantity, (e.a->>'Amount')::numeric AS amount,"
                " COALESCE((e.a->>'InvoiceAmount')::numeric, (e.a->>'Amount')::numeric) AS wanted\n"
                "FROM v CROSS JOIN LATERAL jsonb_array_elements(COALESCE(v.document->'allocation', '[]'))"
                " WITH ORDINALITY AS e(a, ord)")
        else:
            total = "l.amount - COALESCE(l.discount, 0) + COALESCE(l.tax_amount, 0)"
            ref = f"l.{word(self.line_ref)}" if self.line_ref else "NULL::integer"
            request = (
                "SELECT v.tenant_id, v.form, v.voucher_id, v.voucher_date, v.partner_code, v.exchange_rate,"
                f" l.line_no AS seq, l.{word(self.line_id)} AS invoice_id, {ref} AS invoice_line,"
                f" l.quantity, {total} AS amount, {total} AS wanted\n"
                f"FROM v JOIN l ON l.voucher_id = v.voucher_id WHERE l.{word(self.line_id)} IS NOT NULL")
        # Each request joined to its live invoice, what the invoice posted to the control account and what
        # stored settlements already take off it (the voucher's own were removed before it is posted again),
        # all looked up by key (the account is a filter of the sum, not a condition an index on the account
        # could take: without statistics the planner preferred reading all the tenant's entries on it);
        # `before` is what requests of the same statement ahead of it ask of the invoice.
        invoice = (
            "SELECT r.*, i.total_amount AS invoice_total, g.posted, s.settled_invoice, s.settled_base,"
            " COALESCE(sum(r.wanted) OVER w, 0) AS before\n"
            "FROM settle_req r\n"
            "JOIN LATERAL (SELECT i.form, i.deleted, i.total_amount FROM voucher i"
            " WHERE i.voucher_id = r.invoice_id AND i.tenant_id = r.tenant_id OFFSET 0) i"
            f" ON i.form = '{form}' AND NOT i.deleted\n"
            f"CROSS JOIN LATERAL (SELECT {sign} * COALESCE(sum(g.debit - g.credit) FILTER (WHERE g.account_code ="
            f" {control}), 0) AS posted FROM gl_entry g WHERE g.tenant_id = r.tenant_id AND g.form = '{form}'"
            " AND g.voucher_id = r.invoice_id OFFSET 0) g\n"
            "CROSS JOIN LATERAL (SELECT COALESCE(sum(COALESCE(s.invoice_amount, s.amount)), 0) AS settled_invoice,"
            " COALESCE(sum(s.base_amount), 0) AS settled_base FROM voucher_allocation s"
            f" WHERE s.tenant_id = r.tenant_id AND s.invoice_form = '{form}' AND s.invoice_id = r.invoice_id"
            " OFFSET 0) s\n"
            "WINDOW w AS (PARTITION BY r.invoice_id ORDER BY r.form, r.voucher_id, r.seq"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)")
        # What is left of the invoice ahead of each request caps it (a return beyond it is unapplied credit;
        # the checks refuse a payment beyond it). Ahead of a request that settles anything every earlier one
        # was settled whole, so `before` is exact there. The one that settles the rest takes the rest of the
        # posted amount; the others their share of it, rounded to the base currency.
        share = (
            "SELECT q.*, p.n, round(q.posted * q.settled / NULLIF(q.invoice_total, 0), p.n) AS share\n"
            "FROM (SELECT x.*, GREATEST(0, LEAST(x.wanted, x.invoice_total - x.settled_invoice - x.before))"
            " AS settled, x.wanted >= x.invoice_total - x.settled_invoice - x.before AS last"
            " FROM settle_inv x) q\n"
            f"CROSS JOIN (SELECT {BASE_PLACES} AS n) p")
        gain = (f"{sign} * (round(y.amount * y.exchange_rate, y.n) - y.base_amount)" if self.line_id is None
                else "0")
        settle = (
            f"SELECT y.*, {gain} AS gain FROM (\n"
            "SELECT z.*, CASE WHEN z.last AND z.settled > 0"
            " THEN z.posted - z.settled_base - COALESCE(sum(z.share) OVER w, 0) ELSE COALESCE(z.share, 0) END"
            " AS base_amount\n"
            "FROM settle_share z\n"
            "WINDOW w AS (PARTITION BY z.invoice_id ORDER BY z.form, z.voucher_id, z.seq"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) y")
        return {"settle_req": request, "settle_inv": invoice, "settle_share": share, "settle": settle}

    def insert(self) -> str:
        """The voucher_allocation rows, from `settle`."""
        return (
            "INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount,"
            " invoice_amount, base_amount, invoice_line, quantity)\n"
            f"SELECT tenant_id, form, voucher_id, seq, '{word(self.invoice_form)}', invoice_id, amount, settled,"
            " base_amount, invoice_line, quantity FROM settle")

    def gl_parts(self, rule: int) -> list[str]:
        """Ledger entries of the realised exchange differences (rows as Posting.build()'s parts): a gain
        debits the control account and credits fx_gain, a loss debits fx_loss and credits the control account."""
        if self.line_id is not None:
            return []
        control = Account(role=self.control).sql()
        gain, loss = Account(role="fx_gain").sql(), Account(role="fx_loss").sql()
        parts = []
        for side, account in ((0, f"CASE WHEN s.gain > 0 THEN {control} ELSE {loss} END"),
                              (1, f"CASE WHEN s.gain > 0 THEN {gain} ELSE {control} END")):
            debit, credit = ("abs(s.gain)", "0") if side == 0 else ("0", "abs(s.gain)")
            parts.append(
                f"SELECT s.tenant_id, s.form, s.voucher_id, {rule}, s.seq, {side}, s.voucher_date, {account},"
                f" {debit}, {credit}, s.partner_code, NULL::text, NULL::text FROM settle s WHERE s.gain <> 0")
        return parts


# --- checks, inside the write transaction ------------------------------------------------------------------

async def control_accounts(conn: asyncpg.Connection, tenant_id: int) -> dict[str, str]:
    """The tenant's receivable and payable accounts (posting roles)."""
    rows = await conn.fetch(QUERIES["settlement_control_accounts"], tenant_id, list(SIGN))
    accounts = {r["role"]: r["account_code"] for r in rows}
    return {side: accounts.get(side, ROLE_DEFAULTS[side]) for side in SIGN}


async def check(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                docs: Docs) -> None:
    """The settlement checks of the batch's vouchers of `form`, by what the form posts."""
    rule = form.posting
    if rule is None:
        return
    live = [(k, (i, d)) for k, (i, d) in docs if i not in batch.failed_indexes]
    if rule.journal and live:
        await _check_journal(conn, tenant_id, batch, live)
    settles = rule.settles
    if settles is not None and live:
        if settles.line_id is None:
            await _check_payments(conn, form, settles, tenant_id, batch, live)
        else:
            await _check_returns(conn, form, settles, tenant_id, batch, live)
    if form.name in INVOICES and (batch.upserts or batch.deletes):
        await _check_invoices(conn, form, tenant_id, batch)


async def _check_journal(conn: asyncpg.Connection, tenant_id: int, batch: VoucherBatch, docs: Docs) -> None:
    """A journal line on a control account names its partner: open items are kept per partner."""
    controls = {account: side for side, account in (await control_accounts(conn, tenant_id)).items()}
    for key, (index, doc) in docs:
        for i, line in enumerate(doc.get("detail") or ()):
            side = controls.get(line.get("AccountCode"))
            if side is not None and not line.get("CustomerCode"):
                batch.fail(index, key, f"/detail/{i}/CustomerCode",
                           f"CustomerCode is required on line {line.get('RefNumber')}: account "
                           f"{line.get('AccountCode')} is the {side} account, kept per partner")


async def _invoices(conn: asyncpg.Connection, tenant_id: int, invoice_form: str, ids: set[str], form: str,
                    own: list[str]) -> tuple[dict[str, asyncpg.Record], dict[str, Decimal]]:
    """The live invoices among `ids`, locked until the batch commits (in key order: two batches meet in the
    same order), and what the stored settlements other than the vouchers `own` of `form` settle of each.

    Locked before the settled amounts are read, by a statement of its own: a payment that waited for the lock
    sees what the one before it committed."""
    wanted = sorted(ids)
    invoices = {r["voucher_id"]: r for r in await conn.fetch(QUERIES["settlement_lock_invoices"], tenant_id,
                                                               invoice_form, wanted)}
    settled = {r["invoice_id"]: r["settled"] for r in await conn.fetch(
        QUERIES["settlement_settled"], tenant_id, invoice_form, sorted(invoices), form, own)}
    return invoices, settled


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


async def _check_payments(conn: asyncpg.Connection, form: VoucherForm, settles: Settles, tenant_id: int,
                          batch: VoucherBatch, docs: Docs) -> None:
    """Allocations pay live invoices of the paying partner, each once, within what is outstanding of each
    and within what the payment posts against the control account; in another currency at a stated amount."""
    ids = {a.get("InvoiceId") for _, (_, d) in docs for a in d.get("allocation") or ()
           if isinstance(a.get("InvoiceId"), str)}
    if not ids:
        return
    invoices, settled = await _invoices(conn, tenant_id, settles.invoice_form, ids, form.name, [k for k, _ in docs])
    control = (await control_accounts(conn, tenant_id))[settles.control]
    places = await _places(conn, tenant_id, {r["currency"] for r in invoices.values()})
    left = {vid: _decimal(r["total_amount"]) - settled.get(vid, Decimal(0)) for vid, r in invoices.items()}
    with localcontext(prec=EXACT_DIGITS):
        for key, (index, doc) in docs:
            allocations = doc.get("allocation") or []
            if not allocations:
                continue
            taken: dict[str, Decimal] = defaultdict(Decimal)
            for i, allocation in enumerate(allocations):
                for path, message in _allocation_errors(form, settles, doc, allocation, invoices, places, taken):
                    batch.fail(index, key, f"/allocation/{i}{path}", message)
                invoice = allocation.get("InvoiceId")
                if invoice in invoices:
                    taken[invoice] += _settled(doc, allocation, invoices[invoice])
            for invoice, amount in taken.items():
                if amount > left[invoice]:
                    i = next(n for n, a in enumerate(allocations) if a.get("InvoiceId") == invoice)
                    batch.fail(index, key, f"/allocation/{i}/Amount",
                               f"allocation of {amount} {invoices[invoice]['currency']} to {settles.invoice_form} "
                               f"'{invoice}' is more than its outstanding amount of {left[invoice]:f} (total "
                               f"{invoices[invoice]['total_amount']:f} less what other vouchers settle)")
            if index not in batch.failed_indexes:
                for invoice, amount in taken.items():
                    left[invoice] -= amount
            allocated = sum((_decimal(a.get("Amount")) for a in allocations), Decimal(0))
            posted = sum((_decimal(line.get("Amount")) for line in doc.get("detail") or ()
                          if line.get(settles.account_field) == control), Decimal(0))
            if allocated > posted:
                batch.fail(index, key, "/allocation",
                           f"allocations total {allocated}, more than the {posted} this voucher posts to the "
                           f"{settles.control} account {control} (lines' {settles.account_field})")


def _settled(doc: dict[str, Any], allocation: dict[str, Any], invoice: asyncpg.Record) -> Decimal:
    """What an allocation settles in the invoice's currency."""
    if doc.get("Currency") == invoice["currency"] or allocation.get("InvoiceAmount") is None:
        return _decimal(allocation.get("Amount"))
    return _decimal(allocation.get("InvoiceAmount"))


def _allocation_errors(form: VoucherForm, settles: Settles, doc: dict[str, Any], allocation: dict[str, Any],
                       invoices: dict[str, asyncpg.Record], places: dict[str, int],
                       taken: dict[str, Decimal]) -> list[tuple[str, str]]:
    invoice_id = allocation.get("InvoiceId")
    invoice = invoices.get(invoice_id) if isinstance(invoice_id, str) else None
    if invoice is None:
        return [("/InvoiceId", f"InvoiceId '{invoice_id}' is not a {settles.invoice_form} (none live has that id)")]
    problems = []
    if invoice_id in taken:
        problems.append(("/InvoiceId", f"InvoiceId '{invoice_id}' is allocated twice"))
    partner = doc.get(form.partner or "")
    if invoice["partner_code"] != partner:
        problems.append(("/InvoiceId", (f"{settles.invoice_form} '{invoice_id}' is of partner "
                         f"'{invoice['partner_code']}', not of this voucher's {form.partner} '{partner}'")))
    stated = allocation.get("InvoiceAmount")
    if doc.get("Currency") == invoice["currency"]:
        if stated is not None and _decimal(stated) != _decimal(allocation.get("Amount")):
            problems.append(("/InvoiceAmount", (f"InvoiceAmount {stated} differs from Amount "
                             f"{allocation.get('Amount')} in the invoice's own currency {invoice['currency']}")))
    elif stated is None:
        problems.append(("/InvoiceAmount", (f"InvoiceAmount (the amount settled in {invoice['currency']}) is "
                         f"required: {settles.invoice_form} '{invoice_id}' is in {invoice['currency']}, this "
                         f"voucher in {doc.get('Currency')}")))
    elif invoice["currency"] in places and _decimal(stated) != round(_decimal(stated), places[invoice["currency"]]):
        problems.append(("/InvoiceAmount", (f"InvoiceAmount {stated} has more than the "
                         f"{places[invoice['currency']]} decimal places of {invoice['currency']}")))
    return problems


async def _places(conn: asyncpg.Connection, tenant_id: int, currencies: set[str]) -> dict[str, int]:
    rows = await conn.fetch(QUERIES["voucher_currencies"], tenant_id, sorted(currencies))
    return {r["currency_code"]: r["decimal_places"] for r in rows}


async def _check_returns(conn: asyncpg.Connection, form: VoucherForm, settles: Settles, tenant_id: int,
                         batch: VoucherBatch, docs: Docs) -> None:
    """A return citing an invoice cites a live invoice of the same customer and currency, dated on or before
    it, and returns no more of a line than was sold on it less what other returns took back, in its unit."""
    cited = [(key, index, doc, i, line) for key, (index, doc) in docs
             for i, line in enumerate(doc.get("detail") or ()) if line.get("SaleInvId")]
    if not cited:
        return
    invoices, _ = await _invoices(conn, tenant_id, settles.invoice_form, {c[4]["SaleInvId"] for c in cited},
                                  form.name, [k for k, _ in docs])
    pairs = sorted({(c[4]["SaleInvId"], c[4]["SaleInvRefNumber"]) for c in cited
                    if c[4].get("SaleInvRefNumber") is not None and c[4]["SaleInvId"] in invoices})
    sold = {(r["invoice_id"], r["line_no"]): r for r in await conn.fetch(
        QUERIES["settlement_invoice_lines"], tenant_id, settles.invoice_form, [p[0] for p in pairs],
        [p[1] for p in pairs], form.name, [k for k, _ in docs])} if pairs else {}
    returned: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for key, index, doc, i, line in cited:
        invoice_id, ref = line["SaleInvId"], line.get("SaleInvRefNumber")
        invoice = invoices.get(invoice_id)
        path = f"/detail/{i}"
        if invoice is None:
            batch.fail(index, key, f"{path}/SaleInvId", f"SaleInvId '{invoice_id}' of line {line.get('RefNumber')} "
                       f"is not a live {settles.invoice_form}")
            continue
        problems = []
        if invoice["partner_code"] != doc.get(form.partner or ""):
            problems.append(("SaleInvId", (f"{settles.invoice_form} '{invoice_id}' is of customer "
                             f"'{invoice['partner_code']}', not '{doc.get(form.partner or '')}'")))
        if invoice["currency"] != doc.get("Currency"):
            problems.append(("SaleInvId", (f"{settles.invoice_form} '{invoice_id}' is in {invoice['currency']}, "
                             f"the return in {doc.get('Currency')}")))
        if dt.date.fromisoformat(doc["VoucherDate"]) < invoice["voucher_date"]:
            problems.append(("SaleInvId", (f"the return, dated {doc['VoucherDate']}, is before {settles.invoice_form} "
                             f"'{invoice_id}' of {invoice['voucher_date']}")))
        if ref is not None:
            problems += _returned_line_errors(line, sold.get((invoice_id, ref)), invoice_id, returned)
        for name, message in problems:
            batch.fail(index, key, f"{path}/{name}", message)


def _returned_line_errors(line: dict[str, Any], sold: asyncpg.Record | None, invoice_id: str,
                          returned: dict[tuple[str, int], Decimal]) -> list[tuple[str, str]]:
    ref = line["SaleInvRefNumber"]
    if sold is None:
        return [("SaleInvRefNumber", f"setSaleInvoice '{invoice_id}' has no line {ref}")]
    if sold["item_code"] != line.get("ItemCode"):
        return [("ItemCode", (f"ItemCode '{line.get('ItemCode')}' is not the item '{sold['item_code']}' of line "
                 f"{ref} of setSaleInvoice '{invoice_id}'"))]
    if (sold["uom"] or None) != (line.get("Uom") or None):
        return [("Uom", (f"Uom '{line.get('Uom')}' is not the unit '{sold['uom']}' line {ref} of setSaleInvoice "
                 f"'{invoice_id}' was sold in"))]
    quantity = _decimal(line.get("Quantity"))
    left = _decimal(sold["quantity"]) - _decimal(sold["returned"]) - returned[(invoice_id, ref)]
    if quantity > left:
        return [("Quantity", (f"Quantity {quantity} is more than the {left:f} left to return of line {ref} of "
                 f"setSaleInvoice '{invoice_id}' (sold {sold['quantity']:f}, returned "
                 f"{_decimal(sold['returned']) + returned[(invoice_id, ref)]:f})"))]
    returned[(invoice_id, ref)] += quantity
    return []


async def _check_invoices(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch) -> None:
    """An invoice that payments or returns settle stays live, of its partner and currency, not below what
    they settle, and keeps the lines returns cite: cancelling or replacing the settling vouchers frees it."""
    ids = sorted({*batch.upserts, *batch.deletes})
    if not await conn.fetch(QUERIES["voucher_lock"], tenant_id, form.name, ids):
        return  # new invoices only: nothing settles them yet
    rows = await conn.fetch(QUERIES["settlement_invoice_guard"], tenant_id, form.name, ids)
    for r in rows:
        vid, settlers = r["voucher_id"], ", ".join(r["settled_by"])
        if vid in batch.deletes:
            index = batch.deletes.pop(vid)
            batch.fail(index, vid, "/Status", f"{form.name} '{vid}' cannot be cancelled: {settlers} settle it; "
                       "cancel or change them first")
            continue
        index, doc = batch.upserts[vid]
        problems = []
        if form.partner and doc.get(form.partner) != r["partner_code"]:
            problems.append((f"/{form.partner}", (f"{form.partner} cannot change from '{r['partner_code']}' to "
                             f"'{doc.get(form.partner)}': {settlers} settle this invoice")))
        if doc.get("Currency") != r["currency"]:
            problems.append(("/Currency", (f"Currency cannot change from {r['currency']} to {doc.get('Currency')}: "
                             f"{settlers} settle this invoice")))
        if _decimal(doc.get("TotalAmount")) < r["settled"]:
            problems.append(("/TotalAmount", (f"TotalAmount {doc.get('TotalAmount')} is less than the "
                             f"{r['settled']:f} that {settlers} settle")))
        lines = {line.get("RefNumber"): line for line in doc.get("detail") or ()}
        for ref, quantity in sorted((r["returned"] or {}).items()):
            line = lines.get(int(ref))
            if line is None or _decimal(line.get("Quantity")) < Decimal(str(quantity)):
                problems.append(("/detail", (f"line {ref} must keep at least the quantity {quantity} that returns "
                                 f"({settlers}) took back")))
        for path, message in problems:
            batch.fail(index, vid, path, message)


# --- sub-ledger -----------------------------------------------------------------------------------------

async def subledger_total(conn: asyncpg.Connection, tenant_id: int, side: str, as_of: dt.date) -> Decimal:
    """What the open-items report of `side` ("receivable": getReceivables, "payable": getPayables) adds up to
    at `as_of`, over all partners: open invoices plus unapplied items, in the base currency, positive when
    owed (by customers on the receivable side, to suppliers on the payable side)."""
    from .reports import open_items  # the report is the sub-ledger

    invoice_form = next(form for form, s in INVOICES.items() if s == side)
    rows = await open_items(conn, tenant_id, invoice_form, as_of, False)
    return sum((Decimal(r["Total"]) + Decimal(r["Unapplied"]) for r in rows), Decimal(0))
