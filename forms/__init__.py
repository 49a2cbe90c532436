"""The forms the gateway serves, in one explicit list. A new form is a module here, a schema and a table."""

FORM_MODULES = (
    "forms.customer",
)
