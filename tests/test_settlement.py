"""Settlement: allocations checked in the write, realised exchange differences, returns netting against their
invoices, journal partners, and open items that tie to the control accounts per partner.

Figures worked out by hand (VND base, USD at 2 decimals; SV1 is a service, so no stock moves):
  S1  KH1 VND 1,100,000 (1,000,000 + VAT 100,000)              -> Dr 131 1,100,000
  U1  KH2 USD 100.00 at 25,000 (no VAT)                          -> Dr 131 2,500,000
  paid USD 100.00 at 25,500 -> Cr 131 2,550,000, gain 50,000:  Dr 131 50,000 / Cr 515 50,000; 131 of U1: 0
  paid USD 100.00 at 24,800 -> Cr 131 2,480,000, loss 20,000:  Dr 635 20,000 / Cr 131 20,000; 131 of U1: 0
  paid VND 2,550,000 with InvoiceAmount 100.00                   -> the same as at 25,500
  P1  NCC1 USD 100.00 at 25,000 (a service, no VAT)               -> Cr 331 2,500,000
  paid USD 100.00 at 25,500 -> Dr 331 2,550,000, loss 50,000:  Dr 635 50,000 / Cr 331 50,000; 331 of P1: 0
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from conftest import assert_envelope, write_plan_scans
from test_ledger import LedgerApi, sale

from gateway import posting, vouchers
from gateway.db import QUERIES, init_connection
from gateway.forms import SYNC_VOUCHER, Registry
from gateway.settlement import subledger_total

D = Decimal


def sale_line(ref: int, qty: Any, price: Any, rate: int = 10, item: str = "SV1") -> dict:
    amount = D(str(qty)) * D(str(price))
    tax = (amount * rate / 100).quantize(D(1) if amount == amount.to_integral() else D("0.01"))
    return {"RefNumber": ref, "ItemCode": item, "Uom": "PCS", "SiteCode": "K1", "Quantity": qty, "UnitPrice": price,
            "Amount": amount, "Discount": 0, "TaxRate": rate, "TaxAmount": tax, "TotalAmount": amount + tax}


def sale_return(vid: str, date: str, customer: str, lines: list[dict], **header: Any) -> dict:
    return sale(vid, date, customer, lines, **header)


def returned(ref: int, qty: Any, price: Any, invoice: str | None, invoice_line: int | None = None,
             rate: int = 10) -> dict:
    line = sale_line(ref, qty, price, rate)
    if invoice is not None:
        line["SaleInvId"] = invoice
    if invoice_line is not None:
        line["SaleInvRefNumber"] = invoice_line
    return line


def receipt(vid: str, date: str, customer: str, amount: Any, allocation: list[dict] | None = None,
            credit: str = "131", **header: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": customer, "DebitAccount": "1111",
            "TotalAmount": amount, "detail": [{"RefNumber": 1, "CreditAccount": credit, "Amount": amount}],
            "allocation": allocation or [], **header}


def disbursement(vid: str, date: str, partner: str, amount: Any, allocation: list[dict] | None = None,
                 **header: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "CustomerCode": partner, "CreditAccount": "1111",
            "TotalAmount": amount, "detail": [{"RefNumber": 1, "DebitAccount": "331", "Amount": amount}],
            "allocation": allocation or [], **header}


def purchase(vid: str, date: str, amount: Any, **header: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": date, "SupplierCode": "NCC1", "TotalQuantity": 1,
            "TotalNetAmount": amount, "TotalTaxAmount": 0, "TotalAmount": amount,
            "detail": [{"RefNumber": 1, "ItemCode": "SV1", "Uom": "PCS", "SiteCode": "K1", "Quantity": 1,
                        "UnitPrice": amount, "Amount": amount}], **header}


def pay(invoice: str, amount: Any, **extra: Any) -> dict:
    return {"InvoiceId": invoice, "Amount": amount, **extra}


S1 = sale("S1", "2026-02-05", "KH1", [sale_line(1, 2, 300_000), sale_line(2, 4, 100_000)], DueDate="2026-02-28")
U1 = sale("U1", "2026-03-01", "KH2", [sale_line(1, 1, D("100.00"), rate=0)], Currency="USD", ExchangeRate=25000)
P1 = purchase("P1", "2026-03-01", D("100.00"), Currency="USD", ExchangeRate=25000)


@pytest.fixture
async def books(client: httpx.AsyncClient, token: str) -> LedgerApi:
    api = LedgerApi(client, token)
    for form, data in (
        ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0},
                         {"CurrencyCode": "USD", "CurrencyName": "Dollar", "DecimalPlaces": 2}]),
        ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"},
                         {"CustomerCode": "KH2", "CustomerName": "Beta"}]),
        ("setSupplier", [{"SupplierCode": "NCC1", "SupplierName": "Acme Supplies"}]),
        ("setItem", [{"ItemCode": "SV1", "ItemName": "Installation", "ItemType": "DV", "StockTracked": 0}]),
        ("setSite", [{"SiteCode": "K1", "SiteName": "Main"}]),
        ("setAccount", [{"AccountCode": c, "AccountName": c, "AccountType": t} for c, t in (
            ("1111", "asset"), ("131", "asset"), ("331", "liability"), ("33311", "liability"), ("1331", "asset"),
            ("5111", "revenue"), ("5212", "revenue"), ("515", "revenue"), ("635", "expense"), ("6427", "expense"),
            ("711", "revenue"), ("811", "expense"))]),
    ):
        assert (await api.sync(form, data)).status_code == 200, form
    await api.send("setSaleInvoice", [S1, U1])
    await api.send("setPurchaseInvoice", [P1])
    return api


async def refused(api: LedgerApi, form: str, docs: list[dict], path: str, text: str) -> dict:
    resp = await api.client.post("/api/SyncVoucher", headers={"Authorization": api.token},
                                 content=msgspec.json.Encoder(decimal_format="number").encode(
                                     {"form": form, "data": docs}))
    body = assert_envelope(resp)
    assert body["code"] == 601, body
    assert any(e["path"] == path and text in e["message"] for e in body["errors"]), body["errors"]
    return body


async def balance(db: asyncpg.Connection, account: str, partner: str | None = None,
                  voucher: str | None = None) -> Decimal:
    return await db.fetchval(
        "SELECT COALESCE(sum(debit - credit), 0) FROM gl_entry WHERE account_code = $1"
        " AND ($2::text IS NULL OR partner_code = $2) AND ($3::text IS NULL OR voucher_id = $3)",
        account, partner, voucher)


async def entries(db: asyncpg.Connection, voucher: str) -> list[tuple[str, Decimal, Decimal, str | None]]:
    rows = await db.fetch("SELECT account_code, debit, credit, partner_code FROM gl_entry WHERE voucher_id = $1"
                          " ORDER BY entry_no", voucher)
    return [tuple(r) for r in rows]


async def snapshot(db: asyncpg.Connection) -> Any:
    return ([tuple(r) for r in await db.fetch("SELECT * FROM voucher_allocation ORDER BY form, voucher_id, seq")],
            [tuple(r) for r in await db.fetch("SELECT form, voucher_id, entry_no, account_code, debit, credit"
                                              " FROM gl_entry ORDER BY 1, 2, 3")],
            [tuple(r) for r in await db.fetch("SELECT form, voucher_id, deleted, document FROM voucher"
                                              " ORDER BY 1, 2")])


async def ties(api: LedgerApi, db: asyncpg.Connection, date: str = "2026-12-31") -> None:
    """Per partner, the open items plus unapplied items of each report equal the control account's balance."""
    for form, account, sign in (("getReceivables", "131", 1), ("getPayables", "331", -1)):
        rows = (await api.report(form, dateTo=date))["data"]
        got = {r["PartnerCode"]: D(str(r["Total"])) + D(str(r["Unapplied"])) for r in rows}
        assert all(D(str(r["Balance"])) == got[r["PartnerCode"]] for r in rows)
        ledger = {r["partner_code"]: sign * r["b"] for r in await db.fetch(
            "SELECT partner_code, sum(debit - credit) AS b FROM gl_entry WHERE account_code = $1"
            " AND entry_date <= $2::text::date GROUP BY partner_code HAVING sum(debit - credit) <> 0", account, date)}
        assert {k: v for k, v in got.items() if v} == ledger, (form, rows)


# --- exchange differences -------------------------------------------------------------------------------

@pytest.mark.parametrize(("rate", "gain", "loss"), [(25500, 50_000, 0), (24800, 0, 20_000)])
async def test_a_usd_invoice_paid_at_another_rate_posts_the_realised_difference(
        books: LedgerApi, db: asyncpg.Connection, rate: int, gain: int, loss: int) -> None:
    await books.send("setCashReceipt", [receipt("R1", "2026-03-20", "KH2", D("100.00"), [pay("U1", D("100.00"))],
                                                Currency="USD", ExchangeRate=rate)])
    paid = 100 * rate
    assert await entries(db, "R1") == [
        ("1111", paid, 0, "KH2"), ("131", 0, paid, "KH2"),
        *([("131", gain, 0, "KH2"), ("515", 0, gain, "KH2")] if gain else []),
        *([("635", loss, 0, "KH2"), ("131", 0, loss, "KH2")] if loss else [])]
    assert await balance(db, "131", "KH2") == 0
    row = await db.fetchrow("SELECT amount, invoice_amount, base_amount FROM voucher_allocation WHERE voucher_id = 'R1'")
    assert tuple(row) == (D("100.00"), D("100.00"), 2_500_000)
    kh2 = (await books.report("getReceivables", dateTo="2026-12-31", include_paid=True))["data"]
    u1 = next(r for r in kh2 if r["PartnerCode"] == "KH2")
    assert (u1["Total"], u1["Unapplied"], u1["Invoices"][0]["Status"]) == (0, 0, "paid")
    await ties(books, db)


async def test_a_vnd_receipt_settles_a_usd_invoice_at_the_stated_invoice_amount(books: LedgerApi,
                                                                                db: asyncpg.Connection) -> None:
    await refused(books, "setCashReceipt", [receipt("R1", "2026-03-20", "KH2", 2_550_000, [pay("U1", 2_550_000)])],
                  "/allocation/0/InvoiceAmount", "InvoiceAmount (the amount settled in USD) is required")
    await refused(books, "setCashReceipt", [receipt("R1", "2026-03-20", "KH2", 2_550_000,
                                                    [pay("U1", 2_550_000, InvoiceAmount=D("100.001"))])],
                  "/allocation/0/InvoiceAmount", "more than the 2 decimal places of USD")
    await books.send("setCashReceipt", [receipt("R1", "2026-03-20", "KH2", 2_550_000,
                                                [pay("U1", 2_550_000, InvoiceAmount=D("100.00"))])])
    assert await entries(db, "R1") == [("1111", 2_550_000, 0, "KH2"), ("131", 0, 2_550_000, "KH2"),
                                       ("131", 50_000, 0, "KH2"), ("515", 0, 50_000, "KH2")]
    assert await balance(db, "131", "KH2") == 0
    await ties(books, db)


async def test_partial_payments_at_odd_rates_leave_exactly_zero_when_settled(books: LedgerApi,
                                                                           db: asyncpg.Connection) -> None:
    # 100.01 USD at 24,999.5 posts 2,500,199.995, rounded to 2,500,200 dong.
    await books.send("setSaleInvoice", [sale("U2", "2026-03-02", "KH2", [sale_line(1, 1, D("100.01"), rate=0)],
                                             Currency="USD", ExchangeRate=D("24999.5"))])
    assert await balance(db, "131", voucher="U2") == 2_500_200
    await books.send("setCashReceipt", [
        receipt("R1", "2026-03-10", "KH2", D("33.33"), [pay("U2", D("33.33"))], Currency="USD", ExchangeRate=25001),
        receipt("R2", "2026-03-11", "KH2", D("33.34"), [pay("U2", D("33.34"))], Currency="USD",
                ExchangeRate=D("25003.7"))])
    # Shares of the book value: 2,500,200 x 33.33 / 100.01 = 833,233.29 -> 833,233; x 33.34 / 100.01 -> 833,483.
    shares = await db.fetch("SELECT voucher_id, base_amount FROM voucher_allocation ORDER BY voucher_id")
    assert [tuple(r) for r in shares] == [("R1", 833_233), ("R2", 833_483)]
    # R1 at 25,001: 833,283 received (33.33 x 25,001 = 833,283.33), 50 over the book share: a gain of 50.
    assert await entries(db, "R1") == [("1111", 833_283, 0, "KH2"), ("131", 0, 833_283, "KH2"),
                                       ("131", 50, 0, "KH2"), ("515", 0, 50, "KH2")]
    await books.send("setCashReceipt", [receipt("R3", "2026-03-12", "KH2", D("33.34"), [pay("U2", D("33.34"))],
                                                Currency="USD", ExchangeRate=24000)])
    # The last takes the rest of the book value: 2,500,200 - 833,233 - 833,483 = 833,484.
    assert await db.fetchval("SELECT base_amount FROM voucher_allocation WHERE voucher_id = 'R3'") == 833_484
    # Received 33.34 x 24,000 = 800,160 for a book share of 833,484: a loss of 33,324, also credited to 131.
    assert await entries(db, "R3") == [("1111", 800_160, 0, "KH2"), ("131", 0, 800_160, "KH2"),
                                       ("635", 33_324, 0, "KH2"), ("131", 0, 33_324, "KH2")]
    assert await db.fetchval(
        "SELECT sum(debit - credit) FROM gl_entry WHERE account_code = '131' AND voucher_id IN ('U2', 'R1', 'R2',"
        " 'R3')") == 0
    assert all(r["d"] == r["c"] for r in await db.fetch(
        "SELECT sum(debit) AS d, sum(credit) AS c FROM gl_entry GROUP BY voucher_id"))
    rows = (await books.report("getReceivables", dateTo="2026-12-31", include_paid=True))["data"]
    u2 = next(i for r in rows for i in r["Invoices"] if i["VoucherId"] == "U2")
    assert (u2["Outstanding"], u2["BaseOutstanding"], u2["Status"]) == (0, 0, "paid")
    await ties(books, db)


async def test_a_usd_purchase_invoice_paid_dearer_posts_a_loss(books: LedgerApi, db: asyncpg.Connection) -> None:
    await books.send("setCashDisbursement", [disbursement("C1", "2026-03-20", "NCC1", D("100.00"),
                                                          [pay("P1", D("100.00"))], Currency="USD",
                                                          ExchangeRate=25500)])
    assert await entries(db, "C1") == [("331", 2_550_000, 0, "NCC1"), ("1111", 0, 2_550_000, "NCC1"),
                                       ("635", 50_000, 0, "NCC1"), ("331", 0, 50_000, "NCC1")]
    assert await balance(db, "331", "NCC1") == 0
    assert (await books.report("getPayables", dateTo="2026-12-31"))["data"] == []
    await ties(books, db)


# --- refusals -----------------------------------------------------------------------------------------------

async def test_allocations_are_refused_when_they_do_not_settle_a_live_invoice_of_the_partner(
        books: LedgerApi, db: asyncpg.Connection) -> None:
    before = await snapshot(db)
    cases = [
        (receipt("R1", "2026-03-01", "KH1", 100, [pay("NOPE", 100)]), "/allocation/0/InvoiceId",
         "'NOPE' is not a setSaleInvoice"),
        (receipt("R1", "2026-03-01", "KH1", 100, [pay("P1", 100)]), "/allocation/0/InvoiceId",
         "'P1' is not a setSaleInvoice"),
        # Another customer's receipt paying S1.
        (receipt("R1", "2026-03-01", "KH2", 100, [pay("S1", 100)]), "/allocation/0/InvoiceId",
         "setSaleInvoice 'S1' is of partner 'KH1', not of this voucher's CustomerCode 'KH2'"),
        # More than the invoice.
        (receipt("R1", "2026-03-01", "KH1", 1_200_000, [pay("S1", 1_200_000)]), "/allocation/0/Amount",
         "allocation of 1200000 VND to setSaleInvoice 'S1' is more than its outstanding amount of 1100000"),
        # A receipt credited to revenue cannot settle an invoice.
        (receipt("R1", "2026-03-01", "KH1", 100, [pay("S1", 100)], credit="5111"), "/allocation",
         "allocations total 100, more than the 0 this voucher posts to the receivable account 131"),
        (receipt("R1", "2026-03-01", "KH1", 100, [pay("S1", 60), pay("S1", 40)]), "/allocation/1/InvoiceId",
         "allocated twice"),
        (receipt("R1", "2026-03-01", "KH1", 100, [pay("S1", 100, InvoiceAmount=90)]), "/allocation/0/InvoiceAmount",
         "InvoiceAmount 90 differs from Amount 100"),
        (disbursement("C1", "2026-03-20", "KH1", D("10.00"), [pay("P1", D("10.00"))], Currency="USD",
                      ExchangeRate=25000), "/allocation/0/InvoiceId", "of partner 'NCC1'"),
    ]
    for doc, path, text in cases:
        form = "setCashDisbursement" if doc["VoucherId"] == "C1" else "setCashReceipt"
        await refused(books, form, [doc], path, text)
    assert await snapshot(db) == before


async def test_a_second_full_payment_is_refused_and_replacing_the_first_frees_the_invoice(
        books: LedgerApi, db: asyncpg.Connection) -> None:
    await books.send("setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 1_100_000, [pay("S1", 1_100_000)])])
    before = await snapshot(db)
    await refused(books, "setCashReceipt", [receipt("R2", "2026-03-02", "KH1", 1_100_000, [pay("S1", 1_100_000)])],
                  "/allocation/0/Amount", "more than its outstanding amount of 0")
    # Two receipts of one batch count together.
    await refused(books, "setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 600_000, [pay("S1", 600_000)]),
                                            receipt("R2", "2026-03-02", "KH1", 600_000, [pay("S1", 600_000)])],
                  "/allocation/0/Amount", "more than its outstanding amount of 500000")
    assert await snapshot(db) == before
    # The receipt replaced (its own allocation is not counted against it), then cancelled: S1 open again.
    await books.send("setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 1_000_000, [pay("S1", 1_000_000)])])
    await books.send("setCashReceipt", [{"VoucherId": "R1", "Status": "0"}])
    assert await db.fetchval("SELECT count(*) FROM voucher_allocation") == 0
    await books.send("setCashReceipt", [receipt("R2", "2026-03-02", "KH1", 1_100_000, [pay("S1", 1_100_000)])])
    await ties(books, db)


async def test_concurrent_full_payments_of_one_invoice_only_one_passes(books: LedgerApi, db_url: str,
                                                                      registry: Registry,
                                                                      db: asyncpg.Connection) -> None:
    """One connection pays S1 in full and has not committed; a second payment through the gateway waits for
    its lock on the invoice, then is refused once it commits."""
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    form, _ = registry.resolve(SYNC_VOUCHER, "setCashReceipt")
    first = await asyncpg.connect(db_url)
    await init_connection(first)
    try:
        tx = first.transaction()
        await tx.start()
        batch = vouchers.prepare(form, [receipt("R1", "2026-03-01", "KH1", 1_100_000, [pay("S1", 1_100_000)])])
        await vouchers.VOUCHERS.check(first, form, tenant_id, batch)
        assert not batch.errors
        await vouchers.write(first, form, tenant_id, batch, dry_run=False)
        second = asyncio.create_task(books.client.post(
            "/api/SyncVoucher", headers={"Authorization": books.token},
            json={"form": "setCashReceipt",
                  "data": [receipt("R2", "2026-03-02", "KH1", 1_100_000, [pay("S1", 1_100_000)])]}))
        await asyncio.sleep(0.5)
        assert not second.done()  # waiting for the first payment's lock on S1
        await tx.commit()
        body = assert_envelope(await asyncio.wait_for(second, 20))
    finally:
        await first.close()
    assert body["code"] == 601 and "more than its outstanding amount of 0" in body["errors"][0]["message"], body
    assert [r["voucher_id"] for r in await db.fetch("SELECT voucher_id FROM voucher_allocation")] == ["R1"]


async def test_an_invoice_with_settlements_cannot_be_cancelled_moved_or_reduced(books: LedgerApi,
                                                                              db: asyncpg.Connection) -> None:
    await books.send("setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 600_000, [pay("S1", 600_000)])])
    before = await snapshot(db)
    await refused(books, "setSaleInvoice", [{"VoucherId": "S1", "Status": "0"}], "/Status",
                  "setSaleInvoice 'S1' cannot be cancelled: setCashReceipt 'R1' settle it")
    await refused(books, "setSaleInvoice", [{**S1, "CustomerCode": "KH2"}], "/CustomerCode",
                  "CustomerCode cannot change from 'KH1' to 'KH2'")
    await refused(books, "setSaleInvoice", [{**S1, "Currency": "USD", "ExchangeRate": 25000}], "/Currency",
                  "Currency cannot change from VND to USD")
    smaller = sale("S1", "2026-02-05", "KH1", [sale_line(1, 1, 300_000)])
    await refused(books, "setSaleInvoice", [smaller], "/TotalAmount",
                  "TotalAmount 330000 is less than the 600000 that setCashReceipt 'R1' settle")
    assert await snapshot(db) == before
    # Reducing it to what is paid is fine; cancelling the receipt frees it.
    await books.send("setSaleInvoice", [sale("S1", "2026-02-05", "KH1", [sale_line(1, 2, D(300_000) * 10 / 11)])])
    await books.send("setCashReceipt", [{"VoucherId": "R1", "Status": "0"}])
    await books.send("setSaleInvoice", [{"VoucherId": "S1", "Status": "0"}])
    assert await db.fetchval("SELECT deleted FROM voucher WHERE voucher_id = 'S1'")


# --- returns -------------------------------------------------------------------------------------------------

async def test_a_return_nets_against_its_invoice(books: LedgerApi, db: asyncpg.Connection) -> None:
    # One of the two units of line 1 (330,000 with VAT) comes back.
    await books.send("setSaleReturn", [sale_return("SR1", "2026-02-10", "KH1", [returned(1, 1, 300_000, "S1", 1)])])
    rows = await db.fetch("SELECT invoice_id, invoice_line, quantity, invoice_amount, base_amount"
                          " FROM voucher_allocation WHERE voucher_id = 'SR1'")
    assert [tuple(r) for r in rows] == [("S1", 1, 1, 330_000, 330_000)]
    kh1 = next(r for r in (await books.report("getReceivables", dateTo="2026-03-31"))["data"]
               if r["PartnerCode"] == "KH1")
    s1 = kh1["Invoices"][0]
    assert (s1["Paid"], s1["Outstanding"], kh1["Total"], kh1["Unapplied"]) == (330_000, 770_000, 770_000, 0)
    await ties(books, db)
    # The invoice cannot go while the return cites it, nor lose the line returned.
    await refused(books, "setSaleInvoice", [{"VoucherId": "S1", "Status": "0"}], "/Status", "setSaleReturn 'SR1'")
    await refused(books, "setSaleInvoice", [sale("S1", "2026-02-05", "KH1", [sale_line(2, 4, 100_000)])],
                  "/detail", "line 1 must keep at least the quantity 1")
    # Paid in full for the rest: a further return beyond what is outstanding stays an unapplied credit.
    await books.send("setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 770_000, [pay("S1", 770_000)])])
    await books.send("setSaleReturn", [sale_return("SR2", "2026-03-05", "KH1", [returned(1, 1, 100_000, "S1", 2)])])
    assert await db.fetchval("SELECT invoice_amount FROM voucher_allocation WHERE voucher_id = 'SR2'") == 0
    kh1 = next(r for r in (await books.report("getReceivables", dateTo="2026-03-31"))["data"]
               if r["PartnerCode"] == "KH1")
    assert (kh1["Total"], kh1["Unapplied"]) == (0, -110_000)
    assert [(i["VoucherId"], i["Amount"]) for i in kh1["UnappliedItems"]] == [("SR2", -110_000)]
    await ties(books, db)


async def test_returns_are_checked_against_the_invoice_they_cite(books: LedgerApi, db: asyncpg.Connection) -> None:
    await books.send("setSaleReturn", [sale_return("SR1", "2026-02-10", "KH1", [returned(1, 1, 300_000, "S1", 1)])])
    before = await snapshot(db)
    cases = [
        (sale_return("SR2", "2026-02-10", "KH1", [returned(1, 1, 300_000, "NOPE", 1)]), "/detail/0/SaleInvId",
         "SaleInvId 'NOPE' of line 1 is not a live setSaleInvoice"),
        (sale_return("SR2", "2026-02-10", "KH2", [returned(1, 1, 300_000, "S1", 1)]), "/detail/0/SaleInvId",
         "setSaleInvoice 'S1' is of customer 'KH1', not 'KH2'"),
        (sale_return("SR2", "2026-02-01", "KH1", [returned(1, 1, 300_000, "S1", 1)]), "/detail/0/SaleInvId",
         "dated 2026-02-01, is before setSaleInvoice 'S1' of 2026-02-05"),
        (sale_return("SR2", "2026-02-10", "KH1", [returned(1, 2, 300_000, "S1", 1)]), "/detail/0/Quantity",
         "Quantity 2 is more than the 1 left to return of line 1 of setSaleInvoice 'S1' (sold 2, returned 1)"),
        (sale_return("SR2", "2026-02-10", "KH1", [returned(1, 1, 300_000, "S1", 9)]), "/detail/0/SaleInvRefNumber",
         "setSaleInvoice 'S1' has no line 9"),
        (sale_return("SR2", "2026-03-10", "KH2", [returned(1, 1, D("100.00"), "U1", 1, rate=0)]),
         "/detail/0/SaleInvId", "setSaleInvoice 'U1' is in USD, the return in VND"),
    ]
    for doc, path, text in cases:
        await refused(books, "setSaleReturn", [doc], path, text)
    # Replacing SR1 itself may return the same unit again (its own stored row does not count).
    await books.send("setSaleReturn", [sale_return("SR1", "2026-02-11", "KH1", [returned(1, 2, 300_000, "S1", 1)])])
    assert await db.fetchval("SELECT quantity FROM voucher_allocation WHERE voucher_id = 'SR1'") == 2
    assert before != await snapshot(db)


# --- journals -----------------------------------------------------------------------------------------------

async def test_a_journal_posts_its_lines_partner_and_needs_one_on_a_control_account(
        books: LedgerApi, db: asyncpg.Connection) -> None:
    await books.send("setJournalVoucher", [{"VoucherId": "J1", "VoucherDate": "2026-03-31", "detail": [
        {"RefNumber": 1, "AccountCode": "635", "Debit": 5000},
        {"RefNumber": 2, "AccountCode": "131", "Credit": 5000, "CustomerCode": "KH1"}]}])
    assert await entries(db, "J1") == [("635", 5000, 0, None), ("131", 0, 5000, "KH1")]
    kh1 = next(r for r in (await books.report("getReceivables", dateTo="2026-03-31"))["data"]
               if r["PartnerCode"] == "KH1")
    assert (kh1["Total"], kh1["Unapplied"], kh1["Balance"]) == (1_100_000, -5000, 1_095_000)
    await ties(books, db)
    before = await snapshot(db)
    for account in ("131", "331"):
        await refused(books, "setJournalVoucher", [{"VoucherId": "J2", "VoucherDate": "2026-03-31", "detail": [
            {"RefNumber": 1, "AccountCode": "1111", "Debit": 5000},
            {"RefNumber": 2, "AccountCode": account, "Credit": 5000}]}], "/detail/1/CustomerCode",
            f"CustomerCode is required on line 2: account {account} is the")
    assert await snapshot(db) == before


# --- reports -------------------------------------------------------------------------------------------------

async def test_open_items_and_unapplied_items_tie_to_the_control_accounts(books: LedgerApi,
                                                                         db: asyncpg.Connection) -> None:
    await books.send("setCashReceipt", [
        receipt("R1", "2026-02-20", "KH1", 500_000, [pay("S1", 400_000)]),  # 100,000 unapplied
        receipt("R2", "2026-03-15", "KH2", D("40.00"), [pay("U1", D("40.00"))], Currency="USD", ExchangeRate=25100)])
    await books.send("setCashDisbursement", [disbursement("C1", "2026-03-20", "NCC1", 1_000_000)])  # on account
    await books.send("setSaleReturn", [sale_return("SR1", "2026-03-01", "KH1", [returned(1, 1, 100_000, None)])])
    await books.send("setJournalVoucher", [{"VoucherId": "J1", "VoucherDate": "2026-03-31", "detail": [
        {"RefNumber": 1, "AccountCode": "131", "Debit": 7000, "CustomerCode": "KH2"},
        {"RefNumber": 2, "AccountCode": "711", "Credit": 7000}]}])
    body = await books.report("getReceivables", dateTo="2026-03-31")
    rows = {r["PartnerCode"]: r for r in body["data"]}
    assert (rows["KH1"]["Total"], rows["KH1"]["Unapplied"]) == (700_000, -210_000)
    assert [(i["Form"], i["VoucherId"], i["Amount"]) for i in rows["KH1"]["UnappliedItems"]] == [
        ("setCashReceipt", "R1", -100_000), ("setSaleReturn", "SR1", -110_000)]
    # U1: 2,500,000 less 40 % of it at book value; R2 took 1,004,000 off 131, of which 4,000 gain came back.
    assert (rows["KH2"]["Total"], rows["KH2"]["Unapplied"]) == (1_500_000, 7000)
    payables = {r["PartnerCode"]: r for r in (await books.report("getPayables", dateTo="2026-03-31"))["data"]}
    assert (payables["NCC1"]["Total"], payables["NCC1"]["Unapplied"]) == (2_500_000, -1_000_000)
    for date in ("2026-02-10", "2026-02-28", "2026-03-16", "2026-03-31"):
        await ties(books, db, date)
    tenant = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    assert await subledger_total(db, tenant, "receivable", dt.date(2026, 3, 31)) == await balance(db, "131")
    assert await subledger_total(db, tenant, "payable", dt.date(2026, 3, 31)) == -await balance(db, "331")


# --- plans -------------------------------------------------------------------------------------------------

PLAN_TABLES = ("voucher", "voucher_line", "gl_entry", "voucher_allocation")


async def test_settlement_statements_start_from_the_batch_keys_on_never_analysed_tables(
        books: LedgerApi, db: asyncpg.Connection, registry: Registry) -> None:
    await init_connection(db)
    for table in PLAN_TABLES:
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    # Another tenant's rows: big tables, never analysed.
    await db.execute(
        "INSERT INTO voucher (tenant_id, form, voucher_id, voucher_date, currency, exchange_rate, document,"
        " change_seq, updated_at) SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, '2026-01-01', 'VND', 1, '{}',"
        " 0, now() FROM generate_series(1, 20000) v")
    await db.execute(
        "INSERT INTO voucher_line (tenant_id, form, voucher_id, line_no, item_code, quantity, amount)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, n, 'IT' || n, 1, 1"
        " FROM generate_series(1, 20000) v, generate_series(1, 5) n")
    await db.execute(
        "INSERT INTO gl_entry (tenant_id, form, voucher_id, entry_no, entry_date, account_code, debit)"
        " SELECT 1000 + v % 5, 'setSaleInvoice', 'O' || v, n, '2026-01-01', '131', 1"
        " FROM generate_series(1, 20000) v, generate_series(1, 5) n")
    await db.execute(
        "INSERT INTO voucher_allocation (tenant_id, form, voucher_id, seq, invoice_form, invoice_id, amount)"
        " SELECT 1000 + v % 5, 'setCashReceipt', 'R' || v, 1, 'setSaleInvoice', 'O' || v, 1"
        " FROM generate_series(1, 20000) v")
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    ids = ["S1", "U1"]
    statements: dict[str, tuple[str, list[Any]]] = {
        "lock invoices": (QUERIES["settlement_lock_invoices"], ["setSaleInvoice", ids]),
        "settled": (QUERIES["settlement_settled"], ["setSaleInvoice", ids, "setCashReceipt", ["R1"]]),
        "invoice lines": (QUERIES["settlement_invoice_lines"], ["setSaleInvoice", ids, [1, 1], "setSaleReturn",
                                                                ["SR1"]]),
        "invoice guard": (QUERIES["settlement_invoice_guard"], ["setSaleInvoice", ids]),
    }
    for name, docs in (("setCashReceipt", [receipt("R1", "2026-03-01", "KH1", 100, [pay("S1", 100)])]),
                       ("setSaleReturn", [sale_return("SR1", "2026-02-10", "KH1",
                                                      [returned(1, 1, 300_000, "S1", 1)])])):
        form, _ = registry.resolve(SYNC_VOUCHER, name)
        batch = vouchers.prepare(form, docs)
        await vouchers.check(db, form, tenant_id, batch)
        keys = sorted(batch.upserts)
        arrays = vouchers._batch_arrays(form, batch, keys, [batch.upserts[k][1] for k in keys], set(keys))
        statements[name] = (vouchers.write_statement(form), [form.name, *arrays])
        statements[f"{name} repost"] = (form.posting.statement(posting.STORED_SOURCES), [form.name, keys])
    for name, (sql, args) in statements.items():
        for scan in await write_plan_scans(db, sql, tenant_id, *args):
            where = f"{name}: {scan['Node Type']} on {scan['Relation Name']}"
            keyed = scan.get("Index Cond", "") + scan.get("Recheck Cond", "")
            assert scan["Node Type"] != "Seq Scan" or scan["Relation Name"] not in PLAN_TABLES, where
            if scan["Relation Name"] in PLAN_TABLES:
                assert "voucher_id" in keyed or "invoice_id" in keyed, where
