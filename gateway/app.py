"""The ASGI application: routes, the lifespan that owns the pool, and the request pipeline.

Each API request reads as stages: check the token -> read the body -> find the form -> validate -> check the
user in the database -> write or query -> respond.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import (
    admin,
    audit,
    auth,
    docs_page,
    feed,
    idempotency,
    keys,
    metrics,
    permissions,
    ratelimit,
    sync,
    tokens,
    webhooks,
)
from .body import check_shape, nul_path, too_deep
from .config import Settings
from .db import QUERIES, create_pool, database_url
from .errors import (
    BadRequest,
    DataStructureError,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    shorten,
)
from .forms import ENDPOINTS, GET_DATA, SYNC_DATA, SYNC_VOUCHER, Registry, build_registry
from .logging import configure_logging
from .responses import SECURITY_HEADERS, render_error, success, utc_iso

log = structlog.get_logger("gateway")

# JSON numbers become Decimal, so amounts never pass through a binary float.
_decoder = msgspec.json.Decoder(float_hook=Decimal)
_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")

# CORS, for the origins of GATEWAY_CORS_ORIGINS only: what a page there may send (the headers the gateway
# reads) and read (the headers it answers with). No credentials: the token travels in the Authorization
# header, never in a cookie.
CORS_METHODS = ("POST", "GET")  # the API; /healthz and /readyz
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "X-Tenant-ID")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "Idempotent-Replayed",
                        "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
CORS_MAX_AGE = 600  # seconds a browser may keep a preflight's answer


async def read_body(request: Request, max_bytes: int) -> bytes:
    # The Content-Type is not checked: integrators' HTTP clients label JSON in many ways; the body decides.
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# Half a UTF-16 pair: a \uD800-\uDBFF escape that no \uDC00-\uDFFF one follows, or one of those that none of
# the first kind precedes (escapes only: an escaped backslash and a "u" are text). msgspec reports some of
# these as "Input data was truncated".
_HIGH, _LOW = rb"\\u[dD][89abAB][0-9a-fA-F]{2}", rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*(" + _HIGH + rb"(?!" + _LOW + rb")|(?<!" + _HIGH + rb")" + _LOW + rb")")


def _json_problem(body: bytes, exc: msgspec.DecodeError) -> str:
    """msgspec's reason, or what is really wrong where its words would mislead."""
    text = str(exc)
    if text == "Input data was truncated" or "surrogate" in text:
        lone = _LONE_SURROGATE.search(body)
        if lone:
            return f"lone surrogate: the escape {lone.group(1).decode()} is half of a UTF-16 pair, without the other"
    if text == "Input data was truncated":
        return "the JSON ends before its last value is complete"
    if text == "Invalid UTF-8 encoded string":
        return "invalid UTF-8: the body must be UTF-8 encoded text"
    return text


def decode_object(body: bytes, max_records: int = Settings.max_records) -> dict[str, Any]:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]  # a UTF-8 byte order mark, which some Windows tools write before the JSON
    if not body.strip():
        raise BadRequest("Request body is empty; send a JSON object")
    check_shape(body, max_records)  # depth, values, strings and records, measured before any is built
    try:
        value = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {_json_problem(body, exc)}") from None
    except RecursionError:  # unclosed brackets, which check_shape leaves to the decoder
        raise too_deep() from None
    if not isinstance(value, dict):
        raise BadRequest("Request body must be a JSON object")
    return value


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    return decode_object(await read_body(request, max_bytes))


class Gateway:
    """What the handlers share: settings, registry, token service and (after startup) the pool."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        # Signed with the current key, verified with any key still known (gateway/keys.py).
        self.tokens = auth.TokenService(keys.key_ring(settings), settings.token_ttl_seconds,
                                        settings.jwt_issuer, settings.jwt_audience)
        self.cursors = feed.Cursors(settings.resolved_secret())
        self.pool: asyncpg.Pool | None = None
        self.limiter = ratelimit.RateLimiter(settings.rate_limit_tenant, settings.rate_limit_user)

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise ServiceUnavailable()
        return self.pool


async def get_token(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    body = await read_json_object(request, 64 * 1024)
    lowered = {k.lower(): v for k, v in body.items()}
    username, password = lowered.get("username"), lowered.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise BadRequest("Fields 'username' and 'password' are required strings")
    structlog.contextvars.bind_contextvars(user=username[:auth.MAX_USERNAME])
    # Failed logins count against the address the connection came from (see auth.client_key).
    try:
        issued = await auth.login(gw.require_pool(), gw.tokens, username, password,
                                  request.client.host if request.client else None)
    except auth.LoginThrottled:
        await auth.tarpit()
        raise
    answer = {"accesstoken": issued.token, "expires": utc_iso(issued.expires)}
    # A refresh token only when asked for: Fast's clients never send `refresh`, and get Fast's answer exactly.
    if lowered.get("refresh") is True:
        refresh = await tokens.start_family(gw.require_pool(), issued, gw.settings.refresh_ttl_seconds)
        answer.update(refreshtoken=refresh.token, refreshexpires=utc_iso(refresh.expires))
    return success("Success", token=answer)


def _refresh_token_field(body: dict[str, Any]) -> Any:
    return next((v for k, v in body.items() if k.lower() == "refreshtoken"), None)


async def refresh_token(request: Request) -> Response:
    """A new access token and a new refresh token for a refresh token, which is spent (gateway/tokens.py)."""
    gw: Gateway = request.app.state.gateway
    presented = _refresh_token_field(await read_json_object(request, 64 * 1024))
    if not isinstance(presented, str) or not presented:
        raise BadRequest("Field 'refreshtoken' is a required string")
    issued, refresh = await tokens.refresh(gw.require_pool(), gw.tokens, presented, gw.settings.refresh_ttl_seconds)
    structlog.contextvars.bind_contextvars(user=issued.username)
    return success("Success", token={"accesstoken": issued.token, "expires": utc_iso(issued.expires),
                                     "refreshtoken": refresh.token, "refreshexpires": utc_iso(refresh.expires)})


async def revoke_token(request: Request) -> Response:
    """Log out, with the access token: `refreshtoken` revokes that refresh token's family, `"all": true`
    every family of the caller; the access tokens handed out with them, and the one presented, are refused from
    then on."""
    gw: Gateway = request.app.state.gateway
    pool = gw.require_pool()
    caller = await auth.admit(gw.tokens, gw.limiter, pool, request.headers)
    claims = caller.claims
    body = await read_json_object(request, 64 * 1024)
    presented = _refresh_token_field(body)
    everything = next((v for k, v in body.items() if k.lower() == "all"), None) is True
    if everything == (presented is not None):
        raise BadRequest("Send 'refreshtoken' (one session) or 'all': true (every session), not both")
    if not everything and (not isinstance(presented, str) or not presented):
        raise BadRequest("Field 'refreshtoken' is a required string")
    async with pool.acquire() as conn:
        await auth.principal_for(conn, claims, caller.tenant_header)  # a token already ended revokes nothing
        revoked = await tokens.revoke(conn, claims, presented, everything)
    return success("Success", revoked=revoked)


def _endpoint_handler(endpoint: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        gw: Gateway = request.app.state.gateway
        pool = gw.require_pool()
        # Token, X-Tenant-ID (by code now, by id with the user's row) and rate limits, before the body is read:
        # a refusal here costs neither reading nor parsing (nor a write's audit row).
        caller = await auth.admit(gw.tokens, gw.limiter, pool, request.headers)
        claims, tenant_header = caller.claims, caller.tenant_header
        # From here on every outcome of a write, a refusal too, leaves one audit row (gateway/audit.py); a read
        # leaves none.
        trail = audit.WriteTrail(endpoint, claims, request.headers.get(idempotency.HEADER),
                                 gw.settings.audit_retention_days)
        try:
            raw = await read_body(request, gw.settings.max_body_bytes)
            body = decode_object(raw, gw.settings.max_records)
            form, op = gw.registry.resolve(endpoint,
                                           next((v for k, v in body.items() if k.lower() == "form"), None))
        except Exception as exc:
            if endpoint != GET_DATA:
                await trail.refused(pool, exc)  # on a connection of its own: the request holds none yet
            raise
        structlog.contextvars.bind_contextvars(form=form.name if op == "sync" else form.get_name)
        # Permissions per role and form, resolved in memory (gateway/permissions.py): a tenant's own role comes
        # with the user's row that principal_for reads anyway.
        policy = permissions.policy_for(gw.registry)
        if op == "get":
            out: dict[str, Any] | Response
            async with pool.acquire() as conn:
                principal = await auth.principal_for(conn, claims, tenant_header)
                principal.require(policy, permissions.READ, form, form.get_name)
                # A catalog's pull without `limit` is streamed: it reads on a connection of its own from the pool.
                out = await form.pull(conn, principal.tenant_id, body, pool=pool, cursors=gw.cursors)
            return out if isinstance(out, Response) else success("SUCCESS", **out)

        trail.form = form.name
        try:
            if permissions.is_builtin(claims["role"]):
                # Refused before the records are validated when the token's role settles it; the role is the
                # user's (a role change ends the tokens issued before it), checked again below with the deletes
                # known.
                policy.require(claims["role"], None, permissions.WRITE, form, form.name)
            nul = nul_path(raw, body)
            if nul is not None:
                raise BadRequest(f"The text at {shorten(nul, tail=32)} holds a NUL character (\\u0000), which cannot "
                                 "be stored", field=shorten(nul, tail=32))
            key = idempotency.check_key(request.headers.get(idempotency.HEADER))
            work = sync.plan(form, body, gw.settings.max_records)  # validation holds no connection
        except Exception as exc:
            await trail.refused(pool, exc)  # on a connection of its own: the request holds none yet
            raise

        async def write(conn: asyncpg.Connection) -> Response:
            principal = await auth.principal_for(conn, claims, tenant_header)
            principal.require(policy, permissions.WRITE, form, form.name)
            if work.batch.deletes:  # master records with action "delete", vouchers with Status "0"
                principal.require(policy, permissions.DELETE, form, form.name)
            if key is None:
                return _synced(await _apply(conn, principal.tenant_id, work))
            stored = await idempotency.begin(conn, principal.tenant_id, key, idempotency.fingerprint(endpoint, raw))
            if stored is not None:
                log.info("idempotent_replay", status=stored.status)
                return Response(stored.body, status_code=stored.status, media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
            tenant_id = principal.tenant_id

            async def keep(out: dict[str, Any]) -> None:
                # The answer is stored in the work's own transaction: a request that dies after its commit
                # leaves its answer for the retry to replay.
                answer = success("SUCCESS", **out)
                await idempotency.store(conn, tenant_id, key, answer.status_code, bytes(answer.body))

            kept = False
            try:
                response = _synced(await _apply(conn, tenant_id, work, keep=keep))
                kept = not work.options.dry_run  # committed with the work; a dry run's was rolled back
            except Exception as exc:  # noqa: BLE001 - every failure is answered, through the same table
                # Rendered here rather than by ErrorEnvelope so that the answer can be stored for a retry to
                # replay; finish() keeps only final answers (a 601, say) and releases the key after a 409/5xx.
                response = render_error(exc, rest_statuses=gw.settings.rest_statuses)
            except BaseException:
                with contextlib.suppress(Exception):
                    await idempotency.release(conn, principal.tenant_id, key)
                raise
            await idempotency.finish(conn, tenant_id, key, response.status_code, bytes(response.body), stored=kept)
            return response

        # One connection per request: the user's current state, the work, then its audit row (one statement,
        # committed on its own: a refused request, rolled back, is audited too).
        async with pool.acquire() as conn:
            try:
                response = await write(conn)
            except Exception as exc:
                await trail.refused(conn, exc)
                raise
            await trail.answered(conn, response)
            return response

    handler.__name__ = endpoint
    return handler


async def _apply(conn: asyncpg.Connection, tenant_id: int, work: sync.SyncPlan,
                 keep: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
    """sync.apply, with the records of its answer counted by outcome (a refused batch's too); a dry run writes
    nothing, so it counts nothing."""
    try:
        out = await sync.apply(conn, tenant_id, work, keep=keep)
    except DataStructureError as exc:
        if not work.options.dry_run:
            metrics.count_records(work.form.name, exc.extra.get("result"))
        raise
    if not work.options.dry_run:
        metrics.count_records(work.form.name, out["result"])
    return out


def _synced(out: dict[str, Any]) -> Response:
    log.info("synced", records=out["records"], **out["result"])
    return success("SUCCESS", **out)


async def webhooks_endpoint(request: Request) -> Response:
    """POST /api/webhooks: the admin's tenant's webhook subscriptions and deliveries (gateway/webhooks.py), one
    `action` a request; 401 without a valid token, 403 for any role but admin."""
    gw: Gateway = request.app.state.gateway
    pool = gw.require_pool()
    caller = await auth.admit(gw.tokens, gw.limiter, pool, request.headers)
    body = await read_json_object(request, 64 * 1024)
    async with pool.acquire() as conn:
        principal = await auth.principal_for(conn, caller.claims, caller.tenant_header)
        principal.require_admin("manage webhooks")
        return success("SUCCESS", **await webhooks.api_action(conn, gw.registry, gw.settings,
                                                               principal.tenant_id, body, principal.username))


async def healthz(request: Request) -> Response:
    return success("OK", status="up")


async def readyz(request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    try:
        async with gw.require_pool().acquire(timeout=2) as conn:
            await conn.fetchval(QUERIES["ready_ping"], timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ServiceUnavailable(f"Database unreachable: {type(exc).__name__}") from None
    return success("OK", status="ready")


# --- errors: one table (errors.TRANSLATIONS), one renderer (responses.render_error), two ways in ---------

class ErrorEnvelope:
    """Whatever a route raises, until its answer starts, is answered through responses.render_error.

    A middleware rather than a Starlette exception handler: Starlette hands a handler for Exception to its
    outermost middleware, which answers and then raises again, so that every crash would also reach the
    server (and the tests' client) as an exception. Here a crash is answered once, like any other error.
    This also covers a response that fails before its first byte (a streamed pull opening its cursor).
    """

    def __init__(self, app: ASGIApp, rest_statuses: bool = False) -> None:
        self.app = app
        self.rest_statuses = rest_statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise  # too late for an envelope: the connection is cut, so a client sees a broken body
            await render_error(exc, self.rest_statuses)(scope, receive, send)


async def on_routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's router raises these itself (no such path, wrong method) and catches them itself too."""
    status = getattr(exc, "status_code", 500)
    answer: GatewayError
    if status == 405:
        answer = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    elif status == 404:
        answer = NotFound(f"No such endpoint: {request.url.path}")
    else:
        answer = GatewayError()
    response = render_error(answer, rest_statuses=request.app.state.gateway.settings.rest_statuses)
    response.headers.update(getattr(exc, "headers", None) or {})  # a 405 names the allowed methods (Allow)
    return response


class RequestContext:
    """Request id (from X-Request-ID when sane, else new), bound to every log line and echoed back; the
    security headers (responses.SECURITY_HEADERS) on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 and set(incoming) <= _REQUEST_ID_OK else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status = 500
        audited = audit.begin_request(request_id, scope.get("client"), start)  # what its audit rows carry
        limits = ratelimit.begin_request()  # the RateLimit-* headers, when the endpoint counts the request

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                # Every answer, errors, 404s and streamed pulls included, with the security headers too.
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode()), *SECURITY_HEADERS,
                                      *ratelimit.answer_headers()]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            audit.end_request(audited)
            ratelimit.end_request(limits)
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - start) * 1000, 2))


class CanonicalPath:
    """Endpoint paths match case-insensitively, with or without a trailing slash, as ASP.NET routes do: a
    client written for Fast may call /api/syncdata or /api/GetData/ and must reach the same endpoint (not a
    404, nor a 307 redirect that drops the POST body in some clients)."""

    def __init__(self, app: ASGIApp, paths: list[str]) -> None:
        self.app = app
        self.paths = {p.lower(): p for p in paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            canonical = self.paths.get(path.rstrip("/").lower()) if len(path) > 1 else None
            if canonical is not None and canonical != path:
                scope = {**scope, "path": canonical, "raw_path": canonical.encode()}
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    if registry is None:
        from forms import FORM_MODULES

        registry = build_registry(FORM_MODULES)
    gateway = Gateway(settings, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.pool = await create_pool(database_url(settings), settings)
        log.info("started", forms=len(registry.forms))
        try:
            async with metrics.pool_watched(gateway.pool if settings.metrics else None):
                yield
        finally:
            await gateway.pool.close()
            gateway.pool = None

    routes = [
        Route("/api/getToken", get_token, methods=["POST"]),
        Route("/api/refreshToken", refresh_token, methods=["POST"]),
        Route("/api/revokeToken", revoke_token, methods=["POST"]),
        Route("/api/SyncData", _endpoint_handler(SYNC_DATA), methods=["POST"]),
        Route("/api/SyncVoucher", _endpoint_handler(SYNC_VOUCHER), methods=["POST"]),
        Route("/api/GetData", _endpoint_handler(GET_DATA), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/api/webhooks", webhooks_endpoint, methods=["POST"]),
        *docs_page.routes(registry, settings),  # /api/schemas/{form}, /openapi.json, /docs
        *admin.routes(),  # /admin and its files, /api/admin/overview
    ]
    if settings.metrics:
        routes.append(Route("/metrics", metrics.scrape, methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: on_routing_error})
    app.state.gateway = gateway
    # Added first, so innermost: RequestContext, outermost, then logs the status of the rendered error.
    app.add_middleware(ErrorEnvelope, rest_statuses=settings.rest_statuses)
    app.add_middleware(CanonicalPath, paths=[route.path for route in routes])
    if settings.cors_origins:
        # Outside ErrorEnvelope, so that error answers carry the CORS headers too; it answers preflights
        # itself, before any token is looked at, and RequestContext gives them a request id and a log line.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=CORS_METHODS,
                           allow_headers=CORS_REQUEST_HEADERS, expose_headers=CORS_EXPOSED_HEADERS,
                           allow_credentials=False, max_age=CORS_MAX_AGE)
    app.add_middleware(RequestContext)
    if settings.metrics:
        # Outermost: it counts every answer, those of the middlewares above included, with its final status.
        app.add_middleware(metrics.Observe, routes=routes, forms=_form_names(registry),
                           form_paths=[f"/api/{endpoint}" for endpoint in ENDPOINTS])
    return app


def _form_names(registry: Registry) -> set[str]:
    """The names the handlers bind as `form`: a form's SyncData/SyncVoucher name and its GetData name."""
    return {form.name for form in registry.forms} | {form.get_name for form in registry.forms}

