"""JSON with exact decimals: numbers are read as Decimal and Decimals are written as JSON numbers.

Amounts must never pass through a binary float on their way to the gateway or back, and the standard library's
encoder cannot write a Decimal as a number. Records without one take the fast C encoder; the others fall back
to a small writer of our own.
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

_FAST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=None)


class _NotPlain(Exception):
    """A value the C encoder cannot write exactly (a Decimal, a date)."""


def _refuse(value: Any) -> Any:
    raise _NotPlain


_PLAIN = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_refuse)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal as a number, date and datetime as ISO text."""
    try:
        return _PLAIN.encode(value).encode()
    except _NotPlain:
        return "".join(_write(value)).encode()


def _write(value: Any) -> list[str]:
    out: list[str] = []
    _append(out, value)
    return out


def _append(out: list[str], value: Any) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            out.append("," if i else "")
            out.append(_FAST.encode(key) + ":")
            _append(out, item)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            out.append("," if i else "")
            _append(out, item)
        out.append("]")
    elif isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        out.append(_FAST.encode(value.isoformat()))
    else:
        out.append(_FAST.encode(value))


def loads(data: bytes | str) -> Any:
    """Decode JSON with every non-integer number as a Decimal."""
    return json.loads(data, parse_float=Decimal)
