"""getReconciliation: each control account of the ledger against the sub-ledger it summarises, at a date.

An accountant closes the books only when the control accounts tie: the receivable account to the open
receivables, the payable account to the open payables, the inventory account to the stock value, and the
account of goods received but not invoiced to the receipts still waiting for their invoice. The ledger side
is the balance of the tenant's account for each posting role; the sub-ledger side is worked out from the
documents (allocations, stock movements, receipt lines), not from that account, so a difference other than
0 means the postings and the documents disagree.

Every figure is in the base currency, at the end of `dateTo`. The ledger balance is signed as its sub-ledger
counts: debit positive for the asset accounts (receivable, inventory), credit positive for the liabilities
(payable, goods received not invoiced), so that an open payable of 100 shows as 100 on both sides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from .db import QUERIES
from .posting import ROLE_DEFAULTS
from .responses import plain

Subledger = Callable[[asyncpg.Connection, int, dt.date], Awaitable[Decimal]]


async def _receivables(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    from .settlement import subledger_total  # the modules of the sub-ledgers import the reports in turn
    return await subledger_total(conn, tenant_id, "receivable", as_of)


async def _payables(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    from .settlement import subledger_total
    return await subledger_total(conn, tenant_id, "payable", as_of)


async def _stock(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    from .costing import stock_value
    return await stock_value(conn, tenant_id, as_of)


async def _not_invoiced(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> Decimal:
    from .grni import not_invoiced_value
    return await not_invoiced_value(conn, tenant_id, as_of)


# (role, sign of the ledger balance as the sub-ledger counts it: +1 debit positive, -1 credit positive,
# the sub-ledger), in the order of the answer.
CONTROLS: tuple[tuple[str, int, Subledger], ...] = (
    ("receivable", 1, _receivables),
    ("payable", -1, _payables),
    ("inventory", 1, _stock),
    ("goods_received_not_invoiced", -1, _not_invoiced),
)


async def reconcile(conn: asyncpg.Connection, tenant_id: int, as_of: dt.date) -> list[dict[str, Any]]:
    """One row per control account: its ledger balance, its sub-ledger's total and the difference."""
    roles = [name for name, _, _ in CONTROLS]
    ledger = await conn.fetch(QUERIES["reconciliation_ledger"], tenant_id, roles,
                              [ROLE_DEFAULTS[r] for r in roles], as_of)
    rows = []
    for (role, sign, subledger), found in zip(CONTROLS, ledger, strict=True):
        balance = sign * found["balance"]
        total = await subledger(conn, tenant_id, as_of)
        rows.append({"Role": role, "AccountCode": found["account_code"], "AccountName": found["account_name"],
                     "Side": "debit" if sign > 0 else "credit", "LedgerBalance": plain(balance),
                     "SubledgerBalance": plain(total), "Difference": plain(balance - total)})
    return rows


async def report(conn: asyncpg.Connection, tenant_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """getReconciliation at dateTo (today by default).

    The ledger and the four sub-ledgers are read in one snapshot (a read-only repeatable-read transaction):
    a voucher committed between two of the queries would otherwise show as a difference.
    """
    from .reports import parse_date  # the reports' one date rule; reports.py imports this module

    as_of = parse_date(params.get("dateto"), "dateTo") or dt.date.today()
    if conn.is_in_transaction():
        data = await reconcile(conn, tenant_id, as_of)
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            data = await reconcile(conn, tenant_id, as_of)
    return {"data": data, "as_of": as_of}
