"""Voucher forms (SyncVoucher). Fast's names first; the English names are aliases of the same form."""

from gateway.vouchers import Ref, VoucherForm

CUSTOMER = (("customer", "customer_code"),)
PARTNER = (("customer", "customer_code"), ("supplier", "supplier_code"))
ITEM = (("item", "item_code"),)
SITE = (("site", "site_code"),)
ACCOUNT = (("account", "account_code"),)
ANALYTIC = (
    Ref("detail/JobCode", (("job", "job_code"),)),
    Ref("detail/DeptCode", (("department", "dept_code"),)),
    Ref("detail/ContractCode", (("contract", "contract_code"),)),
    Ref("detail/ExpenseCode", (("expense", "expense_code"),)),
)

FORMS = [
    VoucherForm(
        name="setSaleInvoice",
        get_name="getSaleInvoice",
        aliases=("setSalesInvoice",),
        get_aliases=("getSalesInvoice",),
        description="Sales invoices.",
        partner="CustomerCode",
        references=(Ref("CustomerCode", CUSTOMER), Ref("detail/ItemCode", ITEM), Ref("detail/SiteCode", SITE),
                    *ANALYTIC),
        totals=(("TotalQuantity", "Quantity"), ("TotalNetAmount", "Amount"), ("TotalDiscountAmount", "Discount"),
                ("TotalTaxAmount", "TaxAmount"), ("TotalAmount", "TotalAmount")),
    ),
    VoucherForm(
        name="setPurchaseInvoice",
        get_name="getPurchaseInvoice",
        description="Purchase invoices, with their VAT invoice lines in `tax`.",
        partner="SupplierCode",
        references=(Ref("SupplierCode", PARTNER), Ref("detail/ItemCode", ITEM), Ref("detail/SiteCode", SITE),
                    *ANALYTIC),
        totals=(("TotalQuantity", "Quantity"), ("TotalNetAmount", "Amount"), ("TotalTaxAmount", "tax/TaxAmount")),
    ),
    VoucherForm(
        name="setJournalVoucher",
        get_name="getJournalVoucher",
        description="General journal vouchers; debits must equal credits.",
        references=(Ref("detail/AccountCode", ACCOUNT), Ref("detail/CustomerCode", CUSTOMER), *ANALYTIC),
        balanced=True,
    ),
]
