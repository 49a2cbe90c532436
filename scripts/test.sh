#!/usr/bin/env bash
# Installs everything the tests need into .venv, then runs the whole suite against a real PostgreSQL
# (the embedded one, or the server named by DATABASE_URL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
# The admin page's test drives Debian's headless Chromium (tests/test_admin_page.py): installed when missing.
if ! command -v chromium >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
