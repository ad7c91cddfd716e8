#!/usr/bin/env bash
# Runs the sarama program of the compatibility matrix (go/sarama/main.go,
# built by install-go.sh). The driver sets BOOTSTRAP, EDDY, WORK and COMPAT
# (CONTRACT.md); the program prints the MATRIX lines.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
COMPAT_CACHE="${COMPAT_CACHE:-${CARGO_TARGET_DIR:-$here/../../target}/compat}"
bin="$COMPAT_CACHE/bin/sarama"
: "${BOOTSTRAP:?BOOTSTRAP is not set}"
if [ ! -x "$bin" ]; then
    echo "sarama.sh: $bin is missing: run tests/compat/install-go.sh" >&2
    exit 1
fi
cd "${WORK:-.}"
exec "$bin"
