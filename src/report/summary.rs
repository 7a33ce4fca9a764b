//! The end-of-run summary (counts, time, where the results are, what to do
//! next) and the exit code. Both are pure functions of the counts and of how
//! the run ended.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{Counts, Status};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Interrupted,
    Fatal(String),
}

/// The exit code for a run that got as far as processing users.
pub fn exit_code(ending: &Ending, counts: &Counts) -> i32 {
    code(ending, counts.needs_attention() > 0)
}

/// The exit code of any command: 1 stopped, 130 interrupted, 3 finished with
/// something that needs attention, 0 finished.
pub fn code(ending: &Ending, needs_attention: bool) -> i32 {
    match ending {
        Ending::Fatal(_) => 1,
        Ending::Interrupted => 130,
        Ending::Complete if needs_attention => 3,
        Ending::Complete => 0,
    }
}

/// What the summary needs to know.
pub struct SummaryInput<'a> {
    pub counts: &'a Counts,
    pub ending: &'a Ending,
    pub elapsed: Duration,
    pub results: &'a Path,
    pub dry_run: bool,
    pub resume_command: &'a str,
    /// Whether reactivations set passwords (not `--no-password`).
    pub sets_passwords: bool,
    /// Whether the server's logins belong to MAS.
    pub mas: bool,
    /// Whether rooms were given back (`--rejoin-rooms` or `--rooms-column`).
    pub gives_back_rooms: bool,
}

/// What a line of the summary counts.
#[derive(Clone, Copy)]
enum Counted {
    Status(Status),
    /// Reactivated rows whose rooms or profile were not all given back.
    Partial,
}

impl Counted {
    fn of(self, c: &Counts) -> u64 {
        match self {
            Counted::Status(s) => c.get(s),
            Counted::Partial => c.partial,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Counted::Status(s) => s.as_str(),
            Counted::Partial => "reactivated with something missing",
        }
    }
}

/// When a step applies, beside its count.
#[derive(Clone, Copy, Debug)]
enum When {
    Always,
    SetsPasswords,
    /// `--no-password` on a server that owns its logins.
    NoPasswordSynapse,
    /// `--no-password` on a MAS server.
    NoPasswordMas,
    Synapse,
    Mas,
    /// Neither `--rejoin-rooms` nor `--rooms-column`.
    NothingGivenBack,
}

impl When {
    fn holds(self, s: &SummaryInput) -> bool {
        match self {
            When::Always => true,
            When::SetsPasswords => s.sets_passwords,
            When::NoPasswordSynapse => !s.sets_passwords && !s.mas,
            When::NoPasswordMas => !s.sets_passwords && s.mas,
            When::Synapse => !s.mas,
            When::Mas => s.mas,
            When::NothingGivenBack => !s.gives_back_rooms,
        }
    }
}

/// The "Next:" steps, in order: shown for each count that is not zero and
/// whose condition holds, as "<count> <label>: <text>".
const NEXT_STEPS: [(Counted, When, &str); 13] = [
    (
        Counted::Status(Status::Reactivated),
        When::SetsPasswords,
        "hand each user the password from the results file.",
    ),
    (
        Counted::Status(Status::Reactivated),
        When::NoPasswordSynapse,
        "no password was set (the password column is empty): they log in as before, through \
         the server's single sign-on or LDAP.",
    ),
    (
        Counted::Status(Status::Reactivated),
        When::NoPasswordMas,
        "no password was set (the password column is empty): MAS kept each user's password \
         through the deactivation, so they log in as before.",
    ),
    (
        Counted::Status(Status::Reactivated),
        When::NothingGivenBack,
        "reactivation alone gives back no rooms, e-mail addresses, DMs, settings or key \
         backups: see --restore-from, --rejoin-rooms, --rooms-column and the email column in \
         --help",
    ),
    (
        Counted::Partial,
        When::Always,
        "the rooms_failed and error columns say what and why (a private room the admin is \
         not in needs the admin invited first); run them again with --resume or a new input \
         to give back what is missing",
    ),
    (
        Counted::Status(Status::WouldUnlock),
        When::Always,
        "run the same command without --dry-run (and with a new --output) to unlock them",
    ),
    (
        Counted::Status(Status::WouldReactivate),
        When::Always,
        "run the same command without --dry-run (and with a new --output) to reactivate them",
    ),
    (
        Counted::Status(Status::NotFound),
        When::Always,
        "no such user on the server (a typo?); nothing was created. Correct the IDs and run \
         them again",
    ),
    (
        Counted::Status(Status::Erased),
        When::Synapse,
        "erased (GDPR) accounts were left alone; if reactivating them is intended, run them \
         again with --include-erased",
    ),
    (
        Counted::Status(Status::Erased),
        When::Mas,
        "erased accounts were left alone. MAS erases by default when it deactivates, so on \
         this server most mistaken deactivations look erased: review the list, then run them \
         again with --include-erased",
    ),
    (
        Counted::Status(Status::NotLocal),
        When::Always,
        "users of another server; only their own server can reactivate them (check \
         --server-name if they are yours)",
    ),
    (
        Counted::Status(Status::Invalid),
        When::Always,
        "lines that are not user IDs; the error column names each line",
    ),
    (
        Counted::Status(Status::Failed),
        When::Always,
        "the server refused or did not answer; the error column says why. Put those users \
         in a new input and run it with a new --output",
    ),
];

/// The end-of-run summary: counts, time, where the results are, what to do next.
pub fn summary(s: &SummaryInput) -> String {
    let mut out = String::new();
    let title = match s.ending {
        Ending::Complete if s.dry_run => "Dry run finished: nothing was changed.",
        Ending::Complete => "Run finished.",
        Ending::Interrupted => "Run interrupted.",
        Ending::Fatal(_) => "Run stopped.",
    };
    let _ = writeln!(out, "\n{title}");
    counts(&mut out, s);
    let next = next_steps(s);
    if !next.is_empty() {
        let _ = writeln!(out, "\nNext:");
        for n in next {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

/// One line per status with a count, then what never became a row.
fn counts(out: &mut String, s: &SummaryInput) {
    let c = s.counts;
    for st in Status::ALL {
        if c.get(st) > 0 {
            let _ = writeln!(out, "  {:<17} {:>8}", st.as_str(), c.get(st));
        }
    }
    let extra = [
        (
            c.partial,
            "incomplete",
            "reactivated, but some rooms, profile fields or restored items were not given back",
        ),
        (
            c.duplicates,
            "duplicate lines",
            "lines naming a user already listed; processed once",
        ),
    ];
    for (n, label, why) in extra {
        if n > 0 {
            let _ = writeln!(out, "  {label:<17} {n:>8}  ({why})");
        }
    }
    if c.restored.iter().any(|&n| n > 0) {
        let given: Vec<String> = super::RESTORED_ITEMS
            .iter()
            .zip(c.restored)
            .filter(|(_, n)| *n > 0)
            .map(|(item, n)| format!("{item} {n}"))
            .collect();
        let verb = if s.dry_run {
            "would give back"
        } else {
            "given back"
        };
        let _ = writeln!(out, "  {verb}: {}", given.join(" · "));
    }
    if c.resumed > 0 {
        let _ = writeln!(
            out,
            "  ({} of these rows were already in the results from an earlier run)",
            c.resumed
        );
    }
    let _ = writeln!(
        out,
        "  elapsed {:.1} s · results in {} (mode 0600: it holds passwords)",
        s.elapsed.as_secs_f64(),
        s.results.display()
    );
}

fn next_steps(s: &SummaryInput) -> Vec<String> {
    let mut next = Vec::new();
    if let Ending::Fatal(reason) = s.ending {
        next.push(format!("The run stopped: {reason}"));
    }
    if matches!(s.ending, Ending::Fatal(_) | Ending::Interrupted) {
        next.push(format!(
            "Every row so far is saved. To finish the run, fix the cause if any, then run:\n      {}",
            s.resume_command
        ));
    }
    for (counted, when, text) in NEXT_STEPS {
        let n = counted.of(s.counts);
        if n > 0 && when.holds(s) {
            next.push(format!("{n} {}: {text}", counted.label()));
        }
    }
    next
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::ResultRow;

    #[test]
    fn exit_codes() {
        let mut c = Counts::default();
        c.add(Status::Reactivated);
        c.add(Status::AlreadyActive);
        c.add(Status::WouldReactivate);
        assert_eq!(exit_code(&Ending::Complete, &c), 0);
        for st in [
            Status::NotFound,
            Status::Erased,
            Status::NotLocal,
            Status::Invalid,
            Status::Failed,
        ] {
            let mut c2 = c.clone();
            c2.add(st);
            assert_eq!(exit_code(&Ending::Complete, &c2), 3, "{st:?}");
        }
        let mut partial = c.clone();
        partial.record(&ResultRow {
            user_id: "@a:x".into(),
            status: Status::Reactivated,
            password: Some("p".into()),
            error: String::new(),
            line: 1,
            rooms_rejoined: String::new(),
            rooms_failed: "!r:x (not in room)".into(),
            restored: String::new(),
        });
        assert_eq!(exit_code(&Ending::Complete, &partial), 3, "rooms failed");
        c.add(Status::Unlocked);
        assert_eq!(exit_code(&Ending::Complete, &c), 0);
        assert_eq!(exit_code(&Ending::Interrupted, &c), 130);
        assert_eq!(exit_code(&Ending::Fatal("x".into()), &c), 1);
    }

    pub(crate) fn input<'a>(c: &'a Counts, ending: &'a Ending) -> SummaryInput<'a> {
        SummaryInput {
            counts: c,
            ending,
            elapsed: Duration::from_secs(3),
            results: Path::new("out.csv"),
            dry_run: false,
            resume_command: "matrix-reactivate in.csv -o out.csv --resume",
            sets_passwords: true,
            mas: false,
            gives_back_rooms: false,
        }
    }

    #[test]
    fn summary_says_what_to_do() {
        let mut c = Counts::default();
        c.add(Status::Reactivated);
        c.add(Status::NotFound);
        c.duplicates = 2;
        let s = summary(&input(&c, &Ending::Interrupted));
        assert!(s.contains("Run interrupted."), "{s}");
        assert!(s.contains("--resume"), "{s}");
        assert!(s.contains("1 not_found: no such user"), "{s}");
        assert!(s.contains("duplicate lines"), "{s}");
    }

    #[test]
    fn every_count_that_needs_a_step_gets_one_and_only_then() {
        let ending = Ending::Complete;
        let empty = Counts::default();
        for (sets_passwords, mas, rooms) in [
            (true, false, false),
            (false, false, true),
            (true, true, true),
            (false, true, false),
        ] {
            let mut i = input(&empty, &ending);
            (i.sets_passwords, i.mas, i.gives_back_rooms) = (sets_passwords, mas, rooms);
            assert!(!summary(&i).contains("Next:"));
            for (counted, when, text) in NEXT_STEPS {
                let mut c = Counts::default();
                match counted {
                    Counted::Status(s) => c.add(s),
                    Counted::Partial => c.partial = 1,
                }
                let i = SummaryInput { counts: &c, ..i };
                let s = summary(&i);
                let line = format!("1 {}: {text}", counted.label());
                assert_eq!(s.contains(&line), when.holds(&i), "{when:?} {s}");
                let steps = NEXT_STEPS
                    .iter()
                    .filter(|(c, w, _)| c.label() == counted.label() && w.holds(&i))
                    .count();
                assert_eq!(s.matches("\n  - ").count(), steps, "{s}");
            }
        }
    }

    #[test]
    fn no_password_means_no_password_to_hand_out() {
        let mut c = Counts::default();
        c.add(Status::Reactivated);
        c.add(Status::Erased);
        let ending = Ending::Complete;
        let mas = SummaryInput {
            sets_passwords: false,
            mas: true,
            ..input(&c, &ending)
        };
        let s = summary(&mas);
        assert!(!s.contains("hand each user the password"), "{s}");
        assert!(s.contains("MAS kept each user's password"), "{s}");
        assert!(s.contains("MAS erases by default"), "{s}");
    }
}
