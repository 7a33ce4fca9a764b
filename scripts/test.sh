#!/usr/bin/env bash
# The whole test suite: unit tests, mock-server scenarios, and end-to-end tests
# against a real Synapse that this script starts on loopback and stops after.
#
# Usage: scripts/test.sh [extra cargo test arguments]
# Needs Rust and Python 3.10+. The first run installs a pinned Synapse into a
# cached virtualenv (about 20 s); see scripts/synapse.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SYNAPSE_DIR="target/test-synapse"
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

stop() { scripts/synapse.sh stop --dir "$SYNAPSE_DIR" >/dev/null 2>&1 || true; }
trap stop EXIT

# Build first so the server does not sit idle through compilation.
cargo test --locked --no-run --quiet

scripts/synapse.sh start --dir "$SYNAPSE_DIR"
set -a
# shellcheck disable=SC1091
source "$SYNAPSE_DIR/env"
set +a

cargo test --locked "$@"
