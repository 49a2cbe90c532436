#!/usr/bin/env bash
# Installs the gateway into .venv, starts the embedded PostgreSQL (unless DATABASE_URL is set), applies
# migrations, creates a demo tenant and user on first start and serves on 127.0.0.1:8000.
# Extra arguments go to `gateway serve` (e.g. --port 8080 --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/gateway serve "$@"
