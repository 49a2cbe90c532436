from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setSupplier",
        get_name="getSupplier",
        table="supplier",
        key=("SupplierCode",),
        description=(
            "Suppliers in a catalog of their own. Fast keeps suppliers in the customer catalog with "
            "SuplierYN = 1 (setCustomer); this separate catalog is for systems that keep suppliers apart."
        ),
    ),
]
