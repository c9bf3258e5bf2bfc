#!/usr/bin/env bash
# 10,000 trivial provider calls through ONE long-lived provider process versus one process
# spawned per call (handshake + one call + EOF), against the real built-in provider
# `ferry __provider local`. The driver is bench/provider_calls.py. See bench/README.md.
#
# Environment: CALLS (default 10000), SPAWNS (spawn-per-call processes actually started,
# default 500; the 10,000-call figure is extrapolated linearly), REPEAT (repetitions of each
# measurement, best kept, default 3), PROVIDER (command, default "<ferry> __provider local").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALLS=${CALLS:-10000}
SPAWNS=${SPAWNS:-500}
REPEAT=${REPEAT:-3}

build_release
read -r -a PROVIDER_CMD <<<"${PROVIDER:-$FERRY __provider local}"
echo "== provider: ${PROVIDER_CMD[*]}; call: read of a local.random with fixed inputs; $(nproc) CPUs"
echo "== $CALLS calls long-lived (sequential, then pipelined); $SPAWNS spawn-per-call processes; best of $REPEAT"

OUT=$(python3 "$BENCH_DIR/provider_calls.py" --calls "$CALLS" --spawns "$SPAWNS" --repeat "$REPEAT" -- "${PROVIDER_CMD[@]}")
get() { awk -v k="$1" '$1 == k { print $3 }' <<<"$OUT"; }

SEQ=$(get sequential_calls_per_s)
PIPE=$(get pipelined_calls_per_s)
SPAWN=$(get spawn_calls_per_s)
echo
printf 'long-lived, sequential:  %8s calls/s  (%s us/call; %s calls in %s s)\n' "$SEQ" "$(get sequential_us_per_call)" "$CALLS" "$(get sequential_seconds)"
printf 'long-lived, pipelined:   %8s calls/s  (%s calls in %s s)\n' "$PIPE" "$CALLS" "$(get pipelined_seconds)"
printf 'spawn per call:          %8s calls/s  (%s us/call; %s spawns took %s s => %s calls ~ %s s, extrapolated)\n' \
    "$SPAWN" "$(get spawn_us_per_call)" "$SPAWNS" "$(get spawn_seconds_measured)" "$CALLS" "$(get spawn_seconds_extrapolated)"
printf 'RATIO pipelined/spawn = %.1f\n' "$(echo "$PIPE / $SPAWN" | bc -l)"
printf 'RATIO sequential/spawn = %.1f (target >= 20)\n' "$(echo "$SEQ / $SPAWN" | bc -l)"
