"""Idempotency-Key: the first answer to a write is stored and replayed to retries of the same request.

A retry of the same key and body gets the stored answer (header `Idempotent-Replayed: true`); the same key
with another body gets 422; a retry while the first request is still running gets 409. Answers that say
"try again" (409 collisions, 5xx) are not stored, so the retry runs. Keys are kept for 24 hours.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import asyncpg

from .db import QUERIES
from .errors import BadRequest, Conflict, GatewayError

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
# A key still "pending" after this long belongs to a request whose process died; a retry takes it over.
STALE_AFTER_SECONDS = 600
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


async def begin(conn: asyncpg.Connection, tenant_id: int, key: str, digest: bytes) -> Stored | None:
    """Claim the key for this request, or return the stored answer to replay. Runs outside any transaction."""
    if random.random() < PURGE_CHANCE:
        await conn.execute(QUERIES["idempotency_purge"])
    if await conn.fetchval(QUERIES["idempotency_claim"], tenant_id, key, digest, STALE_AFTER_SECONDS):
        return None
    row = await conn.fetchrow(QUERIES["idempotency_get"], tenant_id, key)
    if row is None:  # purged between the two statements: claim it again
        return await begin(conn, tenant_id, key, digest)
    if row["request_hash"] != digest:
        raise KeyReused()
    if row["response_status"] is None:
        raise Conflict("A request with this Idempotency-Key is still being processed; retry later")
    return Stored(row["response_status"], row["response_body"])


async def finish(conn: asyncpg.Connection, tenant_id: int, key: str, status: int, body: bytes) -> None:
    if status == 409 or status >= 500:
        await release(conn, tenant_id, key)
    else:
        await conn.execute(QUERIES["idempotency_store"], tenant_id, key, status, body)


async def release(conn: asyncpg.Connection, tenant_id: int, key: str) -> None:
    await conn.execute(QUERIES["idempotency_release"], tenant_id, key)
