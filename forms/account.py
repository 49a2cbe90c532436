from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setAccount",
        get_name="getAccount",
        table="account",
        key=("AccountCode",),
        description="The chart of accounts.",
    ),
]
