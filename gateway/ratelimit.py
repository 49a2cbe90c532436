"""Rate limits per tenant and per user: requests per fixed window (a minute), across workers and hosts.

The counts live in PostgreSQL (table rate_limit_window, unlogged), the one thing every worker shares. A
worker does not ask it at every request: it leases units of a window's count in chunks, with one atomic
statement that never hands out more than the limit, and spends them locally until they run out. A chunk is
a CHUNK_DIVISOR-th of the limit, at least 1: limits under twice CHUNK_DIVISOR are counted exactly (each
request asks), larger ones cost a round trip per chunk. The total admitted never exceeds a limit; units a worker
leased and did not spend by the window's end are lost (a slight under-admission).

A lease serves at most LEASE_TTL_SECONDS, then the next request renews it and gives its unspent units back:
a limit changed with `gateway tenant set` reaches every worker within that time. A window found spent is
remembered as long, so refused requests cost no round trip either.

Every answer of the token-bearing endpoints carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset
for the tighter of the two limits (the fewer remaining); RequestContext (gateway/app.py) adds them to the
answer's head, so errors rendered anywhere carry them too.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from .config import MAX_RATE_LIMIT
from .db import QUERIES
from .errors import TooManyRequests

WINDOW_SECONDS = 60  # limits are per minute, as `gateway tenant set` and the settings state them
LEASE_TTL_SECONDS = 10.0  # how late a changed limit may reach a worker
CHUNK_DIVISOR = 500  # a worker leases a 500th of a limit at a time: one round trip per 500th, none between
PURGE_CHANCE = 0.01  # the share of leases that also delete the windows that have passed
MAX_KEYS = 10_000  # leases a worker keeps before it drops the expired ones

Clock = Callable[[], float]


@dataclass
class Lease:
    """A worker's share of one window's count for one key (a tenant, or a user of it)."""

    window: int  # the window's start, seconds since the epoch
    expires: float  # the clock's time from which it must be renewed
    limit: int  # 0: no limit
    used: int = 0  # the window's count over all workers when leased, this lease included
    left: int = 0  # units of this lease not spent yet

    def serves(self, window: int, now: float) -> bool:
        """Current, and settled without the database: no limit, units left, or the window spent."""
        return (self.window == window and now < self.expires
                and (self.limit == 0 or self.left > 0 or self.used >= self.limit))

    def take(self) -> bool:
        if self.limit == 0:
            return True
        if self.left == 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        """Return a unit take() took, for a request the other limit refuses."""
        if self.limit > 0:
            self.left += 1

    def remaining(self) -> int:
        return max(0, self.limit - self.used + self.left)


@dataclass
class _Key:
    lease: Lease | None = None
    renewing: asyncio.Lock = field(default_factory=asyncio.Lock)


# The RateLimit-* headers of the request under way: RequestContext binds a list for each request, admit()
# fills it, and the answer's head takes it, whatever renders the answer.
_headers: contextvars.ContextVar[list[tuple[bytes, bytes]] | None] = contextvars.ContextVar(
    "ratelimit_headers", default=None)


def begin_request() -> contextvars.Token[list[tuple[bytes, bytes]] | None]:
    return _headers.set([])


def end_request(token: contextvars.Token[list[tuple[bytes, bytes]] | None]) -> None:
    _headers.reset(token)


def answer_headers() -> list[tuple[bytes, bytes]]:
    return _headers.get() or []


def _report(lease: Lease, reset: int) -> None:
    headers = _headers.get()
    if headers is not None:
        headers[:] = [(b"ratelimit-limit", str(lease.limit).encode()),
                      (b"ratelimit-remaining", str(lease.remaining()).encode()),
                      (b"ratelimit-reset", str(reset).encode())]


class RateLimiter:
    """One per worker: the leases it holds, keyed by (tenant code, username), '' for the tenant's own."""

    def __init__(self, tenant_default: int, user_default: int, window_seconds: int = WINDOW_SECONDS,
                 clock: Clock = time.time, chunk_divisor: int = CHUNK_DIVISOR) -> None:
        self.tenant_default = tenant_default
        self.user_default = user_default
        self.window_seconds = window_seconds
        self.clock = clock
        self.chunk_divisor = chunk_divisor
        self._keys: dict[tuple[str, str], _Key] = {}

    async def admit(self, pool: asyncpg.Pool, tenant: str, username: str) -> None:
        """Count one request against its tenant and its user, or refuse it (429) when either limit is reached.

        A unit taken for the tenant goes back to this worker's lease when the user's limit refuses.
        """
        now = self.clock()
        window = int(now // self.window_seconds) * self.window_seconds
        reset = math.ceil(window + self.window_seconds - now)
        tenant_lease, tenant_ok = await self._take(pool, (tenant, ""), self.tenant_default, window, now)
        user_lease, user_ok = await self._take(pool, (tenant, username), self.user_default, window, now)
        if tenant_ok != user_ok:
            (tenant_lease if tenant_ok else user_lease).give_back()
        limited = [lease for lease in (tenant_lease, user_lease) if lease.limit > 0]
        if limited:
            _report(min(limited, key=lambda lease: (lease.remaining(), lease.limit)), reset)
        if tenant_ok and user_ok:
            return
        whose, lease = (f"tenant {tenant!r}", tenant_lease) if not tenant_ok else (f"user {username!r}", user_lease)
        raise TooManyRequests(f"Rate limit of {lease.limit} requests per {self._per()} reached for {whose}; "
                              f"retry in {reset} seconds", retry_after=reset)

    def _per(self) -> str:
        return "minute" if self.window_seconds == 60 else f"{self.window_seconds} seconds"

    async def _take(self, pool: asyncpg.Pool, key: tuple[str, str], default: int, window: int,
                    now: float) -> tuple[Lease, bool]:
        """The key's lease, and whether a unit was taken from it (no limit counts as taken)."""
        entry = self._entry(key)
        while True:
            lease = entry.lease
            if lease is not None and lease.serves(window, now):
                return lease, lease.take()
            async with entry.renewing:  # one renewal per key and worker; the others wait for it
                if entry.lease is lease:
                    entry.lease = await self._renew(pool, key, default, window, now, lease)

    async def _renew(self, pool: asyncpg.Pool, key: tuple[str, str], default: int, window: int, now: float,
                     old: Lease | None) -> Lease:
        """A new lease of the window, the old one's unspent units given back first (when of the same window)."""
        give_back = 0
        if old is not None and old.window == window:
            give_back, old.left = old.left, 0
        if random.random() < PURGE_CHANCE:
            await pool.execute(QUERIES["rate_limit_purge"], window - self.window_seconds)
        row = await pool.fetchrow(QUERIES["rate_limit_lease"], key[0], key[1], window, default, give_back,
                                  self.chunk_divisor)
        expires = min(now + LEASE_TTL_SECONDS, window + self.window_seconds)
        if row is None:  # no limit (or no such tenant, which the token check then refuses)
            return Lease(window, expires, 0)
        return Lease(window, expires, row["lim"], used=row["used"], left=row["granted"])

    def _entry(self, key: tuple[str, str]) -> _Key:
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_KEYS:
                self._forget_expired()
            entry = self._keys[key] = _Key()
        return entry

    def _forget_expired(self) -> None:
        now = self.clock()
        for key, entry in list(self._keys.items()):
            if not entry.renewing.locked() and (entry.lease is None or entry.lease.expires <= now):
                del self._keys[key]


def parse_limit(raw: str) -> int | None:
    """A limit as `gateway tenant set` takes it: requests per minute (0: none), or `default` (None)."""
    if raw == "default":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"a limit is a number of requests per minute, 0 (none) or 'default'; got {raw!r}") from None
    if not 0 <= value <= MAX_RATE_LIMIT:
        raise ValueError(f"a limit is between 0 (none) and {MAX_RATE_LIMIT} requests per minute; got {value}")
    return value


async def set_limits(conn: asyncpg.Connection, code: str, *, tenant: int | None = None, set_tenant: bool = False,
                     user: int | None = None, set_user: bool = False) -> bool:
    """Set tenant `code`'s limits (per tenant, per user; None: the settings' default) where `set_*` says so;
    False when there is no such tenant. Workers apply them within LEASE_TTL_SECONDS."""
    return await conn.fetchval(QUERIES["rate_limit_set"], code, tenant, user, set_tenant, set_user) is not None
