"""Posting rules per voucher form: ledger entries, stock movements, allocations to invoices.

Amount expressions are SQL over the line (l) or the voucher (v) columns; they are declared here, in code.
Cost of goods sold is not posted per sale: stock is valued at weighted average cost in getStockBalance.
"""

from gateway.posting import Entry, Move, Posting, header, line, role

NET = "l.amount - COALESCE(l.discount, 0)"
# VAT is posted from the header: it may differ from the sum of the lines' VAT by rounding (VAT worked out on
# the invoice total), and the header's TotalAmount, which the partner owes, includes the header's figure.
HEADER_TAX = "COALESCE((v.document->>'TotalTaxAmount')::numeric, 0)"

POSTINGS = {
    "setSaleInvoice": Posting(
        entries=(Entry(role("receivable"), role("revenue"), NET),
                 Entry(role("receivable"), role("vat_output"), HEADER_TAX, per_voucher=True)),
        moves=(Move("out"),),
    ),
    "setSaleReturn": Posting(
        entries=(Entry(role("sales_returns"), role("receivable"), NET),
                 Entry(role("vat_output"), role("receivable"), HEADER_TAX, per_voucher=True)),
        moves=(Move("in"),),
    ),
    "setPurchaseInvoice": Posting(
        entries=(Entry(role("inventory"), role("payable"), "l.amount"),
                 Entry(role("vat_input"), role("payable"), HEADER_TAX, per_voucher=True)),
        moves=(Move("in", value="l.amount"),),
    ),
    "setReceipt": Posting(
        entries=(Entry(role("inventory"), role("payable"), "l.amount"),),
        moves=(Move("in", value="l.amount"),),
    ),
    "setIssue": Posting(moves=(Move("out"),)),
    "setStockTransfer": Posting(moves=(Move("out"), Move("in", site="to_site_code"))),
    "setCashReceipt": Posting(
        entries=(Entry(header("DebitAccount"), line("credit_account"), "l.amount"),),
        allocates="setSaleInvoice",
    ),
    "setCashDisbursement": Posting(
        entries=(Entry(line("debit_account"), header("CreditAccount"), "l.amount"),),
        allocates="setPurchaseInvoice",
    ),
    "setJournalVoucher": Posting(journal=True),
}
