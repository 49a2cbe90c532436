"""Fast's getStock and getBalance, and stock kept in base units, against figures worked out by hand.

Item IT1's base unit is PCS and one CTN is 24 PCS; IT2 has no base unit. Currency VND, 0 decimals.

Receipt    R1 2026-05-04  KH1  IT1 5 CTN x 240,000 = 1,200,000 into K1  -> K1 +120 PCS, cost 10,000 a PCS
Sale       S2 2026-05-20  KH2  IT1 10 PCS x 15,000 = 150,000 + VAT 15,000  -> K1 -10; Dr 131 165,000 (KH2)
Cash in    C2 2026-05-25  KH2  65,000 into 1111 from 131                    -> Cr 131 65,000 (KH2)
Receipt    R2 2026-06-01  KH1  IT1 120 PCS x 12,000 = 1,440,000 into K1 -> K1 +120 PCS
Sale       S1 2026-06-10  KH1  IT1 2 CTN x 300,000 = 600,000 + VAT 60,000   -> K1 -48; Dr 131 660,000 (KH1)
Transfer   T1 2026-06-12       IT1 1 CTN from K1 to K2                     -> K1 -24, K2 +24
Cash in    C1 2026-06-15  KH1  400,000 into 1111 from 131, pays part of S1  -> Cr 131 400,000 (KH1)

Stock of IT1 from 2026-06-01 to 2026-06-30, in PCS:
  K1: opening 120 - 10 = 110; in 120 (R2); out 48 (S1) + 24 (T1) = 72; closing 110 + 120 - 72 = 158
  K2: opening 0; in 24 (T1); out 0; closing 24
  At moving average cost: R1 1,200,000; S2 takes 10 x 10,000 = 100,000 (110 left, 1,100,000); R2 brings
  1,440,000 (230, 2,540,000); S1 takes 48 x 2,540,000 / 230 = 530,087 (182, 2,009,913); T1 moves
  24 x 2,009,913 / 182 = 265,043 to K2. So K1 is worth 1,744,870 (11,043.4810 a PCS) and K2 265,043
  (11,043.4583). At 2026-05-31: K1 110 PCS at 10,000 = 1,100,000.
Receivable (131) from 2026-06-01 to 2026-06-30:
  KH1: opening 0; debit 660,000; credit 400,000; closing 260,000
  KH2: opening 165,000 - 65,000 = 100,000; no movement; closing 100,000
  KH3: nothing at all, so not listed. (R1 and R2 credit the payable 331, not 131.)
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, assert_envelope

from gateway import posting
from gateway.forms import SYNC_VOUCHER, Registry
from gateway.reports import ReportForm

D = Decimal


class ReportApi(Api):
    async def voucher(self, form: str, *docs: dict) -> None:
        body = assert_envelope(await self.post("SyncVoucher", {"form": form, "data": list(docs)}))
        assert body["code"] == 200, body

    async def report(self, form: str, **params: Any) -> dict:
        resp = await self.get(form, **params)
        assert_envelope(resp)
        body = json.loads(resp.text, parse_float=Decimal)  # compare amounts exactly, never as binary floats
        assert body["code"] == 200 and body["records"] == len(body["data"]), body
        return body


def goods_line(ref: int, item: str, uom: str, qty: int, price: int, site: str = "K1") -> dict:
    return {"RefNumber": ref, "ItemCode": item, "Uom": uom, "SiteCode": site, "Quantity": qty,
            "UnitPrice": price, "Amount": qty * price}


def receipt(vid: str, date: str, *lines: dict) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": "KH1",
            "TotalQuantity": sum(x["Quantity"] for x in lines),
            "TotalAmount": sum(x["Amount"] for x in lines), "detail": list(lines)}


def sale(vid: str, date: str, customer: str, uom: str, qty: int, price: int) -> dict:
    amount = qty * price
    tax = amount // 10
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": customer, "TotalQuantity": qty,
            "TotalNetAmount": amount, "TotalDiscountAmount": 0, "TotalTaxAmount": tax,
            "TotalAmount": amount + tax,
            "detail": [{**goods_line(1, "IT1", uom, qty, price), "Discount": 0, "TaxRate": 10,
                        "TaxAmount": tax, "TotalAmount": amount + tax}]}


def cash_in(vid: str, date: str, customer: str, amount: int, **extra: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": customer, "DebitAccount": "1111",
            "TotalAmount": amount, "detail": [{"RefNumber": 1, "CreditAccount": "131", "Amount": amount}],
            **extra}


R1 = receipt("R1", "2026-05-04", goods_line(1, "IT1", "CTN", 5, 240_000))
R2 = receipt("R2", "2026-06-01", goods_line(1, "IT1", "PCS", 120, 12_000))
T1 = {"VoucherId": "T1", "VoucherDate": "2026-06-12", "TotalQuantity": 1,
      "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "CTN", "SiteCode": "K1", "ToSiteCode": "K2",
                  "Quantity": 1}]}


@pytest.fixture
async def shop(client: httpx.AsyncClient, token: str) -> ReportApi:
    api = ReportApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha Trading"},
                         {"CustomerCode": "KH2", "CustomerName": "Beta Foods"},
                         {"CustomerCode": "KH3", "CustomerName": "Gamma Retail"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH", "Uom": "PCS",
                      "StockTracked": 1},
                     {"ItemCode": "IT2", "ItemName": "Loose bolts", "ItemType": "HH", "StockTracked": 1}]),
        ("UnitConversion", [{"ItemCode": "IT1", "Uom": "CTN", "Coefficient": 24}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main"}, {"SiteCode": "K2", "SiteName": "Branch"}]),
        ("setAccount", [{"AccountCode": c, "AccountName": n, "AccountType": t} for c, n, t in (
            ("1111", "Cash", "asset"), ("131", "Receivables", "asset"), ("156", "Goods", "asset"),
            ("331", "Payables", "liability"), ("33311", "VAT output", "liability"),
            ("5111", "Revenue", "revenue"))]),
    ):
        body = assert_envelope(await api.sync(form, data))
        assert body["code"] == 200, (form, body)
    return api


@pytest.fixture
async def ledger(shop: ReportApi) -> ReportApi:
    await shop.voucher("setReceipt", R1, R2)
    await shop.voucher("setSaleInvoice", sale("S2", "2026-05-20", "KH2", "PCS", 10, 15_000),
                       sale("S1", "2026-06-10", "KH1", "CTN", 2, 300_000))
    await shop.voucher("setStockTransfer", T1)
    await shop.voucher("setCashReceipt", cash_in("C2", "2026-05-25", "KH2", 65_000),
                       cash_in("C1", "2026-06-15", "KH1", 400_000,
                               allocation=[{"InvoiceId": "S1", "Amount": 400_000}]))
    return shop


def stock_rows(body: dict) -> list[tuple]:
    return [(r["ItemCode"], r["SiteCode"], r.get("OpeningQuantity"), r.get("QuantityIn"),
             r.get("QuantityOut"), r["Quantity"], r["UnitCost"], r["Value"]) for r in body["data"]]


def balance_rows(body: dict) -> list[tuple]:
    return [(r["CustomerCode"], r["CustomerName"], r["Opening"], r["Debit"], r["Credit"], r["Closing"])
            for r in body["data"]]


async def test_a_receipt_in_cartons_is_stocked_in_pieces_at_the_cost_of_a_piece(
        shop: ReportApi, db: asyncpg.Connection) -> None:
    await shop.voucher("setReceipt", R1)
    body = await shop.report("getStock", Id="", dateFrom="", dateTo="")
    assert body["data"] == [{"ItemCode": "IT1", "ItemName": "Widget", "Uom": "PCS", "SiteCode": "K1",
                             "Quantity": 120, "UnitCost": 10_000, "Value": 1_200_000}]
    move = await db.fetchrow("SELECT qty_in, qty_out, value_in FROM stock_move WHERE voucher_id = 'R1'")
    assert tuple(move) == (D(120), D(0), D(1_200_000))


async def test_fast_shaped_get_stock_gives_opening_in_out_and_closing_in_base_units(
        ledger: ReportApi) -> None:
    body = await ledger.report("getStock", Id="IT1", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert stock_rows(body) == [("IT1", "K1", 110, 120, 72, 158, D("11043.4810"), 1_744_870),
                                ("IT1", "K2", 0, 24, 0, 24, D("11043.4583"), 265_043)]
    assert list(body["data"][0]) == ["ItemCode", "ItemName", "Uom", "SiteCode", "OpeningQuantity",
                                     "QuantityIn", "QuantityOut", "Quantity", "UnitCost", "Value"]
    assert (body["data"][0]["ItemName"], body["data"][0]["Uom"]) == ("Widget", "PCS")
    # Without dateFrom: on hand at dateTo only, at the cost known then.
    may = await ledger.report("getStock", Id="IT1", dateFrom="", dateTo="2026-05-31")
    assert stock_rows(may) == [("IT1", "K1", None, None, None, 110, 10_000, 1_100_000)]
    assert (await ledger.report("getStock", Id="NOPE", dateFrom="", dateTo=""))["data"] == []


async def test_get_stock_lists_a_site_emptied_within_the_period(ledger: ReportApi) -> None:
    # K2 receives 24 on 06-12; sending them back on 06-20 leaves it empty but it moved, so it is listed.
    back = {**T1["detail"][0], "SiteCode": "K2", "ToSiteCode": "K1"}
    await ledger.voucher("setStockTransfer", {**T1, "VoucherId": "T2", "VoucherDate": "2026-06-20",
                                              "detail": [back]})
    body = await ledger.report("getStock", Id="IT1", dateFrom="2026-06-01", dateTo="2026-06-30")
    # T2 takes the last 24 at K2, so all of its 265,043 goes back to K1: 182 there, 2,009,913.
    assert stock_rows(body) == [("IT1", "K1", 110, 144, 72, 182, D("11043.4780"), 2_009_913),
                                ("IT1", "K2", 0, 24, 24, 0, None, 0)]
    # On hand only: an empty site is not listed.
    assert [r["SiteCode"] for r in (await ledger.report("getStock", dateTo="2026-06-30"))["data"]] == ["K1"]


async def test_get_stock_defaults_to_today_while_get_stock_balance_counts_every_posted_move(
        ledger: ReportApi) -> None:
    later = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    await ledger.voucher("setReceipt", receipt("R9", later, goods_line(1, "IT1", "PCS", 2, 11_000)))
    now = await ledger.report("getStock", Id="", dateFrom="", dateTo="")
    assert [(r["SiteCode"], r["Quantity"]) for r in now["data"]] == [("K1", 158), ("K2", 24)]
    every = await ledger.report("getStockBalance")
    assert [(r["SiteCode"], r["Quantity"]) for r in every["data"]] == [("K1", 160), ("K2", 24)]


async def test_an_item_without_a_base_unit_moves_the_quantity_as_sent(shop: ReportApi) -> None:
    await shop.voucher("setReceipt", receipt("R5", "2026-05-04", goods_line(1, "IT2", "BOX", 3, 5_000)))
    body = await shop.report("getStock", Id="IT2", dateTo="2026-05-31")
    rows = [(r["Uom"], r["Quantity"], r["UnitCost"], r["Value"]) for r in body["data"]]
    assert rows == [(None, 3, 5_000, 15_000)]


async def test_a_line_whose_unit_has_no_live_conversion_fails_to_post_rather_than_move_a_wrong_quantity(
        shop: ReportApi, db: asyncpg.Connection, registry: Registry) -> None:
    await shop.voucher("setReceipt", R1)
    # The conversion goes after the receipt was posted; reposting the receipt must not move 5 "pieces".
    assert assert_envelope(await shop.sync("UnitConversion", [{"ItemCode": "IT1", "Uom": "CTN",
                                                              "action": "delete"}]))["code"] == 200
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    form, _ = registry.resolve(SYNC_VOUCHER, "setReceipt")
    with pytest.raises(asyncpg.NotNullViolationError):
        async with db.transaction():
            await posting.repost(db, form.posting, tenant_id, "setReceipt", ["R1"])
    assert await db.fetchval("SELECT qty_in FROM stock_move WHERE voucher_id = 'R1'") == 120


async def test_get_balance_per_customer_for_a_period(ledger: ReportApi) -> None:
    body = await ledger.report("getBalance", Id="", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert balance_rows(body) == [("KH1", "Alpha Trading", 0, 660_000, 400_000, 260_000),
                                  ("KH2", "Beta Foods", 100_000, 0, 0, 100_000)]
    one = await ledger.report("getBalance", Id="KH1", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert balance_rows(one) == [("KH1", "Alpha Trading", 0, 660_000, 400_000, 260_000)]
    assert list(one["data"][0]) == ["CustomerCode", "CustomerName", "Opening", "Debit", "Credit", "Closing"]
    # KH3 never had an entry: nothing to report, not a row of zeros.
    nothing = await ledger.report("getBalance", Id="KH3", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert (nothing["records"], nothing["data"]) == (0, [])


async def test_whole_amounts_are_sent_as_plain_digits(ledger: ReportApi) -> None:
    # Fast types amounts as Long: 660000 must not reach a client as 6.6E+5.
    resp = await ledger.get("getBalance", Id="KH1", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert '"Debit":660000,"Credit":400000,"Closing":260000}' in resp.text, resp.text
    stock = await ledger.get("getStock", Id="IT1", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert '"QuantityIn":120,' in stock.text and "E+" not in stock.text, stock.text


async def test_get_balance_with_empty_dates_runs_from_the_beginning_to_today(ledger: ReportApi) -> None:
    body = await ledger.report("getBalance", Id="", dateFrom="", dateTo="")
    assert balance_rows(body) == [("KH1", "Alpha Trading", 0, 660_000, 400_000, 260_000),
                                  ("KH2", "Beta Foods", 0, 165_000, 65_000, 100_000)]
    # Before the cash receipt of 06-15 KH1 owed the whole invoice.
    mid = await ledger.report("getBalance", Id="KH1", dateTo="2026-06-14")
    assert balance_rows(mid) == [("KH1", "Alpha Trading", 0, 660_000, 0, 660_000)]


async def test_get_balance_reads_the_tenants_receivable_account(ledger: ReportApi,
                                                                db: asyncpg.Connection) -> None:
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    await db.execute("INSERT INTO posting_account (tenant_id, role, account_code)"
                     " VALUES ($1, 'receivable', '1312') ON CONFLICT (tenant_id, role)"
                     " DO UPDATE SET account_code = EXCLUDED.account_code", tenant_id)
    # Entries on 131 no longer count; a new invoice posts to 1312 and is the only balance.
    assert (await ledger.report("getBalance", dateTo="2026-06-30"))["data"] == []
    await ledger.voucher("setSaleInvoice", sale("S3", "2026-06-20", "KH3", "PCS", 1, 15_000))
    body = await ledger.report("getBalance", dateFrom="2026-06-01", dateTo="2026-06-30")
    assert balance_rows(body) == [("KH3", "Gamma Retail", 0, 16_500, 0, 16_500)]


async def test_iso_date_times_keep_their_date_without_time_zone_conversion(ledger: ReportApi) -> None:
    plain = await ledger.report("getStock", Id="IT1", dateFrom="2026-06-01", dateTo="2026-06-30")
    for date_from, date_to in (("2026-06-01T00:00:00", "2026-06-30T00:00:00"),
                               ("2026-06-01T00:00:00.000Z", "2026-06-30T23:59:59.999Z"),
                               ("2026-06-01T00:00:00+07:00", "2026-06-30T08:00:00-05:00")):
        same = await ledger.report("getStock", Id="IT1", dateFrom=date_from, dateTo=date_to)
        assert same["data"] == plain["data"], (date_from, date_to)
    # 06-10 00:00 at UTC+7 is 06-09 in UTC; the date sent is 06-10, so S1 of 06-10 counts.
    tenth = await ledger.report("getBalance", Id="KH1", dateTo="2026-06-10T00:00:00+07:00")
    assert balance_rows(tenth) == [("KH1", "Alpha Trading", 0, 660_000, 0, 660_000)]
    # 06-09 20:00 at UTC-5 is 06-10 in UTC; the date sent is 06-09, before S1.
    ninth = await ledger.report("getBalance", Id="KH1", dateTo="2026-06-09T20:00:00-05:00")
    assert ninth["data"] == []


@pytest.mark.parametrize(("form", "params", "name"), [
    ("getStock", {"Id": "", "dateFrom": "", "dateTo": "", "warehouse": "K1"}, "warehouse"),
    ("getBalance", {"Id": "", "filters": {}}, "filters"),
    ("getStockBalance", {"Id": "IT1"}, "Id"),
    ("getStock", {"dateFrom": "10/06/2026"}, "dateFrom"),
    ("getStock", {"dateTo": "20260610"}, "dateTo"),
    ("getBalance", {"dateTo": "2026-06-31"}, "dateTo"),
    ("getBalance", {"dateFrom": "2026-06-10T25:00:00"}, "dateFrom"),
    ("getBalance", {"dateFrom": "2026-06-10T00:00:00+25:00"}, "dateFrom"),
    ("getBalance", {"dateTo": 20260610}, "dateTo"),
    ("getBalance", {"dateFrom": "2026-07-01", "dateTo": "2026-06-30"}, "dateFrom"),
    ("getBalance", {"Id": True}, "Id"),
    ("getBalance", {"Id": ["KH1"]}, "Id"),
])
async def test_bad_report_parameters_are_refused_naming_the_field(shop: ReportApi, form: str,
                                                                  params: dict, name: str) -> None:
    resp = await shop.get(form, **params)
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"]) == (400, 400) and f"'{name}'" in body["messages"], body




WRONG_KINDS: list[Any] = [["item"], {"eq": "x"}, True, 10**40, "a\u0000b", "x" * 5000, "9999-12-31", "0001-01-01"]


async def test_every_report_parameter_with_a_wrong_kind_of_value_gets_a_4xx_naming_it_never_a_5xx(
        ledger: ReportApi, registry: Registry) -> None:
    # The admins' reports (getAuditLog) refuse this user; tests/test_audit.py sends them these values as an admin.
    reports = [f for f in registry.forms if isinstance(f, ReportForm) and not f.admin_only]
    assert len(reports) >= 8
    for form in reports:
        for param in {*form.params, "group_by"}:
            for value in WRONG_KINDS:
                base = {"Id": "131"} if form.get_name == "getAccountLedger" else {}  # its Id is required
                resp = await ledger.get(form.get_name, **{**base, param: value})
                body = assert_envelope(resp)
                assert resp.status_code < 500, (form.get_name, param, value, body)
                if body["code"] != 200:
                    assert body["code"] == 400 and len(body["messages"]) < 500, (form.get_name, param, body)
                    assert body.get("field", "").lower() == param.lower(), (form.get_name, param, value, body)


async def test_sales_summary_groups_are_read_in_any_case_and_a_list_is_refused(ledger: ReportApi) -> None:
    by_item = await ledger.report("getSalesSummary", group_by="ITEM")
    assert by_item["group_by"] == "item" and [r["Key"] for r in by_item["data"]] == ["IT1"]
    assert (await ledger.report("getSalesSummary", group_by=None))["group_by"] == "period"
    resp = await ledger.get("getSalesSummary", group_by=["item"])
    body = assert_envelope(resp)
    assert (resp.status_code, body["code"], body["field"]) == (400, 400, "group_by"), body


async def test_receivables_at_the_last_day_of_the_calendar_count_the_days_overdue(ledger: ReportApi) -> None:
    # 9999-12-31 reaches PostgreSQL as infinity, which cannot be subtracted from a date.
    body = await ledger.report("getReceivables", dateTo="9999-12-31", include_paid=True)
    invoices = {i["VoucherId"]: i for row in body["data"] for i in row["Invoices"]}
    assert invoices["S2"]["DaysOverdue"] == (dt.date(9999, 12, 31) - dt.date(2026, 5, 20)).days
    assert body["data"][0]["Over90"] > 0


async def test_an_account_ledger_takes_the_account_code_as_a_number_too(ledger: ReportApi) -> None:
    as_text = await ledger.report("getAccountLedger", Id="131")
    assert as_text["data"] and await ledger.report("getAccountLedger", Id=131) == as_text
