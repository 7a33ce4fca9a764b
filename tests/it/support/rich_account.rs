//! Users who hold everything a deactivation deletes, built on a real Synapse
//! the way a user and their client would (admin and client API requests):
//! e-mails, display name and avatar, rooms and a DM, an ignore list, room
//! tags, a read marker, client and recovery settings, custom and changed push
//! rules, and a key backup. `Image` reads such an account back through the
//! same APIs, so a test compares, item by item, what a restore gave back with
//! what was there before.
//!
//! Nothing here knows how the tool restores; it only builds and reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use super::mock_synapse::enc;
use super::real_synapse::{Postgres, Synapse};

/// The algorithm of a key backup, as Element and the Rust SDK create it.
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

/// Default push rules `rich_user` changes: one disabled, one with new actions.
pub const CHANGED_DEFAULT_RULES: u64 = 2;

/// Sessions per key upload while building (Synapse takes any number; this
/// keeps request bodies small).
const UPLOAD_BATCH: usize = 1000;

/// A user `rich_user` made.
pub struct RichUser {
    pub id: String,
    pub password: String,
    /// Backed-up room keys.
    pub sessions: u64,
}

/// Creates `localpart` with all of the above and `sessions` backed-up room
/// keys spread over four rooms. Rooms are made by the admin, who stays in
/// them, so the user can be joined to them again.
pub async fn rich_user(s: &Synapse, localpart: &str, sessions: usize) -> RichUser {
    let id = s.id(localpart);
    let password = format!("pw-{localpart}-before");
    let body = json!({
        "password": password,
        "displayname": format!("Before {localpart} ✓"),
        "avatar_url": format!("mxc://{}/avatar{localpart}", s.server_name),
        "threepids": [
            {"medium": "email", "address": format!("{localpart}@example.org")},
            {"medium": "email", "address": format!("{localpart}.work@example.net")},
        ],
    });
    let path = format!("/_synapse/admin/v2/users/{}", enc(&id));
    let (status, v) = s.request(None, Method::PUT, &path, Some(&body)).await;
    assert_eq!(status, 201, "creating {id}: {v}");
    let token = s.login(&id, &password).await;

    let rooms = join_rooms(s, &id, &token).await;
    account_data(s, &id, &token, &rooms).await;
    push_rules(s, &token, &rooms).await;
    if sessions > 0 {
        key_backup(s, &id, &token, &rooms, sessions).await;
    }
    // Deactivation would end this token anyway; a user logs out.
    s.client(&token, Method::POST, "/logout", json!({})).await;
    RichUser {
        id,
        password,
        sessions: sessions as u64,
    }
}

/// The rooms of one user: a public one, a private one and a DM (all made by
/// the admin), joined.
struct UserRooms {
    public: String,
    private: String,
    dm: String,
}

async fn join_rooms(s: &Synapse, id: &str, token: &str) -> UserRooms {
    let admin = s.token.clone();
    let public = s.create_room(&admin, "public_chat").await;
    let private = s.create_room(&admin, "private_chat").await;
    let dm = s
        .client(
            &admin,
            Method::POST,
            "/createRoom",
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [id]}),
        )
        .await["room_id"]
        .as_str()
        .expect("a room ID")
        .to_owned();
    s.room_action(&admin, &private, "invite", Some(id)).await;
    for room in [&public, &private, &dm] {
        s.room_action(token, room, "join", None).await;
    }
    UserRooms {
        public,
        private,
        dm,
    }
}

/// Global and per-room account data, tags and a read marker.
async fn account_data(s: &Synapse, id: &str, token: &str, rooms: &UserRooms) {
    let admin = s.id("admin");
    let global = [
        ("m.direct", json!({ admin: [rooms.dm] })),
        (
            "m.ignored_user_list",
            json!({"ignored_users": {s.id("spammer"): {}, s.id("troll"): {}}}),
        ),
        (
            "im.vector.setting.breadcrumbs",
            json!({"recent_rooms": [rooms.private, rooms.public]}),
        ),
        (
            "im.vector.analytics",
            json!({"pseudonymousAnalyticsOptIn": false}),
        ),
        ("m.secret_storage.default_key", json!({"key": "KEYID1"})),
        (
            "m.secret_storage.key.KEYID1",
            json!({"algorithm": "m.secret_storage.v1.aes-hmac-sha2",
                   "iv": "aXZpdml2aXZpdml2aXZpdg", "mac": "bWFjbWFjbWFjbWFjbWFjbWFjbWFj",
                   "passphrase": {"algorithm": "m.pbkdf2", "salt": "c2FsdA", "iterations": 500000}}),
        ),
        (
            "m.megolm_backup.v1",
            json!({"encrypted": {"KEYID1": {"iv": "aXY", "ciphertext": "Y2lwaGVy", "mac": "bWFj"}}}),
        ),
        (
            "m.cross_signing.master",
            json!({"encrypted": {"KEYID1": {"iv": "aXYy", "ciphertext": "bWFzdGVy", "mac": "bWFjMg"}}}),
        ),
        (
            "org.example.note",
            json!({"text": "ünïcödé ✓ 😀 \"quoted\" \\ back", "n": 1.5, "big": 9007199254740993_u64,
                   "nested": {"a": [1, 2, {"b": null}], "empty": {}}}),
        ),
    ];
    for (kind, content) in global {
        let path = format!("/user/{}/account_data/{kind}", enc(id));
        s.client(token, Method::PUT, &path, content).await;
    }
    let path = format!(
        "/user/{}/rooms/{}/account_data/org.example.room.note",
        enc(id),
        enc(&rooms.public)
    );
    s.client(
        token,
        Method::PUT,
        &path,
        json!({"pinned": true, "colour": "teal"}),
    )
    .await;
    // Tags through the tags API, as clients set them.
    for (room, tag, order) in [
        (&rooms.private, "m.favourite", 0.25),
        (&rooms.public, "m.lowpriority", 0.5),
        (&rooms.dm, "u.work", 0.75),
    ] {
        let path = format!("/user/{}/rooms/{}/tags/{tag}", enc(id), enc(room));
        s.client(token, Method::PUT, &path, json!({"order": order}))
            .await;
    }
    // A read marker needs an event to point at.
    let path = format!("/rooms/{}/send/m.room.message/t1", enc(&rooms.public));
    let sent = s
        .client(
            token,
            Method::PUT,
            &path,
            json!({"msgtype": "m.text", "body": "hello"}),
        )
        .await;
    let path = format!("/rooms/{}/read_markers", enc(&rooms.public));
    s.client(
        token,
        Method::POST,
        &path,
        json!({"m.fully_read": sent["event_id"]}),
    )
    .await;
}

/// Custom push rules of every sort, in a deliberate order, one disabled, and
/// two server-default rules changed.
async fn push_rules(s: &Synapse, token: &str, rooms: &UserRooms) {
    let rule = |path: String, body: Value| async move {
        s.client(
            token,
            Method::PUT,
            &format!("/pushrules/global/{path}"),
            body,
        )
        .await;
    };
    let notify_highlight = json!(["notify", {"set_tweak": "highlight"}]);
    rule(
        "content/deploy".into(),
        json!({"pattern": "deploy", "actions": notify_highlight}),
    )
    .await;
    // Placed before `deploy`, then `lunch` goes on top: lunch, outage, deploy.
    rule(
        "content/outage?before=deploy".into(),
        json!({"pattern": "outage*", "actions": ["notify", {"set_tweak": "sound", "value": "alarm"}]}),
    )
    .await;
    rule(
        "content/lunch".into(),
        json!({"pattern": "lunch", "actions": ["notify"]}),
    )
    .await;
    rule("content/lunch/enabled".into(), json!({"enabled": false})).await;
    // A muted room and a muted sender.
    rule(
        format!("room/{}", enc(&rooms.public)),
        json!({"actions": []}),
    )
    .await;
    rule(
        format!("sender/{}", enc(&s.id("noisybot"))),
        json!({"actions": []}),
    )
    .await;
    rule(
        "override/org.example.urgent".into(),
        json!({
            "conditions": [
                {"kind": "event_match", "key": "content.body", "pattern": "*urgent*"},
                {"kind": "room_member_count", "is": "<10"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"},
                        {"set_tweak": "highlight", "value": true}],
        }),
    )
    .await;
    rule(
        "override/org.example.quiet?after=org.example.urgent".into(),
        json!({
            "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"}],
            "actions": [],
        }),
    )
    .await;
    // The server's own rules, changed.
    rule(
        "override/.m.rule.invite_for_me/enabled".into(),
        json!({"enabled": false}),
    )
    .await;
    rule(
        "underride/.m.rule.message/actions".into(),
        json!({"actions": ["notify", {"set_tweak": "sound", "value": "ping"}]}),
    )
    .await;
}

/// A key backup version and `sessions` fake sessions over four rooms (one the
/// user never joined, as after leaving a room).
async fn key_backup(s: &Synapse, id: &str, token: &str, rooms: &UserRooms, sessions: usize) {
    let auth_data = json!({
        "public_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
        "signatures": {id: {"ed25519:DEVICEID": "c2lnbmF0dXJl"}},
    });
    let v = s
        .client(
            token,
            Method::POST,
            "/room_keys/version",
            json!({"algorithm": BACKUP_ALGORITHM, "auth_data": auth_data}),
        )
        .await;
    let version = v["version"].as_str().expect("a backup version").to_owned();
    let gone = format!(
        "!gone{}:{}",
        &id[1..id.find(':').unwrap_or(2)],
        s.server_name
    );
    let room_ids = [&rooms.public, &rooms.private, &rooms.dm, &gone];
    let all: Vec<usize> = (0..sessions).collect();
    for batch in all.chunks(UPLOAD_BATCH) {
        let mut body: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
        for &i in batch {
            let room = room_ids[i % room_ids.len()];
            body.entry(room.clone())
                .or_default()
                .insert(format!("sess{i:06}/{id}"), fake_session(i));
        }
        let rooms: serde_json::Map<String, Value> = body
            .into_iter()
            .map(|(room, sessions)| (room, json!({ "sessions": sessions })))
            .collect();
        let path = format!("/room_keys/keys?version={version}");
        s.client(token, Method::PUT, &path, json!({ "rooms": rooms }))
            .await;
    }
}

/// A session as a client uploads it; the encrypted part is opaque to the
/// server (and to the tool), so any text does.
fn fake_session(i: usize) -> Value {
    json!({
        "first_message_index": i % 7,
        "forwarded_count": i % 3,
        "is_verified": i % 2 == 0,
        "session_data": {
            "ephemeral": format!("ZXBoZW1lcmFs{i:08}"),
            "ciphertext": format!("{}{i:08}", "Y2lwaGVydGV4dA".repeat(12)),
            "mac": format!("bWFj{i:06}"),
        },
    })
}

// ---------------------------------------------------------------- reading back

/// A key backup as the user's client sees it.
#[derive(Debug, PartialEq)]
pub struct BackupImage {
    pub algorithm: String,
    pub auth_data: Value,
    pub count: u64,
    /// `{"rooms": {room: {"sessions": {id: session}}}}`, every session.
    pub keys: Value,
}

/// One account as the admin and client APIs show it: everything a
/// deactivation deletes, and what it keeps.
#[derive(Debug, PartialEq)]
pub struct Image {
    pub global: BTreeMap<String, Value>,
    pub rooms: BTreeMap<String, BTreeMap<String, Value>>,
    /// Tags per room of `joined` (Synapse keeps them in a table of their own).
    pub tags: BTreeMap<String, Value>,
    /// `GET /pushrules/`'s `global`: every kind, in order, with enabled flags.
    pub push_rules: Value,
    pub backup: Option<BackupImage>,
    pub threepids: BTreeSet<(String, String)>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub joined: BTreeSet<String>,
}

impl Image {
    /// Reads `id`'s account, with the user's `token` where only the user may
    /// read. Tags are read for `rooms` (the user's rooms before).
    pub async fn read(
        s: &Synapse,
        id: &str,
        token: &str,
        rooms: Option<&BTreeSet<String>>,
    ) -> Image {
        let path = format!("/_synapse/admin/v1/users/{}/accountdata", enc(id));
        let (status, data) = s.request(None, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {data}");
        let map = |v: &Value| -> BTreeMap<String, Value> {
            v.as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let global = map(&data["account_data"]["global"]);
        let rooms_data: BTreeMap<String, BTreeMap<String, Value>> =
            map(&data["account_data"]["rooms"])
                .into_iter()
                .map(|(room, types)| (room, map(&types)))
                .filter(|(_, types)| !types.is_empty())
                .collect();
        let joined = s.joined_rooms(token).await;
        let mut tags = BTreeMap::new();
        for room in rooms.unwrap_or(&joined) {
            let path = format!("/user/{}/rooms/{}/tags", enc(id), enc(room));
            let v = s.client(token, Method::GET, &path, json!({})).await;
            tags.insert(room.clone(), v["tags"].clone());
        }
        let push_rules =
            s.client(token, Method::GET, "/pushrules/", json!({})).await["global"].clone();
        let user = s.user(id).await.expect("the user exists");
        let threepids = user["threepids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        let text = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
                        (text("medium"), text("address"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = |k: &str| {
            user[k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Image {
            global,
            rooms: rooms_data,
            tags,
            push_rules,
            backup: read_backup(s, token).await,
            threepids,
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
            joined,
        }
    }

    /// Fails unless this is the account `rich_user` built with `sessions`
    /// backed-up keys: a scenario that lost an item on the way would let a
    /// restore that loses it too pass.
    pub fn assert_rich(&self, who: &str, sessions: u64) {
        let room_items: usize = self.rooms.values().map(BTreeMap::len).sum();
        let tagged = self
            .tags
            .values()
            .filter(|t| t.as_object().is_some_and(|o| !o.is_empty()));
        let custom =
            self.full_restore().get("push_rules").copied().unwrap_or(0) - CHANGED_DEFAULT_RULES;
        let facts = [
            ("global account data types", self.global.len() as u64, 9),
            ("room account data items", room_items as u64, 2),
            ("tagged rooms", tagged.count() as u64, 3),
            ("custom push rules", custom, 7),
            ("e-mails", self.threepids.len() as u64, 2),
            ("joined rooms", self.joined.len() as u64, 3),
            (
                "backed-up sessions",
                self.backup.as_ref().map_or(0, |b| b.count),
                sessions,
            ),
        ];
        for (what, is, should) in facts {
            assert_eq!(is, should, "{who} before: {what}");
        }
        assert!(
            self.displayname.is_some() && self.avatar_url.is_some(),
            "{who}: a profile"
        );
        assert!(
            self.rooms.values().any(|t| t.contains_key("m.fully_read")),
            "{who}: a read marker"
        );
    }

    /// The `restored` column a full restore of this account should show.
    pub fn full_restore(&self) -> BTreeMap<String, u64> {
        let custom_rules: u64 = self
            .push_rules
            .as_object()
            .map(|kinds| {
                kinds
                    .values()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|r| r["default"] == json!(false))
                    .count() as u64
            })
            .unwrap_or(0);
        let items = [
            ("emails", self.threepids.len() as u64),
            (
                "profile",
                (self.displayname.is_some() || self.avatar_url.is_some()) as u64,
            ),
            ("rooms", self.joined.len() as u64),
            ("account_data", self.global.len() as u64),
            (
                "room_account_data",
                self.rooms.values().map(|t| t.len() as u64).sum(),
            ),
            ("push_rules", custom_rules + CHANGED_DEFAULT_RULES),
            ("backup_keys", self.backup.as_ref().map_or(0, |b| b.count)),
        ];
        items
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_owned(), n))
            .collect()
    }

    /// Fails with the first item that differs from `before`, named.
    pub fn assert_same_as(&self, before: &Image, who: &str) {
        let check =
            |what: &str, same: bool, now: &dyn std::fmt::Debug, was: &dyn std::fmt::Debug| {
                assert!(
                    same,
                    "{who}: {what} differs\n now: {now:#?}\n was: {was:#?}"
                );
            };
        for (kind, was) in &before.global {
            check(
                &format!("global account data {kind}"),
                self.global.get(kind) == Some(was),
                &self.global.get(kind),
                was,
            );
        }
        check(
            "global account data",
            self.global == before.global,
            &self.global.keys(),
            &before.global.keys(),
        );
        check(
            "room account data",
            self.rooms == before.rooms,
            &self.rooms,
            &before.rooms,
        );
        check("tags", self.tags == before.tags, &self.tags, &before.tags);
        check(
            "push rules",
            self.push_rules == before.push_rules,
            &self.push_rules,
            &before.push_rules,
        );
        match (&self.backup, &before.backup) {
            (Some(now), Some(was)) => {
                check(
                    "backup algorithm",
                    now.algorithm == was.algorithm,
                    &now.algorithm,
                    &was.algorithm,
                );
                check(
                    "backup auth_data",
                    now.auth_data == was.auth_data,
                    &now.auth_data,
                    &was.auth_data,
                );
                check(
                    "backup session count",
                    now.count == was.count,
                    &now.count,
                    &was.count,
                );
                check_sessions(who, &now.keys, &was.keys);
            }
            (now, was) => check("key backup", now.is_none() && was.is_none(), now, was),
        }
        check(
            "e-mails",
            self.threepids == before.threepids,
            &self.threepids,
            &before.threepids,
        );
        check(
            "display name",
            self.displayname == before.displayname,
            &self.displayname,
            &before.displayname,
        );
        check(
            "avatar",
            self.avatar_url == before.avatar_url,
            &self.avatar_url,
            &before.avatar_url,
        );
        check(
            "joined rooms",
            self.joined == before.joined,
            &self.joined,
            &before.joined,
        );
    }
}

/// Every session of `was`, byte for byte (as JSON values) in `now`, and no other.
fn check_sessions(who: &str, now: &Value, was: &Value) {
    let sessions = |v: &Value| -> BTreeMap<(String, String), Value> {
        let mut out = BTreeMap::new();
        for (room, r) in v["rooms"].as_object().into_iter().flatten() {
            for (id, session) in r["sessions"].as_object().into_iter().flatten() {
                out.insert((room.clone(), id.clone()), session.clone());
            }
        }
        out
    };
    let (now, was) = (sessions(now), sessions(was));
    for (key, session) in &was {
        assert_eq!(
            now.get(key),
            Some(session),
            "{who}: backed-up session {key:?}"
        );
    }
    assert_eq!(now.len(), was.len(), "{who}: sessions in the backup");
}

/// The newest key backup and all its sessions, as the user.
async fn read_backup(s: &Synapse, token: &str) -> Option<BackupImage> {
    let (status, v) = s
        .request(
            Some(token),
            Method::GET,
            "/_matrix/client/v3/room_keys/version",
            None,
        )
        .await;
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "GET /room_keys/version: {v}");
    let version = v["version"].as_str().expect("a version");
    let path = format!("/_matrix/client/v3/room_keys/keys?version={version}");
    let (status, keys) = s.request(Some(token), Method::GET, &path, None).await;
    assert_eq!(status, 200, "GET {path}");
    Some(BackupImage {
        algorithm: v["algorithm"].as_str().unwrap_or_default().to_owned(),
        auth_data: v["auth_data"].clone(),
        count: v["count"].as_u64().unwrap_or_default(),
        keys,
    })
}

// ------------------------------------------------------- the database, read directly

/// `valid_until_ms` of every token acting as one of `users` (Synapse's
/// puppet tokens: the admin's, with `puppets_user_id` set) in a SQLite
/// database; `None` = a token that never expires.
pub fn puppet_tokens_sqlite(db: &Path, users: &[String]) -> Vec<Option<i64>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut q = conn
        .prepare("SELECT valid_until_ms FROM access_tokens WHERE puppets_user_id = ?1")
        .expect("the access_tokens table");
    let mut out = vec![];
    for user in users {
        let rows = q
            .query_map([user], |r| r.get::<_, Option<i64>>(0))
            .expect("a query");
        out.extend(rows.map(|r| r.expect("a row")));
    }
    out
}

/// The same in a PostgreSQL database.
pub fn puppet_tokens_pg(pg: &Postgres, db: &str, users: &[String]) -> Vec<Option<i64>> {
    let list: Vec<String> = users
        .iter()
        .map(|u| format!("'{}'", u.replace('\'', "''")))
        .collect();
    let sql = format!(
        "SELECT coalesce(valid_until_ms::text, 'never') FROM access_tokens \
         WHERE puppets_user_id IN ({})",
        list.join(",")
    );
    pg.psql(db, &sql)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().ok())
        .collect()
}

/// Rows of `e2e_room_keys_versions` per user (deleted ones included) and
/// sessions per user, in a SQLite database.
pub fn backups_sqlite(db: &Path, user: &str) -> (u64, u64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let count = |sql: &str| -> u64 {
        conn.query_row(sql, [user], |r| r.get::<_, i64>(0))
            .expect("a count") as u64
    };
    (
        count("SELECT COUNT(*) FROM e2e_room_keys_versions WHERE user_id = ?1"),
        count("SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ?1"),
    )
}

/// A copy of a live SQLite database, as `sqlite3 homeserver.db ".backup
/// copy.db"` makes it: SQLite's backup API (Synapse runs in WAL mode, so
/// copying the file alone could miss what the WAL holds).
pub fn backup_sqlite(db: &Path, copy: &Path) {
    let python = std::env::var("SYNAPSE_PYTHON_BIN").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys\n\
             src = sqlite3.connect(sys.argv[1])\n\
             dst = sqlite3.connect(sys.argv[2])\n\
             src.backup(dst)\n\
             dst.close(); src.close()",
        ])
        .arg(db)
        .arg(copy)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "backing up {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
