//! The core job end to end against the real Synapse (`support::real_synapse`):
//! a mixed population, then the same input again; and a Synapse of the test's
//! own restarted in the middle of a run.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::real_synapse::{synapse, tag, OwnSynapse};
use crate::support::workdir::*;

#[tokio::test]
async fn real_synapse_mixed_population_end_to_end() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let lp = |name: &str| format!("{name}{t}");
    let deactivated: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| s.id(&lp(n)))
        .collect();
    let erased = s.id(&lp("mallory"));
    let active: HashMap<String, String> =
        [("erin", "erin-old-pass-1"), ("frank", "frank-old-pass-2")]
            .iter()
            .map(|(n, p)| (s.id(&lp(n)), p.to_string()))
            .collect();
    let unknown = s.id(&lp("alcie"));

    for id in deactivated.iter().chain([&erased]) {
        s.create(id, "before-deactivation").await;
    }
    for id in &deactivated {
        s.deactivate(id, false).await;
    }
    s.deactivate(&erased, true).await;
    for (id, pw) in &active {
        s.create(id, pw).await;
    }

    let w = Workdir::new();
    let mut input = String::from("user_id\n");
    input.push_str(&format!("{}\n", deactivated[0]));
    input.push_str(&format!("{}\n", lp("bob"))); // a bare localpart
    input.push_str(&format!("{}\n", deactivated[2]));
    input.push_str(&format!("{erased}\n"));
    for id in active.keys() {
        input.push_str(&format!("{id}\n"));
    }
    input.push_str(&format!(
        "{unknown}\n@zoe:matrix.org\n@bad user:{}\n",
        s.server_name
    ));
    input.push_str(&format!("{}\n", lp("alice"))); // duplicate of the first
    w.write("in.csv", &input);

    let out = run(s.command(&w, &["--rate", "0"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), 9, "{rows:#?}");
    let users = by_user(&rows);
    for id in &deactivated {
        let r = &users[id];
        assert_eq!(r.status, "reactivated", "{r:?}");
        assert!(
            s.can_log_in(id, &r.password).await,
            "{id} logs in with the new password"
        );
        assert!(!s.can_log_in(id, "before-deactivation").await);
    }
    for (id, pw) in &active {
        assert_eq!(users[id].status, "already_active");
        assert!(s.can_log_in(id, pw).await, "{id} keeps the old password");
    }
    assert_eq!(users[&unknown].status, "not_found");
    assert!(
        s.user(&unknown).await.is_none(),
        "an unknown ID is never created"
    );
    assert_eq!(users["@zoe:matrix.org"].status, "not_local");
    assert_eq!(
        users[&format!("@bad user:{}", s.server_name)].status,
        "invalid"
    );
    assert_eq!(users[&erased].status, "erased");
    let e = s.user(&erased).await.expect("the erased user exists");
    assert_eq!(
        (e["deactivated"].as_bool(), e["erased"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(mode_of(&w.path("out.csv")), 0o600);

    // Running the same input again changes nothing: the reactivated users are
    // now active and keep the passwords handed out by the first run.
    let out = run(s.tool(&w, "in.csv", "again.csv", &[])).await;
    assert_eq!(out.status.code(), Some(3));
    let again = by_user(&w.results("again.csv"));
    for id in &deactivated {
        assert_eq!(again[id].status, "already_active");
        assert!(s.can_log_in(id, &users[id].password).await);
    }

    // The erased user comes back only when asked for explicitly.
    w.write("erased.csv", format!("{erased}\n"));
    let out = run(s.tool(&w, "erased.csv", "erased-out.csv", &["--include-erased"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("erased-out.csv")[0];
    assert_eq!(row.status, "reactivated");
    assert!(s.can_log_in(&erased, &row.password).await);
}

#[tokio::test]
async fn real_synapse_restarted_mid_run_costs_no_user() {
    // An upgrade in the middle of a run: Synapse is stopped (SIGTERM), stays
    // down about 8 s, and comes back on the same port with the same data. The
    // run waits, goes on, and ends with every user reactivated, no --resume.
    let Some(own) = OwnSynapse::start("test-synapse-restart") else {
        return;
    };
    let s = &own.api;
    let t = tag();
    let ids: Vec<String> = (0..150).map(|i| s.id(&format!("r{t}n{i}"))).collect();
    for chunk in ids.chunks(25) {
        futures::future::join_all(chunk.iter().map(|id| async move {
            s.create(id, "old-password").await;
            s.deactivate(id, false).await;
        }))
        .await;
    }
    let w = Workdir::new();
    w.write("in.csv", ids.join("\n") + "\n");
    let child = Command::new(assert_cmd::cargo::cargo_bin("matrix-reactivate"))
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", &s.token)
        .args(["-H", &s.url, "in.csv", "-o", "out.csv", "--rate", "20"])
        .args(["--no-progress", "--summary-json", "summary.json"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool starts");
    let pid = child.id();
    let rows = || {
        let text = std::fs::read_to_string(w.path("out.csv")).unwrap_or_default();
        text.lines().count().saturating_sub(1)
    };
    let waiting = Instant::now();
    while rows() < 30 {
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    own.stop();
    let done_before = rows();
    tokio::time::sleep(Duration::from_secs(8)).await;
    own.restart();
    let finished = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(out) = finished else {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("the run did not end after the server came back");
    };
    let out = out.unwrap().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(done_before < ids.len(), "the server went away mid-run");
    assert!(err.contains("server unreachable: waiting"), "{err}");
    assert!(!err.contains("--resume"), "{err}");

    let users = by_user(&w.results("out.csv"));
    assert_eq!(users.len(), ids.len());
    for chunk in ids.chunks(25) {
        futures::future::join_all(chunk.iter().map(|id| {
            let row = users[id].clone();
            async move {
                assert_eq!(row.status, "reactivated", "{row:?}");
                assert!(s.can_log_in(id, &row.password).await, "{id} logs in");
            }
        }))
        .await;
    }
    let summary = w.summary();
    assert_eq!(summary["counts"]["reactivated"], 150);
    assert_eq!(summary["counts"]["failed"], 0);
    assert_eq!(summary["exit_code"], 0);
}
