"""Master records for the write core (gateway/sync.py): records in, validated rows out, one batched upsert.

Request options, records and validation (normalise names, validate, fold repeated keys: `prepare`), then the
write (sorted, set-based: `write`), and MASTERS, what the core calls. Any master form runs through here
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from .db import ensure_stage
from .errors import (
    MESSAGE_CHARS,
    BadRequest,
    EmptyData,
    PayloadTooLarge,
    shorten,
)
from .forms import MasterForm
from .lenient import Warnings
from .references import GATE_EXCLUSIVE, GATE_SHARED

MODES = ("atomic", "partial")
# Up to this many records a write sends its rows as arrays in one statement instead of COPY into staging:
# a point-of-sale request carries one record, and COPY costs it a round trip of its own.
SMALL_BATCH = 64
ACTIONS = ("upsert", "delete")


@dataclass(frozen=True)
class SyncOptions:
    mode: str = "atomic"
    dry_run: bool = False
    outcomes: bool = False
    strict: bool = False  # unknown fields in a record are refused instead of ignored with a warning


_REQUEST_KEYS = frozenset({"form", "data", "mode", "dry_run", "outcomes", "strict"})


def json_pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _flag(lowered: dict[str, Any], name: str) -> bool:
    value = lowered.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"Field '{name}' must be true or false")
    return value


def parse_options(body: dict[str, Any]) -> SyncOptions:
    lowered = {k.lower(): v for k, v in body.items()}
    unknown = sorted(set(lowered) - _REQUEST_KEYS)
    if unknown:
        # A misspelt option (say "dryrun") must not be ignored and the data written for real.
        raise BadRequest(f"Unknown request field '{unknown[0]}'; known: {', '.join(sorted(_REQUEST_KEYS))}",
                         field=unknown[0])
    mode = lowered.get("mode", "atomic")
    if mode is None:
        mode = "atomic"
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise BadRequest(f"Field 'mode' must be one of {', '.join(MODES)}")
    return SyncOptions(mode=mode.lower(), dry_run=_flag(lowered, "dry_run"), outcomes=_flag(lowered, "outcomes"),
                       strict=_flag(lowered, "strict"))


def records_of(body: dict[str, Any], max_records: int) -> list[Any]:
    data = next((v for k, v in body.items() if k.lower() == "data"), None)
    if data is None or data == []:
        raise EmptyData("Data is empty: 'data' must be a non-empty list of records")
    if not isinstance(data, list):
        raise BadRequest("Field 'data' must be a list of records")
    if len(data) > max_records:
        raise PayloadTooLarge(f"At most {max_records} records per request, got {len(data)}")
    return data


@dataclass
class Batch:
    """What a request asks for, after validation: last occurrence of each key wins."""

    upserts: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    deletes: dict[tuple, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed_indexes: set[int] = field(default_factory=set)
    superseded: int = 0
    # Index in `data` of the occurrence of each key that is written (the last valid one).
    index_of: dict[tuple, int] = field(default_factory=dict)
    # The key of every record whose key could be read (kept when per-record outcomes are asked for).
    key_at: dict[int, tuple] = field(default_factory=dict)
    warnings: Warnings = field(default_factory=Warnings)


def _record_error(batch: Batch, index: int, key: str | None, path: str, message: str) -> None:
    batch.errors.append({"index": index, "key": key if key is None else shorten(key), "path": shorten(path, tail=64),
                         "message": shorten(message, MESSAGE_CHARS, tail=64)})
    batch.failed_indexes.add(index)


def prepare(form: MasterForm, data: list[Any], keep_keys: bool = False, strict: bool = False) -> Batch:
    if not form.checks and form.batch_validator.is_valid(data):
        return _prepare_valid(form, data, keep_keys)
    return _prepare_each(form, data, keep_keys, strict)


def _prepare_valid(form: MasterForm, data: list[dict[str, Any]], keep_keys: bool) -> Batch:
    """Every record is a valid upsert spelled as the catalog spells it (the batch validator said so).

    Same result as the per-record path, without its per-record work: keys required by the schema, no
    `action` (additionalProperties would have refused it), so no record fails and none is a delete.
    """
    if len(form.key) == 1:
        name = form.key[0]
        keys = [(r[name],) for r in data]
    else:
        names = form.key
        keys = [tuple([r[n] for n in names]) for r in data]
    batch = Batch(upserts=dict(zip(keys, data)))  # the last occurrence of a key wins
    batch.index_of = {k: i for i, k in enumerate(keys)}
    batch.superseded = len(data) - len(batch.upserts)
    if keep_keys:
        batch.key_at = dict(enumerate(keys))
    return batch


def _prepare_each(form: MasterForm, data: list[Any], keep_keys: bool, strict: bool = False) -> Batch:
    """Record by record: read as clients send them (names in any case, nulls, dates, numbers in text),
    actions, errors with index, key and path."""
    batch = Batch()
    warnings = None if strict else batch.warnings
    latest = batch.index_of
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            _record_error(batch, index, None, "", "Record must be a JSON object")
            continue
        norm = form.reader.read(record, index, warnings)
        action = norm.pop("action", "upsert")
        raw_key = tuple([norm.get(k) for k in form.key])
        if keep_keys:  # only per-record outcomes need every record's key
            batch.key_at[index] = raw_key
        deleting = action == "delete" or (isinstance(action, str) and action.lower() == "delete")
        if action != "upsert" and not deleting and not (isinstance(action, str) and action.lower() in ACTIONS):
            _record_error(batch, index, form.key_text(raw_key), "/action",
                          f"action must be one of {', '.join(ACTIONS)}")
            continue
        validator = form.delete_validator if deleting else form.validator
        if not validator.is_valid(norm):
            key_text = form.key_text(raw_key)
            for err in validator.iter_errors(norm):
                _record_error(batch, index, key_text, json_pointer(err.instance_path), err.message)
            if key_text is not None:
                # The last occurrence is invalid: no earlier occurrence of that key is written either.
                _supersede(batch, latest, raw_key)
            continue
        if form.checks and not deleting:
            problems = [p for check in form.checks for p in check(norm)]
            if problems:
                for path, message in problems:
                    _record_error(batch, index, form.key_text(raw_key), path, message)
                _supersede(batch, latest, raw_key)
                continue
        _supersede(batch, latest, raw_key)
        latest[raw_key] = index
        if deleting:
            batch.deletes[raw_key] = index
        else:
            batch.upserts[raw_key] = norm
    return batch


def rows_of(form: MasterForm, records: list[dict[str, Any]]) -> list[list[Any]]:
    """Each record as a row in column order, defaults applied and values converted.

    map(record.get, fields) builds a row in C; only the few columns with a default or a converter are then
    visited in Python.
    """
    fields = form.row_fields
    rows = [list(map(r.get, fields)) for r in records]
    for i, default, convert in form.row_fixes:
        for row in rows:
            v = row[i]
            if v is None:
                row[i] = default
            elif convert is not None:
                row[i] = convert(v)
    return rows


def _supersede(batch: Batch, latest: dict[tuple, int], key: tuple) -> None:
    if key in latest:
        batch.superseded += 1
        del latest[key]
        batch.upserts.pop(key, None)
        batch.deletes.pop(key, None)


@dataclass
class WriteResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # With keys asked for: key -> "inserted" / "updated" / "deleted" for the keys that changed.
    changed: dict[Any, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged,
                "deleted": self.deleted}


async def write(conn: asyncpg.Connection, form: MasterForm, tenant_id: int, batch: Batch,
                with_keys: bool = False) -> WriteResult:
    """Upsert and delete, keys in one order so concurrent batches lock in one order; inside the caller's
    transaction (or as the one statement that is a transaction by itself, see MASTERS.one_statement)."""
    records = rows_of(form, list(batch.upserts.values()))  # the merge statement orders them by key
    delete_keys = sorted(batch.deletes)
    key_names = [c.name for c in form.key_columns]
    small = len(records) <= SMALL_BATCH
    # A few records travel as one array per column in the statement itself; many go through COPY.
    statement = form.sql[("upsert_small" if small else "upsert") + ("_keys" if with_keys else "")]
    out = WriteResult()
    if delete_keys and (records or len(delete_keys) > 1):
        # Every stored row of the batch locked first, in the database's key order, in one statement: the
        # upsert orders its rows by key, but the upsert then the delete (or a delete's join on its own)
        # would lock in another order than a concurrent batch of the same keys, and deadlock with it.
        keys = [*batch.upserts, *delete_keys]
        await conn.execute(form.sql["lock"], tenant_id, *([k[i] for k in keys] for i in range(len(form.key))))
    if records:
        if small:
            arrays = [list(values) for values in zip(*records)]
        else:
            arrays = []
            await conn.copy_records_to_table(form.stage_table, records=records,
                                             columns=[c.name for c in form.columns])
        if with_keys:
            changed = await conn.fetch(statement, tenant_id, form.table, *arrays)
            out.inserted = sum(1 for r in changed if r["inserted"])
            out.updated = len(changed) - out.inserted
            out.changed.update((tuple(r[k] for k in key_names), "inserted" if r["inserted"] else "updated")
                               for r in changed)
        else:
            counts = await conn.fetchrow(statement, tenant_id, form.table, *arrays)
            out.inserted, out.updated = counts["inserted"], counts["changed"] - counts["inserted"]
    if delete_keys:
        arrays = [[k[i] for k in delete_keys] for i in range(len(form.key))]
        gone = await conn.fetch(form.sql["delete"], tenant_id, form.table, *arrays)
        out.changed.update((tuple(r[k] for k in key_names), "deleted") for r in gone)
        out.deleted = len(gone)
    out.unchanged = len(records) + len(delete_keys) - out.inserted - out.updated - out.deleted
    return out


class _Masters:
    """Master records, for the write core (gateway/sync.py)."""

    noun = "records"

    def prepare(self, form: MasterForm, data: list[Any], options: SyncOptions) -> Batch:
        return prepare(form, data, keep_keys=options.outcomes, strict=options.strict)

    def attempt(self, batch: Batch) -> Batch:
        # The checks only refuse deletes: the upserts are shared, not copied.
        return replace(batch, deletes=dict(batch.deletes), errors=list(batch.errors),
                       failed_indexes=set(batch.failed_indexes))

    def one_statement(self, batch: Batch, options: SyncOptions | None = None) -> bool:
        # A small batch without deletes: one statement, no BEGIN and COMMIT around it.
        return len(batch.upserts) <= SMALL_BATCH and not batch.deletes

    async def before(self, conn: asyncpg.Connection, form: MasterForm, tenant_id: int, batch: Batch,
                     options: SyncOptions) -> None:
        if len(batch.upserts) > SMALL_BATCH:
            # Outside the transaction: a rollback (dry run, retry) must not undo it behind the connection's back.
            await ensure_stage(conn, form.stage_table, form.sql["stage_create"])

    async def check(self, conn: asyncpg.Connection, form: MasterForm, tenant_id: int, batch: Batch) -> None:
        """The tenant's gate, before anything gives the transaction an id (gateway/feed.py); exclusive for a
        delete of records vouchers may use, which are then looked up (gateway/references.py) and refused while
        live vouchers name them. A statement that is its own transaction takes the gate itself."""
        if self.one_statement(batch):
            return
        if not batch.deletes or form.guard_sql is None:
            await conn.execute(GATE_SHARED, tenant_id)
            return
        # The gate first: voucher writes under way commit, and the look-up that follows sees their lines.
        await conn.execute(GATE_EXCLUSIVE, tenant_id)
        keys = sorted(batch.deletes)
        used = {r["code"] for r in await conn.fetch(form.guard_sql, tenant_id, [k[0] for k in keys])}
        for key in keys:
            if key[0] in used:
                _record_error(batch, batch.deletes.pop(key), form.key_text(key), f"/{form.key[0]}",
                              f"{form.key[0]} '{key[0]}' is used by live vouchers; cancel or change them "
                              "before deleting it")

    async def write(self, conn: asyncpg.Connection, form: MasterForm, tenant_id: int, batch: Batch,
                    options: SyncOptions) -> WriteResult:
        return await write(conn, form, tenant_id, batch, with_keys=options.outcomes)

    def key_text(self, form: MasterForm, key: tuple) -> str | None:
        return form.key_text(key)


MASTERS = _Masters()
