"""The client side: concurrent pushers of pre-encoded bodies, and the one-client pager."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

_decode = msgspec.json.decode


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100): with few samples p99 is simply the largest but one or two."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class PushResult:
    requests: int = 0
    rows: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        return {
            "requests": self.requests,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds) if self.seconds else None,
            "p50_ms": _r(percentile(ms, 50)),
            "p99_ms": _r(percentile(ms, 99)),
            "max_ms": _r(max(ms) if ms else None),
            "result": dict(sorted(self.counts.items())),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def new_client(base_url: str, timeout: float, keep_alive: bool) -> httpx.AsyncClient:
    """One connection at a time. Without keep-alive each request opens a new one, so that the uvicorn
    workers, which share one listening socket, each take the connections that arrive while they are idle."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=int(keep_alive)),
    )


async def push(
    clients: list[httpx.AsyncClient], headers: dict[str, str], bodies: list[bytes], phase_timeout: float
) -> PushResult:
    """The clients (one connection each, created and connected beforehand) take the next body until none
    is left."""
    result = PushResult()
    todo = iter(bodies)
    headers = {"Content-Type": "application/json", **headers}

    async def client_loop(client: httpx.AsyncClient) -> None:
        for body in todo:  # a shared iterator: each body is sent exactly once, by whichever client is free
            start = time.perf_counter()
            try:
                resp = await client.post("/api/SyncData", content=body, headers=headers)
                raw = resp.content
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - start
            try:
                answer = _decode(raw)
            except msgspec.DecodeError:
                answer = None
            if resp.status_code != 200 or not isinstance(answer, dict) or answer.get("success") is not True:
                result.errors.append(f"HTTP {resp.status_code}: {raw[:300]!r}")
                continue
            result.requests += 1
            result.rows += answer.get("records", 0)
            result.latencies.append(elapsed)
            for k, v in (answer.get("result") or {}).items():
                if isinstance(v, int):
                    result.counts[k] = result.counts.get(k, 0) + v

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client_loop(c) for c in clients)), timeout=phase_timeout)
    result.seconds = time.perf_counter() - start
    return result


async def page_all(
    client: httpx.AsyncClient, headers: dict[str, str], limit: int, phase_timeout: float
) -> dict[str, Any]:
    """Follow next_cursor from the first page to the last; keys are checked to come strictly ascending."""
    latencies: list[float] = []
    rows = pages = 0
    out_of_order = 0
    last_key: str | None = None
    keys: set[str] = set()
    errors: list[str] = []

    async def run(client: httpx.AsyncClient) -> None:
        nonlocal rows, pages, out_of_order, last_key
        cursor = None
        while True:
            body: dict[str, Any] = {"form": "getCustomer", "limit": limit}
            if cursor is not None:
                body["cursor"] = cursor
            start = time.perf_counter()
            resp = await client.post("/api/GetData", content=msgspec.json.encode(body), headers=headers)
            raw = resp.content
            latencies.append(time.perf_counter() - start)
            answer = _decode(raw)
            if resp.status_code != 200 or not answer.get("success"):
                errors.append(f"HTTP {resp.status_code}: {raw[:300]!r}")
                return
            pages += 1
            for rec in answer["data"]:
                key = rec["CustomerCode"]
                if last_key is not None and key <= last_key:
                    out_of_order += 1
                last_key = key
                keys.add(key)
            rows += len(answer["data"])
            cursor = answer.get("next_cursor")
            if cursor is None:
                return

    headers = {"Content-Type": "application/json", **headers}
    start = time.perf_counter()
    await asyncio.wait_for(run(client), timeout=phase_timeout)
    seconds = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "limit": limit,
        "pages": pages,
        "rows": rows,
        "distinct_keys": len(keys),
        "out_of_order": out_of_order,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds else None,
        "p50_ms": _r(percentile(ms, 50)),
        "p99_ms": _r(percentile(ms, 99)),
        # A pager that gets slower page after page (a scan from the start each time) shows up here.
        "first_tenth_p50_ms": _r(percentile(ms[: max(1, len(ms) // 10)], 50)),
        "last_tenth_p50_ms": _r(percentile(ms[-max(1, len(ms) // 10) :], 50)),
        "errors": len(errors),
        "first_errors": errors[:3],
    }
