"""The admin page: GET /api/admin/overview (an admin's own tenant, nobody else's; figures from the audit log),
the page and its files, and the page itself in a real headless Chromium against a real gateway process."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import PASSWORD, Api, GatewayProcess, add_user, assert_envelope, issue_token, plan_scans

from gateway import admin
from gateway.db import QUERIES

SECRET = "admin-page-tests-secret-" + "x" * 24


@pytest.fixture
async def boss(app: Any, db: asyncpg.Connection, token: str) -> str:
    """The token of tenant acme's admin (acme is where the `token` fixture's writer1 writes)."""
    await add_user(db, "boss", "admin")
    return await issue_token(app, db, "boss")


async def overview(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    return await client.get("/api/admin/overview", headers={"Authorization": f"Bearer {token}"} if token else {})


def customers(*codes: str) -> list[dict[str, str]]:
    return [{"CustomerCode": code, "CustomerName": f"Customer {code}"} for code in codes]


def records(answer: dict[str, Any]) -> int:
    result = answer.get("result") or {}
    return sum(result.get(name, 0) for name in ("inserted", "updated", "unchanged", "deleted", "failed"))


# --- the JSON ----------------------------------------------------------------------------------------------

async def test_an_admin_sees_their_tenants_users_requests_and_feeds_and_nothing_of_another_tenant(
        app: Any, client: httpx.AsyncClient, db: asyncpg.Connection, api: Api, boss: str) -> None:
    assert_envelope(await api.sync("setCustomer", customers("KH1", "KH2")))
    await add_user(db, "zeta_admin", "admin", tenant="zeta")
    await add_user(db, "zeta_writer", "writer", tenant="zeta")
    zeta = Api(client, await issue_token(app, db, "zeta_writer"))
    assert_envelope(await zeta.sync("setItem", [{"ItemCode": "Z1", "ItemName": "Zeta thing", "ItemType": "HH",
                                                 "Uom": "PCS"}]))

    body = assert_envelope(await overview(client, boss))

    assert body["tenant"]["Code"] == "acme"
    assert [u["Username"] for u in body["users"]["data"]] == ["boss", "writer1"]
    assert body["users"]["total"] == 2
    assert {u["Username"]: u["Role"] for u in body["users"]["data"]} == {"boss": "admin", "writer1": "writer"}
    assert [(r["Username"], r["Form"], r["Status"]) for r in body["requests"]] == [("writer1", "setCustomer", 200)]
    assert body["requests"][0]["Counts"]["inserted"] == 2
    assert [(f["Form"], f["LastChangeRecords"]) for f in body["feeds"]] == [("setCustomer", 2)]
    assert "zeta" not in json.dumps(body).lower()

    other = assert_envelope(await overview(client, await issue_token(app, db, "zeta_admin")))
    assert other["tenant"]["Code"] == "zeta"
    assert [u["Username"] for u in other["users"]["data"]] == ["zeta_admin", "zeta_writer"]
    assert [r["Form"] for r in other["requests"]] == ["setItem"]
    assert [f["Form"] for f in other["feeds"]] == ["setItem"]


async def test_the_figures_count_the_last_hours_write_requests_records_and_errors(
        client: httpx.AsyncClient, api: Api, boss: str) -> None:
    answers = [assert_envelope(await api.sync("setCustomer", customers("KH1", "KH2", "KH3"))),
               assert_envelope(await api.sync("setCustomer", customers("KH1", "KH4"))),
               # A refusal: a record without its name, 601, nothing written.
               assert_envelope(await api.sync("setCustomer", [{"CustomerCode": "KH5"}])),
               assert_envelope(await api.sync("setCustomer", customers("KH6")))]
    assert [a["code"] for a in answers] == [200, 200, 601, 200]

    figures = assert_envelope(await overview(client, boss))["figures"]

    assert (figures["requests"], figures["errors"], figures["error_rate"]) == (4, 1, 0.25)
    assert figures["records"] == sum(records(a) for a in answers) == 3 + 2 + 1 + 1
    minutes = figures["per_minute"]
    assert len(minutes) == figures["minutes"] == 60
    assert sum(m["Requests"] for m in minutes) == 4 and sum(m["Errors"] for m in minutes) == 1
    assert sum(m["Records"] for m in minutes) == figures["records"]
    assert [m["Minute"] for m in minutes] == sorted(m["Minute"] for m in minutes)
    refused = assert_envelope(await overview(client, boss))["requests"][1]
    assert (refused["Status"], refused["Detail"]) == (601, "Data structure error")


async def test_a_request_older_than_the_hour_is_listed_but_not_counted(
        client: httpx.AsyncClient, db: asyncpg.Connection, api: Api, boss: str) -> None:
    assert_envelope(await api.sync("setCustomer", customers("KH1")))
    await db.execute("UPDATE audit_log SET at = at - interval '61 minutes' WHERE kind = 'write'")

    body = assert_envelope(await overview(client, boss))

    assert (body["figures"]["requests"], body["figures"]["records"]) == (0, 0)
    assert len(body["requests"]) == 1


async def test_past_the_users_shown_the_total_says_how_many_there_are(
        client: httpx.AsyncClient, boss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin, "MAX_USERS", 1)

    users = assert_envelope(await overview(client, boss))["users"]

    assert ([u["Username"] for u in users["data"]], users["total"]) == (["boss"], 2)


async def test_a_users_last_login_is_shown_once_they_logged_in(client: httpx.AsyncClient, boss: str) -> None:
    users = assert_envelope(await overview(client, boss))["users"]["data"]
    assert all(u["LastLogin"] is None for u in users)
    assert (await client.post("/api/getToken", json={"username": "writer1", "password": PASSWORD})).status_code == 200

    users = assert_envelope(await overview(client, boss))["users"]["data"]

    assert {u["Username"]: u["LastLogin"] is not None for u in users} == {"boss": False, "writer1": True}


async def add_deliveries(db: asyncpg.Connection, tenant: str = "acme") -> int:
    """A subscription of `tenant` with a delivery in each state: delivered, waiting, failing, dead. Paused, and
    its deliveries marked queued, so that a running gateway's webhook worker leaves them as they are."""
    tenant_id = await db.fetchval("SELECT id FROM tenant WHERE code = $1", tenant)
    subscription = await db.fetchval(
        "INSERT INTO webhook_subscription (tenant_id, url, forms, secrets, active) VALUES ($1,"
        " 'https://hooks.example/in', '{*}', '[]', false) RETURNING id", tenant_id)
    for n, (status, attempts, last_status) in enumerate([("delivered", 1, 200), ("pending", 0, None),
                                                         ("pending", 2, 500), ("dead", 9, 503)]):
        await db.execute("INSERT INTO webhook_delivery (id, tenant_id, subscription_id, body, changes, status, "
                         "attempts, last_status, queued) VALUES ($1, $2, $3, '{}', 1, $4, $5, $6, true)",
                         f"msg_{n}", tenant_id, subscription, status, attempts, last_status)
    return int(subscription)


async def test_webhook_deliveries_are_counted_by_state(client: httpx.AsyncClient, db: asyncpg.Connection,
                                                      boss: str) -> None:
    subscription = await add_deliveries(db)

    hooks = assert_envelope(await overview(client, boss))["webhooks"]

    assert hooks["counts"] == {"delivered": 1, "pending": 1, "failing": 1, "dead": 1, "total": 4}
    assert [(d["id"], d["status"], d["last_status"]) for d in hooks["deliveries"]] == [
        ("msg_3", "dead", 503), ("msg_2", "pending", 500), ("msg_1", "pending", None), ("msg_0", "delivered", 200)]
    assert [(s["id"], s["url"], s["pending"], s["dead"]) for s in hooks["subscriptions"]] == [
        (subscription, "https://hooks.example/in", 2, 1)]


async def test_a_role_other_than_admin_is_refused_403(client: httpx.AsyncClient, token: str) -> None:
    resp = await overview(client, token)  # writer1's
    body = assert_envelope(resp)
    assert resp.status_code == 403 and body["code"] == 403 and body["permission"] == "admin"
    assert "tenant" not in body


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_without_a_valid_token_the_overview_is_refused_401(client: httpx.AsyncClient, token: str | None) -> None:
    resp = await overview(client, token)
    body = assert_envelope(resp)
    assert resp.status_code == 401 and body["code"] == 401


async def test_the_overview_reads_the_audit_log_through_its_indexes(db: asyncpg.Connection) -> None:
    async def scans(name: str, *args: Any) -> list[tuple[str, str | None]]:
        # Planned as on a big table: a sequential scan is the planner's choice only while every table is tiny.
        async with db.transaction():
            await db.execute("SET LOCAL enable_seqscan = off")
            raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {QUERIES[name]}", *args)
        return [(s["Relation Name"], s.get("Index Name")) for s in plan_scans(json.loads(raw))]

    assert ("audit_log", "audit_log_tenant_at") in await scans("admin_minutes", 1, 60)
    assert ("audit_log", "audit_log_last_login") in await scans("admin_users", 1, 500)
    assert ("change_log", "change_log_pull") in await scans("admin_feed_heads", 1, ["customer"])


# --- the page ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, media_type", [("/admin", "text/html"), ("/admin/admin.js", "text/javascript"),
                                               ("/admin/admin.css", "text/css")])
async def test_the_page_and_its_files_come_from_the_gateway_under_a_strict_policy(
        client: httpx.AsyncClient, path: str, media_type: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(media_type)
    policy = resp.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "unsafe" not in policy
    outside = resp.text.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace: a name, never fetched
    assert "http:" not in outside and "https:" not in outside


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    parser = _Tags()
    parser.feed((admin.STATIC_DIR / "admin.html").read_text())
    assert parser.script_text == ""
    assert all("src" in attrs for tag, attrs in parser.tags if tag == "script")
    assert not [tag for tag, attrs in parser.tags if tag == "style" or "style" in attrs
                or any(name.startswith("on") for name in attrs)]
    script = (admin.STATIC_DIR / "admin.js").read_text()
    assert "innerHTML" not in script and "document.cookie" not in script and "localStorage" not in script


# --- in a real browser -------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
WINDOW = (1280, 900)


@pytest.fixture
def gateway_process(db_url: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    """`gateway serve` as deployed: the API as the application role, held to row-level security."""
    process = GatewayProcess(db_url, {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_JWT_SECRET": SECRET,
                                      "GATEWAY_POOL_MIN": "1"}, tmp_path / "gateway.log")
    process.start()
    yield process
    process.stop()


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a profile of its own, the page given 5 s of (virtual) time to load and draw."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000",
         *args, url],
        capture_output=True, text=True, timeout=60, check=True)


# Skipped where Chromium is missing, except in CI, whose scripts/test.sh installs it: there it must run.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="chromium is not installed (scripts/test.sh installs it as root)")


@needs_chromium
async def test_the_page_shows_the_tenant_in_a_real_browser(gateway_process: GatewayProcess, db: asyncpg.Connection,
                                                           tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    await add_user(db, "boss", "admin")
    await add_user(db, "till7", "writer")
    await add_user(db, "zeta_admin", "admin", tenant="zeta")
    async with httpx.AsyncClient(base_url=gateway_process.url) as http:
        tokens = {}
        for name in ("boss", "till7"):
            resp = await http.post("/api/getToken", json={"username": name, "password": PASSWORD})
            tokens[name] = resp.json()["token"]["accesstoken"]
        for form, data in [("setCustomer", customers("KH1", "KH2", "KH3")), ("setCustomer", [{"CustomerCode": "KH9"}]),
                           ("setSite", [{"SiteCode": "K1", "SiteName": "Main store"}])]:
            resp = await http.post("/api/SyncData", json={"form": form, "data": data},
                                   headers={"Authorization": tokens["till7"]})
            assert resp.status_code == 200
        request_ids = [r["request_id"] for r in await db.fetch(
            "SELECT request_id FROM audit_log WHERE kind = 'write' ORDER BY id")]
    await add_deliveries(db)
    url = f"{gateway_process.url}/admin#token={tokens['boss']}"

    dom = chromium(url, tmp_path / "profile-dom", "--dump-dom").stdout
    shot = tmp_path / "admin.png"
    chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")

    page = _Text()
    page.feed(dom)
    text = page.by_id
    assert text["who-tenant"] == "Acme (acme)"
    assert text["fig-requests"] == "3" and text["fig-records"] == "5" and text["fig-error-rate"] == "33.3%"
    assert text["fig-errors"] == "1 failed"
    assert page.cells("users") == [["boss", "admin", "enabled", _any], ["till7", "writer", "enabled", _any]]
    rows = page.cells("requests")
    assert [(r[1], r[3], r[4], r[11]) for r in rows] == [
        ("till7", "setSite", "200", request_ids[2]), ("till7", "setCustomer", "601", request_ids[1]),
        ("till7", "setCustomer", "200", request_ids[0])]
    assert rows[1][12] == "Data structure error"
    assert [r[0] for r in page.cells("feeds")] == ["setSite", "setCustomer"]
    assert page.cells("subscriptions") == [["https://hooks.example/in", "*", "paused", "2", "1"]]
    assert [(d[1], d[2], d[4]) for d in page.cells("deliveries")] == [
        ("https://hooks.example/in", "dead", "HTTP 503"), ("https://hooks.example/in", "pending", "HTTP 500"),
        ("https://hooks.example/in", "pending", "-"), ("https://hooks.example/in", "delivered", "HTTP 200")]
    assert "zeta" not in dom
    # Requests and records drew the minutes that had any; the error rate, in red, the minute of the 601.
    assert {bar["class"] for bar in page.bars} == {"bar", "bar bad"}

    with Image.open(shot) as image:
        assert image.size == WINDOW
        rgb = image.convert("RGB")
        assert max(ImageStat.Stat(rgb).stddev) > 20  # not blank
        colours = {colour for _, colour in rgb.getcolors(maxcolors=1 << 20) or []}
        assert (0x2F, 0x6F, 0xDF) in colours  # the bars' blue: the charts were drawn
        assert (0x17, 0x20, 0x2E) in colours  # the header


@needs_chromium
async def test_the_page_asks_for_a_login_when_the_token_is_not_an_admins(gateway_process: GatewayProcess,
                                                                         db: asyncpg.Connection,
                                                                         tmp_path: Path) -> None:
    await add_user(db, "till7", "writer")
    async with httpx.AsyncClient(base_url=gateway_process.url) as http:
        resp = await http.post("/api/getToken", json={"username": "till7", "password": PASSWORD})
    writer = resp.json()["token"]["accesstoken"]

    dom = chromium(f"{gateway_process.url}/admin#token={writer}", tmp_path / "profile", "--dump-dom").stdout

    page = _Text()
    page.feed(dom)
    assert page.by_id["login-error"] == "Role 'writer' may not see the admin page; it is for the admin role"
    assert "hidden" not in page.attrs["login"] and "hidden" in page.attrs["panels"]


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


_any = _Any()


VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                  "wbr"})


class _Text(html.parser.HTMLParser):
    """The text and attributes of elements with an id, the cells of tables by id, and the charts' bars, of a
    dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.bars: list[dict[str, str | None]] = []
        self._open: list[str | None] = []
        self._table: str | None = None
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "rect":
            self.bars.append(found)
        if tag == "table":
            self._table = found.get("id")
        elif tag == "tbody" and self._table:
            self._in_body = True
            self.tables[self._table] = []
        elif tag == "tr" and self._in_body and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        if found.get("id"):
            self.attrs[found["id"] or ""] = found
        if tag in VOID:
            return
        self._open.append(found.get("id"))
        if found.get("id"):
            self.by_id.setdefault(found["id"] or "", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        if self._open and tag not in VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for element_id in self._open:
            if element_id:
                self.by_id[element_id] += data

    def cells(self, table: str) -> list[list[str]]:
        return self.tables[table]
