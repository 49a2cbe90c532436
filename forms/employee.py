from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setEmployee",
        get_name="getEmployee",
        table="employee",
        key=("EmployeeCode",),
        description="Employees.",
    ),
]
