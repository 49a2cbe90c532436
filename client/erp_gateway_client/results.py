"""What a sync and a pull return: counts, per-record errors and outcomes, pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import RecordError

COUNTS = ("inserted", "updated", "unchanged", "deleted", "failed", "superseded")


@dataclass(frozen=True)
class Outcome:
    """What happened to one record (`outcomes: true`): `index` is its position in the caller's list."""

    index: int
    key: str | None
    status: str


@dataclass(frozen=True)
class Rejected:
    """A record the gateway refused, with its problems: what a failures file holds."""

    index: int
    record: Any
    errors: list[RecordError]


@dataclass
class ChunkResult:
    """The answer to one request of a sync: records[start:start + len(records)] of the caller's list."""

    number: int
    start: int
    records: Sequence[Any]
    idempotency_key: str
    counts: dict[str, int]
    errors: list[RecordError] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    refused: bool = False  # a 601: nothing of this chunk was written
    replayed: bool = False  # the gateway replayed the stored answer of an earlier attempt
    attempts: int = 1
    request_id: str | None = None

    @property
    def rejected(self) -> list[Rejected]:
        by_index: dict[int, list[RecordError]] = {}
        for error in self.errors:
            by_index.setdefault(error.index, []).append(error)
        return [Rejected(i, self.records[i - self.start], errs) for i, errs in sorted(by_index.items())]


@dataclass
class SyncResult:
    """The sum of a sync's chunks. Indexes in `errors` and `outcomes` are positions in the caller's list."""

    records: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    errors: list[RecordError] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[ChunkResult] = field(default_factory=list)

    def add(self, chunk: ChunkResult) -> None:
        self.records += len(chunk.records)
        for name in COUNTS:
            self.counts[name] += chunk.counts.get(name, 0)
        self.errors.extend(chunk.errors)
        self.outcomes.extend(chunk.outcomes)
        self.warnings.extend(chunk.warnings)
        self.chunks.append(chunk)

    @property
    def rejected(self) -> list[Rejected]:
        return [r for chunk in self.chunks for r in chunk.rejected]

    @property
    def ok(self) -> bool:
        return not self.errors

    def __getattr__(self, name: str) -> int:
        # result.inserted, result.failed, ...: the counts read as attributes.
        if name in COUNTS:
            return self.counts[name]
        raise AttributeError(name)


@dataclass(frozen=True)
class Page:
    """One GetData answer: `next_cursor` (paging) or `next_since` and `more` (the change feed)."""

    data: list[dict[str, Any]]
    next_cursor: str | None = None
    next_since: str | None = None
    more: bool = False
    body: dict[str, Any] = field(default_factory=dict, repr=False)
