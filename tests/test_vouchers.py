"""SyncVoucher: documents replaced whole, checks that leave the tables unchanged, GetData with lines."""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from conftest import Api, assert_envelope


class VoucherApi(Api):
    async def voucher(self, form: str, data: Any, **options: Any) -> httpx.Response:
        return await self.post("SyncVoucher", {"form": form, "data": data, **options})


@pytest.fixture
async def vapi(client: httpx.AsyncClient, token: str) -> VoucherApi:
    api = VoucherApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0},
                         {"CurrencyCode": "USD", "CurrencyName": "Dollar", "DecimalPlaces": 2}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"}]),
        ("setSupplier", [{"SupplierCode": "NCC1", "SupplierName": "Acme Supplies"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"},
                     {"ItemCode": "IT2", "ItemName": "Gadget", "ItemType": "HH"}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main store"}]),
        ("setJob", [{"JobCode": "J1", "JobName": "Project"}]),
        ("setTaxCode", [{"TaxCode": "VAT10", "TaxName": "VAT 10%", "TaxRate": 10}]),
        ("setAccount", [{"AccountCode": "131", "AccountName": "Receivables", "AccountType": "asset"},
                        {"AccountCode": "511", "AccountName": "Revenue", "AccountType": "revenue"}]),
    ):
        assert (await api.sync(form, data)).status_code == 200, form
    return api


def line(ref: int, item: str = "IT1", qty: int = 2, price: int = 100_000, rate: int = 10, **extra: Any) -> dict:
    amount = qty * price
    tax = amount * rate // 100
    return {"RefNumber": ref, "ItemCode": item, "Uom": "PCS", "SiteCode": "K1", "Quantity": qty,
            "UnitPrice": price, "Amount": amount, "Discount": 0, "TaxRate": rate, "TaxAmount": tax,
            "TotalAmount": amount + tax, **extra}


def invoice(vid: str, *lines: dict, **header: Any) -> dict:
    lines = lines or (line(1), line(2, "IT2", 1, 50_000))
    doc = {"VoucherId": vid, "VoucherDate": "2026-03-15", "VoucherNumber": vid[-12:], "CustomerCode": "KH1",
           "TotalQuantity": sum(x["Quantity"] for x in lines),
           "TotalNetAmount": sum(x["Amount"] for x in lines),
           "TotalDiscountAmount": sum(x["Discount"] for x in lines),
           "TotalTaxAmount": sum(x["TaxAmount"] for x in lines),
           "TotalAmount": sum(x["TotalAmount"] for x in lines), "detail": list(lines)}
    doc.update(header)
    return doc


async def tables(db: asyncpg.Connection) -> Any:
    return (
        [tuple(r) for r in await db.fetch("SELECT * FROM voucher ORDER BY form, voucher_id")],
        [tuple(r) for r in await db.fetch("SELECT * FROM voucher_line ORDER BY form, voucher_id, line_no")],
    )


async def test_sale_invoice_round_trip_with_its_lines(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    doc = invoice("INV-0001")
    body = assert_envelope(await vapi.voucher("setSaleInvoice", [doc]))
    assert body["result"]["inserted"] == 1 and body["records"] == 1
    got = assert_envelope(await vapi.get("getSaleInvoice", Id="INV-0001"))
    # Back as sent, with the header's defaults filled in.
    assert got["data"] == [{**doc, "Currency": "VND", "ExchangeRate": 1, "Status": "1"}]
    lines = await db.fetch("SELECT line_no, item_code, quantity, total_amount FROM voucher_line ORDER BY line_no")
    assert [tuple(r) for r in lines] == [(1, "IT1", Decimal(2), Decimal(220_000)), (2, "IT2", Decimal(1), Decimal(55_000))]
    header = await db.fetchrow("SELECT partner_code, total_amount, voucher_date::text FROM voucher")
    assert tuple(header) == ("KH1", Decimal(275_000), "2026-03-15")


async def test_the_english_alias_reaches_the_same_form(vapi: VoucherApi) -> None:
    assert (await vapi.voucher("setSalesInvoice", [invoice("INV-1")])).status_code == 200
    got = assert_envelope(await vapi.get("getSaleInvoice", Id="INV-1"))
    assert got["records"] == 1


async def test_a_voucher_is_replaced_whole_and_leaves_no_orphan_lines(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    await vapi.voucher("setSaleInvoice", [invoice("INV-1", line(1), line(2), line(3))])
    assert await db.fetchval("SELECT count(*) FROM voucher_line") == 3
    body = assert_envelope(await vapi.voucher("setSaleInvoice", [invoice("INV-1", line(7, "IT2", 5))]))
    assert body["result"]["updated"] == 1
    rows = await db.fetch("SELECT line_no, item_code, quantity FROM voucher_line")
    assert [tuple(r) for r in rows] == [(7, "IT2", Decimal(5))]
    got = assert_envelope(await vapi.get("getSaleInvoice", Id="INV-1"))["data"][0]
    assert [x["RefNumber"] for x in got["detail"]] == [7]
    # The same document again changes nothing, not even its change stamp.
    before = await tables(db)
    body = assert_envelope(await vapi.voucher("setSaleInvoice", [invoice("INV-1", line(7, "IT2", 5))]))
    assert body["result"]["unchanged"] == 1
    assert await tables(db) == before


async def test_status_0_cancels_the_voucher_and_pullers_see_a_tombstone(vapi: VoucherApi,
                                                                        db: asyncpg.Connection) -> None:
    await vapi.voucher("setSaleInvoice", [invoice("INV-1"), invoice("INV-2")])
    body = assert_envelope(await vapi.voucher("setSaleInvoice", [{"VoucherId": "INV-1", "Status": "0"}]))
    assert body["result"]["deleted"] == 1
    assert await db.fetchval("SELECT count(*) FROM voucher_line WHERE voucher_id = 'INV-1'") == 0
    assert await db.fetchval("SELECT deleted FROM voucher WHERE voucher_id = 'INV-1'") is True
    listed = assert_envelope(await vapi.get("getSaleInvoice"))
    assert [d["VoucherId"] for d in listed["data"]] == ["INV-2"]
    pulled = assert_envelope(await vapi.get("getSaleInvoice", since=0))
    assert [(d["VoucherId"], d["Deleted"]) for d in pulled["data"]] == [("INV-2", False), ("INV-1", True)]
    assert pulled["data"][0]["detail"][0]["ItemCode"] == "IT1"


def _bad(doc: dict, path: list, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


BAD_VOUCHERS = [
    ("unknown customer", ["CustomerCode"], "NOPE", "/CustomerCode", "NOPE"),
    ("unknown item", ["detail", 1, "ItemCode"], "IT9", "/detail/1/ItemCode", "IT9"),
    ("unknown site", ["detail", 0, "SiteCode"], "K9", "/detail/0/SiteCode", "K9"),
    ("unknown job", ["detail", 0, "JobCode"], "J9", "/detail/0/JobCode", "J9"),
    ("unknown tax code", ["detail", 0, "TaxCode"], "VAT99", "/detail/0/TaxCode", "VAT99"),
    ("unknown currency", ["Currency"], "EUR", "/Currency", "EUR"),
    ("total not the sum", ["TotalAmount"], 1, "/TotalAmount", "TotalAmount"),
    ("quantity total not the sum", ["TotalQuantity"], 4, "/TotalQuantity", "TotalQuantity"),
    ("duplicate line number", ["detail", 1, "RefNumber"], 1, "/detail/1/RefNumber", "RefNumber"),
    ("negative quantity", ["detail", 0, "Quantity"], -2, "/detail/0/Quantity", "minimum"),
    ("negative price", ["detail", 0, "UnitPrice"], -1, "/detail/0/UnitPrice", "minimum"),
    ("bad date", ["VoucherDate"], "2026-02-30", "/VoucherDate", "date"),
    ("no lines", ["detail"], [], "/detail", ""),
    ("quantity not a number", ["detail", 0, "Quantity"], "two", "/detail/0/Quantity", "two"),
]


@pytest.mark.parametrize("label,path,value,pointer,text", BAD_VOUCHERS, ids=[b[0] for b in BAD_VOUCHERS])
async def test_a_failed_check_reports_the_voucher_and_writes_nothing(
        vapi: VoucherApi, db: asyncpg.Connection, label: str, path: list, value: Any, pointer: str,
        text: str) -> None:
    await vapi.voucher("setSaleInvoice", [invoice("INV-OLD")])
    before = await tables(db)
    bad = _bad(invoice("INV-2"), path, value)
    resp = await vapi.voucher("setSaleInvoice", [invoice("INV-1"), bad, invoice("INV-OLD", line(1))])
    body = assert_envelope(resp)
    assert resp.status_code == 200 and body["code"] == 601, body
    errors = [e for e in body["errors"] if e["path"] == pointer]
    assert errors and errors[0]["index"] == 1 and errors[0]["key"] == "INV-2", body["errors"]
    assert text in errors[0]["message"]
    assert await tables(db) == before


async def test_a_voucher_dated_in_the_locked_period_is_refused(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    await vapi.voucher("setSaleInvoice", [invoice("INV-1")])
    await db.execute("UPDATE tenant SET locked_until = '2026-03-31'")
    before = await tables(db)
    moved_out = invoice("INV-1", VoucherDate="2026-04-02")  # moving a locked voucher out is changing it too
    for doc in (invoice("INV-2"), invoice("INV-1", line(1)), moved_out, {"VoucherId": "INV-1", "Status": "0"}):
        body = assert_envelope(await vapi.voucher("setSaleInvoice", [doc]))
        assert body["code"] == 601 and "locked" in body["errors"][0]["message"], doc
    assert await tables(db) == before
    assert (await vapi.voucher("setSaleInvoice", [invoice("INV-3", VoucherDate="2026-04-01")])).status_code == 200


async def test_partial_mode_writes_the_good_vouchers(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    resp = await vapi.voucher("setSaleInvoice", [invoice("INV-1"), invoice("INV-2", CustomerCode="NOPE")],
                              mode="partial")
    body = assert_envelope(resp)
    assert body["result"]["inserted"] == 1 and body["result"]["failed"] == 1
    assert [r["voucher_id"] for r in await db.fetch("SELECT voucher_id FROM voucher")] == ["INV-1"]


async def test_totals_are_exact_in_the_currencys_decimals(vapi: VoucherApi) -> None:
    lines = [line(1, qty=1, price=0, rate=0), line(2, qty=1, price=0, rate=0)]
    lines[0].update(Amount=Decimal("5.00"), TotalAmount=Decimal("5.00"))
    lines[1].update(Amount=Decimal("5.01"), TotalAmount=Decimal("5.01"))
    ok = invoice("USD-1", *lines, Currency="USD", ExchangeRate=25_000, TotalNetAmount=Decimal("10.01"),
                 TotalAmount=Decimal("10.01"))
    resp = await vapi.client.post("/api/SyncVoucher", headers={"Authorization": vapi.token},
                                  content=_json({"form": "setSaleInvoice", "data": [ok]}))
    assert assert_envelope(resp)["result"]["inserted"] == 1
    off = dict(ok, VoucherId="USD-2", TotalAmount=Decimal("10.02"))
    resp = await vapi.client.post("/api/SyncVoucher", headers={"Authorization": vapi.token},
                                  content=_json({"form": "setSaleInvoice", "data": [off]}))
    assert assert_envelope(resp)["errors"][0]["path"] == "/TotalAmount"
    # A cent's fraction is not a USD amount (tests/test_line_checks.py checks every amount field).
    finer = copy.deepcopy(dict(ok, VoucherId="USD-3"))
    finer["detail"][0].update(Amount=Decimal("5.004"), TotalAmount=Decimal("5.004"))
    resp = await vapi.client.post("/api/SyncVoucher", headers={"Authorization": vapi.token},
                                  content=_json({"form": "setSaleInvoice", "data": [finer]}))
    assert "/detail/0/Amount" in {e["path"] for e in assert_envelope(resp)["errors"]}


def _json(value: Any) -> bytes:
    """JSON text with decimals written exactly (no binary float on the way)."""
    return msgspec.json.Encoder(decimal_format="number").encode(value)


async def test_purchase_invoice_accepts_either_partner_catalog_and_checks_the_tax_total(
        vapi: VoucherApi, db: asyncpg.Connection) -> None:
    def purchase(vid: str, supplier: str, tax_total: int) -> dict:
        return {"VoucherId": vid, "VoucherDate": "2026-03-01", "SupplierCode": supplier, "TotalQuantity": 3,
                "TotalNetAmount": 300, "TotalTaxAmount": tax_total, "TotalAmount": 300 + tax_total,
                "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "Quantity": 3,
                            "UnitPrice": 100, "Amount": 300}],
                "tax": [{"VatInvoiceNumber": "0001234", "VatInvoiceDate": "2026-03-01", "TotalNetAmount": 300,
                         "TaxRate": "10", "TaxAmount": 30}]}

    body = assert_envelope(await vapi.voucher("setPurchaseInvoice", [purchase("P1", "NCC1", 30),
                                                                      purchase("P2", "KH1", 30)]))
    assert body["result"]["inserted"] == 2
    body = assert_envelope(await vapi.voucher("setPurchaseInvoice", [purchase("P3", "NCC1", 31)]))
    assert body["errors"][0]["path"] == "/TotalTaxAmount"
    got = assert_envelope(await vapi.get("getPurchaseInvoice", Id="P1"))["data"][0]
    assert got["tax"][0]["VatInvoiceNumber"] == "0001234"


async def test_journal_debits_must_equal_credits(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    def journal(vid: str, credit: int) -> dict:
        return {"VoucherId": vid, "VoucherDate": "2026-03-31", "detail": [
            {"RefNumber": 1, "AccountCode": "131", "Debit": 500, "CustomerCode": "KH1"},
            {"RefNumber": 2, "AccountCode": "511", "Credit": credit}]}

    assert assert_envelope(await vapi.voucher("setJournalVoucher", [journal("JV1", 500)]))["records"] == 1
    body = assert_envelope(await vapi.voucher("setJournalVoucher", [journal("JV2", 400)]))
    assert body["code"] == 601 and "debits" in body["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE voucher_id = 'JV2'") == 0
    rows = await db.fetch("SELECT account_code, debit, credit FROM voucher_line ORDER BY line_no")
    assert [tuple(r) for r in rows] == [("131", Decimal(500), None), ("511", None, Decimal(500))]


async def test_a_voucher_form_on_syncdata_is_a_400(vapi: VoucherApi) -> None:
    resp = await vapi.sync("setSaleInvoice", [invoice("INV-1")])
    assert resp.status_code == 400 and "/api/SyncVoucher" in resp.json()["messages"]


async def test_concurrent_overlapping_syncs_end_consistent_without_deadlock(
        vapi: VoucherApi, client: httpx.AsyncClient, token: str, db: asyncpg.Connection) -> None:
    async def sender(n: int) -> list[int]:
        api = VoucherApi(client, token)
        statuses = []
        for r in range(6):
            # Overlapping vouchers, in opposite orders, with a different number of lines each time.
            ids = [f"C-{i}" for i in range(8)]
            if n % 2:
                ids.reverse()
            docs = [invoice(v, *[line(k + 1, qty=n + 1) for k in range((n + r) % 3 + 1)]) for v in ids]
            resp = await api.voucher("setSaleInvoice", docs)
            statuses.append(resp.status_code)
        return statuses

    results = await asyncio.gather(*(sender(n) for n in range(4)))
    assert all(s == 200 for statuses in results for s in statuses), results
    # Every voucher's lines are exactly the lines of its stored document: no mix of two writers.
    vouchers = await db.fetch("SELECT voucher_id, document::text AS doc FROM voucher")
    assert len(vouchers) == 8
    for r in vouchers:
        stored = await db.fetch("SELECT line_no, quantity FROM voucher_line WHERE voucher_id = $1 ORDER BY line_no",
                                r["voucher_id"])
        expected = [(x["RefNumber"], Decimal(x["Quantity"])) for x in json.loads(r["doc"])["detail"]]
        assert [tuple(x) for x in stored] == expected


async def test_no_reader_ever_sees_half_a_voucher(vapi: VoucherApi, client: httpx.AsyncClient, token: str,
                                                  db_url: str) -> None:
    await vapi.voucher("setSaleInvoice", [invoice("INV-1", line(1))])
    stop = asyncio.Event()

    async def writer() -> int:
        api = VoucherApi(client, token)
        n = 0
        while not stop.is_set():
            lines = [line(k + 1) for k in range(1 if n % 2 else 3)]
            assert (await api.voucher("setSaleInvoice", [invoice("INV-1", *lines)])).status_code == 200
            n += 1
        return n

    task = asyncio.create_task(writer())
    reader = await asyncpg.connect(db_url)
    try:
        for _ in range(150):
            # One statement, one snapshot: the header's document and the stored lines always agree.
            doc_lines, stored = await reader.fetchrow(
                "SELECT jsonb_array_length(v.document->'detail'), (SELECT count(*) FROM voucher_line l"
                " WHERE l.tenant_id = v.tenant_id AND l.form = v.form AND l.voucher_id = v.voucher_id)"
                " FROM voucher v WHERE v.voucher_id = 'INV-1'")
            assert doc_lines == stored and stored in (1, 3)
            got = assert_envelope(await vapi.get("getSaleInvoice", Id="INV-1"))["data"][0]
            assert len(got["detail"]) in (1, 3) and got["TotalQuantity"] == 2 * len(got["detail"])
            await asyncio.sleep(0)
    finally:
        stop.set()
        writes = await task
        await reader.close()
    assert writes >= 2


async def test_the_server_numbers_vouchers_sent_without_a_number(vapi: VoucherApi, db: asyncpg.Connection) -> None:
    first = invoice("INV-A")
    first.pop("VoucherNumber")
    second = invoice("INV-B", VoucherNumber="")
    assert assert_envelope(await vapi.voucher("setSaleInvoice", [first, second]))["result"]["inserted"] == 2
    numbers = {r["voucher_id"]: r["voucher_number"] for r in await db.fetch("SELECT * FROM voucher")}
    assert numbers == {"INV-A": "000001", "INV-B": "000002"}
    got = assert_envelope(await vapi.get("getSaleInvoice", Id="INV-A"))["data"][0]
    assert got["VoucherNumber"] == "000001"
    # Sent again without a number, a stored voucher keeps its own: nothing changes.
    assert assert_envelope(await vapi.voucher("setSaleInvoice", [first]))["result"]["unchanged"] == 1
    # A given number is kept as sent; the counter goes on from where it was, per form.
    third = invoice("INV-C", VoucherNumber="HD-77")
    fourth = invoice("INV-D")
    fourth.pop("VoucherNumber")
    await vapi.voucher("setSaleInvoice", [third, fourth])
    numbers = {r["voucher_id"]: r["voucher_number"] for r in await db.fetch("SELECT * FROM voucher")}
    assert numbers["INV-C"] == "HD-77" and numbers["INV-D"] == "000003"
