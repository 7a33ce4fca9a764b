//! What `snapshot` did, on stderr: the file and what is in it, the users who
//! are not in it and why (named), and the command that gives it back; and the
//! exit code. Pure functions of the counts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::read::Outcome;
use super::users::Skip;
use crate::report::summary::Ending;
use crate::run::resume::shell_quote;

/// Users named per reason in the summary, at most.
pub const NAMED: usize = 10;

/// Users of one reason: how many, and the first few.
#[derive(Clone, Debug, Default)]
pub struct Named {
    pub count: u64,
    pub shown: Vec<String>,
}

impl Named {
    fn add(&mut self, who: String) {
        self.count += 1;
        if self.shown.len() < NAMED {
            self.shown.push(who);
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotCounts {
    /// Users in the file.
    pub written: u64,
    /// Of them, with a key backup; and the sessions written in all.
    pub backups: u64,
    pub sessions: u64,
    /// Tokens to act as a user that could not be ended (they expire by themselves).
    pub left_open: u64,
    /// Written without push rules and key backup (locked users).
    pub locked: Named,
    pub not_found: Named,
    pub deactivated: Named,
    pub not_local: Named,
    pub invalid: Named,
    /// Named twice in the input (read once): not a problem.
    pub repeated: u64,
    /// Could not be read, with why.
    pub failed: Named,
}

impl SnapshotCounts {
    pub fn take(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Written {
                sessions,
                backup,
                left_open,
                ..
            } => {
                self.written += 1;
                self.sessions += sessions;
                self.backups += u64::from(backup);
                self.left_open += u64::from(left_open);
            }
            Outcome::Locked(u) => {
                self.written += 1;
                self.locked.add(u.as_str().to_owned());
            }
            Outcome::NotFound(u) => self.not_found.add(u.as_str().to_owned()),
            Outcome::Deactivated(u) => self.deactivated.add(u.as_str().to_owned()),
            Outcome::Failed { user, why } => self.failed.add(format!("{user}: {why}")),
            Outcome::Stopped => {}
        }
    }

    pub fn skip(&mut self, who: String, why: Skip) {
        match why {
            Skip::Invalid => self.invalid.add(who),
            Skip::NotLocal => self.not_local.add(who),
            Skip::Repeated => self.repeated += 1,
        }
    }

    /// Users handled so far, for the progress display.
    pub fn handled(&self) -> u64 {
        self.written + self.left_out() + self.repeated
    }

    /// Users of the list or input that are not in the file.
    pub fn left_out(&self) -> u64 {
        self.not_found.count
            + self.deactivated.count
            + self.not_local.count
            + self.invalid.count
            + self.failed.count
    }

    /// `written 120 · sessions 3400 · not in the file 2` for the progress display.
    pub fn brief(&self) -> String {
        let mut parts = vec![
            format!("written {}", self.written),
            format!("sessions {}", self.sessions),
        ];
        if self.left_out() > 0 {
            parts.push(format!("not in the file {}", self.left_out()));
        }
        parts.join(" · ")
    }
}

/// Exit code 3 when a user had to be left out of the file, or is in it
/// only in part.
pub fn exit_code(ending: &Ending, counts: &SnapshotCounts) -> i32 {
    crate::report::summary::code(ending, counts.left_out() + counts.locked.count > 0)
}

/// What the summary needs besides the counts.
pub struct SnapshotSummary<'a> {
    pub counts: &'a SnapshotCounts,
    pub ending: &'a Ending,
    pub elapsed: Duration,
    pub output: &'a Path,
    pub homeserver: &'a str,
    /// INPUT, as the admin named it; `None` for every active user.
    pub input: Option<&'a str>,
}

pub fn summary(s: &SnapshotSummary) -> String {
    let c = s.counts;
    let mut out = String::new();
    let file = s.output.display();
    match s.ending {
        Ending::Fatal(reason) => {
            let _ = writeln!(out, "error: {reason}");
            let _ = writeln!(out, "No snapshot was written ({file} does not exist).");
            return out;
        }
        Ending::Interrupted => {
            let _ = writeln!(
                out,
                "Interrupted after {} users: no snapshot was written ({file} does not exist: \
                 it would be incomplete). Run the same command again.",
                c.handled()
            );
            return out;
        }
        Ending::Complete => {}
    }
    let _ = writeln!(
        out,
        "Snapshot of {} written to {file} in {:.1} s:",
        s.homeserver,
        s.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  users: {} · with a key backup: {} · backup sessions: {}",
        c.written, c.backups, c.sessions
    );
    if c.locked.count > 0 {
        let _ = writeln!(
            out,
            "  in the file without push rules and key backup, locked (the server refuses a \
             locked user's token; unlock them and take another snapshot to keep those): {}",
            c.locked.count
        );
        named(&mut out, &c.locked);
    }
    left_out(&mut out, c);
    if c.repeated > 0 {
        let _ = writeln!(
            out,
            "  named more than once in the input (read once): {}",
            c.repeated
        );
    }
    if c.left_open > 0 {
        let _ = writeln!(
            out,
            "  warning: {} tokens to act as a user could not be ended; they expire by \
             themselves within {} minutes",
            c.left_open,
            super::read::ACTING_LIFETIME.as_secs() / 60
        );
    }
    let users = s.input.map_or("USERS.csv".to_owned(), shell_quote);
    let _ = writeln!(
        out,
        "Should a change deactivate some of them by mistake, give everything back with:\n  \
         matrix-reactivate -H {} {users} -o results.csv --restore-from {}",
        shell_quote(s.homeserver),
        shell_quote(&s.output.display().to_string())
    );
    out
}

/// Who is not in the file, and why, each named.
fn left_out(out: &mut String, c: &SnapshotCounts) {
    for (named, why) in [
        (&c.not_found, "not found on the server"),
        (&c.deactivated, "deactivated already (nothing left to keep)"),
        (&c.not_local, "not of this server"),
        (&c.invalid, "not a user ID"),
        (&c.failed, "could not be read"),
    ] {
        if named.count == 0 {
            continue;
        }
        let _ = writeln!(out, "  not in the file, {why}: {}", named.count);
        self::named(out, named);
    }
}

/// The users of one reason, the first few, one a line.
fn named(out: &mut String, named: &Named) {
    for who in &named.shown {
        let _ = writeln!(out, "    {who}");
    }
    if named.count > named.shown.len() as u64 {
        let _ = writeln!(
            out,
            "    … and {} more",
            named.count - named.shown.len() as u64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_id::UserId;

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn the_summary_names_who_is_missing_and_says_what_to_run() {
        let mut c = SnapshotCounts::default();
        c.take(Outcome::Written {
            user: id("@a:x"),
            sessions: 12,
            backup: true,
            left_open: false,
        });
        c.take(Outcome::Written {
            user: id("@b:x"),
            sessions: 0,
            backup: false,
            left_open: true,
        });
        c.take(Outcome::NotFound(id("@ghost:x")));
        c.take(Outcome::Locked(id("@lock:x")));
        c.take(Outcome::Failed {
            user: id("@c:x"),
            why: "reading the rooms: HTTP 500".into(),
        });
        for n in 0..12 {
            c.take(Outcome::Deactivated(id(&format!("@d{n}:x"))));
        }
        c.skip("@e:other".into(), Skip::NotLocal);
        c.skip("@a:x".into(), Skip::Repeated);
        assert_eq!(c.left_out(), 15);
        assert_eq!(c.handled(), 19);
        let text = summary(&SnapshotSummary {
            counts: &c,
            ending: &Ending::Complete,
            elapsed: Duration::from_secs(2),
            output: Path::new("before.snap"),
            homeserver: "https://m.x",
            input: Some("staff list.csv"),
        });
        assert!(
            text.contains("users: 3 · with a key backup: 1 · backup sessions: 12"),
            "{text}"
        );
        assert!(
            text.contains("not found on the server: 1\n    @ghost:x\n"),
            "{text}"
        );
        assert!(text.contains("@c:x: reading the rooms: HTTP 500"), "{text}");
        assert!(
            text.contains("deactivated already (nothing left to keep): 12"),
            "{text}"
        );
        assert!(text.contains("… and 2 more"), "{text}");
        assert!(
            text.contains("without push rules and key backup, locked")
                && text.contains("    @lock:x\n"),
            "{text}"
        );
        let mut only_locked = SnapshotCounts::default();
        only_locked.take(Outcome::Locked(id("@lock:x")));
        assert_eq!(exit_code(&Ending::Complete, &only_locked), 3);
        assert!(
            text.contains("not of this server: 1\n    @e:other"),
            "{text}"
        );
        assert!(text.contains("named more than once in the input (read once): 1"));
        assert!(text.contains("1 tokens to act as a user could not be ended"));
        assert!(
            text.contains("matrix-reactivate -H https://m.x 'staff list.csv' -o results.csv --restore-from before.snap"),
            "{text}"
        );
        assert_eq!(exit_code(&Ending::Complete, &c), 3);
        assert_eq!(exit_code(&Ending::Complete, &SnapshotCounts::default()), 0);
        assert_eq!(
            exit_code(&Ending::Interrupted, &SnapshotCounts::default()),
            130
        );
        let text = summary(&SnapshotSummary {
            counts: &c,
            ending: &Ending::Fatal("disk full".into()),
            elapsed: Duration::ZERO,
            output: Path::new("before.snap"),
            homeserver: "https://m.x",
            input: None,
        });
        assert!(
            text.starts_with("error: disk full\nNo snapshot was written"),
            "{text}"
        );
    }
}
