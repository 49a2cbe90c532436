"""The one place that renders JSON: the canonical envelope for every answer."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
import structlog
from starlette.responses import Response

from .errors import FAST_CODES, MESSAGE_CHARS, QUOTED_CHARS, GatewayError, shorten, translate

log = structlog.get_logger("gateway")


def _enc_hook(obj: Any) -> Any:
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


# Decimals go out as JSON numbers with their exact digits, never through a binary float.
_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=_enc_hook)


_ONE = Decimal(1)

# On every answer, errors and streamed pulls included: a browser must not guess another type than the JSON
# declared, and no cache (a proxy's, a browser's) keeps an answer, which holds tokens and business data.
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))
# The most of `messages` an error answer carries: a message that quotes the request is cut to this.
MAX_ERROR_MESSAGE = 4 * MESSAGE_CHARS


def plain(value: Any) -> Any:
    """A whole amount written as its digits, other values unchanged.

    asyncpg reads numeric 660000 as Decimal('6.6E+5'): exact, but JSON readers that type amounts as integers
    (Fast types them Long; .NET's reader into a long) refuse the exponent.
    """
    if type(value) is Decimal:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            return value.quantize(_ONE)
    return value


def utc_iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def encode(content: Any) -> bytes:
    return _encoder.encode(content)


def success(messages: str = "SUCCESS", headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "messages": messages}
    body.update(fields)
    body["code"] = 200
    return JSONResponse(body, status_code=200, headers=headers)


def error_body(exc: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "messages": shorten(exc.message, MAX_ERROR_MESSAGE, QUOTED_CHARS),
                            "code": exc.code}
    body.update(exc.extra)
    return body


def http_status(exc: GatewayError, rest_statuses: bool = False) -> int:
    """HTTP 200 for Fast's body codes (201, 202, 601), as Fast answers; else the error's REST status."""
    return exc.status if rest_statuses or exc.code not in FAST_CODES else 200


def error(exc: GatewayError, headers: dict[str, str] | None = None, rest_statuses: bool = False) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=http_status(exc, rest_statuses), headers=headers)


def retry_after_header(exc: GatewayError) -> dict[str, str] | None:
    """A Retry-After header for an error that says when to come back (a 429, a 503): its `retry_after`, whole
    seconds, as an attribute or in `extra`."""
    seconds = getattr(exc, "retry_after", None)
    if seconds is None:
        seconds = exc.extra.get("retry_after")
    return {"Retry-After": str(max(0, int(seconds)))} if seconds is not None else None


def render_error(exc: BaseException, rest_statuses: bool = False) -> JSONResponse:
    """The answer to any exception that ends a request, in the canonical envelope.

    Expected failures (domain errors, and database conditions that have a meaning for the client) are
    logged as `request_rejected`; anything else is a crash, logged with its trace and answered as a bare
    500 whose text says nothing of the cause.
    """
    answer = translate(exc)
    if answer is None:
        log.error("unhandled_error", exc_info=exc)
        return error(GatewayError(), rest_statuses=rest_statuses)
    cause = {} if answer is exc else {"cause": repr(exc)}
    # A 503 is expected, but one is an outage the operator should see above the routine refusals.
    emit = log.warning if answer.status >= 500 else log.info
    emit("request_rejected", status=answer.status, code=answer.code, error=answer.message, **cause)
    return error(answer, headers=retry_after_header(answer), rest_statuses=rest_statuses)
