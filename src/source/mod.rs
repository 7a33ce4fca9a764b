//! The before-image of a user: what their account held before the mistaken
//! deactivation, read from a Synapse database backup or from a `snapshot`
//! file, behind one trait.
//!
//! A source is read per user, never whole: `image` returns one user's account
//! data, push rules, e-mails, profile, rooms and the description of their
//! newest key backup, and `sessions` pages through that backup's sessions a
//! batch at a time, so a user with 100,000 sessions costs one batch of memory.
//!
//! A source never learns about the server the tool talks to, and never writes:
//! databases are opened read-only (`immutable=1` for SQLite, a read-only
//! transaction for PostgreSQL).

pub mod pgpass;
pub mod snapshot;
mod sqlite;
pub mod synapse_db;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::user_id::UserId;

/// A JSON value kept as the source holds it, byte for byte.
pub type Json = Box<RawValue>;

/// An e-mail address or phone number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threepid {
    /// `email` or `msisdn`.
    pub medium: String,
    pub address: String,
    /// Milliseconds since the epoch, when known.
    #[serde(default)]
    pub validated_at: Option<i64>,
    #[serde(default)]
    pub added_at: Option<i64>,
}

/// Display name and avatar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// One item of account data: global (`room_id` is `None`) or per room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountData {
    #[serde(default)]
    pub room_id: Option<String>,
    /// `m.direct`, `m.ignored_user_list`, `m.tag`, `m.fully_read`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Json,
}

/// The push rule kinds, in the order the server evaluates them.
pub const PUSH_RULE_KINDS: [&str; 6] = [
    "override",
    "content",
    "postcontent",
    "room",
    "sender",
    "underride",
];

/// A push rule the user made (not a server default).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomRule {
    /// One of `PUSH_RULE_KINDS`.
    pub kind: String,
    /// The rule's ID within its kind (for `room` and `sender` rules, the room
    /// or user it is about), without the `global/<kind>/` prefix.
    pub rule_id: String,
    /// `content` rules: the pattern; other kinds carry `conditions`.
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub conditions: Option<Json>,
    pub actions: Json,
    pub enabled: bool,
}

/// A server-default push rule (`.m.rule.*`) as the user had it. `None` where
/// the source holds no change: the server's default then stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DefaultRule {
    pub kind: String,
    pub rule_id: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub actions: Option<Json>,
}

/// The user's push rules as far as they differ from the server's defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushRules {
    /// Custom rules, by kind in `PUSH_RULE_KINDS` order, and within a kind in
    /// the order the server evaluates them (first is highest).
    pub custom: Vec<CustomRule>,
    pub defaults: Vec<DefaultRule>,
}

/// The newest key backup version (the one clients use), without its sessions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    /// The version in the source; a restored backup gets a new number.
    pub version: String,
    pub algorithm: String,
    pub auth_data: Json,
    /// How many sessions it holds.
    pub sessions: u64,
}

/// One room key of a backup, as the client uploaded it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupSession {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// Encrypted by the client: opaque here, kept byte for byte.
    pub session_data: Json,
}

/// Where a page of sessions starts: after this room and session.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionCursor {
    pub room_id: String,
    pub session_id: String,
}

impl BackupSession {
    pub fn cursor(&self) -> SessionCursor {
        SessionCursor {
            room_id: self.room_id.clone(),
            session_id: self.session_id.clone(),
        }
    }
}

/// What one user's account held, as the source has it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BeforeImage {
    pub threepids: Vec<Threepid>,
    pub profile: Profile,
    /// Rooms the user was joined to.
    pub rooms: Vec<String>,
    /// Global and per-room account data.
    pub account_data: Vec<AccountData>,
    pub push_rules: PushRules,
    pub backup: Option<Backup>,
}

/// A before-image source. Calls block (a database query, a file read): the
/// pipeline runs them on tokio's blocking pool.
pub trait Source: Send + Sync {
    /// What the source is, for messages: `snapshot users.snap`,
    /// `Synapse SQLite database homeserver.db`, `PostgreSQL database synapse on db:5432`.
    fn describe(&self) -> String;

    /// The server the source's users belong to (the domain of their IDs).
    fn server_name(&self) -> &str;

    /// The user's before-image; `None` when the source does not hold the user.
    fn image(&self, user: &UserId) -> anyhow::Result<Option<BeforeImage>>;

    /// Up to `limit` sessions of the user's backup `version`, in
    /// (room_id, session_id) order, after `after` (from the first without it).
    fn sessions(
        &self,
        user: &UserId,
        version: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> anyhow::Result<Vec<BackupSession>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_from_reads_files_and_urls_and_refuses_passwords() {
        assert_eq!(
            SourceSpec::parse("backup/homeserver.db"),
            Ok(SourceSpec::File("backup/homeserver.db".into()))
        );
        assert_eq!(
            SourceSpec::parse("postgresql://synapse@db.example.org:5433/synapse_restored"),
            Ok(SourceSpec::Postgres(
                "postgresql://synapse@db.example.org:5433/synapse_restored".into()
            ))
        );
        let e = SourceSpec::parse("postgres://synapse:hunter2@db/synapse").unwrap_err();
        assert!(e.contains("PGPASSWORD") && !e.contains("hunter2"), "{e}");
        assert!(SourceSpec::parse("postgresql://db").is_err(), "no database");
        assert!(SourceSpec::parse(" ").is_err());
    }
}

impl fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Where `--restore-from` reads: a snapshot or SQLite file, or a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A `snapshot` file or a Synapse SQLite database; which one is told by its content.
    File(std::path::PathBuf),
    /// `postgresql://user@host[:port]/dbname`, never with a password in it.
    Postgres(String),
}

impl SourceSpec {
    /// Reads `--restore-from`: a `postgresql://` (or `postgres://`) URL, else a
    /// file. A URL that carries a password is refused: it would show in `ps`.
    pub fn parse(arg: &str) -> Result<SourceSpec, String> {
        let lower = arg.to_ascii_lowercase();
        if !(lower.starts_with("postgresql://") || lower.starts_with("postgres://")) {
            if arg.trim().is_empty() {
                return Err(
                    "give a snapshot file, a Synapse SQLite file or a postgresql:// URL".into(),
                );
            }
            return Ok(SourceSpec::File(arg.into()));
        }
        let url = url::Url::parse(arg).map_err(|e| format!("{arg}: not a valid URL ({e})"))?;
        if url.password().is_some() {
            return Err(
                "the URL carries a password, which any user of this machine can read in the process list: remove it and give it in PGPASSWORD or ~/.pgpass"
                    .into(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) || url.path().trim_matches('/').is_empty() {
            return Err(format!(
                "{arg}: give postgresql://USER@HOST[:PORT]/DBNAME (the database the backup was restored into)"
            ));
        }
        Ok(SourceSpec::Postgres(arg.to_owned()))
    }
}

/// Opens a source and checks that it is one the tool reads: a snapshot, or a
/// Synapse database whose schema version is in the range the tool knows.
/// Errors name the file or URL and say what to do.
pub fn open(spec: &SourceSpec) -> anyhow::Result<Box<dyn Source>> {
    match spec {
        SourceSpec::Postgres(url) => Ok(Box::new(synapse_db::SynapseDb::open_postgres(url)?)),
        SourceSpec::File(path) => {
            if snapshot::is_snapshot(path)? {
                Ok(Box::new(snapshot::SnapshotReader::open(path)?))
            } else {
                Ok(Box::new(synapse_db::SynapseDb::open_sqlite(path)?))
            }
        }
    }
}
