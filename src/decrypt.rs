//! `matrix-reactivate decrypt RESULTS -i IDENTITY [-o OUT]`: the help desk's
//! side of `--encrypt-to`. It writes the same CSV with every sealed password
//! opened, and every other field as it was.
//!
//! Identity files are read as age reads them: `AGE-SECRET-KEY-1…` lines (with
//! `#` comments), or an unencrypted OpenSSH private key (through the `age`
//! crate's `ssh` module).
//!
//! It must never leave a clear file half written, nor overwrite one: a file
//! output is written to a temporary file (0600) beside it, which is linked
//! into place only once every field opened (a hard link fails if the name
//! exists, so nothing is ever replaced) and removed in every other case,
//! Ctrl-C included. Standard output (`-o -`, the default) gets nothing until
//! every field opened. A field no identity opens is named by its line in
//! RESULTS and its user; the command then exits 1.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use zeroize::Zeroizing;

use crate::cli::DecryptArgs;
use crate::config::UsageError;
use crate::fsio::{open_private, sync_parent_dir, Open};
use crate::report::HEADER;
use crate::seal;

type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// Where the clear CSV goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

/// `decrypt`'s settings, checked.
pub struct DecryptSettings {
    pub results: PathBuf,
    identities: Identities,
    pub output: Output,
    pub quiet: bool,
}

impl DecryptSettings {
    /// Reads the identity files; a missing, unreadable or malformed one is a
    /// usage error (exit 2).
    pub fn from_args(args: DecryptArgs) -> anyhow::Result<Self> {
        let mut identities = Vec::new();
        for path in &args.identities {
            identities.extend(read_identities(path).map_err(UsageError)?);
        }
        let output = match args.output {
            Some(p) if p.as_os_str() != "-" => Output::File(p),
            _ => Output::Stdout,
        };
        Ok(DecryptSettings {
            results: args.results,
            identities,
            output,
            quiet: args.quiet,
        })
    }
}

/// Reads one identity file: age secret keys, or an OpenSSH private key.
/// Messages name the file (and line) and never repeat what a line holds.
pub fn read_identities(path: &Path) -> Result<Identities, String> {
    let shown = path.display();
    let mut bytes = Zeroizing::new(Vec::new());
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("-i {shown}: cannot read it ({e})"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        format!("-i {shown}: not a text file; give an age identity file or an OpenSSH private key")
    })?;
    let start = text.trim_start();
    if start.starts_with("-----BEGIN AGE ENCRYPTED FILE") {
        return Err(format!(
            "-i {shown}: a passphrase-protected identity file, which decrypt does not open; \
             use age -d -i {shown}, which asks for the passphrase"
        ));
    }
    if start.starts_with("-----BEGIN") {
        return ssh_identity(text, path).map(|i| vec![i]);
    }
    let mut out: Identities = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        if line.starts_with("AGE-PLUGIN-") {
            return Err(format!(
                "-i {shown}, line {n}: plugin identities are not supported"
            ));
        }
        if !line.starts_with("AGE-SECRET-KEY-1") {
            return Err(format!(
                "-i {shown}, line {n}: not an age identity (AGE-SECRET-KEY-1…, as age-keygen \
                 writes) nor an OpenSSH private key"
            ));
        }
        let id: age::x25519::Identity = line
            .parse()
            .map_err(|_| format!("-i {shown}, line {n}: not a valid age secret key"))?;
        out.push(Box::new(id));
    }
    if out.is_empty() {
        return Err(format!("-i {shown}: holds no identity"));
    }
    Ok(out)
}

fn ssh_identity(text: &str, path: &Path) -> Result<Box<dyn age::Identity + Send + Sync>, String> {
    use age::ssh::{Identity, UnsupportedKey};
    let shown = path.display();
    let id = Identity::from_buffer(text.as_bytes(), Some(shown.to_string()))
        .map_err(|e| format!("-i {shown}: not a private key age can read ({e})"))?;
    let why = match &id {
        Identity::Unencrypted(_) => return Ok(Box::new(id)),
        Identity::Encrypted(_) => {
            "it is protected by a passphrase, which decrypt does not ask for".to_owned()
        }
        Identity::Unsupported(UnsupportedKey::EncryptedPem) => "an encrypted PEM key".into(),
        Identity::Unsupported(UnsupportedKey::EncryptedSsh(c)) => format!("encrypted with {c}"),
        Identity::Unsupported(UnsupportedKey::Hardware(t)) => format!("a hardware key ({t})"),
        Identity::Unsupported(UnsupportedKey::Type(t)) => format!("a {t} key"),
    };
    Err(format!(
        "-i {shown}: {why}. Use age -d -i {shown} (it asks for a passphrase), or an unencrypted \
         ed25519 or RSA key"
    ))
}

/// What a pass over the results came to.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: u64,
    pub opened: u64,
    /// Passwords that were not sealed, copied as they were.
    pub not_sealed: u64,
    /// Each field that could not be opened: its line in RESULTS, user, reason.
    pub failures: Vec<String>,
    pub interrupted: bool,
}

/// Runs `decrypt`; Ctrl-C or SIGTERM stops it with no output left.
pub async fn decrypt(settings: DecryptSettings) -> anyhow::Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let settings = Arc::new(settings);
    let work = tokio::task::spawn_blocking({
        let (settings, stop) = (settings.clone(), stop.clone());
        move || convert(&settings, &stop)
    });
    tokio::pin!(work);
    let report = loop {
        tokio::select! {
            r = &mut work => break r.context("the decrypt thread failed")??,
            _ = sigint.recv() => stop.store(true, Ordering::SeqCst),
            _ = sigterm.recv() => stop.store(true, Ordering::SeqCst),
        }
    };
    Ok(conclude(&settings, &report))
}

/// Prints what happened and returns the exit code.
fn conclude(s: &DecryptSettings, report: &Report) -> i32 {
    if report.interrupted {
        eprintln!("Interrupted: no output was written.");
        return 130;
    }
    if !report.failures.is_empty() {
        const SHOWN: usize = 20;
        for f in report.failures.iter().take(SHOWN) {
            eprintln!("error: {f}");
        }
        if report.failures.len() > SHOWN {
            eprintln!("error: … and {} more", report.failures.len() - SHOWN);
        }
        eprintln!(
            "error: {} of {} sealed password(s) could not be opened with the identities given; \
             no output was written",
            report.failures.len(),
            report.failures.len() as u64 + report.opened
        );
        return 1;
    }
    if !s.quiet {
        if report.not_sealed > 0 {
            eprintln!(
                "warning: {} password(s) in {} were not sealed; they are copied as they were",
                report.not_sealed,
                s.results.display()
            );
        }
        let to = match &s.output {
            Output::Stdout => "standard output".to_owned(),
            Output::File(p) => format!("{} (mode 0600)", p.display()),
        };
        eprintln!(
            "Opened {} password(s) of {} rows into {to}. It holds working passwords: hand \
             them out, then delete it.",
            report.opened, report.rows
        );
    }
    0
}

/// Reads RESULTS, opens its sealed fields and writes the output, or leaves
/// none. Errors are about the files; fields that do not open are in the report.
fn convert(s: &DecryptSettings, stop: &AtomicBool) -> anyhow::Result<Report> {
    let file = File::open(&s.results)
        .with_context(|| format!("cannot read results file {}", s.results.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(io::BufReader::new(file));
    let header = reader
        .headers()
        .with_context(|| format!("cannot read results file {}", s.results.display()))?
        .clone();
    if header.iter().take(HEADER.len()).ne(HEADER) {
        bail!(
            "{} is not a results file of matrix-reactivate (its first line is not {})",
            s.results.display(),
            HEADER.join(",")
        );
    }
    match &s.output {
        Output::Stdout => {
            // Nothing reaches standard output until every field opened.
            let mut buf = Zeroizing::new(Vec::new());
            let report = {
                let mut w = csv::Writer::from_writer(&mut *buf);
                let report = rows(s, &mut reader, &header, &mut w, stop)?;
                w.flush()?;
                report
            };
            if report.failures.is_empty() && !report.interrupted {
                let mut out = io::stdout().lock();
                match out.write_all(&buf).and_then(|()| out.flush()) {
                    Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                        return Err(e).context("cannot write to standard output")
                    }
                    _ => {}
                }
            }
            Ok(report)
        }
        Output::File(out) => to_file(s, out, &mut reader, &header, stop),
    }
}

/// Writes to a temporary file beside `out`, and links it into place only
/// when every field opened.
fn to_file(
    s: &DecryptSettings,
    out: &Path,
    reader: &mut csv::Reader<io::BufReader<File>>,
    header: &csv::StringRecord,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let refuse = || {
        anyhow::anyhow!(
            "{} exists; decrypt never overwrites a file: choose another -o, or remove it",
            out.display()
        )
    };
    if out.symlink_metadata().is_ok() {
        return Err(refuse());
    }
    let temp = Temp::create(out)?;
    let mut w = csv::Writer::from_writer(BufWriter::new(&temp.file));
    let report = rows(s, reader, header, &mut w, stop)?;
    let written = w.flush().and_then(|()| {
        drop(w);
        temp.file.sync_all()
    });
    written.with_context(|| format!("cannot write {}", temp.path.display()))?;
    if report.failures.is_empty() && !report.interrupted {
        // A hard link never replaces: a file that appeared meanwhile is kept.
        std::fs::hard_link(&temp.path, out).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => refuse(),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", out.display())),
        })?;
        sync_parent_dir(out)
            .with_context(|| format!("cannot sync the folder of {}", out.display()))?;
    }
    Ok(report)
}

/// The temporary file, removed when dropped (once linked, its name only).
struct Temp {
    path: PathBuf,
    file: File,
}

impl Temp {
    fn create(out: &Path) -> anyhow::Result<Temp> {
        let name = out
            .file_name()
            .with_context(|| format!("-o {}: not a file name", out.display()))?;
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".decrypt-{}.tmp", std::process::id()));
        let path = out.with_file_name(tmp);
        let file = open_private(&path, Open::CreateNew).with_context(|| {
            format!(
                "-o {}: cannot create the temporary file {} beside it",
                out.display(),
                path.display()
            )
        })?;
        Ok(Temp { path, file })
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies every row, opening sealed passwords.
fn rows<R: Read, W: Write>(
    s: &DecryptSettings,
    reader: &mut csv::Reader<R>,
    header: &csv::StringRecord,
    w: &mut csv::Writer<W>,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    const PASSWORD: usize = 2;
    let mut report = Report::default();
    w.write_record(header)?;
    let mut record = csv::StringRecord::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            report.interrupted = true;
            return Ok(report);
        }
        let more = reader
            .read_record(&mut record)
            .with_context(|| format!("results file {}: unreadable", s.results.display()))?;
        if !more {
            return Ok(report);
        }
        report.rows += 1;
        let field = record.get(PASSWORD).unwrap_or_default();
        if field.is_empty() || !seal::is_sealed(field) {
            report.not_sealed += u64::from(!field.is_empty());
            w.write_record(&record)?;
            continue;
        }
        match seal::open(field, &s.identities) {
            Ok(clear) => {
                report.opened += 1;
                let cells =
                    record
                        .iter()
                        .enumerate()
                        .map(|(i, c)| if i == PASSWORD { clear.as_str() } else { c });
                w.write_record(cells)?;
            }
            Err(e) => {
                let line = record.position().map_or(0, |p| p.line());
                let user = seal::shorten(record.get(0).unwrap_or_default());
                report.failures.push(format!(
                    "{} line {line} ({user}): cannot open its password: {e}",
                    s.results.display()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key_file(dir: &Path, name: &str) -> (PathBuf, String) {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "# created: today\n# public key: {public}\n{}\n",
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        (path, public)
    }

    #[test]
    fn identity_files_as_age_keygen_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = key_file(dir.path(), "key.txt");
        assert_eq!(read_identities(&path).unwrap().len(), 1);
        let two = dir.path().join("two.txt");
        let a = std::fs::read_to_string(&path).unwrap();
        let (b, _) = key_file(dir.path(), "b.txt");
        let b = std::fs::read_to_string(b).unwrap();
        std::fs::write(&two, format!("{a}\n\n{b}")).unwrap();
        assert_eq!(read_identities(&two).unwrap().len(), 2);
    }

    #[test]
    fn bad_identity_files_are_named_by_file_and_line_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("empty.txt", "", "holds no identity"),
            ("comments.txt", "# nothing\n", "holds no identity"),
            (
                "pub.txt",
                "# x\nage1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
                "line 2: not an age identity",
            ),
            (
                "bad.txt",
                "AGE-SECRET-KEY-1QQQQ\n",
                "line 1: not a valid age secret key",
            ),
            (
                "plugin.txt",
                "AGE-PLUGIN-YUBIKEY-1QQQ\n",
                "line 1: plugin identities",
            ),
            (
                "armored.txt",
                "-----BEGIN AGE ENCRYPTED FILE-----\nxx\n",
                "passphrase-protected",
            ),
            (
                "pem.txt",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nnonsense\n",
                "not a private key age can read",
            ),
        ];
        for (name, text, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = read_identities(&p)
                .err()
                .unwrap_or_else(|| panic!("{name}"));
            assert!(e.contains(name) && e.contains(want), "{name}: {e}");
            assert!(
                !e.contains("QQQ") && !e.contains("age1ql3"),
                "never echoed: {e}"
            );
        }
        let e = read_identities(&dir.path().join("missing")).err().unwrap();
        assert!(e.contains("missing: cannot read it"), "{e}");
    }

    #[test]
    fn an_openssh_key_opens_what_was_sealed_to_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "desk", "-f"])
            .arg(&key)
            .status();
        let Ok(made) = made else {
            panic!("ssh-keygen is needed for this test (Debian: openssh-client)");
        };
        assert!(made.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let sealer = seal::Sealer::new(vec![seal::Recipient::parse(&public).unwrap()]).unwrap();
        let sealed = sealer.seal("from ssh").unwrap();
        let ids = read_identities(&key).unwrap();
        assert_eq!(seal::open(&sealed, &ids).unwrap().as_str(), "from ssh");

        // A passphrase-protected key is refused with what to do instead.
        let locked = dir.path().join("id_locked");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
            .arg(&locked)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_identities(&locked).err().unwrap();
        assert!(e.contains("passphrase") && e.contains("age -d -i"), "{e}");
    }
}
