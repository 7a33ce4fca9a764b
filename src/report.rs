//! The results CSV, the counts per status, the summary and the exit code.
//!
//! The results file is the admin's record of the run: every row is written and
//! flushed as its user finishes, and the file is created 0600 because it holds
//! passwords. This module never decides what happens to a user, only records it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::user_set::{UserSet, DONE};

pub const HEADER: [&str; 7] = [
    "user_id",
    "status",
    "password",
    "error",
    "line",
    "rooms_rejoined",
    "rooms_failed",
];

/// What happened to one user (or one unusable line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Reactivated,
    WouldReactivate,
    Unlocked,
    WouldUnlock,
    AlreadyActive,
    NotFound,
    Erased,
    NotLocal,
    Invalid,
    Failed,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Reactivated,
        Status::WouldReactivate,
        Status::Unlocked,
        Status::WouldUnlock,
        Status::AlreadyActive,
        Status::NotFound,
        Status::Erased,
        Status::NotLocal,
        Status::Invalid,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reactivated => "reactivated",
            Status::WouldReactivate => "would_reactivate",
            Status::Unlocked => "unlocked",
            Status::WouldUnlock => "would_unlock",
            Status::AlreadyActive => "already_active",
            Status::NotFound => "not_found",
            Status::Erased => "erased",
            Status::NotLocal => "not_local",
            Status::Invalid => "invalid",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Rows that an admin must look at; any of them makes the exit code 3.
    pub fn needs_attention(self) -> bool {
        !matches!(
            self,
            Status::Reactivated
                | Status::WouldReactivate
                | Status::Unlocked
                | Status::WouldUnlock
                | Status::AlreadyActive
        )
    }
}

/// One row of the results file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    pub user_id: String,
    pub status: Status,
    pub password: Option<String>,
    pub error: String,
    /// The input line where the user first appears.
    pub line: u64,
    /// Rooms joined again, `;`-separated (rooms that would be, in a dry run).
    pub rooms_rejoined: String,
    /// Rooms that could not be joined, each with its reason, `;`-separated.
    pub rooms_failed: String,
}

impl ResultRow {
    /// A user who is back, but not all of what deactivation took is: some rooms
    /// or profile fields could not be given back.
    pub fn is_partial(&self) -> bool {
        is_partial(self.status, &self.error, &self.rooms_failed)
    }
}

fn is_partial(status: Status, error: &str, rooms_failed: &str) -> bool {
    matches!(status, Status::Reactivated | Status::Unlocked)
        && !(error.is_empty() && rooms_failed.is_empty())
}

/// Counts per status, plus what never became a row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    by_status: [u64; 10],
    /// Reactivated rows whose rooms or profile were not all given back.
    pub partial: u64,
    /// Input lines naming a user already seen.
    pub duplicates: u64,
    /// Rows already in the results file when a run resumed.
    pub resumed: u64,
}

impl Counts {
    pub fn add(&mut self, s: Status) {
        self.by_status[s as usize] += 1;
    }

    pub fn record(&mut self, row: &ResultRow) {
        self.add(row.status);
        if row.is_partial() {
            self.partial += 1;
        }
    }

    pub fn get(&self, s: Status) -> u64 {
        self.by_status[s as usize]
    }

    pub fn rows(&self) -> u64 {
        self.by_status.iter().sum()
    }

    pub fn needs_attention(&self) -> u64 {
        Status::ALL
            .into_iter()
            .filter(|s| s.needs_attention())
            .map(|s| self.get(s))
            .sum::<u64>()
            + self.partial
    }

    /// `reactivated 12 · already_active 3 · …`, statuses with a count only.
    pub fn brief(&self) -> String {
        let parts: Vec<String> = Status::ALL
            .into_iter()
            .filter(|&s| self.get(s) > 0)
            .map(|s| format!("{} {}", s.as_str(), self.get(s)))
            .collect();
        if parts.is_empty() {
            "nothing yet".into()
        } else {
            parts.join(" · ")
        }
    }
}

/// What an earlier run left in the results file, for `--resume`.
pub struct Earlier {
    /// Users with a row (flag `DONE`): their status is final and they are not
    /// checked again. The input reader goes on to use this set to find duplicates.
    pub users: UserSet,
    /// Lines that already have an `invalid` row.
    pub invalid_lines: std::collections::HashSet<u64>,
    pub counts: Counts,
    /// Whether the earlier rows came from a `--dry-run`.
    pub dry_run: bool,
}

impl Earlier {
    /// Nothing earlier: a new run.
    pub fn none(server_name: &str) -> Self {
        Earlier {
            users: UserSet::new(server_name),
            invalid_lines: Default::default(),
            counts: Counts::default(),
            dry_run: false,
        }
    }
}

/// The results file, open for appending rows.
pub struct Results {
    writer: csv::Writer<File>,
    path: PathBuf,
}

fn open_private(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).mode(0o600);
    if create_new {
        o.create_new(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

/// Makes a file's directory entry durable (after creating or renaming it).
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

impl Results {
    /// Creates a new results file; refuses if it exists.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = open_private(path, true).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "results file {} already exists; to continue the run that wrote it, add \
                 --resume; to start over, choose another --output or remove the file",
                path.display()
            ),
            _ => anyhow::Error::new(e)
                .context(format!("cannot create results file {}", path.display())),
        })?;
        let mut writer = csv::WriterBuilder::new().from_writer(file);
        writer.write_record(HEADER)?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        sync_parent_dir(path)
            .with_context(|| format!("cannot sync the folder of {}", path.display()))?;
        Ok(Results {
            writer,
            path: path.to_owned(),
        })
    }

    /// Opens an existing results file to continue it, reading what it holds.
    /// A last line cut short by a crash is removed; its user is simply done again.
    pub fn resume(path: &Path, server_name: &str) -> anyhow::Result<(Self, Earlier)> {
        let mut file = open_private(path, false)
            .with_context(|| format!("cannot open results file {} to resume", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .with_context(|| format!("cannot read results file {}", path.display()))?;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64)?;
            file.sync_all()?;
            text.truncate(complete);
        }
        file.seek(SeekFrom::End(0))?;

        let mut earlier = Earlier::none(server_name);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_slice());
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
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        if header.is_empty() {
            // Only the header was cut short: write it again.
            writer.write_record(HEADER)?;
        }
        for (i, rec) in reader.records().enumerate() {
            let rec = rec.with_context(|| {
                format!("results file {}, row {}: unreadable", path.display(), i + 2)
            })?;
            let status = rec.get(1).and_then(Status::parse).with_context(|| {
                format!(
                    "results file {}, row {}: unknown status {:?}",
                    path.display(),
                    i + 2,
                    rec.get(1).unwrap_or("")
                )
            })?;
            let line: u64 = rec.get(4).and_then(|l| l.parse().ok()).unwrap_or(0);
            let user = rec.get(0).unwrap_or_default();
            if status != Status::Invalid && crate::user_id::UserId::parse(user).is_err() {
                bail!(
                    "results file {}, row {}: {user:?} is not a user ID; refusing to resume into it",
                    path.display(),
                    i + 2
                );
            }
            match status {
                Status::Invalid => {
                    earlier.invalid_lines.insert(line);
                }
                Status::WouldReactivate => {
                    earlier.dry_run = true;
                    earlier.users.visit(user, DONE);
                }
                _ => {
                    earlier.users.visit(user, DONE);
                }
            }
            earlier.counts.add(status);
            if is_partial(
                status,
                rec.get(3).unwrap_or_default(),
                rec.get(6).unwrap_or_default(),
            ) {
                earlier.counts.partial += 1;
            }
        }
        writer.flush()?;
        Ok((
            Results {
                writer,
                path: path.to_owned(),
            },
            earlier,
        ))
    }

    /// Writes one row and hands it to the operating system at once.
    pub fn write(&mut self, row: &ResultRow) -> io::Result<()> {
        let line = row.line.to_string();
        self.writer.write_record([
            row.user_id.as_str(),
            row.status.as_str(),
            row.password.as_deref().unwrap_or(""),
            row.error.as_str(),
            line.as_str(),
            row.rooms_rejoined.as_str(),
            row.rooms_failed.as_str(),
        ])?;
        self.writer.flush()
    }

    /// Makes every row durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Complete,
    Interrupted,
    Fatal(String),
}

/// The exit code for a run that got as far as processing users.
pub fn exit_code(ending: &Ending, counts: &Counts) -> i32 {
    match ending {
        Ending::Fatal(_) => 1,
        Ending::Interrupted => 130,
        Ending::Complete if counts.needs_attention() > 0 => 3,
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
}

/// The end-of-run summary: counts, time, where the results are, what to do next.
pub fn summary(s: &SummaryInput) -> String {
    let c = s.counts;
    let mut out = String::new();
    let title = match s.ending {
        Ending::Complete if s.dry_run => "Dry run finished: nothing was changed.",
        Ending::Complete => "Run finished.",
        Ending::Interrupted => "Run interrupted.",
        Ending::Fatal(_) => "Run stopped.",
    };
    let _ = writeln!(out, "\n{title}");
    for st in Status::ALL {
        if c.get(st) > 0 {
            let _ = writeln!(out, "  {:<17} {:>8}", st.as_str(), c.get(st));
        }
    }
    if c.partial > 0 {
        let _ = writeln!(
            out,
            "  {:<17} {:>8}  (reactivated, but some rooms or profile fields were not given back)",
            "incomplete", c.partial
        );
    }
    if c.duplicates > 0 {
        let _ = writeln!(
            out,
            "  {:<17} {:>8}  (lines naming a user already listed; processed once)",
            "duplicate lines", c.duplicates
        );
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
    let hint = |st: Status, text: &str, next: &mut Vec<String>| {
        if c.get(st) > 0 {
            next.push(format!("{} {}: {text}", c.get(st), st.as_str()));
        }
    };
    hint(
        Status::Reactivated,
        "hand each user the password from the results file. Reactivation alone gives back \
         no rooms or e-mail addresses: see --rejoin-rooms, --rooms-column and the email \
         column in --help",
        &mut next,
    );
    if c.partial > 0 {
        next.push(format!(
            "{} reactivated with something missing: the rooms_failed and error columns say \
             what and why (a private room the admin is not in needs the admin invited first)",
            c.partial
        ));
    }
    hint(
        Status::WouldUnlock,
        "run the same command without --dry-run (and with a new --output) to unlock them",
        &mut next,
    );
    hint(
        Status::WouldReactivate,
        "run the same command without --dry-run (and with a new --output) to reactivate them",
        &mut next,
    );
    hint(
        Status::NotFound,
        "no such user on the server (a typo?); nothing was created. Correct the IDs and run \
         them again",
        &mut next,
    );
    hint(
        Status::Erased,
        "erased (GDPR) accounts were left alone; if reactivating them is intended, run them \
         again with --include-erased",
        &mut next,
    );
    hint(
        Status::NotLocal,
        "users of another server; only their own server can reactivate them (check \
         --server-name if they are yours)",
        &mut next,
    );
    hint(
        Status::Invalid,
        "lines that are not user IDs; the error column names each line",
        &mut next,
    );
    hint(
        Status::Failed,
        "the server refused or did not answer; the error column says why. Put those users \
         in a new input and run it with a new --output",
        &mut next,
    );
    if !next.is_empty() {
        let _ = writeln!(out, "\nNext:");
        for n in next {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        });
        assert_eq!(exit_code(&Ending::Complete, &partial), 3, "rooms failed");
        c.add(Status::Unlocked);
        assert_eq!(exit_code(&Ending::Complete, &c), 0);
        assert_eq!(exit_code(&Ending::Interrupted, &c), 130);
        assert_eq!(exit_code(&Ending::Fatal("x".into()), &c), 1);
    }

    #[test]
    fn status_names_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("pending"), None);
    }

    fn row(user: &str, status: Status, line: u64) -> ResultRow {
        ResultRow {
            user_id: user.into(),
            status,
            password: (status == Status::Reactivated).then(|| "pw,\"x\"".into()),
            error: String::new(),
            line,
            rooms_rejoined: String::new(),
            rooms_failed: String::new(),
        }
    }

    #[test]
    fn create_refuses_existing_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let r = Results::create(&path).unwrap();
        drop(r);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = Results::create(&path).err().unwrap();
        assert!(e.to_string().contains("--resume"), "{e}");
    }

    #[test]
    fn resume_reads_rows_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut r = Results::create(&path).unwrap();
        r.write(&row("@a:x", Status::Reactivated, 2)).unwrap();
        r.write(&row("bad", Status::Invalid, 3)).unwrap();
        r.write(&row("@c:x", Status::NotFound, 4)).unwrap();
        drop(r);
        // A crash in the middle of a row.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"@d:x,reactivated,abc").unwrap();
        drop(f);

        let (mut r, earlier) = Results::resume(&path, "x").unwrap();
        assert!(earlier.users.contains("@a:x"));
        assert!(earlier.users.contains("@c:x"));
        assert!(!earlier.users.contains("@d:x"));
        assert!(earlier.invalid_lines.contains(&3));
        assert_eq!(earlier.counts.rows(), 3);
        assert!(!earlier.dry_run);
        r.write(&row("@d:x", Status::Reactivated, 5)).unwrap();
        drop(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(
            text.ends_with("@d:x,reactivated,\"pw,\"\"x\"\"\",,5,,\n"),
            "{text}"
        );
    }

    #[test]
    fn resume_refuses_a_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "user_id\n@a:x\n").unwrap();
        let e = Results::resume(&path, "x").err().unwrap();
        assert!(e.to_string().contains("not a results file"), "{e}");
    }

    #[test]
    fn summary_says_what_to_do() {
        let mut c = Counts::default();
        c.add(Status::Reactivated);
        c.add(Status::NotFound);
        c.duplicates = 2;
        let s = summary(&SummaryInput {
            counts: &c,
            ending: &Ending::Interrupted,
            elapsed: Duration::from_secs(3),
            results: Path::new("out.csv"),
            dry_run: false,
            resume_command: "matrix-reactivate in.csv -o out.csv --resume",
        });
        assert!(s.contains("Run interrupted."), "{s}");
        assert!(s.contains("--resume"), "{s}");
        assert!(s.contains("1 not_found: no such user"), "{s}");
        assert!(s.contains("duplicate lines"), "{s}");
    }
}
