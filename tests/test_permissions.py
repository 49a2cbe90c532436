"""Roles and permissions per form: the built-in roles through the API, wildcards and aliases, a tenant's own
roles from the command line to the API, and the 403 that names what is missing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, add_user, assert_envelope, issue_token, login
from test_cli import Gateway, gateway  # noqa: F401  (the CLI fixture)

from gateway import permissions
from gateway.db import QUERIES
from gateway.forms import Registry

# --- data every role is tried against ------------------------------------------------------------------

def _line(ref: int) -> dict[str, Any]:
    return {"RefNumber": ref, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "Quantity": 2,
            "UnitPrice": 100_000, "Amount": 200_000, "Discount": 0, "TaxRate": 10, "TaxAmount": 20_000,
            "TotalAmount": 220_000}


def invoice(vid: str) -> dict[str, Any]:
    return {"VoucherId": vid, "VoucherDate": "2026-03-15", "VoucherNumber": vid[-12:], "CustomerCode": "KH1",
            "TotalQuantity": 2, "TotalNetAmount": 200_000, "TotalDiscountAmount": 0, "TotalTaxAmount": 20_000,
            "TotalAmount": 220_000, "detail": [_line(1)]}


class RoleApi(Api):
    async def voucher(self, form: str, data: Any) -> httpx.Response:
        return await self.post("SyncVoucher", {"form": form, "data": data})


@pytest.fixture
async def shop(client: httpx.AsyncClient, token: str) -> RoleApi:
    """Tenant acme with the masters a sale invoice needs, written by a writer (the `token` fixture)."""
    api = RoleApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main store"}]),
        ("setTaxCode", [{"TaxCode": "VAT10", "TaxName": "VAT 10%", "TaxRate": 10}]),
    ):
        assert (await api.sync(form, data)).status_code == 200, form
    return api


async def as_role(app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, role: str) -> RoleApi:
    await add_user(db, f"u-{role}", role=role)
    return RoleApi(client, await issue_token(app, db, f"u-{role}"))


# What each built-in role may do with a master form (setCustomer), a voucher form (setSaleInvoice) and a
# report (getTrialBalance): write, read, delete of the master; write, read, delete (cancel) of the voucher;
# read of the report.
MATRIX = {
    "admin": "WRD WRD R",
    "writer": "WRD WRD R",
    "reader": "-R- -R- R",
    "integrator": "WRD WRD -",
    "pos": "WR- --- -",
    "accountant": "--- WRD R",
    "reporter": "-R- -R- R",
    "hr_manager": "--- --- -",
    "sales_rep": "WR- -R- -",
    "inventory_manager": "--- --- -",
    "finance_manager": "WR- WRD R",
}


def test_the_matrix_covers_every_built_in_role() -> None:
    assert set(MATRIX) == set(permissions.BUILTIN_ROLES)


@pytest.mark.parametrize("role", sorted(MATRIX))
async def test_built_in_role_against_master_voucher_report_and_delete(
        role: str, app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, shop: RoleApi) -> None:
    # Arranged by the writer: a customer and an invoice for this role to delete and cancel.
    assert_envelope(await shop.sync("setCustomer", [{"CustomerCode": "GONE", "CustomerName": "to delete"}]))
    assert_envelope(await shop.voucher("setSaleInvoice", [invoice("INV-GONE")]))
    api = await as_role(app, client, db, role)
    master, voucher, report = MATRIX[role].split()

    attempts: list[tuple[bool, str, Callable[[], Awaitable[httpx.Response]]]] = [
        (master[0] == "W", "write on setCustomer",
         lambda: api.sync("setCustomer", [{"CustomerCode": "NEW", "CustomerName": "new"}])),
        (master[1] == "R", "read on getCustomer", lambda: api.get("getCustomer")),
        (master[2] == "D", "delete on setCustomer" if master[0] == "W" else "write on setCustomer",
         lambda: api.sync("setCustomer", [{"CustomerCode": "GONE", "action": "delete"}])),
        (voucher[0] == "W", "write on setSaleInvoice", lambda: api.voucher("setSaleInvoice", [invoice("INV-NEW")])),
        (voucher[1] == "R", "read on getSaleInvoice", lambda: api.get("getSaleInvoice")),
        (voucher[2] == "D", "delete on setSaleInvoice" if voucher[0] == "W" else "write on setSaleInvoice",
         lambda: api.voucher("setSaleInvoice", [{"VoucherId": "INV-GONE", "Status": "0"}])),
        (report == "R", "read on getTrialBalance", lambda: api.get("getTrialBalance", dateTo="2026-12-31")),
    ]
    for allowed, permission, send in attempts:
        resp = await send()
        body = assert_envelope(resp)
        if allowed:
            assert resp.status_code == 200, (role, permission, body)
        else:
            assert resp.status_code == 403, (role, permission, body)
            assert body["messages"] == f"Role '{role}' lacks {permission}", body
            assert body["permission"] == permission.replace(" on ", ":")

    # What was allowed happened, what was refused did not.
    live = {r["customer_code"] for r in await db.fetch("SELECT customer_code FROM customer WHERE NOT deleted")}
    assert ("NEW" in live) is (master[0] == "W")
    assert ("GONE" not in live) is (master[2] == "D")
    vouchers = {r["voucher_id"]: r["deleted"] for r in await db.fetch("SELECT voucher_id, deleted FROM voucher")}
    assert ("INV-NEW" in vouchers) is (voucher[0] == "W")
    assert vouchers["INV-GONE"] is (voucher[2] == "D")


async def test_the_403_names_the_role_the_permission_and_the_form(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, shop: RoleApi) -> None:
    pos = await as_role(app, client, db, "pos")
    resp = await pos.voucher("setSaleInvoice", [invoice("INV-1")])
    body = assert_envelope(resp)
    assert resp.status_code == 403 and body["code"] == 403 and body["success"] is False
    assert body["messages"] == "Role 'pos' lacks write on setSaleInvoice"
    assert await db.fetchval("SELECT count(*) FROM voucher") == 0
    # An alias is answered under the form's own name.
    body = assert_envelope(await pos.voucher("setSalesInvoice", [invoice("INV-1")]))
    assert body["messages"] == "Role 'pos' lacks write on setSaleInvoice"


async def test_a_write_refused_by_role_is_refused_before_its_records_are_validated(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    reader = await as_role(app, client, db, "reader")
    # Records that would fail validation: the role settles it first, as before roles per form.
    resp = await reader.sync("setCustomer", [{"CustomerName": "no code"}])
    assert resp.status_code == 403
    assert assert_envelope(resp)["messages"] == "Role 'reader' lacks write on setCustomer"


async def test_a_delete_needs_delete_as_well_as_write(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, shop: RoleApi) -> None:
    pos = await as_role(app, client, db, "pos")
    # Upserts and a delete in one request: the whole request is refused, nothing is written.
    resp = await pos.sync("setCustomer", [{"CustomerCode": "KH2", "CustomerName": "Beta"},
                                          {"CustomerCode": "KH1", "action": "DELETE"}])
    assert resp.status_code == 403
    assert assert_envelope(resp)["messages"] == "Role 'pos' lacks delete on setCustomer"
    assert await db.fetchval("SELECT count(*) FROM customer WHERE customer_code = 'KH2'") == 0
    assert await db.fetchval("SELECT deleted FROM customer WHERE customer_code = 'KH1'") is False
    # A delete that fails validation is no delete: the request is judged on what it would write.
    resp = await pos.sync("setCustomer", [{"CustomerCode": "KH2", "CustomerName": "Beta"},
                                          {"action": "delete"}], mode="partial")
    assert resp.status_code == 200, resp.text


# --- wildcards, groups and aliases ----------------------------------------------------------------------

def _names(policy: permissions.Policy, text: str) -> set[str]:
    return {f.name for f in policy.matches(permissions.parse(text))}


def test_wildcards_groups_and_aliases_name_forms(registry: Registry) -> None:
    policy = permissions.Policy(registry)
    shared = [f for f in registry.forms if not getattr(f, "admin_only", False)]  # what wildcards reach
    every = {f.name for f in shared}
    masters = {f.name for f in shared if permissions.group_of(f) == permissions.MASTERS}
    vouchers = {f.name for f in shared if permissions.group_of(f) == permissions.VOUCHERS}
    reports = {f.name for f in shared if permissions.group_of(f) == permissions.REPORTS}
    assert "setCustomer" in masters and "setSaleInvoice" in vouchers and "getTrialBalance" in reports
    assert masters | vouchers | reports == every and len(masters) + len(vouchers) + len(reports) == len(every)

    assert _names(policy, "read:*") == every
    assert _names(policy, "read:get*") == every  # every form is read through GetData
    assert _names(policy, "write:set*") == masters | vouchers  # reports have no set name
    assert "UnitConversion" in _names(policy, "write:set*")  # by its alias setUomConversion
    assert _names(policy, "*:setCash*") == {"setCashReceipt", "setCashDisbursement"}
    assert _names(policy, "read:getStock?alance") == {"getStockBalance"}
    assert _names(policy, "*:@masters") == masters
    assert _names(policy, "*:@VOUCHERS") == vouchers
    assert _names(policy, "read:@reports") == reports
    # A form's names, any of them and in any case, name the one form.
    for text in ("write:setSite", "write:setWarehouse", "write:getWarehouse", "write:SETWAREHOUSE"):
        assert _names(policy, text) == {"setSite"}, text
    assert _names(policy, "read:setSalesInvoice") == {"setSaleInvoice"}
    assert _names(policy, "read:setNothing") == set()

    granted = policy.compile(["write:setWarehouse", "read:get*", "*:@vouchers"])
    assert ("write", "setSite") in granted and ("delete", "setSite") not in granted
    assert ("read", "getTrialBalance") in granted and ("write", "setCustomer") not in granted
    assert {("read", "setJournalVoucher"), ("write", "setJournalVoucher"), ("delete", "setJournalVoucher")} <= granted


@pytest.mark.parametrize("text", ["write", "write:", "erase:setCustomer", "read:@everything", "read:set Customer",
                                  ":setCustomer"])
def test_malformed_permissions_are_refused(text: str) -> None:
    with pytest.raises(permissions.InvalidPermission):
        permissions.parse(text)


def test_an_admin_only_form_is_reached_by_its_name_and_the_admin_role_only(registry: Registry) -> None:
    class Audit:
        name = get_name = "getSecrets"
        endpoint = "GetData"
        admin_only = True

        def sync_names(self) -> tuple[str, ...]:
            return ()

        def get_names(self) -> tuple[str, ...]:
            return ("getSecrets",)

    with_audit = Registry()
    for form in [*registry.forms, Audit()]:
        with_audit.register(form)  # type: ignore[arg-type]
    policy = permissions.Policy(with_audit)
    assert "getSecrets" not in _names(policy, "read:*") | _names(policy, "read:get*") | _names(policy, "read:@reports")
    assert _names(policy, "read:getSecrets") == {"getSecrets"}
    assert ("read", "getSecrets") in policy.grants("admin", None)  # type: ignore[operator]
    for role in ("writer", "reader", "reporter", "accountant"):
        assert ("read", "getSecrets") not in policy.grants(role, None), role  # type: ignore[operator]


async def test_aliases_are_checked_as_their_form(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, shop: RoleApi, gateway: Gateway) -> None:  # noqa: F811
    code, out = await gateway("role", "create", "acme", "storekeeper", "--allow", "write:setWarehouse",
                              "--allow", "read:getWarehouse")
    assert code == 0, out
    api = await as_role(app, client, db, "storekeeper")
    for name in ("setSite", "setWarehouse"):
        resp = await api.sync(name, [{"SiteCode": f"K-{name}", "SiteName": "store"}])
        assert resp.status_code == 200, resp.text
    got = assert_envelope(await api.get("getSite"))
    assert sorted(r["SiteCode"] for r in got["data"]) == ["K-setSite", "K-setWarehouse", "K1"]
    resp = await api.sync("setCustomer", [{"CustomerCode": "X", "CustomerName": "x"}])
    assert assert_envelope(resp)["messages"] == "Role 'storekeeper' lacks write on setCustomer"
    resp = await api.sync("setWarehouse", [{"SiteCode": "K1", "action": "delete"}])
    assert assert_envelope(resp)["messages"] == "Role 'storekeeper' lacks delete on setSite"


# --- a tenant's own roles: the command line, then the API -------------------------------------------------

async def test_a_tenant_role_created_by_the_cli_is_used_through_the_api(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, shop: RoleApi, gateway: Gateway) -> None:  # noqa: F811
    code, out = await gateway("role", "create", "acme", "cashier", "--allow", "write:setCustomer",
                              "--allow", "read:get*", "--allow", "*:setSaleInvoice", "--allow", "READ:get*")
    assert code == 0, out
    assert out == "role 'cashier' created in tenant 'acme': write:setCustomer read:get* *:setSaleInvoice\n"
    assert await db.fetchval("SELECT permissions FROM tenant_role WHERE name = 'cashier'") == [
        "write:setCustomer", "read:get*", "*:setSaleInvoice"]

    await add_user(db, "tom", role="writer")
    code, out = await gateway("user", "role", "tom", "cashier")
    assert code == 0 and out == "role of 'tom' set to cashier; tokens issued before now are refused\n", out
    api = RoleApi(client, await login(client, "tom"))  # the real login: the token carries the tenant's role
    assert assert_envelope(await api.sync("setCustomer", [{"CustomerCode": "KH7", "CustomerName": "g"}]))["code"] == 200
    assert assert_envelope(await api.voucher("setSaleInvoice", [invoice("INV-7")]))["code"] == 200
    assert assert_envelope(await api.voucher("setSaleInvoice", [{"VoucherId": "INV-7", "Status": "0"}]))["code"] == 200
    assert assert_envelope(await api.get("getTrialBalance", dateTo="2026-12-31"))["code"] == 200
    assert assert_envelope(await api.get("getItem"))["records"] == 1
    resp = await api.sync("setCustomer", [{"CustomerCode": "KH7", "action": "delete"}])
    assert resp.status_code == 403
    assert assert_envelope(resp)["messages"] == "Role 'cashier' lacks delete on setCustomer"
    resp = await api.sync("setItem", [{"ItemCode": "IT9", "ItemName": "x", "ItemType": "HH"}])
    assert assert_envelope(resp)["messages"] == "Role 'cashier' lacks write on setItem"

    # Another tenant's role of the same name is its own: it grants what it says, in that tenant only.
    code, out = await gateway("tenant", "add", "south", "--chart", "none")
    assert code == 0, out
    code, out = await gateway("role", "create", "south", "cashier", "--allow", "read:getCustomer")
    assert code == 0, out
    code, out = await gateway("user", "add", "sam", "--tenant", "south", "--role", "cashier",
                              "--password", "correct horse battery")
    assert code == 0 and out == "user 'sam' (cashier) added to tenant 'south'\n", out
    sam = RoleApi(client, await login(client, "sam"))
    assert assert_envelope(await sam.get("getCustomer"))["records"] == 0  # south's customers: none
    resp = await sam.sync("setCustomer", [{"CustomerCode": "S1", "CustomerName": "s"}])
    assert assert_envelope(resp)["messages"] == "Role 'cashier' lacks write on setCustomer"

    code, out = await gateway("role", "list")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["TENANT", "ROLE", "USERS", "PERMISSIONS"]
    assert [ln.split()[:3] for ln in lines[1:] if not ln.startswith("(built-in)")] == [
        ["acme", "cashier", "1"], ["south", "cashier", "1"]]
    assert len([ln for ln in lines if ln.startswith("(built-in)")]) == len(permissions.BUILTIN_ROLES)
    assert any(ln.split()[:2] == ["(built-in)", "pos"] and ln.endswith("read:@masters write:@masters")
               for ln in lines)
    code, out = await gateway("role", "list", "--tenant", "south")
    assert code == 0 and [ln.split()[:2] for ln in out.splitlines() if ln.startswith("south")] == [["south", "cashier"]]
    assert "acme" not in out


async def test_the_cli_refuses_unknown_roles_and_bad_definitions(
        db: asyncpg.Connection, gateway: Gateway) -> None:  # noqa: F811
    await add_user(db, "ann", role="reader")
    await add_user(db, "bea", role="writer", tenant="other")
    code, out = await gateway("role", "create", "other", "clerk", "--allow", "read:*")
    assert code == 0, out

    code, out = await gateway("user", "role", "ann", "owner")
    assert code == 2 and "invalid choice: 'owner'" in out and "tenant 'acme'" in out, out
    code, out = await gateway("user", "role", "ann", "clerk")  # another tenant's role
    assert code == 2 and "invalid choice: 'clerk'" in out, out
    code, out = await gateway("user", "add", "cid", "--tenant", "acme", "--role", "clerk", "--password", "x" * 10)
    assert code == 2 and "invalid choice: 'clerk'" in out, out
    assert await db.fetchval("SELECT count(*) FROM app_user WHERE username = 'cid'") == 0
    assert await db.fetchval("SELECT role FROM app_user WHERE username = 'ann'") == "reader"
    code, out = await gateway("user", "role", "ann", "accountant")  # any built-in role
    assert code == 0, out
    assert await db.fetchval("SELECT role FROM app_user WHERE username = 'ann'") == "accountant"

    for args, problem in (
        (("acme", "pos", "--allow", "read:*"), "'pos' is a built-in role"),
        (("acme", "Bad Name", "--allow", "read:*"), "role name:"),
        (("acme", "clerk", "--allow", "read:setNothing"), "'setNothing' names no form"),
        (("acme", "clerk", "--allow", "erase:setCustomer"), "the action is one of read, write, delete or *"),
        (("acme", "clerk", "--allow", "read:@everything"), "the groups are @masters, @vouchers, @reports"),
        (("nowhere", "clerk", "--allow", "read:*"), "no tenant 'nowhere'"),
        (("other", "clerk", "--allow", "read:*"), "role 'clerk' exists already in tenant 'other'"),
    ):
        code, out = await gateway("role", "create", *args)
        assert code == 2 and problem in out, (args, out)
    code, out = await gateway("role", "create", "acme", "clerk")
    assert code == 2 and "--allow" in out
    assert await db.fetchval("SELECT count(*) FROM tenant_role") == 1


async def test_a_role_is_deleted_only_when_no_user_holds_it(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, gateway: Gateway) -> None:  # noqa: F811
    await add_user(db, "ann", role="reader")  # tenant acme
    code, out = await gateway("role", "create", "acme", "clerk", "--allow", "read:*")
    assert code == 0, out
    await add_user(db, "cal", role="clerk")
    code, out = await gateway("role", "delete", "acme", "clerk")
    assert code == 2 and "held by 'cal'" in out, out
    code, out = await gateway("role", "delete", "acme", "admin")
    assert code == 2 and "built-in" in out
    code, out = await gateway("role", "delete", "acme", "ghost")
    assert code == 2 and "no role 'ghost' in tenant 'acme'" in out

    # A role that vanished under its user (deleted by hand) grants nothing: the 403 says so.
    token = await issue_token(app, db, "cal")
    assert (await Api(client, token).get("getCustomer")).status_code == 200
    await db.execute("DELETE FROM tenant_role WHERE name = 'clerk'")
    resp = await Api(client, token).get("getCustomer")
    assert resp.status_code == 403
    assert assert_envelope(resp)["messages"] == "Role 'clerk' is not defined; it grants nothing"

    code, out = await gateway("role", "create", "acme", "clerk", "--allow", "read:*")
    assert code == 0, out
    code, out = await gateway("user", "role", "cal", "reader")
    assert code == 0, out
    code, out = await gateway("role", "delete", "acme", "clerk")
    assert code == 0 and out == "role 'clerk' deleted from tenant 'acme'\n", out
    assert await db.fetchval("SELECT count(*) FROM tenant_role") == 0


async def test_a_tenant_role_costs_no_round_trip_of_its_own(db: asyncpg.Connection) -> None:
    """The role's permissions come back with the user's row, from the one statement principal_for runs."""
    await add_user(db, "dee", role="writer")
    await db.execute("INSERT INTO tenant_role (tenant_id, name, permissions) SELECT tenant_id, 'clerk', "
                     "ARRAY['read:*'] FROM app_user WHERE username = 'dee'")
    row = await db.fetchrow(QUERIES["user_for_token"], "dee", "no-jti")
    assert row["role"] == "writer" and row["role_permissions"] is None
    await db.execute("UPDATE app_user SET role = 'clerk' WHERE username = 'dee'")
    row = await db.fetchrow(QUERIES["user_for_token"], "dee", "no-jti")
    assert row["role"] == "clerk" and row["role_permissions"] == ["read:*"]


async def test_the_table_refuses_role_names_of_another_shape(db: asyncpg.Connection) -> None:
    await add_user(db, "eve", role="hr_manager")  # any built-in name is stored as it is
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE app_user SET role = 'Has Spaces' WHERE username = 'eve'")
