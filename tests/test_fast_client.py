"""A client written only against Fast's documentation, on a freshly created tenant.

It uses Fast's documented forms, fields and request shapes and nothing else: no currency or account is
created (Fast has no form for them), GetData carries only `Id`, `dateFrom` and `dateTo`, and it sends what
.NET and Java clients send by default (null for unset fields, DateTime values, numbers held in strings,
booleans for flags). Like the C# sample, which calls EnsureSuccessStatusCode() before reading `code`, it
treats any HTTP status other than 2xx as a failure, and it reads only `success`, `code` and `messages`.

The figures below are worked out by hand:

Stock (site K01). IT01's base unit is CHAI, and one THUNG is 24 CHAI.
  PI01 in: 10 THUNG = 240 CHAI of IT01; 50 KG of IT02.   RC01 in: 20 KG of IT02.
  SI01 out: 2 CHAI + 1 THUNG (24) = 26 CHAI of IT01; 1 KG of IT02.   SR01 back in: 1 CHAI of IT01.
  IS01 out: 5 KG of IT02.
  On hand: IT01 240 - 26 + 1 = 215 CHAI; IT02 50 + 20 - 1 - 5 = 64 KG.
Customer KH001's receivable (131):
  SI01 2026-06-10: three lines of 22,222 with 10 % VAT each (2,222 a line, 6,666 in all); VAT on the invoice
  total is 6,666.6, rounded 6,667, which is what the header says and what is posted: debit 73,333.
  SR01 2026-06-12: one line of 11,111 returned, VAT 1,111: credit 12,222.
  CR01 2026-06-15: cash 50,000: credit 50,000.
  Balance: debit 73,333, credit 62,222, closing 11,111. From 2026-06-11: opening 73,333.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, add_user

from gateway.forms import Registry
from gateway.tenants import create_tenant

DAY = "T00:00:00"  # .NET serialises a DateTime's date as midnight


class FastError(Exception):
    """What a Fast client raises: the HTTP call failed, or the body says it did not succeed."""


class FastClient:
    """The documentation's flow: getToken, then every call with `Authorization: <accesstoken>`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.token = ""

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.http.post(path, json=body, headers={"Authorization": self.token} if self.token else {})
        resp.raise_for_status()  # EnsureSuccessStatusCode(); axios rejects non-2xx the same way
        return resp.json()

    async def get_token(self, username: str, password: str) -> None:
        body = await self.call("/api/getToken", {"username": username, "password": password})
        assert body["success"] is True and body["code"] == 200, body
        self.token = body["token"]["accesstoken"]

    async def ok(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.call(path, body)
        if not answer["success"] or answer["code"] != 200:
            raise FastError(f"{answer['code']}: {answer['messages']}")
        return answer

    async def sync_data(self, form: str, data: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.ok("/api/SyncData", {"form": form, "data": data})

    async def sync_voucher(self, form: str, data: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.ok("/api/SyncVoucher", {"form": form, "data": data})

    async def get_data(self, form: str, id_: str = "", date_from: str = "", date_to: str = "") -> list[dict]:
        answer = await self.ok("/api/GetData", {"form": form, "Id": id_, "dateFrom": date_from, "dateTo": date_to})
        assert answer["records"] == len(answer["data"])
        return answer["data"]


@pytest.fixture
async def fast(client: httpx.AsyncClient, db: asyncpg.Connection, registry: Registry) -> FastClient:
    """A tenant made as an operator makes one (`gateway tenant add`), and a user: nothing else."""
    await create_tenant(db, registry, "fastco", "Fast Co")
    await add_user(db, "fastuser", "writer", tenant="fastco")
    fast = FastClient(client)
    await fast.get_token("fastuser", PASSWORD)
    return fast


MASTERS: list[tuple[str, list[dict[str, Any]]]] = [
    ("setCustomer", [
        # A .NET class with every property: unset ones go out as null.
        {"CustomerCode": "KH001", "CustomerName": "Công ty Alpha", "OtherName": None, "SaleCode": None,
         "Address": "12 Lê Lợi, Q1", "Partner": None, "GroupCode1": None, "GroupCode2": None, "GroupCode3": None,
         "PhoneNumber": "0901234567", "TaxCode": "0312345678", "Fax": None, "Email": None, "BankAccount": None,
         "BankName": None, "BranchName": None, "AccountName": None, "PaymentTerm": None, "Status": None,
         "SuplierYN": None, "EmployeeYN": None, "Description": None},
        {"CustomerCode": "NCC01", "CustomerName": "Nhà cung cấp Beta", "Status": "1", "SuplierYN": "1"},
        # Fast's own sample writes `status` in lower case; Java clients send booleans for flags.
        {"customercode": "KH002", "customername": "Gamma", "status": "1", "SuplierYN": False, "EmployeeYN": True},
    ]),
    ("setItem", [
        {"ItemCode": "IT01", "ItemName": "Nước suối 500ml", "OtherName": None, "Uom": "CHAI", "ItemType": "HH",
         "ItemGroup1": None, "ItemGroup2": None, "ItemGroup3": None, "Status": 1, "Price": "120000"},
        {"ItemCode": "IT02", "ItemName": "Đường", "Uom": "KG", "ItemType": "HH"},
    ]),
    ("UnitConversion", [{"ItemCode": "IT01", "Uom": "THUNG", "Coefficient": "24", "Status": "1"}]),
    ("setSite", [{"SiteCode": "K01", "SiteName": "Kho chính", "OtherName": None, "Address": None, "GroupCode": None,
                  "AgentYN": "0", "Note": None, "Status": "1"}]),
    ("setDepartment", [{"DeptCode": "D01", "DeptName": "Kinh doanh", "PhoneNumber": None, "Status": "1"}]),
    ("setJob", [{"JobCode": "J01", "JobName": "Dự án A", "Note": None, "Status": "1"}]),
    ("setContract", [{"ContractCode": "C01", "ContractName": "Hợp đồng khung", "ContractNo": "HD-01",
                      "SignedDate": "2026-01-05" + DAY, "FromDate": "2026-01-05" + DAY, "ToDate": "2026-12-31" + DAY,
                      "TotalAmount": "150000000", "Currency": None, "Note": None, "Status": "1"}]),
    ("setExpense", [{"ExpenseCode": "E01", "ExpenseName": "Phí ngân hàng", "DeptCode": "D01", "Status": "1"}]),
]


def sale_line(ref: str, item: str, uom: str, qty: str, price: int) -> dict[str, Any]:
    amount = int(qty) * price
    tax = amount // 10
    return {"RefNumber": ref, "ItemCode": item, "Uom": uom, "SiteCode": "K01", "Quantity": qty, "Promotion": None,
            "UnitPrice": price, "Amount": amount, "Discount": None, "TaxRate": 10, "TaxAmount": tax,
            "TotalAmount": amount + tax, "JobCode": None, "DeptCode": "D01", "ContractCode": None,
            "ExpenseCode": None}


VOUCHERS: list[tuple[str, dict[str, Any]]] = [
    ("setPurchaseInvoice", {
        "VoucherId": "PI01", "VoucherDate": "2026-06-01" + DAY, "VoucherNumber": None, "Description": "Nhập hàng",
        "SupplierCode": "NCC01", "TotalQuantity": 60, "TotalNetAmount": 2_200_000, "TotalTaxAmount": 220_000,
        "TotalAmount": 2_420_000,
        "detail": [{"RefNumber": 1, "ItemCode": "IT01", "Uom": "THUNG", "SiteCode": "K01", "Quantity": 10,
                    "UnitPrice": 120_000, "Amount": 1_200_000},
                   {"RefNumber": 2, "ItemCode": "IT02", "Uom": "KG", "SiteCode": "K01", "Quantity": 50,
                    "UnitPrice": 20_000, "Amount": 1_000_000}],
        # Fast types the VAT invoice's rate as text.
        "tax": [{"VatInvoiceNumber": "0000123", "VatInvoiceDate": "2026-06-01" + DAY, "VatInvoiceSymbol": "1C26TAA",
                 "TotalNetAmount": 2_200_000, "TaxRate": "10", "TaxAmount": 220_000}]}),
    ("setReceipt", {
        "VoucherId": "RC01", "VoucherDate": "2026-06-02", "Currency": None, "ExchangeRate": None, "Status": None,
        "CustomerCode": "NCC01", "TotalQuantity": "20", "TotalAmount": "400000",
        "detail": [{"RefNumber": "1", "ItemCode": "IT02", "Uom": "KG", "SiteCode": "K01", "Quantity": "20",
                    "UnitPrice": "20000", "Amount": "400000"}]}),
    ("setSaleInvoice", {
        "VoucherId": "SI01", "VoucherDate": "2026-06-10" + DAY, "Description": "Bán hàng", "CustomerCode": "KH001",
        "Currency": "VND", "ExchangeRate": 1, "Status": "1", "TotalQuantity": 4, "TotalNetAmount": 66_666,
        "TotalDiscountAmount": 0, "TotalTaxAmount": 6_667, "TotalAmount": 73_333,
        "detail": [sale_line("1", "IT01", "CHAI", "2", 11_111), sale_line("2", "IT01", "THUNG", "1", 22_222),
                   sale_line("3", "IT02", "KG", "1", 22_222)]}),
    ("setSaleReturn", {
        "VoucherId": "SR01", "VoucherDate": "2026-06-12" + DAY, "CustomerCode": "KH001", "TotalQuantity": 1,
        "TotalNetAmount": 11_111, "TotalDiscountAmount": 0, "TotalTaxAmount": 1_111, "TotalAmount": 12_222,
        "detail": [{**sale_line("1", "IT01", "CHAI", "1", 11_111), "SaleInvId": "SI01", "SaleInvRefNumber": "1"}]}),
    ("setIssue", {
        "VoucherId": "IS01", "VoucherDate": "2026-06-13", "VoucherNumber": "PX0001", "CustomerCode": "KH001",
        "TotalQuantity": 5, "TotalAmount": 100_000,
        "detail": [{"RefNumber": 1, "ItemCode": "IT02", "Uom": "KG", "SiteCode": "K01", "Quantity": 5,
                    "UnitPrice": 20_000, "Amount": 100_000, "JobCode": "J01"}]}),
    ("setCashReceipt", {
        "VoucherId": "CR01", "VoucherDate": "2026-06-15" + DAY, "CustomerCode": "KH001", "Payer": "Anh Nam",
        "Address": None, "DebitAccount": "1111", "TotalAmount": 50_000,
        "detail": [{"RefNumber": 1, "CreditAccount": "131", "Amount": 50_000, "ContractCode": "C01"}]}),
    ("setCashDisbursement", {
        "VoucherId": "CD01", "VoucherDate": "2026-06-16" + DAY, "CustomerCode": "NCC01", "Recipient": "Chị Lan",
        "Address": None, "CreditAccount": "1111", "TotalAmount": 1_000_000,
        "detail": [{"RefNumber": 1, "DebitAccount": "331", "Amount": 1_000_000, "ExpenseCode": "E01"}]}),
]

CATALOGS = {"getCustomer": ("CustomerCode", {"KH001", "NCC01", "KH002"}), "getItem": ("ItemCode", {"IT01", "IT02"}),
            "getSite": ("SiteCode", {"K01"}), "getDepartment": ("DeptCode", {"D01"}), "getJob": ("JobCode", {"J01"}),
            "getContract": ("ContractCode", {"C01"}), "getExpense": ("ExpenseCode", {"E01"})}
DOCUMENTS = {"getPurchaseInvoice": "PI01", "getSaleInvoice": "SI01", "getSaleReturn": "SR01", "getReceipt": "RC01",
             "getIssue": "IS01", "getCashReceipt": "CR01", "getCashDisbursement": "CD01"}


async def sync_everything(fast: FastClient) -> None:
    for form, data in MASTERS:
        assert (await fast.sync_data(form, data))["records"] == len(data), form
    for form, doc in VOUCHERS:
        assert (await fast.sync_voucher(form, [doc]))["records"] == 1, form


async def test_every_fast_form_works_in_fasts_shapes_on_a_fresh_tenant(fast: FastClient) -> None:
    await sync_everything(fast)
    for form, (key, codes) in CATALOGS.items():
        rows = await fast.get_data(form)
        assert {r[key] for r in rows} == codes, form
        first = min(codes)
        assert [r[key] for r in await fast.get_data(form, first)] == [first], form
    for form, vid in DOCUMENTS.items():
        docs = await fast.get_data(form)
        assert [d["VoucherId"] for d in docs] == [vid], form
        assert docs[0]["detail"] and docs[0]["Currency"] == "VND" and docs[0]["ExchangeRate"] == 1, form
    stock = {(r["ItemCode"], r["SiteCode"]): Decimal(str(r["Quantity"])) for r in await fast.get_data("getStock")}
    assert stock == {("IT01", "K01"): 215, ("IT02", "K01"): 64}
    balance = await fast.get_data("getBalance", "KH001")
    assert [(b["Opening"], b["Debit"], b["Credit"], b["Closing"]) for b in balance] == [(0, 73_333, 62_222, 11_111)]
    later = await fast.get_data("getBalance", "KH001", "2026-06-11" + DAY, "2026-06-30")
    assert [(b["Opening"], b["Debit"], b["Credit"], b["Closing"]) for b in later] == [(73_333, 0, 62_222, 11_111)]


async def test_what_dotnet_clients_send_is_read_exactly(fast: FastClient) -> None:
    await sync_everything(fast)
    customer = (await fast.get_data("getCustomer", "KH001"))[0]
    assert customer["Status"] == "1" and customer["SuplierYN"] == 0 and customer["OtherName"] is None
    gamma = (await fast.get_data("getCustomer", "KH002"))[0]
    assert (gamma["SuplierYN"], gamma["EmployeeYN"]) == (0, 1)
    contract = (await fast.get_data("getContract", "C01"))[0]
    assert contract["SignedDate"] == "2026-01-05" and contract["TotalAmount"] == 150_000_000
    assert (await fast.get_data("getItem", "IT01"))[0]["Status"] == "1"
    receipt = (await fast.get_data("getReceipt", "RC01"))[0]
    assert receipt["TotalAmount"] == 400_000 and receipt["detail"][0]["RefNumber"] == 1
    assert receipt["detail"][0]["Quantity"] == 20 and receipt["Status"] == "1"
    invoice = (await fast.get_data("getSaleInvoice", "SI01"))[0]
    assert invoice["VoucherDate"] == "2026-06-10" and invoice["TotalTaxAmount"] == 6_667
    purchase = (await fast.get_data("getPurchaseInvoice", "PI01"))[0]
    assert purchase["tax"][0]["TaxRate"] == 10  # one type for one meaning: a number, as on sales lines
    assert purchase["VoucherNumber"]  # assigned by the server when sent empty


async def test_whole_amounts_come_back_as_plain_digits(fast: FastClient) -> None:
    """A client that reads amounts into a long (Fast types them Long) cannot read 1.2E+5."""
    await sync_everything(fast)
    streamed = await fast.http.post("/api/GetData", json={"form": "getItem", "Id": "IT01", "dateFrom": "",
                                                          "dateTo": ""}, headers={"Authorization": fast.token})
    paged = await fast.http.post("/api/GetData", json={"form": "getItem", "Id": "IT01", "limit": 10},
                                 headers={"Authorization": fast.token})
    balance = await fast.http.post("/api/GetData", json={"form": "getBalance", "Id": "", "dateFrom": "",
                                                         "dateTo": ""}, headers={"Authorization": fast.token})
    for resp in (streamed, paged):
        assert '"Price":120000,' in resp.text and "E+" not in resp.text, resp.text
    assert '"Debit":73333,' in balance.text and "E+" not in balance.text, balance.text


async def test_vat_on_the_invoice_total_is_posted_and_the_books_balance(fast: FastClient, db: asyncpg.Connection) -> None:
    await sync_everything(fast)
    rows = await db.fetch("SELECT account_code, sum(debit) AS d, sum(credit) AS c FROM gl_entry"
                          " WHERE form = 'setSaleInvoice' AND source = 'post' GROUP BY account_code ORDER BY account_code")
    assert [(r["account_code"], r["d"], r["c"]) for r in rows] == [
        ("131", 73_333, 0), ("33311", 0, 6_667), ("5111", 0, 66_666)]
    total = await db.fetchrow("SELECT sum(debit) AS d, sum(credit) AS c FROM gl_entry")
    assert total["d"] == total["c"]
    # Stock moves in base units: the carton line moved 24 bottles.
    moved = await db.fetchval("SELECT sum(qty_out) FROM stock_move WHERE voucher_id = 'SI01' AND item_code = 'IT01'")
    assert moved == 26


async def test_a_rounding_gap_larger_than_half_a_unit_per_line_is_refused(fast: FastClient) -> None:
    await sync_everything(fast)
    doc = {**dict(VOUCHERS)["setSaleInvoice"], "VoucherId": "SI02", "TotalTaxAmount": 6_669, "TotalAmount": 73_335}
    with pytest.raises(FastError, match="TotalTaxAmount 6669 differs"):
        await fast.sync_voucher("setSaleInvoice", [doc])
    doc = {**doc, "TotalTaxAmount": 6_667, "TotalAmount": 73_334}  # must equal net - discount + tax exactly
    with pytest.raises(FastError, match="TotalAmount 73334 is not"):
        await fast.sync_voucher("setSaleInvoice", [doc])


async def test_refusals_come_as_http_200_with_fasts_code_and_words_in_messages(fast: FastClient) -> None:
    await sync_everything(fast)
    bad = {**dict(VOUCHERS)["setSaleInvoice"], "VoucherId": "SI09", "CustomerCode": "NOPE"}
    answer = await fast.call("/api/SyncVoucher", {"form": "setSaleInvoice", "data": [bad]})
    assert answer["success"] is False and answer["code"] == 601
    assert "record 0 (SI09) /CustomerCode: CustomerCode 'NOPE' does not exist" in answer["messages"]
    answer = await fast.call("/api/SyncData", {"form": "setNothing", "data": [{}]})
    assert (answer["success"], answer["code"]) == (False, 201)
    answer = await fast.call("/api/SyncData", {"form": "setCustomer", "data": []})
    assert (answer["success"], answer["code"]) == (False, 202)
    many = [{"CustomerCode": f"X{i}"} for i in range(40)]  # 40 records without a name
    answer = await fast.call("/api/SyncData", {"form": "setCustomer", "data": many})
    assert answer["code"] == 601 and answer["messages"].endswith("; and 37 more") and len(answer["messages"]) < 1000


async def test_a_line_in_a_unit_without_a_conversion_is_refused_naming_the_line(fast: FastClient) -> None:
    await sync_everything(fast)
    doc = {**dict(VOUCHERS)["setIssue"], "VoucherId": "IS02", "VoucherNumber": "PX0002"}
    doc["detail"] = [{**doc["detail"][0], "Uom": "BAO"}]
    with pytest.raises(FastError, match=r"/detail/0/Uom: Uom 'BAO' of line 1 has no UnitConversion"):
        await fast.sync_voucher("setIssue", [doc])


async def test_a_pull_without_paging_gets_every_customer(fast: FastClient) -> None:
    customers = [{"CustomerCode": f"KH{i:05d}", "CustomerName": f"Customer {i}"} for i in range(1_505)]
    await fast.sync_data("setCustomer", customers)
    rows = await fast.get_data("getCustomer")
    assert len(rows) == 1_505 and {r["CustomerCode"] for r in rows} == {c["CustomerCode"] for c in customers}


async def test_endpoint_paths_match_as_aspnet_routes_do(fast: FastClient) -> None:
    for path in ("/api/syncdata", "/API/SYNCDATA/", "/api/SyncData/"):
        answer = await fast.ok(path, {"form": "setDepartment", "data": [{"DeptCode": "D09", "DeptName": "Kho"}]})
        assert answer["records"] == 1, path
    assert (await fast.ok("/api/getdata/", {"form": "getDepartment", "Id": "D09", "dateFrom": "", "dateTo": ""}))[
        "data"][0]["DeptName"] == "Kho"


async def test_a_body_with_a_utf8_byte_order_mark_is_read(fast: FastClient) -> None:
    body = '\ufeff{"form": "setDepartment", "data": [{"DeptCode": "D10", "DeptName": "Kế toán"}]}'.encode()
    resp = await fast.http.post("/api/SyncData", content=body, headers={"Authorization": fast.token,
                                                                       "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200 and resp.json()["records"] == 1, resp.text
