#!/usr/bin/env bash
# The whole test suite: unit tests, mock-server scenarios, and end-to-end tests
# against two real Synapses that this script starts on loopback and stops after:
# one on SQLite (server name localhost) and one on PostgreSQL (pg.localhost), with
# the PostgreSQL server started by scripts/postgres.sh.
#
# Usage: scripts/test.sh [extra cargo test arguments]
# Needs Rust and Python 3.10+; PostgreSQL 15 (as root on Debian it is installed
# when missing). The first run installs a pinned Synapse into a cached virtualenv
# (about 20 s); see scripts/synapse.sh.
#
# The tests see the SQLite server as SYNAPSE_URL, SYNAPSE_ADMIN_TOKEN,
# SYNAPSE_SERVER_NAME, SYNAPSE_DB_PATH; the PostgreSQL one as SYNAPSE_PG_URL,
# SYNAPSE_PG_ADMIN_TOKEN, SYNAPSE_PG_SERVER_NAME, SYNAPSE_PG_DB_NAME,
# SYNAPSE_PG_DB_URL; the PostgreSQL server as MATRIX_REACTIVATE_PG_URL (no
# password), MATRIX_REACTIVATE_PG_PASSWORD and POSTGRES_BIN (psql, pg_dump). The
# libpq variables (PGPASSWORD, PGHOST, ...) are not exported, so no test meets
# them by accident.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SYNAPSE_DIR="target/test-synapse"
SYNAPSE_PG_DIR="target/test-synapse-pg"
POSTGRES_DIR="target/test-postgres"
# Fast password hashing: the tests set hundreds of passwords.
export SYNAPSE_BCRYPT_ROUNDS="${SYNAPSE_BCRYPT_ROUNDS:-4}"

# The sealing tests open fields with the standard age command (Debian's
# package) and make SSH keys with ssh-keygen; the tests themselves install nothing.
need() {
    command -v "$1" >/dev/null && return
    echo "test.sh: installing $2 (for $1)" >&2
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "$2" >/dev/null
}
need age age
need ssh-keygen openssh-client

stop() {
    scripts/synapse.sh stop --dir "$SYNAPSE_DIR" >/dev/null 2>&1 || true
    scripts/synapse.sh stop --dir "$SYNAPSE_PG_DIR" >/dev/null 2>&1 || true
    scripts/postgres.sh stop --dir "$POSTGRES_DIR" >/dev/null 2>&1 || true
}
trap stop EXIT

# Build first so the servers do not sit idle through compilation.
cargo test --locked --no-run --quiet

# $1 = env file: prints its VALUE for KEY $2.
value() { sed -n "s/^$2=//p" "$1"; }

# The SQLite Synapse starts while PostgreSQL and then its Synapse come up.
scripts/synapse.sh start --dir "$SYNAPSE_DIR" &
sqlite_start=$!
(
    scripts/postgres.sh start --dir "$POSTGRES_DIR"
    PGPASSWORD="$(value "$POSTGRES_DIR/env" PGPASSWORD)" scripts/synapse.sh start \
        --dir "$SYNAPSE_PG_DIR" --server-name pg.localhost \
        --postgres "$(value "$POSTGRES_DIR/env" MATRIX_REACTIVATE_PG_URL)"
) &
pg_start=$!
failed=""
wait "$sqlite_start" || failed="the SQLite Synapse"
wait "$pg_start" || failed="${failed:+$failed and }PostgreSQL or its Synapse"
[[ -z "$failed" ]] || { echo "test.sh: error: $failed did not start" >&2; exit 1; }

set -a
# shellcheck disable=SC1091
source "$SYNAPSE_DIR/env"
set +a
export SYNAPSE_PG_URL SYNAPSE_PG_ADMIN_TOKEN SYNAPSE_PG_SERVER_NAME SYNAPSE_PG_DB_NAME \
    SYNAPSE_PG_DB_URL MATRIX_REACTIVATE_PG_URL MATRIX_REACTIVATE_PG_PASSWORD POSTGRES_BIN
SYNAPSE_PG_URL="$(value "$SYNAPSE_PG_DIR/env" SYNAPSE_URL)"
SYNAPSE_PG_ADMIN_TOKEN="$(value "$SYNAPSE_PG_DIR/env" SYNAPSE_ADMIN_TOKEN)"
SYNAPSE_PG_SERVER_NAME="$(value "$SYNAPSE_PG_DIR/env" SYNAPSE_SERVER_NAME)"
SYNAPSE_PG_DB_NAME="$(value "$SYNAPSE_PG_DIR/env" SYNAPSE_DB_NAME)"
SYNAPSE_PG_DB_URL="$(value "$SYNAPSE_PG_DIR/env" SYNAPSE_DB_URL)"
MATRIX_REACTIVATE_PG_URL="$(value "$POSTGRES_DIR/env" MATRIX_REACTIVATE_PG_URL)"
MATRIX_REACTIVATE_PG_PASSWORD="$(value "$POSTGRES_DIR/env" PGPASSWORD)"
POSTGRES_BIN="$(value "$POSTGRES_DIR/env" POSTGRES_BIN)"

# The PostgreSQL reader's own test (src/source) opens a database as the tool
# does, with the password in PGPASSWORD; the end-to-end tests pass it to each
# command themselves.
PGPASSWORD="$MATRIX_REACTIVATE_PG_PASSWORD" cargo test --locked "$@"
