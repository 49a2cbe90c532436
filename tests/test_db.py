"""The transaction helper every write goes through, and the migrations, against the real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.db import MAX_ATTEMPTS, in_transaction, migrate, migration_files


async def codes(db: asyncpg.Connection) -> list[str]:
    return [r["code"] for r in await db.fetch("SELECT code FROM tenant ORDER BY code")]


async def test_a_transaction_aborted_to_break_a_deadlock_is_run_again_from_scratch(db: asyncpg.Connection) -> None:
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await db.execute("INSERT INTO tenant (code, name) VALUES ($1, 'x')", f"try{calls}")
        if calls == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return calls

    assert await in_transaction(db, work) == 2
    assert await codes(db) == ["try2"]  # the aborted attempt left nothing behind


async def test_it_gives_up_after_the_last_attempt(db: asyncpg.Connection) -> None:
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        await db.execute("INSERT INTO tenant (code, name) VALUES ($1, 'x')", f"try{calls}")
        raise asyncpg.exceptions.SerializationError("could not serialize access")

    with pytest.raises(asyncpg.exceptions.SerializationError):
        await in_transaction(db, work)
    assert calls == MAX_ATTEMPTS and await codes(db) == []


async def test_a_dry_run_is_rolled_back_and_other_errors_are_not_retried(db: asyncpg.Connection) -> None:
    async def work() -> str:
        await db.execute("INSERT INTO tenant (code, name) VALUES ('dry', 'x')")
        return "done"

    assert await in_transaction(db, work, dry_run=True) == "done"
    assert await codes(db) == []

    async def broken() -> None:
        await db.execute("INSERT INTO tenant (code, name) VALUES ('half', 'x')")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        await in_transaction(db, broken)
    assert await codes(db) == []


async def test_migrations_are_recorded_and_not_applied_twice(db: asyncpg.Connection) -> None:
    applied = [r["name"] for r in await db.fetch("SELECT name FROM schema_migrations ORDER BY version")]
    assert applied == [path.name for _, path in migration_files()]
    assert await migrate(db) == []
