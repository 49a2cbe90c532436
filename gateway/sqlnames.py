"""Names spliced into generated SQL: table, column and form names from the declarations in code, never from
a request. Each is checked against a plain-word pattern before use, so that a mistake in a declaration fails
at load rather than producing a statement that means something else."""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def word(name: str) -> str:
    """`name`, checked to be a plain word (safe as an identifier or inside a string literal)."""
    if not isinstance(name, str) or not _WORD.fullmatch(name):
        raise ValueError(f"unsafe name for generated SQL: {name!r}")
    return name


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return f'"{word(name)}"'
