"""getToken under abuse: failed logins throttled per address and username, argon2 off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from conftest import PASSWORD, add_user, assert_envelope

from gateway import auth
from gateway.errors import GatewayError, TooManyRequests
from gateway.responses import render_error

WRONG = "not the password"


def _client(app: Any, host: str) -> httpx.AsyncClient:
    """A client whose connections come from `host`, as the ASGI server reports it."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)),
                             base_url="http://gateway.test")


@pytest.fixture
async def elsewhere(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app, "192.0.2.7") as c:
        yield c


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/getToken", json={"username": username, "password": password})


async def _count(db: asyncpg.Connection, address: str, username: str = "") -> int | None:
    return await db.fetchval("SELECT attempts FROM login_throttle WHERE client_addr = $1 AND username = $2",
                             address, username)


class CountingHasher(PasswordHasher):
    """Cheap parameters, counting the verifications it is asked for."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


class GatedHasher(CountingHasher):
    """Verification that waits until the test opens the gate, holding its thread meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.inside = threading.Semaphore(0)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.inside.release()
        self.gate.wait(10)
        return super().verify(hash, password)


@pytest.fixture
def counting() -> Iterator[CountingHasher]:
    hasher = CountingHasher()
    previous = auth.use_password_hasher(hasher)
    yield hasher
    auth.use_password_hasher(previous)


@pytest.fixture
def gated() -> Iterator[GatedHasher]:
    hasher = GatedHasher()
    previous = auth.use_password_hasher(hasher)
    try:
        yield hasher
    finally:
        hasher.gate.set()
        auth.use_password_hasher(previous)


def _throttled(resp: httpx.Response) -> int:
    """The Retry-After of a 429 in the canonical envelope."""
    body = assert_envelope(resp)
    assert resp.status_code == 429 and body["code"] == 429 and body["success"] is False, body
    return int(resp.headers["retry-after"])


async def test_past_the_limit_even_the_right_password_gets_429_and_no_hash_is_verified(
        client: httpx.AsyncClient, db: asyncpg.Connection, counting: CountingHasher) -> None:
    await add_user(db, "alice", password=PASSWORD)
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        assert (await _login(client, "alice", WRONG)).status_code == 401
    assert counting.verified == auth.MAX_FAILURES_PER_PAIR
    assert await _count(db, "127.0.0.1", "alice") == auth.MAX_FAILURES_PER_PAIR

    resp = await _login(client, "alice", PASSWORD)
    retry_after = _throttled(resp)
    assert auth.THROTTLE_WINDOW_SECONDS - 60 < retry_after <= auth.THROTTLE_WINDOW_SECONDS
    assert f"retry in {retry_after} seconds" in resp.json()["messages"]
    assert (await _login(client, "alice", WRONG)).status_code == 429
    # Refused before argon2, and not counted: the limit is a ceiling, not a ratchet.
    assert counting.verified == auth.MAX_FAILURES_PER_PAIR
    assert await _count(db, "127.0.0.1", "alice") == auth.MAX_FAILURES_PER_PAIR


async def test_a_throttled_login_is_answered_after_a_pause_that_costs_no_connection(
        client: httpx.AsyncClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client looping bad logins gets a request a second, not hundreds: the 429 waits TARPIT_SECONDS,
    while other requests are served; with every pause slot taken, the 429 comes at once."""
    await add_user(db, "carol", password=PASSWORD)
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        assert (await _login(client, "carol", WRONG)).status_code == 401
    monkeypatch.setattr(auth, "TARPIT_SECONDS", 0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    paused = asyncio.create_task(_login(client, "carol", PASSWORD))
    await asyncio.sleep(0.1)
    assert (await client.get("/healthz")).status_code == 200 and not paused.done()
    _throttled(await paused)
    assert loop.time() - started >= 0.5
    monkeypatch.setattr(auth, "_tarpit", asyncio.Semaphore(0))  # every slot taken
    started = loop.time()
    _throttled(await _login(client, "carol", PASSWORD))
    assert loop.time() - started < 0.4


async def test_failures_from_one_address_do_not_lock_the_user_out_at_another(
        client: httpx.AsyncClient, elsewhere: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    await add_user(db, "bob")
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        await _login(client, "alice", WRONG)
    _throttled(await _login(client, "alice", PASSWORD))
    # The user, from another address; and another user, from the throttled address.
    assert assert_envelope(await _login(elsewhere, "alice", PASSWORD))["code"] == 200
    assert assert_envelope(await _login(client, "bob", PASSWORD))["code"] == 200


async def test_a_successful_login_clears_the_pairs_count_and_the_address_counts_failures_only(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    for _ in range(auth.MAX_FAILURES_PER_PAIR - 1):
        assert (await _login(client, "alice", WRONG)).status_code == 401
    assert (await _login(client, "alice", PASSWORD)).status_code == 200
    assert await _count(db, "127.0.0.1", "alice") == 0
    assert await _count(db, "127.0.0.1") == auth.MAX_FAILURES_PER_PAIR - 1
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        assert (await _login(client, "alice", WRONG)).status_code == 401
    _throttled(await _login(client, "alice", PASSWORD))


async def test_the_address_limit_counts_failures_across_usernames(
        client: httpx.AsyncClient, elsewhere: httpx.AsyncClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_FAILURES_PER_ADDRESS", 5)
    await add_user(db, "alice")
    for n in range(5):  # unknown users count as much as known ones
        assert (await _login(client, f"guess{n}", WRONG)).status_code == 401
    _throttled(await _login(client, "alice", PASSWORD))
    assert await _count(db, "127.0.0.1", "alice") is None  # refused attempts are not counted
    assert (await _login(elsewhere, "alice", PASSWORD)).status_code == 200


async def test_a_passed_window_starts_again_and_is_purged(
        client: httpx.AsyncClient, elsewhere: httpx.AsyncClient, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await add_user(db, "alice")
    for _ in range(auth.MAX_FAILURES_PER_PAIR):
        await _login(client, "alice", WRONG)
    _throttled(await _login(client, "alice", PASSWORD))
    await db.execute("UPDATE login_throttle SET window_start = now() - make_interval(secs => $1)",
                     float(auth.THROTTLE_WINDOW_SECONDS + 1))
    assert (await _login(client, "alice", WRONG)).status_code == 401
    assert await _count(db, "127.0.0.1", "alice") == 1  # a new window, its first failure
    assert await _count(db, "127.0.0.1") == 1

    await db.execute("UPDATE login_throttle SET window_start = now() - make_interval(secs => $1)"
                     " WHERE client_addr = '127.0.0.1'", float(auth.THROTTLE_WINDOW_SECONDS + 1))
    monkeypatch.setattr(auth, "THROTTLE_PURGE_CHANCE", 1.0)
    assert (await _login(elsewhere, "alice", WRONG)).status_code == 401
    rows = await db.fetch("SELECT client_addr, username, attempts FROM login_throttle ORDER BY username")
    assert [tuple(r) for r in rows] == [("192.0.2.7", "", 1), ("192.0.2.7", "alice", 1)]


async def test_names_that_cannot_be_a_user_are_counted_and_refused_like_any_other(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    for name in ("x" * 10_000, "ali\x00ce"):
        resp = await _login(client, name, WRONG)
        assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401
    assert await _count(db, "127.0.0.1", "x" * auth.MAX_USERNAME) == 1
    assert await _count(db, "127.0.0.1", "ali\ufffdce") == 1
    assert await _count(db, "127.0.0.1") == 2


def test_the_client_key_is_the_address_and_an_ipv6_client_its_slash_64() -> None:
    assert auth.client_key("203.0.113.9") == "203.0.113.9"
    assert auth.client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert auth.client_key("2001:db8:1:2::1") == auth.client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert auth.client_key("2001:db8:1:3::1") != auth.client_key("2001:db8:1:2::1")
    assert auth.client_key(None) == "unknown"


async def test_the_forwarded_for_header_is_not_trusted(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    for n in range(auth.MAX_FAILURES_PER_PAIR):
        resp = await client.post("/api/getToken", json={"username": "alice", "password": WRONG},
                                 headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert resp.status_code == 401
    assert await _count(db, "127.0.0.1", "alice") == auth.MAX_FAILURES_PER_PAIR
    resp = await client.post("/api/getToken", json={"username": "alice", "password": PASSWORD},
                             headers={"X-Forwarded-For": "198.51.100.200"})
    _throttled(resp)


async def test_a_password_is_verified_off_the_event_loop(
        client: httpx.AsyncClient, db: asyncpg.Connection, gated: GatedHasher) -> None:
    await add_user(db, "alice")
    login = asyncio.create_task(_login(client, "alice", PASSWORD))
    assert await asyncio.to_thread(gated.inside.acquire, True, 10)
    # The verification is under way and holds its thread; the loop still answers.
    health = await asyncio.wait_for(client.get("/healthz"), 5)
    assert health.status_code == 200 and not login.done()
    gated.gate.set()
    assert (await asyncio.wait_for(login, 10)).status_code == 200


async def test_logins_beyond_the_verification_queue_get_429_at_once(
        client: httpx.AsyncClient, db: asyncpg.Connection, gated: GatedHasher) -> None:
    places = auth.VERIFY_THREADS + auth.VERIFY_QUEUE
    waiting = [asyncio.create_task(_login(client, f"user{n}", WRONG)) for n in range(places)]
    for _ in range(auth.VERIFY_THREADS):
        assert await asyncio.to_thread(gated.inside.acquire, True, 10)
    for _ in range(200):  # every login has its place once each has counted its attempt
        if await _count(db, "127.0.0.1") == places:
            break
        await asyncio.sleep(0.01)
    resp = await asyncio.wait_for(_login(client, "late", WRONG), 5)
    assert _throttled(resp) == auth.BUSY_RETRY_AFTER
    assert await _count(db, "127.0.0.1", "late") is None  # refused before it was counted
    assert gated.verified == 0
    gated.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 20)
    assert [r.status_code for r in answers] == [401] * places
    assert gated.verified == places
    # Every place was given back.
    assert (await _login(client, "late", WRONG)).status_code == 401


def test_an_error_with_retry_after_is_rendered_with_the_header() -> None:
    resp = render_error(TooManyRequests("slow down", retry_after=7))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    assert resp.body == b'{"success":false,"messages":"slow down","code":429}'
    assert render_error(GatewayError("busy", retry_after=30)).headers["retry-after"] == "30"
    assert "retry-after" not in render_error(GatewayError("plain")).headers
