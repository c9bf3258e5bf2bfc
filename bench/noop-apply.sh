#!/usr/bin/env bash
# No-op apply of a 1,000-resource, depth-5 deployment versus ONE bare `nix-instantiate` of the
# same resources with every output supplied; plus Nix invocation counts of a depth-5 plan on
# an empty state and of the first apply. See bench/README.md.
#
# Environment: RUNS (timed runs, default 15), WARMUP (default 2), LAYERS (5), WIDTH (200),
# KEEP=1 keeps the work directory, NO_HYPERFINE=1 uses the date loop instead of hyperfine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-15}
WARMUP=${WARMUP:-2}
LAYERS=${LAYERS:-5}
WIDTH=${WIDTH:-200}

build_release
WORK=$(mktemp -d /tmp/ferry-bench-noop-XXXXXX)
if [[ "${KEEP:-0}" == 1 ]]; then echo "== work directory: $WORK (kept)"; else trap 'rm -rf "$WORK"' EXIT; fi

python3 "$BENCH_DIR/gen-deployment.py" "$WORK" "$LAYERS" "$WIDTH"
DEPLOY="$WORK/deployment.nix"
N=$((LAYERS * WIDTH))
echo "== deployment: $N local.file resources, $LAYERS layers of $WIDTH (dependency depth $LAYERS)"

# Count Nix invocations independently of ferry's own counter: wrappers on PATH log each call.
mkdir -p "$WORK/bin"
for prog in nix-instantiate nix-store nix; do
    real=$(command -v "$prog" || true)
    [[ -n "$real" ]] || continue
    printf '#!/bin/sh\necho %s >> "%s/nix-calls.log"\nexec %s "$@"\n' "$prog" "$WORK" "$real" >"$WORK/bin/$prog"
    chmod +x "$WORK/bin/$prog"
done
counted() { : >"$WORK/nix-calls.log"; PATH="$WORK/bin:$PATH" "$@"; }
calls() { wc -l <"$WORK/nix-calls.log" | tr -d ' '; }
timings_line() { grep -h '^timings:' "$@" | tail -1; }

# 1. A plan on an empty state (no state file at all).
counted "$FERRY" -f "$DEPLOY" plan --timings >"$WORK/plan.out" 2>"$WORK/plan.err"
PLAN_CALLS=$(calls)
echo "plan (empty state):  $(timings_line "$WORK/plan.out" "$WORK/plan.err")"
grep -h '^Plan:' "$WORK/plan.out" "$WORK/plan.err" | sed 's/^/                     /' || true

# 2. The first apply: creates everything, one evaluation round per layer at best.
counted "$FERRY" -f "$DEPLOY" apply --yes --timings >"$WORK/apply1.out" 2>"$WORK/apply1.err"
APPLY_CALLS=$(calls)
echo "first apply:         $(timings_line "$WORK/apply1.out" "$WORK/apply1.err")"
grep -h '^Apply' "$WORK/apply1.out" "$WORK/apply1.err" | sed 's/^/                     /' || true
echo "                     rounds: $(grep -hc '^eval round' "$WORK/apply1.out" "$WORK/apply1.err" | paste -sd+ | bc) ('eval round' progress lines)"

# 3. One untimed no-op for its timings, and to check that it is a no-op.
"$FERRY" -f "$DEPLOY" apply --yes --timings >"$WORK/noop.out" 2>"$WORK/noop.err"
echo "no-op apply:         $(timings_line "$WORK/noop.out" "$WORK/noop.err")"
if ! grep -qh '^No changes' "$WORK/noop.out" "$WORK/noop.err"; then
    echo "error: the second apply was not a no-op:" >&2
    cat "$WORK/noop.out" "$WORK/noop.err" >&2
    exit 1
fi

# 4. The bare baseline: the same resource declarations, `resources` an attribute set literal of
#    the recorded outputs (from `ferry state export`), every resource's inputs through toJSON.
"$FERRY" -f "$DEPLOY" state export -o "$WORK/export.json" 2>/dev/null
python3 - "$WORK/export.json" "$WORK/outputs.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
json.dump({r["name"]: r["outputs"] for r in d["resources"]}, open(sys.argv[2], "w"))
EOF
python3 - "$WORK" <<'EOF'
# Sanity: the bare expression yields exactly the inputs ferry recorded.
import json, subprocess, sys
w = sys.argv[1]
bare = json.loads(subprocess.check_output(["nix-instantiate", "--eval", "--strict", "--json", w + "/bare.nix"]))
rec = {r["name"]: r["inputs"] for r in json.load(open(w + "/export.json"))["resources"]}
assert len(bare) == len(rec) and all(json.loads(bare[n]) == rec[n] for n in rec), "bare.nix disagrees with state"
EOF

echo "== timing: $RUNS runs after $WARMUP warm-up runs each, median wall time ($(timer_name)); $(nproc) CPUs"
FERRY_S=$(median_seconds "$RUNS" "$WARMUP" "$FERRY" -f "$DEPLOY" apply --yes)
BARE_S=$(median_seconds "$RUNS" "$WARMUP" nix-instantiate --eval --strict --json "$WORK/bare.nix")

echo
echo "NIX-INVOCATIONS plan, empty state, depth $LAYERS = $PLAN_CALLS"
echo "NIX-INVOCATIONS first apply, depth $LAYERS = $APPLY_CALLS (target <= 6)"
printf 'no-op ferry apply --yes (median):        %8.1f ms\n' "$(echo "$FERRY_S * 1000" | bc -l)"
printf 'bare nix-instantiate --eval (median):    %8.1f ms\n' "$(echo "$BARE_S * 1000" | bc -l)"
printf 'RATIO ferry/bare = %.2f (target <= 1.5)\n' "$(echo "$FERRY_S / $BARE_S" | bc -l)"
