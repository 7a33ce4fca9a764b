//! What happened to each user: statuses, result rows and their counts; the
//! results file (`results`); the summary and the exit code (`summary`), and
//! the summary as JSON (`json`).
//!
//! This module never decides what happens to a user, only records it.

pub mod json;
pub mod results;
pub mod summary;

pub const HEADER: [&str; 8] = [
    "user_id",
    "status",
    "password",
    "error",
    "line",
    "rooms_rejoined",
    "rooms_failed",
    "restored",
];

/// What `--restore-from` gives back, in the order the `restored` column and
/// the JSON summary list them.
pub const RESTORED_ITEMS: [&str; 7] = [
    "emails",
    "profile",
    "rooms",
    "account_data",
    "room_account_data",
    "push_rules",
    "backup_keys",
];

/// Notes in a row's `error` that tell, and need no action: what was kept
/// because the account already had it, and a user the source does not hold.
pub const KEPT_NOTE: &str = "kept: ";
pub const NOT_IN_SOURCE: &str = "not in the source";

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
    /// What `--restore-from` gave back (would give back, in a dry run):
    /// `item:count` joined by `;`, items in `RESTORED_ITEMS` order.
    pub restored: String,
}

impl ResultRow {
    /// A user who is back, but not all of what deactivation took is: some rooms
    /// or profile fields could not be given back.
    pub fn is_partial(&self) -> bool {
        is_partial(self.status, &self.error, &self.rooms_failed)
    }
}

/// Whether a row of this status, error and failed rooms is a user who is
/// back without all of what deactivation took. Notes (`KEPT_NOTE`,
/// `NOT_IN_SOURCE`) alone do not make a row partial.
pub fn is_partial(status: Status, error: &str, rooms_failed: &str) -> bool {
    let problem = error
        .split("; ")
        .any(|part| !(part.is_empty() || part.starts_with(KEPT_NOTE) || part == NOT_IN_SOURCE));
    matches!(status, Status::Reactivated | Status::Unlocked)
        && (problem || !rooms_failed.is_empty())
}

/// `emails:1;account_data:12` from counts per item (zeros left out).
pub fn format_restored(counts: &[u64; 7]) -> String {
    RESTORED_ITEMS
        .iter()
        .zip(counts)
        .filter(|(_, &n)| n > 0)
        .map(|(item, n)| format!("{item}:{n}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The counts per item of a `restored` cell; unknown items are ignored.
pub fn parse_restored(cell: &str) -> [u64; 7] {
    let mut counts = [0; 7];
    for part in cell.split(';') {
        let Some((item, n)) = part.split_once(':') else {
            continue;
        };
        if let (Some(i), Ok(n)) = (
            RESTORED_ITEMS.iter().position(|x| *x == item),
            n.parse::<u64>(),
        ) {
            counts[i] += n;
        }
    }
    counts
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
    /// What `--restore-from` gave back, per item of `RESTORED_ITEMS`.
    pub restored: [u64; 7],
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
        self.add_restored(&row.restored);
    }

    /// Adds a row's `restored` cell to the totals.
    pub fn add_restored(&mut self, cell: &str) {
        for (total, n) in self.restored.iter_mut().zip(parse_restored(cell)) {
            *total += n;
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

/// A row as tests need one: a password for reactivated users, nothing else.
#[cfg(test)]
pub(crate) fn sample_row(user: &str, status: Status, line: u64) -> ResultRow {
    ResultRow {
        user_id: user.into(),
        status,
        password: (status == Status::Reactivated).then(|| "pw,\"x\"".into()),
        error: String::new(),
        line,
        rooms_rejoined: String::new(),
        rooms_failed: String::new(),
        restored: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        assert_eq!(Status::parse("pending"), None);
    }

    #[test]
    fn restored_cells_round_trip_and_leave_out_zeros() {
        let counts = [1, 0, 2, 12, 0, 4, 5321];
        let cell = format_restored(&counts);
        assert_eq!(
            cell,
            "emails:1;rooms:2;account_data:12;push_rules:4;backup_keys:5321"
        );
        assert_eq!(parse_restored(&cell), counts);
        assert_eq!(format_restored(&[0; 7]), "");
        assert_eq!(
            parse_restored("bogus:3;emails:x;profile:1"),
            [0, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn kept_notes_alone_do_not_make_a_row_partial() {
        let r = Status::Reactivated;
        assert!(!is_partial(r, "kept: account_data m.direct", ""));
        assert!(!is_partial(r, "not in the source", ""));
        assert!(!is_partial(r, "not in the source; kept: key backup", ""));
        assert!(is_partial(
            r,
            "kept: account_data m.direct; push rules not given back: x",
            ""
        ));
        assert!(is_partial(r, "", "!r:x (not in room)"));
        assert!(!is_partial(Status::Failed, "boom", ""));
    }
}
