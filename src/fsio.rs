//! File-system helpers for the two files that hold passwords (the results and
//! the journal): private creation, durable directory entries, and cutting a
//! last line torn by a crash; and an atomic replace for the JSON summary.
//!
//! Nothing here decides what a file holds; it only makes sure that what was
//! written survives a crash and that nobody else can read it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How to open a private file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Create it; fail if it exists.
    CreateNew,
    /// Create it if missing, then append.
    Append,
    /// It must exist; append.
    Existing,
}

/// Opens a file readable and writable by its owner only (mode 0600 when created).
pub fn open_private(path: &Path, how: Open) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).mode(0o600);
    match how {
        Open::CreateNew => o.write(true).create_new(true),
        Open::Append => o.append(true).create(true),
        Open::Existing => o.append(true),
    };
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

/// Replaces `path` with `bytes` so that a reader sees the old file or the
/// new one, never a part: a temporary file in the same folder, synced, then
/// renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_parent_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The length of `text` up to and including its last newline: what a crash
/// cannot have torn. A line after it was being written when the run died.
pub fn complete_lines(text: &[u8]) -> usize {
    text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn torn_tails_are_cut_at_the_last_newline() {
        assert_eq!(complete_lines(b""), 0);
        assert_eq!(complete_lines(b"half"), 0);
        assert_eq!(complete_lines(b"a,b\n"), 4);
        assert_eq!(complete_lines(b"a,b\nc,"), 4);
    }

    #[test]
    fn private_files_are_0600_and_create_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        open_private(&p, Open::CreateNew).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = open_private(&p, Open::CreateNew).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(open_private(&dir.path().join("missing"), Open::Existing).is_err());
        open_private(&dir.path().join("new"), Open::Append).unwrap();
        sync_parent_dir(&p).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_whole_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        write_atomically(&p, b"{\"a\": 1}\n").unwrap();
        write_atomically(&p, b"{}\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(write_atomically(&dir.path().join("no/such/folder.json"), b"x").is_err());
    }
}
