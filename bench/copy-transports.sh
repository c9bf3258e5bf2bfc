#!/usr/bin/env bash
# Closure copy transports into fresh test hosts, each over an already open ssh ControlMaster
# (as ferry copies): nix-copy-closure --to, nix copy --to ssh://, nix copy --to ssh-ng://, and
# nix-store --export MISSING | ssh nix-store --import; with ssh's default cipher
# (chacha20-poly1305), with aes128-gcm, and with Compression=yes. One host at a time, then
# PARALLEL hosts at once (the copies compete for the CPUs, as ferry's --copy-jobs do). Also: one
# nix-copy-closure without a ControlMaster, and what each new SSH connection costs per key
# exchange. See bench/README.md.
#
# Environment: REPEAT (3; median wall, mean CPU), PARALLEL (4), BLOBS (100), BLOB_KIB (1024),
# KEEP=1. Needs root.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$BENCH_DIR/machines-lib.sh"

REPEAT=${REPEAT:-3}
PARALLEL=${PARALLEL:-4}

build_machine_tools
machines_init "$(mktemp -d /tmp/ferry-bench-transports-XXXXXX)"
build_blobs
NIX_CMD=(nix --extra-experimental-features nix-command --option substituters '')

# variant_opts VARIANT: extra ssh options.
variant_opts() {
    case $1 in
    chacha20) echo "-o Compression=no" ;;
    aes128-gcm) echo "-o Compression=no -o Ciphers=aes128-gcm@openssh.com" ;;
    compress) echo "-o Compression=yes" ;;
    *) echo "unknown variant $1" >&2; return 1 ;;
    esac
}

# copy_one TRANSPORT OPTS NAME ADDR PORT KEY SYSTEM: copy SYSTEM's closure to the host.
copy_one() {
    local transport=$1 opts=$2 name=$3 addr=$4 system=$7
    case $transport in
    nix-copy-closure) NIX_SSHOPTS="$opts" nix-copy-closure --to "root@$addr" "$system" ;;
    nix-copy-ssh) NIX_SSHOPTS="$opts" "${NIX_CMD[@]}" copy --to "ssh://root@$addr" "$system" ;;
    nix-copy-ssh-ng) NIX_SSHOPTS="$opts" "${NIX_CMD[@]}" copy --no-check-sigs --to "ssh-ng://root@$addr" "$system" ;;
    export-import)
        # The missing paths were listed before the copy (ferry does so anyway); --export orders them.
        # shellcheck disable=SC2046,SC2086
        nix-store --export $(cat "$WORK/missing-$name") | ssh $opts "root@$addr" nix-store --import >/dev/null
        ;;
    esac
}

# copy_all TRANSPORT VARIANT: copy to every host of targets.tsv at once.
copy_all() {
    local transport=$1 variant=$2 name addr port key system pids=() pid rc=0
    while IFS=$'\t' read -r name addr port key system; do
        copy_one "$transport" "$(ssh_opts "$key" "$port" "$(variant_opts "$variant")" -o "ControlPath=$WORK/cm-$name")" \
            "$name" "$addr" "$port" "$key" "$system" >"$WORK/copy-$name.log" 2>&1 &
        pids+=($!)
    done <"$WORK/targets.tsv"
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    if [[ $rc != 0 ]]; then cat "$WORK"/copy-*.log >&2; fi
    return $rc
}

# run_copy TRANSPORT VARIANT N master|none REP: fresh hosts, masters opened (untimed, in the deployer
# group), missing paths listed, then the timed copy; checks the hosts have their systems.
run_copy() {
    local transport=$1 variant=$2 n=$3 master=$4 rep=$5 label name addr port key system
    fresh_hosts "$n" c
    write_targets
    while IFS=$'\t' read -r name addr port key system; do
        local opts
        opts=$(ssh_opts "$key" "$port" "$(variant_opts "$variant")" -o "ControlPath=$WORK/cm-$name")
        if [[ $master == master ]]; then
            # shellcheck disable=SC2086
            cg_run deployer ssh $opts -o ControlMaster=yes -o ControlPersist=no -f -N "root@$addr"
        fi
        # shellcheck disable=SC2086
        nix-store -qR "$system" | ssh $opts "root@$addr" "xargs -r nix-store --check-validity --print-invalid" \
            >"$WORK/missing-$name"
    done <"$WORK/targets.tsv"
    label="$transport, $variant, $n host(s)"
    [[ $master == master ]] || label="$label, no master"
    measure "$label #$rep" copy_all "$transport" "$variant" >/dev/null
    while IFS=$'\t' read -r name addr port key system; do
        # shellcheck disable=SC2046
        if ! ssh -n $(ssh_opts "$key" "$port" -o "ControlPath=$WORK/cm-$name") "root@$addr" nix-store --check-validity "$system" >/dev/null; then
            echo "error: $label: $system is not valid on $name" >&2
            return 1
        fi
        if [[ $master == master ]]; then ssh -n -o "ControlPath=$WORK/cm-$name" -O exit "root@$addr" 2>/dev/null; fi
    done <"$WORK/targets.tsv"
}

# summarize LABEL: median wall, mean CPU and bytes of the REPEAT runs; one row in summary.tsv.
summarize() {
    local median
    median=$(awk -F'\t' -v l="$1 #" 'index($1, l) == 1 { print $2 }' "$WORK/results.tsv" | sort -g |
        awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    awk -F'\t' -v l="$1 #" -v m="$median" '
        index($1, l) == 1 { n++; d += $3; h += $4; s += $5; r += $6; c += $7 }
        END { printf "%s\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\n", substr(l, 1, length(l) - 2), m, d / n, h / n, s / n, r / n, c / n }' \
        "$WORK/results.tsv" >>"$WORK/summary.tsv"
}

# row LABEL N: the summary row of LABEL, with the throughput of N closures in its wall time.
row() {
    local line wall
    line=$(awk -F'\t' -v l="$1" '$1 == l' "$WORK/summary.tsv")
    wall=$(cut -f2 <<<"$line")
    printf '%s %7.0f\n' "$(print_row "$line")" "$(echo "$CLOSURE_MIB * $2 / $wall" | bc -l)"
}

header() {
    printf '%s %7s\n' "$(print_header)" "MiB/s"
}

# The systems are built once, for hosts c01… at a made-up address: they are copied, never
# activated, so they need not match the fresh hosts' addresses.
python3 - "$WORK/systems-hosts.json" "$PARALLEL" <<'EOF'
import json, sys
n = max(1, int(sys.argv[2]))
json.dump([{"name": "c%02d" % i, "addr": "127.0.0.1", "port": 22} for i in range(1, n + 1)], open(sys.argv[1], "w"))
EOF
fresh_hosts 1 c
build_systems "$WORK/systems-hosts.json"
SYSTEM1=$(head -1 "$WORK/targets.tsv" | cut -f5)
CLOSURE_BYTES=$(nix-store -qR "$SYSTEM1" | xargs nix-store -q --size | awk '{ s += $1 } END { print s }')
CLOSURE_MIB=$(echo "$CLOSURE_BYTES / 1048576" | bc -l)
printf '== closure per host: %d paths, %.1f MiB (NAR); %d CPUs, load %s; %s, %s\n' \
    "$(nix-store -qR "$SYSTEM1" | wc -l)" "$CLOSURE_MIB" "$(nproc)" "$(load_average)" \
    "$(ssh -V 2>&1 | cut -d, -f1)" "$(nix --version)"
echo "== $REPEAT runs each: median wall, mean CPU (user+sys of the deployer's and the hosts' cgroups), sent = IP bytes to the hosts"
: >"$WORK/summary.tsv"

TRANSPORTS=(nix-copy-closure nix-copy-ssh nix-copy-ssh-ng export-import)

echo
echo "-- one host"
header
for transport in "${TRANSPORTS[@]}"; do
    variants=(chacha20 aes128-gcm)
    # Compression only once: the blobs are incompressible, so it only costs CPU.
    [[ $transport != nix-copy-closure ]] || variants+=(compress)
    for variant in "${variants[@]}"; do
        for ((rep = 1; rep <= REPEAT; rep++)); do run_copy "$transport" "$variant" 1 master "$rep"; done
        summarize "$transport, $variant, 1 host(s)"
        row "$transport, $variant, 1 host(s)" 1
    done
done
for ((rep = 1; rep <= REPEAT; rep++)); do run_copy nix-copy-closure chacha20 1 none "$rep"; done
summarize "nix-copy-closure, chacha20, 1 host(s), no master"
row "nix-copy-closure, chacha20, 1 host(s), no master" 1

echo
echo "-- $PARALLEL hosts at once"
header
for transport in "${TRANSPORTS[@]}"; do
    for variant in chacha20 aes128-gcm; do
        for ((rep = 1; rep <= REPEAT; rep++)); do run_copy "$transport" "$variant" "$PARALLEL" master "$rep"; done
        summarize "$transport, $variant, $PARALLEL host(s)"
        row "$transport, $variant, $PARALLEL host(s)" "$PARALLEL"
    done
done

# What a new connection costs: 10 sequential `ssh HOST true`, per key exchange algorithm.
echo
echo "-- a new SSH connection (10 x ssh HOST true, no ControlMaster)"
fresh_hosts 1 k
IFS=$'\t' read -r _ K_ADDR K_PORT K_KEY <"$WORK/hosts.tsv"
connect10() {
    local i
    # shellcheck disable=SC2046
    for ((i = 0; i < 10; i++)); do ssh $(ssh_opts "$K_KEY" "$K_PORT" "$@") "root@$K_ADDR" true; done
}
KEX_DEFAULT=$(ssh -G -T -F /dev/null localhost | awk '$1 == "kexalgorithms" { split($2, a, ","); print a[1] }')
for kex in "$KEX_DEFAULT" curve25519-sha256; do
    measure "connect x10, kex $kex" connect10 -o "KexAlgorithms=$kex" >/dev/null
    printf '%-50s %6.1f ms wall, %5.1f ms CPU client, %5.1f ms CPU sshd per connection\n' "kex $kex" \
        "$(echo "$(field "connect x10, kex $kex" 2) * 100" | bc -l)" \
        "$(echo "$(field "connect x10, kex $kex" 3) * 100" | bc -l)" \
        "$(echo "$(field "connect x10, kex $kex" 4) * 100" | bc -l)"
done

echo
best() {
    awk -F'\t' -v n="$1" '$1 ~ (", " n " host\\(s\\)$") { if (b == "" || $2 < bw) { b = $1; bw = $2 } } END { print b }' "$WORK/summary.tsv"
}
CUR1=$(awk -F'\t' '$1 == "nix-copy-closure, chacha20, 1 host(s)" { print $2 }' "$WORK/summary.tsv")
CURP=$(awk -F'\t' -v l="nix-copy-closure, chacha20, $PARALLEL host(s)" '$1 == l { print $2 }' "$WORK/summary.tsv")
B1=$(best 1)
BP=$(best "$PARALLEL")
printf 'fastest, one host:          %s (%.2f s; nix-copy-closure, chacha20: %.2f s)\n' "$B1" \
    "$(awk -F'\t' -v l="$B1" '$1 == l { print $2 }' "$WORK/summary.tsv")" "$CUR1"
printf 'fastest, %d hosts at once:   %s (%.2f s; nix-copy-closure, chacha20: %.2f s)\n' "$PARALLEL" "$BP" \
    "$(awk -F'\t' -v l="$BP" '$1 == l { print $2 }' "$WORK/summary.tsv")" "$CURP"
printf 'load average at the end: %s\n' "$(load_average)"
