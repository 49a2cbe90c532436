"""Which staging strategy should the bare pipeline use? Times each one straight against PostgreSQL.

    .venv/bin/python -m bench.staging_probe [--batches 50] [--connections 2]

No HTTP, no validation: rows are folded before the clock starts. Each strategy gets a fresh, empty
bench_customer, then writes `--batches` batches of 1,000 new keys per connection (inserts), then the same
keys with one field changed (updates).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from . import bare_app, data
from .pg import bench_database


async def _run(url: str, strategy: str, per_conn: list[list[list[tuple]]]) -> dict[str, float]:
    setup = await asyncpg.connect(url)
    await setup.execute(f"DROP TABLE IF EXISTS {bare_app.TABLE}; {bare_app.table_ddl()}")
    await setup.close()
    conns = [await asyncpg.connect(url) for _ in per_conn]
    for c in conns:
        await bare_app.init_connection(c, strategy)
    stager = bare_app.Stager(strategy)
    out: dict[str, float] = {}
    try:
        for phase in ("insert", "update"):
            work = per_conn if phase == "insert" else [[_changed(b) for b in batches] for batches in per_conn]

            async def one(conn: asyncpg.Connection, batches: list[list[tuple]]) -> None:
                for rows in batches:
                    await stager.write(conn, rows)

            start = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(one(c, b) for c, b in zip(conns, work))), timeout=600)
            rows = sum(len(b) for batches in work for b in batches)
            out[phase] = rows / (time.perf_counter() - start)
        if strategy != "unnest":
            out["stage_kb"] = (await conns[0].fetchval(f"SELECT pg_relation_size('{bare_app.STAGE}')")) / 1024
    finally:
        for c in conns:
            await c.close()
    return out


_PHONE = bare_app.COLUMNS.index("phone_number")


def _changed(rows: list[tuple]) -> list[tuple]:
    return [r[:_PHONE] + ("0" + r[_PHONE][1:][::-1],) + r[_PHONE + 1 :] for r in rows]


def _fmt(res: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:,.0f}{'' if k == 'stage_kb' else ' rows/s'}" for k, v in res.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--batches", type=int, default=50, help="batches of 1,000 rows per connection and phase"
    )
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--strategies", default=",".join(bare_app.STRATEGIES))
    parser.add_argument("--rounds", type=int, default=3, help="strategies run interleaved this many times")
    args = parser.parse_args()
    per_conn = []
    for c in range(args.connections):
        batches = data.batches(f"P{c}K", args.batches, seed=c)
        per_conn.append([bare_app.fold(b)[0] for b in batches])
    workdir = Path(tempfile.mkdtemp(prefix="gw-probe-"))
    try:
        with bench_database(workdir) as db:
            runs: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for strategy in args.strategies.split(","):
                    res = asyncio.run(_run(db.url, strategy, per_conn))
                    runs.setdefault(strategy, []).append(res)
                    print(f"{strategy:10s} " + _fmt(res), flush=True)
            print("median:")
            for strategy, results in runs.items():
                print(
                    f"{strategy:10s} "
                    + _fmt({k: statistics.median(r[k] for r in results) for k in results[0]})
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
