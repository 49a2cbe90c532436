from gateway.forms import MasterForm

FORMS = [
    MasterForm(
        name="setExpense",
        get_name="getExpense",
        table="expense",
        key=("ExpenseCode",),
        description="Expense items.",
    ),
]
