"""A worker's memory stays bounded whatever a body within the size limit holds.

The worst bodies go to a real `gateway serve` worker, whose peak resident memory (VmHWM) is read from /proc:
63 MB of empty records, 63 MB of decimal numbers in a GetData `in` list, bodies nested 1,000 levels deep,
a string far over the limit of one. Each gets its 4xx in the envelope; none takes the worker above
MAX_WORKER_MIB. Before the bodies were measured ahead of decoding, the first two took a worker to 1.6 and
3 GB and the nested ones answered 500. The smaller tests pin the measuring itself (gateway/body.py) to what a
decoder finds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, add_user, assert_envelope
from test_serve import free_port

from gateway import auth
from gateway.body import MAX_DEPTH, MAX_STRING_BYTES, VALUES_PER_RECORD, check_shape, records_in
from gateway.config import Settings
from gateway.db import QUERIES
from gateway.errors import BadRequest, PayloadTooLarge

# A worker serving these bodies peaked at about 250 MiB (63 MB of empty records: the body, read in chunks and
# joined, and its skeleton); an idle one holds about 90 MiB. Before the limits, 1,631 and 2,979 MiB, and a
# 60 MB string 570 MiB.
MAX_WORKER_MIB = 400
BIG = 63 * 1024 * 1024
SECRET = "m" * 40


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current resident size, so that each body's peak is its own."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def worst_bodies() -> Iterator[tuple[str, str, bytes, int]]:
    """(what, endpoint, body, expected body code), each within the 64 MiB body limit, made one at a time."""
    yield ("63 MB of empty records", "SyncData",
           b"".join([b'{"form":"setCustomer","data":[', b"{}," * (BIG // 3), b"{}]}"]), 413)
    yield ("63 MB of numbers in an 'in' list", "GetData",
           b"".join([b'{"form":"getCustomer","filters":{"CustomerCode":{"in":[', b"1.5," * (BIG // 4),
                     b"1.5]}}}"]), 413)
    # Any string over MAX_STRING_BYTES takes the same way; 8 MB spare the test time, not the worker memory.
    yield ("an 8 MB string in a record", "SyncData",
           b"".join([b'{"form":"setCustomer","data":[{"CustomerCode":"K1","CustomerName":"', b"x" * (8 << 20),
                     b'"}]}']), 413)
    yield ("data nested 1,000 levels", "SyncData", b'{"form":"setCustomer","data":' + nested(1000) + b"}", 400)
    yield ("a voucher line nested 1,000 levels", "SyncVoucher",
           b'{"form":"setSaleInvoice","data":[{"VoucherId":"V1","detail":[' + nested(1000) + b"]}]}", 400)
    yield ("a filter nested 1,000 levels", "GetData",
           b'{"form":"getCustomer","filters":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}", 400)


async def test_worst_bodies_keep_a_worker_within_its_memory_bound(db_url: str, db: asyncpg.Connection,
                                                                  tmp_path: Path) -> None:
    await add_user(db, "writer1", "writer")
    row = await db.fetchrow(QUERIES["user_for_login"], "writer1")
    settings = Settings(data_dir=tmp_path)
    tokens = auth.TokenService(SECRET, 3600, settings.jwt_issuer, settings.jwt_audience)
    token = tokens.issue(row["username"], row["tenant_code"], row["role"], version=row["token_version"]).token
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_JWT_SECRET": SECRET,
           "GATEWAY_POOL_MIN": "1", "GATEWAY_LOG_LEVEL": "WARNING"}
    # One worker: `gateway serve` then serves in its own process, whose pid is the worker's.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "1", "--no-demo",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = b""
    peaks: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        while b"Serving on" not in output:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, output
            output += line
        drain = asyncio.ensure_future(proc.stdout.read())  # a full pipe must not block the worker's logging
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for what, endpoint, body, code in worst_bodies():
                reset_peak(proc.pid)
                resp = await client.post(f"/api/{endpoint}", content=body,
                                         headers={"Authorization": token, "Content-Type": "application/json"})
                del body
                answer = assert_envelope(resp)
                assert answer["code"] == code, (what, answer)
                assert len(answer["messages"]) < 1000, what
                peaks[what] = peak_mib(proc.pid)
                assert peaks[what] < MAX_WORKER_MIB, (what, peaks)
            # The worker is still there and serves.
            resp = await client.post("/api/SyncData", headers={"Authorization": token},
                                     json={"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "x"}]})
            assert assert_envelope(resp)["records"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 40)
    output += await drain
    print({what: round(mib) for what, mib in peaks.items()})
    assert await db.fetchval("SELECT count(*) FROM customer") == 1


# --- the measuring, against what the decoder finds ------------------------------------------------------


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@pytest.mark.parametrize("text", [
    "x", "", "[[[[", "]]]]", "{{{", "a,b,c", '\\"[[[[', "\\\\", '\\\\"', "é[{", "\n\t[", '"""', "\\u005b" * 40,
])
def test_brackets_commas_and_escapes_in_strings_are_not_structure(text: str) -> None:
    """Strings are left out of the measure, whatever they hold: a value nested exactly MAX_DEPTH deep,
    with strings of brackets, commas, escaped quotes and backslashes at every level, passes."""
    value: Any = text
    for i in range(MAX_DEPTH - 2):  # the first level holds a list: two levels
        value = [text * 3, value, {text: text, "k": text}] if i % 2 else {text: value, "x" + text: [text]}
    body = json.dumps({"form": value}).encode()
    assert depth_of(json.loads(body)) == MAX_DEPTH
    check_shape(body, max_records=10)
    check_shape(json.dumps({"form": value}, ensure_ascii=False, indent=1).encode(), max_records=10)
    with pytest.raises(BadRequest, match=f"deeper than {MAX_DEPTH} levels"):
        check_shape(json.dumps({"form": [value]}).encode(), max_records=10)


def test_depth_hidden_behind_brackets_in_strings_is_found() -> None:
    """Closing brackets inside strings must not pair with the real ones and hide the nesting."""
    body = b'{"a":' + b'["]",' * 40 + b"1" + b"]" * 40 + b"}"
    assert depth_of(json.loads(body)) == 41
    with pytest.raises(BadRequest):
        check_shape(body, max_records=10)


def test_values_are_counted_outside_strings() -> None:
    # 2,000 values, counted exactly: an array and 1,999 numbers.
    limit = 20  # x VALUES_PER_RECORD = 2,000 values
    numbers = "[" + ",".join(["1.5"] * 1_999) + "]"
    check_shape(numbers.encode(), max_records=limit)
    with pytest.raises(PayloadTooLarge, match=f"more than the {limit * VALUES_PER_RECORD} allowed"):
        check_shape(numbers.replace("[", "[1,").encode(), max_records=limit)
    # Commas and brackets inside strings overstate the first count; the exact one lets the body through.
    check_shape(json.dumps([",,,[[{{" * 1_000] * 10).encode(), max_records=limit)


@pytest.mark.parametrize("escaped", [False, True])
def test_a_string_longer_than_the_limit_is_refused(escaped: bool) -> None:
    filler = b'\\"' if escaped else b"x"  # an escaped quote is text, not the end of the string
    for length, refused in ((MAX_STRING_BYTES, False), (MAX_STRING_BYTES + 2, True)):
        text = b"x" * (length - 4) + filler * (4 // len(filler))
        body = b'{"form":"setCustomer","data":[{"CustomerCode":"K1","Note":"' + text + b'"}]}'
        if refused:
            with pytest.raises(PayloadTooLarge, match=f"string of {length} bytes; at most {MAX_STRING_BYTES}"):
                check_shape(body, max_records=10)
        else:
            check_shape(body, max_records=10)
    # Numbers are not a string, however long the run of them.
    check_shape(b'{"a":[' + b"1," * MAX_STRING_BYTES + b"1]}", max_records=MAX_STRING_BYTES)


def test_records_are_counted_before_they_are_decoded() -> None:
    records = [{"CustomerCode": f"K{i}", "Note": "a, b [c]"} for i in range(12)]
    for key in ("data", "Data", "DATA"):
        body = json.dumps({"form": "setCustomer", key: records}).encode()
        assert records_in(body) == 12
        check_shape(body, max_records=12)
        with pytest.raises(PayloadTooLarge, match="At most 11 records per request, got 12"):
            check_shape(body, max_records=11)
    assert records_in(b'{"DATA":[1,2,3],"Form":"x"}') == 3
    assert records_in(b'{"data":{"a":1}}') == 0 and records_in(b"[1,2]") == 0


async def test_limits_answer_in_the_envelope_and_write_nothing(api: Api, db: asyncpg.Connection) -> None:
    resp = await api.post("SyncData", {"form": "setCustomer", "data": [{"CustomerCode": "K1",
                                                                         "CustomerName": json.loads(nested(40))}]})
    body = assert_envelope(resp)
    assert body["code"] == 400 and f"deeper than {MAX_DEPTH} levels" in body["messages"]
    # Nested exactly as deep as allowed: read, and refused by the schema (a name is a string), not before.
    value: Any = "x"
    for _ in range(MAX_DEPTH - 3):
        value = [value]
    resp = await api.post("SyncData", {"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": value}]})
    assert assert_envelope(resp)["code"] == 601
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def test_unclosed_brackets_are_invalid_json_or_too_deep(client: httpx.AsyncClient, token: str) -> None:
    for body, words in ((b'{"form":"setCustomer","data":' + b"[" * 5, "not valid JSON"),
                        (b'{"form":"setCustomer","data":' + b"[" * 5000, f"deeper than {MAX_DEPTH} levels")):
        resp = await client.post("/api/SyncData", content=body, headers={"Authorization": token})
        answer = assert_envelope(resp)
        assert answer["code"] == 400 and words in answer["messages"], answer
