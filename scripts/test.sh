#!/usr/bin/env bash
# Installs everything the tests need into .venv, then runs the whole suite against a real PostgreSQL
# (the embedded one, or the server named by DATABASE_URL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
exec .venv/bin/python -m pytest "$@"
