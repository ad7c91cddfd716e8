#!/usr/bin/env bash
# The whole test suite: the one command the README names.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --no-run --all-targets
cargo test --all-targets
