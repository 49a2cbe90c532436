"""SyncVoucher: documents with a header and detail lines, each replaced whole in one transaction.

Stages, as for masters: normalise names and validate (JSON Schema, CPU only) -> check against the database
(referenced masters exist, currency rounding of totals, locked period) -> write (missing numbers taken first,
then in one transaction headers merged in key order and the lines and postings of the vouchers that changed
replaced, built from the request's own arrays) -> counts. A voucher's `Status: "0"` cancels it: its lines and
postings go, its header stays as a tombstone for pullers. No statement reads stored rows by (tenant, form):
each starts from the batch's keys, so a never-analysed table is planned as well as an analysed one.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from typing import Any

import asyncpg

from . import costing, grni, posting, query, settlement
from .db import QUERIES
from .engine import SyncOptions, WriteResult, json_pointer
from .errors import MESSAGE_CHARS, shorten
from .feed import Cursors
from .forms import SYNC_VOUCHER, Column, compile_validator, load_schema
from .lenient import Warnings, compile_reader
from .references import GATE_SHARED, live_codes

# Header fields with a typed column of `voucher` (for checks and GetData filters); the whole document is
# kept as sent besides.
HEADER_COLUMNS: dict[str, tuple[str, str]] = {
    "VoucherId": ("voucher_id", "text"),
    "VoucherNumber": ("voucher_number", "text"),
    "VoucherDate": ("voucher_date", "date"),
    "Currency": ("currency", "text"),
    "ExchangeRate": ("exchange_rate", "numeric"),
    "TotalAmount": ("total_amount", "numeric"),
    "Description": ("description", "text"),
}
# Line fields with a typed column of `voucher_line`.
LINE_COLUMNS: dict[str, tuple[str, str]] = {
    "RefNumber": ("line_no", "integer"),
    "ItemCode": ("item_code", "text"),
    "Uom": ("uom", "text"),
    "SiteCode": ("site_code", "text"),
    "ToSiteCode": ("to_site_code", "text"),
    "Quantity": ("quantity", "numeric"),
    "UnitPrice": ("unit_price", "numeric"),
    "Amount": ("amount", "numeric"),
    "Discount": ("discount", "numeric"),
    "TaxRate": ("tax_rate", "numeric"),
    "TaxAmount": ("tax_amount", "numeric"),
    "TotalAmount": ("total_amount", "numeric"),
    "AccountCode": ("account_code", "text"),
    "DebitAccount": ("debit_account", "text"),
    "CreditAccount": ("credit_account", "text"),
    "Debit": ("debit", "numeric"),
    "Credit": ("credit", "numeric"),
    "JobCode": ("job_code", "text"),
    "DeptCode": ("dept_code", "text"),
    "ContractCode": ("contract_code", "text"),
    "ExpenseCode": ("expense_code", "text"),
    "TaxCode": ("tax_code", "text"),
    "CustomerCode": ("customer_code", "text"),
    "SaleInvId": ("sale_invoice_id", "text"),  # a sale return line: the sales invoice (and line) it gives back
    "SaleInvRefNumber": ("sale_invoice_line", "integer"),
    "ReceiptId": ("receipt_id", "text"),  # a purchase invoice line: the goods receipt (and line) it invoices
    "ReceiptRefNumber": ("receipt_line", "integer"),
}
DETAIL = "detail"
# Significant digits of the sums the checks compute: enough for any sum of bounded amounts to be exact.
EXACT_DIGITS = 200
# Fields that hold money in the voucher's currency, in the header and in every list (detail, tax,
# allocation): at most the currency's decimal places. Quantities, prices and rates are not money.
AMOUNT_FIELDS = frozenset({"Amount", "Discount", "TaxAmount", "TotalAmount", "Debit", "Credit", "TotalNetAmount",
                           "TotalDiscountAmount", "TotalTaxAmount"})
# An exchange rate's declared precision: at most 20 digits before the decimal point and 10 after it.
RATE_INTEGER_DIGITS = 20
RATE_DECIMALS = 10


@dataclass(frozen=True)
class Ref:
    """A code in the voucher that must name a live record of one of the given master catalogs.

    `path` is a header field ("CustomerCode") or "<list>/<Field>" for that field of every item of a list
    ("detail/ItemCode"); `targets` are (table, key column) pairs, any of which may hold the code.
    """

    path: str
    targets: tuple[tuple[str, str], ...]

    @property
    def catalogs(self) -> str:
        return " or ".join(t for t, _ in self.targets)


@dataclass(frozen=True)
class VoucherForm:
    """A voucher form synced through SyncVoucher and pulled through GetData.

    Declared in forms/vouchers.py and never changed: load() compiles a new VoucherForm (schema, columns,
    posting rule and write statement), which the registry serves.
    """

    name: str
    get_name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    get_aliases: tuple[str, ...] = ()
    partner: str | None = None  # the header field naming the partner, e.g. CustomerCode
    references: tuple[Ref, ...] = ()
    # (header field, line field) pairs: the header total must equal the sum of the lines.
    totals: tuple[tuple[str, str], ...] = ()
    balanced: bool = False  # journal: the lines' Debit and Credit sums are equal
    # The tax total: (header field, line field or "<list>/<field>"). It may differ from the lines' sum by
    # half a unit of the currency's last decimal per line (VAT worked out on the invoice total).
    tax_total: tuple[str, str] | None = None
    # The grand total: (header field, ((header field, +1 or -1), ...)); it must equal that sum exactly, so
    # that what the voucher posts balances.
    grand_total: tuple[str, tuple[tuple[str, int], ...]] | None = None
    # (field, other field) pairs that must differ on every line (a transfer's SiteCode and ToSiteCode).
    distinct_in_line: tuple[tuple[str, str], ...] = ()
    posting: Any = None  # posting.Posting: what the voucher writes to the ledger, stock and allocations
    endpoint: str = SYNC_VOUCHER
    # What GetData needs: the shared table, this form's scope in it, the key, the typed header columns.
    table: str = field(default="voucher", init=False)
    key: tuple[str, ...] = field(default=("VoucherId",), init=False)
    document_column: str = field(default="document", init=False)

    # Filled by load(), in the new form it returns (empty in the declaration). The compiled validators and
    # reader are left out of comparisons: they follow from `schema`, which is compared.
    schema: dict[str, Any] = field(default_factory=dict, repr=False)
    validator: Any = field(default=None, repr=False, compare=False)
    delete_validator: Any = field(default=None, repr=False, compare=False)
    reader: Any = field(default=None, repr=False, compare=False)  # lenient.Reader
    columns: tuple[Column, ...] = field(default=(), repr=False)
    by_field: dict[str, Column] = field(default_factory=dict, repr=False)
    field_map: dict[str, str] = field(default_factory=dict, repr=False)
    line_fields: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    has_units: bool = field(default=False, repr=False)  # lines name an item and its unit
    # The money fields of the form (AMOUNT_FIELDS): header fields, and "<list>/<Field>" for those of a list.
    amount_paths: tuple[str, ...] = field(default=(), repr=False)
    has_tax_codes: bool = field(default=False, repr=False)  # lines name a tax code beside their TaxRate
    write_sql: str | None = field(default=None, repr=False)  # lines and postings of a batch: write_statement()

    @property
    def feed_name(self) -> str:
        return self.name

    @property
    def scope(self) -> tuple[tuple[str, str], ...]:
        return (("form", self.name),)

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return (self.by_field["VoucherId"],)

    def sync_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def get_names(self) -> tuple[str, ...]:
        return (self.get_name, *self.get_aliases)

    async def pull(self, conn: asyncpg.Connection, tenant_id: int, body: dict[str, Any], *,
                   pool: asyncpg.Pool | None = None, cursors: Cursors | None = None) -> Any:
        """GetData of this form's vouchers, each as it was synced."""
        return await query.get(conn, self, tenant_id, body, pool=pool, cursors=cursors)  # type: ignore[arg-type]

    def load(self) -> VoucherForm:
        """The form compiled: a new VoucherForm with its schema, columns, built posting rule and write statement.
        The declaration (and the rule it names, which other forms may share) is left as written."""
        schema = load_schema(self.name)
        props = schema["properties"]
        if schema.get("additionalProperties") is not False or DETAIL not in props:
            raise ValueError(f"schema of {self.name} must set additionalProperties: false and have 'detail'")
        header = dict(HEADER_COLUMNS)
        if self.partner:
            header[self.partner] = ("partner_code", "text")
        columns = tuple(
            Column(field=f, name=col, pgtype=t, default=props[f].get("default"), required=f in schema["required"])
            for f, (col, t) in header.items() if f in props
        )
        line_props = props[DETAIL]["items"]["properties"]
        form = replace(
            self,
            schema=schema,
            validator=compile_validator(schema),
            delete_validator=compile_validator({
                "type": "object",
                "properties": {k: (props[k] if k in ("VoucherId", "Status") else {}) for k in props},
                "required": ["VoucherId"],
                "additionalProperties": False,
            }),
            reader=compile_reader(schema),
            columns=columns,
            by_field={c.field: c for c in columns},
            field_map={c.field.lower(): c.field for c in columns},
            line_fields=tuple((f, col, t) for f, (col, t) in LINE_COLUMNS.items() if f in line_props),
            has_units="ItemCode" in line_props and "Uom" in line_props,
            has_tax_codes="TaxCode" in line_props and "TaxRate" in line_props,
            amount_paths=(*(f for f in props if f in AMOUNT_FIELDS),
                          *(f"{name}/{f}" for name, prop in props.items() if prop.get("type") == "array"
                            for f in prop.get("items", {}).get("properties", {}) if f in AMOUNT_FIELDS)),
            posting=self.posting.build() if self.posting is not None else None,
        )
        # Built here, once per load, from the compiled line fields and rule: nothing is filled in later.
        return replace(form, write_sql=write_statement(form))


# --- preparing a batch (no database) ---------------------------------------------------------------------

@dataclass
class VoucherBatch:
    upserts: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # id -> (index, document)
    deletes: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed_indexes: set[int] = field(default_factory=set)
    superseded: int = 0
    warnings: Warnings = field(default_factory=Warnings)
    # Index in `data` of the occurrence of each voucher id that is written (the last valid one).
    index_of: dict[str, int] = field(default_factory=dict)
    # The voucher id of every record whose id could be read (kept when per-record outcomes are asked for).
    key_at: dict[int, str] = field(default_factory=dict)

    def fail(self, index: int, key: Any, path: str, message: str) -> None:
        self.errors.append({"index": index, "key": shorten(key) if isinstance(key, str) else None,
                            "path": shorten(path, tail=64), "message": shorten(message, MESSAGE_CHARS, tail=64)})
        self.failed_indexes.add(index)


def _is_cancel(status: Any) -> bool:
    return status in ("0", 0)


def prepare(form: VoucherForm, data: list[Any], strict: bool = False, keep_keys: bool = False) -> VoucherBatch:
    batch = VoucherBatch()
    warnings = None if strict else batch.warnings
    latest = batch.index_of
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            batch.fail(index, None, "", "Voucher must be a JSON object")
            continue
        doc = form.reader.read(record, index, warnings)
        key = doc.get("VoucherId")
        if keep_keys and isinstance(key, str):
            batch.key_at[index] = key
        cancel = _is_cancel(doc.get("Status"))
        validator = form.delete_validator if cancel else form.validator
        if not validator.is_valid(doc):
            for err in validator.iter_errors(doc):
                batch.fail(index, key, json_pointer(err.instance_path), err.message)
        elif not cancel:
            numbers = Counter(line.get("RefNumber") for line in doc[DETAIL])
            for i, line in enumerate(doc[DETAIL]):
                if numbers[line.get("RefNumber")] > 1:
                    batch.fail(index, key, f"/{DETAIL}/{i}/RefNumber",
                               f"RefNumber {line.get('RefNumber')} appears more than once in the voucher")
            for first, second in form.distinct_in_line:
                for i, item in enumerate(doc[DETAIL]):
                    if item.get(first) is not None and item.get(first) == item.get(second):
                        batch.fail(index, key, f"/{DETAIL}/{i}/{second}", f"{second} must differ from {first}")
            if form.balanced:
                with localcontext(prec=EXACT_DIGITS):
                    debit = sum((line.get("Debit") or 0 for line in doc[DETAIL]), Decimal(0))
                    credit = sum((line.get("Credit") or 0 for line in doc[DETAIL]), Decimal(0))
                if debit != credit:
                    batch.fail(index, key, f"/{DETAIL}", f"debits {debit} do not equal credits {credit}")
        if index in batch.failed_indexes:
            if isinstance(key, str) and key in latest:  # an invalid last occurrence: the key is not written
                batch.superseded += 1
                batch.upserts.pop(key, None)
                batch.deletes.pop(key, None)
                del latest[key]
            continue
        if key in latest:
            batch.superseded += 1
            batch.upserts.pop(key, None)
            batch.deletes.pop(key, None)
        latest[key] = index
        if cancel:
            batch.deletes[key] = index
        else:
            for name, prop in form.schema["properties"].items():
                if name not in doc and "default" in prop:
                    doc[name] = prop["default"]
            batch.upserts[key] = (index, doc)
    return batch


# --- checks against the database --------------------------------------------------------------------------

def _places(doc: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(JSON Pointer, value) for a header field, or for "<list>/<Field>" that field in every list item."""
    if "/" in path:
        table, name = path.split("/", 1)
        return [(f"/{table}/{i}/{name}", item.get(name)) for i, item in enumerate(doc.get(table) or ())]
    return [(f"/{path}", doc.get(path))]


def _values(doc: dict[str, Any], path: str) -> list[Any]:
    """The values of _places() without their pointers, which only an error needs."""
    if "/" in path:
        table, name = path.split("/", 1)
        return [item.get(name) for item in doc.get(table) or ()]
    return [doc.get(path)]


def _codes(ref: Ref, doc: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(p, v) for p, v in _places(doc, ref.path) if v not in (None, "")]


_NO_CODE = frozenset({None, ""})


def _all_known(values: list[Any], known: set[str]) -> bool:
    try:
        return not set(values).difference(known, _NO_CODE)
    except TypeError:  # an unhashable value: the per-value path reports it
        return False


async def check(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch) -> None:
    """Set-based checks of the whole batch: one query per referenced catalog, then per voucher in memory."""
    docs = list(batch.upserts.items())
    found: dict[Ref, set[str]] = {}
    for ref in form.references:
        codes = sorted({code for _, (_, doc) in docs for code in _values(doc, ref.path)
                        if isinstance(code, str) and code})
        found[ref] = set()
        for table, column in ref.targets if codes else ():
            rows = await conn.fetch(live_codes(table, column), tenant_id, codes)
            found[ref].update(r["code"] for r in rows)
    tenant = await conn.fetchrow(QUERIES["voucher_tenant"], tenant_id)
    locked_until, base = tenant["locked_until"], tenant["base_currency"]
    for _, (index, doc) in docs:
        # Fast's default currency: the tenant's base currency, whose rate is 1.
        doc.setdefault("Currency", base)
        if doc["Currency"] == base:
            doc.setdefault("ExchangeRate", 1)
    currencies = {r["currency_code"]: r["decimal_places"] for r in await conn.fetch(
        QUERIES["voucher_currencies"], tenant_id, sorted({d["Currency"] for _, (_, d) in docs}))}
    units = await _item_units(conn, tenant_id, docs) if form.has_units else {}
    tax_rates = await _tax_rates(conn, tenant_id, docs) if form.has_tax_codes else {}

    for key, (index, doc) in docs:
        for ref in form.references:
            if _all_known(_values(doc, ref.path), found[ref]):
                continue
            for path, code in _codes(ref, doc):
                if code not in found[ref]:
                    batch.fail(index, key, path,
                               f"{ref.path.split('/')[-1]} '{code}' does not exist in {ref.catalogs}")
        if "ExchangeRate" not in doc:
            batch.fail(index, key, "/ExchangeRate",
                       f"ExchangeRate is required for {doc['Currency']}, which is not the base currency {base}")
        elif doc["Currency"] == base and Decimal(doc["ExchangeRate"]) != 1:
            batch.fail(index, key, "/ExchangeRate",
                       f"ExchangeRate must be 1 for the base currency {base}, got {doc['ExchangeRate']}")
        else:
            for message in _rate_errors(Decimal(doc["ExchangeRate"])):
                batch.fail(index, key, "/ExchangeRate", message)
        places = currencies.get(doc["Currency"])
        if places is None:
            batch.fail(index, key, "/Currency", f"Currency '{doc['Currency']}' does not exist in currency")
        else:
            for path, message in _total_errors(form, doc, places, tax_rates):
                batch.fail(index, key, path, message)
        for path, message in _unit_errors(doc, units):
            batch.fail(index, key, path, message)
        voucher_date = dt.date.fromisoformat(doc["VoucherDate"])
        if locked_until is not None and voucher_date <= locked_until:
            batch.fail(index, key, "/VoucherDate", f"VoucherDate {voucher_date} is in the period locked until "
                       f"{locked_until}")
    await _check_allocations(conn, form, tenant_id, batch, docs)
    await _check_receipts(conn, form, tenant_id, batch, docs)
    for key in [k for k, (i, _) in batch.upserts.items() if i in batch.failed_indexes]:
        del batch.upserts[key]
    if locked_until is not None and (batch.upserts or batch.deletes):
        # What is stored in the locked period stays as it is: no replacing, moving out or cancelling.
        rows = await conn.fetch(QUERIES["voucher_locked"], tenant_id, form.name,
                                sorted({*batch.upserts, *batch.deletes}),
                                locked_until)
        for r in rows:
            vid = r["voucher_id"]
            cancel = vid in batch.deletes
            index = batch.deletes.pop(vid) if cancel else batch.upserts.pop(vid)[0]
            batch.fail(index, vid, "/Status" if cancel else "/VoucherDate",
                       f"the stored voucher is dated {r['voucher_date']}, in the period locked until {locked_until}")


def _sum(doc: dict[str, Any], line_field: str) -> tuple[int | Decimal, int]:
    """The sum of a line field ("Amount", or "<list>/<field>"), and how many lines were summed (exact: whole
    numbers add up as integers, any Decimal among them makes it a Decimal)."""
    values = _values(doc, line_field if "/" in line_field else f"{DETAIL}/{line_field}")
    return sum((v or 0 for v in values), 0), len(values)


def _total_errors(form: VoucherForm, doc: dict[str, Any], places: int,
                  tax_rates: dict[str, Decimal]) -> list[tuple[str, str]]:
    """The voucher's amounts in its currency (`places` decimals: 0 for VND): each within those decimals, the
    header totals equal to the lines', each priced line's own arithmetic right."""
    quantum = Decimal(1).scaleb(-places)
    # Exact sums: numbers may have 20 digits before the point (forms.NUMBER_LIMIT) and many after it, beyond
    # the 28 significant digits of decimal's default context.
    with localcontext(prec=EXACT_DIGITS):
        return [*_amount_errors(form, doc, places), *_totals_checked(form, doc, quantum),
                *_line_errors(doc, quantum, tax_rates)]


def _decimals(value: Any) -> int:
    """The decimal places a number needs (1.50 needs 1, 2.0 none), read from its digits: no rounding."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return 0
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or not any(digits):
        return 0
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - zeros)


def _amount_errors(form: VoucherForm, doc: dict[str, Any], places: int) -> list[tuple[str, str]]:
    """Money carries at most the currency's decimal places: what is posted is what was sent. (Whole numbers,
    most amounts, are passed over at once; a pointer is only made for a refusal.)"""
    problems = []
    for amount_path in form.amount_paths:
        table, _, name = amount_path.rpartition("/")
        items = enumerate(doc.get(table) or ()) if table else ((None, doc),)
        for i, item in items:
            value = item.get(name)
            if type(value) is Decimal and _decimals(value) > places:
                path = f"/{table}/{i}/{name}" if table else f"/{name}"
                message = f"{name} {value} has more decimal places than the {places} of {doc['Currency']}"
                problems.append((path, message))
    return problems


def _rate_errors(rate: Decimal) -> list[str]:
    """An exchange rate within its declared precision (RATE_INTEGER_DIGITS, RATE_DECIMALS) and above 0."""
    problems = []
    if rate <= 0:
        problems.append(f"ExchangeRate must be more than 0, got {rate}")
    elif rate.adjusted() >= RATE_INTEGER_DIGITS:
        problems.append(f"ExchangeRate {rate} has more than {RATE_INTEGER_DIGITS} digits before the decimal point")
    if _decimals(rate) > RATE_DECIMALS:
        problems.append(f"ExchangeRate {rate} has more than {RATE_DECIMALS} decimal places")
    return problems


def _line_errors(doc: dict[str, Any], quantum: Decimal, tax_rates: dict[str, Decimal]) -> list[tuple[str, str]]:
    """Each line's own arithmetic, on the lines that have the fields: Discount not above Amount; TaxAmount
    is (Amount - Discount) x TaxRate / 100 within half a unit of the currency's last decimal (a negative
    rate, not taxable or not declared, taxes nothing); TaxRate is the rate of the line's TaxCode; TotalAmount
    is Amount - Discount + TaxAmount exactly. The same for the VAT invoice lines (`tax`) of a purchase.

    Figures are used as read (int or Decimal, exact either way): whole amounts, most of them, stay in integer
    arithmetic, and the tax is compared without dividing (100 x TaxAmount against net x TaxRate)."""
    allowance = _whole(quantum * 50)  # half a unit, x 100
    problems = []
    for i, line in enumerate(doc.get(DETAIL) or ()):
        amount = line.get("Amount")
        if amount is None:
            continue
        discount = line.get("Discount") or 0
        tax, rate, total = line.get("TaxAmount"), line.get("TaxRate"), line.get("TotalAmount")
        if discount > amount:
            message = f"Discount {discount} of line {line.get('RefNumber')} is more than its Amount {amount}"
            problems.append((f"/{DETAIL}/{i}/Discount", message))
        if tax is not None and rate is not None:
            problems += _tax_errors(f"/{DETAIL}/{i}/TaxAmount", f"line {line.get('RefNumber')}",
                                    "(Amount - Discount)", amount - discount, rate, tax, allowance)
        code = line.get("TaxCode")
        if code is not None and rate is not None and code in tax_rates and tax_rates[code] != rate:
            message = (f"TaxRate {rate} of line {line.get('RefNumber')} is not the rate of TaxCode '{code}' "
                       f"({tax_rates[code]})")
            problems.append((f"/{DETAIL}/{i}/TaxRate", message))
        if total is not None and tax is not None and total != amount - discount + tax:
            message = (f"TotalAmount {total} of line {line.get('RefNumber')} is not Amount - Discount + TaxAmount "
                       f"({amount} - {discount} + {tax} = {amount - discount + tax})")
            problems.append((f"/{DETAIL}/{i}/TotalAmount", message))
    for i, vat in enumerate(doc.get("tax") or ()):
        net, rate, tax = vat.get("TotalNetAmount"), vat.get("TaxRate"), vat.get("TaxAmount")
        if net is not None and rate is not None and tax is not None:
            problems += _tax_errors(f"/tax/{i}/TaxAmount", f"VAT invoice line {i + 1}", "TotalNetAmount", net, rate,
                                    tax, allowance)
    return problems


def _whole(value: Decimal) -> int | Decimal:
    """An integer for a whole Decimal (comparisons with ints stay in integer arithmetic), else the Decimal."""
    return int(value) if value == value.to_integral_value() else value


def _tax_errors(path: str, what: str, base_name: str, base: Any, rate: Any, tax: Any,
                allowance: int | Decimal) -> list[tuple[str, str]]:
    """TaxAmount against base x rate / 100, within `allowance` / 100 (half a unit of the last decimal)."""
    if abs(tax * 100 - (base * rate if rate > 0 else 0)) <= allowance:
        return []
    expected = Decimal(base) * Decimal(rate) / 100 if rate > 0 else Decimal(0)
    message = (f"TaxAmount {tax} of {what} is not {base_name} x TaxRate / 100 ({base} x {rate} / 100 = "
               f"{expected}) within the rounding allowance of {(Decimal(allowance) / 100).normalize()}")
    return [(path, message)]


def _totals_checked(form: VoucherForm, doc: dict[str, Any], quantum: Decimal) -> list[tuple[str, str]]:
    problems = []
    for header_field, line_field in form.totals:
        total, _ = _sum(doc, line_field)
        stated = Decimal(doc.get(header_field) or 0)
        if total != stated:
            problems.append((f"/{header_field}",
                             f"{header_field} {stated} is not the sum of the lines' {line_field} ({total})"))
    if form.tax_total is not None:
        # VAT worked out on the invoice total differs from the sum of per-line VAT by rounding only: at most
        # half a unit of the last decimal per line. The header's figure is the one posted.
        header_field, line_field = form.tax_total
        total, lines = _sum(doc, line_field)
        stated = Decimal(doc.get(header_field) or 0)
        allowance = quantum * lines / 2
        if abs(stated - total) > allowance:
            message = (f"{header_field} {stated} differs from the sum of the lines' {line_field} ({total}) by more "
                       f"than the rounding allowance of {allowance} ({lines} lines x half of {quantum})")
            problems.append((f"/{header_field}", message))
    if form.grand_total is not None:
        header_field, parts = form.grand_total
        expected = sum((sign * Decimal(doc.get(name) or 0) for name, sign in parts), Decimal(0))
        stated = Decimal(doc.get(header_field) or 0)
        if stated != expected:
            formula = " ".join(("+ " if sign > 0 else "- ") + name for name, sign in parts).lstrip("+ ")
            problems.append((f"/{header_field}", f"{header_field} {stated} is not {formula} ({expected})"))
    return problems


async def _item_units(conn: asyncpg.Connection, tenant_id: int,
                      docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> dict[str, tuple[str | None, set[str]]]:
    """Per stock-tracked item of the batch (the ones that move stock): its base unit and the units it has a
    conversion for."""
    codes = sorted({line.get("ItemCode") for _, (_, d) in docs for line in d.get(DETAIL) or ()
                    if isinstance(line.get("ItemCode"), str)})
    if not codes:
        return {}
    rows = await conn.fetch(QUERIES["voucher_item_units"], tenant_id, codes)
    return {r["item_code"]: (r["uom"], set(r["units"])) for r in rows}


async def _tax_rates(conn: asyncpg.Connection, tenant_id: int,
                     docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> dict[str, Decimal]:
    """The rate of every live tax code the batch's lines name beside a TaxRate, in one query."""
    codes = sorted({line["TaxCode"] for _, (_, d) in docs for line in d.get(DETAIL) or ()
                    if isinstance(line.get("TaxCode"), str) and line.get("TaxRate") is not None})
    if not codes:
        return {}
    return {r["tax_code"]: r["tax_rate"] for r in await conn.fetch(QUERIES["voucher_tax_rates"], tenant_id, codes)}


def _unit_errors(doc: dict[str, Any], units: dict[str, tuple[str | None, set[str]]]) -> list[tuple[str, str]]:
    """A line in another unit than its item's base unit needs the item's conversion for that unit: stock
    moves in base units."""
    problems = []
    for i, line in enumerate(doc.get(DETAIL) or ()):
        known = units.get(line.get("ItemCode"))
        uom = line.get("Uom")
        if known is None or not uom:
            continue  # an unknown item is reported by the reference check; a service moves no stock
        base, converted = known
        if base and uom != base and uom not in converted:
            message = (f"Uom '{uom}' of line {line.get('RefNumber')} has no UnitConversion to item "
                       f"'{line.get('ItemCode')}''s base unit '{base}'")
            problems.append((f"/{DETAIL}/{i}/Uom", message))
    return problems


async def _check_allocations(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                             docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> None:
    """Settlement: payments' allocations and returns citing invoices checked against the invoices (locked
    until the batch commits), invoices kept from changes that would undo what settles them, journal lines
    on control accounts given a partner (gateway/settlement.py)."""
    await settlement.check(conn, form, tenant_id, batch, docs)


async def _check_receipts(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                          docs: list[tuple[str, tuple[int, dict[str, Any]]]]) -> None:
    """Purchase invoice lines invoice no more of a goods receipt than it received and is not yet invoiced;
    a receipt that invoices cite keeps what they invoice (gateway/grni.py)."""
    if form.name == grni.INVOICE_FORM:
        await grni.check_invoices(conn, tenant_id, batch, docs)
    elif form.name == grni.RECEIPT_FORM:
        await grni.check_receipts(conn, tenant_id, batch, docs)


# --- writing -------------------------------------------------------------------------------------------

async def _cancel(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, ids: list[str]) -> list[str]:
    """The ids of the live vouchers among `ids`, now cancelled (tombstones)."""
    found = await conn.fetch(QUERIES["voucher_to_cancel"], tenant_id, form.name, ids)
    if not found:
        return []
    rows = [r["ctid"] for r in found]
    gone = [r["voucher_id"] for r in await conn.fetch(QUERIES["voucher_cancel_rows"], tenant_id, form.name, rows)]
    moved = sorted({r["voucher_id"] for r in found} - set(gone))
    if moved:
        gone += [r["voucher_id"] for r in await conn.fetch(QUERIES["voucher_cancel"], tenant_id, form.name, moved)]
    return sorted(gone)


def _to(pgtype: str, value: Any) -> Any:
    if value is None:
        return None
    if pgtype == "date":
        return dt.date.fromisoformat(value)
    if pgtype == "numeric":
        return Decimal(value)
    if pgtype == "integer":
        return int(value)
    return value if isinstance(value, str) else str(value)


# The typed header columns, in the order of voucher_upsert's arrays ($3 ... $11).
_HEADER_SOURCE = (
    "v AS MATERIALIZED (SELECT $1::integer AS tenant_id, $2::text AS form, u.*"
    " FROM unnest($3::text[], $4::text[], $5::date[], $6::text[], $7::text[], $8::numeric[], $9::numeric[],"
    " $10::text[], $11::jsonb[]) AS u(voucher_id, voucher_number, voucher_date, partner_code, currency,"
    " exchange_rate, total_amount, description, document))"
)


def _batch_sources(form: VoucherForm) -> tuple[str, str]:
    """The batch's own vouchers and lines as the CTEs `v` and `l` (see gateway/posting.py), and the insert of
    the lines from `l`: lines and postings come from the arrays the request sent, never from re-reading
    voucher_line by form."""
    cols = [col for _, col, _ in form.line_fields]
    params = ", ".join(f"${i + 13}::{_WIRE.get(t, t)}[]" for i, (_, _, t) in enumerate(form.line_fields))
    typed = ", ".join(f"u.{col}::{t} AS {col}" if t in _WIRE else f"u.{col}" for _, col, t in form.line_fields)
    lines = (f"l AS MATERIALIZED (SELECT $1::integer AS tenant_id, $2::text AS form, u.voucher_id, {typed}"
             f" FROM unnest($12::text[], {params}) AS u(voucher_id, {', '.join(cols)}))")
    insert = (f"INSERT INTO voucher_line (tenant_id, form, voucher_id, {', '.join(cols)})"
              f" SELECT tenant_id, form, voucher_id, {', '.join(cols)} FROM l")
    return f"{_HEADER_SOURCE},\n{lines}", insert


# Line amounts travel as text and are cast by PostgreSQL: encoding thousands of Decimals in the driver's
# binary format took a third of a worker's time; str() of the decoded number (int or Decimal, never a float)
# is exact and PostgreSQL's numeric input reads it as fast as the binary form.
_WIRE = {"numeric": "text"}


def _wire(pgtype: str, value: Any) -> Any:
    if pgtype == "numeric":
        return str(value)
    return _to(pgtype, value)


async def _number(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, ids: list[str],
                  docs: list[dict[str, Any]]) -> None:
    """Give vouchers sent without a VoucherNumber one (Fast assigns it when empty): the number a stored
    voucher already has, else the next of the tenant's counter for the form, as 6 or more digits."""
    missing = [(k, d) for k, d in zip(ids, docs) if not d.get("VoucherNumber")]
    if not missing:
        return
    stored = {r["voucher_id"]: r["voucher_number"]
              for r in await conn.fetch(QUERIES["voucher_stored_numbers"], tenant_id, form.name,
                                        [k for k, _ in missing])}
    new = [(k, d) for k, d in missing if k not in stored]
    last = await conn.fetchval(QUERIES["voucher_next_numbers"], tenant_id, form.name, len(new)) if new else 0
    for k, d in missing:
        if k in stored:
            d["VoucherNumber"] = stored[k]
    for offset, (_, d) in enumerate(new):
        d["VoucherNumber"] = str(last - len(new) + 1 + offset).zfill(6)


def write_statement(form: VoucherForm) -> str:
    """Lines and postings of a batch's changed vouchers, in one statement: built by load() from the compiled
    form, kept as its `write_sql`."""
    sources, insert_lines = _batch_sources(form)
    sql = (form.posting or _NO_POSTING).statement(sources, insert_lines)
    assert sql is not None  # the lines are always written
    return sql


_NO_POSTING = posting.Posting()
# Postings read `document` for header fields and the allocation list, never the lines: those go by arrays.
_NOT_POSTED = (DETAIL, "tax")


async def _write(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                 dry_run: bool) -> WriteResult:
    """The batch's checked vouchers written, inside the core's transaction (gateway/sync.py)."""
    ids = sorted(batch.upserts)
    docs = [batch.upserts[k][1] for k in ids]
    cancel_ids = sorted(batch.deletes)
    out = WriteResult()
    if cancel_ids and (ids or len(cancel_ids) > 1):
        # The stored vouchers of the batch locked first, in key order, as a master batch does (engine.write).
        await conn.execute(QUERIES["voucher_lock"], tenant_id, form.name, [*ids, *cancel_ids])
    if ids:
        if dry_run and not all(d.get("VoucherNumber") for d in docs):
            await _number(conn, form, tenant_id, ids, docs)  # the counter is rolled back with the dry run
        header = _header_arrays(form, ids, docs)
        rows = await conn.fetch(QUERIES["voucher_upsert"], tenant_id, form.name, *header)
        out.changed.update((r["voucher_id"], "inserted" if r["inserted"] else "updated") for r in rows)
        out.inserted = sum(1 for r in rows if r["inserted"])
        out.updated = len(rows) - out.inserted
        if out.updated:
            # Replace the lines of the stored vouchers that changed, whole: no orphan line survives. A
            # voucher just inserted has neither lines nor postings yet.
            await conn.execute(QUERIES["voucher_unpost_with_lines"], tenant_id, form.name,
                               sorted(r["voucher_id"] for r in rows if not r["inserted"]))
        if rows:
            await conn.execute(QUERIES["voucher_write_settings"])
            assert form.write_sql is not None, f"{form.name} is a declaration: write the form load() returns"
            await conn.execute(form.write_sql, tenant_id, form.name,
                               *_batch_arrays(form, batch, ids, docs, set(out.changed)))
    if cancel_ids:
        gone = await _cancel(conn, form, tenant_id, cancel_ids)
        out.changed.update((vid, "deleted") for vid in gone)
        out.deleted = len(gone)
        if gone:
            await conn.execute(QUERIES["voucher_unpost_with_lines"], tenant_id, form.name, gone)
    out.unchanged = len(ids) + len(cancel_ids) - out.inserted - out.updated - out.deleted
    return out


async def write(conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                dry_run: bool) -> WriteResult:
    """The batch's checked vouchers written and their stock movements costed (gateway/costing.py), inside the
    core's transaction.

    Under a savepoint: when outflows would leave less than nothing on hand (a tenant refusing negative stock),
    it is rolled back, the vouchers blamed are failed, and the rest written again (sync.py then refuses the
    whole batch in atomic mode).
    """
    if form.posting is None or not form.posting.moves:
        return await _write(conn, form, tenant_id, batch, dry_run)
    while True:
        keys = sorted({*batch.upserts, *batch.deletes})
        try:
            async with conn.transaction():
                before = await costing.stored_moves_locked(conn, tenant_id, form.name, keys)
                out = await _write(conn, form, tenant_id, batch, dry_run)
                shortfalls = await costing.recost(conn, tenant_id, form.name, out.changed, before)
                if shortfalls:
                    raise costing.NegativeStock(shortfalls)
                if form.name == grni.RECEIPT_FORM:  # the invoices citing a replaced receipt follow its value
                    await grni.repost_invoices(conn, tenant_id, sorted(k for k, c in out.changed.items()
                                                                       if c == "updated"))
            return out
        except costing.NegativeStock as short:
            _fail_short(batch, short.shortfalls)
            if len(batch.upserts) + len(batch.deletes) == len(keys):
                raise AssertionError("a shortfall blamed on no voucher of the batch") from short


def _fail_short(batch: VoucherBatch, shortfalls: list[costing.Shortfall]) -> None:
    """Fail the vouchers the shortfalls are blamed on, at the line of the item (or the cancel's Status)."""
    for s in shortfalls:
        for vid in s.culprits:
            own = vid == s.voucher_id
            if vid in batch.deletes:
                batch.fail(batch.deletes.pop(vid), vid, "/Status", s.message(own))
            elif vid in batch.upserts:
                index, doc = batch.upserts.pop(vid)
                lines = doc.get(DETAIL) or []
                at = next((i for i, line in enumerate(lines) if own and line.get("RefNumber") == s.line_no), None)
                if at is None:
                    at = next((i for i, line in enumerate(lines) if line.get("ItemCode") == s.item), None)
                batch.fail(index, vid, f"/{DETAIL}" if at is None else f"/{DETAIL}/{at}/Quantity", s.message(own))


def _header_arrays(form: VoucherForm, ids: list[str], docs: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        ids,
        [d.get("VoucherNumber") for d in docs],
        [dt.date.fromisoformat(d["VoucherDate"]) for d in docs],
        [d.get(form.partner) if form.partner else None for d in docs],
        [d["Currency"] for d in docs],
        [Decimal(d["ExchangeRate"]) for d in docs],
        [_to("numeric", d.get("TotalAmount")) for d in docs],
        [d.get("Description") for d in docs],
        docs,
    ]


def _batch_arrays(form: VoucherForm, batch: VoucherBatch, ids: list[str], docs: list[dict[str, Any]],
                  changed: set[str]) -> list[list[Any] | None]:
    """The `v` and `l` arrays of write_statement() for the vouchers that changed."""
    kept = [(k, d) for k, d in zip(ids, docs) if k in changed]
    header = _header_arrays(form, [k for k, _ in kept],
                            [{f: x for f, x in d.items() if f not in _NOT_POSTED} for _, d in kept])
    lines = [(k, line) for k, d in kept for line in d[DETAIL]]
    arrays: list[list[Any] | None] = [[k for k, _ in lines]]
    for f, _, t in form.line_fields:
        values = [line.get(f) for _, line in lines]
        if all(v is None for v in values):
            # unnest() pads a NULL array with NULLs to the longest one: nothing to encode for a column no line
            # uses (a sale's job, department, contract and expense codes, most of the time).
            arrays.append(None)
        elif t == "text":
            arrays.append([v if v is None or isinstance(v, str) else str(v) for v in values])
        else:
            arrays.append([None if v is None else _wire(t, v) for v in values])
    return header + arrays


# --- the core's view (gateway/sync.py) ------------------------------------------------------------------

class _Vouchers:
    """Vouchers, for the write core."""

    noun = "vouchers"

    def prepare(self, form: VoucherForm, data: list[Any], options: SyncOptions) -> VoucherBatch:
        return prepare(form, data, strict=options.strict, keep_keys=options.outcomes)

    def attempt(self, batch: VoucherBatch) -> VoucherBatch:
        return replace(batch, upserts=dict(batch.upserts), deletes=dict(batch.deletes), errors=list(batch.errors),
                       failed_indexes=set(batch.failed_indexes))

    def one_statement(self, batch: VoucherBatch, options: SyncOptions) -> bool:
        return False

    async def before(self, conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                     options: SyncOptions) -> None:
        # Numbers are taken before the writing transaction, each statement committing on its own, so that the
        # counter's row is locked for a moment rather than until the batch commits: concurrent requests of a
        # form do not wait for each other. As with a sequence, numbers taken by a voucher that is then refused
        # or rolled back are not given back (a gap in the numbering). A dry run numbers in its transaction.
        if options.dry_run or all(doc.get("VoucherNumber") for _, doc in batch.upserts.values()):
            return
        ids = sorted(batch.upserts)
        await _number(conn, form, tenant_id, ids, [batch.upserts[k][1] for k in ids])

    async def check(self, conn: asyncpg.Connection, form: VoucherForm, tenant_id: int,
                    batch: VoucherBatch) -> None:
        """Under the tenant's gate (shared), held to the commit: a master record the vouchers name cannot be
        deleted, nor the period locked, between these checks and the commit (gateway/references.py)."""
        await conn.execute(GATE_SHARED, tenant_id)
        if batch.upserts or batch.deletes:
            await check(conn, form, tenant_id, batch)

    async def write(self, conn: asyncpg.Connection, form: VoucherForm, tenant_id: int, batch: VoucherBatch,
                    options: SyncOptions) -> WriteResult:
        return await write(conn, form, tenant_id, batch, options.dry_run)

    def key_text(self, form: VoucherForm, key: Any) -> str | None:
        return key if isinstance(key, str) else None


VOUCHERS = _Vouchers()
