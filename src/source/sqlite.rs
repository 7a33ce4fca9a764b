//! Opening an SQLite file that a source reads: the checks that turn "not a
//! database" into one clear message, and the read-only, immutable connection.
//!
//! A file opened here is never written, and nothing is created beside it:
//! `immutable=1` keeps SQLite from taking locks or making `-wal`/`-shm` files
//! (a copy made with SQLite's backup API stays in WAL mode, and `mode=ro`
//! alone would still create them, or fail where the folder is read-only).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rusqlite::{Connection, OpenFlags};

/// The first 16 bytes of every SQLite 3 database.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What a file must be, for messages that refuse it.
pub(super) const WHAT_IT_MUST_BE: &str =
    "neither a snapshot of matrix-reactivate nor a Synapse database";

/// Characters kept as they are in the path of a `file:` URI. `?`, `#` and `%`
/// must be escaped; escaping everything else that is not plain is harmless.
const URI_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Checks that `path` is a readable SQLite file and opens it read-only and
/// immutable. Errors name the file and say what was expected.
pub(super) fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    check_sqlite_file(path)?;
    refuse_pending_wal(path)?;
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    let conn = Connection::open_with_flags(uri(&abs), flags())
        .with_context(|| format!("cannot open {} as an SQLite database", path.display()))?;
    // Opening is lazy: the first read tells a damaged or encrypted file.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .with_context(|| {
            format!(
                "{} is damaged or not an SQLite database ({WHAT_IT_MUST_BE})",
                path.display()
            )
        })?;
    Ok(conn)
}

fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// `file:/abs/path?immutable=1`, with the path escaped as a URI path.
fn uri(abs: &Path) -> String {
    let text = abs.to_string_lossy();
    format!("file:{}?immutable=1", utf8_percent_encode(&text, URI_PATH))
}

/// Refuses a missing path, a folder, an unreadable, empty or non-SQLite file.
pub(super) fn check_sqlite_file(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "{shown} does not exist; give a snapshot file, a Synapse SQLite database \
             or a postgresql://user@host/dbname URL"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
    };
    if meta.is_dir() {
        bail!("{shown} is a folder; give a snapshot file or a Synapse SQLite database file");
    }
    let mut header = [0u8; 16];
    let mut file = File::open(path).with_context(|| {
        format!("cannot read {shown}; check its permissions (the tool only reads it)")
    })?;
    let got = read_up_to(&mut file, &mut header).with_context(|| format!("cannot read {shown}"))?;
    if got == 0 {
        bail!("{shown} is empty: {WHAT_IT_MUST_BE}");
    }
    if got < header.len() || &header != SQLITE_HEADER {
        bail!("{shown} is not an SQLite database: {WHAT_IT_MUST_BE}");
    }
    Ok(())
}

/// An immutable open ignores the `-wal` file: what is only there would be
/// silently missed, so such a database is refused until it is checkpointed.
fn refuse_pending_wal(path: &Path) -> anyhow::Result<()> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if let Ok(m) = std::fs::metadata(&wal) {
        if m.len() > 0 {
            bail!(
                "{} has writes not yet in the database file ({} is not empty): the server \
                 may still be running. Stop it, or copy the database with \
                 `sqlite3 {} \".backup copy.db\"` and give the copy",
                path.display(),
                wal.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Whether the database has a table of this name.
pub(super) fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_what_sqlite_would_read_as_query_or_fragment() {
        assert_eq!(
            uri(Path::new("/tmp/a b/x?y#z%.db")),
            "file:/tmp/a%20b/x%3Fy%23z%25.db?immutable=1"
        );
    }

    #[test]
    fn opening_creates_nothing_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd ?name#.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
            )
            .unwrap();
        }
        let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(before.len(), 1, "{before:?}");
        let c = open_read_only(&p).unwrap();
        let x: i64 = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1);
        assert!(c.execute("INSERT INTO t VALUES (2)", []).is_err());
        drop(c);
        let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(after.len(), 1, "{after:?}");
    }

    #[test]
    fn a_non_empty_wal_beside_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.db");
        Connection::open(&p)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        std::fs::write(dir.path().join("h.db-wal"), b"pending").unwrap();
        let e = format!("{:#}", open_read_only(&p).unwrap_err());
        assert!(e.contains("h.db-wal") && e.contains(".backup"), "{e}");
    }
}
