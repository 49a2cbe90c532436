"""Form declarations are frozen data: load() compiles each into a new object, which the registry serves, and
leaves the declaration as written, so that loading twice gives equal forms."""

from __future__ import annotations

import copy
import dataclasses
from importlib import import_module
from typing import Any

import pytest

from forms import FORM_MODULES, postings
from gateway import grni, vouchers
from gateway.forms import MasterForm, build_registry
from gateway.posting import Posting
from gateway.reports import ReportForm
from gateway.vouchers import VoucherForm

DECLARED: list[Any] = [form for module in FORM_MODULES for form in getattr(import_module(module), "FORMS", ())]
RULES = {name: rule for name, rule in vars(postings).items() if isinstance(rule, Posting)}


def test_every_kind_of_form_is_declared() -> None:
    kinds = {type(form) for form in DECLARED}
    assert kinds == {MasterForm, VoucherForm, ReportForm}
    assert len(RULES) >= 9


@pytest.mark.parametrize("form", DECLARED, ids=lambda f: f.name)
def test_a_declaration_is_frozen(form: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        form.description = "changed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        form.schema = {"type": "object"}


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_posting_rule_is_frozen_and_built_into_a_new_rule(name: str) -> None:
    rule = RULES[name]
    as_declared = copy.deepcopy(rule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.sql = {"gl": "SELECT 1"}  # type: ignore[misc]
    built = rule.build()
    assert built is not rule and built == rule.build()
    assert rule.sql == {} and rule == as_declared, "build() left the declaration as it was"
    assert built.sql, "every declared rule writes something"
    assert dataclasses.replace(built, sql={}) == rule, "the built rule is the declaration with its statements"


@pytest.mark.parametrize("form", DECLARED, ids=lambda f: f.name)
def test_loading_makes_a_new_form_and_leaves_the_declaration_as_written(form: Any) -> None:
    as_declared = copy.deepcopy(form)
    first, second = form.load(), form.load()
    assert first is not form and first is not second
    assert first == second, "loading twice gives equal forms"
    assert form == as_declared, "load() changed the declaration"
    if isinstance(form, ReportForm):
        assert first == form  # nothing to compile
        return
    assert form.schema == {} and form.columns == () and form.validator is None
    assert first.schema and first.columns and first.validator is not None and first.reader is not None
    if isinstance(form, MasterForm):
        assert form.sql == {} and set(first.sql) >= {"upsert", "delete", "lock", "stage_create"}
    if isinstance(form, VoucherForm):
        assert form.write_sql is None
        if form.posting is not None:  # orders post nothing
            assert form.posting.sql == {} and first.posting == form.posting.build()
        # The write statement is built at load, from the compiled form, not on first use.
        assert first.write_sql == vouchers.write_statement(first)


def test_the_registry_holds_the_compiled_forms() -> None:
    registry = build_registry(FORM_MODULES)
    assert len(registry.forms) == len(DECLARED)
    by_name = {form.name: form for form in DECLARED}
    for form in registry.forms:
        declared = by_name[form.name]
        assert form is not declared
        if isinstance(form, MasterForm):
            # The reference guard is given after every form is loaded (it needs the voucher forms).
            assert dataclasses.replace(form, guard_sql=None) == declared.load()
        else:
            assert form == declared.load()
        if isinstance(form, VoucherForm):
            assert form.write_sql
            assert declared.posting is None or form.posting is not declared.posting and form.posting.sql
    guarded = {form.table for form in registry.forms if isinstance(form, MasterForm) and form.guard_sql}
    assert {"customer", "item", "account"} <= guarded
    assert all(form.guard_sql is None for form in DECLARED if isinstance(form, MasterForm))
    # A second registry from the same declarations is equal, form for form.
    assert build_registry(FORM_MODULES).forms == registry.forms


def test_the_rule_reposting_purchase_invoices_is_the_one_their_form_writes() -> None:
    registry = build_registry(FORM_MODULES)
    invoice, _ = registry.resolve("SyncVoucher", grni.INVOICE_FORM)
    assert isinstance(invoice, VoucherForm)
    assert grni._invoice_rule() == invoice.posting
    assert postings.PURCHASE_INVOICE.sql == {}


def test_a_failed_load_leaves_the_declarations_as_written(tmp_path: Any, monkeypatch: Any) -> None:
    """A rule allocating to an unknown form fails loading (tests/test_form_contract.py); the declarations it
    was loaded beside are no different afterwards."""
    (tmp_path / "unknown_allocation.py").write_text(
        "import dataclasses\n"
        "from forms import postings, vouchers\n"
        "FORMS = [dataclasses.replace(f, posting=dataclasses.replace(postings.CASH_DISBURSEMENT,"
        " allocates='setPurchaseInvoise')) if f.name == 'setCashDisbursement' else f for f in vouchers.FORMS]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    as_declared = copy.deepcopy(DECLARED)
    rules = copy.deepcopy(RULES)
    with pytest.raises(ValueError, match="setPurchaseInvoise"):
        build_registry([*(m for m in FORM_MODULES if m != "forms.vouchers"), "unknown_allocation"])
    assert DECLARED == as_declared
    assert RULES == rules
