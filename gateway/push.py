"""`gateway push FILE --form setCustomer`: a CSV, JSON, NDJSON or XLSX file into a form, through the API.

Rows are read as a stream (CSV, NDJSON, XLSX; a JSON array is read whole), converted to the form's field
types (gateway/transfer.py), and sent by the Python client in chunks, each with its Idempotency-Key and
retries. Every row that is not written goes to the failures file as it was read, in the input's format and
columns, with `_error` saying why: fix it there and push that file again (push ignores `_error`).

Vouchers: one row per line, the header fields repeated on each of the voucher's rows. A voucher's rows must
follow one another (as `gateway pull` writes them); a VoucherId whose rows are apart in the file, or whose
rows disagree on a header field, is refused here, all its rows to the failures file. A header cell left
empty on some of a voucher's rows takes the value the others give. A JSON or NDJSON record that already has
its `detail` list is sent as it is.

Rows are counted from 1, the header row not counted. Exit status: 0 every row written, 2 some rows in the
failures file, 1 nothing done or stopped half-way (a bad file, refused login, gateway unreachable).
"""

from __future__ import annotations

import argparse
import csv
import io
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .transfer import (
    ABSENT,
    DELETED,
    ERROR_COLUMN,
    LINES,
    Shape,
    TransferError,
    add_connection_options,
    command,
    connect,
    convert,
    file_format,
    form_schema,
    positive,
    progress_bar,
)

FORMATS = ("csv", "json", "ndjson", "xlsx")
VOUCHER_KEY = "VoucherId"
NOT_WRITTEN = "not written: another record of its chunk was refused (atomic mode; --partial writes the others)"
NOT_SENT = "not sent: the push stopped at a refused chunk (atomic mode; --partial goes on)"


@dataclass
class Row:
    number: int  # from 1, the header not counted
    values: dict[str, Any]  # column -> the value as read
    problem: str | None = None  # what is wrong with the row as a whole


@dataclass
class Item:
    """A record to send, or the error that keeps it here, with the rows it was made of."""

    rows: list[Row]
    record: dict[str, Any] | None = None
    error: str | None = None
    line_rows: list[int] = field(default_factory=list)  # a voucher's lines: the row each came from


# --- reading -----------------------------------------------------------------------------------------------

class Source:
    """A file's rows, as many times as asked (vouchers are read twice), and their number (for the ETA)."""

    columns: list[str] | None = None  # the header, for the flat formats

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def total(self) -> int | None:
        return None


class CsvSource(Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        with self._open() as fh:
            self.columns = next(csv.reader(fh), None) or []
        _check_header(self.columns)

    def _open(self) -> IO[str]:
        return self.path.open(newline="", encoding="utf-8-sig")  # a spreadsheet's byte order mark dropped

    def rows(self) -> Iterator[Row]:
        with self._open() as fh:
            reader = csv.reader(fh)
            next(reader, None)
            number = 0
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                number += 1
                yield _flat_row(number, self.columns or [], cells)

    def total(self) -> int | None:
        return max(0, _lines(self.path) - 1)  # an estimate: a quoted cell may hold a line break


class NdjsonSource(Source):
    def rows(self) -> Iterator[Row]:
        with self.path.open("rb") as fh:
            number = 0
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                number += 1
                yield Row(number, _object(line, f"{self.path}, line {line_no}"))

    def total(self) -> int | None:
        return _lines(self.path)


class JsonSource(Source):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from erp_gateway_client import _json

        try:
            data = _json.loads(path.read_bytes())
        except ValueError as exc:
            raise TransferError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise TransferError(f"{path}: expected a JSON array of objects")
        self.data: list[dict[str, Any]] = data

    def rows(self) -> Iterator[Row]:
        return (Row(number, values) for number, values in enumerate(self.data, 1))

    def total(self) -> int | None:
        return len(self.data)


class XlsxSource(Source):
    """The first sheet; its first row is the header. Read with openpyxl's read-only mode, row by row."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        book = self._open()
        try:
            sheet = book.worksheets[0]
            header = next(sheet.iter_rows(max_row=1, values_only=True), ())
            self.columns = ["" if cell is None else str(cell) for cell in header]
            self._total = (sheet.max_row or 1) - 1 if sheet.max_row else None
        finally:
            book.close()
        _check_header(self.columns)

    def _open(self) -> Any:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            return openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError) as exc:  # a file that is no workbook
            raise TransferError(f"{self.path}: not an XLSX workbook ({exc})") from None

    def rows(self) -> Iterator[Row]:
        book = self._open()
        try:
            number = 0
            for cells in book.worksheets[0].iter_rows(min_row=2, values_only=True):
                if all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells):
                    continue
                number += 1
                yield _flat_row(number, self.columns or [], ["" if cell is None else cell for cell in cells])
        finally:
            book.close()

    def total(self) -> int | None:
        return self._total


SOURCES: dict[str, type[Source]] = {"csv": CsvSource, "ndjson": NdjsonSource, "json": JsonSource,
                                    "xlsx": XlsxSource}


def _flat_row(number: int, columns: list[str], cells: list[Any]) -> Row:
    """A CSV or XLSX row by column; cells beyond the header's make it a row in error (they are left out of
    the failures file, which has the header's columns)."""
    extra = [cell for cell in cells[len(columns):] if not (isinstance(cell, str) and not cell.strip())]
    row = Row(number, dict(zip(columns, [*cells, *[""] * len(columns)], strict=False)))
    if extra:
        row.problem = f"{len(columns) + len(extra)} cells, and {len(columns)} columns in the header"
    return row


def _check_header(columns: list[str]) -> None:
    folded = [c.strip().lower() for c in columns]
    if not columns:
        raise TransferError("the file has no header row")
    if any(not c for c in folded):
        raise TransferError("the header row has an empty column name")
    repeated = sorted({c for c in columns if folded.count(c.strip().lower()) > 1})
    if repeated:
        raise TransferError(f"the header names a column twice: {', '.join(repeated)}")


def _object(line: bytes, where: str) -> dict[str, Any]:
    from erp_gateway_client import _json

    try:
        value = _json.loads(line)
    except ValueError:
        raise TransferError(f"{where}: not JSON") from None
    if not isinstance(value, dict):
        raise TransferError(f"{where}: not a JSON object")
    return value


def _lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            count += block.count(b"\n")
    return count


# --- rows to records ---------------------------------------------------------------------------------------

def fields_of(shape: Shape, row: Row) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A row's header fields, its line fields, and its problems ("Column: what is wrong")."""
    header: dict[str, Any] = {}
    line: dict[str, Any] = {}
    problems: list[str] = [row.problem] if row.problem else []
    for column, value in row.values.items():
        folded = column.strip().lower()
        if folded == ERROR_COLUMN:
            continue
        if folded == DELETED.lower() and not shape.resolve(column):
            if _truthy(value):
                header[DELETED] = True
            continue
        if folded == LINES and shape.is_voucher and isinstance(value, list):
            header[LINES] = value  # a JSON record that is already a whole voucher
            continue
        where = shape.resolve(column)
        if where is None:
            problems.append(f"{column}: not a field of the form")
            continue
        is_line, name = where
        try:
            converted = convert((shape.lines if is_line else shape.header)[name], value)  # type: ignore[index]
        except ValueError as exc:
            problems.append(f"{column}: {exc}")
            continue
        if converted is not ABSENT:
            (line if is_line else header)[name] = converted
    return header, line, problems


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _deletion(record: dict[str, Any], voucher: bool) -> dict[str, Any]:
    """A tombstone of the change feed (Deleted true), pushed: a delete of that record."""
    record.pop(DELETED)
    return {**record, "Status": "0"} if voucher else {**record, "action": "delete"}


def master_items(shape: Shape, rows: Iterator[Row]) -> Iterator[Item]:
    for row in rows:
        header, _, problems = fields_of(shape, row)
        if problems:
            yield Item([row], error=f"row {row.number}: " + "; ".join(problems))
        else:
            yield Item([row], _deletion(header, False) if DELETED in header else header)


def voucher_items(shape: Shape, source: Source) -> Iterator[Item]:
    """One item per voucher: its rows, which follow one another in the file."""
    apart = _vouchers_apart(source)
    group: list[Row] = []
    for row in source.rows():
        if group and (_voucher_id(row) is None or _voucher_id(row) != _voucher_id(group[0])):
            yield voucher_item(shape, group, apart)
            group = []
        group.append(row)
    if group:
        yield voucher_item(shape, group, apart)


def _voucher_id(row: Row) -> str | None:
    value = next((v for c, v in row.values.items() if c.strip().lower() == VOUCHER_KEY.lower()), None)
    text = "" if value is None else str(value).strip()
    return text or None


def _vouchers_apart(source: Source) -> set[str]:
    """The VoucherIds whose rows are not all together: found in a first pass over the file, so that no
    part of such a voucher is sent (the gateway replaces a voucher whole: a part would overwrite it)."""
    seen: set[str] = set()
    apart: set[str] = set()
    previous: str | None = None
    for row in source.rows():
        vid = _voucher_id(row)
        if vid is not None and vid != previous and vid in seen:
            apart.add(vid)
        if vid is not None:
            seen.add(vid)
        previous = vid
    return apart


def voucher_item(shape: Shape, rows: list[Row], apart: set[str]) -> Item:
    vid = _voucher_id(rows[0])
    span = f"rows {rows[0].number}-{rows[-1].number}" if len(rows) > 1 else f"row {rows[0].number}"
    if vid in apart:
        return Item(rows, error=f"{span}: the rows of voucher {vid} are not all together in the file;"
                                " put them one after another")
    header: dict[str, Any] = {}
    source_row: dict[str, int] = {}
    lines: list[dict[str, Any]] = []
    line_rows: list[int] = []
    problems: list[str] = []
    for row in rows:
        fields, line, row_problems = fields_of(shape, row)
        problems += [f"row {row.number}: {p}" for p in row_problems]
        for name, value in fields.items():
            if name in header and header[name] != value:
                problems.append(f"row {row.number}: {name} is {value!r} but {header[name]!r} on row"
                                f" {source_row[name]} of the same voucher")
            elif name not in header:
                header[name], source_row[name] = value, row.number
        if line:
            lines.append(line)
            line_rows.append(row.number)
    if problems:
        return Item(rows, error=f"voucher {vid}: " + "; ".join(problems))
    if DELETED in header:
        return Item(rows, _deletion(header, True))
    if LINES not in header:
        header[LINES] = lines
    return Item(rows, header, line_rows=line_rows)


# --- the failures file -------------------------------------------------------------------------------------

class Failures:
    """The rows not written, as read, with `_error`; the file is made on the first one."""

    def __init__(self, path: Path, fmt: str, columns: list[str] | None) -> None:
        self.path, self.fmt = path, fmt
        self.columns = [*(c for c in columns or () if c.strip().lower() != ERROR_COLUMN), ERROR_COLUMN]
        self.rows = 0
        self._out: Any = None

    def add(self, rows: list[Row], message: str) -> None:
        for row in rows:
            self._write({**{c: v for c, v in row.values.items() if c.strip().lower() != ERROR_COLUMN},
                         ERROR_COLUMN: message})
            self.rows += 1

    def _write(self, values: dict[str, Any]) -> None:
        from erp_gateway_client import _json

        if self._out is None:
            self._open()
        if self.fmt == "csv":
            self._csv.writerow([values.get(c, "") for c in self.columns])
        elif self.fmt == "xlsx":
            self._sheet.append([None if values.get(c) == "" else values.get(c) for c in self.columns])
        elif self.fmt == "ndjson":
            self._out.write(_json.dumps(values) + b"\n")
        else:
            self._out.write((b",\n" if self.rows else b"[\n") + _json.dumps(values))

    def _open(self) -> None:
        if self.fmt == "xlsx":
            import openpyxl

            self._out = openpyxl.Workbook(write_only=True)
            self._sheet = self._out.create_sheet()
            self._sheet.append(self.columns)
        elif self.fmt == "csv":
            self._out = self.path.open("w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._out)
            self._csv.writerow(self.columns)
        else:
            self._out = self.path.open("wb")

    def close(self) -> None:
        if self._out is None:
            return
        if self.fmt == "xlsx":
            self._out.save(self.path)
        else:
            if self.fmt == "json":
                self._out.write(b"\n]\n")
            self._out.close()


def failures_path(path: Path, fmt: str) -> Path:
    """FILE.failures.<ext>: customers.csv -> customers.failures.csv."""
    return path.with_name(f"{path.stem}.failures.{fmt}")


# --- the push ----------------------------------------------------------------------------------------------

@dataclass
class Push:
    """One push: the items read, sent by the client, and what became of each row. The rows not written go
    to the failures file in the order they were read: a row refused here waits for the answers to the
    records read before it."""

    client: Any
    form: str
    shape: Shape
    failures: Failures
    bar: Any
    partial: bool
    chunk_size: int
    rows_read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # Items read and not yet settled, in file order: (record index, or None for one refused here; the item).
    _queue: deque[tuple[int | None, Item]] = field(default_factory=deque)

    def run(self, items: Iterator[Item]) -> None:
        stopped = False
        for chunk in self.client.sync_chunks(self.form, self._records(items), partial=self.partial,
                                             chunk_size=self.chunk_size):
            for name, count in chunk.counts.items():
                self.counts[name] = self.counts.get(name, 0) + count
            rejected = {r.index: r.errors for r in chunk.rejected}
            end = chunk.start + len(chunk.records)
            while self._queue and (self._queue[0][0] is None or self._queue[0][0] < end):
                index, item = self._queue.popleft()
                if index in rejected:
                    self._fail(item, "; ".join(_message(e, item) for e in rejected[index]))
                elif index is None or chunk.refused:
                    self._fail(item, item.error or NOT_WRITTEN)
                else:
                    self.bar.update(len(item.rows))
            stopped = stopped or (chunk.refused and not self.partial)
        # What is left: rows refused here after the last record sent, or, once stopped, the rest of the file.
        for index, item in self._queue:
            self._fail(item, NOT_SENT if index is not None else item.error or "")
        self._queue.clear()
        for item in items:
            self.rows_read += len(item.rows)
            self._fail(item, item.error or NOT_SENT)

    def _records(self, items: Iterator[Item]) -> Iterator[dict[str, Any]]:
        index = 0
        for item in items:
            self.rows_read += len(item.rows)
            if item.record is None:
                self._queue.append((None, item))
                continue
            self._queue.append((index, item))
            index += 1
            yield item.record

    def _fail(self, item: Item, message: str) -> None:
        self.failures.add(item.rows, message)
        self.bar.update(len(item.rows))


def _message(error: Any, item: Item) -> str:
    """The gateway's message, with the field it names; an error in a voucher's line names that line's row."""
    parts = error.path.strip("/").split("/") if error.path else []
    where = ""
    if len(parts) >= 2 and parts[0] == LINES and parts[1].isdigit() and int(parts[1]) < len(item.line_rows):
        where, parts = f"row {item.line_rows[int(parts[1])]}: ", parts[2:]
    path = ".".join(parts)
    return where + (f"{path}: {error.message}" if path and path not in error.message else error.message)


def cmd_push(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = file_format(path, args.format, FORMATS)
    failures_to = Path(args.failures) if args.failures else failures_path(path, fmt)
    if failures_to.resolve() == path.resolve():
        raise TransferError("the failures file would overwrite the file pushed: give --failures")
    if not path.is_file():
        raise TransferError(f"no such file: {path}")
    source = SOURCES[fmt](path)
    with connect(args) as client:
        schema = form_schema(client, args.form)
        if schema is None:
            raise TransferError(f"the gateway has no form {args.form!r} to write")
        shape = Shape.of(schema)
        _check_columns(shape, source)
        failures_to.unlink(missing_ok=True)  # this run's failures only
        failures = Failures(failures_to, fmt, source.columns)
        started = time.monotonic()
        with progress_bar(args, source.total(), "rows", f"push {path.name}") as bar:
            push = Push(client, args.form, shape, failures, bar, args.partial, args.chunk)
            items = voucher_items(shape, source) if shape.is_voucher else master_items(shape, source.rows())
            try:
                push.run(items)
            finally:
                failures.close()
    print(_summary(push, time.monotonic() - started, failures_to))
    return 2 if failures.rows else 0


def _check_columns(shape: Shape, source: Source) -> None:
    """Columns that name no field stop the push before anything is sent: a typo would fail every row."""
    unknown = [c for c in source.columns or ()
               if not shape.resolve(c) and c.strip().lower() not in (ERROR_COLUMN, DELETED.lower())]
    if unknown:
        raise TransferError(f"column(s) {', '.join(unknown)} name no field of the form; its fields: "
                            + ", ".join(shape.columns()))


def _summary(push: Push, seconds: float, failures_to: Path) -> str:
    out = io.StringIO()
    counts = push.counts
    out.write(f"{push.form}: {push.rows_read} rows read in {seconds:.1f} s"
              f" ({push.rows_read / seconds if seconds else 0:.0f} rows/s); inserted {counts.get('inserted', 0)},"
              f" updated {counts.get('updated', 0)}, unchanged {counts.get('unchanged', 0)},"
              f" deleted {counts.get('deleted', 0)}")
    if push.failures.rows:
        out.write(f"; {push.failures.rows} rows not written, in {failures_to}")
    return out.getvalue()


def add_parser(sub: Any) -> None:
    push = sub.add_parser("push", help="send a CSV, JSON, NDJSON or XLSX file to a form through the API")
    push.add_argument("file")
    add_connection_options(push)
    push.add_argument("--format", choices=FORMATS, help="default: from the file's extension")
    push.add_argument("--partial", action="store_true",
                      help="write the valid records of each chunk (default: a chunk is written whole or not at"
                           " all, and the first refused one stops the push)")
    push.add_argument("--chunk", type=positive, default=1_000, metavar="N",
                      help="records per request (default 1000)")
    push.add_argument("--failures", metavar="PATH", help="the rows not written (default FILE.failures.<ext>)")
    push.set_defaults(func=command(cmd_push))
