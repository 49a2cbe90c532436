"""The engine's preparation of a batch, without the database: the fast path for a wholly valid batch must
give exactly what the record-by-record path gives, and fall back to it whenever a record needs more."""

from __future__ import annotations

from typing import Any

import pytest

from forms import FORM_MODULES
from gateway import engine
from gateway.forms import build_registry

REGISTRY = build_registry(FORM_MODULES)


def form(name: str) -> Any:
    return REGISTRY.resolve("SyncData", name)[0]


def batch_fields(f: Any, batch: engine.Batch) -> dict[str, Any]:
    # Rows, not records: the record-by-record path reads values as clients send them (1 for "1", null for
    # absent), and both must come to the same stored rows.
    return {
        "upserts": dict(zip(batch.upserts, engine.rows_of(f, list(batch.upserts.values())))),
        "deletes": batch.deletes,
        "errors": batch.errors,
        "failed": batch.failed_indexes,
        "superseded": batch.superseded,
        "index_of": batch.index_of,
        "key_at": batch.key_at,
    }


VALID_BATCHES = {
    "setCustomer": [
        {"CustomerCode": "KH2", "CustomerName": "Two", "Status": 1},
        {"CustomerCode": "KH1", "CustomerName": "One"},
        {"CustomerCode": "KH2", "CustomerName": "Two again", "SuplierYN": 1},  # repeated: this one wins
        {"CustomerCode": "KH3", "CustomerName": "Three", "Address": None},
        {"CustomerCode": "KH1", "CustomerName": "One again"},
    ],
    # A key of two parts.
    "UnitConversion": [
        {"ItemCode": "VT1", "Uom": "THUNG", "Coefficient": 24},
        {"ItemCode": "VT1", "Uom": "LOC", "Coefficient": 6},
        {"ItemCode": "VT1", "Uom": "THUNG", "Coefficient": 12},
    ],
}


@pytest.mark.parametrize("name", sorted(VALID_BATCHES))
@pytest.mark.parametrize("keep_keys", [False, True])
def test_valid_batch_fast_path_matches_record_by_record(name: str, keep_keys: bool) -> None:
    f, data = form(name), VALID_BATCHES[name]
    assert f.batch_validator.is_valid(data)
    fast = engine.prepare(f, data, keep_keys=keep_keys)
    each = engine._prepare_each(f, data, keep_keys=keep_keys)
    assert batch_fields(f, fast) == batch_fields(f, each)
    assert fast.superseded == 2 if name == "setCustomer" else fast.superseded == 1
    last = {k: data[i] for k, i in fast.index_of.items()}
    assert fast.upserts == last  # the last occurrence of every key, and nothing else


@pytest.mark.parametrize("record", [
    {"customercode": "KH9", "customername": "lower-case names"},  # matched case-insensitively
    {"CustomerCode": "KH9", "action": "delete"},  # a delete
    {"CustomerCode": "KH9"},  # invalid: name missing
    {"CustomerCode": "KH9", "CustomerName": "x" * 300},  # invalid: too long
    "not an object",
])
def test_batch_needing_more_takes_the_record_by_record_path(record: Any) -> None:
    f = form("setCustomer")
    data = [{"CustomerCode": "KH1", "CustomerName": "One"}, record]
    assert not f.batch_validator.is_valid(data)
    assert batch_fields(f, engine.prepare(f, data)) == batch_fields(f, engine._prepare_each(f, data, False))


def test_form_with_checks_reports_them_whatever_the_batch() -> None:
    f = form("setJob")
    assert f.checks
    data = [{"JobCode": "J1", "JobName": "Job", "FromDate": "2026-02-01", "ToDate": "2026-01-01"}]
    batch = engine.prepare(f, data)
    assert batch.failed_indexes == {0}
    assert batch.errors[0]["path"] == "/ToDate"


def test_rows_apply_defaults_and_convert_values_in_column_order() -> None:
    f = form("setCustomer")
    rows = engine.rows_of(f, [
        {"CustomerCode": "KH1", "CustomerName": "One"},
        {"CustomerCode": "KH2", "CustomerName": "Two", "Status": 0, "SuplierYN": 1, "Address": "Hà Nội"},
    ])
    names = [c.field for c in f.columns]
    first, second = (dict(zip(names, r)) for r in rows)
    assert first["Status"] == "1" and first["SuplierYN"] == 0 and first["Address"] is None
    assert second["Status"] == "0" and second["SuplierYN"] == 1 and second["Address"] == "Hà Nội"
    assert all(len(r) == len(f.columns) for r in rows)
