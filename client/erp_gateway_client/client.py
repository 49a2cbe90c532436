"""The blocking client: drives the core's operations with httpx.Client and time.sleep."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self, TypeVar

import httpx

from . import _core
from ._core import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RECORDS, Lost, Reply, RetryEvent, RetryPolicy, Sleep
from .results import ChunkResult, Page, SyncResult

T = TypeVar("T")


class Client:
    """A gateway client for one user. Logs in on first use and again before its token expires or when it is
    refused; retries what the gateway asks to retry. Use as a context manager, or call close()."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None, *,
                 token: str | None = None, refresh: bool = False, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, max_records: int = DEFAULT_MAX_RECORDS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, renew_before: float = 60.0,
                 on_retry: Callable[[RetryEvent], None] | None = None, http: httpx.Client | None = None) -> None:
        self.session = _core.Session(username=username, password=password, token=token, refresh=refresh,
                                     retry=retry, renew_before=renew_before, on_retry=on_retry)
        self.max_records, self.max_body_bytes = max_records, max_body_bytes
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        # A refresh token is spent by its first use: with refresh on, threads take turns (see AsyncClient).
        self._turns: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if refresh else contextlib.nullcontext())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def token(self) -> str | None:
        return self.session.token

    def login(self) -> str:
        """Log in now (otherwise the first call does); returns the access token."""
        return self._run(self.session.login())

    def sync(self, form: str, records: Iterable[Any], *, endpoint: str | None = None, partial: bool = False,
             outcomes: bool = False, dry_run: bool = False, strict: bool = False, chunk_size: int | None = None,
             max_body_bytes: int | None = None, key_prefix: str | None = None,
             on_chunk: Callable[[ChunkResult], None] | None = None) -> SyncResult:
        """Send records in chunks and sum the answers. In atomic mode (the default) each chunk is written
        whole or not at all, and the first refused chunk ends the sync with DataStructureError (its
        `result` holds what the chunks before wrote); `partial=True` writes the valid records of every chunk
        and reports the others in `result.errors` / `result.rejected`."""
        result = SyncResult()
        for chunk in self.sync_chunks(form, records, endpoint=endpoint, partial=partial, outcomes=outcomes,
                                      dry_run=dry_run, strict=strict, chunk_size=chunk_size,
                                      max_body_bytes=max_body_bytes, key_prefix=key_prefix):
            result.add(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        error = _core.refusal(result) if not partial else None
        if error is not None:
            raise error
        return result

    def sync_chunks(self, form: str, records: Iterable[Any], *, endpoint: str | None = None,
                    partial: bool = False, outcomes: bool = False, dry_run: bool = False, strict: bool = False,
                    chunk_size: int | None = None, max_body_bytes: int | None = None,
                    key_prefix: str | None = None) -> Iterator[ChunkResult]:
        """sync() one chunk at a time: each chunk's result as soon as it is answered (progress displays)."""
        upload = _core.Upload(form, records, endpoint or _core.endpoint_of(form),
                              _core.options(partial=partial, outcomes=outcomes, dry_run=dry_run, strict=strict),
                              chunk_size or self.max_records, max_body_bytes or self.max_body_bytes, key_prefix)
        for chunk in upload.chunks():
            yield upload.settle(self._run(self.session.send_chunk(upload.endpoint, chunk)))

    def sync_data(self, form: str, records: Iterable[Any], **options: Any) -> SyncResult:
        return self.sync(form, records, endpoint="SyncData", **options)

    def sync_voucher(self, form: str, records: Iterable[Any], **options: Any) -> SyncResult:
        return self.sync(form, records, endpoint="SyncVoucher", **options)

    def get(self, form: str, **params: Any) -> Page:
        """One GetData answer; params are GetData's fields (Id, dateFrom, filters, fields, limit, cursor...)."""
        return self._run(self.session.get_page(form, params))

    def schema(self, form: str) -> dict[str, Any]:
        """The form's JSON Schema (its fields and their types), under any of its names."""
        return self._run(self.session.get_schema(form))

    def pages(self, form: str, *, limit: int = 1_000, **params: Any) -> Iterator[Page]:
        """Every page of a pull, following `next_cursor`."""
        walk = _core.Walk({**params, "limit": limit}, "cursor")
        while not walk.done:
            yield walk.advance(self.get(form, **walk.params))

    def feed(self, form: str, since: str | int | None = None, *, limit: int | None = None,
             **params: Any) -> Iterator[Page]:
        """The change feed from `since` (None: the beginning), a page at a time until it is caught up.
        Store a page's `next_since` once its records are processed, and pass it as `since` to resume."""
        walk = _core.Walk({**params, "since": since if since is not None else 0,
                           **({"limit": limit} if limit else {})}, "since")
        while not walk.done:
            yield walk.advance(self.get(form, **walk.params))

    def _run(self, operation: _core.Operation[T]) -> T:
        outcome: Reply | Lost | None = None
        with self._turns:
            try:
                while True:
                    effect = operation.send(outcome)
                    if isinstance(effect, Sleep):
                        time.sleep(effect.seconds)
                        outcome = None
                    else:
                        outcome = self._send(effect)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _send(self, request: _core.Request) -> Reply | Lost:
        try:
            response = self._http.request(request.method, request.path, content=request.body,
                                          headers=request.headers)
        except httpx.TransportError as exc:
            return Lost(exc)
        return Reply(response.status_code, response.headers, response.content)
