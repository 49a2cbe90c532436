"""Every field of a voucher and of a master record, sent with each kind of wrong value a client may send:
the answer is never a 5xx, and a refused request writes nothing."""

from __future__ import annotations

import copy
from typing import Any

import asyncpg
import pytest
from conftest import assert_envelope
from test_vouchers import VoucherApi, invoice, tables, vapi  # noqa: F401  (vapi is a fixture)

WRONG: list[Any] = [None, "", [], {}, True, "x" * 5000, -1, "1e999999", 1e308, "2026-13-45", "2026-02-30T10:00:00",
                    1.5, "١٢٣", {"nested": [1, 2]}, "\u0000", 10**40]


def _paths(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [(k,) for k in doc if k != "detail"]
    out += [("detail", 0, k) for k in doc["detail"][0]]
    return out


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize("path", _paths(invoice("INV-1")), ids=lambda p: "/".join(map(str, p)))
async def test_a_wrong_value_in_any_voucher_field_is_never_a_5xx(vapi: VoucherApi,  # noqa: F811
                                                                 db: asyncpg.Connection, path: tuple) -> None:
    before = await tables(db)
    for value in WRONG:
        resp = await vapi.voucher("setSaleInvoice", [_set(invoice("INV-1"), path, value)])
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
