"""The audit log: who wrote what and how it ended, who logged in or was refused; never a secret.

One row per write request (SyncData, SyncVoucher) whose token was accepted, whatever its outcome: success,
a 601 refusal, a 4xx; with the answer's counts, the Idempotency-Key, the request id, the client address and
the duration. One row per authentication event: a login, a failed or throttled one, a refused token, and
the CLI's password, role and disable changes. No row holds a password, a token or a request body.

Cost on the ordinary path: one INSERT per write request, on the request's own connection, after the work
(committed on its own, so that a refused, rolled-back request is audited too); nothing for a read. A login
adds one INSERT on the connection it uses already. Should the insert fail, the write's answer stands and
the failure is logged (`audit_failed`): the audit log is a record of the work, never a gate on it. A row is
so lost, too, if the process dies between the work's commit and the insert.

Admins read their tenant's rows with GetData `getAuditLog` (FORMS, registered through forms.FORM_MODULES).
Rows older than GATEWAY_AUDIT_RETENTION_DAYS are purged by a small share of writes, or by `gateway audit
purge`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import getpass
import os
import random
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import msgspec
import structlog
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import idempotency
from .db import QUERIES, left_tenant, tenant_pending
from .errors import MESSAGE_CHARS, BadRequest, DataStructureError, GatewayError, shorten, translate
from .reports import ReportForm, parse_date

log = structlog.get_logger("gateway")

WRITE = "write"
LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGIN_THROTTLED = "login_throttled"
TOKEN_REFUSED = "token_refused"
PASSWORD_CHANGED = "password_changed"
ROLE_CHANGED = "role_changed"
USER_DISABLED = "user_disabled"
USER_ENABLED = "user_enabled"
TOKEN_REFRESHED = "token_refreshed"  # /api/refreshToken: a refresh token spent for a new pair
REFRESH_REFUSED = "refresh_refused"  # unknown, expired, revoked or reused (which revokes its family)
LOGOUT = "logout"  # /api/revokeToken
WEBHOOK_CHANGED = "webhook_changed"  # a subscription added, removed, paused, resumed or re-keyed; a replay
KINDS = (WRITE, LOGIN, LOGIN_FAILED, LOGIN_THROTTLED, TOKEN_REFUSED, PASSWORD_CHANGED, ROLE_CHANGED,
         USER_DISABLED, USER_ENABLED, TOKEN_REFRESHED, REFRESH_REFUSED, LOGOUT, WEBHOOK_CHANGED)

COUNTS = ("inserted", "updated", "unchanged", "deleted", "failed")  # of the answer's `result`
DEFAULT_RETENTION_DAYS = 365
# The share of write requests that also purge rows past the retention, at most PURGE_BATCH of them: a purge
# on the write path stays a few milliseconds, and 1% of writes deleting up to 1,000 rows each outpaces the one
# row every write adds.
PURGE_CHANCE = 0.01
PURGE_BATCH = 1000
CLI_PURGE_BATCH = 10_000  # per transaction, so that a first purge of a year's rows holds no lock for long
# getAuditLog pages
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A `since` page stops before rows younger than this: an id is taken before its row commits, so a younger row
# may yet be joined by one of a lower id (sql/queries.sql audit_read_since).
SINCE_SETTLE_SECONDS = 1.0
_NO_ID = 2**63 - 1


# --- the request an event belongs to ------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    client_addr: str | None
    started: float  # time.perf_counter() when the request came in


# Set by app.RequestContext for the length of each request, so that events recorded deep in a request (a
# login, a refused token) carry its id, address and duration without every caller passing them on.
_request: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("audit_request", default=None)


def begin_request(request_id: str, client: Any, started: float) -> contextvars.Token[RequestInfo | None]:
    """Bind the request's id, client address (the ASGI scope's `client`) and start; reset with end_request."""
    host = client[0] if client else None
    return _request.set(RequestInfo(request_id, host, started))


def end_request(token: contextvars.Token[RequestInfo | None]) -> None:
    _request.reset(token)


def _request_fields() -> tuple[str | None, str | None, float | None]:
    info = _request.get()
    if info is None:
        return None, None, None
    return info.request_id, info.client_addr, round((time.perf_counter() - info.started) * 1000, 2)


# --- recording ----------------------------------------------------------------------------------------------

# A connection, or the pool when the request holds none (Pool.execute takes one for the statement).
Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def _insert(db: Db, kind: str, query: str, *args: Any) -> bool:
    """Insert a row; a failure is logged, never raised: an event is recorded, it never fails the request."""
    try:
        await db.execute(QUERIES[query], *args)
    except Exception as exc:  # noqa: BLE001 - whatever the database answers, the request's own answer stands
        log.error("audit_failed", kind=kind, error=repr(exc))
        return False
    return True


async def record(db: Db, kind: str, *, tenant_id: int | None = None, tenant: str | None = None,
                 username: str | None = None, endpoint: str | None = None, form: str | None = None,
                 counts: dict[str, Any] | None = None, idempotency_key: str | None = None,
                 status: int | None = None, detail: str | None = None, last: bool = False) -> bool:
    """One event of the current request. `tenant` is a tenant code (a token's claim), used when `tenant_id`
    is not known. `last`: the request's last statement on `db`, which then also clears the tenant it set."""
    request_id, client_addr, duration = _request_fields()
    leaving = last and tenant_pending(db)
    recorded = await _insert(db, kind, "audit_insert_last" if leaving else "audit_insert", tenant_id, tenant,
                             username, kind, endpoint, form, counts, idempotency_key, request_id, client_addr,
                             duration, status, detail)
    if leaving and recorded:
        left_tenant(db)
    return recorded


async def user_event(db: Db, kind: str, username: str, *, endpoint: str, status: int | None = None,
                     detail: str | None = None) -> bool:
    """An event about the user `username` names, under that user's tenant. The name is kept only when it is a
    user's: the name a failed login sent may be a password typed in the wrong field."""
    request_id, client_addr, duration = _request_fields()
    return await _insert(db, kind, "audit_insert_user", username, kind, endpoint, request_id, client_addr, duration,
                         status, detail)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for the process's uid (a container's)
        return f"uid {os.getuid()}"


async def admin_event(conn: asyncpg.Connection, kind: str, username: str, detail: str | None = None) -> None:
    """An administrator's change to a user through the CLI, recorded in the change's own transaction: the two
    commit together or not at all (unlike a request's events, a failure here fails the command)."""
    what = f"{detail}; " if detail else ""
    await conn.execute(QUERIES["audit_insert_user"], username, kind, "cli", None, None, None, None,
                       f"{what}gateway CLI as {_operator()}")


async def config_event(conn: asyncpg.Connection, kind: str, tenant_id: int, detail: str,
                       username: str | None) -> None:
    """A change to the tenant's configuration, by its admin user `username` through the API or, with None,
    through the CLI; in the change's own transaction: the two commit together or not at all."""
    if username is None:
        detail = f"{detail}; gateway CLI as {_operator()}"
    request_id, client_addr, duration = _request_fields()
    await conn.execute(QUERIES["audit_insert"], tenant_id, None, username, kind, "cli" if username is None else
                       "webhooks", None, None, None, request_id, client_addr, duration, None, detail)


async def token_refused(db: Db, exc: GatewayError, claims: dict[str, Any] | None = None) -> None:
    """A refused token. `claims` only when the token's signature was verified: what a forged one claims is
    nobody's."""
    await record(db, TOKEN_REFUSED, tenant=claims["tenant"] if claims else None,
                 username=claims["sub"] if claims else None, status=exc.code, detail=exc.message)


class _Answer(msgspec.Struct):
    """What an answer's body says about its outcome (the other fields are skipped, unread)."""

    code: int = 0
    result: dict[str, Any] | None = None


_answer = msgspec.json.Decoder(_Answer)


def _counts(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    return {name: result[name] for name in COUNTS if name in result}


class WriteTrail:
    """The audit row of one write request, recorded once its outcome is known.

    Created once the token is checked; the form is filled in once the body names it. The caller records it
    exactly once: answered() with the response, or refused() with the exception that ends the request.
    """

    def __init__(self, endpoint: str, claims: dict[str, Any], key_header: str | None,
                 retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        self.endpoint = endpoint
        self.form: str | None = None
        self.username: str = claims["sub"]
        self.tenant: str = claims["tenant"]  # its code: the row's tenant is found by it
        try:
            self.key = idempotency.check_key(key_header)
        except BadRequest:
            self.key = None  # an unusable key is answered 400 and recorded without it
        self.retention_days = retention_days

    async def answered(self, conn: Db, response: Response) -> None:
        try:
            answer = _answer.decode(bytes(response.body))
        except (msgspec.DecodeError, AttributeError):
            answer = _Answer(code=response.status_code)
        replayed = response.headers.get("idempotent-replayed") == "true"
        await self._record(conn, answer.code, _counts(answer.result), "replayed" if replayed else None)

    async def refused(self, conn: Db, exc: Exception) -> None:
        if isinstance(exc, ClientDisconnect):
            await self._record(conn, None, None, "the client went away before its body was read")
            return
        answer = translate(exc)
        if answer is None:
            await self._record(conn, 500, None, "internal error")
            return
        if answer.status == 401:
            return  # a token refused once the user was read: principal_for records that (token_refused)
        # A 601's message quotes the records it refuses (their keys, the values at fault): the row keeps its
        # counts and the error's kind, not the request's content.
        detail = type(answer).message if isinstance(answer, DataStructureError) else answer.message
        await self._record(conn, answer.code, _counts(answer.extra.get("result")), shorten(detail, MESSAGE_CHARS))

    async def _record(self, conn: Db, status: int | None, counts: dict[str, Any] | None, detail: str | None) -> None:
        # The purge first, while the request's tenant is still set (row security: it deletes only its rows);
        # the row is the request's last statement.
        if random.random() < PURGE_CHANCE:
            await purge(conn, self.retention_days, PURGE_BATCH)
        await record(conn, WRITE, tenant=self.tenant, username=self.username, endpoint=self.endpoint,
                     form=self.form, counts=counts, idempotency_key=self.key, status=status, detail=detail,
                     last=True)


async def purge(db: Db, retention_days: int, batch: int = PURGE_BATCH) -> int:
    """Delete up to `batch` rows older than `retention_days`; how many were deleted (a failure logs, and is 0)."""
    try:
        status = await db.execute(QUERIES["audit_purge"], retention_days, batch)
    except Exception as exc:  # noqa: BLE001 - a purge that fails is retried by a later write
        log.error("audit_purge_failed", error=repr(exc))
        return 0
    return int(status.split()[-1])


async def purge_all(conn: asyncpg.Connection, retention_days: int) -> int:
    """Every row older than `retention_days`, in batches of a transaction each (the CLI's purge)."""
    total = 0
    while True:
        status = await conn.execute(QUERIES["audit_purge"], retention_days, CLI_PURGE_BATCH)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < CLI_PURGE_BATCH:
            return total


# --- reading: GetData getAuditLog -------------------------------------------------------------------------

GET_NAME = "getAuditLog"  # admin_only: only admin, or a role naming read:getAuditLog exactly (gateway/permissions.py)


def _whole(params: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = params.get(name.lower())
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum else f"of at least {minimum}"
        raise BadRequest(f"Field '{name}' must be a whole number {bound}", field=name)
    return value


def _text(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name.lower())
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\0" in value:
        raise BadRequest(f"Field '{name}' must be text", field=name)
    return value


def _kinds(params: dict[str, Any]) -> list[str] | None:
    value = params.get("kind")
    if value is None or value == "" or value == []:
        return None
    kinds = [value] if isinstance(value, str) else value
    if not isinstance(kinds, list) or not all(isinstance(k, str) and k in KINDS for k in kinds):
        raise BadRequest(f"Field 'kind' must be one of {', '.join(KINDS)}, or a list of them", field="kind")
    return kinds


def _day_start(day: dt.date | None) -> dt.datetime | None:
    return None if day is None else dt.datetime.combine(day, dt.time(), dt.UTC)


def _row(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "Id": r["id"],
        "At": r["at"].astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "Kind": r["kind"],
        "Username": r["username"],
        "Endpoint": r["endpoint"],
        "Form": r["form"],
        "Counts": r["counts"],
        "IdempotencyKey": r["idempotency_key"],
        "RequestId": r["request_id"],
        "ClientAddress": r["client_addr"],
        "DurationMs": r["duration_ms"],
        "Status": r["status"],
        "Detail": r["detail"],
    }


async def read_log(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """The tenant's audit rows: newest first, `next` continuing below the last; or with `since`, the rows
    after that position, oldest first, `since` the position to ask from next. The form filter is `formName`:
    `form` names the GetData form itself."""
    start, end = parse_date(params.get("datefrom"), "dateFrom"), parse_date(params.get("dateto"), "dateTo")
    if start is not None and end is not None and start > end:
        raise BadRequest(f"Field 'dateFrom' ({start}) is after 'dateTo' ({end})", field="dateFrom")
    limit = _whole(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    below, since = _whole(params, "next", 1, _NO_ID), _whole(params, "since", 0, _NO_ID)  # ids are bigint
    if below is not None and since is not None:
        raise BadRequest("Give 'next' (older rows) or 'since' (newer rows), not both", field="next")
    args = [tenant_id, _kinds(params), _text(params, "username"), _text(params, "formName"), _day_start(start),
            _day_start(end + dt.timedelta(days=1)) if end is not None and end < dt.date.max else None]
    if since is None:
        rows = await conn.fetch(QUERIES["audit_read"], *args, below or _NO_ID, limit)
        data = [_row(r) for r in rows]
        return {"data": data, "next": data[-1]["Id"] if len(data) == limit else None}
    rows = await conn.fetch(QUERIES["audit_read_since"], *args, since, limit, SINCE_SETTLE_SECONDS)
    data = [_row(r) for r in rows]
    return {"data": data, "since": data[-1]["Id"] if data else since}


FORMS = [
    ReportForm(GET_NAME, read_log,
               params=("kind", "username", "formName", "dateFrom", "dateTo", "limit", "next", "since"),
               description="The tenant's audit log (admins only): writes and authentication events.",
               admin_only=True),
]
