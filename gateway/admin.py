"""The admin page: GET /admin, a static page of the gateway's own, and the JSON it shows, GET /api/admin/overview.

An admin sees their own tenant: its users, its recent write requests with their errors, the latest change of
each of its feeds, its webhook deliveries, and per-minute figures of the last hour. Everything comes from the
tenant's rows (the audit log, not /metrics, which counts every tenant together and starts from zero with each
`gateway serve`), read in one snapshot, each query bounded by an index.

The page is one HTML file with its script and style beside it (gateway/static/): no framework, no build step,
nothing fetched from elsewhere, so that it works offline and under a Content-Security-Policy of 'self' only.
The token is kept in the browser's sessionStorage and sent in the Authorization header, never as a cookie: a
page on another site cannot make the browser send it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import audit, auth, webhooks
from .db import QUERIES
from .responses import success, utc_iso

STATIC_DIR = Path(__file__).parent / "static"

# The page, its script and its style come from the gateway itself; the script reads the API of the same origin.
# No inline script or style, no frames, no plugins; a form may only post here (the login form posts nothing:
# the script sends it).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# The files served, with their types: nothing else under STATIC_DIR is reachable.
PAGE_FILES = {
    "/admin": ("admin.html", "text/html; charset=utf-8"),
    "/admin/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/admin/admin.css": ("admin.css", "text/css; charset=utf-8"),
}

MAX_USERS = 500  # shown; the answer says how many the tenant has
RECENT_REQUESTS = 50
FIGURE_MINUTES = 60
DELIVERY_WINDOW = 1000  # the latest deliveries the counts are taken over
RECENT_DELIVERIES = 50  # listed, newest first


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else utc_iso(value)


async def _tenant(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(QUERIES["admin_tenant"], tenant_id)
    return {"Code": row["code"], "Name": row["name"], "BaseCurrency": row["base_currency"], "Chart": row["chart"],
            "LockedUntil": row["locked_until"].isoformat() if row["locked_until"] else None,
            "NegativeStock": row["negative_stock"], "CreatedAt": _iso(row["created_at"])}


async def _users(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any]:
    rows = await conn.fetch(QUERIES["admin_users"], tenant_id, MAX_USERS)
    total = len(rows) if len(rows) < MAX_USERS else await conn.fetchval(QUERIES["admin_user_count"], tenant_id)
    return {"total": total,
            "data": [{"Username": r["username"], "Role": r["role"], "Disabled": r["disabled"],
                      "CreatedAt": _iso(r["created_at"]), "LastLogin": _iso(r["last_login"])} for r in rows]}


async def _recent_requests(conn: asyncpg.Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's last write requests, as getAuditLog gives them."""
    page = await audit.read_log(conn, tenant_id, {"kind": audit.WRITE, "limit": RECENT_REQUESTS})
    return page["data"]


async def _figures(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any]:
    rows = await conn.fetch(QUERIES["admin_minutes"], tenant_id, FIGURE_MINUTES)
    requests = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    return {
        "minutes": FIGURE_MINUTES,
        "requests": requests,
        "records": sum(r["records"] for r in rows),
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0,
        "per_minute": [{"Minute": utc_iso(r["minute"]), "Requests": r["requests"], "Records": r["records"],
                        "Errors": r["errors"]} for r in rows],
    }


async def _feeds(conn: asyncpg.Connection, tenant_id: int, registry: Any) -> list[dict[str, Any]]:
    """The latest change of each feed the tenant has written, newest first. Times and sizes, not positions:
    a position is a global transaction id (gateway/feed.py hands them out only sealed, and only below the
    tenant's writes still running)."""
    forms = {form.feed_name: form for form in registry.forms if form.sync_names()}
    rows = await conn.fetch(QUERIES["admin_feed_heads"], tenant_id, list(forms))
    return [{"Form": forms[r["tbl"]].name, "GetName": forms[r["tbl"]].get_name, "LastChangeAt": _iso(r["logged_at"]),
             "LastChangeRecords": r["keys"]} for r in rows]


async def _webhooks(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any]:
    """The subscriptions and the latest deliveries as POST /api/webhooks lists them, and the deliveries counted
    by state over the latest DELIVERY_WINDOW (all of them would grow without bound)."""
    counts = await conn.fetchrow(QUERIES["admin_delivery_counts"], tenant_id, DELIVERY_WINDOW)
    return {"window": DELIVERY_WINDOW, "counts": dict(counts),
            "subscriptions": await webhooks.subscriptions(conn, tenant_id),
            "deliveries": await webhooks.deliveries(conn, tenant_id, dead_only=False, limit=RECENT_DELIVERIES)}


async def overview(conn: asyncpg.Connection, tenant_id: int, registry: Any) -> dict[str, Any]:
    """Everything the page shows of one tenant, read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return {
            "tenant": await _tenant(conn, tenant_id),
            "users": await _users(conn, tenant_id),
            "requests": await _recent_requests(conn, tenant_id),
            "figures": await _figures(conn, tenant_id),
            "feeds": await _feeds(conn, tenant_id, registry),
            "webhooks": await _webhooks(conn, tenant_id),
        }


async def overview_endpoint(request: Request) -> Response:
    """GET /api/admin/overview: the admin's tenant; 401 without a valid token, 403 for any role but admin."""
    gw = request.app.state.gateway
    pool = gw.require_pool()
    caller = await auth.admit(gw.tokens, gw.limiter, pool, request.headers)
    async with pool.acquire() as conn:
        principal = await auth.principal_for(conn, caller.claims, caller.tenant_header)
        principal.require_admin("see the admin page")
        return success("SUCCESS", **await overview(conn, principal.tenant_id, gw.registry))


def _page_file(path: str, name: str, media_type: str) -> Route:
    body = (STATIC_DIR / name).read_bytes()  # read once, when the app is built

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers={"Content-Security-Policy": PAGE_CSP})

    return Route(path, serve, methods=["GET"])


def routes() -> list[Route]:
    return [Route("/api/admin/overview", overview_endpoint, methods=["GET"]),
            *(_page_file(path, name, media_type) for path, (name, media_type) in PAGE_FILES.items())]
