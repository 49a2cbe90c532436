"""The webhook worker: a dispatcher that turns the change feed into deliveries, and procrastinate's worker
that sends them.

The dispatcher, every GATEWAY_WEBHOOK_POLL seconds, reads each active subscription's forms past its positions
in the change feed (change_log, the outbox: gateway/webhooks.py), below the tenant's feed cutoff, up to
BATCH changes per delivery, and records the delivery and the new positions in one transaction. It then queues
a procrastinate job for each delivery without one (new and replayed ones), in the transaction that marks them
queued. A subscription's jobs share one lock, so procrastinate runs them one at a time, in the order they
were queued, a job waiting for its retry holding back the later ones: a later change of a record never
arrives before an earlier one.

A failed attempt is retried after an exponential delay with jitter (GATEWAY_WEBHOOK_RETRY_*) until the retry
window, three days by default, has passed since the first attempt; the delivery is then dead: listed by
`gateway webhook deliveries --dead` and the admin API, sent again by a replay.

The worker works across tenants, on the database URL `gateway migrate` uses. Several workers may run (each
`gateway serve`, `gateway webhook worker`): subscriptions are claimed with SKIP LOCKED and jobs by
procrastinate, so each change is delivered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import asyncpg
import procrastinate
from procrastinate.jobs import Job
from procrastinate.manager import JobManager
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from . import webhooks
from .config import Settings
from .db import QUERIES, SERVER_SETTINGS, init_connection, owner_url
from .feed import Cursors
from .forms import Form, Registry
from .logging import get_logger

log = get_logger()

QUEUE = "webhooks"
TASK = "webhooks.deliver"
BATCH = 100  # changes per delivery at most
CATCH_UP_ROUNDS = 50  # deliveries made for one subscription per dispatch at most, before the next one's turn
CONCURRENCY = 4  # deliveries sent at once, of different subscriptions
# How often jobs left running by a worker that died (no heartbeat for 30 s) are put back in the queue: until
# then such a job holds its subscription's lock, and the subscription's later deliveries wait.
STALLED_CHECK_SECONDS = 30.0
ORPHAN_CHECK_SECONDS = 1.0  # how soon the worker of `gateway serve` notices its supervisor is gone
RESTART_SECONDS = 5.0  # the pause before the worker of `gateway serve` starts again after a failure


# --- the queue's schema -------------------------------------------------------------------------------------

async def ensure_queue_schema(conn: asyncpg.Connection) -> bool:
    """Applies procrastinate's schema unless the database has it; True when applied. Called by `migrate`,
    under its lock. The version range pinned in pyproject.toml keeps the schema the one the library expects."""
    if await conn.fetchval("SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
        return False
    schema = resources.files("procrastinate.sql").joinpath("schema.sql").read_text()
    async with conn.transaction():
        await conn.execute(schema)
        await conn.execute(QUERIES["webhook_queue_private"])
    log.info("migration_applied", migration="procrastinate schema")
    return True


# --- retries ------------------------------------------------------------------------------------------------

class RetryLater(Exception):
    def __init__(self, delay: float, error: str) -> None:
        super().__init__(error)
        self.delay = delay


def backoff(settings: Settings, failures: int) -> float:
    """The wait after the `failures`-th failure in a row: base x 2^(failures-1), capped, with jitter (between
    half and all of it) so that receivers coming back are not met by every sender at once."""
    delay = min(settings.webhook_retry_base_seconds * 2 ** min(failures - 1, 60),
                settings.webhook_retry_max_delay_seconds)
    return delay * random.uniform(0.5, 1.0)


class _Retry(BaseRetryStrategy):
    """A failed attempt says when to try again (RetryLater); anything else (the database gone, say) is tried
    again after the base delay, never dead-lettered: the delivery was not refused by its receiver."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        delay = exception.delay if isinstance(exception, RetryLater) else backoff(self._settings, job.attempts + 1)
        return RetryDecision(retry_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))


# --- dispatch and delivery ----------------------------------------------------------------------------------

@dataclass
class Runtime:
    pool: asyncpg.Pool
    settings: Settings
    registry: Registry
    jobs: JobManager

    def __post_init__(self) -> None:
        self.forms = webhooks.feed_forms(self.registry)
        # Positions are kept in the plain form a `since` accepts; the cursors a pull hands out are sealed
        # under this key only to be opened again here.
        self.cursors = Cursors("webhook feed positions")

    async def dispatch(self) -> int:
        """One round over the active subscriptions, then the queueing of what is to be sent; the number of
        deliveries made."""
        made = 0
        async with self.pool.acquire() as conn:
            for row in await conn.fetch(QUERIES["webhook_active_ids"]):
                try:
                    made += await self._catch_up(conn, row["id"])
                except Exception:  # one subscription's trouble holds back no other's; it is tried next round
                    if conn.is_closed():  # the database's trouble: the round ends
                        raise
                    log.exception("webhook_dispatch_failed", subscription=row["id"])
            await conn.execute(QUERIES["webhook_queue"], QUEUE, TASK)
        return made

    async def _catch_up(self, conn: asyncpg.Connection, sub_id: int) -> int:
        made = 0
        for _ in range(CATCH_UP_ROUNDS):
            delivered, more = await self._dispatch_one(conn, sub_id)
            made += delivered
            if not more:
                break
        return made

    def _names(self, forms: list[str]) -> list[str]:
        if webhooks.ALL_FORMS in forms:
            return sorted({form.name for form in self.forms.values()})
        return [name for name in forms if name.lower() in self.forms]

    async def _dispatch_one(self, conn: asyncpg.Connection, sub_id: int) -> tuple[int, bool]:
        """The next delivery of one subscription, if its forms changed: (deliveries made, more to read)."""
        async with conn.transaction():
            sub = await conn.fetchrow(QUERIES["webhook_claim"], sub_id)
            if sub is None:  # removed, paused, or another worker's now
                return 0, False
            tenant_id, positions = sub["tenant_id"], dict(sub["positions"])
            start = positions.get(webhooks.ALL_FORMS, "0.0.0")
            names = self._names(list(sub["forms"]))
            changed = await conn.fetch(QUERIES["webhook_changed_forms"], tenant_id,
                                       [self.forms[n.lower()].feed_name for n in names],  # type: ignore[attr-defined]
                                       [positions.get(n, start) for n in names])
            changed_feeds = {r["tbl"] for r in changed}
            changes: list[dict[str, Any]] = []
            more = False
            for name in names:
                form = self.forms[name.lower()]
                if form.feed_name not in changed_feeds:  # type: ignore[attr-defined]
                    continue
                room = BATCH - len(changes)
                if room <= 0:
                    more = True
                    break
                out = await form.pull(conn, tenant_id, {"since": positions.get(name, start), "limit": room},
                                      cursors=self.cursors)
                changes += [_change(form, item) for item in out["data"]]
                xid, log_id, place = self.cursors.position(tenant_id, out["next_since"])
                positions[name] = f"{xid}.{log_id}.{place}"
                more = more or out["more"]
            if changes:
                body = webhooks.event_body("records.changed", sub["tenant"], sub_id, changes)
                await conn.execute(QUERIES["webhook_delivery_add"], webhooks.new_delivery_id(), tenant_id, sub_id,
                                   body.decode(), len(changes))
            if positions != sub["positions"]:
                await conn.execute(QUERIES["webhook_set_positions"], sub_id, positions)
        return (1 if changes else 0), more

    async def deliver(self, delivery_id: str) -> None:
        """One attempt at a delivery; raises RetryLater when it is to be tried again."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(QUERIES["webhook_delivery_for_send"], delivery_id)
            if row is None or row["status"] != "pending":  # removed with its subscription, or replayed twice
                return
            if not row["active"]:
                await conn.execute(QUERIES["webhook_unqueue"], delivery_id)
                return
            now = time.time()
            async with webhooks.http_client() as client:
                attempt = await webhooks.send(client, row["url"], webhooks.secrets_in_force(row["secrets"], now),
                                              row["id"], row["body"].encode(), self.settings)
            if attempt.ok:
                await conn.execute(QUERIES["webhook_attempted"], delivery_id, "delivered", attempt.status, None)
                return
            first = row["first_attempt_at"].timestamp() if row["first_attempt_at"] else now
            delay = backoff(self.settings, row["attempts"] + 1)
            if time.time() + delay - first > self.settings.webhook_retry_window_seconds:
                await conn.execute(QUERIES["webhook_attempted"], delivery_id, "dead", attempt.status, attempt.error)
                webhooks.FAILURES.labels("dead").inc()
                log.warning("webhook_dead", delivery=delivery_id, attempts=row["attempts"] + 1, error=attempt.error)
                return
            await conn.execute(QUERIES["webhook_attempted"], delivery_id, "pending", attempt.status, attempt.error)
        webhooks.FAILURES.labels("retry").inc()
        log.info("webhook_retry", delivery=delivery_id, attempts=row["attempts"] + 1, retry_in=round(delay, 3),
                 error=attempt.error)
        raise RetryLater(delay, attempt.error or "failed")

    async def requeue_stalled(self) -> int:
        """Puts back in the queue the jobs a worker that died left running; they keep their place."""
        stalled = list(await self.jobs.get_stalled_jobs(queue=QUEUE))
        for job in stalled:
            log.warning("webhook_job_stalled", job=job.id, args=job.task_kwargs)
            await self.jobs.retry_job(job)
        return len(stalled)

    async def dispatch_forever(self) -> None:
        checked = 0.0
        while True:
            try:
                await self.dispatch()
                if time.monotonic() - checked > STALLED_CHECK_SECONDS:
                    checked = time.monotonic()
                    await self.requeue_stalled()
            except Exception:  # the database away, say: logged, and tried again next round
                log.exception("webhook_dispatch_failed")
            await asyncio.sleep(self.settings.webhook_poll_seconds)


def _change(form: Form, item: dict[str, Any]) -> dict[str, Any]:
    """A record as a pull since a position gives it, as a change: its form, action and key, and its data."""
    deleted = item.pop("Deleted")
    key = {name: item[name] for name in form.key}  # type: ignore[attr-defined]
    return {"form": form.name, "action": "delete" if deleted else "upsert", "key": key,
            "data": None if deleted else item}


async def _deliver(context: procrastinate.JobContext, delivery_id: str) -> None:
    runtime: Runtime = context.additional_context["webhooks"]
    await runtime.deliver(delivery_id)


# --- running it ---------------------------------------------------------------------------------------------

def _registry() -> Registry:
    from forms import FORM_MODULES

    from .forms import build_registry

    return build_registry(FORM_MODULES)


@contextlib.asynccontextmanager
async def opened(settings: Settings, registry: Registry | None = None) -> AsyncIterator[tuple[procrastinate.App,
                                                                                               Runtime]]:
    """The job queue's app and the dispatcher's runtime, connected (as the owner) until the block ends."""
    url = worker_url(settings)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name=TASK, queue=QUEUE, pass_context=True, retry=_Retry(settings))(_deliver)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=CONCURRENCY + 1, init=init_connection,
                                     server_settings=SERVER_SETTINGS)
    try:
        async with app.open_async():
            yield app, Runtime(pool, settings, registry or _registry(), app.job_manager)
    finally:
        await pool.close()


async def run(settings: Settings, registry: Registry | None = None, *, install_signal_handlers: bool = False) -> None:
    """Dispatches and delivers until cancelled (or, with signal handlers, until SIGINT or SIGTERM)."""
    async with opened(settings, registry) as (app, runtime):
        dispatcher = asyncio.create_task(runtime.dispatch_forever())
        try:
            await app.run_worker_async(
                queues=[QUEUE], name="webhooks", concurrency=CONCURRENCY, wait=True,
                fetch_job_polling_interval=settings.webhook_poll_seconds,
                install_signal_handlers=install_signal_handlers, delete_jobs="successful",
                additional_context={"webhooks": runtime},
            )
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher


def worker_url(settings: Settings) -> str:
    """The worker reads every tenant's feed and deliveries: it connects as `gateway migrate` does, as the
    tables' owner (row security holds the API's connections to one tenant each)."""
    return owner_url(settings)


def main(owner: str, supervisor: int) -> None:
    """The worker as a process of `gateway serve` (the process `supervisor`), beside the web workers, given the
    owner's URL (which the web workers' environment does not hold). It stops on SIGTERM, and by itself once
    the supervisor is gone (perhaps before this process got this far)."""
    from .logging import configure_logging

    settings = replace(Settings.from_env(), owner_url=owner)
    configure_logging(settings.log_level)
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(_companion(settings, supervisor))


async def _companion(settings: Settings, parent: int) -> None:
    watch = asyncio.create_task(_stop_when_orphaned(parent, asyncio.current_task()))
    try:
        while True:
            try:
                return await run(settings, install_signal_handlers=True)
            except Exception:  # the database unreachable at start, say: started again, as the web workers are
                log.exception("webhook_worker_failed", restart_in=RESTART_SECONDS)
                await asyncio.sleep(RESTART_SECONDS)
    finally:
        watch.cancel()


async def _stop_when_orphaned(parent: int, worker: asyncio.Task[Any] | None) -> None:
    """A supervisor killed, or ended by a signal it raises again (uvicorn does, serving alone), cannot stop its
    worker: the worker stops itself, as a cancelled worker does (the deliveries in hand finish first)."""
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    log.warning("webhook_worker_orphaned", supervisor=parent)
    if worker is not None:
        worker.cancel()
