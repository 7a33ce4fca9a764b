//! The real Synapse of a test run, started by `scripts/test.sh` (which exports
//! SYNAPSE_URL, SYNAPSE_ADMIN_TOKEN and SYNAPSE_SERVER_NAME), a Synapse of a
//! test's own for a test that stops and restarts it (`OwnSynapse`), and the
//! admin and client requests tests use to build scenarios on them.
//!
//! Without those variables a real-Synapse test fails, so a missing Synapse can
//! never pass for a green run. Locally, MATRIX_REACTIVATE_SKIP_SYNAPSE=1 skips
//! them (loudly); in CI (CI set) skipping is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::mock_synapse::enc;
use super::workdir::Workdir;

pub struct Synapse {
    pub url: String,
    pub token: String,
    pub server_name: String,
    http: reqwest::Client,
}

/// Whether a test that needs Python and a real server may be skipped here.
pub fn may_skip(what: &str) -> bool {
    let skip = std::env::var("MATRIX_REACTIVATE_SKIP_SYNAPSE").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    if skip && !ci {
        eprintln!("SKIPPED: {what} (MATRIX_REACTIVATE_SKIP_SYNAPSE=1)");
    }
    skip && !ci
}

/// The Synapse of this test run, or `None` when skipping is allowed.
pub fn synapse() -> Option<Synapse> {
    let url = std::env::var("SYNAPSE_URL").ok();
    let token = std::env::var("SYNAPSE_ADMIN_TOKEN").ok();
    match (url, token) {
        (Some(url), Some(token)) => Some(Synapse::at(
            url,
            token,
            std::env::var("SYNAPSE_SERVER_NAME").unwrap_or_else(|_| "localhost".into()),
        )),
        _ if may_skip("real-Synapse test") => None,
        _ => panic!(
            "no Synapse for the end-to-end tests: run them with scripts/test.sh, which starts \
             one (needs python3), or set MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip them locally"
        ),
    }
}

/// A short random tag so tests sharing one server never share users.
pub fn tag() -> String {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).expect("random bytes");
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

/// A Synapse of one test's own, in `target/NAME`, for a test that stops and
/// restarts its server while the shared one serves other tests. Stopped when
/// dropped, whether the test passes or not.
pub struct OwnSynapse {
    dir: PathBuf,
    pub api: Synapse,
}

impl OwnSynapse {
    /// A fresh server, or `None` where skipping real-Synapse tests is allowed.
    pub fn start(name: &str) -> Option<Self> {
        if may_skip("a test with a Synapse of its own") {
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(name);
        synapse_sh("start", &dir);
        let env = std::fs::read_to_string(dir.join("env")).expect("DIR/env");
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in DIR/env"))
                .to_owned()
        };
        let api = Synapse::at(
            var("SYNAPSE_URL"),
            var("SYNAPSE_ADMIN_TOKEN"),
            var("SYNAPSE_SERVER_NAME"),
        );
        Some(OwnSynapse { dir, api })
    }

    /// Stops the server as an upgrade does (SIGTERM).
    pub fn stop(&self) {
        synapse_sh("stop", &self.dir);
    }

    /// Starts it again on the same port with the same data, and waits until
    /// it answers.
    pub fn restart(&self) {
        synapse_sh("restart", &self.dir);
    }
}

impl Drop for OwnSynapse {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/synapse.sh");
        let _ = std::process::Command::new(script)
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .output();
    }
}

/// `scripts/synapse.sh COMMAND --dir DIR`; fails the test loudly (a missing
/// Python included) if it fails.
fn synapse_sh(command: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/synapse.sh");
    let out = std::process::Command::new(script)
        .args([command, "--dir"])
        .arg(dir)
        .env("SYNAPSE_BCRYPT_ROUNDS", "4")
        .output()
        .expect("scripts/synapse.sh runs");
    if !out.status.success() {
        // The server of a failed start must not outlive the test.
        let _ = std::process::Command::new("scripts/synapse.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["stop", "--dir"])
            .arg(dir)
            .output();
        panic!(
            "scripts/synapse.sh {command} failed (it needs python3 3.10 or later; set \
             MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip this test locally):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Synapse {
    pub fn at(url: String, token: String, server_name: String) -> Self {
        Synapse {
            url,
            token,
            server_name,
            http: reqwest::Client::new(),
        }
    }

    pub fn id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Sends a request, waiting out the server's 429s: scenario building must
    /// not fail on the rate limits the tool itself is tested against.
    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        for _ in 0..40 {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url));
            if !token.is_empty() {
                req = req.bearer_auth(token);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("Synapse answers");
            if resp.status() != 429 {
                return resp;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("rate limited for too long on {method} {path}");
    }

    /// An admin request that must answer `expect`.
    async fn admin_expect(&self, method: Method, path: &str, body: serde_json::Value, expect: u16) {
        let r = self
            .send(&self.token, method.clone(), path, Some(&body))
            .await;
        let status = r.status();
        assert_eq!(
            status,
            expect,
            "{method} {path}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn create(&self, id: &str, password: &str) {
        let path = format!("/_synapse/admin/v2/users/{}", enc(id));
        self.admin_expect(Method::PUT, &path, json!({"password": password}), 201)
            .await;
    }

    pub async fn deactivate(&self, id: &str, erase: bool) {
        let path = format!("/_synapse/admin/v1/deactivate/{}", enc(id));
        self.admin_expect(Method::POST, &path, json!({"erase": erase}), 200)
            .await;
    }

    pub async fn lock(&self, id: &str) {
        let path = format!("/_synapse/admin/v2/users/{}", enc(id));
        self.admin_expect(Method::PUT, &path, json!({"locked": true}), 200)
            .await;
    }

    /// The admin API's view of a user, `None` if it does not exist.
    pub async fn user(&self, id: &str) -> Option<serde_json::Value> {
        let path = format!("/_synapse/admin/v2/users/{}", enc(id));
        let r = self.send(&self.token, Method::GET, &path, None).await;
        match r.status().as_u16() {
            404 => None,
            200 => Some(r.json().await.expect("JSON")),
            s => panic!("GET {id}: {s}"),
        }
    }

    /// Whether `id` can log in with `password`.
    pub async fn can_log_in(&self, id: &str, password: &str) -> bool {
        let body = login_body(id, password);
        let r = self
            .send("", Method::POST, "/_matrix/client/v3/login", Some(&body))
            .await;
        r.status() == 200
    }

    /// `Workdir::reactivate` pointed at this server with its admin token.
    pub fn command(&self, w: &Workdir, args: &[&str]) -> assert_cmd::Command {
        self.tool(w, "in.csv", "out.csv", args)
    }

    /// The tool on `input`, writing `output`, against this server.
    pub fn tool(
        &self,
        w: &Workdir,
        input: &str,
        output: &str,
        args: &[&str],
    ) -> assert_cmd::Command {
        let mut c = w.cmd();
        c.env("MATRIX_ADMIN_TOKEN", &self.token)
            .args(["-H", &self.url, input, "-o", output, "--no-progress"])
            .args(args);
        c
    }

    /// A client-API request as a user would send it; it must succeed.
    pub async fn client(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let path = format!("/_matrix/client/v3{path}");
        let r = self.send(token, method, &path, Some(&body)).await;
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    pub async fn login(&self, id: &str, password: &str) -> String {
        let v = self
            .client("", Method::POST, "/login", login_body(id, password))
            .await;
        v["access_token"].as_str().expect("a token").to_owned()
    }

    pub async fn create_room(&self, token: &str, preset: &str) -> String {
        let v = self
            .client(
                token,
                Method::POST,
                "/createRoom",
                json!({"preset": preset}),
            )
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn room_action(&self, token: &str, room: &str, action: &str, user: Option<&str>) {
        let body = match user {
            Some(u) => json!({"user_id": u}),
            None => json!({}),
        };
        let path = format!("/rooms/{}/{action}", enc(room));
        self.client(token, Method::POST, &path, body).await;
    }

    /// Synapse parts a deactivated user from its rooms in the background,
    /// after the deactivate call returns: wait until it is done.
    pub async fn wait_until_parted(&self, id: &str) {
        let path = format!("/_synapse/admin/v1/users/{}/memberships", enc(id));
        for _ in 0..200 {
            let r = self.send(&self.token, Method::GET, &path, None).await;
            let v: serde_json::Value = r.json().await.unwrap();
            let memberships = v["memberships"].as_object().unwrap();
            if !memberships.values().any(|m| m == "join") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{id} was never parted from its rooms");
    }

    pub async fn joined_rooms(&self, token: &str) -> BTreeSet<String> {
        let v = self
            .client(token, Method::GET, "/joined_rooms", json!({}))
            .await;
        v["joined_rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    }
}

fn login_body(id: &str, password: &str) -> serde_json::Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": id},
        "password": password,
    })
}

// ------------------------------------------------------- Synapse in MAS mode

/// Whether the cached Synapse virtualenv exists; `None` = skip this test.
pub fn synapse_venv() -> Option<()> {
    let cache = std::env::var_os("MATRIX_REACTIVATE_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("matrix-reactivate"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/matrix-reactivate"))
        })
        .expect("a cache folder (HOME is not set)");
    let python = cache.join("synapse-1.163.2/bin/python");
    if python.exists() {
        return Some(());
    }
    if may_skip("real-Synapse MAS test") {
        return None;
    }
    panic!(
        "no Synapse virtualenv at {}: run scripts/synapse.sh install (needs python3), or set \
         MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip the real-Synapse tests locally",
        python.display()
    );
}

/// A Synapse in MAS mode, started by `scripts/synapse.sh` and stopped on drop,
/// also when the test fails.
pub struct MasSynapse {
    dir: PathBuf,
    pub url: String,
}

impl MasSynapse {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/synapse.sh")
    }

    pub async fn start(dir: PathBuf, mas_endpoint: &str, secret: &str) -> MasSynapse {
        let mut cmd = std::process::Command::new(Self::script());
        cmd.arg("start").arg("--dir").arg(&dir).args([
            "--mas-endpoint",
            mas_endpoint,
            "--mas-secret",
            secret,
        ]);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run synapse.sh"))
            .await
            .expect("the start thread");
        // From here on the folder may hold a server: stop it whatever happens.
        let mut guard = MasSynapse {
            dir,
            url: String::new(),
        };
        assert!(
            out.status.success(),
            "synapse.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(guard.dir.join("env")).expect("the env file");
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_owned)
        };
        assert_eq!(get("SYNAPSE_SERVER_NAME").as_deref(), Some("localhost"));
        assert!(get("SYNAPSE_PID").is_some());
        assert!(get("SYNAPSE_ADMIN_TOKEN").is_none(), "no admin in MAS mode");
        guard.url = get("SYNAPSE_URL").expect("SYNAPSE_URL");
        guard
    }
}

impl Drop for MasSynapse {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .output();
    }
}

// ------------------------------------------- the Synapse on PostgreSQL, and raw requests

/// The PostgreSQL server `scripts/test.sh` starts (MATRIX_REACTIVATE_PG_URL,
/// without password; MATRIX_REACTIVATE_PG_PASSWORD; POSTGRES_BIN for psql and
/// pg_dump), logged into as a role that may create databases.
pub struct Postgres {
    /// `postgresql://USER@HOST:PORT/`, to which a database name is appended.
    pub url: String,
    pub password: String,
    bin: PathBuf,
}

/// The second Synapse of a test run: on PostgreSQL, named `pg.localhost`
/// (SYNAPSE_PG_URL, SYNAPSE_PG_ADMIN_TOKEN, SYNAPSE_PG_SERVER_NAME,
/// SYNAPSE_PG_DB_NAME).
pub struct PgSynapse {
    pub api: Synapse,
    /// The name of its database on `postgres`.
    pub db_name: String,
    pub postgres: Postgres,
}

/// The Synapse on PostgreSQL of this test run, or `None` when skipping is
/// allowed; like `synapse()`, it fails loudly when missing otherwise.
pub fn pg_synapse() -> Option<PgSynapse> {
    let keys = [
        "SYNAPSE_PG_URL",
        "SYNAPSE_PG_ADMIN_TOKEN",
        "SYNAPSE_PG_SERVER_NAME",
        "SYNAPSE_PG_DB_NAME",
        "MATRIX_REACTIVATE_PG_URL",
        "MATRIX_REACTIVATE_PG_PASSWORD",
    ];
    let values: Vec<String> = keys
        .iter()
        .filter_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .collect();
    if values.len() < keys.len() {
        if may_skip("real-Synapse test on PostgreSQL") {
            return None;
        }
        panic!(
            "no Synapse on PostgreSQL for the end-to-end tests ({} must be set): run them with \
             scripts/test.sh, which starts one (needs python3 and PostgreSQL), or set \
             MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip them locally",
            keys.join(", ")
        );
    }
    let bin = std::env::var_os("POSTGRES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    let mut v = values.into_iter();
    let mut next = || v.next().expect("one value per key");
    let api = Synapse::at(next(), next(), next());
    let db_name = next();
    let postgres = Postgres {
        url: next(),
        password: next(),
        bin,
    };
    Some(PgSynapse {
        api,
        db_name,
        postgres,
    })
}

/// The SQLite database of the test run's Synapse (SYNAPSE_DB_PATH).
pub fn sqlite_path() -> PathBuf {
    let path = std::env::var_os("SYNAPSE_DB_PATH")
        .map(PathBuf::from)
        .expect(
            "SYNAPSE_DB_PATH is not set: scripts/test.sh exports it with the Synapse it starts",
        );
    assert!(path.is_file(), "no database at {}", path.display());
    path
}

impl Postgres {
    /// The URL of database `db` (no password).
    pub fn db_url(&self, db: &str) -> String {
        format!("{}{db}", self.url)
    }

    /// One of PostgreSQL's programs, logged in with the password.
    fn program(&self, name: &str) -> std::process::Command {
        let path = self.bin.join(name);
        let mut c = std::process::Command::new(if path.exists() {
            path
        } else {
            PathBuf::from(name)
        });
        c.env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10");
        c
    }

    /// Runs `sql` on database `db` with psql; prints the rows unaligned, one
    /// per line, fields separated by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .program("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.db_url(db))
            .args(["-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql on {db}: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What an admin does to get last night's copy back: `pg_dump` database
    /// `from` into a file in `dir`, create database `to` (as Synapse needs
    /// it: UTF8, C collation) and `pg_restore` the dump into it.
    pub fn copy_database(&self, from: &str, to: &str, dir: &Path) {
        let dump = dir.join(format!("{from}.dump"));
        let out = self
            .program("pg_dump")
            .args(["--format=custom", "--no-owner", "--file"])
            .arg(&dump)
            .arg(self.db_url(from))
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump {from}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {to} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' \
                 TEMPLATE template0"
            ),
        );
        let out = self
            .program("pg_restore")
            .args(["--no-owner", "--exit-on-error", "-d"])
            .arg(self.db_url(to))
            .arg(&dump)
            .output()
            .expect("pg_restore runs");
        assert!(
            out.status.success(),
            "pg_restore into {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops database `db`, if it exists.
    pub fn drop_database(&self, db: &str) {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {db}"));
    }
}

impl Synapse {
    /// Any request, as the admin (`token` = None) or with `token`, waiting out
    /// 429s; the status and the JSON body (null when there is none).
    pub async fn request(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let token = token.unwrap_or(&self.token);
        let r = self.send(token, method, path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }
}
