//! The summary as JSON (`--summary-json`), for runbooks and scripts: the facts
//! of the text summary under names a program can rely on, and every status
//! counted, zeros included, so a reader never has to guess at a missing key.
//!
//! A pure function, like the text summary; `run` writes the file.

use serde_json::{json, Map, Value};

use super::summary::{exit_code, Ending, SummaryInput};
use super::{Status, RESTORED_ITEMS};

/// Raised when a field is renamed or changes meaning; new fields do not raise it.
pub const FORMAT: u32 = 1;

/// What the JSON tells beside the text summary's input.
pub struct RunFacts<'a> {
    /// The homeserver's base URL.
    pub homeserver: &'a str,
    /// Which service holds the accounts: "synapse" or "mas".
    pub mode: &'a str,
    /// The pace the run held (`pace::PaceReport::json`, or the fixed one).
    pub pace: Value,
}

/// The summary of a run as a JSON object.
pub fn summary_json(s: &SummaryInput, run: &RunFacts) -> Value {
    let c = s.counts;
    let counts: Map<String, Value> = Status::ALL
        .into_iter()
        .map(|st| (st.as_str().to_owned(), c.get(st).into()))
        .collect();
    let restored: Map<String, Value> = RESTORED_ITEMS
        .iter()
        .zip(c.restored)
        .map(|(item, n)| ((*item).to_owned(), n.into()))
        .collect();
    let (outcome, stopped) = match s.ending {
        Ending::Complete => ("complete", Value::Null),
        Ending::Interrupted => (
            "interrupted",
            stopped(
                "interrupted",
                "interrupted by Ctrl-C or SIGTERM; every row so far is saved",
                s,
            ),
        ),
        Ending::Fatal(reason) => ("stopped", stopped("fatal", reason, s)),
    };
    // Milliseconds are plenty, and keep the number short.
    let elapsed = (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0;
    json!({
        "format": FORMAT,
        "tool": concat!("matrix-reactivate ", env!("CARGO_PKG_VERSION")),
        "outcome": outcome,
        "exit_code": exit_code(s.ending, c),
        "dry_run": s.dry_run,
        "mode": run.mode,
        "homeserver": run.homeserver,
        "results": s.results.to_string_lossy(),
        "elapsed_seconds": elapsed,
        "rows": c.rows(),
        "counts": counts,
        "partial": c.partial,
        "restored": restored,
        "duplicates": c.duplicates,
        "resumed": c.resumed,
        "needs_attention": c.needs_attention(),
        "pace": run.pace,
        "stopped": stopped,
    })
}

fn stopped(reason: &str, message: &str, s: &SummaryInput) -> Value {
    json!({
        "reason": reason,
        "message": message,
        "resume_command": s.resume_command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Counts;
    use std::time::Duration;

    /// The summary tests' input, with an elapsed time that shows its decimals.
    fn input<'a>(c: &'a Counts, ending: &'a Ending) -> SummaryInput<'a> {
        SummaryInput {
            elapsed: Duration::from_millis(12_345),
            ..crate::report::summary::tests::input(c, ending)
        }
    }

    const RUN: RunFacts = RunFacts {
        homeserver: "https://matrix.example.org",
        mode: "synapse",
        pace: Value::Null,
    };

    #[test]
    fn a_complete_run_counts_every_status() {
        let mut c = Counts::default();
        c.add(Status::Reactivated);
        c.add(Status::NotFound);
        c.duplicates = 2;
        c.add_restored("emails:2;backup_keys:300");
        c.add_restored("backup_keys:1");
        let v = summary_json(&input(&c, &Ending::Complete), &RUN);
        assert_eq!(v["outcome"], "complete");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["stopped"], Value::Null);
        assert_eq!(v["elapsed_seconds"], 12.345);
        assert_eq!(v["results"], "out.csv");
        assert_eq!(v["mode"], "synapse");
        assert_eq!(v["homeserver"], "https://matrix.example.org");
        assert_eq!(v["rows"], 2);
        assert_eq!(v["needs_attention"], 1);
        assert_eq!(v["duplicates"], 2);
        let counts = v["counts"].as_object().unwrap();
        assert_eq!(counts.len(), Status::ALL.len());
        assert_eq!(counts["reactivated"], 1);
        assert_eq!(counts["failed"], 0);
        let restored = v["restored"].as_object().unwrap();
        assert_eq!(
            restored.len(),
            RESTORED_ITEMS.len(),
            "every item, zeros included"
        );
        assert_eq!(restored["emails"], 2);
        assert_eq!(restored["backup_keys"], 301);
        assert_eq!(restored["push_rules"], 0);
    }

    #[test]
    fn a_stopped_run_says_why_and_how_to_resume() {
        let c = Counts::default();
        let fatal = Ending::Fatal("the token was rejected".into());
        let v = summary_json(&input(&c, &fatal), &RUN);
        assert_eq!(v["outcome"], "stopped");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["stopped"]["reason"], "fatal");
        assert_eq!(v["stopped"]["message"], "the token was rejected");
        assert_eq!(
            v["stopped"]["resume_command"],
            "matrix-reactivate in.csv -o out.csv --resume"
        );
        let v = summary_json(&input(&c, &Ending::Interrupted), &RUN);
        assert_eq!(v["exit_code"], 130);
        assert_eq!(v["stopped"]["reason"], "interrupted");
    }
}
