"""The write core: SyncData and SyncVoucher requests, master records and vouchers alike.

A request is planned without a connection (options, records, validation: `plan`), then applied (`apply`): one
transaction in which the kind's checks see and guard the rows they protect, and the writes follow. The core
owns what every form shares: atomic and partial modes, the dry run, the 601 of a refused batch, per-record
outcomes and the answer's counts. What differs is the kind's (a `Kind`): how records are prepared, what is
done before the transaction (numbers, staging tables), the checks inside it, and the write statements. Masters
are engine.MASTERS, vouchers vouchers.VOUCHERS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from . import engine, vouchers
from .db import in_transaction
from .engine import SyncOptions, WriteResult, parse_options, records_of
from .errors import DataStructureError, summarise


class Kind(Protocol):
    """What a kind of form supplies to the core."""

    noun: str  # what the 601 calls the records: "records", "vouchers"

    def prepare(self, form: Any, data: list[Any], options: SyncOptions) -> Any: ...

    def attempt(self, batch: Any) -> Any:
        """A copy of the prepared batch for one run of the transaction (one run again after a deadlock)."""

    def one_statement(self, batch: Any, options: SyncOptions) -> bool:
        """Whether the write is a single statement, which needs no BEGIN and COMMIT around it."""

    async def before(self, conn: asyncpg.Connection, form: Any, tenant_id: int, batch: Any,
                     options: SyncOptions) -> None:
        """Work that must not be rolled back with the transaction (numbers taken, staging tables made)."""

    async def check(self, conn: asyncpg.Connection, form: Any, tenant_id: int, batch: Any) -> None:
        """Inside the transaction, first: take the tenant's gate, check against the stored rows, fail records."""

    async def write(self, conn: asyncpg.Connection, form: Any, tenant_id: int, batch: Any,
                    options: SyncOptions) -> WriteResult: ...

    def key_text(self, form: Any, key: Any) -> str | None: ...


def kind_of(form: Any) -> Kind:
    if isinstance(form, vouchers.VoucherForm):
        return vouchers.VOUCHERS
    return engine.MASTERS


@dataclass
class SyncPlan:
    """A request checked and validated, before any database work."""

    form: Any
    kind: Kind
    options: SyncOptions
    data: list[Any]
    batch: Any


def plan(form: Any, body: dict[str, Any], max_records: int) -> SyncPlan:
    """Options, records and validation: CPU work done before a database connection is taken."""
    options = parse_options(body)
    data = records_of(body, max_records)
    kind = kind_of(form)
    return SyncPlan(form, kind, options, data, kind.prepare(form, data, options))


class _Refused(Exception):
    """The checks refused the batch whole: raised inside the transaction to roll it back."""

    def __init__(self, batch: Any) -> None:
        super().__init__()
        self.batch = batch


async def apply(conn: asyncpg.Connection, tenant_id: int, work: SyncPlan,
                keep: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Check and write the batch in one transaction; the answer's fields, or a 601 when it is refused.

    `keep` is given the answer inside the transaction, before it commits (the Idempotency-Key's store).
    """
    form, kind, options, data, prepared = work.form, work.kind, work.options, work.data, work.batch

    def refused(batch: Any) -> bool:
        return bool(batch.errors) and (options.mode == "atomic" or len(batch.failed_indexes) == len(data))

    if refused(prepared):
        raise refusal(work, prepared)
    await kind.before(conn, form, tenant_id, prepared, options)

    async def attempt() -> dict[str, Any]:
        batch = kind.attempt(prepared)
        await kind.check(conn, form, tenant_id, batch)
        if refused(batch):
            raise _Refused(batch)
        written = await kind.write(conn, form, tenant_id, batch, options)
        if refused(batch):  # the write itself may fail records (stock that would go negative)
            raise _Refused(batch)
        answer = _answer(work, batch, written)
        if keep is not None:
            await keep(answer)
        return answer

    try:
        return await in_transaction(conn, attempt, dry_run=options.dry_run,
                                    one_statement=keep is None and kind.one_statement(prepared, options))
    except _Refused as refusal_:
        raise refusal(work, refusal_.batch) from None


def _answer(work: SyncPlan, batch: Any, written: WriteResult) -> dict[str, Any]:
    result = {**written.counts(), "failed": len(batch.failed_indexes), "superseded": batch.superseded}
    synced = written.inserted + written.updated + written.unchanged + written.deleted
    response: dict[str, Any] = {"records": synced, "fkey": "", "result": result}
    if batch.errors:
        response["errors"] = batch.errors
    if batch.warnings:
        response["warnings"] = batch.warnings.as_list()
    if work.options.outcomes:
        response["outcomes"] = outcomes(work, batch, written)
    if work.options.dry_run:
        response["dry_run"] = True
    return response


def refusal(work: SyncPlan, batch: Any) -> DataStructureError:
    """The 601 of a batch refused whole: nothing was written."""
    options, data = work.options, work.data
    failed = len(batch.failed_indexes)
    result = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "failed": failed,
              "superseded": batch.superseded}
    what = "nothing was written" if not options.dry_run else "dry run"
    extra: dict[str, Any] = {"records": 0, "result": result, "errors": batch.errors}
    if options.outcomes:
        extra["outcomes"] = outcomes(work, batch, None)
    if batch.warnings:
        extra["warnings"] = batch.warnings.as_list()
    return DataStructureError(
        f"{failed} of {len(data)} {work.kind.noun} are invalid; {what}: {summarise(batch.errors)}", **extra)


def outcomes(work: SyncPlan, batch: Any, written: WriteResult | None) -> list[dict[str, Any]]:
    """What happened to each record of the request, by index."""
    written_at = {index: key for key, index in batch.index_of.items()}
    out = []
    for index, record in enumerate(work.data):
        key = batch.key_at.get(index)
        key_text = work.kind.key_text(work.form, key) if key is not None else None
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
