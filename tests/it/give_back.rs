//! `--restore-from` end to end against the real Synapses of the test run (one
//! on SQLite, one on PostgreSQL): users who hold everything a deactivation
//! deletes are deactivated (one erased), then reactivated with a before-image
//! taken by `snapshot`, by SQLite's backup API or by `pg_dump`, and every item
//! is compared with what it was. Also: a source of another server is refused
//! before anyone is touched, a user the source lacks is still reactivated, a
//! dry run changes nothing, a run killed mid-restore and resumed leaves one
//! backup and no duplicate, and no user token outlives a run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::json;

use crate::support::mock_synapse::enc;
use crate::support::real_synapse::{pg_synapse, sqlite_path, synapse, tag, Synapse};
use crate::support::rich_account::*;
use crate::support::workdir::*;

/// One row of a results file, by column name (the `restored` column parsed).
struct Outcome {
    status: String,
    password: String,
    error: String,
    rooms_failed: String,
    restored: BTreeMap<String, u64>,
}

/// Without the password: failure messages show rows.
impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Outcome {
            status,
            restored,
            error,
            rooms_failed,
            ..
        } = self;
        write!(
            f,
            "{status} {restored:?} error: {error:?} rooms_failed: {rooms_failed:?}"
        )
    }
}

/// user_id → row; fails on a malformed `restored` cell or a second row.
fn outcomes(path: &Path) -> HashMap<String, Outcome> {
    let mut r = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("results file {}: {e}", path.display()));
    let headers = r.headers().expect("a header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {headers:?}"))
    };
    let (user, status, password, error, rooms_failed, restored) = (
        col("user_id"),
        col("status"),
        col("password"),
        col("error"),
        col("rooms_failed"),
        col("restored"),
    );
    let mut out = HashMap::new();
    for rec in r.records() {
        let rec = rec.expect("a readable row");
        let items = rec[restored]
            .split(';')
            .filter(|i| !i.is_empty())
            .map(|i| {
                let (k, n) = i
                    .split_once(':')
                    .unwrap_or_else(|| panic!("restored item without a count: {i:?}"));
                let n: u64 = n
                    .parse()
                    .unwrap_or_else(|_| panic!("restored count not a number: {i:?}"));
                (k.to_owned(), n)
            })
            .collect();
        let row = Outcome {
            status: rec[status].to_owned(),
            password: rec[password].to_owned(),
            error: rec[error].to_owned(),
            rooms_failed: rec[rooms_failed].to_owned(),
            restored: items,
        };
        assert!(
            out.insert(rec[user].to_owned(), row).is_none(),
            "two rows for {}",
            &rec[user]
        );
    }
    out
}

/// The results for a failure message, passwords left out.
fn shown(rows: &HashMap<String, Outcome>) -> String {
    let mut users: Vec<_> = rows.iter().collect();
    users.sort_by_key(|(id, _)| id.as_str());
    users
        .iter()
        .map(|(id, r)| format!("{id} {r:?}\n"))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// `matrix-reactivate snapshot -H URL INPUT -o OUTPUT` against `s`.
fn snapshot(s: &Synapse, w: &Workdir, input: &str, output: &str) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.env("MATRIX_ADMIN_TOKEN", &s.token).args([
        "snapshot",
        "-H",
        &s.url,
        input,
        "-o",
        output,
        "--no-progress",
    ]);
    c
}

fn user_list(users: &[&RichUser]) -> String {
    let mut text = String::from("user_id\n");
    for u in users {
        text.push_str(&u.id);
        text.push('\n');
    }
    text
}

/// Each user's account before, read as the user (and checked to hold all
/// `rich_user` built).
async fn images(s: &Synapse, users: &[&RichUser]) -> Vec<Image> {
    let mut out = vec![];
    for u in users {
        let token = s.login(&u.id, &u.password).await;
        let image = Image::read(s, &u.id, &token, None).await;
        image.assert_rich(&u.id, u.sessions);
        out.push(image);
        s.client(&token, Method::POST, "/logout", json!({})).await;
    }
    out
}

/// The mistake: every user deactivated, the first one erased; returns when
/// Synapse has parted them from their rooms.
async fn deactivate(s: &Synapse, users: &[&RichUser]) {
    for (i, u) in users.iter().enumerate() {
        s.deactivate(&u.id, i == 0).await;
    }
    for u in users {
        s.wait_until_parted(&u.id).await;
    }
}

/// Every user reactivated, everything given back as it was, with the counts
/// the `restored` column should show.
async fn assert_restored(s: &Synapse, results: &Path, users: &[&RichUser], before: &[Image]) {
    assert_restored_with(s, results, users, before, Counted::Everything).await
}

/// What the `restored` column of a row must say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Everything,
    /// A user an interrupted run had begun: changes to default push rules
    /// that run made are in place (the account is compared below) but are
    /// counted by the run that made them, not again.
    ResumedDefaultsUncounted,
}

async fn assert_restored_with(
    s: &Synapse,
    results: &Path,
    users: &[&RichUser],
    before: &[Image],
    counted: Counted,
) {
    let rows = outcomes(results);
    for (u, was) in users.iter().zip(before) {
        let row = &rows[&u.id];
        assert_eq!(row.status, "reactivated", "{}: {row:?}", u.id);
        assert!(
            row.error.is_empty() && row.rooms_failed.is_empty(),
            "{}: nothing kept or failed: {row:?}",
            u.id
        );
        let full = was.full_restore();
        if counted == Counted::Everything || row.restored == full {
            assert_eq!(row.restored, full, "{}: restored", u.id);
        } else {
            let without_rules = |counts: &BTreeMap<String, u64>| {
                let mut counts = counts.clone();
                counts.remove("push_rules");
                counts
            };
            assert_eq!(
                without_rules(&row.restored),
                without_rules(&full),
                "{}",
                u.id
            );
        }
        let token = s.login(&u.id, &row.password).await;
        let now = Image::read(s, &u.id, &token, Some(&was.joined)).await;
        now.assert_same_as(was, &u.id);
        s.client(&token, Method::POST, "/logout", json!({})).await;
    }
}

fn ids(users: &[&RichUser]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

#[tokio::test]
async fn real_synapse_gives_back_everything_from_a_snapshot() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let (erased, plain) = (
        rich_user(&s, &format!("gse{t}"), 300).await,
        rich_user(&s, &format!("gsp{t}"), 260).await,
    );
    let users = [&erased, &plain];
    let before = images(&s, &users).await;
    let w = Workdir::new();
    w.write("users.csv", user_list(&users));
    let out = run(snapshot(&s, &w, "users.csv", "before.snap")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode_of(&w.path("before.snap")), 0o600);

    deactivate(&s, &users).await;
    let args = [
        "--restore-from",
        "before.snap",
        "--include-erased",
        "--rate",
        "0",
    ];
    let out = run(s.tool(&w, "users.csv", "results.csv", &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_restored(&s, &w.path("results.csv"), &users, &before).await;
    assert_eq!(
        puppet_tokens_sqlite(&sqlite_path(), &ids(&users)),
        vec![],
        "no token acting as a user is left after the run"
    );
}

#[tokio::test]
async fn real_synapse_gives_back_everything_from_a_sqlite_copy() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let (erased, plain, by_hand) = (
        rich_user(&s, &format!("gce{t}"), 300).await,
        rich_user(&s, &format!("gcp{t}"), 220).await,
        rich_user(&s, &format!("gch{t}"), 40).await,
    );
    let users = [&erased, &plain];
    let before = images(&s, &users).await;
    let w = Workdir::new();
    backup_sqlite(&sqlite_path(), &w.path("homeserver-copy.db"));

    // Someone who joined after last night's copy.
    let newcomer = s.id(&format!("gcn{t}"));
    s.create(&newcomer, "pw-newcomer-1").await;
    deactivate(&s, &[&erased, &plain, &by_hand]).await;
    s.deactivate(&newcomer, false).await;
    // An admin already reactivated this one by hand: the run leaves them be.
    let path = format!("/_synapse/admin/v2/users/{}", enc(&by_hand.id));
    let body = json!({"deactivated": false, "password": "pw-by-hand-1"});
    let (status, v) = s.request(None, Method::PUT, &path, Some(&body)).await;
    assert_eq!(status, 200, "{v}");

    let mut input = user_list(&[&erased, &plain, &by_hand]);
    input.push_str(&format!("{newcomer}\n"));
    w.write("users.csv", input);
    let args = [
        "--restore-from",
        "homeserver-copy.db",
        "--include-erased",
        "--rate",
        "0",
    ];
    let out = run(s.tool(&w, "users.csv", "results.csv", &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_restored(&s, &w.path("results.csv"), &users, &before).await;

    let rows = outcomes(&w.path("results.csv"));
    let row = &rows[&by_hand.id];
    assert_eq!(row.status, "already_active", "{row:?}");
    assert!(row.restored.is_empty(), "{row:?}");
    assert!(s.can_log_in(&by_hand.id, "pw-by-hand-1").await);
    let path = format!("/_synapse/admin/v1/users/{}/accountdata", enc(&by_hand.id));
    let (_, data) = s.request(None, Method::GET, &path, None).await;
    assert_eq!(
        data["account_data"]["global"],
        json!({}),
        "an account the run did not reactivate gets nothing back"
    );

    let row = &rows[&newcomer];
    assert_eq!(row.status, "reactivated", "{row:?}");
    assert!(row.error.contains("not in the source"), "{row:?}");
    assert!(row.restored.is_empty(), "{row:?}");
    assert!(s.can_log_in(&newcomer, &row.password).await);
    let everyone = [ids(&users), vec![newcomer]].concat();
    assert_eq!(puppet_tokens_sqlite(&sqlite_path(), &everyone), vec![]);
}

#[tokio::test]
async fn real_synapse_gives_back_everything_from_a_postgres_copy() {
    let Some(pg) = pg_synapse() else { return };
    let s = &pg.api;
    let t = tag();
    let (erased, plain) = (
        rich_user(s, &format!("gpe{t}"), 300).await,
        rich_user(s, &format!("gpp{t}"), 210).await,
    );
    let users = [&erased, &plain];
    let before = images(s, &users).await;
    let w = Workdir::new();
    let copy = format!("{}_backup_{t}", pg.db_name);
    let (postgres, from, to, dir) = (
        &pg.postgres,
        pg.db_name.clone(),
        copy.clone(),
        w.dir.path().to_owned(),
    );
    postgres.copy_database(&from, &to, &dir);

    deactivate(s, &users).await;
    w.write("users.csv", user_list(&users));
    let source = postgres.db_url(&copy);

    // A password in the URL is refused, like a token in argv; nobody is touched.
    let with_password = source.replacen("@", ":secret@", 1);
    let args = ["--restore-from", with_password.as_str(), "--include-erased"];
    let out = run(s.tool(&w, "users.csv", "refused.csv", &args)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("secret"), "{}", stderr(&out));
    assert_eq!(s.user(&plain.id).await.unwrap()["deactivated"], true);

    let args = [
        "--restore-from",
        source.as_str(),
        "--include-erased",
        "--rate",
        "0",
    ];
    let mut cmd = s.tool(&w, "users.csv", "results.csv", &args);
    cmd.env("PGPASSWORD", &postgres.password);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_restored(s, &w.path("results.csv"), &users, &before).await;
    assert_eq!(
        puppet_tokens_pg(postgres, &pg.db_name, &ids(&users)),
        vec![]
    );
    postgres.drop_database(&copy);
}

#[tokio::test]
async fn real_synapse_refuses_a_source_of_another_server() {
    let (Some(s), Some(pg)) = (synapse(), pg_synapse()) else {
        return;
    };
    let t = tag();
    let here = s.id(&format!("gol{t}"));
    s.create(&here, "pw-before-1").await;
    s.deactivate(&here, false).await;
    let w = Workdir::new();
    w.write("here.csv", format!("{here}\n"));

    // The PostgreSQL Synapse's database, against the SQLite Synapse.
    let source = pg.postgres.db_url(&pg.db_name);
    let args = ["--restore-from", source.as_str()];
    let mut cmd = s.tool(&w, "here.csv", "out.csv", &args);
    cmd.env("PGPASSWORD", &pg.postgres.password);
    let out = run(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // pg.localhost contains localhost: look for the latter without the former.
    assert!(err.contains(&pg.api.server_name), "{err}");
    assert!(
        err.replace(&pg.api.server_name, "")
            .contains(&s.server_name),
        "the message names both servers: {err}"
    );
    assert_eq!(s.user(&here).await.unwrap()["deactivated"], true);

    // A snapshot of the SQLite Synapse, against the PostgreSQL one.
    let snapped = rich_user(&s, &format!("gos{t}"), 0).await;
    w.write("snapped.csv", user_list(&[&snapped]));
    let out = run(snapshot(&s, &w, "snapped.csv", "here.snap")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let there = pg.api.id(&format!("gop{t}"));
    pg.api.create(&there, "pw-before-1").await;
    pg.api.deactivate(&there, false).await;
    w.write("there.csv", format!("{there}\n"));
    let args = ["--restore-from", "here.snap"];
    let out = run(pg.api.tool(&w, "there.csv", "out2.csv", &args)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&pg.api.server_name), "{err}");
    assert!(
        err.replace(&pg.api.server_name, "")
            .contains(&s.server_name),
        "the message names both servers: {err}"
    );
    assert_eq!(pg.api.user(&there).await.unwrap()["deactivated"], true);
}

#[tokio::test]
async fn real_synapse_dry_run_lists_what_would_come_back_and_changes_nothing() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let user = rich_user(&s, &format!("gdr{t}"), 120).await;
    let before = images(&s, &[&user]).await.remove(0);
    let w = Workdir::new();
    backup_sqlite(&sqlite_path(), &w.path("copy.db"));
    s.deactivate(&user.id, false).await;
    s.wait_until_parted(&user.id).await;
    w.write("users.csv", user_list(&[&user]));
    let args = ["--dry-run", "--restore-from", "copy.db"];
    let out = run(s.tool(&w, "users.csv", "dry.csv", &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let rows = outcomes(&w.path("dry.csv"));
    let row = &rows[&user.id];
    assert_eq!(row.status, "would_reactivate", "{row:?}");
    // Everything the source holds; default-rule changes are only known by
    // comparing with the account, so a dry run counts the custom rules.
    let mut expected = before.full_restore();
    *expected.get_mut("push_rules").expect("push rules") -= CHANGED_DEFAULT_RULES;
    if !row.restored.contains_key("rooms") {
        expected.remove("rooms");
    }
    assert_eq!(row.restored, expected, "{row:?}");

    let now = s.user(&user.id).await.expect("the user");
    assert_eq!(now["deactivated"], true);
    assert_eq!(now["threepids"], json!([]));
    let path = format!("/_synapse/admin/v1/users/{}/accountdata", enc(&user.id));
    let (_, data) = s.request(None, Method::GET, &path, None).await;
    assert_eq!(data["account_data"]["global"], json!({}));
    assert_eq!(backups_sqlite(&sqlite_path(), &user.id), (0, 0));
    assert_eq!(
        puppet_tokens_sqlite(&sqlite_path(), std::slice::from_ref(&user.id)),
        vec![]
    );
}

#[tokio::test]
async fn real_synapse_killed_mid_restore_then_resumed_makes_one_backup() {
    let Some(s) = synapse() else { return };
    let t = tag();
    let mut built = vec![];
    for i in 0..5 {
        built.push(rich_user(&s, &format!("gk{i}x{t}"), 2000).await);
    }
    let users: Vec<&RichUser> = built.iter().collect();
    let before = images(&s, &users).await;
    let w = Workdir::new();
    backup_sqlite(&sqlite_path(), &w.path("copy.db"));
    deactivate(&s, &users).await;
    w.write("users.csv", user_list(&users));

    // Slow enough that the kill lands while users are still to come.
    let child = Command::new(assert_cmd::cargo::cargo_bin("matrix-reactivate"))
        .current_dir(w.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MATRIX_ADMIN_TOKEN", &s.token)
        .env("NO_PROXY", "*")
        .args(["-H", &s.url, "users.csv", "-o", "results.csv"])
        .args(["--restore-from", "copy.db", "--include-erased"])
        .args(["--rate", "0.5", "--concurrency", "1", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the tool starts");
    let db = sqlite_path();
    let uploaded =
        |users: &[&RichUser]| -> u64 { users.iter().map(|u| backups_sqlite(&db, &u.id).1).sum() };
    let started = Instant::now();
    let mut child = child;
    while uploaded(&users) == 0 {
        if started.elapsed() > Duration::from_secs(120) || child.try_wait().ok().flatten().is_some()
        {
            let _ = child.kill();
            panic!("no session was uploaded before the run ended or 120 s passed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9 the run");
    let killed_at = now_ms();
    let _ = child.wait();
    let total = 2000 * users.len() as u64;
    assert!(
        uploaded(&users) < total,
        "the run was killed part way through"
    );
    // What the killed run could not end expires by itself, within 10 minutes.
    let left_by_kill = puppet_tokens_sqlite(&db, &ids(&users));
    for &valid_until in &left_by_kill {
        let valid_until = valid_until.expect("a user token that expires");
        assert!(
            valid_until <= killed_at + 10 * 60 * 1000,
            "a user token valid until {valid_until}, {} ms after the kill",
            valid_until - killed_at
        );
    }

    let args = [
        "--restore-from",
        "copy.db",
        "--include-erased",
        "--rate",
        "0",
        "--resume",
    ];
    let out = run(s.tool(&w, "users.csv", "results.csv", &args)).await;
    let rows = outcomes(&w.path("results.csv"));
    assert_eq!(out.status.code(), Some(0), "{}", shown(&rows));
    assert_eq!(rows.len(), users.len(), "{}", shown(&rows));
    for u in &users {
        assert_eq!(
            backups_sqlite(&db, &u.id),
            (1, 2000),
            "{}: one backup version holding the source's sessions",
            u.id
        );
    }
    // The user the kill interrupted counts what the first run gave back too
    // (but the default push rules it changed), and holds all of it.
    assert_restored_with(
        &s,
        &w.path("results.csv"),
        &users,
        &before,
        Counted::ResumedDefaultsUncounted,
    )
    .await;
    // The resumed run ended every token it made.
    let left = puppet_tokens_sqlite(&db, &ids(&users));
    assert!(
        left.len() <= left_by_kill.len(),
        "{left:?} after the resumed run"
    );
}
