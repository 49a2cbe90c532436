"""What `gateway push` (gateway/push.py) and `gateway pull` (gateway/pull.py) share: the connection to a
gateway, a form's fields as flat files see them, and the conversion of a cell to a field's type.

Both talk to a running gateway over HTTP through the Python client (client/, erp_gateway_client), never to
the database: they work from any machine that can reach the API, with a user's rights.

Flat files (CSV, XLSX) have one row per record, or, for a voucher form, one row per line with the voucher's
header fields repeated on each of its rows. Which columns are the header's and which the lines' comes from
the form's JSON Schema (GET /api/schemas/{form}): its properties are the header, those of `detail` the lines.
A line field that the header has too (TotalAmount, Description) is the column `detail.TotalAmount`; every
other line field may be written bare or with the prefix. Column names match fields in any case.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erp_gateway_client import Client
    from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8000"
LINES = "detail"  # the array of a voucher's lines
LINE_PREFIX = "detail."
ERROR_COLUMN = "_error"  # the failures file's column with the gateway's messages; push ignores it
DELETED = "Deleted"  # the change feed's tombstone flag


class TransferError(Exception):
    """A bad file, option or form, or a gateway that refused or could not be reached: exit status 1."""


class Absent:
    """An empty cell: the field is left out of the record."""


ABSENT = Absent()


@dataclass(frozen=True)
class Shape:
    """A form's fields, in the schema's order: the header's and, for a voucher form, its lines'."""

    header: dict[str, dict[str, Any]]
    lines: dict[str, dict[str, Any]] | None

    @classmethod
    def of(cls, schema: dict[str, Any]) -> Shape:
        properties = dict(schema.get("properties") or {})
        detail = properties.pop(LINES, None)
        items = (detail or {}).get("items") or {}
        return cls(properties, dict(items.get("properties") or {}) if detail else None)

    @property
    def is_voucher(self) -> bool:
        return self.lines is not None

    def line_column(self, name: str) -> str:
        return LINE_PREFIX + name if name in self.header else name

    def columns(self) -> list[str]:
        """The columns of a flat file of this form: the header's fields, then the lines'."""
        return [*self.header, *(self.line_column(name) for name in self.lines or ())]

    def resolve(self, column: str) -> tuple[bool, str] | None:
        """(is a line field, the field's name as the schema spells it) for a column, or None if unknown."""
        folded = column.strip().lower()
        if self.lines is not None and folded.startswith(LINE_PREFIX):
            name = _find(self.lines, folded[len(LINE_PREFIX):])
            return (True, name) if name else None
        if name := _find(self.header, folded):
            return False, name
        if self.lines is not None and (name := _find(self.lines, folded)):
            return True, name
        return None


def _find(fields: dict[str, Any], folded: str) -> str | None:
    return next((name for name in fields if name.lower() == folded), None)


# --- values ------------------------------------------------------------------------------------------------

def convert(spec: dict[str, Any], value: Any) -> Any:
    """A value as read from a file, in the type the field's schema asks for; ABSENT for an empty cell.
    Raises ValueError with a message for the failures file. Anything the schema alone cannot decide is
    passed on as it is, for the gateway to judge."""
    if isinstance(value, str) and not value.strip():
        return ABSENT
    if value is None:
        return None  # JSON's explicit null; empty cells of CSV and XLSX are read as ""
    kinds = spec.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or ())
    if "integer" in kinds:
        return _integer(value)
    if "number" in kinds:
        return _number(value)
    if "boolean" in kinds:
        return _boolean(value)
    if ("array" in kinds or "object" in kinds) and isinstance(value, str):
        try:
            return json.loads(value, parse_float=Decimal)
        except ValueError:
            raise ValueError(f"not JSON: {_quote(value)}") from None
    if "string" in kinds:
        return _text(value, spec.get("format"))
    if "enum" in spec:
        return _enum_member(spec["enum"], value)
    return value


def _integer(value: Any) -> int:
    if value is True or value is False:
        raise ValueError(f"not an integer: {value}")
    if isinstance(value, int):
        return value
    number = Decimal(_number(value))
    if number != number.to_integral_value():
        raise ValueError(f"not an integer: {_quote(value)}")
    return int(number)


def _number(value: Any) -> Decimal | int:
    if value is True or value is False:
        raise ValueError(f"not a number: {value}")
    if isinstance(value, (int, Decimal)):
        number: Decimal | int = value
    else:
        try:
            number = Decimal(str(value).strip())  # a float from XLSX: its shortest repr, not its binary value
        except InvalidOperation:
            raise ValueError(f"not a number: {_quote(value)}") from None
    if isinstance(number, Decimal) and not number.is_finite():
        raise ValueError(f"not a number: {_quote(value)}")
    return number


_TRUE, _FALSE = {"true", "1", "yes", "y"}, {"false", "0", "no", "n"}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"not true or false: {_quote(value)}")


def _text(value: Any, form: str | None) -> Any:
    if isinstance(value, datetime.datetime):  # XLSX date cells
        if form == "date" or (form is None and value.time() == datetime.time()):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a code typed as a number in a spreadsheet: 1001, not 1001.0
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    return value


def _enum_member(members: list[Any], value: Any) -> Any:
    """The member a cell names: Status ["1", "0", 1, 0] keeps "1"; SuplierYN [0, 1] takes 1 for "1"."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and value in members:
        return value
    text = _text(value, None)
    for member in members:
        if str(member) == str(text).strip():
            return member
    return value


def _quote(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def cell_text(value: Any) -> str:
    """A value as a CSV cell: exact numbers without an exponent, JSON for lists and objects."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, dict)):
        from erp_gateway_client import _json

        return _json.dumps(value).decode()
    return str(value)


# --- the connection ----------------------------------------------------------------------------------------

def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL", DEFAULT_URL),
                        help=f"the gateway (default: GATEWAY_URL, else {DEFAULT_URL})")
    parser.add_argument("--username", default=os.environ.get("GATEWAY_USERNAME"),
                        help="the user (default: GATEWAY_USERNAME); the password comes from GATEWAY_PASSWORD,"
                             " else it is prompted for")
    parser.add_argument("--form", required=True, help="any of the form's names: setCustomer, getCustomer, ...")
    parser.add_argument("--progress", action="store_true", help="show progress even when stderr is no terminal")
    parser.add_argument("--quiet", action="store_true", help="no progress, only the summary line")


def connect(args: argparse.Namespace) -> Client:
    """A client for the gateway of --url, as --username with the password of GATEWAY_PASSWORD or a prompt:
    never from the command line, where other users of the machine could read it."""
    from erp_gateway_client import Client

    if not args.username:
        raise TransferError("no user: give --username or set GATEWAY_USERNAME")
    password = os.environ.get("GATEWAY_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise TransferError("no password: set GATEWAY_PASSWORD (or run in a terminal to be asked)")
        password = getpass.getpass(f"Password for {args.username}: ")
    return Client(args.url, args.username, password)


def form_schema(client: Client, form: str) -> dict[str, Any] | None:
    """The form's JSON Schema, or None for a form without one (GetData's reports)."""
    from erp_gateway_client import NotFound

    try:
        return client.schema(form)
    except NotFound:
        return None


def progress_bar(args: argparse.Namespace, total: int | None, unit: str, what: str) -> tqdm[Any]:
    """A progress bar on stderr with the rate and the time left: shown on a terminal or with --progress,
    never with --quiet."""
    from tqdm import tqdm  # here, so that the other `gateway` commands do not load it

    shown = not args.quiet and (args.progress or sys.stderr.isatty())
    remaining = ", ETA {remaining}" if total else ""
    return tqdm(total=total or None, unit=unit, file=sys.stderr, disable=not shown, dynamic_ncols=True,
                mininterval=0.2, desc=what,
                bar_format="{desc}: " + ("{percentage:3.0f}%|{bar}| " if total else "")
                + "{n_fmt}" + ("/{total_fmt}" if total else "") + " " + unit
                + " [{elapsed}, {rate_noinv_fmt}" + remaining + "]")


def command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace, Any], int]:
    """A push or pull as a `gateway` sub-command: its exit status, 1 with a message for what stops it."""
    def main(args: argparse.Namespace, settings: Any) -> int:
        try:
            from erp_gateway_client import GatewayError
        except ImportError:
            print(f"gateway {args.command}: the Python client is not installed: pip install ./client",
                  file=sys.stderr)
            return 1
        try:
            return run(args)
        except (TransferError, GatewayError, OSError) as exc:
            print(f"gateway {args.command}: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"gateway {args.command}: interrupted", file=sys.stderr)
        return 1

    return main


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def file_format(path: Path, given: str | None, allowed: Iterable[str]) -> str:
    """--format, else the file's extension."""
    choice = given or path.suffix.lstrip(".").lower()
    if choice not in allowed:
        raise TransferError(f"cannot tell the format of {str(path)!r}: give --format"
                            f" ({', '.join(allowed)})")
    return choice
