"""Request bodies measured before they are decoded.

A body within the byte limit may still cost a worker far more memory once decoded: msgspec builds a Python
object for every JSON value, and a value takes as little as two bytes of JSON (`{},` or `1.5,` become objects
of 60 to 110 bytes). 63 MB of empty records took a worker to 1.6 GB, and 63 MB of numbers to 3 GB, before
any limit of the records' own was checked; a body nested 1,000 levels deep made the decoder (and after it the
validator) give up with a RecursionError. So a body is measured in its raw bytes first, with a few passes of
bytes.translate, bytes.replace and bytes.count (C loops, no Python object per value), and refused before it is
decoded when it is nested deeper than MAX_DEPTH, holds more values than VALUES_PER_RECORD for each record a
request may carry, holds a string longer than MAX_STRING_BYTES (a 60 MB one took a worker to 570 MB on its
way through validation), or holds more records than a request may carry.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import BadRequest, PayloadTooLarge

# Levels of arrays and objects a body may nest: the request object is one, `data` two, a record three, a
# voucher's `detail` four, a line five. No form needs more than a handful; recursive code that walks a value
# (the JSON Schema validator, the readers of records) fails a few hundred levels down.
MAX_DEPTH = 32
# Values (numbers, strings, arrays, objects, ...) a body may hold for each record a request may carry
# (Settings.max_records): 100 x 10,000 records by default, a million values, which decode to at most about
# 110 MB of Python objects. A 10,000-record batch of 30 fields or 10,000 vouchers of 5 lines fit.
VALUES_PER_RECORD = 100
# Bytes one string may take. No field of any form holds more than 512 characters; a longer string is copied
# several times over on its way through validation (each copy, and the error that quotes it, as long).
MAX_STRING_BYTES = 1024 * 1024

# The skeleton of a body: its quotes, commas and brackets (both kinds as parentheses), every other byte
# gone; and the same without commas.
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_SKELETON = bytes(sorted(set(range(256)) - set(b'"[]{},')))
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b'"[]{}')))
# Up to this many bytes, a body with few brackets is let through after two counts.
SMALL_BODY = 16 * 1024


class _Records(msgspec.Struct):
    """The `data` array of a request as spelled by nearly every client, its elements left undecoded."""

    data: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET
    Data: list[msgspec.Raw] | msgspec.UnsetType = msgspec.UNSET


_records_decoder = msgspec.json.Decoder(_Records)
_members_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_elements_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def check_shape(body: bytes, max_records: int) -> None:
    """Refuse a body nested deeper than MAX_DEPTH, with more values than max_records x VALUES_PER_RECORD, with
    a string longer than MAX_STRING_BYTES, or with more than max_records arrays or objects in `data`, from its
    bytes alone.

    Counts over the skeleton include brackets and commas inside strings, so they can only overstate; only a
    body whose overstated count breaks a limit is measured exactly (strings left out). Invalid JSON may be
    mismeasured either way; the decoder refuses it.
    """
    max_values = max_records * VALUES_PER_RECORD
    if len(body) <= min(SMALL_BODY, max_values) and body.count(b"[") + body.count(b"{") <= min(MAX_DEPTH, max_records):
        return  # a point-of-sale request ends here
    plain = _without_escapes(body)
    skeleton = None
    if len(body) > max_values:  # a value takes a byte at least: only a larger body may hold too many
        skeleton = plain.translate(_TO_PARENS, _NOT_SKELETON)
        # Every value but the body itself is the first in its container or follows a comma; an empty array
        # or object counts twice (it costs a worker more than most values do).
        if 1 + skeleton.count(b"(") + skeleton.count(b",") > max_values:
            exact = _outside_strings(skeleton)
            values = 1 + exact.count(b"(") + exact.count(b",")
            if values > max_values:
                raise PayloadTooLarge(f"Request body holds {values} JSON values, more than the {max_values} "
                                      f"allowed (at most {max_records} records per request, of "
                                      f"{VALUES_PER_RECORD} values on average)")
    longest = _string_longer_than(plain, MAX_STRING_BYTES)
    if longest:
        raise PayloadTooLarge(f"Request body holds a string of {longest} bytes; at most {MAX_STRING_BYTES} bytes "
                              "per string")
    brackets = plain.translate(_TO_PARENS, _NOT_BRACKET) if skeleton is None else skeleton.translate(None, b",")
    opens = brackets.count(b"(")
    if opens > MAX_DEPTH and _deeper_than(_outside_strings(brackets), MAX_DEPTH):
        raise too_deep()
    # Records that are arrays or objects are counted here, before any is built. (Other elements of `data`,
    # which no form accepts as records, are counted once decoded, within the bound on values.)
    if opens > max_records:
        count = records_in(body)
        if count > max_records:
            raise PayloadTooLarge(f"At most {max_records} records per request, got {count}")


def records_in(body: bytes) -> int:
    """How many elements the body's `data` array holds (0 when there is none), without decoding them.

    `data` is the first member whose name is `data` in any case, as the sync engine reads it (which counts
    again once the body is decoded: a body that spells it twice, as `data` and `DATA`, may be counted here by
    the other one, within the bound on values all the same).
    """
    try:
        found = _records_decoder.decode(body)
    except msgspec.DecodeError:
        found = _Records()
    spelt = [v for v in (found.data, found.Data) if not isinstance(v, msgspec.UnsetType)]
    if len(spelt) == 1:  # one of the usual spellings, and no other
        return len(spelt[0])
    try:
        members = _members_decoder.decode(body)
        raw = next((v for k, v in members.items() if k.lower() == "data"), None)
        return len(_elements_decoder.decode(raw)) if raw is not None else 0
    except msgspec.DecodeError:
        return 0  # not an object, or `data` not an array: refused once decoded


def too_deep() -> BadRequest:
    return BadRequest(f"Request body is nested deeper than {MAX_DEPTH} levels of arrays and objects")


def _without_escapes(body: bytes) -> bytes:
    """The body with its escaped backslashes and quotes blanked out (two spaces each, so that positions hold),
    so that every quote left opens or closes a string.

    Left to right, as JSON reads escapes: `\\\\"` is a backslash, then the end of the string. A body without
    an escaped quote (`\\\\"` holds one too) is returned as it is: every quote in it opens or closes a string.
    """
    if b"\\" not in body or b'\\"' not in body:
        return body
    return body.replace(b"\\\\", b"  ").replace(b'\\"', b"  ")


def _string_longer_than(plain: bytes, limit: int) -> int:
    """The length in bytes of a string longer than `limit` in a body without escapes, or 0 if none is.

    Such a string covers a whole window of limit / 2 bytes at a multiple of limit / 2: a window without a
    quote is looked for, one find (memchr) per window, then the run of bytes without quotes around it is
    measured; it is a string if an odd number of quotes precede it.
    """
    step = limit // 2
    end = 0
    for start in range(0, len(plain) - step + 1, step):
        if start < end or plain.find(b'"', start, start + step) != -1:
            continue
        first = plain.rfind(b'"', 0, start) + 1
        end = plain.find(b'"', start + step)
        end = len(plain) if end == -1 else end
        if end - first > limit and plain.count(b'"', 0, first) % 2:
            return end - first
    return 0


def _outside_strings(skeleton: bytes) -> bytes:
    """A skeleton without its strings: only the brackets and commas outside them.

    Quotes alternate, opening and closing strings. Most strings hold no bracket or comma, so their skeleton is
    `""`. Adjacent quotes go first (an empty string, or the end of one and the start of the next: the
    alternation survives), then, if any quote is left, every other piece between quotes.
    """
    skeleton = skeleton.replace(b'""', b"")
    if b'"' not in skeleton:
        return skeleton
    return b"".join(skeleton.split(b'"')[::2])


def _deeper_than(brackets: bytes, limit: int) -> bool:
    """Whether balanced parentheses nest deeper than `limit`: each pass removes the innermost pairs."""
    if b"(" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):  # nothing left to pair: empty, or not balanced
            return False
        brackets = shorter
    return b"()" in brackets


def nul_path(raw: bytes, value: Any) -> str | None:
    """The JSON Pointer of the first name or text in `value` that holds a NUL character (which PostgreSQL
    cannot store), or None. `raw` is the body `value` was decoded from: only a body that spells the escape
    is walked, so the common case costs one search of its bytes."""
    if b"\\u0000" not in raw:
        return None
    return _nul_in(value, "")


def _nul_in(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for name, item in items:
        here = f"{path}/{str(name).replace('~', '~0').replace('/', '~1')}"
        if isinstance(name, str) and "\x00" in name:
            return here
        found = _nul_in(item, here)
        if found is not None:
            return found
    return None
