#!/usr/bin/env bash
# `ferry plan` of N real NixOS 20.09 servers (openssh, nginx, a user), each system defined
# *inside* the deployment function (the documented pattern), against a bare `nix-instantiate`
# of the same N toplevels, in the same run. Prints wall time (median of RUNS) and peak RSS
# (GNU time's maximum resident set size, which covers the Nix child) with ratios, and the
# ratio of bytes the evaluator allocated (NIX_SHOW_STATS), which does not vary between runs.
#   N="1 2 6" RUNS=3 bench/realnix.sh
# FERRY_BIN=PATH uses that ferry instead of building a release one; FERRY_BASE=PATH adds a column
# for another ferry (e.g. an older build) measured in the same run. The machines are
# `nixos.machine` resources (planned, never contacted). `ferry_s` is one evaluator process
# (`--eval-jobs 1`); `jobs2_s` two workers (the default on 2 cores); `mod_s`: the same machines
# as a module deployment (ferry.modules with this nixpkgs' evalModules), one job.
# Needs ../shared/nixpkgs (evaluation only: nothing is built).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
NS=${N:-"1 2"}
RUNS=${RUNS:-3}
TARBALL="$ROOT/../shared/nixpkgs/nixpkgs-20.09pre.tar.xz"
[[ -f "$TARBALL" ]] || { echo "realnix: $TARBALL not found; skipped" >&2; exit 1; }
if [[ -n "${FERRY_BIN:-}" ]]; then FERRY=$FERRY_BIN; else build_release; fi
WORK=$(mktemp -d /tmp/ferry-realnix.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
tar -xJf "$TARBALL" -C "$WORK"
NP="$WORK/nixpkgs"

server() { # server I: a NixOS module for machine I
    cat <<NIX
{ boot.loader.grub.enable = false; fileSystems."/".device = "/dev/sda1";
  networking.hostName = "m$1";
  services.openssh.enable = true;
  services.nginx.enable = true;
  services.nginx.virtualHosts."m$1.example".root = "/var/www";
  users.users.alice = { isNormalUser = true; openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA m$1" ]; };
}
NIX
}

setup() { # setup N: DIR/deployment.nix and DIR/bare.nix for N machines
    local n=$1 d="$WORK/n$1"
    mkdir -p "$d"
    {
        echo "{ resources, ... }: let"
        echo "  sys = i: m: (import $NP/nixos/lib/eval-config.nix { system = \"x86_64-linux\"; modules = [ m ]; }).config.system.build.toplevel;"
        echo "in {"
        for i in $(seq 1 "$n"); do
            echo "  resources.m$i = { type = \"nixos.machine\"; inputs = { host = \"127.0.0.1\"; port = 1; system = sys $i ($(server "$i")); }; };"
        done
        echo "}"
    } > "$d/deployment.nix"
    {
        echo "let sys = m: (import $NP/nixos/lib/eval-config.nix { system = \"x86_64-linux\"; modules = [ m ]; }).config.system.build.toplevel; in ["
        for i in $(seq 1 "$n"); do echo "  (sys ($(server "$i"))).outPath"; done
        echo "]"
    } > "$d/bare.nix"
    mkdir -p "$d/mod"
    {
        echo "{ ferry, ... }: let"
        echo "  sys = i: m: (import $NP/nixos/lib/eval-config.nix { system = \"x86_64-linux\"; modules = [ m ]; }).config.system.build.toplevel;"
        echo "in ferry.modules { nixpkgs = $NP; modules = [ { resources = {"
        for i in $(seq 1 "$n"); do
            echo "  m$i = { type = \"nixos.machine\"; inputs = { host = \"127.0.0.1\"; port = 1; system = sys $i ($(server "$i")); }; };"
        done
        echo "}; } ]; }"
    } > "$d/mod/deployment.nix"
}

# measure CMD...: prints "SECONDS KIB" (medians of RUNS: wall time, peak RSS). Boehm GC's
# parallel marking makes the same command's peak RSS vary by up to 25% between runs.
median() { sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"; }
measure() {
    local times=() rss=() t r
    for _ in $(seq 1 "$RUNS"); do
        /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; return 1; }
        read -r t r < "$WORK/time"
        times+=("$t"); rss+=("$r")
    done
    printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | median)" "$(printf '%s\n' "${rss[@]}" | median)"
}

# allocated CMD...: the bytes Nix's evaluator allocated (NIX_SHOW_STATS gc.totalBytes) in the
# last Nix invocation of CMD: deterministic, unlike RSS and time.
allocated() {
    NIX_SHOW_STATS=1 NIX_SHOW_STATS_PATH="$WORK/stats.json" "$@" >/dev/null 2>&1
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gc"]["totalBytes"])' "$WORK/stats.json"
}

printf '%-4s %10s %10s %8s %12s %12s %8s %8s %10s %8s %12s %8s %10s %8s %8s' N bare_s ferry_s ratio bare_MiB ferry_MiB ratio alloc on_m1_s ratio jobs2_s ratio jobs2_MiB mod_s ratio
[[ -n "${FERRY_BASE:-}" ]] && printf ' %10s %8s %12s %12s' base_s ratio base_MiB base_on_m1_s
echo
for n in $NS; do
    setup "$n"
    d="$WORK/n$n"
    read -r bt br < <(measure nix-instantiate --readonly-mode --eval --strict --json "$d/bare.nix")
    read -r ft fr < <(cd "$d" && measure "$FERRY" plan --eval-jobs 1)
    printf '%-4s %10.2f %10.2f %8.2f %12.0f %12.0f %8.2f\n' "$n" "$bt" "$ft" \
        "$(echo "$ft / $bt" | bc -l)" "$(echo "$br / 1024" | bc -l)" "$(echo "$fr / 1024" | bc -l)" "$(echo "$fr / $br" | bc -l)" | tr -d '\n'
    # Evaluator allocations, ferry's one nix-instantiate against the bare one.
    ba=$(allocated nix-instantiate --readonly-mode --eval --strict --json "$d/bare.nix")
    fa=$(cd "$d" && allocated "$FERRY" plan --eval-jobs 1)
    printf ' %8.3f' "$(echo "$fa / $ba" | bc -l)"
    # `--on m1`: m1 only (plus the declarations pass); its ratio is to the full plan.
    read -r ot _ < <(cd "$d" && measure "$FERRY" plan --on m1)
    printf ' %10.2f %8.2f' "$ot" "$(echo "$ot / $ft" | bc -l)"
    # Two evaluator workers (chunks of at most 4 machines each).
    read -r jt jr < <(cd "$d" && measure "$FERRY" plan --eval-jobs 2)
    printf ' %12.2f %8.2f %10.0f' "$jt" "$(echo "$jt / $bt" | bc -l)" "$(echo "$jr / 1024" | bc -l)"
    read -r mt _ < <(cd "$d/mod" && measure "$FERRY" plan --eval-jobs 1)
    printf ' %8.2f %8.2f' "$mt" "$(echo "$mt / $bt" | bc -l)"
    if [[ -n "${FERRY_BASE:-}" ]]; then
        read -r xt xr < <(cd "$d" && measure "$FERRY_BASE" plan --eval-jobs 1)
        read -r xo _ < <(cd "$d" && measure "$FERRY_BASE" plan --on m1)
        printf ' %10.2f %8.2f %12.0f %12.2f' "$xt" "$(echo "$xt / $bt" | bc -l)" "$(echo "$xr / 1024" | bc -l)" "$xo"
    fi
    echo
done
