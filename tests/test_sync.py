"""SyncData semantics: upsert counts, last occurrence wins, deletes, modes, dry run, and bad input.

Every kind of bad input gets a 4xx in the canonical envelope and leaves the tables exactly as they were.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, assert_envelope

from gateway import engine


def cust(code: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"CustomerCode": code, "CustomerName": name or f"Customer {code}", **extra}


async def snapshot(db: asyncpg.Connection) -> list[Any]:
    tables = [r["table_name"] for r in await db.fetch(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'change_seq'"
        " AND table_schema = 'public' ORDER BY 1")]
    return [(t, [tuple(r) for r in await db.fetch(f'SELECT * FROM "{t}" ORDER BY 1, 2')]) for t in tables]


@pytest.fixture
async def seeded(api: Api, db: asyncpg.Connection) -> list[Any]:
    resp = await api.sync("setCustomer", [cust("KH001", "Alpha"), cust("KH002", "Beta")])
    assert resp.status_code == 200
    return await snapshot(db)


async def test_counts_inserted_updated_unchanged_deleted(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [
        cust("KH001", "Alpha"),                      # unchanged
        cust("KH002", "Beta Ltd"),                   # updated
        cust("KH003", "Gamma"),                      # inserted
        {"CustomerCode": "KH004", "action": "delete"},  # unknown key: nothing to delete
    ])
    body = assert_envelope(resp)
    assert body["result"] == {"inserted": 1, "updated": 1, "unchanged": 2, "deleted": 0, "failed": 0,
                              "superseded": 0}
    assert body["records"] == 4
    resp = await api.sync("setCustomer", [{"customercode": "KH001", "ACTION": "delete"}])
    assert assert_envelope(resp)["result"]["deleted"] == 1
    rows = {r["customer_code"]: r for r in await db.fetch("SELECT * FROM customer")}
    assert rows["KH001"]["deleted"] is True and rows["KH002"]["customer_name"] == "Beta Ltd"
    assert "KH004" not in rows


async def test_unchanged_records_keep_their_change_stamp(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH001", "Alpha"), cust("KH002", "Beta")])
    assert assert_envelope(resp)["result"]["unchanged"] == 2
    assert await snapshot(db) == seeded


async def test_every_write_takes_a_new_change_sequence(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    before = {r["customer_code"]: r["change_seq"] for r in await db.fetch("SELECT * FROM customer")}
    await api.sync("setCustomer", [cust("KH002", "Beta 2")])
    await api.sync("setCustomer", [{"CustomerCode": "KH001", "action": "delete"}])
    after = {r["customer_code"]: r["change_seq"] for r in await db.fetch("SELECT * FROM customer")}
    assert after["KH002"] > max(before.values())
    assert after["KH001"] > after["KH002"]


async def test_repeated_key_last_occurrence_wins(api: Api, db: asyncpg.Connection) -> None:
    resp = await api.sync("setCustomer", [cust("KH001", "first"), cust("KH002"), cust("KH001", "last")])
    body = assert_envelope(resp)
    assert body["result"]["inserted"] == 2 and body["result"]["superseded"] == 1
    assert await db.fetchval("SELECT customer_name FROM customer WHERE customer_code = 'KH001'") == "last"


async def test_repeated_key_delete_then_upsert_keeps_the_record(api: Api, db: asyncpg.Connection,
                                                               seeded: Any) -> None:
    resp = await api.sync("setCustomer", [{"CustomerCode": "KH001", "action": "delete"}, cust("KH001", "Back")])
    assert assert_envelope(resp)["result"]["updated"] == 1
    row = await db.fetchrow("SELECT * FROM customer WHERE customer_code = 'KH001'")
    assert row["deleted"] is False and row["customer_name"] == "Back"


async def test_field_names_match_case_insensitively(api: Api, db: asyncpg.Connection) -> None:
    resp = await api.sync("setCustomer", [{"customercode": "KH9", "CUSTOMERNAME": "x", "status": "0"}])
    assert assert_envelope(resp)["result"]["inserted"] == 1
    got = assert_envelope(await api.get("getCustomer", Id="KH9"))["data"][0]
    assert got["CustomerCode"] == "KH9" and got["Status"] == "0"


async def test_numeric_status_is_stored_as_fast_text(api: Api, db: asyncpg.Connection) -> None:
    await api.sync("setCustomer", [cust("KH9", Status=0)])
    assert await db.fetchval("SELECT status FROM customer") == "0"


async def test_absent_optional_fields_take_defaults_and_replace_old_values(api: Api, db: asyncpg.Connection) -> None:
    await api.sync("setCustomer", [cust("KH1", Email="a@b.c", Status="0")])
    await api.sync("setCustomer", [cust("KH1")])
    row = await db.fetchrow("SELECT email, status FROM customer")
    assert row["email"] is None and row["status"] == "1"


async def test_atomic_mode_reports_every_error_and_writes_nothing(api: Api, db: asyncpg.Connection,
                                                                 seeded: Any) -> None:
    resp = await api.sync("setCustomer", [
        cust("KH010"),
        {"CustomerCode": "KH011"},                        # missing CustomerName
        cust("KH012", Email=42),                          # wrong type
        cust("KH013", Fax="9" * 33),                      # too long
        cust("KH001", "Alpha changed"),
    ])
    body = assert_envelope(resp)
    assert resp.status_code == 200 and body["code"] == 601 and body["records"] == 0
    assert body["result"]["failed"] == 3 and body["result"]["inserted"] == 0
    by_index = {e["index"]: e for e in body["errors"]}
    assert set(by_index) == {1, 2, 3}
    assert by_index[1]["key"] == "KH011" and "CustomerName" in by_index[1]["message"]
    assert by_index[2]["path"] == "/Email" and by_index[2]["key"] == "KH012"
    assert by_index[3]["path"] == "/Fax"
    assert await snapshot(db) == seeded


async def test_partial_mode_writes_valid_records_and_reports_bad_record_index(
        api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH010"), cust("KH011", Email=[]), cust("KH012")], mode="partial")
    body = assert_envelope(resp)
    assert resp.status_code == 200
    assert body["result"]["inserted"] == 2 and body["result"]["failed"] == 1
    assert [(e["index"], e["key"], e["path"]) for e in body["errors"]] == [(1, "KH011", "/Email")]
    codes = {r["customer_code"] for r in await db.fetch("SELECT customer_code FROM customer")}
    assert codes == {"KH001", "KH002", "KH010", "KH012"}


async def test_partial_mode_with_no_valid_record_is_601(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [{"CustomerCode": "X"}], mode="partial")
    assert assert_envelope(resp)["code"] == 601
    assert await snapshot(db) == seeded


async def test_partial_mode_invalid_last_occurrence_drops_the_earlier_one(
        api: Api, db: asyncpg.Connection) -> None:
    resp = await api.sync("setCustomer", [cust("KH1", "ok"), cust("KH1", Email=1), cust("KH2")], mode="partial")
    body = assert_envelope(resp)
    assert body["result"]["inserted"] == 1 and body["result"]["failed"] == 1
    assert [r["customer_code"] for r in await db.fetch("SELECT customer_code FROM customer")] == ["KH2"]


async def test_dry_run_reports_counts_and_writes_nothing(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH001", "Alpha"), cust("KH002", "B2"), cust("KH003"),
                                          {"CustomerCode": "KH001", "action": "delete"}], dry_run=True)
    body = assert_envelope(resp)
    assert body["dry_run"] is True
    assert body["result"]["inserted"] == 1 and body["result"]["updated"] == 1
    assert body["result"]["deleted"] == 1 and body["result"]["superseded"] == 1
    assert await snapshot(db) == seeded


async def test_dry_run_with_invalid_records_reports_them(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH003", Email=1)], dry_run=True)
    assert assert_envelope(resp)["errors"][0]["path"] == "/Email"
    assert await snapshot(db) == seeded


BAD_BODIES: list[tuple[str, bytes, int, int]] = [
    ("not json", b"{not json", 400, 400),
    ("empty body", b"", 400, 400),
    ("not an object", b'[{"form": "setCustomer"}]', 400, 400),
    ("no form", b'{"data": [{"CustomerCode": "A", "CustomerName": "a"}]}', 400, 400),
    ("form not a string", b'{"form": 3, "data": []}', 400, 400),
    ("unknown form", b'{"form": "setNothing", "data": [{"a": 1}]}', 200, 201),
    ("get form on SyncData", b'{"form": "getCustomer", "data": [{"a": 1}]}', 400, 400),
    ("empty data", b'{"form": "setCustomer", "data": []}', 200, 202),
    ("missing data", b'{"form": "setCustomer"}', 200, 202),
    ("data not a list", b'{"form": "setCustomer", "data": {"CustomerCode": "A"}}', 400, 400),
    ("bad mode", b'{"form": "setCustomer", "mode": "best", "data": [{"CustomerCode": "A", "CustomerName": "a"}]}',
     400, 400),
    ("bad dry_run", b'{"form": "setCustomer", "dry_run": "yes", "data": [{"CustomerCode": "A", "CustomerName": "a"}]}',
     400, 400),
    ("record not an object", b'{"form": "setCustomer", "data": ["KH001"]}', 200, 601),
    ("unknown field, strict", (b'{"form": "setCustomer", "strict": true,'
     b' "data": [{"CustomerCode": "A", "CustomerName": "a", "Colour": "red"}]}'), 200, 601),
    ("wrong type", b'{"form": "setCustomer", "data": [{"CustomerCode": true, "CustomerName": "a"}]}', 200, 601),
    ("number not a number", (b'{"form": "setItem", "data": [{"ItemCode": "A", "ItemName": "a", "ItemType": "HH",'
     b' "Price": "12,5"}]}'), 200, 601),
    ("date not a date", b'{"form": "setJob", "data": [{"JobCode": "A", "JobName": "a", "FromDate": "10/06/2026"}]}',
     200, 601),
    ("flag not a flag", (b'{"form": "setCustomer", "data": [{"CustomerCode": "A", "CustomerName": "a",'
     b' "SuplierYN": "yes"}]}'), 200, 601),
    ("null for a required field", b'{"form": "setCustomer", "data": [{"CustomerCode": "A", "CustomerName": null}]}',
     200, 601),
    ("missing required", b'{"form": "setCustomer", "data": [{"CustomerName": "a"}]}', 200, 601),
    ("over-long string", b'{"form": "setCustomer", "data": [{"CustomerCode": "' + b"A" * 33 + b'", "CustomerName": "a"}]}',
     200, 601),
    ("empty key", b'{"form": "setCustomer", "data": [{"CustomerCode": "", "CustomerName": "a"}]}', 200, 601),
    ("bad enum", b'{"form": "setCustomer", "data": [{"CustomerCode": "A", "CustomerName": "a", "Status": "7"}]}',
     200, 601),
    ("bad action", b'{"form": "setCustomer", "data": [{"CustomerCode": "A", "action": "purge"}]}', 200, 601),
    ("delete with unknown field, strict", (b'{"form": "setCustomer", "strict": true, "data": [{"CustomerCode": "A",'
     b' "Colour": "x", "action": "delete"}]}'), 200, 601),
    ("delete without key", b'{"form": "setCustomer", "data": [{"CustomerName": "A", "action": "delete"}]}',
     200, 601),
    ("unknown option", b'{"form": "setCustomer", "dryrun": true, "data": [{"CustomerCode": "A", "CustomerName": "a"}]}',
     400, 400),
]


@pytest.mark.parametrize("label,content,status,code", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, seeded: Any,
        label: str, content: bytes, status: int, code: int) -> None:
    resp = await client.post("/api/SyncData", content=content, headers={"Authorization": token})
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"]) == (status, code), body
    assert body["success"] is False
    if code == 601:
        assert body["errors"] and all({"index", "key", "path", "message"} <= set(e) for e in body["errors"])
    if code == 201:
        assert "setCustomer" in body["forms"]
    assert await snapshot(db) == seeded


async def test_too_many_records_is_413(app: Any, api: Api, db: asyncpg.Connection) -> None:
    limit = app.state.gateway.settings.max_records
    resp = await api.sync("setCustomer", [cust(f"K{i}") for i in range(limit + 1)])
    body = assert_envelope(resp)
    assert resp.status_code == 413 and body["code"] == 413
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def test_body_over_the_size_limit_is_413(client: httpx.AsyncClient, token: str, app: Any) -> None:
    limit = app.state.gateway.settings.max_body_bytes
    resp = await client.post("/api/SyncData", content=b" " * (limit + 1), headers={"Authorization": token})
    assert resp.status_code == 413 and assert_envelope(resp)["code"] == 413


async def test_amounts_are_exact_decimals_end_to_end(api: Api, client: httpx.AsyncClient, token: str,
                                                     db: asyncpg.Connection) -> None:
    """A number like 0.1 or 12345678901234567.89 must not pass through a binary float."""
    # Raw JSON text: a Python float in the test itself would already have lost the digits.
    raw = (b'{"form": "setItem", "data": ['
           b'{"ItemCode": "IT1", "ItemName": "x", "ItemType": "HH", "Price": 0.1},'
           b'{"ItemCode": "IT2", "ItemName": "y", "ItemType": "HH", "Price": 12345678901234567.89}]}')
    resp = await client.post("/api/SyncData", content=raw, headers={"Authorization": token})
    assert assert_envelope(resp)["result"]["inserted"] == 2
    prices = {r["item_code"]: r["price"] for r in await db.fetch("SELECT item_code, price FROM item")}
    assert prices == {"IT1": Decimal("0.1"), "IT2": Decimal("12345678901234567.89")}
    got = await api.get("getItem", Id="IT2")
    assert b'"Price":12345678901234567.89' in got.content


async def test_negative_amount_is_rejected_where_not_allowed(api: Api, db: asyncpg.Connection) -> None:
    resp = await api.sync("setItem", [{"ItemCode": "IT1", "ItemName": "x", "ItemType": "HH", "Price": -1}])
    body = assert_envelope(resp)
    assert body["code"] == 601 and body["errors"][0]["path"] == "/Price"
    assert await db.fetchval("SELECT count(*) FROM item") == 0


async def test_bad_date_is_rejected_with_its_path(api: Api, db: asyncpg.Connection) -> None:
    for bad in ("2024-02-30", "30/01/2024", "2024-1-5"):
        resp = await api.sync("setJob", [{"JobCode": "J1", "JobName": "x", "FromDate": bad}])
        body = assert_envelope(resp)
        assert body["code"] == 601 and body["errors"][0]["path"] == "/FromDate", bad
    assert await db.fetchval("SELECT count(*) FROM job") == 0


async def test_alias_form_names_reach_the_same_catalog(api: Api, db: asyncpg.Connection) -> None:
    assert (await api.sync("setCase", [{"JobCode": "J1", "JobName": "x"}])).status_code == 200
    got = assert_envelope(await api.get("getJob", Id="J1"))
    assert got["data"][0]["JobName"] == "x"


async def test_outcomes_on_request_say_what_happened_to_each_record(api: Api, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [
        cust("KH001", "Alpha"),                          # unchanged
        cust("KH003", "first"),                          # superseded by index 4
        {"CustomerCode": "KH002", "action": "delete"},   # deleted
        cust("KH004", Email=5),                          # failed
        cust("KH003", "Gamma"),                          # inserted
        {"CustomerCode": "KH999", "action": "delete"},   # unknown key: unchanged
    ], mode="partial", outcomes=True)
    body = assert_envelope(resp)
    assert [(o["index"], o["key"], o["status"]) for o in body["outcomes"]] == [
        (0, "KH001", "unchanged"), (1, "KH003", "superseded"), (2, "KH002", "deleted"),
        (3, "KH004", "failed"), (4, "KH003", "inserted"), (5, "KH999", "unchanged")]


async def test_outcomes_in_atomic_failure_say_nothing_was_written(api: Api, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH001", "changed"), cust("KH004", Email=5)], outcomes=True)
    body = assert_envelope(resp)
    assert [o["status"] for o in body["outcomes"]] == ["not_written", "failed"]


async def test_misspelt_request_option_is_refused_not_ignored(api: Api, db: asyncpg.Connection,
                                                              seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH005")], dryrun=True)
    body = assert_envelope(resp)
    assert resp.status_code == 400 and "dryrun" in body["messages"]
    assert await snapshot(db) == seeded


async def test_end_date_before_start_date_is_a_601(api: Api, db: asyncpg.Connection) -> None:
    resp = await api.sync("setJob", [{"JobCode": "J1", "JobName": "x", "FromDate": "2024-05-01",
                                      "ToDate": "2024-04-30"}])
    body = assert_envelope(resp)
    assert body["code"] == 601 and body["errors"][0]["path"] == "/ToDate" and body["errors"][0]["key"] == "J1"
    assert await db.fetchval("SELECT count(*) FROM job") == 0
    resp = await api.sync("setContract", [{"ContractCode": "C1", "ContractName": "x", "FromDate": "2024-05-01",
                                           "ToDate": "2024-05-01"}])
    assert assert_envelope(resp)["result"]["inserted"] == 1


async def test_delete_may_carry_the_whole_record(api: Api, db: asyncpg.Connection, seeded: Any) -> None:
    resp = await api.sync("setCustomer", [cust("KH001", "Alpha", Email="a@b.c", action="delete")])
    assert assert_envelope(resp)["result"]["deleted"] == 1
    # An unknown field is ignored with a warning; a strict request refuses it.
    resp = await api.sync("setCustomer", [cust("KH002", "Beta", Colour="red", action="delete")], strict=True)
    body = assert_envelope(resp)
    assert body["code"] == 601 and "Colour" in body["errors"][0]["message"]
    resp = await api.sync("setCustomer", [cust("KH002", "Beta", Colour="red", action="delete")])
    body = assert_envelope(resp)
    assert body["result"]["deleted"] == 1 and body["warnings"][0]["path"] == "/Colour"


async def test_composite_key_id_as_list_reaches_parts_holding_the_separator(api: Api) -> None:
    resp = await api.sync("UnitConversion", [{"ItemCode": "A|B", "Uom": "C", "Coefficient": 2}])
    assert assert_envelope(resp)["result"]["inserted"] == 1
    got = assert_envelope(await api.get("getUnitConversion", Id=["A|B", "C"]))
    assert [(r["ItemCode"], r["Uom"]) for r in got["data"]] == [("A|B", "C")]
    resp = await api.get("getUnitConversion", Id=["A|B"])
    assert resp.status_code == 400 and "ItemCode, Uom" in resp.json()["messages"]


async def test_a_dry_run_first_on_a_connection_leaves_it_able_to_write(app: Any, api: Api,
                                                                      db: asyncpg.Connection) -> None:
    pool = app.state.gateway.pool
    await pool.expire_connections()
    for dry_run in (True, False, True, False):
        resp = await api.sync("setCustomer", [cust("KH1", f"dry {dry_run}")], dry_run=dry_run)
        assert assert_envelope(resp)["records"] == 1
    assert await db.fetchval("SELECT customer_name FROM customer") == "dry False"


@pytest.mark.parametrize("outcomes", [False, True])
async def test_a_few_records_and_many_are_written_alike(api: Api, db: asyncpg.Connection,
                                                        monkeypatch: pytest.MonkeyPatch, outcomes: bool) -> None:
    """A small request goes as arrays in one statement, a large one through COPY: same rows, same counts."""
    def jobs(prefix: str) -> list[dict[str, Any]]:
        return [{"JobCode": f"{prefix}{i}", "JobName": f"Job {i}", "Status": i % 2, "FromDate": f"2026-01-0{i + 1}",
                 "ToDate": None, "Budget": "1234567.891", "Note": None if i else "first"} for i in range(3)]

    async def stored(prefix: str) -> list[tuple]:
        rows = await db.fetch("SELECT job_code, job_name, status, from_date, to_date, budget, note, deleted FROM job"
                              " WHERE job_code LIKE $1 ORDER BY job_code", prefix + "%")
        return [(r[0][1:], *tuple(r)[1:]) for r in rows]

    small = assert_envelope(await api.sync("setJob", jobs("A"), outcomes=outcomes))
    monkeypatch.setattr(engine, "SMALL_BATCH", 0)  # every batch through COPY now
    large = assert_envelope(await api.sync("setJob", jobs("B"), outcomes=outcomes))
    assert small["result"] == large["result"] == {**small["result"], "inserted": 3}
    assert await stored("A") == await stored("B") and len(await stored("A")) == 3
    again = assert_envelope(await api.sync("setJob", jobs("B")))  # unchanged, through COPY
    monkeypatch.setattr(engine, "SMALL_BATCH", 64)
    assert assert_envelope(await api.sync("setJob", jobs("A")))["result"] == again["result"]
    assert again["result"]["unchanged"] == 3


@pytest.mark.parametrize("price", [b"1e999999", b"1e-999999", b'"1e999999"', b'"1E+400000"'])
async def test_a_number_too_large_to_store_is_a_601_and_nothing_is_written(
        client: httpx.AsyncClient, token: str, db: asyncpg.Connection, price: bytes) -> None:
    body = (b'{"form": "setItem", "data": [{"ItemCode": "I1", "ItemName": "n", "ItemType": "HH"},'
            b' {"ItemCode": "I2", "ItemName": "n", "ItemType": "HH", "Price": ' + price + b'}]}')
    resp = await client.post("/api/SyncData", content=body, headers={"Authorization": token})
    answer = assert_envelope(resp)
    assert (resp.status_code, answer["code"]) == (200, 601)
    if b"-" in price:  # too small: PostgreSQL's numeric type refuses it when it is stored
        assert "cannot be stored" in answer["messages"]
    else:  # too large: above the bound every number field has (forms.NUMBER_LIMIT), named by its path
        assert [(e["index"], e["path"]) for e in answer["errors"]] == [(1, "/Price")]
        assert "maximum" in answer["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM item") == 0
