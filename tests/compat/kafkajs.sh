#!/usr/bin/env bash
# kafkajs scenarios of the compatibility matrix (see CONTRACT.md). Needs BOOTSTRAP; install-js.sh
# must have run (npm ci in tests/compat/js).
set -euo pipefail
COMPAT="${COMPAT:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
if [[ ! -d "$COMPAT/js/node_modules/kafkajs" ]]; then
    echo "kafkajs is not installed: run $COMPAT/install-js.sh" >&2
    for s in admin produce consume-group commit-resume; do
        printf 'MATRIX\tkafkajs\t%s\tFAIL\tkafkajs not installed (run install-js.sh)\n' "$s"
    done
    exit 1
fi
# The program ends itself (watchdog) before the driver's limit; timeout is a last resort.
exec timeout -k 5 235 node "$COMPAT/js/kafkajs_client.mjs"
