"""`gateway serve` end to end: real processes, a real port, the demo tenant on first start."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx

from gateway.db import APP_ROLE, with_user


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_creates_demo_user_once_and_serves_with_two_workers(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    # As deployed: migrated by the owner, served as the role held to row-level security.
    env = {**os.environ, "DATABASE_URL": with_user(db_url, APP_ROLE), "GATEWAY_OWNER_URL": db_url,
           "GATEWAY_DATA_DIR": str(tmp_path)}
    env.pop("GATEWAY_JWT_SECRET", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = b""
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert proc.stdout is not None
            while b"Serving on" not in output:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line, output  # the process ended without serving
                output += line
            assert f"Serving on http://127.0.0.1:{port} with 2 worker(s)".encode() in output, output
            # Announced only once the workers serve: the first request, sent at once, is answered.
            assert (await client.get("/readyz")).status_code == 200
            match = re.search(rb"user 'demo', password '([^']+)'", output)
            assert match, output
            password = match.group(1).decode()
            # The secret was generated once under the data dir and both workers sign with it.
            assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0
            resp = await client.post("/api/getToken", json={"username": "demo", "password": password})
            token = resp.json()["token"]["accesstoken"]
            for i in range(10):  # several fresh connections: each may land on either worker
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                    resp = await fresh.post("/api/SyncData", headers={"Authorization": token},
                                            json={"form": "setCustomer",
                                                  "data": [{"CustomerCode": f"K{i}", "CustomerName": "x"}]})
                    assert resp.status_code == 200, resp.text
            resp = await client.post("/api/GetData", headers={"Authorization": f"Bearer {token}"},
                                     json={"form": "getCustomer"})
            assert resp.json()["records"] == 10
            # The demo tenant was created with its base currency and chart of accounts.
            resp = await client.post("/api/GetData", headers={"Authorization": token},
                                     json={"form": "getCurrency"})
            assert [(c["CurrencyCode"], c["DecimalPlaces"]) for c in resp.json()["data"]] == [("VND", 0)]
            resp = await client.post("/api/GetData", headers={"Authorization": token},
                                     json={"form": "getAccount", "id": "131"})
            assert resp.json()["records"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 40)
        output += rest
    assert proc.returncode == 0, output.decode()
    assert b"row_security_off" not in output  # the workers' role is held to row-level security

    # A second start on the same database creates no second demo user and prints no password.
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    second = b""
    try:
        while b"Serving on" not in second:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, second
            second += line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            # Served as every worker is configured: no header naming the server, the request head bounded.
            resp = await client.get("/healthz")
            assert "server" not in resp.headers and resp.headers["x-content-type-options"] == "nosniff"
            resp = await client.get("/healthz", headers={"X-Big": "b" * 70_000})
            assert (resp.status_code, resp.json()["code"]) == (431, 431)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 40)
    assert b"password" not in second
