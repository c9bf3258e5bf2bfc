#!/usr/bin/env bash
# Create N (20) containers on this machine two ways, in one run, and compare wall times:
# (a) a plain script starting the same systems one after the other with systemd-nspawn (root
#     directory, profile, .nspawn file, network namespace + veth + addresses, detached
#     systemd-nspawn, wait until the container's init has activated its system); then stop them;
# (b) `ferry apply` of a deployment declaring the N containers (pool addresses, default
#     parallelism);
# then (c) an apply with one of the N containers changed, against (b). Target: b/a <= 1.0.
# The systems are built beforehand (untimed). Needs root, systemd-nspawn, ip. KEEP=1 keeps the
# work directory. Addresses: 10.233.200.0/24 (a blackhole route for 10.233.0.0/16 keeps stray
# packets on the machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-20}
build_release
WORK=$(mktemp -d /tmp/ferry-bench-containers-XXXXXX)
ip route replace blackhole 10.233.0.0/16
NIX_OPTS=(--option substituters '')
export FERRY_NIX_OPTIONS="substituters="

names() { for i in $(seq 1 "$N"); do echo "bench-ct$i"; done; }
cleanup() {
    for n in $(names) $(names | sed 's/bench-/plain-/'); do
        sh "$ROOT/crates/ferry-provider-nspawn/src/nspawn.sh" stop "$n" 3 >/dev/null 2>&1 || true
        sh "$ROOT/crates/ferry-provider-nspawn/src/nspawn.sh" destroy "$n" yes >/dev/null 2>&1 || true
    done
    if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The deployment (also gives the systems for the plain script).
write_deployment() { # $1: page suffix of container 1
    {
        echo "{ resources, ... }: let t = import $ROOT/crates/ferry-testkit/nix { }; in {"
        for i in $(seq 1 "$N"); do
            local page="ct$i"
            [[ $i == 1 ]] && page="ct$i$1"
            cat <<EOF
  resources.ct$i = {
    type = "nspawn.container";
    inputs = {
      name = "bench-ct$i";
      system = t.mkContainer { name = "ct$i"; pages."index.html" = "$page\n"; };
      network.v4.pool = "10.233.200.0/24";
      keepState = false;
    };
  };
EOF
        done
        echo "}"
    } >"$WORK/deployment.nix"
}
write_deployment ""

echo "== building the $N container systems (untimed)"
systems=()
for i in $(seq 1 "$N"); do
    drv=$(nix-instantiate "${NIX_OPTS[@]}" -E "(import $ROOT/crates/ferry-testkit/nix { }).mkContainer { name = \"ct$i\"; pages.\"index.html\" = \"ct$i\n\"; }")
    systems+=("$(nix-store "${NIX_OPTS[@]}" --realise "$drv" 2>/dev/null)")
done

# (a) the plain script.
plain() {
    local i=0 n root ns
    for sys in "${systems[@]}"; do
        i=$((i + 1))
        n=plain-ct$i
        root=/var/lib/machines/$n
        mkdir -p "$root/etc" "$root/usr" "$root/nix/store" "$root/nix/var/nix/profiles" "/nix/var/nix/profiles/per-container/$n"
        touch "$root/etc/os-release"
        nix-env -p "/nix/var/nix/profiles/per-container/$n/system" --set "$sys"
        mkdir -p /etc/systemd/nspawn
        printf '[Exec]\nBoot=no\nParameters=/nix/var/nix/profiles/system/init\nKillSignal=SIGRTMIN+3\n[Files]\nBindReadOnly=/nix/store\nBind=/nix/var/nix/profiles/per-container/%s:/nix/var/nix/profiles\n' "$n" >"/etc/systemd/nspawn/$n.nspawn"
        ns=plain-$n
        ip netns add "$ns"
        ip link add "ve-$n" type veth peer name host0 netns "$ns"
        ip -n "$ns" link set lo up
        ip -n "$ns" link set host0 up
        ip link set "ve-$n" up
        ip addr replace 10.233.201.1/32 dev "ve-$n"
        ip route replace "10.233.201.$((i + 1))/32" dev "ve-$n"
        ip -n "$ns" addr add "10.233.201.$((i + 1))/32" dev host0
        ip -n "$ns" route add 10.233.201.1/32 dev host0
        ip -n "$ns" route add default via 10.233.201.1 dev host0 onlink
        setsid systemd-nspawn --quiet --keep-unit --register=no --settings=trusted -M "$n" -D "$root" \
            --network-namespace-path="/run/netns/$ns" --private-network </dev/null >"$WORK/$n.log" 2>&1 &
        echo $! >"$WORK/$n.pid"
        until [[ "$(readlink "/proc/$(pgrep -P "$(cat "$WORK/$n.pid")" | head -1)/root/run/current-system" 2>/dev/null)" == "$sys" ]]; do
            sleep 0.05
        done
    done
}
plain_stop() {
    local i
    for i in $(seq 1 "$N"); do
        kill "$(cat "$WORK/plain-ct$i.pid")" 2>/dev/null || true
    done
    sleep 2
    for i in $(seq 1 "$N"); do
        ip netns del "plain-plain-ct$i" 2>/dev/null || true
        ip link del "ve-plain-ct$i" 2>/dev/null || true
        rm -rf "/var/lib/machines/plain-ct$i" "/nix/var/nix/profiles/per-container/plain-ct$i" "/etc/systemd/nspawn/plain-ct$i.nspawn"
    done
}

now() { date +%s.%N; }
echo "== (a) plain script: $N sequential systemd-nspawn starts"
t0=$(now); plain; t1=$(now)
a=$(echo "$t1 - $t0" | bc)
plain_stop

cd "$WORK"
echo "== (b) ferry apply: $N containers"
t0=$(now); "$FERRY" apply --yes >"$WORK/apply.log" 2>&1; t1=$(now)
b=$(echo "$t1 - $t0" | bc)
write_deployment " changed"
echo "== (c) ferry apply: 1 of $N changed"
t0=$(now); "$FERRY" apply --yes >"$WORK/apply2.log" 2>&1; t1=$(now)
c=$(echo "$t1 - $t0" | bc)
grep -q "Apply complete: 1 updated, $((N - 1)) unchanged" "$WORK/apply2.log" || { echo "unexpected: $(tail -1 "$WORK/apply2.log")"; exit 1; }
"$FERRY" destroy --yes >/dev/null 2>&1

printf '\n%-48s %8s\n' "variant" "seconds"
printf '%-48s %8.2f\n' "(a) plain script, $N sequential nspawn starts" "$a"
printf '%-48s %8.2f\n' "(b) ferry apply, $N containers" "$b"
printf '%-48s %8.2f\n' "(c) ferry apply, 1 of $N changed" "$c"
printf '\nb/a = %.2f (target <= 1.0)   c/b = %.2f (one changed vs full apply)\n' \
    "$(echo "$b / $a" | bc -l)" "$(echo "$c / $b" | bc -l)"
