#!/usr/bin/env bash
# A throwaway local Synapse homeserver for the end-to-end tests and the demo.
#
#   scripts/synapse.sh install               create the cached virtualenv with Synapse
#   scripts/synapse.sh start  [--dir DIR]    fresh server in DIR, then write DIR/env
#   scripts/synapse.sh stop   [--dir DIR]    stop the server started in DIR (idempotent)
#   scripts/synapse.sh restart [--dir DIR]   stop it (if running) and start it again, same port and data
#   scripts/synapse.sh status [--dir DIR]    exit 0 if the server in DIR is running
#   start --mas-endpoint URL --mas-secret S  a server that delegates auth to MAS at URL
#   start --postgres URL                     a server whose database is PostgreSQL at URL
#   start --server-name NAME                 a server named NAME (default localhost)
#
# DIR defaults to target/synapse in the repository. `start` wipes DIR first: every
# start is a new server with an empty SQLite database, listening on a free loopback
# port, with an admin user `admin`. `restart` keeps DIR as it is (config, database,
# port, tokens), as an upgrade or a crash and restart would, and waits until the
# server answers again. DIR/env is a bash-sourceable KEY=VALUE file:
#
#   SYNAPSE_URL=http://127.0.0.1:PORT
#   SYNAPSE_SERVER_NAME=localhost
#   SYNAPSE_ADMIN_TOKEN=...
#   SYNAPSE_ADMIN_USER=@admin:localhost
#   SYNAPSE_ADMIN_PASSWORD=...
#   SYNAPSE_PID=...
#   SYNAPSE_DB_PATH=DIR/homeserver.db        (SQLite, the default)
#
# With --postgres postgresql://USER@HOST[:PORT]/ the database is a new PostgreSQL
# database `synapse_<random>` that the script creates there (UTF8, C collation, as
# Synapse requires), logging in as USER with PGPASSWORD (or ~/.pgpass), which also
# goes into homeserver.yaml (mode 0600). A database name in URL is ignored. DIR/env
# then holds SYNAPSE_DB_NAME and SYNAPSE_DB_URL (the URL of that database, without
# password) instead of SYNAPSE_DB_PATH. `scripts/postgres.sh` starts such a server.
#
# With --mas-endpoint and --mas-secret the server delegates authentication to the
# Matrix Authentication Service (or a test double of it) at URL, sharing secret S:
# `matrix_authentication_service` on, password login and registration off. No
# admin user is created (users and tokens come from MAS) and DIR/env holds only
# SYNAPSE_URL, SYNAPSE_SERVER_NAME, SYNAPSE_PID and SYNAPSE_PYTHON_BIN. Synapse
# starts without contacting URL: it fetches URL/.well-known/openid-configuration
# on the first request that needs it (auth_metadata), and posts each access token
# it has not seen in the last two minutes to URL/oauth2/introspect.
#
# Environment:
#   MATRIX_REACTIVATE_CACHE   cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/matrix-reactivate)
#   SYNAPSE_PYTHON            interpreter used to create the virtualenv (default python3, >= 3.10)
#   SYNAPSE_BCRYPT_ROUNDS     bcrypt rounds for password hashes (default 4; Synapse's own default is 12)
#   SYNAPSE_START_TIMEOUT     seconds to wait for the server to answer (default 120)
set -euo pipefail

SYNAPSE_VERSION="1.163.2"
# Synapse's PostgreSQL driver, as a wheel that needs neither a compiler nor libpq-dev.
PSYCOPG2="psycopg2-binary==2.9.10"
SERVER_NAME="localhost"
ADMIN_LOCALPART="admin"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${MATRIX_REACTIVATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/matrix-reactivate}"
VENV="$CACHE_DIR/synapse-$SYNAPSE_VERSION"
# Renamed whenever the virtualenv gains a package, so an older cache gets it too.
MARKER="$VENV/.install-complete-2"
BASE_PYTHON="${SYNAPSE_PYTHON:-python3}"
BCRYPT_ROUNDS="${SYNAPSE_BCRYPT_ROUNDS:-4}"
START_TIMEOUT="${SYNAPSE_START_TIMEOUT:-120}"
# Marks a folder as created by this script, so that `start` only ever wipes its own folders.
DIR_MARKER=".matrix-reactivate-synapse"
# Set by `start --mas-endpoint URL --mas-secret SECRET`: delegate authentication to MAS.
MAS_ENDPOINT=""
MAS_SECRET=""
# Set by `start --postgres URL`: the PostgreSQL server to create the database on.
PG_URL=""

# Seconds since $1 (an $EPOCHREALTIME or $SECONDS value), with one decimal when possible.
elapsed() {
    local now="${EPOCHREALTIME:-$SECONDS}"
    awk -v a="$1" -v b="$now" 'BEGIN { gsub(",", ".", a); gsub(",", ".", b); printf "%.1f", b - a }'
}

log() { printf 'synapse.sh: %s\n' "$*" >&2; }
die() { printf 'synapse.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

require_python() {
    command -v "$BASE_PYTHON" >/dev/null 2>&1 \
        || die "$BASE_PYTHON not found: install Python 3.10 or newer (or set SYNAPSE_PYTHON)"
    "$BASE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
        || die "Synapse $SYNAPSE_VERSION needs Python >= 3.10, but $BASE_PYTHON is $("$BASE_PYTHON" -V 2>&1)"
}

# True when the virtualenv holds a working Synapse of the pinned version.
venv_works() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - "$SYNAPSE_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import synapse
from importlib.metadata import version
assert synapse.__version__ == sys.argv[1], synapse.__version__
assert version("matrix-synapse") == sys.argv[1]
import synapse.app.homeserver  # noqa: F401  (pulls in every runtime dependency)
import psycopg2  # noqa: F401  (for servers on PostgreSQL)
EOF
}

install_venv_locked() {
    [[ -f "$MARKER" && -x "$VENV/bin/python" ]] && return 0
    if venv_works; then
        # Installed completely by someone who wrote no marker.
        printf '%s\n' "$SYNAPSE_VERSION" >"$MARKER"
        return 0
    fi
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import synapse.app.homeserver' >/dev/null 2>&1; then
        # A cache from before PostgreSQL support: add the driver, keep the rest.
        log "adding $PSYCOPG2 to $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PSYCOPG2" \
            || die "pip install $PSYCOPG2 failed"
        venv_works || die "$VENV does not import after adding $PSYCOPG2"
        printf '%s\n' "$SYNAPSE_VERSION" >"$MARKER"
        return 0
    fi
    require_python
    log "installing matrix-synapse==$SYNAPSE_VERSION into $VENV"
    local started=$SECONDS
    rm -rf "$VENV"
    "$BASE_PYTHON" -m venv "$VENV" \
        || die "'$BASE_PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "matrix-synapse==$SYNAPSE_VERSION" "$PSYCOPG2" \
        || die "pip install matrix-synapse==$SYNAPSE_VERSION $PSYCOPG2 failed"
    venv_works || die "matrix-synapse $SYNAPSE_VERSION was installed but does not import"
    printf '%s\n' "$SYNAPSE_VERSION" >"$MARKER"
    log "installed in $((SECONDS - started)) s"
}

ensure_venv() {
    [[ -f "$MARKER" && -x "$VENV/bin/python" ]] && return 0
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        # Parallel callers (CI jobs, test binaries) wait for one install instead of racing.
        (
            flock 9
            install_venv_locked
        ) 9>"$CACHE_DIR/synapse-$SYNAPSE_VERSION.lock"
    else
        install_venv_locked
    fi
}

# $1 = pid; true if the process exists and is not a zombie (an exited process that its
# parent, often init, has not reaped yet).
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# $1 = pid; true if it is a live Synapse homeserver process.
is_synapse_pid() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    local cmdline
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    else
        cmdline="$(ps -p "$pid" -o command= 2>/dev/null || true)"
    fi
    [[ "$cmdline" == *synapse.app.homeserver* ]]
}

# $1 = DIR, $2 = tenths of a second to wait after TERM before KILL (default 100).
stop_server() {
    local dir="$1" grace="${2:-100}" pidfile="$1/synapse.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if is_synapse_pid "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < grace; i++)); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        if pid_alive "$pid"; then
            [[ "$grace" -eq 0 ]] || log "server $pid did not stop after TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 20; i++)); do
                pid_alive "$pid" || break
                sleep 0.1
            done
        fi
        log "stopped server $pid ($dir)"
    fi
    rm -f "$pidfile"
}

# Empties DIR, refusing to wipe a non-empty folder this script did not create.
prepare_dir() {
    local dir="$1"
    if [[ -e "$dir" ]]; then
        [[ -d "$dir" ]] || die "$dir exists and is not a directory"
        if [[ -n "$(ls -A "$dir")" && ! -f "$dir/$DIR_MARKER" ]]; then
            die "$dir is not empty and was not created by synapse.sh; refusing to wipe it"
        fi
        find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
    mkdir -p "$dir"
    : >"$dir/$DIR_MARKER"
}

# Prints: port shared_secret macaroon_secret form_secret admin_password, and writes the signing key.
generate_secrets() {
    "$VENV/bin/python" - "$1/localhost.signing.key" <<'EOF'
import base64, os, secrets, socket, string, sys

def token(n):
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))

with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

# Same format as signedjson.key.write_signing_keys: "<alg> <version> <unpadded base64 seed>".
seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(f"ed25519 a_{token(4)} {seed}\n")

print(port, token(32), token(32), token(32), token(24))
EOF
}

# The PostgreSQL database of the server (set by create_pg_database): connection and name.
PG_USER=""
PG_HOST=""
PG_PORT=""
DB_NAME=""

# $1 = URL: creates a new database for Synapse there and sets PG_USER, PG_HOST, PG_PORT
# and DB_NAME. The password comes from PGPASSWORD or ~/.pgpass, as libpq takes it.
create_pg_database() {
    local out
    out="$("$VENV/bin/python" - "$1" <<'EOF'
import secrets, sys, urllib.parse
import psycopg2

url = sys.argv[1]
def fail(msg):
    print(f"synapse.sh: error: --postgres {url}: {msg}", file=sys.stderr)
    sys.exit(1)

u = urllib.parse.urlsplit(url)
if u.scheme not in ("postgresql", "postgres"):
    fail("expected postgresql://USER@HOST[:PORT]/")
if u.password is not None:
    fail("the URL carries a password: give it in PGPASSWORD instead")
user, host = urllib.parse.unquote(u.username or ""), u.hostname or ""
if not user or not host:
    fail("the URL needs a user and a host")
try:
    port = u.port or 5432
except ValueError:
    fail("the port is not a number")
name = "synapse_" + secrets.token_hex(5)
try:
    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres", connect_timeout=10)
    conn.autocommit = True
    with conn.cursor() as cur:
        # What Synapse checks at start-up (synapse/storage/engines/postgres.py).
        cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
                    "TEMPLATE template0")
    conn.close()
except psycopg2.Error as e:
    fail(f"creating the database: {str(e).strip()}")
print(user, host, port, name)
EOF
)" || exit 1
    read -r PG_USER PG_HOST PG_PORT DB_NAME <<<"$out"
    [[ "$PG_USER$PG_HOST" =~ ^[A-Za-z0-9._-]+$ ]] \
        || die "--postgres: user and host may hold only letters, digits and ._- (got $PG_USER@$PG_HOST)"
    [[ "${PGPASSWORD:-}" != *[\"\\]* ]] || die "PGPASSWORD must not hold \" or \\"
}

# The `database:` section of homeserver.yaml for DIR: SQLite in DIR, or the
# PostgreSQL database made by create_pg_database.
database_config() {
    if [[ -z "$DB_NAME" ]]; then
        printf 'database:\n  name: sqlite3\n  args:\n    database: "%s"\n' "$1/homeserver.db"
        return 0
    fi
    printf 'database:\n  name: psycopg2\n  args:\n'
    printf '    user: "%s"\n    host: "%s"\n    port: %s\n    dbname: "%s"\n' \
        "$PG_USER" "$PG_HOST" "$PG_PORT" "$DB_NAME"
    [[ -z "${PGPASSWORD:-}" ]] || printf '    password: "%s"\n' "$PGPASSWORD"
    printf '    cp_min: 1\n    cp_max: 10\n'
}

# The database as bootstrap() reads it: the SQLite file, or a URL without password.
database_locator() {
    if [[ -z "$DB_NAME" ]]; then
        printf '%s\n' "$1/homeserver.db"
    else
        printf 'postgresql://%s@%s:%s/%s\n' "$PG_USER" "$PG_HOST" "$PG_PORT" "$DB_NAME"
    fi
}

write_config() {
    local dir="$1" port="$2" shared="$3" macaroon="$4" form="$5"
    local rl="{per_second: 10000, burst_count: 10000}"
    # Classic mode: the admin is registered with the shared secret. MAS mode: Synapse
    # refuses password login and registration, and MAS provisions the users.
    local auth="registration_shared_secret: \"$shared\""
    if [[ -n "$MAS_ENDPOINT" ]]; then
        auth="matrix_authentication_service:
  enabled: true
  endpoint: \"$MAS_ENDPOINT\"
  secret: \"$MAS_SECRET\"
password_config:
  enabled: false"
    fi
    # It may hold the database password.
    (umask 077 && : >"$dir/homeserver.yaml")
    cat >"$dir/homeserver.yaml" <<EOF
# Generated by scripts/synapse.sh for local tests. Not for production.
server_name: "$SERVER_NAME"
public_baseurl: "http://127.0.0.1:$port/"
listeners:
  - port: $port
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
$(database_config "$dir")
media_store_path: "$dir/media_store"
signing_key_path: "$dir/localhost.signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
$auth
macaroon_secret_key: "$macaroon"
form_secret: "$form"
report_stats: false
enable_metrics: false
bcrypt_rounds: $BCRYPT_ROUNDS
background_updates:
  sleep_enabled: false
presence:
  enabled: false
url_preview_enabled: false
# Tests log in and create hundreds of users in a few seconds.
rc_message: $rl
rc_registration: $rl
rc_registration_token_validity: $rl
rc_login:
  address: $rl
  account: $rl
  failed_attempts: $rl
rc_admin_redaction: $rl
rc_joins:
  local: $rl
  remote: $rl
rc_joins_per_room: $rl
rc_3pid_validation: $rl
rc_invites:
  per_room: $rl
  per_user: $rl
  per_issuer: $rl
rc_third_party_invite: $rl
rc_key_requests: $rl
rc_media_create: $rl
rc_presence:
  per_user: $rl
rc_delayed_event_mgmt: $rl
rc_room_creation: $rl
rc_reports: $rl
rc_user_directory: $rl
rc_profile: $rl
rc_federation:
  window_size: 1000
  sleep_limit: 10000
  sleep_delay: 0
  reject_limit: 10000
  concurrent: 100
EOF
}

# Waits for the server, registers the admin, logs in, waits for background updates.
# Prints the admin access token. Exit 3 (silently) = the server process died.
# Argument 8 = "mas": no admin (MAS owns accounts), background updates from the database alone.
bootstrap() {
    "$VENV/bin/python" - "$@" <<'EOF'
import hashlib, hmac, json, os, sqlite3, sys, time, urllib.error, urllib.parse, urllib.request

url, pid, shared, user, password, timeout, database, mode = sys.argv[1:9]
pid, deadline = int(pid), time.monotonic() + float(timeout)

# Rows left in the background_updates table, -1 if it cannot be read (yet). The
# database is a SQLite file or a PostgreSQL URL (password from PGPASSWORD).
def pending_updates():
    query = "SELECT COUNT(*) FROM background_updates"
    if database.startswith("postgresql://"):
        import psycopg2
        try:
            conn = psycopg2.connect(database, connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute(query)
                    return cur.fetchone()[0]
            finally:
                conn.close()
        except psycopg2.Error:
            return -1
    try:
        with sqlite3.connect(f"file:{urllib.parse.quote(database)}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(query).fetchone()[0]
    except sqlite3.Error:
        return -1

def fail(msg, code=1):
    print(f"synapse.sh: error: {msg}", file=sys.stderr)
    sys.exit(code)

def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie (exited child not yet reaped) also answers kill 0.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

def call(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw.decode(errors="replace")}

# 1. The client API answers.
while True:
    if not alive():
        sys.exit(3)
    try:
        with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        fail(f"the server did not answer {url}/_matrix/client/versions within {timeout} s")
    time.sleep(0.05)

# In MAS mode there is no admin to create and no token to ask the status API with:
# an empty queue table means every background update has finished.
if mode == "mas":
    while True:
        pending = pending_updates()
        if pending == 0:
            sys.exit(0)
        if not alive():
            sys.exit(3)
        if time.monotonic() > deadline:
            fail(f"background updates still running after {timeout} s ({pending} queued)")
        time.sleep(0.05)

# 2. Admin user through shared-secret registration (what register_new_matrix_user does).
status, body = call("GET", "/_synapse/admin/v1/register")
if status != 200:
    fail(f"GET /_synapse/admin/v1/register: {status} {body}")
nonce = body["nonce"]
mac = hmac.new(shared.encode(), "\x00".join([nonce, user, password, "admin"]).encode(),
               hashlib.sha1)
status, body = call("POST", "/_synapse/admin/v1/register", {
    "nonce": nonce, "username": user, "password": password, "admin": True,
    "mac": mac.hexdigest(),
})
if status != 200:
    fail(f"registering the admin user: {status} {body}")

# 3. Log in with the password (proves password login works) for the token.
status, body = call("POST", "/_matrix/client/v3/login", {
    "type": "m.login.password",
    "identifier": {"type": "m.id.user", "user": user},
    "password": password,
    "initial_device_display_name": "synapse.sh",
})
if status != 200:
    fail(f"admin login: {status} {body}")
token = body["access_token"]

# 4. Background updates of the fresh database are done (until then reactivating a user can
# answer 500). The status API alone is not enough: between two updates it shows none
# running, so also wait until the queue table in the database is empty.
while True:
    pending = pending_updates()
    if pending == 0:
        status, body = call("GET", "/_synapse/admin/v1/background_updates/status", token=token)
        if status == 200 and not body.get("current_updates"):
            break
    if time.monotonic() > deadline:
        fail(f"background updates still running after {timeout} s ({pending} queued)")
    time.sleep(0.05)

print(token)
EOF
}

# Starts the server of DIR in the background, with the config already there;
# appends to DIR/homeserver.log and writes DIR/synapse.pid.
launch() {
    local dir="$1"
    # The working directory is DIR: Python puts it on sys.path, so it must not hold a synapse.py.
    (cd "$dir" && exec "$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml) \
        </dev/null >>"$dir/homeserver.log" 2>&1 &
    printf '%s\n' "$!" >"$dir/synapse.pid"
}

# $1 = URL, $2 = pid, $3 = timeout in seconds: waits until the client API answers.
# Exit 3 (silently) = the server process died.
await_server() {
    "$VENV/bin/python" - "$@" <<'EOF'
import os, sys, time, urllib.error, urllib.request

url, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(3)
    except PermissionError:
        pass
    try:
        with urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        print(f"synapse.sh: error: {url} did not answer within {timeout} s", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.05)
EOF
}

# The env lines that say where the server's database is.
database_env() {
    if [[ -z "$DB_NAME" ]]; then
        printf 'SYNAPSE_DB_PATH=%s\n' "$1/homeserver.db"
    else
        printf 'SYNAPSE_DB_NAME=%s\nSYNAPSE_DB_URL=%s\n' "$DB_NAME" "$(database_locator "$1")"
    fi
}

cmd_restart() {
    local dir="$1" t0="${EPOCHREALTIME:-$SECONDS}" url pid rc=0
    [[ -f "$dir/homeserver.yaml" && -f "$dir/env" && -f "$dir/$DIR_MARKER" ]] \
        || die "no server was started in $dir: use start first"
    ensure_venv
    stop_server "$dir"
    url="$(sed -n 's/^SYNAPSE_URL=//p' "$dir/env")"
    [[ -n "$url" ]] || die "$dir/env has no SYNAPSE_URL"
    launch "$dir"
    pid="$(cat "$dir/synapse.pid")"
    await_server "$url" "$pid" "$START_TIMEOUT" || rc=$?
    if [[ $rc -ne 0 ]]; then
        [[ $rc -ne 3 ]] || log "error: the server exited during start-up"
        log "last lines of $dir/homeserver.log:"
        tail -n 40 "$dir/homeserver.log" >&2 || true
        stop_server "$dir" 0
        exit 1
    fi
    (
        umask 077
        sed "s/^SYNAPSE_PID=.*/SYNAPSE_PID=$pid/" "$dir/env" >"$dir/env.tmp"
    )
    mv -f "$dir/env.tmp" "$dir/env"
    log "Synapse restarted at $url (pid $pid, same data and port) in $(elapsed "$t0") s"
}

cmd_start() {
    local dir="$1"
    local t0="${EPOCHREALTIME:-$SECONDS}"
    [[ "$BCRYPT_ROUNDS" =~ ^[0-9]+$ && "$BCRYPT_ROUNDS" -ge 4 && "$BCRYPT_ROUNDS" -le 31 ]] \
        || die "SYNAPSE_BCRYPT_ROUNDS must be a whole number from 4 to 31, got '$BCRYPT_ROUNDS'"
    ensure_venv
    # The old server's data is wiped next anyway: no need to wait for a clean shutdown.
    stop_server "$dir" 0
    prepare_dir "$dir"
    [[ -z "$PG_URL" ]] || create_pg_database "$PG_URL"

    local attempt port shared macaroon form password pid token rc
    for attempt in 1 2 3; do
        read -r port shared macaroon form password < <(generate_secrets "$dir")
        write_config "$dir" "$port" "$shared" "$macaroon" "$form"
        rm -f "$dir/homeserver.log"
        launch "$dir"
        pid="$(cat "$dir/synapse.pid")"

        rc=0
        token="$(bootstrap "http://127.0.0.1:$port" "$pid" "$shared" "$ADMIN_LOCALPART" \
            "$password" "$START_TIMEOUT" "$(database_locator "$dir")" "${MAS_ENDPOINT:+mas}")" || rc=$?
        [[ $rc -eq 0 ]] && break

        if [[ $rc -eq 3 && $attempt -lt 3 ]] && grep -q 'Address already in use' "$dir/homeserver.log"; then
            log "port $port was taken meanwhile; retrying with another port"
            stop_server "$dir" 0
            continue
        fi
        [[ $rc -ne 3 ]] || log "error: the server exited during start-up"
        log "last lines of $dir/homeserver.log:"
        tail -n 40 "$dir/homeserver.log" >&2 || true
        stop_server "$dir" 0
        exit 1
    done

    local envfile="$dir/env"
    if [[ -n "$MAS_ENDPOINT" ]]; then
        (
            umask 077
            cat >"$envfile.tmp" <<EOF
SYNAPSE_URL=http://127.0.0.1:$port
SYNAPSE_SERVER_NAME=$SERVER_NAME
SYNAPSE_PID=$pid
SYNAPSE_PYTHON_BIN=$VENV/bin/python
$(database_env "$dir")
EOF
        )
        chmod 600 "$envfile.tmp"
        mv -f "$envfile.tmp" "$envfile"
        log "Synapse $SYNAPSE_VERSION up at http://127.0.0.1:$port (pid $pid, auth delegated to MAS at $MAS_ENDPOINT, env $envfile) in $(elapsed "$t0") s"
        return 0
    fi
    (
        umask 077
        cat >"$envfile.tmp" <<EOF
SYNAPSE_URL=http://127.0.0.1:$port
SYNAPSE_SERVER_NAME=$SERVER_NAME
SYNAPSE_ADMIN_TOKEN=$token
SYNAPSE_ADMIN_USER=@$ADMIN_LOCALPART:$SERVER_NAME
SYNAPSE_ADMIN_PASSWORD=$password
SYNAPSE_PID=$pid
SYNAPSE_PYTHON_BIN=$VENV/bin/python
$(database_env "$dir")
EOF
    )
    chmod 600 "$envfile.tmp"
    mv -f "$envfile.tmp" "$envfile"
    log "Synapse $SYNAPSE_VERSION up at http://127.0.0.1:$port (pid $pid, admin @$ADMIN_LOCALPART:$SERVER_NAME, env $envfile) in $(elapsed "$t0") s"
}

cmd_status() {
    local dir="$1" pid
    pid="$(cat "$dir/synapse.pid" 2>/dev/null || true)"
    if is_synapse_pid "$pid"; then
        log "running (pid $pid, $dir)"
        return 0
    fi
    log "not running ($dir)"
    return 1
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    local dir="$REPO_ROOT/target/synapse"
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir)
                [[ $# -ge 2 ]] || die "--dir needs a value"
                dir="$2"
                shift 2
                ;;
            --dir=*)
                dir="${1#--dir=}"
                shift
                ;;
            --mas-endpoint | --mas-secret)
                [[ $# -ge 2 ]] || die "$1 needs a value"
                if [[ "$1" == --mas-endpoint ]]; then MAS_ENDPOINT="$2"; else MAS_SECRET="$2"; fi
                shift 2
                ;;
            --mas-endpoint=*)
                MAS_ENDPOINT="${1#--mas-endpoint=}"
                shift
                ;;
            --mas-secret=*)
                MAS_SECRET="${1#--mas-secret=}"
                shift
                ;;
            --postgres | --server-name)
                [[ $# -ge 2 ]] || die "$1 needs a value"
                if [[ "$1" == --postgres ]]; then PG_URL="$2"; else SERVER_NAME="$2"; fi
                shift 2
                ;;
            --postgres=*)
                PG_URL="${1#--postgres=}"
                shift
                ;;
            --server-name=*)
                SERVER_NAME="${1#--server-name=}"
                shift
                ;;
            -h | --help) usage 0 ;;
            *) die "unknown argument: $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "--dir must not be empty"
    if [[ -n "$MAS_ENDPOINT" || -n "$MAS_SECRET" ]]; then
        [[ "$cmd" == start ]] || die "--mas-endpoint and --mas-secret only go with start"
        [[ -n "$MAS_ENDPOINT" && -n "$MAS_SECRET" ]] \
            || die "--mas-endpoint and --mas-secret go together"
        # Both are written into YAML double-quoted strings.
        [[ "$MAS_ENDPOINT" =~ ^https?://[^[:space:]\"\\]+$ ]] \
            || die "--mas-endpoint must be an http(s) URL, got '$MAS_ENDPOINT'"
        [[ "$MAS_SECRET" =~ ^[A-Za-z0-9._~+/=-]+$ ]] \
            || die "--mas-secret may hold only letters, digits and ._~+/=-"
    fi
    if [[ -n "$PG_URL" || "$SERVER_NAME" != localhost ]]; then
        [[ "$cmd" == start ]] || die "--postgres and --server-name only go with start"
    fi
    # Written into YAML double-quoted strings and into user IDs.
    [[ "$SERVER_NAME" =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] \
        || die "--server-name must be a host name (letters, digits, . and -), got '$SERVER_NAME'"
    if [[ "$cmd" == start ]]; then mkdir -p "$(dirname "$dir")"; fi
    if [[ -d "$(dirname "$dir")" ]]; then
        dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
    elif [[ "$dir" != /* ]]; then
        dir="$PWD/$dir"
    fi

    case "$cmd" in
        install) ensure_venv; log "Synapse $SYNAPSE_VERSION ready in $VENV" ;;
        start) cmd_start "$dir" ;;
        stop) stop_server "$dir" ;;
        restart) cmd_restart "$dir" ;;
        status) cmd_status "$dir" ;;
        -h | --help | help) usage 0 ;;
        *) die "unknown command: $cmd (expected install, start, stop, restart or status)" ;;
    esac
}

main "$@"
