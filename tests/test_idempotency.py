"""Idempotency-Key on writes: replay of the first answer, 422 for another body, 409 while in progress."""

from __future__ import annotations

import hashlib

import asyncpg
import httpx
from conftest import add_user, assert_envelope, login

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


async def test_the_same_key_with_another_body_is_422_and_writes_nothing(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    assert (await post(client, token, BODY, "k1")).status_code == 200
    other = BODY.replace(b"One", b"Two")
    resp = await post(client, token, other, "k1")
    body = assert_envelope(resp)
    assert resp.status_code == 422 and body["code"] == 422 and "Idempotency-Key" in body["messages"]
    assert await db.fetchval("SELECT customer_name FROM customer") == "One"


async def test_a_duplicate_while_the_first_is_running_gets_409(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    digest = hashlib.sha256(b"SyncData\0" + BODY).digest()
    await db.execute("INSERT INTO idempotency_key (tenant_id, key, request_hash) VALUES ($1, 'busy', $2)",
                     tenant, digest)
    resp = await post(client, token, BODY, "busy")
    assert resp.status_code == 409 and assert_envelope(resp)["code"] == 409
    assert await db.fetchval("SELECT count(*) FROM customer") == 0
    # A first attempt whose process died long ago is taken over by the retry.
    await db.execute("UPDATE idempotency_key SET created_at = now() - interval '1 hour'")
    assert assert_envelope(await post(client, token, BODY, "busy"))["result"]["inserted"] == 1


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
