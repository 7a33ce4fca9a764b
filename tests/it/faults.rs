//! Faults cost time, never data: retries, 429 pauses, timeouts, cut connections,
//! a token revoked mid-run, a server that goes away and comes back, one that
//! stays away past --max-outage, answers that are not JSON.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::mock_synapse::{ok, user_path, MockSynapse, State};
use crate::support::outage_proxy::OutageProxy;
use crate::support::workdir::*;

/// Answers PUTs from a script (one template per call, the last repeated) and
/// records when each arrived and what it carried.
#[derive(Clone)]
struct Script {
    replies: Arc<Vec<ResponseTemplate>>,
    seen: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    calls: Arc<AtomicUsize>,
}

impl Script {
    fn new(replies: Vec<ResponseTemplate>) -> Self {
        Script {
            replies: Arc::new(replies),
            seen: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<(Instant, serde_json::Value)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Respond for Script {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let body = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
        self.seen.lock().unwrap().push((Instant::now(), body));
        let i = self.calls.fetch_add(1, Ordering::SeqCst);
        self.replies[i.min(self.replies.len() - 1)].clone()
    }
}

fn limited() -> ResponseTemplate {
    ResponseTemplate::new(429)
        .set_body_json(json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests"}))
}

/// One deactivated user whose PUTs follow `replies`; returns the script.
async fn one_user(m: &MockSynapse, replies: Vec<ResponseTemplate>) -> Script {
    m.user("@alice:example.org", State::Deactivated).await;
    let s = Script::new(replies);
    Mock::given(method("PUT"))
        .and(path(user_path("@alice:example.org")))
        .respond_with(s.clone())
        .mount(&m.server)
        .await;
    s
}

/// The gap before the first retry lies in [min, max] milliseconds.
fn assert_first_gap(gaps: &[Duration], min: u64, max: u64) {
    let range = Duration::from_millis(min)..=Duration::from_millis(max);
    assert!(range.contains(&gaps[0]), "{gaps:?} not in {range:?}");
}

/// Runs alice through the tool and checks she ends reactivated with the one
/// password every attempt carried; returns the gaps between attempts.
async fn reactivate_alice(
    m: &MockSynapse,
    s: &Script,
    args: &[&str],
    attempts: usize,
) -> Vec<Duration> {
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&m.url(), args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    let seen = s.seen();
    assert_eq!(seen.len(), attempts, "attempts");
    for (_, body) in &seen {
        assert_eq!(
            body["password"],
            row.password.as_str(),
            "every attempt carries the same password"
        );
    }
    seen.windows(2).map(|p| p[1].0 - p[0].0).collect()
}

#[tokio::test]
async fn retry_after_in_seconds() {
    let m = MockSynapse::start().await;
    let s = one_user(&m, vec![limited().insert_header("Retry-After", "1"), ok()]).await;
    let gaps = reactivate_alice(&m, &s, &[], 2).await;
    assert_first_gap(&gaps, 950, 2500);
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let m = MockSynapse::start().await;
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let s = one_user(
        &m,
        vec![limited().insert_header("Retry-After", when.as_str()), ok()],
    )
    .await;
    let gaps = reactivate_alice(&m, &s, &[], 2).await;
    // Whole seconds: the date is between 1 and 2 s away when it is read.
    assert_first_gap(&gaps, 900, 3000);
}

#[tokio::test]
async fn retry_after_ms_in_the_body() {
    let m = MockSynapse::start().await;
    let body = json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 1200});
    let s = one_user(
        &m,
        vec![ResponseTemplate::new(429).set_body_json(body), ok()],
    )
    .await;
    let gaps = reactivate_alice(&m, &s, &[], 2).await;
    assert_first_gap(&gaps, 1150, 2500);
}

#[tokio::test]
async fn bare_429_from_a_proxy_backs_off_exponentially() {
    let m = MockSynapse::start().await;
    let bare = ResponseTemplate::new(429).set_body_string("<html>slow down</html>");
    let s = one_user(&m, vec![bare.clone(), bare.clone(), bare, ok()]).await;
    let gaps = reactivate_alice(&m, &s, &[], 4).await;
    // Equal jitter over 0.5 s, 1 s, 2 s steps: at least half of each.
    assert!(gaps[0] >= Duration::from_millis(240), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(490), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(990), "{gaps:?}");
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_password() {
    let m = MockSynapse::start().await;
    let s = one_user(
        &m,
        vec![
            ResponseTemplate::new(500)
                .set_body_json(json!({"errcode": "M_UNKNOWN", "error": "Internal server error"})),
            ResponseTemplate::new(502).set_body_string("<html><h1>502 Bad Gateway</h1></html>"),
            ok(),
        ],
    )
    .await;
    let gaps = reactivate_alice(&m, &s, &[], 3).await;
    // Full jitter: never more than the step (0.5 s, then 1 s) plus scheduling slack.
    assert!(gaps[0] <= Duration::from_millis(1200), "{gaps:?}");
    assert!(gaps[1] <= Duration::from_millis(1700), "{gaps:?}");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_retried() {
    let m = MockSynapse::start().await;
    let s = one_user(&m, vec![ok().set_delay(Duration::from_secs(3)), ok()]).await;
    let gaps = reactivate_alice(&m, &s, &["--timeout", "1"], 2).await;
    assert_first_gap(&gaps, 950, 5000);
}

#[tokio::test]
async fn retries_give_up_and_the_row_fails_with_the_reason() {
    let m = MockSynapse::start().await;
    let _s = one_user(
        &m,
        vec![ResponseTemplate::new(500).set_body_string("<html>Internal Server Error</html>")],
    )
    .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&m.url(), &["--max-attempts", "2"])).await;
    assert_eq!(out.status.code(), Some(3));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "failed");
    assert!(
        row.error.contains("HTTP 500") && row.error.contains("Internal Server Error"),
        "{row:?}"
    );
}

#[tokio::test]
async fn a_gateway_answering_503_past_max_outage_stops_the_run_and_fails_nobody() {
    // A proxy whose server is gone: 503 on every try is an outage, not a
    // reason to fail the user, however few --max-attempts.
    let m = MockSynapse::start().await;
    let s = one_user(
        &m,
        vec![ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>")],
    )
    .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let args = ["--max-attempts", "2", "--max-outage", "2"];
    let out = run(w.reactivate(&m.url(), &args)).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("longer than --max-outage 2") && err.contains("HTTP 503"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
    assert!(
        s.seen().len() > 2,
        "tries beyond --max-attempts: {}",
        s.seen().len()
    );
    assert!(
        w.results("out.csv").is_empty(),
        "no row failed for the outage"
    );
    assert!(w.path("out.csv.journal").exists(), "kept for --resume");
}

#[tokio::test]
async fn answers_that_are_not_json_fail_the_row_readably() {
    let m = MockSynapse::start().await;
    Mock::given(method("GET"))
        .and(path(user_path("@alice:example.org")))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>Welcome to nginx!</html>"))
        .mount(&m.server)
        .await;
    Mock::given(method("GET"))
        .and(path(user_path("@bob:example.org")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"deactivated": "maybe"})))
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\nbob\n");
    let out = run(w.reactivate(&m.url(), &["--max-attempts", "2"])).await;
    assert_eq!(out.status.code(), Some(3));
    let users = by_user(&w.results("out.csv"));
    let a = &users["@alice:example.org"];
    assert_eq!(a.status, "failed");
    assert!(
        a.error.contains("not JSON") && a.error.contains("Welcome to nginx"),
        "{a:?}"
    );
    assert_eq!(users["@bob:example.org"].status, "failed");
}

#[tokio::test]
async fn a_token_revoked_mid_run_stops_the_run_and_resume_finishes_it() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(6).await;
    // The third PUT finds the token revoked.
    let s = Script::new(vec![
        ok(),
        ok(),
        ResponseTemplate::new(401).set_body_json(
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
        ),
        ok(),
    ]);
    Mock::given(method("PUT"))
        .respond_with(s.clone())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let out = run(w.reactivate(&m.url(), &["--concurrency", "1"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("M_UNKNOWN_TOKEN") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        3,
        "no request after the 401"
    );
    let rows = w.results("out.csv");
    assert_eq!(
        rows.len(),
        2,
        "rows done before the stop are kept: {rows:?}"
    );
    assert!(
        w.path("out.csv.journal").exists(),
        "the journal is kept for --resume"
    );

    // A new token later: resume completes the run, nobody twice.
    let out = run(w.reactivate(&m.url(), &["--concurrency", "1", "--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    let users = by_user(&rows);
    assert_eq!(users.len(), 6);
    assert!(rows.iter().all(|r| r.status == "reactivated"));
    // u2's first PUT was refused; its resumed PUT reuses the journaled password.
    let bodies: Vec<_> = s.seen().into_iter().map(|(_, b)| b).collect();
    let u2 = &users["@u2:example.org"].password;
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b["password"] == u2.as_str())
            .count(),
        2
    );
    assert!(!w.path("out.csv.journal").exists());
}

#[tokio::test]
async fn a_server_that_stops_answering_past_max_outage_stops_the_run() {
    let m = MockSynapse::start().await;
    let mut input = String::new();
    for i in 0..40 {
        let id = format!("@u{i}:example.org");
        input.push_str(&format!("{id}\n"));
    }
    // Every user lookup hangs past the timeout: a transport failure each time.
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("^/_synapse/admin/v2/users/"))
        .respond_with(ok().set_delay(Duration::from_secs(5)))
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let started = Instant::now();
    let out = run(w.reactivate(
        &m.url(),
        &[
            "--timeout",
            "0.2",
            "--concurrency",
            "4",
            "--max-attempts",
            "3",
            "--max-outage",
            "2",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the server has been unreachable for ")
            && err.contains("longer than --max-outage 2")
            && err.contains("timed out"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        w.results("out.csv").is_empty(),
        "no user was failed for the server's outage"
    );
}

/// A minimal HTTP server that applies the first PUT and then cuts the
/// connection without answering, the worst case for a client: the change
/// landed and the client cannot know.
struct CutServer {
    url: String,
    passwords: Arc<Mutex<Vec<String>>>,
}

fn cut_server() -> CutServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let passwords: Arc<Mutex<Vec<String>>> = Arc::default();
    let applied = passwords.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let applied = applied.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                let first = head.lines().next().unwrap_or("").to_owned();
                let deactivated = applied.lock().unwrap().is_empty();
                let reply = if first.starts_with("GET /_synapse/admin/v1/server_version") {
                    json!({"server_version": "1.163.2"})
                } else if first.starts_with("GET /_matrix/client/v3/account/whoami") {
                    json!({"user_id": "@admin:example.org"})
                } else if first.contains("auth_metadata") {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    return;
                } else if first.starts_with("GET ") {
                    json!({"deactivated": deactivated, "erased": false})
                } else {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let mut applied = applied.lock().unwrap();
                    applied.push(v["password"].as_str().unwrap().to_owned());
                    if applied.len() == 1 {
                        return; // applied, then the connection drops unanswered
                    }
                    json!({})
                };
                let text = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    text.len(),
                    text
                );
            });
        }
    });
    CutServer { url, passwords }
}

#[tokio::test]
async fn a_cut_connection_after_the_change_is_retried_with_the_same_password() {
    let server = cut_server();
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&server.url, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    let applied = server.passwords.lock().unwrap().clone();
    assert_eq!(applied.len(), 2, "the PUT was sent again");
    assert!(
        applied.iter().all(|p| *p == row.password),
        "the server holds the password in the results"
    );
}

#[tokio::test]
async fn a_429_slows_the_whole_run() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(5).await;
    let s = Script::new(vec![limited().insert_header("Retry-After", "2"), ok()]);
    Mock::given(method("PUT"))
        .respond_with(s.clone())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let out = run(w.reactivate(&m.url(), &["--rate", "10", "--concurrency", "4"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = s.seen();
    assert_eq!(seen.len(), 6);
    let t429 = seen[0].0;
    // Every other request, of every user, waited out the server's 2 s.
    for (t, _) in &seen[1..] {
        assert!(*t - t429 >= Duration::from_millis(1950), "{:?}", *t - t429);
    }
}

fn user_json(deactivated: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"name": "@alice:example.org", "deactivated": deactivated, "erased": false}),
    )
}

/// Alice's lookups and reactivations both follow scripts; runs her through
/// the tool with two attempts per request.
async fn scripted_alice(
    gets: Vec<ResponseTemplate>,
    puts: Vec<ResponseTemplate>,
) -> (std::process::Output, Row, Script, Script) {
    let m = MockSynapse::start().await;
    let g = Script::new(gets);
    Mock::given(method("GET"))
        .and(path(user_path("@alice:example.org")))
        .respond_with(g.clone())
        .mount(&m.server)
        .await;
    let p = Script::new(puts);
    Mock::given(method("PUT"))
        .respond_with(p.clone())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&m.url(), &["--max-attempts", "2"])).await;
    let row = w.results("out.csv").remove(0);
    (out, row, g, p)
}

#[tokio::test]
async fn an_unconfirmed_reactivation_is_looked_up_again() {
    // The PUT never gets a clean answer, but it landed: the second look says so.
    let internal = ResponseTemplate::new(500)
        .set_body_json(json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}));
    let (out, row, gets, puts) =
        scripted_alice(vec![user_json(true), user_json(false)], vec![internal]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(row.status, "reactivated");
    let sent = puts.seen();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, b)| b["password"] == row.password.as_str()));
    assert_eq!(gets.seen().len(), 2);
}

#[tokio::test]
async fn a_password_that_may_have_landed_is_never_dropped() {
    // Neither the PUT nor the second look gets an answer: the row fails, and
    // keeps the password the account may now hold.
    let (out, row, _, puts) = scripted_alice(
        vec![user_json(true), ResponseTemplate::new(500)],
        vec![ResponseTemplate::new(500)],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(row.status, "failed");
    assert!(row.error.contains("may now have the password"), "{row:?}");
    assert_eq!(puts.seen()[0].1["password"], row.password.as_str());
}

#[tokio::test]
async fn resume_reuses_journaled_passwords_even_without_results() {
    // An earlier run journaled two passwords and died before writing any row:
    // alice's reactivation landed, bob's was never sent.
    let m = MockSynapse::start().await;
    m.user("@alice:example.org", State::Active).await;
    m.user("@bob:example.org", State::Deactivated).await;
    m.allow_put("@bob:example.org", 1, ok()).await;
    let w = Workdir::new();
    w.write("in.csv", "alice\nbob\n");
    w.write(
        "out.csv.journal",
        "@alice:example.org,alice-pass-1\n@bob:example.org,bob-pass-2\n",
    );

    let out = run(w.reactivate(&m.url(), &[])).await;
    assert_eq!(out.status.code(), Some(1), "a journal is never ignored");
    assert!(stderr(&out).contains("--resume"));

    let out = run(w.reactivate(&m.url(), &["--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = by_user(&w.results("out.csv"));
    assert_eq!(users["@alice:example.org"].status, "reactivated");
    assert_eq!(users["@alice:example.org"].password, "alice-pass-1");
    assert_eq!(users["@bob:example.org"].password, "bob-pass-2");
    assert_eq!(
        m.put_bodies("@bob:example.org").await[0]["password"],
        "bob-pass-2"
    );
}

/// How many PUTs the mock server has received.
async fn puts_received(m: &MockSynapse) -> usize {
    let received = m.server.received_requests().await.unwrap_or_default();
    received
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .count()
}

#[tokio::test]
async fn a_server_that_goes_away_for_seconds_costs_no_user() {
    // The server restarts mid-run: for 3 s every connection is refused and the
    // open ones are cut. The run waits, goes on, and fails nobody, though each
    // request meets the outage more often than its 2 attempts.
    let m = MockSynapse::start().await;
    let n = 30;
    let input = m.deactivated_users(n).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .mount(&m.server)
        .await;
    let proxy = OutageProxy::start(*m.server.address()).await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let args = ["--rate", "10", "--concurrency", "4", "--max-attempts", "2"];
    let outage = async {
        while puts_received(&m).await < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.go_down().await;
        let before = puts_received(&m).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(puts_received(&m).await, before, "nothing got through");
        proxy.come_back().await;
        before
    };
    let (out, before) = tokio::join!(run(w.reactivate(&proxy.url(), &args)), outage);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(before < n, "the outage came mid-run");
    let err = stderr(&out);
    assert!(
        err.contains("server unreachable: waiting") && err.contains("server answers again"),
        "{err}"
    );
    let rows = w.results("out.csv");
    assert_eq!(by_user(&rows).len(), n);
    for r in &rows {
        assert_eq!(r.status, "reactivated", "{r:?}");
        // A PUT cut after it landed was sent again: with the same password.
        let bodies = m.put_bodies(&r.user_id).await;
        assert!(!bodies.is_empty());
        assert!(bodies.iter().all(|b| b["password"] == r.password.as_str()));
    }
    assert!(!w.path("out.csv.journal").exists());
}
