//! `snapshot`: the before-image of users, read from the server into a file
//! that `--restore-from` reads; against a mock Synapse, the MAS double, and a
//! real Synapse (every item compared with what the server holds).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use matrix_reactivate::source::snapshot::SnapshotReader;
use matrix_reactivate::source::{BackupSession, BeforeImage, Source};
use matrix_reactivate::user_id::UserId;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::support::mas::MasConfig;
use crate::support::mas_world::{id as mas_id, MasWorld};
use crate::support::mock_synapse::{enc, user_path, MockSynapse, State};
use crate::support::real_synapse::{sqlite_path, synapse, tag};
use crate::support::rich_account::{puppet_tokens_sqlite, rich_user, Image};
use crate::support::workdir::*;

/// `snapshot -H URL [INPUT] -o before.snap --no-progress --rate 0 …`
fn snapshot(w: &Workdir, url: &str, input: Option<&str>, args: &[&str]) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.args(["snapshot", "-H", url]);
    if let Some(input) = input {
        c.arg(input);
    }
    c.args(["-o", "before.snap", "--no-progress", "--rate", "0"])
        .args(args);
    c
}

/// The files in the work directory: nothing half written may stay.
fn files(w: &Workdir) -> BTreeSet<String> {
    std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// Every session of the user's backup in the snapshot, by (room, session).
fn sessions_of(
    r: &SnapshotReader,
    user: &str,
    version: &str,
) -> BTreeMap<(String, String), BackupSession> {
    let mut all = BTreeMap::new();
    let mut after = None;
    loop {
        let page = r.sessions(&uid(user), version, after.as_ref(), 7).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        for s in page {
            all.insert((s.room_id.clone(), s.session_id.clone()), s);
        }
    }
    all
}

fn image(r: &SnapshotReader, user: &str) -> Option<BeforeImage> {
    r.image(&uid(user)).unwrap()
}

// ---------------------------------------------------------------- a mock Synapse

/// A mock Synapse for `snapshot`: the preflight, the admin's memberships.
async fn server() -> MockSynapse {
    let m = MockSynapse::start().await;
    mount_get(
        &m,
        &format!(
            "/_synapse/admin/v1/users/{}/memberships",
            enc("@admin:example.org")
        ),
        json!({"memberships": {}}),
    )
    .await;
    m
}

async fn mount_get(m: &MockSynapse, p: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(p.to_owned()))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&m.server)
        .await;
}

fn session_json(n: usize) -> String {
    format!(
        r#"{{"first_message_index": {n}, "forwarded_count": 1, "is_verified": {},
            "session_data": {{"ephemeral": "e{n}", "ciphertext": "c{n}", "mac": "m{n}"}}}}"#,
        n % 2 == 0
    )
}

/// A user the snapshot can read: e-mails and profile, a joined room and one
/// left, account data, a custom and a changed default push rule, and a key
/// backup of `sessions` sessions (none: no backup). The puppet login and the
/// logout are expected exactly once.
async fn readable(m: &MockSynapse, localpart: &str, sessions: usize) {
    let id = format!("@{localpart}:example.org");
    mount_get(
        m,
        &user_path(&id),
        json!({"name": id, "deactivated": false, "displayname": format!("{localpart} ✓"),
               "avatar_url": "mxc://example.org/av",
               "threepids": [{"medium": "email", "address": format!("{localpart}@example.org"),
                              "validated_at": 1, "added_at": 2}]}),
    )
    .await;
    let user = format!("/_synapse/admin/v1/users/{}", enc(&id));
    mount_get(
        m,
        &format!("{user}/memberships"),
        json!({"memberships": {"!a:example.org": "join", "!gone:example.org": "leave"}}),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("{user}/accountdata")))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            r#"{"account_data": {"global": {"m.direct": {"@b:example.org": ["!a:example.org"]},
                "m.ignored_user_list": {"ignored_users": {"@troll:example.org": {}}}},
                "rooms": {"!a:example.org": {"m.tag": {"tags": {"m.favourite": {"order": 0.5}}}}}}}"#,
        ))
        .mount(&m.server)
        .await;
    let token = format!("puppet-{localpart}");
    let bearer = format!("Bearer {token}");
    Mock::given(method("POST"))
        .and(path(format!("{user}/login")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": token})))
        .expect(1)
        .named(format!("login as {id}"))
        .mount(&m.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/logout"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .named(format!("logout of {id}"))
        .mount(&m.server)
        .await;
    as_user(m, &bearer, sessions).await;
}

/// A locked user: the admin API answers, and no token is made for them
/// (the server refuses a locked user's token).
async fn locked(m: &MockSynapse, id: &str) {
    mount_get(
        m,
        &user_path(id),
        json!({"name": id, "deactivated": false, "locked": true}),
    )
    .await;
    let user = format!("/_synapse/admin/v1/users/{}", enc(id));
    mount_get(
        m,
        &format!("{user}/memberships"),
        json!({"memberships": {"!l:example.org": "join"}}),
    )
    .await;
    mount_get(
        m,
        &format!("{user}/accountdata"),
        json!({"account_data": {"global": {}, "rooms": {}}}),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("{user}/login")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&m.server)
        .await;
}

/// The client-server API as the user with `bearer`: push rules and backup.
async fn as_user(m: &MockSynapse, bearer: &str, sessions: usize) {
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/pushrules/"))
        .and(header("authorization", bearer))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"global": {
            "override": [
                {"rule_id": ".m.rule.master", "default": true, "enabled": false, "actions": []},
                {"rule_id": "mute-a", "default": false, "enabled": true, "actions": [],
                 "conditions": [{"kind": "event_match", "key": "room_id", "pattern": "!a:example.org"}]}],
            "underride": [{"rule_id": ".m.rule.message", "default": true, "enabled": true,
                           "actions": ["notify", {"set_tweak": "sound", "value": "ping"}]}]}})))
        .mount(&m.server)
        .await;
    let version = Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/room_keys/version"))
        .and(header("authorization", bearer));
    if sessions == 0 {
        version
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "No backup found"})),
            )
            .mount(&m.server)
            .await;
        return;
    }
    version
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": "pk", "signatures": {}},
            "count": sessions, "etag": "1", "version": "3"})))
        .mount(&m.server)
        .await;
    let rooms: Vec<String> = (0..2)
        .map(|r| {
            let s: Vec<String> = (0..sessions)
                .filter(|n| n % 2 == r)
                .map(|n| format!(r#""s{n}": {}"#, session_json(n)))
                .collect();
            format!(
                r#""!r{r}:example.org": {{"sessions": {{{}}}}}"#,
                s.join(",")
            )
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/room_keys/keys"))
        .and(query_param("version", "3"))
        .and(header("authorization", bearer))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(format!(r#"{{"rooms": {{{}}}}}"#, rooms.join(","))),
        )
        .mount(&m.server)
        .await;
}

#[tokio::test]
async fn snapshot_reads_users_into_a_private_file_and_names_those_left_out() {
    let m = server().await;
    readable(&m, "alice", 5).await;
    readable(&m, "bob", 0).await;
    m.user("@ghost:example.org", State::Missing).await;
    locked(&m, "@locky:example.org").await;
    m.user("@dead:example.org", State::Deactivated).await;
    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id\nalice\n@bob:example.org\n@ghost:example.org\n@dead:example.org\n\
         @carol:elsewhere.org\nnot a user\nalice\nlocky\n",
    );
    let out = run(snapshot(&w, &m.url(), Some("in.csv"), &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    for named in [
        "not found on the server: 1\n    @ghost:example.org",
        "deactivated already (nothing left to keep): 1\n    @dead:example.org",
        "not of this server: 1\n    @carol:elsewhere.org",
        "not a user ID: 1\n    line 7",
        "users: 3 · with a key backup: 1 · backup sessions: 5",
        "without push rules and key backup, locked",
        "    @locky:example.org\n",
        "--restore-from before.snap",
    ] {
        assert!(err.contains(named), "{named:?} in:\n{err}");
    }
    assert!(
        !err.contains("puppet-"),
        "a user's token in the output:\n{err}"
    );
    assert_eq!(
        files(&w),
        BTreeSet::from(["in.csv".into(), "before.snap".into()])
    );
    assert_eq!(mode_of(&w.path("before.snap")) & 0o777, 0o600);

    let r = SnapshotReader::open(&w.path("before.snap")).unwrap();
    assert_eq!(r.server_name(), "example.org");
    assert!(image(&r, "@ghost:example.org").is_none());
    assert!(image(&r, "@dead:example.org").is_none());
    assert_alice(&r);
    let l = image(&r, "@locky:example.org").expect("what the admin API gives of a locked user");
    assert_eq!(l.rooms, ["!l:example.org"]);
    assert!(l.push_rules.custom.is_empty() && l.backup.is_none());
    let b = image(&r, "@bob:example.org").expect("bob is in the snapshot");
    assert!(b.backup.is_none());
    assert_eq!(b.push_rules.custom.len(), 1);
}

/// Everything the mock gave of alice, item by item, in the snapshot.
fn assert_alice(r: &SnapshotReader) {
    let a = image(r, "@alice:example.org").expect("alice is in the snapshot");
    assert_eq!(a.threepids.len(), 1);
    assert_eq!(
        (
            a.threepids[0].medium.as_str(),
            a.threepids[0].address.as_str(),
            a.threepids[0].validated_at
        ),
        ("email", "alice@example.org", Some(1))
    );
    assert_eq!(a.profile.displayname.as_deref(), Some("alice ✓"));
    assert_eq!(
        a.profile.avatar_url.as_deref(),
        Some("mxc://example.org/av")
    );
    assert_eq!(a.rooms, ["!a:example.org"], "joined rooms only");
    let data: Vec<(Option<&str>, &str, Value)> = a
        .account_data
        .iter()
        .map(|d| {
            (
                d.room_id.as_deref(),
                d.kind.as_str(),
                serde_json::from_str(d.content.get()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        data,
        [
            (
                None,
                "m.direct",
                json!({"@b:example.org": ["!a:example.org"]})
            ),
            (
                None,
                "m.ignored_user_list",
                json!({"ignored_users": {"@troll:example.org": {}}})
            ),
            (
                Some("!a:example.org"),
                "m.tag",
                json!({"tags": {"m.favourite": {"order": 0.5}}})
            ),
        ]
    );
    let custom: Vec<(&str, &str, bool)> = a
        .push_rules
        .custom
        .iter()
        .map(|c| (c.kind.as_str(), c.rule_id.as_str(), c.enabled))
        .collect();
    assert_eq!(custom, [("override", "mute-a", true)]);
    let defaults: Vec<(&str, Option<bool>)> = a
        .push_rules
        .defaults
        .iter()
        .map(|d| (d.rule_id.as_str(), d.enabled))
        .collect();
    assert_eq!(
        defaults,
        [
            (".m.rule.master", Some(false)),
            (".m.rule.message", Some(true))
        ]
    );
    let backup = a.backup.expect("alice's backup");
    assert_eq!((backup.version.as_str(), backup.sessions), ("3", 5));
    assert_eq!(
        serde_json::from_str::<Value>(backup.auth_data.get()).unwrap(),
        json!({"public_key": "pk", "signatures": {}})
    );
    let sessions = sessions_of(r, "@alice:example.org", "3");
    assert_eq!(sessions.len(), 5);
    let s3 = &sessions[&("!r1:example.org".to_owned(), "s3".to_owned())];
    assert_eq!(
        (s3.first_message_index, s3.forwarded_count, s3.is_verified),
        (3, 1, false)
    );
    assert_eq!(
        s3.session_data.get(),
        r#"{"ephemeral": "e3", "ciphertext": "c3", "mac": "m3"}"#,
        "byte for byte"
    );
}

#[tokio::test]
async fn snapshot_never_overwrites_a_file_and_asks_nothing_then() {
    let m = server().await;
    let w = Workdir::new();
    w.write("in.csv", "@alice:example.org\n");
    w.write("before.snap", "keep me");
    let out = run(snapshot(&w, &m.url(), Some("in.csv"), &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--output before.snap") && err.contains("exists"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(w.path("before.snap")).unwrap(),
        "keep me"
    );
    let asked = m.server.received_requests().await.unwrap_or_default();
    assert!(asked.is_empty(), "{} requests", asked.len());
}

#[tokio::test]
async fn snapshot_leaves_no_file_when_the_token_is_refused_midway() {
    let m = server().await;
    readable(&m, "alice", 3).await;
    Mock::given(method("GET"))
        .and(path(user_path("@bob:example.org")))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
        ))
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "@alice:example.org\n@bob:example.org\n");
    let out = run(snapshot(
        &w,
        &m.url(),
        Some("in.csv"),
        &["--concurrency", "1"],
    ))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No snapshot was written"), "{err}");
    assert_eq!(
        files(&w),
        BTreeSet::from(["in.csv".into()]),
        "no file, no temporary file"
    );
}

#[tokio::test]
async fn snapshot_of_every_active_user_reads_the_admin_with_the_admins_own_token() {
    let m = server().await;
    readable(&m, "alice", 2).await;
    let admin = "@admin:example.org";
    let listed = |name: &str| json!({"name": name, "deactivated": false, "locked": false});
    for (from, users, next) in [
        (None, vec![listed(admin)], Some("1")),
        (Some("1"), vec![listed("@alice:example.org")], None),
    ] {
        let mut body = json!({"users": users, "total": 2});
        if let Some(n) = next {
            body["next_token"] = json!(n);
        }
        let mock = Mock::given(method("GET"))
            .and(path("/_synapse/admin/v3/users"))
            .and(query_param("deactivated", "false"))
            .and(query_param("locked", "true"))
            .and(query_param("guests", "false"))
            .and(query_param("order_by", "name"));
        let mock = match from {
            None => mock.and(wiremock::matchers::query_param_is_missing("from")),
            Some(f) => mock.and(query_param("from", f)),
        };
        mock.respond_with(ResponseTemplate::new(200).set_body_json(body))
            .expect(1)
            .mount(&m.server)
            .await;
    }
    mount_get(
        &m,
        &format!("/_synapse/admin/v1/users/{}/accountdata", enc(admin)),
        json!({"account_data": {"global": {}, "rooms": {}}}),
    )
    .await;
    as_user(&m, &format!("Bearer {TOKEN}"), 0).await;
    // The admin cannot act as themselves, and their token must survive.
    Mock::given(method("POST"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/login",
            enc(admin)
        )))
        .respond_with(ResponseTemplate::new(400))
        .expect(0)
        .mount(&m.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_matrix/client/v3/logout"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    let out = run(snapshot(&w, &m.url(), None, &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("users: 2 · with a key backup: 1 · backup sessions: 2"),
        "{err}"
    );
    assert!(
        err.contains("USERS.csv -o results.csv --restore-from before.snap"),
        "{err}"
    );
    let r = SnapshotReader::open(&w.path("before.snap")).unwrap();
    let a = image(&r, admin).expect("the admin is in the snapshot");
    assert_eq!(a.push_rules.custom.len(), 1, "read with the admin's token");
    assert!(image(&r, "@alice:example.org").is_some());
}

#[tokio::test]
async fn snapshot_interrupted_leaves_no_file_and_exits_130() {
    let m = server().await;
    let mut input = String::new();
    for n in 0..40 {
        let id = format!("@slow{n}:example.org");
        Mock::given(method("GET"))
            .and(path(user_path(&id)))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "User not found"}))
                    .set_delay(Duration::from_millis(300)),
            )
            .mount(&m.server)
            .await;
        input.push_str(&id);
        input.push('\n');
    }
    let w = Workdir::new();
    w.write("in.csv", &input);
    let child = Command::new(assert_cmd::cargo::cargo_bin("matrix-reactivate"))
        .current_dir(w.dir.path())
        .env_clear()
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .env("NO_PROXY", "*")
        .args([
            "snapshot",
            "-H",
            &m.url(),
            "in.csv",
            "-o",
            "before.snap",
            "--no-progress",
        ])
        .args(["--concurrency", "1", "--rate", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it reads users (past the preflight, however slow the machine).
    for _ in 0..200 {
        let asked = m.server.received_requests().await.unwrap_or_default();
        if asked.iter().any(|r| r.url.path().contains("%40slow")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("Interrupted after"), "{err}");
    assert_eq!(
        files(&w),
        BTreeSet::from(["in.csv".into()]),
        "no file, no temporary file"
    );
}

// ---------------------------------------------------------------- MAS

#[tokio::test]
async fn snapshot_on_mas_keeps_mas_emails_and_revokes_every_session() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "pw-alice", false).await;
    world.user("dan", "pw-dan", true).await;
    let alice = world.mas.user("alice").unwrap().id;
    // An e-mail MAS holds (Synapse's copy follows MAS's; the mock does not).
    {
        let c = reqwest::Client::new();
        let grant: Value = c
            .post(format!("{}/oauth2/token", world.mas.url()))
            .basic_auth(world.mas.client_id(), Some(world.mas.client_secret()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "urn:mas:admin"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = c
            .post(format!("{}/api/admin/v1/user-emails", world.mas.url()))
            .bearer_auth(grant["access_token"].as_str().unwrap())
            .json(&json!({"user_id": alice, "email": "alice@mas.example.org"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let synapse = MockSynapse {
        server: world.synapse,
    };
    for who in ["admin", "alice"] {
        let user = format!("/_synapse/admin/v1/users/{}", enc(&mas_id(who)));
        mount_get(
            &synapse,
            &format!("{user}/memberships"),
            json!({"memberships": {"!a:example.org": "join"}}),
        )
        .await;
        mount_get(
            &synapse,
            &format!("{user}/accountdata"),
            json!({"account_data": {"global": {"m.direct": {}}, "rooms": {}}}),
        )
        .await;
    }
    // The mock cannot introspect: it answers any personal access token.
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/pushrules/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"global": {"override": []}})))
        .mount(&synapse.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/room_keys/version"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "No backup found"})),
        )
        .mount(&synapse.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\ndan\nadmin\n");
    let mut c = snapshot(&w, &synapse.url(), Some("in.csv"), &[]);
    c.env("MAS_CLIENT_ID", world.mas.client_id())
        .env("MAS_CLIENT_SECRET", world.mas.client_secret());
    let out = run(c).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("deactivated already (nothing left to keep): 1\n    @dan:example.org"),
        "{err}"
    );
    let r = SnapshotReader::open(&w.path("before.snap")).unwrap();
    let a = image(&r, &mas_id("alice")).expect("alice");
    let emails: Vec<(&str, &str)> = a
        .threepids
        .iter()
        .map(|t| (t.medium.as_str(), t.address.as_str()))
        .collect();
    assert_eq!(emails, [("email", "alice@mas.example.org")]);
    assert_eq!(a.rooms, ["!a:example.org"]);
    assert!(image(&r, &mas_id("admin")).is_some());
    let sessions = world.mas.personal_sessions();
    assert_eq!(
        sessions.len(),
        1,
        "one for alice, none for the admin: {sessions:?}"
    );
    assert_eq!(sessions[0].actor, "alice");
    assert_eq!(sessions[0].scope, "urn:matrix:client:api:*");
    assert!(sessions[0].revoked, "{sessions:?}");
}

// ---------------------------------------------------------------- a real Synapse

#[tokio::test]
async fn snapshot_real_synapse_keeps_every_item_and_leaves_no_token() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let rich = rich_user(&s, &format!("snap{t}"), 250).await;
    let token = s.login(&rich.id, &rich.password).await;
    let before = Image::read(&s, &rich.id, &token, None).await;
    before.assert_rich(&rich.id, 250);
    let gone = s.id(&format!("snapgone{t}"));
    s.create(&gone, "pw-gone-1234").await;
    s.deactivate(&gone, false).await;
    let admin_id = s
        .request(
            None,
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
        )
        .await
        .1["user_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let w = Workdir::new();
    w.write(
        "in.csv",
        format!("{}\n{gone}\nsnapnobody{t}\n{admin_id}\n", rich.id),
    );
    let mut c = w.cmd();
    c.env("MATRIX_ADMIN_TOKEN", &s.token)
        .args([
            "snapshot",
            "-H",
            &s.url,
            "in.csv",
            "-o",
            "before.snap",
            "--no-progress",
        ])
        .args(["--server-name", &s.server_name]);
    let out = run(c).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "deactivated already (nothing left to keep): 1\n    {gone}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("not found on the server: 1\n    @snapnobody{t}:")),
        "{err}"
    );
    assert!(err.contains("users: 2"), "{err}");
    assert_eq!(mode_of(&w.path("before.snap")) & 0o777, 0o600);

    // No token acting as the user is left, and the admin's still works.
    let left = puppet_tokens_sqlite(&sqlite_path(), std::slice::from_ref(&rich.id));
    assert!(left.is_empty(), "puppet tokens left: {left:?}");
    let (status, _) = s
        .request(
            None,
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            None,
        )
        .await;
    assert_eq!(status, 200, "the admin's token was not logged out");

    let r = SnapshotReader::open(&w.path("before.snap")).unwrap();
    assert_eq!(r.server_name(), s.server_name);
    assert!(image(&r, &admin_id).is_some());
    let snap = image(&r, &rich.id).expect("the rich user is in the snapshot");
    compare(&snap, &before, &r, &rich.id);
}

/// Every item of the snapshot against the account as the server shows it.
fn compare(snap: &BeforeImage, before: &Image, r: &SnapshotReader, who: &str) {
    let threepids: BTreeSet<(String, String)> = snap
        .threepids
        .iter()
        .map(|t| (t.medium.clone(), t.address.clone()))
        .collect();
    assert_eq!(threepids, before.threepids);
    assert_eq!(snap.profile.displayname, before.displayname);
    assert_eq!(snap.profile.avatar_url, before.avatar_url);
    let rooms: BTreeSet<String> = snap.rooms.iter().cloned().collect();
    assert_eq!(rooms, before.joined);
    let value =
        |raw: &serde_json::value::RawValue| -> Value { serde_json::from_str(raw.get()).unwrap() };
    let mut global = BTreeMap::new();
    let mut per_room: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for d in &snap.account_data {
        match &d.room_id {
            None => {
                global.insert(d.kind.clone(), value(&d.content));
            }
            Some(room) => {
                per_room
                    .entry(room.clone())
                    .or_default()
                    .insert(d.kind.clone(), value(&d.content));
            }
        }
    }
    assert_eq!(global, before.global, "global account data");
    assert_eq!(per_room, before.rooms, "room account data");

    // Push rules: the user's own in the server's order, every default's state.
    let mut own = Vec::new();
    let mut defaults = Vec::new();
    for kind in matrix_reactivate::source::PUSH_RULE_KINDS {
        for rule in before.push_rules[kind].as_array().into_iter().flatten() {
            if rule["default"] == true {
                defaults.push((
                    rule["rule_id"].clone(),
                    rule["enabled"].clone(),
                    rule["actions"].clone(),
                ));
            } else {
                own.push((
                    kind.to_owned(),
                    rule["rule_id"].clone(),
                    rule["enabled"].clone(),
                    rule["actions"].clone(),
                ));
            }
        }
    }
    let snap_own: Vec<(String, Value, Value, Value)> = snap
        .push_rules
        .custom
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                json!(c.rule_id),
                json!(c.enabled),
                value(&c.actions),
            )
        })
        .collect();
    assert_eq!(snap_own, own, "custom push rules");
    assert!(!own.is_empty());
    let snap_defaults: Vec<(Value, Value, Value)> = snap
        .push_rules
        .defaults
        .iter()
        .map(|d| {
            (
                json!(d.rule_id),
                json!(d.enabled),
                d.actions.as_deref().map(value).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(snap_defaults, defaults, "default push rules");

    // The backup: its version, and every session byte for byte as JSON.
    let b = before.backup.as_ref().expect("a backup before");
    let sb = snap.backup.as_ref().expect("a backup in the snapshot");
    assert_eq!(sb.algorithm, b.algorithm);
    assert_eq!(value(&sb.auth_data), b.auth_data);
    assert_eq!(sb.sessions, b.count);
    let sessions = sessions_of(r, who, &sb.version);
    assert_eq!(sessions.len() as u64, b.count);
    for ((room, id), s) in &sessions {
        let server = &b.keys["rooms"][room]["sessions"][id];
        assert_eq!(
            json!({"first_message_index": s.first_message_index, "forwarded_count": s.forwarded_count,
                   "is_verified": s.is_verified, "session_data": value(&s.session_data)}),
            *server,
            "{room} {id}"
        );
    }
}
