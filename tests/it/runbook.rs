//! What runbooks and scripts rely on: the summary as JSON on every way a run
//! ends, and `--verbose` request lines that never show a secret.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::mock_synapse::{enc, ok, user_path, MockSynapse, State};
use crate::support::workdir::*;

/// Every status is counted, zeros included; returns the counts.
fn counts(v: &Value) -> &serde_json::Map<String, Value> {
    let c = v["counts"].as_object().expect("counts");
    let names = [
        "reactivated",
        "would_reactivate",
        "unlocked",
        "would_unlock",
        "already_active",
        "not_found",
        "erased",
        "not_local",
        "invalid",
        "failed",
    ];
    assert_eq!(c.len(), names.len(), "{c:?}");
    for n in names {
        assert!(c[n].is_u64(), "{n}: {c:?}");
    }
    c
}

#[tokio::test]
async fn the_json_summary_of_a_complete_run_even_quiet() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(3).await;
    m.user("@ghost:example.org", State::Missing).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .expect(3)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write(
        "in.csv",
        format!("{input}@ghost:example.org\n@u0:example.org\n"),
    );
    let args = ["--quiet", "--summary-json", "summary.json"];
    let out = run(w.reactivate(&m.url(), &args)).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stderr(&out), "", "--quiet");
    let v = w.summary();
    let c = counts(&v);
    assert_eq!(c["reactivated"], 3);
    assert_eq!(c["not_found"], 1);
    assert_eq!(c["failed"], 0);
    assert_eq!(v["format"], 1);
    assert_eq!(v["outcome"], "complete");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["rows"], 4);
    assert_eq!(v["duplicates"], 1);
    assert_eq!(v["partial"], 0);
    assert_eq!(v["resumed"], 0);
    assert_eq!(v["needs_attention"], 1);
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["mode"], "synapse");
    assert_eq!(v["homeserver"], m.url().as_str());
    assert_eq!(v["results"], "out.csv");
    assert_eq!(v["stopped"], Value::Null);
    let elapsed = v["elapsed_seconds"].as_f64().expect("a number");
    assert!(elapsed > 0.0 && elapsed < 60.0, "{elapsed}");
    let names: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "no temporary file left: {names:?}"
    );
}

#[tokio::test]
async fn the_json_summary_of_a_run_stopped_by_a_revoked_token() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(5).await;
    let revoked = ResponseTemplate::new(401).set_body_json(
        json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."}),
    );
    // Two reactivations, then the token is gone.
    Mock::given(method("PUT"))
        .respond_with(ok())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&m.server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(revoked)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let args = ["--concurrency", "1", "--summary-json", "summary.json"];
    let out = run(w.reactivate(&m.url(), &args)).await;
    assert_eq!(out.status.code(), Some(1));
    let v = w.summary();
    assert_eq!(counts(&v)["reactivated"], 2);
    assert_eq!(v["outcome"], "stopped");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["rows"], 2);
    let stopped = &v["stopped"];
    assert_eq!(stopped["reason"], "fatal");
    let message = stopped["message"].as_str().unwrap();
    assert!(message.contains("M_UNKNOWN_TOKEN"), "{message}");
    let resume = stopped["resume_command"].as_str().unwrap();
    assert!(
        resume.ends_with("--resume") && resume.contains("--summary-json summary.json"),
        "{resume}"
    );
    assert!(
        stderr(&out).contains(resume),
        "the same command as the text summary"
    );
}

#[tokio::test]
async fn the_json_summary_of_an_interrupted_run() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(12).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let child = Command::new(assert_cmd::cargo::cargo_bin("matrix-reactivate"))
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .args(["-H", &m.url(), "in.csv", "-o", "out.csv", "--rate", "4"])
        .args(["--no-progress", "--summary-json", "summary.json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let v = w.summary();
    let done = w.results("out.csv").len() as u64;
    assert!((1..12).contains(&done), "{done}");
    assert_eq!(counts(&v)["reactivated"], done);
    assert_eq!(v["outcome"], "interrupted");
    assert_eq!(v["exit_code"], 130);
    assert_eq!(v["stopped"]["reason"], "interrupted");
    let resume = v["stopped"]["resume_command"].as_str().unwrap();
    assert!(resume.ends_with("--resume"), "{resume}");
    assert!(!resume.contains(TOKEN));
    assert!(stderr(&out).contains(resume));
}

#[tokio::test]
async fn verbose_prints_each_request_and_no_secret() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(2).await;
    // u1's first reactivation meets a server error: its second try is attempt 2.
    Mock::given(method("PUT"))
        .and(path(user_path("@u1:example.org")))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&m.server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let out = run(w.reactivate(&m.url(), &["-v", "--quiet"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let u0 = format!("/_synapse/admin/v2/users/{}", enc("@u0:example.org"));
    let u1 = format!("/_synapse/admin/v2/users/{}", enc("@u1:example.org"));
    for line in [
        format!("request: GET {u0} → 200 · attempt 1 · "),
        format!("request: PUT {u0} → 200 · attempt 1 · "),
        format!("request: PUT {u1} → 500 · attempt 1 · "),
        format!("request: PUT {u1} → 200 · attempt 2 · "),
        "request: GET /_matrix/client/v3/account/whoami → 200 · attempt 1 · ".to_owned(),
    ] {
        assert!(err.contains(&line), "no line {line:?} in\n{err}");
    }
    assert!(
        err.lines()
            .all(|l| l.starts_with("request: ") && l.ends_with(" ms")),
        "--quiet leaves only the request lines:\n{err}"
    );
    assert!(!err.contains(TOKEN), "the token never shows");
    for row in w.results("out.csv") {
        assert!(!row.password.is_empty());
        assert!(!err.contains(&row.password), "a password shows in\n{err}");
    }
}
