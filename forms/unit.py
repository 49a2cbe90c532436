from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setUnit",
        get_name="getUnit",
        table="unit",
        key=("UomCode",),
        description="Units of measure.",
    ),
]
