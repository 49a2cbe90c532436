"""One handler table: every exception a request meets is answered in the canonical envelope, expected
failures and crashes in separate log lanes, and every log line (supervisor and uvicorn included) is JSON."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import assert_envelope
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import errors, server, sync
from gateway.app import create_app
from gateway.config import Settings
from gateway.db import in_transaction
from gateway.idempotency import KeyReused
from gateway.responses import render_error

SECRET = "the-cause-no-client-should-read"


def log_lines(out: str) -> list[dict[str, Any]]:
    """Every line written, each required to be one JSON object."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def events(out: str, name: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(out) if line["event"] == name]


@pytest.fixture
def raising_client(tmp_path: Path) -> Iterator[tuple[httpx.AsyncClient, list[BaseException]]]:
    """A client of an app with one more route, which raises whatever the test puts in the list. No pool is
    needed: the answer is rendered before any database would be touched."""
    app = create_app(Settings(data_dir=tmp_path, database_url="postgresql://unused/none", jwt_secret="s" * 40))
    to_raise: list[BaseException] = []

    async def raiser(request: Request) -> Response:
        raise to_raise[0]

    app.router.routes.append(Route("/raise", raiser, methods=["GET"]))
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"), to_raise


CASES = [
    (errors.BadRequest("Field 'x' is missing"), 400, 400, "Field 'x' is missing"),
    (errors.Unauthorized(), 401, 401, "Token is invalid or expired"),
    (errors.InvalidCredentials(), 401, 401, "Invalid username or password"),
    (errors.Forbidden(), 403, 403, "Forbidden"),
    (errors.FormNotFound(), 200, 201, "Form does not exist"),
    (errors.EmptyData(), 200, 202, "Data is empty"),
    (errors.DataStructureError(), 200, 601, "Data structure error"),
    (errors.PayloadTooLarge(), 413, 413, "Request body too large"),
    (KeyReused(), 422, 422, KeyReused.message),
    (errors.Conflict(), 409, 409, "Conflict"),
    (errors.ServiceUnavailable(), 503, 503, "Database unavailable"),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), 409, 409, "collided"),
    (asyncpg.exceptions.SerializationError("could not serialize access"), 409, 409, "collided"),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), 409, 409, "UniqueViolationError"),
    (asyncpg.exceptions.ForeignKeyViolationError("violates foreign key"), 409, 409, "ForeignKeyViolation"),
    (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), 503, 503, "unavailable"),
    (asyncpg.exceptions.InterfaceError("pool is closed"), 503, 503, "unavailable"),
    (asyncpg.exceptions.TooManyConnectionsError("too many clients"), 503, 503, "unavailable"),
    (asyncpg.exceptions.QueryCanceledError("statement timeout"), 503, 503, "unavailable"),
    (ConnectionRefusedError("refused"), 503, 503, "unavailable"),
    (TimeoutError(), 503, 503, "unavailable"),
    (RuntimeError(SECRET), 500, 500, "Internal server error"),
    (KeyError(SECRET), 500, 500, "Internal server error"),
    (asyncpg.exceptions.UndefinedColumnError(SECRET), 500, 500, "Internal server error"),
]


@pytest.mark.parametrize(("exc", "status", "code", "message"), CASES, ids=[type(c[0]).__name__ for c in CASES])
async def test_every_exception_a_handler_raises_is_answered_in_the_envelope(
        raising_client: tuple[httpx.AsyncClient, list[BaseException]], exc: BaseException, status: int,
        code: int, message: str) -> None:
    client, to_raise = raising_client
    to_raise.append(exc)
    resp = await client.get("/raise")
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"]) == (status, code)
    assert message in body["messages"]
    assert SECRET not in resp.text


async def test_a_subclass_is_answered_as_its_nearest_registered_base(
        raising_client: tuple[httpx.AsyncClient, list[BaseException]]) -> None:
    class ReplicaDeadlock(asyncpg.exceptions.DeadlockDetectedError):
        pass

    class TenantMissing(errors.NotFound):
        message = "No such tenant"

    client, to_raise = raising_client
    to_raise.append(ReplicaDeadlock("deadlock detected"))
    assert (await client.get("/raise")).status_code == 409
    to_raise[0] = TenantMissing()
    resp = await client.get("/raise")
    assert resp.status_code == 404 and assert_envelope(resp)["messages"] == "No such tenant"


def test_the_rest_statuses_setting_applies_to_rendered_errors() -> None:
    assert render_error(errors.DataStructureError(), rest_statuses=False).status_code == 200
    assert render_error(errors.DataStructureError(), rest_statuses=True).status_code == 422
    assert render_error(errors.FormNotFound(), rest_statuses=True).status_code == 404
    assert render_error(RuntimeError("x"), rest_statuses=True).status_code == 500


async def test_a_crash_is_logged_with_its_trace_and_the_request_id(
        raising_client: tuple[httpx.AsyncClient, list[BaseException]], capsys: pytest.CaptureFixture[str]) -> None:
    client, to_raise = raising_client
    to_raise.append(RuntimeError(SECRET))
    capsys.readouterr()
    resp = await client.get("/raise", headers={"X-Request-ID": "crash-1"})
    assert resp.status_code == 500 and SECRET not in resp.text
    out = capsys.readouterr().out
    [crash] = events(out, "unhandled_error")
    assert crash["level"] == "error" and crash["request_id"] == "crash-1"
    assert "Traceback" in crash["exception"] and f"RuntimeError: {SECRET}" in crash["exception"]
    assert events(out, "request_rejected") == []
    [request] = events(out, "request")
    assert request["status"] == 500 and request["request_id"] == "crash-1"


async def test_an_expected_failure_is_logged_as_rejected_without_a_trace(
        raising_client: tuple[httpx.AsyncClient, list[BaseException]], capsys: pytest.CaptureFixture[str]) -> None:
    client, to_raise = raising_client
    to_raise.append(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    capsys.readouterr()
    assert (await client.get("/raise")).status_code == 409
    to_raise[0] = errors.BadRequest("bad field")
    assert (await client.get("/raise")).status_code == 400
    out = capsys.readouterr().out
    assert events(out, "unhandled_error") == []
    deadlock, bad = events(out, "request_rejected")
    assert deadlock["level"] == "info" and deadlock["status"] == 409 and "Deadlock" in deadlock["cause"]
    assert bad["level"] == "info" and bad["error"] == "bad field" and "cause" not in bad
    assert "exception" not in deadlock and "exception" not in bad


async def test_a_crash_under_an_idempotency_key_is_a_500_and_frees_the_key(
        client: httpx.AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real_apply = sync.apply

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SECRET)

    body = {"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "n"}]}
    headers = {"Authorization": token, "Idempotency-Key": "crash-then-retry"}
    monkeypatch.setattr(sync, "apply", crash)
    capsys.readouterr()
    resp = await client.post("/api/SyncData", json=body, headers=headers)
    assert resp.status_code == 500 and assert_envelope(resp)["code"] == 500 and SECRET not in resp.text
    assert len(events(capsys.readouterr().out, "unhandled_error")) == 1
    monkeypatch.setattr(sync, "apply", real_apply)
    resp = await client.post("/api/SyncData", json=body, headers=headers)
    assert resp.status_code == 200 and "idempotent-replayed" not in resp.headers


async def test_a_deadlock_under_an_idempotency_key_is_a_409_and_not_replayed(
        client: httpx.AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_apply = sync.apply

    async def collide(*args: Any, **kwargs: Any) -> Any:
        raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    body = {"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "n"}]}
    headers = {"Authorization": token, "Idempotency-Key": "collide-then-retry"}
    monkeypatch.setattr(sync, "apply", collide)
    resp = await client.post("/api/SyncData", json=body, headers=headers)
    assert resp.status_code == 409 and assert_envelope(resp)["code"] == 409
    monkeypatch.setattr(sync, "apply", real_apply)
    resp = await client.post("/api/SyncData", json=body, headers=headers)
    assert resp.status_code == 200 and "idempotent-replayed" not in resp.headers


async def test_a_transaction_retry_is_logged_as_a_json_line(db: asyncpg.Connection,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.exceptions.SerializationError("could not serialize access")
        return await db.fetchval("SELECT 1")

    capsys.readouterr()
    assert await in_transaction(db, work) == 1
    [retry] = events(capsys.readouterr().out, "transaction_retry")
    assert retry["level"] == "warning" and retry["attempt"] == 1 and retry["error"] == "SerializationError"


class DeadWorker:
    pid = 4242
    exitcode = 3


def test_the_supervisor_logs_a_restart_as_a_json_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(server, "RESTART_PAUSE_SECONDS", 0)
    capsys.readouterr()
    assert server.restart(DeadWorker(), lambda: "replacement") == "replacement"
    [line] = log_lines(capsys.readouterr().out)
    assert line["event"] == "worker_exited" and line["level"] == "warning"
    assert (line["worker_pid"], line["exitcode"]) == (4242, 3)


def test_a_worker_that_cannot_start_is_restarted_and_every_line_is_json(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    # Real worker processes: uvicorn's own error (the app cannot be imported) must come out as JSON too.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(server, "RESTART_PAUSE_SECONDS", 0)
    restarted = threading.Event()
    real_restart = server.restart

    def restart(proc: Any, start: Any) -> Any:
        restarted.set()
        return real_restart(proc, start)

    monkeypatch.setattr(server, "restart", restart)

    def stop_after_first_restart() -> None:
        if restarted.wait(60):
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler stops it, as in production

    watcher = threading.Thread(target=stop_after_first_restart, daemon=True)
    capfd.readouterr()
    watcher.start()
    try:
        server.run("tests.no_such_module:create_app", host="127.0.0.1", port=port, workers=2,
                   access_log=False, log_level="warning")
    finally:
        restarted.set()
        watcher.join()
    lines = log_lines(capfd.readouterr().out)
    assert any(line["event"] == "worker_exited" and line["exitcode"] != 0 for line in lines), lines
    assert any(line["event"].startswith("Error loading ASGI app") and line.get("logger") == "uvicorn.error"
               for line in lines), lines
