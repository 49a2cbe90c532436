"""The reports' plans for a small tenant beside a big one, on tables never analysed.

A new tenant's reports run before autovacuum has analysed anything; the planner then guesses every size and
every selectivity. Whatever it guesses, a report must read the big tables only through an index bounded by
the tenant, and a table it reads once per row of another (a nested loop, a subquery per row) only by that
row's key: never every row of the tenant's form for each posting, which is what made an account ledger of
3,000 postings take 0.5 s instead of 20 ms until ANALYZE (see bench/report_plans.py).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from conftest import plan_scans

from gateway import reports

BIG_TABLES = ("voucher", "voucher_line", "gl_entry", "stock_move", "voucher_allocation")
BIG, SMALL = 1000, 1001
# What a table read once per row of another must be looked up by, besides the tenant (an allocation by its
# invoice or by the voucher that settles it).
ROW_KEYS = {"voucher": ("voucher_id",), "voucher_line": ("voucher_id",),
            "voucher_allocation": ("invoice_id", "voucher_id"), "gl_entry": ("voucher_id",),
            "stock_move": ("voucher_id",)}

_FORM = ("CASE v % 10 WHEN 0 THEN 'setSaleReturn' WHEN 1 THEN 'setCashReceipt'"
         " WHEN 2 THEN 'setPurchaseInvoice' ELSE 'setSaleInvoice' END")


def _fill(tenant: int, prefix: str, vouchers: int, days: int) -> list[str]:
    """Vouchers of several forms, 5 lines, 10 ledger entries and 5 stock moves each; receipts allocated."""
    return [
        ("INSERT INTO voucher (tenant_id, form, voucher_id, voucher_number, voucher_date, partner_code, currency,"
        f" exchange_rate, total_amount, document, change_seq, updated_at) SELECT {tenant}, {_FORM},"
        f" '{prefix}' || v, v::text, date '2026-01-01' + v % {days}, 'KH' || v % 40, 'VND', 1, 1000, '{{}}', v,"
        f" now() FROM generate_series(1, {vouchers}) v"),
        ("INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount,"
        f" total_amount) SELECT {tenant}, form, voucher_id, n, 'IT' || n, 1, 200, 200"
        f" FROM voucher, generate_series(1, 5) n WHERE tenant_id = {tenant}"),
        ("INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit, credit,"
        f" partner_code) SELECT {tenant}, form, voucher_id, n, voucher_date,"
        " (ARRAY['131', '511', '3331', '632', '156', '1111', '331', '642', '641', '711'])[n],"
        f" n % 2 * 100, (n + 1) % 2 * 100, partner_code FROM voucher, generate_series(1, 10) n"
        f" WHERE tenant_id = {tenant}"),
        ("INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code, qty_in,"
        f" qty_out, value_in) SELECT {tenant}, form, voucher_id, n, voucher_date, 'IT' || n, 'K' || n % 2,"
        f" 10, 2, 1000 FROM voucher, generate_series(1, 5) n WHERE tenant_id = {tenant}"),
        ("INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
        f" SELECT {tenant}, 'setCashReceipt', '{prefix}' || (v * 10 + 1), 1, 'setSaleInvoice',"
        f" '{prefix}' || (v * 10 + 3), 500 FROM generate_series(0, {vouchers // 10 - 1}) v"),
    ]


REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("getTrialBalance", {"dateFrom": "2026-03-01", "dateTo": "2026-12-31"}),
    ("getAccountLedger", {"Id": "131", "dateFrom": "2026-01-15", "dateTo": "2026-12-31"}),
    ("getStock", {"dateFrom": "2026-03-01", "dateTo": "2026-12-31"}),
    ("getStock", {"Id": "IT1", "dateTo": "2026-12-31"}),
    ("getStockBalance", {}),
    ("getBalance", {"dateFrom": "2026-03-01", "dateTo": "2026-12-31"}),
    ("getBalance", {"Id": "KH1", "dateTo": "2026-12-31"}),
    ("getReceivables", {"dateTo": "2026-12-31", "include_paid": True}),
    ("getPayables", {"dateTo": "2026-12-31"}),
    ("getSalesSummary", {"dateFrom": "2026-01-01", "dateTo": "2026-12-31"}),
    ("getSalesSummary", {"dateFrom": "2026-01-01", "dateTo": "2026-12-31", "group_by": "item"}),
    ("getSalesSummary", {"dateFrom": "2026-01-01", "dateTo": "2026-12-31", "group_by": "customer"}),
]


class Recorder:
    """A connection that records the statements a report sends."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.sent.append((sql, args))
        return await self.conn.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.sent.append((sql, args))
        return await self.conn.fetchval(sql, *args)


def _condition(scan: dict[str, Any]) -> str:
    """What bounds the scan; for a bitmap heap scan, what its bitmap index scans were given."""
    cond = scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
    return cond + "".join(_condition(child) for child in scan.get("Plans", ())
                          if child["Node Type"].startswith("Bitmap"))


@pytest.fixture
async def tables(db: asyncpg.Connection) -> asyncpg.Connection:
    for table in BIG_TABLES:
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    for sql in _fill(BIG, "B", 10000, 365) + _fill(SMALL, "S", 100, 60):
        await db.execute(sql)
    return db


async def test_a_small_tenants_reports_read_the_big_tables_by_tenant_and_key(tables: asyncpg.Connection) -> None:
    db = tables
    big_pages = await db.fetchval(
        "SELECT sum(pg_relation_size(c.oid) / current_setting('block_size')::int) FROM pg_class c"
        " WHERE c.relname = ANY($1::text[])", list(BIG_TABLES))
    forms = {f.get_name: f for f in reports.FORMS}
    for name, body in REPORTS:
        rec = Recorder(db)
        out = await reports.run(rec, forms[name], SMALL, dict(body))  # type: ignore[arg-type]
        assert out["data"], (name, body)  # the report has something to read
        read = 0
        for sql, args in rec.sent:
            raw = await db.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            read += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
            for scan in plan_scans(plan):
                table = scan["Relation Name"]
                if table not in BIG_TABLES:
                    continue  # masters and settings: small, and read by key where it matters
                where = f"{name} {body}: {scan['Node Type']} on {table} ({scan.get('Actual Loops')} loops)"
                assert scan["Node Type"] != "Seq Scan", where
                cond = _condition(scan)
                assert "tenant_id" in cond, where
                if scan.get("Actual Loops", 0) > 1:
                    # Read again for every row of another table: only by that row's key.
                    assert any(key in cond for key in ROW_KEYS[table]), f"{where}: {cond}"
        # The small tenant's hundred vouchers and their rows, each looked up a few times: far under the big
        # tenant's size.
        assert read < big_pages // 3, (name, body, read, big_pages)
    analysed = await db.fetchval(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY($1::text[])"
        " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)", list(BIG_TABLES))
    assert analysed == 0
    assert not await db.fetchval(
        "SELECT count(*) FROM pg_statistic WHERE starelid = ANY(SELECT oid FROM pg_class"
        " WHERE relname = ANY($1::text[]))", list(BIG_TABLES))
