//! The core job end to end against the real Synapse (`support::real_synapse`):
//! a mixed population, then the same input again.

use std::collections::HashMap;

use crate::support::real_synapse::{synapse, tag};
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
