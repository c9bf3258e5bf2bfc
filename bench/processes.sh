#!/usr/bin/env bash
# A 100-process `processes.set` under supervisord (issue 5): a switch with one process changed
# must restart exactly that process and take <= 1.5x a bare `supervisorctl restart` of it (the
# Nix evaluation and build of the new generation reported separately); a no-op apply must
# restart nothing. See bench/README.md.
#
# In one run, in a mktemp directory: a deployment of N (100) busybox `sleep` processes, each
# writing its PID to its own file (`exec` keeps the PID), so the script sees exactly which ones
# restarted. First apply; then ROUNDS (3) rounds of: change process TARGET's environment, apply
# (timed, with `--timings`); `ferry plan` of another change (timed, not applied); BARE_RUNS (5)
# bare `supervisorctl -c STATE/supervisord.conf restart TARGET` on the same supervisord; a no-op
# apply (timed). Medians over the rounds. Then BREAKDOWN (2) more changes applied with logging
# wrappers of `supervisorctl`/`nix-env`/`nix-store`/`nix-instantiate` first on PATH, to show
# where the time goes. Last, `ferry destroy --yes` (its calls logged too), and the set's
# supervisord must be gone.
#
# Environment: FERRY_BIN (a ferry binary to use; default: build it, into CARGO_TARGET_DIR when
# set), N (100), ROUNDS (3), BARE_RUNS (5), TARGET (p042), BREAKDOWN (2; 0 skips the logged
# applies), KEEP=1 keeps the work directory. Needs supervisord/supervisorctl (Debian `supervisor`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-100}
ROUNDS=${ROUNDS:-3}
BARE_RUNS=${BARE_RUNS:-5}
TARGET=${TARGET:-p042}
BREAKDOWN=${BREAKDOWN:-2}

if [[ -n "${FERRY_BIN:-}" ]]; then
    FERRY=$(realpath "$FERRY_BIN")
else
    echo "== building the release binary (cargo build --release -p ferry-cli --bin ferry)"
    (cd "$ROOT" && cargo build --quiet --release -p ferry-cli --bin ferry)
    FERRY=$(cd "$ROOT" && realpath -m "${CARGO_TARGET_DIR:-target}/release/ferry")
fi
[[ -x "$FERRY" ]] || { echo "error: no ferry binary at $FERRY" >&2; exit 1; }
for prog in supervisord supervisorctl bc python3; do
    command -v "$prog" >/dev/null || { echo "error: $prog is missing (apt-get install supervisor bc python3)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/ferry-bench-processes-XXXXXX)
STATE="$WORK/state"
CONF="$STATE/supervisord.conf"
SUPERVISORD_PID="$STATE/run/supervisord.pid"
export FERRY_NIX_OPTIONS="substituters="
export NO_COLOR=1
mkdir -p "$WORK/pids" "$WORK/profiles" "$WORK/logs"
cd "$WORK"

names() { for ((i = 0; i < N; i++)); do printf 'p%03d\n' "$i"; done; }
printf '%s\n' "$(names)" | grep -qx "$TARGET" || { echo "error: TARGET=$TARGET is not one of p000..p$(printf %03d $((N - 1)))" >&2; exit 1; }

supervisord_alive() { [[ -f "$SUPERVISORD_PID" ]] && kill -0 "$(cat "$SUPERVISORD_PID")" 2>/dev/null; }
cleanup() {
    local rc=$?
    set +e
    if [[ -f "$WORK/.ferry/state.db" ]] && [[ "${DESTROYED:-0}" != 1 ]]; then
        "$FERRY" destroy --yes >"$WORK/logs/destroy-trap.log" 2>&1
    fi
    # Whatever is left of this run only: its supervisord, then its processes by their PID files.
    if supervisord_alive; then kill "$(cat "$SUPERVISORD_PID")"; sleep 1; fi
    for f in "$WORK"/pids/*; do
        [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null
    done
    if [[ "${KEEP:-0}" == 1 ]]; then echo "== work directory: $WORK (kept)"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT

# deployment.nix: N sleepers; TARGET's VERSION is $1, every other one's is "v0".
write_deployment() {
    {
        cat <<EOF
{ resources, ferry, ... }:
let
  t = import $ROOT/crates/ferry-testkit/nix { };
  p = ferry.lib.processes;
  sleeper = name: version: p.mkProcess {
    command = [ "sh" "-c" "echo \$\$ > $WORK/pids/\${name}; exec sleep 100000" ];
    environment.VERSION = version;
  };
in {
  resources.bench = {
    type = "processes.set";
    inputs = p.set {
      pkgs = t.pkgs;
      manager = "supervisord";
      name = "bench";
      stateDir = "$STATE";
      profilePath = "$WORK/profiles/processes-bench";
      startTimeout = 60;
      processes = {
EOF
        local n v
        for n in $(names); do
            v=v0
            [[ $n == "$TARGET" ]] && v=$1
            echo "        $n = sleeper \"$n\" \"$v\";"
        done
        cat <<EOF
      };
    };
  };
}
EOF
    } >"$WORK/deployment.nix"
}

now() { date +%s.%N; }
words() { tr "\n" " " <<<"$1" | sed "s/ *$//"; }
sub() { echo "$1 - $2" | bc -l; }
# Seconds of the `timings:` line's "(X Nix evaluation(s) (Ns)" and "N build(s) (Ns)" parts.
t_eval() { grep -h '^timings:' "$1" | tail -1 | sed -E 's/.*Nix evaluations? \(([0-9.]+)s\).*/\1/'; }
t_build() { grep -h '^timings:' "$1" | tail -1 | sed -E 's/.*builds? \(([0-9.]+)s\).*/\1/'; }
timings_of() { grep -h '^timings:' "$1" | tail -1; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.3f\n", m }'; }

# PID of each process (from its PID file), one "name pid" per line.
snapshot() { local n; for n in $(names); do echo "$n $(cat "$WORK/pids/$n" 2>/dev/null || echo none)"; done; }
# Names whose PID differs between two snapshots.
changed() { { diff <(echo "$1") <(echo "$2") || true; } | sed -n 's/^> \([^ ]*\) .*/\1/p'; }
# Every process RUNNING under supervisord with the PID its file says.
check_running() {
    local st bad
    st=$(supervisorctl -c "$CONF" status || true)
    bad=$(for n in $(names); do
        grep -qE "^$n +RUNNING +pid $(cat "$WORK/pids/$n" 2>/dev/null || echo x)," <<<"$st" || echo "$n"
    done)
    if [[ -n "$bad" ]]; then
        echo "error: not RUNNING with the PID of their file: $(words "$bad")" >&2
        echo "$st" >&2
        exit 1
    fi
}

# ferry LOGNAME ARGS...: run ferry in the work directory (log in logs/LOGNAME), print wall seconds.
timed_ferry() {
    local log=$WORK/logs/$1 t0 t1
    shift
    t0=$(now)
    if ! "$FERRY" "$@" >"$log" 2>&1; then
        echo "error: ferry $* failed:" >&2
        tail -30 "$log" >&2
        exit 1
    fi
    t1=$(now)
    sub "$t1" "$t0"
}

echo "== $N processes under supervisord, changed process $TARGET, $ROUNDS rounds; ferry: $FERRY"
echo "== supervisor $(supervisord --version), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. First apply: supervisord and the N processes.
write_deployment v0
FIRST=$(timed_ferry first.log apply --yes --timings -v)
grep -q 'Apply complete: 1 created' "$WORK/logs/first.log" || { echo "error: unexpected first apply:" >&2; tail -20 "$WORK/logs/first.log" >&2; exit 1; }
check_running
echo "first apply: $(printf '%.2f' "$FIRST") s   $(timings_of "$WORK/logs/first.log")"

apply_s=() eval_s=() build_s=() rest_s=() plan_s=() plan_eval_s=() bare_s=() noop_s=()
for ((r = 1; r <= ROUNDS; r++)); do
    echo "== round $r"
    # 3. One process changed.
    before=$(snapshot)
    write_deployment "r$r"
    a=$(timed_ferry "change-$r.log" apply --yes --timings -v)
    after=$(snapshot)
    check_running
    restarted=$(changed "$before" "$after")
    if [[ "$restarted" != "$TARGET" ]]; then
        echo "error: the one-changed apply restarted [$(words "$restarted")], expected [$TARGET]" >&2
        exit 1
    fi
    grep -q "restarted $TARGET; $((N - 1)) unchanged" "$WORK/logs/change-$r.log" ||
        { echo "error: the provider did not report 'restarted $TARGET; $((N - 1)) unchanged':" >&2; tail -20 "$WORK/logs/change-$r.log" >&2; exit 1; }
    e=$(t_eval "$WORK/logs/change-$r.log")
    b=$(t_build "$WORK/logs/change-$r.log")
    rest=$(echo "$a - $e - $b" | bc -l)
    apply_s+=("$a") eval_s+=("$e") build_s+=("$b") rest_s+=("$rest")
    printf '  one changed:   apply %.2f s, Nix eval %s s + build %s s, apply - eval - build %.2f s  (restarted: %s)\n' "$a" "$e" "$b" "$rest" "$restarted"
    echo "                 $(timings_of "$WORK/logs/change-$r.log")"

    # Evaluation alone, by `ferry plan` of another change of the same process (a fresh
    # evaluation: a plan of the applied change would find its .drv files already written).
    write_deployment "plan$r"
    pl=$(timed_ferry "plan-$r.log" plan --timings)
    write_deployment "r$r"
    plan_s+=("$pl") plan_eval_s+=("$(t_eval "$WORK/logs/plan-$r.log")")
    printf '  ferry plan:    %.2f s  (%s)\n' "$pl" "$(timings_of "$WORK/logs/plan-$r.log")"

    # 4. The bare restart of the same process on the same supervisord (waits for RUNNING,
    #    i.e. startsecs=1, as ferry's switch does).
    bare=()
    for ((k = 1; k <= BARE_RUNS; k++)); do
        t0=$(now)
        supervisorctl -c "$CONF" restart "$TARGET" >"$WORK/logs/bare.log" 2>&1 ||
            { echo "error: supervisorctl restart failed:" >&2; cat "$WORK/logs/bare.log" >&2; exit 1; }
        t1=$(now)
        bare+=("$(sub "$t1" "$t0")")
    done
    bm=$(printf '%s\n' "${bare[@]}" | median)
    bare_s+=("$bm")
    printf '  bare restart:  %s s median of %d (%s)\n' "$bm" "$BARE_RUNS" "$(printf '%.3f ' "${bare[@]}")"
    check_running

    # 2. No-op apply: nothing restarts.
    before=$(snapshot)
    no=$(timed_ferry "noop-$r.log" apply --yes --timings)
    after=$(snapshot)
    restarted=$(changed "$before" "$after")
    if [[ -n "$restarted" ]] || ! grep -q '^No changes' "$WORK/logs/noop-$r.log"; then
        echo "error: the no-op apply restarted [$(words "$restarted")] or was not 'No changes':" >&2
        tail -20 "$WORK/logs/noop-$r.log" >&2
        exit 1
    fi
    noop_s+=("$no")
    printf '  no-op apply:   %.2f s, no-op: 0 restarted  (%s)\n' "$no" "$(timings_of "$WORK/logs/noop-$r.log")"
done

# Where the time goes: BREAKDOWN (2) more one-changed applies, and the destroy, with logging
# wrappers first on PATH (each call's start, end and arguments; a wrapper adds a few ms per call).
# Not part of the figures above.
mkdir -p "$WORK/bin"
for prog in supervisorctl nix-env nix-store nix-instantiate; do
    real=$(command -v "$prog")
    cat >"$WORK/bin/$prog" <<EOF
#!/bin/sh
s=\$(date +%s.%N)
$real "\$@"
rc=\$?
echo "\$s \$(date +%s.%N) $prog \$*" >> "$WORK/calls.log"
exit \$rc
EOF
    chmod +x "$WORK/bin/$prog"
done
# show_calls T0: the logged calls, in ms from T0, with totals per program (and subcommand).
show_calls() {
    python3 - "$WORK/calls.log" "$1" "$WORK" <<'EOF'
import sys
log, t0, work = sys.argv[1], float(sys.argv[2]), sys.argv[3]
rows = [l.split(" ", 3) for l in open(log).read().splitlines()]
tot = {}
for s, e, prog, args in sorted(rows, key=lambda r: float(r[0])):
    s, e = float(s), float(e)
    words = args.replace(work, "$WORK").split()
    if prog == "supervisorctl":
        what = " ".join(words[2:])
        what = what if len(what) < 60 else what[:57] + "..."
    else:
        what = " ".join(w if len(w) < 40 else w[:37] + "..." for w in words)[:60]
    key = prog + " " + (words[2] if prog == "supervisorctl" and len(words) > 2 else "")
    tot.setdefault(key, [0, 0.0])
    tot[key][0] += 1
    tot[key][1] += e - s
    print("   %7.0f %7.0f  %6.0f ms  %s %s" % ((s - t0) * 1e3, (e - t0) * 1e3, (e - s) * 1e3, prog, what))
print("   totals: " + "; ".join("%s x%d %.0f ms" % (k.strip(), c, t * 1e3) for k, (c, t) in tot.items()))
EOF
}
for ((k = 1; k <= BREAKDOWN; k++)); do
    : >"$WORK/calls.log"
    write_deployment "breakdown$k"
    t0=$(now)
    PATH="$WORK/bin:$PATH" "$FERRY" apply --yes --timings -v >"$WORK/logs/breakdown-$k.log" 2>&1 ||
        { echo "error: the logged apply failed:" >&2; tail -20 "$WORK/logs/breakdown-$k.log" >&2; exit 1; }
    t1=$(now)
    grep -q "restarted $TARGET; $((N - 1)) unchanged" "$WORK/logs/breakdown-$k.log" ||
        { echo "error: the logged apply did not restart just $TARGET:" >&2; tail -20 "$WORK/logs/breakdown-$k.log" >&2; exit 1; }
    echo "== where the time goes ($k/$BREAKDOWN): a one-changed apply with logged calls, $(printf '%.2f' "$(sub "$t1" "$t0")") s wall; each call's start, end (ms from the start of ferry) and duration:"
    echo "   $(timings_of "$WORK/logs/breakdown-$k.log")"
    show_calls "$t0"
done

# 6. Destroy the set; its supervisord must be gone.
sv=$(cat "$SUPERVISORD_PID" 2>/dev/null || echo "")
: >"$WORK/calls.log"
t0=$(now)
DESTROY=$(PATH="$WORK/bin:$PATH" timed_ferry destroy.log destroy --yes)
DESTROYED=1
sleep 0.2
if [[ -n "$sv" ]] && kill -0 "$sv" 2>/dev/null; then
    echo "error: supervisord (pid $sv) still runs after ferry destroy" >&2
    exit 1
fi
left=$(for f in "$WORK"/pids/*; do p=$(cat "$f"); if kill -0 "$p" 2>/dev/null; then echo "${f##*/}"; fi; done)
[[ -z "$left" ]] || { echo "error: processes still running after destroy: $(words "$left")" >&2; exit 1; }
printf 'destroy: %.2f s; supervisord (pid %s) and all %d processes gone; its calls:\n' "$DESTROY" "$sv" "$N"
show_calls "$t0"

med() { printf '%s\n' "$@" | median; }
A=$(med "${apply_s[@]}")
E=$(med "${eval_s[@]}")
B=$(med "${build_s[@]}")
R=$(med "${rest_s[@]}")
P=$(med "${plan_s[@]}")
PE=$(med "${plan_eval_s[@]}")
BARE=$(med "${bare_s[@]}")
NO=$(med "${noop_s[@]}")
RATIO=$(echo "$R / $BARE" | bc -l)
VERDICT=MISS
(($(echo "$RATIO <= 1.5" | bc -l))) && VERDICT=PASS

printf '\n== medians of %d rounds (%d processes, supervisord, %s changed)\n' "$ROUNDS" "$N" "$TARGET"
printf '%-58s %8.3f s\n' "first apply ($N processes started)" "$FIRST"
printf '%-58s %8.3f s\n' "one-changed apply (wall)" "$A"
printf '%-58s %8.3f s\n' "  its Nix evaluation (--timings)" "$E"
printf '%-58s %8.3f s\n' "  its Nix build of the new generation (--timings)" "$B"
printf '%-58s %8.3f s\n' "  apply - eval - build" "$R"
printf '%-58s %8.3f s\n' "ferry plan of a one-process change (wall)" "$P"
printf '%-58s %8.3f s\n' "  its Nix evaluation (--timings)" "$PE"
printf '%-58s %8.3f s\n' "bare supervisorctl restart $TARGET (median of medians)" "$BARE"
printf '%-58s %8.3f s\n' "no-op apply (wall)" "$NO"
echo "no-op: 0 restarted (every round); one changed: exactly $TARGET restarted (every round)"
printf 'RATIO (apply - eval - build)/bare restart = %.2f (target <= 1.5) %s\n' "$RATIO" "$VERDICT"
