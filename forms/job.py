from gateway.forms import MasterForm, date_order

FORMS = [
    MasterForm(
        name="setJob",
        get_name="getJob",
        table="job",
        checks=(date_order("FromDate", "ToDate"),),
        key=("JobCode",),
        description="Jobs (cases, projects). Status is active/inactive; JobStatus is the case's life-cycle.",
        aliases=("setCase",),
        get_aliases=("getCase",),
    ),
]
