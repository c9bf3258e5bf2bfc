#!/usr/bin/env bash
# Deploy a ~100-path, ~100 MiB closure to HOSTS (16) fresh test hosts three ways, in one run:
# (a) the manual workflow host by host (nix-copy-closure, ssh nix-env --set, ssh
# switch-to-configuration), (b) the same script HOSTS-wide with xargs -P, (c) ferry apply; then
# a no-op ferry apply to all of them, and one `nix-store --export | ssh nix-store --import`
# stream for scale. Reports wall time, CPU seconds and bytes sent. See bench/README.md.
#
# Environment: HOSTS (16), BLOBS (100 blobs of BLOB_KIB = 1024 KiB), NOOP_RUNS (3),
# FERRY_ARGS (extra `ferry apply` flags for (c), e.g. "--jobs 16 --copy-jobs 16"),
# TUNED_SSH (the machines' sshOptions for a second ferry run (c2), default
# "-o Ciphers=aes128-gcm@openssh.com -o KexAlgorithms=curve25519-sha256"; empty: no (c2)),
# KEEP=1 keeps the work directory. Needs root (test hosts, cgroups, nft).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$BENCH_DIR/machines-lib.sh"

HOSTS=${HOSTS:-16}
NOOP_RUNS=${NOOP_RUNS:-3}
TUNED_SSH=${TUNED_SSH-"-o Ciphers=aes128-gcm@openssh.com -o KexAlgorithms=curve25519-sha256"}
read -r -a FERRY_EXTRA <<<"${FERRY_ARGS:-}"

build_machine_tools
machines_init "$(mktemp -d /tmp/ferry-bench-machines-XXXXXX)"
export KNOWN_HOSTS="$WORK/known_hosts" LOG_DIR="$WORK"
build_blobs

# Fresh hosts and their systems, built (untimed), with the closure read once so that every
# variant starts from a warm page cache.
prepare() {
    fresh_hosts "$HOSTS"
    build_systems "$HOSTS_DIR/hosts.json"
    cut -f5 "$WORK/targets.tsv" | xargs nix-store -qR | xargs cat -- 2>/dev/null >/dev/null || true
}

# Every host runs its system (checked from outside: the host's /run is a directory here).
check_deployed() {
    local name system current
    while IFS=$'\t' read -r name _ _ _ system; do
        current=$(readlink "$HOSTS_DIR/$name/run/current-system" || true)
        if [[ "$current" != "$system" ]]; then
            echo "error: $1: $name runs '${current:-nothing}', not $system" >&2
            return 1
        fi
    done <"$WORK/targets.tsv"
}

prepare
SYSTEM1=$(head -1 "$WORK/targets.tsv" | cut -f5)
PATHS=$(nix-store -qR "$SYSTEM1" | wc -l)
CLOSURE_BYTES=$(nix-store -qR "$SYSTEM1" | xargs nix-store -q --size | awk '{ s += $1 } END { print s }')
printf '== closure per host: %d paths, %.1f MiB (NAR); %d hosts, %d CPUs, load %s\n' "$PATHS" \
    "$(echo "$CLOSURE_BYTES / 1048576" | bc -l)" "$HOSTS" "$(nproc)" "$(load_average)"
echo "== CPU: user+sys of the deployer's cgroup (the command and all it starts) and of the hosts' (sshd and"
echo "   everything it runs); sent/recv: IP bytes to/from the hosts' sshd ports (nft counters on the output hook)"
print_header

measure "(a) manual, host by host" xargs -P 1 -L 1 "$BENCH_DIR/manual-deploy.sh" <"$WORK/targets.tsv"
check_deployed "(a)"

prepare
measure "(b) manual, xargs -P $HOSTS" xargs -P "$HOSTS" -L 1 "$BENCH_DIR/manual-deploy.sh" <"$WORK/targets.tsv"
check_deployed "(b)"

# ferry_run LABEL SSH_OPTIONS: fresh hosts, the deployment (sshOptions = SSH_OPTIONS), the first
# apply, then NOOP_RUNS no-op applies; sets NOOP_S (their median).
ferry_run() {
    local label=$1 i sshopts="" words=()
    read -r -a words <<<"$2"
    for i in "${words[@]}"; do sshopts+=" \"$i\""; done
    prepare
    rm -rf "$WORK/ferry"
    mkdir -p "$WORK/ferry"
    cat >"$WORK/ferry/deployment.nix" <<EOF
{ resources, ... }:
let
  bench = $(machines_expr "$HOSTS_DIR/hosts.json");
  hosts = builtins.fromJSON (builtins.readFile $HOSTS_DIR/hosts.json);
in
{
  resources = builtins.listToAttrs (map (h: {
    inherit (h) name;
    value = {
      type = "nixos.machine";
      inputs = {
        host = h.addr;
        port = h.port;
        sshKey = h.clientKey;
        hostKey = h.hostKey;
        sshOptions = [$sshopts ];
        system = bench.systems.\${h.name};
      };
    };
  }) hosts);
}
EOF
    measure "$label" ferry_apply "$WORK/ferry-first.log" "${FERRY_EXTRA[@]}"
    check_deployed "$label"
    for ((i = 1; i <= NOOP_RUNS; i++)); do
        measure "$label: no-op #$i" ferry_apply "$WORK/ferry-noop.log"
        grep -q 'No changes' "$WORK/ferry-noop.log" ||
            { echo "error: the redeploy was not a no-op:" >&2; cat "$WORK/ferry-noop.log" >&2; return 1; }
    done
    NOOP_S=$(for ((i = 1; i <= NOOP_RUNS; i++)); do field "$label: no-op #$i" 2; done |
        sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
}

ferry_apply() {
    local log=$1
    shift
    (cd "$WORK/ferry" && FERRY_NIX_OPTIONS="substituters=" NO_COLOR=1 "$FERRY" apply --yes "$@" >"$log" 2>&1) ||
        { echo "error: ferry apply failed:" >&2; tail -30 "$log" >&2; return 1; }
}

FERRY_LABEL="(c) ferry apply${FERRY_ARGS:+ $FERRY_ARGS}"
ferry_run "$FERRY_LABEL" ""
C_NOOP_S=$NOOP_S
if [[ -n "$TUNED_SSH" ]]; then
    ferry_run "(c2) ferry, sshOptions: tuned" "$TUNED_SSH"
    C2_NOOP_S=$NOOP_S
fi

# For scale: one stream of the whole closure into one fresh host (no ControlMaster, default cipher).
fresh_hosts 1 s
IFS=$'\t' read -r _ S_ADDR S_PORT S_KEY _ <"$WORK/hosts.tsv"
# shellcheck disable=SC2046,SC2086
stream() { nix-store --export $(nix-store -qR "$SYSTEM1") | ssh $(ssh_opts "$S_KEY" "$S_PORT") "root@$S_ADDR" nix-store --import >/dev/null; }
measure "single stream export|import, 1 host" stream

A_S=$(field "(a) manual, host by host" 2)
B_S=$(field "(b) manual, xargs -P $HOSTS" 2)
C_S=$(field "$FERRY_LABEL" 2)
STREAM_S=$(field "single stream export|import, 1 host" 2)
echo
printf 'no-op ferry apply (median of %d):      %6.2f s\n' "$NOOP_RUNS" "$C_NOOP_S"
if [[ -n "$TUNED_SSH" ]]; then
    C2_S=$(field "(c2) ferry, sshOptions: tuned" 2)
    printf '(c2) = ferry with sshOptions %s\n' "$TUNED_SSH"
    printf '(c2) ferry/(b) = %.2f, ferry/(a) = %.2f, no-op (median %.2f s)/first = %.3f\n' \
        "$(echo "$C2_S / $B_S" | bc -l)" "$(echo "$C2_S / $A_S" | bc -l)" "$C2_NOOP_S" "$(echo "$C2_NOOP_S / $C2_S" | bc -l)"
fi
printf 'single stream: %.1f MiB in %.2f s = %.0f MiB/s (one host; %d hosts at that rate: %.1f s)\n' \
    "$(echo "$CLOSURE_BYTES / 1048576" | bc -l)" "$STREAM_S" "$(echo "$CLOSURE_BYTES / 1048576 / $STREAM_S" | bc -l)" \
    "$HOSTS" "$(echo "$STREAM_S * $HOSTS" | bc -l)"
printf 'load average at the end: %s\n' "$(load_average)"
printf 'RATIO ferry/(b) = %.2f (target <= 1.0)\n' "$(echo "$C_S / $B_S" | bc -l)"
printf 'RATIO ferry/(a) = %.2f (target <= 0.75)\n' "$(echo "$C_S / $A_S" | bc -l)"
printf 'RATIO no-op/ferry first deploy = %.3f (target <= 0.1)\n' "$(echo "$C_NOOP_S / $C_S" | bc -l)"
