"""Refresh tokens: handed out on request with an access token, rotated on every use, revoked by family.

A refresh token is an opaque random string (REFRESH_BYTES of randomness); PostgreSQL keeps only its SHA-256
(sql/migrations/0016_tokens.sql). getToken hands one out only when its body asks (`"refresh": true`), so a
Fast client's getToken answer stays exactly Fast's. Each use (refreshToken) spends the token and hands out a
new access token and a new refresh token of the same family; a spent token presented again means two parties
hold the family, and the whole family is revoked, with the access tokens handed out with it (they are denied
through revoked_access, which the request path reads with the user, without a round trip of its own).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from . import audit, auth
from .db import QUERIES, enter_tenant
from .errors import Unauthorized
from .logging import get_logger

log = get_logger()

REFRESH_BYTES = 32
MAX_REFRESH_TOKEN = 256  # longer than any token handed out: refused before it is hashed
PURGE_CHANCE = 0.01  # the share of refreshes that also delete the rows past their expiry


@dataclass(frozen=True)
class IssuedRefresh:
    token: str
    expires: dt.datetime


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> tuple[str, bytes]:
    token = secrets.token_urlsafe(REFRESH_BYTES)
    return token, token_hash(token)


async def start_family(pool: asyncpg.Pool, access: auth.IssuedToken, ttl_seconds: int) -> IssuedRefresh:
    """The first refresh token of a new family, for the login that issued `access`."""
    token, digest = _new_token()
    async with pool.acquire() as conn:
        enter_tenant(conn)
        await conn.fetchval(QUERIES["tenant_enter_user"], access.username)  # the user's tenant, for row security
        expires = await conn.fetchval(QUERIES["refresh_token_start"], digest, access.username, access.version,
                                      float(ttl_seconds), access.jti, access.expires)
    if expires is None:  # the user was deleted in the instant since the login
        raise Unauthorized("Token is no longer valid")
    return IssuedRefresh(token, expires)


def _presented(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise Unauthorized("Refresh token is invalid")
    if len(value) > MAX_REFRESH_TOKEN:
        raise Unauthorized("Refresh token is invalid")
    return token_hash(value)


async def refresh(pool: asyncpg.Pool, tokens: auth.TokenService, presented: object,
                  ttl_seconds: int) -> tuple[auth.IssuedToken, IssuedRefresh]:
    """A new access token and the family's next refresh token for `presented`; 401 when it is unknown,
    expired, revoked or spent (which revokes its family), or its user is disabled or has a new token version.

    One transaction: the token is locked, checked, spent and succeeded, so two requests with the same token
    cannot both pass. A refusal that revokes the family commits the revocation before the 401 is raised.
    """
    try:
        digest = _presented(presented)
    except Unauthorized as exc:
        await audit.record(pool, audit.REFRESH_REFUSED, endpoint="refreshToken", status=exc.code, detail=exc.message)
        raise
    refusal: str | None = None
    async with pool.acquire() as conn:
        # The token's tenant, for row security (none for an unknown token, whose row is then not found).
        enter_tenant(conn)
        await conn.fetchval(QUERIES["tenant_enter_refresh"], digest)
        if random.random() < PURGE_CHANCE:
            await conn.execute(QUERIES["refresh_token_purge"])
        async with conn.transaction():
            row = await conn.fetchrow(QUERIES["refresh_token_take"], digest)
            if row is None:
                refusal = "Refresh token is invalid"
            elif row["revoked"]:
                refusal = "Refresh token has been revoked"
            elif row["used"]:
                # Spent already: whoever presents it now, or whoever presented it before, is not the one
                # the family was handed to. Neither keeps it.
                revoked = await conn.fetchval(QUERIES["refresh_token_revoke_family"], row["family"])
                log.warning("refresh_token_reused", user=row["username"], family=str(row["family"]),
                            revoked=revoked)
                refusal = "Refresh token was already used; its sessions are revoked"
            elif row["expired"]:
                refusal = "Refresh token has expired"
            elif row["disabled"] or not row["same_tenant"] or row["issued_version"] != row["token_version"]:
                # A disable, password change or role change ends the family for good: its version never
                # comes back.
                await conn.fetchval(QUERIES["refresh_token_revoke_family"], row["family"])
                refusal = "Refresh token is no longer valid"
            else:
                access = tokens.issue(row["username"], row["tenant_code"], row["role"],
                                      version=row["token_version"])
                token, next_digest = _new_token()
                expires = await conn.fetchval(QUERIES["refresh_token_rotate"], digest, next_digest,
                                              float(ttl_seconds), access.jti, access.expires)
        # Audited after the transaction: a refusal's revocation is committed whatever becomes of the row.
        if refusal is not None:
            if row is None:  # nobody's token: no user to name
                await audit.record(conn, audit.REFRESH_REFUSED, endpoint="refreshToken", status=401, detail=refusal)
            else:
                await audit.user_event(conn, audit.REFRESH_REFUSED, row["username"], endpoint="refreshToken",
                                       status=401, detail=refusal)
            raise Unauthorized(refusal)
        await audit.user_event(conn, audit.TOKEN_REFRESHED, row["username"], endpoint="refreshToken", status=200)
    return access, IssuedRefresh(token, expires)


async def revoke(conn: asyncpg.Connection, claims: dict, presented: object, everything: bool) -> int:
    """Log out: revoke the family of `presented` (only the caller's own), or with `everything` every family of
    the caller, with the access tokens handed out with them, and the access token of this request. Returns
    the number of families revoked; an unknown or foreign refresh token revokes none (a logout repeated is
    no error)."""
    async with conn.transaction():
        if everything:
            families = await conn.fetchval(QUERIES["refresh_token_revoke_user"], claims["sub"])
        else:
            family: uuid.UUID | None = await conn.fetchval(QUERIES["refresh_token_family_of"], _presented(presented),
                                                           claims["sub"])
            families = 0
            if family is not None and await conn.fetchval(QUERIES["refresh_token_revoke_family"], family):
                families = 1
        await conn.execute(QUERIES["access_token_revoke"], claims["jti"],
                           dt.datetime.fromtimestamp(claims["exp"], dt.UTC))
    scope = "every session" if everything else "one session"
    await audit.record(conn, audit.LOGOUT, tenant=claims["tenant"], username=claims["sub"], endpoint="revokeToken",
                       status=200, detail=f"{scope}: {int(families)} revoked")
    return int(families)
