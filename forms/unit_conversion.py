from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="UnitConversion",
        get_name="getUnitConversion",
        table="unit_conversion",
        key=("ItemCode", "Uom"),
        description=(
            "Per-item unit conversions: one Uom equals Coefficient base units of the item. "
            "Fast documents the form both as UnitConversion and as setUomConversion."
        ),
        aliases=("setUomConversion", "setUnitConversion"),
        get_aliases=("getUomConversion",),
    ),
]
