#!/usr/bin/env bash
# ferry's main job on built-in examples, for real:
#  1. examples/local: local resources whose values flow into each other;
#  2. examples/fleet: three NixOS-style machines over SSH — three local test hosts (private mount
#     namespaces, each running a real sshd on 127.0.0.N) get a system with a web page, a
#     generated SSH key pair and a key uploaded outside the Nix store, in parallel;
#  3. examples/webapps: web app processes behind a reverse proxy routing by Host header, under
#     supervisord on this machine, with ports from an ID pool; adding an instance starts it and
#     reconfigures the proxy while the first instance keeps running (same PID).
# Needs root (test hosts use mount namespaces). Leaves the hosts and the web apps running; see
# the end.
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
echo "=== 3. web apps behind a reverse proxy, under supervisord (examples/webapps)"
export FERRY_WEBAPPS_DIR=${FERRY_WEBAPPS_DIR:-/tmp/ferry-webapps}
export FERRY_WEBAPPS_PROXY_PORT=${FERRY_WEBAPPS_PROXY_PORT:-8088}
wf=examples/webapps/deployment.nix
wstate=$FERRY_WEBAPPS_DIR/state.db
proxy=http://127.0.0.1:$FERRY_WEBAPPS_PROXY_PORT/
# Start from nothing: a previous run's set is destroyed (its processes and its supervisord
# stop); a supervisord whose state was lost is stopped by its PID file.
if [ -e "$wstate" ]; then
  echo "(destroying the previous run's web apps)"
  $ferry destroy -f $wf --state "$wstate" --yes -q >/dev/null || true
fi
spid=$(cat "$FERRY_WEBAPPS_DIR/state/run/supervisord.pid" 2>/dev/null || true)
if [ -n "$spid" ] && kill "$spid" 2>/dev/null; then
  for _ in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.2; done
fi
rm -rf "$FERRY_WEBAPPS_DIR/state" "$FERRY_WEBAPPS_DIR/profiles" "$wstate" "$wstate.lock"
# GET through the proxy with a Host header; prints the page, or the error.
via_proxy() {
  echo "-- Host: $1  ($proxy)"
  busybox wget -q -O - --header "Host: $1" "$proxy" 2>&1 || true
}
# webapp's PID, from `ferry processes status` ("webapp: running (pid N)").
webapp_pid() {
  $ferry processes status webapps -f $wf --state "$wstate" | sed -n 's/^webapp: running (pid \([0-9]*\))$/\1/p'
}
echo "== ferry apply (FERRY_WEBAPPS=\"webapp\")"
export FERRY_WEBAPPS=webapp
$ferry apply -f $wf --state "$wstate" --yes -v 2>&1 | grep -E '^\[webapps\] info|^Plan:|^Apply'
$ferry processes status webapps -f $wf --state "$wstate"
via_proxy webapp.localhost
via_proxy unknown.localhost
before=$(webapp_pid)
echo "== ferry apply (FERRY_WEBAPPS=\"webapp webapp2\"): webapp2 starts, the proxy gets its route"
export FERRY_WEBAPPS="webapp webapp2"
$ferry apply -f $wf --state "$wstate" --yes -v 2>&1 | grep -E '^\[webapps\] info|^Plan:|^Apply'
$ferry processes status webapps -f $wf --state "$wstate"
via_proxy webapp2.localhost
via_proxy webapp.localhost
after=$(webapp_pid)
if [ -n "$before" ] && [ "$before" = "$after" ]; then
  echo "webapp kept its PID ($after)"
else
  echo "error: webapp's PID changed ($before -> $after)" >&2
  exit 1
fi

echo
echo "Look at the result:"
echo "  export FERRY_FLEET_HOSTS=$FERRY_FLEET_HOSTS"
echo "  $ferry state list --state $fstate"
echo "  $ferry machine generations web1 -f $ff --state $fstate"
echo "  $ferry ssh web1 -f $ff --state $fstate -- ls -l /run/keys /etc/static/"
echo "  busybox wget -q -O - http://<addr>:8080/        # addresses in $FERRY_FLEET_HOSTS"
echo "  export FERRY_WEBAPPS=\"webapp webapp2\" FERRY_WEBAPPS_DIR=$FERRY_WEBAPPS_DIR FERRY_WEBAPPS_PROXY_PORT=$FERRY_WEBAPPS_PROXY_PORT FERRY_NIX_OPTIONS=$FERRY_NIX_OPTIONS"
echo "  $ferry processes status webapps -f $wf --state $wstate"
echo "  $ferry state show ids -f $wf --state $wstate            # the ports"
echo "  curl -H 'Host: webapp2.localhost' $proxy"
echo "  FERRY_WEBAPPS=\"webapp webapp2 webapp3\" $ferry apply -f $wf --state $wstate --yes -v"
echo "Stop the test hosts and the web apps:"
echo "  $testhosts down --dir $fleet/hosts"
echo "  $ferry destroy -f $wf --state $wstate --yes"
