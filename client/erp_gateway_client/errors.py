"""The errors a call raises: one base class carrying what the gateway's envelope said.

The gateway answers every error in one envelope (`success`, `messages`, `code`, and the case's fields); the
class is chosen by the body's `code` (Fast's codes travel in an HTTP 200), else by the HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordError:
    """One problem with one record: `index` is the record's position in the list the caller passed."""

    index: int
    key: str | None
    path: str
    message: str


class GatewayError(Exception):
    """An answer that is not a success, or no answer at all (status 0)."""

    def __init__(self, message: str, *, status: int = 0, code: int | None = None, request_id: str | None = None,
                 errors: list[RecordError] | None = None, body: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.errors = errors or []
        self.body = body or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code or self.status}: {self.message}{where}"


class ConnectionFailed(GatewayError):
    """The gateway could not be reached, or its answer was lost, on every attempt."""


class BadRequest(GatewayError):
    """400, and 202 (empty data): the request itself is wrong; retrying it cannot help."""


class AuthenticationError(GatewayError):
    """401: wrong credentials, or a token refused even after logging in again."""


class PermissionDenied(GatewayError):
    """403: the user's role lacks a permission (`body["permission"]` names it)."""


class FormNotFound(GatewayError):
    """201: the gateway has no such form (`messages` lists the known ones)."""


class NotFound(GatewayError):
    """404/405: no such endpoint."""


class Conflict(GatewayError):
    """409: a collision with concurrent writes, or the same Idempotency-Key still running."""


class PayloadTooLarge(GatewayError):
    """413: more records or bytes than the gateway allows in one request."""


class KeyReused(GatewayError):
    """422: an Idempotency-Key sent again with another body."""


class RateLimited(GatewayError):
    """429: too many failed logins or logins waiting; `retry_after` says when to come back."""


class DataStructureError(GatewayError):
    """601: records refused; `errors` lists each problem with the record's index in the caller's list.

    `result` holds what the chunks before the refused one wrote (a SyncResult), when raised by a sync.
    """

    result: Any = None


class ServerError(GatewayError):
    """500 and other 5xx answers that are not retried."""


class ServiceUnavailable(GatewayError):
    """503 (database unavailable) and 502/504 from a proxy, after the retries ran out."""


_BY_CODE: dict[int, type[GatewayError]] = {
    202: BadRequest, 201: FormNotFound, 601: DataStructureError, 400: BadRequest, 401: AuthenticationError,
    403: PermissionDenied, 404: NotFound, 405: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: KeyReused,
    429: RateLimited, 431: PayloadTooLarge, 502: ServiceUnavailable, 503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_class(status: int, code: int | None) -> type[GatewayError]:
    for candidate in (code, status):
        if candidate is not None and candidate in _BY_CODE:
            return _BY_CODE[candidate]
    return ServerError if status >= 500 else GatewayError
