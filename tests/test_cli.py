"""The `gateway` command line against a real database (the same one the app under test uses).

Commands run in-process through gateway.cli.main, in a thread of their own (each runs its own event loop);
only what needs a fresh interpreter (the warnings it prints) runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import add_user, login

from gateway import cli, tenants

Gateway = Callable[..., Awaitable[tuple[int, str]]]


class _ThisThread(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: what the calling thread writes goes to `out`, what other threads
    write (the test databases' thread, logging as it migrates a template in the background) where it went."""

    def __init__(self, out: io.StringIO, other: Any) -> None:
        self.out, self.other, self.thread = out, other, threading.get_ident()

    def write(self, text: str) -> int:
        return (self.out if threading.get_ident() == self.thread else self.other).write(text)

    def flush(self) -> None:
        self.other.flush()


def _run_main(argv: list[str], stdin: str) -> tuple[int, str]:
    out = io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(_ThisThread(out, sys.stdout)), \
                contextlib.redirect_stderr(_ThisThread(out, sys.stderr)):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse refusing the command line
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return code, out.getvalue()


@pytest.fixture
def gateway(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))

    async def run(*args: str, stdin: str = "") -> tuple[int, str]:
        return await asyncio.to_thread(_run_main, list(args), stdin)

    return run


def chart_size(chart: str) -> int:
    return len(tenants.chart_accounts(chart))


async def test_migrate_is_idempotent(gateway: Gateway) -> None:
    code, out = await gateway("migrate")
    assert code == 0 and "already up to date" in out


async def test_tenant_and_user_administration(gateway: Gateway, client: httpx.AsyncClient,
                                             db: asyncpg.Connection) -> None:
    assert (await gateway("tenant", "add", "shop1", "--name", "Shop One"))[0] == 0
    code, out = await gateway("tenant", "add", "shop1")
    assert code == 2 and "exists" in out
    code, out = await gateway("user", "add", "pos1", "--tenant", "nope", "--password", "x" * 12)
    assert code == 2 and "no tenant" in out
    code, out = await gateway("user", "add", "pos1", "--tenant", "shop1", "--role", "writer",
                              "--password-stdin", stdin="first-password\n")
    assert code == 0, out
    row = await db.fetchrow("SELECT role, password_hash FROM app_user WHERE username = 'pos1'")
    assert row["role"] == "writer" and row["password_hash"].startswith("$argon2id$")

    # No pause between issue and revocation: revocation does not depend on the clock.
    old = await login(client, "pos1", "first-password")
    assert (await gateway("user", "passwd", "pos1", "--password", "second-password"))[0] == 0
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": old})
    assert resp.status_code == 401
    assert (await client.post("/api/getToken", json={"username": "pos1", "password": "first-password"})
            ).status_code == 401
    new = await login(client, "pos1", "second-password")

    assert (await gateway("user", "disable", "pos1"))[0] == 0
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": new})
    assert resp.status_code == 401
    assert (await client.post("/api/getToken", json={"username": "pos1", "password": "second-password"})
            ).status_code == 401
    code, out = await gateway("user", "enable", "pos1")
    assert code == 0 and out == "user 'pos1' enabled\n"
    # Enabling lets the user log in again; it does not bring back the tokens the disable ended.
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": new})
    assert resp.status_code == 401
    newest = await login(client, "pos1", "second-password")
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": newest})
    assert resp.status_code == 200


async def test_tenant_add_creates_the_base_currency_chart_and_posting_roles(
        gateway: Gateway, db: asyncpg.Connection) -> None:
    code, out = await gateway("tenant", "add", "shop1", "--name", "Shop One")
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'shop1'")
    assert code == 0
    assert out == (f"tenant 'shop1' created (id {tenant_id}): base currency VND, "
                   f"chart c200 ({chart_size('c200')} accounts), 17 posting roles\n")
    accounts = await db.fetchval("SELECT count(*) FROM account WHERE tenant_id = $1", tenant_id)
    assert accounts == chart_size("c200")

    code, out = await gateway("tenant", "add", "us1", "--base-currency", "USD", "--chart", "c133")
    assert code == 0 and "base currency USD, chart c133" in out, out
    row = await db.fetchrow("SELECT c.currency_code, c.decimal_places FROM currency c JOIN tenant t"
                            " ON t.id = c.tenant_id AND t.code = 'us1' AND t.base_currency = 'USD'")
    assert tuple(row) == ("USD", 2)

    code, out = await gateway("tenant", "add", "bare", "--chart", "none")
    assert code == 0 and out.endswith("base currency VND, no chart of accounts, no posting roles\n"), out


@pytest.mark.parametrize("currency", ["usd", "US", "USDX", "U$D", ""])
def test_tenant_add_refuses_a_base_currency_that_is_not_three_capital_letters(
        currency: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused while the command line is read: a server that cannot be reached is never asked.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    code, out = _run_main(["tenant", "add", "shop1", "--base-currency", currency], "")
    assert code == 2
    assert out.endswith("error: argument --base-currency: base currency must be an ISO 4217 code of three"
                        f" capital letters (e.g. VND), got {currency!r}\n"), out


async def test_tenant_add_refuses_an_unknown_chart_and_a_malformed_code(gateway: Gateway,
                                                                       db: asyncpg.Connection) -> None:
    code, out = await gateway("tenant", "add", "shop1", "--chart", "c48")
    assert code == 2 and "invalid choice: 'c48'" in out
    code, out = await gateway("tenant", "add", "shop one")
    assert code == 2 and "tenant code" in out
    assert await db.fetchval("SELECT count(*) FROM tenant") == 0
    assert await db.fetchval("SELECT count(*) FROM account") == 0


async def test_tenant_setup_provisions_existing_tenants_once(gateway: Gateway,
                                                              db: asyncpg.Connection) -> None:
    await add_user(db, "a1", tenant="acme")  # tenants made the old way: no currency, chart or roles
    await add_user(db, "b1", tenant="beta")
    await db.execute("UPDATE tenant SET base_currency = 'EUR' WHERE code = 'beta'")

    code, out = await gateway("tenant", "setup", "acme")
    assert code == 0
    assert out == (f"tenant 'acme' (base currency VND, chart c200): created 1 currency, "
                   f"{chart_size('c200')} accounts, 17 posting roles\n")
    code, out = await gateway("tenant", "setup", "acme")
    assert code == 0 and out == "tenant 'acme' (base currency VND, chart c200): nothing missing\n"

    # Circular 133 has one account Circular 200 has not (1386): only that one is missing.
    extra = {a["AccountCode"] for a in tenants.chart_accounts("c133")} - {
        a["AccountCode"] for a in tenants.chart_accounts("c200")}
    assert extra == {"1386"}
    code, out = await gateway("tenant", "setup", "--all", "--chart", "c133")
    assert code == 0
    assert out.splitlines() == [
        "tenant 'acme' (base currency VND, chart c133): created 1 account",
        (f"tenant 'beta' (base currency EUR, chart c133): created 1 currency, {chart_size('c133')} accounts, "
         "17 posting roles"),
    ]
    row = await db.fetchrow("SELECT c.currency_code, c.decimal_places FROM currency c JOIN tenant t"
                            " ON t.id = c.tenant_id WHERE t.code = 'beta'")
    assert tuple(row) == ("EUR", 2)
    # Without --chart each tenant is set up from the chart it was first provisioned with.
    code, out = await gateway("tenant", "setup", "--all")
    assert code == 0 and out.splitlines() == [
        "tenant 'acme' (base currency VND, chart c200): nothing missing",
        "tenant 'beta' (base currency EUR, chart c133): nothing missing",
    ]

    assert (await gateway("tenant", "setup", "nobody"))[0] == 2
    code, out = await gateway("tenant", "setup")
    assert code == 2 and "--all" in out
    assert (await gateway("tenant", "setup", "acme", "--all"))[0] == 2


async def test_tenant_list_and_user_list_print_aligned_tables(gateway: Gateway,
                                                              db: asyncpg.Connection) -> None:
    assert (await gateway("tenant", "add", "shop1", "--name", "Cửa hàng Một", "--chart", "none"))[0] == 0
    assert (await gateway("tenant", "add", "us1", "--name", "US shop", "--base-currency", "USD",
                          "--chart", "none"))[0] == 0
    assert (await gateway("tenant", "lock", "us1", "--until", "2026-03-31"))[0] == 0
    await add_user(db, "pos1", role="writer", tenant="shop1")
    await add_user(db, "boss", role="admin", tenant="shop1")
    await add_user(db, "viewer", role="reader", tenant="us1")
    assert (await gateway("user", "disable", "viewer"))[0] == 0

    code, out = await gateway("tenant", "list")
    assert code == 0
    assert out.splitlines() == [
        "CODE   NAME          BASE CURRENCY  LOCKED UNTIL  USERS  RATE LIMIT  USER RATE LIMIT",
        "shop1  Cửa hàng Một  VND            -             2      default     default",
        "us1    US shop       USD            2026-03-31    1      default     default",
    ]
    code, out = await gateway("user", "list")
    assert code == 0
    assert out.splitlines() == [
        "USERNAME  TENANT  ROLE    STATUS",
        "boss      shop1   admin   enabled",
        "pos1      shop1   writer  enabled",
        "viewer    us1     reader  disabled",
    ]
    code, out = await gateway("user", "list", "--tenant", "us1")
    assert code == 0 and out.splitlines()[1:] == ["viewer    us1     reader  disabled"]
    code, out = await gateway("user", "list", "--tenant", "nope")
    assert code == 2 and "no tenant 'nope'" in out


async def test_short_password_is_refused(gateway: Gateway) -> None:
    await gateway("tenant", "add", "t1", "--chart", "none")
    code, out = await gateway("user", "add", "u1", "--tenant", "t1", "--password", "short")
    assert code == 2 and "at least 8" in out


async def test_unknown_user_for_passwd_and_disable(gateway: Gateway) -> None:
    assert (await gateway("user", "disable", "ghost"))[0] == 2
    assert (await gateway("user", "passwd", "ghost", "--password", "x" * 10))[0] == 2


async def test_tenant_lock_sets_and_clears_the_locked_period(gateway: Gateway,
                                                             db: asyncpg.Connection) -> None:
    await gateway("tenant", "add", "books", "--chart", "none")
    code, out = await gateway("tenant", "lock", "books", "--until", "2026-03-31")
    assert code == 0, out
    assert str(await db.fetchval("SELECT locked_until FROM tenant WHERE code = 'books'")) == "2026-03-31"
    assert (await gateway("tenant", "lock", "books", "--until", "31/03/2026"))[0] == 2
    assert (await gateway("tenant", "lock", "nobody", "--until", "2026-03-31"))[0] == 2
    assert (await gateway("tenant", "lock", "books", "--clear"))[0] == 0
    assert await db.fetchval("SELECT locked_until FROM tenant WHERE code = 'books'") is None


async def test_a_command_on_the_embedded_server_without_xdg_runtime_dir_prints_nothing_on_stderr(
        tmp_path: Path) -> None:
    # The embedded server's package warns on import when XDG_RUNTIME_DIR is unset (containers, cron).
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "DATABASE_URL")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "migrate", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("applied: 0001_core.sql")
    assert err == b""


async def test_user_role_changes_the_role_and_ends_the_tokens_issued_before(
        gateway: Gateway, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "pos1", role="writer")
    old = await login(client, "pos1")
    code, out = await gateway("user", "role", "pos1", "reader")
    assert code == 0 and out == "role of 'pos1' set to reader; tokens issued before now are refused\n", out
    assert await db.fetchval("SELECT role FROM app_user WHERE username = 'pos1'") == "reader"
    # No pause between issue and change: the old token is refused by its version, not by the clock.
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": old})
    assert resp.status_code == 401
    new = await login(client, "pos1")
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": new})
    assert resp.status_code == 200
    resp = await client.post("/api/SyncData", headers={"Authorization": new},
                             json={"form": "setCustomer", "data": [{"CustomerCode": "A", "CustomerName": "a"}]})
    assert resp.status_code == 403

    code, out = await gateway("user", "role", "ghost", "admin")
    assert code == 2 and "no user 'ghost'" in out
    code, out = await gateway("user", "role", "pos1", "owner")
    assert code == 2 and "invalid choice: 'owner'" in out
    assert await db.fetchval("SELECT role FROM app_user WHERE username = 'pos1'") == "reader"
