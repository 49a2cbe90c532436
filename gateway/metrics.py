"""Prometheus metrics at GET /metrics, summed across the worker processes of `gateway serve`.

prometheus_client's multiprocess mode: every process keeps its samples in memory-mapped files of its own in
the directory PROMETHEUS_MULTIPROC_DIR names (an increment is a write to memory, no system call), and a scrape,
answered by whichever worker the connection lands on, reads every process's files and adds them up. The
supervisor (gateway/server.py) gives each run a new, empty directory, which the workers inherit, and removes
it when it exits; a worker that dies keeps its counts (its files stay), and its live gauges are dropped
(`process_dead`). A process that imports this module with no directory named (the tests, an app run under
uvicorn directly) gets a private one, so the same code path serves one process or many.

Labels are bounded: the endpoint is a route's path (any other path: "other"), the form one of the registry's
canonical names ("unknown" when a form endpoint's request named none that resolved, "none" on endpoints
without forms), the status the HTTP status code. No label names a tenant or a user.

Two ways to add metrics from other modules:
- an event counter (webhook failures, say): a prometheus_client Counter defined at import in the module that
  counts, named `gateway_..._total`; every process's counts are summed at scrape, nothing to register;
- a figure read from the database at scrape time (an outbox's lag, say): a reader registered with
  `at_scrape`, given the scrape's connection, returning metric families; the change feed's are read so.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import asyncpg
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import QUERIES
from .errors import Forbidden

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _new_dir() -> str:
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    atexit.register(shutil.rmtree, path, True)
    return path


# prometheus_client chooses, when it is imported, whether values live in files or in process memory: the
# directory must be named before that import.
if not os.environ.get(MULTIPROC_ENV):
    os.environ[MULTIPROC_ENV] = _new_dir()

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

log = structlog.get_logger("gateway")

# From 1 ms (a point-of-sale write) to 10 s (a large batch or a long pull).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_ENDPOINT = "other"
UNKNOWN_FORM = "unknown"
NO_FORM = "none"
POOL_SAMPLE_SECONDS = 1.0
SCRAPE_QUERY_TIMEOUT = 2.0  # seconds; a scrape reader that takes longer is left out of that scrape

# Every metric is labelled, so that no process writes a sample file before it records something.
REQUESTS = Counter("gateway_requests_total", "HTTP requests answered, by endpoint, form and HTTP status",
                   ("endpoint", "form", "status"))
REQUEST_SECONDS = Histogram("gateway_request_duration_seconds", "Time from a request's arrival to the end of "
                            "its answer", ("endpoint",), buckets=LATENCY_BUCKETS)
RECORDS = Counter("gateway_records_total", "Records of SyncData and SyncVoucher requests by outcome, as their "
                  "answers count them (dry runs left out)", ("form", "outcome"))
# Each worker's own pool, summed over the workers alive.
POOL = Gauge("gateway_db_pool_connections", "Database connections of the workers' pools: in_use, idle, max",
             ("state",), multiprocess_mode="livesum")


@contextlib.contextmanager
def run_dir() -> Iterator[str]:
    """A new, empty directory for one run of `gateway serve`, named in the environment that its workers inherit
    (enter before any starts); removed after the run, and the environment as it was."""
    previous = os.environ.get(MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def process_dead(pid: int) -> None:
    """A worker ended: its live gauges (its pool's connections) stop counting; its counters stay in the sums."""
    multiprocess.mark_process_dead(pid)


# --- requests: one middleware, outside every other, so that it sees each final status -----------------------

class Observe:
    """Counts every HTTP request by endpoint, form and status, and times it."""

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute], forms: Iterable[str],
                 form_paths: Iterable[str]) -> None:
        self.app = app
        paths = [(route.path, route.path_regex) for route in routes if isinstance(route, Route | Mount)]
        self.endpoints = {path.lower(): path for path, _ in paths if "{" not in path}
        self.patterns = [(pattern, path) for path, pattern in paths if "{" in path]  # /api/schemas/{form}
        self.forms = frozenset(forms)
        self.form_paths = frozenset(form_paths)
        # Children by label values: prometheus_client's labels() takes a lock and builds a key on every call.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.observe(scope["path"], status, time.perf_counter() - start)

    def endpoint_of(self, path: str) -> str:
        # Fixed paths match as CanonicalPath matches them: any case, with or without a trailing slash.
        endpoint = self.endpoints.get(path.rstrip("/").lower() if len(path) > 1 else path)
        if endpoint is not None:
            return endpoint
        return next((route for pattern, route in self.patterns if pattern.match(path)), OTHER_ENDPOINT)

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint_of(path)
        form = self.form_of(endpoint)
        key = (endpoint, form, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = REQUESTS.labels(endpoint, form, str(status))
        counter.inc()
        timer = self._timers.get(endpoint)
        if timer is None:
            timer = self._timers[endpoint] = REQUEST_SECONDS.labels(endpoint)
        timer.observe(seconds)

    def form_of(self, endpoint: str) -> str:
        """The form the handler bound to the request's log context, if it is one of the registry's names."""
        if endpoint not in self.form_paths:
            return NO_FORM
        form = structlog.contextvars.get_contextvars().get("form")
        return form if form in self.forms else UNKNOWN_FORM


_record_counters: dict[tuple[str, str], Any] = {}  # bounded: forms x outcomes


def count_records(form: str, result: Any) -> None:
    """The counts of an answer's `result` (inserted, updated, unchanged, deleted, failed, superseded)."""
    if not isinstance(result, dict):
        return
    for outcome, count in result.items():
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            counter = _record_counters.get((form, outcome))
            if counter is None:
                counter = _record_counters[form, outcome] = RECORDS.labels(form, outcome)
            counter.inc(count)


# --- the pool: sampled by each worker, for every worker's figures to be fresh whichever answers a scrape -----

def sample_pool(pool: asyncpg.Pool) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    POOL.labels("in_use").set(size - idle)
    POOL.labels("idle").set(idle)
    POOL.labels("max").set(pool.get_max_size())


async def watch_pool(pool: asyncpg.Pool) -> None:
    """Samples the pool every POOL_SAMPLE_SECONDS until cancelled (with the app's lifespan)."""
    while True:
        sample_pool(pool)
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


# --- figures read from the database at scrape time --------------------------------------------------------

ScrapeReader = Callable[[asyncpg.Connection], Awaitable[Iterable[Metric]]]
_READERS: list[ScrapeReader] = []


def at_scrape(reader: ScrapeReader) -> ScrapeReader:
    """Registers `reader`, run on a pooled connection at every scrape; it returns metric families (e.g.
    prometheus_client.core.GaugeMetricFamily). A reader must be cheap (a bounded, indexed query): a failing or
    slow one is left out of that scrape, logged, and the others still answer."""
    _READERS.append(reader)
    return reader


@at_scrape
async def change_feed(conn: asyncpg.Connection) -> list[Metric]:
    """How far the feed has come, and how long the oldest write still open has held it back: a pull stops
    below the oldest write of its tenant still running (gateway/feed.py), so a change committed after that
    write began waits for it to end before any puller sees it."""
    row = await conn.fetchrow(QUERIES["metrics_change_feed"], timeout=SCRAPE_QUERY_TIMEOUT)
    return [
        GaugeMetricFamily("gateway_change_feed_sequence", "The last change sequence number handed out, of every "
                          "tenant (its rate: changes per second)", value=row["sequence"]),
        GaugeMetricFamily("gateway_change_feed_held_back_seconds", "Age of the oldest write transaction still "
                          "open, which change-feed pulls wait for (0: none open)", value=row["held_back"]),
    ]


class _Families:
    """Families read for one scrape, served to prometheus_client's registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


async def _read_database(pool: asyncpg.Pool | None) -> list[Metric]:
    if pool is None:
        return []
    families: list[Metric] = []
    try:
        async with pool.acquire(timeout=SCRAPE_QUERY_TIMEOUT) as conn:
            for reader in _READERS:
                try:
                    families.extend(await reader(conn))
                except (asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("metrics_reader_failed", reader=reader.__name__, error=type(exc).__name__)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("metrics_database_unavailable", error=type(exc).__name__)
    return families


def render(extra: list[Metric]) -> bytes:
    """Every process's samples, summed, and the families read for this scrape, in Prometheus' text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    registry.register(_Families(extra))
    return generate_latest(registry)


# --- GET /metrics ---------------------------------------------------------------------------------------

def check_scraper(expected: str | None, authorization: str | None) -> None:
    """403 unless the request carries `Authorization: Bearer <GATEWAY_METRICS_TOKEN>`; with no token set,
    every scrape is refused. The answer does not say which it was."""
    scheme, _, presented = (authorization or "").partition(" ")
    if (expected is None or scheme.lower() != "bearer"
            or not hmac.compare_digest(presented.strip().encode(), expected.encode())):
        raise Forbidden("Metrics are served with the bearer token of GATEWAY_METRICS_TOKEN only")


async def scrape(request: Request) -> Response:
    gw = request.app.state.gateway
    check_scraper(gw.settings.metrics_token, request.headers.get("authorization"))
    extra = await _read_database(gw.pool)
    if gw.pool is not None:
        sample_pool(gw.pool)  # after the scrape's own connection is back, and with no await before render
    return Response(render(extra), media_type=CONTENT_TYPE_LATEST)


@contextlib.asynccontextmanager
async def pool_watched(pool: asyncpg.Pool | None) -> AsyncIterator[None]:
    """Samples `pool` for as long as the block runs (the app's lifespan); None (metrics off): nothing."""
    if pool is None:
        yield
        return
    task = asyncio.create_task(watch_pool(pool))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
