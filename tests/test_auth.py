"""getToken and the token life cycle."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from conftest import PASSWORD, add_user, assert_envelope, login

from gateway import auth
from gateway.auth import TokenService
from gateway.db import QUERIES

INVALID = {"success": False, "messages": "Invalid username or password", "code": 401}


async def _sync(client: httpx.AsyncClient, auth_header: str | None) -> httpx.Response:
    headers = {"Authorization": auth_header} if auth_header is not None else {}
    return await client.post("/api/SyncData", headers=headers,
                             json={"form": "setCustomer", "data": [{"CustomerCode": "A", "CustomerName": "a"}]})


async def test_get_token_returns_seed_shape_with_utc_expiry(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    before = dt.datetime.now(dt.UTC)
    resp = await client.post("/api/getToken", json={"username": "alice", "password": PASSWORD})
    body = assert_envelope(resp)
    assert body["success"] is True and body["code"] == 200 and body["messages"] == "Success"
    assert set(body["token"]) == {"accesstoken", "expires"}
    assert body["token"]["expires"].endswith("Z")
    expires = dt.datetime.strptime(body["token"]["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert dt.timedelta(hours=23, minutes=59) < expires - before <= dt.timedelta(hours=24, seconds=1)


async def test_token_claims_are_complete_and_signed_hs256(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice", role="reader", tenant="north")
    token = await login(client, "alice")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    claims = jwt.decode(token, "s" * 40, algorithms=["HS256"], audience="erp-sync-api")
    assert claims["sub"] == "alice" and claims["tenant"] == "north" and claims["role"] == "reader"
    assert claims["iss"] == "erp-sync-gateway" and claims["aud"] == "erp-sync-api"
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert len(claims["jti"]) >= 16


async def test_unknown_user_wrong_password_and_disabled_user_get_the_same_401(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    await add_user(db, "bob")
    await db.execute("UPDATE app_user SET disabled = true WHERE username = 'bob'")
    for creds in ({"username": "nobody", "password": PASSWORD}, {"username": "alice", "password": "wrong"},
                  {"username": "bob", "password": PASSWORD}):
        resp = await client.post("/api/getToken", json=creds)
        assert resp.status_code == 401
        assert resp.json() == INVALID


class RecordingHasher(PasswordHasher):
    """The production parameters, remembering every hash it is asked to verify."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


async def test_unknown_user_costs_as_much_as_a_wrong_password(client: httpx.AsyncClient,
                                                              db: asyncpg.Connection) -> None:
    # An unknown user must not answer measurably faster (user probing): both paths verify exactly one argon2
    # hash, made with the same parameters (the production ones here), so both cost one hash's work. Shown by
    # what is verified rather than by timing, which a busy machine makes unreliable.
    hasher = RecordingHasher()
    previous = auth.use_password_hasher(hasher)
    try:
        await add_user(db, "alice", password="alice's own password")  # hashed now, with `hasher`
        answers = []
        for username in ("alice", "nobody"):
            resp = await client.post("/api/getToken", json={"username": username, "password": "wrong"})
            answers.append((resp.status_code, resp.json()))
    finally:
        auth.use_password_hasher(previous)
    assert answers[0] == answers[1] == (401, INVALID)
    assert len(hasher.verified) == 2 and hasher.verified[0] != hasher.verified[1]
    production = f"m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}"
    # $argon2id$v=19$m=...,t=...,p=...$salt$hash: the same work for a known user and for an unknown one.
    assert [h.split("$")[3] for h in hasher.verified] == [production, production], hasher.verified


def test_the_dummy_hash_has_the_parameters_of_the_hasher_in_use() -> None:
    # Otherwise an unknown user would cost what the old parameters cost, not what a wrong password costs.
    # Two sets of parameters, cheap enough to hash with here; the test above uses the production ones.
    lighter = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    heavier = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=2)

    def params(h: PasswordHasher) -> str:
        return f"m={h.memory_cost},t={h.time_cost},p={h.parallelism}"

    previous = auth.use_password_hasher(heavier)
    try:
        assert auth.hash_password("p").split("$")[3] == auth._DUMMY_HASH.split("$")[3] == params(heavier)
        auth.use_password_hasher(lighter)
        assert auth.hash_password("p").split("$")[3] == auth._DUMMY_HASH.split("$")[3] == params(lighter)
        # A hash made under other parameters still verifies: each hash carries its own.
        made_lighter = auth.hash_password("secret password")
        auth.use_password_hasher(heavier)
        assert auth.verify_password(made_lighter, "secret password")
        assert not auth.verify_password(made_lighter, "wrong password")
        assert not auth.verify_password(None, "not-a-real-password")
    finally:
        auth.use_password_hasher(previous)


async def test_get_token_bad_bodies_are_400(client: httpx.AsyncClient) -> None:
    for content in (b"not json", b"[]", b'{"username": "a"}', b'{"username": 1, "password": 2}', b""):
        resp = await client.post("/api/getToken", content=content)
        body = assert_envelope(resp)
        assert resp.status_code == 400 and body["code"] == 400


async def test_authorization_header_works_bare_and_with_bearer(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await login(client, "alice")
    assert (await _sync(client, token)).status_code == 200
    assert (await _sync(client, f"Bearer {token}")).status_code == 200
    assert (await _sync(client, f"bearer  {token}")).status_code == 200


async def test_missing_expired_tampered_unsigned_and_foreign_tokens_get_401(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await login(client, "alice")
    service = TokenService("s" * 40, 3600, "erp-sync-gateway", "erp-sync-api")
    expired = service.issue("alice", "acme", "writer",
                            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).token
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    tampered = f"{head}.{forged_payload}.{sig}"
    unsigned = jwt.encode(claims, None, algorithm="none")
    foreign = TokenService("x" * 40, 3600, "erp-sync-gateway", "erp-sync-api").issue("alice", "acme", "writer").token
    wrong_audience = TokenService("s" * 40, 3600, "erp-sync-gateway", "other").issue("alice", "acme", "writer").token
    for bad in (None, "", "Bearer", "garbage", expired, tampered, unsigned, foreign, wrong_audience):
        resp = await _sync(client, bad)
        body = assert_envelope(resp)
        assert resp.status_code == 401 and body["code"] == 401, bad
    assert await db.fetchval("SELECT count(*) FROM customer") == 0


async def test_disabling_a_user_or_changing_the_password_ends_its_tokens(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    await add_user(db, "bob")
    alice, bob = await login(client, "alice"), await login(client, "bob")
    await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
    await db.fetchval(QUERIES["user_passwd"], "bob", auth.hash_password("another password"))
    assert (await _sync(client, alice)).status_code == 401
    assert (await _sync(client, bob)).status_code == 401


async def _same_second_as(db: asyncpg.Connection, token: str, username: str) -> None:
    """Make the revocation look as if it fell in the very second the token was issued.

    Tokens count whole seconds; this is the case a comparison of timestamps cannot tell apart.
    """
    iat = jwt.decode(token, options={"verify_signature": False})["iat"]
    await db.execute("UPDATE app_user SET tokens_valid_after = to_timestamp($2) + interval '0.5 second'"
                     " WHERE username = $1", username, iat)


async def test_enabling_a_user_again_does_not_revive_a_token_issued_in_the_second_of_the_disable(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    old = await login(client, "alice")
    assert (await _sync(client, old)).status_code == 200
    await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
    await db.fetchval(QUERIES["user_set_disabled"], "alice", False)
    await _same_second_as(db, old, "alice")
    resp = await _sync(client, old)
    assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401
    new = await login(client, "alice")
    assert (await _sync(client, new)).status_code == 200
    assert (await _sync(client, old)).status_code == 401


async def test_a_token_issued_in_the_second_of_a_password_change_is_refused(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    old = await login(client, "alice")
    await db.fetchval(QUERIES["user_passwd"], "alice", auth.hash_password("another password"))
    await _same_second_as(db, old, "alice")
    assert (await _sync(client, old)).status_code == 401
    new = await login(client, "alice", "another password")
    assert (await _sync(client, new)).status_code == 200


async def test_enabling_a_user_that_was_never_disabled_keeps_its_tokens(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await login(client, "alice")
    await db.fetchval(QUERIES["user_set_disabled"], "alice", False)
    assert (await _sync(client, token)).status_code == 200


async def test_a_token_without_a_version_claim_counts_as_version_zero(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    # Tokens issued before versions existed stay valid until the user's first passwd or disable.
    await add_user(db, "alice")
    claims = jwt.decode(await login(client, "alice"), "s" * 40, algorithms=["HS256"], audience="erp-sync-api")
    assert claims.pop("ver") == 0
    legacy = jwt.encode(claims, "s" * 40, algorithm="HS256")
    assert (await _sync(client, legacy)).status_code == 200
    await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
    await db.fetchval(QUERIES["user_set_disabled"], "alice", False)
    await _same_second_as(db, legacy, "alice")
    assert (await _sync(client, legacy)).status_code == 401


async def test_reader_role_may_get_but_not_sync(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "viewer", role="reader")
    token = await login(client, "viewer")
    resp = await _sync(client, token)
    body = assert_envelope(resp)
    assert resp.status_code == 403 and body["code"] == 403
    assert await db.fetchval("SELECT count(*) FROM customer") == 0
    got = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": token})
    assert assert_envelope(got)["records"] == 0


async def test_tenants_do_not_see_each_other(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice", tenant="north")
    await add_user(db, "bob", tenant="south")
    alice, bob = await login(client, "alice"), await login(client, "bob")
    assert (await _sync(client, alice)).status_code == 200
    got = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": bob})
    assert assert_envelope(got)["records"] == 0
    got = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": alice})
    assert assert_envelope(got)["records"] == 1


async def test_a_revoked_token_gets_401_before_its_data_is_judged(client: httpx.AsyncClient,
                                                                  db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await login(client, "alice")
    await db.execute("UPDATE app_user SET disabled = true")
    resp = await client.post("/api/SyncData", headers={"Authorization": token},
                             json={"form": "setCustomer", "data": [{"CustomerCode": 5}]})
    assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401


async def test_a_password_change_right_after_a_login_refuses_its_token_and_a_new_login_works(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    old = await login(client, "alice")
    await db.fetchval(QUERIES["user_passwd"], "alice", auth.hash_password("another password"))
    resp = await _sync(client, old)
    assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401
    new = await login(client, "alice", "another password")
    assert (await _sync(client, new)).status_code == 200
    assert (await _sync(client, old)).status_code == 401


async def _token_at_revocation(app: Any, db: asyncpg.Connection, username: str, version: int) -> str:
    """A token of `version` issued in the very second the user's last revocation happened."""
    row = await db.fetchrow("SELECT u.username, u.role, t.code, u.tokens_valid_after FROM app_user u"
                            " JOIN tenant t ON t.id = u.tenant_id WHERE u.username = $1", username)
    tokens: TokenService = app.state.gateway.tokens
    return tokens.issue(row["username"], row["code"], row["role"], now=row["tokens_valid_after"],
                        version=version).token


@pytest.mark.parametrize("revoke", ["passwd", "disable", "role"])
async def test_a_revocation_refuses_the_tokens_issued_in_its_own_second_and_not_those_after_it(
        revoke: str, app: Any, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    before = await db.fetchval("SELECT token_version FROM app_user WHERE username = 'alice'")
    if revoke == "passwd":
        await db.fetchval(QUERIES["user_passwd"], "alice", auth.hash_password("another password"))
    elif revoke == "disable":
        await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
        await db.fetchval(QUERIES["user_set_disabled"], "alice", False)
    else:
        await db.fetchval(QUERIES["user_set_role"], "alice", "admin")
    after = await db.fetchval("SELECT token_version FROM app_user WHERE username = 'alice'")
    assert after == before + 1
    # Same second, both: the clock cannot tell them apart, the version does.
    old = await _token_at_revocation(app, db, "alice", before)
    new = await _token_at_revocation(app, db, "alice", after)
    assert jwt.decode(old, options={"verify_signature": False})["iat"] == jwt.decode(
        new, options={"verify_signature": False})["iat"]
    assert (await _sync(client, old)).status_code == 401
    assert (await _sync(client, new)).status_code == 200


async def test_a_role_change_ends_the_tokens_issued_with_the_old_role(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice", role="writer")
    writer = await login(client, "alice")
    assert (await _sync(client, writer)).status_code == 200
    await db.fetchval(QUERIES["user_set_role"], "alice", "reader")
    resp = await _sync(client, writer)
    assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401
    reader = await login(client, "alice")
    assert jwt.decode(reader, options={"verify_signature": False})["role"] == "reader"
    assert (await _sync(client, reader)).status_code == 403
    assert await db.fetchval("SELECT count(*) FROM customer") == 1
