"""The Python client (client/, package erp_gateway_client) against a real gateway process over TCP: logins,
retries, chunked uploads, pages and the change feed, and an upload that survives the gateway being killed."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, GatewayProcess, add_user, sessions_waiting
from erp_gateway_client import (
    AsyncClient,
    ChunkResult,
    Client,
    DataStructureError,
    FormNotFound,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryEvent,
    RetryPolicy,
    _json,
)
from erp_gateway_client._core import endpoint_of, retry_after

from gateway.forms import Registry

SECRET = "client-tests-secret-" + "x" * 24
# Quick retries for connection errors while a gateway restarts, and room for one restart (a few seconds).
PATIENT = RetryPolicy(max_attempts=40, backoff=0.1, max_backoff=0.5, max_elapsed=60)

Serve = Callable[..., GatewayProcess]


@pytest.fixture
def serve(db_url: str, tmp_path: Path) -> Iterator[Serve]:
    """Start `gateway serve` on the test database, with extra environment variables; stopped after the test."""
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        gateway = GatewayProcess(db_url, {"GATEWAY_DATA_DIR": str(tmp_path),
                                  "GATEWAY_JWT_SECRET": SECRET, "GATEWAY_POOL_MIN": "1", **env},
                                 tmp_path / f"gateway{len(started)}.log")
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
async def writer(db: asyncpg.Connection) -> str:
    await add_user(db, "writer1", "writer")
    return "writer1"


def customers(count: int, name: str = "Customer", start: int = 0) -> list[dict[str, Any]]:
    return [{"CustomerCode": f"KH{i:06d}", "CustomerName": f"{name} {i}"} for i in range(start, start + count)]


async def audit_kinds(db: asyncpg.Connection) -> list[str]:
    return [r["kind"] for r in await db.fetch(
        "SELECT kind FROM audit_log WHERE kind IN ('login', 'token_refused', 'token_refreshed') ORDER BY id")]


async def test_a_big_list_goes_in_chunks_under_the_record_and_byte_limits_and_the_counts_add_up(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve()
    bodies: list[int] = []
    http = httpx.Client(base_url=gateway.url, event_hooks={"request": [
        lambda request: bodies.append(len(request.content)) if request.url.path == "/api/SyncData" else None]})
    progress: list[ChunkResult] = []
    with Client(gateway.url, writer, PASSWORD, http=http, max_records=1_000) as client:
        result = client.sync("setCustomer", customers(2_500), on_chunk=progress.append)
        assert [(c.start, len(c.records)) for c in progress] == [(0, 1_000), (1_000, 1_000), (2_000, 500)]
        assert (result.records, result.inserted, result.failed) == (2_500, 2_500, 0)
        assert len({c.idempotency_key for c in progress}) == 3
        assert await db.fetchval("SELECT count(*) FROM customer") == 2_500

        # A byte budget splits too: every body stays under it, whatever the record count allows.
        bodies.clear()
        result = client.sync("setCustomer", customers(2_500, "Renamed"), max_body_bytes=40_000)
        assert len(bodies) == len(result.chunks) > 3 and max(bodies) <= 40_000
        assert (result.updated, sum(len(c.records) for c in result.chunks)) == (2_500, 2_500)

        # Decimals go out as exact JSON numbers, and come back as Decimal.
        client.sync("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH",
                                 "Price": Decimal("12345678901234567.89")}])
        assert client.get("getItem", Id="IT1").data[0]["Price"] == Decimal("12345678901234567.89")


async def test_a_rerun_with_the_same_key_prefix_is_replayed_not_applied_again(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve()
    with Client(gateway.url, writer, PASSWORD) as client:
        first = client.sync("setCustomer", customers(1_500), chunk_size=500, key_prefix="import-42")
        again = client.sync("setCustomer", customers(1_500), chunk_size=500, key_prefix="import-42")
    assert [c.idempotency_key for c in again.chunks] == ["import-42-0", "import-42-1", "import-42-2"]
    assert [c.replayed for c in first.chunks] == [False] * 3 and [c.replayed for c in again.chunks] == [True] * 3
    assert first.counts == again.counts and again.inserted == 1_500
    assert await db.fetchval("SELECT count(*) FROM idempotency_key") == 3


async def test_rejected_records_come_back_with_their_index_in_the_callers_list(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve()
    records = customers(1_200)
    records[3] = {"CustomerCode": "BAD3"}  # no CustomerName
    records[1_105] = {"CustomerCode": "BAD1105", "CustomerName": "x", "Email": 42}
    with Client(gateway.url, writer, PASSWORD, max_records=500) as client:
        result = client.sync("setCustomer", records, partial=True, outcomes=True)
        assert [(e.index, e.key) for e in result.errors] == [(3, "BAD3"), (1_105, "BAD1105")]
        assert result.errors[1].path == "/Email"
        assert [(r.index, r.record) for r in result.rejected] == [(3, records[3]), (1_105, records[1_105])]
        assert (result.inserted, result.failed) == (1_198, 2)
        assert [o.index for o in result.outcomes] == list(range(1_200))
        assert {o.status for o in result.outcomes if o.index in (3, 1_105)} == {"failed"}
        assert await db.fetchval("SELECT count(*) FROM customer") == 1_198

        # Atomic (the default): the refused chunk stops the sync; the error says what was written before it.
        records = customers(1_200, start=5_000)
        records[700] = {"CustomerCode": "BAD700"}
        with pytest.raises(DataStructureError) as refused:
            client.sync("setCustomer", records)
        assert [e.index for e in refused.value.errors] == [700] and refused.value.code == 601
        assert [(c.start, c.refused) for c in refused.value.result.chunks] == [(0, False), (500, True)]
        assert refused.value.result.inserted == 500
        assert await db.fetchval("SELECT count(*) FROM customer") == 1_698

        # Final refusals are not retried.
        events: list[RetryEvent] = []
        client.session.on_retry = events.append
        with pytest.raises(FormNotFound):
            client.sync("setNoSuchThing", [{"x": 1}], endpoint="SyncData")
    await add_user(db, "reader1", "reader")
    with Client(gateway.url, "reader1", PASSWORD, on_retry=events.append) as reader, \
            pytest.raises(PermissionDenied) as denied:
        reader.sync("setCustomer", customers(1))
    assert denied.value.status == 403 and denied.value.request_id and events == []


async def test_the_token_is_renewed_before_it_expires_and_after_it_is_revoked(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve(GATEWAY_TOKEN_TTL="4")
    with Client(gateway.url, writer, PASSWORD) as client, \
            Client(gateway.url, writer, PASSWORD, refresh=True) as refreshing:
        client.sync("setCustomer", customers(1))
        refreshing.login()
        first, first_refreshing = client.token, refreshing.token
        assert await audit_kinds(db) == ["login", "login"]
        await asyncio.sleep(2.6)  # past half the tokens' life: renewed before use, never refused
        assert client.get("getCustomer").data[0]["CustomerCode"] == "KH000000"
        assert client.token != first and client.session.logins == 2
        assert await audit_kinds(db) == ["login", "login", "login"]
        # Asked for a refresh token, the client spends it instead of the password.
        assert refreshing.get("getCustomer").data[0]["CustomerCode"] == "KH000000"
        assert refreshing.token != first_refreshing and refreshing.session.logins == 1
        assert await audit_kinds(db) == ["login", "login", "login", "token_refreshed"]

        # A token ended early (a logout) gets 401: the client logs in again and repeats the request once.
        async with httpx.AsyncClient(base_url=gateway.url) as raw:
            resp = await raw.post("/api/revokeToken", headers={"Authorization": client.token or ""},
                                  json={"all": True})
        assert resp.status_code == 200, resp.text
        assert client.sync("setCustomer", customers(1, "Again")).updated == 1
        assert client.session.logins == 3
        assert (await audit_kinds(db))[4:] == ["token_refused", "login"]


async def test_a_refused_login_is_retried_after_its_retry_after(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve()
    # Ten failures of this address and user, whose window closes in 2 seconds: a login gets 429 until then.
    await db.execute("INSERT INTO login_throttle (client_addr, username, window_start, attempts)"
                     " VALUES ('127.0.0.1', $1, now() - interval '898 seconds', 10)", writer)
    events: list[RetryEvent] = []
    with Client(gateway.url, writer, PASSWORD, on_retry=events.append) as client:
        assert client.login()
    assert [e.status for e in events] == [429] and events[0].delay >= 1
    # A wait longer than the client's patience is not slept through: the error says when to come back.
    await db.execute("UPDATE login_throttle SET window_start = now(), attempts = 10 WHERE username = $1", writer)
    with Client(gateway.url, writer, PASSWORD, retry=RetryPolicy(max_elapsed=30)) as client, \
            pytest.raises(RateLimited) as limited:
        client.login()
    assert limited.value.retry_after is not None and limited.value.retry_after > 30


async def test_a_503_from_a_busy_pool_is_retried_async(serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve(GATEWAY_POOL_MAX="1", GATEWAY_POOL_TIMEOUT="0.3")
    retried = asyncio.Event()
    events: list[RetryEvent] = []

    def on_retry(event: RetryEvent) -> None:
        events.append(event)
        retried.set()

    async with AsyncClient(gateway.url, writer, PASSWORD, on_retry=on_retry) as client, \
            httpx.AsyncClient(base_url=gateway.url) as raw:
        token = await client.login()
        async with db.transaction():
            # The one database connection of the worker waits on this lock with a write...
            await db.execute("LOCK TABLE customer IN SHARE MODE")
            blocked = asyncio.ensure_future(raw.post(
                "/api/SyncData", headers={"Authorization": token},
                json={"form": "setCustomer", "data": customers(1)}))
            await sessions_waiting(db)
            # ...so a read finds no free connection: 503 with Retry-After, and the client waits and retries.
            reading = asyncio.ensure_future(client.get("getCustomer"))
            await asyncio.wait_for(retried.wait(), 20)
        assert (await blocked).status_code == 200
        page = await reading
    assert [c["CustomerCode"] for c in page.data] == ["KH000000"]
    assert [e.status for e in events] == [503] and events[0].delay >= 2


async def test_pages_and_the_feed_resume_from_a_stored_position(serve: Serve, writer: str) -> None:
    gateway = serve()
    with Client(gateway.url, writer, PASSWORD) as client:
        client.sync("setCustomer", customers(25))
        pages = list(client.pages("getCustomer", limit=10, fields=["CustomerName"]))
        assert [len(p.data) for p in pages] == [10, 10, 5] and pages[-1].next_cursor is None
        assert [c["CustomerCode"] for p in pages for c in p.data] == [f"KH{i:06d}" for i in range(25)]

        feed = list(client.feed("getCustomer", limit=10))
        assert [len(p.data) for p in feed] == [10, 10, 5] and [p.more for p in feed] == [True, True, False]
        stored = feed[-1].next_since
        client.sync("setCustomer", [{"CustomerCode": "KH000003", "CustomerName": "Changed"},
                                    {"CustomerCode": "KH000007", "action": "delete"}])
    async with AsyncClient(gateway.url, writer, PASSWORD) as aclient:
        changes = [page async for page in aclient.feed("getCustomer", since=stored)]
        assert [(c["CustomerCode"], c["Deleted"]) for p in changes for c in p.data] == [
            ("KH000003", False), ("KH000007", True)]
        # Caught up: the position stays usable, and nothing more comes.
        quiet = [page async for page in aclient.feed("getCustomer", since=changes[-1].next_since)]
        assert [p.data for p in quiet] == [[]]
        codes = [c["CustomerCode"] async for p in aclient.pages("getCustomer", limit=7) for c in p.data]
        assert len(codes) == 24 and "KH000007" not in codes


async def test_an_upload_survives_the_gateway_being_killed_mid_request_without_loss_or_duplicates(
        serve: Serve, writer: str, db: asyncpg.Connection) -> None:
    gateway = serve()
    records = customers(4_000)
    progress: list[ChunkResult] = []
    third_chunk_done = threading.Event()

    def on_chunk(chunk: ChunkResult) -> None:
        progress.append(chunk)
        if chunk.number == 2:
            third_chunk_done.set()

    client = Client(gateway.url, writer, PASSWORD, max_records=500, retry=PATIENT)
    async with db.transaction():
        # The first chunk waits on this lock inside the gateway, its transaction open; then the process dies.
        await db.execute("LOCK TABLE customer IN SHARE MODE")
        upload = asyncio.ensure_future(asyncio.to_thread(client.sync, "setCustomer", records, outcomes=True,
                                                         on_chunk=on_chunk))
        await sessions_waiting(db)
        gateway.kill()
    gateway.start()
    # Once more, wherever the upload is when the third chunk has been answered: in flight, committed or not.
    await asyncio.to_thread(third_chunk_done.wait, 60)
    gateway.kill()
    gateway.start()
    result = await upload
    client.close()

    assert [len(c.records) for c in progress] == [500] * 8 and progress[0].attempts > 1
    assert any(c.attempts > 1 for c in progress[3:]), [(c.number, c.attempts) for c in progress]
    # Every record written once: inserted by exactly one application of its chunk (a chunk applied twice
    # would count its records unchanged the second time), and each chunk's key answered once.
    assert (result.inserted, result.unchanged, result.updated, result.failed) == (4_000, 0, 0, 0)
    assert [(o.index, o.key, o.status) for o in result.outcomes] == [
        (i, r["CustomerCode"], "inserted") for i, r in enumerate(records)]
    assert await db.fetchval("SELECT count(*) FROM customer") == 4_000
    assert await db.fetchval("SELECT count(DISTINCT customer_code) FROM customer") == 4_000
    assert await db.fetchval("SELECT count(*) FROM idempotency_key WHERE response_status = 200") == 8


def test_decimals_are_written_as_exact_json_numbers_and_read_back_as_decimals() -> None:
    record = {"Code": "A", "Amount": Decimal("0.1"), "Big": Decimal("123456789012345678901.000000001"),
              "Rate": 0.5, "Lines": [{"Qty": Decimal(2)}], "Day": datetime.date(2026, 6, 10)}
    text = _json.dumps(record)
    assert text == (b'{"Code":"A","Amount":0.1,"Big":123456789012345678901.000000001,"Rate":0.5,'
                    b'"Lines":[{"Qty":2}],"Day":"2026-06-10"}')
    assert _json.loads(text)["Big"] == Decimal("123456789012345678901.000000001")
    with pytest.raises(ValueError):
        _json.dumps({"Amount": Decimal("NaN")})


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.UTC)
    assert retry_after({"retry-after": "7"}, now) == 7.0
    assert retry_after({"retry-after": "Wed, 02 Dec 2026 12:00:30 GMT"}, now) == 30.0
    assert retry_after({"retry-after": "soon"}, now) is None and retry_after({}, now) is None


async def test_a_forms_schema_is_read_under_any_of_its_names_without_logging_in(serve: Serve) -> None:
    gateway = serve()
    with Client(gateway.url, "nobody", "no password") as client:
        schema = client.schema("getcustomer")
        assert schema["title"] == "setCustomer" and "CustomerCode" in schema["properties"]
        assert client.session.logins == 0
        with pytest.raises(NotFound):
            client.schema("getNoSuchForm")
    async with AsyncClient(gateway.url, "nobody", "no password") as aclient:
        assert (await aclient.schema("setSalesInvoice"))["title"] == "setSaleInvoice"


def test_the_client_sends_each_form_to_the_endpoint_the_gateway_serves_it_on(registry: Registry) -> None:
    """The client, installed on its own, knows the voucher forms by name: every name and alias of every form
    the gateway registers goes where the gateway takes it."""
    for form in registry.forms:
        for name in form.sync_names():
            assert (endpoint_of(name), endpoint_of(name.upper())) == (form.endpoint, form.endpoint), name
