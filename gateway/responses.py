"""The one place that renders JSON: the canonical envelope for every answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from starlette.responses import Response

from .errors import GatewayError


def _enc_hook(obj: Any) -> Any:
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


# Decimals go out as JSON numbers with their exact digits, never through a binary float.
_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=_enc_hook)


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
    body: dict[str, Any] = {"success": False, "messages": exc.message, "code": exc.code}
    body.update(exc.extra)
    return body


def error(exc: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)
