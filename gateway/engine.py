"""The sync engine: records in, validated rows out, one batched upsert per request.

Stages: options -> prepare (normalise names, validate, fold repeated keys) -> write (sorted, set-based,
in one transaction) -> result. Any master form runs through here unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .db import ensure_stage, in_transaction
from .errors import BadRequest, DataStructureError, EmptyData, PayloadTooLarge, summarise
from .forms import MasterForm
from .lenient import Warnings
from .references import GATE_EXCLUSIVE

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
    batch.errors.append({"index": index, "key": key, "path": path, "message": message})
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
    changed: dict[tuple, str] = field(default_factory=dict)
    # Deletes refused because live vouchers use the record (gateway/references.py); in an atomic batch, their
    # refusal rolled the whole batch back.
    refused: list[tuple] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged,
                "deleted": self.deleted}


class _InUse(Exception):
    """Deletes refused in an atomic batch: raised to roll the batch back."""

    def __init__(self, keys: list[tuple]) -> None:
        super().__init__(keys)
        self.keys = keys


async def write(conn: asyncpg.Connection, form: MasterForm, tenant_id: int, batch: Batch,
                dry_run: bool, with_keys: bool = False, atomic: bool = True) -> WriteResult:
    """Upsert and delete in one transaction, keys in one order so concurrent batches lock in one order.

    A delete of records that live vouchers use is refused (WriteResult.refused): in an atomic batch nothing is
    written, in a partial one the other records are.
    """
    records = rows_of(form, list(batch.upserts.values()))  # the merge statement orders them by key
    delete_keys = sorted(batch.deletes)
    delete_arrays = [[k[i] for k in delete_keys] for i in range(len(form.key))]
    key_names = [c.name for c in form.key_columns]
    column_names = [c.name for c in form.columns]
    small = len(records) <= SMALL_BATCH
    if records and not small:
        # Outside the transaction: a rollback (dry run, retry) must not undo it behind the connection's back.
        await ensure_stage(conn, form.stage_table, form.sql["stage_create"])
    # A few records travel as one array per column in the statement itself; many go through COPY.
    statement = form.sql[("upsert_small" if small else "upsert") + ("_keys" if with_keys else "")]
    arrays = [list(values) for values in zip(*records)] if small else []

    guarded = bool(delete_keys) and form.guard_sql is not None

    async def work() -> WriteResult:
        out = WriteResult()
        deleting = delete_arrays
        if guarded:
            # The gate first: voucher writes under way commit, and the lookup that follows sees their lines.
            await conn.execute(GATE_EXCLUSIVE, tenant_id)
            used = {r["code"] for r in await conn.fetch(form.guard_sql, tenant_id, delete_arrays[0])}
            out.refused = [k for k in delete_keys if k[0] in used]
            if out.refused and atomic:
                raise _InUse(out.refused)
            deleting = [[k[0] for k in delete_keys if k[0] not in used]]
        if delete_keys and (records or len(delete_keys) > 1):
            # Every stored row of the batch locked first, in the database's key order, in one statement: the
            # upsert orders its rows by key, but the upsert then the delete (or a delete's join on its own)
            # would lock in another order than a concurrent batch of the same keys, and deadlock with it.
            keys = [*batch.upserts, *delete_keys]
            await conn.execute(form.sql["lock"], tenant_id, *([k[i] for k in keys] for i in range(len(form.key))))
        if records:
            if not small:
                await conn.copy_records_to_table(form.stage_table, records=records, columns=column_names)
            if with_keys:
                changed = await conn.fetch(statement, tenant_id, form.table, *arrays)
                out.inserted = sum(1 for r in changed if r["inserted"])
                out.updated = len(changed) - out.inserted
                out.changed.update((tuple(r[k] for k in key_names), "inserted" if r["inserted"] else "updated")
                                   for r in changed)
            else:
                counts = await conn.fetchrow(statement, tenant_id, form.table, *arrays)
                out.inserted, out.updated = counts["inserted"], counts["changed"] - counts["inserted"]
        if deleting[0]:
            gone = await conn.fetch(form.sql["delete"], tenant_id, form.table, *deleting)
            out.changed.update((tuple(r[k] for k in key_names), "deleted") for r in gone)
            out.deleted = len(gone)
        out.unchanged = (len(records) + len(delete_keys) - len(out.refused)
                         - out.inserted - out.updated - out.deleted)
        return out

    try:
        # A small batch without deletes is one statement: no BEGIN and COMMIT around it.
        return await in_transaction(conn, work, dry_run=dry_run, one_statement=small and not delete_keys)
    except _InUse as refusal:
        return WriteResult(refused=refusal.keys)


def outcomes(form: MasterForm, data: list[Any], batch: Batch, written: WriteResult | None) -> list[dict[str, Any]]:
    """What happened to each record of the request, by index."""
    written_at = {index: key for key, index in batch.index_of.items()}
    out = []
    for index in range(len(data)):
        record = data[index]
        key = batch.key_at.get(index)
        key_text = form.key_text(key) if key is not None else None
        if index in batch.failed_indexes:
            status = "failed"
        elif index not in written_at:
            status = "superseded"
        elif written is None:
            status = "not_written"
        else:
            status = written.changed.get(written_at[index], "unchanged")
        out.append({"index": index, "key": key_text if isinstance(record, dict) else None, "status": status})
    return out


@dataclass
class SyncPlan:
    """A request checked and validated, before any database work (masters and vouchers alike)."""

    form: Any
    options: SyncOptions
    data: list[Any]
    batch: Any


def _refusal(form: MasterForm, options: SyncOptions, data: list[Any], batch: Batch) -> DataStructureError:
    """The 601 of a batch refused whole."""
    failed = len(batch.failed_indexes)
    result = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "failed": failed,
              "superseded": batch.superseded}
    what = "nothing was written" if not options.dry_run else "dry run"
    extra: dict[str, Any] = {"records": 0, "result": result, "errors": batch.errors}
    if options.outcomes:
        extra["outcomes"] = outcomes(form, data, batch, None)
    if batch.warnings:
        extra["warnings"] = batch.warnings.as_list()
    return DataStructureError(f"{failed} of {len(data)} records are invalid; {what}: {summarise(batch.errors)}",
                              **extra)


def plan(form: MasterForm, body: dict[str, Any], max_records: int) -> SyncPlan:
    """Options, records and validation: CPU work done before a database connection is taken."""
    options = parse_options(body)
    data = records_of(body, max_records)
    return SyncPlan(form, options, data, prepare(form, data, keep_keys=options.outcomes, strict=options.strict))


async def apply(conn: asyncpg.Connection, tenant_id: int, work: SyncPlan) -> dict[str, Any]:
    """Refuse the request if its records are invalid (atomic mode), else write it; the response fields."""
    form, options, data, batch = work.form, work.options, work.data, work.batch
    if batch.errors and (options.mode == "atomic" or len(batch.failed_indexes) == len(data)):
        raise _refusal(form, options, data, batch)
    written = await write(conn, form, tenant_id, batch, options.dry_run, with_keys=options.outcomes,
                          atomic=options.mode == "atomic")
    for key in written.refused:
        _record_error(batch, batch.deletes[key], form.key_text(key), f"/{form.key[0]}",
                      f"{form.key[0]} '{key[0]}' is used by live vouchers; cancel or change them before deleting it")
    if written.refused and (options.mode == "atomic" or len(batch.failed_indexes) == len(data)):
        raise _refusal(form, options, data, batch)
    result = {**written.counts(), "failed": len(batch.failed_indexes), "superseded": batch.superseded}
    synced = written.inserted + written.updated + written.unchanged + written.deleted
    response: dict[str, Any] = {"records": synced, "fkey": "", "result": result}
    if batch.errors:
        response["errors"] = batch.errors
    if batch.warnings:
        response["warnings"] = batch.warnings.as_list()
    if options.outcomes:
        response["outcomes"] = outcomes(form, data, batch, written)
    if options.dry_run:
        response["dry_run"] = True
    return response
