"""The asyncio client: drives the core's operations with httpx.AsyncClient and asyncio.sleep."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Self, TypeVar

import httpx

from . import _core
from ._core import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RECORDS, Lost, Reply, RetryEvent, RetryPolicy, Sleep
from .results import ChunkResult, Page, SyncResult

T = TypeVar("T")


class AsyncClient:
    """Client's counterpart for asyncio: the same arguments, the same rules, awaited."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None, *,
                 token: str | None = None, refresh: bool = False, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, max_records: int = DEFAULT_MAX_RECORDS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, renew_before: float = 60.0,
                 on_retry: Callable[[RetryEvent], None] | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.session = _core.Session(username=username, password=password, token=token, refresh=refresh,
                                     retry=retry, renew_before=renew_before, on_retry=on_retry)
        self.max_records, self.max_body_bytes = max_records, max_body_bytes
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        # A refresh token is spent by its first use: with refresh on, calls take turns, so that two tasks
        # never present the same one (the gateway would then end the session). Without it, two tasks that
        # find the token old at once merely both log in.
        self._turns: asyncio.Lock | contextlib.nullcontext[None] = (
            asyncio.Lock() if refresh else contextlib.nullcontext())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def token(self) -> str | None:
        return self.session.token

    async def login(self) -> str:
        return await self._run(self.session.login())

    async def sync(self, form: str, records: Iterable[Any], *, endpoint: str | None = None,
                   partial: bool = False, outcomes: bool = False, dry_run: bool = False, strict: bool = False,
                   chunk_size: int | None = None, max_body_bytes: int | None = None, key_prefix: str | None = None,
                   on_chunk: Callable[[ChunkResult], None] | None = None) -> SyncResult:
        """See Client.sync."""
        result = SyncResult()
        async for chunk in self.sync_chunks(form, records, endpoint=endpoint, partial=partial, outcomes=outcomes,
                                            dry_run=dry_run, strict=strict, chunk_size=chunk_size,
                                            max_body_bytes=max_body_bytes, key_prefix=key_prefix):
            result.add(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        error = _core.refusal(result) if not partial else None
        if error is not None:
            raise error
        return result

    async def sync_chunks(self, form: str, records: Iterable[Any], *, endpoint: str | None = None,
                          partial: bool = False, outcomes: bool = False, dry_run: bool = False,
                          strict: bool = False, chunk_size: int | None = None, max_body_bytes: int | None = None,
                          key_prefix: str | None = None) -> AsyncIterator[ChunkResult]:
        upload = _core.Upload(form, records, endpoint or _core.endpoint_of(form),
                              _core.options(partial=partial, outcomes=outcomes, dry_run=dry_run, strict=strict),
                              chunk_size or self.max_records, max_body_bytes or self.max_body_bytes, key_prefix)
        for chunk in upload.chunks():
            yield upload.settle(await self._run(self.session.send_chunk(upload.endpoint, chunk)))

    async def sync_data(self, form: str, records: Iterable[Any], **options: Any) -> SyncResult:
        return await self.sync(form, records, endpoint="SyncData", **options)

    async def sync_voucher(self, form: str, records: Iterable[Any], **options: Any) -> SyncResult:
        return await self.sync(form, records, endpoint="SyncVoucher", **options)

    async def get(self, form: str, **params: Any) -> Page:
        return await self._run(self.session.get_page(form, params))

    async def schema(self, form: str) -> dict[str, Any]:
        return await self._run(self.session.get_schema(form))

    async def pages(self, form: str, *, limit: int = 1_000, **params: Any) -> AsyncIterator[Page]:
        walk = _core.Walk({**params, "limit": limit}, "cursor")
        while not walk.done:
            yield walk.advance(await self.get(form, **walk.params))

    async def feed(self, form: str, since: str | int | None = None, *, limit: int | None = None,
                   **params: Any) -> AsyncIterator[Page]:
        walk = _core.Walk({**params, "since": since if since is not None else 0,
                           **({"limit": limit} if limit else {})}, "since")
        while not walk.done:
            yield walk.advance(await self.get(form, **walk.params))

    async def _run(self, operation: _core.Operation[T]) -> T:
        outcome: Reply | Lost | None = None
        async with self._turns:
            try:
                while True:
                    effect = operation.send(outcome)
                    if isinstance(effect, Sleep):
                        await asyncio.sleep(effect.seconds)
                        outcome = None
                    else:
                        outcome = await self._send(effect)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def _send(self, request: _core.Request) -> Reply | Lost:
        try:
            response = await self._http.request(request.method, request.path, content=request.body,
                                                headers=request.headers)
        except httpx.TransportError as exc:
            return Lost(exc)
        return Reply(response.status_code, response.headers, response.content)
