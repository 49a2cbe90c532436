"""Roles and their permissions: read, write and delete per form, with wildcards.

A permission is `action:pattern`. The action is `read` (GetData), `write` (SyncData and SyncVoucher) or
`delete` (a write that carries deletes: master records with `action: delete`, vouchers with `Status: "0"`);
`*` stands for all three. The pattern names forms:

- a form's name, any of them: `setCustomer`, `getCustomer` and an alias such as `setWarehouse` all name the
  one form (a pattern names forms, not endpoints: `read:setCustomer` lets GetData read getCustomer);
- a wildcard over those names (`*` and `?`, case-insensitive): `*` every form, `set*` every form that is
  synced (reports have no set name), `get*` every form GetData reads, `setCash*` the two cash vouchers;
- a group: `@masters` (the catalogs of SyncData), `@vouchers` (the documents of SyncVoucher), `@reports`
  (the read-only reports of GetData).

A form may declare itself `admin_only` (what only the tenant's administrators may read, such as an audit
trail): no wildcard or group reaches it, only its own name, and the `admin` role.

The built-in roles (BUILTIN_ROLES) are compiled once per registry; a tenant's own roles (table tenant_role)
come back with the user's row on every request (auth.principal_for) and are compiled once per distinct list
of permissions. A check is then a set look-up: no database work of its own.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Forbidden
from .forms import SYNC_VOUCHER, Registry

READ, WRITE, DELETE = "read", "write", "delete"
ACTIONS = (READ, WRITE, DELETE)
MASTERS, VOUCHERS, REPORTS = "@masters", "@vouchers", "@reports"
GROUPS = (MASTERS, VOUCHERS, REPORTS)
ADMIN = "admin"

# The shape of a role's name, built-in or a tenant's (the migration 0018 checks it in the table too).
ROLE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

# The seed ERP's roles (hr_manager, sales_rep, inventory_manager, finance_manager) are mapped onto the forms
# that carry the same work here; README "Roles and permissions" gives the reasons.
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    ADMIN: ("*:*",),  # and the admin-only forms, which no wildcard reaches (see Policy)
    # The roles of releases before 0.4.0, with the meaning they had: writer writes (and deletes) every form,
    # reader reads every form.
    "writer": ("*:*",),
    "reader": ("read:*",),
    "integrator": ("*:@masters", "*:@vouchers"),
    "pos": ("read:@masters", "write:@masters"),
    "accountant": ("*:@vouchers", "read:@reports"),
    "reporter": ("read:*",),
    "hr_manager": ("*:setEmployee", "*:setDepartment", "read:setJob", "read:setContract"),
    "sales_rep": (
        "read:setCustomer", "write:setCustomer", "*:setSalesOrder", "read:setItem", "read:setUnit",
        "read:setSaleInvoice", "read:setSaleReturn", "read:getStock", "read:getReceivables",
        "read:getSalesSummary",
    ),
    "inventory_manager": (
        "*:setItem", "*:setUnit", "*:UnitConversion", "*:setSite", "*:setReceipt", "*:setIssue",
        "*:setStockTransfer", "read:setPurchaseOrder", "write:setPurchaseOrder", "read:setSupplier",
        "read:getStock", "read:getStockBalance", "read:getGoodsReceivedNotInvoiced",
    ),
    "finance_manager": (
        "*:@vouchers", "read:@reports", "read:@masters", "write:setAccount", "write:setCurrency",
        "write:setTaxCode", "write:setExpense", "write:setCustomer", "write:setSupplier",
    ),
}
ROLES = tuple(BUILTIN_ROLES)

# A tenant role's compiled permissions are kept per distinct list; a tenant has a handful of roles, so the
# bound only matters against a database full of them.
TENANT_CACHE_SIZE = 1024


class InvalidPermission(ValueError):
    """A permission text that is not `action:pattern`, or whose pattern names no form."""


@dataclass(frozen=True)
class Permission:
    actions: tuple[str, ...]
    pattern: str

    def __str__(self) -> str:
        action = "*" if self.actions == ACTIONS else self.actions[0]
        return f"{action}:{self.pattern}"


def parse(text: str) -> Permission:
    """`read:getCustomer`, `write:set*`, `*:@vouchers`: checked for shape, not yet against the forms."""
    action, sep, pattern = text.strip().partition(":")
    action, pattern = action.strip().lower(), pattern.strip()
    if not sep or not pattern:
        raise InvalidPermission(f"permission {text!r}: write it action:pattern, e.g. write:setCustomer")
    if action != "*" and action not in ACTIONS:
        raise InvalidPermission(f"permission {text!r}: the action is one of {', '.join(ACTIONS)} or *")
    if pattern.startswith("@"):
        pattern = pattern.lower()
        if pattern not in GROUPS:
            raise InvalidPermission(f"permission {text!r}: the groups are {', '.join(GROUPS)}")
    elif not re.fullmatch(r"[A-Za-z0-9_*?]{1,128}", pattern):
        raise InvalidPermission(f"permission {text!r}: a pattern is a form name, with * or ? as wildcards, "
                               "or a group")
    return Permission(ACTIONS if action == "*" else (action,), pattern)


def group_of(form: Any) -> str:
    if not form.sync_names():
        return REPORTS  # read-only: GetData names only
    return VOUCHERS if form.endpoint == SYNC_VOUCHER else MASTERS


def _names(form: Any) -> tuple[str, ...]:
    return tuple(n.lower() for n in (*form.sync_names(), *form.get_names()))


class Policy:
    """The permissions of roles, compiled against one registry's forms into sets of (action, form name)."""

    def __init__(self, registry: Registry) -> None:
        self.forms: tuple[Any, ...] = tuple(registry.forms)
        self._everything = frozenset((a, f.name) for f in self.forms for a in ACTIONS)
        self._builtin = {role: self.compile(perms) for role, perms in BUILTIN_ROLES.items()}
        self._builtin[ADMIN] = self._everything
        self._tenant: dict[tuple[str, ...], frozenset[tuple[str, str]]] = {}

    def matches(self, permission: Permission) -> list[Any]:
        """The forms a permission's pattern names, in the registry's order."""
        pattern = permission.pattern
        if pattern.startswith("@"):
            return [f for f in self.forms if group_of(f) == pattern and not getattr(f, "admin_only", False)]
        lowered = pattern.lower()
        if "*" not in pattern and "?" not in pattern:
            return [f for f in self.forms if lowered in _names(f)]
        return [f for f in self.forms if not getattr(f, "admin_only", False)
                and any(fnmatch.fnmatchcase(n, lowered) for n in _names(f))]

    def compile(self, texts: Iterable[str]) -> frozenset[tuple[str, str]]:
        """What a list of permission texts grants. A text that no longer parses (written by hand into the
        table) grants nothing rather than failing every request of the role's users."""
        granted: set[tuple[str, str]] = set()
        for text in texts:
            try:
                permission = parse(text)
            except InvalidPermission:
                continue
            granted.update((a, f.name) for f in self.matches(permission) for a in permission.actions)
        return frozenset(granted)

    def check(self, texts: Sequence[str]) -> list[Permission]:
        """Permissions as `gateway role create` accepts them: each parses and names at least one form."""
        out = []
        for text in texts:
            permission = parse(text)
            if not self.matches(permission):
                raise InvalidPermission(f"permission {text!r}: {permission.pattern!r} names no form")
            out.append(permission)
        return out

    def grants(self, role: str, tenant_permissions: Sequence[str] | None) -> frozenset[tuple[str, str]] | None:
        """What a user's role grants: a built-in role's, else its tenant's role's; None for a role neither
        defines (a tenant role deleted under its users, say)."""
        builtin = self._builtin.get(role)
        if builtin is not None:
            return builtin  # a built-in name is never a tenant's: a tenant cannot widen or narrow one
        if tenant_permissions is None:
            return None
        key = tuple(tenant_permissions)
        granted = self._tenant.get(key)
        if granted is None:
            if len(self._tenant) >= TENANT_CACHE_SIZE:
                self._tenant.clear()
            granted = self._tenant[key] = self.compile(key)
        return granted

    def require(self, role: str, tenant_permissions: Sequence[str] | None, action: str, form: Any,
                shown: str) -> None:
        """Refuse (403) unless the role has `action` on `form`; `shown` is the form's name as the answer gives
        it (the set name for a write, the get name for a read)."""
        granted = self.grants(role, tenant_permissions)
        if granted is None:
            raise Forbidden(f"Role '{role}' is not defined; it grants nothing", permission=f"{action}:{shown}")
        if (action, form.name) not in granted:
            raise Forbidden(f"Role '{role}' lacks {action} on {shown}", permission=f"{action}:{shown}")


_policies: weakref.WeakKeyDictionary[Registry, Policy] = weakref.WeakKeyDictionary()


def policy_for(registry: Registry) -> Policy:
    """The registry's policy, compiled on first use and kept as long as the registry lives."""
    policy = _policies.get(registry)
    if policy is None:
        policy = _policies[registry] = Policy(registry)
    return policy


def is_builtin(role: str) -> bool:
    return role in BUILTIN_ROLES
