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
