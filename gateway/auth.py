"""Passwords (argon2id), tokens (HS256 JWT) and the principal behind a request."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import random
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import jwt
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import audit
from .db import QUERIES, enter_tenant
from .errors import Forbidden, InvalidCredentials, TooManyRequests, Unauthorized
from .keys import BadHeader, KeyRing, SigningKey, token_kid
from .permissions import ADMIN, ROLES, Policy  # noqa: F401 - ROLES: the built-in roles' names, as before
from .ratelimit import RateLimiter

# The user's token version when the token was issued; passwd, disable and a role change bump it. Tokens
# issued before the claim existed have none and count as version 0.
VERSION_CLAIM = "ver"
MAX_USERNAME = 128  # app_user.username's limit: a longer name is no user's
VERIFIED_TOKENS = 4096  # verified tokens kept per worker (TokenService.decode), about 2 MiB at most

# Passwords are verified on threads of their own (argon2-cffi releases the GIL while it hashes), so that a
# login takes nothing from the event loop and the other requests it serves. At most VERIFY_THREADS at once
# per process: each verification takes a core or more and 64 MiB while it runs. Up to VERIFY_QUEUE more
# logins wait for a thread; one beyond those is answered 429 at once rather than left to pile up.
VERIFY_THREADS = 2
VERIFY_QUEUE = 16
BUSY_RETRY_AFTER = 1  # seconds
# The verification threads run at a lower priority (a nice value, on Linux) than the event loop: while
# logins keep the cores busy, the requests of other tenants still get the CPU first.
VERIFY_NICE = 10

# Failed logins are counted in PostgreSQL, so the limits hold across workers and hosts: per client address
# and username (the pair) and per client address, in windows of THROTTLE_WINDOW_SECONDS. Past a limit, a
# login is answered 429 with Retry-After, a correct password too, and no password is verified. Nothing is
# counted per username alone: failures from one address must not lock the user out at another.
THROTTLE_WINDOW_SECONDS = 15 * 60
MAX_FAILURES_PER_PAIR = 10
MAX_FAILURES_PER_ADDRESS = 100
THROTTLE_PURGE_CHANCE = 0.01  # the share of logins that also delete the counts whose window has passed
# A throttled attempt is answered after this pause: a client looping bad logins then costs a request a second
# rather than as many as the CPU can answer (its 429s are cheap, but at hundreds a second they still took the
# box from other tenants). The pause holds no connection and no CPU; at most TARPIT_SLOTS attempts pause at
# once per worker, any more are answered at once.
TARPIT_SECONDS = 1.0
TARPIT_SLOTS = 256

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


def _lower_priority() -> None:
    """Give the calling thread (only it: Linux keeps a nice value per thread) a lower priority."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VERIFY_NICE)


class Verifier:
    """verify_password on a few threads of its own, with a bounded number of logins waiting for one."""

    def __init__(self, threads: int, queue: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2",
                                        initializer=_lower_priority)
        self._limit = threads + queue
        self._taken = 0
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Take a place for one verification, or refuse the login (429) when every place is taken."""
        with self._lock:
            if self._taken >= self._limit:
                raise TooManyRequests("Too many logins in progress; retry in a moment",
                                      retry_after=BUSY_RETRY_AFTER)
            self._taken += 1

    def release(self, _: Future[bool] | None = None) -> None:
        with self._lock:
            self._taken -= 1

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Verify on a thread, in a place admit() took. The place is given back when the thread is done with
        it, not when the caller stops waiting: a login whose client went away still holds its thread."""
        future = self._pool.submit(verify_password, stored_hash, password)
        future.add_done_callback(self.release)
        return await asyncio.wrap_future(future)


_verifier = Verifier(VERIFY_THREADS, VERIFY_QUEUE)


def client_key(host: str | None) -> str:
    """The address a client's failed logins count against: the address the connection came from.

    X-Forwarded-For is not read: any client can write it. Behind a reverse proxy, then, every client counts
    as the proxy. An IPv6 client counts as its /64, which one subscriber usually holds whole (counting single
    addresses would hand an attacker 2**64 fresh counts).
    """
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Principal:
    username: str
    tenant_id: int
    tenant: str
    role: str
    # The permissions of the role when it is one of the tenant's own (user_for_token reads them with the user);
    # None for a built-in role, which the policy knows in memory.
    permissions: tuple[str, ...] | None = None

    def require(self, policy: Policy, action: str, form: Any, shown: str) -> None:
        """Refuse (403) unless the user's role has `action` on `form` (gateway/permissions.py)."""
        policy.require(self.role, self.permissions, action, form, shown)

    def require_admin(self, what: str) -> None:
        """Refuse (403) unless the user holds the built-in admin role itself: a tenant's own role cannot be
        granted what is admin-only (the admin page, webhooks, which send the tenant's data anywhere)."""
        if self.role != ADMIN:
            raise Forbidden(f"Role '{self.role}' may not {what}; it is for the admin role", permission="admin")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: dt.datetime
    # What a refresh token handed out with it records (gateway/tokens.py): the token version the login saw,
    # so that a password change between the login and the refresh token's row still ends the family.
    jti: str = ""
    username: str = ""
    version: int = 0


class TokenService:
    """Issues access tokens signed with the current key (its id in the `kid` header) and verifies them with
    the key their kid names (gateway/keys.py); a plain secret is a key ring of that one key."""

    def __init__(self, secret: str | KeyRing, ttl_seconds: int, issuer: str, audience: str) -> None:
        self._keys = secret if isinstance(secret, KeyRing) else KeyRing(secret)
        self._ttl = ttl_seconds
        self._issuer = issuer
        self._audience = audience
        # Tokens this worker has verified, by their exact text, with the key that verified them: a terminal
        # sends the same token with every request, and verifying it again (base64, JSON, HMAC, the claims)
        # was a tenth of a single-record request's CPU in the worker. A hit still needs the key to be its
        # kid's key now (not retired or replaced since) and the token not expired; the oldest entry goes first.
        self._verified: dict[str, tuple[dict, str | None, SigningKey]] = {}

    def issue(self, username: str, tenant: str, role: str, now: dt.datetime | None = None,
              version: int = 0) -> IssuedToken:
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        expires = now + dt.timedelta(seconds=self._ttl)
        jti = uuid.uuid4().hex
        claims = {
            "sub": username,
            "tenant": tenant,
            "role": role,
            VERSION_CLAIM: version,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
            "iss": self._issuer,
            "aud": self._audience,
        }
        key = self._keys.current().current
        return IssuedToken(jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid}), expires,
                           jti=jti, username=username, version=version)

    def decode(self, token: str) -> dict:
        hit = self._verified.get(token)
        if hit is not None:
            claims, kid, key = hit
            if self._keys.lookup(kid) == key:
                if claims["exp"] <= time.time():  # as PyJWT checks it, with no leeway
                    raise Unauthorized("Token has expired")
                return claims
            del self._verified[token]
        claims, kid, key = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (claims, kid, key)
        return claims

    def _verify(self, token: str) -> tuple[dict, str | None, SigningKey]:
        try:
            kid = token_kid(token)
        except BadHeader:
            raise Unauthorized("Token is invalid") from None
        # No kid: a token issued before keys had ids, verified with the base key. An unknown or retired kid
        # is refused like a wrong signature.
        key = self._keys.lookup(kid)
        if key is None:
            raise Unauthorized("Token is invalid")
        try:
            claims = jwt.decode(
                token,
                key.secret,
                algorithms=["HS256"],  # never "none", never whatever the token's header claims
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "tenant", "role", "iat", "exp", "jti", "iss", "aud"]},
            )
            return claims, kid, key
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


async def count_attempt(conn: asyncpg.Connection, client: str, username: str) -> None:
    """Count a login attempt against its client and username, or refuse it (429) while either is throttled.

    Counted before the password is verified, so that concurrent attempts cannot slip past a limit together;
    a successful login takes its attempt off again (login_attempt_succeeded).
    """
    if random.random() < THROTTLE_PURGE_CHANCE:
        await conn.execute(QUERIES["login_throttle_purge"], float(THROTTLE_WINDOW_SECONDS))
    wait = await conn.fetchval(QUERIES["login_attempt_begin"], client, username, float(THROTTLE_WINDOW_SECONDS),
                               MAX_FAILURES_PER_PAIR, MAX_FAILURES_PER_ADDRESS)
    if wait is not None:
        raise LoginThrottled(f"Too many failed logins; retry in {wait} seconds", retry_after=wait)


class LoginThrottled(TooManyRequests):
    """A login refused because its client address, or the address and username, failed too often."""


_tarpit = asyncio.Semaphore(TARPIT_SLOTS)


async def tarpit() -> None:
    """The pause before a throttled login's answer (TARPIT_SECONDS), unless every slot is taken."""
    if TARPIT_SECONDS <= 0 or _tarpit.locked():
        return
    async with _tarpit:
        await asyncio.sleep(TARPIT_SECONDS)


async def login(pool: asyncpg.Pool, tokens: TokenService, username: str, password: str,
                client_host: str | None = None) -> IssuedToken:
    """A token for the right password; 401 for anything else, 429 while the client is throttled or every
    verification place is taken.

    No connection is held while the password is verified: logins waiting for a thread must not take the
    connections other requests need.
    """
    client = client_key(client_host)
    # A name that cannot be a user's is counted under a name that can be stored, and is looked up as nobody.
    name = username[:MAX_USERNAME].replace("\0", "\ufffd")
    _verifier.admit()
    verifying = False
    try:
        async with pool.acquire() as conn:
            try:
                await count_attempt(conn, client, name)
            except LoginThrottled as exc:
                await audit.user_event(conn, audit.LOGIN_THROTTLED, name, endpoint="getToken", status=exc.code,
                                       detail=exc.message)
                raise
            row = await conn.fetchrow(QUERIES["user_for_login"], name) if name == username else None
        verifying = True
        ok = await _verifier.verify(row["password_hash"] if row else None, password)
    finally:
        if not verifying:
            _verifier.release()
    if not ok or row is None or row["disabled"]:
        # The client's answer is the same whatever the reason; the audit log, for the tenant's admins, says which.
        reason = "unknown user" if row is None else "wrong password" if not ok else "user disabled"
        await audit.user_event(pool, audit.LOGIN_FAILED, name, endpoint="getToken", status=401, detail=reason)
        raise InvalidCredentials()
    async with pool.acquire() as conn:
        await conn.execute(QUERIES["login_attempt_succeeded"], client, name)
        await audit.user_event(conn, audit.LOGIN, name, endpoint="getToken", status=200)
    return tokens.issue(row["username"], row["tenant_code"], row["role"], version=row["token_version"])


TENANT_HEADER = "x-tenant-id"


def check_tenant_header(header: str | None, tenant: str, tenant_id: int | None = None) -> None:
    """An X-Tenant-ID header, when sent, names the token's tenant: its code, or its id (`tenant_id`, known once
    the user's row is read; until then a number passes, to be checked again). Anything else is refused (403)
    before anything is read or written."""
    if header is None or header == tenant:
        return
    if header.isascii() and header.isdigit() and (tenant_id is None or header == str(tenant_id)):
        return
    raise Forbidden(f"X-Tenant-ID {header[:64]!r} does not match the token's tenant {tenant!r}",
                    field="X-Tenant-ID")


def claims_from_header(tokens: TokenService, header: str | None) -> dict:
    """Signature, expiry, issuer and audience: checked without the database, before the body is read."""
    return tokens.decode(token_from_header(header))


@dataclass(frozen=True)
class Caller:
    """A request's verified token claims and its X-Tenant-ID header, before the user's row is read."""
    claims: dict
    tenant_header: str | None


async def admit(tokens: TokenService, limiter: RateLimiter, pool: asyncpg.Pool, headers: Any) -> Caller:
    """What every endpoint that takes an access token does before it reads the body, in this order: the token
    (a refused one is audited, on a connection of its own), the log context, X-Tenant-ID against the token's
    tenant (403), then the rate limits (429), so that a refusal costs neither reading nor parsing."""
    try:
        claims = claims_from_header(tokens, headers.get("authorization"))
    except Unauthorized as exc:
        await audit.token_refused(pool, exc)
        raise
    structlog.contextvars.bind_contextvars(user=claims["sub"], tenant=claims["tenant"])
    tenant_header = headers.get(TENANT_HEADER)
    check_tenant_header(tenant_header, claims["tenant"])
    await limiter.admit(pool, claims["tenant"], claims["sub"])
    return Caller(claims, tenant_header)


async def principal_for(conn: asyncpg.Connection, claims: dict, tenant_header: str | None = None) -> Principal:
    """The token's user as it is now, its tenant set on `conn` for row security (0019_row_security.sql);
    401 when the token has ended, 403 when `tenant_header` (X-Tenant-ID) names another tenant."""
    enter_tenant(conn)  # noted before it is set: a statement cut short may still have set it
    row = await conn.fetchrow(QUERIES["user_for_token"], claims["sub"], claims["jti"])
    # A token outlives nothing: a disabled user, a changed password or a moved user all end it. The version
    # is exact where timestamps are not (a token issued in the second of a disable); the timestamp still
    # ends the tokens issued before versions existed, which all carry version 0.
    if (
        row is None
        or row["disabled"]
        or row["tenant_code"] != claims["tenant"]
        or claims.get(VERSION_CLAIM, 0) != row["token_version"]
        or claims["iat"] < row["tokens_valid_after_epoch"]
        or row["access_revoked"]
    ):
        refused = Unauthorized("Token is no longer valid")
        await audit.token_refused(conn, refused, claims)  # the claims are signed: the user and tenant are known
        raise refused
    check_tenant_header(tenant_header, row["tenant_code"], row["tenant_id"])
    permissions = row["role_permissions"]
    return Principal(username=row["username"], tenant_id=row["tenant_id"], tenant=row["tenant_code"],
                     role=row["role"], permissions=None if permissions is None else tuple(permissions))
