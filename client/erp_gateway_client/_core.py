"""The client's logic, without I/O: what to send, what an answer means, when to log in and when to retry.

Each operation is a generator that yields effects (a Request to send, a Sleep) and is sent back what came of
them (a Reply, or Lost when no answer came); its return value is the operation's result. Client and
AsyncClient drive the same generators, one with httpx.Client and time.sleep, the other with
httpx.AsyncClient and asyncio.sleep, so that the rules live here once.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import _json
from .errors import (
    AuthenticationError,
    ConnectionFailed,
    DataStructureError,
    GatewayError,
    RecordError,
    error_class,
)
from .results import COUNTS, ChunkResult, Outcome, Page, SyncResult

T = TypeVar("T")

# The gateway's own limits are 10,000 records and 64 MiB a request: stay well below both by default, so that
# one request stays a short transaction and a retry resends little.
DEFAULT_MAX_RECORDS = 1_000
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

# SyncVoucher's forms (names and aliases, lower case); every other set* form goes to SyncData.
VOUCHER_FORMS = frozenset(name.lower() for name in (
    "setSaleInvoice", "setSalesInvoice", "setSaleReturn", "setPurchaseInvoice", "setReceipt", "setStockReceipt",
    "setIssue", "setStockIssue", "setStockTransfer", "setCashReceipt", "setCashDisbursement", "setCashPayment",
    "setSalesOrder", "setPurchaseOrder", "setJournalVoucher"))


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]
    method: str = "POST"


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # looked up case-insensitively (httpx.Headers)
    content: bytes


@dataclass(frozen=True)
class Lost:
    """No answer: the connection was refused or broke, or the answer did not come in time."""

    error: Exception


Effect = Request | Sleep
Operation = Generator[Effect, Reply | Lost | None, T]


@dataclass(frozen=True)
class RetryEvent:
    """A failed attempt that will be retried after `delay` seconds (for logs and progress displays)."""

    path: str
    attempt: int
    delay: float
    status: int  # 0: no answer
    reason: str


@dataclass(frozen=True)
class RetryPolicy:
    """Which answers are retried, how often and how long.

    409 (collision, or the same Idempotency-Key still running), 429, 502, 503 and 504 and lost answers are
    retried; any other answer is final. The wait is the answer's Retry-After when it has one (never less),
    else exponential backoff with jitter. Retrying stops after `max_attempts` or when the next wait would
    end more than `max_elapsed` seconds after the first attempt.
    """

    max_attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_elapsed: float = 120.0
    statuses: frozenset[int] = frozenset({409, 429, 502, 503, 504})

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            # A little on top, so that clients told the same second do not all come back at once.
            return retry_after + rng.uniform(0, min(1.0, retry_after * 0.1))
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class _Token:
    access: str
    deadline: float  # on the session's clock
    lifetime: float
    refresh: str | None = None


@dataclass(frozen=True)
class Chunk:
    """One request of a sync: records[start:start + len(records)] of the caller's, encoded once."""

    number: int
    start: int
    records: Sequence[Any]
    body: bytes
    key: str


def retry_after(headers: Mapping[str, str], now: datetime.datetime | None = None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.datetime.now(datetime.UTC))).total_seconds())


def envelope(reply: Reply) -> dict[str, Any]:
    try:
        body = _json.loads(reply.content) if reply.content else {}
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


def error_for(reply: Reply, body: dict[str, Any], offset: int = 0) -> GatewayError:
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = body.get("messages") if isinstance(body.get("messages"), str) else None
    cls = error_class(reply.status, code)
    return cls(message or f"HTTP {reply.status}", status=reply.status, code=code,
               request_id=reply.headers.get("x-request-id"), errors=record_errors(body, offset), body=body,
               retry_after=retry_after(reply.headers))


def record_errors(body: dict[str, Any], offset: int) -> list[RecordError]:
    return [RecordError(offset + e.get("index", 0), e.get("key"), e.get("path", ""), e.get("message", ""))
            for e in body.get("errors") or () if isinstance(e, dict)]


def endpoint_of(form: str) -> str:
    return "SyncVoucher" if form.lower() in VOUCHER_FORMS else "SyncData"


class Session:
    """Token state, retry policy and the operations built on them."""

    def __init__(self, *, username: str | None = None, password: str | None = None, token: str | None = None,
                 refresh: bool = False, retry: RetryPolicy | None = None, renew_before: float = 60.0,
                 on_retry: Callable[[RetryEvent], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        if token is None and (username is None or password is None):
            raise ValueError("give a username and password, or a token")
        self.username, self._password = username, password
        self.refresh = refresh
        self.retry = retry or RetryPolicy()
        self.renew_before = renew_before
        self.on_retry = on_retry
        self.clock = clock
        self.rng = rng or random.Random()
        self._token = _Token(token, float("inf"), float("inf")) if token else None
        self.logins = 0  # successful getToken calls, for diagnostics

    @property
    def token(self) -> str | None:
        return self._token.access if self._token else None

    # --- sending, with retries ------------------------------------------------------------------------

    def exchange(self, path: str, body: bytes, *, key: str | None = None, auth: bool = True,
                 method: str = "POST") -> Operation[tuple[int, Reply]]:
        """Send until the answer is final: (attempts, reply). Logs in first when needed, and once more on a
        401; raises ConnectionFailed when no answer came and the retries ran out."""
        started = self.clock()
        attempt = 0
        logged_in_again = False
        while True:
            attempt += 1
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if auth:
                headers["Authorization"] = yield from self._access_token()
            if key is not None:
                headers["Idempotency-Key"] = key
            outcome = yield Request(path, body, headers, method)
            assert isinstance(outcome, (Reply, Lost))
            if isinstance(outcome, Reply):
                if outcome.status == 401 and auth and not logged_in_again and self._password is not None:
                    # Revoked, expired early, or a password changed elsewhere: one fresh login, then once more.
                    logged_in_again, self._token = True, None
                    continue
                if outcome.status not in self.retry.statuses:
                    return attempt, outcome
            wait = self._wait(attempt, started, outcome)
            if wait is None:
                if isinstance(outcome, Lost):
                    raise ConnectionFailed(f"No answer from {path} after {attempt} attempt(s): {outcome.error}",
                                           status=0) from outcome.error
                return attempt, outcome
            if self.on_retry is not None:
                status = outcome.status if isinstance(outcome, Reply) else 0
                reason = repr(outcome.error) if isinstance(outcome, Lost) else f"HTTP {outcome.status}"
                self.on_retry(RetryEvent(path, attempt, wait, status, reason))
            yield Sleep(wait)

    def _wait(self, attempt: int, started: float, outcome: Reply | Lost) -> float | None:
        if attempt >= self.retry.max_attempts:
            return None
        after = retry_after(outcome.headers) if isinstance(outcome, Reply) else None
        wait = self.retry.delay(attempt, after, self.rng)
        if self.clock() + wait - started > self.retry.max_elapsed:
            return None
        return wait

    def call(self, path: str, body: bytes, *, key: str | None = None,
             auth: bool = True) -> Operation[tuple[int, Reply, dict[str, Any]]]:
        """exchange(), then raise the error of an answer that is not a success."""
        attempts, reply = yield from self.exchange(path, body, key=key, auth=auth)
        answer = envelope(reply)
        if reply.status != 200 or answer.get("success") is not True:
            raise error_for(reply, answer)
        return attempts, reply, answer

    # --- the token --------------------------------------------------------------------------------------

    def _access_token(self) -> Operation[str]:
        token = self._token
        if token is not None and self.clock() < token.deadline - min(self.renew_before, token.lifetime / 2):
            return token.access
        if token is not None and token.refresh is not None:
            renewed = yield from self._refresh(token.refresh)
            if renewed:
                return renewed
        if self._password is None:
            if token is not None:
                return token.access  # a token given as is: used until the gateway refuses it
            raise AuthenticationError("No token and no password to log in with", status=401, code=401)
        return (yield from self.login())

    def login(self) -> Operation[str]:
        payload: dict[str, Any] = {"username": self.username, "password": self._password}
        if self.refresh:
            payload["refresh"] = True
        _, reply, answer = yield from self.call("/api/getToken", _json.dumps(payload), auth=False)
        self.logins += 1
        return self._keep(reply, answer)

    def _refresh(self, refresh_token: str) -> Operation[str | None]:
        """A new token pair for the refresh token, or None (then log in with the password).

        Sent once, never retried: a refresh token is spent by the gateway even when its answer is lost, and
        presenting it again would revoke the whole session.
        """
        self._token = None
        outcome = yield Request("/api/refreshToken", _json.dumps({"refreshtoken": refresh_token}),
                                {"Content-Type": "application/json", "Accept": "application/json"})
        if isinstance(outcome, Reply) and outcome.status == 200:
            answer = envelope(outcome)
            if answer.get("success") is True:
                return self._keep(outcome, answer)
        if self._password is None:
            if isinstance(outcome, Reply):
                raise error_for(outcome, envelope(outcome))
            raise ConnectionFailed("The token refresh got no answer", status=0)
        return None

    def _keep(self, reply: Reply, answer: dict[str, Any]) -> str:
        token = answer["token"]
        # The lifetime is measured on the gateway's clock (its Date header), so a client whose clock is off
        # still renews in time.
        expires = _parse_time(token.get("expires"))
        served = _parse_http_date(reply.headers.get("date")) or datetime.datetime.now(datetime.UTC)
        lifetime = (expires - served).total_seconds() if expires else 3600.0
        self._token = _Token(token["accesstoken"], self.clock() + lifetime, lifetime, token.get("refreshtoken"))
        return self._token.access

    # --- operations ---------------------------------------------------------------------------------------

    def send_chunk(self, endpoint: str, chunk: Chunk) -> Operation[ChunkResult]:
        attempts, reply = yield from self.exchange(f"/api/{endpoint}", chunk.body, key=chunk.key)
        answer = envelope(reply)
        refused = answer.get("code") == 601
        if not refused and (reply.status != 200 or answer.get("success") is not True):
            raise error_for(reply, answer, chunk.start)
        counts = answer.get("result") or {}
        return ChunkResult(
            number=chunk.number, start=chunk.start, records=chunk.records, idempotency_key=chunk.key,
            counts={name: int(counts.get(name, 0)) for name in COUNTS},
            errors=record_errors(answer, chunk.start),
            outcomes=[Outcome(chunk.start + o["index"], o.get("key"), o["status"])
                      for o in answer.get("outcomes") or ()],
            warnings=[{**w, "index": chunk.start + w["index"]} if isinstance(w.get("index"), int) else w
                      for w in answer.get("warnings") or ()],
            refused=refused, replayed=reply.headers.get("idempotent-replayed") == "true", attempts=attempts,
            request_id=reply.headers.get("x-request-id"))

    def get_page(self, form: str, params: Mapping[str, Any]) -> Operation[Page]:
        _, _, answer = yield from self.call("/api/GetData", _json.dumps({"form": form, **params}))
        return Page(data=answer.get("data") or [], next_cursor=answer.get("next_cursor"),
                    next_since=answer.get("next_since"), more=bool(answer.get("more")), body=answer)

    def get_schema(self, form: str) -> Operation[dict[str, Any]]:
        """GET /api/schemas/{form}: the form's JSON Schema under any of its names (no token needed)."""
        _, reply = yield from self.exchange(f"/api/schemas/{urllib.parse.quote(form, safe='')}", b"",
                                            auth=False, method="GET")
        answer = envelope(reply)
        if reply.status != 200:
            raise error_for(reply, answer)
        return answer


@dataclass
class Upload:
    """A sync split into chunks under a record count and a body size; stops at a refusal in atomic mode."""

    form: str
    records: Iterable[Any]
    endpoint: str
    options: dict[str, Any]
    max_records: int = DEFAULT_MAX_RECORDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    key_prefix: str | None = None
    stopped: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.max_records < 1:
            raise ValueError("max_records must be at least 1")

    @property
    def atomic(self) -> bool:
        return self.options.get("mode", "atomic") == "atomic"

    def chunks(self) -> Iterator[Chunk]:
        head = _json.dumps({"form": self.form, **self.options})[:-1] + b',"data":['
        tail = b"]}"
        budget = self.max_body_bytes - len(head) - len(tail)
        batch: list[Any] = []
        encoded: list[bytes] = []
        size = start = number = 0
        for index, record in enumerate(self.records):
            text = _json.dumps(record)
            if len(text) > budget:
                raise ValueError(f"Record {index} alone is {len(text)} bytes, over the body budget of"
                                 f" {self.max_body_bytes} bytes")
            if batch and (len(batch) >= self.max_records or size + 1 + len(text) > budget):
                yield self._chunk(number, start, batch, head + b",".join(encoded) + tail)
                if self.stopped:
                    return
                number, start = number + 1, index
                batch, encoded, size = [], [], 0
            size += len(text) + (1 if batch else 0)
            batch.append(record)
            encoded.append(text)
        if batch:
            yield self._chunk(number, start, batch, head + b",".join(encoded) + tail)

    def _chunk(self, number: int, start: int, records: list[Any], body: bytes) -> Chunk:
        # The key is the chunk's for all its retries: an attempt whose answer was lost is replayed by the
        # gateway, not applied twice. A prefix makes keys that a rerun of the same upload reuses.
        key = f"{self.key_prefix}-{number}" if self.key_prefix else str(uuid.uuid4())
        return Chunk(number, start, records, body, key)

    def settle(self, chunk: ChunkResult) -> ChunkResult:
        if chunk.refused and self.atomic:
            self.stopped = True
        return chunk


def options(*, partial: bool, outcomes: bool, dry_run: bool, strict: bool) -> dict[str, Any]:
    """The request's options, only those that differ from the gateway's defaults."""
    chosen: dict[str, Any] = {"mode": "partial" if partial else "atomic"}
    if outcomes:
        chosen["outcomes"] = True
    if dry_run:
        chosen["dry_run"] = True
    if strict:
        chosen["strict"] = True
    return chosen


def refusal(result: SyncResult) -> DataStructureError | None:
    """The error an atomic sync raises when a chunk was refused; it carries the result so far."""
    refused = next((c for c in result.chunks if c.refused), None)
    if refused is None:
        return None
    first = refused.errors[0].message if refused.errors else "records refused"
    error = DataStructureError(
        f"Chunk {refused.number} (records {refused.start} to {refused.start + len(refused.records) - 1})"
        f" was refused; {len(refused.errors)} error(s), the first: {first}",
        status=200, code=601, request_id=refused.request_id, errors=list(refused.errors))
    error.result = result
    return error


@dataclass
class Walk:
    """The requests of a paged pull (`by="cursor"`) or of the change feed (`by="since"`), one page after
    another until the gateway says there is no more."""

    params: dict[str, Any]
    by: str
    done: bool = False

    def advance(self, page: Page) -> Page:
        if self.by == "cursor":
            position, self.done = page.next_cursor, not page.next_cursor
        else:
            position, self.done = page.next_since, not page.more
        self.params = {**self.params, self.by: position}
        return page


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _parse_http_date(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
