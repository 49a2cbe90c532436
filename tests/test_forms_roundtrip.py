"""Every master form through its whole life: insert, read back, no-op re-sync, update, delete, tombstone."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import Api, assert_envelope

from forms import FORM_MODULES
from gateway.forms import MasterForm, build_registry

REGISTRY = build_registry(FORM_MODULES)
MASTER_FORMS = [f for f in REGISTRY.forms if isinstance(f, MasterForm)]

# One valid record per form, every field set, and the one field the update step changes.
SAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "setCustomer": (
        {"CustomerCode": "KH001", "CustomerName": "Công ty TNHH Alpha", "OtherName": "Alpha Co., Ltd",
         "SaleCode": "NV001", "Address": "12 Tràng Tiền, Hà Nội", "Partner": "Trần Thị Bình",
         "GroupCode1": "BANLE", "GroupCode2": "HN", "GroupCode3": "VIP", "PhoneNumber": "024 3825 1234",
         "TaxCode": "0101234567", "Fax": "024 3825 1235", "Email": "ketoan@alpha.vn",
         "BankAccount": "0011004012345", "BankName": "Vietcombank", "BranchName": "Hà Nội",
         "AccountName": "CONG TY TNHH ALPHA", "PaymentTerm": "30", "Status": "1", "SuplierYN": 1,
         "EmployeeYN": 0, "Description": "Key account"},
        {"CustomerName": "Công ty Cổ phần Alpha"},
    ),
    "setSupplier": (
        {"SupplierCode": "NCC001", "SupplierName": "Beta Supplies JSC", "OtherName": "Cung ứng Beta",
         "Address": "45 Lê Lợi, TP HCM", "PhoneNumber": "028 3822 0000", "TaxCode": "0301234567",
         "Email": "sales@beta.vn", "BankAccount": "1903456789012", "BankName": "Techcombank",
         "PaymentTerm": "45", "Status": "1", "Description": "Fasteners"},
        {"PaymentTerm": "60"},
    ),
    "setItem": (
        {"ItemCode": "VT001", "ItemName": "Bu lông thép M8", "OtherName": "Steel bolt M8", "Uom": "CAI",
         "ItemType": "HH", "ItemGroup1": "BULONG", "ItemGroup2": "THEP", "ItemGroup3": "M8", "Status": "1",
         "Barcode": "8934567890123", "Price": 12500.5, "StockTracked": 1, "ReorderLevel": 200},
        {"Price": 13000.25},
    ),
    "setSite": (
        {"SiteCode": "KHO01", "SiteName": "Kho Hà Nội", "OtherName": "Hanoi warehouse",
         "Address": "Km 10 Đại lộ Thăng Long", "GroupCode": "MIENBAC", "AgentYN": 1, "Note": "Consignment",
         "Status": "1"},
        {"AgentYN": 0},
    ),
    "setUnit": (
        {"UomCode": "HOP", "UomName": "Hộp 12 cái", "OtherName": "Box of 12", "Status": "1"},
        {"Status": "0"},
    ),
    "UnitConversion": (
        {"ItemCode": "VT001", "Uom": "HOP", "Coefficient": 12, "Status": "1"},
        {"Coefficient": 0.00000125},
    ),
    "setAccount": (
        {"AccountCode": "1111", "AccountName": "Tiền mặt VNĐ", "OtherName": "Cash in VND",
         "AccountType": "asset", "ParentCode": "111", "Status": "1"},
        {"AccountType": "liability"},
    ),
    "setDepartment": (
        {"DeptCode": "PKD", "DeptName": "Phòng kinh doanh", "OtherName": "Sales department",
         "Address": "Tầng 3", "PhoneNumber": "024 3825 1240", "Note": "Sales and marketing", "Status": "1"},
        {"PhoneNumber": "024 3825 1241"},
    ),
    "setEmployee": (
        {"EmployeeCode": "NV001", "EmployeeName": "Nguyễn Văn An", "OtherName": "An Nguyen",
         "DeptCode": "PKD", "Position": "Trưởng phòng", "PhoneNumber": "0912 345 678",
         "Email": "an.nguyen@alpha.vn", "Status": "1"},
        {"Position": "Giám đốc kinh doanh"},
    ),
    "setJob": (
        {"JobCode": "VV001", "JobName": "Thi công văn phòng Hà Nội", "OtherName": "Hanoi office fit-out",
         "Note": "Phase 1", "Status": "1", "CustomerCode": "KH001", "FromDate": "2024-01-15",
         "ToDate": "2024-12-31", "Budget": 250000000.5, "JobStatus": "open"},
        {"JobStatus": "closed"},
    ),
    "setContract": (
        {"ContractCode": "HD001", "ContractName": "Hợp đồng mua bán 2024",
         "OtherName": "Supply contract 2024", "ContractNo": "01/2024/HDMB", "SignedDate": "2024-01-10",
         "FromDate": "2024-01-15", "ToDate": "2024-12-31", "TotalAmount": 5333333.33, "Currency": "USD",
         "Note": "Annual frame", "Status": "1"},
        {"ToDate": "2025-06-30"},
    ),
    "setExpense": (
        {"ExpenseCode": "CP001", "ExpenseName": "Chi phí thuê văn phòng", "OtherName": "Office rent",
         "DeptCode": "PKD", "Note": "Monthly", "Status": "1"},
        {"DeptCode": "PHC"},
    ),
    "setCurrency": (
        {"CurrencyCode": "USD", "CurrencyName": "US dollar", "DecimalPlaces": 2, "Status": "1"},
        {"DecimalPlaces": 4},
    ),
    "setTaxCode": (
        {"TaxCode": "VAT10", "TaxName": "Thuế GTGT 10%", "TaxRate": 10, "Status": "1"},
        {"TaxRate": 8},
    ),
}

by_form = pytest.mark.parametrize("form", MASTER_FORMS, ids=lambda f: f.name)


def _sample(form: MasterForm) -> tuple[dict[str, Any], dict[str, Any]]:
    if form.name not in SAMPLES:
        pytest.fail(f"form {form.name} is registered but has no sample record in {__name__}.SAMPLES")
    return SAMPLES[form.name]


def _exact(resp: httpx.Response) -> dict[str, Any]:
    """The body with JSON decimals parsed exactly, after the envelope checks."""
    assert_envelope(resp)
    return json.loads(resp.content, parse_float=Decimal)


def _same(sent: Any, got: Any) -> bool:
    """Numbers compare as numbers (the gateway returns numeric columns as JSON numbers); the rest exactly."""
    if isinstance(sent, (int, float, Decimal)) and not isinstance(sent, bool):
        return not isinstance(got, (bool, str)) and isinstance(got, (int, Decimal)) \
            and Decimal(str(sent)) == Decimal(got)
    return sent == got


def _assert_record(form: MasterForm, sent: dict[str, Any], got: dict[str, Any]) -> None:
    assert set(got) == {c.field for c in form.columns}, set(got) ^ {c.field for c in form.columns}
    for fname, value in sent.items():
        assert _same(value, got[fname]), (form.name, fname, value, got[fname])


def _key(form: MasterForm, record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in form.key}


def _key_id(form: MasterForm, record: dict[str, Any]) -> str:
    return "|".join(record[k] for k in form.key)


async def _row(db: asyncpg.Connection, form: MasterForm, record: dict[str, Any]) -> asyncpg.Record | None:
    where = " AND ".join(f'"{c.name}" = ${i + 1}' for i, c in enumerate(form.key_columns))
    return await db.fetchrow(f'SELECT * FROM "{form.table}" WHERE {where}',
                             *(c.convert(record[c.field]) for c in form.key_columns))


def test_every_master_form_has_a_sample_and_every_sample_a_form() -> None:
    assert set(SAMPLES) == {f.name for f in MASTER_FORMS}
    for form in MASTER_FORMS:
        record, change = SAMPLES[form.name]
        assert set(record) == {c.field for c in form.columns}, f"{form.name}: the sample must set every field"
        assert form.validator.is_valid(record), form.name
        assert len(change) == 1 and not set(change) & set(form.key) and set(change) <= set(record), form.name
        assert not _same(record[next(iter(change))], change[next(iter(change))]), form.name


@by_form
async def test_master_form_insert_read_resync_update_delete_tombstone(
        form: MasterForm, api: Api, db: asyncpg.Connection) -> None:
    record, change = _sample(form)
    key_id = _key_id(form, record)

    # Insert.
    body = _exact(await api.sync(form.name, [record]))
    assert body["records"] == 1
    assert body["result"] == {"inserted": 1, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0,
                              "superseded": 0}

    # Read back by Id: every sent field as sent.
    got = _exact(await api.get(form.get_name, Id=key_id))
    assert got["records"] == 1 and len(got["data"]) == 1
    _assert_record(form, record, got["data"][0])

    # The same record again changes nothing.
    body = _exact(await api.sync(form.name, [record]))
    assert body["records"] == 1
    assert (body["result"]["inserted"], body["result"]["updated"], body["result"]["unchanged"]) == (0, 0, 1)

    # One field changed.
    changed = {**record, **change}
    body = _exact(await api.sync(form.name, [changed]))
    assert (body["result"]["inserted"], body["result"]["updated"], body["result"]["unchanged"]) == (0, 1, 0)
    got = _exact(await api.get(form.get_name, Id=key_id))
    assert got["records"] == 1
    _assert_record(form, changed, got["data"][0])

    # Delete by key.
    body = _exact(await api.sync(form.name, [{**_key(form, record), "action": "delete"}]))
    assert body["records"] == 1 and body["result"]["deleted"] == 1
    assert _exact(await api.get(form.get_name, Id=key_id))["data"] == []
    assert _exact(await api.get(form.get_name))["data"] == []

    # An incremental pull from the start sees the tombstone, with the key only.
    pulled = _exact(await api.get(form.get_name, since=0))
    assert pulled["data"] == [{**_key(form, record), "Deleted": True}]

    # The row stays in the table, marked deleted.
    row = await _row(db, form, record)
    assert row is not None and row["deleted"] is True


@by_form
async def test_absent_optional_fields_are_null_or_their_default(form: MasterForm, api: Api) -> None:
    record, _ = _sample(form)
    minimal = {k: v for k, v in record.items() if k in form.schema["required"]}
    body = _exact(await api.sync(form.name, [minimal]))
    assert body["result"]["inserted"] == 1
    got = _exact(await api.get(form.get_name, Id=_key_id(form, record)))["data"][0]
    for col in form.columns:
        if col.field in minimal:
            assert _same(minimal[col.field], got[col.field]), col.field
        elif col.default is not None:
            assert got[col.field] == col.convert(col.default), (col.field, got[col.field], col.default)
        else:
            assert got[col.field] is None, (col.field, got[col.field])


SYNC_ALIASES = [(alias, form) for form in MASTER_FORMS for alias in form.aliases]
GET_ALIASES = [(alias, form) for form in MASTER_FORMS for alias in form.get_aliases]


@pytest.mark.parametrize(("alias", "form"), SYNC_ALIASES, ids=[a for a, _ in SYNC_ALIASES])
async def test_syncing_through_an_alias_writes_the_canonical_forms_table(
        alias: str, form: MasterForm, api: Api, db: asyncpg.Connection) -> None:
    record, change = _sample(form)
    body = _exact(await api.sync(alias, [record]))
    assert body["result"]["inserted"] == 1
    row = await _row(db, form, record)
    assert row is not None and row["deleted"] is False
    # The canonical name sees the very same row: identical is unchanged, and a change through it updates.
    body = _exact(await api.sync(form.name, [record]))
    assert body["result"]["unchanged"] == 1
    body = _exact(await api.sync(alias, [{**record, **change}]))
    assert body["result"]["updated"] == 1
    got = _exact(await api.get(form.get_name, Id=_key_id(form, record)))
    assert got["records"] == 1
    _assert_record(form, {**record, **change}, got["data"][0])
    assert await db.fetchval(f'SELECT count(*) FROM "{form.table}"') == 1


@pytest.mark.parametrize(("alias", "form"), GET_ALIASES, ids=[a for a, _ in GET_ALIASES])
async def test_reading_through_an_alias_returns_the_canonical_forms_records(
        alias: str, form: MasterForm, api: Api) -> None:
    record, _ = _sample(form)
    assert _exact(await api.sync(form.name, [record]))["result"]["inserted"] == 1
    via_alias = _exact(await api.get(alias, Id=_key_id(form, record)))
    via_name = _exact(await api.get(form.get_name, Id=_key_id(form, record)))
    assert via_alias["data"] == via_name["data"] and len(via_alias["data"]) == 1
    _assert_record(form, record, via_alias["data"][0])


NUMERIC_FORMS = [f for f in MASTER_FORMS if any(c.pgtype == "numeric" for c in f.columns)]


async def test_numeric_fields_keep_every_digit_of_a_json_decimal(api: Api) -> None:
    """Sent as raw JSON (no binary float on the way), numbers come back with the same digits."""
    assert NUMERIC_FORMS
    for form in NUMERIC_FORMS:
        record, _ = _sample(form)
        digits: dict[str, str] = {}
        for col in form.columns:
            if col.pgtype == "numeric":
                # TaxRate is at most 100; the others are unbounded above.
                bounded = "maximum" in form.schema["properties"][col.field]
                digits[col.field] = "99.0000000123456789" if bounded else "123456789012345678.0000000123456"
        fields = ", ".join(json.dumps(k) + ": " + (digits[k] if k in digits else json.dumps(v))
                           for k, v in record.items())
        raw = f'{{"form": {json.dumps(form.name)}, "data": [{{{fields}}}]}}'
        resp = await api.client.post("/api/SyncData", content=raw.encode(),
                                     headers={"Authorization": api.token})
        assert _exact(resp)["result"]["inserted"] == 1, form.name
        got = _exact(await api.get(form.get_name, Id=_key_id(form, record)))["data"][0]
        for fname, text in digits.items():
            assert isinstance(got[fname], Decimal) and str(got[fname]) == text, (form.name, fname, got[fname])
