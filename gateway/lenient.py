"""Reading records as real clients send them, exactly, before the JSON Schema judges them.

.NET and Java clients serialise what their classes hold: `null` for every optional field left unset, dates as
`DateTime` ("2026-06-10T00:00:00"), numbers kept in strings ("5333333"), flags as booleans or "1"/"0",
codes as integers. A reader compiled from a form's schema turns each of those into what the schema asks for,
and nothing else:

- null for an optional field means absent (its default applies); for a required one it stays, and the
  schema reports it;
- a date field takes `yyyy-MM-dd` or an ISO date-time, whose date part is kept (no time-zone arithmetic:
  the sender's calendar day is the voucher's day);
- a number field takes a JSON string holding a decimal number, read as a Decimal, never through a float;
- an integer field takes a string of digits;
- an enumerated field takes the spelling of one of its members: 0/1 flags take 0, 1, "0", "1", true, false;
- a code (a text field named *Code or *Id) takes an integer such as 1001; other text fields do not, since an
  integer there is a client's mistake that would lose its leading zeros (a phone number);
- field names match case-insensitively and come out in the catalog's spelling;
- an unknown field is dropped and reported once per request as a warning (unless the request is strict,
  where it stays and the schema refuses it).

Anything else is left as sent, so the schema's error names it with its path.
"""

from __future__ import annotations

import datetime as dt
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import QUOTED_CHARS, shorten

_DECIMAL = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
# yyyy-MM-dd, optionally followed by a time (T or space, seconds and fraction optional) and a zone (Z or an
# offset); ASCII digits only.
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,9})?)?"
    r"(?:[Zz]|[+-]([0-9]{2})(?::?([0-9]{2}))?)?)?"
)

_ABSENT = object()
Coerce = Callable[[Any], Any]
# The longest text a request parameter (a filter value, a report's code) may hold: longer than any stored
# text (the schemas' longest is 512), so it matches nothing, and echoed back in an error it would bloat it.
MAX_PARAMETER_TEXT = 4_096
# What an error message quotes of a value the request sent (which may be megabytes of text or a long list).
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = _QUOTE.maxlong = 60
_QUOTE.maxlist = _QUOTE.maxdict = 5
_QUOTE.maxlevel = 2


def quoted(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short."""
    return _QUOTE.repr(value)


def text_problem(text: str) -> str | None:
    """Why a text cannot be a parameter of a query, or None. PostgreSQL stores no NUL character (it fails
    the statement, after the request was accepted), and no stored text is longer than MAX_PARAMETER_TEXT."""
    if "\x00" in text:
        return "holds the NUL character (\\u0000), which no stored text holds"
    if len(text) > MAX_PARAMETER_TEXT:
        return f"is longer than {MAX_PARAMETER_TEXT} characters"
    return None


def parse_date(value: Any) -> dt.date | None:
    """A date from `yyyy-MM-dd` or an ISO 8601 date-time, whose date part is kept as written.

    No time-zone conversion: "2026-06-10T23:30:00-05:00" is 2026-06-10, the day the sender meant. None and ""
    mean no date. Anything else, an impossible date or time included, raises ValueError. The one date rule
    of the gateway: records, GetData parameters and filters, and report parameters all read dates here.
    """
    if value is None or value == "":
        return None
    match = _DATE_TIME.fullmatch(value) if isinstance(value, str) and len(value) <= 64 else None
    if match is None:
        raise ValueError(f"not a date yyyy-MM-dd or an ISO date-time: {quoted(value)}")
    year, month, day, hour, minute, second, off_hours, off_minutes = match.groups()
    date = dt.date(int(year), int(month), int(day))
    if hour is not None:
        dt.time(int(hour), int(minute), int(second or 0))
    if off_hours is not None and (int(off_hours) > 23 or int(off_minutes or 0) > 59):
        raise ValueError(f"not a time-zone offset: {quoted(value)}")
    return date


def date_part(value: Any) -> Any:
    """'2026-06-10T00:00:00' -> '2026-06-10'; anything that is not such a text is returned unchanged (the
    schema's date format then reports it)."""
    if isinstance(value, str) and len(value) > 10:
        try:
            date = parse_date(value)
        except ValueError:
            return value
        return date.isoformat() if date is not None else value
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str) and _DECIMAL.match(value):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            return value
    return value


def _whole(number: Decimal) -> int | None:
    """The integer a decimal such as 2.0 is, or None (not whole, or too large to be anything's value)."""
    if not number.is_finite() or number.adjusted() > 30:
        return None
    try:
        return int(number) if number == number.to_integral_value() else None
    except (InvalidOperation, OverflowError, ValueError):
        return None


def _integer(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER.match(value) and len(value.strip()) <= 30:
        return int(value)
    if isinstance(value, Decimal):
        whole = _whole(value)
        return value if whole is None else whole
    return value


def _text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _enum(members: list[Any]) -> Coerce:
    """Map another spelling of a member (1 for "1", "0" or false for 0, "10" for 10) to that member."""
    spellings: dict[str, Any] = {}
    for member in members:
        if isinstance(member, bool) or member is None:
            continue
        if isinstance(member, (int, str)):
            spellings.setdefault(str(member), member)
    flag = {"0", "1"} <= set(spellings)

    def coerce(value: Any) -> Any:
        if isinstance(value, bool):
            if not flag:
                return value
            text = "1" if value else "0"
        elif isinstance(value, Decimal):
            whole = _whole(value)
            if whole is None:
                return value
            text = str(whole)
        elif isinstance(value, (int, str)):
            text = value.strip() if isinstance(value, str) else str(value)
            if isinstance(value, str) and _DECIMAL.match(text):
                whole = _whole(Decimal(text))
                if whole is not None:
                    text = str(whole)
        else:
            return value
        return spellings.get(text, value)

    return coerce


def _types(prop: dict[str, Any]) -> set[str]:
    types = prop.get("type")
    if types is None:
        return set()
    return {types} if isinstance(types, str) else set(types)


def _is_code(name: str) -> bool:
    return name.endswith(("Code", "Id"))


def _coercer(name: str, prop: dict[str, Any]) -> Coerce | None:
    if "enum" in prop:
        return _enum(list(prop["enum"]))
    types = _types(prop)
    if "string" in types:
        if prop.get("format") == "date":
            return date_part
        return _text if _is_code(name) else None
    if "number" in types:
        return _number
    if "integer" in types:
        return _integer
    return None


class Warnings:
    """Unknown fields seen in a request, each reported once: where first seen, and in how many records."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Any]] = {}

    def unknown(self, index: int, path: str, pattern: str, name: str) -> None:
        entry = self._seen.get(pattern)
        if entry is None:
            self._seen[pattern] = {"index": index, "path": path, "field": name, "records": {index}}
        else:
            entry["records"].add(index)

    def as_list(self) -> list[dict[str, Any]]:
        out = []
        for entry in self._seen.values():
            count = len(entry["records"])
            where = "1 record" if count == 1 else f"{count} records"
            out.append({"index": entry["index"], "path": shorten(entry["path"], tail=QUOTED_CHARS),
                        "message": f"Unknown field '{shorten(entry['field'])}' ignored ({where}); send strict: true "
                                   "to refuse unknown fields"})
        return out

    def __bool__(self) -> bool:
        return bool(self._seen)


@dataclass(frozen=True)
class Reader:
    """A record's fields in the catalog's spelling, with the values real clients send made exact."""

    names: dict[str, str]  # lower-case name -> the catalog's spelling
    coerce: dict[str, Coerce | None]
    required: frozenset[str]
    nested: dict[str, Reader] = field(default_factory=dict)
    # Names a request may carry beside the schema's fields (a master record's `action`).
    passthrough: frozenset[str] = frozenset()

    def read(self, record: dict[str, Any], index: int, warnings: Warnings | None,
             prefix: str = "", pattern: str = "") -> dict[str, Any]:
        """The record as the schema expects it; unknown fields dropped into `warnings` (kept when None)."""
        out: dict[str, Any] = {}
        names = self.names
        for name, value in record.items():
            canonical = names.get(name.lower()) if isinstance(name, str) else None
            if canonical is None:
                lowered = name.lower() if isinstance(name, str) else name
                if lowered in self.passthrough:
                    if value is not None:  # null is absent here too
                        out[lowered] = value
                elif warnings is None:
                    out[name] = value  # strict: the schema refuses it, with its path
                else:
                    escaped = str(name).replace("~", "~0").replace("/", "~1")
                    warnings.unknown(index, f"{prefix}/{escaped}", f"{pattern}/{escaped}", str(name))
                continue
            if value is None:
                if canonical in self.required:
                    out[canonical] = None
                continue
            sub = self.nested.get(canonical)
            if sub is not None:
                if isinstance(value, list):
                    value = [sub.read(item, index, warnings, f"{prefix}/{canonical}/{i}", f"{pattern}/{canonical}/*")
                             if isinstance(item, dict) else item for i, item in enumerate(value)]
            else:
                convert = self.coerce[canonical]
                if convert is not None:
                    value = convert(value)
            out[canonical] = value
        return out


def compile_reader(schema: dict[str, Any], passthrough: tuple[str, ...] = ()) -> Reader:
    props: dict[str, Any] = schema.get("properties", {})
    nested = {}
    for name, prop in props.items():
        items = prop.get("items") if "array" in _types(prop) else None
        if isinstance(items, dict) and "object" in _types(items):
            nested[name] = compile_reader(items)
    names = {name.lower(): name for name in props}
    if len(names) != len(props):
        raise ValueError(f"{schema.get('title')}: two fields differ only by case")
    return Reader(
        names=names,
        coerce={name: _coercer(name, prop) for name, prop in props.items()},
        required=frozenset(schema.get("required", ())),
        nested=nested,
        passthrough=frozenset(p.lower() for p in passthrough),
    )
