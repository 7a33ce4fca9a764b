#!/usr/bin/env bash
# Performance benchmark (not part of the test suite): throughput, pacing, memory,
# start-up, `find` and `snapshot` against a local mock admin API; a run against a
# real Synapse with Synapse's default bcrypt_rounds: 12, compared with a shell loop
# of curl; `--restore-from` against a second real Synapse with bcrypt_rounds: 4; and
# `--rate auto` on both servers while a separate client probes the server.
#
# Usage: scripts/bench.sh [startup|throughput|pacing|memory|synapse|find|snapshot_many|restore|
#                          restore_big|seal|seal-synapse|auto]
#   no argument runs every figure (about 30 minutes on 2 cores);
#   seal and seal-synapse compare runs without and with --encrypt-to, in pairs;
#   auto runs 200 users with --rate 0 --concurrency 1…8 and with --rate auto on the
#     bcrypt_rounds 12 server, then with the default --rate 5 and --rate auto on the
#     bcrypt_rounds 4 one (about 6 minutes a round); BENCH_ROUNDS=N, when set, runs N
#     rounds of the sweep and auto and reports medians (default one round);
#   BENCH_ROUNDS=N repeats the throughput, pacing, find, snapshot_many, restore and restore_big
#     runs N times (default 3);
#   FIND_USERS=N sets how many deactivated users find lists (default 100000);
#   BENCH_BIN=PATH measures another build of the tool (to compare two versions).
# Prints a Markdown table of medians; BENCHMARKS.md holds the last one recorded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --benches --locked --quiet

STARTED=()
# shellcheck disable=SC2317  # called by the trap
stop_servers() {
    for dir in ${STARTED[@]+"${STARTED[@]}"}; do
        scripts/synapse.sh stop --dir "$dir" >/dev/null 2>&1 || true
    done
}
trap stop_servers EXIT

if [[ $# -eq 0 || "${1:-}" == synapse || "${1:-}" == seal-synapse || "${1:-}" == auto ]]; then
    command -v curl >/dev/null || { echo "bench.sh: curl is needed for the baseline (apt-get install curl)" >&2; exit 1; }
    SYNAPSE_DIR="target/bench-synapse"
    STARTED+=("$SYNAPSE_DIR")
    SYNAPSE_BCRYPT_ROUNDS=12 scripts/synapse.sh start --dir "$SYNAPSE_DIR"
    set -a
    # shellcheck disable=SC1091
    source "$SYNAPSE_DIR/env"
    set +a
fi

if [[ $# -eq 0 || "${1:-}" == restore || "${1:-}" == restore_big || "${1:-}" == auto ]]; then
    # The restore figures measure the restore, not the password hash: bcrypt_rounds 4;
    # auto uses it as a server that can go fast.
    # Their server's variables are exported as RESTORE_SYNAPSE_URL, RESTORE_SYNAPSE_DB_PATH, …
    RESTORE_DIR="target/bench-synapse-restore"
    STARTED+=("$RESTORE_DIR")
    SYNAPSE_BCRYPT_ROUNDS=4 scripts/synapse.sh start --dir "$RESTORE_DIR"
    while IFS='=' read -r key value; do
        [[ "$key" == SYNAPSE_* ]] && export "RESTORE_$key=$value"
    done <"$RESTORE_DIR/env"
fi

cargo bench --bench perf --locked --quiet -- "$@"
