//! Everything `--resume` needs: the rows an earlier run wrote, the passwords
//! it journaled, and the command that continues a run.
//!
//! A resumed run never does a user twice and never replaces a password an
//! earlier run may have set: users with a row are skipped, and journaled users
//! are looked up again and completed with the journaled password (or, after
//! a run that sealed its passwords, which cannot be read back, with a new one:
//! see `pipeline::password`). A resumed run that would record its passwords
//! otherwise than the interrupted one (sealed then not, not then sealed, other
//! recipients) is refused before any user is touched.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::config::UsageError;
use crate::journal;
use crate::report::results::Results;
use crate::report::{is_partial, Counts, Status, HEADER};
use crate::seal::{self, Sealing};
use crate::user_id::UserId;
use crate::user_set::{UserSet, DONE};

/// What an earlier run left in the results file.
pub struct Earlier {
    /// Users with a row (flag `DONE`): their status is final and they are not
    /// checked again. The input reader goes on to use this set to find duplicates.
    pub users: UserSet,
    /// Lines that already have an `invalid` row.
    pub invalid_lines: HashSet<u64>,
    pub counts: Counts,
    /// Whether the earlier rows came from a `--dry-run`.
    pub dry_run: bool,
    /// Rows whose password is sealed, and rows whose password is in clear.
    pub sealed_passwords: u64,
    pub clear_passwords: u64,
}

impl Earlier {
    /// Nothing earlier: a new run.
    pub fn none(server_name: &str) -> Self {
        Earlier {
            users: UserSet::new(server_name),
            invalid_lines: Default::default(),
            counts: Counts::default(),
            dry_run: false,
            sealed_passwords: 0,
            clear_passwords: 0,
        }
    }
}

/// Reopens the results file of an earlier run and reads what it holds.
/// `dry_run` is this run's: a real run refuses a dry run's results file.
pub fn reopen_results(
    path: &Path,
    server_name: &str,
    dry_run: bool,
) -> anyhow::Result<(Results, Earlier)> {
    let (mut results, text) = Results::reopen(path)?;
    let earlier = read_rows(path, &text, server_name)?;
    if text.is_empty() {
        // Only the header was cut short: write it again.
        results.write_header()?;
    }
    if earlier.dry_run && !dry_run {
        bail!(
            "{} holds the results of a --dry-run; a real run needs its own results file: \
             choose another --output",
            path.display()
        );
    }
    Ok((results, earlier))
}

/// Reads the rows of a results file (`text`, complete lines only).
fn read_rows(path: &Path, text: &[u8], server_name: &str) -> anyhow::Result<Earlier> {
    let mut earlier = Earlier::none(server_name);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text);
    let header = reader
        .headers()
        .with_context(|| format!("cannot read results file {}", path.display()))?
        .clone();
    if !header.is_empty() && header.iter().take(HEADER.len()).ne(HEADER) {
        bail!(
            "{} is not a results file of matrix-reactivate (its first line is not {}); \
             refusing to resume into it",
            path.display(),
            HEADER.join(",")
        );
    }
    for (i, rec) in reader.records().enumerate() {
        let row = i + 2;
        let rec =
            rec.with_context(|| format!("results file {}, row {row}: unreadable", path.display()))?;
        let cell = |n: usize| rec.get(n).unwrap_or_default();
        let status = Status::parse(cell(1)).with_context(|| {
            format!(
                "results file {}, row {row}: unknown status {:?}",
                path.display(),
                cell(1)
            )
        })?;
        let user = cell(0);
        if status != Status::Invalid && UserId::parse(user).is_err() {
            bail!(
                "results file {}, row {row}: {user:?} is not a user ID; refusing to resume into it",
                path.display()
            );
        }
        match status {
            Status::Invalid => {
                earlier.invalid_lines.insert(cell(4).parse().unwrap_or(0));
            }
            _ => {
                earlier.dry_run |= status == Status::WouldReactivate;
                earlier.users.visit(user, DONE);
            }
        }
        match cell(2) {
            "" => {}
            p if seal::is_sealed(p) => earlier.sealed_passwords += 1,
            _ => earlier.clear_passwords += 1,
        }
        earlier.counts.add(status);
        if is_partial(status, cell(3), cell(6)) {
            earlier.counts.partial += 1;
        }
        earlier.counts.add_restored(cell(7));
    }
    Ok(earlier)
}

/// Passwords an interrupted run journaled for users that have no row yet:
/// checked again, reused, never replaced.
pub fn journaled_passwords(
    journal_path: &Path,
    earlier: &Earlier,
) -> anyhow::Result<HashMap<String, String>> {
    let mut passwords = journal::read(journal_path)?;
    passwords.retain(|user, _| !earlier.users.contains(user));
    Ok(passwords)
}

/// Refuses a resumed run that would record passwords otherwise than the
/// interrupted one did. The journal's first line says exactly how (and to
/// whom) it sealed; the results file tells sealed rows from clear ones, which
/// is all that is left once a run completed and its journal is gone.
pub fn check_sealing(
    journal_path: &Path,
    results: &Path,
    earlier: Option<&Earlier>,
    now: &Sealing,
) -> anyhow::Result<()> {
    if let Some(journaled) = journal::sealing(journal_path)? {
        let shown = journal_path.display().to_string();
        Sealing::refuse_change(&journaled, now, &format!("the journal {shown}"))
            .map_err(UsageError)?;
    }
    let Some(earlier) = earlier else {
        return Ok(());
    };
    let shown = results.display();
    let refusal = match now {
        Sealing::Clear if earlier.sealed_passwords > 0 => format!(
            "refusing to resume: {shown} holds {} sealed password(s), and this run would              write its own in clear. Give the same --encrypt-to / --encrypt-to-file as the run              that wrote it",
            earlier.sealed_passwords
        ),
        Sealing::SealedTo(_) if earlier.clear_passwords > 0 => format!(
            "refusing to resume: {shown} holds {} password(s) in clear, and this run would              seal its own, leaving a file of both kinds. Resume without --encrypt-to /              --encrypt-to-file",
            earlier.clear_passwords
        ),
        _ => return Ok(()),
    };
    Err(UsageError(refusal).into())
}

/// When the interrupted run was last seen working: the later of the last
/// changes to its journal and its results file. `None` if neither exists.
pub fn last_write(journal_path: &Path, results: &Path) -> Option<SystemTime> {
    [journal_path, results]
        .into_iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

/// Until when users of a sealed journal wait before they are looked up
/// again (`pipeline::password::settle`): `timeout` after the interrupted
/// run's last write, if that is still to come.
pub fn settle_until(last_write: Option<SystemTime>, timeout: Duration) -> Option<SystemTime> {
    let until = last_write? + timeout;
    (until > SystemTime::now()).then_some(until)
}

/// The command line to continue this run: the same arguments plus `--resume`.
pub fn resume_command(args: &[String]) -> String {
    let mut parts: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    if !args.iter().any(|a| a == "--resume") {
        parts.push("--resume".into());
    }
    parts.join(" ")
}

/// Quotes an argument for a POSIX shell, when it needs it.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_row;
    use std::io::Write;

    #[test]
    fn resume_reads_rows_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut r = Results::create(&path).unwrap();
        r.write(&sample_row("@a:x", Status::Reactivated, 2))
            .unwrap();
        r.write(&sample_row("bad", Status::Invalid, 3)).unwrap();
        r.write(&sample_row("@c:x", Status::NotFound, 4)).unwrap();
        drop(r);
        // A crash in the middle of a row.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"@d:x,reactivated,abc").unwrap();
        drop(f);

        let (_, earlier) = reopen_results(&path, "x", false).unwrap();
        assert!(earlier.users.contains("@a:x"));
        assert!(earlier.users.contains("@c:x"));
        assert!(!earlier.users.contains("@d:x"));
        assert!(earlier.invalid_lines.contains(&3));
        assert_eq!(earlier.counts.rows(), 3);
        assert!(!earlier.dry_run);
    }

    #[test]
    fn a_header_cut_short_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(&path, "user_id,sta").unwrap();
        let (mut r, earlier) = reopen_results(&path, "x", false).unwrap();
        assert_eq!(earlier.counts.rows(), 0);
        r.write(&sample_row("@a:x", Status::NotFound, 2)).unwrap();
        drop(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{}\n@a:x,not_found,,,2,,,\n", HEADER.join(","))
        );
    }

    #[test]
    fn resume_refuses_a_foreign_file_and_a_dry_runs_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "user_id\n@a:x\n").unwrap();
        let e = reopen_results(&path, "x", false).err().unwrap();
        assert!(e.to_string().contains("not a results file"), "{e}");

        let path = dir.path().join("check.csv");
        let mut r = Results::create(&path).unwrap();
        r.write(&sample_row("@a:x", Status::WouldReactivate, 2))
            .unwrap();
        drop(r);
        let e = reopen_results(&path, "x", false).err().unwrap();
        assert!(e.to_string().contains("--dry-run"), "{e}");
        assert!(reopen_results(&path, "x", true).is_ok());
    }

    #[test]
    fn sealed_and_clear_rows_are_counted_and_a_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut r = Results::create(&path).unwrap();
        let mut sealed = sample_row("@a:x", Status::Reactivated, 2);
        sealed.password = Some(format!("{}ABCD", seal::SEALED_PREFIX));
        r.write(&sealed).unwrap();
        r.write(&sample_row("@b:x", Status::NotFound, 3)).unwrap();
        drop(r);
        let (_, earlier) = reopen_results(&path, "x", false).unwrap();
        assert_eq!((earlier.sealed_passwords, earlier.clear_passwords), (1, 0));
        let none = dir.path().join("no.journal");
        let desk = Sealing::SealedTo(vec!["age1desk".into()]);
        assert!(check_sealing(&none, &path, Some(&earlier), &desk).is_ok());
        let e = check_sealing(&none, &path, Some(&earlier), &Sealing::Clear)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 sealed password(s)"), "{e}");

        let clear = dir.path().join("c.csv");
        let mut r = Results::create(&clear).unwrap();
        r.write(&sample_row("@a:x", Status::Reactivated, 2))
            .unwrap();
        drop(r);
        let (_, earlier) = reopen_results(&clear, "x", false).unwrap();
        assert_eq!((earlier.sealed_passwords, earlier.clear_passwords), (0, 1));
        let e = check_sealing(&none, &clear, Some(&earlier), &desk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 password(s) in clear"), "{e}");

        // The journal's line is checked first, and exactly.
        let j = dir.path().join("r.csv.journal");
        std::fs::write(&j, format!("{}\n", desk.line())).unwrap();
        let other = Sealing::SealedTo(vec!["age1other".into()]);
        let e = check_sealing(&j, &path, None, &other).unwrap_err();
        assert!(
            e.downcast_ref::<UsageError>().is_some(),
            "a usage error: exit 2"
        );
        let e = e.to_string();
        assert!(
            e.contains("other recipients") && e.contains("r.csv.journal"),
            "{e}"
        );
        assert!(check_sealing(&j, &path, None, &desk).is_ok());
    }

    #[test]
    fn users_of_a_sealed_journal_wait_for_the_interrupted_runs_last_requests() {
        let t = Duration::from_secs(30);
        assert_eq!(settle_until(None, t), None);
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(settle_until(Some(long_ago), t), None);
        let just_now = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(settle_until(Some(just_now), t), Some(just_now + t));
        let dir = tempfile::tempdir().unwrap();
        let (j, r) = (dir.path().join("j"), dir.path().join("r"));
        assert_eq!(last_write(&j, &r), None);
        std::fs::write(&r, "x").unwrap();
        assert!(last_write(&j, &r).is_some());
    }

    #[test]
    fn resume_command_quotes_and_adds_the_flag() {
        let args: Vec<String> = [
            "matrix-reactivate",
            "my users.csv",
            "-o",
            "out.csv",
            "--column",
            "it's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            resume_command(&args),
            r"matrix-reactivate 'my users.csv' -o out.csv --column 'it'\''s' --resume"
        );
        let args: Vec<String> = ["m", "in.csv", "--resume"].map(String::from).to_vec();
        assert_eq!(resume_command(&args), "m in.csv --resume");
    }
}
