#!/usr/bin/env bash
# Performance benchmark (not part of the test suite): throughput, pacing, memory,
# start-up and `find` against a local mock admin API, and a run against a real
# Synapse with Synapse's default bcrypt_rounds: 12, compared with a shell loop of curl.
#
# Usage: scripts/bench.sh [startup|throughput|pacing|memory|synapse|find|seal|seal-synapse]
#   no argument runs every figure (about 15 minutes on 2 cores);
#   seal and seal-synapse compare runs without and with --encrypt-to, in pairs;
#   BENCH_ROUNDS=N repeats the throughput, pacing and find runs N times (default 3);
#   FIND_USERS=N sets how many deactivated users find lists (default 100000);
#   BENCH_BIN=PATH measures another build of the tool (to compare two versions).
# Prints a Markdown table of medians; BENCHMARKS.md holds the last one recorded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --benches --locked --quiet

if [[ $# -eq 0 || "${1:-}" == synapse || "${1:-}" == seal-synapse ]]; then
    command -v curl >/dev/null || { echo "bench.sh: curl is needed for the baseline (apt-get install curl)" >&2; exit 1; }
    SYNAPSE_DIR="target/bench-synapse"
    trap 'scripts/synapse.sh stop --dir "$SYNAPSE_DIR" >/dev/null 2>&1 || true' EXIT
    SYNAPSE_BCRYPT_ROUNDS=12 scripts/synapse.sh start --dir "$SYNAPSE_DIR"
    set -a
    # shellcheck disable=SC1091
    source "$SYNAPSE_DIR/env"
    set +a
fi

cargo bench --bench perf --locked --quiet -- "$@"
