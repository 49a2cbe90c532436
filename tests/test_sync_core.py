# ruff: noqa: F811  (vapi, the fixture imported from test_vouchers, is every test's argument)
"""The write core (gateway/sync.py) serves masters and vouchers alike: modes, outcomes, dry run, refusals."""

from __future__ import annotations

import asyncpg
from test_vouchers import VoucherApi, invoice, vapi  # noqa: F401  (vapi is a fixture)


async def test_vouchers_report_per_record_outcomes(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1"), invoice("INV-2")])).json()["code"] == 200
    body = (await vapi.voucher("setSaleInvoice", [
        invoice("INV-1"),                                   # unchanged
        invoice("INV-2", Description="changed"),            # updated
        invoice("INV-3", Description="first"),              # superseded by the next
        invoice("INV-3"),                                   # inserted
        invoice("INV-4", CustomerCode="NOBODY"),            # failed by a check against the database
        {"VoucherId": "INV-1", "Status": "0"},              # supersedes the first: cancelled
        {"VoucherDate": "2026-03-15"},                      # failed validation, no key
    ], mode="partial", outcomes=True)).json()
    assert body["code"] == 200, body
    assert body["result"] == {"inserted": 1, "updated": 1, "unchanged": 0, "deleted": 1, "failed": 2,
                              "superseded": 2}
    assert body["outcomes"] == [
        {"index": 0, "key": "INV-1", "status": "superseded"},
        {"index": 1, "key": "INV-2", "status": "updated"},
        {"index": 2, "key": "INV-3", "status": "superseded"},
        {"index": 3, "key": "INV-3", "status": "inserted"},
        {"index": 4, "key": "INV-4", "status": "failed"},
        {"index": 5, "key": "INV-1", "status": "deleted"},
        {"index": 6, "key": None, "status": "failed"},
    ]
    live = await db.fetch("SELECT voucher_id FROM voucher WHERE NOT deleted ORDER BY voucher_id")
    assert [r["voucher_id"] for r in live] == ["INV-2", "INV-3"]


async def test_a_voucher_refused_by_a_check_in_atomic_mode_lists_outcomes_and_writes_nothing(
        vapi: VoucherApi, db: asyncpg.Connection) -> None:
    body = (await vapi.voucher("setSaleInvoice", [invoice("INV-1"), invoice("INV-2", CustomerCode="NOBODY")],
                               outcomes=True)).json()
    assert body["code"] == 601 and body["records"] == 0
    assert [o["status"] for o in body["outcomes"]] == ["not_written", "failed"]
    assert body["messages"].startswith("1 of 2 vouchers are invalid; nothing was written")
    assert await db.fetchval("SELECT count(*) FROM voucher") == 0


async def test_a_dry_run_of_vouchers_counts_and_writes_nothing(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM change_log")
    body = (await vapi.voucher("setSaleInvoice", [invoice("INV-1", VoucherNumber=None)], dry_run=True,
                               outcomes=True)).json()
    assert body["code"] == 200 and body["dry_run"] is True
    assert body["outcomes"] == [{"index": 0, "key": "INV-1", "status": "inserted"}]
    assert await db.fetchval("SELECT count(*) FROM voucher") == 0
    assert await db.fetchval("SELECT count(*) FROM change_log") == before
    # The counter was rolled back with the dry run: the first real voucher gets number 1.
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1", VoucherNumber=None)])).json()["code"] == 200
    assert await db.fetchval("SELECT voucher_number FROM voucher") == "000001"
