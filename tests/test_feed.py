"""The change feed is per tenant: another tenant's transaction never holds it back, one of the tenant's own
does (so that no change is skipped), and its cursors say nothing about anyone's volume."""

from __future__ import annotations

import asyncpg
import pytest
from conftest import Api, assert_envelope

from gateway.db import QUERIES
from gateway.errors import BadRequest
from gateway.feed import Cursors


async def _in_flight(db: asyncpg.Connection, tenant_id: int) -> asyncpg.transaction.Transaction:
    """A write of the tenant's data under way on `db`: it holds the tenant's gate and has a transaction id."""
    tx = db.transaction()
    await tx.start()
    await db.execute(QUERIES["reference_gate_shared"], tenant_id)
    await db.fetchval("SELECT pg_current_xact_id()")
    return tx


async def _tenant(db: asyncpg.Connection, code: str) -> int:
    return await db.fetchval("INSERT INTO tenant (code, name) VALUES ($1, $1) RETURNING id", code)


async def test_another_tenants_long_write_does_not_hold_back_the_feed(api: Api, db: asyncpg.Connection) -> None:
    other = await _in_flight(db, await _tenant(db, "other"))
    try:
        assert (await api.sync("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "A"}])).json()["code"] == 200
        body = assert_envelope(await api.get("getCustomer", since=0))
        assert [r["CustomerCode"] for r in body["data"]] == ["KH1"]
    finally:
        await other.rollback()


async def test_the_tenants_own_write_under_way_holds_the_feed_until_it_commits(api: Api,
                                                                               db: asyncpg.Connection) -> None:
    acme = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    own = await _in_flight(db, acme)
    # An older write of the tenant is still running: a change committed after it started is not handed out
    # yet, or a cursor moved past it would skip the older write's changes once they commit.
    assert (await api.sync("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "A"}])).json()["code"] == 200
    body = assert_envelope(await api.get("getCustomer", since=0))
    assert body["data"] == []
    await db.execute("INSERT INTO change_log (id, tenant_id, tbl, keys) VALUES (nextval('change_seq'), $1,"
                     " 'customer', '[[\"KH0\"]]')", acme)
    await db.execute("INSERT INTO customer (tenant_id, customer_code, customer_name, deleted, change_seq,"
                     " updated_at) VALUES ($1, 'KH0', 'Old', false, currval('change_seq'), now())", acme)
    await own.commit()
    # Both now, the older write first, from the cursor the empty pull returned.
    body = assert_envelope(await api.get("getCustomer", since=body["next_since"]))
    assert [r["CustomerCode"] for r in body["data"]] == ["KH0", "KH1"]


async def test_cursors_are_opaque_and_bound_to_their_tenant(api: Api, db: asyncpg.Connection) -> None:
    assert (await api.sync("setCustomer", [{"CustomerCode": "KH1", "CustomerName": "A"}])).json()["code"] == 200
    body = assert_envelope(await api.get("getCustomer", since=0))
    cursor = body["next_since"]
    xid = await db.fetchval("SELECT xid::text FROM change_log ORDER BY id DESC LIMIT 1")
    assert cursor.startswith("c1.") and xid not in cursor
    # The same cursor continues the feed; tampered with, or presented for another tenant, it is refused.
    assert assert_envelope(await api.get("getCustomer", since=cursor))["data"] == []
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for bad in (tampered, "c1.", "c1.!!!", "1.2", "-1.2.3"):
        resp = await api.get("getCustomer", since=bad)
        assert resp.json()["code"] == 400, bad
    acme = await db.fetchval("SELECT id FROM tenant WHERE code = 'acme'")
    secret = api.client._transport.app.state.gateway.settings.resolved_secret()  # type: ignore[attr-defined]
    cursors = Cursors(secret)
    position = cursors.position(acme, cursor)
    assert position[0] == int(xid)
    assert cursors.cursor(acme, position) == cursor
    with pytest.raises(BadRequest):
        cursors.position(acme + 1, cursor)  # another tenant's
    # A plain position, as handed out before cursors were sealed, is still read.
    assert assert_envelope(await api.get("getCustomer", since=".".join(map(str, position))))["data"] == []
