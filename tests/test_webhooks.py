"""Webhooks: subscriptions, signed deliveries from the change feed through the job queue, retries, dead letters,
replays, secret rotation, the SSRF guard, the admin API and the CLI, against a real receiver on 127.0.0.1 and
the real database."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, Api, add_user, issue_token
from test_cli import Gateway, gateway  # noqa: F401  (the CLI fixture)
from test_serve import free_port
from test_vouchers import VoucherApi, invoice, vapi  # noqa: F401 - vapi: the fixture

from gateway import metrics, webhook_worker, webhooks
from gateway.config import PROJECT_ROOT, Settings
from gateway.db import APP_ROLE, QUERIES, init_connection, with_user
from gateway.forms import Registry

WAIT = 20.0  # seconds a test waits for the worker at most; it returns as soon as what it waits for is there


def readme_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    """The README's verification snippet, as a receiver would run it (only hmac, hashlib and base64)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - the project's own README
    return namespace["verify"]  # type: ignore[no-any-return]


verify = readme_verify()


class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is sent and answers `status` (200 unless told)."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def changes(self) -> list[dict[str, Any]]:
        return [c for _, body in self.received for c in json.loads(body)["data"]["changes"]]


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def db(db: asyncpg.Connection) -> asyncpg.Connection:
    """The owner's connection, with jsonb decoded as the gateway's connections decode it."""
    await init_connection(db)
    return db


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_allow_private=True, webhook_retry_base_seconds=0.05,
                               webhook_retry_max_delay_seconds=0.2, webhook_retry_window_seconds=60.0,
                               webhook_poll_seconds=0.1, webhook_timeout_seconds=2.0)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, registry: Registry) -> AsyncIterator[None]:
    task = asyncio.create_task(webhook_worker.run(settings, registry))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], Any]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, "the worker did not get there in time"
        await asyncio.sleep(0.05)


def failures(outcome: str) -> float:
    found = re.search(rf'gateway_webhook_failures_total{{outcome="{outcome}"}} ([0-9.e+]+)',
                      metrics.render([]).decode())
    return float(found.group(1)) if found else 0.0


async def tenant_id(db: asyncpg.Connection) -> int:
    """Tenant acme's id; made if the test has not made it yet."""
    found = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    return found or await db.fetchval(QUERIES["tenant_add"], "acme", "Acme")


def cust(code: str, name: str) -> dict[str, Any]:
    return {"CustomerCode": code, "CustomerName": name}


async def test_a_sync_is_delivered_signed_in_order_once(api: Api, db: asyncpg.Connection, receiver: Receiver,
                                                       hook_settings: Settings, registry: Registry) -> None:
    sub_id, secret = await webhooks.add(db, registry, hook_settings, await tenant_id(db), receiver.url,
                                        "setCustomer")
    assert secret.startswith("whsec_")
    writes = [[cust("KH1", "One"), cust("KH2", "Two")], [cust("KH1", "One again")],
              [{"CustomerCode": "KH2", "action": "delete"}]]
    async with running_worker(hook_settings, registry):
        for expected, data in enumerate(writes, start=1):
            assert (await api.sync("setCustomer", data)).status_code == 200
            await until(lambda n=expected: len(receiver.received) >= n)  # type: ignore[misc]
        await asyncio.sleep(0.3)  # nothing more is to come
    assert len(receiver.received) == 3
    for headers, body in receiver.received:
        assert verify(secret, headers, body)
        assert headers["webhook-id"].startswith("msg_")
        event = json.loads(body)
        assert event["type"] == "records.changed" and event["tenant"] == "acme" and event["subscription"] == sub_id
    # Every change once, in the order made, each record as the change left it.
    per_record: dict[str, list[tuple[str, Any]]] = {}
    for change in receiver.changes():
        assert change["form"] == "setCustomer"
        per_record.setdefault(change["key"]["CustomerCode"], []).append(
            (change["action"], change["data"] and change["data"]["CustomerName"]))
    assert per_record == {"KH1": [("upsert", "One"), ("upsert", "One again")],
                          "KH2": [("upsert", "Two"), ("delete", None)]}
    assert await db.fetchval("SELECT count(*) FROM webhook_delivery WHERE status <> 'delivered'") == 0
    # A tampered body fails the check.
    headers, body = receiver.received[0]
    assert not verify(secret, headers, body + b" ")


async def test_receiver_down_for_a_while_is_retried_with_the_same_id(
        api: Api, db: asyncpg.Connection, hook_settings: Settings, registry: Registry) -> None:
    with socket.socket() as probe:  # a port where nothing listens yet: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    _, secret = await webhooks.add(db, registry, hook_settings, await tenant_id(db), url, ["setCustomer"])
    async with running_worker(hook_settings, registry):
        await api.sync("setCustomer", [cust("KH1", "One")])
        await until(lambda: db.fetchval("SELECT attempts >= 3 FROM webhook_delivery"))
        await api.sync("setCustomer", [cust("KH1", "One, changed while the receiver was down")])
        late = Receiver(port)  # the receiver is back
        try:
            late.status = 503  # ... answering 503 at first
            await until(lambda: len(late.received) >= 2)
            late.status = 200
            await until(lambda: db.fetchval("SELECT bool_and(status = 'delivered') AND count(*) = 2"
                                            " FROM webhook_delivery"))
        finally:
            late.close()
    ids = [h["webhook-id"] for h, _ in late.received]
    first, second = dict.fromkeys(ids)  # two deliveries, in the order they first arrived
    assert ids.count(first) >= 3  # refused, 503, 503, ... then 200: the same id on every retry
    # The later change waited for the earlier one to be through: it never arrives before it.
    assert ids.index(second) > max(i for i, x in enumerate(ids) if x == first)
    assert all(verify(secret, h, b) for h, b in late.received)
    names = {h["webhook-id"]: json.loads(b)["data"]["changes"][0]["data"]["CustomerName"] for h, b in late.received}
    assert names == {first: "One", second: "One, changed while the receiver was down"}
    rows = await db.fetch("SELECT attempts, last_status FROM webhook_delivery ORDER BY seq")
    assert rows[0]["attempts"] >= 4 and rows[0]["last_status"] == 200


async def test_exhausted_retries_dead_letter_then_replay(api: Api, db: asyncpg.Connection, receiver: Receiver,
                                                        hook_settings: Settings, registry: Registry,
                                                        gateway: Gateway) -> None:  # noqa: F811
    short = dataclasses.replace(hook_settings, webhook_retry_window_seconds=0.5)
    dead_before, retries_before = failures("dead"), failures("retry")
    await webhooks.add(db, registry, short, await tenant_id(db), receiver.url, ["setCustomer"])
    receiver.status = 500
    async with running_worker(short, registry):
        await api.sync("setCustomer", [cust("KH1", "One")])
        dead = await until(lambda: db.fetchval("SELECT id FROM webhook_delivery WHERE status = 'dead'"))
        code, out = await gateway("webhook", "deliveries", "--dead")
        assert code == 0 and dead in out and "HTTP 500" in out
        receiver.status = 200
        code, out = await gateway("webhook", "replay", dead)
        assert code == 0, out
        await until(lambda: db.fetchval("SELECT status = 'delivered' FROM webhook_delivery WHERE id = $1", dead))
    assert receiver.received[-1][0]["webhook-id"] == dead
    assert {h["webhook-id"] for h, _ in receiver.received} == {dead}
    assert failures("dead") == dead_before + 1 and failures("retry") > retries_before  # GET /metrics counts them


async def test_rotation_signs_with_both_secrets(db: asyncpg.Connection, receiver: Receiver,
                                               hook_settings: Settings, registry: Registry) -> None:
    sub_id, old = await webhooks.add(db, registry, hook_settings, await tenant_id(db), receiver.url, "*")
    new = await webhooks.rotate(db, hook_settings, sub_id, None)
    attempt = await webhooks.test(db, hook_settings, sub_id, None)
    assert attempt.ok and attempt.status == 200
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(old, headers, body) and verify(new, headers, body)
    assert json.loads(body)["type"] == "webhook.test"
    # Once the grace period is over only the new secret signs.
    await db.execute("UPDATE webhook_subscription SET secrets = jsonb_set(secrets, '{1,expires}', '1')")
    await webhooks.test(db, hook_settings, sub_id, None)
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split()) == 1
    assert verify(new, headers, body) and not verify(old, headers, body)


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest",
                                 "http://[::1]:8080/hook", "http://[fd00::1]/hook", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/"])
async def test_private_addresses_are_refused_unless_allowed(url: str, db: asyncpg.Connection,
                                                            settings: Settings, registry: Registry) -> None:
    with pytest.raises(webhooks.WebhookError, match="non-public address"):
        await webhooks.add(db, registry, settings, await tenant_id(db), url, "*")
    allowed = dataclasses.replace(settings, webhook_allow_private=True)
    sub_id, _ = await webhooks.add(db, registry, allowed, await tenant_id(db), url, "*")
    assert sub_id > 0


@pytest.mark.parametrize("url", ["ftp://example.com/", "http://user:pw@example.com/", "example.com/hook"])
async def test_only_http_urls_without_credentials(url: str, db: asyncpg.Connection, settings: Settings,
                                                  registry: Registry) -> None:
    with pytest.raises(webhooks.WebhookError):
        await webhooks.add(db, registry, settings, await tenant_id(db), url, "*")


async def test_delivery_time_check_refuses_a_private_address(receiver: Receiver, settings: Settings) -> None:
    async with webhooks.http_client() as client:
        attempt = await webhooks.send(client, receiver.url, [webhooks.new_secret()], "msg_x", b"{}", settings)
    assert not attempt.ok and "non-public" in (attempt.error or "")
    assert receiver.received == []


async def test_admin_api(api: Api, client: httpx.AsyncClient, app: Any, db: asyncpg.Connection,
                         receiver: Receiver) -> None:
    refused = await api.post("webhooks", {"action": "list"})
    assert refused.status_code == 403 and refused.json()["code"] == 403
    await add_user(db, "boss", "admin")
    admin = Api(client, await issue_token(app, db, "boss"))
    bad = await admin.post("webhooks", {"action": "add", "url": receiver.url, "forms": ["setCustomer"]})
    assert bad.status_code == 400 and "non-public" in bad.text  # the app's settings keep the guard on
    app.state.gateway.settings = dataclasses.replace(app.state.gateway.settings, webhook_allow_private=True)
    added = await admin.post("webhooks", {"action": "add", "url": receiver.url, "forms": ["setcustomer"]})
    assert added.status_code == 200, added.text
    sub_id, secret = added.json()["id"], added.json()["secret"]
    listed = (await admin.post("webhooks", {"action": "list"})).json()["data"]
    assert [(s["id"], s["forms"]) for s in listed] == [(sub_id, ["setCustomer"])]
    tested = (await admin.post("webhooks", {"action": "test", "id": sub_id})).json()
    assert tested["delivered"] is True and verify(secret, *receiver.received[-1])
    rotated = (await admin.post("webhooks", {"action": "rotate", "id": sub_id})).json()
    assert rotated["secret"] != secret
    assert (await admin.post("webhooks", {"action": "nope"})).status_code == 400
    assert (await admin.post("webhooks", {"action": "remove", "id": sub_id})).status_code == 200
    assert (await admin.post("webhooks", {"action": "remove", "id": sub_id})).status_code == 404
    # Each change is in the audit log, by its admin, with no secret; the refused and read-only actions are not.
    log = (await admin.post("GetData", {"form": "getAuditLog", "kind": "webhook_changed"})).json()["data"]
    assert [(e["Username"], e["Endpoint"], e["Detail"]) for e in reversed(log)] == [
        ("boss", "webhooks", f"added subscription {sub_id}: {receiver.url} (setCustomer)"),
        ("boss", "webhooks", f"rotated the secret of subscription {sub_id}"),
        ("boss", "webhooks", f"removed subscription {sub_id}")]
    assert all(e["RequestId"] for e in log) and secret not in repr(log) and rotated["secret"] not in repr(log)


async def test_cli_manages_subscriptions(gateway: Gateway, db: asyncpg.Connection, receiver: Receiver,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await add_user(db, "someone", "writer")
    code, out = await gateway("webhook", "add", "acme", receiver.url, "--forms", "setCustomer")
    assert code == 2 and "non-public" in out
    monkeypatch.setenv("GATEWAY_WEBHOOK_ALLOW_PRIVATE", "1")
    code, out = await gateway("webhook", "add", "acme", receiver.url, "--forms", "setCustomer,nosuchform")
    assert code == 2 and "nosuchform" in out
    code, out = await gateway("webhook", "add", "acme", receiver.url, "--forms", "setCustomer")
    assert code == 0, out
    secret = out.split("(shown only once): ")[1].strip()
    sub_id = await db.fetchval("SELECT id FROM webhook_subscription")
    code, out = await gateway("webhook", "list")
    assert code == 0 and receiver.url in out and "setCustomer" in out
    code, out = await gateway("webhook", "test", "acme")
    assert code == 0 and "HTTP 200" in out and verify(secret, *receiver.received[-1])
    code, out = await gateway("webhook", "rotate-secret", str(sub_id))
    assert code == 0
    code, out = await gateway("webhook", "test", str(sub_id))
    assert code == 0 and len(receiver.received[-1][0]["webhook-signature"].split()) == 2
    receiver.status = 410
    code, out = await gateway("webhook", "test", str(sub_id))
    assert code == 2 and "HTTP 410" in out
    code, out = await gateway("webhook", "remove", str(sub_id))
    assert code == 0 and await db.fetchval("SELECT count(*) FROM webhook_subscription") == 0
    code, out = await gateway("webhook", "replay", "msg_nothing")
    assert code == 2 and "No webhook delivery" in out
    # The CLI's changes are audited under the subscription's tenant, by the operator's name; never the secret.
    rows = await db.fetch("SELECT a.username, a.endpoint, a.detail FROM audit_log a JOIN tenant t ON t.id = a.tenant_id"
                          " WHERE t.code = 'acme' AND a.kind = 'webhook_changed' ORDER BY a.id")
    assert [(r["username"], r["endpoint"], r["detail"].split(";")[0]) for r in rows] == [
        (None, "cli", f"added subscription {sub_id}: {receiver.url} (setCustomer)"),
        (None, "cli", f"rotated the secret of subscription {sub_id}"),
        (None, "cli", f"removed subscription {sub_id}")]
    assert all("gateway CLI as " in r["detail"] and secret not in r["detail"] for r in rows)


async def test_the_queue_schema_is_in_the_migrated_database(db: asyncpg.Connection) -> None:
    assert await db.fetchval("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")


async def test_outbox_lag_is_read_by_the_api_role(app: Any, db: asyncpg.Connection, settings: Settings,
                                                  registry: Registry) -> None:
    allowed = dataclasses.replace(settings, webhook_allow_private=True)
    sub_id, _ = await webhooks.add(db, registry, allowed, await tenant_id(db), "http://127.0.0.1:9/hook", "*")
    async with app.state.gateway.pool.acquire() as conn:  # gateway_app, no tenant set: it sees no delivery row
        assert (await webhooks.outbox_lag(conn))[0].samples[0].value == 0
        await db.execute(QUERIES["webhook_delivery_add"], "msg_old", await tenant_id(db), sub_id, "{}", 0)
        await db.execute("UPDATE webhook_delivery SET created_at = now() - interval '1 hour'")
        assert (await webhooks.outbox_lag(conn))[0].samples[0].value >= 3600


@contextlib.asynccontextmanager
async def dispatcher(settings: Settings, registry: Registry) -> AsyncIterator[webhook_worker.Runtime]:
    """The dispatcher alone, run a round at a time by the test (no job is sent)."""
    async with webhook_worker.opened(settings, registry) as (_, runtime):
        yield runtime


async def bodies(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in await db.fetch("SELECT body FROM webhook_delivery ORDER BY seq")]


async def test_every_form_and_vouchers_in_batches_of_100(vapi: VoucherApi, db: asyncpg.Connection,  # noqa: F811
                                                         hook_settings: Settings, registry: Registry) -> None:
    await webhooks.add(db, registry, hook_settings, await tenant_id(db), "http://127.0.0.1:9/hook", "*")
    async with dispatcher(hook_settings, registry) as runtime:
        assert await runtime.dispatch() == 0  # the master data synced before the subscription is not sent
        assert (await vapi.voucher("setSaleInvoice", [invoice("INV-1")])).status_code == 200
        assert (await vapi.sync("setCustomer", [cust(f"C{i:03}", f"Customer {i}") for i in range(150)])
                ).status_code == 200
        assert await runtime.dispatch() == 2
        assert await runtime.dispatch() == 0  # nothing new
    first, second = await bodies(db)
    changes = first["data"]["changes"] + second["data"]["changes"]
    assert [len(first["data"]["changes"]), len(second["data"]["changes"])] == [100, 51]
    sale = next(c for c in changes if c["form"] == "setSaleInvoice")
    assert sale["key"] == {"VoucherId": "INV-1"} and sale["action"] == "upsert"
    assert len(sale["data"]["detail"]) == 2
    codes = [c["key"]["CustomerCode"] for c in changes if c["form"] == "setCustomer"]
    assert codes == [f"C{i:03}" for i in range(150)]  # each once, in the order written
    queued = await db.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE task_name = $1 AND lock = $2",
                               webhook_worker.TASK, f"webhook:{first['subscription']}")
    assert queued == 2


async def test_a_paused_subscription_keeps_its_changes_until_resumed(
        api: Api, db: asyncpg.Connection, hook_settings: Settings, registry: Registry,
        gateway: Gateway) -> None:  # noqa: F811
    sub_id, _ = await webhooks.add(db, registry, hook_settings, await tenant_id(db), "http://127.0.0.1:9/", "*")
    async with dispatcher(hook_settings, registry) as runtime:
        assert (await gateway("webhook", "pause", str(sub_id)))[0] == 0
        await api.sync("setCustomer", [cust("KH1", "Written while paused")])
        assert await runtime.dispatch() == 0
        assert (await gateway("webhook", "resume", str(sub_id)))[0] == 0
        assert await runtime.dispatch() == 1
    [body] = await bodies(db)
    assert body["data"]["changes"][0]["data"]["CustomerName"] == "Written while paused"


async def test_a_job_left_running_by_a_dead_worker_is_sent_again(
        api: Api, db: asyncpg.Connection, receiver: Receiver, hook_settings: Settings, registry: Registry) -> None:
    await webhooks.add(db, registry, hook_settings, await tenant_id(db), receiver.url, "*")
    async with dispatcher(hook_settings, registry) as runtime:
        await api.sync("setCustomer", [cust("KH1", "One")])
        assert await runtime.dispatch() == 1
        # A worker took the job and died: its heartbeat stopped an hour ago, the job is still "doing".
        dead = await db.fetchval("INSERT INTO procrastinate_workers (last_heartbeat)"
                                 " VALUES (now() - interval '1 hour') RETURNING id")
        await db.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = $1", dead)
        assert await runtime.requeue_stalled() == 1
        assert await db.fetchval("SELECT status FROM procrastinate_jobs") == "todo"
    async with running_worker(hook_settings, registry):
        await until(lambda: db.fetchval("SELECT status = 'delivered' FROM webhook_delivery"))
    assert len(receiver.received) == 1


async def test_serve_runs_the_delivery_worker(db_url: str, db: asyncpg.Connection, tmp_path: Path,
                                             receiver: Receiver, hook_settings: Settings,
                                             registry: Registry) -> None:
    await add_user(db, "boss", "admin")
    await webhooks.add(db, registry, hook_settings, await tenant_id(db), receiver.url, "setCustomer")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": with_user(db_url, APP_ROLE), "GATEWAY_OWNER_URL": db_url,
           "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "1", "GATEWAY_WEBHOOK_POLL": "0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "1", "--no-demo",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output = b""
    try:
        while b"Serving on" not in output:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
            except TimeoutError:
                raise AssertionError(output.decode()) from None
            assert line, output
            output += line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            resp = await client.post("/api/getToken", json={"username": "boss", "password": PASSWORD})
            token = resp.json()["token"]["accesstoken"]
            resp = await client.post("/api/SyncData", headers={"Authorization": token},
                                     json={"form": "setCustomer", "data": [cust("KH1", "Served")]})
            assert resp.status_code == 200, resp.text
        await until(lambda: receiver.received)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = await asyncio.wait_for(proc.communicate(), 40)
        except TimeoutError:
            proc.kill()
            rest, _ = await proc.communicate()
            raise AssertionError((output + rest).decode()) from None
        output += rest
    assert receiver.changes()[0]["data"]["CustomerName"] == "Served"
    # Stopped with the server (not left running by itself).
    assert b"Stopped worker on queues webhooks" in output and b"webhook_worker_orphaned" not in output


async def test_the_api_role_has_no_access_to_the_job_queue(app: Any) -> None:
    async with app.state.gateway.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM procrastinate_jobs")


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped by whoever inherited it, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("wait_for", [b"Serving on", b"Starting worker on queues webhooks"])
async def test_the_worker_of_a_killed_serve_stops_by_itself(wait_for: bytes, db_url: str, tmp_path: Path) -> None:
    """Killed at once (the worker perhaps still starting) or once the worker works: it ends all the same."""
    env = {**os.environ, "DATABASE_URL": with_user(db_url, APP_ROLE), "GATEWAY_OWNER_URL": db_url,
           "GATEWAY_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port()), "--workers", "1", "--no-demo",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output = b""
    try:
        while wait_for not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, output
            output += line
        children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert children
    finally:
        proc.kill()  # no chance to stop its worker
        await proc.wait()
    await until(lambda: not any(alive(pid) for pid in children))
