"""Sale invoices through SyncVoucher, with posting, on never-analysed tables and after ANALYZE.

    scripts/bench.sh vouchers [--requests 20] [--vouchers 100] [--lines 10] ...
    (or: .venv/bin/python -m bench.vouchers ...)

Starts a throw-away PostgreSQL and a 2-worker `gateway serve` (as bench/pull.py does), creates the tenant
with `gateway tenant add` (so VND and the chart exist), syncs the masters (customers, a supplier,
stock-tracked items, a site), buys every item in (purchase invoices dated before the sales, so no sale takes
stock that is not there), turns autovacuum off on the voucher and posting tables (so that they stay never
analysed), and then sends setSaleInvoice requests of --vouchers vouchers x --lines lines (valid totals, new
VoucherIds, half of them without a VoucherNumber so that the server numbers them) with 1 and with 4
keep-alive clients, first on the never-analysed tables, then after ANALYZE. Figures: vouchers/s (vouchers
acknowledged / wall time), p50 and p99 request latency.

Dates (--dates): `append` (the default) dates each request a day after the one before, as tills and
accounting systems send the day's sales, so each sale is costed after the last movement of its items;
`random` dates every voucher on a random day of the year, so most requests are back-dated and re-cost the
later movements of their items. With --unposted the same lines also go as setSalesOrder (no ledger, stock or
cost of sales) to the same gateway: the difference is what posting costs.

Beside it, the bare reference, a direct asyncpg pipeline in this process (no HTTP, one Python process for
all its clients): decode the same bodies with msgspec, validate them with jsonschema-rs against the form's
JSON Schema, COPY headers and lines into temporary staging tables and upsert them into two plain tables (no
reference checks, no totals, no numbering, no posting). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import msgspec

from .harness import closing_lines, finish, new_report, serve, set_up
from .load import percentile
from .pg import bench_database
from .procs import BenchError, Sampler
from .run import get_token, server_version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "vouchers.json"
TENANT = "bench_vouchers"
USER = "bench_voucher_writer"
FORM = "setSaleInvoice"
CUSTOMERS = 1_000
ITEMS = 500
SITE = "K1"
SUPPLIER = "NCC1"
STOCK_IN = 10_000_000  # of every item, before the first sale
FIRST_DAY = dt.date(2026, 1, 1)
CLIENTS = (1, 4)
STATES = ("fresh", "analysed")
# Autovacuum would analyse these at some point during the run; the fresh state wants them never analysed.
WRITE_TABLES = ("voucher", "voucher_line", "voucher_counter", "gl_entry", "stock_move", "voucher_allocation",
                "change_log")
BARE_DDL = """
CREATE TABLE IF NOT EXISTS bare_voucher (voucher_id text PRIMARY KEY, voucher_date date NOT NULL,
    customer_code text, total_amount numeric, document jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS bare_voucher_line (voucher_id text NOT NULL, line_no integer NOT NULL,
    item_code text, site_code text, quantity numeric, unit_price numeric, amount numeric, tax_amount numeric,
    PRIMARY KEY (voucher_id, line_no));
ALTER TABLE bare_voucher SET (autovacuum_enabled = false);
ALTER TABLE bare_voucher_line SET (autovacuum_enabled = false);
"""
BARE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS bare_voucher_stage (LIKE bare_voucher) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS bare_line_stage (LIKE bare_voucher_line) ON COMMIT DELETE ROWS;
"""
BARE_UPSERT = [
    ("INSERT INTO bare_voucher SELECT * FROM bare_voucher_stage ORDER BY voucher_id ON CONFLICT (voucher_id)"
     " DO UPDATE SET voucher_date = EXCLUDED.voucher_date, customer_code = EXCLUDED.customer_code,"
     " total_amount = EXCLUDED.total_amount, document = EXCLUDED.document"),
    "DELETE FROM bare_voucher_line l USING bare_voucher_stage s WHERE l.voucher_id = s.voucher_id",
    "INSERT INTO bare_voucher_line SELECT * FROM bare_line_stage ORDER BY voucher_id, line_no",
]
_encode = msgspec.json.Encoder(decimal_format="number").encode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench.sh vouchers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20, help="requests per measured phase (default 20)")
    p.add_argument("--vouchers", type=int, default=100, help="vouchers per request (default 100)")
    p.add_argument("--lines", type=int, default=10, help="lines per voucher (default 10)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--ready-timeout", type=float, default=90)
    p.add_argument("--no-bare", action="store_true", help="skip the bare reference")
    p.add_argument("--no-rls", action="store_true",
                   help="serve as the superuser, which bypasses row-level security (default: as gateway_app)")
    p.add_argument("--dates", choices=("append", "random"), default="append",
                   help="sale dates: each request a day later (default), or random days of the year")
    p.add_argument("--unposted", action="store_true",
                   help="also send the same lines as setSalesOrder, which posts nothing (the posting cost)")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if min(args.requests, args.vouchers, args.lines, args.workers) < 1:
        p.error("--requests, --vouchers, --lines and --workers must be at least 1")
    return args


# --- data ---------------------------------------------------------------------------------------------


def masters() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("setCustomer", [{"CustomerCode": f"KH{i:05d}", "CustomerName": f"Customer {i}"} for i in range(CUSTOMERS)]),
        ("setItem", [{"ItemCode": f"IT{i:05d}", "ItemName": f"Item {i}", "ItemType": "HH", "StockTracked": 1}
                     for i in range(ITEMS)]),
        ("setSite", [{"SiteCode": SITE, "SiteName": "Main"}]),
        ("setSupplier", [{"SupplierCode": SUPPLIER, "SupplierName": "Bench supplier"}]),
    ]


def stock_in() -> list[dict[str, Any]]:
    """Purchase invoices bringing every item in before the first sale: more than all the sales take."""
    docs = []
    for first in range(0, ITEMS, 100):
        detail = [{"RefNumber": n + 1, "ItemCode": f"IT{i:05d}", "Uom": "PCS", "SiteCode": SITE,
                   "Quantity": STOCK_IN, "UnitPrice": 1000, "Amount": STOCK_IN * 1000}
                  for n, i in enumerate(range(first, min(first + 100, ITEMS)))]
        net = sum(x["Amount"] for x in detail)
        docs.append({"VoucherId": f"PI{first:05d}", "VoucherDate": "2025-12-31", "SupplierCode": SUPPLIER,
                     "TotalQuantity": STOCK_IN * len(detail), "TotalNetAmount": net, "TotalTaxAmount": 0,
                     "TotalAmount": net, "detail": detail})
    return docs


def invoice(vid: str, rng: random.Random, lines: int, numbered: bool, date: str | None) -> dict[str, Any]:
    detail: list[dict[str, Any]] = []
    for ref in range(1, lines + 1):
        qty = rng.randint(1, 20)
        price = rng.randint(1, 500) * 1000
        amount = qty * price
        tax = amount // 10
        detail.append({"RefNumber": ref, "ItemCode": f"IT{rng.randrange(ITEMS):05d}", "Uom": "PCS",
                       "SiteCode": SITE, "Quantity": qty, "UnitPrice": price, "Amount": amount, "Discount": 0,
                       "TaxRate": 10, "TaxAmount": tax, "TotalAmount": amount + tax})
    net = sum(x["Amount"] for x in detail)
    tax = sum(x["TaxAmount"] for x in detail)
    doc = {"VoucherId": vid, "VoucherDate": date or f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
           "CustomerCode": f"KH{rng.randrange(CUSTOMERS):05d}", "Description": "bench sale",
           "TotalQuantity": sum(x["Quantity"] for x in detail), "TotalNetAmount": net, "TotalDiscountAmount": 0,
           "TotalTaxAmount": tax, "TotalAmount": net + tax, "detail": detail}
    if numbered:
        doc["VoucherNumber"] = vid[-12:]
    return doc


def as_order(doc: dict[str, Any]) -> dict[str, Any]:
    """The sale's lines as a sales order, which posts nothing."""
    detail = [{k: x[k] for k in ("RefNumber", "ItemCode", "Uom", "SiteCode", "Quantity", "UnitPrice", "Amount")}
              for x in doc["detail"]]
    order = {k: doc[k] for k in ("VoucherId", "VoucherDate", "CustomerCode", "Description", "TotalQuantity")}
    return {**order, "TotalAmount": doc["TotalNetAmount"], "detail": detail,
            **({"VoucherNumber": doc["VoucherNumber"]} if "VoucherNumber" in doc else {})}


def bodies(prefix: str, args: argparse.Namespace, rng: random.Random, days: list[int],
           form: str = FORM) -> list[bytes]:
    """Pre-encoded request bodies, new VoucherIds in each; every other voucher is left for the server to number.
    With dates appended, each request is dated the day after the last request of the run (`days` counts)."""
    out = []
    for r in range(args.requests):
        date = None
        if args.dates == "append":
            days[0] += 1
            date = (FIRST_DAY + dt.timedelta(days=days[0])).isoformat()
        docs = [invoice(f"{prefix}{r:04d}{v:04d}", rng, args.lines, numbered=v % 2 == 0, date=date)
                for v in range(args.vouchers)]
        if form != FORM:
            docs = [as_order(d) for d in docs]
        out.append(_encode({"form": form, "data": docs}))
    return out


# --- the gateway ----------------------------------------------------------------------------------------


async def sync_masters(url: str, token: str, timeout: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        for endpoint, form, records in [*(("SyncData", f, r) for f, r in masters()),
                                        ("SyncVoucher", "setPurchaseInvoice", stock_in())]:
            resp = await client.post(f"/api/{endpoint}", headers={"Authorization": token},
                                     content=_encode({"form": form, "data": records}))
            if resp.status_code != 200 or not resp.json().get("success"):
                raise BenchError(f"{form}: HTTP {resp.status_code} {resp.text[:300]}")


async def push_gateway(url: str, token: str, payloads: list[bytes], clients: int, timeout: float,
                       expected: int, endpoint: str = "SyncVoucher") -> dict[str, Any]:
    queue = iter(payloads)
    latencies: list[float] = []
    errors: list[str] = []
    done = 0
    headers = {"Authorization": token, "Content-Type": "application/json"}
    conns = [httpx.AsyncClient(base_url=url, timeout=timeout) for _ in range(clients)]
    for c in conns:  # the keep-alive connection is opened before the clock starts
        await c.get("/readyz")

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal done
        for body in queue:
            t0 = time.perf_counter()
            resp = await client.post(f"/api/{endpoint}", content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            answer = resp.json()
            if resp.status_code != 200 or not answer.get("success") or answer.get("records") != expected:
                errors.append(f"HTTP {resp.status_code} {resp.text[:300]}")
            else:
                done += answer["records"]

    started = time.perf_counter()
    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        seconds = time.perf_counter() - started
        for c in conns:
            await c.aclose()
    return _figures(done, seconds, latencies, errors)


def _figures(done: int, seconds: float, latencies: list[float], errors: list[str]) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {"vouchers": done, "seconds": round(seconds, 3), "vouchers_per_s": round(done / seconds),
            "p50_ms": round(percentile(ms, 50) or 0, 1), "p99_ms": round(percentile(ms, 99) or 0, 1),
            "max_ms": round(max(ms, default=0), 1), "errors": errors[:5], "error_count": len(errors)}


# --- the bare reference ------------------------------------------------------------------------------------


def _bare_rows(docs: list[dict[str, Any]]) -> tuple[list[tuple], list[tuple]]:
    heads, lines = [], []
    for d in docs:
        heads.append((d["VoucherId"], dt.date.fromisoformat(d["VoucherDate"]), d["CustomerCode"],
                      d["TotalAmount"], _encode(d).decode()))
        for x in d["detail"]:
            lines.append((d["VoucherId"], x["RefNumber"], x["ItemCode"], x["SiteCode"], x["Quantity"],
                          x["UnitPrice"], x["Amount"], x["TaxAmount"]))
    return heads, lines


async def push_bare(url: str, payloads: list[bytes], clients: int) -> dict[str, Any]:
    schema = json.loads((ROOT / "schemas" / f"{FORM}.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    decode = msgspec.json.Decoder(float_hook=Decimal).decode
    queue = iter(payloads)
    latencies: list[float] = []
    errors: list[str] = []
    done = 0
    conns = [await asyncpg.connect(url) for _ in range(clients)]
    for conn in conns:
        await conn.execute(BARE_STAGE)  # once per connection, outside the measured transactions

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal done
        for body in queue:
            t0 = time.perf_counter()
            docs = decode(body)["data"]
            if not validator.is_valid(docs[0]) or not all(validator.is_valid(d) for d in docs):
                errors.append("invalid")
                continue
            heads, lines = _bare_rows(docs)
            async with conn.transaction():
                await conn.copy_records_to_table("bare_voucher_stage", records=heads)
                await conn.copy_records_to_table("bare_line_stage", records=lines)
                for statement in BARE_UPSERT:
                    await conn.execute(statement)
            latencies.append(time.perf_counter() - t0)
            done += len(docs)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        seconds = time.perf_counter() - started
        for conn in conns:
            await conn.close()
    return _figures(done, seconds, latencies, errors)


# --- run --------------------------------------------------------------------------------------------------


async def _sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for s in statements:
            await conn.execute(s, timeout=600)
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, db_url: str, url: str, password: str, sampler: Sampler,
                  report: dict[str, Any]) -> None:
    token = await get_token(url, password, args.request_timeout, USER)
    await _sql(db_url, *(f"ALTER TABLE {t} SET (autovacuum_enabled = false)" for t in WRITE_TABLES), BARE_DDL)
    print("syncing masters ...", flush=True)
    await sync_masters(url, token, args.request_timeout)
    rng = random.Random(args.seed)
    report["phases"] = []
    days = [0]
    targets = ("gateway",) + (("unposted",) if args.unposted else ()) + (() if args.no_bare else ("bare",))
    for state in STATES:
        if state == "analysed":
            print("ANALYZE ...", flush=True)
            await _sql(db_url, "ANALYZE")
        for clients in CLIENTS:
            for target in targets:
                form = "setSalesOrder" if target == "unposted" else FORM
                payloads = bodies(f"{state[0].upper()}{clients}{target[0].upper()}", args, rng, days, form)
                print(f"{state} {target} {clients} client(s): {args.requests} x {args.vouchers} vouchers ...",
                      flush=True)
                sampler.start()
                if target in ("gateway", "unposted"):
                    figures = await push_gateway(url, token, payloads, clients, args.request_timeout,
                                                 args.vouchers)
                else:
                    figures = await push_bare(db_url, payloads, clients)
                figures["usage"] = sampler.stop()
                report["phases"].append({"state": state, "target": target, "clients": clients, **figures})


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['command']}  ({report['date']}, commit {report.get('commit')})",
             (f"{'state':10}{'target':9}{'clients':>8}{'vouchers/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'server%':>9}{'pg%':>6}{'box%':>6}{'errors':>8}")]
    for p in report.get("phases", []):
        u = p["usage"]
        lines.append(f"{p['state']:10}{p['target']:9}{p['clients']:>8}{p['vouchers_per_s']:>12,}{p['p50_ms']:>9}"
                     f"{p['p99_ms']:>9}{p['max_ms']:>9}{u.get('gateway_cpu_pct', 0):>9.0f}"
                     f"{u.get('postgres_cpu_pct') or 0:>6.0f}{u.get('machine_busy_pct') or 0:>6.0f}"
                     f"{p['error_count']:>8}")
        lines += [f"    {e}" for e in p["errors"]]
    return "\n".join([*lines, *closing_lines(report)])


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    report = new_report("scripts/bench.sh vouchers", args, argv)
    rc = 0
    workdir = Path(tempfile.mkdtemp(prefix="gw-vouchers-"))
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        print("starting PostgreSQL for the benchmark ...", flush=True)
        db = stack.enter_context(bench_database(workdir))
        report["machine"]["postgresql"] = asyncio.run(server_version(db.url))
        env, password = set_up(db, workdir, TENANT, USER, rls=not args.no_rls)
        gateway, url = serve(args.workers, args.ready_timeout, env, workdir)
        stack.callback(gateway.stop)
        roots = {"gateway": gateway.pid}
        if db.server_pid:
            roots["postgres"] = db.server_pid
        sampler = stack.enter_context(Sampler(roots))
        asyncio.run(measure(args, db.url, url, password, sampler, report))
        if any(p["error_count"] for p in report["phases"]):
            rc = 1
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        rc = 130
    finally:
        finish(stack, report, args.out, render)
    return rc


if __name__ == "__main__":
    sys.exit(main())
