#!/usr/bin/env bash
# Builds ferry and applies the built-in example (examples/local) for real.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q -p ferry-cli
ferry=target/release/ferry
export FERRY_EXAMPLE_DIR=${FERRY_EXAMPLE_DIR:-/tmp/ferry-example}
state=$FERRY_EXAMPLE_DIR/state.db
f=examples/local/deployment.nix
echo "== ferry plan"
$ferry plan -f $f --state "$state"
echo "== ferry apply"
$ferry apply -f $f --state "$state" --yes --timings
echo "== ferry apply again (no changes)"
$ferry apply -f $f --state "$state" --yes
echo "== ferry state list"
$ferry state list --state "$state"
echo
echo "Look at the result:"
echo "  ls -lR $FERRY_EXAMPLE_DIR; cat $FERRY_EXAMPLE_DIR/www/index.html"
echo "  $ferry graph -f $f | dot -Tsvg > graph.svg     # the resource graph"
echo "  $ferry destroy -f $f --state $state --yes       # remove everything"
