//! Scenarios against a mock admin API (wiremock): every status, the preflight,
//! that no PUT goes where it must not, and pacing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{any, body_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::mock_synapse::*;
use crate::support::workdir::*;

#[tokio::test]
async fn every_status_and_no_forbidden_put() {
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.user("@bob:example.org", State::Deactivated).await;
    m.user("@erin:example.org", State::Active).await;
    m.user("@mallory:example.org", State::Erased).await;
    m.user("@alcie:example.org", State::Missing).await;
    m.user("@Upper/Case+x:example.org", State::Deactivated)
        .await;
    m.allow_put("@alice:example.org", 1, ok()).await;
    m.allow_put("@bob:example.org", 1, ok()).await;
    m.allow_put("@Upper/Case+x:example.org", 1, ok()).await;

    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id\n@alice:example.org\nbob\n@erin:example.org\n@mallory:example.org\n\
         @alcie:example.org\n@zoe:matrix.org\n@bad user:example.org\nalice\n\
         @Upper/Case+x:example.org\n",
    );
    let out = run(w.reactivate(&m.url(), &[])).await;
    assert_eq!(out.status.code(), Some(3), "rows need attention");

    let rows = w.results("out.csv");
    let users = by_user(&rows);
    assert_eq!(
        rows.len(),
        8,
        "one row per distinct user plus the invalid line"
    );
    let status = |u: &str| users[u].status.as_str();
    assert_eq!(status("@alice:example.org"), "reactivated");
    assert_eq!(status("@bob:example.org"), "reactivated");
    assert_eq!(status("@Upper/Case+x:example.org"), "reactivated");
    assert_eq!(status("@erin:example.org"), "already_active");
    assert_eq!(status("@mallory:example.org"), "erased");
    assert_eq!(status("@alcie:example.org"), "not_found");
    assert_eq!(status("@zoe:matrix.org"), "not_local");
    assert_eq!(status("@bad user:example.org"), "invalid");
    assert!(users["@bad user:example.org"].error.contains("line 8"));

    // Passwords only for reactivated rows, and each is the one the server got.
    for r in &rows {
        assert_eq!(r.password.is_empty(), r.status != "reactivated", "{r:?}");
    }
    for u in [
        "@alice:example.org",
        "@bob:example.org",
        "@Upper/Case+x:example.org",
    ] {
        let bodies = m.put_bodies(u).await;
        assert_eq!(
            bodies,
            [json!({"deactivated": false, "password": users[u].password})]
        );
        assert_eq!(users[u].password.len(), 24);
    }
    assert_eq!(mode_of(&w.path("out.csv")), 0o600);
    assert!(
        !w.path("out.csv.journal").exists(),
        "journal removed after a complete run"
    );

    let err = stderr(&out);
    assert!(err.contains("duplicate lines"), "{err}");
    assert!(err.contains("1 not_found"), "{err}");
    assert!(!err.contains(TOKEN), "the token is never printed");
    let text = std::fs::read_to_string(w.path("out.csv")).unwrap();
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn dry_run_sends_no_put() {
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.user("@erin:example.org", State::Active).await;
    m.user("@mallory:example.org", State::Erased).await;
    let w = Workdir::new();
    w.write("in.csv", "alice\nerin\n");
    let out = run(w.reactivate(&m.url(), &["--dry-run"])).await;
    assert_eq!(out.status.code(), Some(0));
    let users = by_user(&w.results("out.csv"));
    assert_eq!(users["@alice:example.org"].status, "would_reactivate");
    assert_eq!(users["@alice:example.org"].password, "");
    assert_eq!(users["@erin:example.org"].status, "already_active");
    assert!(stderr(&out).contains("nothing was changed"));

    // With --include-erased, an erased user would be reactivated too.
    let w = Workdir::new();
    w.write("in.csv", "mallory\n");
    let out = run(w.reactivate(&m.url(), &["--dry-run", "--include-erased"])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.results("out.csv")[0].status, "would_reactivate");
}

#[tokio::test]
async fn include_erased_reactivates_erased_users() {
    let m = MockSynapse::start().await;
    m.user("@mallory:example.org", State::Erased).await;
    m.allow_put("@mallory:example.org", 1, ok()).await;
    let w = Workdir::new();
    w.write("in.csv", "@mallory:example.org\n");
    let out = run(w.reactivate(&m.url(), &["--include-erased"])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.results("out.csv")[0].status, "reactivated");
}

#[tokio::test]
async fn a_refused_put_is_a_failed_row_with_the_servers_reason() {
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.allow_put(
        "@alice:example.org",
        1,
        ResponseTemplate::new(400).set_body_json(json!({
            "errcode": "M_UNKNOWN", "error": "Cannot reactivate: something"
        })),
    )
    .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&m.url(), &[])).await;
    assert_eq!(out.status.code(), Some(3));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "failed");
    assert_eq!(
        row.password, "",
        "a password the server refused is not handed out"
    );
    assert!(
        row.error.contains("M_UNKNOWN") && row.error.contains("Cannot reactivate"),
        "{row:?}"
    );
}

#[tokio::test]
async fn passwords_from_a_column_and_no_password() {
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Deactivated).await;
    m.user("@bob:example.org", State::Deactivated).await;
    m.allow_put("@alice:example.org", 1, ok()).await;
    m.allow_put("@bob:example.org", 1, ok()).await;
    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id,Initial Password\nalice,\"s3cret, with comma\"\nbob,b0b-Pass\n",
    );
    let out = run(w.reactivate(&m.url(), &["--password-column", "initial password"])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        m.put_bodies("@alice:example.org").await,
        [json!({"deactivated": false, "password": "s3cret, with comma"})]
    );
    let users = by_user(&w.results("out.csv"));
    assert_eq!(users["@bob:example.org"].password, "b0b-Pass");

    let m = MockSynapse::start().await;
    m.user("@carol:example.org", State::Deactivated).await;
    Mock::given(method("PUT"))
        .and(path(user_path("@carol:example.org")))
        .and(body_json(json!({"deactivated": false})))
        .respond_with(ok())
        .expect(1)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "carol\n");
    let out = run(w.reactivate(&m.url(), &["--no-password"])).await;
    assert_eq!(out.status.code(), Some(0));
    let row = &w.results("out.csv")[0];
    assert_eq!(
        (row.status.as_str(), row.password.as_str()),
        ("reactivated", "")
    );
}

#[tokio::test]
async fn no_password_is_refused_on_old_servers() {
    let m = MockSynapse::start_with_version("1.98.0").await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&m.url(), &["--no-password"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("1.98.0") && stderr(&out).contains("--no-password"));
    assert!(
        !w.path("out.csv").exists(),
        "no results file for a run that did nothing"
    );
}

/// A server that knows its version and answers whoami with `whoami`, nothing else.
async fn answering_whoami(whoami: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/_synapse/admin/v1/server_version"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"server_version": "1.163.2"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/_matrix/client/v3/account/whoami"))
        .respond_with(whoami)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn preflight_failures_are_fatal_and_clear() {
    // Unreachable: nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let url = format!("http://127.0.0.1:{port}");
    let out = run(w.reactivate(&url, &["--max-attempts", "1"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&url),
        "names the URL: {}",
        stderr(&out)
    );
    assert!(!w.path("out.csv").exists());

    // A token the server rejects.
    let server = answering_whoami(ResponseTemplate::new(401).set_body_json(json!({
        "errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."
    })))
    .await;
    let out = run(w.reactivate(&server.uri(), &[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rejected the access token"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("M_UNKNOWN_TOKEN"));

    // A valid token of a user who is not an admin.
    let server = answering_whoami(
        ResponseTemplate::new(200).set_body_json(json!({"user_id": "@joe:example.org"})),
    )
    .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "errcode": "M_FORBIDDEN", "error": "You are not a server admin"
        })))
        .mount(&server)
        .await;
    let out = run(w.reactivate(&server.uri(), &[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("@joe:example.org, who is not a server admin"),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("out.csv").exists());
    let sent = server.received_requests().await.unwrap();
    assert!(
        sent.iter().all(|r| r.method.as_str() == "GET"),
        "no change was attempted"
    );
}

#[tokio::test]
async fn existing_output_is_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    w.write("out.csv", "precious\n");
    let out = run(w.reactivate(&server.uri(), &[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"));
    assert!(stderr(&out).contains("--resume"), "says how to resume");
    assert_eq!(
        std::fs::read_to_string(w.path("out.csv")).unwrap(),
        "precious\n"
    );
}

/// Records when each request arrived.
struct Clock(Arc<Mutex<Vec<Instant>>>);

impl Respond for Clock {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ok()
    }
}

#[tokio::test]
async fn rate_spaces_the_reactivations() {
    let m = MockSynapse::start().await;
    let times = Arc::new(Mutex::new(Vec::new()));
    let input = m.deactivated_users(8).await;
    Mock::given(method("PUT"))
        .respond_with(Clock(times.clone()))
        .expect(8)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", input);
    let out = run(w.reactivate(
        &m.url(),
        &["--rate", "5", "--burst", "1", "--concurrency", "8"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let mut t = times.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), 8);
    // 5 per second, burst 1: one PUT every 200 ms, even with 8 requests allowed
    // in flight. Slots are exact; a send may be late (a loaded machine), never early.
    let gaps: Vec<Duration> = t.windows(2).map(|p| p[1] - p[0]).collect();
    let median_gap = {
        let mut g = gaps.clone();
        g.sort();
        g[g.len() / 2]
    };
    assert!(
        median_gap >= Duration::from_millis(185) && median_gap <= Duration::from_millis(260),
        "gaps {gaps:?}"
    );
    for (i, a) in t.iter().enumerate() {
        let in_one_second = t[i..]
            .iter()
            .take_while(|b| **b - *a < Duration::from_secs(1))
            .count();
        assert!(
            in_one_second <= 6,
            "{in_one_second} PUTs within 1 s: {gaps:?}"
        );
    }
    let span = t[7] - t[0];
    assert!(
        span >= Duration::from_millis(1300) && span <= Duration::from_millis(2300),
        "span {span:?}"
    );
}

#[tokio::test]
async fn standard_input_and_an_explicit_server_name() {
    let m = MockSynapse::start().await;
    m.user("@alice:other.example", State::Deactivated).await;
    m.allow_put("@alice:other.example", 1, ok()).await;
    let w = Workdir::new();
    let mut c = w.cmd();
    c.args([
        "-H",
        &m.url(),
        "-",
        "-o",
        "out.csv",
        "--server-name",
        "other.example",
    ])
    .write_stdin("alice\n@bob:example.org\n");
    let out = run(c).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "bob is not local to other.example"
    );
    let users = by_user(&w.results("out.csv"));
    assert_eq!(users["@alice:other.example"].status, "reactivated");
    assert_eq!(users["@bob:example.org"].status, "not_local");
}

#[tokio::test]
async fn progress_lines_when_stderr_is_not_a_terminal() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(20).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .expect(20)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", input);
    let mut c = w.cmd();
    c.args(["-H", &m.url(), "in.csv", "-o", "out.csv", "--rate", "3"]);
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("progress: "))
        .unwrap_or_else(|| panic!("a plain progress line: {err}"));
    assert!(
        line.contains("/20 (") && line.contains("reactivated"),
        "{line}"
    );
}
