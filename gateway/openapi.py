"""The API description: an OpenAPI 3.1 document built from the form registry and the forms' JSON Schemas.

The document is built once, when the app is created, and describes the default wire contract: Fast's body
codes 201, 202 and 601 in an HTTP 200 answer, or with their REST statuses when the operator asked for them
(Settings.rest_statuses). Form names and field names match case-insensitively on the wire; the document
spells them as the forms declare them.

gateway/docs_page.py serves it, with the page that renders it and each form's schema.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from .config import Settings
from .engine import MODES
from .errors import FAST_CODES, DataStructureError, EmptyData, FormNotFound
from .forms import GET_DATA, SYNC_DATA, SYNC_VOUCHER, Registry
from .query import MAX_FIELDS, MAX_IN_VALUES, MAX_LIMIT, OPERATORS


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _version() -> str:
    try:
        return metadata.version("erp-sync-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        from . import __version__

        return __version__


def schema_forms(registry: Registry) -> dict[str, Any]:
    """Every name (lower case) of a form that has a record schema, to its form: sync names and get names."""
    out: dict[str, Any] = {}
    for form in registry.forms:
        if form.sync_names():
            for name in (*form.sync_names(), *form.get_names()):
                out[name.lower()] = form
    return out


# --- envelopes ---------------------------------------------------------------------------------------------

def _envelope_schemas(settings: Settings) -> dict[str, Any]:
    fast_codes = sorted(FAST_CODES - {200})
    counts = {name: {"type": "integer", "minimum": 0}
              for name in ("inserted", "updated", "unchanged", "deleted", "failed", "superseded")}
    record_error = {
        "type": "object",
        "description": "What is wrong with one record of the request.",
        "required": ["index", "path", "message"],
        "properties": {
            "index": {"type": "integer", "minimum": 0, "description": "Position of the record in `data`"},
            "key": {"type": ["string", "null"], "description": "The record's key, parts joined by '|'"},
            "path": {"type": "string", "description": "JSON Pointer into the record"},
            "message": {"type": "string"},
        },
    }
    outcome = {
        "type": "object",
        "required": ["index", "status"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "key": {"type": ["string", "null"]},
            "status": {"enum": ["inserted", "updated", "unchanged", "deleted", "failed", "superseded",
                                "not_written"]},
        },
    }
    return {
        "Error": {
            "type": "object",
            "description": (
                "The canonical error envelope. `code` is Fast's body code: 201 form does not exist, 202 data "
                "is empty, 601 data structure error (nothing was written), else the HTTP status. "
                + ("These three come with HTTP 404, 400 and 422 (GATEWAY_REST_STATUSES)."
                   if settings.rest_statuses else "Fast's codes 201, 202 and 601 come with HTTP 200, as Fast "
                   "answers them.")
                + " Further fields depend on the error: `field` (the request field at fault), `forms` (the "
                "known forms, with 201), `endpoint` (where a form belongs), and with 601 `records`, "
                "`result`, `errors`, `warnings`, `outcomes`."),
            "required": ["success", "messages", "code"],
            "properties": {
                "success": {"const": False},
                "messages": {"type": "string", "description": "What went wrong, in words"},
                "code": {"type": "integer", "examples": [400, 401, 403, *fast_codes]},
                "field": {"type": "string"},
                "forms": {"type": "array", "items": {"type": "string"}},
                "endpoint": {"type": "string"},
                "records": {"type": "integer", "minimum": 0},
                "result": ref("SyncCounts"),
                "errors": {"type": "array", "items": ref("RecordError")},
                "warnings": {"type": "array", "items": {"type": "object"}},
                "outcomes": {"type": "array", "items": ref("Outcome")},
            },
        },
        "SyncCounts": {"type": "object", "required": list(counts), "properties": counts},
        "RecordError": record_error,
        "Outcome": outcome,
        "Success": {
            "type": "object",
            "required": ["success", "messages", "code"],
            "properties": {"success": {"const": True}, "messages": {"type": "string"},
                           "code": {"const": 200}},
        },
        "TokenAnswer": _success({
            "token": {
                "type": "object",
                "required": ["accesstoken", "expires"],
                "properties": {
                    "accesstoken": {"type": "string", "description": "Send as `Authorization: <token>` or "
                                                                     "`Authorization: Bearer <token>`"},
                    "expires": {"type": "string", "format": "date-time"},
                    "refreshtoken": {"type": "string",
                                     "description": "Only when asked for (`refresh: true`)"},
                    "refreshexpires": {"type": "string", "format": "date-time"},
                },
            },
        }, ["token"]),
        "RevokeAnswer": _success({"revoked": {"type": "integer", "minimum": 0,
                                              "description": "Sessions revoked"}}, ["revoked"]),
        "Health": _success({"status": {"enum": ["up", "ready"]}}, ["status"]),
        "WebhookAnswer": _success({
            "data": {"type": "array", "items": {"type": "object"},
                     "description": "`list`: the subscriptions; `deliveries`: the deliveries, newest first"},
            "id": {"type": ["integer", "string"], "description": "The subscription (or delivery) acted on"},
            "secret": {"type": "string", "description": "`add`, `rotate`: the signing secret, shown this once"},
            "active": {"type": "boolean"},
            "delivered": {"type": "boolean", "description": "`test`: whether the receiver answered 2xx"},
            "status": {"type": ["integer", "null"], "description": "`test`: the receiver's HTTP status"},
            "error": {"type": ["string", "null"]},
        }, []),
        "AdminOverview": _success({
            "tenant": {"type": "object", "description": "The tenant's settings"},
            "users": {"type": "object", "required": ["total", "data"], "properties": {
                "total": {"type": "integer", "minimum": 0}, "data": {"type": "array", "items": {"type": "object"}}}},
            "requests": {"type": "array", "items": {"type": "object"},
                         "description": "The last write requests, as getAuditLog gives them"},
            "figures": {"type": "object", "description": "Requests, records and errors per minute, last hour"},
            "feeds": {"type": "array", "items": {"type": "object"},
                      "description": "The latest change of each form's feed"},
            "webhooks": {"type": "object", "description": "Subscriptions, recent deliveries, counts by state"},
        }, ["tenant", "users", "requests", "figures", "feeds", "webhooks"]),
        "SyncAnswer": _success({
            "records": {"type": "integer", "minimum": 0, "description": "Records written or found unchanged"},
            "fkey": {"type": "string"},
            "result": ref("SyncCounts"),
            "errors": {"type": "array", "items": ref("RecordError"),
                       "description": "Records refused in partial mode; the others were written"},
            "warnings": {"type": "array", "items": {"type": "object"}},
            "outcomes": {"type": "array", "items": ref("Outcome"), "description": "With `outcomes: true`"},
            "dry_run": {"const": True, "description": "With `dry_run: true`: checked, nothing kept"},
        }, ["records", "fkey", "result"]),
        "PullAnswer": _success({
            "data": {"type": "array", "items": {"type": "object"},
                     "description": "Records as the form's schema spells them (only `fields` when given; "
                                    "vouchers with their lines); with `since`, each also has `Deleted`, "
                                    "and a deleted one is its key and `Deleted: true`. Reports: their rows."},
            "records": {"type": "integer", "minimum": 0, "description": "How many records `data` holds"},
            "next_cursor": {"type": ["string", "null"], "description": "With `limit`: the next page's "
                                                                       "`cursor`; null on the last page"},
            "next_since": {"type": "string", "description": "With `since`: the `since` of the next pull"},
            "more": {"type": "boolean", "description": "With `since`: more changes wait; pull again at once"},
        }, ["data", "records"]),
    }


def _success(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "messages", *required, "code"],
        "properties": {"success": {"const": True}, "messages": {"type": "string"}, **properties,
                       "code": {"const": 200}},
    }


# --- answers -----------------------------------------------------------------------------------------------

# With GATEWAY_REST_STATUSES, the HTTP statuses Fast's body codes come with.
_REST_CODES = {FormNotFound.status: "201 (no such form)", EmptyData.status: "202 (data is empty)",
               DataStructureError.status: "601 (the records do not match the form; nothing was written)"}
_REQUEST_ID_HEADER = {"description": "The request's id (the sane X-Request-ID it came with, else a new one); "
                                     "in every log line of the request", "schema": {"type": "string"}}
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}

_ERRORS = {
    400: "Bad request: not a JSON object, an unknown or malformed field (`field` names it)",
    401: "No token, or one that is forged, expired, revoked or ended by a password, role or status change",
    403: "The user's role lacks the permission (`field: permission` names it), or X-Tenant-ID names another "
         "tenant than the token's",
    404: "No such path or form",
    405: "Method not allowed (the Allow header lists the allowed ones)",
    409: "The request collided with concurrent writes, or its Idempotency-Key is in use; retry it",
    413: "Body larger than GATEWAY_MAX_BODY_BYTES, more records than GATEWAY_MAX_RECORDS, or a string "
         "over 1 MiB",
    422: "The Idempotency-Key was used before with another body",
    429: "Too many requests (failed logins from an address or for a user; a tenant's or user's rate limit): "
         "come back after Retry-After seconds",
    431: "Request line and headers larger than 64 KiB, or more than 100 headers",
    500: "A fault of the gateway's own; the answer says nothing of the cause",
    503: "The database is unavailable or busy; come back after Retry-After seconds",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error_response(status: int, settings: Settings | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": _REQUEST_ID_HEADER}
    if status in (429, 503):
        headers["Retry-After"] = _RETRY_AFTER
    description = _ERRORS[status]
    if settings is not None and settings.rest_statuses and status in _REST_CODES:
        description += f"; or Fast's {_REST_CODES[status]}"
    return {"description": description, "headers": headers, "content": _json(ref("Error"))}


def _responses(ok: str, ok_schema: str, statuses: tuple[int, ...], settings: Settings,
               fast_codes: bool = False, replay: bool = False) -> dict[str, Any]:
    """The 200 answer (with Fast's 201/202/601 in it, where the endpoint has them and the mode says so) and
    the error answers of `statuses`."""
    schema = ref(ok_schema)
    if fast_codes and not settings.rest_statuses:
        schema = {"oneOf": [schema, ref("Error")]}
    headers: dict[str, Any] = {"X-Request-ID": _REQUEST_ID_HEADER}
    if replay:
        headers["Idempotent-Replayed"] = {
            "description": "`true` when this is the stored answer of an earlier request with the same "
                           "Idempotency-Key and body", "schema": {"const": "true"}}
    out: dict[str, Any] = {"200": {"description": ok, "headers": headers, "content": _json(schema)}}
    wanted = set(statuses) | {405, 431, 500}
    if fast_codes and settings.rest_statuses:
        wanted |= {FormNotFound.status, EmptyData.status, DataStructureError.status}
    for status in sorted(wanted):
        out[str(status)] = _error_response(status, settings if fast_codes else None)
    return out


# --- requests ----------------------------------------------------------------------------------------------

def _record_schema(form: Any) -> dict[str, Any]:
    """The form's record schema as a component: the validated schema (numbers bounded), without `$schema`,
    which OpenAPI 3.1's dialect already says."""
    schema = copy.deepcopy(form.schema)
    schema.pop("$schema", None)
    return schema


def _delete_schema(form: Any) -> dict[str, Any]:
    """A master record deleted: its key, and `action: "delete"` (other fields may come along, ignored)."""
    props = form.schema["properties"]
    return {
        "type": "object",
        "description": f"Deletes the {form.name} record of this key",
        "required": [*form.key, "action"],
        "properties": {**{k: props[k] for k in form.key}, "action": {"const": "delete"}},
    }


def _sync_request(form: Any, component: str, voucher: bool) -> dict[str, Any]:
    item: dict[str, Any] = ref(component)
    if not voucher:
        item = {"oneOf": [ref(component), ref(f"{component}.delete")]}
    return {
        "type": "object",
        "title": form.name,
        "description": _form_description(form),
        "required": ["form", "data"],
        "additionalProperties": False,
        "properties": {
            "form": {"const": form.name, "description": "The form; aliases: "
                                                        + (", ".join(form.aliases) or "none")},
            "data": {"type": "array", "minItems": 1, "items": item},
            "mode": {"enum": list(MODES), "default": "atomic",
                     "description": "atomic: one invalid record refuses the batch (601); partial: the valid "
                                    "records are written, the others listed in `errors`"},
            "dry_run": {"type": "boolean", "default": False,
                        "description": "Check and write in a transaction that is rolled back: the answer "
                                       "tells what would happen"},
            "outcomes": {"type": "boolean", "default": False,
                         "description": "Add `outcomes`: what happened to each record, by index"},
            "strict": {"type": "boolean", "default": False,
                       "description": "Refuse what is otherwise read leniently (field names in another case, "
                                      "numbers sent as text)"},
        },
    }


def _form_description(form: Any) -> str:
    kind = "voucher" if form.endpoint == SYNC_VOUCHER else "catalog"
    text = f"{form.description} " if form.description else ""
    key = ", ".join(form.key)
    pulled = f"Pulled with GetData `{form.get_name}`."
    deletes = ("A voucher with `Status: \"0\"` is cancelled." if kind == "voucher"
               else "A record with `action: \"delete\"` is deleted.")
    posts = _posting_text(form.posting) if kind == "voucher" else ""
    return f"{text}A {kind}, key {key}. {posts}{deletes} {pulled}".strip()


def _account(account: Any) -> str:
    if account.role:
        return f"role {account.role}"
    return f"line {account.line}" if account.line else f"header {account.header}"


def _posting_text(posting: Any) -> str:
    """What a voucher posts, in words, from its posting rule (gateway/posting.py)."""
    if posting is None:
        return "Posts nothing. "
    parts = ["its lines as ledger entries"] if posting.journal else []
    parts += [f"Dr {_account(e.debit)} / Cr {_account(e.credit)}" for e in posting.entries]
    parts += [f"stock {m.direction}" for m in posting.moves]
    if posting.allocates:
        parts.append(f"payments allocated to {posting.allocates}")
    return f"Posts: {'; '.join(parts)}. " if parts else "Posts nothing. "


def _catalog_get(form: Any) -> dict[str, Any]:
    fields = list(form.by_field)
    names = {"type": "array", "maxItems": MAX_FIELDS, "uniqueItems": True, "items": {"enum": fields}}
    day = {"type": ["string", "null"],
           "description": "yyyy-MM-dd or an ISO date-time; empty: no bound (last modified, UTC)"}
    condition = {"oneOf": [
        {"type": ["string", "number", "boolean", "null"], "description": "Equal to"},
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": {op: ({"type": "array", "maxItems": MAX_IN_VALUES} if op == "in" else {})
                        for op in OPERATORS}},
    ]}
    return {
        "type": "object",
        "title": form.get_name,
        "description": f"Pull {form.name} records. Aliases: {', '.join(form.get_aliases) or 'none'}.",
        "required": ["form"],
        "additionalProperties": False,
        "properties": {
            "form": {"const": form.get_name},
            "Id": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                   "description": f"One record by its key ({', '.join(form.key)}); a composite key joined by "
                                  "'|' or as a list; empty: every record"},
            "dateFrom": day,
            "dateTo": day,
            "filters": {"type": "object", "maxProperties": MAX_FIELDS, "propertyNames": {"enum": fields},
                        "additionalProperties": condition,
                        "description": "`{Field: value}` for equality, or `{Field: {op: value}}`"},
            "fields": {**names, "description": "The fields to return; the key always comes along"},
            "order_by": {"type": "array", "maxItems": MAX_FIELDS, "uniqueItems": True,
                         "items": {"enum": [*fields, *(f"-{f}" for f in fields)]},
                         "description": "Sort fields, `-` for descending; the key is appended"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT,
                      "description": "Page size; the answer then carries `next_cursor`. Without it every "
                                     "matching record comes in one answer"},
            "cursor": {"type": ["string", "null"], "description": "The previous page's `next_cursor`"},
            "since": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}, {"type": "null"}],
                      "description": "Incremental pull: 0 at first, then the previous answer's `next_since`"},
        },
    }


# Report parameters the document can type; any other is described without a type.
_REPORT_PARAMS: dict[str, dict[str, Any]] = {
    "Id": {"type": "string"},
    "dateFrom": {"type": ["string", "null"], "description": "yyyy-MM-dd or an ISO date-time"},
    "dateTo": {"type": ["string", "null"], "description": "yyyy-MM-dd or an ISO date-time"},
    "include_paid": {"type": "boolean"},
    "group_by": {"enum": ["period", "customer", "item"]},
}


def _report_get(form: Any) -> dict[str, Any]:
    admins = " Admins only." if form.admin_only and "admin" not in form.description.lower() else ""
    return {
        "type": "object",
        "title": form.get_name,
        "description": f"Report. {form.description}{admins}",
        "required": ["form"],
        "additionalProperties": False,
        "properties": {"form": {"const": form.get_name},
                       **{p: _REPORT_PARAMS.get(p, {}) for p in form.params}},
    }


def _dispatch(requests: dict[str, str]) -> dict[str, Any]:
    """A body whose `form` picks its schema: one component per form name."""
    return {
        "oneOf": [ref(component) for component in requests.values()],
        "discriminator": {"propertyName": "form",
                          "mapping": {name: f"#/components/schemas/{c}" for name, c in requests.items()}},
    }


def _form_components(registry: Registry) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Components for every form (record schemas, request bodies) and, per endpoint, form name -> request."""
    schemas: dict[str, Any] = {}
    requests: dict[str, dict[str, str]] = {SYNC_DATA: {}, SYNC_VOUCHER: {}, GET_DATA: {}}
    for form in sorted(registry.forms, key=lambda f: f.get_name):
        if form.sync_names():
            voucher = form.endpoint == SYNC_VOUCHER
            schemas[form.name] = _record_schema(form)
            if not voucher:
                schemas[f"{form.name}.delete"] = _delete_schema(form)
            schemas[f"{form.endpoint}.{form.name}"] = _sync_request(form, form.name, voucher)
            requests[form.endpoint][form.name] = f"{form.endpoint}.{form.name}"
            schemas[f"GetData.{form.get_name}"] = _catalog_get(form)
        else:
            schemas[f"GetData.{form.get_name}"] = _report_get(form)
        requests[GET_DATA][form.get_name] = f"GetData.{form.get_name}"
    return schemas, requests


# --- paths -------------------------------------------------------------------------------------------------

_REQUEST_ID_PARAM = {
    "name": "X-Request-ID", "in": "header", "required": False,
    "description": "Your id for the request, echoed back and logged; 1 to 128 of A-Z a-z 0-9 - _ . : "
                   "(anything else is replaced by a new id)",
    "schema": {"type": "string"},
}
_IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Retry safely: a request repeated with the same key and body gets the first answer again "
                   "(Idempotent-Replayed: true) instead of writing twice; the same key with another body "
                   "gets 422, one still in progress 409",
    # Visible ASCII, spaces inside: what the gateway accepts (printable, stripped) as a header carries it.
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$"},
}


_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests a minute allowed: the tighter of the tenant's and the user's limit",
    "RateLimit-Remaining": "Requests left in the current minute under that limit",
    "RateLimit-Reset": "Seconds until the minute ends",
}


_TENANT_PARAM = {
    "name": "X-Tenant-ID", "in": "header", "required": False,
    "description": "The tenant you mean to act for, its code or numeric id: when sent, it must be the "
                   "token's tenant, else the answer is 403 and nothing is read or written",
    "schema": {"type": "string"},
}


def _rate_limited(op: dict[str, Any]) -> dict[str, Any]:
    """A token-bearing operation: X-Tenant-ID checked against the token, counted against its tenant's and
    user's rate limits; every answer once the token is read carries the RateLimit-* headers, and the limit
    reached is a 429."""
    op["parameters"] = [*op["parameters"][:-1], _TENANT_PARAM, op["parameters"][-1]]
    responses = op["responses"]
    responses.setdefault("403", _error_response(403))
    responses.setdefault("429", _error_response(429))
    op["responses"] = dict(sorted(responses.items()))
    for answer in op["responses"].values():
        for name, text in _RATE_LIMIT_HEADERS.items():
            answer["headers"][name] = {"description": text, "schema": {"type": "integer", "minimum": 0}}
    return op


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": _json(schema)}


def _operation(op_id: str, summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
               secured: bool = True, tag: str = "API", extra_params: tuple[dict[str, Any], ...] = (),
               description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag],
                          "parameters": [*extra_params, _REQUEST_ID_PARAM], "responses": responses}
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = _body(body)
    if not secured:
        op["security"] = []
    return op


def _page(op_id: str, summary: str, media_type: str) -> dict[str, Any]:
    """A static file of the gateway's own: no token (the admin page asks for one and sends it itself)."""
    return {"get": _operation(
        op_id, summary,
        {"200": {"description": summary, "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
                 "content": {media_type: {"schema": {"type": "string"}}}},
         **{str(s): _error_response(s) for s in (405, 431, 500)}},
        secured=False, tag="Administration")}


def _admin_paths(settings: Settings) -> dict[str, Any]:
    """The admin role's endpoints, the admin page and, when on, the metrics."""
    webhook_request = {
        "type": "object", "required": ["action"],
        "description": "One action on the tenant's webhook subscriptions: `add` (url, forms; answers the id and "
                       "the secret, shown once), `list`, `remove`, `pause`, `resume`, `rotate` (a new secret; "
                       "the old one signs too for the grace period), `test` (a signed test event now), "
                       "`deliveries` (`dead: true` for the dead-lettered only), `replay` (a delivery's `id`)",
        "properties": {
            "action": {"enum": ["list", "add", "remove", "pause", "resume", "rotate", "deliveries", "replay",
                                "test"]},
            "id": {"type": ["integer", "string"], "description": "A subscription's id; for `replay`, a delivery's "
                                                                 "(msg_...)"},
            "url": {"type": "string", "description": "For `add`: an http(s) URL of a public address"},
            "forms": {"type": "array", "items": {"type": "string"},
                      "description": "For `add`: the forms whose changes are sent; `*` (the default) for all"},
            "dead": {"type": "boolean"},
        },
    }
    paths: dict[str, Any] = {
        "/api/webhooks": {"post": _rate_limited(_operation(
            "webhooks", "Manage the tenant's webhook subscriptions and deliveries (admin role only)",
            _responses("Done: the action's fields", "WebhookAnswer", (400, 401, 403, 404, 503), settings),
            body=webhook_request, tag="Administration"))},
        "/api/admin/overview": {"get": _rate_limited(_operation(
            "adminOverview", "The admin page's figures for the tenant (admin role only), read in one snapshot",
            _responses("The overview", "AdminOverview", (401, 403, 503), settings), tag="Administration"))},
        "/admin": _page("adminPage", "The admin page (it logs in with an admin's token)", "text/html"),
        "/admin/admin.js": _page("adminScript", "The admin page's script", "text/javascript"),
        "/admin/admin.css": _page("adminStyle", "The admin page's style sheet", "text/css"),
    }
    if settings.metrics:
        paths["/metrics"] = {"get": _operation(
            "metrics", "Prometheus metrics of every worker (with the bearer token of GATEWAY_METRICS_TOKEN)",
            {"200": {"description": "The metrics, in Prometheus' text format",
                     "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
                     "content": {"text/plain": {"schema": {"type": "string"}}}},
             "403": {**_error_response(403), "description": "No GATEWAY_METRICS_TOKEN is set, or the request "
                                                            "does not carry it"},
             **{str(s): _error_response(s) for s in (405, 431, 500)}},
            tag="Operations")}
        paths["/metrics"]["get"]["security"] = [{"metricsToken": []}]
    return paths


def _paths(registry: Registry, requests: dict[str, dict[str, str]], settings: Settings) -> dict[str, Any]:
    sync_statuses = (400, 401, 403, 409, 413, 422, 503)
    credentials = {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "minLength": 1}, "password": {"type": "string", "minLength": 1},
        "refresh": {"type": "boolean", "description": "true: the answer carries a refresh token too"}}}
    refresh = {"type": "object", "required": ["refreshtoken"], "properties": {
        "refreshtoken": {"type": "string", "minLength": 1}}}
    revoke = {"oneOf": [
        {"type": "object", "required": ["refreshtoken"], "additionalProperties": False,
         "properties": {"refreshtoken": {"type": "string", "minLength": 1}}},
        {"type": "object", "required": ["all"], "additionalProperties": False,
         "properties": {"all": {"const": True}}},
    ]}
    write_params = (_IDEMPOTENCY_PARAM,)
    known_forms = sorted(schema_forms(registry))
    canonical = sorted({form.name for form in schema_forms(registry).values()})
    return {
        "/api/getToken": {"post": _operation(
            "getToken", "Log in: an access token (and a refresh token when asked)",
            _responses("Logged in", "TokenAnswer", (400, 401, 429, 503), settings),
            body=credentials, secured=False, tag="Tokens")},
        "/api/refreshToken": {"post": _operation(
            "refreshToken", "A new access token and refresh token for a refresh token, which is spent",
            _responses("Refreshed", "TokenAnswer", (400, 401, 503), settings),
            body=refresh, secured=False, tag="Tokens")},
        "/api/revokeToken": {"post": _rate_limited(_operation(
            "revokeToken", "Log out one session (`refreshtoken`) or every session (`all: true`)",
            _responses("Revoked", "RevokeAnswer", (400, 401, 503), settings), body=revoke, tag="Tokens"))},
        "/api/SyncData": {"post": _rate_limited(_operation(
            "SyncData", "Upsert or delete catalog records of a form",
            _responses("Written (code 200), or Fast's 201/202/601 refusal", "SyncAnswer", sync_statuses,
                       settings, fast_codes=True, replay=True),
            body=_dispatch(requests[SYNC_DATA]), extra_params=write_params, tag="Sync",
            description="The body's `form` names the catalog; its `data` records follow that form's "
                        "schema."))},
        "/api/SyncVoucher": {"post": _rate_limited(_operation(
            "SyncVoucher", "Upsert or cancel vouchers (header and detail lines) of a form",
            _responses("Written (code 200), or Fast's 201/202/601 refusal", "SyncAnswer", sync_statuses,
                       settings, fast_codes=True, replay=True),
            body=_dispatch(requests[SYNC_VOUCHER]), extra_params=write_params, tag="Sync",
            description="The body's `form` names the voucher form; vouchers are posted to the ledger and "
                        "stock as the form's posting rule says."))},
        "/api/GetData": {"post": _rate_limited(_operation(
            "GetData", "Pull records of a form, a page of them, the changes since a cursor, or a report",
            _responses("The records (code 200), or Fast's 201 for an unknown form", "PullAnswer",
                       (400, 401, 403, 503), settings, fast_codes=True),
            body=_dispatch(requests[GET_DATA]), tag="Pull"))},
        "/api/schemas/{form}": {"get": _operation(
            "formSchema", "A form's JSON Schema (draft 2020-12), as the gateway validates its records",
            {"200": {"description": "The schema", "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
                     "content": {"application/schema+json": {"schema": {"type": "object"}}}},
             **{str(s): _error_response(s) for s in (404, 405, 431, 500)}},
            secured=False, tag="Description",
            extra_params=({"name": "form", "in": "path", "required": True,
                           "description": "A form's name or alias (any case): " + ", ".join(canonical),
                           "schema": {"enum": known_forms}},))},
        "/healthz": {"get": _operation(
            "healthz", "The process is up", _responses("Up", "Health", (), settings),
            secured=False, tag="Operations")},
        "/readyz": {"get": _operation(
            "readyz", "The database answers", _responses("Ready", "Health", (503,), settings),
            secured=False, tag="Operations")},
        **_admin_paths(settings),
        **({} if not settings.docs else {
            "/openapi.json": {"get": _operation(
                "openapi", "This document",
                {"200": {"description": "The OpenAPI 3.1 document",
                         "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
                         "content": _json({"type": "object"})},
                 **{str(s): _error_response(s) for s in (405, 431, 500)}},
                secured=False, tag="Description")},
            "/docs": {"get": _operation(
                "docs", "This document, rendered (Swagger UI, served by the gateway: works offline)",
                {"200": {"description": "An HTML page", "headers": {"X-Request-ID": _REQUEST_ID_HEADER},
                         "content": {"text/html": {"schema": {"type": "string"}}}},
                 **{str(s): _error_response(s) for s in (405, 431, 500)}},
                secured=False, tag="Description")},
        }),
    }


def build_document(registry: Registry, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway as `registry` and `settings` make it."""
    schemas, requests = _form_components(registry)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "ERP sync gateway",
            "version": _version(),
            "description": (
                "A Fast-compatible ERP sync gateway. Log in with /api/getToken, then send the token in the "
                "Authorization header (`<token>` as Fast documents it, or `Bearer <token>`). SyncData, "
                "SyncVoucher and GetData dispatch on the body's `form`; form and field names match "
                "case-insensitively. Every answer is the envelope `{success, messages, ..., code}`; every "
                "answer carries X-Request-ID, `X-Content-Type-Options: nosniff` and "
                "`Cache-Control: no-store`. "
                "Each form's record schema is also at /api/schemas/{form}."),
        },
        "tags": [{"name": n} for n in ("Tokens", "Sync", "Pull", "Description", "Administration", "Operations")],
        "security": [{"bearer": []}],
        "paths": _paths(registry, requests, settings),
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "The access token of /api/getToken or /api/refreshToken; the `Bearer ` prefix "
                               "is optional"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "GATEWAY_METRICS_TOKEN, for /metrics only"}},
            "schemas": {**_envelope_schemas(settings), **schemas},
        },
    }
