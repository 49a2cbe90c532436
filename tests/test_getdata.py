"""GetData for catalogs: filters, fields, ordering, keyset paging and incremental pulls."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import asyncpg
import pytest
from conftest import Api, assert_envelope

from gateway.db import QUERIES
from gateway.query import MAX_FIELDS, MAX_IN_VALUES, parse_date


def cust(code: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"CustomerCode": code, "CustomerName": name, **extra}


@pytest.fixture
async def people(api: Api) -> None:
    resp = await api.sync("setCustomer", [
        cust("KH001", "Alpha Trading", GroupCode1="RETAIL", Status="1", SuplierYN=1),
        cust("KH002", "beta foods", GroupCode1="WHOLESALE", Status="1"),
        cust("KH003", "Gamma 100%_off", GroupCode1="RETAIL", Status="0"),
        cust("KX004", "Delta", Status="1"),
        cust("KX005", "Alphabet", GroupCode1="WHOLESALE", Status="1", EmployeeYN=1),
    ])
    assert resp.status_code == 200


async def codes(api: Api, **params: Any) -> list[str]:
    body = assert_envelope(await api.get("getCustomer", **params))
    return [r["CustomerCode"] for r in body["data"]]


async def test_get_returns_catalog_spelling_and_fast_envelope(api: Api, people: None) -> None:
    body = assert_envelope(await api.get("getCustomer", Id="", dateFrom="", dateTo=""))
    # Fast's request shape gets every row: no paging field a Fast client would not know.
    assert body["records"] == 5 and "next_cursor" not in body
    first = body["data"][0]
    assert first["CustomerCode"] == "KH001" and first["CustomerName"] == "Alpha Trading"
    assert first["SuplierYN"] == 1 and first["Status"] == "1"


async def test_id_selects_one_record(api: Api, people: None) -> None:
    assert await codes(api, Id="KH002") == ["KH002"]
    assert await codes(api, Id="NOPE") == []


async def test_filters_equality_in_list_prefix_contains_and_ranges(api: Api, people: None) -> None:
    assert await codes(api, filters={"GroupCode1": "RETAIL"}) == ["KH001", "KH003"]
    assert await codes(api, filters={"groupcode1": {"eq": "RETAIL"}, "Status": "1"}) == ["KH001"]
    assert await codes(api, filters={"GroupCode1": {"in": ["RETAIL", "WHOLESALE"]}}) == \
        ["KH001", "KH002", "KH003", "KX005"]
    assert await codes(api, filters={"CustomerCode": {"prefix": "KX"}}) == ["KX004", "KX005"]
    assert await codes(api, filters={"CustomerName": {"contains": "ALPHA"}}) == ["KH001", "KX005"]
    # LIKE wildcards in the value are matched literally.
    assert await codes(api, filters={"CustomerName": {"contains": "100%_"}}) == ["KH003"]
    assert await codes(api, filters={"CustomerName": {"contains": "%"}}) == ["KH003"]
    assert await codes(api, filters={"CustomerCode": {"gte": "KH002", "lt": "KX005"}}) == ["KH002", "KH003", "KX004"]
    assert await codes(api, filters={"SuplierYN": {"gt": 0}}) == ["KH001"]
    assert await codes(api, filters={"GroupCode1": None}) == ["KX004"]
    assert await codes(api, filters={"GroupCode1": {"ne": None}, "Status": {"ne": "1"}}) == ["KH003"]


async def test_field_selection_always_includes_the_key(api: Api, people: None) -> None:
    body = assert_envelope(await api.get("getCustomer", fields=["customername"], Id="KH001"))
    assert body["data"] == [{"CustomerCode": "KH001", "CustomerName": "Alpha Trading"}]


async def test_ordering_by_declared_fields(api: Api, people: None) -> None:
    assert await codes(api, order_by=["-CustomerCode"]) == ["KX005", "KX004", "KH003", "KH002", "KH001"]
    # NULL group sorts last ascending; ties broken by the key.
    assert await codes(api, order_by=["GroupCode1"]) == ["KH001", "KH003", "KH002", "KX005", "KX004"]
    assert await codes(api, order_by=["-GroupCode1", "-CustomerCode"]) == \
        ["KX004", "KX005", "KH002", "KH003", "KH001"]


@pytest.mark.parametrize("order_by", [[], ["GroupCode1"], ["-GroupCode1"], ["-Status", "CustomerName"],
                                      ["-CustomerCode"]])
async def test_keyset_paging_visits_every_row_once_in_order(api: Api, people: None, order_by: list[str]) -> None:
    expected = await codes(api, order_by=order_by)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        body = assert_envelope(await api.get("getCustomer", order_by=order_by, limit=2, cursor=cursor))
        seen += [r["CustomerCode"] for r in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected and len(expected) == 5


async def test_unknown_names_get_400_naming_the_field(api: Api, people: None) -> None:
    cases = [
        ({"filters": {"Colour": "red"}}, "Colour"),
        ({"filters": {"CustomerName; DROP TABLE customer": "x"}}, "CustomerName; DROP TABLE customer"),
        ({"fields": ["CustomerCode", "Secret"]}, "Secret"),
        ({"order_by": ["-Nope"]}, "Nope"),
        ({"filters": {"CustomerName": {"regex": ".*"}}}, "CustomerName"),
        ({"filters": {"SuplierYN": {"prefix": "1"}}}, "SuplierYN"),
        ({"filters": {"SuplierYN": {"gt": "one"}}}, "SuplierYN"),
        ({"filters": {"GroupCode1": {"in": []}}}, "GroupCode1"),
        ({"limit": 10_001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"dateFrom": "2024-13-01"}, "dateFrom"),
        ({"dateTo": "2024-03-10T24:00:00"}, "dateTo"),
        ({"filters": {"CustomerName": {"eq": "x"}}, "dateFrom": "10/03/2024"}, "dateFrom"),
        ({"pageSize": 3}, "pagesize"),
    ]
    for params, name in cases:
        resp = await api.get("getCustomer", **params)
        body = assert_envelope(resp)
        assert resp.status_code == 400 and body["code"] == 400, params
        assert name in body["messages"], (params, body)


async def test_cursor_from_another_order_is_refused(api: Api, people: None) -> None:
    body = assert_envelope(await api.get("getCustomer", limit=2))
    resp = await api.get("getCustomer", limit=2, order_by=["CustomerName"], cursor=body["next_cursor"])
    assert resp.status_code == 400 and "cursor" in resp.json()["messages"]


async def test_date_range_filters_on_last_modified(api: Api, db: asyncpg.Connection, people: None) -> None:
    await db.execute("UPDATE customer SET updated_at = '2024-03-10T23:30:00Z' WHERE customer_code = 'KH001'")
    await db.execute("UPDATE customer SET updated_at = '2024-03-11T00:10:00Z' WHERE customer_code = 'KH002'")
    assert await codes(api, dateFrom="2024-03-10", dateTo="2024-03-10") == ["KH001"]
    assert await codes(api, dateFrom="2024-03-11", dateTo="2024-03-11") == ["KH002"]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert await codes(api, dateFrom=today) == ["KH003", "KX004", "KX005"]


async def test_since_pull_returns_upserts_and_tombstones_in_change_order(api: Api, people: None) -> None:
    first = assert_envelope(await api.get("getCustomer", since=0))
    assert [r["CustomerCode"] for r in first["data"]] == ["KH001", "KH002", "KH003", "KX004", "KX005"]
    assert all(r["Deleted"] is False for r in first["data"])
    cursor = first["next_since"]
    assert assert_envelope(await api.get("getCustomer", since=cursor))["records"] == 0

    await api.sync("setCustomer", [cust("KH002", "beta foods 2")])
    await api.sync("setCustomer", [{"CustomerCode": "KH001", "action": "delete"}, cust("KH006", "New")])
    body = assert_envelope(await api.get("getCustomer", since=cursor, limit=2))
    # Within one request upserts are written before deletes.
    assert [(r["CustomerCode"], r["Deleted"]) for r in body["data"]] == [("KH002", False), ("KH006", False)]
    assert body["more"] is True
    rest = assert_envelope(await api.get("getCustomer", since=body["next_since"], limit=2))
    assert rest["data"] == [{"CustomerCode": "KH001", "Deleted": True}]
    assert rest["more"] is False
    # A deleted record is gone from plain reads.
    assert "KH001" not in await codes(api)


async def test_since_pull_waits_for_a_transaction_that_commits_late(
        api: Api, db: asyncpg.Connection, db_url: str, people: None) -> None:
    """A change stamped earlier but committed later must not be skipped by a puller's cursor."""
    cursor = assert_envelope(await api.get("getCustomer", since=0))["next_since"]
    slow = await asyncpg.connect(db_url)
    try:
        tx = slow.transaction()
        await tx.start()
        # The slow writer takes the tenant's gate, then its transaction id, and writes its change first (as
        # every write does)...
        await slow.execute(QUERIES["reference_gate_shared"],
                           await slow.fetchval("SELECT id FROM tenant WHERE code = 'acme'"))
        number = await slow.fetchval("SELECT nextval('change_seq')")
        await slow.execute("UPDATE customer SET customer_name = 'slow', change_seq = $1,"
                           " updated_at = now() WHERE customer_code = 'KH003'", number)
        await slow.execute("INSERT INTO change_log (id, tenant_id, tbl, keys)"
                           " SELECT $1, tenant_id, 'customer', '[[\"KH003\"]]' FROM customer"
                           " WHERE customer_code = 'KH003'", number)
        # ...then a fast writer commits a later change.
        await api.sync("setCustomer", [cust("KX004", "fast")])
        body = assert_envelope(await api.get("getCustomer", since=cursor))
        # The pull stops below the in-flight transaction: it must not hand out a cursor past it.
        assert body["data"] == []
        assert body["next_since"] == cursor
        await tx.commit()
    finally:
        await slow.close()
    body = assert_envelope(await api.get("getCustomer", since=cursor))
    assert sorted(r["CustomerCode"] for r in body["data"]) == ["KH003", "KX004"]


async def test_paging_visits_every_row_exactly_once_while_others_write(api: Api, client: Any, token: str) -> None:
    initial = [cust(f"P{i:05d}", f"Name {i}") for i in range(0, 3000, 2)]
    assert (await api.sync("setCustomer", initial)).status_code == 200
    expected = {r["CustomerCode"] for r in initial}
    stop = asyncio.Event()

    async def writer(n: int) -> int:
        other = Api(client, token)
        rounds = 0
        while not stop.is_set():
            # New keys between existing ones and updates of existing ones, from several clients at once.
            batch = [cust(f"P{i:05d}", f"New {rounds}") for i in range(1 + 2 * n, 3000, 16)]
            batch += [cust(f"P{i:05d}", f"Upd {rounds}") for i in range(n * 2, 3000, 40)]
            assert (await other.sync("setCustomer", batch)).status_code == 200
            rounds += 1
            await asyncio.sleep(0)
        return rounds

    writers = [asyncio.create_task(writer(n)) for n in range(3)]
    seen: list[str] = []
    cursor = None
    try:
        while True:
            body = assert_envelope(await api.get("getCustomer", limit=97, cursor=cursor, fields=["CustomerCode"]))
            seen += [r["CustomerCode"] for r in body["data"]]
            cursor = body["next_cursor"]
            await asyncio.sleep(0.002)
            if cursor is None:
                break
    finally:
        stop.set()
        rounds = await asyncio.gather(*writers)
    assert min(rounds) >= 1
    assert len(seen) == len(set(seen)), "a row came back twice"
    assert expected <= set(seen), "a row that existed throughout was skipped"
    assert seen == sorted(seen)


async def test_day_filters_use_utc_days_whatever_the_server_time_zone(
        app: Any, api: Api, db: asyncpg.Connection, people: None) -> None:
    name = await db.fetchval("SELECT current_database()")
    await db.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Ho_Chi_Minh'")
    await app.state.gateway.pool.expire_connections()  # new connections pick up the database's zone
    await db.execute("UPDATE customer SET updated_at = '2024-03-10T20:30:00Z' WHERE customer_code = 'KH001'")
    # 20:30 UTC is already 03:30 the next day in Ho Chi Minh City; the answer must not change with the
    # server's zone, nor from the first request on a pooled connection to the next.
    for _ in range(3):
        assert await codes(api, dateFrom="2024-03-10", dateTo="2024-03-10") == ["KH001"]


async def test_since_pull_returns_a_record_changed_many_times_once_at_its_latest_change(api: Api) -> None:
    cursor = assert_envelope(await api.get("getCustomer", since=0))["next_since"]
    await api.sync("setCustomer", [cust("A1", "v1"), cust("A2", "v1")])
    await api.sync("setCustomer", [cust("A1", "v2")])
    await api.sync("setCustomer", [cust("A3", "v1")])
    await api.sync("setCustomer", [cust("A1", "v3")])
    body = assert_envelope(await api.get("getCustomer", since=cursor, fields=["CustomerName"]))
    assert [(r["CustomerCode"], r["CustomerName"]) for r in body["data"]] == \
        [("A2", "v1"), ("A3", "v1"), ("A1", "v3")]


async def test_since_pull_pages_through_one_large_write(api: Api) -> None:
    await api.sync("setCustomer", [cust(f"B{i}", "x") for i in range(7)])
    seen: list[str] = []
    since: Any = 0
    for _ in range(10):
        body = assert_envelope(await api.get("getCustomer", since=since, limit=3))
        seen += [r["CustomerCode"] for r in body["data"]]
        since = body["next_since"]
        if not body["more"]:
            break
    assert seen == [f"B{i}" for i in range(7)]
    assert assert_envelope(await api.get("getCustomer", since=since))["records"] == 0


async def test_a_puller_keeping_its_cursor_ends_with_the_stored_state_while_others_write(
        api: Api, client: Any, token: str, db: asyncpg.Connection) -> None:
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        other = Api(client, token)
        rounds = 0
        while not stop.is_set() or rounds < 3:
            batch = [cust(f"W{i:03d}", f"w{n} r{rounds}") for i in range(n, 120, 3)]
            batch += [{"CustomerCode": f"W{i:03d}", "action": "delete"} for i in range(rounds % 5, 120, 17)]
            assert (await other.sync("setCustomer", batch, mode="partial")).status_code == 200
            rounds += 1
            await asyncio.sleep(0)

    replica: dict[str, str] = {}
    since: Any = 0

    async def pull_once() -> bool:
        nonlocal since
        body = assert_envelope(await api.get("getCustomer", since=since, limit=50, fields=["CustomerName"]))
        for r in body["data"]:
            if r["Deleted"]:
                replica.pop(r["CustomerCode"], None)
            else:
                replica[r["CustomerCode"]] = r["CustomerName"]
        since = body["next_since"]
        return body["more"]

    writers = [asyncio.create_task(writer(n)) for n in range(3)]
    for _ in range(30):
        await pull_once()
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.gather(*writers)
    while await pull_once():
        pass
    stored = {r["customer_code"]: r["customer_name"]
              for r in await db.fetch("SELECT customer_code, customer_name FROM customer WHERE NOT deleted")}
    assert replica == stored and stored


@pytest.mark.parametrize("text", [
    "2026-06-10", "2026-06-10T00:00:00", "2026-06-10T00:00:00.000", "2026-06-10T00:00:00Z",
    "2026-06-10T00:00:00+07:00", "2026-06-10T23:59:59.1234567-05:00", "2026-06-10 08:30",
    "2026-06-10T08:30+0700",
])
def test_parse_date_keeps_the_date_part_as_written(text: str) -> None:
    assert parse_date(text) == dt.date(2026, 6, 10)


@pytest.mark.parametrize("value", [
    "2024-13-01", "2026-02-30", "20260610", "2026-W24-3", "10/06/2026", "2026-06-10T", "2026-06-10T24:00:00",
    "2026-06-10T10:60", "2026-06-10T00:00:00+24:00", "2026-06-10x", "\uff12\uff10\uff12\uff16-06-10",
    20260610,
])
def test_parse_date_refuses_anything_else(value: object) -> None:
    with pytest.raises(ValueError):
        parse_date(value)


def test_parse_date_reads_no_value_as_no_date() -> None:
    assert parse_date(None) is None and parse_date("") is None


async def test_filter_values_outside_their_column_type_get_400_naming_the_field(api: Api, people: None) -> None:
    """Each would otherwise reach PostgreSQL (or the driver) and fail there, after the request was accepted."""
    cases = [
        ({"SuplierYN": 99999}, "SuplierYN", "smallint"),
        ({"SuplierYN": {"in": [1, -40000]}}, "SuplierYN", "smallint"),
        ({"SuplierYN": {"gt": 2**31}}, "SuplierYN", "smallint"),
        ({"SuplierYN": {"ne": 2**63}}, "SuplierYN", "smallint"),
        ({"CustomerName": "a\u0000"}, "CustomerName", "NUL"),
        ({"CustomerName": {"prefix": "\u0000"}}, "CustomerName", "NUL"),
        ({"CustomerCode": {"in": ["KH001", "x\u0000"]}}, "CustomerCode", "NUL"),
        ({"CustomerName": {"contains": "x" * 5000}}, "CustomerName", "longer than"),
    ]
    for filters, name, words in cases:
        resp = await api.get("getCustomer", filters=filters)
        body = assert_envelope(resp)
        assert (resp.status_code, body["code"], body.get("field")) == (400, 400, name), (filters, body)
        assert words in body["messages"] and len(body["messages"]) < 300, (filters, body)
    resp = await api.get("getCustomer", Id="KH001\u0000")
    assert (resp.status_code, resp.json()["field"]) == (400, "CustomerCode")


@pytest.mark.parametrize("value", ["1e1000000", "-1e1000000", "1e-1000000", "NaN", "Infinity", "-inf", "sNaN",
                                   "1" * 101, "0." + "1" * 101])
async def test_a_number_filter_must_be_finite_and_of_bounded_digits(api: Api, value: str) -> None:
    # Sent as a JSON number where JSON can write it, else as text: both reach the same check.
    raw = value if value[0].isdigit() or value[0] == "-" and value[1].isdigit() else f'"{value}"'
    resp = await api.client.post("/api/GetData", content=f'{{"form":"getItem","filters":{{"Price":{{"gt":{raw}}}}}}}',
                                 headers={"Authorization": api.token})
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"], body.get("field")) == (400, 400, "Price"), body
    assert len(body["messages"]) < 300


async def test_a_number_filter_of_many_digits_within_the_bound_is_compared_exactly(api: Api) -> None:
    assert (await api.sync("setItem", [{"ItemCode": "IT1", "ItemName": "W", "ItemType": "HH", "Price": "12.5"}])
            ).status_code == 200
    just_below = "12.4" + "9" * 90
    body = assert_envelope(await api.get("getItem", filters={"Price": {"gt": just_below}}))
    assert [r["ItemCode"] for r in body["data"]] == ["IT1"]
    body = assert_envelope(await api.get("getItem", filters={"Price": {"gt": "1" + "0" * 99}}))
    assert body["data"] == []


async def test_in_lists_fields_order_by_and_conditions_are_bounded(api: Api, people: None) -> None:
    at_most = ["KH001", *(f"K{i}" for i in range(MAX_IN_VALUES - 1))]
    assert await codes(api, filters={"CustomerCode": {"in": at_most}}) == ["KH001"]
    # Field names match in any case, so one field can be named in hundreds of spellings.
    spellings = {"".join(letters) + "Name": {"eq": "x"}
                 for letters in itertools.product(*((c.lower(), c.upper()) for c in "Customer"))}
    within = dict(itertools.islice(spellings.items(), MAX_FIELDS))
    assert await codes(api, filters=within) == []
    cases = [
        ({"filters": {"CustomerCode": {"in": [*at_most, "KH002"]}}}, "CustomerCode", MAX_IN_VALUES),
        ({"fields": ["CustomerName"] * (MAX_FIELDS + 1)}, "fields", MAX_FIELDS),
        ({"order_by": ["CustomerName"] * (MAX_FIELDS + 1)}, "order_by", MAX_FIELDS),
        ({"filters": spellings}, "filters", MAX_FIELDS),
    ]
    for params, name, bound in cases:
        resp = await api.get("getCustomer", **params)
        body = assert_envelope(resp)
        assert (resp.status_code, body.get("field")) == (400, name), (name, body)
        assert f"{bound:,}".replace(",", "") in body["messages"] and len(body["messages"]) < 300, body


@pytest.mark.parametrize("since", ["18446744073709551616.1.1", "1.9223372036854775808.1", "1.1.9223372036854775808",
                                   "99999999999999999999.1.1", "1.2.3\n", "1.2", -1, [0]])
async def test_a_since_position_out_of_range_gets_400(api: Api, since: Any) -> None:
    resp = await api.get("getCustomer", since=since)
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"], body.get("field")) == (400, 400, "since"), body


async def test_the_largest_since_position_is_read(api: Api) -> None:
    body = assert_envelope(await api.get("getCustomer", since="18446744073709551615.9223372036854775807.1"))
    assert body["code"] == 200 and body["data"] == []


async def test_an_error_quotes_a_huge_value_cut_short(api: Api) -> None:
    resp = await api.get("getCustomer", dateFrom="9" * 100_000, filters={"x" * 100_000: 1})
    assert assert_envelope(resp)["code"] == 400 and len(resp.content) < 2_000, resp.content[:300]


WRONG_KINDS: list[Any] = [[], ["x"], {}, {"eq": "x"}, True, 10**40, -1, "\u0000", "x" * 5000, "9999-12-31", ""]


@pytest.mark.parametrize("form", ["getCustomer", "getSaleInvoice"])
async def test_every_option_with_a_wrong_kind_of_value_gets_a_400_naming_a_field_never_a_5xx(api: Api, form: str) -> None:
    for option in ("Id", "dateFrom", "dateTo", "filters", "fields", "order_by", "limit", "cursor", "since"):
        for value in WRONG_KINDS:
            resp = await api.get(form, **{option: value})
            body = assert_envelope(resp)
            assert resp.status_code < 500, (option, value, body)
            if body["code"] != 200:
                assert body["code"] == 400 and len(body["messages"]) < 500, (option, value, body)
                # The option, or the name inside it that is wrong (a filter's field, say).
                assert body.get("field"), (option, value, body)
