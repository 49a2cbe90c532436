"""Cost of sales: perpetual inventory at moving weighted average cost per item and site.

The posting rules write a voucher's stock movements uncosted (gateway/posting.py, Move). In the same
transaction, after the write, `recost` values the movements of the items the batch touched, from the first
position the batch changed (a movement written or removed) onward, in the order of the item's movements
(README, "Cost of sales"), across all the item's sites in one pass: a transfer's in takes its out's cost, a
return the cost of the sale it cites. The state before that position is the running quantity and value of the
last earlier movement of each site (an index lookup, not a sum over history). Only the rows whose cost or state
changed are written back, each set in one statement, with the cost entries (gl_entry source 'cost') of the
movements whose cost changed. A batch that appends movements after an item's last one reads and writes its own
movements only, however long the item's history.

The computation is in Python with Decimal: one read, one write, exact. Amounts are rounded to the base
currency's decimals as they are worked out, so the ledger and the stock report add up to the same figure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import asyncpg

from .db import QUERIES
from .posting import ROLE_DEFAULTS

# What becomes of an outflow beyond the stock on hand (tenant.negative_stock): refused (the default) or costed
# at the last average (tills that sell before the goods are received).
NEGATIVE_STOCK = ("refuse", "allow")
# The form a return's SaleInvId names.
SALE_FORM = "setSaleInvoice"
# Where a movement stands among its item's movements: date, place within the day, form, voucher, number.
Position = tuple[dt.date, int, str, str, int]
# Before every movement: an item's costing from its first movement.
FIRST: Position = (dt.date.min, -1, "", "", -(2**31))
# Significant digits of the running sums: any sum of bounded amounts and quantities stays exact.
_DIGITS = 200
# Cost entries of a movement: entry_no move_no x 4 - 3 .. move_no x 4 (its cost, then its write-off), as
# sql/queries.sql costing_replace_entries writes it out.
_SLOTS = 4

# The statements are sql/queries.sql's costing_*.


@dataclass(frozen=True)
class Shortfall:
    """An outflow that takes more than is on hand, and the vouchers of the batch it is blamed on."""

    form: str
    voucher_id: str
    line_no: int | None
    item: str
    site: str
    date: dt.date
    on_hand: Decimal
    requested: Decimal
    culprits: tuple[str, ...]  # voucher ids of the batch's form

    def message(self, own: bool) -> str:
        text = (f"Item {self.item} at site {self.site} on {self.date}: {number(self.on_hand)} on hand,"
                f" {number(self.requested)} requested")
        return text if own else f"{text} by {self.form} {self.voucher_id}"


class NegativeStock(Exception):
    """Raised inside the write's savepoint to roll it back: outflows would leave less than nothing on hand."""

    def __init__(self, shortfalls: list[Shortfall]) -> None:
        super().__init__(f"{len(shortfalls)} outflows beyond the stock on hand")
        self.shortfalls = shortfalls


def number(value: Decimal) -> str:
    """A quantity as people write it: 4, 2.5 (not 4.000, 1E+3)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def position(row: Mapping[str, Any]) -> Position:
    return (row["move_date"], row["day_order"], row["form"], row["voucher_id"], row["move_no"])


async def stored_moves(conn: asyncpg.Connection, tenant_id: int, form: str, ids: list[str]) -> list[asyncpg.Record]:
    """Where the stored movements of these vouchers stand (read before a write replaces or removes them)."""
    return await conn.fetch(QUERIES["costing_stored_moves"], tenant_id, form, ids) if ids else []


async def stored_moves_locked(conn: asyncpg.Connection, tenant_id: int, form: str,
                              ids: list[str]) -> list[asyncpg.Record]:
    """stored_moves, with their items locked (lock_items); read again under the locks, in case another write
    of these vouchers moved them meanwhile."""
    before = await stored_moves(conn, tenant_id, form, ids)
    if not before:
        return before
    locked = {r["item_code"] for r in before}
    await lock_items(conn, tenant_id, locked)
    again = await stored_moves(conn, tenant_id, form, ids)
    await lock_items(conn, tenant_id, {r["item_code"] for r in again} - locked)
    return again


async def lock_items(conn: asyncpg.Connection, tenant_id: int, items: Iterable[str]) -> None:
    """Take the costing locks of these items (held to the commit).

    Costing updates the movements of other vouchers, and a write removes its vouchers' old movements by ctid
    (sql/queries.sql voucher_unpost): a write that replaces or cancels vouchers takes the locks of their stored
    movements' items before it starts, so that no costing pass updates those rows under it. The items of new
    movements are locked after the write (recost): a write waiting for a voucher's row that another request
    holds then holds no item's lock meanwhile, and the item's other writers go on."""
    wanted = sorted(set(items))
    if wanted:
        await conn.execute(QUERIES["costing_lock_items"], tenant_id, wanted)


@dataclass
class _Pass:
    """One costing pass over the movements of some items, from a start position per item."""

    places: int
    accounts: dict[str, str]
    moves: list[asyncpg.Record] = field(default_factory=list)
    state: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)  # (item, site) -> [qty, value]
    cited: dict[tuple[str, str, int | None, str], tuple[Decimal, Decimal]] = field(default_factory=dict)
    changed: list[tuple[asyncpg.Record, Decimal, Decimal, Decimal, Decimal]] = field(default_factory=list)
    short: list[tuple[asyncpg.Record, Decimal]] = field(default_factory=list)  # (outflow, on hand)

    def round(self, value: Decimal) -> Decimal:
        return value.quantize(Decimal(1).scaleb(-self.places), ROUND_HALF_UP)

    def account(self, role: str) -> str:
        return self.accounts.get(role) or ROLE_DEFAULTS[role]


def _cited_key(row: Mapping[str, Any]) -> tuple[str, str, int | None, str] | None:
    """The outflow a return (its sale's line) or a transfer's in (its out) takes its cost from."""
    if row["qty_in"] == 0:
        return None
    if row["basis"] == "sale" and row["ref_voucher_id"]:
        return (SALE_FORM, row["ref_voucher_id"], row["ref_line"], row["item_code"])
    if row["basis"] == "transfer" and row["line_no"] is not None:
        return (row["form"], row["voucher_id"], row["line_no"], row["item_code"])
    return None


def _value(work: _Pass) -> None:
    """Value the pass's movements in order: costs, write-offs, running states; collect shortfalls."""
    for m in work.moves:
        key = (m["item_code"], m["site_code"])
        q0, v0 = work.state.get(key, (Decimal(0), Decimal(0)))
        qty_in, qty_out = m["qty_in"], m["qty_out"]
        writeoff = Decimal(0)
        if qty_out != 0:
            if q0 >= qty_out:
                # Taking the last of the quantity takes the whole value: none is left with nothing on hand.
                cost = v0 if q0 == qty_out else work.round(qty_out * v0 / q0)
            else:
                # Beyond what is on hand (negative stock allowed): the rest at the last average.
                average = v0 / q0 if q0 != 0 else Decimal(0)
                cost = v0 + work.round((qty_out - q0) * average) if q0 > 0 else work.round(qty_out * average)
                stored = m["qty_after"]
                if m["cost"] is None or stored is None or q0 - qty_out < stored:
                    work.short.append((m, q0))
            q1, v1 = q0 - qty_out, v0 - cost
            for line in (m["line_no"], None):
                work.cited.setdefault((m["form"], m["voucher_id"], line, m["item_code"]), (qty_out, cost))
        elif qty_in == 0:
            # A value without quantity (a price difference): onto the stock, or, with none on hand to carry it,
            # to cost of sales.
            cost = work.round(m["value_in"] or Decimal(0))
            q1, v1 = q0, v0 + cost if q0 > 0 else v0
            writeoff = Decimal(0) if q0 > 0 else cost
        else:
            cost = _inflow(work, m, q0, v0)
            q1 = q0 + qty_in
            if q0 >= 0:
                v1 = v0 + cost
            else:
                # Into negative stock: what remains is valued at this inflow's unit cost (value = quantity x
                # average holds again); the difference to what the shortfall was costed at goes to cost of sales.
                v1 = work.round(q1 * cost / qty_in)
                writeoff = v0 + cost - v1
        work.state[key] = [q1, v1]
        if (m["cost"], m["writeoff"], m["qty_after"], m["value_after"]) != (cost, writeoff, q1, v1):
            work.changed.append((m, cost, writeoff, q1, v1))


def _inflow(work: _Pass, m: Mapping[str, Any], q0: Decimal, v0: Decimal) -> Decimal:
    """The value an inflow brings: its price, its cited outflow's unit cost, or the average on hand."""
    if m["basis"] == "priced":
        return work.round(m["value_in"])
    cited = _cited_key(m)
    found = work.cited.get(cited) if cited else None
    if found is not None and found[0] != 0:
        qty, cost = found
        return cost if qty == m["qty_in"] else work.round(cost * m["qty_in"] / qty)
    average = v0 / q0 if q0 != 0 else Decimal(0)
    return work.round(m["qty_in"] * average)


def _pair(entry_no: int, debit: str, credit: str, amount: Decimal) -> list[tuple[Any, ...]]:
    """Dr `debit` / Cr `credit` by `amount`; a negative amount the other way round."""
    if amount < 0:
        debit, credit, amount = credit, debit, -amount
    return [(entry_no, debit, amount, Decimal(0)), (entry_no + 1, credit, Decimal(0), amount)]


def _entries(work: _Pass, m: Mapping[str, Any], cost: Decimal, writeoff: Decimal) -> list[tuple[Any, ...]]:
    """A movement's cost entries: (entry_no, account, debit, credit), balanced in pairs."""
    inventory, out = work.account("inventory"), []
    counter = m["counter"]
    if m["qty_out"] == 0 and m["qty_in"] != 0 and m["basis"] == "average" and counter is None:
        counter = "inventory_surplus"  # goods come in without a price: at average cost, pending resolution
    first = m["move_no"] * _SLOTS - (_SLOTS - 1)
    if counter and cost and m["basis"] not in ("priced", "transfer", "value"):
        if m["qty_out"] != 0:
            out += _pair(first, work.account(counter), inventory, cost)
        else:
            out += _pair(first, inventory, work.account(counter), cost)
    if writeoff:
        out += _pair(first + 2, work.account("cost_of_sales"), inventory, writeoff)
    return out


async def _read(conn: asyncpg.Connection, tenant_id: int, work: _Pass, starts: dict[str, Position]) -> list[str]:
    """The pass's movements and starting states; the items whose state before the start is not costed (written
    before costing existed), which must be valued from their first movement."""
    items = sorted(starts)
    cols = list(zip(*(starts[i] for i in items)))
    work.moves = list(await conn.fetch(QUERIES["costing_moves_from"], tenant_id, items, *cols))
    sites = sorted({(m["item_code"], m["site_code"]) for m in work.moves})
    if sites:
        cols = list(zip(*(starts[i] for i, _ in sites)))
        rows = await conn.fetch(QUERIES["costing_state_before"], tenant_id, [i for i, _ in sites],
                                [s for _, s in sites], *cols)
        for r in rows:
            if r["qty_after"] is None or r["value_after"] is None:
                if starts[r["item_code"]] != FIRST:
                    return sorted({x["item_code"] for x in rows if x["value_after"] is None})
                continue
            work.state[(r["item_code"], r["site_code"])] = [r["qty_after"], r["value_after"]]
    return []


async def _read_cited(conn: asyncpg.Connection, tenant_id: int, work: _Pass) -> None:
    """The outflows cited from outside the pass (earlier than its start), by key."""
    inside = {(m["form"], m["voucher_id"], line, m["item_code"]) for m in work.moves if m["qty_out"] != 0
              for line in (m["line_no"], None)}
    wanted = sorted({k for m in work.moves if (k := _cited_key(m)) is not None and k not in inside},
                    key=lambda k: (k[0], k[1], k[2] or 0, k[3]))
    if not wanted:
        return
    forms, ids, lines, items = (list(c) for c in zip(*wanted))
    for r in await conn.fetch(QUERIES["costing_cited"], tenant_id, forms, ids, lines, items):
        if r["cost"] is not None:
            work.cited[(r["form"], r["voucher_id"], r["line_no"], r["item_code"])] = (r["qty_out"], r["cost"])


async def _write(conn: asyncpg.Connection, tenant_id: int, work: _Pass) -> None:
    if not work.changed:
        return
    rows = work.changed
    written = {r["row"] for r in await conn.fetch(QUERIES["costing_update_moves"], tenant_id,
                                                  [m["ctid"] for m, *_ in rows],
                                                  *([str(r[i]) for r in rows] for i in range(1, 5)))}
    # Only the entries of movements whose cost or write-off changed; a movement just written has none yet.
    posted = [(m, cost, writeoff) for m, cost, writeoff, _, _ in rows if m["ctid"] in written
              and (m["cost"] is None or (m["cost"], m["writeoff"]) != (cost, writeoff))]
    stale = [m for m, _, _ in posted if m["cost"] is not None]
    entries = [(m, *e) for m, cost, writeoff in posted for e in _entries(work, m, cost, writeoff)]
    if not stale and not entries:
        return
    await conn.execute(
        QUERIES["costing_replace_entries"], tenant_id, [m["form"] for m in stale],
        [m["voucher_id"] for m in stale], [m["move_no"] for m in stale],
        [m["form"] for m, *_ in entries], [m["voucher_id"] for m, *_ in entries], [e[1] for e in entries],
        [m["move_date"] for m, *_ in entries], [e[2] for e in entries], [str(e[3]) for e in entries],
        [str(e[4]) for e in entries], [m["job_code"] for m, *_ in entries], [m["dept_code"] for m, *_ in entries])


def _accounts(settings: Mapping[str, Any]) -> dict[str, str]:
    accounts = settings["accounts"]
    return dict(json.loads(accounts) if isinstance(accounts, str) else accounts)


def _blame(shortfall: Mapping[str, Any], on_hand: Decimal, form: str, batch: set[str],
           touched: dict[str, list[tuple[Position, str]]]) -> Shortfall | None:
    """The batch's vouchers an outflow's shortfall is due to: its own voucher when it is the batch's, else those
    that changed the item's movements before it (a back-dated outflow, a receipt cancelled or reduced)."""
    m = shortfall
    if m["form"] == form and m["voucher_id"] in batch:
        culprits: tuple[str, ...] = (m["voucher_id"],)
    else:
        at = position(m)
        culprits = tuple(sorted({vid for pos, vid in touched.get(m["item_code"], ()) if pos <= at}))
    if not culprits:
        return None  # stock that was short before this batch (allowed then): not the batch's doing
    return Shortfall(m["form"], m["voucher_id"], m["line_no"], m["item_code"], m["site_code"], m["move_date"],
                     on_hand, m["qty_out"], culprits)


async def recost(conn: asyncpg.Connection, tenant_id: int, form: str, changed: Iterable[str],
                 before: list[asyncpg.Record]) -> list[Shortfall]:
    """Value the movements of the items that the vouchers `changed` (of `form`) touched, from the first position
    they changed; `before` are where their movements stood before the write (stored_moves).

    Returns the outflows that would leave less than nothing on hand because of this batch, when the tenant
    refuses negative stock (the caller rolls back and fails the vouchers blamed); nothing otherwise.
    """
    changed = set(changed)
    if not changed:
        return []
    now = await stored_moves(conn, tenant_id, form, sorted(changed))
    touched: dict[str, list[tuple[Position, str]]] = {}
    for r in [*(r for r in before if r["voucher_id"] in changed), *now]:
        touched.setdefault(r["item_code"], []).append((position(r), r["voucher_id"]))
    if not touched:
        return []
    starts = {item: min(p for p, _ in places) for item, places in touched.items()}
    await lock_items(conn, tenant_id, starts)
    settings = await conn.fetchrow(QUERIES["costing_settings"], tenant_id, sorted(ROLE_DEFAULTS))
    accounts = _accounts(settings)
    with localcontext(prec=_DIGITS):
        work = _Pass(settings["places"], accounts)
        legacy = await _read(conn, tenant_id, work, starts)
        if legacy:  # movements never costed before the start: value those items from their beginning
            starts.update((item, FIRST) for item in legacy)
            work = _Pass(settings["places"], accounts)
            await _read(conn, tenant_id, work, starts)
        await _read_cited(conn, tenant_id, work)
        _value(work)
    await _write(conn, tenant_id, work)
    if settings["negative_stock"] == "allow":
        return []
    blamed = (_blame(m, on_hand, form, changed, touched) for m, on_hand in work.short)
    return [s for s in blamed if s is not None]


async def recost_items(conn: asyncpg.Connection, tenant_id: int, items: list[str]) -> int:
    """Value every movement of these items from their first (movements written before costing existed, or a
    repair); the number of movements whose cost or state changed."""
    starts = dict.fromkeys(items, FIRST)
    if not starts:
        return 0
    await lock_items(conn, tenant_id, starts)
    settings = await conn.fetchrow(QUERIES["costing_settings"], tenant_id, sorted(ROLE_DEFAULTS))
    with localcontext(prec=_DIGITS):
        work = _Pass(settings["places"], _accounts(settings))
        await _read(conn, tenant_id, work, starts)
        await _read_cited(conn, tenant_id, work)
        _value(work)
    await _write(conn, tenant_id, work)
    return len(work.changed)


async def recost_tenant(conn: asyncpg.Connection, tenant_id: int, chunk: int = 200) -> tuple[int, int]:
    """Value all the tenant's movements again, `chunk` items per transaction: (items, movements changed).

    For movements posted before costing existed (a write values such an item's history the first time it
    touches it; this does every item at once, so that the stock report values them all)."""
    items = [r["item_code"] for r in await conn.fetch(QUERIES["costing_tenant_items"], tenant_id)]
    changed = 0
    for start in range(0, len(items), chunk):
        async with conn.transaction():
            changed += await recost_items(conn, tenant_id, items[start:start + chunk])
    return len(items), changed


async def stock_value(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    """The tenant's total stock value at a date (base currency): what the inventory account holds then."""
    value = await conn.fetchval(QUERIES["costing_stock_value"], tenant_id, as_of)
    return Decimal(value)


async def set_negative_stock(conn: asyncpg.Connection, code: str, setting: str) -> bool:
    """Set what becomes of an outflow beyond the stock on hand for tenant `code` ('refuse' or 'allow'); False
    when there is no such tenant. Writes under way keep the setting they read."""
    if setting not in NEGATIVE_STOCK:
        raise ValueError(f"negative stock setting must be one of {', '.join(NEGATIVE_STOCK)}")
    return await conn.fetchval(QUERIES["costing_set_negative_stock"], code, setting) is not None
