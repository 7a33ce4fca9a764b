//! Property tests of the input path: random bytes and random CSV shapes never
//! panic, and every non-empty line is accounted for exactly once.

use matrix_reactivate::input::{count_rows, Columns, Input, Source};
use proptest::prelude::*;

/// Reads a whole input; `None` if it is refused as a whole (empty, no usable column).
fn read_all(bytes: &[u8]) -> Option<(bool, Vec<(u64, bool)>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    std::fs::write(&path, bytes).unwrap();
    let mut input = Input::open(Source::File(path.clone()), &Columns::default()).ok()?;
    let has_header = input.layout().has_header;
    let mut rows = Vec::new();
    while let Some(row) = input
        .next_row("example.org")
        .expect("a file in memory reads")
    {
        rows.push((row.line, row.user.is_ok()));
    }
    assert_eq!(
        count_rows(&Source::File(path), has_header),
        Some(rows.len() as u64),
        "the progress total matches the rows"
    );
    Some((has_header, rows))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Some((_, rows)) = read_all(&bytes) {
            let physical = bytes.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            for pair in rows.windows(2) {
                prop_assert!(pair[0].0 < pair[1].0, "line numbers increase");
            }
            for (line, _) in &rows {
                prop_assert!(*line >= 1 && *line <= physical);
            }
        }
    }

    #[test]
    fn every_line_of_a_plain_csv_is_one_row(
        lines in proptest::collection::vec(
            proptest::collection::vec("[a-z@:. 0-9\u{e9}\t]{0,12}", 1..4),
            1..60,
        ),
        crlf in any::<bool>(),
    ) {
        let width = lines[0].len();
        let mut text = String::from("user_id");
        for _ in 1..width { text.push_str(",x"); }
        let eol = if crlf { "\r\n" } else { "\n" };
        text.push_str(eol);
        let mut expected = Vec::new();
        for (i, cells) in lines.iter().enumerate() {
            text.push_str(&cells.join(","));
            text.push_str(eol);
            if cells.iter().any(|c| !c.trim().is_empty()) {
                expected.push(i as u64 + 2);
            }
        }
        let (has_header, rows) = read_all(text.as_bytes()).expect("a header names the column");
        prop_assert!(has_header);
        let got: Vec<u64> = rows.iter().map(|r| r.0).collect();
        prop_assert_eq!(got, expected, "one row per non-empty line, with its line number");
    }
}

#[test]
fn a_one_megabyte_line_is_an_invalid_row() {
    let mut text = String::from("user_id\n@alice:example.org\n");
    text.push_str(&"x".repeat(1 << 20));
    text.push_str("\n@bob:example.org\n");
    let (_, rows) = read_all(text.as_bytes()).unwrap();
    assert_eq!(rows, [(2, true), (3, false), (4, true)]);
}
