"""The README is the integrators' and operators' manual: it must name everything the gateway serves."""

from __future__ import annotations

import re

from gateway.config import PROJECT_ROOT
from gateway.forms import ENDPOINTS, Registry

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
