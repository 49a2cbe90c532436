"""Point-of-sale traffic: many keep-alive clients, each request one setCustomer record.

    scripts/bench.sh pos [--connections 16] [--duration 20] [--workers 2]   (or: .venv/bin/python -m bench.pos)

Starts a throw-away PostgreSQL and a `gateway serve` (as bench/run.py does), creates a tenant and a writer
through the gateway's CLI, and drives `POST /api/SyncData` with wrk (Debian's `wrk` package; a C load
generator, so that the client takes little of the 2 cores the gateway and PostgreSQL share). Every request
carries one new customer (a key of its own), so every request is a real insert. Figures: requests/s,
latency p50/p90/p99 (wrk's), and the CPU the gateway workers and PostgreSQL spent per request (psutil, over
the measured phase). After the run the customers in the table must equal the requests wrk counted as
answered with 2xx. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from .harness import closing_lines, finish, new_report, serve, set_up
from .pg import bench_database
from .procs import BenchError
from .run import get_token, server_version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pos.json"
TENANT = "bench_pos"
USER = "bench_pos_writer"

# One new customer per request: a key made of the wrk thread and a counter of its own.
LUA = """
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "%(token)s"
end
function request()
  counter = counter + 1
  local body = string.format('{"form":"setCustomer","data":[{"CustomerCode":"%(prefix)s%%d-%%d",' ..
    '"CustomerName":"Khach hang %%d","PhoneNumber":"0901234567","Address":"12 Le Loi, Q1"}]}', id, counter, counter)
  return wrk.format(nil, "/api/SyncData", nil, body)
end
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench.sh pos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--duration", type=int, default=20, help="seconds per measured phase (default 20)")
    p.add_argument("--rounds", type=int, default=2, help="measured phases (default 2)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--no-rls", action="store_true",
                   help="serve as the superuser, which bypasses row-level security (default: as gateway_app)")
    p.add_argument("--ready-timeout", type=float, default=90, help="seconds for the gateway to answer /readyz")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    return p.parse_args(argv)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    found = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {"requests": requests, "requests_per_s": rate, "p50_ms": found.get("50"), "p90_ms": found.get("90"),
            "p99_ms": found.get("99"), "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else None}


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def run_wrk(args: argparse.Namespace, url: str, script: Path, duration: int) -> str:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency", "-s", str(script),
           url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr or done.stdout}")
    return done.stdout


async def count_customers(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM customer"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("this benchmark drives the gateway with wrk: apt-get install wrk", file=sys.stderr)
        return 2
    report = new_report("scripts/bench.sh pos", args, argv)
    report["phases"] = []
    workdir = Path(tempfile.mkdtemp(prefix="gw-pos-"))
    rc = 0
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        db = stack.enter_context(bench_database(workdir))
        report["machine"]["postgresql"] = asyncio.run(server_version(db.url))
        env, password = set_up(db, workdir, TENANT, USER, rls=not args.no_rls)
        gateway, url = serve(args.workers, args.ready_timeout, env, workdir)
        stack.callback(gateway.stop)
        token = asyncio.run(get_token(url, password, 30, user=USER))
        pids = [gateway.pid] + ([db.server_pid] if db.server_pid else [])
        for phase in range(args.rounds + 1):  # phase 0 warms every connection and prepared statement up
            script = workdir / f"pos{phase}.lua"
            script.write_text(LUA % {"token": token, "prefix": f"R{phase}T"})
            duration = 3 if phase == 0 else args.duration
            gw_cpu, pg_cpu = cpu_seconds([gateway.pid]), cpu_seconds(pids[1:])
            figures = parse_wrk(run_wrk(args, url, script, duration))
            answered = figures["requests"] - figures["non_2xx"]
            figures["gateway_cpu_ms_per_request"] = round((cpu_seconds([gateway.pid]) - gw_cpu) * 1000 / answered, 3)
            figures["postgres_cpu_ms_per_request"] = round((cpu_seconds(pids[1:]) - pg_cpu) * 1000 / answered, 3)
            figures["phase"] = "warm-up" if phase == 0 else f"round {phase}"
            report["phases"].append(figures)
            print(figures, flush=True)
        stored = asyncio.run(count_customers(db.url))
        sent = sum(p["requests"] - p["non_2xx"] for p in report["phases"])
        # wrk counts requests it completed; one cut short at the end of a phase may still have been written.
        report["check"] = {"customers_stored": stored, "requests_answered_2xx": sent,
                           "ok": sent <= stored <= sent + args.connections * (args.rounds + 1)}
        if not report["check"]["ok"]:
            rc = 1
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    finally:
        finish(stack, report, args.out, render)
    return rc


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['command']}  ({report['date']}, commit {report.get('commit')})",
             (f"{'phase':10}{'requests/s':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
             f"{'gw cpu ms':>11}{'pg cpu ms':>11}")]
    for p in report.get("phases", []):
        lines.append(f"{p['phase']:10}{p['requests_per_s']:>12,.0f}{p['p50_ms']:>9}{p['p90_ms']:>9}{p['p99_ms']:>9}"
                     f"{p['non_2xx']:>9}{p['gateway_cpu_ms_per_request']:>11}{p['postgres_cpu_ms_per_request']:>11}")
    return "\n".join([*lines, *closing_lines(report)])


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
