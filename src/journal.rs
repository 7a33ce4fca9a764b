//! The password journal: every password is durably on disk before the request
//! that sets it is sent.
//!
//! A record `user_id,password` is appended and fsynced before each reactivation
//! PUT. Records are written by one thread that batches whatever is waiting into
//! one write and one fsync (group commit), so durability costs one fsync per
//! batch, not per user. On `--resume` the journal says which users may hold a
//! password that the results file does not show yet; they are checked again and
//! completed with the same password. The journal is removed when a run completes.
//!
//! Its first line says how the passwords are recorded (`seal::Sealing`): in
//! clear, or sealed with age to the recipients listed, in which case every
//! record holds the sealed text only. A resumed run compares that line with
//! its own flags before it touches any user. A journal without that line was
//! written in clear by an earlier version.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use crate::fsio::{complete_lines, open_private, sync_parent_dir, Open};
use crate::seal::Sealing;

struct Record {
    user: String,
    password: String,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct Journal {
    tx: Option<mpsc::UnboundedSender<Record>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The journal's path for a results file: `results.csv` → `results.csv.journal`.
pub fn path_for(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Journal {
    /// Opens (or creates, mode 0600) the journal for appending. A new (or
    /// empty) journal starts with the line that says how passwords are
    /// recorded; an existing one must say the same as `sealing`.
    pub fn open(path: &Path, sealing: &Sealing) -> anyhow::Result<Self> {
        let mut file = open_private(path, Open::Append)
            .with_context(|| format!("cannot open journal {}", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .with_context(|| format!("cannot read journal {}", path.display()))?;
        // A record torn by a crash is cut, so the next one starts on its own
        // line (its request was never sent).
        let complete = complete_lines(&text);
        if complete < text.len() {
            file.set_len(complete as u64)?;
        }
        match sealing_of(&text[..complete], path)? {
            None => {
                use std::io::Write;
                writeln!(file, "{}", sealing.line())
                    .with_context(|| format!("cannot write journal {}", path.display()))?;
            }
            Some(earlier) => Sealing::refuse_change(&earlier, sealing, &path.display().to_string())
                .map_err(anyhow::Error::msg)?,
        }
        file.sync_all()?;
        sync_parent_dir(path)?;
        Self::start(file, path)
    }

    /// Starts the writer thread on an open file.
    fn start(file: File, path: &Path) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer_loop(file, rx))
            .context("cannot start the journal writer")?;
        Ok(Journal {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns once `user`'s password is written and fsynced.
    pub async fn record(&self, user: &str, password: &str) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or("the journal is closed")?;
        tx.send(Record {
            user: user.to_owned(),
            password: password.to_owned(),
            done,
        })
        .map_err(|_| "the journal writer stopped".to_owned())?;
        wait.await
            .map_err(|_| "the journal writer stopped".to_owned())?
    }

    /// Records that `user` holds no password from this tool after all (the
    /// server refused the request that would have set it), so a resumed run
    /// does not try to set it again.
    pub async fn forget(&self, user: &str) -> Result<(), String> {
        self.record(user, "").await
    }

    /// Waits for the writer to finish what it was given.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_loop(file: File, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(file);
    let mut batch = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = write_batch(&mut writer, &batch).map_err(|e| e.to_string());
        for r in batch.drain(..) {
            let _ = r.done.send(result.clone());
        }
    }
}

fn write_batch(writer: &mut csv::Writer<File>, batch: &[Record]) -> io::Result<()> {
    for r in batch {
        writer.write_record([r.user.as_str(), r.password.as_str()])?;
    }
    writer.flush()?;
    writer.get_ref().sync_data()
}

/// How the journal at `path` records its passwords; `None` when there is no
/// journal, or nothing in it yet.
pub fn sealing(path: &Path) -> anyhow::Result<Option<Sealing>> {
    let text = read_all(path)?;
    sealing_of(&text[..complete_lines(&text)], path)
}

/// The sealing that a journal's complete lines declare.
fn sealing_of(text: &[u8], path: &Path) -> anyhow::Result<Option<Sealing>> {
    let Some(first) = text.split(|&b| b == b'\n').next().filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if first.starts_with(b"@") {
        // Records from the first line on: an earlier version, in clear.
        return Ok(Some(Sealing::Clear));
    }
    std::str::from_utf8(first)
        .ok()
        .and_then(Sealing::parse_line)
        .map(Some)
        .with_context(|| {
            format!(
                "{} is not a journal of matrix-reactivate (its first line says neither how \
                 passwords are recorded nor a user); refusing to use it",
                path.display()
            )
        })
}

/// The whole file, or nothing if it does not exist.
fn read_all(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut text)
                .with_context(|| format!("cannot read journal {}", path.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read journal {}", path.display())),
    }
    Ok(text)
}

/// Reads a journal left by an earlier run: user → the last password recorded
/// (an empty one, from `forget`, means none), as recorded: in clear or sealed,
/// as `sealing` says. A last line cut short by a crash is ignored: its request
/// was never sent.
pub fn read(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text = read_all(path)?;
    let complete = complete_lines(&text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(&text[..complete]);
    let mut out = HashMap::new();
    for rec in reader.records() {
        let rec = rec.with_context(|| format!("journal {} is unreadable", path.display()))?;
        if let (Some(u), Some(p)) = (rec.get(0), rec.get(1)) {
            out.insert(u.to_owned(), p.to_owned());
        }
    }
    out.retain(|_, p| !p.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_durable_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("out.csv"));
        assert!(path.ends_with("out.csv.journal"));
        let j = Journal::open(&path, &Sealing::Clear).unwrap();
        let (a, b) = tokio::join!(j.record("@a:x", "pw,1"), j.record("@b:x", "pw\"2"));
        a.unwrap();
        b.unwrap();
        j.record("@a:x", "pw3").await.unwrap();
        j.record("@c:x", "refused").await.unwrap();
        j.forget("@c:x").await.unwrap();
        j.close();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A torn last record is ignored.
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"@c:x,half");
        std::fs::write(&path, text).unwrap();
        let m = read(&path).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["@a:x"], "pw3");
        assert_eq!(m["@b:x"], "pw\"2");
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_not_ignored() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        let j = Journal::start(full, Path::new("/dev/full")).unwrap();
        let e = j.record("@a:x", "pw").await.unwrap_err();
        assert!(e.contains("No space left"), "{e}");
    }

    #[test]
    fn missing_journal_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("nope")).unwrap().is_empty());
        assert_eq!(sealing(&dir.path().join("nope")).unwrap(), None);
    }

    fn sealed_to(r: &[&str]) -> Sealing {
        Sealing::SealedTo(r.iter().map(|s| s.to_string()).collect())
    }

    #[tokio::test]
    async fn the_first_line_says_how_passwords_are_recorded_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv.journal");
        let desk = sealed_to(&["age1desk", "ssh-ed25519 AAAAdesk"]);
        let j = Journal::open(&path, &desk).unwrap();
        j.record("@a:x", "YWdlLWVuY3J5cHRpb24ub3JnL3Yx+sealed")
            .await
            .unwrap();
        j.close();
        assert_eq!(sealing(&path).unwrap(), Some(desk.clone()));
        // A crash tears the next record; reopening cuts it and appends after.
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"@b:x,YWdlLWVuY3J5");
        std::fs::write(&path, text).unwrap();
        let j = Journal::open(&path, &desk).unwrap();
        j.record("@c:x", "YWdlLWVuY3J5cHRpb24ub3JnL3Yx+c")
            .await
            .unwrap();
        j.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(text.lines().next(), Some(desk.line().as_str()));
        let m = read(&path).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m["@c:x"].ends_with("+c"));
        // Another sealing is refused, whatever the caller checked before.
        let e = Journal::open(&path, &Sealing::Clear).err().unwrap();
        assert!(e.to_string().contains("refusing to resume"), "{e}");
        let e = Journal::open(&path, &sealed_to(&["age1other"]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("other recipients"), "{e}");
    }

    #[test]
    fn journals_of_earlier_versions_are_clear_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.journal");
        std::fs::write(&old, "@a:x,pw1\n").unwrap();
        assert_eq!(sealing(&old).unwrap(), Some(Sealing::Clear));
        assert_eq!(read(&old).unwrap()["@a:x"], "pw1");
        // An empty journal, or one whose first line was torn: nothing recorded yet.
        let torn = dir.path().join("torn.journal");
        std::fs::write(&torn, "#passwords: sea").unwrap();
        assert_eq!(sealing(&torn).unwrap(), None);
        let foreign = dir.path().join("foreign.journal");
        std::fs::write(&foreign, "user_id,password\n").unwrap();
        let e = sealing(&foreign).err().unwrap();
        assert!(e.to_string().contains("not a journal"), "{e}");
    }
}
