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


async def test_a_statement_of_its_own_is_retried_and_a_dry_run_of_it_still_rolls_back(
        db: asyncpg.Connection) -> None:
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await db.execute("INSERT INTO tenant (code, name) VALUES ($1, 'x')", f"one{calls}")
        if calls == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return calls

    assert await in_transaction(db, work, one_statement=True) == 2
    assert not db.is_in_transaction()  # it ran bare: no BEGIN, nothing left open
    await in_transaction(db, work, dry_run=True, one_statement=True)
    # The failed first try was a statement of its own here (no transaction to undo it): the work must
    # be one statement, as the caller promises; the dry run's row is gone.
    assert await codes(db) == ["one1", "one2"]


async def test_a_pooled_connection_keeps_no_session_state_between_requests(db_url: str) -> None:
    from gateway.db import GatewayConnection, init_connection

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1, init=init_connection,
                                     connection_class=GatewayConnection)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_sort = off")  # what a streamed pull does
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW enable_sort") == "on"
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SET LOCAL enable_sort = off")
        # Released inside its transaction (say a request cut short): the pool rolls it back.
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction() and await conn.fetchval("SHOW enable_sort") == "on"
    finally:
        await pool.close()
