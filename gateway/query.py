"""GetData for catalogs and documents: filters, field selection, ordering, whole pulls streamed, keyset paging
and incremental pulls.

Every identifier in the generated SQL comes from the form's declaration; a request only chooses among
declared fields (unknown names get a 400 naming them) and every value travels as a bind parameter.

A Fast client knows nothing of paging, so a pull without `limit` (and without `since`) answers every matching
row: read through a server-side cursor and sent chunk by chunk, so that a worker's memory does not grow with
the size of the answer.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
import asyncpg
import msgspec
import structlog
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .db import QUERIES
from .errors import BadRequest, shorten
from .feed import Cursors
from .forms import ORDERED_TYPES, TEXT_TYPES, Column, MasterForm
from .lenient import parse_date, quoted, text_problem
from .responses import encode, plain
from .sqlnames import ident

log = structlog.get_logger("gateway")

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
# Rows per read of a streamed pull: each chunk is read, encoded and sent before the next is read, so these
# bound a worker's memory. A document carries its lines, hence fewer of them at a time.
STREAM_CHUNK_ROWS = 2_000
STREAM_CHUNK_DOCUMENTS = 250
OPERATORS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "prefix", "contains")
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Bounds of what one request may ask for. Each value of an `in` list is a bind parameter the worker
# converts and PostgreSQL plans over; an unbounded one let a 63 MB request hold a worker for most of a minute.
MAX_IN_VALUES = 1_000
MAX_FIELDS = 200  # names in `fields` or `order_by`, and conditions in `filters`
# The values each integer type holds; a filter value outside them cannot be sent to PostgreSQL.
INTEGER_RANGES = {"smallint": (-2**15, 2**15 - 1), "integer": (-2**31, 2**31 - 1), "bigint": (-2**63, 2**63 - 1)}
# Digits of a numeric filter value before and after the point: far more than any stored number has
# (forms.NUMBER_LIMIT), far fewer than what PostgreSQL (or the driver) refuses only once the query runs.
NUMERIC_DIGITS = 100
_REQUEST_KEYS = {"form", "id", "datefrom", "dateto", "filters", "fields", "order_by", "limit", "cursor", "since"}


@dataclass
class _Sql:
    """Accumulates WHERE clauses and bind parameters; parameters are never inlined."""

    params: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def bind(self, value: Any, pgtype: str | None = None) -> str:
        self.params.append(value)
        ref = f"${len(self.params)}"
        return f"{ref}::{pgtype}" if pgtype else ref


def _value(col: Column, value: Any, what: str) -> Any:
    """Convert a filter value to the column's type, or say which field it does not fit.

    Every value that passes can be sent to PostgreSQL: in its type's range, a finite number of bounded
    digits, a text without NUL; else the request gets its 400 here, not a failure once the query runs.
    """
    try:
        if col.pgtype == "text":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TypeError
            text = str(value)
            problem = text_problem(text)
            if problem:
                raise BadRequest(f"{what}: the value {problem}", field=col.field)
            return text
        if col.pgtype == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
                raise TypeError
            number = Decimal(value.strip() if isinstance(value, str) else value)
            if not number.is_finite() or number.adjusted() >= NUMERIC_DIGITS \
                    or -int(number.as_tuple().exponent) > NUMERIC_DIGITS:
                raise BadRequest(f"{what}: value {quoted(value)} is not a finite number of at most "
                                 f"{NUMERIC_DIGITS} digits before and after the point", field=col.field)
            return number
        if col.pgtype in INTEGER_RANGES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            low, high = INTEGER_RANGES[col.pgtype]
            if not low <= value <= high:
                raise BadRequest(f"{what}: value {quoted(value)} is out of the range of field '{col.field}'"
                                 f" ({col.pgtype}, {low} to {high})", field=col.field)
            return value
        if col.pgtype == "date":
            date = parse_date(value)
            if date is None:
                raise TypeError
            return date
        if col.pgtype == "boolean":
            if not isinstance(value, bool):
                raise TypeError
            return value
    except (TypeError, ValueError, InvalidOperation):
        pass
    raise BadRequest(f"{what}: value {quoted(value)} does not fit field '{col.field}' ({col.pgtype})",
                     field=col.field)


def _column(form: MasterForm, name: Any, what: str) -> Column:
    canonical = form.field_map.get(name.lower()) if isinstance(name, str) else None
    if canonical is None:
        shown = shorten(name) if isinstance(name, str) else quoted(name)
        raise BadRequest(f"Unknown field '{shown}' in {what}; known fields: {', '.join(form.by_field)}",
                         field=shown)
    return form.by_field[canonical]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filters(form: MasterForm, sql: _Sql, filters: Any) -> None:
    if filters is None:
        return
    if not isinstance(filters, dict):
        raise BadRequest("Field 'filters' must be an object of field names to conditions", field="filters")
    conditions = 0
    for name, cond in filters.items():
        col = _column(form, name, "filters")
        ref = ident(col.name)
        if not isinstance(cond, dict):
            cond = {"eq": cond}
        if not cond:
            raise BadRequest(f"Filter on '{col.field}' has no condition", field=col.field)
        conditions += len(cond)
        if conditions > MAX_FIELDS:
            raise BadRequest(f"Field 'filters' holds more than {MAX_FIELDS} conditions", field="filters")
        for op, value in cond.items():
            op_l = op.lower() if isinstance(op, str) else op
            what = f"filter {col.field}.{op if op_l in OPERATORS else '?'}"
            if op_l not in OPERATORS:
                raise BadRequest(f"Unknown filter operator {quoted(op)} on '{col.field}'; use one of "
                                 f"{', '.join(OPERATORS)}", field=col.field)
            if op_l in ("prefix", "contains"):
                if col.pgtype not in TEXT_TYPES:
                    raise BadRequest(f"{what}: '{op}' applies to text fields only", field=col.field)
                text = _value(col, value, what)
                pattern = _like_escape(text) + "%" if op_l == "prefix" else "%" + _like_escape(text) + "%"
                # prefix is case-sensitive (it can use the key's index); contains ignores case.
                like = "LIKE" if op_l == "prefix" else "ILIKE"
                sql.where.append(f"{ref} {like} {sql.bind(pattern)} ESCAPE '\\'")
            elif op_l == "in":
                if not isinstance(value, list) or not value:
                    raise BadRequest(f"{what}: 'in' takes a non-empty list", field=col.field)
                if len(value) > MAX_IN_VALUES:
                    raise BadRequest(f"{what}: 'in' takes at most {MAX_IN_VALUES} values, got {len(value)}",
                                     field=col.field)
                values = [_value(col, v, what) for v in value]
                sql.where.append(f"{ref} = ANY({sql.bind(values, col.pgtype + '[]')})")
            else:
                if op_l not in ("eq", "ne") and col.pgtype not in ORDERED_TYPES:
                    raise BadRequest(f"{what}: '{op}' does not apply to {col.pgtype} fields", field=col.field)
                if value is None:
                    sql.where.append(f"{ref} IS {'NOT ' if op_l == 'ne' else ''}NULL")
                    if op_l not in ("eq", "ne"):
                        raise BadRequest(f"{what}: null only compares with eq or ne", field=col.field)
                    continue
                sql.where.append(f"{ref} {_COMPARE[op_l]} {sql.bind(_value(col, value, what), col.pgtype)}")


def _date(body: dict[str, Any], name: str) -> dt.date | None:
    value = body.get(name.lower())
    try:
        return parse_date(value)
    except ValueError:
        raise BadRequest(f"Field '{name}' must be a date yyyy-MM-dd or an ISO date-time, got {quoted(value)}",
                         field=name) from None


def _limit(body: dict[str, Any]) -> int:
    limit = body.get("limit", DEFAULT_LIMIT)
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"Field 'limit' must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return limit


def _order(form: MasterForm, order_by: Any) -> list[tuple[Column, bool]]:
    """[(column, descending)], always ending with the key so the order is total."""
    if order_by is None:
        order_by = []
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list):
        raise BadRequest("Field 'order_by' must be a list of field names, '-Name' for descending",
                         field="order_by")
    if len(order_by) > MAX_FIELDS:
        raise BadRequest(f"Field 'order_by' names more than {MAX_FIELDS} fields", field="order_by")
    out: list[tuple[Column, bool]] = []
    seen: set[str] = set()
    for item in order_by:
        if not isinstance(item, str) or not item.strip("-"):
            raise BadRequest(f"Bad order_by entry {quoted(item)}", field="order_by")
        desc = item.startswith("-")
        col = _column(form, item.lstrip("-"), "order_by")
        if col.pgtype not in ORDERED_TYPES:
            raise BadRequest(f"Cannot order by '{col.field}' ({col.pgtype})", field=col.field)
        if col.name not in seen:
            seen.add(col.name)
            out.append((col, desc))
    for col in form.key_columns:
        if col.name not in seen:
            out.append((col, False))
    return out


def _order_sig(form: MasterForm, order: list[tuple[Column, bool]]) -> str:
    text = form.name + ":" + ",".join(("-" if d else "") + c.name for c, d in order)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_cursor_encoder = msgspec.json.Encoder(decimal_format="string")


def _encode_cursor(sig: str, values: list[Any]) -> str:
    raw = _cursor_encoder.encode({"o": sig, "v": values})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sig: str, order: list[tuple[Column, bool]]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = msgspec.json.decode(raw)
        values = payload["v"]
        if payload["o"] != sig or not isinstance(values, list) or len(values) != len(order):
            raise ValueError
        return [None if v is None else _value(c, v, "cursor") for (c, _), v in zip(order, values)]
    except (ValueError, KeyError, TypeError, binascii.Error, msgspec.DecodeError, BadRequest):
        raise BadRequest("Field 'cursor' is not a cursor this query returned (same form and order_by)",
                         field="cursor") from None


def _after(sql: _Sql, order: list[tuple[Column, bool]], values: list[Any]) -> str:
    """Rows strictly after `values` in ORDER BY order (PostgreSQL sorts NULL as the largest value)."""
    directions = {desc for _, desc in order}
    if len(directions) == 1 and not any(c.nullable for c, _ in order):
        # One direction, no NULLs: a row comparison, which an index on these columns serves as a range.
        cols = ", ".join(ident(c.name) for c, _ in order)
        params = ", ".join(sql.bind(v, c.pgtype) for (c, _), v in zip(order, values))
        return f"({cols}) {'<' if directions == {True} else '>'} ({params})"
    ors = []
    eqs: list[str] = []
    for (col, desc), value in zip(order, values):
        ref = ident(col.name)
        if value is None:
            after = f"{ref} IS NOT NULL" if desc else "false"
            equal = f"{ref} IS NULL"
        else:
            param = sql.bind(value, col.pgtype)
            if desc:
                after = f"{ref} < {param}"
            else:
                after = f"({ref} > {param} OR {ref} IS NULL)" if col.nullable else f"{ref} > {param}"
            equal = f"{ref} = {param}"
        ors.append("(" + " AND ".join([*eqs, after]) + ")")
        eqs.append(equal)
    return "(" + " OR ".join(ors) + ")"


def _fields(form: MasterForm, fields: Any) -> list[Column]:
    if fields is None or fields == []:
        return list(form.columns)
    if not isinstance(fields, list):
        raise BadRequest("Field 'fields' must be a list of field names", field="fields")
    if len(fields) > MAX_FIELDS:
        raise BadRequest(f"Field 'fields' names more than {MAX_FIELDS} fields", field="fields")
    # A field named twice (in any spelling) comes once.
    chosen = list({c.name: c for c in (_column(form, f, "fields") for f in fields)}.values())
    # The key always comes back: a row without its key cannot be matched by the puller.
    for col in reversed(form.key_columns):
        if col not in chosen:
            chosen.insert(0, col)
    return chosen


async def get(conn: asyncpg.Connection, form: MasterForm, tenant_id: int, body: dict[str, Any],
              pool: asyncpg.Pool | None = None, cursors: Cursors | None = None) -> dict[str, Any] | StreamedPull:
    """A page (`limit`, `cursor`), a slice of the change feed (`since`), or else every matching row.

    Every matching row comes as a StreamedPull, which reads on a connection of its own from `pool` once it
    is sent; the request is checked and its SQL built here, so a bad request still gets its 400 before any
    byte. Without a pool the rows are read on `conn`, all at once.
    """
    body = {k.lower(): v for k, v in body.items()}
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        shown = shorten(unknown[0])
        raise BadRequest(f"Unknown request field '{shown}'", field=shown)
    paged = body.get("limit") is not None
    limit = _limit(body)
    columns = _fields(form, body.get("fields"))
    sql = _Sql()
    tenant_ref = sql.bind(tenant_id)
    for column, value in form.scope:  # the form's part of a shared table (vouchers)
        sql.where.append(f"{ident(column)} = {sql.bind(value)}")
    _filters(form, sql, body.get("filters"))

    key_id = body.get("id")
    if key_id not in (None, "", []):
        # A composite key comes as its parts joined by '|', or as a list of parts (which may hold '|').
        if isinstance(key_id, list) and all(isinstance(p, str) for p in key_id):
            parts = key_id
        elif isinstance(key_id, str):
            parts = key_id.split("|") if len(form.key) > 1 else [key_id]
        else:
            raise BadRequest("Field 'Id' must be a key: a string, or a list of the key's parts", field="Id")
        if len(parts) != len(form.key):
            raise BadRequest(f"Field 'Id' must hold {len(form.key)} parts: {', '.join(form.key)}"
                             " (joined by '|' or as a list)", field="Id")
        for col, part in zip(form.key_columns, parts):
            sql.where.append(f"{ident(col.name)} = {sql.bind(_value(col, part, 'Id'), col.pgtype)}")
    date_from, date_to = _date(body, "dateFrom"), _date(body, "dateTo")
    if date_from:
        sql.where.append(f"updated_at >= {sql.bind(date_from, 'date')}")
    if date_to:
        sql.where.append(f"updated_at < {sql.bind(date_to, 'date')} + 1")

    select = ", ".join(ident(c.name) for c in columns)
    if form.document_column:
        select += f", {ident(form.document_column)}"
    table = ident(form.table)
    since = body.get("since")
    if since is not None:
        if body.get("cursor") or body.get("order_by"):
            raise BadRequest("'since' pulls follow change order; drop 'cursor' and 'order_by'")
        if cursors is None:
            raise ValueError("a since pull needs the change feed's cursors")
        position = cursors.position(tenant_id, since)
        # Below every write of the tenant still running (gateway/feed.py); read before the rows, so that a
        # write that commits in between is either seen by both or left for the next pull.
        cutoff = await conn.fetchval(QUERIES["feed_cutoff"], tenant_id)
        xid, log_id, ord_ = (sql.bind(position[0]), sql.bind(position[1]), sql.bind(position[2]))
        rows_of_form = " AND ".join([f"tenant_id = {tenant_ref}", *sql.where])
        key_join = " AND ".join(f"t.{ident(c.name)} = (e.k->>{i})::{c.pgtype}" for i, c in enumerate(form.key_columns))
        # The change feed in order, each entry joined to the record's current state (or its tombstone) if
        # that entry made it: a record changed several times comes once, at its latest change.
        key_join += " AND t.change_seq = l.id"
        query = (
            f"SELECT {', '.join('t.' + ident(c.name) for c in columns)},"
            f"{' t.' + ident(form.document_column) + ',' if form.document_column else ''} t.deleted,"
            " l.xid::text AS _xid, l.id AS _id, e.ord AS _ord\n"
            "FROM change_log l CROSS JOIN LATERAL jsonb_array_elements(l.keys) WITH ORDINALITY AS e(k, ord)\n"
            f"JOIN (SELECT * FROM {table} WHERE {rows_of_form}) t ON {key_join}\n"
            f"WHERE l.tenant_id = {tenant_ref} AND l.tbl = {sql.bind(form.feed_name)}"
            f" AND l.xid >= {xid}::xid8 AND (l.xid, l.id, e.ord) > ({xid}::xid8, {log_id}::bigint, {ord_}::bigint)"
            # Only transactions below every write of the tenant still running: a change in flight cannot be
            # skipped by a cursor that has already moved past it.
            f" AND l.xid < {sql.bind(cutoff)}::text::xid8\n"
            f"ORDER BY l.xid, l.id, e.ord LIMIT {sql.bind(limit + 1)}"
        )
        rows = await conn.fetch(query, *sql.params)
        more = len(rows) > limit
        rows = rows[:limit]
        data = []
        for r in rows:
            if r["deleted"]:
                item = {c.field: r[c.name] for c in form.key_columns}
            else:
                item = _render(form, columns, r)
            item["Deleted"] = r["deleted"]
            data.append(item)
        last = rows[-1] if rows else None
        if last is not None:
            position = (int(last["_xid"]), last["_id"], last["_ord"])
        next_since = cursors.cursor(tenant_id, position)
        return {"records": len(data), "data": data, "next_since": next_since, "more": more}

    order = _order(form, body.get("order_by"))
    sig = _order_sig(form, order)
    cursor = body.get("cursor")
    if cursor not in (None, ""):
        if not isinstance(cursor, str):
            raise BadRequest("Field 'cursor' must be a string", field="cursor")
        sql.where.append(_after(sql, order, _decode_cursor(cursor, sig, order)))
    where = " AND ".join([f"tenant_id = {tenant_ref}", "NOT deleted", *sql.where])
    order_sql = ", ".join(f"{ident(c.name)}{' DESC' if d else ''}" for c, d in order)
    if not paged:
        # Only what a record is made of, in the order the renderer reads it.
        wanted = ident(form.document_column) if form.document_column else ", ".join(ident(c.name) for c in columns)
        query = f"SELECT {wanted} FROM {table} WHERE {where} ORDER BY {order_sql}"
        render = _rows_renderer(form, columns)
        if pool is None:
            data = render(await conn.fetch(query, *sql.params))
            return {"records": len(data), "data": data}
        chunk = STREAM_CHUNK_DOCUMENTS if form.document_column else STREAM_CHUNK_ROWS
        return StreamedPull(pool, query, sql.params, render, chunk, tenant_id)
    order_cols = ", ".join(f"{ident(c.name)} AS _o{i}" for i, (c, _) in enumerate(order))
    query = (f"SELECT {select}, {order_cols} FROM {table} WHERE {where} ORDER BY {order_sql}"
             f" LIMIT {sql.bind(limit + 1)}")
    rows = await conn.fetch(query, *sql.params)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [_render(form, columns, r) for r in rows]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = _encode_cursor(sig, [_jsonable(last[f"_o{i}"]) for i in range(len(order))])
    return {"records": len(data), "data": data, "next_cursor": next_cursor}


def _render(form: Any, columns: list[Column], row: Any) -> dict[str, Any]:
    """A record as the catalog spells it: from its columns, or the stored document (vouchers, lines included)."""
    if form.document_column:
        return dict(row[form.document_column])
    return {c.field: plain(row[c.name]) if c.pgtype == "numeric" else row[c.name] for c in columns}


def _rows_renderer(form: Any, columns: list[Column]) -> Callable[[list[asyncpg.Record]], list[Any]]:
    """For rows selected as exactly `columns` (or the document), in that order: objects that encode to the
    same JSON as what _render makes of each. A streamed pull renders every row of a table, and a struct is
    built and encoded about three times faster than a dict (bench/RESULTS.md, 2026-12-02)."""
    if form.document_column:
        return lambda rows: [r[0] for r in rows]  # each a fresh dict decoded from jsonb
    row_type = _row_type(tuple(c.field for c in columns))
    numeric = [i for i, c in enumerate(columns) if c.pgtype == "numeric"]
    if not numeric:
        return lambda rows: list(itertools.starmap(row_type, rows))

    def render(rows: list[asyncpg.Record]) -> list[Any]:
        out = []
        for r in rows:
            values = list(r)
            for i in numeric:
                values[i] = plain(values[i])
            out.append(row_type(*values))
        return out

    return render


@functools.lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """A struct whose fields encode, in order, under the catalog's names (which need not be identifiers).
    Its values are never containers, so the garbage collector need not track it."""
    return msgspec.defstruct("Row", [f"f{i}" for i in range(len(names))],
                             rename={f"f{i}": name for i, name in enumerate(names)}, gc=False)


_HEAD = b'{"success":true,"messages":"SUCCESS","data":['
_CLOSE_SECONDS = 10


class StreamedPull(StreamingResponse):
    """Every row of a pull in Fast's envelope, read through a server-side cursor and sent chunk by chunk.

    The rows are read on a connection taken from the pool when the response is sent: the handler has
    released its own by then, so a request never holds two (holding one while waiting for another would
    deadlock a busy pool). They come from one read-only REPEATABLE READ transaction: one snapshot, however
    many reads. The cursor is opened and the first chunk read before the status line goes out, so a
    failure there still gets the canonical error envelope. A failure after it is logged and cuts the
    connection: a client must see a broken body, never a valid-looking JSON that lacks rows.
    `records` follows `data`: it is known only at the end.
    """

    def __init__(self, pool: asyncpg.Pool, query: str, params: list[Any],
                 render: Callable[[list[asyncpg.Record]], list[Any]], chunk_rows: int, tenant_id: int) -> None:
        self._body = self._chunks()
        super().__init__(self._body, media_type="application/json")
        self._pool = pool
        self.sql = query
        self.params = params
        self._render = render
        self._chunk_rows = chunk_rows
        self._tenant_id = tenant_id
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._cursor: Any = None
        self._first: list[asyncpg.Record] = []
        self._started = False
        self._failed = False
        self._complete = False
        self.records = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._open()
            await super().__call__(scope, receive, send)
        finally:
            # Also when the client went away: the cancelled stream must still give its connection back.
            with anyio.CancelScope(shield=True):
                await self._body.aclose()
                await self._close()

    async def _open(self) -> None:
        # A failure here, before the status line, propagates to app.ErrorEnvelope, which answers it in the
        # envelope as it would any failure of the handler.
        self._conn = await self._pool.acquire()
        tx = self._conn.transaction(isolation="repeatable_read", readonly=True)
        await tx.start()
        self._tx = tx
        await self._conn.execute(QUERIES["pull_stream_settings"])
        # The connection is not the request's: the tenant, for row security, is set again, for this transaction.
        await self._conn.fetchval(QUERIES["tenant_set_local"], self._tenant_id)
        self._cursor = await self._conn.cursor(self.sql, *self.params)
        self._first = await self._cursor.fetch(self._chunk_rows)

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        self._started = True
        rows, self._first = self._first, []
        prefix = _HEAD
        try:
            while rows:
                encoded = encode(self._render(rows))  # "[{...},{...}]"
                self.records += len(rows)
                yield prefix + encoded[1:-1]
                prefix = b","
                rows = await self._cursor.fetch(self._chunk_rows) if len(rows) == self._chunk_rows else []
        except Exception as exc:
            self._failed = True
            log.error("stream_failed", records_sent=self.records, error=repr(exc))
            raise
        tail = b'],"records":%d,"code":200}' % self.records
        yield tail if prefix == b"," else _HEAD + tail
        self._complete = True
        log.info("streamed", records=self.records)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._started and not (self._complete or self._failed):
            log.info("stream_abandoned", records_sent=self.records)
        try:
            if self._tx is not None:
                # Read only: ending the snapshot is all there is to do. Bounded, as is the release: this
                # runs shielded from cancellation and must not keep a request open on a stuck connection.
                with anyio.move_on_after(_CLOSE_SECONDS):
                    await self._tx.rollback()
        except asyncpg.InterfaceError:
            pass  # the connection broke and the pool has taken it back already
        except (asyncpg.PostgresError, asyncpg.InternalClientError, OSError) as exc:
            log.warning("stream_rollback_failed", error=repr(exc))
        finally:
            try:
                # A connection that is broken, or still in its transaction, is reset or replaced by the pool.
                await self._pool.release(conn, timeout=_CLOSE_SECONDS)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the pool has closed that connection
                log.warning("stream_release_failed", error=repr(exc))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
