#!/usr/bin/env bash
# Runs the aiokafka scenarios (python/aiokafka_client.py) against the broker at $BOOTSTRAP.
# Driver variables: BOOTSTRAP, EDDY, WORK, COMPAT (see CONTRACT.md); the venv comes from install-python.sh.
set -euo pipefail
: "${BOOTSTRAP:?}" "${COMPAT:=$(cd "$(dirname "$0")" && pwd)}"
COMPAT_CACHE="${COMPAT_CACHE:-$COMPAT/../../target/compat}"
cd "${WORK:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec "$COMPAT_CACHE/venv/bin/python" "$COMPAT/python/aiokafka_client.py"
