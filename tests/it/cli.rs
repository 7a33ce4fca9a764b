//! Command-line behaviour that needs no server.

use crate::support::workdir::*;

#[test]
fn help_lists_examples_and_exit_codes() {
    let out = Workdir::new().cmd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "EXAMPLES",
        "EXIT CODES",
        "--dry-run",
        "--resume",
        "MATRIX_ADMIN_TOKEN",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = w
        .cmd()
        .args(["-H", "http://matrix.example.org", "in.csv", "-o", "out.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-insecure-http"));

    let out = w
        .cmd()
        .env_remove("MATRIX_ADMIN_TOKEN")
        .args([
            "-H",
            "https://matrix.example.org",
            "in.csv",
            "-o",
            "out.csv",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("MATRIX_ADMIN_TOKEN"));

    let out = w.cmd().args(["in.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "missing required flags");
    assert!(!w.path("out.csv").exists());
}

#[test]
fn input_problems_name_the_file() {
    let w = Workdir::new();
    let url = "https://matrix.example.org";
    let out = w
        .cmd()
        .args(["-H", url, "missing.csv", "-o", "out.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.csv"), "{}", stderr(&out));

    w.write("empty.csv", "\n\n");
    let out = w
        .cmd()
        .args(["-H", url, "empty.csv", "-o", "out.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("empty.csv is empty"),
        "{}",
        stderr(&out)
    );

    w.write("cols.csv", "name,login\nA,a\n");
    let out = w
        .cmd()
        .args([
            "-H", url, "cols.csv", "-o", "out.csv", "--column", "account",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--column account"),
        "{}",
        stderr(&out)
    );
    assert!(
        !w.path("out.csv").exists(),
        "nothing is created for bad input"
    );

    let out = w
        .cmd()
        .args(["-H", url, ".", "-o", "out.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
}

#[test]
fn output_folder_must_exist() {
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    let out = w
        .cmd()
        .args([
            "-H",
            "https://matrix.example.org",
            "in.csv",
            "-o",
            "nope/out.csv",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn generate_prints_completions_and_the_man_page_without_a_run() {
    let w = Workdir::new();
    let cases = [
        ("complete-bash", "complete -F"),
        ("complete-zsh", "#compdef matrix-reactivate"),
        ("complete-fish", "complete -c matrix-reactivate"),
        ("man", ".TH matrix-reactivate 1"),
    ];
    for (kind, needle) in cases {
        // No token, no input, no --output; a homeserver in the environment is fine.
        let out = w
            .cmd()
            .env_remove("MATRIX_ADMIN_TOKEN")
            .env("MATRIX_HOMESERVER", "https://matrix.example.org")
            .args(["--generate", kind])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).replace("\\-", "-");
        assert!(text.contains(needle), "{kind} lacks {needle:?}");
        assert!(text.contains("--summary-json") || text.contains("summary-json"));
        assert!(text.len() > 2000, "{kind}: {} bytes", text.len());
    }
    let out = w
        .cmd()
        .args(["--generate", "man", "in.csv", "-o", "out.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no run and a generate at once");
    let out = w.cmd().args(["--generate", "pdf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("complete-bash"), "{}", stderr(&out));
}

#[test]
fn the_replaced_flag_still_runs_with_a_warning() {
    let w = Workdir::new();
    w.write("in.csv", "alice\n");
    // An unreachable server: the preflight fails at once (it never waits
    // --max-outage), after the warning.
    let started = std::time::Instant::now();
    let out = w
        .cmd()
        .args(["-H", "http://127.0.0.1:9", "in.csv", "-o", "out.csv"])
        .args(["--max-consecutive-failures", "20", "--max-attempts", "1"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("warning: --max-consecutive-failures 20 is ignored")
            && err.contains("--max-outage"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cannot reach the homeserver"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
