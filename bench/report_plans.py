"""Reports of a small tenant beside a big one, on never-analysed tables and after ANALYZE.

One tenant holds 200,000 ledger entries, 20,000 vouchers with 100,000 lines, 50,000 stock moves and 2,000
allocations; a small one holds 9 vouchers and their rows; a new one 3,000 vouchers (12,000 ledger entries,
9,000 lines and stock moves, 300 allocations), as after its first import. Each report of gateway/reports.py
runs for the small and the new tenant first on tables never analysed, then after ANALYZE; the script prints
the time of each (best of 3) and the shared buffers its statements touched (EXPLAIN (ANALYZE, BUFFERS)).

    .venv/bin/python -m bench.report_plans            # an embedded PostgreSQL, removed at the end
    DATABASE_URL=postgresql://... .venv/bin/python -m bench.report_plans
    .venv/bin/python -m bench.report_plans --without-voucher-by-key   # as before migration 0007
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.pg import bench_database
from gateway import reports
from gateway.db import init_connection, migrate

BIG, SMALL, NEW = 1, 2, 3
TABLES = ("voucher", "voucher_line", "gl_entry", "stock_move", "voucher_allocation")

FILL = [
    "INSERT INTO tenant (id, code, name) VALUES (1, 'big', 'big'), (2, 'small', 'small'), (3, 'new', 'new')",
    # The big tenant.
    ("INSERT INTO voucher (tenant_id, form, voucher_id, voucher_number, voucher_date, partner_code, currency,"
    " exchange_rate, total_amount, document, change_seq, updated_at)"
    " SELECT 1, CASE WHEN v % 10 = 0 THEN 'setSaleReturn' WHEN v % 10 = 1 THEN 'setCashReceipt'"
    " ELSE 'setSaleInvoice' END, 'V' || v, v::text, date '2026-01-01' + v % 365, 'KH' || v % 2000, 'VND', 1,"
    " 1000, '{}', v, now() FROM generate_series(1, 20000) v"),
    ("INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount, total_amount)"
    " SELECT 1, CASE WHEN v % 10 = 0 THEN 'setSaleReturn' WHEN v % 10 = 1 THEN 'setCashReceipt'"
    " ELSE 'setSaleInvoice' END, 'V' || v, n, 'IT' || (v * 5 + n) % 500, 1, 200, 200"
    " FROM generate_series(1, 20000) v, generate_series(1, 5) n"),
    ("INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit, credit,"
    " partner_code) SELECT 1, 'setSaleInvoice', 'V' || v, n, date '2026-01-01' + v % 365,"
    " (ARRAY['131', '511', '3331', '632', '156', '1111', '331', '642', '641', '711'])[n], n % 2 * 100,"
    " (n + 1) % 2 * 100, 'KH' || v % 2000 FROM generate_series(1, 20000) v, generate_series(1, 10) n"),
    ("INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code, qty_in,"
    " qty_out, value_in) SELECT 1, 'setSaleInvoice', 'V' || v, n, date '2026-01-01' + v % 365,"
    " 'IT' || (v * 5 + n) % 500, 'K' || n % 3, n % 2 * 10, (n + 1) % 2 * 5, CASE WHEN n % 2 = 1 THEN 1000 END"
    " FROM generate_series(1, 10000) v, generate_series(1, 5) n"),
    ("INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
    " SELECT 1, 'setCashReceipt', 'V' || (v * 10 + 1), 1, 'setSaleInvoice', 'V' || (v * 10 + 2), 500"
    " FROM generate_series(0, 1999) v"),
    # The small tenant: 6 sale invoices, 2 receipts, 1 return, their ledger entries and stock moves.
    ("INSERT INTO voucher (tenant_id, form, voucher_id, voucher_number, voucher_date, partner_code, currency,"
    " exchange_rate, total_amount, document, change_seq, updated_at)"
    " SELECT 2, CASE WHEN v <= 6 THEN 'setSaleInvoice' WHEN v <= 8 THEN 'setCashReceipt' ELSE 'setSaleReturn'"
    " END, 'S' || v, v::text, date '2026-03-01' + v, 'KH' || v % 3, 'VND', 1, 1000, '{}', v, now()"
    " FROM generate_series(1, 9) v"),
    ("INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount, total_amount)"
    " SELECT 2, form, voucher_id, n, 'IT' || n, 1, 200, 200 FROM voucher, generate_series(1, 3) n"
    " WHERE tenant_id = 2 AND form <> 'setCashReceipt'"),
    ("INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit, credit,"
    " partner_code) SELECT 2, form, voucher_id, n, voucher_date, (ARRAY['131', '511', '3331', '632'])[n],"
    " n % 2 * 100, (n + 1) % 2 * 100, partner_code FROM voucher, generate_series(1, 4) n WHERE tenant_id = 2"),
    ("INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code, qty_in,"
    " qty_out, value_in) SELECT 2, form, voucher_id, n, voucher_date, 'IT' || n, 'K1', 10, 2, 1000"
    " FROM voucher, generate_series(1, 3) n WHERE tenant_id = 2"),
    ("INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
    " VALUES (2, 'setCashReceipt', 'S7', 1, 'setSaleInvoice', 'S1', 500),"
    " (2, 'setCashReceipt', 'S8', 1, 'setSaleInvoice', 'S2', 1000)"),
    # The new tenant.
    ("INSERT INTO voucher (tenant_id, form, voucher_id, voucher_number, voucher_date, partner_code, currency,"
    " exchange_rate, total_amount, document, change_seq, updated_at)"
    " SELECT 3, CASE WHEN v % 10 = 0 THEN 'setSaleReturn' WHEN v % 10 = 1 THEN 'setCashReceipt'"
    " ELSE 'setSaleInvoice' END, 'M' || v, v::text, date '2026-03-01' + v % 200, 'KH' || v % 50, 'VND', 1,"
    " 1000, '{}', v, now() FROM generate_series(1, 3000) v"),
    ("INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount, total_amount)"
    " SELECT 3, form, voucher_id, n, 'IT' || n, 1, 200, 200 FROM voucher, generate_series(1, 3) n"
    " WHERE tenant_id = 3"),
    ("INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit, credit,"
    " partner_code) SELECT 3, form, voucher_id, n, voucher_date, (ARRAY['131', '511', '3331', '632'])[n],"
    " n % 2 * 100, (n + 1) % 2 * 100, partner_code FROM voucher, generate_series(1, 4) n WHERE tenant_id = 3"),
    ("INSERT INTO stock_move (tenant_id, form, voucher_id, move_no, move_date, item_code, site_code, qty_in,"
    " qty_out, value_in) SELECT 3, form, voucher_id, n, voucher_date, 'IT' || n, 'K1', 10, 2, 1000"
    " FROM voucher, generate_series(1, 3) n WHERE tenant_id = 3"),
    ("INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
    " SELECT 3, 'setCashReceipt', 'M' || (v * 10 + 1), 1, 'setSaleInvoice', 'M' || (v * 10 + 2), 500"
    " FROM generate_series(0, 299) v"),
]

# (name, form, request body) for the small tenant.
REPORTS: list[tuple[str, str, dict[str, Any]]] = [
    ("trial balance", "getTrialBalance", {"dateFrom": "2026-03-05", "dateTo": "2026-12-31"}),
    ("account ledger", "getAccountLedger", {"Id": "131", "dateFrom": "2026-03-05", "dateTo": "2026-12-31"}),
    ("stock", "getStock", {"dateFrom": "2026-03-05", "dateTo": "2026-12-31"}),
    ("stock, one item", "getStock", {"Id": "IT1", "dateTo": "2026-12-31"}),
    ("balance", "getBalance", {"dateFrom": "2026-03-05", "dateTo": "2026-12-31"}),
    ("balance, one customer", "getBalance", {"Id": "KH1", "dateTo": "2026-12-31"}),
    ("receivables", "getReceivables", {"dateTo": "2026-12-31", "include_paid": True}),
    ("payables", "getPayables", {"dateTo": "2026-12-31"}),
    ("sales summary", "getSalesSummary", {"dateFrom": "2026-01-01", "dateTo": "2026-12-31"}),
    ("sales by item", "getSalesSummary", {"dateFrom": "2026-01-01", "dateTo": "2026-12-31",
                                          "group_by": "item"}),
]


class Recorder:
    """A connection that records the statements a report sends, and their arguments."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.sent.append((sql, args))
        return await self.conn.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        self.sent.append((sql, args))
        return await self.conn.fetchval(sql, *args)


async def buffers(conn: asyncpg.Connection, sql: str, args: tuple) -> int:
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


async def measure(conn: asyncpg.Connection, tenant: int) -> dict[str, tuple[float, int, Any]]:
    forms = {f.get_name: f for f in reports.FORMS}
    out = {}
    for name, form, body in REPORTS:
        best, answer = float("inf"), None
        for _ in range(3):
            rec = Recorder(conn)
            t0 = time.perf_counter()
            answer = await reports.run(rec, forms[form], tenant, dict(body))  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - t0)
        blocks = 0
        for sql, args in rec.sent:
            blocks += await buffers(conn, sql, args)
        out[name] = (best * 1000, blocks, answer)
    return out


async def main(url: str, without_voucher_by_key: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        await migrate(conn)
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for sql in FILL:
            await conn.execute(sql)
        if without_voucher_by_key:
            await conn.execute("DROP INDEX voucher_by_key")
        fresh = {t: await measure(conn, t) for t in (SMALL, NEW)}
        await conn.execute("ANALYZE")
        warm = {t: await measure(conn, t) for t in (SMALL, NEW)}
    finally:
        await conn.close()
    for tenant, label in ((SMALL, "small tenant"), (NEW, "new tenant")):
        print(f"{'report (' + label + ')':24} {'fresh ms':>9} {'buffers':>8} {'analysed ms':>12} {'buffers':>8}")
        for name, _, _ in REPORTS:
            (f_ms, f_buf, f_ans), (w_ms, w_buf, w_ans) = fresh[tenant][name], warm[tenant][name]
            same = "" if f_ans == w_ans else "  ANSWERS DIFFER"
            print(f"{name:24} {f_ms:9.1f} {f_buf:8d} {w_ms:12.1f} {w_buf:8d}{same}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp, bench_database(Path(tmp)) as db:
        asyncio.run(main(db.url, "--without-voucher-by-key" in sys.argv[1:]))
