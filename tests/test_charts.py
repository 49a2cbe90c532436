"""The Vietnamese charts of accounts a tenant is created with: well-formed, valid setAccount records, and
holding every account the posting roles map to."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

import jsonschema_rs
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHARTS = ROOT / "sql" / "charts"
HEADER = "AccountCode,ParentCode,AccountType,AccountName,OtherName"
SCHEMA = json.loads((ROOT / "schemas" / "setAccount.json").read_text(encoding="utf-8"))
ACCOUNT_TYPES = SCHEMA["properties"]["AccountType"]["enum"]

# The first digit of a code is its class; see sql/charts/README.md for why 911 is equity.
CLASS_TYPES = {"1": "asset", "2": "asset", "3": "liability", "4": "equity", "5": "revenue", "6": "expense",
               "7": "revenue", "8": "expense", "9": "equity"}

# Posting role -> account, per chart; the same table as sql/charts/README.md.
ROLE_ACCOUNTS = {
    "vn_c200": {
        "receivable": "131",
        "payable": "331",
        "revenue": "5111",
        "sales_returns": "5212",
        "vat_output": "33311",
        "vat_input": "1331",
        "inventory": "1561",
        "cash": "1111",
        "bank": "1121",
        "cost_of_sales": "632",
        "goods_received_not_invoiced": "3388",
        "inventory_surplus": "3381",
        "purchased_services": "6427",
        "fx_gain": "515",
        "fx_loss": "635",
        "rounding_gain": "711",
        "rounding_loss": "811",
    },
    "vn_c133": {
        "receivable": "131",
        "payable": "331",
        "revenue": "5111",
        "sales_returns": "5111",
        "vat_output": "33311",
        "vat_input": "1331",
        "inventory": "156",
        "cash": "1111",
        "bank": "1121",
        "cost_of_sales": "632",
        "goods_received_not_invoiced": "3388",
        "inventory_surplus": "3381",
        "purchased_services": "6422",
        "fx_gain": "515",
        "fx_loss": "635",
        "rounding_gain": "711",
        "rounding_loss": "811",
    },
}
ROLE_TYPES = {
    "receivable": "asset", "payable": "liability", "revenue": "revenue", "sales_returns": "revenue",
    "vat_output": "liability", "vat_input": "asset", "inventory": "asset", "cash": "asset", "bank": "asset",
    "cost_of_sales": "expense", "goods_received_not_invoiced": "liability", "inventory_surplus": "liability",
    "purchased_services": "expense", "fx_gain": "revenue", "fx_loss": "expense", "rounding_gain": "revenue",
    "rounding_loss": "expense",
}

C200_ONLY = {"521", "5211", "5212", "5213", "1561", "1562", "641"}
KEY_ACCOUNTS = {
    "111", "1111", "112", "1121", "131", "133", "1331", "1332", "152", "153", "155", "156", "1561", "1562",
    "157", "211", "214", "331", "333", "3331", "33311", "334", "338", "411", "421", "511", "5111", "5112",
    "5113", "515", "521", "5211", "5212", "5213", "632", "635", "641", "642", "711", "811", "821", "911",
}
EXPECTED = {
    # chart: (level-1 accounts the circular lists, key accounts, accounts the circular does not have)
    "vn_c200": (76, KEY_ACCOUNTS, set()),
    "vn_c133": (49, KEY_ACCOUNTS - C200_ONLY, C200_ONLY | {"113", "212", "213", "344", "621", "622", "627"}),
}
CHART_NAMES = sorted(EXPECTED)


def load(name: str) -> tuple[str, list[dict[str, str]]]:
    text = (CHARTS / f"{name}.csv").read_bytes().decode("utf-8")
    return text, list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module", params=CHART_NAMES)
def chart(request: pytest.FixtureRequest) -> tuple[str, str, list[dict[str, str]]]:
    text, rows = load(request.param)
    return request.param, text, rows


def test_layout_is_exact(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    _, text, rows = chart
    assert not text.startswith("\ufeff")
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[0] == HEADER
    # Writing the rows back with minimal quoting gives the file byte for byte: quotes only around commas.
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER.split(","))
    for row in rows:
        assert None not in row and all(v is not None for v in row.values()), row
        writer.writerow([row[k] for k in HEADER.split(",")])
    assert out.getvalue() == text


def test_codes_and_parents(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    name, _, rows = chart
    codes = [r["AccountCode"] for r in rows]
    assert len(codes) == len(set(codes))
    known = set(codes)
    for r in rows:
        code, parent = r["AccountCode"], r["ParentCode"]
        assert code.isascii() and code.isdigit() and 3 <= len(code) <= 5, code
        prefixes = [code[:n] for n in range(len(code) - 1, 0, -1) if code[:n] in known]
        if len(code) == 3:
            assert parent == "" and not prefixes, code
        else:
            # The parent is the nearest ancestor in the file, one level up.
            assert prefixes and parent == prefixes[0], (code, parent)
            assert len(code) - len(parent) == 1, (code, parent)
    assert sum(len(c) == 3 for c in codes) == EXPECTED[name][0]


def test_parent_precedes_child(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    _, _, rows = chart
    seen: set[str] = set()
    for r in rows:
        # Loading the file in order never references a parent not yet created.
        assert r["ParentCode"] == "" or r["ParentCode"] in seen, r["AccountCode"]
        seen.add(r["AccountCode"])


def test_types_follow_the_class(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    _, _, rows = chart
    for r in rows:
        assert r["AccountType"] in ACCOUNT_TYPES
        assert r["AccountType"] == CLASS_TYPES[r["AccountCode"][0]], r["AccountCode"]
    by_code = {r["AccountCode"]: r["AccountType"] for r in rows}
    assert by_code["214"] == "asset" and by_code["229"] == "asset"
    assert by_code["911"] == "equity"


def test_names(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    _, _, rows = chart
    for r in rows:
        for field in ("AccountName", "OtherName"):
            value = r[field]
            assert value and value == value.strip() and len(value) <= 256, (r["AccountCode"], field)
            assert unicodedata.is_normalized("NFC", value), (r["AccountCode"], field)
        assert r["OtherName"].isascii(), r["AccountCode"]


def test_rows_are_valid_set_account_records(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    _, _, rows = chart
    validator = jsonschema_rs.Draft202012Validator(SCHEMA, validate_formats=True)
    for r in rows:
        record = {
            "AccountCode": r["AccountCode"],
            "AccountName": r["AccountName"],
            "OtherName": r["OtherName"],
            "AccountType": r["AccountType"],
            "ParentCode": r["ParentCode"] or None,
        }
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (r["AccountCode"], errors)


def test_key_accounts(chart: tuple[str, str, list[dict[str, str]]]) -> None:
    name, _, rows = chart
    codes = {r["AccountCode"] for r in rows}
    _, present, absent = EXPECTED[name]
    assert present <= codes, sorted(present - codes)
    assert not absent & codes, sorted(absent & codes)


def test_names_as_the_circulars_have_them() -> None:
    c200 = {r["AccountCode"]: r["AccountName"] for r in load("vn_c200")[1]}
    c133 = {r["AccountCode"]: r["AccountName"] for r in load("vn_c133")[1]}
    # Circular 200 art. 81: 5212 is returns, 5213 allowances (some software has the two the other way round).
    assert c200["5212"] == "Hàng bán bị trả lại" and c200["5213"] == "Giảm giá hàng bán"
    assert c200["33311"] == c133["33311"] == "Thuế GTGT đầu ra"
    assert c200["642"] == "Chi phí quản lý doanh nghiệp"
    assert c133["642"] == "Chi phí quản lý kinh doanh" and c133["6421"] == "Chi phí bán hàng"
    assert c133["211"] == "Tài sản cố định" and c200["211"] == "Tài sản cố định hữu hình"
    assert c133["3386"] == "Nhận ký quỹ, ký cược" and c200["3386"] == "Bảo hiểm thất nghiệp"


@pytest.mark.parametrize("name", CHART_NAMES)
def test_role_accounts_resolve(name: str) -> None:
    rows = load(name)[1]
    by_code = {r["AccountCode"]: r for r in rows}
    parents = {r["ParentCode"] for r in rows}
    roles = ROLE_ACCOUNTS[name]
    assert set(roles) == set(ROLE_TYPES)
    for role, code in roles.items():
        assert code in by_code, (role, code)
        # Entries go to detail accounts: a role never maps to an account that has sub-accounts.
        assert code not in parents, (role, code)
        assert by_code[code]["AccountType"] == ROLE_TYPES[role], (role, code)


def test_role_table_in_readme_matches() -> None:
    readme = (CHARTS / "README.md").read_text(encoding="utf-8")
    table = {}
    for line in readme.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in ROLE_TYPES:
            table[cells[0]] = (cells[1], cells[2])
    expected = {role: (ROLE_ACCOUNTS["vn_c200"][role], ROLE_ACCOUNTS["vn_c133"][role]) for role in ROLE_TYPES}
    assert table == expected
