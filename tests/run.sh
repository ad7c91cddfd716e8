#!/usr/bin/env bash
# The whole test suite: the one command the README names (and .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
# Benchmarks are run by hand (see bench/README.md); CI only checks they build.
cargo test --no-run --benches
cargo test
