"""The forms the gateway serves, in one explicit list. A new form is a module here, a schema and a table."""

FORM_MODULES = (
    "forms.customer",
    "forms.supplier",
    "forms.item",
    "forms.site",
    "forms.unit",
    "forms.unit_conversion",
    "forms.account",
    "forms.department",
    "forms.employee",
    "forms.job",
    "forms.contract",
    "forms.expense",
    "forms.currency",
    "forms.tax_code",
    "forms.vouchers",
    "gateway.reports",
    "gateway.audit",  # getAuditLog
)
