"""The README is the integrators' and operators' manual: it must name everything the gateway serves."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
import httpx
from conftest import add_user

from gateway.config import PROJECT_ROOT
from gateway.forms import ENDPOINTS, Registry
from gateway.tenants import create_tenant

README = (PROJECT_ROOT / "README.md").read_text()


def test_every_registered_form_and_alias_is_documented(registry: Registry) -> None:
    for form in registry.forms:
        for name in (*form.sync_names(), *form.get_names()):
            assert f"`{name}`" in README, name


def test_every_environment_variable_read_is_documented() -> None:
    sources = "".join(p.read_text() for p in (PROJECT_ROOT / "gateway").glob("*.py"))
    names = set(re.findall(r'"((?:GATEWAY|DATABASE)_[A-Z_]+)"', sources))
    assert names, "no settings found"
    for name in names:
        assert f"`{name}`" in README, name


def test_each_endpoint_has_a_curl_example() -> None:
    for endpoint in ("getToken", *ENDPOINTS):
        assert re.search(rf"curl [^\n]*/api/{endpoint}", README), endpoint


# --- the README's curl examples, run in order on a fresh install ----------------------------------------

_FENCE = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
_CURL = re.compile(r"curl\b.*?(?=\ncurl\b|\Z)", re.DOTALL)  # a command runs to the next one
DEMO_PASSWORD = "XXXXXXXXXXXXXXXX"  # the README's stand-in for the password `serve` prints once


def readme_examples() -> list[tuple[str, dict[str, Any], Any]]:
    """(path, body, the answer shown after it or None) for every curl call in the README, in order."""
    blocks = _FENCE.findall(README)
    examples = []
    for i, (lang, text) in enumerate(blocks):
        if lang != "sh":
            continue
        commands = _CURL.findall(text)
        for command in commands:
            path = re.search(r"http://127\.0\.0\.1:8000(/api/\w+)", command)
            body = re.search(r"-d '(.*?)'", command, re.DOTALL)
            if not path or not body:
                continue
            shown = None
            if i + 1 < len(blocks) and blocks[i + 1][0] == "json" and command is commands[-1]:
                shown = json.loads(blocks[i + 1][1])
            examples.append((path.group(1), json.loads(body.group(1)), shown))
    return examples


def test_the_readme_has_curl_examples_to_run() -> None:
    paths = [path for path, _, _ in readme_examples()]
    for endpoint in ("getToken", *ENDPOINTS):
        assert f"/api/{endpoint}" in paths, endpoint


VOLATILE = frozenset({"accesstoken", "expires"})  # differ on every call: only their type is compared


def _shown_in(shown: Any, got: Any) -> bool:
    """Whether what the README shows is what came back (a value ending in "..." is elided)."""
    if isinstance(shown, str) and shown.endswith("..."):
        return isinstance(got, str) and got.startswith(shown[:-3])
    if isinstance(shown, dict):
        return isinstance(got, dict) and all(
            k in got and (type(v) is type(got[k]) if k in VOLATILE else _shown_in(v, got[k])) for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(got, list) and len(shown) == len(got) and all(map(_shown_in, shown, got))
    return bool(shown == got)


async def test_the_readme_examples_run_in_order_on_a_fresh_install_and_answer_what_it_shows(
        client: httpx.AsyncClient, db: asyncpg.Connection, registry: Registry) -> None:
    await create_tenant(db, registry, "demo", "Demo tenant")
    await add_user(db, "demo", "admin", tenant="demo", password=DEMO_PASSWORD)
    token = ""
    for path, body, shown in readme_examples():
        resp = await client.post(path, json=body, headers={"Authorization": token} if token else {})
        answer = resp.json()
        assert resp.status_code == 200 and answer["success"] is True, (path, body, answer)
        if path == "/api/getToken":
            token = answer["token"]["accesstoken"]
        if shown is not None:
            assert _shown_in(shown, answer), (path, body, shown, answer)
