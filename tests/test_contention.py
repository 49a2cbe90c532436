"""Batches that upsert and delete the same few keys concurrently do not deadlock.

Every transaction PostgreSQL aborts to break a deadlock is run again by db.in_transaction and logged as
`transaction_retry`; here none may be. Each batch locks the stored rows of all its keys first, in key order,
whenever it deletes (engine.write, vouchers.write), so that two batches always meet in the same order.
"""

from __future__ import annotations

import asyncio
import json
import random

import asyncpg
import pytest
import structlog
from conftest import Api, plan_scans

from gateway.forms import Registry

KEYS = [f"K{n:02d}" for n in range(30)]
CLIENTS, REQUESTS = 8, 12


def _batch(rng: random.Random, form: str, field: str, name: str) -> list[dict]:
    """Five of the shared keys in random order, about 30% of them deleted."""
    out = []
    for key in rng.sample(KEYS, 5):
        if rng.random() < 0.3:
            out.append({field: key, "action": "delete"})
        else:
            out.append({field: key, name: f"{key} {rng.random():.6f}"})
    return out


@pytest.mark.parametrize(("form", "field", "name"), [
    ("setEmployee", "EmployeeCode", "EmployeeName"),
    ("setCustomer", "CustomerCode", "CustomerName"),  # deletes pass the reference gate as well
])
async def test_concurrent_upserts_and_deletes_of_shared_keys_never_deadlock(api: Api, form: str, field: str,
                                                                            name: str) -> None:
    assert (await api.sync(form, [{field: k, name: k} for k in KEYS])).json()["code"] == 200

    async def client(seed: int) -> list[int]:
        rng = random.Random(seed)
        codes = []
        for _ in range(REQUESTS):
            resp = await api.sync(form, _batch(rng, form, field, name))
            codes.append(resp.json()["code"])
        return codes

    with structlog.testing.capture_logs() as logs:
        answers = await asyncio.gather(*(client(seed) for seed in range(CLIENTS)))
    assert [code for codes in answers for code in codes] == [200] * CLIENTS * REQUESTS
    assert [e for e in logs if e["event"] == "transaction_retry"] == []


async def test_the_key_order_lock_is_keyed_on_a_table_never_analysed(db: asyncpg.Connection,
                                                                     registry: Registry) -> None:
    """Each key looked up by primary key, in the keys' order: not a scan of the primary key over the tenant's
    rows, which gives the same order and is what the planner chooses for a table it knows nothing about."""
    await db.execute("INSERT INTO customer (tenant_id, customer_code, customer_name, deleted, change_seq,"
                     " updated_at) SELECT 7, 'C' || g, 'n', false, 0, now() FROM generate_series(1, 20000) g")
    form, _ = registry.resolve("SyncData", "setCustomer")
    plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {form.sql['lock']}", 7, ["C2", "C1"]))
    scans = plan_scans(plan)
    assert [s["Relation Name"] for s in scans] == ["customer"]
    assert scans[0]["Node Type"] == "Index Scan" and "customer_code" in scans[0]["Index Cond"], scans
