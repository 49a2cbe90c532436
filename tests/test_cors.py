"""CORS: off unless GATEWAY_CORS_ORIGINS lists origins; then those, and only those, may call from a browser."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import assert_envelope

from gateway import cli
from gateway.app import create_app
from gateway.config import ConfigError, Settings
from gateway.forms import Registry

ALLOWED = "https://pos.example.com"
OTHER = "http://localhost:5173"


@pytest.fixture
async def cors(settings: Settings, registry: Registry) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The gateway with GATEWAY_CORS_ORIGINS set to two origins, and a client of it."""
    app = create_app(dataclasses.replace(settings, cors_origins=(ALLOWED, OTHER)), registry)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                  base_url="http://gateway.test") as client:
        yield app, client


@pytest.fixture
def cors_client(cors: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return cors[1]


def access_control(resp: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in resp.headers.items() if name.startswith("access-control-")}


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


def preflight(origin: str, method: str = "POST",
              headers: str = "authorization,content-type,idempotency-key,x-request-id") -> dict[str, str]:
    """What a browser sends before a POST with JSON and a token from a page on `origin`."""
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


# --- off by default ------------------------------------------------------------------------------------

def test_cors_is_off_unless_origins_are_set() -> None:
    assert Settings.from_env({}).cors_origins == ()
    assert Settings.from_env({"GATEWAY_CORS_ORIGINS": " "}).cors_origins == ()
    assert Settings.from_env({"GATEWAY_CORS_ORIGINS": f" {ALLOWED} ,{OTHER},,{ALLOWED}, "}).cors_origins == (
        ALLOWED, OTHER)


async def test_off_no_cors_header_on_any_answer_and_preflight_is_not_special(client: httpx.AsyncClient,
                                                                              token: str) -> None:
    headers = {"Origin": ALLOWED, "Authorization": token}
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers=headers)
    assert resp.status_code == 200 and access_control(resp) == {}
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Origin": ALLOWED})
    assert resp.status_code == 401 and access_control(resp) == {}
    # No route answers OPTIONS: the router's 405, in the envelope, like any other method the API has not.
    resp = await client.options("/api/GetData", headers=preflight(ALLOWED))
    assert resp.status_code == 405 and assert_envelope(resp)["code"] == 405
    assert access_control(resp) == {} and "origin" not in resp.headers.get("vary", "").lower()


# --- an allowed origin ------------------------------------------------------------------------------------

async def test_an_allowed_origin_may_read_a_real_answer(cors_client: httpx.AsyncClient, token: str) -> None:
    resp = await cors_client.post("/api/GetData", json={"form": "getCustomer"},
                                  headers={"Origin": ALLOWED, "Authorization": token, "X-Request-ID": "pos-1"})
    assert assert_envelope(resp)["code"] == 200
    assert resp.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in listed(resp.headers["vary"])  # a cache must not hand this answer to another origin
    assert {"x-request-id", "retry-after", "idempotent-replayed"} <= listed(
        resp.headers["access-control-expose-headers"])
    assert "access-control-allow-credentials" not in resp.headers
    # The gateway's own headers are still there.
    assert resp.headers["x-request-id"] == "pos-1" and resp.headers["cache-control"] == "no-store"
    resp = await cors_client.get("/healthz", headers={"Origin": OTHER})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == OTHER


async def test_a_write_with_an_idempotency_key_answers_an_allowed_origin(cors_client: httpx.AsyncClient,
                                                                         token: str) -> None:
    headers = {"Origin": ALLOWED, "Authorization": token, "Idempotency-Key": "pos-order-1"}
    body = {"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "Kim"}]}
    first = await cors_client.post("/api/SyncData", json=body, headers=headers)
    replay = await cors_client.post("/api/SyncData", json=body, headers=headers)
    assert assert_envelope(first)["code"] == 200 and replay.headers["idempotent-replayed"] == "true"
    assert first.headers["access-control-allow-origin"] == replay.headers["access-control-allow-origin"] == ALLOWED


async def test_error_answers_carry_the_cors_headers_so_the_page_can_read_them(
        cors: tuple[Any, httpx.AsyncClient], token: str) -> None:
    app, client = cors
    origin = {"Origin": ALLOWED}
    auth = {**origin, "Authorization": token}
    answers = [
        (401, await client.post("/api/GetData", json={"form": "getCustomer"}, headers=origin)),
        (401, await client.post("/api/GetData", json={"form": "getCustomer"},
                                headers={**origin, "Authorization": "Bearer forged"})),
        (400, await client.post("/api/GetData", content=b"{not json", headers=auth)),
        (200, await client.post("/api/GetData", json={"form": "getNothing"}, headers=auth)),  # Fast's 201
        (404, await client.post("/api/Nothing", json={}, headers=origin)),
        (405, await client.get("/api/GetData", headers=origin)),
        (413, await client.post("/api/getToken", content=b"[" + b" " * 70_000 + b"]", headers=origin)),
    ]
    await app.state.gateway.pool.close()
    answers.append((503, await client.post("/api/GetData", json={"form": "getCustomer"}, headers=auth)))
    for status, resp in answers:
        assert resp.status_code == status, resp.text
        assert assert_envelope(resp)["success"] is False
        assert resp.headers["access-control-allow-origin"] == ALLOWED, (status, resp.headers)
    # The 503 says when to come back, and the page may read it.
    assert "retry-after" in answers[-1][1].headers
    assert "retry-after" in listed(answers[-1][1].headers["access-control-expose-headers"])


async def test_preflight_is_answered_without_a_token(cors_client: httpx.AsyncClient) -> None:
    for path in ("/api/GetData", "/api/syncvoucher/", "/api/getToken"):
        resp = await cors_client.options(path, headers=preflight(ALLOWED))
        assert resp.status_code == 200, resp.text
        assert resp.headers["access-control-allow-origin"] == ALLOWED
        assert listed(resp.headers["access-control-allow-methods"]) == {"post", "get"}
        assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= listed(
            resp.headers["access-control-allow-headers"])
        assert resp.headers["access-control-max-age"] == "600"
        assert "access-control-allow-credentials" not in resp.headers
        assert "origin" in listed(resp.headers["vary"])
        assert len(resp.headers["x-request-id"]) == 32  # logged with a request id, as every answer is
    resp = await cors_client.options("/readyz", headers=preflight(OTHER, "GET", "x-request-id"))
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == OTHER


async def test_preflight_refuses_what_the_api_does_not_take(cors_client: httpx.AsyncClient) -> None:
    for method, headers in (("DELETE", "authorization"), ("POST", "authorization,x-api-key")):
        resp = await cors_client.options("/api/SyncData", headers=preflight(ALLOWED, method, headers))
        assert resp.status_code == 400, (method, headers)


# --- another origin --------------------------------------------------------------------------------------

@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://pos.example.com",
                                    "https://pos.example.com:8443", "https://pos.example.com.evil.example",
                                    "https://POS.example.com", "null"])
async def test_an_origin_not_listed_gets_no_allow_header(cors_client: httpx.AsyncClient, token: str,
                                                        origin: str) -> None:
    resp = await cors_client.post("/api/GetData", json={"form": "getCustomer"},
                                  headers={"Origin": origin, "Authorization": token})
    assert resp.status_code == 200  # the browser, not the gateway, withholds the answer from the page
    assert "access-control-allow-origin" not in resp.headers
    assert "origin" in listed(resp.headers["vary"])
    resp = await cors_client.post("/api/GetData", json={}, headers={"Origin": origin})
    assert resp.status_code == 401 and "access-control-allow-origin" not in resp.headers
    resp = await cors_client.options("/api/GetData", headers=preflight(origin))
    assert resp.status_code == 400 and "access-control-allow-origin" not in resp.headers


async def test_a_request_without_origin_is_answered_as_before(cors_client: httpx.AsyncClient, token: str) -> None:
    resp = await cors_client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": token})
    assert resp.status_code == 200 and access_control(resp) == {}
    resp = await cors_client.options("/api/GetData")
    assert resp.status_code == 405 and assert_envelope(resp)["code"] == 405


# --- a bad setting ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "message"), [
    ("*", "'*' is not accepted; list each origin"),
    (f"{ALLOWED},*", "'*' is not accepted"),
    ("null", "'null' is not accepted"),
    ("https://*.example.com", "is not an origin; write scheme://host[:port]"),
    ("pos.example.com", "is not an origin; write scheme://host[:port]"),
    ("ftp://pos.example.com", "is not an origin"),
    ("https://user@pos.example.com", "is not an origin"),
    ("https://pos.example.com:99999", "is not an origin"),
    ("https://bücher.example", "xn-- form"),
    ("https://pos.example.com/", "not an origin as a browser sends it; write 'https://pos.example.com'"),
    ("https://pos.example.com/app", "write 'https://pos.example.com'"),
    ("HTTPS://POS.Example.com", "write 'https://pos.example.com'"),
    ("https://pos.example.com:443", "write 'https://pos.example.com'"),
    ("http://pos.example.com:80", "write 'http://pos.example.com'"),
    (f"{ALLOWED} https://b.example.com", "is not an origin"),  # a space where a comma was meant
])
def test_a_malformed_origin_is_refused_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^GATEWAY_CORS_ORIGINS: ") as refused:
        Settings.from_env({"GATEWAY_CORS_ORIGINS": value})
    assert message in str(refused.value)


def test_well_formed_origins_are_kept_as_written() -> None:
    origins = (ALLOWED, "http://localhost:3000", "http://192.168.1.20:8080", "http://[::1]:8000",
               "https://xn--bcher-kva.example")
    assert Settings.from_env({"GATEWAY_CORS_ORIGINS": ",".join(origins)}).cors_origins == origins


def test_settings_built_in_code_are_checked_too(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"cors_origins: '\*' is not accepted"):
        dataclasses.replace(settings, cors_origins=("*",))


def test_the_gateway_does_not_start_with_a_bad_origin(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "*")
    with pytest.raises(ConfigError, match="GATEWAY_CORS_ORIGINS"):
        create_app()
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gateway: GATEWAY_CORS_ORIGINS: '*' is not accepted"), err
