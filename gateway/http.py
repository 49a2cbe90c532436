"""The HTTP/1.1 connection: uvicorn's httptools protocol, with a bound on what a request head may hold.

httptools keeps a header's name and value in memory until the header ends, and neither it nor uvicorn bounds
the request line or the headers: a head of hundreds of megabytes is read whole before the application sees
any of it. Here the bytes of a request head are counted as they arrive, and a head longer than
MAX_HEADER_BYTES, or one with more than MAX_HEADERS headers, is answered 431 without reading further. A
request the parser cannot read is answered 400. Both answers are the canonical envelope, as every other
error is, and close the connection.

The cost on a request within bounds: a comparison per read from the socket, one per header, and a flag set
when a head ends, when a request ends and per piece of body.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .errors import BadRequest, GatewayError, shorten
from .responses import SECURITY_HEADERS, encode, error_body

log = structlog.get_logger("gateway")

# The request line and the headers together, in bytes; and the number of headers.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100


class HeadersTooLarge(GatewayError):
    status, code, message = 431, 431, "Request headers too large"


class _Refused(Exception):
    """Carries an answer out of the parser: raised in a callback, it comes back as the context of the
    HttpParserCallbackError that feed_data raises."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True  # between requests too: the next bytes are a head
        self._head_left = MAX_HEADER_BYTES

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self._feed(data)
        except _Refused as refused:
            self._refuse(refused.error)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._refuse(cause.error if isinstance(cause, _Refused) else
                         BadRequest(f"Malformed HTTP request: {shorten(str(exc).rstrip('.'))}"))

    def _feed(self, data: bytes) -> None:
        """Feed the parser, a head never past its bound: of a read that would pass it, only the bytes up to
        the bound go in first, and the rest only once they ended the head."""
        while self._in_head and len(data) > self._head_left:
            allowed, data = data[:self._head_left], data[self._head_left:]
            self._head_left = 0
            self.parser.feed_data(allowed)
            if self._in_head:
                raise _Refused(HeadersTooLarge(f"Request line and headers exceed {MAX_HEADER_BYTES} bytes"))
            if self.transport.is_closing():
                return
        if self._in_head:
            self._head_left -= len(data)
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            raise _Refused(HeadersTooLarge(f"More than {MAX_HEADERS} request headers"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    # A chunked body may end in trailers: headers again, which httptools buffers the same way. What follows a
    # chunk's size line is counted as a head until the chunk's data begins; the last chunk has none, and
    # its trailers are counted as a head is. httptools does not say where in a read a callback fell, so the
    # count of a head that begins inside a read (trailers, or a pipelined request) starts with the next
    # read: such a head is cut at MAX_HEADER_BYTES plus at most one read (asyncio reads 256 KiB at most).
    def on_chunk_header(self) -> None:
        self._in_head, self._head_left = True, MAX_HEADER_BYTES

    def on_body(self, body: bytes) -> None:
        self._in_head = False
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_left = True, MAX_HEADER_BYTES

    def _refuse(self, error: GatewayError) -> None:
        """Answer `error` and close, where no answer to an earlier request is still being written (a request
        that fails in its body while the application reads it is cut off instead)."""
        request_id = uuid.uuid4().hex
        log.info("request_rejected", request_id=request_id, status=error.status, code=error.code,
                 error=error.message)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(self._answer(error, request_id))
        self.transport.close()

    def _answer(self, error: GatewayError, request_id: str) -> bytes:
        body = encode(error_body(error))
        headers = [*self.server_state.default_headers, *SECURITY_HEADERS,
                   (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", request_id.encode()), (b"connection", b"close")]
        return b"".join([STATUS_LINE[error.status], *(b"%s: %s\r\n" % header for header in headers), b"\r\n",
                         body])
