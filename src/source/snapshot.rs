//! The file `matrix-reactivate snapshot` writes, and the reader of it.
//!
//! A snapshot is an SQLite database of the tool's own:
//!
//! - `snapshot_meta(key, value)`: `format` (1), `server_name`, `created_at`
//!   (milliseconds since the epoch), `tool` (`matrix-reactivate <version>`);
//! - `images(user_id, image)`: each user's [`BeforeImage`] as JSON, account
//!   data and key backup descriptions byte for byte as the server gave them;
//! - `backup_sessions(user_id, room_id, session_id, …)`: the sessions of each
//!   user's newest key backup, read back a page at a time in
//!   (room_id, session_id) order.
//!
//! The writer never overwrites a file and never leaves a partial one where
//! the snapshot should be: it writes a private (0600) hidden file in the same
//! folder and moves it into place only when complete, without replacing
//! anything that appeared there meanwhile. The reader never writes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::sqlite;
use super::{BackupSession, BeforeImage, Json, SessionCursor, Source};
use crate::fsio::{self, Open};
use crate::user_id::UserId;

/// The `format` this version writes and reads.
pub const FORMAT: &str = "1";

/// Rows written between two commits: large enough for speed, small enough
/// that the in-memory journal stays small.
const ROWS_PER_COMMIT: usize = 10_000;

const SCHEMA: &str = "
CREATE TABLE snapshot_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (user_id TEXT PRIMARY KEY, image TEXT NOT NULL);
CREATE TABLE backup_sessions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, session_id)
);
";

/// Whether `path` is a snapshot file (`false`: some other SQLite database,
/// which the caller then tries as a Synapse database). Errors for a missing,
/// unreadable, empty or non-SQLite file, with the same messages as the
/// Synapse reader, so that any wrong file gets one clear error.
pub fn is_snapshot(path: &Path) -> anyhow::Result<bool> {
    let conn = sqlite::open_read_only(path)?;
    sqlite::has_table(&conn, "snapshot_meta")
        .with_context(|| format!("cannot read {}", path.display()))
}

/// A snapshot file, open for reading one user at a time.
pub struct SnapshotReader {
    path: PathBuf,
    server_name: String,
    /// rusqlite connections are `Send` but not `Sync`; reads are short.
    conn: Mutex<Connection>,
}

impl SnapshotReader {
    /// Opens a snapshot read-only and checks its format.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = sqlite::open_read_only(path)?;
        let shown = path.display();
        if !sqlite::has_table(&conn, "snapshot_meta")
            .with_context(|| format!("cannot read {shown}"))?
        {
            bail!("{shown} is not a snapshot of matrix-reactivate");
        }
        let meta = |key: &str| -> anyhow::Result<Option<String>> {
            conn.query_row(
                "SELECT value FROM snapshot_meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .with_context(|| format!("cannot read the snapshot {shown}"))
        };
        match meta("format")?.as_deref() {
            Some(FORMAT) => {}
            Some(other) => bail!(
                "{shown} is a snapshot in format {other}, which this version of \
                 matrix-reactivate does not read (it reads format {FORMAT}); use a newer version"
            ),
            None => bail!("{shown} is a damaged snapshot: it names no format"),
        }
        let Some(server_name) = meta("server_name")? else {
            bail!("{shown} is a damaged snapshot: it names no server");
        };
        Ok(Self {
            path: path.to_owned(),
            server_name,
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: reads only.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backup version the user's image names, if any.
    fn backup_version(&self, conn: &Connection, user: &UserId) -> anyhow::Result<Option<String>> {
        let v: Option<Option<String>> = conn
            .query_row(
                "SELECT json_extract(image, '$.backup.version') FROM images WHERE user_id = ?1",
                [user.as_str()],
                |r| r.get(0),
            )
            .optional()
            .with_context(|| format!("cannot read {} from {}", user, self.describe()))?;
        Ok(v.flatten())
    }
}

impl Source for SnapshotReader {
    fn describe(&self) -> String {
        format!("snapshot {}", self.path.display())
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    fn image(&self, user: &UserId) -> anyhow::Result<Option<BeforeImage>> {
        let conn = self.conn();
        let text: Option<String> = conn
            .query_row(
                "SELECT image FROM images WHERE user_id = ?1",
                [user.as_str()],
                |r| r.get(0),
            )
            .optional()
            .with_context(|| format!("cannot read {} from {}", user, self.describe()))?;
        let Some(text) = text else { return Ok(None) };
        let mut image: BeforeImage = serde_json::from_str(&text)
            .with_context(|| format!("{}: the image of {} is damaged", self.describe(), user))?;
        if let Some(backup) = image.backup.as_mut() {
            // The sessions stored are the truth, whatever count was written.
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM backup_sessions WHERE user_id = ?1",
                    [user.as_str()],
                    |r| r.get(0),
                )
                .with_context(|| format!("cannot read {} from {}", user, self.describe()))?;
            backup.sessions = u64::try_from(n).unwrap_or(0);
        }
        Ok(Some(image))
    }

    fn sessions(
        &self,
        user: &UserId,
        version: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> anyhow::Result<Vec<BackupSession>> {
        let conn = self.conn();
        // A snapshot keeps one backup per user: the one its image names.
        if self.backup_version(&conn, user)?.as_deref() != Some(version) {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cols = "SELECT room_id, session_id, first_message_index, forwarded_count, \
                    is_verified, session_data FROM backup_sessions";
        let read = || -> rusqlite::Result<Vec<BackupSession>> {
            match after {
                None => {
                    let mut st = conn.prepare_cached(&format!(
                        "{cols} WHERE user_id = ?1 ORDER BY room_id, session_id LIMIT ?2"
                    ))?;
                    let rows = st.query_map(params![user.as_str(), limit], session_row)?;
                    rows.collect()
                }
                Some(c) => {
                    let mut st = conn.prepare_cached(&format!(
                        "{cols} WHERE user_id = ?1 AND (room_id, session_id) > (?2, ?3) \
                         ORDER BY room_id, session_id LIMIT ?4"
                    ))?;
                    let rows = st.query_map(
                        params![user.as_str(), c.room_id, c.session_id, limit],
                        session_row,
                    )?;
                    rows.collect()
                }
            }
        };
        read().with_context(|| {
            format!(
                "cannot read the backup sessions of {} from {}",
                user,
                self.describe()
            )
        })
    }
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupSession> {
    let data: String = r.get(5)?;
    let session_data = raw(data).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(BackupSession {
        room_id: r.get(0)?,
        session_id: r.get(1)?,
        first_message_index: r.get(2)?,
        forwarded_count: r.get(3)?,
        is_verified: r.get::<_, i64>(4)? != 0,
        session_data,
    })
}

/// JSON text kept byte for byte (checked to be JSON).
pub(super) fn raw(text: String) -> serde_json::Result<Json> {
    serde_json::value::RawValue::from_string(text)
}

/// Writes a snapshot file. Call [`add_user`](Self::add_user) and
/// [`add_sessions`](Self::add_sessions) for each user in any order (a user's
/// sessions may come in several calls, before or after the image; by
/// convention the image first), then [`finish`](Self::finish). The image's
/// `backup.sessions` need not be exact: the reader counts the sessions stored.
/// A user whose reading failed half-way can be taken out with
/// [`remove_user`](Self::remove_user). Dropped without `finish`, or on
/// [`discard`](Self::discard), the writer deletes its temporary file.
pub struct SnapshotWriter {
    path: PathBuf,
    tmp: PathBuf,
    conn: Option<Connection>,
    /// Rows written since the last commit.
    pending: usize,
}

impl SnapshotWriter {
    /// Starts a snapshot that will be `path`. Refuses an existing `path` and
    /// a missing folder; writes to a hidden private file beside it meanwhile.
    pub fn create(path: &Path, server_name: &str) -> anyhow::Result<Self> {
        let shown = path.display();
        if path.symlink_metadata().is_ok() {
            bail!("{shown} already exists; a snapshot never overwrites a file: choose another name or remove it");
        }
        let Some(name) = path.file_name() else {
            bail!("{shown} is not a file name");
        };
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            bail!(
                "the folder {} of {shown} does not exist; create it first",
                folder.display()
            );
        }
        let (tmp, file) = create_temp(folder, name)
            .with_context(|| format!("cannot create a file in {} for {shown}", folder.display()))?;
        drop(file);
        let mut w = Self {
            path: path.to_owned(),
            tmp,
            conn: None,
            pending: 0,
        };
        w.conn = Some(
            w.init(server_name)
                .with_context(|| format!("cannot write the snapshot {shown}"))?,
        );
        Ok(w)
    }

    fn init(&self, server_name: &str) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The file is thrown away on any failure, so durability while writing
        // buys nothing; `finish` syncs once at the end.
        conn.execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")?;
        conn.execute_batch(SCHEMA)?;
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let tool = format!("matrix-reactivate {}", env!("CARGO_PKG_VERSION"));
        for (k, v) in [
            ("format", FORMAT.to_owned()),
            ("server_name", server_name.to_owned()),
            ("created_at", created_at.to_string()),
            ("tool", tool),
        ] {
            conn.execute("INSERT INTO snapshot_meta VALUES (?1, ?2)", params![k, v])?;
        }
        conn.execute_batch("BEGIN")?;
        Ok(conn)
    }

    fn conn(&self) -> anyhow::Result<&Connection> {
        self.conn
            .as_ref()
            .context("the snapshot writer was already closed")
    }

    /// Commits every `ROWS_PER_COMMIT` rows, so memory stays flat.
    fn wrote(&mut self, rows: usize) -> anyhow::Result<()> {
        self.pending += rows;
        if self.pending >= ROWS_PER_COMMIT {
            self.conn()?
                .execute_batch("COMMIT; BEGIN")
                .with_context(|| format!("cannot write the snapshot {}", self.path.display()))?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Stores (or replaces) a user's before-image.
    pub fn add_user(&mut self, user: &UserId, image: &BeforeImage) -> anyhow::Result<()> {
        let json = serde_json::to_string(image).context("cannot encode a before-image")?;
        self.conn()?
            .prepare_cached("INSERT OR REPLACE INTO images (user_id, image) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![user.as_str(), json]))
            .with_context(|| format!("cannot write {user} to {}", self.path.display()))?;
        self.wrote(1)
    }

    /// Stores sessions of a user's newest backup (a session stored twice keeps the last).
    pub fn add_sessions(
        &mut self,
        user: &UserId,
        sessions: &[BackupSession],
    ) -> anyhow::Result<()> {
        {
            let mut st = self
                .conn()?
                .prepare_cached(
                    "INSERT OR REPLACE INTO backup_sessions (user_id, room_id, session_id, \
                     first_message_index, forwarded_count, is_verified, session_data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .with_context(|| format!("cannot write the snapshot {}", self.path.display()))?;
            for s in sessions {
                st.execute(params![
                    user.as_str(),
                    s.room_id,
                    s.session_id,
                    s.first_message_index,
                    s.forwarded_count,
                    s.is_verified,
                    s.session_data.get(),
                ])
                .with_context(|| {
                    format!("cannot write {user}'s sessions to {}", self.path.display())
                })?;
            }
        }
        self.wrote(sessions.len())
    }

    /// Takes a user out again: their image and every session stored for them.
    pub fn remove_user(&mut self, user: &UserId) -> anyhow::Result<()> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM images WHERE user_id = ?1", [user.as_str()])
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM backup_sessions WHERE user_id = ?1",
                    [user.as_str()],
                )
            })
            .with_context(|| format!("cannot remove {user} from {}", self.path.display()))?;
        Ok(())
    }

    /// The hidden file being written, until `finish` moves it into place.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Completes the snapshot: commits, syncs, and moves it to its path
    /// without replacing a file that appeared there meanwhile.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let shown = self.path.display().to_string();
        let conn = self
            .conn
            .take()
            .context("the snapshot writer was already closed")?;
        conn.execute_batch("COMMIT")
            .with_context(|| format!("cannot write the snapshot {shown}"))?;
        conn.close()
            .map_err(|(_, e)| e)
            .with_context(|| format!("cannot write the snapshot {shown}"))?;
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write the snapshot {shown}"))?;
        move_no_replace(&self.tmp, &self.path)?;
        fsio::sync_parent_dir(&self.path)
            .with_context(|| format!("cannot sync the folder of {shown}"))?;
        Ok(std::mem::take(&mut self.path))
    }

    /// Gives up: deletes the temporary file; nothing appears at the path.
    pub fn discard(self) {
        drop(self);
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // `finish` empties `path` once the temporary file has become the snapshot.
        if self.path.as_os_str().is_empty() {
            return;
        }
        drop(self.conn.take());
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Creates `.<name>.<random>.tmp` in `folder`, private, failing if it exists.
fn create_temp(folder: &Path, name: &std::ffi::OsStr) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{tag}.tmp"));
        let tmp = folder.join(tmp_name);
        match fsio::open_private(&tmp, Open::CreateNew) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// Moves `tmp` to `path` unless `path` exists: a hard link (which refuses an
/// existing name atomically), then the temporary name is removed. Where the
/// file system has no hard links, a rename after a last check.
fn move_no_replace(tmp: &Path, path: &Path) -> anyhow::Result<()> {
    let exists = || {
        anyhow::anyhow!(
            "{} appeared while the snapshot was being written; it was left as it is. \
             Choose another name and run again",
            path.display()
        )
    };
    match std::fs::hard_link(tmp, path) {
        Ok(()) => std::fs::remove_file(tmp)
            .with_context(|| format!("cannot remove the temporary file {}", tmp.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(_) => {
            if path.symlink_metadata().is_ok() {
                return Err(exists());
            }
            std::fs::rename(tmp, path)
                .with_context(|| format!("cannot move the snapshot into {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{AccountData, Backup, CustomRule, Profile, PushRules, Threepid};

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn j(s: &str) -> Json {
        raw(s.to_owned()).unwrap()
    }

    fn session(room: &str, id: &str) -> BackupSession {
        BackupSession {
            room_id: room.to_owned(),
            session_id: id.to_owned(),
            first_message_index: 3,
            forwarded_count: 1,
            is_verified: id.ends_with('v'),
            session_data: j(&format!(r#"{{ "ciphertext":"{id}",  "mac" : "m\u00e9" }}"#)),
        }
    }

    fn image() -> BeforeImage {
        BeforeImage {
            threepids: vec![Threepid {
                medium: "email".into(),
                address: "a@example.org".into(),
                validated_at: Some(1),
                added_at: None,
            }],
            profile: Profile {
                displayname: Some("Ann".into()),
                avatar_url: None,
            },
            rooms: vec!["!r:example.org".into()],
            account_data: vec![AccountData {
                room_id: Some("!r:example.org".into()),
                kind: "m.tag".into(),
                content: j(r#"{"tags": {"u.x" : {"order":0.50}}}"#),
            }],
            push_rules: PushRules {
                custom: vec![CustomRule {
                    kind: "content".into(),
                    rule_id: "cats".into(),
                    pattern: Some("cats".into()),
                    conditions: None,
                    actions: j(r#"["notify"]"#),
                    enabled: false,
                }],
                defaults: vec![],
            },
            backup: Some(Backup {
                version: "7".into(),
                algorithm: "m.megolm_backup.v1.curve25519-aes-sha2".into(),
                auth_data: j(r#"{"public_key":"abc" ,"signatures":{}}"#),
                sessions: 999,
            }),
        }
    }

    /// Every page of the user's sessions, `limit` at a time, with the cursor.
    fn all_pages(r: &dyn Source, u: &UserId, v: &str, limit: usize) -> Vec<Vec<BackupSession>> {
        let mut pages = Vec::new();
        let mut after: Option<SessionCursor> = None;
        loop {
            let page = r.sessions(u, v, after.as_ref(), limit).unwrap();
            if page.is_empty() {
                return pages;
            }
            after = Some(page.last().unwrap().cursor());
            pages.push(page);
        }
    }

    #[test]
    fn a_snapshot_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.snap");
        let (ann, bob) = (user("@ann:example.org"), user("@bob:example.org"));
        let mut w = SnapshotWriter::create(&path, "example.org").unwrap();
        w.add_user(&ann, &image()).unwrap();
        // Out of order and in two calls; one of Bob's sessions in the same room.
        w.add_sessions(&ann, &[session("!b:x", "s2"), session("!a:x", "s9v")])
            .unwrap();
        w.add_sessions(&ann, &[session("!b:x", "s1"), session("!c:x", "s0")])
            .unwrap();
        w.add_sessions(&bob, &[session("!b:x", "s15")]).unwrap();
        w.add_user(&bob, &BeforeImage::default()).unwrap();
        let done = w.finish().unwrap();
        assert_eq!(done, path);
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        assert!(is_snapshot(&path).unwrap());
        let r = SnapshotReader::open(&path).unwrap();
        assert_eq!(r.server_name(), "example.org");
        assert_eq!(r.describe(), format!("snapshot {}", path.display()));
        let got = r.image(&ann).unwrap().unwrap();
        let want = image();
        assert_eq!(got.threepids, want.threepids);
        assert_eq!(got.profile, want.profile);
        assert_eq!(got.rooms, want.rooms);
        assert_eq!(
            got.account_data[0].content.get(),
            want.account_data[0].content.get()
        );
        assert_eq!(got.push_rules.custom[0].pattern.as_deref(), Some("cats"));
        assert!(!got.push_rules.custom[0].enabled);
        let b = got.backup.unwrap();
        assert_eq!(
            b.auth_data.get(),
            r#"{"public_key":"abc" ,"signatures":{}}"#
        );
        assert_eq!((b.version.as_str(), b.sessions), ("7", 4));
        assert!(r.image(&user("@nobody:example.org")).unwrap().is_none());
        assert!(r.image(&bob).unwrap().unwrap().backup.is_none());

        let pages = all_pages(&r, &ann, "7", 3);
        let sizes: Vec<_> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 1]);
        let order: Vec<_> = pages
            .iter()
            .flatten()
            .map(|s| format!("{}/{}", s.room_id, s.session_id))
            .collect();
        assert_eq!(order, ["!a:x/s9v", "!b:x/s1", "!b:x/s2", "!c:x/s0"]);
        let first = &pages[0][0];
        assert!(first.is_verified);
        assert_eq!((first.first_message_index, first.forwarded_count), (3, 1));
        assert_eq!(
            first.session_data.get(),
            r#"{ "ciphertext":"s9v",  "mac" : "m\u00e9" }"#
        );
        // Another version than the image's, or a user without a backup: nothing.
        assert!(r.sessions(&ann, "6", None, 10).unwrap().is_empty());
        assert!(r.sessions(&bob, "7", None, 10).unwrap().is_empty());
    }

    #[test]
    fn many_sessions_page_across_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.snap");
        let u = user("@u:example.org");
        let mut w = SnapshotWriter::create(&path, "example.org").unwrap();
        w.add_user(&u, &image()).unwrap();
        let batch: Vec<_> = (0..ROWS_PER_COMMIT * 2 + 7)
            .map(|i| session(&format!("!r{}:x", i % 13), &format!("s{i:06}")))
            .collect();
        for chunk in batch.chunks(999) {
            w.add_sessions(&u, chunk).unwrap();
        }
        w.finish().unwrap();
        let r = SnapshotReader::open(&path).unwrap();
        assert_eq!(
            r.image(&u).unwrap().unwrap().backup.unwrap().sessions,
            20_007
        );
        let pages = all_pages(&r, &u, "7", 1000);
        let all: Vec<_> = pages.into_iter().flatten().map(|s| s.cursor()).collect();
        assert_eq!(all.len(), batch.len());
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "pages in order, no repeats"
        );
    }

    #[test]
    fn the_writer_never_overwrites_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("there.snap");
        std::fs::write(&existing, "keep me").unwrap();
        let e = format!(
            "{:#}",
            SnapshotWriter::create(&existing, "x").err().unwrap()
        );
        assert!(
            e.contains("there.snap") && e.contains("already exists"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");

        let missing = dir.path().join("no/such/folder.snap");
        let e = format!("{:#}", SnapshotWriter::create(&missing, "x").err().unwrap());
        assert!(e.contains("does not exist"), "{e}");

        let p = dir.path().join("a.snap");
        let mut w = SnapshotWriter::create(&p, "x").unwrap();
        w.add_user(&user("@a:x"), &image()).unwrap();
        assert!(w.temp_path().exists());
        w.discard();
        let p2 = dir.path().join("b.snap");
        let w = SnapshotWriter::create(&p2, "x").unwrap();
        drop(w);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["there.snap"]);

        // A file that appears at the path while writing is left alone.
        let p3 = dir.path().join("c.snap");
        let w = SnapshotWriter::create(&p3, "x").unwrap();
        std::fs::write(&p3, "raced").unwrap();
        let e = format!("{:#}", w.finish().unwrap_err());
        assert!(e.contains("c.snap") && e.contains("appeared"), "{e}");
        assert_eq!(std::fs::read_to_string(&p3).unwrap(), "raced");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn is_snapshot_tells_files_apart_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s.snap");
        SnapshotWriter::create(&snap, "x")
            .unwrap()
            .finish()
            .unwrap();
        assert!(is_snapshot(&snap).unwrap());

        let synapse = dir.path().join("homeserver.db");
        Connection::open(&synapse)
            .unwrap()
            .execute_batch(
                "CREATE TABLE users (name TEXT); CREATE TABLE schema_version (version INTEGER)",
            )
            .unwrap();
        assert!(!is_snapshot(&synapse).unwrap());

        let cases = [
            (
                "notes.txt",
                &b"hello, this is text\n"[..],
                "not an SQLite database",
            ),
            ("empty.db", b"", "is empty"),
            (
                "pic.png",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
                "not an SQLite database",
            ),
        ];
        for (name, bytes, says) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = format!("{:#}", is_snapshot(&p).unwrap_err());
            assert!(e.contains(name) && e.contains(says), "{name}: {e}");
            assert!(e.contains("neither a snapshot"), "{name}: {e}");
        }
        let e = format!(
            "{:#}",
            is_snapshot(&dir.path().join("gone.db")).unwrap_err()
        );
        assert!(e.contains("gone.db") && e.contains("does not exist"), "{e}");
        let e = format!("{:#}", SnapshotReader::open(&synapse).err().unwrap());
        assert!(e.contains("not a snapshot"), "{e}");
    }

    #[test]
    fn an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("future.snap");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute_batch("INSERT INTO snapshot_meta VALUES ('format', '2'), ('server_name', 'x')")
            .unwrap();
        drop(c);
        let e = format!("{:#}", SnapshotReader::open(&p).err().unwrap());
        assert!(e.contains("format 2") && e.contains("future.snap"), "{e}");
    }
}
