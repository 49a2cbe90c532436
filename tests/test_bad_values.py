"""Every field of a voucher and of a master record, sent with each kind of wrong value a client may send:
the answer is never a 5xx, and a refused request writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from conftest import assert_envelope, replaced
from test_vouchers import VoucherApi, invoice, tables, vapi  # noqa: F401  (vapi is a fixture)

WRONG: list[Any] = [None, "", [], {}, True, "x" * 5000, -1, "1e999999", 1e308, "2026-13-45", "2026-02-30T10:00:00",
                    1.5, "١٢٣", {"nested": [1, 2]}, "\u0000", 10**40]


def _paths(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [(k,) for k in doc if k != "detail"]
    out += [("detail", 0, k) for k in doc["detail"][0]]
    return out


@pytest.mark.parametrize("path", _paths(invoice("INV-1")), ids=lambda p: "/".join(map(str, p)))
async def test_a_wrong_value_in_any_voucher_field_is_never_a_5xx(vapi: VoucherApi,  # noqa: F811
                                                                 db: asyncpg.Connection, path: tuple) -> None:
    before = await tables(db)
    for value in WRONG:
        resp = await vapi.voucher("setSaleInvoice", [replaced(invoice("INV-1"), path, value)])
        body = assert_envelope(resp)
        assert resp.status_code < 500, (path, value, body)
        if body["code"] != 200:
            assert await tables(db) == before, (path, value)
        else:  # accepted as a spelling of the right value (or an optional field left out): written once
            await vapi.voucher("setSaleInvoice", [{"VoucherId": "INV-1", "Status": "0"}])
            before = await tables(db)


@pytest.mark.parametrize("field", ["CustomerCode", "CustomerName", "Status", "SuplierYN", "Email", "PhoneNumber"])
async def test_a_wrong_value_in_a_master_field_is_never_a_5xx(vapi: VoucherApi, db: asyncpg.Connection,  # noqa: F811
                                                              field: str) -> None:
    for value in WRONG:
        record = {"CustomerCode": "KHX", "CustomerName": "n", field: value}
        resp = await vapi.sync("setCustomer", [record])
        body = assert_envelope(resp)
        assert resp.status_code < 500, (field, value, body)
        if body["code"] != 200:
            assert await db.fetchval("SELECT count(*) FROM customer WHERE customer_code = 'KHX'") == 0
        else:
            await vapi.sync("setCustomer", [{"CustomerCode": "KHX", "action": "delete"}])
            await db.execute("DELETE FROM customer WHERE customer_code = 'KHX'")


@pytest.mark.parametrize(("path", "value"), [
    (("detail", 0, "RefNumber"), 3_000_000_000),  # a line number is stored as an integer (32 bits)
    (("detail", 0, "RefNumber"), 2**63),
    (("detail", 0, "Quantity"), 1e30),
    (("TotalAmount",), 10**40),
], ids=["RefNumber-2^31", "RefNumber-2^63", "Quantity-1e30", "TotalAmount-1e40"])
async def test_a_number_no_column_holds_is_refused_naming_its_path(vapi: VoucherApi,  # noqa: F811
                                                                   db: asyncpg.Connection, path: tuple,
                                                                   value: Any) -> None:
    before = await tables(db)
    resp = await vapi.voucher("setSaleInvoice", [replaced(invoice("INV-1"), path, value)])
    body = assert_envelope(resp)
    pointer = "/" + "/".join(map(str, path))
    assert body["code"] == 601 and pointer in [e["path"] for e in body["errors"]], body
    assert await tables(db) == before


async def test_a_nul_character_anywhere_in_a_record_is_a_400_naming_its_place(vapi: VoucherApi,  # noqa: F811
                                                                               db: asyncpg.Connection) -> None:
    before = await tables(db), await db.fetchval("SELECT count(*) FROM change_log")
    cases = [
        ("SyncData", {"form": "setCustomer", "data": [{"CustomerCode": "K1", "CustomerName": "a\u0000b"}]},
         "/data/0/CustomerName"),
        ("SyncData", {"form": "setCustomer", "data": [{"CustomerCode": "K1", "Na\u0000me": "x"}]},
         "/data/0/Na\u0000me"),
        ("SyncVoucher", {"form": "setSaleInvoice", "data": [replaced(invoice("INV-1"), ["detail", 1, "ItemCode"],
                                                                 "IT\u00001")]}, "/data/0/detail/1/ItemCode"),
    ]
    for endpoint, body, path in cases:
        answer = assert_envelope(await vapi.post(endpoint, body))
        assert answer["code"] == 400 and path in answer["messages"] and "NUL" in answer["messages"], answer
    assert (await tables(db), await db.fetchval("SELECT count(*) FROM change_log")) == before
