"""Form declarations and the registry that dispatches on endpoint and form name.

A master form is data: a JSON Schema in `schemas/`, a declaration in `forms/` and a table in `sql/`.
Its columns are derived from the schema's properties, so adding a master form needs no engine code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from importlib import import_module
from typing import Any, Protocol

import jsonschema_rs

from .config import SCHEMAS_DIR
from .errors import BadRequest, FormNotFound, shorten
from .lenient import compile_reader
from .sqlnames import ident

SYNC_DATA = "SyncData"
SYNC_VOUCHER = "SyncVoucher"
GET_DATA = "GetData"
ENDPOINTS = (SYNC_DATA, SYNC_VOUCHER, GET_DATA)



def snake_case(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


def _to_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def _to_int(value: Any) -> int:
    return int(value)


def to_text(value: Any) -> str:
    # Flags such as Status are "1"/"0" in Fast; a client sending 1 or 0 gets the same stored text.
    return value if isinstance(value, str) else str(value)


def _to_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _identity(value: Any) -> Any:
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": to_text,
    "numeric": _to_decimal,
    "date": _to_date,
    "integer": _to_int,
    "smallint": _to_int,
    "bigint": _to_int,
    "boolean": _identity,
}

TEXT_TYPES = frozenset({"text"})
ORDERED_TYPES = frozenset({"text", "numeric", "date", "integer", "smallint", "bigint"})


def _pgtype(prop: dict[str, Any]) -> str:
    if "x-pgtype" in prop:
        return str(prop["x-pgtype"])
    types = prop.get("type")
    if isinstance(types, list):
        types = [t for t in types if t != "null"]
        types = types[0] if len(types) == 1 else None
    if types == "string":
        return "date" if prop.get("format") == "date" else "text"
    if types == "number":
        return "numeric"
    if types == "integer":
        return "integer"
    if types == "boolean":
        return "boolean"
    raise ValueError(f"cannot derive a column type from {prop!r}; add x-pgtype")


Check = Callable[[dict[str, Any]], Iterable[tuple[str, str]]]


def date_order(start: str, end: str) -> Check:
    """A check that `end` is not before `start` when both are given."""

    def check(record: dict[str, Any]) -> Iterable[tuple[str, str]]:
        first, last = record.get(start), record.get(end)
        if first and last and last < first:  # ISO dates order as text
            yield f"/{end}", f"{end} {last} is before {start} {first}"

    check.__name__ = f"{end}_not_before_{start}"
    return check


def _needs_convert(prop: dict[str, Any]) -> bool:
    if _pgtype(prop) != "text":
        return True
    if "enum" in prop:
        return not all(isinstance(v, str) for v in prop["enum"])
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    return not types or not set(types) <= {"string", "null"}


@dataclass(frozen=True)
class Column:
    field: str  # the catalog's spelling, e.g. CustomerCode
    name: str  # the SQL column, e.g. customer_code
    pgtype: str
    default: Any = None
    required: bool = False
    # False when the schema already guarantees the stored Python type (a text field that only admits
    # strings): the engine then passes values through untouched.
    needs_convert: bool = True

    @property
    def convert(self) -> Callable[[Any], Any]:
        return _CONVERTERS[self.pgtype]

    @property
    def nullable(self) -> bool:
        """Whether the stored value can be NULL (required and defaulted fields are NOT NULL)."""
        return not self.required and self.default is None


# Every number is bounded: amounts, quantities and rates of at most 20 digits before the decimal point. A
# larger one (1e999999, say) is a sender's mistake that Python's decimal arithmetic and PostgreSQL's numeric
# type would each refuse in their own way, after validation; bounded here, the schema names its path.
NUMBER_LIMIT = 10**20


def _bound_numbers(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    types = schema.get("type")
    if types == "number" or (isinstance(types, list) and "number" in types):
        schema.setdefault("maximum", NUMBER_LIMIT)
        schema.setdefault("minimum", -NUMBER_LIMIT)
    for prop in (schema.get("properties") or {}).values():
        _bound_numbers(prop)
    _bound_numbers(schema.get("items"))


def load_schema(name: str) -> dict[str, Any]:
    """A form's JSON Schema as its file says, every number bounded (NUMBER_LIMIT) where the file sets no bound."""
    with open(SCHEMAS_DIR / f"{name}.json", encoding="utf-8") as fh:
        schema = json.load(fh)
    _bound_numbers(schema)
    return schema


def compile_validator(schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


@dataclass(frozen=True)
class MasterForm:
    """A catalog synced through SyncData (`set*`) and pulled through GetData (`get*`).

    Declared in forms/ and never changed: load() compiles a new MasterForm, which the registry serves.
    """

    name: str
    get_name: str
    table: str
    key: tuple[str, ...]
    description: str = ""
    aliases: tuple[str, ...] = ()
    get_aliases: tuple[str, ...] = ()
    schema_name: str | None = None
    endpoint: str = SYNC_DATA
    # Business checks JSON Schema cannot say (one field against another): each takes a validated record
    # and yields (JSON Pointer, message) for what is wrong.
    checks: tuple[Check, ...] = ()

    # Filled by load(), in the new form it returns (empty in the declaration). The compiled validators and
    # reader are left out of comparisons: they follow from `schema`, which is compared.
    schema: dict[str, Any] = field(default_factory=dict, repr=False)
    columns: tuple[Column, ...] = field(default=(), repr=False)
    validator: Any = field(default=None, repr=False, compare=False)
    delete_validator: Any = field(default=None, repr=False, compare=False)
    reader: Any = field(default=None, repr=False, compare=False)  # lenient.Reader
    # The record schema applied to a whole `data` list in one call: most requests are all valid and spelled
    # as the catalog spells them, and one call costs less than a call per record.
    batch_validator: Any = field(default=None, repr=False, compare=False)
    # How a record becomes a row: the fields in column order, then (position, default, converter or None)
    # for the columns that have a default or need their values converted.
    row_fields: tuple[str, ...] = field(default=(), repr=False)
    row_fixes: tuple[tuple[int, Any, Callable[[Any], Any] | None], ...] = field(default=(), repr=False)
    field_map: dict[str, str] = field(default_factory=dict, repr=False)
    by_field: dict[str, Column] = field(default_factory=dict, repr=False)
    sql: dict[str, str] = field(default_factory=dict, repr=False)
    # The codes among a batch's deletes that live vouchers still use (gateway/references.py, given once every
    # form is loaded); None when no voucher form refers to this catalog.
    guard_sql: str | None = field(default=None, repr=False)

    def load(self) -> MasterForm:
        """The form compiled: a new MasterForm with its schema, columns, validators and statements filled in.
        The declaration is left as written, so loading it again gives an equal form."""
        schema = load_schema(self.schema_name or self.name)
        if schema.get("additionalProperties") is not False:
            raise ValueError(f"schema of {self.name} must set additionalProperties: false")
        props: dict[str, Any] = schema["properties"]
        required = set(schema.get("required", ()))
        missing_key = [k for k in self.key if k not in required]
        if missing_key:
            raise ValueError(f"{self.name}: key fields {missing_key} must be required in the schema")
        columns = tuple(
            Column(
                field=fname,
                name=str(prop.get("x-column") or snake_case(fname)),
                pgtype=_pgtype(prop),
                default=prop.get("default"),
                required=fname in required,
                needs_convert=_needs_convert(prop),
            )
            for fname, prop in props.items()
        )
        field_map = {c.field.lower(): c.field for c in columns}
        if len(field_map) != len(columns):
            raise ValueError(f"{self.name}: two fields differ only by case")
        dialect = schema.get("$schema", "https://json-schema.org/draft/2020-12/schema")
        # A delete needs only the key; the record's other fields may come along and are ignored.
        delete_schema = {
            "$schema": dialect,
            "type": "object",
            "properties": {k: (props[k] if k in self.key else {}) for k in props},
            "required": list(self.key),
            "additionalProperties": False,
        }
        form = replace(
            self,
            schema=schema,
            columns=columns,
            by_field={c.field: c for c in columns},
            field_map=field_map,
            validator=compile_validator(schema),
            reader=compile_reader(schema, passthrough=("action",)),
            # The record schema embedded as a resource of its own ($id), so references inside it still resolve.
            batch_validator=compile_validator({
                "$schema": dialect,
                "type": "array",
                "items": {**schema, "$id": f"urn:gateway:form:{self.name}"},
            }),
            row_fields=tuple(c.field for c in columns),
            row_fixes=tuple((i, c.default, c.convert if c.needs_convert else None)
                            for i, c in enumerate(columns) if c.default is not None or c.needs_convert),
            delete_validator=compile_validator(delete_schema),
        )
        return replace(form, sql=form._build_sql())  # the statements read the compiled columns

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.by_field[k] for k in self.key)

    # What GetData reads: a table of its own (no scope within a shared table), rows built from the columns,
    # and the change feed under the table's name.
    scope: tuple[tuple[str, str], ...] = ()
    document_column: str | None = None

    @property
    def feed_name(self) -> str:
        return self.table

    @property
    def data_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.field not in self.key)

    def sync_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def get_names(self) -> tuple[str, ...]:
        return (self.get_name, *self.get_aliases)

    async def pull(self, conn: Any, tenant_id: int, body: dict[str, Any], *, pool: Any = None,
                   cursors: Any = None) -> Any:
        """GetData of this catalog (gateway/query.py, which builds on this module: imported here)."""
        from .query import get

        return await get(conn, self, tenant_id, body, pool=pool, cursors=cursors)

    def key_text(self, key: tuple[Any, ...]) -> str | None:
        """The key as errors report it (parts joined by '|'), or None while a part is missing or not text."""
        if not all(isinstance(k, str) for k in key):
            return None
        return "|".join(key)

    @property
    def stage_table(self) -> str:
        return f"stage_{self.table}"

    def _build_sql(self) -> dict[str, str]:
        table = ident(self.table)
        stage = ident(self.stage_table)
        cols = [ident(c.name) for c in self.columns]
        keys = [ident(c.name) for c in self.key_columns]
        data = [ident(c.name) for c in self.data_columns]
        key_params = ", ".join(f"${i + 3}::{c.pgtype}[]" for i, c in enumerate(self.key_columns))
        # Rows are COPYed into a per-connection temporary table, then merged in one statement. Measured
        # faster than unnest() of one array per column; ON COMMIT DELETE ROWS empties it at every commit.
        stage_create = (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ("
            + ", ".join(f"{ident(c.name)} {c.pgtype}" for c in self.columns)
            + ") ON COMMIT DELETE ROWS"
        )
        def merge_from(source: str) -> str:
            return (
                f"INSERT INTO {table} AS t (tenant_id, {', '.join(cols)}, deleted, change_seq, updated_at)\n"
                f"SELECT $1, {', '.join('s.' + c for c in cols)}, false, (SELECT id FROM c), now()\n"
                # Keys in one order in every transaction, so that concurrent batches do not deadlock.
                f"FROM {source} ORDER BY {', '.join('s.' + k for k in keys)}\n"
                f"ON CONFLICT (tenant_id, {', '.join(keys)}) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in data)
                + ", deleted = false, change_seq = EXCLUDED.change_seq, updated_at = EXCLUDED.updated_at\n"
                f"WHERE ({', '.join('t.' + c for c in data)}, t.deleted) IS DISTINCT FROM"
                f" ({', '.join('EXCLUDED.' + c for c in data)}, false)\n"
                f"RETURNING (xmax = 0) AS inserted, {', '.join('t.' + k for k in keys)}"
            )

        merge = merge_from(f"{stage} AS s")
        # A few records (a point-of-sale request carries one) go as one array per column: one statement, where
        # COPY into the staging table costs a round trip of its own and a temporary table write.
        arrays = ", ".join(f"${i + 3}::{c.pgtype}[]" for i, c in enumerate(self.columns))
        merge_small = merge_from(f"unnest({arrays}) AS s({', '.join(cols)})")
        delete = (
            f"UPDATE {table} AS t SET deleted = true, change_seq = (SELECT id FROM c), updated_at = now()\n"
            f"FROM unnest({key_params}) AS u({', '.join(keys)})\n"
            f"WHERE t.tenant_id = $1 AND "
            + " AND ".join(f"t.{k} = u.{k}" for k in keys)
            + f" AND NOT t.deleted\nRETURNING false AS inserted, {', '.join('t.' + k for k in keys)}"
        )
        # The stored rows of a batch's keys, locked in key order: taken first by a batch that both upserts and
        # deletes, whose two statements would otherwise lock in two runs of key order, against the one run of
        # another batch (a deadlock).
        # Key by key in the keys' order, each a look-up by primary key (a scan of the primary key would give
        # that order too, over all the tenant's rows, and is what the planner picks for a never-analysed table).
        lock = (
            "SELECT 1 FROM (SELECT * FROM unnest("
            + ", ".join(f"${i + 2}::{c.pgtype}[]" for i, c in enumerate(self.key_columns))
            + f") AS u({', '.join(keys)}) ORDER BY {', '.join(str(i + 1) for i in range(len(keys)))}) u"
            + f" CROSS JOIN LATERAL (SELECT 1 FROM {table} AS t WHERE t.tenant_id = $1 AND "
            + " AND ".join(f"t.{k} = u.{k}" for k in keys)
            + " OFFSET 0) r FOR NO KEY UPDATE OF r"
        )
        # Each statement takes one change number (c), stamps it on the records it changes and appends their
        # keys under that number to the change feed, in the same transaction.
        number = "c AS (SELECT nextval('change_seq') AS id)"
        # A statement that is its own transaction (a few records, no deletes) takes the tenant's gate itself,
        # before anything gives the transaction an id (nextval does): see gateway/feed.py.
        gated = f"g AS ({_statement('reference_gate_shared')}), c AS (SELECT nextval('change_seq') AS id FROM g)"
        log = (
            "logged AS (INSERT INTO change_log (id, tenant_id, tbl, keys)"
            # One array of key parts (as text) per record, aggregated as an SQL array and turned into jsonb
            # once: measured about 0.2 ms less per 1,000 keys than jsonb_agg(jsonb_build_array(...)).
            f" SELECT (SELECT id FROM c), $1, $2, to_jsonb(array_agg(ARRAY[{', '.join(k + '::text' for k in keys)}])) FROM w"
            " HAVING count(*) > 0)"
        )
        counts = "SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS changed FROM w"
        keyed = f"SELECT inserted, {', '.join(keys)} FROM w"
        return {
            "stage_create": stage_create,
            # Counts only; the keys come back when per-record outcomes are asked for.
            "upsert": f"WITH {number}, w AS ({merge}), {log}\n{counts}",
            "upsert_keys": f"WITH {number}, w AS ({merge}), {log}\n{keyed}",
            "upsert_small": f"WITH {gated}, w AS ({merge_small}), {log}\n{counts}",
            "upsert_small_keys": f"WITH {gated}, w AS ({merge_small}), {log}\n{keyed}",
            "delete": f"WITH {number}, w AS ({delete}), {log}\n{keyed}",
            "lock": lock,
        }


def _statement(name: str) -> str:
    """A named statement of sql/queries.sql, to be used inside another: without comments or semicolon."""
    from .db import QUERIES

    lines = [line for line in QUERIES[name].splitlines() if not line.lstrip().startswith("--")]
    return " ".join(lines).strip().rstrip(";")


class Form(Protocol):
    """What the registry, the endpoints and GetData dispatch on: master forms (MasterForm), voucher forms
    (vouchers.VoucherForm) and reports (reports.ReportForm)."""

    @property
    def name(self) -> str: ...

    @property
    def get_name(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    def sync_names(self) -> tuple[str, ...]: ...

    def get_names(self) -> tuple[str, ...]: ...

    def load(self) -> Form:
        """The form compiled for serving, as a new object: the declaration is never changed."""
        ...

    async def pull(self, conn: Any, tenant_id: int, body: dict[str, Any], *, pool: Any = None,
                   cursors: Any = None) -> Any:
        """The answer to GetData: its fields, or a response streamed as it is sent."""


class Registry:
    """Forms by endpoint and name. Names match case-insensitively; duplicates fail loudly."""

    def __init__(self) -> None:
        self.forms: list[Form] = []
        self._routes: dict[str, dict[str, tuple[Form, str]]] = {e: {} for e in ENDPOINTS}
        self._canonical: dict[str, list[str]] = {e: [] for e in ENDPOINTS}

    def register(self, form: Form) -> None:
        self.forms.append(form)
        if form.sync_names():  # reports are read-only: GetData names only
            self._add(form.endpoint, form.sync_names(), form, "sync")
        self._add(GET_DATA, form.get_names(), form, "get")

    def _add(self, endpoint: str, names: Iterable[str], form: Form, op: str) -> None:
        names = list(names)
        for name in names:
            lowered = name.lower()
            for routes in self._routes.values():
                if lowered in routes:
                    raise ValueError(f"form name {name!r} is registered twice")
            self._routes[endpoint][lowered] = (form, op)
        self._canonical[endpoint].append(names[0])

    def known(self, endpoint: str) -> list[str]:
        return sorted(self._canonical[endpoint])

    def resolve(self, endpoint: str, name: Any) -> tuple[Form, str]:
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("Field 'form' is required and must be a form name")
        lowered = name.strip().lower()
        hit = self._routes[endpoint].get(lowered)
        if hit is not None:
            return hit
        for other, routes in self._routes.items():
            if lowered in routes:
                raise BadRequest(f"Form '{shorten(name)}' belongs to /api/{other}, not /api/{endpoint}",
                                 endpoint=f"/api/{other}")
        raise FormNotFound(f"Form '{shorten(name)}' does not exist", forms=self.known(endpoint))


def build_registry(module_names: Iterable[str]) -> Registry:
    """Forms from the modules' FORMS lists, each compiled by load() (a voucher form with its posting rule) into
    a new object that the registry holds; the declarations in the modules stay as written."""
    loaded: list[Form] = []
    for module_name in module_names:
        module = import_module(module_name)
        loaded += [form.load() for form in getattr(module, "FORMS", ())]
    names = {form.name for form in loaded}
    for form in loaded:
        paid = getattr(getattr(form, "posting", None), "allocates", None)
        if paid is not None and paid not in names:
            # A rule allocating to a misspelt or unknown form would leave every allocation pointing at
            # nothing: refuse to load.
            raise ValueError(f"{form.name}: its posting rule allocates to {paid!r}, which is no registered form")
    from .references import attach

    registry = Registry()
    for form in attach(loaded):
        registry.register(form)
    return registry
