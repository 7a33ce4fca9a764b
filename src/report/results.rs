//! The results file: the admin's record of the run.
//!
//! Every row is written and flushed as its user finishes, and the file is
//! created 0600 because it holds passwords. It is never truncated beyond a
//! last line torn by a crash, and never overwritten: a new run refuses an
//! existing file, a resumed one appends to it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{ResultRow, HEADER};
use crate::fsio::{complete_lines, open_private, sync_parent_dir, Open};

/// The results file, open for appending rows.
pub struct Results {
    writer: csv::Writer<File>,
    path: PathBuf,
}

impl Results {
    /// Creates a new results file; refuses if it exists.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = open_private(path, Open::CreateNew).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "results file {} already exists; to continue the run that wrote it, add \
                 --resume; to start over, choose another --output or remove the file",
                path.display()
            ),
            _ => anyhow::Error::new(e)
                .context(format!("cannot create results file {}", path.display())),
        })?;
        let mut results = Results {
            writer: csv::WriterBuilder::new().from_writer(file),
            path: path.to_owned(),
        };
        results.write_header()?;
        results.writer.get_ref().sync_all()?;
        sync_parent_dir(path)
            .with_context(|| format!("cannot sync the folder of {}", path.display()))?;
        Ok(results)
    }

    /// Opens an existing results file to append to it, and returns the rows it
    /// holds as text. A last line cut short by a crash is removed first: its
    /// user is simply done again.
    pub fn reopen(path: &Path) -> anyhow::Result<(Self, Vec<u8>)> {
        let mut file = open_private(path, Open::Existing)
            .with_context(|| format!("cannot open results file {} to resume", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .with_context(|| format!("cannot read results file {}", path.display()))?;
        let complete = complete_lines(&text);
        if complete < text.len() {
            file.set_len(complete as u64)?;
            file.sync_all()?;
            text.truncate(complete);
        }
        file.seek(SeekFrom::End(0))?;
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        Ok((
            Results {
                writer,
                path: path.to_owned(),
            },
            text,
        ))
    }

    /// Writes the header line (a new file, or one whose header a crash cut).
    pub fn write_header(&mut self) -> io::Result<()> {
        self.writer.write_record(HEADER)?;
        self.writer.flush()
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
            row.restored.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{sample_row, Status};
    use std::io::Write;

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
    fn reopen_drops_a_torn_tail_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut r = Results::create(&path).unwrap();
        r.write(&sample_row("@a:x", Status::Reactivated, 2))
            .unwrap();
        drop(r);
        // A crash in the middle of a row.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"@d:x,reactivated,abc").unwrap();
        drop(f);

        let (mut r, text) = Results::reopen(&path).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains("@d:x"), "{text}");
        r.write(&sample_row("@d:x", Status::Reactivated, 5))
            .unwrap();
        drop(r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.ends_with("@d:x,reactivated,\"pw,\"\"x\"\"\",,5,,,\n"),
            "{text}"
        );
    }
}
