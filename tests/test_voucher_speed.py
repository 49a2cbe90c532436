"""The voucher write path: numbers taken outside the writing transaction, and plans that start from the
batch's own keys whatever the table statistics say."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
from conftest import write_plan_scans
from test_vouchers import VoucherApi, invoice, vapi  # noqa: F401  (vapi: the fixture)

from gateway import posting, vouchers
from gateway.db import QUERIES, init_connection
from gateway.forms import SYNC_VOUCHER, Registry

WRITE_TABLES = ("voucher", "voucher_line", "gl_entry", "stock_move", "voucher_allocation", "item",
                "unit_conversion")


def unnumbered(vid: str) -> dict[str, Any]:
    doc = invoice(vid)
    doc.pop("VoucherNumber")
    return doc


async def test_concurrent_requests_that_need_numbers_get_distinct_numbers(vapi: VoucherApi,  # noqa: F811
                                                                         db: asyncpg.Connection) -> None:
    batches = [[unnumbered(f"C{b}-{i:02d}") for i in range(20)] for b in range(4)]
    answers = await asyncio.gather(*(vapi.voucher("setSaleInvoice", batch) for batch in batches))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    numbers = [r["voucher_number"] for r in await db.fetch(
        "SELECT voucher_number FROM voucher WHERE form = 'setSaleInvoice'")]
    assert len(numbers) == 80 and len(set(numbers)) == 80
    assert sorted(numbers) == [f"{n:06d}" for n in range(1, 81)]


async def test_a_request_waiting_on_a_voucher_does_not_hold_up_numbering(vapi: VoucherApi,  # noqa: F811
                                                                        db: asyncpg.Connection) -> None:
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    blocker = db.transaction()
    await blocker.start()
    # An uncommitted row with the first request's key: its write waits for this transaction to end.
    await db.execute(
        "INSERT INTO voucher (tenant_id, form, voucher_id, voucher_date, currency, exchange_rate, document,"
        " change_seq, updated_at) VALUES ($1, 'setSaleInvoice', 'WAIT-1', '2026-03-15', 'VND', 1, '{}', 0, now())",
        tenant_id)
    waiting = asyncio.create_task(vapi.voucher("setSaleInvoice", [unnumbered("WAIT-1")]))
    try:
        await asyncio.sleep(0.5)
        assert not waiting.done()
        # Before, the first request held the numbering counter's row until it committed.
        other = await asyncio.wait_for(vapi.voucher("setSaleInvoice", [unnumbered("FREE-1")]), 20)
        assert other.status_code == 200, other.text
    finally:
        await blocker.rollback()
    first = await asyncio.wait_for(waiting, 20)
    assert first.status_code == 200, first.text
    numbers = dict(await db.fetch("SELECT voucher_id, voucher_number FROM voucher WHERE form = 'setSaleInvoice'"))
    assert numbers == {"WAIT-1": "000001", "FREE-1": "000002"}


async def test_a_dry_run_takes_no_number(vapi: VoucherApi, db: asyncpg.Connection) -> None:  # noqa: F811
    assert (await vapi.voucher("setSaleInvoice", [unnumbered("DRY-1")], dry_run=True)).status_code == 200
    assert (await vapi.voucher("setSaleInvoice", [unnumbered("REAL-1")])).status_code == 200
    assert await db.fetchval("SELECT voucher_number FROM voucher WHERE voucher_id = 'REAL-1'") == "000001"


async def test_write_plans_start_from_the_batch_keys_on_never_analysed_tables(
        vapi: VoucherApi, db: asyncpg.Connection, registry: Registry) -> None:  # noqa: F811
    await init_connection(db)  # documents go to jsonb as the gateway sends them
    for table in WRITE_TABLES:
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    # Other tenants' rows: the tables are big, and none of them has been analysed.
    await db.execute(
        "INSERT INTO voucher (tenant_id, form, voucher_id, voucher_date, currency, exchange_rate, document,"
        " change_seq, updated_at) SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, '2026-01-01', 'VND', 1, '{}',"
        " 0, now() FROM generate_series(1, 20000) v")
    await db.execute(
        "INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, n, 'IT' || n, 1, 1"
        " FROM generate_series(1, 20000) v, generate_series(1, 10) n")
    await db.execute(
        "INSERT INTO item (tenant_id, item_code, item_name, item_type, stock_tracked, deleted, change_seq, updated_at)"
        " SELECT 1000 + i % 5, 'IT' || i, 'x', 'HH', 1, false, 0, now() FROM generate_series(1, 50000) i")
    await db.execute(
        "INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, n, '2026-01-01', '131', 1"
        " FROM generate_series(1, 20000) v, generate_series(1, 10) n")
    await db.execute(
        "INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code, qty_out)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, n, '2026-01-01', 'IT' || n, 'K1', 1"
        " FROM generate_series(1, 20000) v, generate_series(1, 10) n")
    await db.execute(
        "INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, 1, 'setSaleInvoice', 'O' || v, 1"
        " FROM generate_series(1, 20000) v")
    analysed = await db.fetchval(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY($1::text[])"
        " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)", list(WRITE_TABLES))
    assert analysed == 0

    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    form, _ = registry.resolve(SYNC_VOUCHER, "setSaleInvoice")
    batch = vouchers.prepare(form, [invoice(f"P{i:03d}") for i in range(100)])
    await vouchers.check(db, form, tenant_id, batch)
    ids = sorted(batch.upserts)
    docs = [batch.upserts[k][1] for k in ids]
    arrays = vouchers._batch_arrays(form, batch, ids, docs, set(ids))

    statements = {
        "lines and postings": (vouchers.write_statement(form), arrays),
        "header upsert": (QUERIES["voucher_upsert"], vouchers._header_arrays(form, ids, docs)),
        "unpost": (QUERIES["voucher_unpost_with_lines"], [ids]),
        "repost": (form.posting.statement(posting.STORED_SOURCES), [ids]),
        "stored numbers": (QUERIES["voucher_stored_numbers"], [ids]),
        "locked period": (QUERIES["voucher_locked"], [ids, dt.date(2026, 1, 31)]),
        "vouchers to cancel": (QUERIES["voucher_to_cancel"], [ids]),
        "cancel": (QUERIES["voucher_cancel_rows"], [[(0, 1), (0, 2)]]),
        "lock in key order": (QUERIES["voucher_lock"], [ids]),
        "allocated invoices": (QUERIES["voucher_live_invoices"], [ids]),
    }
    for name, (sql, args) in statements.items():
        scans = await write_plan_scans(db, sql, tenant_id, form.name, *args)
        for scan in scans:
            where = f"{name}: {scan['Node Type']} on {scan['Relation Name']}"
            keyed = scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
            assert scan["Node Type"] != "Seq Scan" or scan["Relation Name"] not in WRITE_TABLES, where
            if scan["Node Type"] == "Tid Scan":
                continue  # rows found key by key below, then fetched by ctid
            if scan["Relation Name"] in ("voucher", "voucher_line"):
                # By key, with the batch's voucher ids; never every row of (tenant, form).
                assert "voucher_id" in keyed, where
            if scan["Relation Name"] == "item":
                assert "item_code" in keyed, where
        if name == "lines and postings":
            # Lines and postings come from the batch's arrays: the stored lines are not read at all.
            assert not [s for s in scans if s["Relation Name"] == "voucher_line"]


class _Stale:
    """A connection whose lookup of the vouchers to cancel answers with rows found before an update."""

    def __init__(self, conn: asyncpg.Connection, stale: list[dict[str, Any]]) -> None:
        self.conn, self.stale = conn, stale

    async def fetch(self, sql: str, *args: Any) -> Any:
        if sql == QUERIES["voucher_to_cancel"]:
            return self.stale
        return await self.conn.fetch(sql, *args)


async def test_a_voucher_updated_after_it_was_found_is_still_cancelled(
        vapi: VoucherApi, db: asyncpg.Connection, registry: Registry) -> None:  # noqa: F811
    assert (await vapi.voucher("setSaleInvoice", [invoice("X-1"), invoice("X-2")])).status_code == 200
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    form, _ = registry.resolve(SYNC_VOUCHER, "setSaleInvoice")
    stale = [dict(r) for r in await db.fetch(QUERIES["voucher_to_cancel"], tenant_id, form.name, ["X-1", "X-2"])]
    await db.execute("UPDATE voucher SET updated_at = now() WHERE voucher_id = 'X-1'")  # a new row version
    async with db.transaction():
        gone = await vouchers._cancel(_Stale(db, stale), form, tenant_id, ["X-1", "X-2"])  # type: ignore[arg-type]
    assert gone == ["X-1", "X-2"]
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE voucher_id IN ('X-1', 'X-2') AND deleted") == 2
