"""Load benchmark: the gateway against the bare reference pipeline, on a PostgreSQL of its own.

    scripts/bench.sh [--requests 200] [--clients 8] [--workers 2] [--paging-rows 100000] ...

Starts a throw-away PostgreSQL (embedded, or a gw_bench_* database on DATABASE_URL), the gateway and the
bare app (bench/bare_app.py) as uvicorn servers, pushes the same pre-encoded setCustomer bodies to both
(inserts, then the same keys with one field changed), pages through getCustomer, prints a table and writes
bench/out/latest.json. Everything it starts is stopped again, also on Ctrl-C or an error.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import psutil

from . import bare_app, data
from .load import new_client, page_all, push
from .pg import BenchDatabase, bench_database
from .procs import BenchError, Sampler, Service, run_cli, stop_all, wait_ready

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "latest.json"
TENANT = "bench"
USER = "bench_writer"
PAGING_TENANT = "bench_paging"
PAGING_USER = "bench_pager"
PHASES = ("insert", "update")
TARGETS = ("gateway", "bare")
RATIO_TARGET = 0.8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--requests",
        type=int,
        default=200,
        help="requests of 1,000 customers per phase, target and round (default 200: 200,000 rows)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of both phases on both targets, alternating which goes first; medians are reported",
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--no-rls", action="store_true",
                   help="serve as the superuser, which bypasses row-level security (default: as gateway_app)")
    p.add_argument(
        "--workers", type=int, default=2, help="uvicorn workers of the gateway and of the bare app"
    )
    p.add_argument(
        "--paging-rows",
        type=int,
        default=100_000,
        help="customers present before paging; seeded through the gateway when the insert phase "
        "left fewer (default 100,000)",
    )
    p.add_argument(
        "--bare-staging",
        choices=bare_app.STRATEGIES,
        default=bare_app.DEFAULT_STAGING,
        help=f"staging strategy of the bare app (default {bare_app.DEFAULT_STAGING})",
    )
    p.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse each client's connection; uvicorn then tends to give all of them to one worker",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the generated customers")
    p.add_argument("--request-timeout", type=float, default=120, help="seconds per HTTP request")
    p.add_argument("--phase-timeout", type=float, default=1800, help="seconds per measured phase")
    p.add_argument("--ready-timeout", type=float, default=90, help="seconds for a server to answer /readyz")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.clients < 1 or args.workers < 1 or args.paging_rows < 0:
        p.error("--requests, --clients and --workers must be at least 1, --paging-rows at least 0")
    return args


# --- machine --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "hostname": platform.node(),
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str | None:
    try:  # read-only: never a command that refreshes or writes the index
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


# --- database helpers -----------------------------------------------------------------------------


async def _with_conn(url: str, work: Any) -> Any:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        return await work(conn)
    finally:
        await conn.close(timeout=10)


async def server_version(url: str) -> str:
    return await _with_conn(url, lambda c: c.fetchval("SHOW server_version", timeout=30))


async def create_bare_table(url: str) -> None:
    await _with_conn(url, lambda c: c.execute(bare_app.table_ddl(), timeout=60))


async def settle(url: str, table: str) -> None:
    """Same starting line for each measured phase: dirty pages flushed, the table vacuumed and analysed."""

    async def work(conn: asyncpg.Connection) -> None:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT", timeout=300)
        await conn.execute(f"VACUUM (ANALYZE) {table}", timeout=300)

    await _with_conn(url, work)


async def customer_count(url: str) -> int:
    return await _with_conn(
        url,
        lambda c: c.fetchval(
            "SELECT count(*) FROM customer c JOIN tenant t ON t.id = c.tenant_id WHERE t.code = $1 AND NOT c.deleted",
            TENANT,
            timeout=60,
        ),
    )


# --- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_env(db: BenchDatabase, workdir: Path, rls: bool = True) -> dict[str, str]:
    """The gateway's environment: migrated and administered as the database's owner (the bench server's
    superuser), serving as the application role held to row-level security, as deployed; with `rls` False,
    serving as the superuser, which bypasses it (the figure without the second wall)."""
    from gateway.db import APP_ROLE, with_user

    env = dict(os.environ)
    env["GATEWAY_OWNER_URL"] = db.url
    env["DATABASE_URL"] = with_user(db.url, APP_ROLE) if rls else db.url
    env["GATEWAY_DATA_DIR"] = str(workdir / "gateway")  # the JWT secret goes here, never into var/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_servers(
    args: argparse.Namespace, db: BenchDatabase, workdir: Path, stack: contextlib.ExitStack
) -> tuple[Service, Service, str, str, str]:
    """Gateway and bare app started and ready; returns them, their URLs and the bench user's password."""
    py = sys.executable
    env = gateway_env(db, workdir, rls=not args.no_rls)
    password = secrets.token_urlsafe(16)
    print("migrating, creating tenant and user through the gateway CLI ...", flush=True)
    run_cli([py, "-m", "gateway.cli", "migrate"], env, ROOT)
    run_cli([py, "-m", "gateway.cli", "tenant", "add", TENANT], env, ROOT)
    run_cli(
        [
            py,
            "-m",
            "gateway.cli",
            "user",
            "add",
            USER,
            "--tenant",
            TENANT,
            "--role",
            "writer",
            f"--password={password}",  # one argument: a password may start with "-"
        ],
        env,
        ROOT,
    )
    # Paging is measured on a tenant of its own holding exactly --paging-rows customers.
    run_cli([py, "-m", "gateway.cli", "tenant", "add", PAGING_TENANT], env, ROOT)
    run_cli([py, "-m", "gateway.cli", "user", "add", PAGING_USER, "--tenant", PAGING_TENANT, "--role", "writer",
             f"--password={password}"], env, ROOT)
    asyncio.run(create_bare_table(db.url))

    gw_port, bare_port = free_port(), free_port()
    gateway = Service(
        "gateway",
        [
            py,
            "-m",
            "gateway.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(gw_port),
            "--workers",
            str(args.workers),
            "--no-demo",
        ],
        env,
        workdir / "gateway.log",
        ROOT,
    )
    stack.callback(gateway.stop)
    bare_env = dict(env, BENCH_BARE_DATABASE_URL=db.url, BENCH_BARE_STAGING=args.bare_staging)
    bare = Service(
        "bare",
        [
            py,
            "-c",
            # Served by the gateway's own worker runner (one SO_REUSEPORT socket per worker), so both sides
            # get the same process model and the same spread of connections.
            ("import sys; from gateway.server import run; "
            "run('bench.bare_app:create_app', host='127.0.0.1', port=int(sys.argv[1]), workers=int(sys.argv[2]),"
            " access_log=False, log_level='warning')"),
            str(bare_port),
            str(args.workers),
        ],
        bare_env,
        workdir / "bare.log",
        ROOT,
    )
    stack.callback(bare.stop)
    gw_url, bare_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
    print(f"waiting for the gateway ({gw_url}) and the bare app ({bare_url}) ...", flush=True)
    wait_ready(gateway, gw_url + "/readyz", args.ready_timeout)
    wait_ready(bare, bare_url + "/readyz", args.ready_timeout)
    # Each worker opens its pool in its own lifespan; give the second one the same chance as the first.
    time.sleep(1)
    return gateway, bare, gw_url, bare_url, password


async def get_token(gw_url: str, password: str, timeout: float, user: str = USER) -> str:
    async with httpx.AsyncClient(base_url=gw_url, timeout=timeout) as client:
        resp = await client.post("/api/getToken", json={"username": user, "password": password})
    if resp.status_code != 200:
        raise BenchError(f"getToken: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.json()["token"]["accesstoken"]


# --- the measured run ------------------------------------------------------------------------------


async def drive(
    args: argparse.Namespace,
    db: BenchDatabase,
    gw_url: str,
    bare_url: str,
    password: str,
    sampler: Sampler,
    report: dict[str, Any],
) -> None:
    token = await get_token(gw_url, password, args.request_timeout)
    paging_token = await get_token(gw_url, password, args.request_timeout, PAGING_USER)
    async with contextlib.AsyncExitStack() as clients_stack:
        # Clients are created outside every measured window.
        targets = {}
        for name, url, headers, table in (
            ("gateway", gw_url, {"Authorization": token}, "customer"),
            ("bare", bare_url, {}, bare_app.TABLE),
        ):
            clients = [
                await clients_stack.enter_async_context(
                    new_client(url, args.request_timeout, args.keep_alive)
                )
                for _ in range(args.clients)
            ]
            targets[name] = (clients, headers, table)
        await _measure(args, db, targets, paging_token, sampler, report)


async def _measure(
    args: argparse.Namespace,
    db: BenchDatabase,
    targets: dict[str, Any],
    paging_token: str,
    sampler: Sampler,
    report: dict[str, Any],
) -> None:
    # Warm-up, not measured: connections opened, statements prepared, in every worker.
    warm = data.bodies("WU", args.clients * 2, seed=args.seed + 100)
    for name, (clients, headers, _) in targets.items():
        r = await push(clients, headers, warm, args.phase_timeout)
        if r.errors:
            raise BenchError(f"warm-up against {name} failed: {r.errors[0]}")

    # Rounds, each with new keys, alternating which side goes first; the figures are the medians. One
    # run of a few seconds per side moves by 10% or more from noise alone on a 2-core box.
    rounds: list[dict[str, Any]] = report.setdefault("rounds", [])
    for rnd in range(args.rounds):
        print(f"round {rnd + 1} of {args.rounds}: generating {args.requests} x 2 request bodies ...", flush=True)
        work = data.workload(f"R{rnd}K", args.requests, seed=args.seed + rnd)
        order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
        this: dict[str, Any] = {}
        for phase in PHASES:
            bodies = work.inserts if phase == "insert" else work.updates
            out = this.setdefault(phase, {})
            for name in order:
                clients, headers, table = targets[name]
                await settle(db.url, table)
                print(f"  {phase:6s} -> {name:7s} {len(bodies)} requests ...", end="", flush=True)
                sampler.start()
                r = await push(clients, headers, bodies, args.phase_timeout)
                usage = sampler.stop()
                out[name] = {**r.summary(), "usage": usage}
                print(f" {out[name]['rows_per_s'] or 0:,} rows/s, {len(r.errors)} errors", flush=True)
            g, b = out["gateway"]["rows_per_s"], out["bare"]["rows_per_s"]
            out["ratio"] = round(g / b, 3) if g and b else None
        rounds.append(this)

    phases: dict[str, Any] = report.setdefault("phases", {})
    for phase in PHASES:
        out = phases.setdefault(phase, {})
        for name in TARGETS:
            runs = sorted((r[phase][name] for r in rounds), key=lambda x: x["rows_per_s"] or 0)
            out[name] = {**runs[len(runs) // 2], "rounds_rows_per_s": [r[phase][name]["rows_per_s"] for r in rounds]}
        g, b = out["gateway"]["rows_per_s"], out["bare"]["rows_per_s"]
        out["ratio"] = round(g / b, 3) if g and b else None
        out["round_ratios"] = [r[phase]["ratio"] for r in rounds]

    # Paging: a tenant of its own, seeded through the gateway (not measured) to exactly --paging-rows.
    clients, _, _ = targets["gateway"]
    headers = {"Authorization": paging_token}
    if args.paging_rows:
        requests = math.ceil(args.paging_rows / data.RECORDS_PER_REQUEST)
        print(f"  seeding {requests * data.RECORDS_PER_REQUEST:,} customers for paging ...", flush=True)
        r = await push(clients, headers, data.bodies("PG", requests, seed=args.seed + 200), args.phase_timeout)
        if r.errors:
            raise BenchError(f"seeding failed: {r.errors[0]}")
        count = requests * data.RECORDS_PER_REQUEST
        paging: dict[str, Any] = report.setdefault("paging", {"customers": count})
        for limit in (1_000, 10_000):
            print(f"  paging getCustomer limit {limit} over {count:,} customers ...", end="", flush=True)
            sampler.start()
            p = await page_all(clients[0], headers, limit, args.phase_timeout)
            usage = sampler.stop()
            paging[f"limit_{limit}"] = {**p, "usage": usage}
            print(f" {p['rows_per_s'] or 0:,} rows/s", flush=True)


def checks(args: argparse.Namespace, report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = args.requests * data.RECORDS_PER_REQUEST
    out = []
    for phase, key in (("insert", "inserted"), ("update", "updated")):
        for target in TARGETS:
            r = report.get("phases", {}).get(phase, {}).get(target)
            if r is None:
                continue
            out.append((f"{phase} {target}: no errors", r["errors"] == 0))
            out.append((f"{phase} {target}: {key} = {rows:,}", r["result"].get(key) == rows))
    paging = report.get("paging", {})
    for limit in (1_000, 10_000):
        p = paging.get(f"limit_{limit}")
        if p is None:
            continue
        n = paging["customers"]
        out.append(
            (f"paging limit {limit}: rows seen = {n:,} customers", p["rows"] == n and p["errors"] == 0)
        )
        out.append(
            (
                f"paging limit {limit}: keys distinct and ascending",
                p["distinct_keys"] == p["rows"] and p["out_of_order"] == 0,
            )
        )
    return [{"check": what, "ok": ok} for what, ok in out]


# --- output ----------------------------------------------------------------------------------------


def _n(x: Any, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def _rss(usage: dict[str, Any], target: str) -> str:
    """Peak RSS of the supervisor, then of each worker."""
    rss = usage.get(f"{target}_rss_peak_mb", {})
    main = [v for k, v in rss.items() if k.startswith("main:")]
    workers = [v for k, v in rss.items() if k.startswith("worker:")]
    return " / ".join(_n(v, ".0f") for v in main + workers)


def _split(usage: dict[str, Any], target: str) -> str:
    """CPU % of each worker, e.g. 64+6: how evenly the workers shared the load."""
    by_proc = usage.get(f"{target}_cpu_pct_by_process", {})
    rss = usage.get(f"{target}_rss_peak_mb", {})
    workers = sorted({k for k in [*by_proc, *rss] if k.startswith("worker:")})
    return "+".join(_n(by_proc.get(w, 0.0), ".0f") for w in workers) or "-"


def render(report: dict[str, Any]) -> str:
    m, o = report["machine"], report["options"]
    connections = "keep-alive" if o["keep_alive"] else "a new connection per request"
    machine = (
        f"machine: nproc {m['nproc']} ({m['cpu_model']}), {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"Python {m['python']}, PostgreSQL {m.get('postgresql', '?')} ({m.get('postgresql_kind', '?')}), "
        f"uvicorn {m['uvicorn_loop']}+{m['uvicorn_http']}, load average at start {m['loadavg_at_start']}"
    )
    run = (
        f"run: {report['date']}, commit {report.get('commit')}, "
        f"{o['requests']} requests x 1,000 customers per phase, {o.get('rounds', 1)} rounds (medians shown),"
        f" {o['clients']} clients "
        f"(asyncio tasks in one process, {connections}), {o['workers']} workers each, "
        f"bare staging {o['bare_staging']}"
    )
    header = (
        f"{'phase':7}{'target':9}{'rows/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"{'client%':>9}{'server%':>9}{'workers%':>10}{'pg%':>7}{'box busy%':>11}  peak RSS MB (main / workers)"
    )
    lines = ["", machine, run, "", "SyncData setCustomer, 1,000 records per request", header]
    for phase in PHASES:
        for target in TARGETS:
            r = report.get("phases", {}).get(phase, {}).get(target)
            if r is None:
                continue
            u = r["usage"]
            lines.append(
                f"{phase:7}{target:9}{_n(r['rows_per_s']):>9}{_n(r['p50_ms'], ',.1f'):>9}"
                f"{_n(r['p99_ms'], ',.1f'):>9}{_n(r['max_ms'], ',.1f'):>9}{r['errors']:>8}"
                f"{_n(u['client_cpu_pct'], '.0f'):>9}{_n(u.get(target + '_cpu_pct'), '.0f'):>9}"
                f"{_split(u, target):>10}"
                f"{_n(u.get('postgres_cpu_pct'), '.0f'):>7}{_n(u['machine_busy_pct'], '.0f'):>11}  "
                f"{_rss(u, target)}"
            )
    for phase in PHASES:
        ratio = report.get("phases", {}).get(phase, {}).get("ratio")
        if ratio is not None:
            verdict = "met" if ratio >= RATIO_TARGET else "NOT met"
            per_round = ", ".join(_n(x, ".2f") for x in report["phases"][phase].get("round_ratios", []))
            lines.append(
                f"ratio gateway/bare rows/s, {phase}: {ratio:.2f} (target >= {RATIO_TARGET}: {verdict});"
                f" per round: {per_round}"
            )
    paging = report.get("paging", {})
    if any(k.startswith("limit_") for k in paging):
        lines += [
            "",
            f"GetData getCustomer paging, one client, {paging['customers']:,} customers",
            (
                f"{'limit':>7}{'pages':>7}{'rows':>9}{'rows/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                f"{'1st 10% p50':>13}{'last 10% p50':>14}{'server%':>9}{'workers%':>10}  peak RSS MB"
            ),
        ]
        for limit in (1_000, 10_000):
            p = paging.get(f"limit_{limit}")
            if p is None:
                continue
            u = p["usage"]
            lines.append(
                f"{limit:>7}{p['pages']:>7}{p['rows']:>9,}{_n(p['rows_per_s']):>9}"
                f"{_n(p['p50_ms'], ',.1f'):>9}{_n(p['p99_ms'], ',.1f'):>9}{_n(p['first_tenth_p50_ms'], ',.1f'):>13}"
                f"{_n(p['last_tenth_p50_ms'], ',.1f'):>14}{_n(u.get('gateway_cpu_pct'), '.0f'):>9}"
                f"{_split(u, 'gateway'):>10}  "
                f"{_rss(u, 'gateway')}"
            )
    if report.get("checks"):
        lines += ["", "checks:"] + [
            f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}" for c in report["checks"]
        ]
    for name, log in report.get("server_logs", {}).items():
        if log["first_notable"]:
            lines += [
                "",
                f"{name} log, lines by level {log['lines_by_level']}; first ones not at info level:",
            ]
            lines += [f"  {line}" for line in log["first_notable"]]
    if report.get("error"):
        lines += ["", f"ERROR: {report['error']}"]
    return "\n".join(lines)


def summarise_logs(workdir: Path, report: dict[str, Any]) -> None:
    """Counts of the gateway's log lines by level, and the first lines that are not info."""
    out: dict[str, Any] = {}
    for name in ("gateway", "bare"):
        path = workdir / f"{name}.log"
        if not path.exists():
            continue
        levels: dict[str, int] = {}
        notable: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = str(msgspec.json.decode(line).get("level", "?"))
            except (msgspec.DecodeError, AttributeError):
                level = "text"
            levels[level] = levels.get(level, 0) + 1
            if level not in ("info", "debug") and len(notable) < 5 and not line.startswith("Serving on"):
                notable.append(line[:400])
        out[name] = {"lines_by_level": levels, "first_notable": notable}
    report["server_logs"] = out


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "scripts/bench.sh " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": git_commit(),
        "machine": machine_info(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "gateway_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith("GATEWAY_") and k not in ("GATEWAY_JWT_SECRET", "GATEWAY_DATA_DIR")
        },
        "complete": False,
    }
    m = report["machine"]
    print(
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, Python {m['python']}, "
        f"load average {m['loadavg_at_start']}",
        flush=True,
    )
    rc = 0
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.callback(summarise_logs, workdir, report)  # runs after the servers stopped, before rmtree
        print("starting PostgreSQL for the benchmark ...", flush=True)
        db = stack.enter_context(bench_database(workdir))
        m["postgresql_kind"] = db.kind
        m["postgresql"] = asyncio.run(server_version(db.url))
        print(f"PostgreSQL {m['postgresql']} ({db.kind})", flush=True)
        gateway, bare, gw_url, bare_url, password = start_servers(args, db, workdir, stack)
        sample = data.bodies("KH", 5, seed=args.seed)
        report["body_bytes_avg"] = round(sum(map(len, sample)) / len(sample))
        roots = {"gateway": gateway.pid, "bare": bare.pid}
        if db.server_pid:
            roots["postgres"] = db.server_pid
        sampler = stack.enter_context(Sampler(roots))
        asyncio.run(drive(args, db, gw_url, bare_url, password, sampler, report))
        report["complete"] = True
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    except TimeoutError:
        report["error"] = "a measured phase took longer than --phase-timeout"
        rc = 1
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        rc = 130
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        rc = 1
        raise
    finally:
        stop_all(stack)
        report["checks"] = checks(args, report)
        if not all(c["ok"] for c in report["checks"]) and rc == 0:
            rc = 1
        print(render(report), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
        print(f"\nwritten: {args.out}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
