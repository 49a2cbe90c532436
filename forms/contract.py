from gateway.forms import MasterForm, date_order

FORMS = [
    MasterForm(
        name="setContract",
        get_name="getContract",
        table="contract",
        checks=(date_order("FromDate", "ToDate"),),
        key=("ContractCode",),
        description="Contracts.",
    ),
]
