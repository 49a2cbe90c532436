# ruff: noqa: F811  (vapi, the fixture imported from test_vouchers, is every test's argument)
"""References between vouchers and master records hold both ways, under concurrency too.

A voucher names live master records only (checked in its writing transaction), and a master record that live
vouchers name cannot be deleted. The two meet at the tenant's reference gate (gateway/references.py): the
concurrent tests below hold one side half-way with a row lock from another connection and show that the other
side, started meanwhile, waits and then sees what the first committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import asyncpg
import pytest
from conftest import plan_scans, sessions_waiting
from test_vouchers import VoucherApi, invoice, line, vapi  # noqa: F401  (vapi is a fixture)

from gateway import tenants
from gateway.forms import Registry


async def _customer(db: asyncpg.Connection, code: str) -> Any:
    return await db.fetchval("SELECT deleted FROM customer WHERE customer_code = $1", code)


async def test_a_customer_on_a_live_invoice_is_not_deleted(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1")])).json()["code"] == 200
    before = await db.fetchval("SELECT max(id) FROM change_log")
    body = (await vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"}])).json()
    assert body["code"] == 601 and body["records"] == 0
    assert body["errors"] == [{"index": 0, "key": "KH1", "path": "/CustomerCode",
                               "message": "CustomerCode 'KH1' is used by live vouchers; cancel or change them "
                                          "before deleting it"}]
    assert "used by live vouchers" in body["messages"]
    assert await _customer(db, "KH1") is False
    assert await db.fetchval("SELECT max(id) FROM change_log") == before  # nothing written, not even the feed

    # Once the invoice is cancelled, nothing names the customer any more.
    cancelled = await vapi.voucher("setSaleInvoice", [{"VoucherId": "INV-1", "Status": "0"}])
    assert cancelled.json()["result"]["deleted"] == 1
    body = (await vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"}])).json()
    assert body["code"] == 200 and body["result"]["deleted"] == 1
    assert await _customer(db, "KH1") is True


async def test_in_partial_mode_the_other_deletes_go_through(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    assert (await vapi.sync("setCustomer", [{"CustomerCode": "KH2", "CustomerName": "Beta"}])).status_code == 200
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1")])).json()["code"] == 200
    body = (await vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"},
                                            {"CustomerCode": "KH2", "action": "delete"}],
                            mode="partial", outcomes=True)).json()
    assert body["code"] == 200
    assert body["result"] == {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 1, "failed": 1,
                              "superseded": 0}
    assert [e["key"] for e in body["errors"]] == ["KH1"]
    assert [o["status"] for o in body["outcomes"]] == ["failed", "deleted"]
    assert (await _customer(db, "KH1"), await _customer(db, "KH2")) == (False, True)


@pytest.mark.parametrize(("form", "record", "path"), [
    ("setItem", {"ItemCode": "IT1"}, "/ItemCode"),
    ("setSite", {"SiteCode": "K1"}, "/SiteCode"),
    ("setTaxCode", {"TaxCode": "VAT10"}, "/TaxCode"),
    ("setCurrency", {"CurrencyCode": "VND"}, "/CurrencyCode"),
    ("setAccount", {"AccountCode": "131"}, "/AccountCode"),  # posted to by the invoice
])
async def test_every_catalog_an_invoice_names_is_guarded(vapi: VoucherApi, db: asyncpg.Connection, form: str,
                                                         record: dict[str, Any], path: str) -> None:
    doc = invoice("INV-1", line(1, TaxCode="VAT10"), line(2, "IT2", 1, 50_000))
    assert (await vapi.voucher("setSaleInvoice", [doc])).json()["code"] == 200
    body = (await vapi.sync(form, [{**record, "action": "delete"}])).json()
    assert body["code"] == 601, body
    assert body["errors"][0]["path"] == path


async def test_a_journal_lines_customer_and_account_are_guarded(vapi: VoucherApi) -> None:
    journal = {"VoucherId": "JV-1", "VoucherDate": "2026-03-15", "VoucherNumber": "JV1", "detail": [
        {"RefNumber": 1, "AccountCode": "131", "CustomerCode": "KH1", "Debit": 100, "Credit": 0},
        {"RefNumber": 2, "AccountCode": "511", "Debit": 0, "Credit": 100},
    ]}
    assert (await vapi.voucher("setJournalVoucher", [journal])).json()["code"] == 200
    assert (await vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"}])).json()["code"] == 601
    assert (await vapi.sync("setAccount", [{"AccountCode": "511", "action": "delete"}])).json()["code"] == 601


async def test_an_unused_record_is_deleted_as_before(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1")])).json()["code"] == 200
    body = (await vapi.sync("setJob", [{"JobCode": "J1", "action": "delete"}])).json()
    assert body["code"] == 200 and body["result"]["deleted"] == 1


# --- concurrency ---------------------------------------------------------------------------------------------

async def _invoice_held_after_its_checks(vapi: VoucherApi, db: asyncpg.Connection) -> tuple[Any, Any]:
    """An invoice's writing transaction held after its checks, under the tenant's gate: another session (db)
    inserts the same key first, uncommitted. Returns that session's transaction and the invoice's request."""
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    blocker = db.transaction()
    await blocker.start()
    await db.execute("INSERT INTO voucher (tenant_id, form, voucher_id, voucher_date, currency, exchange_rate,"
                     " document, change_seq, updated_at) VALUES ($1, 'setSaleInvoice', 'INV-1', '2026-03-15',"
                     " 'VND', 1, '{}', 0, now())", tenant)
    write = asyncio.create_task(vapi.voucher("setSaleInvoice", [invoice("INV-1")]))
    await sessions_waiting(db, 1, "transactionid")
    return blocker, write


async def test_a_delete_started_during_a_voucher_write_sees_the_voucher(vapi: VoucherApi,
                                                                        db: asyncpg.Connection) -> None:
    blocker, write = await _invoice_held_after_its_checks(vapi, db)
    delete = asyncio.create_task(vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"}]))
    await sessions_waiting(db, 2)  # the delete waits at the gate the invoice's transaction holds
    await blocker.rollback()
    assert (await write).json()["code"] == 200
    body = (await delete).json()
    assert body["code"] == 601 and "used by live vouchers" in body["errors"][0]["message"]
    assert await _customer(db, "KH1") is False
    assert await db.fetchval("SELECT count(*) FROM voucher_line WHERE voucher_id = 'INV-1'") == 2


async def test_a_voucher_started_during_a_delete_sees_the_record_gone(vapi: VoucherApi,
                                                                     db: asyncpg.Connection) -> None:
    # Hold the delete after its reference lookup: another session holds the customer's row.
    blocker = db.transaction()
    await blocker.start()
    await db.execute("SELECT 1 FROM customer WHERE customer_code = 'KH1' FOR UPDATE")
    delete = asyncio.create_task(vapi.sync("setCustomer", [{"CustomerCode": "KH1", "action": "delete"}]))
    await sessions_waiting(db, 1, "transactionid")
    write = asyncio.create_task(vapi.voucher("setSaleInvoice", [invoice("INV-1")]))
    await sessions_waiting(db, 1, "advisory")  # the invoice waits at the gate the delete holds
    await blocker.rollback()
    assert (await delete).json()["result"]["deleted"] == 1
    body = (await write).json()
    assert body["code"] == 601
    assert body["errors"][0]["path"] == "/CustomerCode" and "does not exist" in body["errors"][0]["message"]
    # No voucher points at the deleted customer.
    assert await db.fetchval("SELECT count(*) FROM voucher") == 0


async def test_a_period_locked_during_a_voucher_write_waits_for_it(vapi: VoucherApi, db: asyncpg.Connection,
                                                                   settings: Any) -> None:
    blocker, write = await _invoice_held_after_its_checks(vapi, db)
    other = await asyncpg.connect(settings.owner_url)  # locking a period is administration
    try:
        lock = asyncio.create_task(tenants.lock_period(other, "acme", dt.date(2026, 3, 31)))
        await sessions_waiting(db, 1, "advisory")
        assert not lock.done()  # the period is not locked under a write that was checked against the old one
        await blocker.rollback()
        assert (await write).json()["code"] == 200
        assert await lock is True
    finally:
        await other.close()
    # From now on the period is locked: the invoice just written cannot be replaced.
    body = (await vapi.voucher("setSaleInvoice", [invoice("INV-1", Description="changed")])).json()
    assert body["code"] == 601 and "locked" in body["errors"][0]["message"]


# --- plans ----------------------------------------------------------------------------------------------------

async def test_the_reference_lookup_is_keyed_on_tables_never_analysed(db: asyncpg.Connection,
                                                                      registry: Registry) -> None:
    """A delete's lookup reads each referring table through an index bounded by tenant and code, never a
    scan of the tenant's lines, whatever the planner guesses about tables that were never analysed."""
    await db.execute("INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, site_code)"
                     " SELECT 7, 'setSaleInvoice', 'V' || v, n, 'IT' || n, 'K1'"
                     " FROM generate_series(1, 2000) v, generate_series(1, 5) n")
    guarded = {form.table for form in registry.forms if getattr(form, "guard_sql", None)}  # type: ignore[attr-defined]
    assert guarded == {"customer", "supplier", "item", "site", "account", "tax_code", "currency", "job",
                       "department", "contract", "expense"}
    for form in registry.forms:
        sql = getattr(form, "guard_sql", None)
        if sql is None:
            continue
        plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", 7, ["K1", "IT1"]))
        for scan in plan_scans(plan):
            assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), (form.name, scan)
