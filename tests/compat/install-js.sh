#!/usr/bin/env bash
# Installs what the kafkajs and kcat clients of the compatibility matrix need (see CONTRACT.md).
# Idempotent: Debian's kcat package only when `kcat` is missing; `npm ci` in tests/compat/js only
# when node_modules is missing or older than package-lock.json. Fails loudly on any error.
set -euo pipefail
COMPAT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JS="$COMPAT/js"

# ---- kcat (Debian package) ----------------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-js.sh: kcat is missing and neither root nor sudo is available" >&2
        exit 1
    fi
    apt_install() {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends kcat
    }
    echo "install-js.sh: installing Debian's kcat" >&2
    if ! apt_install; then
        echo "install-js.sh: retrying after apt-get update" >&2
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update
        apt_install
    fi
    command -v kcat >/dev/null 2>&1 || { echo "install-js.sh: kcat still missing" >&2; exit 1; }
fi
echo "install-js.sh: $(kcat -V 2>&1 | grep -m1 '^Version')" >&2

# ---- kafkajs (npm ci from the committed package-lock.json) --------------------------------------
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install-js.sh: $tool is not installed" >&2; exit 1; }
done
# npm ci writes node_modules/.package-lock.json last; it is our "installed from this lock" stamp.
stamp="$JS/node_modules/.package-lock.json"
if [[ ! -f "$stamp" || "$JS/package-lock.json" -nt "$stamp" || ! -d "$JS/node_modules/kafkajs" ]]; then
    echo "install-js.sh: npm ci in $JS" >&2
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install-js.sh: kafkajs $(node -p 'require(process.argv[1]).version' "$JS/node_modules/kafkajs/package.json")" >&2
