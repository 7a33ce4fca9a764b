//! Passwords sealed to the help desk's age key (`--encrypt-to`): no clear
//! password in the results, the journal or the log; `--resume` with a sealed
//! journal; sealing changed between runs refused; `decrypt`. Against the mock
//! admin API first, then end to end against the real Synapse.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::keys::{self, age_key, holds_any, Key};
use crate::support::mock_synapse::{ok, user_path, MockSynapse, State};
use crate::support::workdir::*;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("matrix-reactivate")
}

/// The tool as a child process (to be killed), with the mock's token.
fn spawn(w: &Workdir, url: &str, args: &[&str]) -> Child {
    Command::new(bin())
        .current_dir(w.dir.path())
        .env("MATRIX_ADMIN_TOKEN", TOKEN)
        .args(["-H", url, "in.csv", "-o", "out.csv", "--no-progress"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool starts")
}

/// Waits (at most 30 s) until `ready` holds.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 30 s) until the mock has received `n` PUTs for `id`.
async fn wait_for_puts(m: &MockSynapse, id: &str, n: usize) {
    let started = Instant::now();
    while m.put_bodies(id).await.len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never: {n} PUT(s) for {id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines(w: &Workdir, name: &str) -> usize {
    std::fs::read_to_string(w.path(name))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The journal's records: user → the last field recorded.
fn journal_fields(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(','))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}

fn password_of(body: &serde_json::Value) -> String {
    body["password"].as_str().expect("a password").to_owned()
}

/// A PUT for `id` that answers only after `delay` (the first time).
async fn slow_put(m: &MockSynapse, id: &str, delay: Duration) {
    Mock::given(method("PUT"))
        .and(path(user_path(id)))
        .respond_with(ok().set_delay(delay))
        .up_to_n_times(1)
        .with_priority(1)
        .named(format!("slow PUT {id}"))
        .mount(&m.server)
        .await;
}

#[tokio::test]
async fn a_sealed_run_killed_then_resumed_never_writes_a_clear_password() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(6).await;
    for i in 0..5 {
        m.allow_put(&format!("@u{i}:example.org"), 1, ok()).await;
    }
    // The last user's request is in flight when the tool is killed; the
    // account stays deactivated, so the resumed run gives it a new password.
    slow_put(&m, "@u5:example.org", Duration::from_secs(20)).await;
    m.allow_put("@u5:example.org", 1, ok()).await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let desk = age_key(w.dir.path(), "desk.txt");

    let seal = ["--encrypt-to", desk.recipient.as_str()];
    let mut child = spawn(
        &w,
        &m.url(),
        &[&seal[..], &["--concurrency", "1", "-v"]].concat(),
    );
    // Header and five rows written; the header line and six records journaled.
    wait_until("five rows and u5 journaled", || {
        lines(&w, "out.csv") == 6 && lines(&w, "out.csv.journal") == 7
    })
    .await;
    wait_for_puts(&m, "@u5:example.org", 1).await;
    let journal = std::fs::read(w.path("out.csv.journal")).unwrap();
    child.kill().unwrap();
    let first = child.wait_with_output().unwrap();

    let out = run(w.reactivate(
        &m.url(),
        &[&seal[..], &["--resume", "--timeout", "1", "-v"]].concat(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!w.path("out.csv.journal").exists());

    let users = by_user(&w.results("out.csv"));
    assert_eq!(users.len(), 6);
    let mut sent = vec![];
    for i in 0..6 {
        let id = format!("@u{i}:example.org");
        let bodies = m.put_bodies(&id).await;
        let passwords: Vec<String> = bodies.iter().map(password_of).collect();
        sent.extend(passwords.clone());
        let row = &users[&id];
        assert_eq!(row.status, "reactivated", "{row:?}");
        let opened = keys::open(&row.password, &desk.path).unwrap();
        // The results hold the password the account got last.
        assert_eq!(Some(&opened), passwords.last(), "{id}");
        if i == 5 {
            assert_eq!(passwords.len(), 2, "the resumed run set a new password");
            assert_ne!(passwords[0], passwords[1]);
            let journaled = journal_fields(std::str::from_utf8(&journal).unwrap());
            let earlier = keys::open(&journaled[&id], &desk.path).unwrap();
            assert_eq!(earlier, passwords[0], "the journal held the first, sealed");
        }
    }
    assert_eq!(sent.len(), 7);
    let results = std::fs::read(w.path("out.csv")).unwrap();
    for (what, bytes) in [
        ("results", &results[..]),
        ("journal", &journal[..]),
        ("log of the killed run", &first.stderr[..]),
        ("log of the resumed run", &out.stderr[..]),
    ] {
        assert_eq!(
            holds_any(bytes, &sent),
            None,
            "a clear password in the {what}"
        );
    }
    assert!(stderr(&out).contains("matrix-reactivate decrypt out.csv"));
}

#[tokio::test]
async fn a_user_whose_reactivation_landed_keeps_the_sealed_password_the_journal_holds() {
    let m = MockSynapse::start().await;
    m.user("@u0:example.org", State::Deactivated).await;
    slow_put(&m, "@u0:example.org", Duration::from_secs(20)).await;
    let w = Workdir::new();
    w.write("in.csv", "@u0:example.org\n");
    let desk = age_key(w.dir.path(), "desk.txt");
    let seal = ["--encrypt-to", desk.recipient.as_str()];
    let mut child = spawn(&w, &m.url(), &seal);
    wait_until("u0 journaled", || lines(&w, "out.csv.journal") == 2).await;
    wait_for_puts(&m, "@u0:example.org", 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let journaled = journal_fields(&std::fs::read_to_string(w.path("out.csv.journal")).unwrap());

    // The request landed after all: the account is active now.
    Mock::given(method("GET"))
        .and(path(user_path("@u0:example.org")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "name": "@u0:example.org", "deactivated": false, "erased": false, "locked": false
        })))
        .with_priority(1)
        .mount(&m.server)
        .await;
    let out = run(w.reactivate(
        &m.url(),
        &[&seal[..], &["--resume", "--timeout", "1"]].concat(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "reactivated");
    assert_eq!(
        rows[0].password, journaled["@u0:example.org"],
        "as journaled, sealed"
    );
    let sent = m.put_bodies("@u0:example.org").await;
    assert_eq!(sent.len(), 1, "no second request");
    assert_eq!(
        keys::open(&rows[0].password, &desk.path).unwrap(),
        password_of(&sent[0])
    );
}

/// An interrupted run's files, written as a run writes them: the results
/// header and one row, and the journal's first line and one record.
fn interrupted_run(w: &Workdir, sealing: Option<&Key>) {
    let field = match sealing {
        Some(k) => {
            let r = matrix_reactivate::seal::Recipient::parse(&k.recipient).unwrap();
            let s = matrix_reactivate::seal::Sealer::new(vec![r]).unwrap();
            w.write(
                "out.csv.journal",
                format!(
                    "{}\n@u1:example.org,{}\n",
                    s.sealing().line(),
                    s.seal("pw-1").unwrap()
                ),
            );
            s.seal("pw-0").unwrap()
        }
        None => {
            w.write(
                "out.csv.journal",
                "#passwords: clear\n@u1:example.org,pw-1\n",
            );
            "pw-0".into()
        }
    };
    w.write(
        "out.csv",
        format!(
            "user_id,status,password,error,line,rooms_rejoined,rooms_failed,restored\n\
             @u0:example.org,reactivated,{field},,1,,,\n"
        ),
    );
}

#[tokio::test]
async fn a_resume_that_would_seal_otherwise_is_refused_before_any_request() {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(2).await;
    let w = Workdir::new();
    w.write("in.csv", &input);
    let desk = age_key(w.dir.path(), "desk.txt");
    let other = age_key(w.dir.path(), "other.txt");
    let cases: [(Option<&Key>, Vec<&str>, &str); 3] = [
        (Some(&desk), vec![], "would write them in clear"),
        (
            Some(&desk),
            vec!["--encrypt-to", other.recipient.as_str()],
            "other recipients",
        ),
        (
            None,
            vec!["--encrypt-to", desk.recipient.as_str()],
            "wrote its passwords in clear",
        ),
    ];
    for (sealing, args, want) in cases {
        interrupted_run(&w, sealing);
        let before = std::fs::read(w.path("out.csv")).unwrap();
        let out = run(w.reactivate(&m.url(), &[&args[..], &["--resume"]].concat())).await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(want) && err.contains("out.csv.journal"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(w.path("out.csv")).unwrap(),
            before,
            "untouched"
        );
    }
    let got = m.server.received_requests().await.unwrap_or_default();
    assert!(got.is_empty(), "refused before the preflight: {got:?}");

    // A completed sealed run has no journal left: its rows still tell.
    interrupted_run(&w, Some(&desk));
    std::fs::remove_file(w.path("out.csv.journal")).unwrap();
    let out = run(w.reactivate(&m.url(), &["--resume"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds 1 sealed password(s)"),
        "{}",
        stderr(&out)
    );
    let got = m.server.received_requests().await.unwrap_or_default();
    assert!(
        got.iter().all(|r| !r.url.path().contains("%40u")),
        "no user was looked up: {got:?}"
    );
    // And the same recipients resume it.
    m.allow_put("@u1:example.org", 1, ok()).await;
    let out = run(w.reactivate(&m.url(), &["--resume", "--encrypt-to", &desk.recipient])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = by_user(&w.results("out.csv"));
    let sent = password_of(&m.put_bodies("@u1:example.org").await[0]);
    assert_eq!(
        keys::open(&users["@u1:example.org"].password, &desk.path).unwrap(),
        sent
    );
}

#[tokio::test]
async fn bad_recipients_are_usage_errors_before_any_request() {
    let m = MockSynapse::start().await;
    let w = Workdir::new();
    w.write("in.csv", "@u0:example.org\n");
    w.write("empty.txt", "");
    w.write("comments.txt", "# the help desk's key goes here\n\n");
    let good = age_key(w.dir.path(), "desk.txt");
    w.write(
        "bad-line.txt",
        format!("# desk\n{}\nage1typo\n", good.recipient),
    );
    let cases: [(&[&str], &str); 6] = [
        (
            &["--encrypt-to", "age1typo"],
            "--encrypt-to: age1typo: not an X25519",
        ),
        (
            &["--encrypt-to", "ssh-ed25519 AAAAnope"],
            "not a valid SSH public key",
        ),
        (
            &["--encrypt-to-file", "empty.txt"],
            "empty.txt: no recipient in it",
        ),
        (
            &["--encrypt-to-file", "comments.txt"],
            "comments.txt: no recipient in it",
        ),
        (
            &["--encrypt-to-file", "missing.txt"],
            "missing.txt: cannot read it",
        ),
        (
            &["--encrypt-to-file", "bad-line.txt"],
            "bad-line.txt, line 3:",
        ),
    ];
    for (args, want) in cases {
        let out = run(w.reactivate(&m.url(), args)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!w.path("out.csv").exists(), "no results file");
    }
    // A private key given by mistake is refused, and never printed.
    let secret = std::fs::read_to_string(&good.path).unwrap();
    let secret = secret.lines().last().unwrap();
    let out = run(w.reactivate(&m.url(), &["--encrypt-to", secret])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("private key") && !stderr(&out).contains(secret));
    let got = m.server.received_requests().await.unwrap_or_default();
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn passwords_from_the_input_are_sealed_too() {
    let m = MockSynapse::start().await;
    m.user("@u0:example.org", State::Deactivated).await;
    m.user("@u1:example.org", State::Deactivated).await;
    m.allow_put("@u0:example.org", 1, ok()).await;
    m.allow_put("@u1:example.org", 1, ok()).await;
    let w = Workdir::new();
    w.write(
        "in.csv",
        "user_id,pw\n@u0:example.org,Chosen-Password-0\n@u1:example.org,\"Chosen, Password 1\"\n",
    );
    let desk = keys::ssh_key(w.dir.path(), "id_desk");
    let out = run(w.reactivate(
        &m.url(),
        &["--password-column", "pw", "--encrypt-to", &desk.recipient],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let users = by_user(&w.results("out.csv"));
    for (id, pw) in [
        ("@u0:example.org", "Chosen-Password-0"),
        ("@u1:example.org", "Chosen, Password 1"),
    ] {
        assert_eq!(password_of(&m.put_bodies(id).await[0]), pw);
        assert_eq!(keys::open(&users[id].password, &desk.path).unwrap(), pw);
    }
    let results = std::fs::read(w.path("out.csv")).unwrap();
    let secrets = [
        "Chosen-Password-0".to_owned(),
        "Chosen, Password 1".to_owned(),
    ];
    assert_eq!(holds_any(&results, &secrets), None);
}

/// A results file with `n` sealed rows (through a real run on the mock) and
/// the clear passwords the server got.
async fn sealed_results(w: &Workdir, desk: &Key, n: usize) -> Vec<String> {
    let m = MockSynapse::start().await;
    let input = m.deactivated_users(n).await;
    for i in 0..n {
        m.allow_put(&format!("@u{i}:example.org"), 1, ok()).await;
    }
    w.write("in.csv", &input);
    let out = run(w.reactivate(&m.url(), &["--encrypt-to", &desk.recipient])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut sent = vec![];
    for i in 0..n {
        sent.push(password_of(
            &m.put_bodies(&format!("@u{i}:example.org")).await[0],
        ));
    }
    sent
}

fn decrypt(w: &Workdir, args: &[&str]) -> assert_cmd::Command {
    let mut c = w.cmd();
    c.arg("decrypt").args(args);
    c
}

fn dir_names(w: &Workdir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn decrypt_writes_a_private_file_never_over_another() {
    let w = Workdir::new();
    let desk = age_key(w.dir.path(), "desk.txt");
    let sent = sealed_results(&w, &desk, 3).await;
    let out = run(decrypt(
        &w,
        &["out.csv", "-i", "desk.txt", "-o", "clear.csv"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode_of(&w.path("clear.csv")), 0o600);
    let sealed = w.results("out.csv");
    let clear = w.results("clear.csv");
    assert_eq!(clear.len(), 3);
    for (s, c) in sealed.iter().zip(&clear) {
        assert_eq!(
            (&s.user_id, &s.status, &s.line),
            (&c.user_id, &c.status, &c.line)
        );
        let i: usize = c.user_id[2..c.user_id.find(':').unwrap()].parse().unwrap();
        assert_eq!(c.password, sent[i]);
    }
    // Never over an existing file, the results file included.
    let before = std::fs::read(w.path("clear.csv")).unwrap();
    for target in ["clear.csv", "out.csv"] {
        let out = run(decrypt(&w, &["out.csv", "-i", "desk.txt", "-o", target])).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("never overwrites"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(w.path("clear.csv")).unwrap(), before);
    // Standard output, with -o - or no -o.
    for args in [
        &["out.csv", "-i", "desk.txt", "-o", "-"][..],
        &["out.csv", "-i", "desk.txt"],
    ] {
        let out = run(decrypt(&w, args)).await;
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(out.stdout, before);
    }
    assert_eq!(
        dir_names(&w),
        ["clear.csv", "desk.txt", "in.csv", "out.csv"],
        "no temporary file left"
    );
}

#[tokio::test]
async fn decrypt_with_the_wrong_identity_names_each_row_and_leaves_no_file() {
    let w = Workdir::new();
    let desk = age_key(w.dir.path(), "desk.txt");
    age_key(w.dir.path(), "wrong.txt");
    sealed_results(&w, &desk, 3).await;
    // Rows are in the order users finished: line 2 is the first row.
    let rows = w.results("out.csv");
    for output in [&["-o", "clear.csv"][..], &["-o", "-"]] {
        let out = run(decrypt(
            &w,
            &[&["out.csv", "-i", "wrong.txt"][..], output].concat(),
        ))
        .await;
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        for (i, row) in rows.iter().enumerate() {
            let (line, user) = (i + 2, &row.user_id);
            let named = format!("out.csv line {line} ({user}): cannot open its password");
            assert!(err.contains(&named), "{named} in {err}");
        }
        assert!(err.contains("no output was written"), "{err}");
        assert!(out.stdout.is_empty(), "nothing on standard output");
    }
    assert_eq!(
        dir_names(&w),
        ["desk.txt", "in.csv", "out.csv", "wrong.txt"]
    );
    // One right identity among several is enough.
    let out = run(decrypt(
        &w,
        &["out.csv", "-i", "wrong.txt", "-i", "desk.txt", "-q"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty());
    // An identity file that is not one is a usage error.
    let out = run(decrypt(&w, &["out.csv", "-i", "in.csv"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("-i in.csv, line 1: not an age identity"),
        "{}",
        stderr(&out)
    );
}

// ------------------------------------------------------------ real Synapse

use crate::support::real_synapse::{synapse, tag, Synapse};

/// `n` users created and deactivated on the real Synapse; the input naming them.
async fn deactivated_on(s: &Synapse, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| s.id(&format!("{prefix}n{i}"))).collect();
    for chunk in ids.chunks(20) {
        futures::future::join_all(chunk.iter().map(|id| async move {
            s.create(id, "old-password").await;
            s.deactivate(id, false).await;
        }))
        .await;
    }
    ids
}

/// Every row is reactivated and its password, as `open` gives it, logs in.
async fn all_log_in(s: &Synapse, rows: &[Row], open: impl Fn(&Row) -> String) -> Vec<String> {
    let mut clear = vec![];
    for row in rows {
        assert_eq!(row.status, "reactivated", "{row:?}");
        clear.push(open(row));
    }
    for chunk in rows.iter().zip(&clear).collect::<Vec<_>>().chunks(20) {
        futures::future::join_all(chunk.iter().map(|(row, pw)| async move {
            assert!(
                s.can_log_in(&row.user_id, pw).await,
                "{} logs in with the password opened from the results",
                row.user_id
            );
        }))
        .await;
    }
    clear
}

#[tokio::test]
async fn real_synapse_sealed_run_every_field_opens_with_age_and_with_decrypt_and_logs_in() {
    let Some(s) = synapse() else { return };
    let ids = deactivated_on(&s, &format!("seal{}", tag()), 5).await;
    let w = Workdir::new();
    w.write("in.csv", ids.join("\n") + "\n");
    let desk = age_key(w.dir.path(), "desk.txt");
    let out = run(s.command(&w, &["--rate", "0", "--encrypt-to", &desk.recipient])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), ids.len());
    assert!(rows
        .iter()
        .all(|r| r.password.starts_with("YWdlLWVuY3J5cHRpb24ub3JnL3Yx")));

    // Debian's age opens each field, and the password logs the user in.
    let clear = all_log_in(&s, &rows, |r| keys::age_cli_open(&r.password, &desk.path)).await;
    // So does decrypt's file, row for row.
    let out = run(decrypt(
        &w,
        &["out.csv", "-i", "desk.txt", "-o", "clear.csv"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let opened = w.results("clear.csv");
    let again = all_log_in(&s, &opened, |r| r.password.clone()).await;
    assert_eq!(again, clear);
    assert!(rows.iter().all(|r| !s_contains(&clear, &r.password)));
    let results = std::fs::read(w.path("out.csv")).unwrap();
    assert_eq!(
        holds_any(&results, &clear),
        None,
        "no clear password in the results"
    );
    assert_eq!(holds_any(&out.stderr, &clear), None);

    // decrypt never overwrites, and the wrong identity fails by row.
    let before = std::fs::read(w.path("clear.csv")).unwrap();
    let out = run(decrypt(
        &w,
        &["out.csv", "-i", "desk.txt", "-o", "clear.csv"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(w.path("clear.csv")).unwrap(), before);
    age_key(w.dir.path(), "wrong.txt");
    let out = run(decrypt(
        &w,
        &["out.csv", "-i", "wrong.txt", "-o", "wrong.csv"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    for (i, row) in rows.iter().enumerate() {
        let named = format!("out.csv line {} ({}): cannot open", i + 2, row.user_id);
        assert!(stderr(&out).contains(&named), "{named}: {}", stderr(&out));
    }
    assert!(!w.path("wrong.csv").exists());
}

fn s_contains(list: &[String], s: &str) -> bool {
    list.iter().any(|x| x == s)
}

#[tokio::test]
async fn real_synapse_two_recipients_x25519_and_ssh_each_open_every_field() {
    let Some(s) = synapse() else { return };
    let ids = deactivated_on(&s, &format!("two{}", tag()), 4).await;
    let w = Workdir::new();
    w.write("in.csv", ids.join("\n") + "\n");
    let desk = age_key(w.dir.path(), "desk.txt");
    let ssh = keys::ssh_key(w.dir.path(), "id_ed25519");
    // One on the command line, one in a recipients file with comments.
    w.write(
        "recipients.txt",
        format!("# the help desk's SSH key\n\n{}\n", ssh.recipient),
    );
    let args = [
        "--rate",
        "0",
        "--encrypt-to",
        &desk.recipient,
        "--encrypt-to-file",
        "recipients.txt",
    ];
    let out = run(s.command(&w, &args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = w.results("out.csv");
    assert_eq!(rows.len(), ids.len());
    let by_age = all_log_in(&s, &rows, |r| keys::age_cli_open(&r.password, &desk.path)).await;
    let by_ssh = all_log_in(&s, &rows, |r| keys::age_cli_open(&r.password, &ssh.path)).await;
    assert_eq!(by_age, by_ssh);
    for key in ["desk.txt", "id_ed25519"] {
        let out = run(decrypt(&w, &["out.csv", "-i", key, "-o", "-"])).await;
        assert_eq!(out.status.code(), Some(0), "{key}: {}", stderr(&out));
        let mut r = csv::Reader::from_reader(&out.stdout[..]);
        let opened: Vec<String> = r.records().map(|rec| rec.unwrap()[2].to_owned()).collect();
        assert_eq!(opened, by_age, "{key} opens every field");
    }
}

#[tokio::test]
async fn real_synapse_sealed_kill_9_then_resume_every_password_opens_and_logs_in() {
    let Some(s) = synapse() else { return };
    let ids = deactivated_on(&s, &format!("sk{}", tag()), 80).await;
    let w = Workdir::new();
    w.write("in.csv", ids.join("\n") + "\n");
    let desk = age_key(w.dir.path(), "desk.txt");
    let other = age_key(w.dir.path(), "other.txt");
    let tool = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.current_dir(w.dir.path())
            .env("MATRIX_ADMIN_TOKEN", &s.token)
            .args(["-H", &s.url, "in.csv", "-o", "out.csv", "--quiet"])
            .args(["--rate", "60", "--concurrency", "4", "--timeout", "2"])
            .args(extra)
            .stderr(Stdio::piped());
        c
    };
    let mut journals = vec![];
    let mut kills = 0;
    for round in 0..30 {
        let mut args = vec!["--encrypt-to", desk.recipient.as_str()];
        if round > 0 {
            args.push("--resume");
        }
        let mut child = tool(&args).spawn().unwrap();
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap();
        let wait = Duration::from_millis(200 + u64::from(u16::from_le_bytes(b)) % 500);
        if round == 0 {
            // The first kill comes once passwords are journaled, so that the
            // resume with other recipients below has a journal to compare with.
            wait_until("passwords journaled", || lines(&w, "out.csv.journal") > 5).await;
        } else {
            tokio::time::sleep(wait).await;
        }
        if round < 4 && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            journals.push(std::fs::read(w.path("out.csv.journal")).unwrap_or_default());
            if round == 0 {
                // Other recipients than the interrupted run's: refused, nothing touched.
                let before = std::fs::read(w.path("out.csv")).unwrap();
                let out = tool(&["--encrypt-to", &other.recipient, "--resume"])
                    .output()
                    .unwrap();
                assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
                assert!(
                    stderr(&out).contains("other recipients"),
                    "{}",
                    stderr(&out)
                );
                assert_eq!(std::fs::read(w.path("out.csv")).unwrap(), before);
            }
            continue;
        }
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            stderr(&out)
        );
        break;
    }
    assert!(kills >= 2, "killed part way ({kills} times)");
    assert!(!w.path("out.csv.journal").exists(), "the run completed");

    let rows = w.results("out.csv");
    assert_eq!(by_user(&rows).len(), ids.len(), "one row per user");
    let clear = all_log_in(&s, &rows, |r| keys::open(&r.password, &desk.path).unwrap()).await;
    let results = std::fs::read(w.path("out.csv")).unwrap();
    assert_eq!(holds_any(&results, &clear), None);
    assert!(
        journals[0].len() > 1000,
        "the first kill left sealed records"
    );
    for j in &journals {
        assert_eq!(
            holds_any(j, &clear),
            None,
            "no clear password in the journal"
        );
        let text = String::from_utf8_lossy(j);
        assert!(
            text.is_empty() || text.starts_with("#passwords: sealed with age to "),
            "{text}"
        );
    }
}
