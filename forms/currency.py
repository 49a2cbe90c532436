from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setCurrency",
        get_name="getCurrency",
        table="currency",
        key=("CurrencyCode",),
        description="Currencies, with the decimal places used to round totals.",
    ),
]
