"""What bad logins cost the other tenants: GetData latency while clients loop wrong passwords.

    .venv/bin/python -m bench.login_abuse [--clients 8] [--duration 10] [--workers 2]

Starts a throw-away PostgreSQL and a `gateway serve` (as bench/pos.py does), creates a tenant with a reader
and a catalog of customers through the gateway, then measures, one phase after the other, the latency of a
keep-alive client looping `GetData getCustomer` (100 customers), and what the attackers got:

1. idle: the reader alone.
2. one address: `--clients` clients loop wrong passwords for one user from 127.0.0.1, as one attacker
   would. The pair is throttled after auth.MAX_FAILURES_PER_PAIR failures and the address after
   auth.MAX_FAILURES_PER_ADDRESS; from then on they get 429 at the cost of one statement, no argon2.
3. spread: the same clients, each login from a loopback address of its own (127.x.y.z, one per
   connection) and under a username of its own, as a botnet would: no count ever reaches a limit, so every
   attempt runs argon2, and only its bounded thread pool (auth.VERIFY_THREADS per worker) stands between
   the attack and the event loop. Logins beyond its queue get 429 (busy).

Before the thread pool, argon2 ran on the event loop: 8 such clients raised the GetData p50 of another
tenant from 4 ms to 751 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from gateway import auth

from .harness import closing_lines, finish, new_report, serve, set_up
from .pg import bench_database
from .procs import BenchError, run_cli
from .run import get_token, server_version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "login_abuse.json"
TENANT = "bench_login"
USER = "bench_login_writer"
READER = "bench_login_reader"
CUSTOMERS = 100
# Spread-phase clients connect from 127.1.0.1 on: the whole of 127.0.0.0/8 is the loopback interface.
FIRST_SPREAD_ADDRESS = ipaddress.IPv4Address("127.1.0.1")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.login_abuse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8, help="clients looping bad logins (default 8)")
    p.add_argument("--duration", type=float, default=10, help="seconds per measured phase (default 10)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--ready-timeout", type=float, default=90, help="seconds for the gateway to answer /readyz")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    return p.parse_args(argv)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, as bench/run.py reports them."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))], 1)


class Addresses:
    """A new loopback source address for every spread-phase login."""

    def __init__(self) -> None:
        self.next = int(FIRST_SPREAD_ADDRESS)

    def take(self) -> str:
        while True:
            address = ipaddress.IPv4Address(self.next)
            self.next += 1
            if address.packed[-1] not in (0, 255):
                return str(address)


async def read_loop(url: str, token: str, stop: asyncio.Event, latencies: list[float]) -> None:
    body = {"form": "getCustomer", "Id": "", "dateFrom": "", "dateTo": ""}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": token}) as client:
        while not stop.is_set():
            start = time.perf_counter()
            resp = await client.post("/api/GetData", json=body)
            latencies.append((time.perf_counter() - start) * 1000)
            if resp.status_code != 200 or resp.json().get("records") != CUSTOMERS:
                raise BenchError(f"GetData: HTTP {resp.status_code} {resp.text[:300]}")


async def attack_one_address(url: str, stop: asyncio.Event, answers: Counter[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            resp = await client.post("/api/getToken", json={"username": READER, "password": "wrong password"})
            answers[resp.status_code] += 1


async def attack_spread(url: str, stop: asyncio.Event, answers: Counter[int], addresses: Addresses) -> None:
    while not stop.is_set():
        transport = httpx.AsyncHTTPTransport(local_address=addresses.take())
        async with httpx.AsyncClient(base_url=url, timeout=30, transport=transport) as client:
            resp = await client.post("/api/getToken", json={"username": f"guess-{secrets.token_hex(4)}",
                                                            "password": "wrong password"})
        answers[resp.status_code] += 1


async def phase(name: str, url: str, token: str, duration: float, clients: int,
                attack: Any = None) -> dict[str, Any]:
    stop = asyncio.Event()
    latencies: list[float] = []
    answers: Counter[int] = Counter()
    cpu = psutil.cpu_times()
    tasks = [asyncio.create_task(read_loop(url, token, stop, latencies))]
    if attack is not None:
        tasks += [asyncio.create_task(attack(url, stop, answers)) for _ in range(clients)]
    started = time.perf_counter()
    await asyncio.sleep(duration)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    after = psutil.cpu_times()
    busy = sum(getattr(after, f) - getattr(cpu, f) for f in ("user", "system", "nice", "irq", "softirq"))
    total = busy + (after.idle - cpu.idle) + (getattr(after, "iowait", 0) - getattr(cpu, "iowait", 0))
    figures = {
        "phase": name,
        "getdata_requests": len(latencies),
        "getdata_p50_ms": percentile(latencies, 50),
        "getdata_p99_ms": percentile(latencies, 99),
        "getdata_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "logins_per_s": round(sum(answers.values()) / elapsed, 1),
        "login_answers": {str(k): v for k, v in sorted(answers.items())},
        "box_busy_pct": round(100 * busy / total, 1) if total else None,
    }
    print(figures, flush=True)
    return figures


async def seed(url: str, password: str) -> None:
    token = await get_token(url, password, 30, user=USER)
    data = [{"CustomerCode": f"KH{n:04d}", "CustomerName": f"Khach hang {n}", "Address": "12 Le Loi, Q1"}
            for n in range(CUSTOMERS)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        resp = await client.post("/api/SyncData", json={"form": "setCustomer", "data": data},
                                 headers={"Authorization": token})
    if resp.status_code != 200 or resp.json().get("code") != 200:
        raise BenchError(f"SyncData: HTTP {resp.status_code} {resp.text[:300]}")


async def drive(args: argparse.Namespace, url: str, password: str, reader_password: str,
                report: dict[str, Any]) -> None:
    await seed(url, password)
    token = await get_token(url, reader_password, 30, user=READER)
    await phase("warm-up", url, token, 2, 0)
    addresses = Addresses()

    async def spread(url: str, stop: asyncio.Event, answers: Counter[int]) -> None:
        await attack_spread(url, stop, answers, addresses)

    report["phases"] = [
        await phase("idle", url, token, args.duration, 0),
        await phase("one address", url, token, args.duration, args.clients, attack_one_address),
        await phase("spread", url, token, args.duration, args.clients, spread),
    ]
    # The attack did not lock the user out: the right password still works (from another address).
    transport = httpx.AsyncHTTPTransport(local_address=addresses.take())
    async with httpx.AsyncClient(base_url=url, timeout=30, transport=transport) as client:
        resp = await client.post("/api/getToken", json={"username": READER, "password": reader_password})
    report["check"] = {"user_logs_in_from_another_address": resp.status_code == 200}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = new_report("python -m bench.login_abuse", args, argv)
    report["limits"] = {"verify_threads": auth.VERIFY_THREADS, "verify_queue": auth.VERIFY_QUEUE,
                        "max_failures_per_pair": auth.MAX_FAILURES_PER_PAIR,
                        "max_failures_per_address": auth.MAX_FAILURES_PER_ADDRESS,
                        "window_seconds": auth.THROTTLE_WINDOW_SECONDS}
    workdir = Path(tempfile.mkdtemp(prefix="gw-login-"))
    rc = 0
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        db = stack.enter_context(bench_database(workdir))
        report["machine"]["postgresql"] = asyncio.run(server_version(db.url))
        env, password = set_up(db, workdir, TENANT, USER)
        reader_password = secrets.token_urlsafe(16)
        run_cli([sys.executable, "-m", "gateway.cli", "user", "add", READER, "--tenant", TENANT, "--role",
                 "reader", f"--password={reader_password}"], env, ROOT)
        gateway, url = serve(args.workers, args.ready_timeout, env, workdir)
        stack.callback(gateway.stop)
        asyncio.run(drive(args, url, password, reader_password, report))
        if not all(report["check"].values()):
            rc = 1
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    finally:
        finish(stack, report, args.out, render)
    return rc


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['command']}  ({report['date']}, commit {report.get('commit')})",
             f"limits: {report['limits']}",
             (f"{'phase':14}{'GetData p50':>12}{'p99 ms':>9}{'reads':>7}{'logins/s':>10}{'box busy%':>11}"
              "  login answers (HTTP status: count)")]
    for p in report.get("phases", []):
        lines.append(f"{p['phase']:14}{p['getdata_p50_ms']:>12}{p['getdata_p99_ms']:>9}{p['getdata_requests']:>7}"
                     f"{p['logins_per_s']:>10}{p['box_busy_pct']:>11}  {p['login_answers']}")
    return "\n".join([*lines, *closing_lines(report)])


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
