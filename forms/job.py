from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setJob",
        get_name="getJob",
        table="job",
        key=("JobCode",),
        description="Jobs (cases, projects). Status is active/inactive; JobStatus is the case's life-cycle.",
        aliases=("setCase",),
        get_aliases=("getCase",),
    ),
]
