"""`gateway webhook ...`: subscriptions, deliveries and the worker, from the command line (gateway/webhooks.py)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from . import webhooks
from .cli import CliError, _registry, _table, _with_db
from .config import Settings
from .db import QUERIES
from .errors import GatewayError


async def _tenant_id(conn: asyncpg.Connection, code: str) -> int:
    row = await conn.fetchrow(QUERIES["tenant_by_code"], code)
    if row is None:
        raise CliError(f"no tenant {code!r}")
    return int(row["id"])


def _run(settings: Settings, work: Any) -> Any:
    try:
        return asyncio.run(_with_db(settings, work))
    except GatewayError as exc:  # a refused URL, an unknown subscription: the same message the API gives
        raise CliError(exc.message) from None


def cmd_add(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[int, str]:
        tenant_id = await _tenant_id(conn, args.tenant)
        return await webhooks.add(conn, _registry(), settings, tenant_id, args.url, args.forms)

    sub_id, secret = _run(settings, work)
    print(f"subscription {sub_id} created for tenant {args.tenant!r}: {args.url}")
    print(f"signing secret (shown only once): {secret}")


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        tenant_id = None if args.tenant is None else await _tenant_id(conn, args.tenant)
        return await webhooks.subscriptions(conn, tenant_id)

    rows = _run(settings, work)
    print(_table(["ID", "TENANT", "URL", "FORMS", "ACTIVE", "PENDING", "DEAD"],
                 [(r["id"], r["tenant"], r["url"], ",".join(r["forms"]), "yes" if r["active"] else "no",
                   r["pending"], r["dead"]) for r in rows]))


def cmd_remove(args: argparse.Namespace, settings: Settings) -> None:
    _run(settings, lambda conn: webhooks.remove(conn, args.id, None))
    print(f"subscription {args.id} removed, with its deliveries")


def _set_active(active: bool) -> Any:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        _run(settings, lambda conn: webhooks.set_active(conn, args.id, None, active))
        print(f"subscription {args.id} " + ("resumed: it carries on from where it stopped" if active else
                                            "paused: its changes wait until it is resumed"))

    return command


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> None:
    secret = _run(settings, lambda conn: webhooks.rotate(conn, settings, args.id, None))
    hours = settings.webhook_secret_grace_seconds / 3600
    print(f"new signing secret of subscription {args.id} (shown only once): {secret}")
    print(f"the previous secret still signs for {hours:g} hours: deliveries carry both signatures until then")


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        tenant_id = None if args.tenant is None else await _tenant_id(conn, args.tenant)
        return await webhooks.deliveries(conn, tenant_id, args.dead, args.limit)

    rows = _run(settings, work)
    print(_table(["ID", "SUB", "TENANT", "STATUS", "CHANGES", "ATTEMPTS", "LAST STATUS", "CREATED", "LAST ERROR"],
                 [(r["id"], r["subscription"], r["tenant"], r["status"], r["changes"], r["attempts"],
                   r["last_status"], r["created"], r["last_error"]) for r in rows]))


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    _run(settings, lambda conn: webhooks.replay(conn, args.id, None))
    print(f"delivery {args.id} queued again (same webhook-id); a running worker sends it")


def cmd_test(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[tuple[int, webhooks.Attempt]]:
        if args.target.isdigit():
            ids = [int(args.target)]
        else:
            ids = [r["id"] for r in await webhooks.subscriptions(conn, await _tenant_id(conn, args.target))]
            if not ids:
                raise CliError(f"tenant {args.target!r} has no webhook subscription")
        return [(sub_id, await webhooks.test(conn, settings, sub_id, None)) for sub_id in ids]

    failed = False
    for sub_id, attempt in _run(settings, work):
        status = "no answer" if attempt.status is None else f"HTTP {attempt.status}"
        print(f"subscription {sub_id}: {status}" + ("" if attempt.ok else f" ({attempt.error})"))
        failed = failed or not attempt.ok
    if failed:
        raise CliError("the test event was not accepted")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from .logging import configure_logging
    from .webhook_worker import run

    configure_logging(settings.log_level)
    asyncio.run(_with_db(settings, lambda conn: asyncio.sleep(0)))  # migrated before it starts
    asyncio.run(run(settings, install_signal_handlers=True))


def add_commands(sub: Any) -> None:
    hook = sub.add_parser("webhook", help="webhook subscriptions and deliveries").add_subparsers(
        dest="action", required=True)
    add = hook.add_parser("add", help="subscribe a URL to a tenant's changes; prints the signing secret once")
    add.add_argument("tenant")
    add.add_argument("url")
    add.add_argument("--forms", default=webhooks.ALL_FORMS,
                     help="comma-separated form names (setCustomer,setSalesInvoice); default '*': every form")
    add.set_defaults(func=cmd_add)
    lst = hook.add_parser("list", help="list the subscriptions")
    lst.add_argument("--tenant")
    lst.set_defaults(func=cmd_list)
    rm = hook.add_parser("remove", help="remove a subscription and its deliveries")
    rm.add_argument("id", type=int)
    rm.set_defaults(func=cmd_remove)
    for name, active in (("pause", False), ("resume", True)):
        toggle = hook.add_parser(name, help=f"{name} a subscription (paused, its changes wait for it)")
        toggle.add_argument("id", type=int)
        toggle.set_defaults(func=_set_active(active))
    rot = hook.add_parser("rotate-secret", help="a new signing secret; the old one signs too for a while")
    rot.add_argument("id", type=int)
    rot.set_defaults(func=cmd_rotate)
    dl = hook.add_parser("deliveries", help="list the latest deliveries")
    dl.add_argument("--tenant")
    dl.add_argument("--dead", action="store_true", help="only those given up (dead letters)")
    dl.add_argument("--limit", type=int, default=50)
    dl.set_defaults(func=cmd_deliveries)
    rp = hook.add_parser("replay", help="send a delivery again (a dead one, say), with the same webhook-id")
    rp.add_argument("id")
    rp.set_defaults(func=cmd_replay)
    tst = hook.add_parser("test", help="send a signed test event now and print the receiver's answer")
    tst.add_argument("target", metavar="TENANT|SUB_ID")
    tst.set_defaults(func=cmd_test)
    hook.add_parser("worker", help="run the delivery worker (gateway serve runs one too)").set_defaults(
        func=cmd_worker)
