"""The HTTP surface: health, routing errors, request ids and the canonical envelope on every answer."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from conftest import assert_envelope

from gateway.app import create_app
from gateway.config import ConfigError, Settings


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert assert_envelope(await client.get("/healthz"))["status"] == "up"
    assert assert_envelope(await client.get("/readyz"))["status"] == "ready"


async def test_readyz_is_503_when_the_database_is_gone(app: Any, client: httpx.AsyncClient) -> None:
    await app.state.gateway.pool.close()
    resp = await client.get("/readyz")
    body = assert_envelope(resp)
    assert resp.status_code == 503 and body["code"] == 503


async def test_unknown_path_and_wrong_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/Nothing", json={})
    assert resp.status_code == 404 and assert_envelope(resp)["code"] == 404
    resp = await client.get("/api/SyncData")
    assert resp.status_code == 405 and assert_envelope(resp)["code"] == 405


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert resp.headers["x-request-id"] != "bad id with spaces\x01" and len(resp.headers["x-request-id"]) == 32


async def test_unknown_form_lists_the_known_ones_per_endpoint(client: httpx.AsyncClient, token: str) -> None:
    resp = await client.post("/api/GetData", json={"form": "getNothing"}, headers={"Authorization": token})
    body = assert_envelope(resp)
    assert body["code"] == 201 and "getCustomer" in body["forms"]
    assert all(name.startswith("get") for name in body["forms"])


async def test_database_failure_mid_request_is_a_canonical_503(app: Any, client: httpx.AsyncClient,
                                                              token: str) -> None:
    await app.state.gateway.pool.close()
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": token})
    body = assert_envelope(resp)
    assert resp.status_code == 503 and body["code"] == 503


async def test_rest_statuses_setting_maps_fasts_codes_to_404_400_422(settings: Settings, registry: Any,
                                                                     token: str) -> None:
    app = create_app(dataclasses.replace(settings, rest_statuses=True), registry)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        headers = {"Authorization": token}
        for body, status, code in (
                ({"form": "setNothing", "data": [{}]}, 404, 201),
                ({"form": "setCustomer", "data": []}, 400, 202),
                ({"form": "setCustomer", "data": [{"CustomerCode": "K1"}]}, 422, 601),
                ({"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "n"}]}, 200, 200)):
            resp = await c.post("/api/SyncData", json=body, headers=headers)
            assert (resp.status_code, resp.json()["code"]) == (status, code), resp.text
        assert (await c.post("/api/SyncData", json={})).status_code == 401  # 401 either way


def test_rest_statuses_is_read_from_the_environment() -> None:
    assert Settings.from_env({"GATEWAY_REST_STATUSES": "true"}).rest_statuses is True
    assert Settings.from_env({"GATEWAY_REST_STATUSES": "0"}).rest_statuses is False
    assert Settings.from_env({}).rest_statuses is False
    with pytest.raises(ConfigError, match="GATEWAY_REST_STATUSES"):
        Settings.from_env({"GATEWAY_REST_STATUSES": "sometimes"})


async def test_a_wrong_method_is_answered_with_the_allowed_ones(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/GetData")
    assert resp.status_code == 405 and assert_envelope(resp)["code"] == 405
    assert resp.headers["allow"] == "POST"
