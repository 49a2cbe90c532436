from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setCustomer",
        get_name="getCustomer",
        table="customer",
        key=("CustomerCode",),
        description="Customers (and, with SuplierYN = 1, partners that are also suppliers).",
    ),
]
