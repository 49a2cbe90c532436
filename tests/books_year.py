"""A seeded random year of books: vouchers of every form that a careful bookkeeper would send, and the cost of
sales worked out from them independently of the gateway.

`Year(seed).build()` makes the first pass: month by month, orders, goods receipts, purchase invoices (some
citing receipts, some with services, some in USD), transfers, sales invoices (discounts, units of a
conversion, services, USD), issues, sale returns (citing invoices or not), cash receipts and disbursements
(allocated fully, partly or not at all) and journals with partners on the control accounts. `Year.changes()`
then replaces about 10% of the vouchers (new lines and amounts, earlier dates) and cancels about 5%, choosing
only changes the rules allow. Every voucher is consistent: line TotalAmount = Amount - Discount + TaxAmount,
TaxAmount = round(net x rate), header totals the exact sums, amounts at the currency's decimals.

The generator keeps its own books: what each invoice still owes, what each receipt line has left to invoice,
and, by replaying the stock movements as the gateway's costing rules say (README "Cost of sales"), that no
outflow ever takes more than is on hand at any state the gateway goes through (each batch is checked after
it is applied, in the order the batches are sent).
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

D = Decimal
YEAR = 2026
BASE = "VND"
PLACES = {"VND": 0, "USD": 2}

CUSTOMERS = ["KH01", "KH02", "KH03", "KH04", "KH05", "KH06"]
USD_CUSTOMERS = ["KH05", "KH06"]
# Suppliers are kept in the customer catalog (Fast's way, SuplierYN 1): goods receipts name their partner
# in CustomerCode, which only the customer catalog answers.
SUPPLIERS = ["NCC01", "NCC02", "NCC03", "NCC04"]
GOODS = {"IT01": "PCS", "IT02": "PCS", "IT03": "KG", "IT04": "PCS", "IT05": "PCS"}
SERVICES = {"SV01": "LAN", "SV02": "LAN"}
CONVERSIONS = {("IT01", "BOX"): D(12)}
SITES = ["K1", "K2", "K3"]
TAX_CODES = {"VAT10": 10, "VAT8": 8, "VAT0": 0}
CASH, BANK, OTHER_INCOME, OTHER_EXPENSE = "1111", "1121", "711", "811"
RECEIVABLE, PAYABLE = "131", "331"

MASTERS: list[tuple[str, list[dict[str, Any]]]] = [
    ("setCurrency", [{"CurrencyCode": "USD", "CurrencyName": "US dollar", "DecimalPlaces": 2}]),
    ("setCustomer", [{"CustomerCode": c, "CustomerName": f"Customer {c}"} for c in CUSTOMERS]
     + [{"CustomerCode": s, "CustomerName": f"Supplier {s}", "SuplierYN": 1} for s in SUPPLIERS]),
    ("setItem", [{"ItemCode": i, "ItemName": f"Goods {i}", "Uom": u, "ItemType": "HH", "StockTracked": 1}
                 for i, u in GOODS.items()]
     + [{"ItemCode": i, "ItemName": f"Service {i}", "Uom": u, "ItemType": "DV", "StockTracked": 0}
        for i, u in SERVICES.items()]),
    ("UnitConversion", [{"ItemCode": i, "Uom": u, "Coefficient": c} for (i, u), c in CONVERSIONS.items()]),
    ("setSite", [{"SiteCode": s, "SiteName": f"Store {s}"} for s in SITES]),
    ("setTaxCode", [{"TaxCode": c, "TaxName": f"VAT {r}%", "TaxRate": r} for c, r in TAX_CODES.items()]),
]


def money(value: Decimal, currency: str) -> Decimal:
    """Rounded to the currency's decimals, half away from zero (as PostgreSQL's round)."""
    return value.quantize(D(1).scaleb(-PLACES[currency]), ROUND_HALF_UP)


def base(value: Decimal) -> Decimal:
    return money(value, BASE)


def base_qty(item: str, uom: str, qty: Decimal) -> Decimal:
    return qty * CONVERSIONS.get((item, uom), D(1))


def day(month: int, rng: random.Random, first: int = 1) -> dt.date:
    last = calendar.monthrange(YEAR, month)[1]
    return dt.date(YEAR, month, rng.randint(min(first, last), last))


# --- stock movements and their costs, replayed as the costing rules say -------------------------------------

# Order of an item's movements within a day: priced inflows, transfers (out, then in), outflows, then returns
# and other inflows valued from something else (unpriced receipts at the average, a purchase invoice's price
# difference to the goods receipt it cites); then form, voucher and movement number.
PRICED, TRANSFER_OUT, TRANSFER_IN, OUT, DERIVED = range(5)


@dataclass(frozen=True)
class Move:
    date: dt.date
    rank: int
    form: str
    voucher_id: str
    line_no: int
    item: str
    site: str
    qty: Decimal  # base units, positive; 0 for a value without quantity (a price difference)
    value: Decimal | None = None  # the stated value (base currency) of a PRICED inflow or of a value-only move
    sale: tuple[str, int] | None = None  # DERIVED return citing (invoice, line): at that sale's unit cost
    to_cogs: bool = False  # an outflow charged to cost of sales (sales, issues), or a return credited to it

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.date, self.rank, self.form, self.voucher_id, self.line_no)


@dataclass
class Replay:
    stock: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)  # (item, site) -> [qty, value]
    cogs: Decimal = field(default_factory=Decimal)
    surplus: Decimal = field(default_factory=Decimal)  # unpriced inflows valued at the average (inventory_surplus)
    costs: dict[tuple[str, str, int], tuple[Decimal, Decimal]] = field(default_factory=dict)  # out: cost, qty
    short: list[str] = field(default_factory=list)  # outflows beyond on hand


def replay(moves: Iterable[Move]) -> Replay:
    """Moving weighted average per item and site, every movement in the order of the rules."""
    out = Replay()
    transfer_cost: dict[tuple[str, int], Decimal] = {}
    for m in sorted(moves, key=lambda m: m.key):
        state = out.stock.setdefault((m.item, m.site), [D(0), D(0)])
        qty, value = state
        if m.rank in (OUT, TRANSFER_OUT):
            if m.qty > qty:
                out.short.append(f"{m.form} {m.voucher_id} line {m.line_no}: {m.item} at {m.site} on {m.date}:"
                                 f" {qty} on hand, {m.qty} requested")
            cost = value if m.qty == qty else base(m.qty * value / qty) if qty > 0 else D(0)
            state[0], state[1] = qty - m.qty, value - cost
            if m.rank == TRANSFER_OUT:
                transfer_cost[(m.voucher_id, m.line_no)] = cost
            else:
                out.costs[(m.form, m.voucher_id, m.line_no)] = (cost, m.qty)
                out.cogs += cost
        elif m.rank == TRANSFER_IN:
            cost = transfer_cost[(m.voucher_id, m.line_no)]
            state[0], state[1] = qty + m.qty, value + cost
        elif m.rank == PRICED:
            assert m.value is not None
            state[0], state[1] = qty + m.qty, value + m.value
        elif m.qty == 0:  # a value without quantity: onto the stock, or to cost of sales with none to carry it
            assert m.value is not None
            if qty > 0:
                state[1] = value + m.value
            else:
                out.cogs += m.value
        else:  # DERIVED: a return (at its sale's unit cost, or the average), an unpriced receipt (the average)
            if m.sale is not None and (("setSaleInvoice", *m.sale)) in out.costs:
                sold_cost, sold_qty = out.costs[("setSaleInvoice", *m.sale)]
                cost = base(sold_cost * m.qty / sold_qty)
            else:
                cost = base(m.qty * value / qty) if qty > 0 else D(0)
            state[0], state[1] = qty + m.qty, value + cost
            if m.to_cogs:
                out.cogs -= cost
            else:
                out.surplus += cost
    return out


# --- documents --------------------------------------------------------------------------------------------

def sale_line(ref: int, item: str, uom: str, site: str, qty: int, price: Decimal, currency: str,
              discount_pct: int, tax_code: str | None, rate: int) -> dict[str, Any]:
    amount = qty * price
    discount = money(amount * discount_pct / 100, currency)
    tax = money((amount - discount) * rate / 100, currency)
    line = {"RefNumber": ref, "ItemCode": item, "Uom": uom, "SiteCode": site, "Quantity": qty, "UnitPrice": price,
            "Amount": amount, "Discount": discount, "TaxRate": rate, "TaxAmount": tax,
            "TotalAmount": amount - discount + tax}
    if tax_code:
        line["TaxCode"] = tax_code
    return line


def sale_doc(vid: str, date: dt.date, customer: str, currency: str, rate: Decimal, lines: list[dict[str, Any]],
             **extra: Any) -> dict[str, Any]:
    doc = {"VoucherId": vid, "VoucherDate": date.isoformat(), "CustomerCode": customer, "Currency": currency,
           "ExchangeRate": rate, "TotalQuantity": sum(x["Quantity"] for x in lines),
           "TotalNetAmount": sum(x["Amount"] for x in lines),
           "TotalDiscountAmount": sum(x["Discount"] for x in lines),
           "TotalTaxAmount": sum(x["TaxAmount"] for x in lines),
           "TotalAmount": sum(x["TotalAmount"] for x in lines), "detail": lines}
    doc.update(extra)
    return doc


def stock_doc(vid: str, date: dt.date, partner: str | None, lines: list[dict[str, Any]], *,
              amounts: bool = True, **extra: Any) -> dict[str, Any]:
    """A receipt, an issue, an order or a transfer (amounts=False: no TotalAmount)."""
    doc: dict[str, Any] = {"VoucherId": vid, "VoucherDate": date.isoformat(),
                           "TotalQuantity": sum(x["Quantity"] for x in lines), "detail": lines}
    if partner is not None:
        doc["CustomerCode"] = partner
    if amounts:
        doc["TotalAmount"] = sum(x["Amount"] for x in lines)
    doc.update(extra)
    return doc


def purchase_doc(vid: str, date: dt.date, supplier: str, currency: str, rate: Decimal,
                 lines: list[dict[str, Any]]) -> dict[str, Any]:
    net = sum((x["Amount"] for x in lines), D(0))
    tax = money(net * 10 / 100, currency)
    return {"VoucherId": vid, "VoucherDate": date.isoformat(), "SupplierCode": supplier, "Currency": currency,
            "ExchangeRate": rate, "TotalQuantity": sum(x["Quantity"] for x in lines), "TotalNetAmount": net,
            "TotalTaxAmount": tax, "TotalAmount": net + tax, "detail": lines,
            "tax": [{"VatInvoiceNumber": vid, "VatInvoiceDate": date.isoformat(), "TotalNetAmount": net,
                     "TaxRate": "10", "TaxAmount": tax}]}


def cash_doc(form: str, vid: str, date: dt.date, partner: str, currency: str, rate: Decimal,
             lines: list[tuple[str, Decimal]], allocation: list[tuple[str, Decimal]]) -> dict[str, Any]:
    """A cash receipt (lines credit their account) or disbursement (lines debit theirs)."""
    line_account, header_account = (("CreditAccount", "DebitAccount") if form == "setCashReceipt"
                                    else ("DebitAccount", "CreditAccount"))
    doc: dict[str, Any] = {
        "VoucherId": vid, "VoucherDate": date.isoformat(), "CustomerCode": partner, "Currency": currency,
        "ExchangeRate": rate, header_account: BANK if currency != BASE else CASH,
        "TotalAmount": sum((a for _, a in lines), D(0)),
        "detail": [{"RefNumber": i + 1, line_account: acc, "Amount": a} for i, (acc, a) in enumerate(lines)]}
    if allocation:
        doc["allocation"] = [{"InvoiceId": inv, "Amount": a} for inv, a in allocation]
    return doc


def journal_doc(vid: str, date: dt.date, currency: str, rate: Decimal,
                lines: list[tuple[str, str | None, Decimal, Decimal]]) -> dict[str, Any]:
    detail = []
    for i, (account, partner, debit, credit) in enumerate(lines):
        line: dict[str, Any] = {"RefNumber": i + 1, "AccountCode": account, "Debit": debit, "Credit": credit}
        if partner:
            line["CustomerCode"] = partner
        detail.append(line)
    return {"VoucherId": vid, "VoucherDate": date.isoformat(), "Currency": currency, "ExchangeRate": rate,
            "detail": detail}


def cancel(vid: str) -> dict[str, Any]:
    return {"VoucherId": vid, "Status": "0"}


Key = tuple[str, str]  # (form, voucher id)
Batch = tuple[str, list[dict[str, Any]]]  # (form, documents) sent in one request


class Year:
    """The generator and its books."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live: dict[Key, dict[str, Any]] = {}
        self.moves_of: dict[Key, list[Move]] = {}
        self.batches: list[Batch] = []
        self.pending: dict[str, list[dict[str, Any]]] = defaultdict(list)  # sent together later
        self.counter: dict[str, int] = defaultdict(int)
        self.rates: dict[int, Decimal] = {}

    # --- the generator's books ----------------------------------------------------------------------------

    def all_moves(self, items: set[str] | None = None) -> Iterator[Move]:
        for moves in self.moves_of.values():
            for m in moves:
                if items is None or m.item in items:
                    yield m

    def replay(self, items: set[str] | None = None) -> Replay:
        return replay(self.all_moves(items))

    def moves(self, form: str, doc: dict[str, Any]) -> list[Move]:
        """The stock movements the costing rules give the document (base units, base currency)."""
        date = dt.date.fromisoformat(doc["VoucherDate"])
        rate = D(doc.get("ExchangeRate") or 1)
        vid = doc["VoucherId"]
        out = []
        for line in doc["detail"]:
            item = line.get("ItemCode")
            if item not in GOODS:
                continue
            n, site = line["RefNumber"], line.get("SiteCode")
            qty = base_qty(item, line["Uom"], D(line["Quantity"]))
            if form in ("setSaleInvoice", "setIssue"):
                out.append(Move(date, OUT, form, vid, n, item, site, qty, to_cogs=True))
            elif form == "setStockTransfer":
                out.append(Move(date, TRANSFER_OUT, form, vid, n, item, site, qty))
                out.append(Move(date, TRANSFER_IN, form, vid, n, item, line["ToSiteCode"], qty))
            elif form == "setSaleReturn":
                cited = (line["SaleInvId"], line["SaleInvRefNumber"]) if line.get("SaleInvId") else None
                out.append(Move(date, DERIVED, form, vid, n, item, site, qty, sale=cited, to_cogs=True))
            elif form == "setReceipt":
                if D(line["Amount"]) == 0:
                    out.append(Move(date, DERIVED, form, vid, n, item, site, qty))
                else:
                    out.append(Move(date, PRICED, form, vid, n, item, site, qty, value=base(D(line["Amount"]) * rate)))
            elif form == "setPurchaseInvoice":
                value = base(D(line["Amount"]) * rate)
                if line.get("ReceiptId"):
                    received = self.receipt_line(line["ReceiptId"], line["ReceiptRefNumber"])
                    rate_in = D(self.live[("setReceipt", line["ReceiptId"])].get("ExchangeRate") or 1)
                    relieved = base(D(received["UnitPrice"]) * D(line["Quantity"]) * rate_in)
                    if value != relieved:  # numbered below the rules' movements: minus the line's number
                        out.append(Move(date, DERIVED, form, vid, -n, item, received["SiteCode"], D(0),
                                        value=value - relieved))
                else:
                    out.append(Move(date, PRICED, form, vid, n, item, site, qty, value=value))
        return out

    def receipt_line(self, receipt: str, ref: int) -> dict[str, Any]:
        return next(x for x in self.live[("setReceipt", receipt)]["detail"] if x["RefNumber"] == ref)

    def stock_ok(self, form: str, doc: dict[str, Any] | None, vid: str) -> bool:
        """Whether the books stay without negative stock with this voucher (None: cancelled) in place."""
        old = self.moves_of.get((form, vid), [])
        new = self.moves(form, doc) if doc is not None else []
        items = {m.item for m in (*old, *new)}
        if not items:
            return True
        self.moves_of[(form, vid)] = new
        try:
            return not self.replay(items).short
        finally:
            if old or (form, vid) in self.live:
                self.moves_of[(form, vid)] = old
            else:
                del self.moves_of[(form, vid)]

    def put(self, form: str, doc: dict[str, Any]) -> None:
        key = (form, doc["VoucherId"])
        self.live[key] = doc
        self.moves_of[key] = self.moves(form, doc)

    def drop(self, form: str, vid: str) -> None:
        del self.live[(form, vid)]
        self.moves_of.pop((form, vid), None)

    def docs(self, form: str) -> list[dict[str, Any]]:
        return [d for (f, _), d in self.live.items() if f == form]

    def paid(self, invoice: str) -> Decimal:
        """What live payments allocate to the invoice, in its currency."""
        form = "setCashReceipt" if invoice.startswith("SI") else "setCashDisbursement"
        return sum((D(a["Amount"]) for d in self.docs(form) for a in d.get("allocation") or ()
                    if a["InvoiceId"] == invoice), D(0))

    def returned(self, invoice: str) -> Decimal:
        return sum((D(d["TotalAmount"]) for d in self.docs("setSaleReturn")
                    if any(x.get("SaleInvId") == invoice for x in d["detail"])), D(0))

    def returned_qty(self, invoice: str, ref: int) -> Decimal:
        return sum((D(x["Quantity"]) for d in self.docs("setSaleReturn") for x in d["detail"]
                    if x.get("SaleInvId") == invoice and x.get("SaleInvRefNumber") == ref), D(0))

    def outstanding(self, form: str, invoice: str) -> Decimal:
        return D(self.live[(form, invoice)]["TotalAmount"]) - self.paid(invoice) - self.returned(invoice)

    def settled(self, invoice: str) -> bool:
        """Whether payments or returns stand against the invoice (then it may not be cancelled or cut)."""
        return bool(self.paid(invoice) or self.returned(invoice))

    def invoiced_qty(self, receipt: str, ref: int) -> Decimal:
        return sum((D(x["Quantity"]) for d in self.docs("setPurchaseInvoice") for x in d["detail"]
                    if x.get("ReceiptId") == receipt and x.get("ReceiptRefNumber") == ref), D(0))

    def cited(self, receipt: str) -> bool:
        return any(x.get("ReceiptId") == receipt for d in self.docs("setPurchaseInvoice") for x in d["detail"])

    # --- generating -------------------------------------------------------------------------------------

    def vid(self, prefix: str, month: int) -> str:
        self.counter[prefix] += 1
        return f"{prefix}-{month:02d}-{self.counter[prefix]:03d}"

    def usd_rate(self, month: int) -> Decimal:
        """A rate of the day near the month's: whole dong, or with a few decimals."""
        rate = self.rates.setdefault(month, D(24_800 + 90 * month))
        return rate + self.rng.choice([D(0), D(self.rng.randint(-150, 150)),
                                       D(self.rng.randint(-15_000, 15_000)) / 100, D("0.5")])

    def price(self, currency: str, low: int, high: int) -> Decimal:
        """A VND price (whole dong, not round) or a USD one (cents) of about the same worth."""
        vnd = self.rng.randint(low, high)
        return D(vnd) if currency == BASE else (D(vnd) / 25_000).quantize(D("0.01"))

    def send(self, form: str, docs: list[dict[str, Any]]) -> None:
        if docs:
            self.batches.append((form, docs))

    def add(self, form: str, doc: dict[str, Any], stock: bool = False) -> bool:
        """Keep the voucher if the books allow it (stock: no outflow beyond on hand anywhere)."""
        if stock and not self.stock_ok(form, doc, doc["VoucherId"]):
            return False
        self.put(form, doc)
        return True

    def build(self) -> list[Batch]:
        """The year's batches in the order they are sent: each month's stock vouchers (inflows before the
        outflows that take from them), each quarter's payments and journals, and the orders at the end."""
        for month in range(1, 13):
            self.month(month)
            if month % 3 == 0:
                self.flush("setCashReceipt", "setCashDisbursement", "setJournalVoucher")
        self.flush("setSalesOrder", "setPurchaseOrder")
        return self.batches

    def flush(self, *forms: str) -> None:
        for form in forms:
            self.send(form, self.pending.pop(form, []))

    def month(self, month: int) -> None:
        rng = self.rng
        # Orders: no postings.
        orders = []
        for _ in range(2):
            item = rng.choice(list(GOODS))
            lines = [{"RefNumber": 1, "ItemCode": item, "Uom": GOODS[item], "SiteCode": "K1", "Quantity": 10,
                      "UnitPrice": D(50_000), "Amount": D(500_000)}]
            orders.append(("setSalesOrder", stock_doc(self.vid("SO", month), day(month, rng),
                                                      rng.choice(CUSTOMERS), lines)))
            po = stock_doc(self.vid("PO", month), day(month, rng), None, lines)
            po["SupplierCode"] = rng.choice(SUPPLIERS)
            orders.append(("setPurchaseOrder", po))
        for form, doc in orders:
            self.put(form, doc)
            self.pending[form].append(doc)
        self.send("setReceipt", self.receipts(month))
        self.send("setPurchaseInvoice", self.purchases(month))
        self.send("setStockTransfer", self.transfers(month))
        self.send("setSaleInvoice", self.sales(month))
        self.send("setIssue", self.issues(month))
        self.send("setSaleReturn", self.returns(month))
        # Payments and journals move no stock: they wait for the quarter's end (the invoices they pay are
        # written by then, and what returns netted against them is counted in what they may pay).
        self.pending["setCashReceipt"] += self.receipts_of_cash(month)
        self.pending["setCashDisbursement"] += self.disbursements(month)
        self.pending["setJournalVoucher"] += self.journals(month)

    def goods_lines(self, count: int, currency: str, sites: list[str], priced: bool = True) -> list[dict[str, Any]]:
        items = self.rng.sample(list(GOODS), count)
        lines = []
        for n, item in enumerate(items, 1):
            uom = "BOX" if item == "IT01" and self.rng.random() < 0.4 else GOODS[item]
            qty = self.rng.randint(5, 40) if uom != "BOX" else self.rng.randint(1, 4)
            price = self.price(currency, 20_000, 300_000) * (12 if uom == "BOX" else 1) if priced else D(0)
            lines.append({"RefNumber": n, "ItemCode": item, "Uom": uom, "SiteCode": self.rng.choice(sites),
                          "Quantity": qty, "UnitPrice": price, "Amount": qty * price})
        return lines

    def receipts(self, month: int) -> list[dict[str, Any]]:
        docs = []
        for i in range(2):
            lines = self.goods_lines(self.rng.randint(1, 3), BASE, SITES[:2])
            if i == 1 and month % 3 == 0:  # goods that came in without a price
                lines[-1] = {**lines[-1], "UnitPrice": D(0), "Amount": D(0)}
            doc = stock_doc(self.vid("GR", month), day(month, self.rng), self.rng.choice(SUPPLIERS), lines)
            self.add("setReceipt", doc)
            docs.append(doc)
        return docs

    def open_receipt_lines(self, before: dt.date) -> list[tuple[dict[str, Any], dict[str, Any], Decimal]]:
        """(receipt, line, quantity not yet invoiced) of priced receipt lines dated on or before the date."""
        out = []
        for doc in self.docs("setReceipt"):
            if dt.date.fromisoformat(doc["VoucherDate"]) > before:
                continue
            for line in doc["detail"]:
                left = D(line["Quantity"]) - self.invoiced_qty(doc["VoucherId"], line["RefNumber"])
                if left > 0 and D(line["Amount"]) > 0:
                    out.append((doc, line, left))
        return out

    def purchases(self, month: int) -> list[dict[str, Any]]:
        rng, docs = self.rng, []
        # An invoice for goods already received: the cited lines, some in part, some at another price.
        date = day(month, rng, first=10)
        open_lines = self.open_receipt_lines(date)
        if open_lines:
            receipt, _, _ = rng.choice(open_lines)
            supplier = receipt["CustomerCode"]
            lines = []
            for doc, line, left in open_lines:
                if doc["CustomerCode"] != supplier or len(lines) == 3:
                    continue
                qty = left if rng.random() < 0.6 else max(D(1), (left / 2).to_integral_value())
                price = D(line["UnitPrice"]) + rng.choice([0, 0, rng.randint(-500, 500)])
                lines.append({"RefNumber": len(lines) + 1, "ItemCode": line["ItemCode"], "Uom": line["Uom"],
                              "SiteCode": line["SiteCode"], "Quantity": qty, "UnitPrice": price,
                              "Amount": qty * price, "ReceiptId": doc["VoucherId"],
                              "ReceiptRefNumber": line["RefNumber"]})
            doc = purchase_doc(self.vid("PI", month), date, supplier, BASE, D(1), lines)
            self.add("setPurchaseInvoice", doc)
            docs.append(doc)
        # Goods and a service invoiced without a receipt, in VND and every other month in USD.
        for currency in [BASE] + (["USD"] if month % 2 else []):
            rate = D(1) if currency == BASE else self.usd_rate(month)
            lines = self.goods_lines(rng.randint(1, 3), currency, SITES[:2])
            service = rng.choice(list(SERVICES))
            price = self.price(currency, 100_000, 900_000)
            lines.append({"RefNumber": len(lines) + 1, "ItemCode": service, "Uom": SERVICES[service],
                          "SiteCode": "K1", "Quantity": 1, "UnitPrice": price, "Amount": price})
            doc = purchase_doc(self.vid("PI", month), day(month, rng), rng.choice(SUPPLIERS), currency, rate, lines)
            self.add("setPurchaseInvoice", doc)
            docs.append(doc)
        return docs

    def on_hand(self, item: str, site: str, date: dt.date) -> Decimal:
        """Quantity at the end of the date by the generator's books (all live movements up to it)."""
        return sum((m.qty if m.rank in (PRICED, TRANSFER_IN, DERIVED) else -m.qty for m in self.all_moves({item})
                    if m.site == site and m.date <= date), D(0))

    def transfers(self, month: int) -> list[dict[str, Any]]:
        rng = self.rng
        date = dt.date(YEAR, month, 20 + rng.randint(0, 5))  # one transfer date a month, after most inflows
        lines = []
        for item in rng.sample(list(GOODS), 2):
            source = rng.choice(SITES[:2])
            have = self.on_hand(item, source, date)
            if have >= 4:
                qty = rng.randint(1, int(have // 4))
                target = rng.choice([s for s in SITES if s != source])
                lines.append({"RefNumber": len(lines) + 1, "ItemCode": item, "Uom": GOODS[item], "SiteCode": source,
                              "ToSiteCode": target, "Quantity": qty})
        if not lines:
            return []
        doc = stock_doc(self.vid("TR", month), date, None, lines, amounts=False)
        return [doc] if self.add("setStockTransfer", doc, stock=True) else []

    def outflow_lines(self, date: dt.date, count: int, currency: str) -> list[tuple[str, str, str, int]]:
        """(item, unit, site, quantity) of goods on hand to sell or issue at the date."""
        out = []
        for item in self.rng.sample(list(GOODS), count):
            site = self.rng.choice(SITES)
            have = self.on_hand(item, site, date)
            uom = "BOX" if item == "IT01" and have >= 24 and self.rng.random() < 0.5 else GOODS[item]
            unit = CONVERSIONS.get((item, uom), D(1))
            most = int(have // unit // 3)
            if most >= 1:
                out.append((item, uom, site, self.rng.randint(1, most)))
        return out

    def sales(self, month: int) -> list[dict[str, Any]]:
        rng, docs = self.rng, []
        for _ in range(7):
            customer = rng.choice(CUSTOMERS)
            currency = "USD" if customer in USD_CUSTOMERS else BASE
            rate = self.usd_rate(month) if currency == "USD" else D(1)
            date = day(month, rng)
            lines = []
            for item, uom, site, qty in self.outflow_lines(date, rng.randint(1, 2), currency):
                code = rng.choice(list(TAX_CODES))
                price = self.price(currency, 40_000, 500_000) * CONVERSIONS.get((item, uom), D(1))
                lines.append(sale_line(len(lines) + 1, item, uom, site, qty, price, currency,
                                       rng.choice([0, 0, 5, 10]), rng.choice([code, None]), TAX_CODES[code]))
            if rng.random() < 0.4 or not lines:
                service = rng.choice(list(SERVICES))
                lines.append(sale_line(len(lines) + 1, service, SERVICES[service], "K1", rng.randint(1, 3),
                                       self.price(currency, 100_000, 2_000_000), currency, rng.choice([0, 3]),
                                       None, 10))
            due = (date + dt.timedelta(days=rng.choice([0, 15, 30, 60]))).isoformat()
            doc = sale_doc(self.vid("SI", month), date, customer, currency, rate, lines, DueDate=due)
            if self.add("setSaleInvoice", doc, stock=True):
                docs.append(doc)
        return docs

    def issues(self, month: int) -> list[dict[str, Any]]:
        date = day(month, self.rng)
        lines = [{"RefNumber": n, "ItemCode": item, "Uom": uom, "SiteCode": site, "Quantity": qty,
                  "UnitPrice": D(0), "Amount": D(0)}
                 for n, (item, uom, site, qty) in enumerate(self.outflow_lines(date, 2, BASE), 1)]
        if not lines:
            return []
        doc = stock_doc(self.vid("IS", month), date, self.rng.choice(CUSTOMERS), lines,
                        VoucherNumber=f"IS{month:02d}{self.counter['IS']:04d}")
        return [doc] if self.add("setIssue", doc, stock=True) else []

    def return_doc(self, vid: str, date: dt.date, invoice: dict[str, Any], line: dict[str, Any],
                   qty: Decimal) -> dict[str, Any]:
        currency = invoice["Currency"]
        amount = qty * D(line["UnitPrice"])
        discount = money(D(line["Discount"]) * qty / D(line["Quantity"]), currency)
        tax = money((amount - discount) * D(line["TaxRate"]) / 100, currency)
        ret = {"RefNumber": 1, "ItemCode": line["ItemCode"], "Uom": line["Uom"], "SiteCode": line["SiteCode"],
               "Quantity": qty, "UnitPrice": D(line["UnitPrice"]), "Amount": amount, "Discount": discount,
               "TaxRate": line["TaxRate"], "TaxAmount": tax, "TotalAmount": amount - discount + tax,
               "SaleInvId": invoice["VoucherId"], "SaleInvRefNumber": line["RefNumber"]}
        return sale_doc(vid, date, invoice["CustomerCode"], currency, D(invoice["ExchangeRate"]), [ret])

    def returns(self, month: int) -> list[dict[str, Any]]:
        rng, docs = self.rng, []
        # A return citing an unpaid invoice line of goods: no more than was sold on it, nor than it owes.
        candidates = [d for d in self.docs("setSaleInvoice") if not self.paid(d["VoucherId"])
                      and any(x["ItemCode"] in GOODS for x in d["detail"])]
        if candidates:
            invoice = rng.choice(candidates)
            line = rng.choice([x for x in invoice["detail"] if x["ItemCode"] in GOODS])
            left = D(line["Quantity"]) - self.returned_qty(invoice["VoucherId"], line["RefNumber"])
            sold_on = dt.date.fromisoformat(invoice["VoucherDate"])
            date = max(sold_on, day(month, rng))
            if left >= 1 and date.year == YEAR:
                doc = self.return_doc(self.vid("SR", month), date, invoice, line, D(rng.randint(1, int(left))))
                if D(doc["TotalAmount"]) <= self.outstanding("setSaleInvoice", invoice["VoucherId"]):
                    self.add("setSaleReturn", doc)
                    docs.append(doc)
        # Every third month a return that cites no invoice: at the average cost, an unapplied credit.
        if month % 3 == 1:
            customer = rng.choice([c for c in CUSTOMERS if c not in USD_CUSTOMERS])
            item = rng.choice(list(GOODS))
            line = sale_line(1, item, GOODS[item], rng.choice(SITES[:2]), rng.randint(1, 3),
                             self.price(BASE, 40_000, 300_000), BASE, 0, None, 10)
            doc = sale_doc(self.vid("SR", month), day(month, rng), customer, BASE, D(1), [line])
            self.add("setSaleReturn", doc)
            docs.append(doc)
        return docs

    def allocation(self, form: str, partner: str, currency: str, date: dt.date,
                   full: float) -> list[tuple[str, Decimal]]:
        """Open invoices of the partner in the currency, dated on or before the date: some paid in full,
        some in part."""
        invoice_form = "setSaleInvoice" if form == "setCashReceipt" else "setPurchaseInvoice"
        partner_field = "CustomerCode" if invoice_form == "setSaleInvoice" else "SupplierCode"
        out = []
        for inv in self.docs(invoice_form):
            if (inv[partner_field] != partner or inv["Currency"] != currency
                    or dt.date.fromisoformat(inv["VoucherDate"]) > date):
                continue
            left = self.outstanding(invoice_form, inv["VoucherId"])
            if left <= 0 or len(out) == 3:
                continue
            amount = left if self.rng.random() < full else money(left * D(self.rng.randint(20, 80)) / 100, currency)
            if amount > 0:
                out.append((inv["VoucherId"], amount))
        return out

    def receipts_of_cash(self, month: int) -> list[dict[str, Any]]:
        rng, docs = self.rng, []
        for i in range(4):
            customer = rng.choice(CUSTOMERS)
            currency = "USD" if customer in USD_CUSTOMERS else BASE
            rate = self.usd_rate(month) if currency == "USD" else D(1)
            date = day(month, rng, first=5)
            allocated = self.allocation("setCashReceipt", customer, currency, date, 0.6) if i < 3 else []
            paid = sum((a for _, a in allocated), D(0))
            extra = money(D(rng.randint(0, 3) * 250_000) / (1 if currency == BASE else 25_000), currency)
            lines = [(RECEIVABLE, paid + extra)] if paid + extra > 0 else []
            if rng.random() < 0.2:
                lines.append((OTHER_INCOME, money(D(rng.randint(10_000, 90_000)) / (1 if currency == BASE
                                                                                     else 25_000), currency)))
            if not lines:
                continue
            doc = cash_doc("setCashReceipt", self.vid("CR", month), date, customer, currency, rate, lines, allocated)
            self.add("setCashReceipt", doc)
            docs.append(doc)
        return docs

    def disbursements(self, month: int) -> list[dict[str, Any]]:
        rng, docs = self.rng, []
        for i in range(2):
            supplier = rng.choice(SUPPLIERS)
            currency = "USD" if i == 1 and month % 2 == 0 else BASE
            rate = self.usd_rate(month) if currency == "USD" else D(1)
            date = day(month, rng, first=5)
            allocated = self.allocation("setCashDisbursement", supplier, currency, date, 0.5)
            paid = sum((a for _, a in allocated), D(0))
            extra = money(D(rng.randint(0, 2) * 300_000) / (1 if currency == BASE else 25_000), currency)
            if paid + extra <= 0:
                continue
            doc = cash_doc("setCashDisbursement", self.vid("CD", month), date, supplier, currency, rate,
                           [(PAYABLE, paid + extra)], allocated)
            self.add("setCashDisbursement", doc)
            docs.append(doc)
        return docs

    def journals(self, month: int) -> list[dict[str, Any]]:
        rng = self.rng
        date = day(month, rng)
        amount = D(rng.randint(10_000, 500_000))
        customer = rng.choice([c for c in CUSTOMERS if c not in USD_CUSTOMERS])
        if month % 2:  # a charge to the customer, or a write-off of what it owes
            lines = [(RECEIVABLE, customer, amount, D(0)), (OTHER_INCOME, None, D(0), amount)]
        else:
            lines = [(OTHER_EXPENSE, None, amount, D(0)), (RECEIVABLE, customer, D(0), amount)]
        docs = [journal_doc(self.vid("JV", month), date, BASE, D(1), lines)]
        if month % 4 == 0:  # in USD, lines that round unevenly to dong; a supplier's debit note on 331
            rate = self.usd_rate(month) + D("0.37")
            usd = [(RECEIVABLE, rng.choice(USD_CUSTOMERS), D("10.01"), D(0)),
                   (RECEIVABLE, rng.choice(USD_CUSTOMERS), D("20.03"), D(0)),
                   (OTHER_INCOME, None, D(0), D("30.04"))]
            docs.append(journal_doc(self.vid("JV", month), date, "USD", rate, usd))
            supplier = rng.choice(SUPPLIERS)
            docs.append(journal_doc(self.vid("JV", month), date, BASE, D(1),
                                    [(PAYABLE, supplier, D(120_000), D(0)), (OTHER_INCOME, None, D(0), D(120_000))]))
        for doc in docs:
            self.add("setJournalVoucher", doc)
        return docs

    # --- replacements and cancellations -----------------------------------------------------------------

    def changes(self) -> list[Batch]:
        """About 10% of the posting vouchers replaced and 5% cancelled, form by form, each change kept only
        when the books allow it after the changes before it (the order they are sent in)."""
        rng = self.rng
        start = len(self.batches)
        replaced: set[Key] = set()
        plan = ["setReceipt", "setPurchaseInvoice", "setStockTransfer", "setSaleInvoice", "setIssue",
                "setSaleReturn", "setCashReceipt", "setCashDisbursement", "setJournalVoucher"]
        count = {f: sum(1 for k in self.live if k[0] == f) for f in plan}
        share = {f: max(1, round(count[f] / 10)) for f in plan}  # replaced
        cut = {f: max(1, round(count[f] / 20)) for f in plan}  # cancelled
        for form in plan:
            docs = []
            for key in rng.sample(sorted(k for k in self.live if k[0] == form), k=count[form]):
                if len(docs) >= share[form]:
                    break
                new = self.replacement(form, self.live[key])
                if new is not None and self.allowed(form, new):
                    self.put(form, new)
                    replaced.add(key)
                    docs.append(new)
            self.send(form, docs)
        for form in reversed(plan):  # payments first: cancelling one frees the invoices it paid
            docs = []
            for key in rng.sample(sorted(k for k in self.live if k[0] == form and k not in replaced),
                                  k=sum(1 for k in self.live if k[0] == form and k not in replaced)):
                if len(docs) >= cut[form]:
                    break
                if self.cancel_allowed(form, key[1]):
                    self.drop(form, key[1])
                    docs.append(cancel(key[1]))
            self.send(form, docs)
        return self.batches[start:]

    def allowed(self, form: str, new: dict[str, Any]) -> bool:
        return self.stock_ok(form, new, new["VoucherId"])

    def cancel_allowed(self, form: str, vid: str) -> bool:
        if form in ("setSaleInvoice", "setPurchaseInvoice") and self.settled(vid):
            return False
        if form == "setReceipt" and self.cited(vid):
            return False
        return self.stock_ok(form, None, vid)

    def replacement(self, form: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The voucher changed as a bookkeeper would correct it, or None when it may not change."""
        rng = self.rng
        vid = doc["VoucherId"]
        date = dt.date.fromisoformat(doc["VoucherDate"])
        earlier = max(dt.date(YEAR, 1, 1), date - dt.timedelta(days=rng.randint(1, 40)))
        if form == "setReceipt":
            if self.cited(vid):
                return None
            lines = [{**x, "Quantity": q, "Amount": q * D(x["UnitPrice"])}
                     for x in doc["detail"] for q in [D(x["Quantity"]) + rng.randint(-2, 5)] if q > 0]
            if not lines:
                return None
            return stock_doc(vid, earlier, doc["CustomerCode"], lines)
        if form == "setPurchaseInvoice":
            if self.settled(vid) or any(x.get("ReceiptId") for x in doc["detail"]):
                return None
            lines = [{**x, "UnitPrice": p, "Amount": D(x["Quantity"]) * p} for x in doc["detail"]
                     for p in [money(D(x["UnitPrice"]) * D(rng.randint(90, 115)) / 100, doc["Currency"])]]
            return purchase_doc(vid, earlier, doc["SupplierCode"], doc["Currency"], D(doc["ExchangeRate"]), lines)
        if form == "setStockTransfer":
            lines = [{**x, "Quantity": max(1, int(x["Quantity"]) - rng.randint(0, 2))} for x in doc["detail"]]
            return stock_doc(vid, date - dt.timedelta(days=rng.randint(0, 5)), None, lines, amounts=False)
        if form == "setSaleInvoice":
            if self.settled(vid):
                return None
            currency = doc["Currency"]
            lines = []
            for x in doc["detail"]:
                qty = max(1, int(x["Quantity"]) + rng.randint(-2, 1))
                rate = int(x["TaxRate"])
                pct = rng.choice([0, 5])
                lines.append(sale_line(x["RefNumber"], x["ItemCode"], x["Uom"], x["SiteCode"], qty,
                                       D(x["UnitPrice"]), currency, pct, x.get("TaxCode"), rate))
            return sale_doc(vid, earlier, doc["CustomerCode"], currency, D(doc["ExchangeRate"]), lines,
                            DueDate=max(doc["DueDate"], earlier.isoformat()))
        if form == "setIssue":
            lines = [{**x, "Quantity": int(x["Quantity"]) + 1} for x in doc["detail"]]
            return stock_doc(vid, date, doc["CustomerCode"], lines, VoucherNumber=doc["VoucherNumber"])
        if form == "setSaleReturn":
            line = doc["detail"][0]
            if not line.get("SaleInvId"):
                return None
            invoice = self.live[("setSaleInvoice", line["SaleInvId"])]
            sold = next(x for x in invoice["detail"] if x["RefNumber"] == line["SaleInvRefNumber"])
            qty = D(line["Quantity"]) + 1
            if qty > D(sold["Quantity"]) - self.returned_qty(invoice["VoucherId"], sold["RefNumber"]) + D(line["Quantity"]):
                qty = D(line["Quantity"]) - 1
            if qty < 1:
                return None
            new = self.return_doc(vid, date, invoice, sold, qty)
            owed = self.outstanding("setSaleInvoice", invoice["VoucherId"]) + D(doc["TotalAmount"])
            return new if D(new["TotalAmount"]) <= owed else None
        if form in ("setCashReceipt", "setCashDisbursement"):
            # Half of each allocation, the rest of the money left unapplied; the same total.
            allocated = [(a["InvoiceId"], money(D(a["Amount"]) / 2, doc["Currency"]))
                         for a in doc.get("allocation") or ()]
            account = "CreditAccount" if form == "setCashReceipt" else "DebitAccount"
            lines = [(x[account], D(x["Amount"])) for x in doc["detail"]]
            return cash_doc(form, vid, date, doc["CustomerCode"], doc["Currency"], D(doc["ExchangeRate"]), lines,
                            [(i, a) for i, a in allocated if a > 0])
        if form == "setJournalVoucher":
            factor = D(rng.randint(50, 150)) / 100
            lines = []
            for x in doc["detail"]:
                debit, credit = (money(D(x["Debit"]) * factor, doc["Currency"]),
                                 money(D(x["Credit"]) * factor, doc["Currency"]))
                lines.append((x["AccountCode"], x.get("CustomerCode"), debit, credit))
            if sum(d for _, _, d, _ in lines) != sum(c for _, _, _, c in lines):
                return None
            return journal_doc(vid, earlier, doc["Currency"], D(doc["ExchangeRate"]), lines)
        return None

    # --- the refusals a careful bookkeeper expects ------------------------------------------------------

    def forbidden(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(what, form, document) of changes the rules refuse, each of which must leave the books as they are."""
        out = []
        paid = [d for d in self.docs("setSaleInvoice") if self.paid(d["VoucherId"])]
        if paid:
            out.append(("cancel a sales invoice with payments allocated", "setSaleInvoice",
                        cancel(paid[0]["VoucherId"])))
            full = next((d for d in paid if self.outstanding("setSaleInvoice", d["VoucherId"]) == 0), None)
            if full is not None:
                out.append(("pay a paid invoice again", "setCashReceipt",
                            cash_doc("setCashReceipt", "CR-AGAIN", dt.date(YEAR, 12, 31), full["CustomerCode"],
                                     full["Currency"], D(full["ExchangeRate"]),
                                     [(RECEIVABLE, D(full["TotalAmount"]))],
                                     [(full["VoucherId"], D(full["TotalAmount"]))])))
        cited = next((d for d in self.docs("setReceipt") if self.cited(d["VoucherId"])), None)
        if cited is not None:
            out.append(("cancel a goods receipt a purchase invoice cites", "setReceipt", cancel(cited["VoucherId"])))
        out.append(("issue far more than is in stock", "setIssue",
                    stock_doc("IS-TOO-MANY", dt.date(YEAR, 6, 30), CUSTOMERS[0],
                              [{"RefNumber": 1, "ItemCode": "IT02", "Uom": "PCS", "SiteCode": "K1",
                                "Quantity": 1_000_000, "UnitPrice": D(0), "Amount": D(0)}],
                              VoucherNumber="IS-TOO-MANY")))
        return out

    # --- what the books should say ------------------------------------------------------------------------

    def stock_value(self, as_of: dt.date | None = None) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
        """(quantity, value) per (item, site) at the end of the date (None: every movement)."""
        moves = [m for m in self.all_moves() if as_of is None or m.date <= as_of]
        state = replay(moves).stock
        return {k: (q, v) for k, (q, v) in state.items() if q != 0 or v != 0}

    def cost_of_sales(self, as_of: dt.date | None = None) -> Decimal:
        return replay(m for m in self.all_moves() if as_of is None or m.date <= as_of).cogs
