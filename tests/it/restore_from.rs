//! `--restore-from` on a mock server: every item given back as the user, never
//! clobbering what the account has, the row and summary counts, dry runs, and
//! the sources refused before any user is touched.

use serde_json::json;
use serde_json::value::RawValue;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use matrix_reactivate::source::snapshot::SnapshotWriter;
use matrix_reactivate::source::{
    AccountData, Backup, BackupSession, BeforeImage, CustomRule, DefaultRule, Profile, PushRules,
    Threepid,
};
use matrix_reactivate::user_id::UserId;

use crate::support::mock_synapse::{enc, ok, user_path, MockSynapse, State};
use crate::support::workdir::*;

const ANN: &str = "@ann:example.org";
const PUPPET: &str = "puppet-token-of-ann";
const ROOM: &str = "!room:example.org";
const BACKUP_KEYS: usize = 2_500;

fn raw(v: serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

/// Ann's account before the mistake: one of everything, and a backup of
/// 2,500 sessions in three rooms (three upload pages).
fn ann_before() -> BeforeImage {
    BeforeImage {
        threepids: vec![Threepid {
            medium: "email".into(),
            address: "ann@example.org".into(),
            validated_at: Some(1),
            added_at: Some(1),
        }],
        profile: Profile {
            displayname: Some("Ann".into()),
            avatar_url: Some("mxc://example.org/ann".into()),
        },
        rooms: vec![ROOM.into()],
        account_data: vec![
            AccountData {
                room_id: None,
                kind: "m.direct".into(),
                content: raw(json!({"@bob:example.org": ["!dm:example.org"]})),
            },
            AccountData {
                room_id: Some(ROOM.into()),
                kind: "m.tag".into(),
                content: raw(json!({"tags": {"m.favourite": {"order": 0.5}}})),
            },
        ],
        push_rules: PushRules {
            custom: vec![CustomRule {
                kind: "content".into(),
                rule_id: "cake".into(),
                pattern: Some("cake".into()),
                conditions: None,
                actions: raw(json!(["notify"])),
                enabled: true,
            }],
            defaults: vec![DefaultRule {
                kind: "override".into(),
                rule_id: ".m.rule.contains_display_name".into(),
                enabled: Some(false),
                actions: None,
            }],
        },
        backup: Some(Backup {
            version: "7".into(),
            algorithm: "m.megolm_backup.v1.curve25519-aes-sha2".into(),
            auth_data: raw(json!({"public_key": "pk", "signatures": {}})),
            sessions: BACKUP_KEYS as u64,
        }),
    }
}

fn sessions() -> Vec<BackupSession> {
    (0..BACKUP_KEYS)
        .map(|i| BackupSession {
            room_id: format!("!r{}:example.org", i % 3),
            session_id: format!("s{i:05}"),
            first_message_index: 0,
            forwarded_count: 0,
            is_verified: true,
            session_data: raw(json!({"ciphertext": format!("c{i}"), "mac": "m", "ephemeral": "e"})),
        })
        .collect()
}

fn snapshot(w: &Workdir, server: &str, users: &[(&str, BeforeImage)]) -> String {
    let file = w.path("before.snap");
    let mut writer = SnapshotWriter::create(&file, server).unwrap();
    for (id, image) in users {
        let user = UserId::parse(id).unwrap();
        writer.add_user(&user, image).unwrap();
        if image.backup.is_some() {
            writer.add_sessions(&user, &sessions()).unwrap();
        }
    }
    writer.finish().unwrap();
    file.to_string_lossy().into_owned()
}

/// The default rules as Synapse lists them, trimmed to those the tests touch.
fn push_rules_now(custom_content: serde_json::Value) -> serde_json::Value {
    json!({"global": {
        "override": [
            {"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
            {"rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
             "conditions": [{"kind": "contains_display_name"}], "actions": ["notify"]}
        ],
        "content": custom_content,
        "room": [], "sender": [],
        "underride": [
            {"rule_id": ".m.rule.message", "default": true, "enabled": true,
             "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
             "actions": ["notify"]}
        ]
    }})
}

/// Mounts what the server says of Ann after her reactivation, and counts
/// the calls made as her.
struct Ann<'a> {
    m: &'a MockSynapse,
}

impl Ann<'_> {
    async fn get(&self, p: String, body: serde_json::Value) {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.m.server)
            .await;
    }

    /// Mounts a request as Ann that must be made `times` times.
    async fn expect_as_ann(&self, verb: &str, p: String, times: u64, resp: ResponseTemplate) {
        Mock::given(method(verb))
            .and(path(p.clone()))
            .and(header("authorization", format!("Bearer {PUPPET}").as_str()))
            .respond_with(resp)
            .expect(times)
            .named(format!("{verb} {p} as Ann"))
            .mount(&self.m.server)
            .await;
    }

    async fn login_and_logout(&self, times: u64) {
        Mock::given(method("POST"))
            .and(path(format!("/_synapse/admin/v1/users/{}/login", enc(ANN))))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": PUPPET})))
            .expect(times)
            .named("puppet login")
            .mount(&self.m.server)
            .await;
        self.expect_as_ann(
            "POST",
            "/_matrix/client/v3/logout".into(),
            times,
            ResponseTemplate::new(200).set_body_json(json!({})),
        )
        .await;
    }
}

fn put_bodies_with(requests: &[wiremock::Request], p: &str) -> Vec<serde_json::Value> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "PUT" && r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn restore_from_a_snapshot_gives_back_every_item_as_the_user() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    let snap = snapshot(&w, "example.org", &[(ANN, ann_before())]);
    m.user(ANN, State::Deactivated).await;
    // Reactivation, then the profile, then the e-mails: three PUTs of the admin.
    m.allow_put(ANN, 3, ok()).await;
    let ann = Ann { m: &m };
    ann.login_and_logout(1).await;
    ann.get(
        format!("/_synapse/admin/v1/users/{}/accountdata", enc(ANN)),
        json!({"account_data": {"global": {}, "rooms": {}}}),
    )
    .await;
    ann.get(
        format!("/_synapse/admin/v1/users/{}/memberships", enc(ANN)),
        json!({"memberships": {}}),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/_synapse/admin/v1/join/{}", enc(ROOM))))
        .and(body_json(json!({"user_id": ANN})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"room_id": ROOM})))
        .expect(1)
        .mount(&m.server)
        .await;
    ann.get(
        "/_matrix/client/v3/pushrules/".into(),
        push_rules_now(json!([])),
    )
    .await;
    let ok_empty = || ResponseTemplate::new(200).set_body_json(json!({}));
    ann.expect_as_ann(
        "PUT",
        format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(ANN)),
        1,
        ok_empty(),
    )
    .await;
    ann.expect_as_ann(
        "PUT",
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag",
            enc(ANN),
            enc(ROOM)
        ),
        1,
        ok_empty(),
    )
    .await;
    ann.expect_as_ann(
        "PUT",
        "/_matrix/client/v3/pushrules/global/content/cake".into(),
        1,
        ok_empty(),
    )
    .await;
    ann.expect_as_ann(
        "PUT",
        "/_matrix/client/v3/pushrules/global/override/.m.rule.contains_display_name/enabled".into(),
        1,
        ok_empty(),
    )
    .await;
    ann.expect_as_ann(
        "GET",
        "/_matrix/client/v3/room_keys/version".into(),
        1,
        ResponseTemplate::new(404)
            .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "No backup found"})),
    )
    .await;
    ann.expect_as_ann(
        "POST",
        "/_matrix/client/v3/room_keys/version".into(),
        1,
        ResponseTemplate::new(200).set_body_json(json!({"version": "1"})),
    )
    .await;
    Mock::given(method("PUT"))
        .and(path("/_matrix/client/v3/room_keys/keys"))
        .and(query_param("version", "1"))
        .and(header("authorization", format!("Bearer {PUPPET}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"etag": "1", "count": BACKUP_KEYS})),
        )
        .expect(3)
        .mount(&m.server)
        .await;

    w.write("in.csv", format!("{ANN}\n"));
    let out = run(w.reactivate(&m.url(), &["--restore-from", &snap])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows[0].status, "reactivated");
    assert_eq!(
        rows[0].restored,
        "emails:1;profile:1;rooms:1;account_data:1;room_account_data:1;push_rules:2;backup_keys:2500",
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[0].error, "", "{:?}", rows[0]);

    let requests = m.server.received_requests().await.unwrap();
    let admin_puts = put_bodies_with(&requests, &user_path(ANN));
    assert_eq!(admin_puts.len(), 3, "{admin_puts:?}");
    assert_eq!(
        admin_puts[0]["deactivated"], false,
        "the reactivation first"
    );
    assert!(
        admin_puts.contains(&json!({"displayname": "Ann", "avatar_url": "mxc://example.org/ann"})),
        "{admin_puts:?}"
    );
    assert!(
        admin_puts
            .contains(&json!({"threepids": [{"medium": "email", "address": "ann@example.org"}]})),
        "{admin_puts:?}"
    );
    let backup: Vec<&wiremock::Request> = requests
        .iter()
        .filter(|r| {
            r.url.path() == "/_matrix/client/v3/room_keys/version" && r.method.as_str() == "POST"
        })
        .collect();
    let created: serde_json::Value = serde_json::from_slice(&backup[0].body).unwrap();
    assert_eq!(
        created,
        json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
               "auth_data": {"public_key": "pk", "signatures": {}}})
    );
    // Every session once, byte for byte.
    let mut uploaded = std::collections::BTreeMap::new();
    for body in put_bodies_with(&requests, "/_matrix/client/v3/room_keys/keys") {
        for (room, r) in body["rooms"].as_object().unwrap() {
            for (id, s) in r["sessions"].as_object().unwrap() {
                assert!(uploaded
                    .insert((room.clone(), id.clone()), s.clone())
                    .is_none());
            }
        }
    }
    assert_eq!(uploaded.len(), BACKUP_KEYS);
    let s = &uploaded[&("!r1:example.org".to_owned(), "s00001".to_owned())];
    assert_eq!(s["session_data"]["ciphertext"], "c1");
    assert_eq!(s["is_verified"], true);
    let rule = put_bodies_with(
        &requests,
        "/_matrix/client/v3/pushrules/global/content/cake",
    );
    assert_eq!(rule[0], json!({"actions": ["notify"], "pattern": "cake"}));
}

#[tokio::test]
async fn never_clobber_what_the_account_has_and_say_so() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    let mut before = ann_before();
    before.threepids.clear();
    before.rooms.clear();
    before.profile = Profile::default();
    let snap = snapshot(&w, "example.org", &[(ANN, before)]);
    m.user(ANN, State::Deactivated).await;
    m.allow_put(ANN, 1, ok()).await;
    let ann = Ann { m: &m };
    ann.login_and_logout(1).await;
    // The account already has its own DM list, tag, keyword rule and backup.
    ann.get(
        format!("/_synapse/admin/v1/users/{}/accountdata", enc(ANN)),
        json!({"account_data": {
            "global": {"m.direct": {"@carol:example.org": ["!new:example.org"]}},
            "rooms": {ROOM: {"m.tag": {"tags": {"m.favourite": {"order": 0.5}}}}}
        }}),
    )
    .await;
    ann.get(
        "/_matrix/client/v3/pushrules/".into(),
        push_rules_now(
            json!([{"rule_id": "cake", "default": false, "enabled": true,
                               "pattern": "cake", "actions": ["dont_notify"]}]),
        ),
    )
    .await;
    ann.expect_as_ann(
        "PUT",
        "/_matrix/client/v3/pushrules/global/override/.m.rule.contains_display_name/enabled".into(),
        1,
        ResponseTemplate::new(200).set_body_json(json!({})),
    )
    .await;
    ann.expect_as_ann(
        "GET",
        "/_matrix/client/v3/room_keys/version".into(),
        1,
        ResponseTemplate::new(200).set_body_json(json!({
            "version": "4", "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
            "auth_data": {"public_key": "a-new-key"}, "count": 3, "etag": "x"})),
    )
    .await;
    // Nothing of that may be written: no account data, no rule, no backup.
    for (verb, p) in [
        (
            "PUT",
            format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(ANN)),
        ),
        (
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/cake".into(),
        ),
        ("POST", "/_matrix/client/v3/room_keys/version".into()),
        ("PUT", "/_matrix/client/v3/room_keys/keys".into()),
    ] {
        Mock::given(method(verb))
            .and(path(p.clone()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(0)
            .named(format!("clobbering {verb} {p}"))
            .mount(&m.server)
            .await;
    }
    Mock::given(method("PUT"))
        .and(path(format!(
            "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag",
            enc(ANN),
            enc(ROOM)
        )))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .named("tag already as the source has it")
        .mount(&m.server)
        .await;

    w.write("in.csv", format!("{ANN}\n"));
    let out = run(w.reactivate(&m.url(), &["--restore-from", &snap])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "kept items need no action: {}",
        stderr(&out)
    );
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    assert_eq!(
        row.restored, "room_account_data:1;push_rules:1",
        "the tag is already as it was; the default rule is given back: {row:?}"
    );
    for kept in ["m.direct", "content/cake", "version 4"] {
        assert!(row.error.contains(kept), "{kept} in {:?}", row.error);
    }
    assert!(
        row.error.split("; ").all(|p| p.starts_with("kept: ")),
        "{:?}",
        row.error
    );
}

#[tokio::test]
async fn a_user_the_source_does_not_hold_is_reactivated_and_the_row_says_so() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    let snap = snapshot(&w, "example.org", &[(ANN, ann_before())]);
    m.user("@bea:example.org", State::Deactivated).await;
    m.allow_put("@bea:example.org", 1, ok()).await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/login",
            enc("@bea:example.org")
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "x"})))
        .expect(0)
        .mount(&m.server)
        .await;
    w.write("in.csv", "@bea:example.org\n");
    let out = run(w.reactivate(&m.url(), &["--restore-from", &snap])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    assert_eq!(row.error, "not in the source");
    assert_eq!(row.restored, "");
}

#[tokio::test]
async fn a_dry_run_lists_what_would_come_back_and_acts_as_nobody() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    let snap = snapshot(&w, "example.org", &[(ANN, ann_before())]);
    m.user(ANN, State::Deactivated).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("any POST in a dry run")
        .mount(&m.server)
        .await;
    w.write("in.csv", format!("{ANN}\n"));
    let out = run(w.reactivate(&m.url(), &["--restore-from", &snap, "--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "would_reactivate");
    assert_eq!(
        row.restored,
        "emails:1;profile:1;rooms:1;account_data:1;room_account_data:1;push_rules:1;backup_keys:2500"
    );
    assert_eq!(row.rooms_rejoined, ROOM);
}

#[tokio::test]
async fn sources_that_cannot_serve_are_refused_before_any_user_is_touched() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    w.write("in.csv", format!("{ANN}\n"));
    // No GET of any user may happen: the mock has none mounted, and the
    // results file must not be left behind.
    let other = snapshot(&w, "other.example", &[(ANN, ann_before())]);
    let text = w.write("notes.txt", "these are not the users you are looking for\n");
    let text = text.to_string_lossy().into_owned();
    let missing = w.path("nowhere.db").to_string_lossy().into_owned();
    for (source, says) in [
        (other.as_str(), "other.example"),
        (text.as_str(), "notes.txt"),
        (missing.as_str(), "nowhere.db"),
    ] {
        let out = run(w.reactivate(&m.url(), &["--restore-from", source])).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{source}: {err}");
        assert!(err.contains(says), "{source}: {err}");
        assert!(
            !w.path("out.csv").exists(),
            "{source}: a results file was left"
        );
    }
    let requests = m.server.received_requests().await.unwrap();
    assert!(
        !requests.iter().any(|r| r.url.path() == user_path(ANN)),
        "a user was looked up"
    );
    let out = run(w.reactivate(
        &m.url(),
        &[
            "--restore-from",
            "postgresql://synapse:secret@db.example.org/synapse",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("PGPASSWORD"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("secret"),
        "the password is never repeated"
    );
}

#[tokio::test]
async fn mas_restore_acts_as_the_user_through_a_personal_session_and_gives_emails_to_mas() {
    use crate::support::mas::MasConfig;
    use crate::support::mas_world::{id, MasWorld};

    let world = MasWorld::start(MasConfig::default()).await;
    world.user("olga", "olga-pw", true).await;
    let olga = id("olga");
    let w = Workdir::new();
    let mut before = ann_before();
    // On a MAS server rooms and profile go through Synapse's admin API as on
    // any server; this test is about what goes to MAS and the session.
    before.rooms.clear();
    before.profile = Profile::default();
    before.push_rules = PushRules::default();
    before.threepids.push(Threepid {
        medium: "msisdn".into(),
        address: "447700900123".into(),
        validated_at: None,
        added_at: None,
    });
    let snap = snapshot(&w, "example.org", &[(olga.as_str(), before)]);
    let synapse = &world.synapse;
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/accountdata",
            enc(&olga)
        )))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"account_data": {"global": {}, "rooms": {}}})),
        )
        .mount(synapse)
        .await;
    let ok_empty = || ResponseTemplate::new(200).set_body_json(json!({}));
    let as_olga = [
        (
            "PUT",
            format!(
                "/_matrix/client/v3/user/{}/account_data/m.direct",
                enc(&olga)
            ),
            ok_empty(),
        ),
        (
            "PUT",
            format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag",
                enc(&olga),
                enc(ROOM)
            ),
            ok_empty(),
        ),
        (
            "GET",
            "/_matrix/client/v3/room_keys/version".into(),
            ResponseTemplate::new(404)
                .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "No backup found"})),
        ),
        (
            "POST",
            "/_matrix/client/v3/room_keys/version".into(),
            ResponseTemplate::new(200).set_body_json(json!({"version": "1"})),
        ),
        (
            "PUT",
            "/_matrix/client/v3/room_keys/keys".into(),
            ResponseTemplate::new(200).set_body_json(json!({"etag": "1", "count": 1})),
        ),
    ];
    for (verb, p, resp) in as_olga {
        Mock::given(method(verb))
            .and(path(p))
            .respond_with(resp)
            .mount(synapse)
            .await;
    }
    w.write("in.csv", "olga\n");
    let out = run(world.tool(&w, &["--restore-from", &snap])).await;
    // A phone number cannot go to MAS: the row says so and needs attention.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated", "{row:?}");
    assert_eq!(
        row.restored, "emails:1;account_data:1;room_account_data:1;backup_keys:2500",
        "{row:?}"
    );
    assert!(row.error.contains("phone"), "{row:?}");
    let mas_user = world.mas.user("olga").unwrap();
    assert_eq!(mas_user.emails, vec!["ann@example.org".to_owned()]);
    let sessions = world.mas.personal_sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].actor, "olga");
    assert_eq!(sessions[0].scope, "urn:matrix:client:api:*");
    assert!(sessions[0].revoked && !sessions[0].usable, "{sessions:?}");
    // Everything as the user went with the session's token, not the admin's.
    let requests = synapse.received_requests().await.unwrap();
    let client: Vec<&wiremock::Request> = requests
        .iter()
        .filter(|r| {
            r.url.path().starts_with("/_matrix/client/v3/") && !r.url.path().ends_with("/whoami")
        })
        .collect();
    assert_eq!(
        client.len(),
        7,
        "2 account data, version read and made, 3 uploads"
    );
    for r in client {
        let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
        assert_ne!(auth, format!("Bearer {TOKEN}"), "{} as the admin", r.url);
    }
}
