"""GET /metrics: request, record, latency, pool and change-feed figures, access by token, and the sums across
the worker processes of a real `gateway serve`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.forms import Registry
from tests.conftest import Api, add_user, assert_envelope, issue_token
from tests.test_serve import free_port

SCRAPE_TOKEN = "m" * 40
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape(client: httpx.AsyncClient, token: str = SCRAPE_TOKEN) -> Samples:
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == metrics.CONTENT_TYPE_LATEST
    return parse(resp.text)


@pytest.fixture
async def metered(settings: Settings, registry: Registry) -> AsyncIterator[Any]:
    application = create_app(dataclasses.replace(settings, metrics_token=SCRAPE_TOKEN), registry)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def mclient(metered: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=metered), base_url="http://gateway.test") as c:
        yield c


@pytest.fixture
async def mapi(metered: Any, mclient: httpx.AsyncClient, db: asyncpg.Connection) -> Api:
    await add_user(db, "writer1", "writer")
    return Api(mclient, await issue_token(metered, db, "writer1"))


def cust(code: str, **extra: Any) -> dict[str, Any]:
    return {"CustomerCode": code, "CustomerName": f"Customer {code}", **extra}


async def test_requests_are_counted_by_endpoint_form_and_status(mapi: Api, mclient: httpx.AsyncClient) -> None:
    before = await scrape(mclient)
    assert (await mapi.sync("setCustomer", [cust("K1")])).status_code == 200
    assert (await mapi.sync("setCustomer", [cust("K2")])).status_code == 200
    assert (await mapi.get("getCustomer")).json()["records"] == 2
    # A form that does not exist: Fast's 201 in an HTTP 200; the form label is "unknown", not the name sent.
    assert (await mapi.post("SyncData", {"form": "setNoSuchThing", "data": []})).json()["code"] == 201
    assert (await mclient.post("/api/syncdata/", json={"form": "setCustomer", "data": []})).status_code == 401
    assert (await mclient.get("/no/such/path")).status_code == 404
    after = await scrape(mclient)

    name = "gateway_requests_total"
    assert delta(before, after, name, endpoint="/api/SyncData", form="setCustomer", status="200") == 2
    assert delta(before, after, name, endpoint="/api/GetData", form="getCustomer", status="200") == 1
    assert delta(before, after, name, endpoint="/api/SyncData", form="unknown", status="200") == 1
    assert delta(before, after, name, endpoint="/api/SyncData", form="unknown", status="401") == 1
    assert delta(before, after, name, endpoint="other", form="none", status="404") == 1
    assert delta(before, after, name, endpoint="/metrics", form="none", status="200") == 1  # the first scrape
    assert not any(("setNoSuchThing" in str(key) or "/no/such" in str(key)) for key in after)

    # Every request is timed: the histogram's count grows by the requests of its endpoint.
    hist = "gateway_request_duration_seconds"
    assert delta(before, after, f"{hist}_count", endpoint="/api/SyncData") == 4
    assert delta(before, after, f"{hist}_bucket", endpoint="/api/SyncData", le="+Inf") == 4
    assert delta(before, after, f"{hist}_sum", endpoint="/api/SyncData") > 0
    assert value(after, f"{hist}_bucket", endpoint="/api/GetData", le="10.0") <= value(
        after, f"{hist}_bucket", endpoint="/api/GetData", le="+Inf")


async def test_records_are_counted_by_outcome_as_the_answers_report_them(
        mapi: Api, mclient: httpx.AsyncClient) -> None:
    before = await scrape(mclient)
    first = (await mapi.sync("setCustomer", [cust("K1"), cust("K2"), cust("K3")])).json()
    second = (await mapi.sync("setCustomer", [cust("K1", CustomerName="Renamed"), cust("K2"),
                                              {"CustomerCode": "K3", "action": "delete"}])).json()
    partial = (await mapi.sync("setCustomer", [cust("K4"), cust("K5", Email=[])], mode="partial")).json()
    refused = (await mapi.sync("setCustomer", [cust("K6"), cust("K7", Email=[])])).json()
    dry = (await mapi.sync("setCustomer", [cust("K8")], dry_run=True)).json()
    after = await scrape(mclient)

    assert first["result"]["inserted"] == 3
    assert (second["result"]["updated"], second["result"]["unchanged"], second["result"]["deleted"]) == (1, 1, 1)
    assert (partial["result"]["inserted"], partial["result"]["failed"]) == (1, 1)
    assert (refused["code"], refused["result"]["failed"]) == (601, 1)
    assert dry["dry_run"] is True  # writes nothing, so counts nothing
    expected = {"inserted": 3 + 1, "updated": 1, "unchanged": 1, "deleted": 1, "failed": 1 + 1}
    for outcome, count in expected.items():
        assert delta(before, after, "gateway_records_total", form="setCustomer", outcome=outcome) == count, outcome


async def test_pool_gauges_and_change_feed_are_read_at_scrape(
        metered: Any, mapi: Api, mclient: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> None:
    assert (await mapi.sync("setCustomer", [cust("K1")])).status_code == 200
    newest = await db.fetchval("SELECT max(id) FROM change_log")
    pool = metered.state.gateway.pool
    name = "gateway_db_pool_connections"
    samples = await scrape(mclient)
    assert value(samples, name, state="max") == settings.pool_max_size
    assert (value(samples, name, state="in_use"), value(samples, name, state="idle")) == (0, pool.get_size())
    async with pool.acquire(), pool.acquire():
        samples = await scrape(mclient)
    assert value(samples, name, state="in_use") == 2
    assert value(samples, name, state="idle") == pool.get_size() - 2
    assert value(samples, "gateway_change_feed_sequence") == newest
    assert value(samples, "gateway_change_feed_held_back_seconds") == 0

    # A write still open holds the tenant's gate: pulls wait for it, and the gauge says for how long. (On a
    # connection of the gateway's own role, whose sessions' start pg_stat_activity shows it.)
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    async with pool.acquire() as writer, writer.transaction():
        await writer.execute("SELECT pg_advisory_xact_lock_shared(1450738502, $1)", tenant_id)
        held = await scrape(mclient)
    assert value(held, "gateway_change_feed_held_back_seconds") > 0
    assert value(await scrape(mclient), "gateway_change_feed_held_back_seconds") == 0


async def test_readers_registered_at_scrape_add_families_and_a_failing_one_is_left_out(
        mclient: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def outbox(conn: asyncpg.Connection) -> list[Any]:
        return [GaugeMetricFamily("gateway_outbox_oldest_age_seconds", "test", value=await conn.fetchval("SELECT 7"))]

    async def broken(conn: asyncpg.Connection) -> list[Any]:
        await conn.fetchval("SELECT * FROM no_such_table")
        return []

    monkeypatch.setattr(metrics, "_READERS", [broken, outbox, metrics.change_feed])
    samples = await scrape(mclient)
    assert value(samples, "gateway_outbox_oldest_age_seconds") == 7
    assert ("gateway_change_feed_held_back_seconds", frozenset()) in samples


async def test_a_scrape_needs_the_configured_bearer_token(
        mclient: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": SCRAPE_TOKEN},
                    {"Authorization": f"Basic {SCRAPE_TOKEN}"}):
        resp = await mclient.get("/metrics", headers=headers)
        assert (resp.status_code, assert_envelope(resp)["code"]) == (403, 403), headers
        assert "gateway_" not in resp.text
    assert (await mclient.get("/metrics", headers={"Authorization": f"bearer {SCRAPE_TOKEN}"})).status_code == 200
    # With no token configured (the default), every scrape is refused, from any address.
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert (resp.status_code, assert_envelope(resp)["code"]) == (403, 403)


async def test_metrics_off_answers_404_and_leaves_requests_uncounted(settings: Settings, registry: Registry) -> None:
    off = create_app(dataclasses.replace(settings, metrics=False, metrics_token=SCRAPE_TOKEN), registry)
    before = parse(metrics.render([]).decode())  # what this process has counted so far, as a scrape reads it
    async with off.router.lifespan_context(off), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=off), base_url="http://gateway.test") as c:
        resp = await c.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert (resp.status_code, assert_envelope(resp)["code"]) == (404, 404)
        assert (await c.get("/healthz")).status_code == 200
    after = parse(metrics.render([]).decode())
    requests = {key: count for key, count in after.items() if key[0] == "gateway_requests_total"}
    assert requests == {key: count for key, count in before.items() if key[0] == "gateway_requests_total"}


def test_metrics_settings_are_checked() -> None:
    assert Settings.from_env({}).metrics is True and Settings.from_env({}).metrics_token is None
    assert Settings.from_env({"GATEWAY_METRICS": "off"}).metrics is False
    assert Settings.from_env({"GATEWAY_METRICS_TOKEN": SCRAPE_TOKEN}).metrics_token == SCRAPE_TOKEN
    for env in ({"GATEWAY_METRICS": "maybe"}, {"GATEWAY_METRICS_TOKEN": "short"},
                {"GATEWAY_METRICS_TOKEN": "x" * 20 + " " + "y" * 20}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)


# --- a real supervisor with two workers ----------------------------------------------------------------------

def workers_of(supervisor: int, port: int) -> set[int]:
    """The supervisor's children that listen on `port`: its web workers (not multiprocessing's resource
    tracker, nor a companion process)."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                listening.add(f"socket:[{fields[9]}]")
    workers = set()
    for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # a child that has just ended
            if any(os.readlink(fd) in listening for fd in Path(f"/proc/{pid}/fd").iterdir()):
                workers.add(int(pid))
    return workers


async def fresh_scrape(port: int) -> Samples:
    # A connection of its own: the kernel hands it to either worker.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
        return await scrape(c)


async def test_metrics_are_summed_across_workers_and_survive_a_worker_restart(
        db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "GATEWAY_DATA_DIR": str(tmp_path),
           "GATEWAY_METRICS_TOKEN": SCRAPE_TOKEN, "GATEWAY_POOL_MAX": "3", "GATEWAY_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output = b""
    try:
        while b"Serving on" not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, output
            output += line
        match = re.search(rb"user 'demo', password '([^']+)'", output)
        assert match, output
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            resp = await client.post("/api/getToken", json={"username": "demo", "password": match.group(1).decode()})
            token = resp.json()["token"]["accesstoken"]
        for i in range(12):  # fresh connections: both workers answer some
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                resp = await fresh.post("/api/SyncData", headers={"Authorization": token},
                                        json={"form": "setCustomer", "data": [cust(f"K{i}")]})
                assert resp.status_code == 200, resp.text

        # Whichever worker answers, the sums are the same: every worker's counts, each pool's connections.
        for _ in range(6):
            samples = await fresh_scrape(port)
            assert value(samples, "gateway_requests_total", endpoint="/api/SyncData", form="setCustomer",
                         status="200") == 12
            assert value(samples, "gateway_records_total", form="setCustomer", outcome="inserted") == 12
            assert value(samples, "gateway_request_duration_seconds_count", endpoint="/api/SyncData") == 12
            assert value(samples, "gateway_db_pool_connections", state="max") == 2 * 3

        # A worker killed: the supervisor restarts it; its counts stay in the sums, its pool leaves them.
        workers = workers_of(proc.pid, port)
        assert len(workers) == 2, workers
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        for _ in range(300):
            replaced = workers_of(proc.pid, port)
            if victim not in replaced and len(replaced) == 2:
                samples = await fresh_scrape(port)
                if value(samples, "gateway_db_pool_connections", state="max") == 2 * 3:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the killed worker was not replaced")
        for _ in range(6):
            samples = await fresh_scrape(port)
            assert value(samples, "gateway_requests_total", endpoint="/api/SyncData", form="setCustomer",
                         status="200") == 12
            assert value(samples, "gateway_records_total", form="setCustomer", outcome="inserted") == 12
            # The dead worker's pool is no longer counted: two live pools, not three.
            assert value(samples, "gateway_db_pool_connections", state="max") == 2 * 3
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 40)
        output += rest
    assert proc.returncode == 0, output.decode()
    assert b"worker_exited" in output
