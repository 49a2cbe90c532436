"""Domain errors. Each carries its HTTP status and Fast's body code; one handler renders them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg


class GatewayError(Exception):
    # `status` is the REST status. Fast's own body codes (FAST_CODES) travel in an HTTP 200 answer unless
    # the operator asks for REST statuses (Settings.rest_statuses); see responses.http_status.
    status: int = 500
    code: int = 500
    message: str = "Internal server error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.message
        self.extra = extra
        super().__init__(self.message)


# Fast's processing results: its documentation answers them "200 OK" with the code in the body.
FAST_CODES = frozenset({200, 201, 202, 601})


class BadRequest(GatewayError):
    status, code, message = 400, 400, "Invalid request"


class EmptyData(GatewayError):
    status, code, message = 400, 202, "Data is empty"


class Unauthorized(GatewayError):
    status, code, message = 401, 401, "Token is invalid or expired"


class InvalidCredentials(Unauthorized):
    message = "Invalid username or password"


class Forbidden(GatewayError):
    status, code, message = 403, 403, "Forbidden"


class FormNotFound(GatewayError):
    status, code, message = 404, 201, "Form does not exist"


class NotFound(GatewayError):
    status, code, message = 404, 404, "Not found"


class MethodNotAllowed(GatewayError):
    status, code, message = 405, 405, "Method not allowed"


class Conflict(GatewayError):
    status, code, message = 409, 409, "Conflict"


class PayloadTooLarge(GatewayError):
    status, code, message = 413, 413, "Request body too large"


class TooManyRequests(GatewayError):
    """429: come back after `retry_after` seconds, which the answer carries as its Retry-After header."""

    status, code, message = 429, 429, "Too many requests"

    def __init__(self, message: str | None = None, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class DataStructureError(GatewayError):
    """Fast's 601: the records do not match the form's structure."""

    status, code, message = 422, 601, "Data structure error"


class ServiceUnavailable(GatewayError):
    status, code, message = 503, 503, "Database unavailable"
    # Seconds a client should wait before retrying, sent as Retry-After: an outage or a busy pool is a
    # condition of moments to minutes, and a client back at once would only add to the load.
    retry_after = 2


def _unavailable(exc: BaseException) -> GatewayError:
    return ServiceUnavailable("Database unavailable or busy; retry later")


def _collided(exc: BaseException) -> GatewayError:
    return Conflict("The request collided with concurrent writes; retry it")


def _conflicting(exc: BaseException) -> GatewayError:
    return Conflict(f"The data conflicts with stored data: {exc.__class__.__name__}")


def _unstorable(exc: BaseException) -> GatewayError | None:
    """A value the request sent that PostgreSQL cannot store (a number such as 1e999999, a NUL character in a
    text): the sender's 601.

    Only these two: other data exceptions (a division by zero in a report, say) are the gateway's own faults.
    """
    text = str(exc)
    if isinstance(exc, (asyncpg.exceptions.CharacterNotInRepertoireError,
                        asyncpg.exceptions.UntranslatableCharacterError)):
        return DataStructureError("A text in the request holds a character PostgreSQL cannot store (the NUL "
                                  "character, \\u0000)", records=0)
    if isinstance(exc, asyncpg.exceptions.NumericValueOutOfRangeError) or text.startswith("invalid input for"):
        detail = text.rsplit("(", 1)[-1].rstrip(")") if "(" in text else text
        return DataStructureError(f"A number in the request cannot be stored ({detail}): numbers are kept "
                                  "exactly and must fit PostgreSQL's numeric type", records=0)
    return None


# The failures a request may meet without the gateway being wrong, each turned into the error it answers.
# Looked up along the exception's class hierarchy, so a subclass (ConnectionDoesNotExistError under
# PostgresConnectionError) takes its nearest registered base. Whatever is not here is a crash.
TRANSLATIONS: dict[type[BaseException], Callable[[Any], GatewayError | None]] = {
    GatewayError: lambda exc: exc,
    asyncpg.exceptions.PostgresConnectionError: _unavailable,
    asyncpg.exceptions.InterfaceError: _unavailable,
    asyncpg.exceptions.CannotConnectNowError: _unavailable,
    asyncpg.exceptions.TooManyConnectionsError: _unavailable,
    asyncpg.exceptions.QueryCanceledError: _unavailable,  # statement_timeout: the database is too busy
    # The server ended the session (shutting down, pg_terminate_backend) or cannot take it yet.
    asyncpg.exceptions.OperatorInterventionError: _unavailable,
    # What asyncpg raises for a query sent on a connection whose end the server has announced but whose
    # socket is not yet seen closed ("another operation is in progress"); the pool then replaces it.
    asyncpg.exceptions.InternalClientError: _unavailable,
    ConnectionError: _unavailable,
    asyncio.TimeoutError: _unavailable,
    # Retried by db.in_transaction already; one that still fails asks the client to retry later.
    asyncpg.exceptions.DeadlockDetectedError: _collided,
    asyncpg.exceptions.SerializationError: _collided,
    asyncpg.exceptions.IntegrityConstraintViolationError: _conflicting,
    asyncpg.exceptions.DataError: _unstorable,
}


def translate(exc: BaseException) -> GatewayError | None:
    """The domain error an expected failure answers, or None for a crash (a fault of the gateway's own)."""
    for cls in type(exc).__mro__:
        translation = TRANSLATIONS.get(cls)
        if translation is not None:
            return translation(exc)  # None: a crash after all (see _unstorable)
    return None


# How much of a name or value from the request an answer quotes back, and how long a message that quotes
# one may grow (a validator's message quotes the value it refuses, then names its rule).
QUOTED_CHARS = 64
MESSAGE_CHARS = 256


def shorten(text: Any, limit: int = QUOTED_CHARS, tail: int = 0) -> str:
    """`text` as an answer or a log line may quote it: whole when short, else its first `limit` characters,
    "..." and its last `tail` ones. A name sent a megabyte long must not come back a megabyte long."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit + tail + 3:
        return text
    return text[:limit] + "..." + (text[len(text) - tail:] if tail else "")


def summarise(errors: list[dict[str, Any]], shown: int = 3, max_message: int = 160) -> str:
    """The first few per-record errors in words, for `messages`: the one text a Fast client shows its user."""
    parts = []
    for err in errors[:shown]:
        where = f"record {err['index']}" + (f" ({shorten(err['key'])})" if err.get("key") else "")
        message = str(err["message"])
        if len(message) > max_message:
            message = message[: max_message - 3] + "..."
        parts.append(f"{where} {shorten(err.get('path') or '/')}: {message}")
    text = "; ".join(parts)
    if len(errors) > shown:
        text += f"; and {len(errors) - shown} more"
    return text
