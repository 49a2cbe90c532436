"""Requests generated for every endpoint and form, with the values hostile clients send: the answer is never a
5xx, it is always the canonical envelope, and a refused request writes nothing.

Two sources of requests: (a) bodies built from each form's JSON Schema (and GetData's and the reports'
parameters), any field of which may hold a hostile value instead of one of its type; (b) the valid bodies the
other tests send, with one value at a time replaced by a hostile one. Hypothesis runs a fixed, derandomised
set of examples, so a run is repeatable and quick.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from conftest import PASSWORD, assert_envelope, replaced
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_forms_roundtrip import SAMPLES as MASTER_SAMPLES
from test_voucher_forms import SAMPLES as VOUCHER_SAMPLES
from test_voucher_forms import fapi  # noqa: F401  (a fixture)
from test_vouchers import VoucherApi, vapi  # noqa: F401  (a fixture)

from forms import FORM_MODULES
from gateway.forms import MasterForm, build_registry
from gateway.query import OPERATORS
from gateway.reports import ReportForm
from gateway.vouchers import VoucherForm

REGISTRY = build_registry(FORM_MODULES)
MASTERS = [f for f in REGISTRY.forms if isinstance(f, MasterForm)]
VOUCHERS = [f for f in REGISTRY.forms if isinstance(f, VoucherForm)]
REPORTS = [f for f in REGISTRY.forms if isinstance(f, ReportForm)]
PULLABLE = MASTERS + VOUCHERS

# Fixed examples (the same in every run), few enough for the file to take seconds. The fixtures are set up
# once per test, not per example: every example leaves the tables as it found them or as a success wrote them.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


class Raw:
    """JSON text sent as written: numbers no Python float holds (1e1000000), or spelled as clients spell them."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text})"


def dump(value: Any) -> str:
    """The request body as JSON. Texts are ASCII-escaped, so that a lone surrogate goes as its escape \\ud800,
    as a client's encoder writes it."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


NUMBERS: list[Any] = [Raw("1e1000000"), Raw("-1e1000000"), Raw("1e-1000000"), Raw("1e30"), Raw("-0.0"),
                      Raw("123456789012345678901234567890.123456789"), Raw("0.0000000000000000000000000001"),
                      2**15, 2**31, 2**63, 2**64, -(2**63) - 1, 10**40, -1, 0, 1.5, 1e308]
TEXTS: list[Any] = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "x" * 5000, "١٢٣", "2026-13-45",
                    "2026-02-30T10:00:00", "9999-12-31", "0001-01-01", "NaN", "Infinity", "-Infinity", "1e1000000",
                    "9" * 40, "-1", "1.9223372036854775808.1", "18446744073709551616.1.1", "'; DROP TABLE x; --",
                    "%_\\", "KH1", "IT1"]
OTHERS: list[Any] = [None, True, False, [], {}, [1, [2, [3]]], {"nested": {"deep": [None]}}, [None], ["KH1"] * 3]
# Each kind of mistake as likely as another: a number out of range, a text PostgreSQL refuses, a wrong type.
HOSTILE = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.sampled_from(OTHERS), st.integers(),
                    st.text(max_size=12))


def sometimes_hostile(valid: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """Mostly a value of the right kind; one time in `odds` a hostile one."""
    return st.integers(1, odds).flatmap(lambda n: HOSTILE if n == 1 else valid)


DATES = st.dates().map(lambda d: d.isoformat())
DATE_TIMES = st.datetimes().map(lambda d: d.isoformat())
DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**9, max_value=10**9)


def _types(schema: dict[str, Any]) -> list[str]:
    types = schema.get("type", [])
    return [types] if isinstance(types, str) else list(types)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a schema admits, each of its fields sometimes hostile."""
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    options: list[st.SearchStrategy[Any]] = []
    for kind in _types(schema):
        if kind == "string":
            if schema.get("format") == "date":
                options += [DATES, DATE_TIMES]
            else:
                options.append(st.text(max_size=min(schema.get("maxLength", 40), 40), min_size=schema.get("minLength", 0)))
        elif kind == "number":
            options += [DECIMALS.map(lambda d: Raw(str(d))), st.integers(-10**6, 10**6)]
        elif kind == "integer":
            options.append(st.integers(schema.get("minimum", -10**6), schema.get("maximum", 10**6)))
        elif kind == "null":
            options.append(st.none())
        elif kind == "array" and isinstance(schema.get("items"), dict):
            options.append(st.lists(from_schema(schema["items"]), min_size=1, max_size=3))
        elif kind == "object":
            props = schema.get("properties", {})
            required = set(schema.get("required", ()))
            # A record has a dozen fields or more: each is hostile rarely, so that many records are valid
            # but for one value and reach the checks and the database.
            fields = {name: sometimes_hostile(from_schema(prop), odds=16) for name, prop in props.items()}
            options.append(st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                                 optional={k: v for k, v in fields.items() if k not in required}))
    return st.one_of(options) if options else HOSTILE


OPTIONS = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["atomic", "partial", "PARTIAL", "all", None]),
    "dry_run": st.sampled_from([True, False, "yes", None]),
    "outcomes": st.sampled_from([True, False, 1]),
    "strict": st.sampled_from([True, False]),
})


def _sync_bodies(form: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    endpoint = "SyncVoucher" if isinstance(form, VoucherForm) else "SyncData"
    records = st.lists(sometimes_hostile(from_schema(form.schema), odds=8), min_size=1, max_size=2)
    body = st.fixed_dictionaries({"form": sometimes_hostile(st.just(form.name), odds=16), "data": records})
    return st.tuples(st.just(endpoint), st.tuples(body, OPTIONS).map(lambda b: {**b[0], **b[1]}))




_VALUES = {"text": st.text(max_size=8), "numeric": DECIMALS.map(lambda d: Raw(str(d))), "date": DATES,
           "integer": st.integers(-(2**31), 2**31 - 1), "smallint": st.integers(-(2**15), 2**15 - 1),
           "bigint": st.integers(-(2**63), 2**63 - 1), "boolean": st.booleans()}
SINCE = st.sampled_from([0, "0", "", "1.2.3", "18446744073709551615.9223372036854775807.9223372036854775807",
                         "18446744073709551616.1.1", "1.9223372036854775808.1", "1.1.9223372036854775808",
                         "1.2", "a.b.c", "1.2.3.4", -1])


def _one_hostile(valid: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the parameters, each of its kind; half the time one of them (or an unknown one) hostile."""
    body = st.fixed_dictionaries({}, optional=valid)
    spoil = st.tuples(st.sampled_from([*valid, "Unknown"]), HOSTILE)
    return st.tuples(body, st.one_of(st.none(), spoil)).map(
        lambda b: b[0] if b[1] is None else {**b[0], b[1][0]: b[1][1]})


def _get_bodies(form: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    names = [c.field for c in form.columns]
    name = st.one_of(st.sampled_from(names), st.sampled_from(names).map(str.upper))
    conditions = [st.tuples(st.sampled_from(["eq", "ne", "EQ", "gt", "lte"]), _VALUES[c.pgtype]).map(
        lambda t, n=c.field: (n, {t[0]: t[1]})) for c in form.columns]
    conditions += [st.lists(_VALUES[c.pgtype], min_size=1, max_size=4).map(lambda v, n=c.field: (n, {"in": v}))
                   for c in form.columns]
    conditions += [_VALUES[c.pgtype].map(lambda v, n=c.field: (n, v)) for c in form.columns]
    # Any operator (or none known) with any value, on a declared field or another name.
    anything = st.one_of(HOSTILE, st.lists(HOSTILE, max_size=3))
    conditions += [st.tuples(st.one_of(name, st.text(max_size=6)),
                             st.dictionaries(st.sampled_from([*OPERATORS, "EQ", "like", ""]), anything, max_size=2))]
    conditions += [st.tuples(st.sampled_from(["prefix", "contains"]), _VALUES["text"]).map(
        lambda t, n=c.field: (n, {t[0]: t[1]})) for c in form.columns if c.pgtype == "text"]
    params = {
        "filters": st.lists(st.one_of(conditions), max_size=3).map(dict),
        "fields": st.lists(name, max_size=4),
        "order_by": st.lists(st.one_of(name, name.map(lambda n: f"-{n}")), max_size=3),
        "limit": st.integers(1, 50),
        "since": SINCE,
        "Id": st.sampled_from(["", "KH1", "SI-1", "IT1|PCS", ["IT1", "PCS"]]),
        "dateFrom": st.one_of(DATES, DATE_TIMES),
        "dateTo": st.one_of(DATES, DATE_TIMES),
    }
    return _one_hostile(params).map(lambda b: ("GetData", {"form": form.get_name, **b}))


_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": st.text(max_size=8), "numeric": DECIMALS.map(lambda d: Raw(str(d))), "date": DATES,
    "integer": st.integers(-(2**31), 2**31 - 1), "smallint": st.integers(-(2**15), 2**15 - 1),
    "bigint": st.integers(-(2**63), 2**63 - 1), "boolean": st.booleans()}
SINCE = st.sampled_from([0, "0", "", "1.2.3", "18446744073709551615.9223372036854775807.9223372036854775807",
                         "18446744073709551616.1.1", "1.9223372036854775808.1", "1.1.9223372036854775808",
                         "1.2", "a.b.c", "1.2.3.4", -1])


def _report_bodies(form: Any) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    params = {
        "Id": st.sampled_from(["", "KH1", "IT1", "131", 131]),
        "dateFrom": st.one_of(DATES, DATE_TIMES, st.just("")),
        "dateTo": st.one_of(DATES, DATE_TIMES, st.just("")),
        "group_by": st.sampled_from(["period", "customer", "item", "ITEM", ""]),
        "include_paid": st.booleans(),
    }
    known = {p: s for p, s in params.items() if p in form.params}
    return _one_hostile(known).map(lambda b: ("GetData", {"form": form.get_name, **b}))




TOKEN_BODIES = st.fixed_dictionaries({}, optional={
    "username": sometimes_hostile(st.sampled_from(["writer1", "nobody"])),
    "password": sometimes_hostile(st.sampled_from([PASSWORD, "wrong"])),
}).map(lambda body: ("getToken", body))
# A form (of any endpoint) first, then a body for it: each form is as likely as another.
GENERATED = st.sampled_from([*[_sync_bodies(f) for f in MASTERS + VOUCHERS], *[_get_bodies(f) for f in PULLABLE],
                             *[_report_bodies(f) for f in REPORTS], TOKEN_BODIES]).flatmap(lambda bodies: bodies)


# --- (b) the valid bodies of the other tests, one value at a time made hostile --------------------------------

def _valid_bodies() -> list[tuple[str, dict[str, Any]]]:
    bodies: list[tuple[str, dict[str, Any]]] = [("getToken", {"username": "writer1", "password": PASSWORD})]
    bodies += [("SyncData", {"form": name, "data": [record]}) for name, (record, _) in MASTER_SAMPLES.items()]
    bodies += [("SyncVoucher", {"form": name, "data": [doc]}) for name, doc in VOUCHER_SAMPLES.items()]
    for form in PULLABLE:
        key = form.key_columns[0].field
        bodies.append(("GetData", {"form": form.get_name, "filters": {key: {"in": ["A", "B"]}, "Status": "1"},
                                   "fields": [c.field for c in form.columns][:3], "order_by": [f"-{key}"],
                                   "limit": 10, "dateFrom": "2026-01-01", "dateTo": "2026-12-31"}))
        bodies.append(("GetData", {"form": form.get_name, "since": "0", "limit": 5}))
    for report in (r for r in REPORTS if not r.admin_only):  # the audit log is the admins': the fuzz user writes
        params = {"Id": "131" if report.get_name == "getAccountLedger" else "", "dateFrom": "2026-01-01",
                  "dateTo": "2026-12-31", "group_by": "item", "include_paid": True}
        bodies.append(("GetData", {"form": report.get_name, **{p: params[p] for p in report.params}}))
    return bodies


VALID_BODIES = _valid_bodies()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a body a value sits at (containers included)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutated(endpoint: str, body: dict[str, Any]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.tuples(st.sampled_from(_paths(body)), HOSTILE).map(lambda m: (endpoint, replaced(body, *m)))


# A valid body, one of its values made hostile.
MUTATED = st.sampled_from([_mutated(endpoint, body) for endpoint, body in VALID_BODIES]).flatmap(lambda m: m)


# --- the checks -----------------------------------------------------------------------------------------------

_SNAPSHOTS: dict[asyncpg.Connection, str] = {}


# Not the data a request writes: users and stored idempotent answers; the voucher counters, which (as a
# sequence) give no number back once taken, even by a voucher then refused; and the audit log, which records
# refused requests too.
_NOT_DATA = ("app_user", "idempotency_key", "voucher_counter", "audit_log")


async def snapshot(db: asyncpg.Connection) -> list[tuple[str, int]]:
    """Rows of every tenant table and entries of the change feed (which every change appends to)."""
    query = _SNAPSHOTS.get(db)
    if query is None:
        tables = [r[0] for r in await db.fetch(
            "SELECT DISTINCT table_name::text FROM information_schema.columns WHERE table_schema = 'public'"
            " AND column_name = 'tenant_id' AND table_name <> ALL($1::text[]) ORDER BY 1", _NOT_DATA)]
        assert {"customer", "voucher", "voucher_line", "gl_entry", "change_log"} <= set(tables), tables
        query = _SNAPSHOTS[db] = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables)
    return [tuple(r) for r in await db.fetch(query)]


async def send(api: VoucherApi, db: asyncpg.Connection, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """Post the body as a client would; assert no 5xx, the envelope, and nothing written unless it succeeded."""
    before = await snapshot(db)
    resp = await api.client.post(f"/api/{endpoint}", content=dump(body).encode(),
                                 headers={"Authorization": api.token, "Content-Type": "application/json"})
    assert resp.status_code < 500, (endpoint, body, resp.text)
    answer = assert_envelope(resp)
    if answer["code"] != 200:
        after = await snapshot(db)
        assert after == before, (endpoint, body, answer, sorted(set(after) ^ set(before)))
    return answer


@settings(FUZZ, max_examples=50)  # each costs more to generate than a mutation
@given(GENERATED)
async def test_bodies_generated_from_the_schemas_get_no_5xx_and_a_refusal_writes_nothing(
        fapi: VoucherApi, db: asyncpg.Connection, call: tuple[str, dict[str, Any]]) -> None:  # noqa: F811
    await send(fapi, db, *call)


@FUZZ
@given(MUTATED)
async def test_valid_bodies_with_one_value_made_hostile_get_no_5xx_and_a_refusal_writes_nothing(
        fapi: VoucherApi, db: asyncpg.Connection, call: tuple[str, dict[str, Any]]) -> None:  # noqa: F811
    await send(fapi, db, *call)


async def test_the_bodies_the_mutations_start_from_are_accepted(fapi: VoucherApi,  # noqa: F811
                                                                db: asyncpg.Connection) -> None:
    """A mutation tests the one value it changed, not a body that was refused anyway."""
    codes = {}
    for endpoint, body in VALID_BODIES:
        codes[(endpoint, body.get("form"))] = (await send(fapi, db, endpoint, body))["code"]
    refused = {k: v for k, v in codes.items() if v != 200}
    assert not refused, refused


def test_bodies_are_sent_as_clients_write_them() -> None:
    assert dump({"a": Raw("1e1000000"), "b": ["\ud800", "\x00"]}) == '{"a":1e1000000,"b":["\\ud800","\\u0000"]}'
    sample = VOUCHER_SAMPLES["setSaleInvoice"]
    assert json.loads(dump(sample)) == sample
    assert set(_paths({"a": [1, {"b": 2}]})) == {("a",), ("a", 0), ("a", 1), ("a", 1, "b")}
