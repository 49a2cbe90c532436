"""Reading records as clients send them: each accepted spelling becomes exactly what the schema asks for, and
each other value is left as sent so that the schema names it (no database needed)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from gateway.lenient import Warnings, compile_reader, date_part, parse_date

SCHEMA: dict[str, Any] = {
    "title": "sample",
    "required": ["CustomerCode", "Name"],
    "properties": {
        "CustomerCode": {"type": "string"},
        "Name": {"type": "string"},
        "PhoneNumber": {"type": ["string", "null"]},
        "SignedDate": {"type": ["string", "null"], "format": "date"},
        "Amount": {"type": "number"},
        "RefNumber": {"type": "integer"},
        "SuplierYN": {"enum": [0, 1], "default": 0},
        "Status": {"enum": ["1", "0", 1, 0], "default": "1"},
        "TaxRate": {"type": "number", "enum": [0, 5, 8, 10, -1, -2]},
        "detail": {"type": "array", "items": {"type": "object", "properties": {
            "ItemCode": {"type": "string"}, "Quantity": {"type": "number"}}}},
    },
}
READER = compile_reader(SCHEMA, passthrough=("action",))


def read(record: dict[str, Any], warnings: Warnings | None = None) -> dict[str, Any]:
    return READER.read(record, 0, warnings if warnings is not None else Warnings())


@pytest.mark.parametrize(("field", "sent", "read_as"), [
    ("SignedDate", "2026-06-10T00:00:00", "2026-06-10"),
    ("SignedDate", "2026-06-10T23:30:00.1234567-05:00", "2026-06-10"),  # the sender's day, not UTC's
    ("SignedDate", "2026-06-10T00:00:00Z", "2026-06-10"),
    ("SignedDate", "2026-06-10", "2026-06-10"),
    ("Amount", "5333333", Decimal(5333333)),
    ("Amount", "1234567890.123456789", Decimal("1234567890.123456789")),
    ("Amount", " -12.50 ", Decimal("-12.50")),
    ("RefNumber", "1", 1),
    ("RefNumber", Decimal("2.0"), 2),
    ("SuplierYN", "1", 1), ("SuplierYN", True, 1), ("SuplierYN", False, 0), ("SuplierYN", "0", 0),
    ("Status", 1, "1"), ("Status", True, "1"), ("Status", 0, "0"), ("Status", False, "0"),
    ("TaxRate", "10", 10), ("TaxRate", "-1", -1), ("TaxRate", Decimal(8), 8),
    ("CustomerCode", 1001, "1001"),
])
def test_what_real_clients_send_is_read_exactly(field: str, sent: Any, read_as: Any) -> None:
    got = read({"CustomerCode": "K", "Name": "n", field: sent})[field]
    assert got == read_as and type(got) is type(read_as)


@pytest.mark.parametrize(("field", "sent"), [
    ("SignedDate", "10/06/2026"), ("SignedDate", "2026-06-10T25:00:00"), ("SignedDate", "2026-02-30T00:00"),
    ("SignedDate", "20260610"),
    ("Amount", "12,5"), ("Amount", "1e"), ("Amount", "ten"), ("Amount", True),
    ("RefNumber", "1.5"), ("RefNumber", "one"),
    ("SuplierYN", "yes"), ("SuplierYN", 2), ("Status", "7"), ("TaxRate", "10%"), ("TaxRate", True),
    ("PhoneNumber", 901234567),  # an integer would have lost the number's leading zero: not a code
    ("CustomerCode", True), ("CustomerCode", 1.5),
    # Too large to be anything's value: left whole, for the schema's bounds to refuse, never a crash.
    ("RefNumber", "1" * 40), ("RefNumber", Decimal("1e999999")), ("TaxRate", "1e999999"),
    ("SuplierYN", Decimal("1e999999")), ("Status", Decimal("-1e999999")),
])
def test_anything_else_is_left_for_the_schema_to_refuse(field: str, sent: Any) -> None:
    assert read({"CustomerCode": "K", "Name": "n", field: sent})[field] == sent


def test_null_is_absent_for_an_optional_field_and_stays_for_a_required_one() -> None:
    got = read({"CustomerCode": "K", "Name": None, "PhoneNumber": None, "Status": None, "action": None})
    assert got == {"CustomerCode": "K", "Name": None}


def test_names_match_in_any_case_inside_lists_too() -> None:
    got = read({"customercode": "K", "NAME": "n", "Detail": [{"itemcode": "I", "quantity": "2"}]})
    assert got == {"CustomerCode": "K", "Name": "n", "detail": [{"ItemCode": "I", "Quantity": Decimal(2)}]}


def test_unknown_fields_are_dropped_and_reported_once_per_request() -> None:
    warnings = Warnings()
    for index in range(3):
        READER.read({"CustomerCode": f"K{index}", "Name": "n", "Emial": "x",
                     "detail": [{"ItemCode": "I", "Colour": "red"}, {"ItemCode": "J", "Colour": "blue"}]},
                    index, warnings)
    assert [(w["index"], w["path"]) for w in warnings.as_list()] == [(0, "/Emial"), (0, "/detail/0/Colour")]
    assert all("(3 records)" in w["message"] for w in warnings.as_list())


def test_a_strict_read_keeps_unknown_fields_for_the_schema_to_refuse() -> None:
    assert READER.read({"CustomerCode": "K", "Name": "n", "Emial": "x"}, 0, None)["Emial"] == "x"


def test_one_date_rule() -> None:
    assert parse_date("2026-06-10T00:00:00.000+07:00") == dt.date(2026, 6, 10)
    assert parse_date("") is None and parse_date(None) is None
    for bad in ("2026-6-10", "2026-06-10T00:00:00+24:00", "2026-06-10Tnoon", 20260610):
        with pytest.raises(ValueError):
            parse_date(bad)
    assert date_part("not a date at all") == "not a date at all"
