#!/usr/bin/env bash
# End-to-end demo against a throwaway local Synapse:
#
#   1. builds matrix-reactivate (cargo build --release --locked)
#   2. starts a fresh Synapse in target/demo-synapse (scripts/synapse.sh)
#   3. creates the users of samples/population.csv (scripts/seed.py), giving those who are
#      to be deactivated what a deactivation deletes: a DM list, an ignore list, a tagged
#      room, push rules, a key backup, an e-mail address
#   4. takes their before-image: matrix-reactivate snapshot, into target/demo-before.snap
#   5. the mistake: deactivates (and erases, locks) them as population.csv says
#   6. runs matrix-reactivate on samples/users.csv with --restore-from the snapshot,
#      paced by --rate auto, writing target/demo-results.csv
#   7. prints the results, logs in as one reactivated user with the new password and
#      shows what came back
#   8. stops Synapse (unless --keep)
#
# Needs Python 3.10+ and a Rust toolchain. The first run also installs Synapse into a
# cached virtualenv (about 20 s); see scripts/synapse.sh.
#
# Usage: scripts/demo.sh [--keep] [--no-build]
#   --keep       leave Synapse running afterwards (stop it with: scripts/synapse.sh stop --dir target/demo-synapse)
#   --no-build   use the already built binary instead of running cargo
# Environment: MATRIX_REACTIVATE_BIN=PATH runs that binary (implies --no-build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP=0
BUILD=1
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "demo.sh: unknown argument: $arg (expected --keep or --no-build)" >&2
            exit 2
            ;;
    esac
done

SYNAPSE_DIR="target/demo-synapse"
RESULTS="target/demo-results.csv"
SNAPSHOT="target/demo-before.snap"
BIN="${CARGO_TARGET_DIR:-target}/release/matrix-reactivate"
if [[ -n "${MATRIX_REACTIVATE_BIN:-}" ]]; then
    BIN="$MATRIX_REACTIVATE_BIN"
    BUILD=0
fi

step() { printf '\n==> %s\n' "$*"; }

command -v python3 >/dev/null 2>&1 || { echo "demo.sh: python3 is required" >&2; exit 1; }

if [[ $BUILD -eq 1 ]]; then
    command -v cargo >/dev/null 2>&1 \
        || { echo "demo.sh: cargo is required (install Rust from https://rustup.rs)" >&2; exit 1; }
    step "Building matrix-reactivate"
    cargo build --release --locked
fi
[[ -x "$BIN" ]] || { echo "demo.sh: $BIN not found; run without --no-build" >&2; exit 1; }

step "Starting a fresh Synapse in $SYNAPSE_DIR"
cleanup() {
    if [[ $KEEP -eq 1 ]]; then
        echo
        echo "Synapse is still running; its settings are in $SYNAPSE_DIR/env."
        echo "Stop it with: scripts/synapse.sh stop --dir $SYNAPSE_DIR"
    else
        scripts/synapse.sh stop --dir "$SYNAPSE_DIR" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
scripts/synapse.sh start --dir "$SYNAPSE_DIR"
# shellcheck source=/dev/null
source "$SYNAPSE_DIR/env"

step "Creating the users of samples/population.csv, with what a deactivation deletes"
python3 scripts/seed.py --url "$SYNAPSE_URL" --token "$SYNAPSE_ADMIN_TOKEN" \
    --server-name "$SYNAPSE_SERVER_NAME" --phase create samples/population.csv

step "Taking their before-image (a snapshot)"
rm -f "$SNAPSHOT"
echo "\$ MATRIX_ADMIN_TOKEN=… $BIN snapshot --homeserver $SYNAPSE_URL samples/users.csv --output $SNAPSHOT"
status=0
MATRIX_ADMIN_TOKEN="$SYNAPSE_ADMIN_TOKEN" "$BIN" snapshot --homeserver "$SYNAPSE_URL" \
    samples/users.csv --output "$SNAPSHOT" --no-progress || status=$?
case $status in
    0 | 3) echo "matrix-reactivate snapshot exited with $status (3: some lines of the sample are not users of this server, as expected)" ;;
    *)
        echo "demo.sh: matrix-reactivate snapshot failed with exit code $status" >&2
        exit "$status"
        ;;
esac

step "The mistake: deactivating them as samples/population.csv says"
python3 scripts/seed.py --url "$SYNAPSE_URL" --token "$SYNAPSE_ADMIN_TOKEN" \
    --server-name "$SYNAPSE_SERVER_NAME" --phase deactivate samples/population.csv

step "Reactivating the users of samples/users.csv and giving back what was deleted"
rm -f "$RESULTS"
echo "\$ MATRIX_ADMIN_TOKEN=… $BIN --homeserver $SYNAPSE_URL samples/users.csv --output $RESULTS --restore-from $SNAPSHOT --rate auto"
status=0
MATRIX_ADMIN_TOKEN="$SYNAPSE_ADMIN_TOKEN" "$BIN" --homeserver "$SYNAPSE_URL" \
    samples/users.csv --output "$RESULTS" --restore-from "$SNAPSHOT" --rate auto || status=$?
case $status in
    0) echo "matrix-reactivate exited with 0: every row is done" ;;
    3) echo "matrix-reactivate exited with 3: finished, some rows need attention (expected for this sample)" ;;
    *)
        echo "demo.sh: matrix-reactivate failed with exit code $status" >&2
        exit "$status"
        ;;
esac

step "Results ($RESULTS)"
[[ -f "$RESULTS" ]] || { echo "demo.sh: $RESULTS was not written" >&2; exit 1; }
# A CSV-aware table: fields may be quoted and hold commas.
python3 - "$RESULTS" <<'EOF'
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
for r in rows:
    print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
EOF

step "Logging in as a reactivated user with the password from the results"
python3 - "$RESULTS" "$SYNAPSE_URL" <<'EOF'
import csv, json, sys, urllib.error, urllib.parse, urllib.request

results, url = sys.argv[1], sys.argv[2]
with open(results, newline="", encoding="utf-8") as f:
    row = next((r for r in csv.DictReader(f)
                if r.get("status") == "reactivated" and r.get("password")), None)
if row is None:
    sys.exit("demo.sh: no reactivated user with a password in " + results)

body = json.dumps({
    "type": "m.login.password",
    "identifier": {"type": "m.id.user", "user": row["user_id"]},
    "password": row["password"],
    "initial_device_display_name": "matrix-reactivate demo",
}).encode()
req = urllib.request.Request(url + "/_matrix/client/v3/login", data=body, method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
except urllib.error.HTTPError as err:
    sys.exit(f"demo.sh: login as {row['user_id']} failed: HTTP {err.code} {err.read().decode()}")
print(f"POST /_matrix/client/v3/login as {row['user_id']}: 200, "
      f"logged in as {answer['user_id']} (device {answer['device_id']})")
print(f"restored: {row.get('restored') or '(nothing)'}")


def get(path):
    req = urllib.request.Request(url + path, headers={
        "Authorization": "Bearer " + answer["access_token"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


user = urllib.parse.quote(row["user_id"], safe="")
direct = get(f"/_matrix/client/v3/user/{user}/account_data/m.direct")
print(f"their DM list (m.direct) is back: {json.dumps(direct)}")
rules = get("/_matrix/client/v3/pushrules/")["global"]["content"]
print("their keyword rules are back: "
      + ", ".join(r["rule_id"] for r in rules if not r.get("default")))
backup = get("/_matrix/client/v3/room_keys/version")
print(f"their key backup is back: version {backup['version']}, {backup['count']} room keys")
EOF

step "Done"
echo "matrix-reactivate exit code: $status"
