# shellcheck shell=bash
# Helpers for the machine benchmarks (machines.sh, copy-transports.sh): fresh test hosts, CPU
# accounting by cgroup, bytes on the wire by nftables counters. Sourced after lib.sh; needs root.
#
# Call machines_init WORK first: it creates two cgroups, `deployer` (what a measured command
# runs in, with everything it starts: ssh clients, the ControlMaster, nix-copy-closure, ferry's
# providers) and `hosts` (the test hosts: their sshd and every session and command on them), and
# an nftables table counting the TCP traffic to and from the test hosts' sshd ports. machines_cleanup
# (set as the EXIT trap by machines_init) stops the hosts and removes all of it.

TESTHOSTS="$ROOT/target/release/ferry-testhosts"
NIX_OPTS=(--option substituters '')
BLOBS=${BLOBS:-100}
BLOB_KIB=${BLOB_KIB:-1024}

build_machine_tools() {
    echo "== building release binaries (cargo build --release -p ferry-cli -p ferry-testkit)"
    (cd "$ROOT" && cargo build --quiet --release -p ferry-cli -p ferry-testkit)
}

# --- CPU: one cgroup per side. cgroup v1 `cpuacct` if mounted, else cgroup v2 (cpu.stat is
# there even without the cpu controller). Unlike wait4's rusage, this counts every process that
# ever ran in the group, reaped or not (daemonized ssh masters, sshd sessions).
CG_ROOT=""
CG_KIND=""

cg_init() {
    local name="ferry-bench-$$"
    if [[ -f /sys/fs/cgroup/cpuacct/cpuacct.usage_user ]]; then
        CG_KIND=v1
        CG_ROOT=/sys/fs/cgroup/cpuacct/$name
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        CG_KIND=v2
        CG_ROOT=/sys/fs/cgroup/$name
    elif [[ -d /sys/fs/cgroup/unified ]]; then
        CG_KIND=v2
        CG_ROOT=/sys/fs/cgroup/unified/$name
    else
        echo "error: no cgroup hierarchy with CPU accounting found" >&2
        return 1
    fi
    mkdir -p "$CG_ROOT/deployer" "$CG_ROOT/hosts"
}

# cg_cpu GROUP: user+system CPU seconds used so far by the group.
cg_cpu() {
    if [[ $CG_KIND == v1 ]]; then
        echo "($(cat "$CG_ROOT/$1/cpuacct.usage_user") + $(cat "$CG_ROOT/$1/cpuacct.usage_sys")) / 1000000000" | bc -l
    else
        awk '$1 == "user_usec" { u = $2 } $1 == "system_usec" { s = $2 } END { printf "%.6f\n", (u + s) / 1e6 }' \
            "$CG_ROOT/$1/cpu.stat"
    fi
}

# cg_run GROUP CMD...: run CMD (a command or a shell function) in a subshell moved into the group.
cg_run() {
    local group=$CG_ROOT/$1
    shift
    (
        echo "$BASHPID" >"$group/cgroup.procs"
        "$@"
    )
}

cg_cleanup() {
    [[ -n "$CG_ROOT" && -d "$CG_ROOT" ]] || return 0
    local g
    for g in deployer hosts; do
        # Leftovers (there should be none) go back to the parent group so the directory can go.
        if [[ -f "$CG_ROOT/$g/cgroup.procs" ]]; then
            while read -r pid; do echo "$pid" >"$CG_ROOT/../cgroup.procs" 2>/dev/null || true; done <"$CG_ROOT/$g/cgroup.procs"
        fi
        rmdir "$CG_ROOT/$g" 2>/dev/null || true
    done
    rmdir "$CG_ROOT" 2>/dev/null || echo "warning: could not remove $CG_ROOT" >&2
}

# --- Bytes: nftables counters on the output hook (loopback packets pass it once, in their
# sending direction). `sent` = IP packets to a test host's sshd port (what every ssh client of
# the deployer transmitted, TCP/IP headers included), `received` = packets from it,
# `connections` = SYNs to it (each a new SSH connection: a key exchange). Only the
# addresses of this run's hosts count (other test hosts may run on the machine).
NFT_TABLE=""

nft_init() {
    if ! command -v nft >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing nftables (apt-get install -y nftables)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null 2>&1 || true
    fi
    command -v nft >/dev/null 2>&1 || { echo "warning: no nft: bytes are not counted" >&2; return 0; }
    NFT_TABLE="ferry_bench_$$"
    nft -f - <<EOF || { echo "warning: nft failed: bytes are not counted" >&2; NFT_TABLE=""; }
table inet $NFT_TABLE {
    set hosts { type ipv4_addr; }
    counter sent { }
    counter received { }
    counter connections { }
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr @hosts tcp dport { 22, 2222 } tcp flags & (syn | ack) == syn counter name "connections"
        ip daddr @hosts tcp dport { 22, 2222 } counter name "sent"
        ip saddr @hosts tcp sport { 22, 2222 } counter name "received"
    }
}
EOF
}

# nft_hosts ADDR...: count traffic of these hosts (replacing the previous ones).
nft_hosts() {
    [[ -n "$NFT_TABLE" ]] || return 0
    nft flush set inet "$NFT_TABLE" hosts
    local IFS=,
    nft add element inet "$NFT_TABLE" hosts "{ $* }"
}

# nft_count sent|received|connections bytes|packets: counted so far (0 without nft).
nft_count() {
    if [[ -z "$NFT_TABLE" ]]; then
        echo 0
        return
    fi
    nft list counter inet "$NFT_TABLE" "$1" | awk -v w="$2" '{ for (i = 1; i < NF; i++) if ($i == w) print $(i + 1) }'
}

nft_cleanup() {
    if [[ -n "$NFT_TABLE" ]]; then nft delete table inet "$NFT_TABLE" 2>/dev/null || true; fi
}

# --- Test hosts.
HOSTS_DIR=""

# fresh_hosts N [PREFIX]: stop the previous hosts, wipe their directories, start N new ones
# (PREFIX01…) with empty stores in the `hosts` cgroup, and count their traffic. Writes
# $HOSTS_DIR/hosts.json (ferry-testhosts) and $WORK/known_hosts (all their keys).
fresh_hosts() {
    local n=$1 prefix=${2:-h} names=() i
    "$TESTHOSTS" down --dir "$HOSTS_DIR" >/dev/null
    rm -rf "$HOSTS_DIR"
    for ((i = 1; i <= n; i++)); do names+=("$(printf '%s%02d' "$prefix" "$i")"); done
    cg_run hosts "$TESTHOSTS" up --dir "$HOSTS_DIR" "${names[@]}" >"$WORK/up.log"
    python3 - "$HOSTS_DIR/hosts.json" "$WORK/known_hosts" "$WORK/hosts.tsv" <<'EOF'
import json, sys
hosts = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as kh, open(sys.argv[3], "w") as tsv:
    for h in hosts:
        pattern = h["addr"] if h["port"] == 22 else "[%s]:%d" % (h["addr"], h["port"])
        kh.write("%s %s\n" % (pattern, h["hostKey"]))
        tsv.write("%s\t%s\t%d\t%s\n" % (h["name"], h["addr"], h["port"], h["clientKey"]))
EOF
    # shellcheck disable=SC2046
    nft_hosts $(cut -f2 "$WORK/hosts.tsv")
}

# build_systems HOSTS_JSON: build the system of every host of HOSTS_JSON (e.g. this run's
# hosts.json; bench/machines.nix) into $WORK/systems.json (name -> store path), then
# write_targets.
build_systems() {
    nix-build --no-out-link "${NIX_OPTS[@]}" -E "($(machines_expr "$1")).systems" >/dev/null 2>"$WORK/build.log" || {
        cat "$WORK/build.log" >&2
        return 1
    }
    nix-instantiate --eval --strict --json "${NIX_OPTS[@]}" -E \
        "builtins.mapAttrs (n: s: s.outPath) ($(machines_expr "$1")).systems" >"$WORK/systems.json"
    write_targets
}

# build_blobs: the blobs alone (the bulk of the closure, shared by all systems).
build_blobs() {
    echo "== building the closure (bench/machines.nix: $BLOBS blobs of $BLOB_KIB KiB, one system per host)"
    nix-build --no-out-link "${NIX_OPTS[@]}" -E "($(machines_expr null)).blobs" >/dev/null 2>"$WORK/build.log" ||
        { cat "$WORK/build.log" >&2; return 1; }
}

# machines_expr HOSTS_JSON|null: bench/machines.nix applied to its arguments.
machines_expr() {
    echo "import $BENCH_DIR/machines.nix { hostsJson = $1; blobs = $BLOBS; blobKiB = $BLOB_KIB; }"
}

# write_targets: $WORK/targets.tsv, one line per host: NAME ADDR PORT KEY SYSTEM (from
# $WORK/systems.json).
write_targets() {
    python3 - "$WORK/hosts.tsv" "$WORK/systems.json" >"$WORK/targets.tsv" <<'EOF'
import json, sys
systems = json.load(open(sys.argv[2]))
for line in open(sys.argv[1]):
    name, addr, port, key = line.rstrip("\n").split("\t")
    print("\t".join([name, addr, port, key, systems[name]]))
EOF
}

# ssh_opts KEY PORT [EXTRA...]: the plain ssh options for a test host (one word per option, no
# spaces inside: usable in NIX_SSHOPTS).
ssh_opts() {
    local key=$1 port=$2
    shift 2
    echo "-F /dev/null -i $key -p $port -o IdentitiesOnly=yes -o UserKnownHostsFile=$WORK/known_hosts" \
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR $*"
}

# --- Measurement.
# measure LABEL CMD...: run CMD in the `deployer` group; print and record in $WORK/results.tsv
# LABEL, wall s, deployer CPU s, hosts CPU s, bytes sent, bytes received, new connections.
# Fails if CMD fails.
measure() {
    local label=$1
    shift
    local d0 h0 s0 r0 c0 t0 t1 d1 h1 s1 r1 c1
    d0=$(cg_cpu deployer)
    h0=$(cg_cpu hosts)
    s0=$(nft_count sent bytes)
    r0=$(nft_count received bytes)
    c0=$(nft_count connections packets)
    t0=$(date +%s.%N)
    if ! cg_run deployer "$@"; then
        echo "error: $label failed" >&2
        return 1
    fi
    t1=$(date +%s.%N)
    d1=$(cg_cpu deployer)
    h1=$(cg_cpu hosts)
    s1=$(nft_count sent bytes)
    r1=$(nft_count received bytes)
    c1=$(nft_count connections packets)
    local row
    row=$(printf '%s\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d' "$label" "$(echo "$t1 - $t0" | bc -l)" \
        "$(echo "$d1 - $d0" | bc -l)" "$(echo "$h1 - $h0" | bc -l)" $((s1 - s0)) $((r1 - r0)) $((c1 - c0)))
    echo "$row" >>"$WORK/results.tsv"
    print_row "$row"
}

print_header() {
    printf '%-50s %7s %9s %9s %9s %8s %5s\n' "run" "wall s" "CPU depl." "CPU hosts" "sent MiB" "recv MiB" "conns"
}

print_row() {
    local label wall dcpu hcpu sent recv conns
    IFS=$'\t' read -r label wall dcpu hcpu sent recv conns <<<"$1"
    printf '%-50s %7.2f %9.2f %9.2f %9.1f %8.2f %5d\n' "$label" "$wall" "$dcpu" "$hcpu" \
        "$(echo "$sent / 1048576" | bc -l)" "$(echo "$recv / 1048576" | bc -l)" "$conns"
}

# field LABEL COLUMN: a recorded value (2 wall, 3 deployer CPU, 4 hosts CPU, 5 sent, 6 received,
# 7 connections).
field() {
    awk -F'\t' -v l="$1" -v c="$2" '$1 == l { v = $c } END { print v }' "$WORK/results.tsv"
}

machines_init() {
    WORK=$1
    HOSTS_DIR="$WORK/hosts"
    : >"$WORK/results.tsv"
    [[ "$(id -u)" == 0 ]] || { echo "error: the machine benchmarks need root (test hosts)" >&2; exit 1; }
    trap machines_cleanup EXIT
    cg_init
    nft_init
}

machines_cleanup() {
    local rc=$?
    [[ -n "$HOSTS_DIR" && -x "$TESTHOSTS" ]] && "$TESTHOSTS" down --dir "$HOSTS_DIR" >/dev/null 2>&1
    cg_cleanup
    nft_cleanup
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "== work directory: $WORK (kept)"
    else
        rm -rf "$WORK"
    fi
    return $rc
}

load_average() {
    cut -d' ' -f1-3 /proc/loadavg
}
