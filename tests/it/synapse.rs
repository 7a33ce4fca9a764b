//! End to end against a real Synapse on loopback, started by `scripts/test.sh`
//! (which exports SYNAPSE_URL, SYNAPSE_ADMIN_TOKEN and SYNAPSE_SERVER_NAME).
//!
//! Without those variables these tests fail, so a missing Synapse can never
//! pass for a green run. Locally, MATRIX_REACTIVATE_SKIP_SYNAPSE=1 skips them
//! (loudly); in CI (CI set) skipping is refused.

use std::collections::HashMap;

use serde_json::json;

use crate::mock::enc;
use crate::util::*;

pub struct Synapse {
    pub url: String,
    pub token: String,
    pub server_name: String,
    http: reqwest::Client,
}

/// The Synapse of this test run, or `None` when skipping is allowed.
pub fn synapse() -> Option<Synapse> {
    let url = std::env::var("SYNAPSE_URL").ok();
    let token = std::env::var("SYNAPSE_ADMIN_TOKEN").ok();
    match (url, token) {
        (Some(url), Some(token)) => Some(Synapse {
            url,
            token,
            server_name: std::env::var("SYNAPSE_SERVER_NAME")
                .unwrap_or_else(|_| "localhost".into()),
            http: reqwest::Client::new(),
        }),
        _ => {
            let skip = std::env::var("MATRIX_REACTIVATE_SKIP_SYNAPSE").is_ok_and(|v| v == "1");
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            if skip && !ci {
                eprintln!("SKIPPED: real-Synapse test (MATRIX_REACTIVATE_SKIP_SYNAPSE=1)");
                return None;
            }
            panic!(
                "no Synapse for the end-to-end tests: run them with scripts/test.sh, which starts \
                 one (needs python3), or set MATRIX_REACTIVATE_SKIP_SYNAPSE=1 to skip them locally"
            );
        }
    }
}

/// A short random tag so tests sharing one server never share users.
pub fn tag() -> String {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).expect("random bytes");
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

impl Synapse {
    pub fn id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        for _ in 0..20 {
            let resp = self
                .http
                .request(method.clone(), format!("{}{}", self.url, path))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .expect("Synapse answers");
            if resp.status() != 429 {
                return resp;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!("rate limited for too long on {path}");
    }

    /// An admin request that must answer `expect`.
    async fn admin_expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
        expect: u16,
    ) {
        let r = self.admin(method.clone(), path, body).await;
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
        self.admin_expect(
            reqwest::Method::PUT,
            &path,
            json!({"password": password}),
            201,
        )
        .await;
    }

    pub async fn deactivate(&self, id: &str, erase: bool) {
        let path = format!("/_synapse/admin/v1/deactivate/{}", enc(id));
        self.admin_expect(reqwest::Method::POST, &path, json!({"erase": erase}), 200)
            .await;
    }

    pub async fn lock(&self, id: &str) {
        let path = format!("/_synapse/admin/v2/users/{}", enc(id));
        self.admin_expect(reqwest::Method::PUT, &path, json!({"locked": true}), 200)
            .await;
    }

    /// The admin API's view of a user, `None` if it does not exist.
    pub async fn user(&self, id: &str) -> Option<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/_synapse/admin/v2/users/{}", self.url, enc(id)))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("Synapse answers");
        match r.status().as_u16() {
            404 => None,
            200 => Some(r.json().await.expect("JSON")),
            s => panic!("GET {id}: {s}"),
        }
    }

    /// Whether `id` can log in with `password`.
    pub async fn can_log_in(&self, id: &str, password: &str) -> bool {
        for _ in 0..20 {
            let r = self
                .http
                .post(format!("{}/_matrix/client/v3/login", self.url))
                .json(&json!({
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": id},
                    "password": password,
                }))
                .send()
                .await
                .expect("Synapse answers");
            match r.status().as_u16() {
                200 => return true,
                429 => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                _ => return false,
            }
        }
        panic!("login of {id} rate limited for too long");
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
}

#[tokio::test]
async fn mixed_population_end_to_end() {
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
