"""`gateway push` and `gateway pull` (gateway/push.py, gateway/pull.py) against a real gateway process over
TCP: files of every format stored, the failures file and its second push, vouchers from flat rows, pulls
equal to the database, resumed `since` pulls, and the progress display."""

from __future__ import annotations

import csv
import datetime
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import openpyxl
import pytest
from conftest import PASSWORD, GatewayProcess, add_user
from erp_gateway_client import Client

from gateway import cli
from gateway.push import NOT_SENT

SECRET = "transfer-tests-secret-" + "x" * 24


@pytest.fixture
def gateway(db_url: str, tmp_path: Path, db: asyncpg.Connection) -> Iterator[GatewayProcess]:
    process = GatewayProcess(db_url, {"GATEWAY_DATA_DIR": str(tmp_path),
                              "GATEWAY_JWT_SECRET": SECRET, "GATEWAY_POOL_MIN": "1"}, tmp_path / "gateway.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def writer(db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> str:
    await add_user(db, "loader", "writer")
    monkeypatch.setenv("GATEWAY_USERNAME", "loader")
    monkeypatch.setenv("GATEWAY_PASSWORD", PASSWORD)
    return "loader"


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(gateway: GatewayProcess, writer: str, capsys: pytest.CaptureFixture[str]) -> Run:
    """`gateway ARGS --url <the test gateway>` in this process: (exit status, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = cli.main([*args, "--url", gateway.url])
        out, err = capsys.readouterr()
        return status, out, err

    return call


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def customers(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.fetch(
        "SELECT customer_code, customer_name, email, suplier_yn, status FROM customer WHERE NOT deleted"
        " ORDER BY customer_code")]


async def test_customers_from_csv_json_ndjson_and_xlsx_are_stored_with_their_types(
        run: Run, db: asyncpg.Connection, tmp_path: Path) -> None:
    write_csv(tmp_path / "c.csv", [["CustomerCode", "customername", "Email", "SuplierYN", "Status"],
                                   ["C1", "Csv One", "", "1", "0"], ["C2", "Csv Two", "c2@x.example", "", ""]])
    (tmp_path / "c.json").write_text(json.dumps([{"CustomerCode": "J1", "CustomerName": "Json One", "SuplierYN": 1},
                                                 {"CustomerCode": "J2", "CustomerName": "Json Two", "Email": None}]))
    (tmp_path / "c.ndjson").write_text('{"CustomerCode": "N1", "CustomerName": "Nd One", "Status": "0"}\n\n'
                                       '{"CustomerCode": "N2", "CustomerName": "Nd Two", "SuplierYN": "1"}\n')
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["CustomerCode", "CustomerName", "SuplierYN", "Email"], [1001, "Xlsx One", 1, None],
                ["X2", "Xlsx Two", None, "x2@x.example"]):
        sheet.append(row)
    book.save(tmp_path / "c.xlsx")

    for name in ("c.csv", "c.json", "c.ndjson", "c.xlsx"):
        status, out, err = run("push", str(tmp_path / name), "--form", "setCustomer")
        assert (status, err) == (0, ""), out + err
        assert "inserted 2" in out and "rows read" in out
        assert not (tmp_path / name.replace(".", ".failures.")).exists()
    assert await customers(db) == [
        ("1001", "Xlsx One", None, 1, "1"), ("C1", "Csv One", None, 1, "0"),
        ("C2", "Csv Two", "c2@x.example", 0, "1"), ("J1", "Json One", None, 1, "1"),
        ("J2", "Json Two", None, 0, "1"), ("N1", "Nd One", None, 0, "0"), ("N2", "Nd Two", None, 1, "1"),
        ("X2", "Xlsx Two", "x2@x.example", 0, "1")]


async def test_rejected_rows_go_to_the_failures_file_and_the_fixed_file_goes_in_without_duplicates(
        run: Run, db: asyncpg.Connection, tmp_path: Path) -> None:
    header = ["ItemCode", "ItemName", "ItemType", "Price"]
    rows = [[f"IT{i}", f"Item {i}", "HH", f"{i}.5"] for i in range(10)]
    rows[2] = ["IT2", "", "HH", "7"]  # no name: refused by the gateway
    rows[6] = ["IT6", "Item 6", "HH", "12,5"]  # not a number: refused here, with its row number
    rows[8] = ["IT8", "Item 8", "HH", "8.5", "a cell too many"]
    source = write_csv(tmp_path / "items.csv", [header, *rows])

    status, out, _ = run("push", str(source), "--form", "setItem", "--partial", "--chunk", "4")
    assert status == 2
    failures = tmp_path / "items.failures.csv"
    assert "10 rows read" in out and "3 rows not written" in out and str(failures) in out
    got = read_csv(failures)
    assert [[r[c] for c in header] for r in got] == [rows[2], rows[6], rows[8][:4]]  # as read, in order
    assert "ItemName" in got[0]["_error"]
    assert got[1]["_error"] == "row 7: Price: not a number: '12,5'"
    assert got[2]["_error"] == "row 9: 5 cells, and 4 columns in the header"
    assert await db.fetchval("SELECT count(*) FROM item") == 7

    # Fixed in the failures file and pushed again: only those rows, the _error column ignored.
    got[0]["ItemName"], got[1]["Price"] = "Item 2", "12.5"
    write_csv(failures, [[*header, "_error"], *([r[c] for c in [*header, "_error"]] for r in got)])
    status, out, _ = run("push", str(failures), "--form", "setItem")
    assert status == 0 and "inserted 3" in out
    assert not (tmp_path / "items.failures.failures.csv").exists()
    stored = await db.fetch("SELECT item_code, item_name, price FROM item ORDER BY item_code")
    assert [tuple(r) for r in stored] == [
        (f"IT{i}", f"Item {i}", Decimal("12.5") if i == 6 else Decimal(7) if i == 2 else Decimal(f"{i}.5"))
        for i in range(10)]


async def test_an_atomic_push_stops_at_a_refused_chunk_and_keeps_every_row_not_written(
        run: Run, db: asyncpg.Connection, tmp_path: Path) -> None:
    rows = [[f"C{i}", f"Name {i}"] for i in range(7)]
    rows[3] = ["C3", ""]
    source = write_csv(tmp_path / "c.csv", [["CustomerCode", "CustomerName"], *rows])
    status, out, _ = run("push", str(source), "--form", "setCustomer", "--chunk", "2", "--quiet")
    assert status == 2 and "inserted 2" in out
    got = read_csv(tmp_path / "c.failures.csv")
    assert [r["CustomerCode"] for r in got] == ["C2", "C3", "C4", "C5", "C6"]
    assert got[0]["_error"].startswith("not written") and "CustomerName" in got[1]["_error"]
    assert {r["_error"] for r in got[2:]} == {NOT_SENT}
    assert [r[0] for r in await customers(db)] == ["C0", "C1"]


async def test_failures_files_of_xlsx_and_ndjson_keep_the_rows_as_read(
        run: Run, db: asyncpg.Connection, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["ItemCode", "ItemName", "ItemType", "Price"], ["IT1", "One", "HH", 1.5],
                ["IT2", "Two", "HH", "cheap"], ["IT3", None, "HH", 3]):
        sheet.append(row)
    book.save(tmp_path / "items.xlsx")
    status, _, _ = run("push", str(tmp_path / "items.xlsx"), "--form", "setItem", "--partial")
    assert status == 2
    failed = list(openpyxl.load_workbook(tmp_path / "items.failures.xlsx").worksheets[0].values)
    assert failed[0] == ("ItemCode", "ItemName", "ItemType", "Price", "_error")
    assert [row[:4] for row in failed[1:]] == [("IT2", "Two", "HH", "cheap"), ("IT3", None, "HH", 3)]
    assert failed[1][4] == "row 2: Price: not a number: 'cheap'" and "ItemName" in str(failed[2][4])

    (tmp_path / "c.ndjson").write_text('{"CustomerCode": "C1", "CustomerName": "One", "Extra": 1.50}\n'
                                       '{"CustomerCode": "C2", "CustomerName": "Two"}\n')
    status, _, _ = run("push", str(tmp_path / "c.ndjson"), "--form", "setCustomer", "--partial")
    assert status == 2
    failed_lines = (tmp_path / "c.failures.ndjson").read_text().splitlines()
    assert failed_lines == [('{"CustomerCode":"C1","CustomerName":"One","Extra":1.50,'
                             '"_error":"row 1: Extra: not a field of the form"}')]
    assert await db.fetchval("SELECT string_agg(item_code || ':' || customer_code, ',') FROM item, customer"
                             ) == "IT1:C2"


async def test_tombstones_of_the_change_feed_are_pushed_as_deletes(
        run: Run, db: asyncpg.Connection, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "c.csv", [["CustomerCode", "CustomerName", "Deleted"], ["C1", "One", "false"],
                                            ["C2", "Two", ""], ["C3", "Three", "false"]])
    assert run("push", str(source), "--form", "setCustomer")[0] == 0
    write_csv(source, [["CustomerCode", "CustomerName", "Deleted"], ["C2", "", "true"], ["C3", "Three", "false"]])
    status, out, _ = run("push", str(source), "--form", "setCustomer")
    assert status == 0 and "unchanged 1, deleted 1" in out
    assert [r[0] for r in await customers(db)] == ["C1", "C3"]


async def test_a_bad_file_or_login_fails_with_status_1_and_sends_nothing(
        run: Run, db: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_csv(tmp_path / "c.csv", [["CustomerCode", "CustomerNmae"], ["C1", "One"]])
    status, _, err = run("push", str(source), "--form", "setCustomer")
    assert status == 1 and "CustomerNmae name no field of the form" in err
    status, _, err = run("push", str(tmp_path / "c.txt"), "--form", "setCustomer")
    assert status == 1 and "give --format" in err
    monkeypatch.setenv("GATEWAY_PASSWORD", "wrong password")
    write_csv(source, [["CustomerCode", "CustomerName"], ["C1", "One"]])
    status, _, err = run("push", str(source), "--form", "setCustomer")
    assert status == 1 and "401" in err
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def setup_sales(gateway: GatewayProcess, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE tenant SET negative_stock = 'allow' WHERE code = 'acme'")  # sales without receipts
    with Client(gateway.url, "loader", PASSWORD) as client:
        for form, data in (
            ("setCurrency", [{"CurrencyCode": "VND", "CurrencyName": "Dong", "DecimalPlaces": 0}]),
            ("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "Alpha"}]),
            ("setItem", [{"ItemCode": "IT1", "ItemName": "Widget", "ItemType": "HH"},
                         {"ItemCode": "IT2", "ItemName": "Gadget", "ItemType": "HH"}]),
            ("setSite", [{"SiteCode": "K1", "SiteName": "Main store"}]),
            ("setAccount", [{"AccountCode": "131", "AccountName": "Receivables", "AccountType": "asset"},
                            {"AccountCode": "511", "AccountName": "Revenue", "AccountType": "revenue"}]),
        ):
            client.sync(form, data)


INVOICE_HEADER = ["VoucherId", "VoucherDate", "CustomerCode", "TotalQuantity", "TotalNetAmount",
                  "TotalDiscountAmount", "TotalTaxAmount", "TotalAmount", "RefNumber", "ItemCode", "Uom",
                  "SiteCode", "Quantity", "UnitPrice", "Amount", "TaxRate", "TaxAmount", "detail.TotalAmount"]


def invoice_rows(vid: str, *lines: tuple[int, str, int, int]) -> list[list[Any]]:
    """Flat rows of a sales invoice: (RefNumber, ItemCode, Quantity, UnitPrice) per line, 10% VAT."""
    amounts = [(q * p, q * p // 10) for _, _, q, p in lines]
    totals = [sum(q for _, _, q, _ in lines), sum(a for a, _ in amounts), 0, sum(t for _, t in amounts),
              sum(a + t for a, t in amounts)]
    return [[vid, "2026-03-15", "KH1", *totals, ref, item, "PCS", "K1", q, p, a, 10, t, a + t]
            for (ref, item, q, p), (a, t) in zip(lines, amounts, strict=True)]


async def test_vouchers_from_a_flat_csv_are_grouped_by_voucher_id_and_bad_groups_refused_here(
        run: Run, gateway: GatewayProcess, db: asyncpg.Connection, tmp_path: Path) -> None:
    await setup_sales(gateway, db)
    disagreeing = invoice_rows("INV-3", (1, "IT1", 1, 100), (2, "IT2", 1, 100))
    disagreeing[1][2] = "KH9"  # another customer on the second line of the same voucher
    apart = invoice_rows("INV-4", (1, "IT1", 1, 100), (2, "IT2", 1, 100))
    rows = [*invoice_rows("INV-1", (1, "IT1", 2, 100_000), (2, "IT2", 1, 50_000), (3, "IT1", 3, 1_000)),
            apart[0], *invoice_rows("INV-2", (5, "IT2", 4, 25_000)), *disagreeing, apart[1],
            *invoice_rows("INV-5", (1, "IT1", 1, 100), (2, "IT9", 1, 100))]  # no item IT9: refused by the gateway
    rows[1][0:3] = ["INV-1", "", ""]  # header cells left empty on a voucher's later row: taken from the others
    source = write_csv(tmp_path / "sales.csv", [INVOICE_HEADER, *rows])

    status, out, _ = run("push", str(source), "--form", "setSaleInvoice", "--partial")
    assert status == 2 and "inserted 2" in out and "6 rows not written" in out
    failures = read_csv(tmp_path / "sales.failures.csv")
    assert [(r["VoucherId"], r["RefNumber"]) for r in failures] == [
        ("INV-4", "1"), ("INV-3", "1"), ("INV-3", "2"), ("INV-4", "2"), ("INV-5", "1"), ("INV-5", "2")]
    assert "rows of voucher INV-4 are not all together" in failures[0]["_error"]
    assert "row 7: CustomerCode is 'KH9' but 'KH1' on row 6" in failures[1]["_error"]
    assert failures[4]["_error"] == failures[5]["_error"]
    assert failures[5]["_error"].startswith("row 10: ItemCode") and "IT9" in failures[5]["_error"]
    lines = await db.fetch("SELECT voucher_id, line_no, item_code, quantity, total_amount FROM voucher_line"
                           " ORDER BY voucher_id, line_no")
    assert [tuple(r) for r in lines] == [
        ("INV-1", 1, "IT1", 2, 220_000), ("INV-1", 2, "IT2", 1, 55_000), ("INV-1", 3, "IT1", 3, 3_300),
        ("INV-2", 5, "IT2", 4, 110_000)]
    assert await db.fetchval("SELECT total_amount FROM voucher WHERE voucher_id = 'INV-1'") == 278_300


async def test_vouchers_pulled_to_csv_push_back_unchanged(
        run: Run, gateway: GatewayProcess, db: asyncpg.Connection, tmp_path: Path) -> None:
    await setup_sales(gateway, db)
    source = write_csv(tmp_path / "sales.csv", [INVOICE_HEADER,
                                                *invoice_rows("INV-1", (1, "IT1", 2, 100_000), (2, "IT2", 1, 50)),
                                                *invoice_rows("INV-2", (1, "IT2", 4, 25_000))])
    assert run("push", str(source), "--form", "setSaleInvoice")[0] == 0
    before = [tuple(r) for r in await db.fetch("SELECT voucher_id, document, change_seq FROM voucher ORDER BY 1")]

    pulled = tmp_path / "pulled.csv"
    status, out, _ = run("pull", "--form", "getSaleInvoice", "--output", str(pulled))
    assert status == 0 and "2 records (3 rows)" in out
    rows = read_csv(pulled)
    assert [(r["VoucherId"], r["RefNumber"], r["TotalAmount"], r["detail.TotalAmount"]) for r in rows] == [
        ("INV-1", "1", "220055", "220000"), ("INV-1", "2", "220055", "55"), ("INV-2", "1", "110000", "110000")]
    status, out, _ = run("push", str(pulled), "--form", "setSaleInvoice")
    assert status == 0 and "unchanged 2" in out
    assert [tuple(r) for r in await db.fetch("SELECT voucher_id, document, change_seq FROM voucher ORDER BY 1")
            ] == before

    # A report has no schema: its columns are its rows' fields, and its parameters pass through.
    status, out, _ = run("pull", "--form", "getStock", "--output", str(tmp_path / "stock.csv"),
                         "--param", "dateTo=2026-12-31")
    assert status == 0
    assert [(r["ItemCode"], r["SiteCode"], Decimal(r["Quantity"])) for r in read_csv(tmp_path / "stock.csv")] == [
        ("IT1", "K1", -2), ("IT2", "K1", -5)]


async def test_a_pull_to_csv_or_ndjson_holds_what_the_database_holds(
        run: Run, gateway: GatewayProcess, db: asyncpg.Connection, tmp_path: Path) -> None:
    with Client(gateway.url, "loader", PASSWORD) as client:
        client.sync("setCustomer", [{"CustomerCode": f"C{i:02d}", "CustomerName": f"Name, {i} \"q\"",
                                     "Email": f"c{i}@x.example" if i % 2 else None, "SuplierYN": i % 2}
                                    for i in range(25)])
    stored = await customers(db)

    status, _, _ = run("pull", "--form", "getCustomer", "--output", str(tmp_path / "c.csv"), "--page-size", "10")
    assert status == 0
    rows = read_csv(tmp_path / "c.csv")
    assert list(rows[0])[:3] == ["CustomerCode", "CustomerName", "OtherName"] and "Deleted" not in rows[0]
    assert [(r["CustomerCode"], r["CustomerName"], r["Email"] or None, int(r["SuplierYN"]), r["Status"])
            for r in rows] == stored

    status, _, _ = run("pull", "--form", "getCustomer", "--output", str(tmp_path / "c.ndjson"))
    assert status == 0
    records = [json.loads(line) for line in (tmp_path / "c.ndjson").read_text().splitlines()]
    assert [(r["CustomerCode"], r["CustomerName"], r.get("Email"), r["SuplierYN"], r["Status"])
            for r in records] == stored


async def test_a_since_auto_pull_run_twice_appends_only_what_changed_in_between(
        run: Run, gateway: GatewayProcess, db: asyncpg.Connection, tmp_path: Path) -> None:
    output, state = tmp_path / "feed.csv", tmp_path / "feed.csv.state"
    with Client(gateway.url, "loader", PASSWORD) as client:
        client.sync("setCustomer", [{"CustomerCode": f"C{i}", "CustomerName": f"Name {i}"} for i in range(5)])
        assert run("pull", "--form", "getCustomer", "--output", str(output), "--since", "auto",
                   "--page-size", "2")[0] == 0
        first = output.read_bytes()
        assert json.loads(state.read_text())["bytes"] == len(first)
        assert [r["CustomerCode"] for r in read_csv(output)] == [f"C{i}" for i in range(5)]

        client.sync("setCustomer", [{"CustomerCode": "C1", "CustomerName": "Renamed"},
                                    {"CustomerCode": "C9", "CustomerName": "New"},
                                    {"CustomerCode": "C3", "action": "delete"}])
        # A page written by a run that died before storing its position is cut off, not kept twice.
        output.write_bytes(first + b"C7,half a page\r\n")
        status, out, _ = run("pull", "--form", "getCustomer", "--output", str(output), "--since", "auto")
        assert status == 0 and "3 records" in out

    content = output.read_bytes()
    assert content.startswith(first) and content.count(b"CustomerCode") == 1  # one header, then appended
    added = read_csv(output)[5:]
    assert [(r["CustomerCode"], r["CustomerName"], r["Deleted"]) for r in added] == [
        ("C1", "Renamed", "false"), ("C9", "New", "false"), ("C3", "", "true")]
    assert json.loads(state.read_text())["bytes"] == len(content)

    # Nothing changed since: a third run appends nothing.
    status, out, _ = run("pull", "--form", "getCustomer", "--output", str(output), "--since", "auto")
    assert status == 0 and "0 records" in out and output.read_bytes() == content


async def test_progress_shows_the_rate_and_time_left_unless_quiet(
        run: Run, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "c.csv", [["CustomerCode", "CustomerName"],
                                            *([f"C{i}", f"N{i}"] for i in range(50))])
    status, out, err = run("push", str(source), "--form", "setCustomer", "--progress", "--chunk", "10")
    assert status == 0 and "50/50 rows" in err and "rows/s" in err and "ETA" in err
    status, out, err = run("push", str(source), "--form", "setCustomer", "--quiet")
    assert (status, err) == (0, "") and out.startswith("setCustomer: 50 rows read") and "unchanged 50" in out


def test_progress_is_shown_on_a_terminal_and_not_on_a_pipe(
        gateway: GatewayProcess, writer: str, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "c.csv", [["CustomerCode", "CustomerName"], ["C1", "N1"], ["C2", "N2"]])
    command = [sys.executable, "-m", "gateway.cli", "push", str(source), "--form", "setCustomer",
               "--url", gateway.url]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 wide
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=follower, check=False, timeout=60)
        os.close(follower)
        shown = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and b"rows/s" in shown and b"ETA" in shown
    assert done.stdout.startswith(b"setCustomer: 2 rows read")

    piped = subprocess.run(command, capture_output=True, check=False, timeout=60)
    assert piped.returncode == 0 and piped.stderr == b"" and b"unchanged 2" in piped.stdout


def test_cells_are_converted_to_the_fields_types() -> None:
    from gateway.transfer import ABSENT, convert

    assert convert({"type": ["number", "null"]}, " 12.50 ") == Decimal("12.50")
    assert convert({"type": "number"}, 0.1) == Decimal("0.1")  # a spreadsheet's float, by its shortest text
    assert convert({"type": "integer"}, "7") == 7 and convert({"type": "integer"}, Decimal("7.0")) == 7
    assert convert({"type": "boolean"}, "Yes") is True
    assert convert({"type": ["string", "null"]}, "") is ABSENT
    assert convert({"type": "string"}, 1001.0) == "1001"
    assert convert({"type": "string", "format": "date"}, datetime.datetime(2026, 3, 15)) == "2026-03-15"
    assert convert({"enum": ["1", "0", 1, 0]}, "1") == "1" and convert({"enum": [0, 1]}, "1") == 1
    for spec, bad in (({"type": "integer"}, "7.5"), ({"type": "number"}, "NaN"), ({"type": "boolean"}, "maybe")):
        with pytest.raises(ValueError, match="not"):
            convert(spec, bad)
