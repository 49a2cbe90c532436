"""The bare reference pipeline the gateway is measured against: the least work that does the same job.

decode (msgspec, numbers to Decimal) -> validate every record (jsonschema-rs, the form's own schema) ->
fold repeated keys (last wins), sort -> COPY into a per-connection staging table -> one
INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE row IS DISTINCT FROM, into `bench_customer`
(the data columns of `customer`, without tenant, auth or change tracking).

Served like the gateway, by gateway.server.run (one SO_REUSEPORT socket per worker), configured through
BENCH_BARE_DATABASE_URL and BENCH_BARE_STAGING.

Staging strategies (BENCH_BARE_STAGING), timed with `python -m bench.staging_probe` (straight to PostgreSQL,
no HTTP) on the shared 2-core development box, embedded PostgreSQL 18, 1,000 customers per batch, medians:
  on_commit  TEMP table created once per connection, ON COMMIT DELETE ROWS: PostgreSQL empties it at every
             commit. 2 connections: 86k inserts/s, 75k updates/s; 4 connections: 125k / 106k.
  delete     TEMP table created once per connection, DELETE FROM at the end of each transaction and a VACUUM
             every VACUUM_EVERY batches (temp tables are never autovacuumed; without it every COPY appends
             new pages and every INSERT ... SELECT scans the dead ones). 2 connections: 73k / 63k; 4: 108k / 78k.
  unnest     no staging table, one array parameter per column (what the gateway did before it moved to on_commit staging).
             2 connections: 61k / 44k; 4: 62k / 57k.
The truncation waits DESIGN.md mentions did not show here: on_commit was the fastest in every round, so it
is the default. Re-run the probe on another machine before trusting that ranking there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema_rs
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "setCustomer.json"
STRATEGIES = ("on_commit", "delete", "unnest")
DEFAULT_STAGING = "on_commit"
VACUUM_EVERY = 50
KEY = "customer_code"
TABLE = "bench_customer"
STAGE = "bench_stage"


def _snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _pgtype(prop: dict[str, Any]) -> str:
    return str(prop.get("x-pgtype", "text"))


SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
# (field, column, pgtype, default) in schema order; the customer schema only has text and smallint columns.
FIELDS = [(f, _snake(f), _pgtype(p), p.get("default")) for f, p in SCHEMA["properties"].items()]
COLUMNS = [c for _, c, _, _ in FIELDS]
DATA_COLUMNS = [c for c in COLUMNS if c != KEY]
REQUIRED = set(SCHEMA.get("required", ()))


def table_ddl() -> str:
    cols = ",\n    ".join(
        f"{c} {t}{' NOT NULL' if f in REQUIRED or d is not None else ''}"
        + (f" DEFAULT {d!r}" if isinstance(d, str) else f" DEFAULT {d}" if d is not None else "")
        for f, c, t, d in FIELDS
    )
    return f"CREATE TABLE IF NOT EXISTS {TABLE} (\n    {cols},\n    PRIMARY KEY ({KEY})\n)"


def upsert_sql(source: str) -> str:
    cols = ", ".join(COLUMNS)
    return (
        f"INSERT INTO {TABLE} AS t ({cols})\n"
        f"SELECT {cols} FROM {source}\n"
        f"ON CONFLICT ({KEY}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in DATA_COLUMNS) + "\n"
        f"WHERE ({', '.join('t.' + c for c in DATA_COLUMNS)}) IS DISTINCT FROM"
        f" ({', '.join('EXCLUDED.' + c for c in DATA_COLUMNS)})\n"
        "RETURNING (xmax = 0) AS inserted"
    )


# Rows arrive sorted by key; ORDER BY keeps the lock order even if the staging heap reuses free space.
UPSERT_FROM_STAGE = upsert_sql(f"(SELECT * FROM {STAGE} ORDER BY {KEY}) AS s")
UPSERT_FROM_UNNEST = upsert_sql(
    "unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, (_, _, t, _) in enumerate(FIELDS))
    + f") AS u({', '.join(COLUMNS)})"
)


async def init_connection(conn: asyncpg.Connection, staging: str) -> None:
    if staging == "on_commit":
        await conn.execute(f"CREATE TEMP TABLE {STAGE} (LIKE {TABLE}) ON COMMIT DELETE ROWS")
    elif staging == "delete":
        await conn.execute(f"CREATE TEMP TABLE {STAGE} (LIKE {TABLE})")


class Stager:
    """Writes one folded, sorted batch on one connection with the chosen strategy."""

    def __init__(self, staging: str) -> None:
        if staging not in STRATEGIES:
            raise ValueError(f"staging must be one of {STRATEGIES}, got {staging!r}")
        self.staging = staging
        self._batches: dict[int, int] = {}  # per backend pid, for the periodic VACUUM

    async def write(self, conn: asyncpg.Connection, rows: list[tuple]) -> tuple[int, int]:
        async with conn.transaction():
            if self.staging == "unnest":
                out = await conn.fetch(
                    UPSERT_FROM_UNNEST, *([r[i] for r in rows] for i in range(len(COLUMNS)))
                )
            else:
                await conn.copy_records_to_table(STAGE, records=rows, columns=COLUMNS)
                out = await conn.fetch(UPSERT_FROM_STAGE)
                if self.staging == "delete":
                    await conn.execute(f"DELETE FROM {STAGE}")
        if self.staging == "delete":
            pid = conn.get_server_pid()
            n = self._batches[pid] = self._batches.get(pid, 0) + 1
            if n % VACUUM_EVERY == 0:
                await conn.execute(f"VACUUM {STAGE}")
        inserted = sum(1 for r in out if r["inserted"])
        return inserted, len(out) - inserted


_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")
_validator = jsonschema_rs.Draft202012Validator(SCHEMA, validate_formats=True)
_CONVERT = {"text": lambda v: v if isinstance(v, str) else str(v), "smallint": int}


def fold(data: list[Any]) -> tuple[list[tuple], list[dict[str, Any]]]:
    """Validated rows, last occurrence of a key winning, sorted by key; or the errors."""
    latest: dict[str, tuple] = {}
    errors: list[dict[str, Any]] = []
    plan = [(f, _CONVERT[t], d) for f, _, t, d in FIELDS]
    for index, rec in enumerate(data):
        if not isinstance(rec, dict) or not _validator.is_valid(rec):
            errors.append({"index": index, "message": "invalid record"})
            continue
        row = []
        for f, conv, default in plan:
            v = rec.get(f)
            if v is None:
                v = default
            row.append(None if v is None else conv(v))
        latest[rec["CustomerCode"]] = tuple(row)
    return [latest[k] for k in sorted(latest)], errors


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


async def sync(request: Request) -> Response:
    try:
        doc = _decoder.decode(await request.body())
        data = doc["data"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return _json({"success": False, "messages": "bad request", "code": 400}, 400)
    rows, errors = fold(data)
    if errors:
        return _json({"success": False, "messages": "invalid records", "code": 601, "errors": errors}, 422)
    async with request.app.state.pool.acquire() as conn:
        inserted, updated = await request.app.state.stager.write(conn, rows)
    result = {"inserted": inserted, "updated": updated, "unchanged": len(rows) - inserted - updated}
    return _json(
        {"success": True, "messages": "SUCCESS", "records": len(rows), "result": result, "code": 200}
    )


async def readyz(request: Request) -> Response:
    async with request.app.state.pool.acquire(timeout=2) as conn:
        await conn.fetchval("SELECT 1", timeout=2)
    return _json({"success": True, "code": 200})


def create_app() -> Starlette:
    url = os.environ["BENCH_BARE_DATABASE_URL"]
    staging = os.environ.get("BENCH_BARE_STAGING", DEFAULT_STAGING)
    stager = Stager(staging)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def init(conn: asyncpg.Connection) -> None:
            await init_connection(conn, staging)

        # Same pool bounds as the gateway's defaults (GATEWAY_POOL_MIN / GATEWAY_POOL_MAX).
        app.state.pool = await asyncpg.create_pool(url, min_size=2, max_size=10, init=init)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = Starlette(
        routes=[Route("/api/SyncData", sync, methods=["POST"]), Route("/readyz", readyz, methods=["GET"])],
        lifespan=lifespan,
    )
    app.state.stager = stager
    return app
