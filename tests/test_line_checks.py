"""The arithmetic of a voucher checked before it is written, rounding to the base currency in the ledger,
and sales summary quantities in base units.

Amounts carry at most their currency's decimals (VND 0, USD 2); header totals equal the sums of their lines
exactly; a priced line's TotalAmount is Amount - Discount + TaxAmount exactly and its TaxAmount (Amount -
Discount) x TaxRate / 100 within half a unit of the last decimal; TaxRate is its TaxCode's rate; exchange
rates are 1 in the base currency and at most 10 decimals elsewhere. Every refusal is a 601 naming the field,
and nothing of the voucher is written.
"""

from __future__ import annotations

import copy
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import msgspec
import pytest
from conftest import assert_envelope
from test_vouchers import VoucherApi, tables, vapi  # noqa: F401  (vapi is a fixture)

D = Decimal


def encode(body: Any) -> bytes:
    """JSON with decimals written exactly as given (5.00 stays 5.00)."""
    return msgspec.json.Encoder(decimal_format="number").encode(body)


async def send(api: VoucherApi, form: str, docs: list[dict]) -> dict:
    resp = await api.client.post("/api/SyncVoucher", headers={"Authorization": api.token},
                                 content=encode({"form": form, "data": docs}))
    return assert_envelope(resp)


def sale_line(ref: int, amount: Any, rate: Any = 10, tax: Any = None, discount: Any = 0, item: str = "SV1",
              **extra: Any) -> dict:
    amount, discount = D(str(amount)), D(str(discount))
    tax = D(str(tax)) if tax is not None else (amount - discount) * D(str(rate)) / 100
    return {"RefNumber": ref, "ItemCode": item, "Uom": "PCS", "SiteCode": "K1", "Quantity": 1, "UnitPrice": amount,
            "Amount": amount, "Discount": discount, "TaxRate": rate, "TaxAmount": tax,
            "TotalAmount": amount - discount + tax, **extra}


def sale(vid: str, *lines: dict, **header: Any) -> dict:
    lines = lines or (sale_line(1, 200_000), sale_line(2, 50_000, rate=8))
    return {"VoucherId": vid, "VoucherDate": "2026-03-15", "VoucherNumber": vid[-12:], "CustomerCode": "KH1",
            "TotalQuantity": sum(D(str(x["Quantity"])) for x in lines),
            "TotalNetAmount": sum(x["Amount"] for x in lines),
            "TotalDiscountAmount": sum(x["Discount"] for x in lines),
            "TotalTaxAmount": sum(x["TaxAmount"] for x in lines),
            "TotalAmount": sum(x["TotalAmount"] for x in lines), "detail": list(lines), **header}


def purchase(vid: str, net: Any = 300, rate: Any = 10, tax: Any = 30, **header: Any) -> dict:
    return {"VoucherId": vid, "VoucherDate": "2026-03-01", "SupplierCode": "NCC1", "TotalQuantity": 3,
            "TotalNetAmount": net, "TotalTaxAmount": tax, "TotalAmount": D(str(net)) + D(str(tax)),
            "detail": [{"RefNumber": 1, "ItemCode": "SV1", "Uom": "PCS", "SiteCode": "K1", "Quantity": 3,
                        "UnitPrice": D(str(net)) / 3, "Amount": net}],
            "tax": [{"VatInvoiceNumber": "0001234", "VatInvoiceDate": "2026-03-01", "TotalNetAmount": net,
                     "TaxRate": rate, "TaxAmount": tax}], **header}


def journal(vid: str, debits: list[Any], credits: list[Any], **header: Any) -> dict:
    lines = [{"AccountCode": "1111", "Debit": d} for d in debits] + [{"AccountCode": "511", "Credit": c}
                                                                      for c in credits]
    return {"VoucherId": vid, "VoucherDate": "2026-03-31",
            "detail": [{"RefNumber": n, **x} for n, x in enumerate(lines, 1)], **header}


@pytest.fixture
async def capi(vapi: VoucherApi) -> VoucherApi:  # noqa: F811
    """The masters of tests/test_vouchers.py, a service sold without stock, a 5 % tax code, a box of 12."""
    for form, data in (
        ("setItem", [{"ItemCode": "SV1", "ItemName": "Installation", "ItemType": "DV", "StockTracked": 0},
                     {"ItemCode": "W1", "ItemName": "Widget", "ItemType": "HH", "Uom": "PCS"},
                     {"ItemCode": "HR", "ItemName": "Consulting", "ItemType": "DV", "StockTracked": 0}]),
        ("UnitConversion", [{"ItemCode": "W1", "Uom": "BOX", "Coefficient": 12}]),
        ("setTaxCode", [{"TaxCode": "VAT5", "TaxName": "VAT 5%", "TaxRate": 5},
                        {"TaxCode": "KCT", "TaxName": "Not taxable", "TaxRate": -1}]),
        ("setAccount", [{"AccountCode": "1111", "AccountName": "Cash", "AccountType": "asset"}]),
    ):
        assert (await vapi.sync(form, data)).status_code == 200, form
    return vapi


async def refused(api: VoucherApi, db: asyncpg.Connection, form: str, doc: dict, path: str, *words: str) -> str:
    """Sends `doc`: a 601 naming `path` (its message holding `words`), and nothing written at all."""
    before = await tables(db), await db.fetch("SELECT * FROM gl_entry ORDER BY form, voucher_id, entry_no")
    body = await send(api, form, [doc])
    assert body["code"] == 601, body
    messages = [e["message"] for e in body["errors"] if e["path"] == path and e["key"] == doc["VoucherId"]]
    matching = [m for m in messages if all(w in m for w in words)]
    assert matching, (messages, body["errors"])
    assert (await tables(db), await db.fetch("SELECT * FROM gl_entry ORDER BY form, voucher_id, entry_no")) == before
    return matching[0]


# --- header totals and amount decimals ---------------------------------------------------------------------

async def test_a_header_total_must_equal_its_lines_exactly(capi: VoucherApi, db: asyncpg.Connection) -> None:
    # 0.4 dong above its lines: no longer rounded away, and not a VND amount either.
    await refused(capi, db, "setSaleInvoice", sale("S1", TotalNetAmount=D("250000.4")), "/TotalNetAmount",
                  "250000.4", "is not the sum of the lines' Amount (250000)")
    await refused(capi, db, "setSaleInvoice", sale("S1", TotalQuantity=D("2.4")), "/TotalQuantity",
                  "TotalQuantity 2.4 is not the sum of the lines' Quantity (2)")
    usd = sale("U1", sale_line(1, D("10.00")), Currency="USD", ExchangeRate=25_000)
    await refused(capi, db, "setSaleInvoice", {**usd, "TotalNetAmount": D("10.01"), "TotalAmount": D("11.01")},
                  "/TotalNetAmount", "10.01", "(10.00)")
    assert (await send(capi, "setSaleInvoice", [usd]))["result"]["inserted"] == 1


AMOUNT_CASES = [
    ("setSaleInvoice", ["TotalAmount"], D("275000.5"), "/TotalAmount"),
    ("setSaleInvoice", ["detail", 0, "Amount"], D("200000.5"), "/detail/0/Amount"),
    ("setSaleInvoice", ["detail", 0, "Discount"], D("0.5"), "/detail/0/Discount"),
    ("setSaleInvoice", ["detail", 1, "TaxAmount"], D("4000.1"), "/detail/1/TaxAmount"),
    ("setSaleInvoice", ["detail", 1, "TotalAmount"], D("54000.01"), "/detail/1/TotalAmount"),
    ("setPurchaseInvoice", ["tax", 0, "TaxAmount"], D("30.2"), "/tax/0/TaxAmount"),
    ("setPurchaseInvoice", ["tax", 0, "TotalNetAmount"], D("300.5"), "/tax/0/TotalNetAmount"),
    ("setJournalVoucher", ["detail", 0, "Debit"], D("500.5"), "/detail/0/Debit"),
    ("setCashReceipt", ["allocation", 0, "Amount"], D("100.5"), "/allocation/0/Amount"),
    ("setCashReceipt", ["detail", 0, "Amount"], D("100.5"), "/detail/0/Amount"),
]
DOCS = {
    "setSaleInvoice": lambda: sale("S9"),
    "setPurchaseInvoice": lambda: purchase("P9"),
    "setJournalVoucher": lambda: journal("J9", [D("500.5")], [D("500.5")]),  # balanced, or refused before
    "setCashReceipt": lambda: {"VoucherId": "R9", "VoucherDate": "2026-03-20", "CustomerCode": "KH1",
                               "DebitAccount": "1111", "TotalAmount": 1000,
                               "detail": [{"RefNumber": 1, "CreditAccount": "511", "Amount": 1000}],
                               "allocation": [{"InvoiceId": "S0", "Amount": 100}]},
}


@pytest.mark.parametrize("form,path,value,pointer", AMOUNT_CASES, ids=[c[3] for c in AMOUNT_CASES])
async def test_an_amount_with_more_decimals_than_its_currency_is_refused(
        capi: VoucherApi, db: asyncpg.Connection, form: str, path: list, value: Decimal, pointer: str) -> None:
    doc = copy.deepcopy(DOCS[form]())
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    await refused(capi, db, form, doc, pointer, f"{path[-1]} {value} has more decimal places than the 0 of VND")


async def test_trailing_zeros_quantities_and_prices_are_not_decimals_of_money(capi: VoucherApi,
                                                                              db: asyncpg.Connection) -> None:
    line = {**sale_line(1, D("200000.00"), tax=D("20000.000")), "Quantity": D("1.5"), "UnitPrice": D("133333.3333")}
    body = await send(capi, "setSaleInvoice", [sale("S1", line, TotalQuantity=D("1.5"))])
    assert body["result"]["inserted"] == 1, body
    cents = sale("U1", sale_line(1, D("10.25"), tax=D("1.03")), Currency="USD", ExchangeRate=25_000)
    assert (await send(capi, "setSaleInvoice", [cents]))["result"]["inserted"] == 1
    await refused(capi, db, "setSaleInvoice", sale("U2", sale_line(1, D("10.255"), tax=D("1.03")), Currency="USD",
                                                   ExchangeRate=25_000),
                  "/detail/0/Amount", "10.255 has more decimal places than the 2 of USD")


# --- line checks ---------------------------------------------------------------------------------------------

async def test_a_lines_total_must_be_amount_less_discount_plus_tax(capi: VoucherApi, db: asyncpg.Connection) -> None:
    line = sale_line(1, 100_000, discount=10_000)
    bad = {**line, "TotalAmount": 100_000 + 9_000}  # the discount left out
    await refused(capi, db, "setSaleInvoice", sale("S1", bad), "/detail/0/TotalAmount",
                  "TotalAmount 109000 of line 1 is not Amount - Discount + TaxAmount (100000 - 10000 + 9000 = 99000)")
    assert (await send(capi, "setSaleInvoice", [sale("S1", line)]))["result"]["inserted"] == 1


async def test_tax_must_agree_with_the_rate_within_half_a_unit(capi: VoucherApi, db: asyncpg.Connection) -> None:
    # 22,222 at 10 % is 2,222.2: 2,222 is within half a dong, 2,223 is not.
    within = sale("S1", sale_line(1, 22_222, tax=2_222), sale_line(2, 22_222, tax=2_222))
    assert (await send(capi, "setSaleInvoice", [within]))["result"]["inserted"] == 1
    await refused(capi, db, "setSaleInvoice", sale("S2", sale_line(1, 22_222, tax=2_223)), "/detail/0/TaxAmount",
                  "TaxAmount 2223 of line 1 is not (Amount - Discount) x TaxRate / 100 (22222 x 10 / 100 = 2222.2)",
                  "allowance of 0.5")
    # Net of discount; and a wrong rate is a wrong tax.
    await refused(capi, db, "setSaleInvoice", sale("S3", sale_line(1, 100_000, discount=50_000, tax=10_000)),
                  "/detail/0/TaxAmount", "(50000 x 10 / 100 = 5000")
    # Not taxable (-1) and not declared (-2) tax nothing.
    assert (await send(capi, "setSaleInvoice", [sale("S4", sale_line(1, 100_000, rate=-1, tax=0),
                                                     sale_line(2, 100_000, rate=-2, tax=0))]))["code"] == 200
    await refused(capi, db, "setSaleInvoice", sale("S5", sale_line(1, 100_000, rate=-1, tax=10_000)),
                  "/detail/0/TaxAmount", "= 0)")
    # In USD half a cent.
    usd = sale("U1", sale_line(1, D("10.05"), tax=D("1.01")), Currency="USD", ExchangeRate=25_000)
    assert (await send(capi, "setSaleInvoice", [usd]))["code"] == 200
    message = await refused(capi, db, "setSaleInvoice", sale("U2", sale_line(1, D("10.05"), tax=D("1.02")),
                                                             Currency="USD", ExchangeRate=25_000),
                            "/detail/0/TaxAmount", "(10.05 x 10 / 100 = 1.005)")
    assert message.endswith("within the rounding allowance of 0.005")


async def test_the_vat_invoice_lines_of_a_purchase_agree_with_their_rate(capi: VoucherApi,
                                                                         db: asyncpg.Connection) -> None:
    assert (await send(capi, "setPurchaseInvoice", [purchase("P1"), purchase("P2", 300, "-1", 0)]))["code"] == 200
    await refused(capi, db, "setPurchaseInvoice", purchase("P3", 300, "10", 33), "/tax/0/TaxAmount",
                  "TaxAmount 33 of VAT invoice line 1 is not TotalNetAmount x TaxRate / 100 (300 x 10 / 100 = 30")
    await refused(capi, db, "setPurchaseInvoice", purchase("P4", 300, "-1", 30), "/tax/0/TaxAmount", "= 0)")


async def test_tax_rate_must_be_the_tax_codes_rate(capi: VoucherApi, db: asyncpg.Connection) -> None:
    ok = sale("S1", sale_line(1, 100_000, TaxCode="VAT10"), sale_line(2, 100_000, rate=5, TaxCode="VAT5"),
              sale_line(3, 100_000, rate=-1, tax=0, TaxCode="KCT"))
    assert (await send(capi, "setSaleInvoice", [ok]))["result"]["inserted"] == 1
    await refused(capi, db, "setSaleInvoice", sale("S2", sale_line(1, 100_000, rate=5, TaxCode="VAT10")),
                  "/detail/0/TaxRate", "TaxRate 5 of line 1 is not the rate of TaxCode 'VAT10' (10)")
    await refused(capi, db, "setSaleReturn", sale("R1", sale_line(1, 100_000, rate=10, TaxCode="VAT5")),
                  "/detail/0/TaxRate", "TaxCode 'VAT5' (5)")


async def test_a_discount_may_not_exceed_the_amount_nor_be_negative(capi: VoucherApi,
                                                                    db: asyncpg.Connection) -> None:
    more = {**sale_line(1, 100_000, rate=0, discount=100_001), "TotalAmount": 0}
    await refused(capi, db, "setSaleInvoice", sale("S1", more), "/detail/0/Discount",
                  "Discount 100001 of line 1 is more than its Amount 100000")
    await refused(capi, db, "setSaleInvoice", sale("S2", sale_line(1, 100_000, rate=0, discount=-1)),
                  "/detail/0/Discount", "minimum")
    whole = sale("S3", sale_line(1, 100_000, discount=100_000))  # given away: discount equal to the amount
    assert (await send(capi, "setSaleInvoice", [whole]))["result"]["inserted"] == 1


async def test_partial_mode_writes_the_vouchers_whose_lines_add_up(capi: VoucherApi, db: asyncpg.Connection) -> None:
    bad = sale("S2", {**sale_line(1, 100_000), "TotalAmount": 1})
    resp = await capi.client.post("/api/SyncVoucher", headers={"Authorization": capi.token},
                                  content=encode({"form": "setSaleInvoice", "data": [sale("S1"), bad],
                                                  "mode": "partial"}))
    body = assert_envelope(resp)
    assert body["result"]["inserted"] == 1 and body["result"]["failed"] == 1
    assert {e["path"] for e in body["errors"]} == {"/detail/0/TotalAmount", "/TotalAmount"}
    assert [r["voucher_id"] for r in await db.fetch("SELECT voucher_id FROM voucher")] == ["S1"]


# --- exchange rates ----------------------------------------------------------------------------------------

async def test_the_base_currency_rate_is_1_whether_or_not_currency_is_sent(capi: VoucherApi,
                                                                           db: asyncpg.Connection) -> None:
    for doc in (sale("S1", ExchangeRate=2), sale("S2", Currency="VND", ExchangeRate=D("1.0001"))):
        await refused(capi, db, "setSaleInvoice", doc, "/ExchangeRate", "ExchangeRate must be 1 for the base "
                      f"currency VND, got {doc['ExchangeRate']}")
    body = await send(capi, "setSaleInvoice", [sale("S3", ExchangeRate=D("1.000")), sale("S4")])
    assert body["result"]["inserted"] == 2
    assert {r["exchange_rate"] for r in await db.fetch("SELECT exchange_rate FROM voucher")} == {1}


async def test_exchange_rates_have_a_declared_precision(capi: VoucherApi, db: asyncpg.Connection) -> None:
    def usd(vid: str, rate: Any) -> dict:
        return sale(vid, sale_line(1, D("10.00")), Currency="USD", ExchangeRate=rate)

    await refused(capi, db, "setSaleInvoice", usd("U1", D("25000.12345678901")), "/ExchangeRate",
                  "ExchangeRate 25000.12345678901 has more than 10 decimal places")
    forty = D("25000." + "1" * 40)
    await refused(capi, db, "setSaleInvoice", usd("U2", forty), "/ExchangeRate", "more than 10 decimal places")
    await refused(capi, db, "setSaleInvoice", usd("U3", 10**20), "/ExchangeRate")
    for rate in (0, -25_000):
        await refused(capi, db, "setSaleInvoice", usd(f"U{rate}", rate), "/ExchangeRate")
    await refused(capi, db, "setSaleInvoice", {k: v for k, v in usd("U4", 1).items() if k != "ExchangeRate"},
                  "/ExchangeRate", "ExchangeRate is required for USD")
    ok = [usd("U5", D("25000.1234567891")), usd("U6", D("99999999999999999999.5"))]
    assert (await send(capi, "setSaleInvoice", ok))["result"]["inserted"] == 2


# --- rounding to the base currency in the ledger -------------------------------------------------------------

async def entries(db: asyncpg.Connection, vid: str) -> list[tuple]:
    return [tuple(r) for r in await db.fetch(
        "SELECT entry_no, account_code, debit, credit, partner_code FROM gl_entry WHERE voucher_id = $1"
        " ORDER BY entry_no", vid)]


async def test_a_foreign_journal_whose_lines_round_unevenly_posts_the_difference(
        capi: VoucherApi, db: asyncpg.Connection) -> None:
    # At 1,000.5 a dollar each line is x.5 dong, rounded half away from zero: 3 x 1,001 against 3,002.
    loss = journal("J1", [D("3.00")], [D("1.00")] * 3, Currency="USD", ExchangeRate=D("1000.5"))
    gain = journal("J2", [D("1.00")] * 3, [D("3.00")], Currency="USD", ExchangeRate=D("1000.5"))
    even = journal("J3", [D("2.00")], [D("1.50"), D("0.50")], Currency="USD", ExchangeRate=D("1000.5"))
    assert (await send(capi, "setJournalVoucher", [loss, gain, even]))["result"]["inserted"] == 3
    assert await db.fetchval("SELECT debit::text FROM gl_entry WHERE voucher_id = 'J1' AND account_code = '811'") == "1"
    assert await entries(db, "J1") == [(1, "1111", 3002, 0, None), (2, "511", 0, 1001, None),
                                       (3, "511", 0, 1001, None), (4, "511", 0, 1001, None),
                                       (5, "811", 1, 0, None)]
    assert await entries(db, "J2") == [(1, "1111", 1001, 0, None), (2, "1111", 1001, 0, None),
                                       (3, "1111", 1001, 0, None), (4, "511", 0, 3002, None),
                                       (5, "711", 0, 1, None)]
    # 2,001 against 1,500.75 and 500.25, rounded 1,501 and 500: even, no rounding entry.
    assert [e[1:4] for e in await entries(db, "J3")] == [("1111", 2001, 0), ("511", 0, 1501), ("511", 0, 500)]
    # A tenant's own rounding accounts are used.
    await db.execute("INSERT INTO posting_account (tenant_id, role, account_code) SELECT id, 'rounding_loss', '8118'"
                     " FROM tenant")
    assert (await send(capi, "setJournalVoucher", [{**loss, "Description": "again"}]))["result"]["updated"] == 1
    assert (await entries(db, "J1"))[-1] == (5, "8118", 1, 0, None)
    # Replaced by a journal that rounds evenly, the rounding entry goes; cancelled, everything goes.
    assert (await send(capi, "setJournalVoucher", [{**even, "VoucherId": "J1"}]))["result"]["updated"] == 1
    assert [e[1] for e in await entries(db, "J1")] == ["1111", "511", "511"]
    assert (await send(capi, "setJournalVoucher", [{"VoucherId": "J2", "Status": "0"}]))["result"]["deleted"] == 1
    assert await entries(db, "J2") == []


async def test_every_ledger_amount_is_in_the_base_currencys_decimals_and_every_voucher_balances(
        capi: VoucherApi, db: asyncpg.Connection) -> None:
    rate = D("25123.4567")
    lines = [sale_line(1, D("10.01"), tax=D("1.00")), sale_line(2, D("3.33"), rate=8, discount=D("0.11"), tax=D("0.26")),
             sale_line(3, D("7.77"), rate=5, tax=D("0.39"))]
    for form, docs in (
        ("setSaleInvoice", [sale("U1", *lines, Currency="USD", ExchangeRate=rate),
                            sale("V1", sale_line(1, 22_222, tax=2_222), sale_line(2, 22_222, tax=2_222))]),
        ("setSaleReturn", [sale("UR1", sale_line(1, D("3.33"), rate=8, tax=D("0.27")), Currency="USD",
                                ExchangeRate=D("24999.99"))]),
        ("setPurchaseInvoice", [purchase("UP1", D("100.01"), 10, D("10.00"), Currency="USD",
                                         ExchangeRate=D("25000.3333"))]),
        ("setCashReceipt", [{"VoucherId": "UC1", "VoucherDate": "2026-03-20", "CustomerCode": "KH1", "Currency": "USD",
                             "ExchangeRate": D("25100.77"), "DebitAccount": "1111", "TotalAmount": D("12.35"),
                             "detail": [{"RefNumber": 1, "CreditAccount": "511", "Amount": D("5.01")},
                                        {"RefNumber": 2, "CreditAccount": "511", "Amount": D("7.34")}]}]),
        ("setJournalVoucher", [journal("UJ1", [D("0.07")] * 3, [D("0.21")], Currency="USD", ExchangeRate=D("7.5"))]),
    ):
        body = await send(capi, form, docs)
        assert body["code"] == 200, body
    forms = {r["form"] for r in await db.fetch("SELECT DISTINCT form FROM gl_entry")}
    assert forms == {"setSaleInvoice", "setSaleReturn", "setPurchaseInvoice", "setCashReceipt", "setJournalVoucher"}
    assert await db.fetchval("SELECT count(*) FROM gl_entry") > 20
    fractions = await db.fetch("SELECT voucher_id, entry_no, debit, credit FROM gl_entry"
                               " WHERE debit <> trunc(debit) OR credit <> trunc(credit)")
    assert fractions == []
    # Not even as trailing zeros: 1, not 1.0000.
    assert await db.fetch("SELECT voucher_id, entry_no, debit::text, credit::text FROM gl_entry"
                          " WHERE scale(debit) > 0 OR scale(credit) > 0") == []
    unbalanced = await db.fetch("SELECT form, voucher_id, sum(debit), sum(credit) FROM gl_entry"
                                " GROUP BY form, voucher_id HAVING sum(debit) <> sum(credit)")
    assert unbalanced == []
    assert await db.fetchval("SELECT count(*) FROM gl_entry WHERE debit = 0 AND credit = 0") == 0
    # The USD invoice: each line's revenue is its net x rate, rounded half away from zero.
    revenue = [r["credit"] for r in await db.fetch(
        "SELECT credit FROM gl_entry WHERE voucher_id = 'U1' AND account_code = '5111' ORDER BY entry_no")]
    assert revenue == [(n * rate).quantize(D(1), ROUND_HALF_UP) for n in (D("10.01"), D("3.22"), D("7.77"))]
    # The journal: 3 x 0.525 rounds to 3 x 1 against 1.575 to 2: the debits come out 1 higher, a gain.
    assert (await entries(db, "UJ1"))[-1] == (5, "711", 0, 1, None)


async def test_a_usd_tenant_posts_cents(capi: VoucherApi, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE tenant SET base_currency = 'USD'")
    # 100,000 dong at 0.00004505 is 4.505 dollars, rounded 4.51 (x 3 = 13.53); 300,000 is 13.515, rounded 13.52.
    doc = journal("J1", [300_000], [100_000] * 3, Currency="VND", ExchangeRate=D("0.00004505"))
    assert (await send(capi, "setJournalVoucher", [doc]))["result"]["inserted"] == 1
    assert await entries(db, "J1") == [(1, "1111", D("13.52"), 0, None), (2, "511", 0, D("4.51"), None),
                                       (3, "511", 0, D("4.51"), None), (4, "511", 0, D("4.51"), None),
                                       (5, "811", D("0.01"), 0, None)]
    usd = sale("U1", sale_line(1, D("10.00")), Currency="USD", ExchangeRate=2)
    assert (await send(capi, "setSaleInvoice", [usd]))["errors"][0]["path"] == "/ExchangeRate"


# --- sales summary in base units ------------------------------------------------------------------------------

async def test_the_sales_summary_counts_quantities_in_base_units(capi: VoucherApi) -> None:
    receipt = {"VoucherId": "GR1", "VoucherDate": "2026-03-01", "CustomerCode": "KH1", "TotalQuantity": 10,
               "TotalAmount": 1_200_000,
               "detail": [{"RefNumber": 1, "ItemCode": "W1", "Uom": "BOX", "SiteCode": "K1", "Quantity": 10,
                           "UnitPrice": 120_000, "Amount": 1_200_000}]}
    assert (await send(capi, "setReceipt", [receipt]))["code"] == 200
    pcs = {**sale_line(1, 50_000, item="W1"), "Quantity": 5, "UnitPrice": 10_000}
    box = {**sale_line(2, 240_000, item="W1"), "Uom": "BOX", "Quantity": 2, "UnitPrice": 120_000}
    hours = {**sale_line(3, 300_000, item="HR"), "Uom": "HOUR", "Quantity": 3, "UnitPrice": 100_000}
    body = await send(capi, "setSaleInvoice", [sale("S1", pcs, box, hours, VoucherDate="2026-03-10")])
    assert body["code"] == 200, body
    back = {**sale_line(1, 120_000, item="W1"), "Uom": "BOX", "Quantity": 1, "UnitPrice": 120_000}
    assert (await send(capi, "setSaleReturn", [sale("R1", back, VoucherDate="2026-03-12")]))["code"] == 200

    async def summary(**params: Any) -> list[dict]:
        return assert_envelope(await capi.get("getSalesSummary", **params))["data"]

    items = {r["Key"]: (r["Uom"], r["Quantity"], r["NetAmount"]) for r in await summary(group_by="item")}
    # 5 PCS + 2 BOX of 12 - 1 BOX = 17 PCS; the consulting hours as sent, the item having no base unit.
    assert items == {"W1": ("PCS", 17, 170_000), "HR": ("HOUR", 3, 300_000)}
    assert [(r["Key"], r["Quantity"]) for r in await summary()] == [("2026-03", 20)]
    assert [(r["Key"], r["Quantity"]) for r in await summary(group_by="customer")] == [("KH1", 20)]
    assert "Uom" not in (await summary())[0]
