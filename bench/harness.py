"""What every benchmark of the gateway does around its own measurement.

A report that says when, on what and how it ran; a tenant and a writer made through the gateway's own CLI; a
`gateway serve` answering /readyz; and, at the end, everything stopped (a second Ctrl-C cannot interrupt
the stopping), the report printed and written as JSON.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .pg import BenchDatabase
from .procs import Service, run_cli, stop_all, wait_ready
from .run import free_port, gateway_env, git_commit, machine_info

ROOT = Path(__file__).resolve().parent.parent


def new_report(command: str, args: Any, argv: list[str] | None) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"{command} " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": git_commit(),
        "machine": machine_info(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "gateway_env": {k: v for k, v in os.environ.items()
                        if k.startswith("GATEWAY_") and k not in ("GATEWAY_JWT_SECRET", "GATEWAY_DATA_DIR")},
    }


def set_up(db: BenchDatabase, workdir: Path, tenant: str, user: str,
           rls: bool = True) -> tuple[dict[str, str], str]:
    """Schema, tenant and writer through the gateway's own CLI; returns its environment (serving as the role
    held to row-level security, or with `rls` False as the superuser) and the password."""
    py = sys.executable
    env = gateway_env(db, workdir, rls)
    password = secrets.token_urlsafe(16)
    print("migrating, creating tenant and user through the gateway CLI ...", flush=True)
    run_cli([py, "-m", "gateway.cli", "migrate"], env, ROOT)
    run_cli([py, "-m", "gateway.cli", "tenant", "add", tenant], env, ROOT)
    run_cli([py, "-m", "gateway.cli", "user", "add", user, "--tenant", tenant, "--role", "writer",
             f"--password={password}"], env, ROOT)
    return env, password


def serve(workers: int, ready_timeout: float, env: dict[str, str], workdir: Path,
          name: str = "gateway") -> tuple[Service, str]:
    """`gateway serve` on a free port of 127.0.0.1, once it answers /readyz; its service and base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-demo"]
    gateway = Service(name, cmd, env, workdir / f"{name}.log", ROOT)
    url = f"http://127.0.0.1:{port}"
    print(f"waiting for the gateway ({url}) ...", flush=True)
    try:
        wait_ready(gateway, url + "/readyz", ready_timeout)
    except BaseException:
        gateway.stop()
        raise
    time.sleep(1)  # each worker opens its pool in its own lifespan
    return gateway, url


def closing_lines(report: dict[str, Any]) -> list[str]:
    """The last lines of a printed report: its check, and the error that ended the run, if any."""
    lines = [f"check: {report['check']}"] if "check" in report else []
    if report.get("error"):
        lines += ["", f"ERROR: {report['error']}"]
    return lines


def finish(stack: contextlib.ExitStack, report: dict[str, Any], out: Path,
           render: Callable[[dict[str, Any]], str]) -> None:
    """Stop everything the benchmark started, then print and write its report."""
    stop_all(stack)
    print(render(report), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    print(f"\nwritten: {out}", flush=True)
