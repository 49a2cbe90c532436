#!/usr/bin/env bash
# Load benchmark: the gateway against a bare reference pipeline, on a throw-away PostgreSQL (the embedded
# one in a temporary directory, or a gw_bench_* database on the server named by DATABASE_URL).
# Arguments go to bench/run.py (e.g. --requests 20); see bench/README.md. Writes bench/out/latest.json.
# `scripts/bench.sh pull [--rows N]` runs bench/pull.py instead: one GetData pulling a whole catalog.
# `scripts/bench.sh pos` runs bench/pos.py: single-record requests from keep-alive clients, driven by wrk.
# `scripts/bench.sh vouchers [--requests N]` runs bench/vouchers.py: sale invoices with posting.
# `scripts/bench.sh login` runs bench/login_abuse.py: other requests' latency while bad logins loop.
# `scripts/bench.sh reliability [--quick]` runs bench/reliability.py: bad input, kills, faults, contention.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh bench
if [ "${1:-}" = "pull" ]; then
    shift
    exec .venv/bin/python -m bench.pull "$@"
fi
if [ "${1:-}" = "vouchers" ]; then
    shift
    exec .venv/bin/python -m bench.vouchers "$@"
fi
if [ "${1:-}" = "pos" ]; then
    shift
    exec .venv/bin/python -m bench.pos "$@"
fi
if [ "${1:-}" = "login" ]; then
    shift
    exec .venv/bin/python -m bench.login_abuse "$@"
fi
if [ "${1:-}" = "reliability" ]; then
    shift
    exec .venv/bin/python -m bench.reliability "$@"
fi
exec .venv/bin/python -m bench.run "$@"
