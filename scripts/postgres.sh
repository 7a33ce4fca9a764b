#!/usr/bin/env bash
# A throwaway local PostgreSQL 15 server for the end-to-end tests.
#
#   scripts/postgres.sh start  [--dir DIR]   fresh cluster in DIR, then write DIR/env
#   scripts/postgres.sh stop   [--dir DIR]   stop the server started in DIR (idempotent)
#   scripts/postgres.sh status [--dir DIR]   exit 0 if the server of DIR is running
#
# DIR defaults to target/postgres in the repository. `start` wipes DIR first: every
# start is a new cluster listening on 127.0.0.1 on a free port, with a login role
# `synapse` that may create databases and logs in with a generated password over
# TCP (scram-sha-256). DIR/env is a bash-sourceable KEY=VALUE file (mode 0600):
#
#   PGHOST=127.0.0.1
#   PGPORT=PORT
#   PGUSER=synapse
#   PGPASSWORD=...
#   POSTGRES_BIN=/usr/lib/postgresql/15/bin          (psql, pg_dump, createdb, ...)
#   MATRIX_REACTIVATE_PG_URL=postgresql://synapse@127.0.0.1:PORT/   (no password)
#
# Where initdb and pg_ctl are missing and the script runs as root, it installs
# Debian's `postgresql` package (apt-get). PostgreSQL refuses to run as root: as
# root the server runs as the `postgres` system user (created if missing), and its
# data sits in DIR/data, or in a folder of its own under /tmp when that user cannot
# reach DIR (a repository under /root); DIR/datadir names it.
#
# Environment:
#   POSTGRES_BIN               folder holding initdb and pg_ctl (default: found)
#   POSTGRES_START_TIMEOUT     seconds to wait for the server (default 60)
set -euo pipefail

PG_MAJOR=15
ROLE="synapse"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START_TIMEOUT="${POSTGRES_START_TIMEOUT:-60}"
# Marks a folder as created by this script, so that `start` only ever wipes its own folders.
DIR_MARKER=".matrix-reactivate-postgres"
# The system user the server runs as when this script runs as root.
RUN_AS=""

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { printf 'postgres.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# Prints the folder holding initdb and pg_ctl, or nothing.
find_bin() {
    local d
    for d in "${POSTGRES_BIN:-}" "/usr/lib/postgresql/$PG_MAJOR/bin"; do
        [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]] && { printf '%s\n' "$d"; return 0; }
    done
    # Another major version packaged by Debian, newest first, then whatever is on PATH.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { printf '%s\n' "$d"; return 0; }
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v initdb)")")"
        [[ -x "$d/pg_ctl" ]] && { printf '%s\n' "$d"; return 0; }
    fi
    return 0
}

# Sets BIN, installing Debian's package when the binaries are missing and we are root.
ensure_bin() {
    BIN="$(find_bin)"
    [[ -n "$BIN" ]] && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "initdb and pg_ctl not found: installing Debian's postgresql package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 || die "apt-get update failed"
        apt-get install -y -qq postgresql >&2 || die "apt-get install postgresql failed"
        BIN="$(find_bin)"
    fi
    [[ -n "$BIN" ]] || die "initdb and pg_ctl not found: install PostgreSQL $PG_MAJOR \
(Debian/Ubuntu: apt-get install postgresql) or set POSTGRES_BIN to the folder holding them"
}

# Root cannot run PostgreSQL: pick (and create if needed) the system user it runs as.
ensure_run_as() {
    [[ "$(id -u)" -eq 0 ]] || return 0
    RUN_AS="postgres"
    if ! id -u "$RUN_AS" >/dev/null 2>&1; then
        log "creating the system user $RUN_AS"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$RUN_AS" || die "useradd $RUN_AS failed"
    fi
    command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux) to run PostgreSQL as $RUN_AS"
}

# Runs a command as the server's user (as is when not root). The environment is kept,
# so a working directory the user cannot read is swapped for /.
as_owner() {
    if [[ -n "$RUN_AS" ]]; then
        (cd / && runuser -u "$RUN_AS" -- "$@")
    else
        "$@"
    fi
}

# Prints the data folder of DIR (DIR/datadir names it; DIR/data by default).
data_dir_of() {
    local dir="$1"
    if [[ -f "$dir/datadir" ]]; then cat "$dir/datadir"; else printf '%s\n' "$dir/data"; fi
}

# Empties DIR, refusing to wipe a non-empty folder this script did not create.
prepare_dir() {
    local dir="$1"
    if [[ -e "$dir" ]]; then
        [[ -d "$dir" ]] || die "$dir exists and is not a directory"
        if [[ -n "$(ls -A "$dir")" && ! -f "$dir/$DIR_MARKER" ]]; then
            die "$dir is not empty and was not created by postgres.sh; refusing to wipe it"
        fi
        # A data folder of its own under /tmp goes too (it carries the marker as well).
        local data
        data="$(data_dir_of "$dir")"
        if [[ "$data" != "$dir/data" && -f "$(dirname "$data")/$DIR_MARKER" ]]; then
            rm -rf "$(dirname "$data")"
        fi
        find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    fi
    mkdir -p "$dir"
    chmod 755 "$dir"
    : >"$dir/$DIR_MARKER"
}

# Creates the (empty) data folder, owned by the server's user; prints its path.
make_data_dir() {
    local dir="$1" data="$1/data"
    mkdir -p "$data"
    if [[ -n "$RUN_AS" ]]; then
        chown "$RUN_AS:" "$data"
        if ! as_owner test -w "$data"; then
            # DIR lies under a folder the user cannot enter (a clone in /root).
            rmdir "$data"
            local own
            own="$(mktemp -d "${TMPDIR:-/tmp}/matrix-reactivate-postgres.XXXXXX")"
            chmod 755 "$own"
            : >"$own/$DIR_MARKER"
            data="$own/data"
            mkdir "$data"
            chown "$RUN_AS:" "$data"
            printf '%s\n' "$data" >"$dir/datadir"
        fi
    fi
    chmod 700 "$data"
    printf '%s\n' "$data"
}

# Prints a free TCP port on 127.0.0.1 (a random high one without python3).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        printf '%s\n' $((20000 + RANDOM % 40000))
    fi
}

# Prints a random password of letters and digits.
new_password() {
    local p=""
    while [[ ${#p} -lt 32 ]]; do
        p+="$(head -c 64 /dev/urandom | tr -dc 'A-Za-z0-9')"
    done
    printf '%s\n' "${p:0:32}"
}

# $1 = data folder, $2 = port: starts the server; fails if it does not come up.
launch() {
    local data="$1" port="$2"
    # A throwaway cluster: durability across a power cut is worth nothing here.
    as_owner "$BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t "$START_TIMEOUT" \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$data' \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
}

cmd_start() {
    local dir="$1" t0=$SECONDS
    ensure_bin
    ensure_run_as
    cmd_stop "$dir" 2>/dev/null || true
    prepare_dir "$dir"
    local data password
    data="$(make_data_dir "$dir")"
    password="$(new_password)"

    # The superuser logs in only through the socket in the data folder (peer), the
    # test role only over TCP with its password.
    as_owner "$BIN/initdb" -D "$data" --encoding=UTF8 --locale=C --auth-local=peer \
        --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1 \
        || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }

    local port attempt ok=""
    for attempt in 1 2 3; do
        port="$(free_port)"
        if launch "$data" "$port"; then
            ok=1
            break
        fi
        if grep -q 'already in use' "$data/server.log" 2>/dev/null && [[ $attempt -lt 3 ]]; then
            log "port $port was taken meanwhile; retrying with another port"
            continue
        fi
        break
    done
    if [[ -z "$ok" ]]; then
        tail -n 20 "$data/server.log" >&2 || true
        die "PostgreSQL did not start (log: $data/server.log)"
    fi

    # The password goes through stdin, never the command line. Host, port and user are
    # explicit: the caller's PGHOST, PGUSER... (a sourced env file) must not apply.
    printf "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s';\n" "$ROLE" "$password" \
        | as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$data" -p "$port" -d postgres \
            -U "${RUN_AS:-$(id -un)}" \
            >/dev/null || die "creating the role $ROLE failed"

    (
        umask 077
        cat >"$dir/env.tmp" <<EOF
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=$ROLE
PGPASSWORD=$password
POSTGRES_BIN=$BIN
MATRIX_REACTIVATE_PG_URL=postgresql://$ROLE@127.0.0.1:$port/
EOF
    )
    mv -f "$dir/env.tmp" "$dir/env"
    log "PostgreSQL $("$BIN/pg_ctl" --version | awk '{print $3}') up at 127.0.0.1:$port \
(role $ROLE, data $data, env $dir/env) in $((SECONDS - t0)) s"
}

cmd_stop() {
    local dir="$1" data
    data="$(data_dir_of "$dir")"
    [[ -f "$data/postmaster.pid" ]] || return 0
    BIN="${BIN:-$(find_bin)}"
    [[ -n "$BIN" ]] || die "pg_ctl not found to stop the server in $data"
    ensure_run_as
    if as_owner "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_owner "$BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null \
            || as_owner "$BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null \
            || die "could not stop the server in $data"
        log "stopped PostgreSQL ($dir)"
    fi
}

cmd_status() {
    local dir="$1" data
    data="$(data_dir_of "$dir")"
    BIN="$(find_bin)"
    if [[ -n "$BIN" && -f "$data/postmaster.pid" ]]; then
        ensure_run_as
        if as_owner "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            log "running ($dir)"
            return 0
        fi
    fi
    log "not running ($dir)"
    return 1
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    local dir="$REPO_ROOT/target/postgres"
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
            -h | --help) usage 0 ;;
            *) die "unknown argument: $1" ;;
        esac
    done
    [[ -n "$dir" ]] || die "--dir must not be empty"
    if [[ "$cmd" == start ]]; then mkdir -p "$(dirname "$dir")"; fi
    if [[ -d "$(dirname "$dir")" ]]; then
        dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
    elif [[ "$dir" != /* ]]; then
        dir="$PWD/$dir"
    fi
    BIN=""
    case "$cmd" in
        start) cmd_start "$dir" ;;
        stop) cmd_stop "$dir" ;;
        status) cmd_status "$dir" ;;
        -h | --help | help) usage 0 ;;
        *) die "unknown command: $cmd (expected start, stop or status)" ;;
    esac
}

main "$@"
