#!/usr/bin/env bash
# The whole test suite: the one command the README names (and .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
# The console test drives Debian's Chromium headless; install it if missing.
if ! command -v chromium >/dev/null 2>&1; then
  echo "tests/run.sh: installing Debian's chromium (for the web console test)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends chromium \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium; }
fi
# librdkafka is built with OpenSSL (SASL/SCRAM in tests/it/security.rs); install its headers if missing.
if ! pkg-config --exists openssl 2>/dev/null; then
  echo "tests/run.sh: installing Debian's libssl-dev (librdkafka needs OpenSSL for SASL/SCRAM)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends libssl-dev pkg-config \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends libssl-dev pkg-config; }
fi
# Benchmarks are run by hand (see bench/README.md); CI only checks they build.
cargo test --no-run --benches
# A bound on the whole suite (build included): a test that hangs (a client
# library stuck in its own close, say) fails the run with a message instead
# of holding it until CI's limit. timeout signals cargo's whole process group.
timeout --kill-after=30s 60m cargo test || {
  rc=$?
  [ "$rc" = 124 ] && echo "tests/run.sh: cargo test did not finish within 60 minutes (a hung test?)" >&2
  exit "$rc"
}
# Real clients from the package registries against the broker binary that
# cargo test just built (tests/compat/CONTRACT.md): prints the matrix.
bash tests/compat/run.sh
