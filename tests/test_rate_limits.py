"""Rate limits per tenant and per user (gateway/ratelimit.py), against the real PostgreSQL.

The limiter's clock is a fake one, so that a test moves through a lease's lifetime and into the next window
without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, add_user, assert_envelope, issue_token
from test_cli import Gateway, gateway  # noqa: F401  (the CLI fixture)

from gateway import ratelimit
from gateway.app import CORS_EXPOSED_HEADERS, create_app
from gateway.config import ConfigError, Settings
from gateway.forms import Registry

WINDOW_START = 1_800_000_000.0  # a whole minute, seconds since the epoch


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def install_limiter(app: Any, clock: FakeClock, **options: Any) -> ratelimit.RateLimiter:
    gw = app.state.gateway
    gw.limiter = ratelimit.RateLimiter(gw.settings.rate_limit_tenant, gw.settings.rate_limit_user, clock=clock,
                                       **options)
    return gw.limiter


@pytest.fixture
def clock(app: Any) -> FakeClock:
    """15 seconds into a window: its answers say 45 seconds to its end."""
    fake = FakeClock(WINDOW_START + 15)
    install_limiter(app, fake)
    return fake


async def set_limits(db: asyncpg.Connection, tenant: int | None, user: int | None, code: str = "acme") -> None:
    await db.execute("UPDATE tenant SET rate_limit = $2, user_rate_limit = $3 WHERE code = $1", code, tenant, user)


def limit_headers(resp: httpx.Response) -> tuple[int, int, int]:
    return (int(resp.headers["ratelimit-limit"]), int(resp.headers["ratelimit-remaining"]),
            int(resp.headers["ratelimit-reset"]))


def assert_refused(resp: httpx.Response, whose: str) -> dict[str, Any]:
    body = assert_envelope(resp)
    assert resp.status_code == 429 and body["code"] == 429 and body["success"] is False, resp.text
    assert whose in body["messages"], body["messages"]
    return body


async def test_a_tenant_limit_admits_exactly_its_requests_then_answers_429(
        app: Any, api: Api, db: asyncpg.Connection, clock: FakeClock, settings: Settings) -> None:
    await set_limits(db, 5, None)
    for n in range(5):
        resp = await api.get("getCustomer")
        assert assert_envelope(resp)["code"] == 200
        assert limit_headers(resp) == (5, 4 - n, 45)
    refused = await api.get("getCustomer")
    assert "Rate limit of 5 requests per minute reached for tenant 'acme'" in assert_refused(refused, "acme")["messages"]
    assert refused.headers["retry-after"] == "45"
    assert limit_headers(refused) == (5, 0, 45)
    # Every token-bearing endpoint counts against the same limit, before its body is read.
    assert_refused(await api.sync("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "A"}]), "acme")
    assert_refused(await api.client.post("/api/revokeToken", content=b"not json",
                                         headers={"Authorization": api.token}), "acme")
    # A refused write wrote nothing and left no audit row: it never reached the user's check.
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE kind = 'write'") == 0

    # Another tenant counts on its own, under the default limits (the user's is the tighter).
    await add_user(db, "other1", tenant="other")
    other = await api.client.post("/api/GetData", json={"form": "getCustomer"},
                                  headers={"Authorization": await issue_token(app, db, "other1")})
    assert assert_envelope(other)["code"] == 200
    assert limit_headers(other) == (settings.rate_limit_user, settings.rate_limit_user - 1, 45)


async def test_a_user_limit_counts_each_user_apart_within_the_tenants(
        app: Any, api: Api, db: asyncpg.Connection, clock: FakeClock) -> None:
    await set_limits(db, 3, 2)
    await add_user(db, "writer2")
    second = Api(api.client, await issue_token(app, db, "writer2"))
    for remaining in (1, 0):
        resp = await api.get("getCustomer")
        assert resp.status_code == 200 and limit_headers(resp) == (2, remaining, 45)
    resp = assert_refused(await api.get("getCustomer"), "user 'writer1'")
    # writer2 has its own 2, but the tenant only one left: writer1's refused request gave its unit back.
    resp = await second.get("getCustomer")
    assert resp.status_code == 200 and limit_headers(resp) == (3, 0, 45)  # the tenant's: the fewer remaining
    refused = await second.get("getCustomer")
    assert_refused(refused, "tenant 'acme'")
    assert limit_headers(refused) == (3, 0, 45)


async def test_the_next_window_starts_the_count_again(api: Api, db: asyncpg.Connection, clock: FakeClock) -> None:
    await set_limits(db, 2, None)
    assert [(await api.get("getCustomer")).status_code for _ in range(3)] == [200, 200, 429]
    clock.now += ratelimit.LEASE_TTL_SECONDS  # a renewed lease finds the window still spent
    refused = await api.get("getCustomer")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "35"
    clock.now = WINDOW_START + 60
    resp = await api.get("getCustomer")
    assert resp.status_code == 200 and limit_headers(resp) == (2, 1, 60)


async def test_error_answers_carry_the_headers_too(
        app: Any, api: Api, db: asyncpg.Connection, clock: FakeClock) -> None:
    await set_limits(db, 10, None)
    bad_json = await api.client.post("/api/SyncData", content=b"{", headers={"Authorization": api.token})
    assert bad_json.status_code == 400 and limit_headers(bad_json) == (10, 9, 45)
    no_form = await api.post("GetData", {"form": "getNothing"})
    assert assert_envelope(no_form)["code"] == 201 and limit_headers(no_form) == (10, 8, 45)
    await add_user(db, "reader1", role="reader")
    reader = Api(api.client, await issue_token(app, db, "reader1"))
    forbidden = await reader.sync("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "A"}])
    assert forbidden.status_code == 403 and limit_headers(forbidden) == (10, 7, 45)
    # Not counted: a refused token (no tenant is known), a login, the probes.
    assert "ratelimit-limit" not in (await api.client.post("/api/GetData", json={"form": "getCustomer"},
                                                           headers={"Authorization": "forged"})).headers
    assert "ratelimit-limit" not in (await api.client.post("/api/getToken", json={})).headers
    assert "ratelimit-limit" not in (await api.client.get("/healthz")).headers
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(CORS_EXPOSED_HEADERS)


async def test_no_limit_means_no_count_and_no_headers(api: Api, db: asyncpg.Connection, clock: FakeClock) -> None:
    await set_limits(db, 0, 0)
    resp = await api.get("getCustomer")
    assert resp.status_code == 200 and "ratelimit-limit" not in resp.headers
    assert await db.fetchval("SELECT count(*) FROM rate_limit_window") == 0


@contextlib.asynccontextmanager
async def worker(settings: Settings, registry: Registry, clock: FakeClock,
                 **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with a pool and a limiter of its own, as another worker process (or host) has."""
    application = create_app(settings, registry)
    async with application.router.lifespan_context(application):
        install_limiter(application, clock, **options)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            yield c


@pytest.mark.parametrize("chunk_divisor", [ratelimit.CHUNK_DIVISOR, 4])  # a lease of 1 unit, then of 5
async def test_workers_sharing_the_database_share_the_limit(
        settings: Settings, registry: Registry, token: str, db: asyncpg.Connection, chunk_divisor: int) -> None:
    await set_limits(db, 20, None)
    clock = FakeClock(WINDOW_START)
    async with worker(settings, registry, clock, chunk_divisor=chunk_divisor) as one, \
            worker(settings, registry, clock, chunk_divisor=chunk_divisor) as two:
        answers = await asyncio.gather(*(c.post("/api/GetData", json={"form": "getCustomer"},
                                                headers={"Authorization": token})
                                         for _ in range(20) for c in (one, two)))
    statuses = [resp.status_code for resp in answers]
    assert statuses.count(200) == 20 and statuses.count(429) == 20, statuses
    assert await db.fetchval("SELECT used FROM rate_limit_window WHERE tenant = 'acme' AND username = ''") == 20


async def test_tenant_set_changes_the_limits_within_a_lease(
        gateway: Gateway, api: Api, db: asyncpg.Connection, clock: FakeClock) -> None:  # noqa: F811
    assert (await api.get("getCustomer")).status_code == 200  # under the defaults
    code, out = await gateway("tenant", "set", "acme", "--rate-limit", "2", "--user-rate-limit", "0")
    assert code == 0 and out.strip() == "tenant 'acme': rate limit 2/min, user rate limit none", out
    assert await db.fetchrow("SELECT rate_limit, user_rate_limit FROM tenant WHERE code = 'acme'") == (2, 0)
    clock.now += ratelimit.LEASE_TTL_SECONDS  # the worker's leases end; the next one reads the new limit
    resp = await api.get("getCustomer")
    assert resp.status_code == 200 and limit_headers(resp) == (2, 0, 35)  # the first request counted too
    assert_refused(await api.get("getCustomer"), "tenant 'acme'")

    code, out = await gateway("tenant", "list")
    assert code == 0 and out.splitlines()[1].split()[-2:] == ["2/min", "none"], out
    code, out = await gateway("tenant", "set", "acme", "--rate-limit", "default")
    assert code == 0 and out.strip() == "tenant 'acme': rate limit default", out
    clock.now += ratelimit.LEASE_TTL_SECONDS
    assert (await api.get("getCustomer")).status_code == 200
    # Each option alone leaves the others as they were.
    assert await db.fetchrow("SELECT rate_limit, user_rate_limit, negative_stock FROM tenant WHERE code = 'acme'"
                             ) == (None, 0, "allow")


async def test_tenant_set_refuses_bad_limits(gateway: Gateway, db: asyncpg.Connection) -> None:  # noqa: F811
    await gateway("tenant", "add", "till", "--chart", "none")
    for bad in ("-1", "ten", "1.5", "1000000001", ""):
        code, out = await gateway("tenant", "set", "till", "--rate-limit", bad)
        assert code == 2 and "argument --rate-limit" in out, (bad, out)
    code, out = await gateway("tenant", "set", "till", "--user-rate-limit", "-5")
    assert code == 2 and "between 0 (none) and 1000000000" in out, out
    code, out = await gateway("tenant", "set", "till")
    assert code == 2 and "give --negative-stock, --rate-limit or --user-rate-limit" in out, out
    code, out = await gateway("tenant", "set", "nobody", "--rate-limit", "5")
    assert code == 2 and "no tenant 'nobody'" in out, out
    assert await db.fetchrow("SELECT rate_limit, user_rate_limit FROM tenant WHERE code = 'till'") == (None, None)


def test_the_default_limits_come_from_the_environment(tmp_path: Any) -> None:
    settings = Settings.from_env({"GATEWAY_DATA_DIR": str(tmp_path)})
    assert (settings.rate_limit_tenant, settings.rate_limit_user) == (600_000, 300_000)
    settings = Settings.from_env({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_RATE_LIMIT_TENANT": "0",
                                  "GATEWAY_RATE_LIMIT_USER": "1000"})
    assert (settings.rate_limit_tenant, settings.rate_limit_user) == (0, 1000)
    for bad in ("-1", "lots", "2000000000"):
        with pytest.raises(ConfigError, match="GATEWAY_RATE_LIMIT_USER"):
            Settings.from_env({"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_RATE_LIMIT_USER": bad})
