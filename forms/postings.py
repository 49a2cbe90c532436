"""Posting rules of the voucher forms (forms/vouchers.py names its rule): ledger entries, stock movements,
allocations to invoices.

Amount expressions are SQL over the line (l) or the voucher (v) columns; they are declared here, in code.
Cost of goods sold is posted per sale and issue at moving weighted average cost (gateway/costing.py), which
values the movements after the write and posts their cost entries.
"""

from gateway import grni
from gateway.posting import Entry, Move, Posting, header, line, role
from gateway.settlement import Settles

NET = "l.amount - COALESCE(l.discount, 0)"
# VAT is posted from the header: it may differ from the sum of the lines' VAT by rounding (VAT worked out on
# the invoice total), and the header's TotalAmount, which the partner owes, includes the header's figure.
HEADER_TAX = "COALESCE((v.document->>'TotalTaxAmount')::numeric, 0)"

SALE_INVOICE = Posting(
    entries=(Entry(role("receivable"), role("revenue"), NET),
             Entry(role("receivable"), role("vat_output"), HEADER_TAX, per_voucher=True)),
    moves=(Move("out", counter="cost_of_sales"),),
)

SALE_RETURN = Posting(
    entries=(Entry(role("sales_returns"), role("receivable"), NET),
             Entry(role("vat_output"), role("receivable"), HEADER_TAX, per_voucher=True)),
    # Back at the cost of the sale line it cites (at the average when it cites none), out of cost of sales.
    moves=(Move("in", basis="sale", counter="cost_of_sales", ref=("sale_invoice_id", "sale_invoice_line")),),
    # A line citing its invoice nets against it: what the return credits settles the invoice (the excess over
    # what is outstanding stays an unapplied credit of the customer).
    settles=Settles("setSaleInvoice", "receivable", line_id="sale_invoice_id", line_ref="sale_invoice_line"),
)

# A purchase invoice line not citing a goods receipt brings goods into stock (Dr inventory) or, for an item
# whose stock is not tracked (a service), is an expense. A line citing a receipt's line (gateway/grni.py)
# relieves the receipt's value (base currency) from goods received not invoiced and credits the payable with
# its own amount; the difference adjusts inventory (and, value only, the stock at the receipt line's site).
_OWN_GOODS = f"{grni.CITES_NO_RECEIPT} AND {grni.STOCK_TRACKED}"
_SERVICE = f"{grni.CITES_NO_RECEIPT} AND NOT {grni.STOCK_TRACKED}"
_RELIEVED = f"LEAST({grni.INVOICED}, {grni.RELIEF})"
_DEARER = f"GREATEST({grni.INVOICED} - {grni.RELIEF}, 0)"
_CHEAPER = f"GREATEST({grni.RELIEF} - {grni.INVOICED}, 0)"
PURCHASE_INVOICE = Posting(
    entries=(Entry(role("inventory"), role("payable"), "l.amount", where=_OWN_GOODS),
             Entry(role("purchased_services"), role("payable"), "l.amount", where=_SERVICE),
             Entry(role("goods_received_not_invoiced"), role("payable"), _RELIEVED, where=grni.CITES_RECEIPT,
                   base=True),
             Entry(role("inventory"), role("payable"), _DEARER, where=grni.CITES_RECEIPT, base=True),
             Entry(role("goods_received_not_invoiced"), role("inventory"), _CHEAPER, where=grni.CITES_RECEIPT,
                   base=True),
             Entry(role("vat_input"), role("payable"), HEADER_TAX, per_voucher=True)),
    moves=(Move("in", value="l.amount", where=grni.CITES_NO_RECEIPT),
           # The goods came in with the receipt: only the difference in value, at the same site (checked).
           Move("in", value=grni.VARIANCE, quantity="0", base=True, where=grni.CITES_RECEIPT)),
)

# Goods received before their invoice: owed in goods received not invoiced until a purchase invoice cites
# them. A line of an item whose stock is not tracked (a service) neither posts nor moves anything.
RECEIPT = Posting(
    entries=(Entry(role("inventory"), role("goods_received_not_invoiced"), "l.amount", where=grni.STOCK_TRACKED),),
    moves=(Move("in", value="l.amount"),),
)

ISSUE = Posting(moves=(Move("out", counter="cost_of_sales"),))

# The cost moves between sites at the average of the source; inventory keeps it (no cost entry).
STOCK_TRANSFER = Posting(moves=(Move("out", basis="transfer"), Move("in", site="to_site_code", basis="transfer")))

# The allocated part of a payment settles its invoices at their book value; the difference from its value at
# the payment's rate is a realised exchange difference, posted with the payment (gateway/settlement.py).
CASH_RECEIPT = Posting(
    entries=(Entry(header("DebitAccount"), line("credit_account"), "l.amount"),),
    allocates="setSaleInvoice",
    settles=Settles("setSaleInvoice", "receivable", account_field="CreditAccount"),
)

CASH_DISBURSEMENT = Posting(
    entries=(Entry(line("debit_account"), header("CreditAccount"), "l.amount"),),
    allocates="setPurchaseInvoice",
    settles=Settles("setPurchaseInvoice", "payable", account_field="DebitAccount"),
)

JOURNAL = Posting(journal=True)
