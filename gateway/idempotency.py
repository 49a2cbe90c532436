"""Idempotency-Key: the first answer to a write is stored and replayed to retries of the same request.

A retry of the same key and body gets the stored answer (header `Idempotent-Replayed: true`); the same key
with another body gets 422; a retry while the first request is still running gets 409. Answers that say
"try again" (409 collisions, 429, 5xx) are not stored, so the retry runs. Keys are kept for 24 hours.

"Still running" is decided by PostgreSQL, not by a clock: the request that claims a key holds a session-level
advisory lock derived from (tenant, key) on its connection until its answer is stored (or the key released).
Should its process die or its connection break half-way, PostgreSQL ends the session and so releases the
lock: a retry that finds the key pending and can take the lock knows its owner is gone, and takes the key
over at once. Two keys whose locks collide only make each other's retries wait (409), never replay the wrong
answer: what a retry replays is read by (tenant, key).

A successful answer is stored in the transaction that does the work (store(), called by the write core), so
the work and its answer commit together: a retry after a crash either finds the answer and replays it, or
finds neither and runs the work. finish() then releases the lock; it stores the answer itself where no
transaction kept it: a dry run's (rolled back) and a refused request's (a 601, which wrote nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import dataclass

import asyncpg

from .db import QUERIES
from .errors import BadRequest, Conflict, GatewayError

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
PURGE_CHANCE = 0.01


class KeyReused(GatewayError):
    status, code, message = 422, 422, "Idempotency-Key was already used with a different request body"


@dataclass(frozen=True)
class Stored:
    status: int
    body: bytes


def check_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_KEY_LENGTH or not value.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return value


def fingerprint(endpoint: str, body: bytes) -> bytes:
    return hashlib.sha256(endpoint.encode() + b"\0" + body).digest()


def lock_id(tenant_id: int, key: str) -> int:
    """The advisory lock of a tenant's key: 64 bits of a hash, so that two keys rarely share one."""
    digest = hashlib.sha256(b"idempotency\0%d\0" % tenant_id + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def retryable(status: int) -> bool:
    """An answer that asks the client to try again, which a retry must not get replayed."""
    return status in (409, 429) or status >= 500


def _held(conn: asyncpg.Connection) -> set[int]:
    # A pooled GatewayConnection keeps the set, so that the pool releases what a request could not (db.py).
    locks = getattr(conn, "session_locks", None)
    return locks if isinstance(locks, set) else set()


async def _try_lock(conn: asyncpg.Connection, lock: int) -> bool:
    held = _held(conn)
    held.add(lock)  # before asking: a request cut short while asking still has it released by the pool
    taken = bool(await conn.fetchval(QUERIES["idempotency_lock"], lock))
    if not taken:
        held.discard(lock)
    return taken


async def _unlock(conn: asyncpg.Connection, tenant_id: int, key: str) -> None:
    lock = lock_id(tenant_id, key)
    await conn.fetchval(QUERIES["idempotency_unlock"], lock)
    _held(conn).discard(lock)


async def begin(conn: asyncpg.Connection, tenant_id: int, key: str, digest: bytes) -> Stored | None:
    """Claim the key for this request, or return the stored answer to replay. Runs outside any transaction.

    None: the key is this request's, with its lock held until finish() or release(), which must follow on
    every path.
    """
    if random.random() < PURGE_CHANCE:
        await conn.execute(QUERIES["idempotency_purge"])
    if await _try_lock(conn, lock_id(tenant_id, key)):
        # No live request has the key: a pending row is one whose request died, and is taken over.
        claimed = False
        try:
            claimed = bool(await conn.fetchval(QUERIES["idempotency_claim"], tenant_id, key, digest))
        finally:
            if not claimed:
                with contextlib.suppress(Exception):
                    await _unlock(conn, tenant_id, key)
        if claimed:
            return None
    row = await conn.fetchrow(QUERIES["idempotency_get"], tenant_id, key)
    if row is not None and row["request_hash"] != digest:
        raise KeyReused()
    if row is None or row["response_status"] is None:
        # Pending with its owner alive; or no row while another request holds the lock (one about to claim
        # this key, or one whose key's lock collides with this one's): either way, retry shortly.
        raise Conflict("A request with this Idempotency-Key is still being processed; retry later")
    return Stored(row["response_status"], row["response_body"])


async def store(conn: asyncpg.Connection, tenant_id: int, key: str, status: int, body: bytes) -> None:
    """Store the answer of the request that holds the key, in the transaction of its work (gateway/sync.py)."""
    await conn.execute(QUERIES["idempotency_store"], tenant_id, key, status, body)


async def finish(conn: asyncpg.Connection, tenant_id: int, key: str, status: int, body: bytes,
                 stored: bool = False) -> None:
    """Store a final answer for retries to replay (unless `stored` in the work's transaction already), or
    release the key after one that asks to try again; then release the key's lock."""
    if retryable(status):
        await release(conn, tenant_id, key)
        return
    if stored:
        await _unlock(conn, tenant_id, key)
        return
    try:
        await conn.execute(QUERIES["idempotency_store"], tenant_id, key, status, body)
    except BaseException:
        with contextlib.suppress(Exception):
            await _unlock(conn, tenant_id, key)
        raise
    await _unlock(conn, tenant_id, key)


async def release(conn: asyncpg.Connection, tenant_id: int, key: str) -> None:
    """Forget a claimed key whose request got no final answer, and release its lock, so a retry runs."""
    try:
        await conn.execute(QUERIES["idempotency_release"], tenant_id, key)
    except BaseException:
        with contextlib.suppress(Exception):
            await _unlock(conn, tenant_id, key)
        raise
    await _unlock(conn, tenant_id, key)
