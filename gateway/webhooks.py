"""Webhooks: per-tenant subscriptions, signed deliveries, and what the CLI and the admin API do with them.

The outbox is the change feed itself. Every write logs its changed keys in `change_log` in the same
transaction as the change (gateway/feed.py), so nothing more is written on the write path: a subscription
keeps its position in that feed per form, and the dispatcher (gateway/webhook_worker.py) reads past it, below
the tenant's feed cutoff, as a GetData `since` pull does, and turns what it finds into deliveries. Like such a
pull, a delivery carries each record at its current state (or its deletion), once per change that left it so:
a record changed twice before the dispatcher looked comes once, as it now is.

Deliveries are signed as Standard Webhooks does (https://www.standardwebhooks.com): headers `webhook-id` (the
delivery's id, the same on every retry), `webhook-timestamp` (Unix seconds of the attempt) and
`webhook-signature`, one `v1,<base64 HMAC-SHA256>` per secret in force over `{id}.{timestamp}.{body}`.
Receivers are refused on loopback, private, link-local and other non-global addresses unless the settings
allow them, when subscribing and again at every attempt, which connects to the address it checked.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from . import audit
from .config import Settings
from .db import QUERIES
from .errors import BadRequest, NotFound
from .forms import Form, Registry
from .metrics import SCRAPE_QUERY_TIMEOUT, Counter, GaugeMetricFamily, Metric, at_scrape
from .responses import encode, utc_iso

SECRET_PREFIX = "whsec_"
ALL_FORMS = "*"
USER_AGENT = "erp-sync-gateway-webhooks"
MAX_URL = 2000

FAILURES = Counter("gateway_webhook_failures_total",
                   "Webhook delivery attempts that failed, by outcome: retry (to be tried again) or dead",
                   ["outcome"])


@at_scrape
async def outbox_lag(conn: asyncpg.Connection) -> list[Metric]:
    lag = await conn.fetchval(QUERIES["webhook_outbox_lag"], timeout=SCRAPE_QUERY_TIMEOUT)
    return [GaugeMetricFamily("gateway_webhook_outbox_lag_seconds",
                              "Age of the oldest webhook delivery not yet through (0: none)", value=lag)]


class WebhookError(BadRequest):
    """A subscription request that cannot be served (bad URL, refused address, unknown form)."""


# --- signing ------------------------------------------------------------------------------------------------

def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature: HMAC-SHA256, keyed by the secret's bytes, over `{id}.{timestamp}.{body}`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def secrets_in_force(stored: Sequence[dict[str, Any]], now: float) -> list[str]:
    return [s["secret"] for s in stored if s.get("expires") is None or s["expires"] > now]


def rotated(stored: Sequence[dict[str, Any]], new: str, now: float, grace: float) -> list[dict[str, Any]]:
    """A new current secret; the ones still in force keep signing for `grace` seconds (or less, as before)."""
    kept = [{"secret": s["secret"], "expires": now + grace if s.get("expires") is None else s["expires"]}
            for s in stored if s.get("expires") is None or s["expires"] > now]
    return [{"secret": new, "expires": None}, *kept]


def headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }


def new_delivery_id() -> str:
    return "msg_" + uuid.uuid4().hex


def event_body(kind: str, tenant: str, subscription_id: int, changes: list[dict[str, Any]]) -> bytes:
    return encode({"type": kind, "timestamp": utc_iso(dt.datetime.now(dt.UTC)), "tenant": tenant,
                   "subscription": subscription_id, "data": {"changes": changes}})


# --- where a receiver may be --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A receiver's URL and the address to connect to, checked."""

    url: str
    host: str
    address: str


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # is_global leaves out loopback, RFC 1918, ULA, link-local, unspecified, shared (100.64/10), documentation
    # and reserved ranges; some multicast ranges count as global, and are no receiver either.
    return ip.is_global and not ip.is_multicast


def parse_url(url: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of a receiver's URL: http or https, a host, no credentials."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise WebhookError("Field 'url' must be an http or https URL", field="url")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise WebhookError("Field 'url' has a bad port", field="url") from None
    if scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("Field 'url' must be an http or https URL", field="url")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("Field 'url' must not hold credentials; the signature authenticates the sender",
                           field="url")
    return scheme, parts.hostname, port


async def resolve(url: str, allow_private: bool) -> Target:
    """The address to send to: the host's first address, each of which must be public unless allowed."""
    _, host, port = parse_url(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise WebhookError(f"Host '{host}' of the URL cannot be resolved", field="url") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not allow_private:
        refused = next((ip for ip in addresses if not _public(ip)), None)
        if refused is not None:
            raise WebhookError(f"The URL's host resolves to {refused}, a loopback, private, link-local or other "
                               "non-public address; set GATEWAY_WEBHOOK_ALLOW_PRIVATE=1 to allow such receivers",
                               field="url")
    return Target(url=url, host=host, address=str(addresses[0]))


def _pinned(target: Target) -> str:
    """The URL with its host replaced by the address checked, so that the connection goes where was checked
    (a name that resolves elsewhere a moment later is not followed)."""
    parts = urlsplit(target.url)
    literal = f"[{target.address}]" if ":" in target.address else target.address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


@dataclass(frozen=True)
class Attempt:
    status: int | None  # the receiver's HTTP status; None when it answered nothing
    error: str | None  # why it failed; None on a 2xx

    @property
    def ok(self) -> bool:
        return self.error is None


async def send(client: httpx.AsyncClient, url: str, secrets_: Sequence[str], msg_id: str, body: bytes,
               settings: Settings) -> Attempt:
    """One attempt: a 2xx succeeds; any other status, a timeout or a refused address fails."""
    try:
        target = await resolve(url, settings.webhook_allow_private)
    except WebhookError as exc:
        return Attempt(None, exc.message)
    sent = headers(secrets_, msg_id, int(time.time()), body)
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    try:
        # Streamed, and closed without reading the answer's body: only its status counts, and a receiver
        # answering without end holds nothing here.
        async with client.stream("POST", _pinned(target), content=body, headers={**sent, "host": netloc},
                                 extensions={"sni_hostname": target.host},
                                 timeout=settings.webhook_timeout_seconds) as response:
            status = response.status_code
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500])
    return Attempt(status, None if 200 <= status < 300 else f"HTTP {status}")


def http_client() -> httpx.AsyncClient:
    # Redirects are not followed: a receiver could send the delivery (and its signature) anywhere, a private
    # address too.
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


# --- subscriptions ------------------------------------------------------------------------------------------

def feed_forms(registry: Registry) -> dict[str, Form]:
    """The forms a subscription may name (those written through SyncData or SyncVoucher), by lower-case name."""
    return {name.lower(): form for form in registry.forms for name in form.sync_names()}


def canonical_forms(registry: Registry, names: Any) -> list[str]:
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise WebhookError("Field 'forms' must list form names (setCustomer, ...), or '*' for every form",
                           field="forms")
    if ALL_FORMS in names:
        return [ALL_FORMS]
    known = feed_forms(registry)
    out: list[str] = []
    for name in names:
        form = known.get(name.lower())
        if form is None:
            raise WebhookError(f"Form '{name[:64]}' is not a form that can be subscribed to", field="forms")
        if form.name not in out:
            out.append(form.name)
    return out


async def feed_start(conn: asyncpg.Connection, tenant_id: int) -> str:
    """The position where a new subscription starts: past everything already committed, before everything
    still in flight (the tenant's feed cutoff)."""
    cutoff = await conn.fetchval(QUERIES["feed_cutoff"], tenant_id)
    return f"{cutoff}.0.0"


# Every change below is recorded in the audit log (audit.WEBHOOK_CHANGED) in its own transaction, with `actor`:
# the admin user who made it through POST /api/webhooks, or None for the CLI. The secrets never are.

async def add(conn: asyncpg.Connection, registry: Registry, settings: Settings, tenant_id: int, url: Any,
              forms: Any, actor: str | None = None) -> tuple[int, str]:
    """A new subscription of the tenant; its id and its secret, which is shown this once."""
    await resolve(url, settings.webhook_allow_private)
    names = canonical_forms(registry, forms)
    secret = new_secret()
    async with conn.transaction():
        start = await feed_start(conn, tenant_id)
        sub_id = await conn.fetchval(QUERIES["webhook_add"], tenant_id, url, names,
                                     [{"secret": secret, "expires": None}])
        await conn.execute(QUERIES["webhook_set_positions"], sub_id, {ALL_FORMS: start})
        await audit.config_event(conn, audit.WEBHOOK_CHANGED, tenant_id,
                                 f"added subscription {sub_id}: {url} ({', '.join(names)})", actor)
    return sub_id, secret


async def rotate(conn: asyncpg.Connection, settings: Settings, sub_id: int, tenant_id: int | None,
                 actor: str | None = None) -> str:
    """A new secret for the subscription; the previous ones keep signing for the grace period."""
    secret = new_secret()
    async with conn.transaction():
        stored = await conn.fetchrow(QUERIES["webhook_lock_secrets"], sub_id, tenant_id)
        if stored is None:
            raise NotFound(f"No webhook subscription {sub_id}")
        await conn.execute(QUERIES["webhook_set_secrets"], sub_id,
                           rotated(stored["secrets"], secret, time.time(), settings.webhook_secret_grace_seconds))
        await audit.config_event(conn, audit.WEBHOOK_CHANGED, stored["tenant_id"],
                                 f"rotated the secret of subscription {sub_id}", actor)
    return secret


async def remove(conn: asyncpg.Connection, sub_id: int, tenant_id: int | None, actor: str | None = None) -> None:
    async with conn.transaction():
        owner = await conn.fetchval(QUERIES["webhook_remove"], sub_id, tenant_id)
        if owner is None:
            raise NotFound(f"No webhook subscription {sub_id}")
        await audit.config_event(conn, audit.WEBHOOK_CHANGED, owner, f"removed subscription {sub_id}", actor)


async def set_active(conn: asyncpg.Connection, sub_id: int, tenant_id: int | None, active: bool,
                     actor: str | None = None) -> None:
    async with conn.transaction():
        owner = await conn.fetchval(QUERIES["webhook_set_active"], sub_id, tenant_id, active)
        if owner is None:
            raise NotFound(f"No webhook subscription {sub_id}")
        await audit.config_event(conn, audit.WEBHOOK_CHANGED, owner,
                                 f"{'resumed' if active else 'paused'} subscription {sub_id}", actor)


async def subscriptions(conn: asyncpg.Connection, tenant_id: int | None) -> list[dict[str, Any]]:
    return [{"id": r["id"], "tenant": r["tenant"], "url": r["url"], "forms": list(r["forms"]),
             "active": r["active"], "created": utc_iso(r["created_at"]), "pending": r["pending"], "dead": r["dead"]}
            for r in await conn.fetch(QUERIES["webhook_list"], tenant_id)]


async def deliveries(conn: asyncpg.Connection, tenant_id: int | None, dead_only: bool,
                     limit: int = 100) -> list[dict[str, Any]]:
    return [{"id": r["id"], "subscription": r["subscription_id"], "tenant": r["tenant"], "status": r["status"],
             "changes": r["changes"], "attempts": r["attempts"], "last_status": r["last_status"],
             "last_error": r["last_error"], "created": utc_iso(r["created_at"]),
             "last_attempt": None if r["last_attempt_at"] is None else utc_iso(r["last_attempt_at"])}
            for r in await conn.fetch(QUERIES["webhook_deliveries"], tenant_id, dead_only, limit)]


async def replay(conn: asyncpg.Connection, delivery_id: str, tenant_id: int | None,
                 actor: str | None = None) -> None:
    """Sends a delivery again from its first attempt, with the same id and body (the dispatcher queues it)."""
    async with conn.transaction():
        owner = await conn.fetchval(QUERIES["webhook_replay"], delivery_id, tenant_id)
        if owner is not None:
            await audit.config_event(conn, audit.WEBHOOK_CHANGED, owner, f"replayed delivery {delivery_id}", actor)
            return
    status = await conn.fetchval(QUERIES["webhook_delivery_status"], delivery_id, tenant_id)
    if status is None:
        raise NotFound(f"No webhook delivery {delivery_id[:64]}")
    raise WebhookError(f"Delivery {delivery_id} is still pending: it is being sent", field="id")


async def test(conn: asyncpg.Connection, settings: Settings, sub_id: int, tenant_id: int | None) -> Attempt:
    """Sends a signed `webhook.test` event to the subscription now, outside the queue, and says how it went."""
    row = await conn.fetchrow(QUERIES["webhook_get"], sub_id, tenant_id)
    if row is None:
        raise NotFound(f"No webhook subscription {sub_id}")
    body = event_body("webhook.test", row["tenant"], sub_id, [])
    async with http_client() as client:
        return await send(client, row["url"], secrets_in_force(row["secrets"], time.time()), new_delivery_id(),
                          body, settings)


async def subscription_ids(conn: asyncpg.Connection, tenant_id: int) -> list[int]:
    return [r["id"] for r in await conn.fetch(QUERIES["webhook_list"], tenant_id)]


# --- the admin API: POST /api/webhooks --------------------------------------------------------------------

def _id(body: dict[str, Any]) -> int:
    value = body.get("id")
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookError("Field 'id' must be a subscription id (an integer)", field="id")
    return value


async def api_action(conn: asyncpg.Connection, registry: Registry, settings: Settings, tenant_id: int,
                     body: dict[str, Any], actor: str) -> dict[str, Any]:
    """One action of the tenant's administrator `actor` on the tenant's webhooks; the answer's fields."""
    body = {k.lower(): v for k, v in body.items()}
    action = body.get("action")
    if action == "list":
        return {"data": await subscriptions(conn, tenant_id)}
    if action == "add":
        sub_id, secret = await add(conn, registry, settings, tenant_id, body.get("url"),
                                   body.get("forms", [ALL_FORMS]), actor)
        return {"id": sub_id, "secret": secret}
    if action == "remove":
        await remove(conn, _id(body), tenant_id, actor)
        return {"id": body["id"]}
    if action in ("pause", "resume"):
        await set_active(conn, _id(body), tenant_id, action == "resume", actor)
        return {"id": body["id"], "active": action == "resume"}
    if action == "rotate":
        return {"id": body["id"], "secret": await rotate(conn, settings, _id(body), tenant_id, actor)}
    if action == "deliveries":
        return {"data": await deliveries(conn, tenant_id, body.get("dead") is True)}
    if action == "replay":
        if not isinstance(body.get("id"), str):
            raise WebhookError("Field 'id' must be a delivery id (msg_...)", field="id")
        await replay(conn, body["id"], tenant_id, actor)
        return {"id": body["id"]}
    if action == "test":
        attempt = await test(conn, settings, _id(body), tenant_id)
        return {"id": body["id"], "delivered": attempt.ok, "status": attempt.status, "error": attempt.error}
    raise WebhookError("Field 'action' must be one of: list, add, remove, pause, resume, rotate, deliveries, "
                       "replay, test", field="action")
