"""Database faults answer 503 with Retry-After, never 500: no server, refused connections, sessions ended by
the server (idle in the pool or in the middle of a request), and a pool whose connections are all taken."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, Api, add_user, assert_envelope, issue_token, sessions_waiting

from gateway.app import create_app
from gateway.config import Settings
from gateway.forms import Registry

GATEWAY_BACKENDS = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'erp-sync-gateway'")
CUSTOMER = {"CustomerCode": "KH1", "CustomerName": "One"}
INVOICE = {"VoucherId": "INV-1", "VoucherDate": "2026-03-15", "VoucherNumber": "INV-1", "CustomerCode": "KH1",
           "TotalQuantity": 2, "TotalNetAmount": 200_000, "TotalDiscountAmount": 0, "TotalTaxAmount": 20_000,
           "TotalAmount": 220_000,
           "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "Quantity": 2,
                       "UnitPrice": 100_000, "Amount": 200_000, "Discount": 0, "TaxRate": 10,
                       "TaxAmount": 20_000, "TotalAmount": 220_000}]}


def assert_unavailable(resp: httpx.Response) -> None:
    body = assert_envelope(resp)
    assert resp.status_code == 503 and body["code"] == 503 and body["success"] is False, resp.text
    assert 1 <= int(resp.headers["retry-after"]) <= 10


@pytest.fixture
async def client_without_database(request: pytest.FixtureRequest, tmp_path: Path,
                                  registry: Registry) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """A gateway started while its database is unreachable: no socket in the socket directory, or nothing
    listening on the port."""
    if request.param == "socket":
        url = f"postgresql://gw@/gateway?host={tmp_path}"
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        url = f"postgresql://gw@127.0.0.1:{port}/gateway"
    settings = Settings(data_dir=tmp_path, database_url=url, jwt_secret="s" * 40, pool_min_size=1,
                        pool_max_size=2)
    application = create_app(settings, registry)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            yield c, application


@pytest.mark.parametrize("client_without_database", ["socket", "refused"], indirect=True)
async def test_every_endpoint_answers_503_while_the_database_is_unreachable(
        client_without_database: tuple[httpx.AsyncClient, Any]) -> None:
    client, application = client_without_database
    token = application.state.gateway.tokens.issue("writer1", "acme", "writer").token
    headers = {"Authorization": token}
    assert_unavailable(await client.post("/api/getToken", json={"username": "writer1", "password": "x" * 12}))
    assert_unavailable(await client.post("/api/SyncData", json={"form": "setCustomer", "data": [CUSTOMER]},
                                         headers=headers))
    assert_unavailable(await client.post("/api/SyncData", json={"form": "setCustomer", "data": [CUSTOMER]},
                                         headers={**headers, "Idempotency-Key": "k1"}))
    assert_unavailable(await client.post("/api/SyncVoucher", json={"form": "setSaleInvoice", "data": [INVOICE]},
                                         headers=headers))
    assert_unavailable(await client.post("/api/GetData", json={"form": "getCustomer"}, headers=headers))
    assert_unavailable(await client.post("/api/GetData", json={"form": "getCustomer", "limit": 10},
                                         headers=headers))
    assert_unavailable(await client.get("/readyz"))
    # The process itself is up: liveness stays 200, so that a supervisor does not restart it in a loop.
    assert (await client.get("/healthz")).status_code == 200


async def terminate_gateway_sessions(db: asyncpg.Connection) -> int:
    """End every session the gateway's pool has open on the test database, and wait until they are gone (the
    pool may open new ones meanwhile)."""
    pids = [r["pid"] for r in await db.fetch(GATEWAY_BACKENDS)]
    await db.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
    for _ in range(500):
        if not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", pids):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the terminated sessions did not end")
    return len(pids)


async def test_sessions_ended_by_the_server_answer_503_or_succeed_never_500(
        api: Api, db: asyncpg.Connection) -> None:
    assert_envelope(await api.sync("setCustomer", [CUSTOMER]))
    assert await terminate_gateway_sessions(db) >= 1
    statuses = []
    for i in range(4):
        resp = await api.sync("setCustomer", [{**CUSTOMER, "CustomerName": f"Name {i}"}])
        statuses.append(resp.status_code)
        if resp.status_code == 503:
            assert_unavailable(resp)
        else:
            assert assert_envelope(resp)["result"]["updated"] == 1
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses
    # Reads too, once more after another round of terminations.
    assert await terminate_gateway_sessions(db) >= 1
    for _ in range(5):  # each dead connection the pool still holds may cost one 503, no more
        resp = await api.get("getCustomer")
        assert resp.status_code in (200, 503), resp.text
        if resp.status_code == 200:
            break
        assert_unavailable(resp)
    assert assert_envelope(resp)["data"][0]["CustomerName"] == "Name 3"


async def test_a_session_ended_in_the_middle_of_a_request_answers_503(
        api: Api, db: asyncpg.Connection, db_url: str) -> None:
    watcher = await asyncpg.connect(db_url)
    try:
        async with db.transaction():
            await db.execute("LOCK TABLE customer IN EXCLUSIVE MODE")  # the write waits for it
            request = asyncio.create_task(api.sync("setCustomer", [CUSTOMER]))
            (pid,) = await sessions_waiting(watcher)  # the request, waiting for the table
            await watcher.execute("SELECT pg_terminate_backend($1)", pid)
            resp = await asyncio.wait_for(request, 10)
        assert_unavailable(resp)
        assert await db.fetchval("SELECT count(*) FROM customer") == 0
        # The pool replaces the connection: the next request is served.
        assert assert_envelope(await api.sync("setCustomer", [CUSTOMER]))["result"]["inserted"] == 1
    finally:
        await watcher.close()


async def test_a_pool_with_every_connection_taken_answers_503_after_a_bounded_wait(
        settings: Settings, registry: Registry, db: asyncpg.Connection) -> None:
    small = dataclasses.replace(settings, pool_min_size=1, pool_max_size=1, pool_timeout_seconds=0.3)
    application = create_app(small, registry)
    async with application.router.lifespan_context(application):
        await add_user(db, "writer1", "writer")
        api = Api(httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                    base_url="http://gateway.test"), await issue_token(application, db, "writer1"))
        async with api.client:
            pool = application.state.gateway.pool
            async with pool.acquire():  # the only connection, held elsewhere
                for send in (lambda: api.sync("setCustomer", [CUSTOMER]), lambda: api.get("getCustomer"),
                             lambda: api.client.post("/api/getToken",
                                                     json={"username": "writer1", "password": PASSWORD})):
                    started = time.perf_counter()
                    resp = await send()
                    waited = time.perf_counter() - started
                    assert_unavailable(resp)
                    assert 0.25 <= waited < 5, waited
            assert assert_envelope(await api.sync("setCustomer", [CUSTOMER]))["result"]["inserted"] == 1

