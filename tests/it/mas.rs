//! Servers whose logins belong to MAS: scenarios against the MAS double with a
//! mock Synapse that follows its state, and end to end with a real Synapse.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::mas::{MasConfig, MasDouble, SynapseLink};
use crate::support::mas_world::{id, MasWorld};
use crate::support::mock_synapse::user_path;
use crate::support::real_synapse::{synapse_venv, MasSynapse};
use crate::support::workdir::*;

#[tokio::test]
async fn mas_every_status_on_both_sides() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "alice-old", true).await;
    world.user("bob", "bob-pw", false).await;
    world.user("erin", "erin-pw", true).await;
    world.view.erased.lock().unwrap().insert("erin".into());
    // Deactivated through Synapse's own API: MAS still thinks it active.
    world.user("frank", "frank-pw", false).await;
    world
        .view
        .deactivated_here
        .lock()
        .unwrap()
        .insert("frank".into());
    world.user("hank", "hank-pw", true).await;
    world.mas.lock("hank").await;

    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id\nalice\nbob\nnobody\nerin\nfrank\nhank\n@x:other.org\n",
    );
    let out = run(world.tool(&w, &[])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("logins by MAS at {}", world.mas.url())),
        "the preflight line names the mode and MAS's URL: {err}"
    );
    let rows = by_user(&w.results("out.csv"));
    let status = |u: &str| rows[&id(u)].status.as_str();
    assert_eq!(status("alice"), "reactivated");
    assert_eq!(status("bob"), "already_active");
    assert_eq!(status("nobody"), "not_found");
    assert_eq!(status("erin"), "erased");
    assert_eq!(status("frank"), "reactivated");
    assert_eq!(status("hank"), "reactivated");
    assert_eq!(rows["@x:other.org"].status, "not_local");
    assert!(rows[&id("hank")].error.contains("still locked"));

    for u in ["alice", "frank", "hank"] {
        let pw = &rows[&id(u)].password;
        assert_eq!(pw.len(), 24, "{u}");
        assert!(
            world.mas.check_password(u, pw),
            "{u}: MAS holds the password of the row"
        );
        assert!(!world.mas.user(u).unwrap().deactivated, "{u}");
    }
    assert!(
        world.mas.user("hank").unwrap().locked,
        "no unlock without --unlock"
    );
    assert!(
        world.mas.user("erin").unwrap().deactivated,
        "erased: left alone"
    );
    assert!(
        world.mas.check_password("bob", "bob-pw"),
        "active: untouched"
    );
    assert!(world.mas.user("nobody").is_none(), "nothing created");
    let writes: Vec<String> = world
        .admin_requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    let bob = world.mas.user("bob").unwrap().id;
    let erin = world.mas.user("erin").unwrap().id;
    assert!(
        !writes.iter().any(|r| r.contains(&bob) || r.contains(&erin)),
        "{writes:?}"
    );
    assert!(err.contains("MAS erases by default"), "{err}");
}

#[tokio::test]
async fn mas_unlock_emails_and_no_password() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("lena", "lena-pw", false).await;
    world.mas.lock("lena").await;
    world.user("mia", "mia-old", true).await;
    world.mas.lock("mia").await;
    world.user("noah", "noah-old", true).await;

    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id,email\nlena,\nmia,mia@example.org;MIA2@example.org\nnoah,noah@example.org\n",
    );
    let out = run(world.tool(
        &w,
        &[
            "--unlock",
            "--no-password",
            "--summary-json",
            "summary.json",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["mode"], "mas");
    assert_eq!(summary["counts"]["reactivated"], 2);
    assert_eq!(summary["counts"]["unlocked"], 1);
    let rows = by_user(&w.results("out.csv"));
    assert_eq!(rows[&id("lena")].status, "unlocked");
    assert_eq!(rows[&id("mia")].status, "reactivated");
    assert_eq!(rows[&id("noah")].status, "reactivated");
    for u in ["lena", "mia", "noah"] {
        let m = world.mas.user(u).unwrap();
        assert!(!m.locked && !m.deactivated, "{u}: {m:?}");
        assert_eq!(
            rows[&id(u)].password,
            "",
            "--no-password: no password in the row"
        );
    }
    // MAS kept the passwords through the deactivation.
    assert!(world.mas.check_password("mia", "mia-old"));
    assert!(world.mas.check_password("noah", "noah-old"));
    let mut mia = world.mas.user("mia").unwrap().emails;
    mia.sort();
    assert_eq!(mia, ["MIA2@example.org", "mia@example.org"]);
    assert_eq!(world.mas.user("noah").unwrap().emails, ["noah@example.org"]);
    let err = stderr(&out);
    assert!(!err.contains("hand each user the password"), "{err}");
    assert!(err.contains("MAS kept each user's password"), "{err}");
}

#[tokio::test]
async fn mas_dry_run_only_reads_both_apis() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "a", true).await;
    world.user("bob", "b", false).await;
    world.mas.lock("bob").await;
    let w = Workdir::new();
    w.write("in.csv", "alice\nbob\n");
    let out = run(world.tool(&w, &["--dry-run", "--unlock"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = by_user(&w.results("out.csv"));
    assert_eq!(rows[&id("alice")].status, "would_reactivate");
    assert_eq!(rows[&id("bob")].status, "would_unlock");
    let requests = world.admin_requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
    assert!(world.mas.user("alice").unwrap().deactivated);
}

#[tokio::test]
async fn mas_without_credentials_stops_before_any_user() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "a", true).await;
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(w.reactivate(&world.synapse.uri(), &[])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "delegates its logins to Matrix Authentication Service at",
        world.mas.url().as_str(),
        "MAS_CLIENT_ID",
        "MAS_CLIENT_SECRET",
        "MAS_ADMIN_TOKEN",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(world.admin_requests().is_empty());
    let asked: Vec<String> = world
        .synapse
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert!(!asked.contains(&user_path(&id("alice"))), "{asked:?}");
    assert!(!w.path("out.csv").exists());
}

#[tokio::test]
async fn mas_fixed_token_and_mas_url_override() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "a", true).await;
    // The homeserver advertises an issuer nobody listens on: --mas-url wins.
    let synapse = MockServer::start().await;
    MasWorld::mount(&synapse, "http://127.0.0.1:9/").await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/_synapse/admin/v2/users/[^/]+$"))
        .respond_with(world.view.clone())
        .mount(&synapse)
        .await;
    let token = world.mas.add_personal_token();
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    w.write("mas-token", format!("{token}\n"));
    let mut cmd = w.reactivate(&synapse.uri(), &["--mas-token-file", "mas-token"]);
    cmd.env("MAS_URL", world.mas.url());
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(w.results("out.csv")[0].status, "reactivated");
    assert_eq!(world.mas.tokens_issued(), 0, "a fixed token needs no grant");
    assert!(!stderr(&out).contains(&token), "the token is never printed");
}

#[tokio::test]
async fn mas_password_auth_disabled_stops_early_then_no_password_resumes() {
    let world = MasWorld::start(MasConfig {
        passwords_enabled: false,
        ..MasConfig::default()
    })
    .await;
    for u in ["a1", "a2", "a3"] {
        world.user(u, &format!("{u}-old"), true).await;
    }
    let w = Workdir::new();
    w.write("in.csv", "a1\na2\na3\n");
    let out = run(world.tool(&w, &["--concurrency", "1"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Password auth is disabled"), "{err}");
    assert!(err.contains("--no-password"), "{err}");
    for u in ["a1", "a2", "a3"] {
        assert!(
            world.mas.user(u).unwrap().deactivated,
            "{u}: nothing changed"
        );
    }
    let reactivations = world
        .admin_requests()
        .into_iter()
        .filter(|r| r.ends_with("/reactivate"))
        .count();
    assert_eq!(reactivations, 0);

    // The refused password was forgotten: --resume --no-password finishes.
    let out = run(world.tool(&w, &["--concurrency", "1", "--resume", "--no-password"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = by_user(&w.results("out.csv"));
    for u in ["a1", "a2", "a3"] {
        assert_eq!(rows[&id(u)].status, "reactivated", "{u}");
        assert_eq!(rows[&id(u)].password, "");
        assert!(world.mas.check_password(u, &format!("{u}-old")));
    }
    assert!(!w.path("out.csv.journal").exists());
}

/// A world of `n` deactivated users, the input naming them, and the tool
/// started on it at `--rate 5` (about n/5 seconds).
async fn renewal_run(
    ttl: Duration,
    n: usize,
) -> (
    MasWorld,
    Workdir,
    tokio::task::JoinHandle<std::process::Output>,
) {
    let world = MasWorld::start(MasConfig {
        token_ttl: ttl,
        ..MasConfig::default()
    })
    .await;
    let mut input = String::new();
    for i in 0..n {
        world.user(&format!("u{i}"), "old", true).await;
        input.push_str(&format!("u{i}\n"));
    }
    let w = Workdir::new();
    w.write("in.csv", input);
    let mut cmd = world.tool(&w, &["--rate", "5"]);
    let child = tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"));
    (world, w, child)
}

fn assert_all_back(world: &MasWorld, w: &Workdir, out: &std::process::Output, n: usize) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), n);
    for r in &rows {
        assert_eq!(r.status, "reactivated", "{r:?}");
        let localpart = r.user_id.trim_start_matches('@').split(':').next().unwrap();
        assert!(world.mas.check_password(localpart, &r.password));
    }
}

#[tokio::test]
async fn mas_tokens_are_renewed_before_they_expire() {
    // Tokens that live 2 s and a run of about 4 s: new tokens are asked for
    // ahead of time, so no request is ever refused and sent again.
    let (world, w, child) = renewal_run(Duration::from_secs(2), 20).await;
    let out = child.await.unwrap();
    assert_all_back(&world, &w, &out, 20);
    assert!(
        world.mas.tokens_issued() >= 3,
        "{}",
        world.mas.tokens_issued()
    );
    let requests = world.admin_requests();
    let mut seen = HashSet::new();
    for r in requests.iter().filter(|r| !r.contains("page[first]=1")) {
        assert!(seen.insert(r.clone()), "sent twice, after a refusal: {r}");
    }
}

#[tokio::test]
async fn mas_an_expired_token_is_renewed_once_and_the_request_sent_again() {
    // Tokens that live 300 s, all made to expire part way: the next request
    // gets 401 "Access token expired", and the run renews and goes on.
    let (world, w, child) = renewal_run(Duration::from_secs(300), 15).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    world.mas.expire_admin_tokens();
    let out = child.await.unwrap();
    assert_all_back(&world, &w, &out, 15);
    assert_eq!(
        world.mas.tokens_issued(),
        2,
        "one at the start, one after the expiry"
    );
}

#[tokio::test]
async fn mas_a_failing_synapse_side_is_retried_with_the_same_password() {
    let world = MasWorld::start(MasConfig::default()).await;
    world.user("alice", "old", true).await;
    // MAS calls Synapse first when it reactivates: the first call fails, so
    // MAS answers 500 and changes nothing; the retry goes through.
    Mock::given(method("POST"))
        .and(path("/_synapse/mas/reactivate_user"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&world.synapse)
        .await;
    Mock::given(method("POST"))
        .and(path("/_synapse/mas/reactivate_user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&world.synapse)
        .await;
    world.mas.set_synapse(SynapseLink {
        url: world.synapse.uri(),
        secret: "shared".into(),
    });
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = run(world.tool(&w, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let row = &w.results("out.csv")[0];
    assert_eq!(row.status, "reactivated");
    assert!(world.mas.check_password("alice", &row.password));
    let attempts = world
        .admin_requests()
        .into_iter()
        .filter(|r| r.ends_with("/reactivate"))
        .count();
    assert_eq!(attempts, 2, "one 500, one success");
}

// ---------------------------------------------------------------- real Synapse

#[tokio::test]
async fn mas_real_synapse_end_to_end() {
    let Some(()) = synapse_venv() else { return };
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).unwrap();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mas = MasDouble::start(MasConfig::default());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-synapse-mas-tool");
    let synapse = MasSynapse::start(dir, &mas.issuer(), &secret).await;
    mas.set_synapse(SynapseLink {
        url: synapse.url.clone(),
        secret,
    });
    mas.add_user("admin", None, true).await;
    let admin = mas.issue_compat_token("admin", true).await;
    for u in ["alice", "bob", "carol", "dave"] {
        mas.add_user(u, Some(&format!("{u}-old-password")), false)
            .await;
    }
    // alice and bob deactivated through MAS (erased, MAS's default); carol
    // through Synapse's own API, which MAS never learns of; dave stays active.
    mas.deactivate("alice", true).await;
    mas.deactivate("bob", true).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/_synapse/admin/v1/deactivate/@carol:localhost",
            synapse.url
        ))
        .bearer_auth(&admin)
        .json(&json!({"erase": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let synapse_user = |u: &str| {
        let (http, url, admin) = (http.clone(), synapse.url.clone(), admin.clone());
        let u = u.to_owned();
        async move {
            let r = http
                .get(format!("{url}/_synapse/admin/v2/users/@{u}:localhost"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(synapse_user("alice").await["erased"], true);
    assert_eq!(synapse_user("carol").await["deactivated"], true);

    // find lists them from both sides (Synapse's list in MAS mode answers
    // only with guests=false), with MAS's exact times where MAS has them.
    let w = Workdir::new();
    let mut find = w.cmd();
    find.env("MATRIX_ADMIN_TOKEN", &admin)
        .env("MAS_CLIENT_ID", mas.client_id())
        .env("MAS_CLIENT_SECRET", mas.client_secret())
        .args([
            "find",
            "-H",
            &synapse.url,
            "-o",
            "found.csv",
            "--no-progress",
        ]);
    let out = run(find).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let found = std::fs::read_to_string(w.path("found.csv")).unwrap();
    // MAS's time cut to the ms: 2026-11-26T01:02:03.456789Z → …03.456Z.
    let mas_ms = |u: &str| {
        let at = mas.user(u).unwrap().deactivated_at.unwrap();
        let at = at.trim_end_matches('Z');
        let (secs, frac) = at.split_once('.').unwrap_or((at, ""));
        format!("{secs}.{frac:0<3.3}Z")
    };
    let expected = format!(
        "user_id,deactivated_at,erased,rooms\n\
         @alice:localhost,{},true,\n\
         @bob:localhost,{},true,\n\
         @carol:localhost,,false,\n",
        mas_ms("alice"),
        mas_ms("bob")
    );
    assert_eq!(found, expected);
    assert!(stderr(&out).contains("1 deactivated on Synapse's side only"));

    let w = Workdir::new();
    w.write("in.csv", "alice\nbob\ncarol\ndave\nnobody\n");
    let tool = |args: &[&str]| {
        let mut c = w.cmd();
        c.env("MATRIX_ADMIN_TOKEN", &admin)
            .env("MAS_CLIENT_ID", mas.client_id())
            .env("MAS_CLIENT_SECRET", mas.client_secret())
            .args(["-H", &synapse.url, "in.csv", "--no-progress"])
            .args(args);
        c
    };
    // Without --include-erased the MAS-deactivated users stay as they are.
    let out = run(tool(&["-o", "first.csv"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = by_user(&w.results("first.csv"));
    assert_eq!(rows["@alice:localhost"].status, "erased");
    assert_eq!(rows["@carol:localhost"].status, "reactivated");
    assert_eq!(rows["@dave:localhost"].status, "already_active");
    assert_eq!(rows["@nobody:localhost"].status, "not_found");

    let out = run(tool(&["-o", "second.csv", "--include-erased"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = by_user(&w.results("second.csv"));
    for u in ["alice", "bob"] {
        assert_eq!(rows[&format!("@{u}:localhost")].status, "reactivated");
    }
    // carol came back in the first run, alice and bob in the second.
    let mut back = by_user(&w.results("first.csv"));
    back.extend(rows.into_iter().filter(|(_, r)| r.status == "reactivated"));
    for u in ["alice", "bob", "carol"] {
        let row = &back[&format!("@{u}:localhost")];
        let s = synapse_user(u).await;
        assert_eq!(s["deactivated"], false, "{u}: Synapse's side is active");
        assert!(
            !mas.user(u).unwrap().deactivated,
            "{u}: MAS's side is active"
        );
        // Log in through MAS's password check, then use the token on Synapse.
        let r = http
            .post(format!("{}/test/login", mas.url()))
            .json(&json!({"username": u, "password": row.password}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{u} logs in with the row's password: {body}");
        let r: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = r["access_token"].as_str().unwrap().to_owned();
        let r = http
            .get(format!("{}/_matrix/client/v3/account/whoami", synapse.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{u}'s new session works on Synapse");
        assert!(!mas.check_password(u, &format!("{u}-old-password")));
    }
    assert!(mas.check_password("dave", "dave-old-password"), "untouched");
    assert!(mas.user("nobody").is_none());
    let r = http
        .get(format!(
            "{}/_synapse/admin/v2/users/@nobody:localhost",
            synapse.url
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "nothing created in Synapse either");
}

#[tokio::test]
async fn mas_kill_9_then_resume_loses_no_password() {
    // Killed part way, at 4 users a second: a user may be killed between
    // MAS's set-password and its reactivation, or after both but before the
    // row. --resume must finish every user with the password MAS holds.
    let world = MasWorld::start(MasConfig::default()).await;
    let mut input = String::new();
    for i in 0..12 {
        world.user(&format!("k{i}"), "old", true).await;
        input.push_str(&format!("k{i}\n"));
    }
    let w = Workdir::new();
    w.write("in.csv", input);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("matrix-reactivate"))
        .current_dir(w.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "*")
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .env("MAS_CLIENT_ID", world.mas.client_id())
        .env("MAS_CLIENT_SECRET", world.mas.client_secret())
        .args([
            "-H",
            &world.synapse.uri(),
            "in.csv",
            "-o",
            "out.csv",
            "--no-progress",
        ])
        .args(["--rate", "4", "--concurrency", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let before = w.results("out.csv").len();
    assert!(before < 12, "killed part way ({before} rows)");
    assert!(w.path("out.csv.journal").exists());

    let out = run(world.tool(&w, &["--resume"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = by_user(&w.results("out.csv"));
    assert_eq!(rows.len(), 12);
    for i in 0..12 {
        let u = format!("k{i}");
        let row = &rows[&id(&u)];
        assert_eq!(row.status, "reactivated", "{row:?}");
        assert!(world.mas.check_password(&u, &row.password), "{u}: {row:?}");
        assert!(!world.mas.user(&u).unwrap().deactivated);
    }
    assert!(!w.path("out.csv.journal").exists());
}
