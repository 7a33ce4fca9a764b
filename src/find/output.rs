//! The file `find` writes: one row per user, the header the main command
//! reads as its input (`user_id` names the user column; `rooms` is for
//! `--rooms-column rooms`; the other columns are there for the admin).
//!
//! Created private (0600: it names every deactivated user) and never over an
//! existing file. A listing that did not finish is removed, not left half
//! written: a partial list would pass for the whole one.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::rule::rfc3339_ms;
use crate::fsio::{open_private, sync_parent_dir, Open};

pub const HEADER: [&str; 4] = ["user_id", "deactivated_at", "erased", "rooms"];

/// One row of the file.
pub struct FoundRow<'a> {
    pub user_id: &'a str,
    pub deactivated_at: Option<i64>,
    pub erased: bool,
    /// Room IDs, sorted.
    pub rooms: &'a [String],
}

pub struct FoundFile {
    writer: csv::Writer<BufWriter<File>>,
    path: PathBuf,
}

impl FoundFile {
    /// Creates the file and writes the header; refuses an existing file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = open_private(path, Open::CreateNew).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "--output {}: the file exists, and find never overwrites one; choose another \
                 --output or remove the file",
                path.display()
            ),
            _ => anyhow::Error::new(e)
                .context(format!("--output {}: cannot create it", path.display())),
        })?;
        let mut found = FoundFile {
            writer: csv::Writer::from_writer(BufWriter::new(file)),
            path: path.to_owned(),
        };
        found
            .writer
            .write_record(HEADER)
            .with_context(|| format!("cannot write to {}", path.display()))?;
        Ok(found)
    }

    pub fn write(&mut self, row: &FoundRow) -> io::Result<()> {
        let at = row.deactivated_at.map(rfc3339_ms).unwrap_or_default();
        let erased = if row.erased { "true" } else { "false" };
        self.writer
            .write_record([row.user_id, &at, erased, &row.rooms.join(";")])
            .map_err(io::Error::from)
    }

    /// Makes the finished file durable.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        let path = self.path.clone();
        let saved = (|| -> io::Result<()> {
            self.writer.flush()?;
            let file = self.writer.into_inner().map_err(|e| e.into_error())?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            sync_parent_dir(&path)
        })();
        saved.with_context(|| format!("cannot save {}", path.display()))?;
        Ok(path)
    }

    /// Removes the file of a listing that did not finish.
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self.writer);
        let _ = std::fs::remove_file(path);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rows_mode_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        let mut f = FoundFile::create(&path).unwrap();
        let rooms = ["!a:x".to_owned(), "!b:x".to_owned()];
        f.write(&FoundRow {
            user_id: "@a,b:x",
            deactivated_at: Some(1_764_118_800_000),
            erased: true,
            rooms: &rooms,
        })
        .unwrap();
        f.write(&FoundRow {
            user_id: "@c:x",
            deactivated_at: None,
            erased: false,
            rooms: &[],
        })
        .unwrap();
        f.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "user_id,deactivated_at,erased,rooms\n\
             \"@a,b:x\",2025-11-26T01:00:00.000Z,true,!a:x;!b:x\n@c:x,,false,\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = FoundFile::create(&path).err().unwrap().to_string();
        assert!(e.contains("--output") && e.contains("exists"), "{e}");

        let other = dir.path().join("partial.csv");
        FoundFile::create(&other).unwrap().discard();
        assert!(!other.exists());
    }
}
