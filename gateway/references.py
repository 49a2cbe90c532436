"""References from vouchers to master records, guarded both ways.

A voucher may only name live master records (checked as it is written), and a master record that live
vouchers name may not be deleted. The two checks meet at the tenant's gate, a transaction-level advisory lock
that every write of the tenant's data holds, shared, from its start to its commit (the change feed relies on
that too: gateway/feed.py); a delete of referenced masters, and a change of the tenant's locked period, hold it
exclusively. So a delete waits for the voucher writes under way, and then (in a statement of its own, which
sees what they committed) finds their references; a voucher write that starts while a delete holds the gate
waits, then finds the deleted records gone. Neither can slip between the other's check and write. Shared
holders do not wait for each other, and the gate writes nothing.

Which columns hold which references is derived from the voucher forms' declarations (`Ref`): every reference
is kept in a typed, indexed column (sql/migrations/0010_reference_guard.sql), so the lookup before a delete is
a keyed one on any table. The one exception, a header account (a cash voucher's DebitAccount), is guarded
through its ledger entries: an account with postings is never deleted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .db import QUERIES
from .sqlnames import ident, word

# Columns of `voucher` that hold a header reference, by header field (the partner field of each form).
_HEADER = "voucher"
_LINES = "voucher_line"


@dataclass(frozen=True)
class Referrer:
    """Rows that name a master record: `column` of `table`, for vouchers of `forms` (all when empty)."""

    table: str
    column: str
    forms: tuple[str, ...] = ()

    def exists(self) -> str:
        """An EXISTS test for code k.code; OFFSET 0 keeps it a keyed lookup per code whatever the planner
        guesses about a never-analysed table (it cannot be flattened into a join)."""
        where = ["r.tenant_id = $1", f"r.{ident(self.column)} = k.code"]
        if self.table == _HEADER:
            where.append("NOT r.deleted")
        if self.forms:
            where.append("r.form IN (" + ", ".join(f"'{word(f)}'" for f in self.forms) + ")")
        return f"EXISTS (SELECT 1 FROM {ident(self.table)} r WHERE {' AND '.join(where)} OFFSET 0)"


def _line_column(field_name: str) -> str | None:
    from .vouchers import LINE_COLUMNS

    found = LINE_COLUMNS.get(field_name)
    return found[0] if found else None


def referrers(voucher_forms: Iterable[Any]) -> dict[str, list[Referrer]]:
    """Per master table, the rows that may name its records."""
    found: dict[str, dict[tuple[str, str], set[str]]] = {}

    def add(table: str, where: tuple[str, str], form: str) -> None:
        found.setdefault(table, {}).setdefault(where, set()).add(form)

    for form in voucher_forms:
        add("currency", (_HEADER, "currency"), form.name)
        for ref in form.references:
            for table, _column in ref.targets:
                if "/" in ref.path:
                    _, field_name = ref.path.split("/", 1)
                    column = _line_column(field_name)
                    if column is None:
                        raise ValueError(f"{form.name}: reference {ref.path} has no typed column of voucher_line")
                    add(table, (_LINES, column), form.name)
                elif ref.path == form.partner:
                    add(table, (_HEADER, "partner_code"), form.name)
                elif table == "account" and form.posting is not None:
                    continue  # a header account: posted, so guarded by its ledger entries (below)
                else:
                    raise ValueError(f"{form.name}: reference {ref.path} is kept in no typed column, so a delete "
                                     f"of the {table} it names could not be refused")
    every_form = {form for places in found.values() for forms in places.values() for form in forms}
    out: dict[str, list[Referrer]] = {}
    for table, places in sorted(found.items()):
        out[table] = [
            # Line codes of any form name the record; the partner column is read per form, since a partner
            # code may name a customer for one form and a supplier for another.
            Referrer(where[0], where[1], tuple(sorted(forms)) if where[0] == _HEADER and forms != every_form else ())
            for where, forms in sorted(places.items())
        ]
    if "account" in out:
        # Accounts with postings, and the accounts the tenant's posting roles name.
        out["account"] += [Referrer("gl_entry", "account_code"), Referrer("posting_account", "account_code")]
    return out


@functools.cache
def live_codes(table: str, column: str) -> str:
    """The codes among $2 that name live records of the tenant ($1) in `table`, by its key `column`."""
    return (f"SELECT {ident(column)} AS code FROM {ident(table)}"
            f" WHERE tenant_id = $1 AND {ident(column)} = ANY($2::text[]) AND NOT deleted")


def guard_statement(table: str, found: list[Referrer]) -> str:
    """The codes among $2 that rows of the tenant ($1) still name."""
    tests = "\n   OR ".join(r.exists() for r in found)
    return f"-- codes of {table} in use\nSELECT k.code FROM unnest($2::text[]) AS k(code)\nWHERE {tests}\nORDER BY k.code"


def attach(forms: Iterable[Any]) -> list[Any]:
    """The loaded forms, each master form that vouchers refer to replaced by a copy holding the statement that
    finds its codes in use (forms are frozen: the guard needs every voucher form, so it comes after loading)."""
    from .forms import MasterForm
    from .vouchers import VoucherForm  # which refers to this module's gate

    forms = list(forms)
    by_table = referrers(f for f in forms if isinstance(f, VoucherForm))
    out = []
    for form in forms:
        if isinstance(form, MasterForm) and form.table in by_table:
            if len(form.key) != 1:
                raise ValueError(f"{form.name}: vouchers refer to {form.table}, whose key has {len(form.key)} parts")
            form = replace(form, guard_sql=guard_statement(form.table, by_table[form.table]))
        out.append(form)
    return out


GATE_SHARED = QUERIES["reference_gate_shared"]
GATE_EXCLUSIVE = QUERIES["reference_gate_exclusive"]
