from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setDepartment",
        get_name="getDepartment",
        table="department",
        key=("DeptCode",),
        description="Departments.",
    ),
]
