"""Posting rules of the voucher forms (forms/vouchers.py names its rule): ledger entries, stock movements,
allocations to invoices.

Amount expressions are SQL over the line (l) or the voucher (v) columns; they are declared here, in code.
Cost of goods sold is not posted per sale: stock is valued at weighted average cost in getStockBalance.
"""

from gateway.posting import Entry, Move, Posting, header, line, role

NET = "l.amount - COALESCE(l.discount, 0)"
# VAT is posted from the header: it may differ from the sum of the lines' VAT by rounding (VAT worked out on
# the invoice total), and the header's TotalAmount, which the partner owes, includes the header's figure.
HEADER_TAX = "COALESCE((v.document->>'TotalTaxAmount')::numeric, 0)"

SALE_INVOICE = Posting(
    entries=(Entry(role("receivable"), role("revenue"), NET),
             Entry(role("receivable"), role("vat_output"), HEADER_TAX, per_voucher=True)),
    moves=(Move("out"),),
)

SALE_RETURN = Posting(
    entries=(Entry(role("sales_returns"), role("receivable"), NET),
             Entry(role("vat_output"), role("receivable"), HEADER_TAX, per_voucher=True)),
    moves=(Move("in"),),
)

PURCHASE_INVOICE = Posting(
    entries=(Entry(role("inventory"), role("payable"), "l.amount"),
             Entry(role("vat_input"), role("payable"), HEADER_TAX, per_voucher=True)),
    moves=(Move("in", value="l.amount"),),
)

RECEIPT = Posting(
    entries=(Entry(role("inventory"), role("payable"), "l.amount"),),
    moves=(Move("in", value="l.amount"),),
)

ISSUE = Posting(moves=(Move("out"),))

STOCK_TRANSFER = Posting(moves=(Move("out"), Move("in", site="to_site_code")))

CASH_RECEIPT = Posting(
    entries=(Entry(header("DebitAccount"), line("credit_account"), "l.amount"),),
    allocates="setSaleInvoice",
)

CASH_DISBURSEMENT = Posting(
    entries=(Entry(line("debit_account"), header("CreditAccount"), "l.amount"),),
    allocates="setPurchaseInvoice",
)

JOURNAL = Posting(journal=True)
