"""Voucher forms (SyncVoucher). Fast's names first; the English names are aliases of the same form."""

from gateway.vouchers import Ref, VoucherForm

from . import postings

CUSTOMER = (("customer", "customer_code"),)
PARTNER = (("customer", "customer_code"), ("supplier", "supplier_code"))
ITEM = (("item", "item_code"),)
SITE = (("site", "site_code"),)
ACCOUNT = (("account", "account_code"),)
TAX = (("tax_code", "tax_code"),)
ANALYTIC = (
    Ref("detail/JobCode", (("job", "job_code"),)),
    Ref("detail/DeptCode", (("department", "dept_code"),)),
    Ref("detail/ContractCode", (("contract", "contract_code"),)),
    Ref("detail/ExpenseCode", (("expense", "expense_code"),)),
)
# What the customer owes on a sale: net of discount, plus the header's VAT (the figure posted).
SALE_TOTAL = ("TotalAmount", (("TotalNetAmount", 1), ("TotalDiscountAmount", -1), ("TotalTaxAmount", 1)))
# Lines of goods: the item and the site must exist, and any analytic code given.
GOODS = (Ref("detail/ItemCode", ITEM), Ref("detail/SiteCode", SITE), *ANALYTIC)

FORMS = [
    VoucherForm(
        name="setSaleInvoice",
        get_name="getSaleInvoice",
        posting=postings.SALE_INVOICE,
        aliases=("setSalesInvoice",),
        get_aliases=("getSalesInvoice",),
        description="Sales invoices.",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), Ref("detail/TaxCode", TAX), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalNetAmount", "Amount"), ("TotalDiscountAmount", "Discount")),
        tax_total=("TotalTaxAmount", "TaxAmount"),
        grand_total=SALE_TOTAL,
    ),
    VoucherForm(
        name="setPurchaseInvoice",
        get_name="getPurchaseInvoice",
        posting=postings.PURCHASE_INVOICE,
        description="Purchase invoices, with their VAT invoice lines in `tax`.",
        partner="SupplierCode",
        references=(Ref("SupplierCode", PARTNER), Ref("detail/TaxCode", TAX), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalNetAmount", "Amount")),
        tax_total=("TotalTaxAmount", "tax/TaxAmount"),
        grand_total=("TotalAmount", (("TotalNetAmount", 1), ("TotalTaxAmount", 1))),
    ),
    VoucherForm(
        name="setJournalVoucher",
        get_name="getJournalVoucher",
        posting=postings.JOURNAL,
        description="General journal vouchers; debits must equal credits.",
        references=(Ref("detail/AccountCode", ACCOUNT), Ref("detail/CustomerCode", CUSTOMER), *ANALYTIC),
        balanced=True,
    ),
    VoucherForm(
        name="setSaleReturn",
        get_name="getSaleReturn",
        posting=postings.SALE_RETURN,
        description="Sales returns: lines as on a sales invoice, each optionally naming the invoice line returned.",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), Ref("detail/TaxCode", TAX), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalNetAmount", "Amount"), ("TotalDiscountAmount", "Discount")),
        tax_total=("TotalTaxAmount", "TaxAmount"),
        grand_total=SALE_TOTAL,
    ),
    VoucherForm(
        name="setReceipt",
        get_name="getReceipt",
        posting=postings.RECEIPT,
        aliases=("setStockReceipt",),
        get_aliases=("getStockReceipt",),
        description="Goods receipts (stock in).",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalAmount", "Amount")),
    ),
    VoucherForm(
        name="setIssue",
        get_name="getIssue",
        posting=postings.ISSUE,
        aliases=("setStockIssue",),
        get_aliases=("getStockIssue",),
        description="Goods issues (stock out); VoucherNumber is required, as in Fast.",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalAmount", "Amount")),
    ),
    VoucherForm(
        name="setStockTransfer",
        get_name="getStockTransfer",
        posting=postings.STOCK_TRANSFER,
        description="Stock transfers between sites: each line moves goods from SiteCode to ToSiteCode (must differ).",
        distinct_in_line=(("SiteCode", "ToSiteCode"),),
        references=(Ref("detail/ItemCode", ITEM), Ref("detail/SiteCode", SITE), Ref("detail/ToSiteCode", SITE),
                    *ANALYTIC),
        totals=(("TotalQuantity", "Quantity"),),
    ),
    VoucherForm(
        name="setCashReceipt",
        get_name="getCashReceipt",
        posting=postings.CASH_RECEIPT,
        description="Cash (or bank) receipts, optionally allocated to the sales invoices they pay (`allocation`).",
        partner="CustomerCode",
        # allocation/InvoiceId names a voucher, not a catalog record: no reference check for it (yet).
        references=(Ref("CustomerCode", CUSTOMER), Ref("DebitAccount", ACCOUNT), Ref("detail/CreditAccount", ACCOUNT),
                    *ANALYTIC),
        totals=(("TotalAmount", "Amount"),),
    ),
    VoucherForm(
        name="setCashDisbursement",
        get_name="getCashDisbursement",
        posting=postings.CASH_DISBURSEMENT,
        aliases=("setCashPayment",),
        get_aliases=("getCashPayment",),
        description="Cash (or bank) payments, optionally allocated to the purchase invoices they pay (`allocation`).",
        partner="CustomerCode",
        references=(Ref("CustomerCode", PARTNER), Ref("CreditAccount", ACCOUNT), Ref("detail/DebitAccount", ACCOUNT),
                    *ANALYTIC),
        totals=(("TotalAmount", "Amount"),),
    ),
    VoucherForm(
        name="setSalesOrder",
        get_name="getSalesOrder",
        description="Sales orders.",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalAmount", "Amount")),
    ),
    VoucherForm(
        name="setPurchaseOrder",
        get_name="getPurchaseOrder",
        description="Purchase orders; the supplier may come from the customer or the supplier catalog.",
        partner="SupplierCode",
        references=(Ref("SupplierCode", PARTNER), *GOODS),
        totals=(("TotalQuantity", "Quantity"), ("TotalAmount", "Amount")),
    ),
]
