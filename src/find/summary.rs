//! What `find` found, on stderr: counts, the users it could not place, the
//! file, and the commands to run next; and the exit code. Pure functions of
//! the counts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::rule::{rfc3339_ms, Window};
use crate::report::summary::Ending;
use crate::run::resume::shell_quote;

/// Users whose rooms could not be read, named in the summary at most.
pub const FAILED_SHOWN: usize = 10;

#[derive(Clone, Debug, Default)]
pub struct FindCounts {
    /// Users the list gave (each once), whatever became of them.
    pub listed: u64,
    /// Rows written.
    pub written: u64,
    /// Written rows of erased users, and of users also locked.
    pub erased: u64,
    pub locked: u64,
    /// Written rows without a time: users who were in no room.
    pub no_room: u64,
    /// Rooms to give back, summed over the written rows.
    pub rooms: u64,
    /// Earliest and latest deactivation time written.
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// Left out by the window: deactivated before it, after it, or unknown.
    pub before: u64,
    pub after: u64,
    pub unknown: u64,
    /// Users whose rooms could not be read: how many, and the first few.
    pub failed: u64,
    pub failed_shown: Vec<(String, String)>,
    /// Users listed twice (the list shifted between pages), skipped.
    pub repeated: u64,
    /// Users listed out of order (kept, so the file is not sorted).
    pub out_of_order: u64,
    /// Active users the list gave anyway, skipped.
    pub not_deactivated: u64,
    /// On a MAS server: how many users MAS holds deactivated; and written
    /// rows that only one side holds deactivated (MAS's reactivation mends both).
    pub mas_listed: Option<u64>,
    pub mas_only: u64,
    pub synapse_only: u64,
}

impl FindCounts {
    /// `written 120 · outside the window 40 · …` for the progress display.
    pub fn brief(&self) -> String {
        let mut parts = vec![format!("written {}", self.written)];
        let outside = self.before + self.after;
        for (n, label) in [
            (outside, "outside the window"),
            (self.unknown, "time unknown"),
            (self.failed, "unreadable"),
        ] {
            if n > 0 {
                parts.push(format!("{label} {n}"));
            }
        }
        parts.join(" · ")
    }

    pub fn note_time(&mut self, at: i64) {
        self.first_at = Some(self.first_at.map_or(at, |f| f.min(at)));
        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
    }
}

/// Exit code 3 when a user had to be left out of the file.
pub fn exit_code(ending: &Ending, counts: &FindCounts) -> i32 {
    crate::report::summary::code(ending, counts.failed > 0)
}

/// What the summary needs besides the counts.
pub struct FindSummary<'a> {
    pub counts: &'a FindCounts,
    pub ending: &'a Ending,
    pub elapsed: Duration,
    pub output: &'a Path,
    pub homeserver: &'a str,
    pub window: Window,
    pub rooms_read: usize,
    /// The server's count of deactivated users on the first and last page.
    pub totals: (Option<u64>, Option<u64>),
    /// MAS's base URL, on a server whose logins belong to it.
    pub mas: Option<&'a str>,
}

pub fn summary(s: &FindSummary) -> String {
    let c = s.counts;
    let mut out = String::new();
    let file = s.output.display();
    match s.ending {
        Ending::Fatal(reason) => {
            let _ = writeln!(out, "error: {reason}");
            let _ = writeln!(
                out,
                "Nothing was written ({file} was removed: it would be incomplete)."
            );
            return out;
        }
        Ending::Interrupted => {
            let _ = writeln!(
                out,
                "Interrupted after {}: nothing was written ({file} was removed: it would \
                 be incomplete). Run the same command again.",
                users(c.listed)
            );
            return out;
        }
        Ending::Complete => {}
    }
    let mas = match (s.mas, c.mas_listed) {
        (Some(url), Some(n)) => {
            format!(" and its MAS at {url} ({n} there; deactivation times are MAS's, exact)")
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "Listed {} deactivated on {}{mas} in {:.1} s, reading {} rooms.",
        users(c.listed),
        s.homeserver,
        s.elapsed.as_secs_f64(),
        s.rooms_read
    );
    found(&mut out, s);
    left_out(&mut out, s);
    warnings(&mut out, s);
    next(&mut out, s);
    out
}

/// What is in the file.
fn found(out: &mut String, s: &FindSummary) {
    let c = s.counts;
    let _ = write!(
        out,
        "  written to {}: {} users",
        s.output.display(),
        c.written
    );
    if let (Some(first), Some(last)) = (c.first_at, c.last_at) {
        let _ = write!(
            out,
            ", deactivated {} to {}",
            rfc3339_ms(first),
            rfc3339_ms(last)
        );
    }
    let _ = writeln!(out, ", {} rooms to give back", c.rooms);
    for (n, text) in [
        (c.erased, "erased (GDPR)"),
        (c.locked, "also locked"),
        (c.no_room, "in no room (no time, no rooms)"),
        (
            c.mas_only,
            "deactivated in MAS only (Synapse shows them active: MAS's deactivation has not \
             reached it)",
        ),
        (
            c.synapse_only,
            "deactivated on Synapse's side only (MAS shows them active: deactivated through \
             Synapse's admin API; the time is their last leave)",
        ),
    ] {
        if n > 0 {
            let _ = writeln!(out, "    {n} {text}");
        }
    }
}

/// Who is not in the file, and why.
fn left_out(out: &mut String, s: &FindSummary) {
    let c = s.counts;
    if c.before > 0 {
        let _ = writeln!(
            out,
            "  deactivated before --left-since, left out: {}",
            c.before
        );
    }
    if c.after > 0 {
        let _ = writeln!(
            out,
            "  deactivated at or after --left-until, left out: {}",
            c.after
        );
    }
    if c.unknown > 0 {
        let _ = writeln!(
            out,
            "  deactivation time unknown (in no room), left out: {}; run find without \
             --left-since/--left-until to list them",
            c.unknown
        );
    }
    if c.failed > 0 {
        let _ = writeln!(
            out,
            "  rooms could not be read, left out: {} (run find again later, to a new --output)",
            c.failed
        );
        for (user, why) in &c.failed_shown {
            let _ = writeln!(out, "    {user}: {why}");
        }
        if c.failed > c.failed_shown.len() as u64 {
            let _ = writeln!(
                out,
                "    … and {} more",
                c.failed - c.failed_shown.len() as u64
            );
        }
    }
}

/// Signs that the list changed or came in an unexpected order while it was read.
fn warnings(out: &mut String, s: &FindSummary) {
    let c = s.counts;
    if let (Some(first), Some(last)) = s.totals {
        if first != last {
            let _ = writeln!(
                out,
                "warning: the server's count of deactivated users changed while the list was \
                 read ({first} → {last}): a user may be missing; run find again to be sure"
            );
        }
    }
    if c.repeated > 0 {
        let _ = writeln!(
            out,
            "warning: {} users were listed twice (the list shifted between pages); each is \
             written once",
            c.repeated
        );
    }
    if c.out_of_order > 0 {
        let _ = writeln!(
            out,
            "warning: the server listed {} users out of order (a PostgreSQL database with \
             allow_unsafe_locale?): the file keeps the server's order",
            c.out_of_order
        );
    }
    if c.not_deactivated > 0 {
        let _ = writeln!(
            out,
            "warning: the server listed {} active users as deactivated ones; they are left out",
            c.not_deactivated
        );
    }
}

/// The commands that restore what was found.
fn next(out: &mut String, s: &FindSummary) {
    let c = s.counts;
    if c.written == 0 {
        let _ = writeln!(
            out,
            "Nothing to restore{}.",
            if s.window.is_set() {
                " in this window"
            } else {
                ""
            }
        );
        return;
    }
    let file = shell_quote(&s.output.display().to_string());
    let results = s
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.join("results.csv").display().to_string())
        .unwrap_or_else(|| "results.csv".into());
    let base = format!(
        "matrix-reactivate -H {} {file} -o {} --rooms-column rooms",
        shell_quote(s.homeserver),
        shell_quote(&results)
    );
    let _ = writeln!(
        out,
        "Next: review {file} (delete the line of anyone who should stay deactivated), then \
         check and restore them, with their rooms:\n  {base} --dry-run\n  {base}"
    );
    if c.erased > 0 {
        let _ = writeln!(
            out,
            "  Erased users ({}) stay deactivated unless you add --include-erased (they asked \
             to be forgotten: decide for each)",
            c.erased
        );
    }
    if c.locked > 0 {
        let _ = writeln!(
            out,
            "  Locked users ({}) stay locked after the reactivation unless you add --unlock",
            c.locked
        );
    }
}

/// "1 user", "2 users".
fn users(n: u64) -> String {
    if n == 1 {
        "1 user".into()
    } else {
        format!("{n} users")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(counts: &'a FindCounts, ending: &'a Ending, window: Window) -> FindSummary<'a> {
        FindSummary {
            counts,
            ending,
            elapsed: Duration::from_secs(3),
            output: Path::new("out dir/users.csv"),
            homeserver: "https://m.example.org",
            window,
            rooms_read: 7,
            totals: (Some(10), Some(10)),
            mas: None,
        }
    }

    #[test]
    fn a_complete_listing_names_the_next_commands_and_what_was_left_out() {
        let counts = FindCounts {
            listed: 10,
            written: 5,
            erased: 1,
            locked: 2,
            rooms: 9,
            first_at: Some(1_764_118_800_000),
            last_at: Some(1_764_118_860_000),
            before: 2,
            unknown: 1,
            failed: 12,
            failed_shown: vec![("@f:x".into(), "HTTP 500".into())],
            ..FindCounts::default()
        };
        let window = Window {
            since: Some(1),
            until: None,
        };
        let text = summary(&input(&counts, &Ending::Complete, window));
        for needle in [
            "Listed 10 users deactivated on https://m.example.org",
            "reading 7 rooms",
            "written to out dir/users.csv: 5 users, deactivated 2025-11-26T01:00:00.000Z to 2025-11-26T01:01:00.000Z, 9 rooms",
            "1 erased",
            "2 also locked",
            "before --left-since, left out: 2",
            "time unknown (in no room), left out: 1; run find without --left-since/--left-until",
            "could not be read, left out: 12",
            "@f:x: HTTP 500",
            "… and 11 more",
            "matrix-reactivate -H https://m.example.org 'out dir/users.csv' -o 'out dir/results.csv' --rooms-column rooms --dry-run",
            "--include-erased",
            "--unlock",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(exit_code(&Ending::Complete, &counts), 3);
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn stops_and_empty_lists() {
        let counts = FindCounts::default();
        let w = Window::default();
        let t = summary(&input(&counts, &Ending::Interrupted, w));
        assert!(
            t.contains("nothing was written") && t.contains("again"),
            "{t}"
        );
        assert_eq!(exit_code(&Ending::Interrupted, &counts), 130);
        let fatal = Ending::Fatal("token revoked".into());
        let t = summary(&input(&counts, &fatal, w));
        assert!(
            t.contains("token revoked") && t.contains("Nothing was written"),
            "{t}"
        );
        assert_eq!(exit_code(&fatal, &counts), 1);
        let t = summary(&input(&counts, &Ending::Complete, w));
        assert!(
            t.contains("Nothing to restore.") && !t.contains("Next:"),
            "{t}"
        );
        assert_eq!(exit_code(&Ending::Complete, &counts), 0);
    }

    #[test]
    fn a_mas_listing_names_mas_and_the_users_only_one_side_holds_deactivated() {
        let counts = FindCounts {
            listed: 4,
            written: 4,
            mas_listed: Some(3),
            mas_only: 1,
            synapse_only: 1,
            ..FindCounts::default()
        };
        let mut s = input(&counts, &Ending::Complete, Window::default());
        s.mas = Some("https://auth.m.example.org");
        let t = summary(&s);
        for needle in [
            "Listed 4 users deactivated on https://m.example.org and its MAS at \
             https://auth.m.example.org (3 there; deactivation times are MAS's, exact)",
            "1 deactivated in MAS only",
            "1 deactivated on Synapse's side only",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
        }
    }

    #[test]
    fn a_list_that_changed_is_flagged() {
        let counts = FindCounts {
            repeated: 1,
            ..FindCounts::default()
        };
        let mut s = input(&counts, &Ending::Complete, Window::default());
        s.totals = (Some(10), Some(11));
        let t = summary(&s);
        assert!(
            t.contains("changed while the list was read (10 → 11)"),
            "{t}"
        );
        assert!(t.contains("listed twice"), "{t}");
    }
}
