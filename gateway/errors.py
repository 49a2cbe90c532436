"""Domain errors. Each carries its HTTP status and Fast's body code; one handler renders them."""

from __future__ import annotations

from typing import Any


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


class DataStructureError(GatewayError):
    """Fast's 601: the records do not match the form's structure."""

    status, code, message = 422, 601, "Data structure error"


class ServiceUnavailable(GatewayError):
    status, code, message = 503, 503, "Database unavailable"


def translate(exc: BaseException) -> GatewayError:
    """The one place where database and connection failures become domain errors."""
    import asyncio

    import asyncpg

    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, (asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.InterfaceError,
                        asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.TooManyConnectionsError,
                        asyncpg.exceptions.QueryCanceledError, ConnectionError, asyncio.TimeoutError)):
        return ServiceUnavailable("Database unavailable or busy; retry later")
    if isinstance(exc, (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)):
        return Conflict("The request collided with concurrent writes; retry it")
    if isinstance(exc, asyncpg.exceptions.IntegrityConstraintViolationError):
        return Conflict(f"The data conflicts with stored data: {exc.__class__.__name__}")
    return GatewayError("Internal server error")


def summarise(errors: list[dict[str, Any]], shown: int = 3, max_message: int = 160) -> str:
    """The first few per-record errors in words, for `messages`: the one text a Fast client shows its user."""
    parts = []
    for err in errors[:shown]:
        where = f"record {err['index']}" + (f" ({err['key']})" if err.get("key") else "")
        message = str(err["message"])
        if len(message) > max_message:
            message = message[: max_message - 3] + "..."
        parts.append(f"{where} {err.get('path') or '/'}: {message}")
    text = "; ".join(parts)
    if len(errors) > shown:
        text += f"; and {len(errors) - shown} more"
    return text
