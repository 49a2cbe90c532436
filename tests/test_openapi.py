"""The API description: /openapi.json (valid OpenAPI 3.1, every form), /api/schemas/{form}, the offline /docs
page, and schemathesis against the live gateway: no 5xx, every answer as the document describes it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway import openapi
from gateway.app import create_app
from gateway.config import SCHEMAS_DIR, Settings
from gateway.forms import GET_DATA, SYNC_DATA, SYNC_VOUCHER, Registry


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    result: dict[str, Any] = resp.json()
    return result


def mapping(doc: dict[str, Any], path: str) -> dict[str, str]:
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    result: dict[str, str] = body["discriminator"]["mapping"]
    return result


async def test_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema, or a $ref that does not resolve


async def test_document_names_every_form_under_its_endpoint(client: httpx.AsyncClient,
                                                             registry: Registry) -> None:
    doc = await document(client)
    paths = {SYNC_DATA: "/api/SyncData", SYNC_VOUCHER: "/api/SyncVoucher", GET_DATA: "/api/GetData"}
    schemas = doc["components"]["schemas"]
    for form in registry.forms:
        pulled = mapping(doc, paths[GET_DATA])[form.get_name]
        assert schemas[pulled.rsplit("/", 1)[1]]["properties"]["form"] == {"const": form.get_name}
        if form.sync_names():
            request = mapping(doc, paths[form.endpoint])[form.name].rsplit("/", 1)[1]
            assert schemas[request]["properties"]["form"]["const"] == form.name
            assert schemas[request]["description"], form.name
            if form.endpoint == SYNC_VOUCHER:  # what it posts, from its posting rule
                assert "Posts" in schemas[request]["description"], form.name
            # The record schema is the one the gateway validates with (numbers bounded), minus `$schema`.
            assert schemas[form.name] == {k: v for k, v in form.schema.items() if k != "$schema"}
    every = {n for f in registry.forms for n in (f.get_name, *f.sync_names()[:1])}
    assert every == {*mapping(doc, paths[SYNC_DATA]), *mapping(doc, paths[SYNC_VOUCHER]),
                     *mapping(doc, paths[GET_DATA])}


async def test_document_marks_only_token_bearing_endpoints_secured(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    open_ = {path for path, item in doc["paths"].items() for op in item.values() if op.get("security") == []}
    assert open_ == {"/api/getToken", "/api/refreshToken", "/healthz", "/readyz", "/openapi.json", "/docs",
                     "/api/schemas/{form}", "/admin", "/admin/admin.js", "/admin/admin.css"}
    assert doc["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]


async def test_document_describes_fast_codes_in_http_200_by_default(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    sync = doc["paths"]["/api/SyncData"]["post"]
    answer = sync["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"oneOf": [openapi.ref("SyncAnswer"), openapi.ref("Error")]}
    assert "601" not in sync["responses"]["422"]["description"]  # only a reused Idempotency-Key
    assert "Retry-After" in sync["responses"]["503"]["headers"]
    assert "Idempotent-Replayed" in sync["responses"]["200"]["headers"]
    assert [p["name"] for p in sync["parameters"]] == ["Idempotency-Key", "X-Tenant-ID", "X-Request-ID"]


def test_document_with_rest_statuses_moves_fast_codes_out_of_200(settings: Settings,
                                                                  registry: Registry) -> None:
    doc = openapi.build_document(registry, dataclasses.replace(settings, rest_statuses=True))
    validate(doc)
    sync = doc["paths"]["/api/SyncVoucher"]["post"]["responses"]
    assert sync["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SyncAnswer"}
    assert {"400", "404", "422"} <= set(sync)
    assert "601" in sync["422"]["description"]


async def test_each_form_schema_is_served_as_its_file(client: httpx.AsyncClient, registry: Registry) -> None:
    for form in registry.forms:
        if not form.sync_names():
            continue  # reports have no record schema
        resp = await client.get(f"/api/schemas/{form.name}")
        assert resp.status_code == 200, form.name
        assert resp.headers["content-type"] == "application/schema+json"
        name = getattr(form, "schema_name", None) or form.name
        assert resp.json() == json.loads((SCHEMAS_DIR / f"{name}.json").read_text()), form.name


async def test_form_schema_names_match_like_the_registry(client: httpx.AsyncClient) -> None:
    site = (await client.get("/api/schemas/setSite")).json()
    for name in ("SETWAREHOUSE", "getsite", "setSite"):
        resp = await client.get(f"/api/schemas/{name}")
        assert resp.status_code == 200, name
        assert resp.json() == site


async def test_unknown_form_schema_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    for name in ("setNothing", "getTrialBalance"):  # a report has no record schema
        resp = await client.get(f"/api/schemas/{name}")
        assert resp.status_code == 404
        body = resp.json()
        assert body["success"] is False and body["code"] == 404
        assert "setCustomer" in body["forms"]


async def test_docs_page_loads_only_local_assets(client: httpx.AsyncClient) -> None:
    resp = await client.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert not re.search(r"(?:https?:)?//", resp.text), "the page must not load anything from another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', resp.text)
    assert len(assets) == 4
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        assert asset.startswith("/docs/"), asset
        got = await client.get(asset)
        assert got.status_code == 200, asset
        expected = types[asset[asset.rfind("."):]]
        assert got.headers["content-type"].split(";")[0] == expected, asset
        assert len(got.content) > 100, asset
    init = (await client.get("/docs/init.js")).text
    assert 'url: "/openapi.json"' in init and "validatorUrl: null" in init


async def test_docs_can_be_turned_off(settings: Settings, registry: Registry) -> None:
    app = create_app(dataclasses.replace(settings, docs=False), registry)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")
    async with app.router.lifespan_context(app), client as c:
        for path in ("/openapi.json", "/docs", "/docs/init.js", "/docs/static/swagger-ui.css"):
            assert (await c.get(path)).status_code == 404, path
        assert (await c.get("/api/schemas/setCustomer")).status_code == 200
    paths = openapi.build_document(registry, dataclasses.replace(settings, docs=False))["paths"]
    assert "/openapi.json" not in paths and "/docs" not in paths and "/api/schemas/{form}" in paths


def test_docs_setting_reads_the_environment() -> None:
    assert Settings.from_env({}).docs is True
    assert Settings.from_env({"GATEWAY_DOCS": "off"}).docs is False
    assert Settings.from_env({"GATEWAY_DOCS": "true"}).docs is True


# --- schemathesis against the live gateway --------------------------------------------------------------

# What "every answer matches the document" means. Checks about the API's design (that valid-looking data is
# accepted, that bad data is refused) are left out: a JSON Schema cannot say every business rule.
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]
# Examples per operation: the dispatching endpoints get more, to reach more of their forms.
EXAMPLES = {"SyncData": 30, "SyncVoucher": 30, "GetData": 40}


@pytest.fixture
async def served(app: Any) -> AsyncIterator[str]:
    """The started app on a real socket, in this test's event loop (where its pool lives)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None,
                                           access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def fuzz(base_url: str, doc: dict[str, Any], token: str) -> tuple[list[str], dict[str, list[int]]]:
    """Every operation with a few derandomised examples: the failures, described, and the statuses seen."""
    schema = schemathesis.openapi.from_dict(doc)
    # Logging out (`all: true`) ends the token the others need: last.
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda op: op.path == "/api/revokeToken")
    # Valid requests as the document describes them, then a few that break it (wrong types, missing fields).
    # (An operation that takes nothing but an optional free-form header has nothing to break.)
    runs = [*((op, GenerationMode.POSITIVE) for op in operations),
            *((op, GenerationMode.NEGATIVE) for op in operations
              if "requestBody" in op.definition.raw or "{" in op.path)]
    failures: list[str] = []
    seen: dict[str, list[int]] = {}
    for operation, mode in runs:
        label = f"{mode.value} {operation.label}"
        try:
            fuzz_operation(operation, mode, base_url, token, seen.setdefault(label, []))
        except Exception as exc:  # noqa: BLE001 - each operation's failure is collected and reported
            failures.append(f"{label}: {exc}")
    return failures, seen


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, token: str,
                   statuses: list[int]) -> None:
    examples = EXAMPLES.get(operation.definition.raw.get("operationId"), 5)

    @hypothesis.settings(max_examples=examples if mode is GenerationMode.POSITIVE else 3,
                         derandomize=True, database=None, deadline=None,
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=operation.as_strategy(mode))
    def check(case: Any) -> None:
        resp = case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                                      checks=CONFORMANCE)
        statuses.append(resp.status_code)

    check()


async def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(served: str, token: str) -> None:
    async with httpx.AsyncClient(base_url=served) as c:
        doc = (await c.get("/openapi.json")).json()
    failures, seen = await asyncio.to_thread(fuzz, served, doc, token)
    assert not failures, "\n\n".join(failures)
    operations = {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item}
    assert {label.split(" ", 1)[1] for label in seen} == operations  # every operation was called
    assert "negative POST /api/SyncVoucher" in seen
    for endpoint in ("SyncData", "SyncVoucher", "GetData"):
        # Valid requests got through, not only refusals.
        assert 200 in seen[f"positive POST /api/{endpoint}"], seen


async def test_document_lists_every_route_the_app_serves(app: Any, client: httpx.AsyncClient) -> None:
    """Each path the app routes (but the docs page's own assets) is in the document, with its methods."""
    doc = await document(client)
    served = {(route.path, method.lower()) for route in app.routes
              if getattr(route, "methods", None) and not route.path.startswith("/docs/")
              for method in route.methods - {"HEAD"}}
    described = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == described
