//! Test helpers: a work directory per test, the real binary, results parsed back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub const TOKEN: &str = "syt_c2VjcmV0_TOKENVALUEthatMustNeverLeak_0a1b2c";

/// A temporary directory holding one test's input and results.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

/// One row of a results file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub user_id: String,
    pub status: String,
    pub password: String,
    pub error: String,
    pub line: String,
    pub rooms_rejoined: String,
    pub rooms_failed: String,
    /// What `--restore-from` gave back: `item:count` joined by `;`.
    pub restored: String,
}

impl Row {
    pub fn rooms_rejoined_set(&self) -> std::collections::BTreeSet<String> {
        self.rooms_rejoined
            .split(';')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn rooms_failed_has(&self, room: &str) -> bool {
        self.rooms_failed
            .split("; ")
            .any(|f| f.starts_with(&format!("{room} (")))
    }

    pub fn rooms_failed_contains(&self, text: &str) -> bool {
        self.rooms_failed.contains(text)
    }
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// The binary with a clean environment: only the token, no proxies.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("matrix-reactivate").expect("the binary is built");
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MATRIX_ADMIN_TOKEN", TOKEN)
            .env("NO_PROXY", "*");
        c
    }

    /// `matrix-reactivate -H url in.csv -o out.csv --no-progress args…`
    pub fn reactivate(&self, url: &str, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["-H", url, "in.csv", "-o", "out.csv", "--no-progress"])
            .args(args);
        c
    }

    pub fn results(&self, name: &str) -> Vec<Row> {
        read_results(&self.path(name))
    }

    /// The JSON summary the tool wrote to `summary.json` (`--summary-json`).
    pub fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("summary.json")).expect("the JSON summary");
        serde_json::from_str(&text).expect("valid JSON")
    }
}

pub fn read_results(path: &Path) -> Vec<Row> {
    let mut r = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("results file {}: {e}", path.display()));
    let headers = r.headers().expect("a header").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "user_id",
            "status",
            "password",
            "error",
            "line",
            "rooms_rejoined",
            "rooms_failed",
            "restored"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.expect("a readable row");
            Row {
                user_id: rec[0].to_owned(),
                status: rec[1].to_owned(),
                password: rec[2].to_owned(),
                error: rec[3].to_owned(),
                line: rec[4].to_owned(),
                rooms_rejoined: rec[5].to_owned(),
                rooms_failed: rec[6].to_owned(),
                restored: rec[7].to_owned(),
            }
        })
        .collect()
}

/// user_id → row; panics if a user has two rows.
pub fn by_user(rows: &[Row]) -> HashMap<String, Row> {
    let mut m = HashMap::new();
    for r in rows {
        assert!(
            m.insert(r.user_id.clone(), r.clone()).is_none(),
            "two rows for {}",
            r.user_id
        );
    }
    m
}

/// Runs a command off the async runtime and returns its output.
pub async fn run(mut cmd: Command) -> Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .expect("the command thread");
    eprintln!(
        "--- exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}
