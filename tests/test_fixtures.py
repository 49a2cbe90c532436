"""The test databases of conftest: each comes back to the next test as the migrated template was."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import Databases


async def test_a_database_comes_back_empty_unanalysed_with_fresh_sequences_and_settings(
        databases: Databases) -> None:
    site, name = lent = databases.acquire()
    url = site.url(name)
    conn = await asyncpg.connect(url)
    left_open = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO tenant (code, name) SELECT 't' || g, 'T' FROM generate_series(1, 500) g")
        await conn.execute("SELECT nextval('change_seq'); ANALYZE tenant")
        await conn.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout TO '5s'")
        # A session the test forgot, in the middle of a transaction that holds a lock.
        await left_open.execute("BEGIN; SELECT * FROM tenant FOR UPDATE")
        left_pid = left_open.get_server_pid()
    finally:
        await conn.close()
    databases.release(lent)
    lent = databases.acquire(site)
    if not site.recycle:
        pytest.skip("the server does not let the tests clear statistics: each test gets a fresh clone")
    assert lent == (site, name)  # handed on, not dropped and cloned again
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", left_pid) == 0
        assert await conn.fetchval("SELECT count(*) FROM tenant") == 0
        row = await conn.fetchrow("SELECT relpages, reltuples, pg_relation_size(oid) AS size FROM pg_class"
                                  " WHERE oid = 'tenant'::regclass")
        assert tuple(row) == (0, -1, 0)
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE schemaname = 'public'") == 0
        row = await conn.fetchrow("SELECT last_analyze, n_tup_ins FROM pg_stat_user_tables WHERE relname = 'tenant'")
        assert tuple(row) == (None, 0)
        assert tuple(await conn.fetchrow("SELECT last_value, is_called FROM change_seq")) == (1, False)
        assert await conn.fetchval("SHOW statement_timeout") == "0"
        assert await conn.fetchval("INSERT INTO tenant (code, name) VALUES ('t1', 'T') RETURNING id") == 1
    finally:
        await conn.close()
        await left_open.close(timeout=5)
        databases.release(lent)


async def test_a_database_whose_schema_a_test_changed_is_dropped(databases: Databases) -> None:
    site, name = lent = databases.acquire()
    conn = await asyncpg.connect(site.url(name))
    try:
        await conn.execute("ALTER TABLE tenant SET (autovacuum_enabled = false)")
    finally:
        await conn.close()
    databases.release(lent)
    lent = databases.acquire(site)
    try:
        assert lent[1] != name and name not in site.made
        admin = await asyncpg.connect(site.server_url)
        try:
            assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
        finally:
            await admin.close()
    finally:
        databases.release(lent)
