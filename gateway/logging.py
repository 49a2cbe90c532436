"""Structured JSON logs on stdout, one object per line, request context merged in.

The standard library's records (uvicorn's errors, asyncpg's warnings) go through the same processors and
renderer as structlog's own, so every line a process logs is one JSON object.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

# Marks the handler configure_logging installs, so that configuring again replaces it and leaves alone the
# handlers others installed (pytest's log capture, say).
_HANDLER_NAME = "gateway-json"


def _add_pid(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["pid"] = os.getpid()  # which worker: several serve one port
    return event


class _Stdout:
    """sys.stdout as it is at each write, not as it was when logging was configured: loggers are cached on
    first use, and tests (capsys) and tools replace sys.stdout later."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


# A line quotes what a request sent (a username, a form name, a message that names a value), so every text
# in it is cut to MAX_LOG_VALUE characters, a trace to its first and last lines within MAX_LOG_TRACE; and a
# line still longer than MAX_LOG_LINE (a large list, say) is written as its identifying fields alone.
MAX_LOG_VALUE = 1024
MAX_LOG_TRACE = 5 * 1024
MAX_LOG_LINE = 8 * 1024
_TRACE_HEAD = 1024
_IDENTIFYING = ("event", "level", "pid", "timestamp", "logger", "request_id", "user", "tenant", "form", "status",
                "code")
_IDENTIFYING_VALUE = 128


def _cut(text: str, head: int, tail: int = 0) -> str:
    return f"{text[:head]}...[{len(text) - head - tail} characters cut]...{text[len(text) - tail:] if tail else ''}"


def _bound_values(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if type(value) is str and len(value) > MAX_LOG_VALUE:
            if key == "exception":
                if len(value) > MAX_LOG_TRACE:
                    event[key] = _cut(value, _TRACE_HEAD, MAX_LOG_TRACE - _TRACE_HEAD)
            else:
                event[key] = _cut(value, MAX_LOG_VALUE)
    return event


_json = structlog.processors.JSONRenderer()


def _render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str | bytes:
    line = _json(logger, method, event)
    if len(line) <= MAX_LOG_LINE:
        return line
    # Escapes can make a short text long (ensure_ascii writes a non-ASCII character as six), hence the
    # last resort: the event and where it happened.
    for kept in (_IDENTIFYING, _IDENTIFYING[:4]):
        short: dict[str, Any] = {key: event[key] for key in kept if key in event}
        for key, value in short.items():
            if type(value) is str and len(value) > _IDENTIFYING_VALUE:
                short[key] = _cut(value, _IDENTIFYING_VALUE)
        short["line_cut"] = len(line)  # the length the whole line would have had
        shortened = _json(logger, method, short)
        if len(shortened) <= MAX_LOG_LINE:
            break
    return shortened


_STDOUT = _Stdout()
_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _add_pid,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
_RENDER: list[Processor] = [structlog.processors.format_exc_info, _bound_values, _render]


def get_logger() -> Any:
    """The gateway's logger, for modules that may log before a server configures logging (the supervisor,
    migrations): importing this module sets the default they then log with."""
    return structlog.get_logger("gateway")


def _level(name: str) -> int:
    numeric = logging.getLevelName(name.upper())
    return numeric if isinstance(numeric, int) else logging.INFO


def _configure_structlog(level: int, cache: bool) -> None:
    structlog.configure(
        processors=[*_SHARED, *_RENDER],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write() per line: several workers share stdout, and lines must not interleave.
        logger_factory=structlog.WriteLoggerFactory(file=_STDOUT),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )


def configure_logging(level: str = "INFO") -> None:
    numeric = _level(level)
    _configure_structlog(numeric, cache=True)
    handler = logging.StreamHandler(_STDOUT)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_RENDER],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # httpx (the webhook deliveries, the client behind push and pull) logs every request at INFO: a line per
    # delivery says nothing the deliveries' own lines and metrics do not, so only its warnings are kept.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


# Until a process configures logging for serving, it logs warnings and errors only, still as JSON: the
# administrative commands print their results for people, and info lines would come between them. Loggers
# are not cached under this default, so that one used early still follows configure_logging later. Only
# structlog is set here; the standard library's root logger is a process's own business until it serves.
if not structlog.is_configured():
    _configure_structlog(logging.WARNING, cache=False)
