//! Interruptions cost time, never passwords: Ctrl-C stops cleanly and prints the
//! command that resumes; kill -9 at random moments against a real Synapse, then
//! --resume until done, leaves one row per user and every password working.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::mock_synapse::{ok, MockSynapse};
use crate::support::real_synapse::{synapse, tag};
use crate::support::workdir::*;

use wiremock::matchers::method;
use wiremock::Mock;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("matrix-reactivate")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

#[tokio::test]
async fn ctrl_c_stops_cleanly_and_the_printed_command_resumes() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(12).await;
    Mock::given(method("PUT"))
        .respond_with(ok())
        .expect(12)
        .mount(&m.server)
        .await;
    let w = Workdir::new();
    w.write("in.csv", &input);

    let child = Command::new(bin())
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .args([
            "-H",
            &m.url(),
            "in.csv",
            "-o",
            "out.csv",
            "--rate",
            "4",
            "--no-progress",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(child.id(), "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(130));
    assert!(err.contains("Run interrupted."), "{err}");
    let done = w.results("out.csv").len();
    assert!((1..12).contains(&done), "stopped part way: {done} rows");
    assert!(w.path("out.csv.journal").exists());

    // The summary's command, run as printed, finishes the job.
    let resume = err
        .lines()
        .skip_while(|l| !l.contains("To finish the run"))
        .nth(1)
        .expect("a resume command")
        .trim()
        .to_owned();
    assert!(resume.ends_with("--resume"), "{resume}");
    assert!(!resume.contains(TOKEN));
    let out = Command::new("sh")
        .args(["-c", &resume])
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(by_user(&rows).len(), 12);
    assert!(rows
        .iter()
        .all(|r| r.status == "reactivated" && !r.password.is_empty()));
    assert!(!w.path("out.csv.journal").exists());
}

#[tokio::test]
async fn real_synapse_kill_9_at_random_moments_then_resume_loses_nothing() {
    let Some(s) = synapse() else { return };
    let s = &s;
    let t = tag();
    let n = 200;
    let ids: Vec<String> = (0..n).map(|i| s.id(&format!("k{t}n{i}"))).collect();
    let unknown: Vec<String> = (0..3).map(|i| s.id(&format!("k{t}ghost{i}"))).collect();
    for chunk in ids.chunks(20) {
        futures::future::join_all(chunk.iter().map(|id| async move {
            s.create(id, "old-password").await;
            s.deactivate(id, false).await;
        }))
        .await;
    }
    let w = Workdir::new();
    let mut input = String::from("user_id\n");
    for (i, id) in ids.iter().enumerate() {
        input.push_str(&format!("{id}\n"));
        if i % 70 == 0 {
            input.push_str(&format!("{}\n", unknown[i / 70]));
        }
    }
    // Duplicates at the end: users an earlier round may already have finished.
    for id in ids.iter().take(5) {
        input.push_str(&format!("{id}\n"));
    }
    w.write("in.csv", &input);

    let mut kills = 0;
    let mut finished = false;
    for round in 0..40 {
        let mut cmd = Command::new(bin());
        cmd.current_dir(w.dir.path())
            .env("MATRIX_ADMIN_TOKEN", &s.token)
            .args([
                "-H",
                &s.url,
                "in.csv",
                "-o",
                "out.csv",
                "--rate",
                "120",
                "--burst",
                "4",
                "--concurrency",
                "4",
                "--quiet",
            ])
            .stderr(Stdio::piped());
        if round > 0 {
            cmd.arg("--resume");
        }
        let mut child = cmd.spawn().unwrap();
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap();
        let wait = Duration::from_millis(100 + u64::from(u16::from_le_bytes(b)) % 600);
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if started.elapsed() >= wait && round < 6 {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let rows = std::fs::read_to_string(w.path("out.csv")).unwrap_or_default();
                let journaled =
                    std::fs::read_to_string(w.path("out.csv.journal")).unwrap_or_default();
                let rows = rows.lines().count().saturating_sub(1);
                eprintln!(
                    "round {round}: killed after {wait:?} with {rows} rows and {} journaled passwords",
                    journaled.lines().count()
                );
                if rows < n + unknown.len() {
                    kills += 1; // killed part way through, not after the end
                }
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(st) = status {
            let out = child.wait_with_output().unwrap();
            assert_eq!(st.code(), Some(3), "round {round}: {}", stderr(&out));
            finished = true;
            break;
        }
    }
    assert!(finished, "the run completes after resuming");
    assert!(
        kills >= 3,
        "the run was killed part way several times ({kills})"
    );

    let rows = w.results("out.csv");
    let users = by_user(&rows);
    assert_eq!(
        users.len(),
        n + unknown.len(),
        "exactly one row per input user"
    );
    for id in &unknown {
        assert_eq!(users[id].status, "not_found");
        assert!(s.user(id).await.is_none(), "{id} was never created");
    }
    for chunk in ids.chunks(20) {
        futures::future::join_all(chunk.iter().map(|id| {
            let row = users[id].clone();
            async move {
                assert_eq!(row.status, "reactivated", "{row:?}");
                assert!(
                    s.can_log_in(id, &row.password).await,
                    "{id} logs in with the password on disk"
                );
            }
        }))
        .await;
    }
    assert!(!w.path("out.csv.journal").exists());
    assert_eq!(mode_of(&w.path("out.csv")), 0o600);
}
