"""Books that tie: a seeded random year of vouchers of every form through the API, then the checks an
accountant makes before closing (tests/books_year.py generates the year and keeps its own books).

- getReconciliation at every month end: each control account equals its sub-ledger (difference 0);
- the trial balance balances, every ledger amount is whole dong, every voucher's entries balance;
- cost of sales and the stock value per item and site, replayed here from the vouchers sent at moving
  weighted average (README "Cost of sales"), equal the ledger's cost of sales account and getStockBalance;
- the control accounts' balances are read by tenant and account (gl_entry_account), never by a scan;
- changes the rules refuse (a paid invoice cancelled or paid again, a cited goods receipt cancelled, stock
  issued that is not there) are refused with 601 and leave the books as they were.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from books_year import BASE, MASTERS, YEAR, Year
from conftest import add_user, assert_envelope, issue_token, plan_scans

from gateway.db import QUERIES
from gateway.forms import Registry
from gateway.posting import ROLE_DEFAULTS
from gateway.tenants import create_tenant

SEED = 20261
MONTH_ENDS = [dt.date(YEAR, m + 1, 1) - dt.timedelta(days=1) for m in range(1, 12)] + [dt.date(YEAR, 12, 31)]
CONTROL_ROLES = ["receivable", "payable", "inventory", "goods_received_not_invoiced"]
_ENCODE = msgspec.json.Encoder(decimal_format="number").encode


class Books:
    """A tenant's API, with answers read exactly (numbers as Decimal)."""

    def __init__(self, client: httpx.AsyncClient, token: str, db: asyncpg.Connection, tenant_id: int) -> None:
        self.client, self.token, self.db, self.tenant_id = client, token, db, tenant_id

    async def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.client.post(f"/api/{endpoint}", content=_ENCODE(body),
                                      headers={"Authorization": self.token, "Content-Type": "application/json"})
        assert_envelope(resp)
        answer: dict[str, Any] = json.loads(resp.content, parse_float=Decimal)
        return answer

    async def write(self, form: str, docs: list[dict[str, Any]]) -> None:
        answer = await self.post("SyncVoucher", {"form": form, "data": docs})
        assert answer["code"] == 200 and answer["result"]["failed"] == 0, (form, answer["messages"],
                                                                          answer.get("errors"))

    async def report(self, form: str, **params: Any) -> dict[str, Any]:
        answer = await self.post("GetData", {"form": form, **params})
        assert answer["code"] == 200, (form, params, answer["messages"])
        return answer

    async def ledger(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.db.fetch(
            "SELECT form, voucher_id, entry_no, account_code, debit, credit, partner_code FROM gl_entry"
            " WHERE tenant_id = $1 ORDER BY 1, 2, 3", self.tenant_id)]


@pytest.fixture
async def books(client: httpx.AsyncClient, app: Any, db: asyncpg.Connection, registry: Registry) -> Books:
    """A tenant made as an operator makes one (base currency VND, the Circular 200 chart), with its masters."""
    tenant_id = await create_tenant(db, registry, "books", "Books Co")
    await add_user(db, "bookkeeper", "writer", tenant="books")
    api = Books(client, await issue_token(app, db, "bookkeeper"), db, tenant_id)
    for form, data in MASTERS:
        answer = await api.post("SyncData", {"form": form, "data": data})
        assert answer["code"] == 200, (form, answer["messages"])
    return api


def _stock_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    return {(r["ItemCode"], r["SiteCode"]): (Decimal(r["Quantity"]), Decimal(r["Value"])) for r in rows
            if r["Quantity"] != 0 or r["Value"] != 0}


async def test_a_seeded_year_of_books_ties(books: Books) -> None:
    year = Year(SEED)
    for form, docs in year.build():
        await books.write(form, docs)
    changes = year.changes()
    for form, docs in changes:
        await books.write(form, docs)
    kinds = {form for form, _ in changes}
    assert {"setSaleInvoice", "setPurchaseInvoice", "setReceipt", "setCashReceipt"} <= kinds, kinds
    assert len(year.live) > 250, len(year.live)  # a year of several hundred vouchers of every form

    # Every finding is collected and all are reported together: one tie that fails does not hide the others.
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    # Control accounts against their sub-ledgers, at every month end.
    for as_of in MONTH_ENDS:
        answer = await books.report("getReconciliation", dateTo=as_of.isoformat())
        rows = answer["data"]
        check([r["Role"] for r in rows] == CONTROL_ROLES, f"roles {[r['Role'] for r in rows]}")
        for r in rows:
            check(r["Difference"] == 0 and r["LedgerBalance"] - r["SubledgerBalance"] == r["Difference"],
                  f"{as_of} {r['Role']} ({r['AccountCode']}): ledger {r['LedgerBalance']}, sub-ledger"
                  f" {r['SubledgerBalance']}, difference {r['Difference']}")
    year_end = {r["Role"]: r for r in (await books.report("getReconciliation", dateTo="2026-12-31"))["data"]}
    check({r: year_end[r]["AccountCode"] for r in CONTROL_ROLES}
          == {"receivable": "131", "payable": "331", "inventory": "1561", "goods_received_not_invoiced": "3388"},
          f"control accounts {[(r, year_end[r]['AccountCode']) for r in CONTROL_ROLES]}")
    # The control accounts read through gl_entry_account, by tenant and account, never by a scan.
    raw = await books.db.fetchval("EXPLAIN (FORMAT JSON) " + QUERIES["reconciliation_ledger"], books.tenant_id,
                                  CONTROL_ROLES, [ROLE_DEFAULTS[r] for r in CONTROL_ROLES], dt.date(YEAR, 12, 31))
    scans = [s for s in plan_scans((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
             if s["Relation Name"] == "gl_entry"]
    check(bool(scans) and all(s.get("Index Name") == "gl_entry_account" and "account_code" in s["Index Cond"]
                              for s in scans), f"control account balances read by {scans}")

    # The trial balance balances; every amount is whole dong; every voucher balances on its own.
    tb = (await books.report("getTrialBalance", dateTo="2026-12-31"))["data"]
    debits, credits = sum(r["Debit"] for r in tb), sum(r["Credit"] for r in tb)
    check(debits == credits and sum(r["Closing"] for r in tb) == 0,
          f"trial balance: debits {debits}, credits {credits}, closing {sum(r['Closing'] for r in tb)}")
    # Whole dong, and stored as such (scale 0): 5.0000 would reach clients that read amounts as integers (Fast
    # types them Long) as a decimal.
    fractions = await books.db.fetch(
        "SELECT form, voucher_id, account_code, debit::text, credit::text FROM gl_entry WHERE tenant_id = $1"
        " AND (scale(debit) > 0 OR scale(credit) > 0) ORDER BY 1, 2 LIMIT 5", books.tenant_id)
    check(not fractions, f"ledger amounts not in whole dong ({BASE}): {[tuple(r) for r in fractions]}")
    unbalanced = await books.db.fetch(
        "SELECT form, voucher_id, sum(debit) AS debit, sum(credit) AS credit FROM gl_entry WHERE tenant_id = $1"
        " GROUP BY form, voucher_id HAVING sum(debit) <> sum(credit) ORDER BY 1, 2 LIMIT 5", books.tenant_id)
    check(not unbalanced, f"vouchers whose entries do not balance: {[tuple(r) for r in unbalanced]}")

    # Cost of sales and stock value, replayed from the vouchers sent.
    accounts = {r["AccountCode"]: r["Closing"] for r in tb}
    expected_cogs = year.cost_of_sales()
    check(expected_cogs > 0, "the year sold goods")
    check(accounts.get("632", 0) == expected_cogs,
          f"cost of sales (632): ledger {accounts.get('632', 0)}, replayed {expected_cogs}")
    surplus = year.replay().surplus  # goods received at price 0, valued at the average
    check(surplus > 0 and accounts.get("3381", 0) == -surplus,
          f"inventory surplus (3381): ledger {accounts.get('3381', 0)}, replayed {-surplus}")
    for role, sign in (("receivable", 1), ("payable", -1), ("inventory", 1), ("goods_received_not_invoiced", -1)):
        row = year_end[role]
        check(row["LedgerBalance"] == sign * accounts.get(row["AccountCode"], 0),
              f"{role}: reconciliation's ledger balance {row['LedgerBalance']}, trial balance"
              f" {accounts.get(row['AccountCode'], 0)}")
    for as_of in (dt.date(YEAR, 3, 31), dt.date(YEAR, 8, 31), None):
        params = {"dateTo": as_of.isoformat()} if as_of else {}
        got = _stock_rows((await books.report("getStockBalance", **params))["data"])
        want = year.stock_value(as_of)
        wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        check(not wrong, f"stock at {as_of or 'the end'} (quantity, value) per item and site, gateway vs replayed:"
                         f" {[(k, got.get(k), want.get(k)) for k in wrong[:6]]}")
        total = sum(v for _, v in want.values())
        then = accounts if as_of is None else {r["AccountCode"]: r["Closing"] for r in (
            await books.report("getTrialBalance", dateTo=as_of.isoformat()))["data"]}
        check(then.get("1561", 0) == total,
              f"inventory (1561) at {as_of or 'the end'}: ledger {then.get('1561', 0)}, replayed stock value {total}")
        check(then.get("632", 0) == year.cost_of_sales(as_of),
              f"cost of sales (632) at {as_of or 'the end'}: ledger {then.get('632', 0)},"
              f" replayed {year.cost_of_sales(as_of)}")

    # What the rules refuse is refused, and changes nothing.
    before = await books.ledger()
    for what, form, doc in year.forbidden():
        answer = await books.post("SyncVoucher", {"form": form, "data": [doc]})
        check(answer["code"] == 601, f"{what}: answered {answer['code']} {answer['messages']}")
    check(await books.ledger() == before, "a refused change altered the ledger")

    assert not failures, "\n".join(failures)


async def test_reconciliation_of_an_empty_tenant_and_its_parameters(books: Books) -> None:
    answer = await books.report("getReconciliation")
    assert answer["as_of"] == dt.date.today().isoformat() and answer["records"] == 4
    assert [(r["Role"], r["AccountCode"], r["Side"], r["LedgerBalance"], r["SubledgerBalance"], r["Difference"])
            for r in answer["data"]] == [("receivable", "131", "debit", 0, 0, 0), ("payable", "331", "credit", 0, 0, 0),
                                         ("inventory", "1561", "debit", 0, 0, 0),
                                         ("goods_received_not_invoiced", "3388", "credit", 0, 0, 0)]
    assert answer["data"][0]["AccountName"]
    for params, field in (({"dateTo": "31/12/2026"}, "dateTo"), ({"dateFrom": "2026-01-01"}, "dateFrom")):
        bad = await books.post("GetData", {"form": "getReconciliation", **params})
        assert bad["code"] == 400 and field in bad["messages"], bad
