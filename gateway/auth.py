"""Passwords (argon2id), tokens (HS256 JWT) and the principal behind a request."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .db import QUERIES
from .errors import Forbidden, InvalidCredentials, Unauthorized

ROLES = ("admin", "writer", "reader")
# The user's token version when the token was issued; passwd and disable bump it. Tokens issued before the
# claim existed have none and count as version 0.
VERSION_CLAIM = "ver"
WRITE_ROLES = frozenset({"admin", "writer"})

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified when the username is unknown, so that an unknown user costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def use_password_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Hash new passwords with `hasher` from now on; return the one it replaces.

    The test suite installs cheap parameters with it. Stored hashes carry their own parameters, so they
    verify whichever hasher is installed; the dummy hash is remade so that an unknown user still costs as
    much as a wrong password under the new parameters.
    """
    global _hasher, _DUMMY_HASH
    previous = _hasher
    _hasher = hasher
    _DUMMY_HASH = hasher.hash("not-a-real-password")
    return previous


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    username: str
    tenant_id: int
    tenant: str
    role: str

    def require_write(self) -> None:
        if self.role not in WRITE_ROLES:
            raise Forbidden(f"Role '{self.role}' may read but not write")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: dt.datetime


class TokenService:
    def __init__(self, secret: str, ttl_seconds: int, issuer: str, audience: str) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._issuer = issuer
        self._audience = audience

    def issue(self, username: str, tenant: str, role: str, now: dt.datetime | None = None,
              version: int = 0) -> IssuedToken:
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        expires = now + dt.timedelta(seconds=self._ttl)
        claims = {
            "sub": username,
            "tenant": tenant,
            "role": role,
            VERSION_CLAIM: version,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
            "iss": self._issuer,
            "aud": self._audience,
        }
        return IssuedToken(jwt.encode(claims, self._secret, algorithm="HS256"), expires)

    def decode(self, token: str) -> dict:
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],  # never "none", never whatever the token's header claims
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "tenant", "role", "iat", "exp", "jti", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("Token is invalid") from None


def token_from_header(value: str | None) -> str:
    """Fast documents `Authorization: <token>`; `Bearer <token>` is accepted too."""
    if not value or not value.strip():
        raise Unauthorized("Missing Authorization header")
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value


async def login(conn: asyncpg.Connection, tokens: TokenService, username: str, password: str) -> IssuedToken:
    row = await conn.fetchrow(QUERIES["user_for_login"], username)
    ok = verify_password(row["password_hash"] if row else None, password)
    if not ok or row is None or row["disabled"]:
        raise InvalidCredentials()
    return tokens.issue(row["username"], row["tenant_code"], row["role"], version=row["token_version"])


def claims_from_header(tokens: TokenService, header: str | None) -> dict:
    """Signature, expiry, issuer and audience: checked without the database, before the body is read."""
    return tokens.decode(token_from_header(header))


async def principal_for(conn: asyncpg.Connection, claims: dict) -> Principal:
    row = await conn.fetchrow(QUERIES["user_for_token"], claims["sub"])
    # A token outlives nothing: a disabled user, a changed password or a moved user all end it. The version
    # is exact where timestamps are not (a token issued in the second of a disable); the timestamp still
    # ends the tokens issued before versions existed, which all carry version 0.
    if (
        row is None
        or row["disabled"]
        or row["tenant_code"] != claims["tenant"]
        or claims.get(VERSION_CLAIM, 0) != row["token_version"]
        or claims["iat"] < row["tokens_valid_after_epoch"]
    ):
        raise Unauthorized("Token is no longer valid")
    return Principal(username=row["username"], tenant_id=row["tenant_id"], tenant=row["tenant_code"],
                     role=row["role"])
