#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests against real Nix.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build -q --workspace --all-targets
cargo test --workspace -- --test-threads 2
