"""The HTTP surface, through a real uvicorn server on 127.0.0.1: the headers every answer carries, the bounds
on a request head (431), malformed HTTP (400), both in the envelope; and nothing a request sends comes back
whole, in an answer or in a log line."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from conftest import Databases, add_user, assert_envelope, issue_token

from gateway.app import create_app
from gateway.config import Settings
from gateway.forms import Registry
from gateway.http import MAX_HEADER_BYTES, MAX_HEADERS
from gateway.logging import MAX_LOG_LINE, MAX_LOG_VALUE
from gateway.server import _Server, bind, server_config

MB = 1024 * 1024


class Served:
    def __init__(self, port: int, db_url: str, app: Any) -> None:
        self.port = port
        self.db_url = db_url
        self.app = app
        self.base_url = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(databases: Databases, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module, in a thread of its own, as `gateway serve` configures its workers."""
    site, name = lent = databases.acquire()
    try:
        settings = Settings(data_dir=tmp_path_factory.mktemp("surface"), database_url=site.url(name),
                            jwt_secret="s" * 40, pool_min_size=1, pool_max_size=4)
        app = create_app(settings, registry)
        sock = bind("127.0.0.1", 0)
        started = threading.Event()
        server = _Server(server_config(app, access_log=False, log_level="warning"), on_started=started.set)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        assert started.wait(30), "the server did not start"
        try:
            yield Served(sock.getsockname()[1], site.url(name), app)
        finally:
            server.should_exit = True
            thread.join(30)
            sock.close()
    finally:
        databases.release(lent)


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it (or a short quiet spell)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        return read_answer(conn)


def read_answer(conn: socket.socket) -> bytes:
    """One answer: its head, then as many body bytes as its content-length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_surface_headers(headers: Any) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert "server" not in headers
    assert headers["date"]  # HTTP asks a server with a clock to send it


def request_head(extra: bytes = b"", path: bytes = b"/healthz") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def padded_head(size: int) -> bytes:
    """A request head exactly `size` bytes long, request line and final empty line included."""
    bare = request_head(b"X-Pad: \r\n")
    return request_head(b"X-Pad: " + b"p" * (size - len(bare)) + b"\r\n")


# --- headers on every answer ---------------------------------------------------------------------------

async def test_every_answer_carries_the_surface_headers_and_no_server_header(served: Served) -> None:
    conn = await asyncpg.connect(served.db_url)
    try:
        await add_user(conn, "surface1", "writer")
        token = await issue_token(served.app, conn, "surface1")
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        answers = {
            "ok": await client.get("/healthz"),
            "404": await client.get("/no/such/path"),
            "405": await client.get("/api/getToken"),
            "400": await client.post("/api/getToken", content=b"not json"),
            "401": await client.post("/api/GetData", json={"form": "getCustomer"}),
            "sync": await client.post("/api/SyncData", headers={"Authorization": token},
                                      json={"form": "setCustomer", "data": [{"CustomerCode": "S1",
                                                                             "CustomerName": "x"}]}),
            "stream": await client.post("/api/GetData", headers={"Authorization": token},
                                        json={"form": "getCustomer"}),
        }
    assert [resp.status_code for resp in answers.values()] == [200, 404, 405, 400, 401, 200, 200]
    # A pull without `limit` is streamed: chunked, its head sent before the rows are read.
    assert answers["stream"].headers["transfer-encoding"] == "chunked"
    assert answers["stream"].json()["records"] == 1
    for resp in answers.values():
        assert_surface_headers(resp.headers)
        assert_envelope(resp)


# --- bounds on the request head --------------------------------------------------------------------------

def test_a_head_at_the_bound_is_served_and_one_byte_more_is_431(served: Served) -> None:
    status, headers, _ = parse(exchange(served.port, padded_head(MAX_HEADER_BYTES)))
    assert status == 200
    status, headers, body = parse(exchange(served.port, padded_head(MAX_HEADER_BYTES + 1)))
    assert status == 431
    assert body == {"success": False, "messages": f"Request line and headers exceed {MAX_HEADER_BYTES} bytes",
                    "code": 431}
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["x-request-id"]
    assert_surface_headers(headers)


def test_a_long_head_is_refused_before_it_ends(served: Served) -> None:
    """The server answers once the bound is passed, without waiting for (or keeping) the rest of the head."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * (MAX_HEADER_BYTES + 1024))
        # No end of the header, no end of the head: the answer comes all the same.
        status, _, body = parse(read_answer(conn))
        assert (status, body["code"]) == (431, 431)
        assert conn.recv(1) == b""  # and the connection is closed


def test_too_many_headers_is_431(served: Served) -> None:
    # Host is one: MAX_HEADERS - 1 more make exactly the bound.
    within = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    status, _, _ = parse(exchange(served.port, request_head(within)))
    assert status == 200
    status, headers, body = parse(exchange(served.port, request_head(within + b"X-One-More: v\r\n")))
    assert status == 431
    assert body == {"success": False, "messages": f"More than {MAX_HEADERS} request headers", "code": 431}
    assert_surface_headers(headers)


def test_the_bound_holds_per_request_on_a_kept_alive_connection(served: Served) -> None:
    """Each request of a connection has the whole bound: what earlier ones used is not counted again."""
    head = padded_head(MAX_HEADER_BYTES * 3 // 4)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        for _ in range(3):
            conn.sendall(head)
            status, headers, _ = parse(read_answer(conn))
            assert status == 200
            assert "connection" not in headers  # kept alive


def test_a_body_is_not_counted_as_head(served: Served) -> None:
    """A small head and a large body in one write: the body's bytes do not reach the head's bound."""
    body = json.dumps({"username": "u" * (3 * MAX_HEADER_BYTES), "password": "p"}).encode()
    request = (b"POST /api/getToken HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    status, headers, answer = parse(exchange(served.port, request))
    assert (status, answer["code"]) == (413, 413)  # getToken reads at most 64 KiB of body
    assert_surface_headers(headers)


def chunked_post(trailer: bytes) -> bytes:
    body = json.dumps({"username": "nobody", "password": "whatever1"}).encode()
    return (b"POST /api/getToken HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n" + trailer)


# asyncio reads at most this much from a socket at once: the count of trailers starts at the read after the
# one holding the last chunk's size line, so they are cut at MAX_HEADER_BYTES plus at most this.
ASYNCIO_MAX_READ = 256 * 1024


def test_the_trailers_of_a_chunked_body_are_bounded_as_a_head_is(served: Served) -> None:
    status, _, body = parse(exchange(served.port, chunked_post(b"X-Trailer: t\r\n\r\n")))
    assert (status, body["code"]) in ((401, 401), (429, 429))  # read whole, trailer and all: no such user
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        endless = b"X-Trailer: " + b"t" * (MAX_HEADER_BYTES + ASYNCIO_MAX_READ + 1024)
        # The application is reading the body: too late for an answer, the connection is cut instead (which
        # may already end the sending).
        try:
            conn.sendall(chunked_post(endless))
            assert conn.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass


@pytest.mark.parametrize("request_bytes", [
    b"NOT-HTTP AT ALL\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: a\r\n\r\n",
    b"POST /api/getToken HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
], ids=["garbage", "space-in-name", "version", "two-lengths"])
def test_malformed_http_is_400_in_the_envelope(served: Served, request_bytes: bytes) -> None:
    status, headers, body = parse(exchange(served.port, request_bytes))
    assert status == 400
    assert body["success"] is False and body["code"] == 400
    assert body["messages"].startswith("Malformed HTTP request: ")
    assert headers["content-type"] == "application/json"
    assert_surface_headers(headers)


def test_the_server_still_serves_after_refusals(served: Served) -> None:
    exchange(served.port, padded_head(2 * MAX_HEADER_BYTES))
    exchange(served.port, b"\x00\x01\x02\r\n\r\n")
    status, _, body = parse(exchange(served.port, request_head()))
    assert (status, body["status"]) == (200, "up")


# --- nothing echoed whole ----------------------------------------------------------------------------------

def log_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_a_megabyte_form_name_comes_back_as_a_prefix(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    name = "F" * MB
    for endpoint in ("SyncData", "GetData"):
        resp = await api.post(endpoint, {"form": name, "data": []})
        body = assert_envelope(resp)
        assert body["code"] == 201
        assert len(resp.content) < 4096
        assert body["messages"] == f"Form '{'F' * 64}...' does not exist"
    out = capsys.readouterr().out
    assert len(out) < 8 * 1024
    assert "F" * 100 not in out


async def test_a_long_username_keeps_its_log_lines_short(client: httpx.AsyncClient,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    resp = await client.post("/api/getToken", json={"username": "u" * 60_000, "password": "whatever1"})
    assert resp.status_code in (401, 429)  # no such user (or, were logins throttled, too many tries)
    out = capsys.readouterr().out
    lines = log_lines(out)
    assert {"request_rejected", "request"} <= {line["event"] for line in lines}
    assert len(out) < 4096
    assert all(len(line.get("user", "")) <= 256 for line in lines)


async def test_a_refused_value_is_quoted_cut(api: Any) -> None:
    resp = await api.sync("setCustomer", [{"CustomerCode": "C" * MB, "CustomerName": "N" * MB}],
                          mode="partial")
    body = assert_envelope(resp)
    assert body["code"] == 601
    assert len(resp.content) < 4096
    errors = body["errors"]
    assert {err["path"] for err in errors} == {"/CustomerCode", "/CustomerName"}
    for err in errors:
        assert len(err["message"]) < 400
        assert err["key"] is None or len(err["key"]) < 100
    # The validator names the value first and its rule last: both ends are kept.
    assert any(err["message"].startswith('"NNNN') and "256" in err["message"] for err in errors)


async def test_an_unknown_field_name_is_quoted_cut(api: Any) -> None:
    resp = await api.sync("setCustomer", [{"CustomerCode": "K1", "CustomerName": "x", "Z" * MB: 1}])
    body = assert_envelope(resp)
    assert body["code"] == 200
    assert len(resp.content) < 4096
    [warning] = body["warnings"]
    assert warning["message"].startswith(f"Unknown field '{'Z' * 64}...' ignored")


@pytest.mark.parametrize(("raw", "said"), [
    (b'{"username": "\\ud800", "password": "x"}', "lone surrogate: the escape \\ud800"),
    (b'{"username": "\\udbff tail", "password": "x"}', "lone surrogate: the escape \\udbff"),
    (b'{"username": "x\\udc00", "password": "x"}', "lone surrogate: the escape \\udc00"),
    (b'{"username": "\xed\xa0\x80", "password": "x"}', "invalid UTF-8"),
    (b'{"username": "\xff", "password": "x"}', "invalid UTF-8"),
    (b'{"username": ', "the JSON ends before its last value is complete"),
])
async def test_undecodable_text_is_named(client: httpx.AsyncClient, raw: bytes, said: str) -> None:
    resp = await client.post("/api/getToken", content=raw)
    body = assert_envelope(resp)
    assert body["code"] == 400
    assert body["messages"].startswith(f"Request body is not valid JSON: {said}")
    assert "truncated" not in body["messages"]


async def test_an_escaped_backslash_before_u_is_no_surrogate(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/getToken", content=b'{"username": "\\\\ud800", "password": ')
    assert assert_envelope(resp)["messages"].endswith("the JSON ends before its last value is complete")


# --- bounded log lines -----------------------------------------------------------------------------------

def test_every_text_in_a_log_line_is_cut(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    create_app(Settings(data_dir=tmp_path, database_url="postgresql://unused/none", jwt_secret="s" * 40))
    log = structlog.get_logger("gateway")
    capsys.readouterr()
    log.info("long_value", value="v" * MB, short="kept")
    log.info("many_values", **{f"k{i}": "w" * (MAX_LOG_VALUE - 1) for i in range(20)}, request_id="r1")
    try:
        raise ValueError("the cause at the end " + "x" * 20_000)
    except ValueError:
        log.exception("crashed")
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= MAX_LOG_LINE for line in lines)
    long_value, many_values, crashed = (json.loads(line) for line in lines)
    assert long_value["short"] == "kept"
    assert long_value["value"].startswith("v" * MAX_LOG_VALUE + "...[")
    assert len(long_value["value"]) < MAX_LOG_VALUE + 64
    # Each value was short enough, the line was not: its identifying fields stay, and what it lost is said.
    assert many_values["event"] == "many_values" and many_values["request_id"] == "r1"
    assert "k0" not in many_values and many_values["line_cut"] > MAX_LOG_LINE
    # A trace keeps its start and its end, where the error is.
    assert crashed["exception"].startswith("Traceback")
    assert crashed["exception"].rstrip().endswith("x" * 100)


def test_a_standard_library_record_is_cut_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import logging

    create_app(Settings(data_dir=tmp_path, database_url="postgresql://unused/none", jwt_secret="s" * 40))
    capsys.readouterr()
    logging.getLogger("uvicorn.error").warning("from uvicorn %s", "y" * MB)
    [line] = capsys.readouterr().out.splitlines()
    assert len(line) <= MAX_LOG_LINE
    assert json.loads(line)["event"].startswith("from uvicorn yyyy")


def test_a_head_the_server_refuses_is_logged_short(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    exchange(served.port, padded_head(MAX_HEADER_BYTES + 1))
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not lines:
        lines = [line for line in log_lines(capsys.readouterr().out) if line["event"] == "request_rejected"]
    assert lines and lines[0]["status"] == 431
