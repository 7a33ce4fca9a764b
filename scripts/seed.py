#!/usr/bin/env python3
"""Seed a (fresh, throwaway) Synapse homeserver with users in given states.

Reads a population CSV with the header

    localpart,state,password,displayname

where state is one of:

    active       the user exists and can log in (with `password`, if given)
    deactivated  created, then deactivated with {"erase": false}
    erased       created, then deactivated with {"erase": true} (GDPR erasure)
    locked       created, then locked ({"locked": true})
    absent       must not exist (nothing is created; fails if the user exists)

`password` and `displayname` may be empty. Uses the Synapse Admin API:

    PUT  /_synapse/admin/v2/users/{user_id}
    POST /_synapse/admin/v1/deactivate/{user_id}

and, with --phase create, the users' own API (logged in with their password) to give
each user who is to be deactivated or erased what a deactivation deletes: an e-mail
address, a room of their own tagged as a favourite, a DM list (m.direct), an ignore
list, a keyword push rule, a changed default push rule and a key backup of a few
(opaque) room keys. --phase deactivate then deactivates, erases and locks as the states
say. The default, --phase all, does both at once (no history).

Usage:

    scripts/seed.py [--url URL] [--token TOKEN] [--server-name NAME]
                    [--phase all|create|deactivate] POPULATION.csv

--url, --token and --server-name default to $SYNAPSE_URL, $SYNAPSE_ADMIN_TOKEN and
$SYNAPSE_SERVER_NAME (as written to the env file by scripts/synapse.sh); the server
name defaults to the domain of the token's user (whoami) when none is given.

Exit status: 0 when every row was applied, 1 on any failure, 2 on bad usage/input.
"""

import argparse
import csv
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

STATES = ("active", "deactivated", "erased", "locked", "absent")
HEADER = ["localpart", "state", "password", "displayname"]


def usage_error(message):
    print(f"seed.py: {message}", file=sys.stderr)
    sys.exit(2)


class ApiError(Exception):
    def __init__(self, method, path, status, body):
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status} {json.dumps(body)}")


class Admin:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, ok=(200,)):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(10):
            req = urllib.request.Request(self.url + path, data=data, method=method)
            if self.token:
                req.add_header("Authorization", "Bearer " + self.token)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as err:
                status, raw = err.code, err.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"raw": raw.decode(errors="replace")}
            if status == 429 and attempt < 9:
                retry_ms = parsed.get("retry_after_ms", 1000) if isinstance(parsed, dict) else 1000
                time.sleep(min(max(retry_ms, 100), 10_000) / 1000)
                continue
            if status not in ok:
                raise ApiError(method, path, status, parsed)
            return status, parsed
        raise AssertionError("unreachable")


def user_path(prefix, user_id):
    # The whole user ID is one path segment: "@" -> %40, ":" -> %3A, "/" -> %2F.
    return prefix + urllib.parse.quote(user_id, safe="")


def read_population(path):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [h.strip() for h in reader.fieldnames] != HEADER:
            usage_error(f"{path}: header must be {','.join(HEADER)}, got {reader.fieldnames}")
        for line_no, row in enumerate(reader, start=2):
            localpart = (row.get("localpart") or "").strip()
            state = (row.get("state") or "").strip().lower()
            if not localpart or localpart.startswith("#"):
                continue
            if state not in STATES:
                usage_error(f"{path}:{line_no}: state {state!r} is not one of {', '.join(STATES)}")
            rows.append({
                "line": line_no,
                "localpart": localpart,
                "state": state,
                "password": row.get("password") or "",
                "displayname": (row.get("displayname") or "").strip(),
            })
    return rows


def create_user(api, server_name, row, with_history):
    user_id = f"@{row['localpart']}:{server_name}"
    path = user_path("/_synapse/admin/v2/users/", user_id)
    if row["state"] == "absent":
        status, _ = api.call("GET", path, ok=(200, 404))
        if status != 404:
            raise RuntimeError(f"{user_id} should be absent but exists")
        return user_id, "checked absent"
    body = {}
    password = row["password"]
    history = with_history and row["state"] in ("deactivated", "erased")
    if history and not password:
        # The user's own API needs a login; deactivation wipes it anyway.
        password = "seed-" + os.urandom(12).hex()
    if password:
        body["password"] = password
    if row["displayname"]:
        body["displayname"] = row["displayname"]
    if history:
        body["threepids"] = [{"medium": "email",
                              "address": f"{row['localpart']}@example.org"}]
    status, _ = api.call("PUT", path, body, ok=(200, 201))
    done = "created" if status == 201 else "updated"
    if history:
        give_history(api, user_id, password)
        done += ", with history"
    return user_id, done


def give_history(api, user_id, password):
    """What deactivation deletes, set as the user: see the module's doc."""
    url = api.url
    login = Admin(url, "")
    _, answer = login.call("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    })
    me = Admin(url, answer["access_token"])
    enc = urllib.parse.quote(user_id, safe="")
    # The admin joins too: a room whose only member was deactivated is gone
    # for good (nobody is left in it to let anyone back).
    _, admin = api.call("GET", "/_matrix/client/v3/account/whoami")
    _, room = me.call("POST", "/_matrix/client/v3/createRoom",
                      {"name": "Notes", "preset": "private_chat",
                       "invite": [admin["user_id"]]})
    room_id = urllib.parse.quote(room["room_id"], safe="")
    api.call("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {})
    me.call("PUT", f"/_matrix/client/v3/user/{enc}/rooms/{room_id}/tags/m.favourite",
            {"order": 0.5})
    me.call("PUT", f"/_matrix/client/v3/user/{enc}/account_data/m.direct",
            {"@erin:" + user_id.split(":", 1)[1]: [room["room_id"]]})
    me.call("PUT", f"/_matrix/client/v3/user/{enc}/account_data/m.ignored_user_list",
            {"ignored_users": {"@spammer:example.org": {}}})
    me.call("PUT", "/_matrix/client/v3/pushrules/global/content/deploy",
            {"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]})
    me.call("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.roomnotif/enabled",
            {"enabled": False})
    _, version = me.call("POST", "/_matrix/client/v3/room_keys/version", {
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "demo" + os.urandom(8).hex(), "signatures": {}},
    })
    sessions = {f"session{i:02}": {
        "first_message_index": 0, "forwarded_count": 0, "is_verified": True,
        "session_data": {"ephemeral": os.urandom(8).hex(), "ciphertext": os.urandom(48).hex(),
                         "mac": os.urandom(8).hex()},
    } for i in range(20)}
    me.call("PUT", "/_matrix/client/v3/room_keys/keys?version=" + version["version"],
            {"rooms": {room["room_id"]: {"sessions": sessions}}})
    me.call("POST", "/_matrix/client/v3/logout", {})


def change_state(api, server_name, row):
    user_id = f"@{row['localpart']}:{server_name}"
    state = row["state"]
    path = user_path("/_synapse/admin/v2/users/", user_id)
    if state in ("deactivated", "erased"):
        erase = state == "erased"
        api.call("POST", user_path("/_synapse/admin/v1/deactivate/", user_id), {"erase": erase})
        return user_id, "deactivated" + (" + erased" if erase else "")
    if state == "locked":
        api.call("PUT", path, {"locked": True})
        return user_id, "locked"
    return user_id, "left as it is"


def seed_row(api, server_name, row, phase):
    if phase == "deactivate":
        if row["state"] == "absent":
            return f"@{row['localpart']}:{server_name}", "checked absent"
        return change_state(api, server_name, row)
    user_id, done = create_user(api, server_name, row, phase == "create")
    if phase == "all" and row["state"] != "absent":
        _, changed = change_state(api, server_name, row)
        if changed != "left as it is":
            done += ", " + changed
    return user_id, done


def whoami(api):
    _, body = api.call("GET", "/_matrix/client/v3/account/whoami")
    return body["user_id"]


def main():
    parser = argparse.ArgumentParser(
        description="Create users in given states on a test Synapse homeserver.")
    parser.add_argument("population", help="CSV with header " + ",".join(HEADER))
    parser.add_argument("--url", default=os.environ.get("SYNAPSE_URL"),
                        help="homeserver base URL (default $SYNAPSE_URL)")
    parser.add_argument("--token", default=os.environ.get("SYNAPSE_ADMIN_TOKEN"),
                        help="admin access token (default $SYNAPSE_ADMIN_TOKEN)")
    parser.add_argument("--server-name", default=os.environ.get("SYNAPSE_SERVER_NAME"),
                        help="server name, the part after ':' in user IDs "
                             "(default $SYNAPSE_SERVER_NAME, else from whoami)")
    parser.add_argument("--phase", choices=("all", "create", "deactivate"), default="all",
                        help="create (with history) then deactivate in two calls, or all at once")
    parser.add_argument("-q", "--quiet", action="store_true", help="print no table")
    args = parser.parse_args()

    if not args.url:
        parser.error("--url (or SYNAPSE_URL) is required")
    if not args.token:
        parser.error("--token (or SYNAPSE_ADMIN_TOKEN) is required")

    try:
        rows = read_population(args.population)
    except OSError as err:
        usage_error(f"cannot read {args.population}: {err}")
    api = Admin(args.url, args.token)
    try:
        # Checks the URL and the token before touching anything.
        token_user = whoami(api)
        server_name = args.server_name or token_user.split(":", 1)[1]
    except ApiError as err:
        print(f"seed.py: the token does not work on {args.url}: {err}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as err:
        print(f"seed.py: cannot reach {args.url}: {err}", file=sys.stderr)
        return 1

    results, failures = [], 0
    for row in rows:
        try:
            user_id, done = seed_row(api, server_name, row, args.phase)
        except (ApiError, RuntimeError, urllib.error.URLError, OSError) as err:
            failures += 1
            user_id, done = f"@{row['localpart']}:{server_name}", f"FAILED: {err}"
        results.append((user_id, row["state"], done))

    if not args.quiet or failures:
        width_id = max([len("user_id")] + [len(r[0]) for r in results])
        width_state = max([len("state")] + [len(r[1]) for r in results])
        print(f"{'user_id':<{width_id}}  {'state':<{width_state}}  done")
        for user_id, state, done in results:
            print(f"{user_id:<{width_id}}  {state:<{width_state}}  {done}")
        print(f"{len(results) - failures} of {len(results)} rows seeded on {args.url}",
              file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
