"""The token life cycle: refresh tokens (rotation, reuse, expiry), logout, and signing keys by kid."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from conftest import PASSWORD, add_user, assert_envelope

from gateway import auth, cli, keys
from gateway.config import Settings
from gateway.db import QUERIES

SECRET = "s" * 40  # the settings fixture's


@pytest.fixture(autouse=True)
def keys_read_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A running worker looks at the keys file once a second; here a rotate must show at the next request.
    monkeypatch.setattr(keys, "RELOAD_SECONDS", 0.0)


async def _login(client: httpx.AsyncClient, username: str, **extra: Any) -> dict[str, Any]:
    resp = await client.post("/api/getToken", json={"username": username, "password": PASSWORD, **extra})
    body = assert_envelope(resp)
    assert body["success"] is True, body
    token: dict[str, Any] = body["token"]
    return token


async def _refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/api/refreshToken", json={"refreshtoken": refresh_token})


async def _pull(client: httpx.AsyncClient, access_token: str) -> int:
    resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": access_token})
    assert_envelope(resp)
    return resp.status_code


def _signed(header: dict[str, Any], claims: dict[str, Any], secret: str) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    signing_input = f"{part(header)}.{part(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


def _kid(token: str) -> str | None:
    kid: str | None = jwt.get_unverified_header(token).get("kid")
    return kid


async def test_get_token_answers_exactly_fasts_body_unless_a_refresh_token_is_asked_for(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    resp = await client.post("/api/getToken", json={"username": "alice", "password": PASSWORD})
    body = assert_envelope(resp)
    assert list(body) == ["success", "messages", "token", "code"]
    assert list(body["token"]) == ["accesstoken", "expires"]
    assert await db.fetchval("SELECT count(*) FROM refresh_token") == 0
    # Anything but `true` is no request for one.
    for value in (False, "true", 1, None):
        assert list(await _login(client, "alice", refresh=value)) == ["accesstoken", "expires"]
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token = await _login(client, "alice", Refresh=True)
    assert list(token) == ["accesstoken", "expires", "refreshtoken", "refreshexpires"]
    expires = dt.datetime.strptime(token["refreshexpires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert dt.timedelta(days=30) <= expires - before <= dt.timedelta(days=30, seconds=2)
    # Only the token's SHA-256 is kept.
    row = await db.fetchrow("SELECT * FROM refresh_token")
    assert row["token_hash"] == hashlib.sha256(token["refreshtoken"].encode()).digest()
    assert token["refreshtoken"].encode() not in bytes(row["token_hash"])
    assert row["used_at"] is None and row["revoked_at"] is None


async def test_a_refresh_hands_out_a_new_access_token_and_a_new_refresh_token_and_spends_the_old(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice", role="reader")
    first = await _login(client, "alice", refresh=True)
    resp = await _refresh(client, first["refreshtoken"])
    body = assert_envelope(resp)
    assert body["messages"] == "Success" and list(body["token"]) == [
        "accesstoken", "expires", "refreshtoken", "refreshexpires"]
    second = body["token"]
    assert second["refreshtoken"] != first["refreshtoken"] and second["accesstoken"] != first["accesstoken"]
    claims = jwt.decode(second["accesstoken"], SECRET, algorithms=["HS256"], audience="erp-sync-api")
    assert claims["sub"] == "alice" and claims["tenant"] == "acme" and claims["role"] == "reader"
    assert await _pull(client, second["accesstoken"]) == 200
    rows = await db.fetch("SELECT family, used_at, revoked_at FROM refresh_token ORDER BY created_at, used_at")
    assert len(rows) == 2 and rows[0]["family"] == rows[1]["family"]
    assert sorted(r["used_at"] is None for r in rows) == [False, True]
    # The successor refreshes again, and so on.
    third = assert_envelope(await _refresh(client, second["refreshtoken"]))["token"]
    assert await _pull(client, third["accesstoken"]) == 200


async def test_a_spent_refresh_token_presented_again_revokes_its_whole_family(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    first = await _login(client, "alice", refresh=True)
    other = await _login(client, "alice", refresh=True)  # another device: a family of its own
    second = assert_envelope(await _refresh(client, first["refreshtoken"]))["token"]
    reuse = await _refresh(client, first["refreshtoken"])
    body = assert_envelope(reuse)
    assert reuse.status_code == 401 and body["code"] == 401 and "already used" in body["messages"]
    # The successor is dead, and so are the access tokens the family handed out.
    resp = await _refresh(client, second["refreshtoken"])
    assert resp.status_code == 401 and "revoked" in resp.json()["messages"]
    assert await _pull(client, second["accesstoken"]) == 401
    assert await _pull(client, first["accesstoken"]) == 401
    # The other family is untouched.
    assert await _pull(client, other["accesstoken"]) == 200
    assert (await _refresh(client, other["refreshtoken"])).status_code == 200


async def test_two_refreshes_with_the_same_token_at_once_pass_once_and_revoke_the_family(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    first = await _login(client, "alice", refresh=True)
    answers = await asyncio.gather(*(_refresh(client, first["refreshtoken"]) for _ in range(2)))
    assert sorted(r.status_code for r in answers) == [200, 401]
    winner = next(r for r in answers if r.status_code == 200).json()["token"]
    assert (await _refresh(client, winner["refreshtoken"])).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM refresh_token WHERE revoked_at IS NULL") == 0


async def test_unknown_expired_and_malformed_refresh_tokens_are_refused(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await _login(client, "alice", refresh=True)
    for bad in ("nonsense", token["refreshtoken"][:-1], "x" * 10_000):
        resp = await _refresh(client, bad)
        body = assert_envelope(resp)
        assert resp.status_code == 401 and body["messages"] == "Refresh token is invalid", bad
    for body in ({}, {"refreshtoken": 5}, {"refreshtoken": ""}):
        resp = await client.post("/api/refreshToken", json=body)
        assert resp.status_code == 400 and assert_envelope(resp)["code"] == 400, body
    await db.execute("UPDATE refresh_token SET expires_at = now() - interval '1 second'")
    resp = await _refresh(client, token["refreshtoken"])
    assert resp.status_code == 401 and resp.json()["messages"] == "Refresh token has expired"


async def test_the_refresh_lifetime_is_a_setting(settings: Settings, registry: Any, db: asyncpg.Connection) -> None:
    from dataclasses import replace

    from gateway.app import create_app

    await add_user(db, "alice")
    app = create_app(replace(settings, refresh_ttl_seconds=60), registry)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c):
        token = await _login(c, "alice", refresh=True)
    left = await db.fetchval("SELECT expires_at - now() FROM refresh_token")
    assert dt.timedelta(seconds=55) < left <= dt.timedelta(seconds=60)
    assert Settings.from_env({"GATEWAY_REFRESH_TTL": "3600"}).refresh_ttl_seconds == 3600
    assert token["refreshexpires"].endswith("Z")


@pytest.mark.parametrize("change", ["disable", "passwd", "role"])
async def test_a_disable_password_change_or_role_change_refuses_the_refresh(
        client: httpx.AsyncClient, db: asyncpg.Connection, change: str) -> None:
    await add_user(db, "alice")
    token = await _login(client, "alice", refresh=True)
    if change == "disable":
        await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
    elif change == "passwd":
        await db.fetchval(QUERIES["user_passwd"], "alice", auth.hash_password("another password"))
    else:
        await db.fetchval(QUERIES["user_set_role"], "alice", "reader")
    resp = await _refresh(client, token["refreshtoken"])
    assert resp.status_code == 401 and assert_envelope(resp)["messages"] == "Refresh token is no longer valid"
    # For good: enabling the user again does not bring the family back.
    await db.fetchval(QUERIES["user_set_disabled"], "alice", False)
    assert (await _refresh(client, token["refreshtoken"])).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM refresh_token WHERE revoked_at IS NULL") == 0


async def test_revoke_token_ends_one_session_with_its_access_tokens(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    await add_user(db, "bob")
    mine = await _login(client, "alice", refresh=True)
    refreshed = assert_envelope(await _refresh(client, mine["refreshtoken"]))["token"]
    other = await _login(client, "alice", refresh=True)
    bobs = await _login(client, "bob", refresh=True)
    # Someone else's refresh token is not the caller's to revoke: nothing happens to it (the caller's own
    # access token, which it presented to log out, is ended).
    probe = await _login(client, "alice")
    resp = await client.post("/api/revokeToken", json={"refreshtoken": bobs["refreshtoken"]},
                             headers={"Authorization": probe["accesstoken"]})
    assert assert_envelope(resp)["revoked"] == 0
    assert await _pull(client, probe["accesstoken"]) == 401
    assert (await _refresh(client, bobs["refreshtoken"])).status_code == 200
    resp = await client.post("/api/revokeToken", json={"refreshtoken": refreshed["refreshtoken"]},
                             headers={"Authorization": refreshed["accesstoken"]})
    assert assert_envelope(resp) == {"success": True, "messages": "Success", "revoked": 1, "code": 200}
    assert (await _refresh(client, refreshed["refreshtoken"])).status_code == 401
    for access in (refreshed["accesstoken"], mine["accesstoken"]):  # the family's access tokens are denied
        assert await _pull(client, access) == 401
    # Only that session: the other login goes on.
    assert await _pull(client, other["accesstoken"]) == 200
    assert (await _refresh(client, other["refreshtoken"])).status_code == 200
    # Repeating a logout is no error.
    fresh = await _login(client, "alice")
    resp = await client.post("/api/revokeToken", json={"refreshtoken": refreshed["refreshtoken"]},
                             headers={"Authorization": fresh["accesstoken"]})
    assert assert_envelope(resp)["revoked"] == 0


async def test_revoke_token_all_ends_every_session_of_the_caller_only(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    await add_user(db, "bob")
    sessions = [await _login(client, "alice", refresh=True) for _ in range(3)]
    bobs = await _login(client, "bob", refresh=True)
    resp = await client.post("/api/revokeToken", json={"all": True},
                             headers={"Authorization": sessions[0]["accesstoken"]})
    assert assert_envelope(resp)["revoked"] == 3
    for session in sessions:
        assert (await _refresh(client, session["refreshtoken"])).status_code == 401
        assert await _pull(client, session["accesstoken"]) == 401
    assert await _pull(client, bobs["accesstoken"]) == 200
    assert (await _refresh(client, bobs["refreshtoken"])).status_code == 200
    # New logins work as before.
    assert await _pull(client, (await _login(client, "alice"))["accesstoken"]) == 200


async def test_revoke_token_needs_a_valid_access_token_and_says_what_to_revoke(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    token = await _login(client, "alice", refresh=True)
    for headers in ({}, {"Authorization": "garbage"}, {"Authorization": token["refreshtoken"]}):
        resp = await client.post("/api/revokeToken", json={"refreshtoken": token["refreshtoken"]}, headers=headers)
        assert resp.status_code == 401 and assert_envelope(resp)["code"] == 401
    auth_header = {"Authorization": token["accesstoken"]}
    for body in ({}, {"all": False}, {"all": True, "refreshtoken": token["refreshtoken"]}, {"refreshtoken": 7}):
        resp = await client.post("/api/revokeToken", json=body, headers=auth_header)
        assert resp.status_code == 400 and assert_envelope(resp)["code"] == 400, body
    assert (await _refresh(client, token["refreshtoken"])).status_code == 200
    # A disabled user's token revokes nothing.
    await db.fetchval(QUERIES["user_set_disabled"], "alice", True)
    resp = await client.post("/api/revokeToken", json={"all": True}, headers=auth_header)
    assert resp.status_code == 401


async def test_a_rotated_key_signs_and_the_old_key_verifies_until_retired(
        client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> None:
    await add_user(db, "alice")
    old = (await _login(client, "alice"))["accesstoken"]
    base = keys.base_kid(SECRET)
    assert _kid(old) == base
    # Tokens issued before keys had ids carry none: they are the base key's.
    claims = jwt.decode(old, SECRET, algorithms=["HS256"], audience="erp-sync-api")
    no_kid = jwt.encode(claims, SECRET, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(no_kid)
    assert await _pull(client, no_kid) == 200

    new_key, retired = keys.rotate(settings)
    assert retired == []
    new = (await _login(client, "alice"))["accesstoken"]
    assert _kid(new) == new_key.kid != base
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new, SECRET, algorithms=["HS256"], audience="erp-sync-api")
    for token in (old, no_kid, new):
        assert await _pull(client, token) == 200

    # A token whose kid no key has, or a known kid with another key's signature, is refused.
    unknown = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "k0000000000000000"})
    wrong = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": new_key.kid})
    odd = _signed({"alg": "HS256", "typ": "JWT", "kid": 7}, claims, SECRET)  # PyJWT would not write it
    for token in (unknown, wrong, odd):
        resp = await client.post("/api/GetData", json={"form": "getCustomer"}, headers={"Authorization": token})
        assert resp.status_code == 401 and assert_envelope(resp)["messages"] == "Token is invalid"

    # Retiring the old key refuses its tokens (and those without a kid) at once; the new key's go on.
    assert keys.retire(settings, base) is not None
    assert await _pull(client, old) == 401
    assert await _pull(client, no_kid) == 401
    assert await _pull(client, new) == 200
    with pytest.raises(Exception, match="current"):
        keys.retire(settings, new_key.kid)


async def test_a_rotate_retires_the_keys_whose_tokens_have_all_expired(
        client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings) -> None:
    await add_user(db, "alice")
    old = (await _login(client, "alice"))["accesstoken"]
    now = dt.datetime.now(dt.UTC)
    first, _ = keys.rotate(settings, now=now)
    assert await _pull(client, old) == 200
    # A lifetime later, the base key signed nothing that is still valid: the next rotate retires it.
    later = now + dt.timedelta(seconds=settings.token_ttl_seconds)
    second, retired = keys.rotate(settings, now=later)
    assert [k.kid for k in retired] == [keys.base_kid(SECRET)]
    assert await _pull(client, old) == 401
    kids = [row[0] for row in keys.listing(settings, now=later)]
    assert kids == [keys.base_kid(SECRET), first.kid, second.kid]
    # The file keeps no retired key's secret, and only its owner may read it.
    text = keys.keys_path(settings).read_text()
    assert SECRET not in text
    assert keys.keys_path(settings).stat().st_mode & 0o077 == 0


async def test_the_keys_commands(db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GATEWAY_JWT_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", db_url)
    base = keys.base_kid(SECRET)
    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["KID", "CREATED", "SUPERSEDED", "STATUS"]
    assert listed[1].startswith(base) and listed[1].endswith("current: signs")
    assert cli.main(["keys", "rotate"]) == 0
    out = capsys.readouterr().out
    new_kid = out.split()[1]
    assert out.startswith(f"key {new_kid} signs from now on")
    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].startswith(base) and "verifies until" in listed[1]
    assert listed[2].startswith(new_kid) and listed[2].endswith("current: signs")
    assert cli.main(["keys", "retire", "nope"]) == 2 and "no key 'nope'" in capsys.readouterr().err
    assert cli.main(["keys", "retire", new_kid]) == 2 and "current" in capsys.readouterr().err
    assert cli.main(["keys", "retire", base]) == 0
    assert capsys.readouterr().out == f"key {base} retired: the tokens it signed are refused\n"
    assert cli.main(["keys", "list"]) == 0
    assert "retired" in capsys.readouterr().out.splitlines()[1]


def test_a_malformed_keys_file_stops_the_start(settings: Settings) -> None:
    from gateway.config import ConfigError

    keys.keys_path(settings).write_text('{"keys": [{"kid": "k1", "secret": "short", "created": "2026-01-01T00:00:00Z"}]}')
    with pytest.raises(ConfigError, match="shorter"):
        keys.key_ring(settings)
    keys.keys_path(settings).write_text("not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        keys.key_ring(settings)


async def test_refreshes_refusals_and_logouts_are_audited_without_the_tokens(
        client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await add_user(db, "alice")
    first = await _login(client, "alice", refresh=True)
    second = assert_envelope(await _refresh(client, first["refreshtoken"]))["token"]
    assert (await _refresh(client, first["refreshtoken"])).status_code == 401  # reused: the family goes
    assert (await _refresh(client, "no-such-token")).status_code == 401
    other = await _login(client, "alice", refresh=True)
    resp = await client.post("/api/revokeToken", json={"all": True}, headers={"Authorization": other["accesstoken"]})
    assert resp.status_code == 200, resp.text
    rows = [dict(r) for r in await db.fetch(
        "SELECT kind, username, endpoint, status, detail FROM audit_log"
        " WHERE kind IN ('token_refreshed', 'refresh_refused', 'logout') ORDER BY id")]
    assert [(r["kind"], r["username"], r["endpoint"], r["status"]) for r in rows] == [
        ("token_refreshed", "alice", "refreshToken", 200),
        ("refresh_refused", "alice", "refreshToken", 401),
        ("refresh_refused", None, "refreshToken", 401),
        ("logout", "alice", "revokeToken", 200),
    ]
    assert "already used" in rows[1]["detail"] and rows[3]["detail"] == "every session: 1 revoked"
    text = json.dumps(rows)
    for secret in (first["refreshtoken"], second["refreshtoken"], other["accesstoken"], PASSWORD):
        assert secret not in text


def test_a_verified_token_is_kept_but_still_refused_once_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker verifies a token's signature once; every later use still checks its expiry and its key."""
    tokens = auth.TokenService(SECRET, ttl_seconds=60, issuer="erp-sync-gateway", audience="erp-sync-api")
    issued = tokens.issue("alice", "acme", "writer")
    first = tokens.decode(issued.token)
    assert tokens.decode(issued.token) is first  # kept: not decoded again
    # A token differing in one character is another token: verified, and refused.
    forged = issued.token[:-2] + ("A" if issued.token[-2] != "A" else "B") + issued.token[-1]
    with pytest.raises(auth.Unauthorized, match="invalid"):
        tokens.decode(forged)
    monkeypatch.setattr(auth.time, "time", lambda: float(first["exp"]))
    with pytest.raises(auth.Unauthorized, match="expired"):
        tokens.decode(issued.token)


def test_the_verified_tokens_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 3)
    tokens = auth.TokenService(SECRET, ttl_seconds=60, issuer="erp-sync-gateway", audience="erp-sync-api")
    issued = [tokens.issue(f"user{i}", "acme", "writer").token for i in range(5)]
    claims = [tokens.decode(token) for token in issued]
    assert list(tokens._verified) == issued[2:]  # the oldest went first
    assert [tokens.decode(token)["sub"] for token in issued] == [c["sub"] for c in claims]
