// The admin page: logs in through /api/getToken, reads /api/admin/overview and draws it.
// Text from the server is only ever set as textContent (never parsed as HTML); the token stays in this
// tab's sessionStorage and travels in the Authorization header, never in a cookie.
"use strict";

const TOKEN_KEY = "gateway.admin.token";
const REFRESH_MS = 30000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// "2026-12-02T18:15:04.123Z" -> "2026-12-02 18:15:04": the server's UTC, as the column headers say.
function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "-";
}

function number(value) {
  return Number(value).toLocaleString("en-US");
}

// --- the token ----------------------------------------------------------------------------------------------

// /admin#token=...: a token handed over in the fragment, which never reaches a server or its logs. Kept like
// one from the login form, and taken off the address at once.
function takeFragmentToken() {
  const match = /^#token=([A-Za-z0-9._-]+)$/.exec(window.location.hash);
  if (match) sessionStorage.setItem(TOKEN_KEY, match[1]);
  if (window.location.hash) history.replaceState(null, "", window.location.pathname + window.location.search);
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// The user the token names (its `sub` claim), to show who is logged in; the server checks the token itself.
function tokenUser() {
  try {
    const part = token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).sub || "";
  } catch (err) {
    return "";
  }
}

// --- the screens --------------------------------------------------------------------------------------------

function showLogin(message) {
  $("panels").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("status").textContent = "";
  $("login-error").textContent = message || "";
  $("username").focus();
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  let answer;
  try {
    const response = await fetch("/api/getToken", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: $("username").value, password: $("password").value}),
    });
    answer = await response.json();
  } catch (err) {
    $("login-error").textContent = "The gateway cannot be reached.";
    return;
  }
  if (!answer.success) {
    $("login-error").textContent = answer.messages;
    return;
  }
  $("password").value = "";
  sessionStorage.setItem(TOKEN_KEY, answer.token.accesstoken);
  await load();
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("Logged out.");
}

async function load() {
  if (!token()) {
    showLogin("");
    return;
  }
  $("status").textContent = "Loading…";
  let response;
  let answer;
  try {
    response = await fetch("/api/admin/overview", {headers: {Authorization: "Bearer " + token()}, cache: "no-store"});
    answer = await response.json();
  } catch (err) {
    $("status").textContent = "The gateway cannot be reached; showing what was read last.";
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(answer.messages);
    return;
  }
  if (!answer.success) {
    $("status").textContent = answer.messages;
    return;
  }
  $("login").hidden = true;
  render(answer);
  $("status").textContent = "Read at " + new Date().toISOString().slice(11, 19) + " UTC";
}

// --- the panels ---------------------------------------------------------------------------------------------

function render(data) {
  $("who-tenant").textContent = data.tenant.Name + " (" + data.tenant.Code + ")";
  $("who-user").textContent = "as " + tokenUser();
  $("who").hidden = false;
  renderFigures(data.figures);
  renderTenant(data.tenant);
  renderUsers(data.users);
  renderRequests(data.requests);
  renderFeeds(data.feeds);
  renderWebhooks(data.webhooks);
  $("panels").hidden = false;
}

function renderFigures(figures) {
  const minutes = figures.per_minute;
  $("fig-requests").textContent = number(figures.requests);
  $("fig-requests-rate").textContent = perMinute(figures.requests, figures.minutes);
  $("fig-records").textContent = number(figures.records);
  $("fig-records-rate").textContent = perMinute(figures.records, figures.minutes);
  $("fig-error-rate").textContent = percent(figures.error_rate);
  $("fig-errors").textContent = number(figures.errors) + " failed";
  bars($("chart-requests"), minutes.map((m) => m.Requests), "bar", number, "Write requests per minute");
  bars($("chart-records"), minutes.map((m) => m.Records), "bar", number, "Records per minute");
  bars($("chart-errors"), minutes.map((m) => (m.Requests ? m.Errors / m.Requests : 0)), "bar bad", percent,
       "Share of write requests that failed, per minute");
}

function percent(share) {
  return (share * 100).toFixed(1) + "%";
}

function perMinute(total, minutes) {
  return (total / minutes).toFixed(1) + " / min";
}

// One bar per minute, oldest on the left; the tallest fills the height, its value (as `show` writes it) is
// under the chart. Drawn with the DOM: the SVG takes its size from the stylesheet.
function bars(container, values, className, show, label) {
  clear(container);
  const width = 600;
  const height = 80;
  const peak = Math.max(...values, 0);
  const step = width / values.length;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label + ", the last " + values.length + " minutes");
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(height - 0.5));
  base.setAttribute("y2", String(height - 0.5));
  base.setAttribute("class", "axis");
  svg.appendChild(base);
  values.forEach((value, i) => {
    if (!value) return;
    const tall = Math.max(2, (value / peak) * (height - 4));
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(i * step + 1));
    rect.setAttribute("y", String(height - tall));
    rect.setAttribute("width", String(Math.max(1, step - 2)));
    rect.setAttribute("height", String(tall));
    rect.setAttribute("class", className);
    svg.appendChild(rect);
  });
  container.appendChild(svg);
  const scale = el("div", null, "scale");
  scale.appendChild(el("span", "-" + values.length + " min"));
  scale.appendChild(el("span", "peak " + show(peak)));
  scale.appendChild(el("span", "now"));
  container.appendChild(scale);
}

function renderTenant(tenant) {
  const facts = $("tenant");
  clear(facts);
  const rows = [
    ["Code", tenant.Code], ["Name", tenant.Name], ["Base currency", tenant.BaseCurrency],
    ["Chart of accounts", tenant.Chart || "none"], ["Books locked until", tenant.LockedUntil || "-"],
    ["Negative stock", tenant.NegativeStock], ["Created (UTC)", when(tenant.CreatedAt)],
  ];
  for (const [name, value] of rows) {
    facts.appendChild(el("dt", name));
    facts.appendChild(el("dd", value));
  }
}

function fill(table, rows, cells) {
  const body = table.tBodies[0];
  clear(body);
  if (!rows.length) {
    const tr = el("tr", null, "empty");
    const td = el("td", "None yet");
    td.colSpan = table.tHead.rows[0].cells.length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of cells(row)) tr.appendChild(cell);
    body.appendChild(tr);
  }
}

function renderUsers(users) {
  $("users-total").textContent = users.total === users.data.length
    ? String(users.total) : users.data.length + " of " + users.total;
  fill($("users"), users.data, (u) => [
    el("td", u.Username),
    el("td", u.Role),
    el("td", u.Disabled ? "disabled" : "enabled", u.Disabled ? "tag bad" : "tag ok"),
    el("td", when(u.LastLogin)),
  ]);
}

function codeClass(code) {
  if (code === 200) return "tag ok";
  if (code === null || code >= 500) return "tag bad";
  return "tag warn";
}

function renderRequests(requests) {
  fill($("requests"), requests, (r) => {
    const counts = r.Counts || {};
    const count = (name) => el("td", counts[name] === undefined ? "" : number(counts[name]), "num");
    const tr = [
      el("td", when(r.At), "nowrap"),
      el("td", r.Username),
      el("td", r.Endpoint),
      el("td", r.Form || "-"),
      el("td", r.Status === null ? "none" : r.Status, codeClass(r.Status)),
      count("inserted"), count("updated"), count("unchanged"), count("deleted"), count("failed"),
      el("td", r.DurationMs === null ? "" : Math.round(r.DurationMs), "num"),
      el("td", r.RequestId, "mono"),
      el("td", r.Detail || "", "detail"),
    ];
    return tr;
  });
}

function renderFeeds(feeds) {
  fill($("feeds"), feeds, (f) => [
    el("td", f.Form),
    el("td", when(f.LastChangeAt)),
    el("td", number(f.LastChangeRecords), "num"),
  ]);
}

function renderWebhooks(webhooks) {
  const urls = new Map(webhooks.subscriptions.map((sub) => [sub.id, sub.url]));
  fill($("subscriptions"), webhooks.subscriptions, (sub) => [
    el("td", sub.url, "mono"),
    el("td", sub.forms.join(", ")),
    el("td", sub.active ? "active" : "paused", sub.active ? "tag ok" : "tag warn"),
    el("td", number(sub.pending), "num"),
    el("td", number(sub.dead), sub.dead ? "num tag bad" : "num"),
  ]);
  const counts = $("delivery-counts");
  clear(counts);
  $("deliveries-window").textContent = "of the last " + number(webhooks.window);
  for (const [name, cls] of [["delivered", "ok"], ["pending", ""], ["failing", "warn"], ["dead", "bad"]]) {
    const item = el("li", null, "count " + cls);
    item.appendChild(el("strong", number(webhooks.counts[name])));
    item.appendChild(el("span", " " + name));
    counts.appendChild(item);
  }
  fill($("deliveries"), webhooks.deliveries, (d) => [
    el("td", when(d.created), "nowrap"),
    el("td", urls.get(d.subscription) || "#" + d.subscription, "mono"),
    el("td", d.status, d.status === "delivered" ? "tag ok" : d.status === "dead" ? "tag bad" : "tag warn"),
    el("td", number(d.attempts), "num"),
    el("td", [d.last_status !== null ? "HTTP " + d.last_status : "", d.last_error || ""].filter(Boolean).join(": ")
       || "-", d.status === "delivered" ? "" : "detail"),
  ]);
}

// --- start --------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  takeFragmentToken();
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", load);
  setInterval(() => {
    if (token() && !document.hidden) load();
  }, REFRESH_MS);
  load();
});
