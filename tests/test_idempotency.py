"""Idempotency-Key on writes: replay of the first answer, 422 for another body, 409 while in progress, and a
retry that runs at once when the first attempt died."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import add_user, assert_envelope, login, sessions_waiting

from gateway import auth, idempotency

BODY = b'{"form": "setCustomer", "data": [{"CustomerCode": "KH1", "CustomerName": "One"}]}'


async def post(client: httpx.AsyncClient, token: str, body: bytes, key: str | None) -> httpx.Response:
    headers = {"Authorization": token}
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/api/SyncData", content=body, headers=headers)


async def test_a_retry_with_the_same_key_replays_the_first_answer_and_writes_once(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    first = await post(client, token, BODY, "order-42")
    assert assert_envelope(first)["result"]["inserted"] == 1
    stamp = await db.fetchval("SELECT change_seq FROM customer")
    # Meanwhile someone else changes the record; the retry must not write the old value back.
    await db.execute("UPDATE customer SET customer_name = 'Changed since'")
    again = await post(client, token, BODY, "order-42")
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT customer_name FROM customer") == "Changed since"
    assert await db.fetchval("SELECT change_seq FROM customer") == stamp
    assert await db.fetchval("SELECT count(*) FROM change_log") == 1


async def test_a_request_that_dies_after_its_commit_is_replayed_not_run_again(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer commits with the work: a process that dies between the commit and finish() leaves it
    stored, and the retry replays it rather than running the work a second time."""
    async def die(conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
        conn.terminate()  # the connection (and with it the key's lock) goes, as when the process dies
        raise ConnectionResetError("the process died")

    monkeypatch.setattr(idempotency, "finish", die)
    assert (await post(client, token, BODY, "order-43")).status_code == 503
    monkeypatch.undo()
    # Meanwhile someone else changes the record; running the work again would write the old value back.
    await db.execute("UPDATE customer SET customer_name = 'Changed since'")
    again = await post(client, token, BODY, "order-43")
    assert again.headers["idempotent-replayed"] == "true"
    assert assert_envelope(again)["result"]["inserted"] == 1
    assert await db.fetchval("SELECT customer_name FROM customer") == "Changed since"
    assert await db.fetchval("SELECT count(*) FROM change_log") == 1


async def test_a_dry_run_under_a_key_is_replayed_as_a_dry_run(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    """A dry run's transaction, and the answer kept in it, is rolled back: the answer is stored after it."""
    body = BODY[:-1] + b', "dry_run": true}'
    first = await post(client, token, body, "dry-1")
    assert assert_envelope(first)["dry_run"] is True
    again = await post(client, token, body, "dry-1")
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def test_the_same_key_with_another_body_is_422_and_writes_nothing(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    assert (await post(client, token, BODY, "k1")).status_code == 200
    other = BODY.replace(b"One", b"Two")
    resp = await post(client, token, other, "k1")
    body = assert_envelope(resp)
    assert resp.status_code == 422 and body["code"] == 422 and "Idempotency-Key" in body["messages"]
    assert await db.fetchval("SELECT customer_name FROM customer") == "One"


async def claim_elsewhere(db_url: str, tenant: int, key: str, body: bytes = BODY) -> asyncpg.Connection:
    """A first attempt at `key` as a live request holds it: its row pending, its lock taken, on a session of
    its own (closing the session is that request's process dying)."""
    owner = await asyncpg.connect(db_url)
    await owner.execute("INSERT INTO idempotency_key (tenant_id, key, request_hash) VALUES ($1, $2, $3)",
                        tenant, key, hashlib.sha256(b"SyncData\0" + body).digest())
    assert await owner.fetchval("SELECT pg_try_advisory_lock($1)", idempotency.lock_id(tenant, key))
    return owner


async def advisory_locks(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                             " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


async def test_a_duplicate_while_the_first_is_running_gets_409_and_runs_at_once_when_it_died(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, db_url: str) -> None:
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    owner = await claim_elsewhere(db_url, tenant, "busy")
    try:
        resp = await post(client, token, BODY, "busy")
        assert resp.status_code == 409 and assert_envelope(resp)["code"] == 409
        assert await db.fetchval("SELECT count(*) FROM customer") == 0
    finally:
        await owner.close()
    # The first attempt's process died (its session ended): the retry takes the key over at once.
    first = await post(client, token, BODY, "busy")
    assert assert_envelope(first)["result"]["inserted"] == 1
    again = await post(client, token, BODY, "busy")
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT count(*) FROM change_log") == 1
    assert await advisory_locks(db) == 0  # the gateway's connections hold no lock between requests


async def test_a_request_whose_session_ends_mid_request_is_retried_at_once_and_written_once(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, db_url: str) -> None:
    watcher = await asyncpg.connect(db_url)
    try:
        async with db.transaction():
            await db.execute("LOCK TABLE customer IN EXCLUSIVE MODE")  # the write waits for it
            first = asyncio.create_task(post(client, token, BODY, "crash-1"))
            (pid,) = await sessions_waiting(watcher)  # the request, waiting for the table
            # While it runs, a duplicate is told to retry.
            duplicate = await post(client, token, BODY, "crash-1")
            assert duplicate.status_code == 409 and assert_envelope(duplicate)["code"] == 409
            await watcher.execute("SELECT pg_terminate_backend($1)", pid)
            resp = await asyncio.wait_for(first, 10)
        assert resp.status_code == 503 and assert_envelope(resp)["code"] == 503
    finally:
        await watcher.close()
    assert await db.fetchval("SELECT response_status FROM idempotency_key WHERE key = 'crash-1'") is None
    retry = await post(client, token, BODY, "crash-1")
    assert assert_envelope(retry)["result"]["inserted"] == 1 and "idempotent-replayed" not in retry.headers
    again = await post(client, token, BODY, "crash-1")
    assert again.content == retry.content and again.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT count(*) FROM customer") == 1
    assert await db.fetchval("SELECT count(*) FROM change_log") == 1


async def test_a_claim_cut_short_is_released_before_its_connection_serves_again(
        app: Any, client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    """A request that claimed a key and ended without finish() or release() (cancelled, say) leaves no lock
    on the pooled connection: the pool releases it, and a retry of the key runs."""
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    digest = hashlib.sha256(b"SyncData\0" + BODY).digest()
    pool = app.state.gateway.pool
    async with pool.acquire() as conn:
        await auth.principal_for(conn, app.state.gateway.tokens.decode(token))  # as a request starts: its tenant
        assert await idempotency.begin(conn, tenant, "cut", digest) is None
        assert await advisory_locks(db) == 1
    assert await advisory_locks(db) == 0
    assert assert_envelope(await post(client, token, BODY, "cut"))["result"]["inserted"] == 1


async def test_a_colliding_lock_may_delay_a_key_but_never_replays_another_answer(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, db_url: str) -> None:
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    first = await post(client, token, BODY, "done")
    assert first.status_code == 200
    other = await asyncpg.connect(db_url)  # another key's request whose lock happens to be these keys' too
    try:
        for key in ("done", "new"):
            assert await other.fetchval("SELECT pg_try_advisory_lock($1)", idempotency.lock_id(tenant, key))
        again = await post(client, token, BODY, "done")
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        resp = await post(client, token, BODY.replace(b"KH1", b"KH2"), "new")
        assert resp.status_code == 409 and assert_envelope(resp)["code"] == 409
        assert await db.fetchval("SELECT count(*) FROM customer") == 1
    finally:
        await other.close()
    assert assert_envelope(await post(client, token, BODY.replace(b"KH1", b"KH2"), "new"))["result"]["inserted"] == 1


def test_lock_ids_differ_between_tenants_and_keys() -> None:
    ids = {idempotency.lock_id(t, k) for t in (1, 2, 12) for k in ("a", "b", "2\x00a", "")}
    assert len(ids) == 12 and all(-(2 ** 63) <= i < 2 ** 63 for i in ids)


async def test_a_refused_request_is_replayed_as_refused(client: httpx.AsyncClient, token: str,
                                                       db: asyncpg.Connection) -> None:
    bad = b'{"form": "setCustomer", "data": [{"CustomerCode": "KH1"}]}'
    first = await post(client, token, bad, "bad-1")
    assert first.status_code == 200 and first.json()["code"] == 601
    again = await post(client, token, bad, "bad-1")
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def test_keys_belong_to_a_tenant_and_bad_keys_are_400(client: httpx.AsyncClient, token: str,
                                                            db: asyncpg.Connection) -> None:
    await add_user(db, "other", tenant="globex")
    other = await login(client, "other")
    assert (await post(client, token, BODY, "shared")).status_code == 200
    resp = await post(client, other, BODY, "shared")
    assert resp.status_code == 200 and "idempotent-replayed" not in resp.headers
    assert await db.fetchval("SELECT count(*) FROM customer") == 2
    for bad in ("x" * 256, "   "):
        resp = await post(client, token, BODY, bad)
        assert resp.status_code == 400 and assert_envelope(resp)["code"] == 400
