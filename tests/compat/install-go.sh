#!/usr/bin/env bash
# Installs the Go clients of the compatibility matrix from Debian and builds
# their programs offline (see CONTRACT.md). Idempotent: installs only missing
# packages and rebuilds only when a source (its own or the shared package's)
# is newer than its binary.
#
# Debian's -dev packages put Go sources under /usr/share/gocode/src; the build
# runs in GOPATH mode (GO111MODULE=off) with that tree on GOPATH, so it needs
# no module proxy and no network. tests/compat/go is on GOPATH too: the two
# programs import what they share from go/src/eddycompat/check. Sarama's zstd
# codec (DataDog/zstd) is cgo, hence gcc.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
COMPAT_CACHE="${COMPAT_CACHE:-${CARGO_TARGET_DIR:-$here/../../target}/compat}"
mkdir -p "$COMPAT_CACHE/bin"
COMPAT_CACHE="$(cd "$COMPAT_CACHE" && pwd)"

packages=(golang-go golang-github-shopify-sarama-dev golang-github-segmentio-kafka-go-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
    else
        apt=(sudo env DEBIAN_FRONTEND=noninteractive apt-get)
    fi
    echo "install-go: apt-get install ${missing[*]}" >&2
    if ! "${apt[@]}" install -y -q "${missing[@]}" >&2; then
        echo "install-go: install failed; apt-get update and again" >&2
        "${apt[@]}" update -q >&2
        "${apt[@]}" install -y -q "${missing[@]}" >&2
    fi
fi

export GO111MODULE=off
export GOPATH="$COMPAT_CACHE/gopath:$here/go:/usr/share/gocode"
export GOCACHE="$COMPAT_CACHE/go-build"
export GOPROXY=off GOFLAGS= GOENV=off
export CGO_ENABLED=1
# DataDog/zstd calls a zstd function that libzstd marks deprecated.
export CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
mkdir -p "$COMPAT_CACHE/gopath" "$GOCACHE"

build() { # build SOURCE_DIR BINARY
    local src="$here/go/$1" bin="$COMPAT_CACHE/bin/$2"
    if [ -x "$bin" ] && [ -z "$(find "$src" "$here/go/src" "$here/install-go.sh" -newer "$bin" -print -quit)" ]; then
        echo "install-go: $bin is up to date" >&2
        return
    fi
    echo "install-go: building $bin" >&2
    (cd "$src" && go build -o "$bin.tmp" .)
    mv -f "$bin.tmp" "$bin"
}

echo "install-go: $(go version)" >&2
build sarama sarama
build kafkago kafka-go
