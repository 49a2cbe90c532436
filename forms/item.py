from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setItem",
        get_name="getItem",
        table="item",
        key=("ItemCode",),
        description="Items: goods, materials and services.",
    ),
]
