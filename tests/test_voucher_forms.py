"""Every registered voucher form, end to end: one valid sample each, synced, read back, replaced, cancelled,
refused on a wrong total or an unknown reference, and reached through each of its aliases."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from conftest import assert_envelope
from test_vouchers import VoucherApi, tables, vapi  # noqa: F401  (vapi is a fixture)

from forms import FORM_MODULES
from gateway.forms import build_registry
from gateway.vouchers import DETAIL, VoucherForm

REGISTRY = build_registry(FORM_MODULES)
VOUCHER_FORMS: list[VoucherForm] = [f for f in REGISTRY.forms if isinstance(f, VoucherForm)]
by_form = pytest.mark.parametrize("form", VOUCHER_FORMS, ids=lambda f: f.name)

# The header defaults GetData gives back when the sender left them out.
DEFAULTS = {"Currency": "VND", "ExchangeRate": 1, "Status": "1"}
UNKNOWN = "ZZ-NOPE"

# Analytic codes, spread over the first two lines of every sample so that each reference is exercised.
A1: dict[str, Any] = {"JobCode": "J1", "DeptCode": "D1"}
A2: dict[str, Any] = {"ContractCode": "C1", "ExpenseCode": "E1"}


@pytest.fixture
async def fapi(vapi: VoucherApi) -> VoucherApi:  # noqa: F811
    """The masters of tests/test_vouchers.py plus what the other forms name: a second site, accounts, analytics."""
    for form, data in (
        ("setSite", [{"SiteCode": "K2", "SiteName": "Second store"}]),
        ("setTaxCode", [{"TaxCode": "VAT10", "TaxName": "VAT 10%", "TaxRate": 10}]),
        ("setDepartment", [{"DeptCode": "D1", "DeptName": "Sales"}]),
        ("setContract", [{"ContractCode": "C1", "ContractName": "Frame contract"}]),
        ("setExpense", [{"ExpenseCode": "E1", "ExpenseName": "Bank fees"}]),
        ("setAccount", [{"AccountCode": "1111", "AccountName": "Cash", "AccountType": "asset"},
                        {"AccountCode": "331", "AccountName": "Payables", "AccountType": "liability"},
                        {"AccountCode": "642", "AccountName": "Admin expenses", "AccountType": "expense"}]),
    ):
        assert (await vapi.sync(form, data)).status_code == 200, form
    # The invoices that the cash samples' allocations pay, and the one the return sample cites, must exist.
    for name, vid in (("setSaleInvoice", "SI-PAID"), ("setPurchaseInvoice", "PI-PAID"), ("setSaleInvoice", "SI-RET")):
        assert (await vapi.voucher(name, [{**SAMPLES[name], "VoucherId": vid}])).status_code == 200, name
    return vapi


def goods(ref: int, item: str, qty: Any, price: int, site: str | None = "K1", **extra: Any) -> dict:
    """A goods line; site=None leaves SiteCode out (optional on orders)."""
    line = {"RefNumber": ref, "ItemCode": item, "Uom": "PCS", "SiteCode": site, "Quantity": qty,
            "UnitPrice": price, "Amount": qty * price, **extra}
    return line if site is not None else {k: v for k, v in line.items() if k != "SiteCode"}


def taxed(ref: int, item: str, qty: int, price: int, rate: int = 10, discount: int = 0, **extra: Any) -> dict:
    line = goods(ref, item, qty, price, **extra)
    tax = (line["Amount"] - discount) * rate // 100
    return {**line, "Discount": discount, "TaxRate": rate, "TaxAmount": tax,
            "TotalAmount": line["Amount"] - discount + tax}


# One valid document per voucher form, at least two lines each; header totals written out, not derived.
SAMPLES: dict[str, dict[str, Any]] = {
    "setSaleInvoice": {
        "VoucherId": "SI-1", "VoucherDate": "2026-03-15", "VoucherNumber": "HD0001", "CustomerCode": "KH1",
        "DueDate": "2026-04-15", "TotalQuantity": 3, "TotalNetAmount": 250_000, "TotalDiscountAmount": 5_000,
        "TotalTaxAmount": 23_600, "TotalAmount": 268_600,
        "detail": [taxed(1, "IT1", 2, 100_000, **A1), taxed(2, "IT2", 1, 50_000, rate=8, discount=5_000, **A2)]},
    "setPurchaseInvoice": {
        "VoucherId": "PI-1", "VoucherDate": "2026-03-03", "SupplierCode": "NCC1", "TotalQuantity": 14,
        "TotalNetAmount": 920_000, "TotalTaxAmount": 92_000, "TotalAmount": 1_012_000,
        "detail": [goods(1, "IT1", 10, 80_000, **A1), goods(2, "IT2", 4, 30_000, **A2)],
        "tax": [{"VatInvoiceNumber": "0001234", "VatInvoiceDate": "2026-03-03", "VatInvoiceSymbol": "AA/26E",
                 "TotalNetAmount": 920_000, "TaxRate": 10, "TaxAmount": 92_000}]},
    "setJournalVoucher": {
        "VoucherId": "JV-1", "VoucherDate": "2026-03-31", "Description": "Month-end revenue",
        "detail": [{"RefNumber": 1, "AccountCode": "131", "Debit": 500_000, "CustomerCode": "KH1", **A1},
                   {"RefNumber": 2, "AccountCode": "511", "Credit": 300_000, **A2},
                   {"RefNumber": 3, "AccountCode": "511", "Credit": 200_000, "Description": "Services"}]},
    "setSaleReturn": {
        "VoucherId": "SR-1", "VoucherDate": "2026-03-20", "CustomerCode": "KH1", "TotalQuantity": 3,
        "TotalNetAmount": 200_000, "TotalDiscountAmount": 0, "TotalTaxAmount": 10_000, "TotalAmount": 210_000,
        # A return cites a live invoice of its customer (the fixture's SI-RET, a copy of SI-1).
        "detail": [taxed(1, "IT1", 1, 100_000, SaleInvId="SI-RET", SaleInvRefNumber=1, **A1),
                   taxed(2, "IT2", 2, 50_000, rate=0, **A2)]},
    "setReceipt": {
        "VoucherId": "PN-1", "VoucherDate": "2026-03-02", "VoucherNumber": "PN0001", "CustomerCode": "KH1",
        "TotalQuantity": 15, "TotalAmount": 1_250_000,
        "detail": [goods(1, "IT1", 10, 100_000, **A1), goods(2, "IT2", 5, 50_000, site="K2", **A2)]},
    "setIssue": {
        "VoucherId": "PX-1", "VoucherDate": "2026-03-05", "VoucherNumber": "PX0001", "CustomerCode": "KH1",
        "TotalQuantity": 5, "TotalAmount": 400_000,
        "detail": [goods(1, "IT1", 3, 100_000, **A1), goods(2, "IT2", 2, 50_000, site="K2", **A2)]},
    "setStockTransfer": {
        "VoucherId": "CK-1", "VoucherDate": "2026-03-06", "TotalQuantity": 6.5,
        "detail": [{"RefNumber": 1, "ItemCode": "IT1", "Uom": "PCS", "SiteCode": "K1", "ToSiteCode": "K2",
                    "Quantity": 4, **A1},
                   {"RefNumber": 2, "ItemCode": "IT2", "Uom": "PCS", "SiteCode": "K2", "ToSiteCode": "K1",
                    "Quantity": 2.5, **A2}]},
    "setCashReceipt": {
        "VoucherId": "PT-1", "VoucherDate": "2026-03-25", "CustomerCode": "KH1", "Payer": "Nguyen Van A",
        "Address": "1 Le Loi, District 1", "DebitAccount": "1111", "TotalAmount": 268_600,
        "detail": [{"RefNumber": 1, "CreditAccount": "131", "Amount": 200_000, "Description": "SI-1", **A1},
                   {"RefNumber": 2, "CreditAccount": "131", "Amount": 68_600, **A2}],
        "allocation": [{"InvoiceId": "SI-PAID", "Amount": 268_600}]},
    "setCashDisbursement": {
        "VoucherId": "PC-1", "VoucherDate": "2026-03-26", "CustomerCode": "NCC1", "Recipient": "Tran Thi B",
        "Address": "2 Hai Ba Trung", "CreditAccount": "1111", "TotalAmount": 1_062_000,
        "detail": [{"RefNumber": 1, "DebitAccount": "331", "Amount": 1_012_000, **A1},
                   {"RefNumber": 2, "DebitAccount": "642", "Amount": 50_000, "Description": "Bank fee", **A2}],
        "allocation": [{"InvoiceId": "PI-PAID", "Amount": 1_012_000}]},
    "setSalesOrder": {
        "VoucherId": "SO-1", "VoucherDate": "2026-03-10", "CustomerCode": "KH1", "DeliveryDate": "2026-04-01",
        "TotalQuantity": 15, "TotalAmount": 1_000_000,
        "detail": [goods(1, "IT1", 5, 100_000, **A1), goods(2, "IT2", 10, 50_000, site=None, **A2)]},
    "setPurchaseOrder": {
        "VoucherId": "PO-1", "VoucherDate": "2026-03-11", "SupplierCode": "NCC1", "TotalQuantity": 12,
        "TotalAmount": 1_040_000,
        "detail": [goods(1, "IT1", 8, 80_000, **A1), {**goods(2, "IT2", 4, 100_000, **A2), "SiteCode": None}]},
}

# What each form must declare: get name, aliases, get aliases, partner field, header totals checked (sums of
# lines, the tax total with its rounding allowance, the grand total).
EXPECTED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str | None, tuple[str, ...]]] = {
    "setSaleInvoice": ("getSaleInvoice", ("setSalesInvoice",), ("getSalesInvoice",), "CustomerCode",
                       ("TotalQuantity", "TotalNetAmount", "TotalDiscountAmount", "TotalTaxAmount", "TotalAmount")),
    "setPurchaseInvoice": ("getPurchaseInvoice", (), (), "SupplierCode",
                           ("TotalQuantity", "TotalNetAmount", "TotalTaxAmount", "TotalAmount")),
    "setJournalVoucher": ("getJournalVoucher", (), (), None, ()),
    "setSaleReturn": ("getSaleReturn", (), (), "CustomerCode",
                      ("TotalQuantity", "TotalNetAmount", "TotalDiscountAmount", "TotalTaxAmount", "TotalAmount")),
    "setReceipt": ("getReceipt", ("setStockReceipt",), ("getStockReceipt",), "CustomerCode",
                   ("TotalQuantity", "TotalAmount")),
    "setIssue": ("getIssue", ("setStockIssue",), ("getStockIssue",), "CustomerCode", ("TotalQuantity", "TotalAmount")),
    "setStockTransfer": ("getStockTransfer", (), (), None, ("TotalQuantity",)),
    "setCashReceipt": ("getCashReceipt", (), (), "CustomerCode", ("TotalAmount",)),
    "setCashDisbursement": ("getCashDisbursement", ("setCashPayment",), ("getCashPayment",), "CustomerCode",
                            ("TotalAmount",)),
    "setSalesOrder": ("getSalesOrder", (), (), "CustomerCode", ("TotalQuantity", "TotalAmount")),
    "setPurchaseOrder": ("getPurchaseOrder", (), (), "SupplierCode", ("TotalQuantity", "TotalAmount")),
}

# The references each form must check: path -> the catalogs that may hold the code.
ANALYTIC_REFS = {"detail/JobCode": "job", "detail/DeptCode": "department", "detail/ContractCode": "contract",
                 "detail/ExpenseCode": "expense"}
GOODS_REFS = {"detail/ItemCode": "item", "detail/SiteCode": "site", **ANALYTIC_REFS}
PARTNER = "customer or supplier"
EXPECTED_REFERENCES: dict[str, dict[str, str]] = {
    "setSaleInvoice": {"CustomerCode": "customer", **GOODS_REFS, "detail/TaxCode": "tax_code"},
    "setPurchaseInvoice": {"SupplierCode": PARTNER, **GOODS_REFS, "detail/TaxCode": "tax_code"},
    "setJournalVoucher": {"detail/AccountCode": "account", "detail/CustomerCode": "customer", **ANALYTIC_REFS},
    "setSaleReturn": {"CustomerCode": "customer", **GOODS_REFS, "detail/TaxCode": "tax_code"},
    "setReceipt": {"CustomerCode": "customer", **GOODS_REFS},
    "setIssue": {"CustomerCode": "customer", **GOODS_REFS},
    "setStockTransfer": {**GOODS_REFS, "detail/ToSiteCode": "site"},
    "setCashReceipt": {"CustomerCode": "customer", "DebitAccount": "account", "detail/CreditAccount": "account",
                       **ANALYTIC_REFS},
    "setCashDisbursement": {"CustomerCode": PARTNER, "CreditAccount": "account", "detail/DebitAccount": "account",
                            **ANALYTIC_REFS},
    "setSalesOrder": {"CustomerCode": "customer", **GOODS_REFS},
    "setPurchaseOrder": {"SupplierCode": PARTNER, **GOODS_REFS},
}


# Server numbering of vouchers sent without a number is tested in test_vouchers.py; every sample has one.
for _doc in SAMPLES.values():
    _doc.setdefault("VoucherNumber", _doc["VoucherId"][:12])
# Invoices and returns may name the tax code of a line (from the tax catalog).
for _name in ("setSaleInvoice", "setSaleReturn", "setPurchaseInvoice"):
    SAMPLES[_name][DETAIL][0]["TaxCode"] = "VAT10"


def sample(form: VoucherForm, vid: str | None = None) -> dict[str, Any]:
    assert form.name in SAMPLES, f"voucher form {form.name} has no sample document in SAMPLES"
    doc = copy.deepcopy(SAMPLES[form.name])
    if vid is not None:
        doc["VoucherId"] = vid
    return doc


def as_stored(doc: dict[str, Any]) -> dict[str, Any]:
    """What GetData gives back: null fields are absent (null means absent), defaults filled in."""
    def present(record: dict[str, Any]) -> dict[str, Any]:
        return {k: [present(x) if isinstance(x, dict) else x for x in v] if isinstance(v, list) else v
                for k, v in record.items() if v is not None}
    return {**present(doc), **{k: v for k, v in DEFAULTS.items() if k not in doc}}


def one_line_fewer(form: VoucherForm, doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its last line, its totals (and a journal's balance) made right again."""
    doc = copy.deepcopy(doc)
    lines = doc[DETAIL] = doc[DETAIL][:-1]
    if form.balanced:
        gap = sum(x.get("Debit") or 0 for x in lines) - sum(x.get("Credit") or 0 for x in lines)
        side = "Credit" if gap > 0 else "Debit"
        target = next(x for x in lines if x.get(side))
        target[side] += abs(gap)
    for header_field, line_field in (*form.totals, *([form.tax_total] if form.tax_total else [])):
        if "/" not in line_field:
            doc[header_field] = sum(x.get(line_field) or 0 for x in lines)
    if form.grand_total:
        header_field, parts = form.grand_total
        doc[header_field] = sum(sign * doc[name] for name, sign in parts)
    for allocation in doc.get("allocation") or ():  # allocations may not exceed the smaller total
        allocation["Amount"] = min(allocation["Amount"], doc["TotalAmount"])
    return doc


def _typed(pgtype: str, value: Any) -> Any:
    if value is None:
        return None
    if pgtype == "numeric":
        return Decimal(str(value))
    return value


async def stored_lines(db: asyncpg.Connection, form: VoucherForm, vid: str) -> list[tuple]:
    cols = ", ".join(col for _, col, _ in form.line_fields)
    rows = await db.fetch(f"SELECT {cols} FROM voucher_line WHERE form = $1 AND voucher_id = $2 ORDER BY line_no",
                          form.name, vid)
    return [tuple(r) for r in rows]


def expected_lines(form: VoucherForm, doc: dict[str, Any]) -> list[tuple]:
    return [tuple(_typed(t, line.get(f)) for f, _, t in form.line_fields)
            for line in sorted(doc[DETAIL], key=lambda x: x["RefNumber"])]


def test_every_registered_voucher_form_has_a_sample_and_every_sample_a_form() -> None:
    names = {f.name for f in VOUCHER_FORMS}
    assert names == set(SAMPLES), (names ^ set(SAMPLES))
    assert names == set(EXPECTED) == set(EXPECTED_REFERENCES), (names ^ set(EXPECTED))


@by_form
def test_the_form_is_declared_as_the_contract_says(form: VoucherForm) -> None:
    get_name, aliases, get_aliases, partner, totals = EXPECTED[form.name]
    assert (form.get_name, form.aliases, form.get_aliases, form.partner) == (get_name, aliases, get_aliases, partner)
    checked = tuple(h for h, _ in form.totals)
    checked += (form.tax_total[0],) if form.tax_total else ()
    checked += (form.grand_total[0],) if form.grand_total else ()
    assert checked == totals
    assert {r.path: r.catalogs for r in form.references} == EXPECTED_REFERENCES[form.name]
    doc = sample(form)
    assert len(doc[DETAIL]) >= 2, "a sample needs at least two lines"
    assert form.validator.is_valid(form.reader.read(doc, 0, None)), list(form.validator.iter_errors(doc))
    # The sample names a code for every reference the form checks, so each check is exercised below.
    for ref in form.references:
        table, _, name = ref.path.rpartition("/")
        values = [x.get(name) for x in doc.get(table, ())] if table else [doc.get(ref.path)]
        assert any(values), f"the sample of {form.name} has no {ref.path}"


@by_form
async def test_sync_read_replace_and_cancel(form: VoucherForm, fapi: VoucherApi, db: asyncpg.Connection) -> None:
    doc = sample(form)
    vid = doc["VoucherId"]
    body = assert_envelope(await fapi.voucher(form.name, [doc]))
    assert body["records"] == 1 and body["result"]["inserted"] == 1, body
    got = assert_envelope(await fapi.get(form.get_name, Id=vid))
    assert got["records"] == 1 and got["data"] == [as_stored(doc)]
    assert await stored_lines(db, form, vid) == expected_lines(form, doc)
    header = await db.fetchrow("SELECT partner_code, total_amount FROM voucher WHERE form = $1 AND voucher_id = $2",
                               form.name, vid)
    assert header["partner_code"] == (doc[form.partner] if form.partner else None)
    assert header["total_amount"] == _typed("numeric", doc.get("TotalAmount"))

    # The same document again: nothing changes.
    before = await tables(db)
    body = assert_envelope(await fapi.voucher(form.name, [doc]))
    assert body["result"]["unchanged"] == 1 and body["records"] == 1, body
    assert await tables(db) == before

    # One line fewer: the voucher is replaced whole, the dropped line leaves the table.
    fewer = one_line_fewer(form, doc)
    body = assert_envelope(await fapi.voucher(form.name, [fewer]))
    assert body["result"]["updated"] == 1, body
    assert await stored_lines(db, form, vid) == expected_lines(form, fewer)
    assert len(await stored_lines(db, form, vid)) == len(doc[DETAIL]) - 1
    got = assert_envelope(await fapi.get(form.get_name, Id=vid))
    assert got["data"] == [as_stored(fewer)]

    # Cancelled: its lines go, the header stays as a tombstone for pullers.
    body = assert_envelope(await fapi.voucher(form.name, [{"VoucherId": vid, "Status": "0"}]))
    assert body["result"]["deleted"] == 1, body
    assert await stored_lines(db, form, vid) == []
    assert assert_envelope(await fapi.get(form.get_name, Id=vid))["records"] == 0
    pulled = assert_envelope(await fapi.get(form.get_name, since=0))
    assert [d for d in pulled["data"] if d["VoucherId"] == vid] == [{"VoucherId": vid, "Deleted": True}]


@pytest.mark.parametrize("form", [f for f in VOUCHER_FORMS if f.totals], ids=lambda f: f.name)
async def test_a_total_that_is_not_the_sum_of_the_lines_is_refused(form: VoucherForm, fapi: VoucherApi,
                                                                   db: asyncpg.Connection) -> None:
    before = await tables(db)
    for header_field, line_field in form.totals:
        bad = sample(form, "BAD-1")
        bad[header_field] += 1
        body = assert_envelope(await fapi.voucher(form.name, [sample(form, "GOOD-1"), bad]))
        assert body["code"] == 601, body
        errors = [e for e in body["errors"] if e["path"] == f"/{header_field}"]
        assert errors and errors[0]["index"] == 1 and errors[0]["key"] == "BAD-1", (header_field, body["errors"])
        assert header_field in errors[0]["message"]
        assert await tables(db) == before, header_field


@by_form
async def test_an_unknown_reference_is_refused_and_named(form: VoucherForm, fapi: VoucherApi,
                                                         db: asyncpg.Connection) -> None:
    before = await tables(db)
    for ref in form.references:
        bad = sample(form, "BAD-1")
        table, _, name = ref.path.rpartition("/")
        if table:
            index = next(i for i, x in enumerate(bad[table]) if x.get(name))
            bad[table][index][name] = UNKNOWN
            pointer = f"/{table}/{index}/{name}"
        else:
            bad[name] = UNKNOWN
            pointer = f"/{name}"
        body = assert_envelope(await fapi.voucher(form.name, [sample(form, "GOOD-1"), bad]))
        assert body["code"] == 601, (ref.path, body)
        errors = [e for e in body["errors"] if e["path"] == pointer]
        assert errors and errors[0]["index"] == 1 and errors[0]["key"] == "BAD-1", (ref.path, body["errors"])
        assert UNKNOWN in errors[0]["message"] and name in errors[0]["message"]
        assert await tables(db) == before, ref.path


ALIASES = [(f, alias) for f in VOUCHER_FORMS for alias in f.aliases]
GET_ALIASES = [(f, alias) for f in VOUCHER_FORMS for alias in f.get_aliases]


@pytest.mark.parametrize("form,alias", ALIASES, ids=[a for _, a in ALIASES])
async def test_each_alias_syncs_into_the_same_form(form: VoucherForm, alias: str, fapi: VoucherApi,
                                                   db: asyncpg.Connection) -> None:
    doc = sample(form, f"ALIAS-{alias}")
    body = assert_envelope(await fapi.voucher(alias, [doc]))
    assert body["result"]["inserted"] == 1, body
    got = assert_envelope(await fapi.get(form.get_name, Id=doc["VoucherId"]))
    assert got["data"] == [as_stored(doc)]
    assert await db.fetchval("SELECT form FROM voucher WHERE voucher_id = $1", doc["VoucherId"]) == form.name


@pytest.mark.parametrize("form,alias", GET_ALIASES, ids=[a for _, a in GET_ALIASES])
async def test_each_get_alias_reads_the_same_form(form: VoucherForm, alias: str, fapi: VoucherApi) -> None:
    doc = sample(form)
    assert assert_envelope(await fapi.voucher(form.name, [doc]))["result"]["inserted"] == 1
    got = assert_envelope(await fapi.get(alias, Id=doc["VoucherId"]))
    assert got["data"] == [as_stored(doc)]


# --- what the schemas of particular forms add ------------------------------------------------------------

def _voucher_form(name: str) -> VoucherForm:
    return next(f for f in VOUCHER_FORMS if f.name == name)


SCHEMA_REFUSALS = [
    ("setIssue", "no VoucherNumber", lambda d: d.pop("VoucherNumber"), "", "VoucherNumber"),
    ("setIssue", "empty VoucherNumber", lambda d: d.update(VoucherNumber=""), "/VoucherNumber", ""),
    ("setStockTransfer", "zero quantity", lambda d: d[DETAIL][0].update(Quantity=0), "/detail/0/Quantity", ""),
    ("setStockTransfer", "no ToSiteCode", lambda d: d[DETAIL][0].pop("ToSiteCode"), "/detail/0", "ToSiteCode"),
    ("setCashReceipt", "allocation of 0", lambda d: d["allocation"][0].update(Amount=0), "/allocation/0/Amount", ""),
    ("setCashReceipt", "no DebitAccount", lambda d: d.pop("DebitAccount"), "", "DebitAccount"),
    ("setCashDisbursement", "allocation amount not a number",
     lambda d: d["allocation"][0].update(Amount="all of it"), "/allocation/0/Amount", "all of it"),
    ("setSaleReturn", "SaleInvRefNumber not an integer",
     lambda d: d[DETAIL][0].update(SaleInvRefNumber="first"), "/detail/0/SaleInvRefNumber", ""),
    ("setSalesOrder", "bad DeliveryDate", lambda d: d.update(DeliveryDate="2026-02-30"), "/DeliveryDate", "date"),
]


@pytest.mark.parametrize("name,label,change,pointer,text", SCHEMA_REFUSALS, ids=[r[1] for r in SCHEMA_REFUSALS])
async def test_form_specific_schema_rules(name: str, label: str, change: Any, pointer: str, text: str,
                                          fapi: VoucherApi, db: asyncpg.Connection) -> None:
    bad = sample(_voucher_form(name), "BAD-1")
    change(bad)
    body = assert_envelope(await fapi.voucher(name, [bad]))
    assert body["code"] == 601, body
    errors = [e for e in body["errors"] if e["path"] == pointer]
    assert errors and text in errors[0]["message"], body["errors"]
    assert await db.fetchval("SELECT count(*) FROM voucher WHERE voucher_id = 'BAD-1'") == 0


async def test_allocation_field_names_match_case_insensitively(fapi: VoucherApi) -> None:
    form = _voucher_form("setCashReceipt")
    doc = sample(form)
    sent = {**doc, "allocation": [{"invoiceid": "SI-PAID", "AMOUNT": 268_600}]}
    assert assert_envelope(await fapi.voucher(form.name, [sent]))["result"]["inserted"] == 1
    got = assert_envelope(await fapi.get(form.get_name, Id=doc["VoucherId"]))
    assert got["data"] == [as_stored(doc)]
