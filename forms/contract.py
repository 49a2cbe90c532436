from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setContract",
        get_name="getContract",
        table="contract",
        key=("ContractCode",),
        description="Contracts.",
    ),
]
