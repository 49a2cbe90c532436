"""Postings and reports, checked against a small ledger worked out by hand.

Purchases  P1 2026-01-10  NCC1  IT1 10 x 100 = 1000 at K1, VAT 100            -> Dr 156 1000, Dr 1331 100, Cr 331 1100
           P2 2026-01-20  NCC1  IT1 10 x 130 = 1300 at K1, VAT 130            -> Dr 156 1300, Dr 1331 130, Cr 331 1430
Sale       S1 2026-02-05  KH1   IT1 4 x 200 = 800 (VAT 80), SV1 1 x 500 (VAT 50), due 02-15
                                                     -> Dr 131 1430, Cr 5111 1300, Cr 33311 130; stock IT1 K1 -4
                                                        cost: 4 x 2300 / 20 = 460 -> Dr 632 460, Cr 156 460
Sale       S2 2026-03-01  KH2   USD at 25,000: IT1 1 x 10.00 (VAT 1.00), due 03-31
                                                     -> Dr 131 275000, Cr 5111 250000, Cr 33311 25000; stock IT1 K1 -1
                                                        cost: 1 x 1840 / 16 = 115 -> Dr 632 115, Cr 156 115
Transfer   T1 2026-03-02  IT1 5 from K1 to K2           cost 5 x 1725 / 15 = 575 moves from K1 to K2 (no entry)
Receipt    R1 2026-03-10  KH1   1000 into 1111 from 131, allocated to S1        -> Dr 1111 1000, Cr 131 1000
Journal    J1 2026-03-31  Dr 33311 130, Cr 1331 130
SV1 is a service (StockTracked 0): it posts revenue but never moves stock.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from conftest import assert_envelope
from test_vouchers import VoucherApi

D = Decimal


def sale_line(ref: int, item: str, qty: Any, price: Any, rate: int = 10, site: str = "K1") -> dict:
    amount = D(str(qty)) * D(str(price))
    tax = amount * rate / 100
    return {"RefNumber": ref, "ItemCode": item, "Uom": "PCS", "SiteCode": site, "Quantity": qty, "UnitPrice": price,
            "Amount": amount, "Discount": 0, "TaxRate": rate, "TaxAmount": tax, "TotalAmount": amount + tax}


def sale(vid: str, date: str, customer: str, lines: list[dict], **header: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": customer,
            "TotalQuantity": sum(D(str(x["Quantity"])) for x in lines),
            "TotalNetAmount": sum(x["Amount"] for x in lines), "TotalDiscountAmount": 0,
            "TotalTaxAmount": sum(x["TaxAmount"] for x in lines), "TotalAmount": sum(x["TotalAmount"] for x in lines),
            "detail": lines, **header}


def purchase(vid: str, date: str, qty: int, price: int) -> dict:
    amount, tax = qty * price, qty * price // 10
    return {"VoucherId": vid, "VoucherDate": date, "SupplierCode": "NCC1", "TotalQuantity": qty,
            "TotalNetAmount": amount, "TotalTaxAmount": tax, "TotalAmount": amount + tax,
            "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "Quantity": qty,
                        "UnitPrice": price, "Amount": amount}],
            "tax": [{"VatInvoiceNumber": vid, "VatInvoiceDate": date, "TotalNetAmount": amount, "TaxRate": "10",
                     "TaxAmount": tax}]}


S1 = sale("S1", "2026-02-05", "KH1", [sale_line(1, "IT1", 4, 200), sale_line(2, "SV1", 1, 500)], DueDate="2026-02-15")
S2 = sale("S2", "2026-03-01", "KH2", [sale_line(1, "IT1", 1, D("10.00"))], Currency="USD", ExchangeRate=25000,
          DueDate="2026-03-31")


def receipt(amount: int, allocated: int) -> dict:
    return {"VoucherId": "R1", "VoucherDate": "2026-03-10", "CustomerCode": "KH1", "DebitAccount": "1111",
            "TotalAmount": amount, "detail": [{"RefNumber": 1, "CreditAccount": "131", "Amount": amount}],
            "allocation": [{"InvoiceId": "S1", "Amount": allocated}]}


class LedgerApi(VoucherApi):
    async def send(self, form: str, docs: list[dict]) -> dict:
        resp = await self.client.post("/api/SyncVoucher", headers={"Authorization": self.token},
                                      content=msgspec.json.Encoder(decimal_format="number").encode(
                                          {"form": form, "data": docs}))
        body = assert_envelope(resp)
        assert resp.status_code == 200, body
        return body

    async def report(self, form: str, **params: Any) -> dict:
        return assert_envelope(await self.get(form, **params))


@pytest.fixture
async def ledger(client: httpx.AsyncClient, token: str) -> LedgerApi:
    api = LedgerApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0},
                         {"CurrencyCode": "USD", "CurrencyName": "Dollar", "DecimalPlaces": 2}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"},
                         {"CustomerCode": "KH2", "CustomerName": "Beta"}]),
        ("setSupplier", [{"SupplierCode": "NCC1", "SupplierName": "Acme Supplies"}]),
        ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"},
                     {"ItemCode": "SV1", "ItemName": "Installation", "ItemType": "DV", "StockTracked": 0}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main"}, {"SiteCode": "K2", "SiteName": "Branch"}]),
        ("setAccount", [{"AccountCode": c, "AccountName": n, "AccountType": t} for c, n, t in (
            ("1111", "Cash", "asset"), ("131", "Receivables", "asset"), ("1331", "VAT input", "asset"),
            ("156", "Goods", "asset"), ("331", "Payables", "liability"), ("33311", "VAT output", "liability"),
            ("5111", "Revenue", "revenue"))]),
    ):
        assert (await api.sync(form, data)).status_code == 200, form
    await api.send("setPurchaseInvoice", [purchase("P1", "2026-01-10", 10, 100), purchase("P2", "2026-01-20", 10, 130)])
    await api.send("setSaleInvoice", [S1, S2])
    await api.send("setStockTransfer", [{"VoucherId": "T1", "VoucherDate": "2026-03-02", "TotalQuantity": 5,
                                         "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1",
                                                     "ToSiteCode": "K2", "Quantity": 5}]}])
    await api.send("setCashReceipt", [receipt(1000, 1000)])
    await api.send("setJournalVoucher", [{"VoucherId": "J1", "VoucherDate": "2026-03-31", "detail": [
        {"RefNumber": 1, "AccountCode": "33311", "Debit": 130}, {"RefNumber": 2, "AccountCode": "1331", "Credit": 130}]}])
    return api


def by(rows: list[dict], key: str) -> dict[str, dict]:
    return {r[key]: r for r in rows}


async def test_trial_balance_matches_the_hand_computed_ledger(ledger: LedgerApi) -> None:
    body = await ledger.report("getTrialBalance", dateFrom="2026-03-01", dateTo="2026-03-31")
    got = {r["AccountCode"]: (r["Opening"], r["Debit"], r["Credit"], r["Closing"]) for r in body["data"]}
    assert got == {
        "1111": (0, 1000, 0, 1000),
        "131": (1430, 275000, 1000, 275430),
        "1331": (230, 0, 130, 100),
        "156": (1840, 0, 115, 1725),
        "331": (-2530, 0, 0, -2530),
        "33311": (-130, 130, 25000, -25000),
        "5111": (-1300, 0, 250000, -251300),
        "632": (460, 115, 0, 575),
    }
    assert sum(c for *_, c in got.values()) == 0
    assert by(body["data"], "AccountCode")["5111"]["AccountName"] == "Revenue"


async def test_account_ledger_runs_the_balance(ledger: LedgerApi) -> None:
    body = await ledger.report("getAccountLedger", Id="131", dateFrom="2026-03-01", dateTo="2026-03-31")
    assert body["opening"] == 1430 and body["closing"] == 275430
    assert [(r["VoucherId"], r["Debit"], r["Credit"], r["Balance"]) for r in body["data"]] == [
        ("S2", 250000, 0, 251430), ("S2", 25000, 0, 276430), ("R1", 0, 1000, 275430)]


async def test_stock_balance_at_average_cost(ledger: LedgerApi) -> None:
    body = await ledger.report("getStockBalance", dateTo="2026-03-31")
    assert [(r["ItemCode"], r["SiteCode"], r["Quantity"], r["UnitCost"], r["Value"]) for r in body["data"]] == [
        ("IT1", "K1", 10, 115, 1150), ("IT1", "K2", 5, 115, 575)]
    early = await ledger.report("getStockBalance", dateTo="2026-01-15")
    assert [(r["SiteCode"], r["Quantity"], r["Value"]) for r in early["data"]] == [("K1", 10, 1000)]
    assert (await ledger.report("getStock"))["data"] == body["data"]


async def test_receivables_age_the_open_invoices_and_derive_their_status(ledger: LedgerApi) -> None:
    body = await ledger.report("getReceivables", dateTo="2026-03-31")
    rows = by(body["data"], "PartnerCode")
    assert (rows["KH1"]["Days31To60"], rows["KH1"]["Total"]) == (430, 430)
    assert (rows["KH2"]["Current"], rows["KH2"]["Total"]) == (275000, 275000)
    s1 = rows["KH1"]["Invoices"][0]
    assert (s1["Paid"], s1["Outstanding"], s1["Status"], s1["DaysOverdue"]) == (1000, 430, "overdue", 44)
    assert rows["KH2"]["Invoices"][0]["Status"] == "open"
    # Before the receipt the whole invoice was open and fewer days late.
    before = by((await ledger.report("getReceivables", dateTo="2026-03-05"))["data"], "PartnerCode")
    assert before["KH1"]["Days1To30"] == 1430 and before["KH1"]["Invoices"][0]["Paid"] == 0
    # Paying the rest settles it: gone from the open items, listed as paid on request.
    await ledger.send("setCashReceipt", [receipt(1430, 1430)])
    after = by((await ledger.report("getReceivables", dateTo="2026-03-31"))["data"], "PartnerCode")
    assert "KH1" not in after
    paid = by((await ledger.report("getReceivables", dateTo="2026-03-31", include_paid=True))["data"], "PartnerCode")
    assert paid["KH1"]["Invoices"][0]["Status"] == "paid" and paid["KH1"]["Total"] == 0


async def test_payables_age_the_purchase_invoices(ledger: LedgerApi) -> None:
    rows = by((await ledger.report("getPayables", dateTo="2026-03-31"))["data"], "PartnerCode")
    assert (rows["NCC1"]["Days61To90"], rows["NCC1"]["Total"]) == (2530, 2530)


async def test_sales_summary_by_period_item_and_customer(ledger: LedgerApi) -> None:
    def rows(body: dict) -> dict:
        return {r["Key"]: (r["Quantity"], r["NetAmount"], r["TaxAmount"], r["TotalAmount"]) for r in body["data"]}

    period = rows(await ledger.report("getSalesSummary", dateFrom="2026-01-01", dateTo="2026-03-31"))
    assert period == {"2026-02": (5, 1300, 130, 1430), "2026-03": (1, 250000, 25000, 275000)}
    items = rows(await ledger.report("getSalesSummary", group_by="item"))
    assert items == {"IT1": (5, 250800, 25080, 275880), "SV1": (1, 500, 50, 550)}
    customers = rows(await ledger.report("getSalesSummary", group_by="customer", dateTo="2026-02-28"))
    assert customers == {"KH1": (5, 1300, 130, 1430)}


async def test_replacing_or_cancelling_a_voucher_replaces_its_postings(ledger: LedgerApi,
                                                                     db: asyncpg.Connection) -> None:
    smaller = sale("S1", "2026-02-05", "KH1", [sale_line(1, "IT1", 4, 200)], DueDate="2026-02-15")
    await ledger.send("setCashReceipt", [receipt(1000, 880)])  # an invoice is not reduced below what is allocated
    await ledger.send("setSaleInvoice", [smaller])
    entries = await db.fetch("SELECT account_code, debit, credit FROM gl_entry WHERE voucher_id = 'S1'"
                             " ORDER BY source DESC, entry_no")
    assert [tuple(r) for r in entries] == [("131", 800, 0), ("5111", 0, 800), ("131", 80, 0), ("33311", 0, 80),
                                           ("632", 460, 0), ("156", 0, 460)]
    await ledger.send("setSaleInvoice", [{"VoucherId": "S2", "Status": "0"}])
    assert await db.fetchval("SELECT count(*) FROM gl_entry WHERE voucher_id = 'S2'") == 0
    assert await db.fetchval("SELECT count(*) FROM stock_move WHERE voucher_id = 'S2'") == 0
    tb = by((await ledger.report("getTrialBalance", dateTo="2026-03-31"))["data"], "AccountCode")
    assert tb["5111"]["Closing"] == -800 and tb["131"]["Closing"] == 880 - 1000
    stock = (await ledger.report("getStockBalance"))["data"]
    assert [(r["SiteCode"], r["Quantity"]) for r in stock] == [("K1", 11), ("K2", 5)]


async def test_every_posted_voucher_balances(ledger: LedgerApi, db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT form, voucher_id, sum(debit) AS d, sum(credit) AS c FROM gl_entry"
                          " GROUP BY form, voucher_id")
    assert len(rows) == 6 and all(r["d"] == r["c"] for r in rows)


async def test_report_parameters_are_checked(ledger: LedgerApi) -> None:
    for form, params, name in (("getTrialBalance", {"dateTo": "31/03/2026"}, "dateTo"),
                               ("getAccountLedger", {}, "Id"),
                               ("getSalesSummary", {"group_by": "colour"}, "group_by"),
                               ("getStockBalance", {"filters": {}}, "filters")):
        resp = await ledger.get(form, **params)
        assert resp.status_code == 400 and name in assert_envelope(resp)["messages"], (form, params)


async def test_allocations_must_pay_live_invoices_once_and_within_the_total(ledger: LedgerApi,
                                                                          db: asyncpg.Connection) -> None:
    before = await db.fetch("SELECT * FROM voucher_allocation ORDER BY voucher_id, seq")
    cases = [
        ([{"InvoiceId": "NOPE", "Amount": 10}], 100, "/allocation/0/InvoiceId", "is not a setSaleInvoice"),
        ([{"InvoiceId": "P1", "Amount": 10}], 100, "/allocation/0/InvoiceId", "is not a setSaleInvoice"),
        ([{"InvoiceId": "S1", "Amount": 10}, {"InvoiceId": "S1", "Amount": 5}], 100, "/allocation/1/InvoiceId",
         "twice"),
        ([{"InvoiceId": "S1", "Amount": 60}, {"InvoiceId": "S2", "Amount": 50}], 100, "/allocation", "more than"),
    ]
    for allocation, total, path, text in cases:
        doc = {**receipt(total, 0), "VoucherId": "R2", "allocation": allocation}
        resp = await ledger.client.post("/api/SyncVoucher", headers={"Authorization": ledger.token},
                                        json={"form": "setCashReceipt", "data": [doc]})
        body = assert_envelope(resp)
        assert body["code"] == 601 and any(e["path"] == path and text in e["message"] for e in body["errors"]), body
    assert await db.fetch("SELECT * FROM voucher_allocation ORDER BY voucher_id, seq") == before


async def test_a_transfer_to_the_same_site_is_refused(ledger: LedgerApi, db: asyncpg.Connection) -> None:
    resp = await ledger.client.post("/api/SyncVoucher", headers={"Authorization": ledger.token}, json={
        "form": "setStockTransfer", "data": [{"VoucherId": "T2", "VoucherDate": "2026-03-03", "TotalQuantity": 1,
                                              "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS",
                                                          "SiteCode": "K1", "ToSiteCode": "K1", "Quantity": 1}]}]})
    body = assert_envelope(resp)
    assert body["code"] == 601 and body["errors"][0]["path"] == "/detail/0/ToSiteCode"
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE voucher_id = 'T2'") == 0


async def test_a_partly_paid_invoice_not_yet_due_is_partially_paid(ledger: LedgerApi) -> None:
    s3 = sale("S3", "2026-03-20", "KH2", [sale_line(1, "SV1", 1, 1000)], DueDate="2026-04-30")
    await ledger.send("setSaleInvoice", [s3])
    await ledger.send("setCashReceipt", [{**receipt(300, 300), "VoucherId": "R3", "VoucherDate": "2026-03-25",
                                          "CustomerCode": "KH2",
                                          "allocation": [{"InvoiceId": "S3", "Amount": 300}]}])
    rows = by((await ledger.report("getReceivables", dateTo="2026-03-31"))["data"], "PartnerCode")
    s3_row = by(rows["KH2"]["Invoices"], "VoucherId")["S3"]
    assert (s3_row["Paid"], s3_row["Outstanding"], s3_row["Status"]) == (300, 800, "partially_paid")
    # The same invoice, looked at after its due date, is overdue.
    later = by((await ledger.report("getReceivables", dateTo="2026-05-10"))["data"], "PartnerCode")
    assert by(later["KH2"]["Invoices"], "VoucherId")["S3"]["Status"] == "overdue"
