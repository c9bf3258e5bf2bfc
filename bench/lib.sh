# Shared helpers for the bench/ scripts (sourced, not run).
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
FERRY="$ROOT/target/release/ferry"

build_release() {
    echo "== building release binaries (cargo build --release -p ferry-cli -p ferry-provider-counter)"
    (cd "$ROOT" && cargo build --quiet --release -p ferry-cli -p ferry-provider-counter)
}

# hyperfine if present; as root with apt-get, try to install it once (quietly). Set
# NO_HYPERFINE=1 to force the built-in loop.
have_hyperfine() {
    [[ "${NO_HYPERFINE:-0}" == 1 ]] && return 1
    command -v hyperfine >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing hyperfine (apt-get install -y hyperfine)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1 || true
    fi
    command -v hyperfine >/dev/null 2>&1
}

# median_seconds RUNS WARMUP CMD...: run CMD (no shell, output discarded) WARMUP times untimed,
# then RUNS times; print the median wall time in seconds. Fails if CMD fails.
median_seconds() {
    local runs=$1 warmup=$2
    shift 2
    if have_hyperfine; then
        local json
        json=$(mktemp /tmp/ferry-bench-hf-XXXXXX.json)
        hyperfine -N --style none --warmup "$warmup" --runs "$runs" --export-json "$json" -- "$(printf '%q ' "$@")" >/dev/null
        python3 -c 'import json,sys; print("%.6f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
        rm -f "$json"
    else
        local i s e
        for ((i = 0; i < warmup; i++)); do "$@" >/dev/null 2>&1; done
        for ((i = 0; i < runs; i++)); do
            s=$(date +%s.%N)
            "$@" >/dev/null 2>&1
            e=$(date +%s.%N)
            echo "$e - $s" | bc -l
        done | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.6f\n", m }'
    fi
}

timer_name() {
    if have_hyperfine; then echo "hyperfine $(hyperfine --version | awk '{print $2}')"; else echo "date +%s.%N loop"; fi
}
