from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setTaxCode",
        get_name="getTaxCode",
        table="tax_code",
        key=("TaxCode",),
        description="Tax codes and their rates (-1 not taxable, -2 not declared).",
    ),
]
