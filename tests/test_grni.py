"""Goods receipts, the purchase invoices citing them, and goods received not invoiced (GRNI).

Hand-computed books (VND; the tenant's default accounts: inventory 156, payable 331, GRNI 3388, VAT input
1331, purchased services 6427):

Receipt   R1 2026-03-02 from KH1: IT1 10 x 100 (K1), SV1 1 x 500   -> Dr 156 1000 / Cr 3388 1000; stock IT1 K1 +10
                                                                     (1000); the service line posts nothing
Invoice   P1 2026-03-10 from KH1: 10 of R1 line 1 at 120, VAT 120  -> Dr 3388 1000, Dr 156 200, Dr 1331 120 /
                                                                     Cr 331 1320; stock value +200, quantity 10
An invoice at 90 instead                                            -> Dr 3388 900 / Cr 331 900, Dr 3388 100 /
                                                                     Cr 156 100; stock value -100
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import assert_envelope, plan_scans
from test_ledger import LedgerApi
from test_voucher_speed import WRITE_TABLES

from gateway import grni, posting, vouchers
from gateway.db import QUERIES, init_connection
from gateway.forms import SYNC_VOUCHER, Registry

D = Decimal


def rline(ref: int, item: str, qty: Any, price: Any, site: str = "K1", uom: str = "PCS") -> dict:
    return {"RefNumber": ref, "ItemCode": item, "Uom": uom, "SiteCode": site, "Quantity": qty, "UnitPrice": price,
            "Amount": D(str(qty)) * D(str(price))}


def receipt(vid: str, date: str, *lines: dict, customer: str = "KH1", **header: Any) -> dict:
    lines = lines or (rline(1, "IT1", 10, 100), rline(2, "SV1", 1, 500))
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": customer,
            "TotalQuantity": sum(D(str(x["Quantity"])) for x in lines), "TotalAmount": sum(x["Amount"] for x in lines),
            "detail": list(lines), **header}


def cites(line: dict, receipt_id: str | None, ref: int | None) -> dict:
    out = dict(line)
    if receipt_id is not None:
        out["ReceiptId"] = receipt_id
    if ref is not None:
        out["ReceiptRefNumber"] = ref
    return out


def invoice(vid: str, date: str, *lines: dict, supplier: str = "KH1", **header: Any) -> dict:
    lines = lines or (cites(rline(1, "IT1", 10, 120), "R1", 1),)
    net = sum(x["Amount"] for x in lines)
    tax = net / 10
    return {"VoucherId": vid, "VoucherDate": date, "SupplierCode": supplier,
            "TotalQuantity": sum(D(str(x["Quantity"])) for x in lines), "TotalNetAmount": net,
            "TotalTaxAmount": tax, "TotalAmount": net + tax, "detail": list(lines),
            "tax": [{"VatInvoiceNumber": vid, "VatInvoiceDate": date, "TotalNetAmount": net, "TaxRate": 10,
                     "TaxAmount": tax}], **header}


class GrniApi(LedgerApi):
    async def ok(self, form: str, docs: list[dict]) -> dict:
        body = await self.send(form, docs)
        assert body["code"] == 200, body
        return body

    async def refused(self, form: str, docs: list[dict]) -> list[dict]:
        body = await self.send(form, docs)
        assert body["code"] == 601, body
        return body["errors"]


@pytest.fixture
async def books(client: httpx.AsyncClient, token: str) -> GrniApi:
    api = GrniApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0},
                         {"CurrencyCode": "USD", "CurrencyName": "Dollar", "DecimalPlaces": 2}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha Supplies"},
                         {"CustomerCode": "KH2", "CustomerName": "Beta Trading"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH", "Uom": "PCS"},
                     {"ItemCode": "IT2", "ItemName": "Gadget", "ItemType": "HH", "Uom": "PCS"},
                     {"ItemCode": "SV1", "ItemName": "Freight", "ItemType": "DV", "StockTracked": 0}]),
        ("setUnitConversion", [{"ItemCode": "IT1", "Uom": "BOX", "Coefficient": 12}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main"}, {"SiteCode": "K2", "SiteName": "Branch"}]),
    ):
        assert assert_envelope(await api.sync(form, data))["code"] == 200, form
    await api.ok("setReceipt", [receipt("R1", "2026-03-02")])
    return api


@pytest.fixture
async def tenant(db: asyncpg.Connection) -> int:
    tenant_id: int = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    return tenant_id


async def entries(db: asyncpg.Connection, voucher_id: str) -> dict[str, tuple[Decimal, Decimal]]:
    """The voucher's ledger by account: (debits, credits)."""
    rows = await db.fetch("SELECT account_code, sum(debit) AS d, sum(credit) AS c FROM gl_entry WHERE voucher_id = $1"
                          " GROUP BY account_code", voucher_id)
    return {r["account_code"]: (r["d"], r["c"]) for r in rows}


async def balance(db: asyncpg.Connection, account: str, as_of: str = "9999-12-31") -> Decimal:
    """Credit positive: the liabilities' side."""
    value: Decimal = await db.fetchval("SELECT COALESCE(sum(credit - debit), 0) FROM gl_entry WHERE account_code = $1"
                                       " AND entry_date <= $2", account, dt.date.fromisoformat(as_of))
    return value


async def stock(api: GrniApi, date: str = "2026-12-31") -> dict[tuple[str, str], tuple[Any, Any]]:
    rows = (await api.report("getStockBalance", dateTo=date))["data"]
    return {(r["ItemCode"], r["SiteCode"]): (r["Quantity"], r["Value"]) for r in rows}


async def test_a_receipt_owes_goods_received_not_invoiced_and_its_service_line_posts_nothing(
        books: GrniApi, db: asyncpg.Connection) -> None:
    assert await entries(db, "R1") == {"156": (1000, 0), "3388": (0, 1000)}
    assert await balance(db, "331") == 0
    moves = await db.fetch("SELECT item_code, site_code, qty_in FROM stock_move WHERE voucher_id = 'R1'")
    assert [tuple(r) for r in moves] == [("IT1", "K1", 10)]
    assert (await stock(books))[("IT1", "K1")] == (10, 1000)


async def test_an_invoice_citing_the_receipt_relieves_it_and_stocks_nothing_again(
        books: GrniApi, db: asyncpg.Connection, tenant: int) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10")])
    assert await entries(db, "P1") == {"3388": (1000, 0), "156": (200, 0), "1331": (120, 0), "331": (0, 1320)}
    # The goods came in once, with the receipt; the invoice's dearer price (120 instead of 100) is a value-only
    # adjustment at the receipt line's site: same quantity, average cost 120.
    moves = await db.fetch("SELECT site_code, qty_in, qty_out, value_in FROM stock_move WHERE voucher_id = 'P1'")
    assert [tuple(r) for r in moves] == [("K1", 0, 0, 200)]
    assert (await stock(books))[("IT1", "K1")] == (10, 1200)
    assert await balance(db, "3388") == 0 == await grni.not_invoiced_value(db, tenant, dt.date(2026, 12, 31))
    assert await balance(db, "3388", "2026-03-09") == 1000
    assert await grni.not_invoiced_value(db, tenant, dt.date(2026, 3, 9)) == 1000
    # The payable holds the invoice and nothing else: the receipt no longer counts the goods a second time.
    assert await balance(db, "331") == 1320
    payables = (await books.report("getPayables", dateTo="2026-12-31"))["data"]
    assert [(r["PartnerCode"], r["Total"]) for r in payables] == [("KH1", 1320)]


async def test_a_cheaper_invoice_takes_the_difference_out_of_inventory(books: GrniApi, db: asyncpg.Connection) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10", cites(rline(1, "IT1", 10, 90), "R1", 1))])
    assert await entries(db, "P1") == {"3388": (1000, 0), "156": (0, 100), "1331": (90, 0), "331": (0, 990)}
    assert (await stock(books))[("IT1", "K1")] == (10, 900)
    assert await balance(db, "3388") == 0


async def test_partial_invoicing_and_over_invoicing(books: GrniApi, db: asyncpg.Connection, tenant: int) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10", cites(rline(1, "IT1", 4, 100), "R1", 1))])
    assert await entries(db, "P1") == {"3388": (400, 0), "1331": (40, 0), "331": (0, 440)}
    assert await balance(db, "3388") == 600 == await grni.not_invoiced_value(db, tenant, dt.date(2026, 12, 31))
    # Two invoices in one request for 4 each: 6 were open, the second one is refused.
    errors = await books.refused("setPurchaseInvoice", [
        invoice("P2", "2026-03-11", cites(rline(1, "IT1", 4, 100), "R1", 1)),
        invoice("P3", "2026-03-12", cites(rline(1, "IT1", 4, 100), "R1", 1))])
    assert [(e["key"], e["path"]) for e in errors] == [("P3", "/detail/0/Quantity")], errors
    assert "received 10, invoiced 4 by setPurchaseInvoice P1, 4 earlier in this request, open 2" in errors[0]["message"]
    await books.ok("setPurchaseInvoice", [invoice("P2", "2026-03-11", cites(rline(1, "IT1", 6, 100), "R1", 1))])
    errors = await books.refused("setPurchaseInvoice", [
        invoice("P3", "2026-03-12", cites(rline(1, "IT1", 1, 100), "R1", 1))])
    assert errors[0]["path"] == "/detail/0/Quantity"
    assert "invoiced 10 by setPurchaseInvoice P1, P2, open 0" in errors[0]["message"], errors
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE voucher_id = 'P3'") == 0
    assert await balance(db, "3388") == 0


async def test_an_invoice_must_cite_a_live_receipt_line_of_its_supplier_item_and_unit(
        books: GrniApi, db: asyncpg.Connection) -> None:
    await books.ok("setReceipt", [receipt("R2", "2026-03-03", rline(1, "IT1", 2, 1200, uom="BOX"), customer="KH2")])
    await books.ok("setReceipt", [receipt("RX", "2026-03-03")])
    await books.ok("setReceipt", [{"VoucherId": "RX", "Status": "0"}])
    cases = [
        ({}, cites(rline(1, "IT1", 1, 100), "NOPE", 1), "/detail/0/ReceiptId", "'NOPE' is not a live setReceipt"),
        ({}, cites(rline(1, "IT1", 1, 100), "RX", 1), "/detail/0/ReceiptId", "'RX' is not a live setReceipt"),
        ({}, cites(rline(1, "IT1", 1, 1200, uom="BOX"), "R2", 1), "/detail/0/ReceiptId",
         "received goods from 'KH2', not from SupplierCode 'KH1'"),
        ({}, cites(rline(1, "IT1", 1, 100), "R1", 7), "/detail/0/ReceiptRefNumber", "'R1' has no line 7"),
        ({}, cites(rline(1, "IT2", 1, 100), "R1", 1), "/detail/0/ItemCode", "is not the item of setReceipt 'R1' line 1"),
        ({"supplier": "KH2"}, cites(rline(1, "IT1", 12, 100), "R2", 1), "/detail/0/Uom",
         "Uom 'PCS' is not the unit of setReceipt 'R2' line 1 ('BOX')"),
        ({}, cites(rline(1, "IT1", 1, 100, site="K2"), "R1", 1), "/detail/0/SiteCode",
         "SiteCode 'K2' is not the site of setReceipt 'R1' line 1 ('K1')"),
        ({}, cites(rline(1, "SV1", 1, 500), "R1", 2), "/detail/0/ReceiptRefNumber", "whose stock is not tracked"),
        ({}, cites(rline(1, "IT1", 1, 100), "R1", None), "/detail/0/ReceiptRefNumber", "required with ReceiptId"),
        ({}, cites(rline(1, "IT1", 1, 100), None, 1), "/detail/0/ReceiptId", "required with ReceiptRefNumber"),
    ]
    for header, line, path, text in cases:
        errors = await books.refused("setPurchaseInvoice", [invoice("P9", "2026-03-10", line, **header)])
        assert any(e["path"] == path and text in e["message"] for e in errors), (path, errors)
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE form = 'setPurchaseInvoice'") == 0
    # The right unit, supplier and line: accepted, at the receipt's value of 2 BOX (2,400).
    await books.ok("setPurchaseInvoice", [invoice("P9", "2026-03-10", cites(rline(1, "IT1", 2, 1200, uom="BOX"), "R2", 1),
                                                  supplier="KH2")])
    assert await entries(db, "P9") == {"3388": (2400, 0), "1331": (240, 0), "331": (0, 2640)}


async def test_a_cited_receipt_keeps_what_is_invoiced_of_it(books: GrniApi, db: asyncpg.Connection) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10", cites(rline(1, "IT1", 6, 100), "R1", 1))])
    errors = await books.refused("setReceipt", [{"VoucherId": "R1", "Status": "0"}])
    assert errors[0]["path"] == "/Status" and "invoiced by setPurchaseInvoice P1" in errors[0]["message"]
    for doc, path in (
        (receipt("R1", "2026-03-02", rline(2, "SV1", 1, 500)), "/detail"),
        (receipt("R1", "2026-03-02", rline(1, "IT2", 10, 100)), "/detail/0/ItemCode"),
        (receipt("R1", "2026-03-02", rline(1, "IT1", 5, 100)), "/detail/0/Quantity"),
        (receipt("R1", "2026-03-02", rline(1, "IT1", 10, 100, site="K2")), "/detail/0/SiteCode"),
        (receipt("R1", "2026-03-02", customer="KH2"), "/CustomerCode"),
    ):
        errors = await books.refused("setReceipt", [doc])
        assert [e["path"] for e in errors] == [path], errors
    assert await entries(db, "R1") == {"156": (1000, 0), "3388": (0, 1000)}
    # More received than invoiced is a receipt the invoice still fits.
    await books.ok("setReceipt", [receipt("R1", "2026-03-02", rline(1, "IT1", 6, 100))])
    # Once the invoice goes, so does the guard.
    await books.ok("setPurchaseInvoice", [{"VoucherId": "P1", "Status": "0"}])
    await books.ok("setReceipt", [{"VoucherId": "R1", "Status": "0"}])
    assert await balance(db, "3388") == 0 and await balance(db, "156") == 0


async def test_replacing_an_invoice_frees_what_it_invoiced(books: GrniApi, db: asyncpg.Connection, tenant: int) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10")])
    assert len(await books.refused("setPurchaseInvoice", [
        invoice("P2", "2026-03-11", cites(rline(1, "IT1", 6, 120), "R1", 1))])) == 1
    # P1 sent again for 4 counts its new 4, not its stored 10 as well.
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10", cites(rline(1, "IT1", 4, 120), "R1", 1))])
    await books.ok("setPurchaseInvoice", [invoice("P2", "2026-03-11", cites(rline(1, "IT1", 6, 120), "R1", 1))])
    assert await entries(db, "P1") == {"3388": (400, 0), "156": (80, 0), "1331": (48, 0), "331": (0, 528)}
    assert await balance(db, "3388") == 0 == await grni.not_invoiced_value(db, tenant, dt.date(2026, 12, 31))
    assert (await stock(books))[("IT1", "K1")] == (10, 1200)


async def test_a_service_line_is_an_expense_and_moves_no_stock(books: GrniApi, db: asyncpg.Connection) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10", rline(1, "SV1", 1, 300),
                                                  rline(2, "IT2", 5, 40, site="K2"))])
    assert await entries(db, "P1") == {"6427": (300, 0), "156": (200, 0), "1331": (50, 0), "331": (0, 550)}
    moves = await db.fetch("SELECT item_code, site_code, qty_in, value_in FROM stock_move WHERE voucher_id = 'P1'")
    assert [tuple(r) for r in moves] == [("IT2", "K2", 5, 200)]


async def test_two_concurrent_invoices_cannot_both_invoice_the_same_goods(books: GrniApi,
                                                                          db: asyncpg.Connection) -> None:
    first, second = await asyncio.gather(
        books.send("setPurchaseInvoice", [invoice("P1", "2026-03-10", cites(rline(1, "IT1", 7, 100), "R1", 1))]),
        books.send("setPurchaseInvoice", [invoice("P2", "2026-03-10", cites(rline(1, "IT1", 7, 100), "R1", 1))]))
    assert sorted((first["code"], second["code"])) == [200, 601], (first, second)
    assert await db.fetchval("SELECT sum(quantity) FROM voucher_line WHERE receipt_id = 'R1'") == 7


async def test_grni_ties_to_its_account_and_the_report_lists_the_open_lines(books: GrniApi, db: asyncpg.Connection,
                                                                            tenant: int) -> None:
    # A USD receipt at 25,000 invoiced in part at 25,500: the relief is the receipt's value (base currency),
    # the rate difference adjusts inventory.
    await books.ok("setReceipt", [receipt("R2", "2026-04-01", rline(1, "IT2", 3, D("1.10"), site="K2"),
                                          Currency="USD", ExchangeRate=25000)])
    await books.ok("setPurchaseInvoice", [
        invoice("P1", "2026-04-10", cites(rline(1, "IT1", 4, 100), "R1", 1)),
        invoice("P2", "2026-05-10", cites(rline(1, "IT2", 1, D("1.10"), site="K2"), "R2", 1),
                Currency="USD", ExchangeRate=25500)])
    assert await entries(db, "R2") == {"156": (82500, 0), "3388": (0, 82500)}
    assert await entries(db, "P2") == {"3388": (27500, 0), "156": (550, 0), "1331": (2805, 0), "331": (0, 30855)}
    expected = {"2026-03-01": 0, "2026-03-31": 1000, "2026-04-05": 83500, "2026-04-30": 83100, "2026-05-31": 55600}
    for date, value in expected.items():
        as_of = dt.date.fromisoformat(date)
        assert await balance(db, "3388", date) == value == await grni.not_invoiced_value(db, tenant, as_of), date
    body = await books.report("getGoodsReceivedNotInvoiced", dateTo="2026-05-31")
    assert body["as_of"] == "2026-05-31" and body["records"] == 1
    (kh1,) = body["data"]
    assert (kh1["PartnerCode"], kh1["Value"]) == ("KH1", 55600)
    assert [(x["ReceiptId"], x["RefNumber"], x["QuantityReceived"], x["QuantityInvoiced"], x["QuantityOpen"],
             x["ValueOpen"], x["Invoices"]) for x in kh1["Lines"]] == [
        ("R1", 1, 10, 4, 6, 600, ["P1"]), ("R2", 1, 3, 1, 2, 55000, ["P2"])]
    # Before the invoices, the whole receipts were open.
    early = (await books.report("getGoodsReceivedNotInvoiced", dateTo="2026-04-05"))["data"]
    assert [x["QuantityInvoiced"] for x in early[0]["Lines"]] == [0, 0]
    # The payable holds the invoices only: their totals, in the base currency.
    assert await balance(db, "331") == 440 + 30855


async def test_an_invoiced_receipt_sent_again_carries_its_invoices_along(books: GrniApi, db: asyncpg.Connection,
                                                                         tenant: int) -> None:
    await books.ok("setPurchaseInvoice", [invoice("P1", "2026-03-10")])
    # The receipt's price corrected to 110: the invoice now relieves 1,100 and its price difference is 100.
    await books.ok("setReceipt", [receipt("R1", "2026-03-02", rline(1, "IT1", 10, 110), rline(2, "SV1", 1, 500))])
    assert await entries(db, "R1") == {"156": (1100, 0), "3388": (0, 1100)}
    assert await entries(db, "P1") == {"3388": (1100, 0), "156": (100, 0), "1331": (120, 0), "331": (0, 1320)}
    assert await balance(db, "3388") == 0 == await grni.not_invoiced_value(db, tenant, dt.date(2026, 12, 31))
    assert (await stock(books))[("IT1", "K1")] == (10, 1200)
    # 12 received at 100 (1,200), 10 of them invoiced: 1,000 relieved, 200 still owed for the other 2.
    await books.ok("setReceipt", [receipt("R1", "2026-03-02", rline(1, "IT1", 12, 100))])
    assert await entries(db, "P1") == {"3388": (1000, 0), "156": (200, 0), "1331": (120, 0), "331": (0, 1320)}
    assert await balance(db, "3388") == 200 == await grni.not_invoiced_value(db, tenant, dt.date(2026, 12, 31))
    assert (await stock(books))[("IT1", "K1")] == (12, 1400)


async def test_grni_statements_read_by_key_on_never_analysed_tables(books: GrniApi, db: asyncpg.Connection,
                                                                    tenant: int, registry: Registry) -> None:
    """The invoice's write (its relief looked up per citing line), the checks' look-ups and the report: lines
    are read by the key that cites them (the tenant checked on the few rows found), never all the tenant's lines
    or other tenants', whatever a never-analysed table's size is guessed."""
    await init_connection(db)
    for table in WRITE_TABLES:
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    await db.execute(
        "INSERT INTO voucher (tenant_id, form, voucher_id, voucher_date, partner_code, currency, exchange_rate,"
        " document, change_seq, updated_at) SELECT 1000 + v % 5, f, f || v, '2026-01-01', 'KH1', 'VND', 1, '{}', 0,"
        " now() FROM generate_series(1, 10000) v, unnest(ARRAY['setReceipt', 'setPurchaseInvoice']) f")
    await db.execute(
        "INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, site_code, quantity, amount,"
        " receipt_id, receipt_line) SELECT 1000 + v % 5, f, f || v, n, 'IT' || n, 'K1', 1, 1,"
        " CASE WHEN f = 'setPurchaseInvoice' THEN 'setReceipt' || v END, CASE WHEN f = 'setPurchaseInvoice' THEN n END"
        " FROM generate_series(1, 10000) v, generate_series(1, 5) n,"
        " unnest(ARRAY['setReceipt', 'setPurchaseInvoice']) f")
    await db.execute(
        "INSERT INTO item (tenant_id, item_code, item_name, item_type, stock_tracked, deleted, change_seq, updated_at)"
        " SELECT 1000 + i % 5, 'IT' || i, 'x', 'HH', 1, false, 0, now() FROM generate_series(1, 50000) i")
    form, _ = registry.resolve(SYNC_VOUCHER, "setPurchaseInvoice")
    docs = [invoice(f"P{i:03d}", "2026-03-10", cites(rline(1, "IT1", 1, 100), "R1", 1), Currency="VND",
                    ExchangeRate=1) for i in range(100)]
    batch = vouchers.prepare(form, json.loads(json.dumps(docs, default=str)))  # amounts as text, read exactly
    assert not batch.errors, batch.errors
    ids = sorted(batch.upserts)
    stored = [batch.upserts[k][1] for k in ids]
    statements = {
        "lines and postings": (vouchers.write_statement(form),
                               [form.name, *vouchers._batch_arrays(form, batch, ids, stored, set(ids))]),
        "repost": (form.posting.statement(posting.STORED_SOURCES), [form.name, ids]),
        "lock receipts": (QUERIES["grni_lock_receipts"], [["R1", "setReceipt7"]]),
        "receipt lines": (QUERIES["grni_receipt_lines"], [["R1", "setReceipt7"], [1, 2]]),
        "invoiced": (QUERIES["grni_invoiced"], [["R1", "setReceipt7"], ids]),
        "report": (QUERIES["grni_open_receipts"], [dt.date(2026, 12, 31)]),
    }
    for name, (sql, args) in statements.items():
        async with db.transaction():
            await db.execute(QUERIES["voucher_write_settings"])
            raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", tenant, *args)
        for scan in plan_scans(json.loads(raw) if isinstance(raw, str) else raw):
            table = scan["Relation Name"]
            where = f"{name}: {scan['Node Type']} on {table}"
            keyed = scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
            assert scan["Node Type"] != "Seq Scan" or table not in WRITE_TABLES, where
            if table == "voucher_line":
                assert "voucher_id" in keyed or "receipt_id" in keyed, where
            if table == "voucher" and name != "report":
                assert "voucher_id" in keyed, where
            if table == "voucher":
                assert "tenant_id" in keyed, where
            if table == "item":
                assert "item_code" in keyed, where


def _words(sql: str) -> str:
    """SQL with comments dropped and whitespace evened out, for comparing texts laid out differently."""
    text = " ".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return " ".join(text.replace("(", "( ").replace(")", " )").split())


def test_the_sub_ledger_statements_count_by_the_posting_formulas() -> None:
    """sql/queries.sql writes out the formulas the posting rules build from grni.py's fragments: what the
    sub-ledger counts stays what was posted."""
    fragments = [grni.base_round("l.amount * v.exchange_rate"),
                 grni.relief("pl.quantity", "l.quantity", "l.amount", "v.exchange_rate"),
                 grni.same_tenant("l.tenant_id"), grni.same_tenant("pl.tenant_id"), grni.STOCK_TRACKED,
                 f"l.form = '{grni.RECEIPT_FORM}'", f"pl.form = '{grni.INVOICE_FORM}'"]
    for name in ("grni_open_receipts",):
        for fragment in fragments:
            assert _words(fragment) in _words(QUERIES[name]), (name, fragment)
