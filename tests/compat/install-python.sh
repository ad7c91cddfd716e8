#!/usr/bin/env bash
# Installs the Python clients of the compatibility matrix into "$COMPAT_CACHE/venv", pinned by
# tests/compat/python/requirements.txt. Idempotent: a stamp file holding the hash of the
# requirements (and of the interpreter's version) skips pip when nothing changed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
COMPAT_CACHE="${COMPAT_CACHE:-$here/../../target/compat}"
venv="$COMPAT_CACHE/venv"
req="$here/python/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "install-python: $python not found" >&2; exit 1; }

want="$( { sha256sum <"$req"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka' 2>/dev/null; then
    echo "install-python: $venv is up to date" >&2
    exit 0
fi

echo "install-python: installing $(grep -v '^#' "$req" | xargs) into $venv" >&2
mkdir -p "$COMPAT_CACHE"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
rm -f "$stamp"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet --only-binary confluent-kafka -r "$req"
"$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka
print("install-python: confluent-kafka", confluent_kafka.__version__, "librdkafka", confluent_kafka.libversion()[0],
      "| kafka-python", kafka.__version__, "| aiokafka", aiokafka.__version__)' >&2
echo "$want" >"$stamp"
