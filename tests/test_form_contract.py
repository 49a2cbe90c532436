"""Every master form's declaration, JSON Schema and table agree, and every Fast name (and alias) resolves."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from conftest import Api, assert_envelope

from forms import FORM_MODULES
from gateway.forms import GET_DATA, SYNC_DATA, MasterForm, build_registry

REGISTRY = build_registry(FORM_MODULES)
MASTER_FORMS = [f for f in REGISTRY.forms if isinstance(f, MasterForm)]

# information_schema.columns.data_type for each column type a schema can derive.
DATA_TYPES = {
    "text": "text",
    "numeric": "numeric",
    "date": "date",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "boolean": "boolean",
}
META_TYPES = {
    "deleted": "bool",
    "change_seq": "int8",
    "updated_at": "timestamptz",
}

# name -> canonical name. Fast's names, the plain-English names the issues use, and the catalogs beyond Fast.
EXPECTED_SYNC_NAMES = {
    "setCustomer": "setCustomer",
    "setSupplier": "setSupplier",
    "setItem": "setItem",
    "setSite": "setSite",
    "setWarehouse": "setSite",
    "setUnit": "setUnit",
    "UnitConversion": "UnitConversion",
    "setUomConversion": "UnitConversion",
    "setUnitConversion": "UnitConversion",
    "setAccount": "setAccount",
    "setDepartment": "setDepartment",
    "setEmployee": "setEmployee",
    "setJob": "setJob",
    "setCase": "setJob",
    "setContract": "setContract",
    "setExpense": "setExpense",
    "setCurrency": "setCurrency",
    "setTaxCode": "setTaxCode",
}
EXPECTED_GET_NAMES = {
    "getCustomer": "setCustomer",
    "getSupplier": "setSupplier",
    "getItem": "setItem",
    "getSite": "setSite",
    "getWarehouse": "setSite",
    "getUnit": "setUnit",
    "getUnitConversion": "UnitConversion",
    "getUomConversion": "UnitConversion",
    "getAccount": "setAccount",
    "getDepartment": "setDepartment",
    "getEmployee": "setEmployee",
    "getJob": "setJob",
    "getCase": "setJob",
    "getContract": "setContract",
    "getExpense": "setExpense",
    "getCurrency": "setCurrency",
    "getTaxCode": "setTaxCode",
}

by_name = pytest.mark.parametrize("form", MASTER_FORMS, ids=lambda f: f.name)


async def _columns(db: asyncpg.Connection, table: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT column_name, data_type, udt_name, is_nullable, column_default, numeric_precision,"
        " ordinal_position FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return {r["column_name"]: r for r in rows}


# --- the schema -------------------------------------------------------------------------------------------

@by_name
def test_schema_is_closed_draft_2020_12_with_a_description_on_every_property(form: MasterForm) -> None:
    schema = form.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["title"] == form.name
    assert isinstance(schema.get("description"), str) and schema["description"].strip()
    assert form.description.strip()
    for fname, prop in schema["properties"].items():
        assert isinstance(prop.get("description"), str) and prop["description"].strip(), fname


@by_name
def test_schema_bounds_every_free_text_field_and_requires_the_key(form: MasterForm) -> None:
    schema = form.schema
    required = set(schema["required"])
    assert set(form.key) <= required
    for fname, prop in schema["properties"].items():
        types = prop.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and "enum" not in prop and "format" not in prop:
            assert isinstance(prop.get("maxLength"), int), f"{fname} has no maxLength"
        if fname in required and "string" in types and "enum" not in prop:
            assert prop.get("minLength", 0) >= 1, f"required {fname} accepts an empty string"
    status = schema["properties"].get("Status")
    if status is not None:
        assert status == {"enum": ["1", "0", 1, 0], "default": "1", "x-pgtype": "text",
                          "description": status["description"]}


# --- the table --------------------------------------------------------------------------------------------

@by_name
async def test_table_has_a_column_of_the_derived_type_for_every_field(
        form: MasterForm, db: asyncpg.Connection) -> None:
    cols = await _columns(db, form.table)
    assert cols, f"table {form.table} does not exist"
    for col in form.columns:
        assert col.name in cols, f"{form.table}.{col.name} (field {col.field}) is missing"
        row = cols[col.name]
        assert row["data_type"] == DATA_TYPES[col.pgtype], (col.field, row["data_type"], col.pgtype)
        if col.pgtype == "numeric":
            assert row["numeric_precision"] is None, f"{col.name} must be plain numeric (exact decimals)"
        # NOT NULL exactly where the schema requires the field or supplies a default.
        expect_not_null = col.required or col.default is not None
        assert (row["is_nullable"] == "NO") is expect_not_null, (col.field, row["is_nullable"])
        if col.default is not None:
            assert row["column_default"] is not None, f"{col.name} has no DEFAULT"
            db_default = await db.fetchval(f"SELECT {row['column_default']}")
            assert db_default == col.convert(col.default), (col.field, db_default, col.default)
    # Nothing the form does not write (a NOT NULL column the gateway never fills would break every sync).
    assert set(cols) == {c.name for c in form.columns} | set(META_TYPES) | {"tenant_id"}


@by_name
async def test_table_leads_with_tenant_and_carries_the_change_stamp(
        form: MasterForm, db: asyncpg.Connection) -> None:
    cols = await _columns(db, form.table)
    first = min(cols.values(), key=lambda r: r["ordinal_position"])
    assert first["column_name"] == "tenant_id"
    assert first["data_type"] == "integer" and first["is_nullable"] == "NO"
    refs = await db.fetch(
        "SELECT a.attname, c.confrelid::regclass::text AS ref FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = to_regclass($1) AND c.contype = 'f'",
        form.table,
    )
    # No per-row foreign keys on synced tables: each would run once per inserted row (measured: a third of
    # insert throughput); tenant ids come only from authenticated users, and tenants are never deleted.
    assert [(r["attname"], r["ref"]) for r in refs] == []
    for name, udt in META_TYPES.items():
        assert name in cols, f"{form.table}.{name} is missing"
        assert cols[name]["udt_name"] == udt, (name, cols[name]["udt_name"])
        assert cols[name]["is_nullable"] == "NO", name


@by_name
async def test_primary_key_is_tenant_then_the_key_fields(form: MasterForm, db: asyncpg.Connection) -> None:
    pk = await db.fetch(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu ON kcu.constraint_schema = tc.constraint_schema"
        "  AND kcu.constraint_name = tc.constraint_name"
        " WHERE tc.table_schema = current_schema() AND tc.table_name = $1"
        "  AND tc.constraint_type = 'PRIMARY KEY'"
        " ORDER BY kcu.ordinal_position",
        form.table,
    )
    assert [r["column_name"] for r in pk] == ["tenant_id", *(c.name for c in form.key_columns)]


# --- names ------------------------------------------------------------------------------------------------

def test_every_sync_name_and_alias_resolves_to_its_form() -> None:
    for name, canonical in EXPECTED_SYNC_NAMES.items():
        form, op = REGISTRY.resolve(SYNC_DATA, name)
        assert (form.name, op) == (canonical, "sync"), name
        # Fast matches names case-insensitively.
        assert REGISTRY.resolve(SYNC_DATA, name.upper())[0] is form


def test_every_get_name_and_alias_resolves_to_its_form() -> None:
    for name, canonical in EXPECTED_GET_NAMES.items():
        form, op = REGISTRY.resolve(GET_DATA, name)
        assert (form.name, op) == (canonical, "get"), name
        assert REGISTRY.resolve(GET_DATA, name.lower())[0] is form


def test_the_master_forms_are_exactly_the_expected_catalogs() -> None:
    assert {n for f in MASTER_FORMS for n in f.sync_names()} == set(EXPECTED_SYNC_NAMES)
    assert {n for f in MASTER_FORMS for n in f.get_names()} == set(EXPECTED_GET_NAMES)
    assert len({f.table for f in MASTER_FORMS}) == len(MASTER_FORMS), "two forms share a table"


# --- values the schemas refuse ----------------------------------------------------------------------------

REJECTED: list[tuple[str, dict[str, Any], str]] = [
    ("setItem", {"ItemCode": "I1", "ItemName": "n", "ItemType": "HH", "Price": -1}, "/Price"),
    ("setItem", {"ItemCode": "I1", "ItemName": "n", "ItemType": "HHH"}, "/ItemType"),
    ("setItem", {"ItemCode": "I1", "ItemName": "n"}, ""),
    ("setItem", {"ItemCode": "I1", "ItemName": "n", "ItemType": "HH", "StockTracked": 2}, "/StockTracked"),
    ("UnitConversion", {"ItemCode": "I1", "Uom": "BOX", "Coefficient": 0}, "/Coefficient"),
    ("setAccount", {"AccountCode": "111", "AccountName": "Cash", "AccountType": "cash"}, "/AccountType"),
    ("setJob", {"JobCode": "J1", "JobName": "n", "JobStatus": "done"}, "/JobStatus"),
    ("setJob", {"JobCode": "J1", "JobName": "n", "Budget": -0.01}, "/Budget"),
    ("setContract", {"ContractCode": "C1", "ContractName": "n", "SignedDate": "2024-02-30"}, "/SignedDate"),
    ("setContract", {"ContractCode": "C1", "ContractName": "n", "TotalAmount": -5}, "/TotalAmount"),
    ("setContract", {"ContractCode": "C1", "ContractName": "n", "Currency": "VNDX"}, "/Currency"),
    ("setCurrency", {"CurrencyCode": "usd", "CurrencyName": "US dollar"}, "/CurrencyCode"),
    ("setCurrency", {"CurrencyCode": "USD", "CurrencyName": "USD", "DecimalPlaces": 5}, "/DecimalPlaces"),
    ("setTaxCode", {"TaxCode": "X", "TaxName": "n", "TaxRate": -3}, "/TaxRate"),
    ("setTaxCode", {"TaxCode": "X", "TaxName": "n", "TaxRate": 100.5}, "/TaxRate"),
    ("setSupplier", {"SupplierCode": "S1", "SupplierName": "n", "PaymentTerm": "120"}, "/PaymentTerm"),
    ("setSite", {"SiteCode": "K1", "SiteName": "n", "AgentYN": "maybe"}, "/AgentYN"),
    ("setSite", {"SiteCode": "K1", "SiteName": "n", "AgentYN": 2}, "/AgentYN"),
    ("setCustomer", {"CustomerCode": "K1", "CustomerName": "n", "Status": True, "SuplierYN": "2"}, "/SuplierYN"),
    ("setItem", {"ItemCode": "I1", "ItemName": "n", "ItemType": "HH", "Price": "1e"}, "/Price"),
    ("setItem", {"ItemCode": 1.5, "ItemName": "n", "ItemType": "HH"}, "/ItemCode"),
    ("setContract", {"ContractCode": "C1", "ContractName": "n", "SignedDate": "2024-02-10T25:00"}, "/SignedDate"),
    ("setUnit", {"UomCode": "", "UomName": "n"}, "/UomCode"),
    ("setEmployee", {"EmployeeCode": "E1", "EmployeeName": "n", "Status": "2"}, "/Status"),
    ("setDepartment", {"DeptCode": "D" * 33, "DeptName": "n"}, "/DeptCode"),
    ("setExpense", {"ExpenseCode": "X1", "ExpenseName": "n", "Note": "x" * 513}, "/Note"),
]


async def test_values_outside_the_contract_are_a_601_naming_the_field(
        api: Api, db: asyncpg.Connection) -> None:
    for form_name, record, path in REJECTED:
        body = assert_envelope(await api.sync(form_name, [record]))
        assert body["code"] == 601, (form_name, record, body)
        assert [e["path"] for e in body["errors"]] == [path], (form_name, record, body["errors"])
        form, _ = REGISTRY.resolve(SYNC_DATA, form_name)
        assert await db.fetchval(f'SELECT count(*) FROM "{form.table}"') == 0, (form_name, record)


# --- one type for one meaning, in every form ----------------------------------------------------------------

def _all_properties() -> list[tuple[str, str, dict[str, Any]]]:
    """(form, path, property) for every field of every synced form, lines and sub-tables included."""
    out = []

    def walk(form_name: str, prefix: str, props: dict[str, Any]) -> None:
        for name, prop in props.items():
            out.append((form_name, prefix + name, prop))
            items = prop.get("items")
            if isinstance(items, dict) and "properties" in items:
                walk(form_name, f"{prefix}{name}/*/", items["properties"])

    for form in REGISTRY.forms:
        if getattr(form, "schema", None):
            walk(form.name, "", form.schema["properties"])
    return out


def _types(prop: dict[str, Any]) -> set[str]:
    types = prop.get("type", [])
    return {types} if isinstance(types, str) else set(types)


def test_one_meaning_has_one_type_in_every_form() -> None:
    seen = _all_properties()
    assert len({f for f, _, _ in seen}) >= 25, "every synced form is walked"
    for form_name, path, prop in seen:
        name = path.rsplit("/", 1)[-1]
        where = f"{form_name} {path}"
        if name in ("TaxRate", "ExchangeRate", "Coefficient") or name.startswith("Total") or name in (
                "Amount", "Quantity", "UnitPrice", "Discount", "TaxAmount", "Debit", "Credit", "Price"):
            assert "number" in _types(prop), where  # rates, amounts and quantities: numbers, never text
        if name.endswith("YN") or name in ("StockTracked", "Promotion"):
            assert prop.get("enum") == [0, 1], where  # 0/1 flags
        if name == "Status":
            assert prop.get("enum") == ["1", "0", 1, 0], where
        if name.endswith("Date"):
            assert prop.get("format") == "date", where
        if "number" in _types(prop):  # bounded, so that no number reaches arithmetic or storage it breaks
            assert "maximum" in prop and "minimum" in prop, where
    # The VAT rate means the same on a sales line and on a purchase invoice's VAT line.
    rates = {path: prop for f, path, prop in seen if path.endswith("TaxRate") and f != "setTaxCode"}
    assert len({repr(sorted(p.items())) for p in rates.values()}) == 1, rates


def test_a_posting_rule_that_allocates_to_an_unknown_form_fails_loading(tmp_path: Any, monkeypatch: Any) -> None:
    """Rules are declared with their form; the one name a rule holds, the form its allocations pay, must be
    a registered form, or every allocation would point at nothing."""
    (tmp_path / "misspelt_rules.py").write_text(
        "import dataclasses\n"
        "from forms import postings, vouchers\n"
        "FORMS = [dataclasses.replace(f, posting=dataclasses.replace(postings.CASH_RECEIPT,"
        " allocates='setSaleInvoce')) if f.name == 'setCashReceipt' else f"
        " for f in vouchers.FORMS]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = [m for m in FORM_MODULES if m != "forms.vouchers"]
    with pytest.raises(ValueError, match="setSaleInvoce"):
        build_registry([*modules, "misspelt_rules"])
    build_registry(FORM_MODULES)  # the declared rules load
