//! `find`: listing the deactivated users and their rooms, against a mock and a real Synapse.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

use crate::support::mas::MasConfig;
use crate::support::mas_world::{id, MasWorld};
use crate::support::mock_synapse::{enc, MockSynapse, State};
use crate::support::outage_proxy::OutageProxy;
use crate::support::real_synapse::{synapse, tag, Synapse};
use crate::support::workdir::*;

const HEADER: &str = "user_id,deactivated_at,erased,rooms";
const LIST: &str = "/_synapse/admin/v3/users";

/// 2026-11-26T01:00:00.000Z in Unix ms.
const T0: i64 = 1_795_654_800_000;
const MIN: i64 = 60_000;

/// A mock Synapse for `find`: preflight, the admin's own memberships, and
/// every method but GET refused (each expected zero times).
async fn server() -> MockSynapse {
    let m = MockSynapse::start().await;
    memberships(&m, "@admin:example.org", &[]).await;
    for verb in ["POST", "DELETE", "PATCH"] {
        Mock::given(method(verb))
            .respond_with(ResponseTemplate::new(500))
            .with_priority(100)
            .expect(0)
            .named(format!("forbidden {verb}"))
            .mount(&m.server)
            .await;
    }
    m
}

fn listed(name: &str, erased: bool, locked: bool) -> Value {
    json!({"name": name, "deactivated": true, "erased": erased, "locked": locked,
           "admin": false, "is_guest": false, "creation_ts": 1_700_000_000_000_i64})
}

/// Mounts the list in pages of `size`, as Synapse answers it: each page once,
/// `next_token` the offset of the next page, the query as `find` must send it.
async fn list(m: &MockSynapse, users: &[Value], size: usize) {
    let pages: Vec<&[Value]> = users.chunks(size).collect();
    let pages = if pages.is_empty() {
        vec![&[][..]]
    } else {
        pages
    };
    for (i, page) in pages.iter().enumerate() {
        let from = i * size;
        let mut body = json!({"users": page, "total": users.len()});
        if from + size < users.len() {
            body["next_token"] = json!((from + size).to_string());
        }
        let mock = Mock::given(method("GET"))
            .and(path(LIST))
            .and(query_param("deactivated", "true"))
            .and(query_param("locked", "true"))
            .and(query_param("guests", "false"))
            .and(query_param("order_by", "name"))
            .and(query_param("dir", "f"))
            .and(query_param("limit", size.to_string()));
        let mock = if i == 0 {
            mock.and(query_param_is_missing("from"))
        } else {
            mock.and(query_param("from", from.to_string()))
        };
        mock.respond_with(ResponseTemplate::new(200).set_body_json(body))
            .expect(1)
            .named(format!("list page {i}"))
            .mount(&m.server)
            .await;
    }
}

async fn memberships(m: &MockSynapse, user: &str, rooms: &[(&str, &str)]) {
    memberships_after(m, user, rooms, Duration::ZERO).await;
}

/// A user's memberships, answered after `delay` (to shuffle completion order).
async fn memberships_after(m: &MockSynapse, user: &str, rooms: &[(&str, &str)], delay: Duration) {
    let map: BTreeMap<&str, &str> = rooms.iter().copied().collect();
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/memberships",
            enc(user)
        )))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "memberships": map }))
                .set_delay(delay),
        )
        .named(format!("memberships of {user}"))
        .mount(&m.server)
        .await;
}

/// A room's member state, which must be read exactly once.
async fn room(m: &MockSynapse, room: &str, members: Vec<Value>) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/rooms/{}/state",
            enc(room)
        )))
        .and(query_param("type", "m.room.member"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "state": members })))
        .expect(1)
        .named(format!("state of {room}"))
        .mount(&m.server)
        .await;
}

/// A membership event: `user`'s `membership`, sent by `sender` at `ts`.
fn member(user: &str, sender: &str, membership: &str, ts: i64) -> Value {
    json!({"type": "m.room.member", "state_key": user, "sender": sender,
           "origin_server_ts": ts, "content": {"membership": membership}})
}

fn own_leave(user: &str, ts: i64) -> Value {
    member(user, user, "leave", ts)
}

fn find(w: &Workdir, m: &MockSynapse, args: &[&str]) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.args(["find", "-H", &m.url(), "-o", "users.csv", "--no-progress"])
        .args(args);
    c
}

/// Every request the mock received was a GET.
async fn only_gets(m: &MockSynapse) {
    let requests = m.server.received_requests().await.unwrap_or_default();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.method.as_str(), "GET", "{} {}", r.method, r.url);
    }
}

#[tokio::test]
async fn find_lists_three_pages_in_order_reading_a_shared_room_once() {
    let m = server().await;
    let names = [
        "@a:example.org",
        "@b:example.org",
        "@c:example.org",
        "@d:example.org",
        "@e:example.org",
    ];
    let users: Vec<Value> = names
        .iter()
        .map(|n| listed(n, *n == "@c:example.org", *n == "@d:example.org"))
        .collect();
    list(&m, &users, 2).await;
    // Everybody shared !lobby; @a answers last, so an unordered writer would
    // put it last.
    let mut lobby = vec![member(
        "@admin:example.org",
        "@admin:example.org",
        "join",
        T0,
    )];
    for (i, n) in names.iter().enumerate() {
        let delay = if i == 0 {
            Duration::from_millis(400)
        } else {
            Duration::ZERO
        };
        memberships_after(
            &m,
            n,
            &[
                ("!lobby:example.org", "leave"),
                ("!own:example.org", "join"),
            ],
            delay,
        )
        .await;
        lobby.push(own_leave(n, T0 + i as i64 * 1000));
    }
    room(&m, "!lobby:example.org", lobby).await;

    let w = Workdir::new();
    let out = run(find(
        &w,
        &m,
        &["--page-size", "2", "--rate", "0", "--concurrency", "4"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(w.path("users.csv")).unwrap();
    let expected = [
        HEADER.to_owned(),
        "@a:example.org,2026-11-26T01:00:00.000Z,false,!lobby:example.org".into(),
        "@b:example.org,2026-11-26T01:00:01.000Z,false,!lobby:example.org".into(),
        "@c:example.org,2026-11-26T01:00:02.000Z,true,!lobby:example.org".into(),
        "@d:example.org,2026-11-26T01:00:03.000Z,false,!lobby:example.org".into(),
        "@e:example.org,2026-11-26T01:00:04.000Z,false,!lobby:example.org".into(),
    ]
    .join("\n")
        + "\n";
    assert_eq!(text, expected);
    assert_eq!(mode_of(&w.path("users.csv")), 0o600);
    let err = stderr(&out);
    for needle in [
        "Listed 5 users deactivated",
        "reading 1 rooms",
        "written to users.csv: 5 users",
        "Erased users (1)",
        "--include-erased",
        "Locked users (1)",
        "--unlock",
        "users.csv -o results.csv --rooms-column rooms --dry-run",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    only_gets(&m).await;
}

/// Alice's rooms: a burst of two own leaves, a room she left ten minutes
/// before, one she was kicked from during the burst, one she is banned from.
async fn alice_server(alice: &str) -> MockSynapse {
    let m = server().await;
    list(&m, &[listed(alice, false, false)], 500).await;
    memberships(
        &m,
        alice,
        &[
            ("!burst1:example.org", "leave"),
            ("!burst2:example.org", "leave"),
            ("!earlier:example.org", "leave"),
            ("!kicked:example.org", "leave"),
            ("!banned:example.org", "ban"),
        ],
    )
    .await;
    room(
        &m,
        "!burst1:example.org",
        vec![own_leave(alice, T0 + 59_000)],
    )
    .await;
    room(
        &m,
        "!burst2:example.org",
        vec![own_leave(alice, T0 + 100_000)],
    )
    .await;
    room(
        &m,
        "!earlier:example.org",
        vec![own_leave(alice, T0 - 10 * MIN)],
    )
    .await;
    let kick = member(alice, "@mod:example.org", "leave", T0 + 60_000);
    room(&m, "!kicked:example.org", vec![kick]).await;
    m
}

#[tokio::test]
async fn find_rooms_are_own_leaves_of_the_burst_or_since_left_since() {
    let alice = "@alice:example.org";
    let w = Workdir::new();
    // Without --left-since: the burst that ends at the last leave (gaps of
    // 59 s and 41 s), not the leave ten minutes before, not the kick.
    let m = alice_server(alice).await;
    let out = run(find(&w, &m, &["--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.path("users.csv")).unwrap(),
        format!(
            "{HEADER}\n{alice},2026-11-26T01:01:40.000Z,false,\
             !burst1:example.org;!burst2:example.org\n"
        )
    );
    // With --left-since before the voluntary leave: every own leave since then.
    let m = alice_server(alice).await;
    std::fs::remove_file(w.path("users.csv")).unwrap();
    let since = (T0 - 11 * MIN).to_string();
    let out = run(find(&w, &m, &["--rate", "0", "--left-since", &since])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(w.path("users.csv")).unwrap();
    assert!(
        text.ends_with(",false,!burst1:example.org;!burst2:example.org;!earlier:example.org\n"),
        "{text}"
    );
}

#[tokio::test]
async fn find_window_keeps_users_deactivated_inside_and_counts_the_rest() {
    let m = server().await;
    // before, inside (two), at --left-until (after), in no room (unknown).
    let cases = [
        ("@before:example.org", Some(T0 - 1)),
        ("@in1:example.org", Some(T0)),
        ("@in2:example.org", Some(T0 + 30 * MIN)),
        ("@nowhere:example.org", None),
        ("@until:example.org", Some(T0 + 60 * MIN)),
    ];
    let users: Vec<Value> = cases.iter().map(|(n, _)| listed(n, false, false)).collect();
    list(&m, &users, 500).await;
    let mut state = vec![];
    for (name, at) in cases {
        match at {
            Some(ts) => {
                memberships(&m, name, &[("!r:example.org", "leave")]).await;
                state.push(own_leave(name, ts));
            }
            None => memberships(&m, name, &[]).await,
        }
    }
    room(&m, "!r:example.org", state).await;
    let w = Workdir::new();
    let out = run(find(
        &w,
        &m,
        &[
            "--rate",
            "0",
            "--left-since",
            "2026-11-26T01:00:00Z",
            "--left-until",
            "2026-11-26T02:00:00Z",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.path("users.csv")).unwrap(),
        format!(
            "{HEADER}\n@in1:example.org,2026-11-26T01:00:00.000Z,false,!r:example.org\n\
             @in2:example.org,2026-11-26T01:30:00.000Z,false,!r:example.org\n"
        )
    );
    let err = stderr(&out);
    for needle in [
        "Listed 5 users",
        "written to users.csv: 2 users",
        "before --left-since, left out: 1",
        "at or after --left-until, left out: 1",
        "time unknown (in no room), left out: 1; run find without --left-since/--left-until",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[tokio::test]
async fn find_refuses_an_existing_output_before_any_request() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    w.write("users.csv", "keep me\n");
    let out = run(find(&w, &m, &[])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--output users.csv") && err.contains("exists"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(w.path("users.csv")).unwrap(),
        "keep me\n"
    );
    assert!(m
        .server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test]
async fn find_leaves_out_a_user_whose_rooms_cannot_be_read_and_names_them() {
    let m = server().await;
    let users = [
        listed("@ok:example.org", false, false),
        listed("@broken:example.org", false, false),
    ];
    list(&m, &users, 500).await;
    memberships(&m, "@ok:example.org", &[]).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/users/{}/memberships",
            enc("@broken:example.org")
        )))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"errcode": "M_UNKNOWN", "error": "no"})),
        )
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    let out = run(find(&w, &m, &["--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.path("users.csv")).unwrap(),
        format!("{HEADER}\n@ok:example.org,,false,\n")
    );
    let err = stderr(&out);
    assert!(err.contains("could not be read, left out: 1"), "{err}");
    assert!(
        err.contains("@broken:example.org: rooms not listed: HTTP 400"),
        "{err}"
    );
}

#[tokio::test]
async fn find_removes_its_file_when_the_token_is_revoked_mid_list() {
    let m = server().await;
    let first =
        json!({"users": [listed("@a:example.org", false, false)], "next_token": "1", "total": 2});
    Mock::given(method("GET"))
        .and(path(LIST))
        .and(query_param_is_missing("from"))
        .respond_with(ResponseTemplate::new(200).set_body_json(first))
        .mount(&m.server)
        .await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .and(query_param("from", "1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
        ))
        .mount(&m.server)
        .await;
    memberships(&m, "@a:example.org", &[]).await;
    let w = Workdir::new();
    let out = run(find(&w, &m, &["--rate", "0", "--page-size", "1"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("access token was rejected"),
        "{}",
        stderr(&out)
    );
    assert!(
        !w.path("users.csv").exists(),
        "a partial list is not left behind"
    );
}

/// How many requests for users' rooms the mock has received.
async fn memberships_received(m: &MockSynapse) -> usize {
    let received = m.server.received_requests().await.unwrap_or_default();
    received
        .iter()
        .filter(|r| r.url.path().ends_with("/memberships"))
        .count()
}

#[tokio::test]
async fn find_rides_a_server_restart_and_logs_each_get_with_verbose() {
    // The server goes away for 3 s mid-list: find waits for it (as a
    // reactivation run does, --max-outage) and writes every user; --verbose
    // prints a line for every GET, the typed ones (list, room state) included.
    let m = server().await;
    let n = 30;
    let names: Vec<String> = (0..n).map(|i| format!("@u{i:02}:example.org")).collect();
    let users: Vec<Value> = names.iter().map(|u| listed(u, false, false)).collect();
    list(&m, &users, 500).await;
    for u in &names {
        memberships(&m, u, &[("!hall:example.org", "leave")]).await;
    }
    // Not `room`: a read cut by the outage is sent again.
    let hall: Vec<Value> = names.iter().map(|u| own_leave(u, T0)).collect();
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/rooms/{}/state",
            enc("!hall:example.org")
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "state": hall })))
        .mount(&m.server)
        .await;
    let proxy = OutageProxy::start(*m.server.address()).await;
    let w = Workdir::new();
    let mut cmd = w.cmd();
    cmd.args([
        "find",
        "-H",
        &proxy.url(),
        "-o",
        "users.csv",
        "--no-progress",
    ])
    .args(["-v", "--rate", "10", "--max-attempts", "2"]);
    let outage = async {
        while memberships_received(&m).await < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.go_down().await;
        let before = memberships_received(&m).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            memberships_received(&m).await,
            before,
            "nothing got through"
        );
        proxy.come_back().await;
        before
    };
    let (out, before) = tokio::join!(run(cmd), outage);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(before < n, "the outage came mid-list");
    let text = std::fs::read_to_string(w.path("users.csv")).unwrap();
    assert_eq!(rows_of(&text, "@u").len(), n, "{text}");
    let err = stderr(&out);
    for needle in [
        "server unreachable: waiting",
        "server answers again",
        "request: GET /_synapse/admin/v3/users → 200 · attempt 1",
        "request: GET /_synapse/admin/v1/rooms/%21hall%3Aexample.org/state → 200",
        "request: GET /_synapse/admin/v1/users/%40u00%3Aexample.org/memberships → 200",
        "could not connect",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains(TOKEN), "the token is never printed");
    only_gets(&m).await;
}

#[tokio::test]
async fn find_output_is_the_main_commands_input() {
    let m = server().await;
    let users = [
        listed("@a:example.org", false, false),
        listed("@b:example.org", false, false),
    ];
    list(&m, &users, 500).await;
    memberships(
        &m,
        "@a:example.org",
        &[("!x:example.org", "leave"), ("!y:example.org", "leave")],
    )
    .await;
    memberships(&m, "@b:example.org", &[]).await;
    room(&m, "!x:example.org", vec![own_leave("@a:example.org", T0)]).await;
    room(
        &m,
        "!y:example.org",
        vec![own_leave("@a:example.org", T0 + 5)],
    )
    .await;
    let w = Workdir::new();
    let out = run(find(&w, &m, &["--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    m.user("@a:example.org", State::Deactivated).await;
    m.user("@b:example.org", State::Deactivated).await;
    let mut main = w.cmd();
    main.args([
        "-H",
        &m.url(),
        "users.csv",
        "-o",
        "results.csv",
        "--no-progress",
        "--dry-run",
    ])
    .args(["--rooms-column", "rooms"]);
    let out = run(main).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = by_user(&w.results("results.csv"));
    assert_eq!(rows.len(), 2, "the header is a header, not a user");
    let a = &rows["@a:example.org"];
    assert_eq!(
        (a.status.as_str(), a.line.as_str()),
        ("would_reactivate", "2")
    );
    assert_eq!(a.rooms_rejoined, "!x:example.org;!y:example.org");
    assert_eq!(rows["@b:example.org"].rooms_rejoined, "");
}

#[tokio::test]
async fn find_ctrl_c_stops_at_once_and_leaves_no_file() {
    let m = server().await;
    let users: Vec<Value> = (0..50)
        .map(|i| listed(&format!("@u{i:02}:example.org"), false, false))
        .collect();
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"users": users, "total": 50})),
        )
        .mount(&m.server)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("/memberships$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"memberships": {}})))
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    let bin = assert_cmd::cargo::cargo_bin("matrix-reactivate");
    // 2 requests a second: 25 s for everyone, so the interruption comes mid-list.
    let child = std::process::Command::new(bin)
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .args([
            "find",
            "-H",
            &m.url(),
            "-o",
            "users.csv",
            "--no-progress",
            "--rate",
            "2",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        w.path("users.csv").exists(),
        "the file is reserved at the start"
    );
    let interrupted = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(3),
        "{:?}",
        interrupted.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Interrupted after"),
        "{}",
        stderr(&out)
    );
    assert!(
        !w.path("users.csv").exists(),
        "an interrupted list is not left behind"
    );
}

#[test]
fn find_is_a_subcommand_beside_the_main_usage() {
    let w = Workdir::new();
    let out = w.cmd().args(["find", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--left-since",
        "--left-until",
        "--page-size",
        "60 s",
        "user_id,deactivated_at,erased,rooms",
    ] {
        assert!(help.contains(needle), "find --help lacks {needle}");
    }
    // The main usage is unchanged: INPUT and -o are still required without find.
    let out = w
        .cmd()
        .args(["-H", "https://m.example.org", "in.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = w
        .cmd()
        .args([
            "find",
            "-H",
            "https://m.example.org",
            "-o",
            "u.csv",
            "--left-since",
            "2026-11-26T02:00:00Z",
            "--left-until",
            "2026-11-26T01:00:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--left-until"), "{}", stderr(&out));
    assert!(stderr(&out).contains("find --help"), "{}", stderr(&out));
    // find put after the main command's flags is taken for an input file: say so.
    let out = w
        .cmd()
        .args(["-H", "https://m.example.org", "find", "-o", "u.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("put find first"), "{}", stderr(&out));
    assert!(!w.path("u.csv").exists());
}

// ---------------------------------------------------------------- MAS

/// A MAS world for `find`: `users` (localpart, MAS's deactivation time in µs
/// since T0, or `None` for active) created in that order, so MAS's order (by
/// ULID) is not the names'; each user in `leaves` left !hall on their own at
/// the time given (ms); the admin's memberships for the preflight.
async fn mas_find_world(users: &[(&str, Option<i64>)], leaves: &[(&str, i64)]) -> MasWorld {
    let world = MasWorld::start(MasConfig::default()).await;
    for &(name, at) in users {
        world.user(name, "pw-123456", at.is_some()).await;
        if let Some(us) = at {
            let t0 = std::time::UNIX_EPOCH + Duration::from_millis(T0 as u64);
            let at = t0 + Duration::from_micros(us as u64);
            world.mas.set_deactivated_at(name, at);
        }
    }
    let memberships = |who: String, rooms: Value| {
        Mock::given(method("GET"))
            .and(path(format!(
                "/_synapse/admin/v1/users/{}/memberships",
                enc(&who)
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "memberships": rooms })))
    };
    memberships(id("admin"), json!({}))
        .mount(&world.synapse)
        .await;
    for &(name, _) in users {
        let left = leaves.iter().any(|(n, _)| *n == name);
        let rooms = if left {
            json!({"!hall:example.org": "leave"})
        } else {
            json!({})
        };
        memberships(id(name), rooms).mount(&world.synapse).await;
    }
    let hall: Vec<Value> = leaves
        .iter()
        .map(|&(n, ts)| own_leave(&id(n), ts))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!(
            "/_synapse/admin/v1/rooms/{}/state",
            enc("!hall:example.org")
        )))
        .and(query_param("type", "m.room.member"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "state": hall })))
        .mount(&world.synapse)
        .await;
    world
}

/// `find` against a MAS world, without MAS credentials (each test adds its own).
fn mas_find(w: &Workdir, world: &MasWorld, args: &[&str]) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.args(["find", "-H", &world.synapse.uri(), "-o", "users.csv"])
        .args(["--no-progress", "--rate", "0", "--page-size", "2"])
        .args(args);
    c
}

/// MAS's list requests, in order.
fn mas_list_requests(world: &MasWorld) -> Vec<String> {
    world
        .admin_requests()
        .into_iter()
        .filter(|r| r.contains("filter[status]=deactivated"))
        .collect()
}

/// Every request Synapse received was a GET.
async fn synapse_only_gets(world: &MasWorld) {
    let requests = world.synapse.received_requests().await.unwrap_or_default();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(r.method.as_str(), "GET", "{} {}", r.method, r.url);
    }
}

#[tokio::test]
async fn find_mas_lists_mas_deactivated_users_in_pages_with_mas_exact_times() {
    // Created zoe first: MAS lists by ULID, the file is by user ID. frank was
    // deactivated through Synapse's own API (MAS shows him active); gina's
    // deactivation has not reached Synapse yet. Their leaves are hours after
    // MAS's times: the file has MAS's times all the same.
    let h = 3_600_000_000; // an hour in µs
    let users = [
        ("zoe", Some(6 * 60_000_000 + 1)),
        ("bob", Some(2 * 60_000_000 + 654_321)),
        ("alice", Some(123_456)),
        ("carl", Some(3 * 60_000_000)),
        ("dora", Some(4 * 60_000_000 + 999)),
        ("erin", None),
        ("frank", None),
        ("gina", Some(5 * 60_000_000)),
    ];
    let late = T0 + 5 * h / 1000;
    let leaves: Vec<(&str, i64)> = ["alice", "bob", "carl", "frank", "gina", "zoe"]
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, late + i as i64))
        .collect();
    let world = mas_find_world(&users, &leaves).await;
    world.view.erased.lock().unwrap().insert("bob".into());
    world
        .view
        .deactivated_here
        .lock()
        .unwrap()
        .insert("frank".into());
    world.view.active_here.lock().unwrap().insert("gina".into());

    let w = Workdir::new();
    let mut cmd = mas_find(&w, &world, &[]);
    cmd.env("MAS_CLIENT_ID", world.mas.client_id())
        .env("MAS_CLIENT_SECRET", world.mas.client_secret());
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hall = "!hall:example.org";
    let expected = [
        HEADER.to_owned(),
        format!("{},2026-11-26T01:00:00.123Z,false,{hall}", id("alice")),
        format!("{},2026-11-26T01:02:00.654Z,true,{hall}", id("bob")),
        format!("{},2026-11-26T01:03:00.000Z,false,{hall}", id("carl")),
        format!("{},2026-11-26T01:04:00.000Z,false,", id("dora")),
        // Synapse's side only: the time is his last leave, as on any server.
        format!("{},2026-11-26T06:00:00.003Z,false,{hall}", id("frank")),
        format!("{},2026-11-26T01:05:00.000Z,false,{hall}", id("gina")),
        format!("{},2026-11-26T01:06:00.000Z,false,{hall}", id("zoe")),
    ]
    .join("\n")
        + "\n";
    assert_eq!(
        std::fs::read_to_string(w.path("users.csv")).unwrap(),
        expected
    );

    // MAS's list, in pages of --page-size: six users, three pages, each after
    // the last ULID of the page before; only the first one counted.
    let pages = mas_list_requests(&world);
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages
        .iter()
        .all(|p| p.starts_with("GET ") && p.contains("page[first]=2")));
    assert!(!pages[0].contains("page[after]") && !pages[0].contains("count=false"));
    let zoe = world.mas.user("zoe").unwrap().id;
    let bob = world.mas.user("bob").unwrap().id;
    assert!(
        pages[1].contains(&format!("page[after]={bob}")),
        "{pages:?}"
    );
    assert!(pages[2].contains("page[after]=") && pages[2].contains("count=false"));
    assert!(!pages
        .iter()
        .any(|p| p.contains(&format!("page[after]={zoe}"))));
    // Nothing but reads: GETs to MAS's admin API (the one POST is the token
    // grant), GETs to Synapse.
    for r in world.admin_requests() {
        assert!(r.starts_with("GET "), "{r}");
    }
    let posts: Vec<_> = world
        .mas
        .requests()
        .into_iter()
        .filter(|(m, _)| m != "GET")
        .collect();
    assert!(
        posts
            .iter()
            .all(|(m, p)| m == "POST" && p == "/oauth2/token"),
        "{posts:?}"
    );
    synapse_only_gets(&world).await;
    // Synapse's user was read for gina alone, whom Synapse's list lacks.
    let asked: Vec<String> = world
        .synapse
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_owned())
        .filter(|p| p.starts_with("/_synapse/admin/v2/users/"))
        .collect();
    assert_eq!(
        asked,
        [
            format!("/_synapse/admin/v2/users/{}", enc(&id("admin"))),
            format!("/_synapse/admin/v2/users/{}", enc(&id("gina"))),
        ]
    );
    let err = stderr(&out);
    for needle in [
        "logins by MAS at",
        "Listed 7 users deactivated on",
        "(6 there; deactivation times are MAS's, exact)",
        "1 deactivated in MAS only",
        "1 deactivated on Synapse's side only",
        "Erased users (1)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[tokio::test]
async fn find_mas_window_is_applied_to_mas_deactivated_at() {
    // The window is 01:10 to 01:20. Leaves say the opposite of MAS for each
    // user: MAS's times decide.
    let min = 60_000_000; // a minute in µs
    let users = [
        ("in1", Some(10 * min)),       // at --left-since: kept
        ("in2", Some(19 * min + 999)), // just before --left-until: kept
        ("before", Some(9 * min)),
        ("at_until", Some(20 * min)),
        ("later", Some(45 * min)),
        ("roomless", Some(15 * min)), // in no room, but MAS knows when
    ];
    let ms = |us: i64| T0 + us / 1000;
    let leaves = [
        ("in1", ms(50 * min)),
        ("in2", ms(min)),
        ("before", ms(15 * min)),
        ("at_until", ms(15 * min)),
        ("later", ms(15 * min)),
    ];
    let world = mas_find_world(&users, &leaves).await;
    let token = world.mas.add_personal_token();
    let w = Workdir::new();
    let since = "2026-11-26T01:10:00Z";
    let until = "2026-11-26T01:20:00Z";
    let mut cmd = mas_find(&w, &world, &["--left-since", since, "--left-until", until]);
    cmd.env("MAS_ADMIN_TOKEN", &token);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(w.path("users.csv")).unwrap();
    let rows = rows_of(&text, "@");
    let names: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(names, [id("in1"), id("in2"), id("roomless")]);
    assert_eq!(rows[&id("in1")].0, "2026-11-26T01:10:00.000Z");
    assert_eq!(rows[&id("in2")].0, "2026-11-26T01:19:00.000Z");
    assert_eq!(
        rows[&id("roomless")],
        (
            "2026-11-26T01:15:00.000Z".into(),
            "false".into(),
            String::new()
        )
    );
    // Rooms still follow --left-since: in1 left after it, in2 before.
    assert_eq!(rows[&id("in1")].2, "!hall:example.org");
    assert_eq!(rows[&id("in2")].2, "");
    let err = stderr(&out);
    for needle in [
        "deactivated before --left-since, left out: 1",
        "deactivated at or after --left-until, left out: 2",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("time unknown"), "{err}");
    assert!(!err.contains(&token), "the token is never printed");
    // A fixed token: not one request to MAS but GETs.
    let requests = world.mas.requests();
    assert!(!requests.is_empty());
    for (m, p) in requests {
        assert_eq!(m, "GET", "{p}");
    }
    assert_eq!(mas_list_requests(&world).len(), 3);
    synapse_only_gets(&world).await;
}

#[tokio::test]
async fn find_mas_without_mas_credentials_stops_before_listing() {
    let world = mas_find_world(&[("alice", Some(0))], &[]).await;
    let w = Workdir::new();
    let out = run(mas_find(&w, &world, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("find needs MAS's admin API") && err.contains("MAS_CLIENT_ID"),
        "{err}"
    );
    assert!(!w.path("users.csv").exists());
    assert!(mas_list_requests(&world).is_empty());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// A find file's rows for the users whose ID starts with `prefix`:
/// user → (deactivated_at, erased, rooms).
fn rows_of(text: &str, prefix: &str) -> BTreeMap<String, (String, String, String)> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        HEADER
    );
    let all: Vec<csv::StringRecord> = r.records().map(|rec| rec.unwrap()).collect();
    let ids: Vec<&str> = all.iter().map(|rec| &rec[0]).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "rows sorted by user ID");
    all.iter()
        .filter(|rec| rec[0].starts_with(prefix))
        .map(|rec| {
            (
                rec[0].to_owned(),
                (rec[1].to_owned(), rec[2].to_owned(), rec[3].to_owned()),
            )
        })
        .collect()
}

fn rooms(list: &[&String]) -> String {
    let set: std::collections::BTreeSet<&str> = list.iter().map(|r| r.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(";")
}

fn ms_of(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The real-Synapse scenario: users deactivated before, inside and after a
/// window, with the rooms they were in.
struct Scenario {
    prefix: String,
    /// Deactivated before the window.
    a1: String,
    /// Deactivated inside: b1 (a voluntary leave before the window, a kick
    /// inside it), b2 erased, b3, b4 also locked, b5, b6, and b7 in no room.
    b: Vec<String>,
    /// Deactivated after the window.
    c1: String,
    public: String,
    private: String,
    old: String,
    since: i64,
    until: i64,
}

async fn deactivate_around_a_window(s: &Synapse) -> Scenario {
    // Localparts that sort before every other test's users, so users other
    // tests deactivate or reactivate meanwhile never shift these in the pages.
    let prefix = format!("0f{}", tag());
    let id = |name: &str| s.id(&format!("{prefix}{name}"));
    let (a1, c1) = (id("a1"), id("c1"));
    let b: Vec<String> = (1..=7).map(|i| id(&format!("b{i}"))).collect();
    let admin = &s.token;
    let public = s.create_room(admin, "public_chat").await;
    let private = s.create_room(admin, "private_chat").await;
    let old = s.create_room(admin, "public_chat").await;
    let kicked = s.create_room(admin, "public_chat").await;
    let mut tokens = BTreeMap::new();
    for user in b.iter().chain([&a1, &c1]) {
        s.create(user, "pw-before-1").await;
        tokens.insert(user.clone(), s.login(user, "pw-before-1").await);
    }
    let mut joins: Vec<(&String, &String)> = [&a1, &b[0], &b[1], &b[3], &b[4], &b[5], &c1]
        .into_iter()
        .map(|user| (user, &public))
        .collect();
    joins.extend([
        (&b[0], &private),
        (&b[2], &private),
        (&b[0], &old),
        (&b[0], &kicked),
    ]);
    for (user, room) in joins {
        if room == &private {
            s.room_action(admin, &private, "invite", Some(user)).await;
        }
        s.room_action(&tokens[user], room, "join", None).await;
    }
    // b1 leaves a room of their own accord, before the window.
    s.room_action(&tokens[&b[0]], &old, "leave", None).await;
    // b4 is locked as well: Synapse lists such users only when asked for locked ones.
    s.lock(&b[3]).await;

    s.deactivate(&a1, false).await;
    s.wait_until_parted(&a1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let since = now_ms();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A kick inside the window is still not b1's own leave.
    s.room_action(admin, &kicked, "kick", Some(&b[0])).await;
    for (i, user) in b.iter().enumerate() {
        s.deactivate(user, i == 1).await;
    }
    for user in &b {
        s.wait_until_parted(user).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let until = now_ms();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.deactivate(&c1, false).await;
    s.wait_until_parted(&c1).await;
    Scenario {
        prefix: format!("@{prefix}"),
        a1,
        b,
        c1,
        public,
        private,
        old,
        since,
        until,
    }
}

/// `find` against the real server, in pages of 5, with the scenario's window or without.
fn real_find(
    s: &Synapse,
    w: &Workdir,
    output: &str,
    window: Option<&Scenario>,
) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("MATRIX_ADMIN_TOKEN", &s.token).args([
        "find",
        "-H",
        &s.url,
        "-o",
        output,
        "--no-progress",
        "--page-size",
        "5",
    ]);
    if let Some(sc) = window {
        c.args([
            "--left-since",
            &sc.since.to_string(),
            "--left-until",
            &sc.until.to_string(),
        ]);
    }
    c
}

#[tokio::test]
async fn find_real_synapse_window_rooms_and_restore_end_to_end() {
    let Some(s) = synapse() else { return };
    let sc = deactivate_around_a_window(&s).await;
    let (b, public, private) = (&sc.b, &sc.public, &sc.private);
    let w = Workdir::new();
    let out = run(real_find(&s, &w, "window.csv", Some(&sc))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(w.path("window.csv")).unwrap();
    let mine = rows_of(&text, &sc.prefix);
    let want = |user: &String, erased: &str, rs: &[&String]| {
        (user.clone(), (erased.to_owned(), rooms(rs)))
    };
    let expected: BTreeMap<String, (String, String)> = [
        want(&b[0], "false", &[public, private]),
        want(&b[1], "true", &[public]),
        want(&b[2], "false", &[private]),
        want(&b[3], "false", &[public]),
        want(&b[4], "false", &[public]),
        want(&b[5], "false", &[public]),
    ]
    .into();
    let got: BTreeMap<String, (String, String)> = mine
        .iter()
        .map(|(u, (_, erased, rs))| (u.clone(), (erased.clone(), rs.clone())))
        .collect();
    assert_eq!(got, expected, "{text}");
    for (user, (at, _, _)) in &mine {
        let at = ms_of(at);
        assert!(
            sc.since <= at && at < sc.until,
            "{user} at {at}: outside the window"
        );
    }
    let err = stderr(&out);
    assert!(
        err.contains("time unknown (in no room), left out"),
        "b7 is counted: {err}"
    );
    assert!(
        err.contains("deactivated before --left-since, left out"),
        "{err}"
    );

    // Without the window: everyone, b7 with no time, and the rooms of each
    // burst. b1's voluntary leave came seconds before the deactivation, well
    // within 60 s, so without --left-since it counts as part of the burst.
    let out = run(real_find(&s, &w, "all.csv", None)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = rows_of(
        &std::fs::read_to_string(w.path("all.csv")).unwrap(),
        &sc.prefix,
    );
    assert_eq!(all.len(), 9, "{all:?}");
    assert_eq!(all[&b[6]], (String::new(), "false".into(), String::new()));
    assert_eq!(all[&b[0]].2, rooms(&[public, private, &sc.old]));
    assert_eq!(all[&sc.a1].2, *public);
    assert!(ms_of(&all[&sc.a1].0) < sc.since, "{all:?}");
    assert!(ms_of(&all[&sc.c1].0) >= sc.until, "{all:?}");

    restore_from_find(&s, &w, &sc, &text, &expected).await;
}

/// Runs the main command on find's file (this test's rows only: the server
/// holds other tests' users too) and checks each user is back in exactly the
/// rooms find listed.
async fn restore_from_find(
    s: &Synapse,
    w: &Workdir,
    sc: &Scenario,
    text: &str,
    expected: &BTreeMap<String, (String, String)>,
) {
    let keep: String = text
        .lines()
        .filter(|l| l.starts_with(HEADER) || l.starts_with(&sc.prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    w.write("mine.csv", &keep);
    let args = [
        "--rooms-column",
        "rooms",
        "--include-erased",
        "--unlock",
        "--rate",
        "0",
    ];
    let out = run(s.tool(w, "mine.csv", "results.csv", &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = by_user(&w.results("results.csv"));
    assert_eq!(results.len(), expected.len());
    for (user, (_, rs)) in expected {
        let row = &results[user];
        assert_eq!(row.status, "reactivated", "{row:?}");
        let token = s.login(user, &row.password).await;
        let joined: Vec<String> = s.joined_rooms(&token).await.into_iter().collect();
        assert_eq!(joined.join(";"), *rs, "{user}'s rooms");
    }
    for user in [&sc.a1, &sc.c1, &sc.b[6]] {
        assert_eq!(s.user(user).await.unwrap()["deactivated"], true, "{user}");
    }
}
