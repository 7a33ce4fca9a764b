//! `--rate auto` through the real binary: against a mock whose answers slow
//! down and 429 (the pace follows, says why, and keeps every row), and
//! against the real Synapse (every password works).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::mock_synapse::*;
use crate::support::real_synapse::{synapse, tag};
use crate::support::workdir::*;

/// Reactivations answered in 40 ms; the `limited`th one gets a 429.
#[derive(Clone)]
struct Puts {
    count: Arc<AtomicUsize>,
    limited: usize,
}

impl Respond for Puts {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.limited {
            return ResponseTemplate::new(429).set_body_json(
                json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": 200}),
            );
        }
        ok().set_delay(Duration::from_millis(40))
    }
}

#[tokio::test]
async fn rate_auto_climbs_backs_off_on_a_429_and_reports_the_pace() {
    let m = MockSynapse::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"versions": ["v1.11"]})))
        .named("the probe")
        .mount(&m.server)
        .await;
    let users = 200;
    let input = m.deactivated_users(users).await;
    let puts = Puts {
        count: Arc::new(AtomicUsize::new(0)),
        limited: 150,
    };
    Mock::given(method("PUT"))
        .respond_with(puts.clone())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let args = [
        "--rate",
        "auto",
        "--concurrency",
        "3",
        "-v",
        "--summary-json",
        "summary.json",
    ];
    let out = run(w.reactivate(&m.url(), &args)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), users);
    assert!(rows.iter().all(|r| r.status == "reactivated"), "{rows:?}");
    assert_eq!(
        puts.count.load(Ordering::SeqCst),
        users + 1,
        "the 429 was sent again"
    );

    assert!(err.contains("Pace: auto, up to 3 at once"), "{err}");
    let changes: Vec<&str> = err.lines().filter(|l| l.starts_with("pace: ")).collect();
    assert!(
        changes
            .iter()
            .any(|l| l.starts_with("pace: 1 → 2 at once") && l.contains("room to grow")),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|l| l.ends_with("the server answered 429")),
        "{changes:#?}"
    );
    assert!(err.contains("Pace: auto held"), "{err}");

    let pace = &w.summary()["pace"];
    assert_eq!(pace["mode"], "auto");
    let held = pace["seconds_at_once"]
        .as_object()
        .expect("time at each level");
    assert!(held.contains_key("3"), "reached the ceiling: {pace}");
    assert!(
        held.keys().all(|k| k.parse::<usize>().unwrap() <= 3),
        "never above --concurrency: {pace}"
    );
    assert!(pace["probe_idle_ms"].as_f64().unwrap() > 0.0, "{pace}");
    assert!(pace["changes"].as_u64().unwrap() >= 3, "{pace}");
}

#[tokio::test]
async fn a_fixed_pace_is_in_the_summary_too() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(2).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let args = ["--rate", "7", "--summary-json", "summary.json"];
    let out = run(w.reactivate(&m.url(), &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        w.summary()["pace"],
        json!({"mode": "fixed", "at_once": 4, "rate": 7.0})
    );
    assert!(!stderr(&out).contains("Pace:"));
}

#[tokio::test]
async fn the_auto_flags_name_themselves_when_misused() {
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    for (args, says) in [
        (&["--max-rate", "3"][..], "--max-rate is for --rate auto"),
        (
            &["--rate", "auto", "--max-slowdown", "1"][..],
            "--max-slowdown 1:",
        ),
        (&["--rate", "quick"][..], "--rate quick:"),
    ] {
        let out = run(w.reactivate("http://127.0.0.1:9", args)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!w.path("out.csv").exists());
    }
}

#[tokio::test]
async fn real_synapse_rate_auto_every_password_works() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let ids: Vec<String> = (0..16).map(|i| s.id(&format!("pace{i}x{t}"))).collect();
    for id in &ids {
        s.create(id, "before-deactivation").await;
        s.deactivate(id, false).await;
    }
    let w = Workdir::new();
    w.write("in.csv", ids.join("\n"));
    let args = [
        "--rate",
        "auto",
        "--concurrency",
        "4",
        "--summary-json",
        "summary.json",
    ];
    let out = run(s.command(&w, &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = by_user(&w.results("out.csv"));
    assert_eq!(users.len(), ids.len());
    for id in &ids {
        let r = &users[id];
        assert_eq!(r.status, "reactivated", "{r:?}");
        assert!(s.can_log_in(id, &r.password).await, "{id} logs in");
    }
    let pace = &w.summary()["pace"];
    assert_eq!(pace["mode"], "auto", "{pace}");
    assert!(pace["probe_median_ms"].as_f64().is_some(), "{pace}");
}
