from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setSite",
        get_name="getSite",
        table="site",
        key=("SiteCode",),
        description="Sites (warehouses).",
        aliases=("setWarehouse",),
        get_aliases=("getWarehouse",),
    ),
]
