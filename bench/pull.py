"""One GetData request that pulls a whole catalog, as a Fast client sends it (no `limit`), streamed.

    scripts/bench.sh pull [--rows 1000000] [--workers 2] ...      (or: .venv/bin/python -m bench.pull ...)

Starts a throw-away PostgreSQL and a `gateway serve` (as bench/run.py does), loads --rows customers through
SyncData (10,000 per request) into a table whose autovacuum is off, so that it stays never analysed, and
then times one `{"form": "getCustomer", "Id": "", "dateFrom": "", "dateTo": ""}` per state:

1. fresh: just loaded, never vacuumed nor analysed (first read of the rows; sets their hint bits);
2. fresh again: still never analysed, now in cache;
3. analysed: after ANALYZE of the table.

In each state it also reads the same rows with asyncpg and msgspec alone (same SQL, same cursor chunks,
same rendering; no HTTP), and records the plan PostgreSQL chose. The client checks every answer: rows
counted, keys strictly ascending, `records` equal to the rows. Figures: rows/s (rows / wall time from the
request sent to the last byte read), time to the first byte, MB/s, and the peak RSS of each gateway worker
during the pull (sampled every 50 ms; the one that served it is the one that used the CPU).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import msgspec
import psutil

from gateway.db import QUERIES

from . import data
from .harness import finish, new_report, serve, set_up
from .pg import BenchDatabase, bench_database
from .procs import BenchError, Sampler, Service
from .run import get_token, server_version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pull.json"
TENANT = "bench_pull"
USER = "bench_puller"
PER_REQUEST = 10_000
FAST_PULL = {"form": "getCustomer", "Id": "", "dateFrom": "", "dateTo": ""}
STATES = ("fresh", "fresh_again", "analysed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench.sh pull", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="customers loaded and pulled (default 1,000,000)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--load-clients", type=int, default=2, help="concurrent SyncData clients while loading")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated customers")
    p.add_argument("--request-timeout", type=float, default=1800, help="seconds per HTTP request")
    p.add_argument("--ready-timeout", type=float, default=90,
                   help="seconds for the gateway to answer /readyz")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    p.add_argument("--render-probe", action="store_true",
                   help="only time rendering --rows customers as dicts and as structs (no database, no HTTP)")
    args = p.parse_args(argv)
    if args.rows < 1 or args.workers < 1 or args.load_clients < 1:
        p.error("--rows, --workers and --load-clients must be at least 1")
    return args


# --- set-up ----------------------------------------------------------------------------------------


async def keep_unanalysed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Autovacuum would analyse the table at some point during the load; this run wants it never analysed.
        await conn.execute("ALTER TABLE customer SET (autovacuum_enabled = false)")
    finally:
        await conn.close()


def _body(start: int, count: int, width: int, rng: random.Random) -> bytes:
    records = [data.customer(f"PL{i:0{width}d}", rng) for i in range(start, start + count)]
    return msgspec.json.encode({"form": "setCustomer", "data": records})


async def load(url: str, token: str, rows: int, clients: int, seed: int, timeout: float) -> dict[str, Any]:
    """Customers PL0000000... through SyncData, PER_REQUEST a request, bodies generated as they are sent."""
    width = max(7, len(str(rows)))
    starts = iter(range(0, rows, PER_REQUEST))
    rng = random.Random(seed)
    done = 0
    headers = {"Authorization": token, "Content-Type": "application/json"}

    async def client_loop() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
            for start in starts:
                body = _body(start, min(PER_REQUEST, rows - start), width, rng)
                resp = await client.post("/api/SyncData", content=body, headers=headers)
                answer = resp.json()
                if resp.status_code != 200 or not answer.get("success"):
                    raise BenchError(f"loading failed: HTTP {resp.status_code} {resp.text[:300]}")
                done += answer["records"]
                if done % 100_000 < PER_REQUEST:
                    print(f"  loaded {done:,} customers", flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {"rows": done, "seconds": round(seconds, 1), "rows_per_s": round(done / seconds)}


# --- the pull, and what the client checks -----------------------------------------------------------

_KEY = re.compile(rb'\{"CustomerCode":"([^"\\]*)"')
_TAIL = re.compile(rb'\],"records":(\d+),"code":200\}$')
_HEAD = b'{"success":true,"messages":"SUCCESS","data":['


class Scan:
    """Counts the records of a streamed answer and checks their keys ascend, without holding the answer."""

    def __init__(self) -> None:
        self.carry = b""
        self.head = b""
        self.rows = 0
        self.out_of_order = 0
        self.last: bytes | None = None
        self.bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        if len(self.head) < len(_HEAD):
            self.head += chunk[: len(_HEAD) - len(self.head)]
        buf = self.carry + chunk
        cut = buf.rfind(b"},{")  # everything before it holds whole records only
        if cut < 0:
            self.carry = buf
            return
        self._keys(buf[: cut + 1])
        self.carry = buf[cut + 1:]

    def _keys(self, part: bytes) -> None:
        for key in _KEY.findall(part):
            if self.last is not None and key <= self.last:
                self.out_of_order += 1
            self.last = key
            self.rows += 1

    def finish(self) -> int | None:
        """`records` from the envelope's tail, or None if the answer did not end as it must."""
        self._keys(self.carry)
        match = _TAIL.search(self.carry[-200:])
        return int(match.group(1)) if match and self.head == _HEAD else None


async def pull(url: str, token: str, timeout: float, sampler: Sampler) -> dict[str, Any]:
    scan = Scan()
    headers = {"Authorization": token, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        sampler.start()
        started = time.perf_counter()
        async with client.stream("POST", "/api/GetData", content=msgspec.json.encode(FAST_PULL),
                                 headers=headers) as resp:
            headers_at = time.perf_counter() - started
            first_byte = None
            async for chunk in resp.aiter_raw():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                scan.feed(chunk)
        seconds = time.perf_counter() - started
        usage = sampler.stop()
    records = scan.finish()
    ok = resp.status_code == 200 and records == scan.rows and scan.out_of_order == 0
    return {
        "ok": ok, "status": resp.status_code, "rows": scan.rows, "records": records,
        "out_of_order": scan.out_of_order, "bytes": scan.bytes, "seconds": round(seconds, 3),
        "rows_per_s": round(scan.rows / seconds), "mb_per_s": round(scan.bytes / seconds / 2**20, 1),
        "headers_s": round(headers_at, 3), "first_byte_s": round(first_byte or 0, 3),
        "usage": usage, "served_by": served_by(usage),
    }


def served_by(usage: dict[str, Any]) -> dict[str, Any]:
    """The worker that used the most CPU during the pull, with its peak RSS; the others' beside it."""
    cpu = {k: v for k, v in usage.get("gateway_cpu_pct_by_process", {}).items() if k.startswith("worker:")}
    rss = {k: v for k, v in usage.get("gateway_rss_peak_mb", {}).items() if k.startswith("worker:")}
    if not rss:
        return {}
    busiest = max(rss, key=lambda k: cpu.get(k, 0.0))
    return {"worker": busiest, "cpu_pct": cpu.get(busiest), "peak_rss_mb": rss[busiest],
            "other_workers_peak_rss_mb": [v for k, v in rss.items() if k != busiest]}


def worker_rss_mb(gateway: Service) -> list[float]:
    try:
        children = psutil.Process(gateway.pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in children:
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(round(p.memory_info().rss / 2**20, 1))
    return sorted(out)


# --- the same rows without the gateway ---------------------------------------------------------------


async def _stream_query(conn: asyncpg.Connection) -> tuple[str, list[Any], list[str], int]:
    """The SQL the gateway streams for FAST_PULL (built by the gateway's own code), and its rows' fields."""
    from forms import FORM_MODULES
    from gateway import query
    from gateway.forms import MasterForm, build_registry

    form, _ = build_registry(FORM_MODULES).resolve("GetData", "getCustomer")
    assert isinstance(form, MasterForm)
    tenant_id = await conn.fetchval("SELECT id FROM tenant WHERE code = $1", TENANT)
    # No database work happens until a StreamedPull is sent: the pool is never touched here.
    streamed = await query.get(cast(asyncpg.Connection, None), form, tenant_id, dict(FAST_PULL),
                               pool=cast(asyncpg.Pool, object()))
    assert isinstance(streamed, query.StreamedPull)
    return streamed.sql, streamed.params, [c.field for c in form.columns], query.STREAM_CHUNK_ROWS


async def bare_read(url: str) -> dict[str, Any]:
    """asyncpg + msgspec alone: the gateway's SQL, plan settings and cursor chunks, the rows encoded as the
    gateway encodes them (structs), without HTTP."""
    encoder = msgspec.json.Encoder(decimal_format="number")
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    try:
        sql, params, names, chunk = await _stream_query(conn)
        row_type = msgspec.defstruct("Row", [f"f{i}" for i in range(len(names))],
                                     rename={f"f{i}": name for i, name in enumerate(names)}, gc=False)
        rows = nbytes = 0
        started = time.perf_counter()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(QUERIES["pull_stream_settings"])
            cursor = await conn.cursor(sql, *params)
            while batch := await cursor.fetch(chunk):
                nbytes += len(encoder.encode(list(itertools.starmap(row_type, batch))))
                rows += len(batch)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"rows": rows, "bytes": nbytes, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


async def table_state(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url, server_settings={"timezone": "UTC"})
    try:
        sql, params, _, _ = await _stream_query(conn)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            plain = [r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params)]
            await conn.execute(QUERIES["pull_stream_settings"])
            plan = [r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params)]
        stats = await conn.fetchrow(
            "SELECT c.reltuples::bigint AS reltuples, c.relpages, s.last_analyze, s.last_autoanalyze,"
            " s.last_vacuum, s.last_autovacuum, pg_total_relation_size(c.oid) AS bytes"
            " FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'customer'")
    finally:
        await conn.close()
    table = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in stats.items()}
    return {"plan": plan, "plan_without_stream_settings": plain, **table}


async def analyse(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE customer", timeout=600)
    finally:
        await conn.close()


# --- run --------------------------------------------------------------------------------------------


async def load_phase(args: argparse.Namespace, db: BenchDatabase, url: str, password: str,
                     report: dict[str, Any]) -> None:
    token = await get_token(url, password, args.request_timeout, USER)
    await keep_unanalysed(db.url)
    print(f"loading {args.rows:,} customers through SyncData, {PER_REQUEST:,} per request ...", flush=True)
    report["load"] = await load(url, token, args.rows, args.load_clients, args.seed, args.request_timeout)


async def pull_phase(args: argparse.Namespace, db: BenchDatabase, gateway: Service, url: str, password: str,
                     sampler: Sampler, report: dict[str, Any]) -> None:
    token = await get_token(url, password, args.request_timeout, USER)
    states: dict[str, Any] = report.setdefault("states", {})
    for state in STATES:
        if state == "analysed":
            print("ANALYZE customer ...", flush=True)
            await analyse(db.url)
        out: dict[str, Any] = {"table": await table_state(db.url),
                               "workers_rss_before_mb": worker_rss_mb(gateway)}
        print(f"{state}: one GetData without limit ...", end="", flush=True)
        out["gateway"] = await pull(url, token, args.request_timeout, sampler)
        g = out["gateway"]
        print(f" {g['rows']:,} rows, {g['rows_per_s']:,} rows/s, worker peak RSS"
              f" {g['served_by'].get('peak_rss_mb')} MB, {'ok' if g['ok'] else 'FAILED'}", flush=True)
        print(f"{state}: asyncpg + msgspec alone ...", end="", flush=True)
        out["bare"] = await bare_read(db.url)
        print(f" {out['bare']['rows_per_s']:,} rows/s", flush=True)
        states[state] = out


def checks(args: argparse.Namespace, report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for state, s in report.get("states", {}).items():
        g = s["gateway"]
        out.append((f"{state}: HTTP 200, {args.rows:,} rows, records = rows, keys ascending",
                    g["ok"] and g["rows"] == args.rows))
        out.append((f"{state}: asyncpg + msgspec read {args.rows:,} rows", s["bare"]["rows"] == args.rows))
    fresh = report.get("states", {}).get("fresh")
    if fresh:
        t = fresh["table"]
        never = t["last_analyze"] is None and t["last_autoanalyze"] is None
        out.append(("fresh: the table was never analysed", never))
    return [{"check": what, "ok": ok} for what, ok in out]


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "",
        (f"machine: nproc {m['nproc']} ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']},"
         f" PostgreSQL {m.get('postgresql', '?')} ({m.get('postgresql_kind', '?')}),"
         f" load average at start {m['loadavg_at_start']}"),
        (f"run: {report['date']}, commit {report.get('commit')}, {report['options']['rows']:,} customers,"
         f" {report['options']['workers']} workers"),
    ]
    if "load" in report:
        ld = report["load"]
        lines.append(f"load through SyncData: {ld['rows']:,} rows in {ld['seconds']} s"
                     f" ({ld['rows_per_s']:,} rows/s)")
    header = (f"{'state':12}{'rows/s':>9}{'MB/s':>7}{'1st byte s':>11}{'total s':>9}{'worker%':>9}{'pg%':>6}"
              f"{'client%':>9}{'box%':>6}{'RSS MB before':>15}{'peak':>7}{'bare rows/s':>13}  plan")
    lines += ["", header]
    for state, s in report.get("states", {}).items():
        g, u = s["gateway"], s["gateway"]["usage"]
        plan = " / ".join(line.strip().split("  (")[0] for line in s["table"]["plan"][:3])
        lines.append(
            f"{state:12}{g['rows_per_s']:>9,}{g['mb_per_s']:>7}{g['first_byte_s']:>11}{g['seconds']:>9}"
            f"{g['served_by'].get('cpu_pct', 0):>9.0f}{u.get('postgres_cpu_pct') or 0:>6.0f}"
            f"{u['client_cpu_pct']:>9.0f}"
            f"{u['machine_busy_pct'] or 0:>6.0f}{'/'.join(map(str, s['workers_rss_before_mb'])):>15}"
            f"{g['served_by'].get('peak_rss_mb', 0):>7}{s['bare']['rows_per_s']:>13,}  {plan}"
        )
    if report.get("checks"):
        lines += ["", "checks:"]
        lines += [f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}" for c in report["checks"]]
    if report.get("error"):
        lines += ["", f"ERROR: {report['error']}"]
    return "\n".join(lines)


def render_probe(rows: int, seed: int) -> None:
    """Build and encode rows as the stream does (structs) and as the paged answer does (dicts), interleaved."""
    from forms import FORM_MODULES
    from gateway.forms import MasterForm, build_registry
    from gateway.query import _row_type
    from gateway.responses import encode

    form, _ = build_registry(FORM_MODULES).resolve("GetData", "getCustomer")
    assert isinstance(form, MasterForm)
    names = [c.field for c in form.columns]
    rng = random.Random(seed)
    chunks = [[tuple(customer.get(n) for n in names) for customer in
               (data.customer(f"PL{i:07d}", rng) for i in range(start, min(start + 2_000, rows)))]
              for start in range(0, rows, 2_000)]
    row_type = _row_type(tuple(names))
    ways = {
        "dict": lambda chunk: encode([dict(zip(names, r)) for r in chunk]),
        "struct": lambda chunk: encode(list(itertools.starmap(row_type, chunk))),
    }
    assert all(ways["dict"](c) == ways["struct"](c) for c in chunks[:3]), "the two must give the same JSON"
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(5):
        for name, way in ways.items():
            started = time.perf_counter()
            for chunk in chunks:
                way(chunk)
            best[name] = min(best[name], time.perf_counter() - started)
    for name, seconds in best.items():
        print(f"{name:7} {seconds / rows * 1e6:.2f} us per customer to build and encode"
              f" (best of 5 over {rows:,} customers, chunks of 2,000)")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_probe:
        render_probe(args.rows, args.seed)
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    report = new_report("scripts/bench.sh pull", args, argv)
    rc = 0
    workdir = Path(tempfile.mkdtemp(prefix="gw-pull-"))
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        print("starting PostgreSQL for the benchmark ...", flush=True)
        db = stack.enter_context(bench_database(workdir))
        m = report["machine"]
        m["postgresql_kind"] = db.kind
        m["postgresql"] = asyncio.run(server_version(db.url))
        env, password = set_up(db, workdir, TENANT, USER)
        loader, url = serve(args.workers, args.ready_timeout, env, workdir, "gateway-load")
        try:
            asyncio.run(load_phase(args, db, url, password, report))
        finally:
            loader.stop()
        # Pulls are served by workers that never loaded anything: their memory is the pull's own.
        gateway, url = serve(args.workers, args.ready_timeout, env, workdir)
        stack.callback(gateway.stop)
        roots = {"gateway": gateway.pid}
        if db.server_pid:
            roots["postgres"] = db.server_pid
        sampler = stack.enter_context(Sampler(roots))
        asyncio.run(pull_phase(args, db, gateway, url, password, sampler, report))
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        rc = 130
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        rc = 1
        raise
    finally:
        report["checks"] = checks(args, report)
        if not all(c["ok"] for c in report["checks"]) and rc == 0:
            rc = 1
        finish(stack, report, args.out, render)
    return rc


if __name__ == "__main__":
    sys.exit(main())
