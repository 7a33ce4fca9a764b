//! The Synapse reader on databases built with Synapse's own table definitions
//! (`synapse/storage/schema/main/full_schemas/72/` and the deltas after it
//! that change the tables read), filled with rows as Synapse writes them.

use std::path::Path;

use rusqlite::Connection;

use super::*;

/// Synapse's SQLite tables, as schema 94 has them.
pub(super) const SQLITE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version( Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, version INTEGER NOT NULL, upgraded BOOL NOT NULL, CHECK (Lock='X') );
CREATE TABLE users( name TEXT, password_hash TEXT, creation_ts BIGINT, admin SMALLINT DEFAULT 0 NOT NULL, upgrade_ts BIGINT, is_guest SMALLINT DEFAULT 0 NOT NULL, appservice_id TEXT, consent_version TEXT, consent_server_notice_sent TEXT, user_type TEXT DEFAULT NULL, deactivated SMALLINT DEFAULT 0 NOT NULL, shadow_banned BOOLEAN, consent_ts bigint, UNIQUE(name) );
ALTER TABLE users ADD COLUMN approved BOOLEAN;
ALTER TABLE users ADD locked BOOLEAN DEFAULT FALSE NOT NULL;
ALTER TABLE users ADD COLUMN suspended BOOLEAN DEFAULT FALSE NOT NULL;
CREATE TABLE profiles ( full_user_id text NOT NULL, user_id text, displayname text, avatar_url text, UNIQUE (full_user_id), UNIQUE (user_id) );
ALTER TABLE profiles ADD COLUMN fields JSONB;
CREATE TABLE IF NOT EXISTS "user_threepids" ( user_id TEXT NOT NULL, medium TEXT NOT NULL, address TEXT NOT NULL, validated_at BIGINT NOT NULL, added_at BIGINT NOT NULL, CONSTRAINT medium_address UNIQUE (medium, address) );
CREATE INDEX user_threepids_user_id ON user_threepids(user_id);
CREATE TABLE local_current_membership ( room_id TEXT NOT NULL, user_id TEXT NOT NULL, event_id TEXT NOT NULL, membership TEXT NOT NULL );
ALTER TABLE local_current_membership ADD COLUMN event_stream_ordering BIGINT;
CREATE UNIQUE INDEX local_current_membership_idx ON local_current_membership(user_id, room_id);
CREATE TABLE account_data( user_id TEXT NOT NULL, account_data_type TEXT NOT NULL, stream_id BIGINT NOT NULL, content TEXT NOT NULL, instance_name TEXT, CONSTRAINT account_data_uniqueness UNIQUE (user_id, account_data_type) );
CREATE TABLE room_account_data( user_id TEXT NOT NULL, room_id TEXT NOT NULL, account_data_type TEXT NOT NULL, stream_id BIGINT NOT NULL, content TEXT NOT NULL, instance_name TEXT, CONSTRAINT room_account_data_uniqueness UNIQUE (user_id, room_id, account_data_type) );
CREATE TABLE push_rules ( id BIGINT PRIMARY KEY, user_name TEXT NOT NULL, rule_id TEXT NOT NULL, priority_class SMALLINT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, conditions TEXT NOT NULL, actions TEXT NOT NULL, UNIQUE(user_name, rule_id) );
CREATE TABLE push_rules_enable ( id BIGINT PRIMARY KEY, user_name TEXT NOT NULL, rule_id TEXT NOT NULL, enabled SMALLINT, UNIQUE(user_name, rule_id) );
CREATE TABLE IF NOT EXISTS "e2e_room_keys_versions" ( user_id TEXT NOT NULL, version BIGINT NOT NULL, algorithm TEXT NOT NULL, auth_data TEXT NOT NULL, deleted SMALLINT DEFAULT 0 NOT NULL , etag BIGINT);
CREATE UNIQUE INDEX e2e_room_keys_versions_idx ON e2e_room_keys_versions(user_id, version);
CREATE TABLE IF NOT EXISTS "e2e_room_keys" ( user_id TEXT NOT NULL, room_id TEXT NOT NULL, session_id TEXT NOT NULL, version BIGINT NOT NULL, first_message_index INT, forwarded_count INT, is_verified BOOLEAN, session_data TEXT NOT NULL );
CREATE UNIQUE INDEX e2e_room_keys_with_version_idx ON e2e_room_keys(user_id, version, room_id, session_id);
"#;

/// The same tables in PostgreSQL (`full.sql.postgres` and the deltas).
pub(super) const POSTGRES_SCHEMA: &str = r#"
CREATE TABLE schema_version( Lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE, version INTEGER NOT NULL, upgraded BOOL NOT NULL, CHECK (Lock='X') );
CREATE TABLE users ( name text, password_hash text, creation_ts bigint, admin smallint DEFAULT 0 NOT NULL, upgrade_ts bigint, is_guest smallint DEFAULT 0 NOT NULL, appservice_id text, consent_version text, consent_server_notice_sent text, user_type text, deactivated smallint DEFAULT 0 NOT NULL, shadow_banned boolean, consent_ts bigint );
ALTER TABLE ONLY users ADD CONSTRAINT users_name_key UNIQUE (name);
ALTER TABLE users ADD COLUMN approved BOOLEAN;
ALTER TABLE users ADD locked BOOLEAN DEFAULT FALSE NOT NULL;
ALTER TABLE users ADD COLUMN suspended BOOLEAN DEFAULT FALSE NOT NULL;
CREATE TABLE profiles ( user_id text NOT NULL, displayname text, avatar_url text );
ALTER TABLE ONLY profiles ADD CONSTRAINT profiles_user_id_key UNIQUE (user_id);
ALTER TABLE profiles ADD COLUMN full_user_id TEXT;
ALTER TABLE profiles ADD CONSTRAINT full_user_id_not_null CHECK (full_user_id IS NOT NULL) NOT VALID;
ALTER TABLE profiles ADD COLUMN fields JSONB;
CREATE TABLE user_threepids ( user_id text NOT NULL, medium text NOT NULL, address text NOT NULL, validated_at bigint NOT NULL, added_at bigint NOT NULL );
ALTER TABLE ONLY user_threepids ADD CONSTRAINT medium_address UNIQUE (medium, address);
CREATE TABLE local_current_membership ( room_id text NOT NULL, user_id text NOT NULL, event_id text NOT NULL, membership text NOT NULL );
ALTER TABLE local_current_membership ADD COLUMN event_stream_ordering BIGINT;
CREATE UNIQUE INDEX local_current_membership_idx ON local_current_membership USING btree (user_id, room_id);
CREATE TABLE account_data ( user_id text NOT NULL, account_data_type text NOT NULL, stream_id bigint NOT NULL, content text NOT NULL, instance_name text );
ALTER TABLE ONLY account_data ADD CONSTRAINT account_data_uniqueness UNIQUE (user_id, account_data_type);
CREATE TABLE room_account_data ( user_id text NOT NULL, room_id text NOT NULL, account_data_type text NOT NULL, stream_id bigint NOT NULL, content text NOT NULL, instance_name text );
ALTER TABLE ONLY room_account_data ADD CONSTRAINT room_account_data_uniqueness UNIQUE (user_id, room_id, account_data_type);
CREATE TABLE push_rules ( id bigint NOT NULL, user_name text NOT NULL, rule_id text NOT NULL, priority_class smallint NOT NULL, priority integer DEFAULT 0 NOT NULL, conditions text NOT NULL, actions text NOT NULL );
ALTER TABLE ONLY push_rules ADD CONSTRAINT push_rules_pkey PRIMARY KEY (id);
CREATE TABLE push_rules_enable ( id bigint NOT NULL, user_name text NOT NULL, rule_id text NOT NULL, enabled smallint );
ALTER TABLE ONLY push_rules_enable ADD CONSTRAINT push_rules_enable_pkey PRIMARY KEY (id);
CREATE TABLE e2e_room_keys_versions ( user_id text NOT NULL, version bigint NOT NULL, algorithm text NOT NULL, auth_data text NOT NULL, deleted smallint DEFAULT 0 NOT NULL, etag bigint );
CREATE UNIQUE INDEX e2e_room_keys_versions_idx ON e2e_room_keys_versions USING btree (user_id, version);
CREATE TABLE e2e_room_keys ( user_id text NOT NULL, room_id text NOT NULL, session_id text NOT NULL, version bigint NOT NULL, first_message_index integer, forwarded_count integer, is_verified boolean, session_data text NOT NULL );
CREATE UNIQUE INDEX e2e_room_keys_with_version_idx ON e2e_room_keys USING btree (user_id, version, room_id, session_id);
"#;

/// Rows as Synapse writes them, valid SQL for both engines.
pub(super) const ROWS: &str = r#"
INSERT INTO users (name, password_hash, creation_ts) VALUES
  ('@ann:example.org', NULL, 1690000000),
  ('@bob:example.org', 'x', 1690000001),
  ('@admin:example.org', 'x', 1690000002);
INSERT INTO profiles (full_user_id, user_id, displayname, avatar_url) VALUES
  ('@ann:example.org', 'ann', 'Ann Example', 'mxc://example.org/ann'),
  ('@bob:example.org', 'bob', NULL, NULL);
INSERT INTO user_threepids VALUES
  ('@ann:example.org', 'msisdn', '447700900123', 1695000000000, 1695000000000),
  ('@ann:example.org', 'email', 'ann@example.org', 1690000000500, 1690000000000);
INSERT INTO local_current_membership (room_id, user_id, event_id, membership) VALUES
  ('!b:example.org', '@ann:example.org', '$j2', 'join'),
  ('!a:example.org', '@ann:example.org', '$j1', 'join'),
  ('!c:example.org', '@ann:example.org', '$l1', 'leave'),
  ('!d:example.org', '@ann:example.org', '$i1', 'invite'),
  ('!a:example.org', '@bob:example.org', '$j3', 'join');
INSERT INTO account_data VALUES
  ('@ann:example.org', 'm.ignored_user_list', 5, '{"ignored_users":{"@spam:example.org":{}}}', NULL),
  ('@ann:example.org', 'm.direct', 4, '{"@bob:example.org": ["!dm:example.org"]}', NULL),
  ('@ann:example.org', 'im.vector.setting.breadcrumbs', 6, '{}', NULL),
  ('@bob:example.org', 'm.direct', 7, '{}', NULL);
INSERT INTO room_account_data VALUES
  ('@ann:example.org', '!a:example.org', 'm.tag', 8, '{"tags":{"m.favourite":{"order":0.25}}}', NULL),
  ('@ann:example.org', '!a:example.org', 'm.fully_read', 9, '{"event_id":"$ev1"}', NULL),
  ('@ann:example.org', '!b:example.org', 'm.tag', 10, '{}', NULL);
INSERT INTO push_rules VALUES
  (1, '@ann:example.org', 'global/override/my.quiet', 5, 0, '[{"kind":"event_match","key":"type","pattern":"m.call.invite"}]', '[]'),
  (2, '@ann:example.org', 'global/override/my.urgent', 5, 1, '[{"kind":"event_match","key":"content.body","pattern":"urgent"}]', '["notify",{"set_tweak":"sound","value":"default"}]'),
  (3, '@ann:example.org', 'global/content/cats', 4, 0, '[{"kind":"event_match","key":"content.body","pattern":"cats"}]', '["notify",{"set_tweak":"highlight"}]'),
  (4, '@ann:example.org', 'global/room/!a:example.org', 3, 0, '[{"kind":"event_match","key":"room_id","pattern":"!a:example.org"}]', '["dont_notify"]'),
  (5, '@ann:example.org', 'global/sender/@spam:example.org', 2, 0, '[{"kind":"event_match","key":"user_id","pattern":"@spam:example.org"}]', '[]'),
  (6, '@ann:example.org', 'global/underride/my.low', 1, 0, '[{"kind":"event_match","key":"type","pattern":"m.room.message"}]', '["notify"]'),
  (7, '@ann:example.org', 'global/override/.m.rule.suppress_notices', -1, 1, '[]', '["notify"]'),
  (8, '@ann:example.org', 'global/postcontent/my.post', 6, 0, '[{"kind":"event_match","key":"content.msgtype","pattern":"m.notice"}]', '[]');
INSERT INTO push_rules_enable VALUES
  (1, '@ann:example.org', 'global/override/my.urgent', 1),
  (2, '@ann:example.org', 'global/override/my.quiet', 1),
  (3, '@ann:example.org', 'global/content/cats', 1),
  (4, '@ann:example.org', 'global/room/!a:example.org', 1),
  (5, '@ann:example.org', 'global/sender/@spam:example.org', 0),
  (6, '@ann:example.org', 'global/underride/.m.rule.message', 0),
  (7, '@ann:example.org', 'global/override/.m.rule.suppress_notices', 1),
  (8, '@bob:example.org', 'global/override/.m.rule.master', 1);
INSERT INTO e2e_room_keys_versions VALUES
  ('@ann:example.org', 9, 'm.megolm_backup.v1.curve25519-aes-sha2', '{"public_key":"pk9"}', 0, 1),
  ('@ann:example.org', 10, 'm.megolm_backup.v1.curve25519-aes-sha2', '{"public_key": "pk10", "signatures":{"@ann:example.org":{"ed25519:DEV":"sig"}}}', 0, 3),
  ('@ann:example.org', 11, 'm.megolm_backup.v1.curve25519-aes-sha2', '{"public_key":"pk11"}', 1, 1),
  ('@bob:example.org', 1, 'm.megolm_backup.v1.curve25519-aes-sha2', '{"public_key":"pkb"}', 1, 1);
INSERT INTO e2e_room_keys VALUES
  ('@ann:example.org', '!c:example.org', 's3', 10, 0, 0, FALSE, '{"ciphertext":"c3","ephemeral":"e","mac":"m"}'),
  ('@ann:example.org', '!a:example.org', 's2', 10, 4, 1, TRUE, '{"ciphertext":"c2","ephemeral":"e","mac":"m"}'),
  ('@ann:example.org', '!b:example.org', 's0', 10, 0, 0, FALSE, '{"ciphertext":"c0","ephemeral":"e","mac":"m"}'),
  ('@ann:example.org', '!a:example.org', 's1', 10, 2, 0, TRUE, '{"ciphertext": "c1", "ephemeral":"e","mac":"m"}'),
  ('@ann:example.org', '!a:example.org', 's1', 9, 0, 0, FALSE, '{"ciphertext":"old"}');
"#;

/// A Synapse SQLite database of the fixture at `schema`.
fn synapse_sqlite(dir: &Path, schema: i64) -> std::path::PathBuf {
    let path = dir.join(format!("homeserver-{schema}.db"));
    let c = Connection::open(&path).unwrap();
    c.execute_batch(SQLITE_SCHEMA).unwrap();
    c.execute_batch(ROWS).unwrap();
    c.execute(
        "INSERT INTO schema_version (version, upgraded) VALUES (?1, FALSE)",
        [schema],
    )
    .unwrap();
    path
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// What the fixture holds, read through `Source` as the pipeline reads it.
pub(super) fn check_fixture(db: &dyn Source) {
    assert_eq!(db.server_name(), "example.org");
    assert!(db.image(&user("@nobody:example.org")).unwrap().is_none());
    let ann = user("@ann:example.org");
    let img = db.image(&ann).unwrap().expect("ann is in the fixture");

    let tp: Vec<_> = img
        .threepids
        .iter()
        .map(|t| (t.medium.as_str(), t.address.as_str()))
        .collect();
    assert_eq!(
        tp,
        [("email", "ann@example.org"), ("msisdn", "447700900123")]
    );
    assert_eq!(img.threepids[0].validated_at, Some(1690000000500));
    assert_eq!(img.threepids[0].added_at, Some(1690000000000));
    assert_eq!(img.profile.displayname.as_deref(), Some("Ann Example"));
    assert_eq!(
        img.profile.avatar_url.as_deref(),
        Some("mxc://example.org/ann")
    );
    assert_eq!(img.rooms, ["!a:example.org", "!b:example.org"]);

    let ad: Vec<_> = img
        .account_data
        .iter()
        .map(|a| (a.room_id.as_deref(), a.kind.as_str(), a.content.get()))
        .collect();
    assert_eq!(
        ad,
        [
            (
                None,
                "m.direct",
                r#"{"@bob:example.org": ["!dm:example.org"]}"#
            ),
            (
                None,
                "m.ignored_user_list",
                r#"{"ignored_users":{"@spam:example.org":{}}}"#
            ),
            (
                Some("!a:example.org"),
                "m.fully_read",
                r#"{"event_id":"$ev1"}"#
            ),
            (
                Some("!a:example.org"),
                "m.tag",
                r#"{"tags":{"m.favourite":{"order":0.25}}}"#
            ),
        ]
    );

    check_push_rules(&img.push_rules);

    check_backup(db, &ann, img.backup.expect("ann has a backup"));
    check_bob(db);
}

fn check_backup(db: &dyn Source, ann: &UserId, b: Backup) {
    assert_eq!(
        b.version, "10",
        "the highest version not deleted, as a number"
    );
    assert_eq!(b.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(
        b.auth_data.get(),
        r#"{"public_key": "pk10", "signatures":{"@ann:example.org":{"ed25519:DEV":"sig"}}}"#
    );
    assert_eq!(b.sessions, 4);

    let p1 = db.sessions(ann, "10", None, 2).unwrap();
    let p2 = db.sessions(ann, "10", Some(&p1[1].cursor()), 2).unwrap();
    let p3 = db.sessions(ann, "10", Some(&p2[1].cursor()), 2).unwrap();
    let ids: Vec<_> = p1
        .iter()
        .chain(&p2)
        .map(|s| format!("{}/{}", s.room_id, s.session_id))
        .collect();
    assert_eq!(
        ids,
        [
            "!a:example.org/s1",
            "!a:example.org/s2",
            "!b:example.org/s0",
            "!c:example.org/s3"
        ]
    );
    assert!(p3.is_empty());
    let s1 = &p1[0];
    assert_eq!(
        (s1.first_message_index, s1.forwarded_count, s1.is_verified),
        (2, 0, true)
    );
    assert_eq!(
        s1.session_data.get(),
        r#"{"ciphertext": "c1", "ephemeral":"e","mac":"m"}"#
    );
    assert!(!p2[0].is_verified);
    assert_eq!(db.sessions(ann, "9", None, 10).unwrap().len(), 1);
    assert!(db
        .sessions(ann, "not-a-number", None, 10)
        .unwrap()
        .is_empty());
}

fn check_bob(db: &dyn Source) {
    let bob = db.image(&user("@bob:example.org")).unwrap().unwrap();
    assert!(bob.backup.is_none(), "bob's only backup was deleted");
    assert!(
        bob.account_data.is_empty(),
        "deleted account data is not given back"
    );
    assert_eq!(bob.profile, Profile::default());
    assert!(bob.push_rules.custom.is_empty());
    let d = &bob.push_rules.defaults;
    assert_eq!(
        (d.len(), d[0].rule_id.as_str(), d[0].enabled),
        (1, ".m.rule.master", Some(true))
    );
}

fn check_push_rules(rules: &PushRules) {
    let custom: Vec<_> = rules
        .custom
        .iter()
        .map(|r| (r.kind.as_str(), r.rule_id.as_str(), r.enabled))
        .collect();
    assert_eq!(
        custom,
        [
            ("override", "my.urgent", true),
            ("override", "my.quiet", true),
            ("content", "cats", true),
            ("postcontent", "my.post", true),
            ("room", "!a:example.org", true),
            ("sender", "@spam:example.org", false),
            ("underride", "my.low", true),
        ]
    );
    let urgent = &rules.custom[0];
    assert_eq!(
        urgent.conditions.as_ref().unwrap().get(),
        r#"[{"kind":"event_match","key":"content.body","pattern":"urgent"}]"#
    );
    assert_eq!(
        urgent.actions.get(),
        r#"["notify",{"set_tweak":"sound","value":"default"}]"#
    );
    let cats = &rules.custom[2];
    assert_eq!(cats.pattern.as_deref(), Some("cats"));
    assert!(cats.conditions.is_none());
    let room = &rules.custom[4];
    assert!(room.conditions.is_none() && room.pattern.is_none());
    assert_eq!(room.actions.get(), r#"["dont_notify"]"#);

    let defaults: Vec<_> = rules
        .defaults
        .iter()
        .map(|d| {
            (
                d.kind.as_str(),
                d.rule_id.as_str(),
                d.enabled,
                d.actions.as_ref().map(|a| a.get()),
            )
        })
        .collect();
    assert_eq!(
        defaults,
        [
            (
                "override",
                ".m.rule.suppress_notices",
                Some(true),
                Some(r#"["notify"]"#)
            ),
            ("underride", ".m.rule.message", Some(false), None),
        ]
    );
}

#[test]
fn reads_a_synapse_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = synapse_sqlite(dir.path(), 94);
    let db = SynapseDb::open_sqlite(&path).unwrap();
    assert_eq!(
        db.describe(),
        format!("Synapse SQLite database {}", path.display())
    );
    assert_eq!(db.schema_version(), 94);
    check_fixture(&db);
    // Through the one entry point, which tells it from a snapshot.
    let src = crate::source::open(&crate::source::SourceSpec::File(path.clone())).unwrap();
    assert!(src.describe().starts_with("Synapse SQLite"));
    drop(db);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "nothing written beside it: {names:?}");
}

#[test]
fn schema_versions_outside_the_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SynapseDb::open_sqlite(&synapse_sqlite(dir.path(), MIN_SCHEMA)).is_ok());
    for schema in [MIN_SCHEMA - 1, MAX_SCHEMA + 1] {
        let path = synapse_sqlite(dir.path(), schema);
        let e = format!("{:#}", SynapseDb::open_sqlite(&path).err().unwrap());
        assert!(
            e.contains("schema versions 78 to 94")
                && e.contains("Synapse 1.86 to 1.163")
                && e.contains(&format!("this database is schema {schema}"))
                && e.contains(&path.display().to_string()),
            "{e}"
        );
    }
}

#[test]
fn other_sqlite_files_and_empty_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("app.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x)")
        .unwrap();
    let e = format!("{:#}", SynapseDb::open_sqlite(&other).err().unwrap());
    assert!(
        e.contains("app.db")
            && e.contains("neither a snapshot of matrix-reactivate nor a Synapse database"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        crate::source::open(&crate::source::SourceSpec::File(other))
            .err()
            .unwrap()
    );
    assert!(e.contains("neither a snapshot"), "{e}");

    let empty = dir.path().join("empty-synapse.db");
    let c = Connection::open(&empty).unwrap();
    c.execute_batch(SQLITE_SCHEMA).unwrap();
    c.execute_batch("INSERT INTO schema_version (version, upgraded) VALUES (94, FALSE)")
        .unwrap();
    drop(c);
    let e = format!("{:#}", SynapseDb::open_sqlite(&empty).err().unwrap());
    assert!(e.contains("has no users"), "{e}");

    let text = dir.path().join("users.csv");
    std::fs::write(&text, "user_id\n@a:example.org\n").unwrap();
    let e = format!("{:#}", SynapseDb::open_sqlite(&text).err().unwrap());
    assert!(e.contains("users.csv is not an SQLite database"), "{e}");
}

#[test]
fn content_rules_hold_their_pattern_and_odd_rows_are_left_out() {
    let row = |id: &str, class: i64, conditions: &str| RuleRow {
        rule_id: id.to_owned(),
        priority_class: class,
        conditions: conditions.to_owned(),
        actions: "[]".to_owned(),
    };
    let rows = [
        row(
            "global/content/two",
            4,
            r#"[{"pattern":"a"},{"pattern":"b"}]"#,
        ),
        row(
            "global/content/typed",
            4,
            r#"[{"pattern_type":"user_localpart"}]"#,
        ),
        row(
            "global/content/ok",
            4,
            r#"[{"kind":"event_match","key":"content.body","pattern":"ok"}]"#,
        ),
        row("not-global/override/x", 5, "[]"),
        row("global/override/unknown-class", 9, "[]"),
    ];
    let flags = HashMap::from([("global/content/ok".to_owned(), false)]);
    let rules = normalise_push_rules(&rows, &flags).unwrap();
    assert_eq!(rules.custom.len(), 1, "{:?}", rules.custom);
    assert_eq!(rules.custom[0].pattern.as_deref(), Some("ok"));
    assert!(!rules.custom[0].enabled);
    assert!(rules.defaults.is_empty());
}

#[test]
fn sqlite_placeholders_are_numbered() {
    assert_eq!(
        sqlite_placeholders("a = $2 AND b = $10 AND c = '$'"),
        "a = ?2 AND b = ?10 AND c = '$'"
    );
}

/// Opening, using and dropping a source on a tokio worker must not panic
/// (the pipeline may drop it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_can_be_dropped_inside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = synapse_sqlite(dir.path(), 94);
    let db = SynapseDb::open_sqlite(&path).unwrap();
    assert!(db.image(&user("@ann:example.org")).unwrap().is_some());
    drop(db);
}

/// The same fixture in PostgreSQL, when a server is given:
/// `MATRIX_REACTIVATE_PG_URL=postgresql://USER@HOST:PORT/` (a role that may
/// create databases; password in PGPASSWORD or ~/.pgpass), as
/// `scripts/postgres.sh start` writes it. The test creates a database of its
/// own, reads it from inside a tokio runtime, and drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_synapse_real_postgres_database() {
    let Ok(base) = std::env::var("MATRIX_REACTIVATE_PG_URL") else {
        // Like the real-Synapse tests: skipped only where the developer says
        // so, and never in CI.
        let skip = std::env::var("MATRIX_REACTIVATE_SKIP_SYNAPSE").is_ok_and(|v| v == "1");
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        if skip && !ci {
            eprintln!("SKIPPED: PostgreSQL reader (MATRIX_REACTIVATE_SKIP_SYNAPSE=1)");
            return;
        }
        panic!(
            "MATRIX_REACTIVATE_PG_URL is not set: run the tests with scripts/test.sh, which \
             starts PostgreSQL, or set MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip it locally"
        );
    };
    let base = base.trim_end_matches('/').to_owned();
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).unwrap();
    let name = format!("mr_source_{:08x}", u32::from_le_bytes(tag));
    let admin = format!("{base}/postgres");
    let url = format!("{base}/{name}");
    let (a, n, u) = (admin.clone(), name.clone(), url.clone());
    // The fixture is written with a plain client, on a plain thread.
    std::thread::spawn(move || load_postgres_fixture(&a, &n, &u))
        .join()
        .unwrap();

    let db = SynapseDb::open_postgres(&url).unwrap();
    assert!(db.describe().contains(&name), "{}", db.describe());
    check_fixture(&db);
    // The session is read-only.
    let write = db.db.query("CREATE TABLE intruder (x int)", &[]);
    assert!(format!("{:#}", write.unwrap_err()).contains("read-only"));
    drop(db);

    let missing = format!("{base}/{name}_missing");
    let e = format!("{:#}", SynapseDb::open_postgres(&missing).err().unwrap());
    assert!(e.contains(&format!("{name}_missing does not exist")), "{e}");

    let (a, n) = (admin.clone(), name.clone());
    std::thread::spawn(move || {
        let mut c = admin_client(&a);
        c.batch_execute(&format!("DROP DATABASE {n}")).unwrap();
    })
    .join()
    .unwrap();
}

fn admin_client(url: &str) -> ::postgres::Client {
    let mut config: ::postgres::Config = url.parse().unwrap();
    if let Ok(p) = std::env::var("PGPASSWORD") {
        config.password(p);
    }
    config.connect(::postgres::NoTls).unwrap()
}

fn load_postgres_fixture(admin: &str, name: &str, url: &str) {
    admin_client(admin)
        .batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .unwrap();
    let mut c = admin_client(url);
    c.batch_execute(POSTGRES_SCHEMA).unwrap();
    c.batch_execute(ROWS).unwrap();
    c.batch_execute("INSERT INTO schema_version (version, upgraded) VALUES (94, FALSE)")
        .unwrap();
}
