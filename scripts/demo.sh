#!/usr/bin/env bash
# ferry's main job on built-in examples, for real:
#  1. examples/local: local resources whose values flow into each other;
#  2. examples/fleet: three NixOS-style machines over SSH — three local test hosts (private mount
#     namespaces, each running a real sshd on 127.0.0.N) get a system with a web page, a
#     generated SSH key pair and a key uploaded outside the Nix store, in parallel.
# Needs root (test hosts use mount namespaces). Leaves the hosts running; see the end.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release -q -p ferry-cli -p ferry-testkit --bin ferry --bin ferry-testhosts
ferry=$PWD/target/release/ferry
testhosts=$PWD/target/release/ferry-testhosts
# The default binary cache is unreachable offline; Nix would wait on it for every build.
export FERRY_NIX_OPTIONS=${FERRY_NIX_OPTIONS-substituters=}

echo "=== 1. local resources (examples/local)"
export FERRY_EXAMPLE_DIR=${FERRY_EXAMPLE_DIR:-/tmp/ferry-example}
state=$FERRY_EXAMPLE_DIR/state.db
f=examples/local/deployment.nix
$ferry apply -f $f --state "$state" --yes
$ferry apply -f $f --state "$state" --yes

echo
echo "=== 2. a fleet of machines over SSH (examples/fleet)"
fleet=${FERRY_FLEET_DIR:-/tmp/ferry-fleet}
mkdir -p "$fleet"
# Fresh hosts every time (new addresses, empty stores), so a previous run's state is stale.
$testhosts down --dir "$fleet/hosts" >/dev/null 2>&1 || true
rm -f "$fleet/state.db" "$fleet/state.db.lock"
$testhosts up --dir "$fleet/hosts" web1 web2 web3
export FERRY_FLEET_HOSTS=$fleet/hosts/hosts.json
ff=examples/fleet/deployment.nix
fstate=$fleet/state.db
echo "== ferry plan"
$ferry plan -f $ff --state "$fstate"
echo "== ferry apply"
$ferry apply -f $ff --state "$fstate" --yes --timings
echo "== ferry apply again: nothing to copy, nothing to activate"
$ferry apply -f $ff --state "$fstate" --yes
echo "== ferry exec --on @web -- cat /run/current-system/nixos-version"
$ferry exec -f $ff --state "$fstate" --on @web -- cat /run/current-system/nixos-version
echo "== the pages"
addrs=$(sed -n 's/.*"addr": *"\([0-9.]*\)".*/\1/p' "$FERRY_FLEET_HOSTS")
[ -n "$addrs" ] || addrs=$(tr ',' '\n' < "$FERRY_FLEET_HOSTS" | sed -n 's/.*"addr":"\([0-9.]*\)".*/\1/p')
for a in $addrs; do
  echo "-- http://$a:8080/"
  busybox wget -q -O - "http://$a:8080/" | head -n 2
done

echo
echo "Look at the result:"
echo "  export FERRY_FLEET_HOSTS=$FERRY_FLEET_HOSTS"
echo "  $ferry state list --state $fstate"
echo "  $ferry machine generations web1 -f $ff --state $fstate"
echo "  $ferry ssh web1 -f $ff --state $fstate -- ls -l /run/keys /etc/static/"
echo "  busybox wget -q -O - http://<addr>:8080/        # addresses in $FERRY_FLEET_HOSTS"
echo "Stop the test hosts:"
echo "  $testhosts down --dir $fleet/hosts"
