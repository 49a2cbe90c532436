#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it with the extras named in $1 (e.g. "test"), together
# with the Python client (client/), a package of its own that `gateway push` and `gateway pull` run on.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" -e client
