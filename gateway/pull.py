"""`gateway pull --form getCustomer`: a GetData form to a CSV or NDJSON file, through the API.

Without --since, every current record, page by page, into a new file that replaces PATH once complete (a
failed pull leaves the previous file as it was). With --since, the change feed (tombstones included,
`Deleted` true): the records changed after that position are appended to PATH, and after each page is
written and flushed to disk, the position to go on from is stored in the state file (PATH.state by default),
written atomically. `--since auto` resumes from the state file: a second run appends only what changed in
between. It first cuts PATH back to the length the state file recorded, so a page written by a run that
stopped before storing its position is not written twice. `--since 0` (or a position) starts PATH afresh.

CSV columns are the form's fields in its schema's order (`Deleted` last for the change feed), whatever the
records hold, so every page and every resumed run writes the same columns; a voucher is one row per line
with its header fields repeated, the columns `gateway push` reads back. A form without a schema (a report)
takes the fields of its first page; a field that comes later and is not among them stops the pull (pull it
to NDJSON). NDJSON has one record per line, a voucher with its `detail` list, exactly as GetData answered.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .transfer import (
    DELETED,
    LINES,
    Shape,
    TransferError,
    add_connection_options,
    cell_text,
    command,
    connect,
    file_format,
    form_schema,
    positive,
    progress_bar,
)

FORMATS = ("csv", "ndjson")


@dataclass(frozen=True)
class State:
    """Where a `--since` pull goes on from, and how much of its output that position covers."""

    form: str
    since: str | int
    bytes: int


def load_state(path: Path) -> State | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return State(str(data["form"]), data["since"], int(data["bytes"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise TransferError(f"{path}: not a pull's state file") from None


def save_state(path: Path, state: State) -> None:
    """Written to a file beside it, flushed to disk and renamed over it: a crash leaves the old state or the
    new one, never half of one."""
    part = path.with_name(path.name + ".part")
    with part.open("w", encoding="utf-8") as fh:
        json.dump(asdict(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)


# --- writing -----------------------------------------------------------------------------------------------

def flat_rows(record: dict[str, Any], shape: Shape | None) -> list[dict[str, Any]]:
    """A record as CSV rows: a voucher one row per line, its header fields repeated on each."""
    lines = record.get(LINES) if shape is not None and shape.is_voucher else None
    if not isinstance(lines, list):
        return [record]
    head = {name: value for name, value in record.items() if name != LINES}
    if not lines:
        return [head]
    return [{**head, **{shape.line_column(name): value for name, value in line.items()}}  # type: ignore[union-attr]
            for line in lines]


class CsvOut:
    """CSV rows written to a binary file, so that the state file can record its length in bytes."""

    def __init__(self, out: IO[bytes], shape: Shape | None, feed: bool, existing: list[str] | None) -> None:
        self.out, self.shape = out, shape
        self.columns: list[str] | None = existing
        if self.columns is None and shape is not None:
            self.columns = [*shape.columns(), *([DELETED] if feed else [])]
        self._folded = {c.lower(): c for c in self.columns or ()}
        self._header_due = existing is None

    def write(self, records: list[dict[str, Any]]) -> int:
        rows = [row for record in records for row in flat_rows(record, self.shape)]
        if self.columns is None and rows:  # a report: the first rows' fields
            self.columns = list(dict.fromkeys(name for row in rows for name in row))
            self._folded = {c.lower(): c for c in self.columns}
        text = io.StringIO()
        writer = csv.writer(text)
        if self._header_due and self.columns:
            writer.writerow(self.columns)
            self._header_due = False
        for row in rows:
            writer.writerow(self._cells(row))
        self.out.write(text.getvalue().encode())
        return len(rows)

    def _cells(self, row: dict[str, Any]) -> list[str]:
        cells = dict.fromkeys(self.columns or (), "")
        for name, value in row.items():
            column = self._folded.get(name.lower())
            if column is None:
                raise TransferError(f"the field {name!r} is not among the CSV's columns; pull to NDJSON")
            cells[column] = cell_text(value)
        return list(cells.values())


class NdjsonOut:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, records: list[dict[str, Any]]) -> int:
        from erp_gateway_client import _json

        self.out.write(b"".join(_json.dumps(record) + b"\n" for record in records))
        return len(records)


def _writer(fmt: str, out: IO[bytes], shape: Shape | None, feed: bool, existing: list[str] | None) -> Any:
    return CsvOut(out, shape, feed, existing) if fmt == "csv" else NdjsonOut(out)


def _csv_header(path: Path) -> list[str] | None:
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), None)


# --- the pull ----------------------------------------------------------------------------------------------

@dataclass
class Tally:
    records: int = 0
    rows: int = 0


def snapshot(client: Any, args: argparse.Namespace, fmt: str, output: Path, shape: Shape | None,
             tally: Tally) -> None:
    """Every current record, into a new file that replaces the output once complete. A report (a form
    without a schema) comes in one answer: reports have parameters of their own, no paging."""
    part = output.with_name(output.name + ".part")
    params = _params(args)
    pages = (client.pages(args.form, limit=args.page_size, **params) if shape is not None
             else iter([client.get(args.form, **params)]))
    with part.open("wb") as out, progress_bar(args, None, "records", f"pull {args.form}") as bar:
        writer = _writer(fmt, out, shape, False, None)
        for page in pages:
            tally.rows += writer.write(page.data)
            tally.records += len(page.data)
            bar.update(len(page.data))
    os.replace(part, output)


def follow(client: Any, args: argparse.Namespace, fmt: str, output: Path, state_path: Path,
           shape: Shape | None, tally: Tally) -> str | int:
    """The change feed from --since (auto: the state file's position), appended; returns the position."""
    state = load_state(state_path) if args.since == "auto" else None
    if state is not None and state.form.lower() != args.form.lower():
        raise TransferError(f"{state_path} is the state of a pull of {state.form}, not {args.form}")
    position: str | int = state.since if state else (0 if args.since in ("auto", "0") else args.since)
    with _output(output, state) as out, progress_bar(args, None, "records", f"pull {args.form}") as bar:
        existing = _csv_header(output) if fmt == "csv" and state is not None and state.bytes else None
        writer = _writer(fmt, out, shape, True, existing)
        for page in client.feed(args.form, since=position, limit=args.page_size, **_params(args)):
            tally.rows += writer.write(page.data)
            tally.records += len(page.data)
            out.flush()
            os.fsync(out.fileno())
            position = page.next_since if page.next_since is not None else position
            save_state(state_path, State(args.form, position, out.tell()))
            bar.update(len(page.data))
    return position


def _output(output: Path, state: State | None) -> IO[bytes]:
    """The output, cut back to what the stored position covers (resuming), or new."""
    if state is None:
        return output.open("wb")
    if not output.exists() or output.stat().st_size < state.bytes:
        raise TransferError(f"{output} is missing or shorter than its state file says: start again with"
                            " --since 0")
    out = output.open("r+b")
    out.truncate(state.bytes)
    out.seek(state.bytes)
    return out


def _params(args: argparse.Namespace) -> dict[str, str]:
    """--param NAME=VALUE: GetData's own parameters (dateFrom, a report's dateTo, ...)."""
    params = {}
    for text in args.param or ():
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise TransferError(f"--param {text!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def cmd_pull(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(f"{args.form}.{args.format or 'csv'}")
    fmt = file_format(output, args.format, FORMATS)
    state_path = Path(args.state) if args.state else output.with_name(output.name + ".state")
    tally = Tally()
    started = time.monotonic()
    with connect(args) as client:
        schema = form_schema(client, args.form)
        shape = Shape.of(schema) if schema is not None else None
        if args.since is None:
            snapshot(client, args, fmt, output, shape, tally)
            where = ""
        else:
            position = follow(client, args, fmt, output, state_path, shape, tally)
            where = f"; position {position} stored in {state_path}"
    seconds = time.monotonic() - started
    print(f"{args.form}: {tally.records} records ({tally.rows} rows) written to {output} in {seconds:.1f} s"
          f"{where}")
    return 0


def add_parser(sub: Any) -> None:
    pull = sub.add_parser("pull", help="write a GetData form to a CSV or NDJSON file, through the API")
    add_connection_options(pull)
    pull.add_argument("--format", choices=FORMATS, help="default: from --output's extension, else csv")
    pull.add_argument("--output", "-o", metavar="PATH", help="default FORM.<format> (getCustomer.csv)")
    pull.add_argument("--since", metavar="auto|0|POSITION",
                      help="the change feed from a position, appended to PATH; auto: from the state file")
    pull.add_argument("--state", metavar="PATH", help="where --since keeps its position (default PATH.state)")
    pull.add_argument("--param", action="append", metavar="NAME=VALUE",
                      help="a GetData parameter, e.g. dateFrom=2026-01-01 or a report's dateTo (repeatable)")
    pull.add_argument("--page-size", type=positive, default=5_000, metavar="N",
                      help="records per request (default 5000; the gateway takes up to 10000)")
    pull.set_defaults(func=command(cmd_pull))
