"""GetData without `limit`: every matching row in Fast's envelope, streamed from a server-side cursor."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import structlog
from conftest import Api, assert_envelope

from gateway import query
from gateway.config import Settings

TOTAL = 1_505
FAST_PULL = {"Id": "", "dateFrom": "", "dateTo": ""}
_exact = msgspec.json.Decoder(float_hook=Decimal)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """conftest's settings; a test can ask for another pool size with indirect parametrization."""
    size = getattr(request, "param", None)
    return settings if size is None else dataclasses.replace(settings, pool_min_size=1, pool_max_size=size)


def cust(i: int, **extra: Any) -> dict[str, Any]:
    return {"CustomerCode": f"KH{i:05d}", "CustomerName": f"Customer {i}",
            "GroupCode1": "RETAIL" if i % 3 == 0 else "WHOLESALE", **extra}


@pytest.fixture
async def customers(api: Api) -> list[str]:
    # Sent in reverse so that the order of the answer comes from the query, not from insertion.
    records = [cust(i) for i in reversed(range(TOTAL))]
    body = assert_envelope(await api.sync("setCustomer", records))
    assert body["result"]["inserted"] == TOTAL
    return sorted(r["CustomerCode"] for r in records)


def exact(resp: httpx.Response) -> dict[str, Any]:
    """The answer with its numbers as exact decimals, after the envelope checks."""
    assert_envelope(resp)
    return _exact.decode(resp.content)


async def pull(api: Api, form: str, **params: Any) -> dict[str, Any]:
    resp = await api.get(form, **params)
    assert resp.headers["content-type"] == "application/json"
    return exact(resp)


async def walk_pages(api: Api, form: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = await pull(api, form, limit=limit, cursor=cursor, **params)
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


async def idle_in_transaction(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                             " AND state LIKE 'idle in transaction%'")


def pool_of(app: Any) -> asyncpg.Pool:
    return app.state.gateway.pool


# Several chunks; an exact multiple (1,505 = 5 x 301); one chunk.
@pytest.mark.parametrize("chunk", [100, 301, 5_000])
async def test_a_fast_shaped_pull_returns_every_row_in_key_order(
        api: Api, customers: list[str], monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", chunk)
    body = await pull(api, "getCustomer", **FAST_PULL)
    assert list(body) == ["success", "messages", "data", "records", "code"]
    assert body["success"] is True and body["messages"] == "SUCCESS" and body["code"] == 200
    assert body["records"] == TOTAL == len(body["data"])
    assert [r["CustomerCode"] for r in body["data"]] == customers
    first = body["data"][0]
    assert (first["CustomerName"], first["GroupCode1"], first["Status"], first["SuplierYN"],
            first["Email"]) == ("Customer 0", "RETAIL", "1", 0, None)


async def test_an_empty_pull_is_a_complete_envelope(api: Api) -> None:
    body = await pull(api, "getCustomer", **FAST_PULL)
    assert body == {"success": True, "messages": "SUCCESS", "data": [], "records": 0, "code": 200}


async def test_a_streamed_pull_and_a_paged_walk_give_identical_records(
        api: Api, customers: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", 128)
    for params in ({},
                   {"fields": ["CustomerName", "GroupCode1"], "order_by": ["-GroupCode1", "-CustomerName"]},
                   {"filters": {"CustomerCode": {"gte": "KH00700"}}}):
        streamed = await pull(api, "getCustomer", **params)
        paged = await walk_pages(api, "getCustomer", 400, **params)
        assert streamed["data"] == paged and streamed["records"] == len(paged), params


async def test_filters_fields_order_id_and_iso_dates_apply_to_streamed_pulls(
        api: Api, db: asyncpg.Connection, customers: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", 100)
    body = await pull(api, "getCustomer", filters={"GroupCode1": "RETAIL", "CustomerCode": {"lt": "KH00010"}},
                      fields=["groupcode1"], order_by=["-CustomerCode"])
    assert body["data"] == [{"CustomerCode": f"KH{i:05d}", "GroupCode1": "RETAIL"} for i in (9, 6, 3, 0)]
    assert body["records"] == 4

    twice = await pull(api, "getCustomer", Id="KH00001", fields=["CustomerName", "customername", "CUSTOMERCODE"])
    assert twice["data"] == [{"CustomerCode": "KH00001", "CustomerName": "Customer 1"}]

    one = await pull(api, "getCustomer", Id="KH01234", dateFrom="", dateTo="")
    assert [r["CustomerName"] for r in one["data"]] == ["Customer 1234"] and one["records"] == 1

    await db.execute("UPDATE customer SET updated_at = '2024-03-10T23:30:00Z'"
                     " WHERE customer_code < 'KH00300'")
    await db.execute("UPDATE customer SET updated_at = '2024-03-11T00:10:00Z'"
                     " WHERE customer_code >= 'KH00300' AND customer_code < 'KH00500'")
    # The date part is kept as written: no time-zone conversion of the day the client meant.
    for date_from, date_to in (("2024-03-10", "2024-03-10"),
                               ("2024-03-10T00:00:00", "2024-03-10T00:00:00.000"),
                               ("2024-03-10T00:00:00Z", "2024-03-10T23:59:59+07:00")):
        body = await pull(api, "getCustomer", Id="", dateFrom=date_from, dateTo=date_to)
        assert [r["CustomerCode"] for r in body["data"]] == customers[:300], (date_from, date_to)
    body = await pull(api, "getCustomer", dateFrom="2024-03-11T08:00:00-05:00", dateTo="2024-03-11")
    assert [r["CustomerCode"] for r in body["data"]] == customers[300:500]
    body = await pull(api, "getCustomer", dateFrom="2024-03-12T00:00:00.000Z")
    assert body["records"] == TOTAL - 500


async def test_a_cursor_without_limit_streams_the_rest(api: Api, customers: list[str]) -> None:
    first = await pull(api, "getCustomer", limit=1_000)
    rest = await pull(api, "getCustomer", cursor=first["next_cursor"])
    assert "next_cursor" not in rest and rest["records"] == TOTAL - 1_000
    assert [r["CustomerCode"] for r in first["data"] + rest["data"]] == customers


async def test_limit_still_pages_with_next_cursor(api: Api, customers: list[str]) -> None:
    first = await pull(api, "getCustomer", limit=1_000)
    assert first["records"] == 1_000 and first["next_cursor"]
    second = await pull(api, "getCustomer", limit=1_000, cursor=first["next_cursor"])
    assert second["records"] == TOTAL - 1_000 and second["next_cursor"] is None
    assert [r["CustomerCode"] for r in first["data"] + second["data"]] == customers
    # `limit: null` is no limit.
    assert (await pull(api, "getCustomer", limit=None))["records"] == TOTAL


async def test_since_pulls_keep_their_default_page(api: Api, customers: list[str]) -> None:
    body = await pull(api, "getCustomer", since=0)
    assert body["records"] == query.DEFAULT_LIMIT and body["more"] is True and body["next_since"]
    rest = await pull(api, "getCustomer", since=body["next_since"])
    assert rest["records"] == TOTAL - query.DEFAULT_LIMIT and rest["more"] is False
    assert sorted(r["CustomerCode"] for r in body["data"] + rest["data"]) == customers


async def test_a_bad_streamed_request_gets_400_before_any_row(api: Api, db: asyncpg.Connection,
                                                              customers: list[str]) -> None:
    cases = [
        ({"fields": ["CustomerName", "Nope"]}, "Nope"),
        ({"filters": {"Colour": "red"}}, "Colour"),
        ({"order_by": ["-Secret"]}, "Secret"),
        ({"dateFrom": "2024-03-10T25:00:00"}, "dateFrom"),
        ({"dateTo": "10/03/2024"}, "dateTo"),
        ({"dateFrom": "20240310"}, "dateFrom"),
        ({"cursor": "garbage"}, "cursor"),
        ({"Id": 42}, "Id"),
    ]
    for params, name in cases:
        resp = await api.get("getCustomer", **{**FAST_PULL, **params})
        body = assert_envelope(resp)
        assert resp.status_code == 400 and body["code"] == 400 and name in body["messages"], (params, body)
        assert "data" not in body and "records" not in body
    assert await idle_in_transaction(db) == 0


@pytest.mark.parametrize("settings", [1], indirect=True)
async def test_each_request_holds_one_connection_and_the_stream_gives_it_back(
        app: Any, api: Api, db: asyncpg.Connection, customers: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", 200)
    pool = pool_of(app)
    assert pool.get_max_size() == 1
    for n in range(3):
        # With one connection in the pool, a request that held two at once would wait for itself.
        body = await asyncio.wait_for(pull(api, "getCustomer", **FAST_PULL), 60)
        assert body["records"] == TOTAL and body["data"][0]["CustomerName"] == ("Customer 0" if n == 0 else
                                                                                f"Renamed {n - 1}")
        assert pool.get_idle_size() == pool.get_size() == 1
        assert await idle_in_transaction(db) == 0
        assert_envelope(await api.sync("setCustomer", [cust(0, CustomerName=f"Renamed {n}")]))


def _asgi_request(token: str, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/api/GetData", "raw_path": b"/api/GetData",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("gateway.test", 80),
        "headers": [(b"host", b"gateway.test"), (b"authorization", token.encode()),
                    (b"content-type", b"application/json")],
    }
    return scope, json.dumps(body).encode()


async def test_a_client_that_goes_away_mid_stream_frees_the_connection(
        app: Any, token: str, db: asyncpg.Connection, customers: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", 100)
    scope, raw = _asgi_request(token, {"form": "getCustomer", **FAST_PULL})
    sent: list[dict[str, Any]] = []
    first_rows = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await first_rows.wait()
        return {"type": "http.disconnect"}  # the client hangs up once the first rows arrived

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_rows.set()

    await asyncio.wait_for(app(scope, receive, send), 60)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies and all(m.get("more_body") for m in bodies), "the answer must not end as if complete"
    received = b"".join(m["body"] for m in bodies)
    assert received.count(b'"CustomerCode"') < TOTAL
    pool = pool_of(app)
    assert pool.get_idle_size() == pool.get_size()
    assert await idle_in_transaction(db) == 0


async def test_a_database_failure_mid_stream_cuts_the_body(
        app: Any, api: Api, token: str, db: asyncpg.Connection, customers: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_ROWS", 100)
    capture = structlog.testing.LogCapture()
    monkeypatch.setattr(query, "log", structlog.wrap_logger(None, processors=[capture]))
    scope, raw = _asgi_request(token, {"form": "getCustomer", **FAST_PULL})
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 2:
            # The server ends the streaming session after the first rows went out.
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state LIKE 'idle in transaction%'")
            assert killed == 1

    with pytest.raises(Exception) as failure:
        await asyncio.wait_for(app(scope, receive, send), 60)
    assert not isinstance(failure.value, AssertionError), failure.value
    assert sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert all(m.get("more_body") for m in bodies), "a cut stream must not end as if complete"
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(b"".join(m["body"] for m in bodies))
    failed = [e for e in capture.entries if e["event"] == "stream_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and 0 < failed[0]["records_sent"] < TOTAL
    # The pool replaced the broken connection: the next pull is whole.
    assert (await pull(api, "getCustomer", **FAST_PULL))["records"] == TOTAL


async def test_a_failure_before_the_first_byte_gets_the_canonical_envelope(
        app: Any, api: Api, db: asyncpg.Connection, customers: list[str]) -> None:
    name = await db.fetchval("SELECT current_database()")
    await db.execute(f"ALTER DATABASE \"{name}\" SET statement_timeout TO '300ms'")
    await pool_of(app).expire_connections()
    # Another session holds the table: opening the stream's cursor waits, then is cancelled by the server.
    async with db.transaction():
        await db.execute("LOCK TABLE customer IN ACCESS EXCLUSIVE MODE")
        resp = await api.get("getCustomer", **FAST_PULL)
    body = assert_envelope(resp)
    assert resp.status_code == 503 and body["code"] == 503 and "data" not in body
    await db.execute(f"ALTER DATABASE \"{name}\" RESET statement_timeout")
    await pool_of(app).expire_connections()
    assert (await pull(api, "getCustomer", **FAST_PULL))["records"] == TOTAL
    assert await idle_in_transaction(db) == 0


async def test_exact_decimals_survive_streaming(api: Api) -> None:
    items = [{"ItemCode": "IT1", "ItemName": "Gold", "ItemType": "HH",
              "Price": Decimal("1234567890.123456789"), "ReorderLevel": Decimal("0.000000001")},
             {"ItemCode": "IT2", "ItemName": "Sand", "ItemType": "HH",
              "Price": Decimal("98765432109876543210.5")}]
    raw = msgspec.json.Encoder(decimal_format="number").encode({"form": "setItem", "data": items})
    resp = await api.client.post("/api/SyncData", content=raw, headers={"Authorization": api.token})
    assert assert_envelope(resp)["records"] == 2
    resp = await api.get("getItem", **FAST_PULL)
    assert b'"Price":1234567890.123456789' in resp.content
    assert b'"Price":98765432109876543210.5' in resp.content
    body = exact(resp)
    assert [(r["Price"], r["ReorderLevel"]) for r in body["data"]] == \
        [(Decimal("1234567890.123456789"), Decimal("0.000000001")), (Decimal("98765432109876543210.5"), None)]
    assert body["data"] == await walk_pages(api, "getItem", 1)


# --- documents -----------------------------------------------------------------------------------------

def invoice(n: int, day: str) -> dict[str, Any]:
    lines = [{"RefNumber": ref, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "Quantity": qty,
              "UnitPrice": 125_000, "Amount": qty * 125_000, "Discount": 0, "TaxRate": 10,
              "TaxAmount": qty * 12_500, "TotalAmount": qty * 137_500} for ref, qty in ((1, 2), (2, n + 1))]
    return {"VoucherId": f"INV-{n:03d}", "VoucherDate": day, "VoucherNumber": f"HD{n:04d}",
            "CustomerCode": "KH1",
            "TotalQuantity": sum(x["Quantity"] for x in lines),
            "TotalNetAmount": sum(x["Amount"] for x in lines), "TotalDiscountAmount": 0,
            "TotalTaxAmount": sum(x["TaxAmount"] for x in lines),
            "TotalAmount": sum(x["TotalAmount"] for x in lines), "detail": lines}


async def test_a_streamed_voucher_pull_returns_documents_with_their_lines(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "STREAM_CHUNK_DOCUMENTS", 2)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main store"}]),
    ):
        assert_envelope(await api.sync(form, data))
    docs = [invoice(n, "2026-03-15" if n < 3 else "2026-03-16") for n in range(5)]
    body = assert_envelope(await api.post("SyncVoucher", {"form": "setSaleInvoice", "data": docs}))
    assert body["result"]["inserted"] == 5

    got = await pull(api, "getSaleInvoice", **FAST_PULL)
    assert got["records"] == 5 and "next_cursor" not in got
    assert got["data"] == [{**d, "Currency": "VND", "ExchangeRate": 1, "Status": "1"} for d in docs]
    assert [len(d["detail"]) for d in got["data"]] == [2] * 5
    assert got["data"] == await walk_pages(api, "getSaleInvoice", 2)

    # Header filters and ordering apply; a date filter takes an ISO date-time too.
    later = await pull(api, "getSaleInvoice", filters={"VoucherDate": {"gte": "2026-03-16T00:00:00+07:00"}},
                       order_by=["-VoucherId"])
    assert [d["VoucherId"] for d in later["data"]] == ["INV-004", "INV-003"]
    one = await pull(api, "getSaleInvoice", Id="INV-002", dateFrom="", dateTo="")
    assert [line["Quantity"] for line in one["data"][0]["detail"]] == [2, 3]


async def test_without_a_pool_the_whole_answer_is_read_at_once(
        api: Api, db: asyncpg.Connection, registry: Any, customers: list[str]) -> None:
    form, _ = registry.resolve("GetData", "getCustomer")
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    out = await query.get(db, form, tenant_id, {"form": "getCustomer", "fields": ["GroupCode1"],
                                                "filters": {"CustomerCode": {"prefix": "KH000"}}})
    assert isinstance(out, dict) and out["records"] == 100
    streamed = await pull(api, "getCustomer", fields=["GroupCode1"], filters={"CustomerCode": {"prefix": "KH000"}})
    assert msgspec.json.decode(msgspec.json.encode(out["data"])) == streamed["data"]
