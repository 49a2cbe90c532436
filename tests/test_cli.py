"""The `gateway` command line against a real database (the same one the app under test uses)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import httpx
from conftest import login


async def gateway(db_url: str, tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "GATEWAY_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate(stdin.encode() if stdin is not None else b"")
    return proc.returncode or 0, out.decode()


async def test_migrate_is_idempotent(db_url: str, tmp_path: Path) -> None:
    code, out = await gateway(db_url, tmp_path, "migrate")
    assert code == 0 and "already up to date" in out


async def test_tenant_and_user_administration(db_url: str, tmp_path: Path, client: httpx.AsyncClient,
                                             db: asyncpg.Connection) -> None:
    assert (await gateway(db_url, tmp_path, "tenant", "add", "shop1", "--name", "Shop One"))[0] == 0
    code, out = await gateway(db_url, tmp_path, "tenant", "add", "shop1")
    assert code == 2 and "exists" in out
    code, out = await gateway(db_url, tmp_path, "user", "add", "pos1", "--tenant", "nope", "--password", "x" * 12)
    assert code == 2 and "no tenant" in out
    code, out = await gateway(db_url, tmp_path, "user", "add", "pos1", "--tenant", "shop1", "--role", "writer",
                              "--password-stdin", stdin="first-password\n")
    assert code == 0, out
    row = await db.fetchrow("SELECT role, password_hash FROM app_user WHERE username = 'pos1'")
    assert row["role"] == "writer" and row["password_hash"].startswith("$argon2id$")

    old = await login(client, "pos1", "first-password")
    await asyncio.sleep(1.1)  # tokens carry whole seconds; the change must come in a later second
    assert (await gateway(db_url, tmp_path, "user", "passwd", "pos1", "--password", "second-password"))[0] == 0
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": old})
    assert resp.status_code == 401
    assert (await client.post("/api/getToken", json={"username": "pos1", "password": "first-password"})
            ).status_code == 401
    new = await login(client, "pos1", "second-password")

    await asyncio.sleep(1.1)
    assert (await gateway(db_url, tmp_path, "user", "disable", "pos1"))[0] == 0
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": new})
    assert resp.status_code == 401
    assert (await client.post("/api/getToken", json={"username": "pos1", "password": "second-password"})
            ).status_code == 401
    assert (await gateway(db_url, tmp_path, "user", "enable", "pos1"))[0] == 0
    await login(client, "pos1", "second-password")


async def test_short_password_is_refused(db_url: str, tmp_path: Path) -> None:
    await gateway(db_url, tmp_path, "tenant", "add", "t1")
    code, out = await gateway(db_url, tmp_path, "user", "add", "u1", "--tenant", "t1", "--password", "short")
    assert code == 2 and "at least 8" in out


async def test_unknown_user_for_passwd_and_disable(db_url: str, tmp_path: Path) -> None:
    assert (await gateway(db_url, tmp_path, "user", "disable", "ghost"))[0] == 2
    assert (await gateway(db_url, tmp_path, "user", "passwd", "ghost", "--password", "x" * 10))[0] == 2


async def test_tenant_lock_sets_and_clears_the_locked_period(db_url: str, tmp_path: Path,
                                                             db: asyncpg.Connection) -> None:
    await gateway(db_url, tmp_path, "tenant", "add", "books")
    code, out = await gateway(db_url, tmp_path, "tenant", "lock", "books", "--until", "2026-03-31")
    assert code == 0, out
    assert str(await db.fetchval("SELECT locked_until FROM tenant WHERE code = 'books'")) == "2026-03-31"
    assert (await gateway(db_url, tmp_path, "tenant", "lock", "books", "--until", "31/03/2026"))[0] == 2
    assert (await gateway(db_url, tmp_path, "tenant", "lock", "nobody", "--until", "2026-03-31"))[0] == 2
    assert (await gateway(db_url, tmp_path, "tenant", "lock", "books", "--clear"))[0] == 0
    assert await db.fetchval("SELECT locked_until FROM tenant WHERE code = 'books'") is None
