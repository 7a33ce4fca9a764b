//! Giving back what deactivation took: rooms, profile, e-mail addresses, lock.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::support::mock_synapse::{enc, ok, MockSynapse, State};
use crate::support::real_synapse::{synapse, tag};
use crate::support::workdir::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_room_shared_by_50_users_is_read_once() {
    let m = MockSynapse::start().await;
    let room = "!shared:example.org";
    let mut input = String::from("user_id\n");
    let mut state = vec![];
    for i in 0..50 {
        let id = format!("@u{i}:example.org");
        m.user(&id, State::Deactivated).await;
        input.push_str(&format!("{id}\n"));
        Mock::given(method("GET"))
            .and(path(format!(
                "/_synapse/admin/v1/users/{}/memberships",
                enc(&id)
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"memberships": {room: "leave", "!old:example.org": "leave"}}),
            ))
            .mount(&m.server)
            .await;
        state.push(
            json!({"type": "m.room.member", "state_key": id, "sender": id,
                          "origin_server_ts": 2_000, "content": {"membership": "leave"}}),
        );
    }
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/memberships",
            enc("@admin:example.org")
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"memberships": {}})))
        .mount(&m.server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .expect(50)
        .mount(&m.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/rooms/{}/state",
            enc(room)
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"state": state})))
        .expect(1)
        .mount(&m.server)
        .await;
    // Everybody left this one before --left-since: it is read once and never joined.
    let old: Vec<_> = (0..50)
        .map(|i| {
            let id = format!("@u{i}:example.org");
            json!({"type": "m.room.member", "state_key": id, "sender": id,
                   "origin_server_ts": 500, "content": {"membership": "leave"}})
        })
        .collect();
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/rooms/{}/state",
            enc("!old:example.org")
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"state": old})))
        .expect(1)
        .mount(&m.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/_synapse/admin/v1/join/{}", enc(room))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"room_id": room})))
        .expect(50)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let out = run(w.reactivate(
        &m.url(),
        &[
            "--rate",
            "0",
            "--concurrency",
            "16",
            "--rejoin-rooms",
            "--left-since",
            "1000",
        ],
    ))
    .await;
    let rows = w.results("out.csv");
    assert_eq!(out.status.code(), Some(0), "{:?}", rows.first());
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|r| r.status == "reactivated"));
    let text = std::fs::read_to_string(w.path("out.csv")).unwrap();
    assert_eq!(text.matches(",!shared:example.org,").count(), 50, "{text}");
}

#[tokio::test]
async fn rejoin_rooms_needs_the_memberships_endpoint() {
    let m = MockSynapse::start_with_version("1.140.0").await;
    Mock::given(path_regex("/memberships$"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(
                json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
            ),
        )
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(
        &m.url(),
        &["--rejoin-rooms", "--left-since", "2026-11-26T01:00:00Z"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--rooms-column") && err.contains("1.145"),
        "{err}"
    );
    assert!(!w.path("out.csv").exists(), "no user was touched");
}

#[tokio::test]
async fn real_synapse_rooms_come_back_end_to_end() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let (alice, bob, owner) = (
        s.id(&format!("ra{t}")),
        s.id(&format!("rb{t}")),
        s.id(&format!("ro{t}")),
    );
    for id in [&alice, &bob, &owner] {
        s.create(id, "pw-before-1").await;
    }
    let (ta, tb, to) = (
        s.login(&alice, "pw-before-1").await,
        s.login(&bob, "pw-before-1").await,
        s.login(&owner, "pw-before-1").await,
    );
    let admin = s.token.clone();
    let public = s.create_room(&admin, "public_chat").await;
    let private_admin_in = s.create_room(&admin, "private_chat").await;
    let private_admin_out = s.create_room(&to, "private_chat").await;
    let left_long_ago = s.create_room(&admin, "public_chat").await;
    let banned = s.create_room(&admin, "public_chat").await;
    let kicked = s.create_room(&admin, "public_chat").await;
    for (token, user) in [(&ta, &alice), (&tb, &bob)] {
        s.room_action(&admin, &private_admin_in, "invite", Some(user))
            .await;
        s.room_action(token, &private_admin_in, "join", None).await;
        s.room_action(token, &public, "join", None).await;
    }
    s.room_action(&to, &private_admin_out, "invite", Some(&alice))
        .await;
    s.room_action(&ta, &private_admin_out, "join", None).await;
    for room in [&left_long_ago, &banned, &kicked] {
        s.room_action(&ta, room, "join", None).await;
    }
    s.room_action(&ta, &left_long_ago, "leave", None).await;
    s.room_action(&admin, &banned, "ban", Some(&alice)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The kick comes after --left-since too: it is still not the user's own leave.
    s.room_action(&admin, &kicked, "kick", Some(&alice)).await;
    s.deactivate(&alice, false).await;
    s.deactivate(&bob, false).await;
    // Synapse parts deactivated users from their rooms in the background.
    for id in [&alice, &bob] {
        s.wait_until_parted(id).await;
    }

    let w = Workdir::new();
    w.write("in.csv", format!("user_id\n{alice}\n{bob}\n"));
    let since = since.to_string();

    // A dry run lists the rooms that would be rejoined, and joins none.
    let out = run(s.tool(
        &w,
        "in.csv",
        "dry.csv",
        &["--dry-run", "--rejoin-rooms", "--left-since", &since],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dry = by_user(&w.results("dry.csv"));
    let would: BTreeSet<String> = [
        public.clone(),
        private_admin_in.clone(),
        private_admin_out.clone(),
    ]
    .into();
    assert_eq!(dry[&alice].rooms_rejoined_set(), would);
    assert_eq!(
        dry[&bob].rooms_rejoined_set(),
        [public.clone(), private_admin_in.clone()].into()
    );
    assert_eq!(s.user(&alice).await.unwrap()["deactivated"], true);
    let out = run(s.command(
        &w,
        &["--rate", "0", "--rejoin-rooms", "--left-since", &since],
    ))
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "alice's private room fails: {}",
        stderr(&out)
    );
    let users = by_user(&w.results("out.csv"));
    let a = &users[&alice];
    assert_eq!(a.status, "reactivated");
    assert!(a.rooms_failed_has(&private_admin_out), "{a:?}");
    assert!(
        a.rooms_failed_contains(&format!("invite {}", s.id("admin"))),
        "{a:?}"
    );
    let expected: BTreeSet<String> = [public.clone(), private_admin_in.clone()].into();
    for (id, row) in [(&alice, a), (&bob, &users[&bob])] {
        let token = s.login(id, &row.password).await;
        assert_eq!(s.joined_rooms(&token).await, expected, "{id}'s rooms");
        assert_eq!(row.rooms_rejoined_set(), expected, "{row:?}");
    }
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
}

#[tokio::test]
async fn real_synapse_profile_email_and_lock_end_to_end() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let (erased, locked, plain) = (
        s.id(&format!("pe{t}")),
        s.id(&format!("pl{t}")),
        s.id(&format!("pp{t}")),
    );
    s.create(&erased, "pw-before-1").await;
    s.deactivate(&erased, true).await;
    s.create(&plain, "pw-before-1").await;
    s.deactivate(&plain, false).await;
    s.create(&locked, "locked-pass-1").await;
    s.lock(&locked).await;

    let w = Workdir::new();
    w.write(
        "in.csv",
        format!(
            "user_id,displayname,email\n{erased},Mallory Quinn,mallory@example.org;mq@example.net\n\
             {locked},,\n{plain},Pat Plain,not-an-email\n"
        ),
    );
    // Without --unlock the locked user is left alone.
    let out = run(s.tool(
        &w,
        "in.csv",
        "first.csv",
        &["--include-erased", "--rate", "0"],
    ))
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "a bad e-mail makes a row incomplete: {}",
        stderr(&out)
    );
    let users = by_user(&w.results("first.csv"));
    assert_eq!(users[&locked].status, "already_active");
    assert_eq!(s.user(&locked).await.unwrap()["locked"], true);
    let e = &users[&erased];
    assert_eq!((e.status.as_str(), e.error.as_str()), ("reactivated", ""));
    let info = s.user(&erased).await.unwrap();
    assert_eq!(info["displayname"], "Mallory Quinn");
    let mut emails: Vec<&str> = info["threepids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["address"].as_str().unwrap())
        .collect();
    emails.sort();
    assert_eq!(emails, ["mallory@example.org", "mq@example.net"]);
    assert!(s.can_log_in(&erased, &e.password).await);
    let p = &users[&plain];
    assert_eq!(p.status, "reactivated");
    assert!(p.error.contains("not-an-email"), "{p:?}");
    assert_eq!(s.user(&plain).await.unwrap()["displayname"], "Pat Plain");
    assert!(s.can_log_in(&plain, &p.password).await);

    // With --unlock it is unlocked, and keeps its password.
    w.write("locked.csv", format!("{locked}\n"));
    let out = run(s.tool(&w, "locked.csv", "second.csv", &["--unlock"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("second.csv")[0];
    assert_eq!(
        (row.status.as_str(), row.password.as_str()),
        ("unlocked", "")
    );
    assert_eq!(s.user(&locked).await.unwrap()["locked"], false);
    assert!(s.can_log_in(&locked, "locked-pass-1").await);
}

#[tokio::test]
async fn rooms_from_a_column_and_failures_with_a_hint() {
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.allow_put("@alice:example.org", 1, ok()).await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/_synapse/admin/v1/join/{}",
            enc("#team:example.org")
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"room_id": "!team:example.org"})),
        )
        .expect(1)
        .mount(&m.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/_synapse/admin/v1/join/{}",
            enc("!secret:example.org")
        )))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "errcode": "M_FORBIDDEN", "error": "@admin:example.org not in room !secret:example.org."
        })))
        .expect(1)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id,Rooms\nalice,#team:example.org; !secret:example.org;lobby\n",
    );
    let out = run(w.reactivate(&m.url(), &["--rooms-column", "rooms"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    assert_eq!(row.rooms_rejoined, "!team:example.org");
    assert!(row.rooms_failed_has("!secret:example.org"), "{row:?}");
    assert!(
        row.rooms_failed_contains("invite @admin:example.org"),
        "{row:?}"
    );
    assert!(
        row.error.contains("lobby"),
        "a bad room in the input is reported: {row:?}"
    );
}

#[tokio::test]
async fn resume_completes_the_rooms_without_a_second_password() {
    // First run: the reactivation lands, then the token is revoked before the join.
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.allow_put("@alice:example.org", 1, ok()).await;
    Mock::given(method("POST"))
        .and(path_regex("^/_synapse/admin/v1/join/"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
        ))
        .expect(1)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "user_id,rooms\nalice,!team:example.org\n");
    let out = run(w.reactivate(&m.url(), &["--rooms-column", "rooms"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(w.results("out.csv").is_empty(), "the user is not done yet");
    let sent = m.put_bodies("@alice:example.org").await;
    let password = sent[0]["password"].as_str().unwrap().to_owned();

    // Resume, with a new token: alice is active now; only the join is left.
    let m2 = MockSynapse::start().await;
    m2.user("@alice:example.org", State::Active).await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/_synapse/admin/v1/join/{}",
            enc("!team:example.org")
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"room_id": "!team:example.org"})),
        )
        .expect(1)
        .mount(&m2.server)
        .await;
    let out = run(w.reactivate(&m2.url(), &["--rooms-column", "rooms", "--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "reactivated");
    assert_eq!(rows[0].password, password, "the password the server holds");
    assert_eq!(rows[0].rooms_rejoined, "!team:example.org");
}
