//! Sealing passwords to the help desk's age key (`--encrypt-to`,
//! `--encrypt-to-file`), and opening them again (`decrypt`).
//!
//! A sealed password is the age encryption of the password to every recipient
//! given, in age's binary format (not armored), written as standard `=`-padded
//! base64 on one line: any age implementation opens one field with
//! `printf %s "$FIELD" | base64 -d | age -d -i key.txt`. With sealing on, the
//! journal and the results hold that text only, never the password.
//!
//! Recipients are X25519 (`age1…`) and the SSH public keys age accepts
//! (`ssh-ed25519`, `ssh-rsa`), given one by one or in age's recipients-file
//! format (one per line, `#` comments, blank lines). The format itself is the
//! `age` crate's; nothing here writes age's bytes by hand.
//!
//! This module never needs a private key to seal, and never writes a password
//! anywhere: `Sealer::seal` returns the sealed text and `open` (for `decrypt`
//! and the tests) returns the clear one in memory that is wiped when dropped.
//! Error messages never repeat a value that looks like a private key.

use std::io::{Read, Write};
use std::path::Path;

use base64::prelude::{Engine, BASE64_STANDARD};
use zeroize::Zeroizing;

/// What every sealed field starts with: the base64 of age's magic line
/// `age-encryption.org/v1` (21 bytes, so the 28 characters never depend on
/// what follows).
pub const SEALED_PREFIX: &str = "YWdlLWVuY3J5cHRpb24ub3JnL3Yx";

/// Whether a results or journal field holds a sealed password (as opposed to
/// a clear one, or none).
pub fn is_sealed(field: &str) -> bool {
    field.starts_with(SEALED_PREFIX)
}

/// One recipient a password is sealed to.
#[derive(Clone)]
pub struct Recipient {
    /// Its canonical text: `age1…` in lower case, or `ssh-… BASE64` without
    /// the comment. Two spellings of one key compare equal through it.
    text: String,
    key: Key,
}

#[derive(Clone)]
enum Key {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl Recipient {
    /// Parses one recipient; the error says what is wrong without repeating
    /// a secret that was pasted by mistake.
    pub fn parse(raw: &str) -> Result<Recipient, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("empty recipient".into());
        }
        if let Some(why) = looks_secret(s) {
            return Err(why.into());
        }
        if s.len() > 4 && s[..4].eq_ignore_ascii_case("age1") {
            let key: age::x25519::Recipient = s.to_ascii_lowercase().parse().map_err(|e| {
                format!(
                    "{}: not an X25519 age recipient ({e}); plugin and post-quantum \
                     recipients are not supported",
                    shorten(s)
                )
            })?;
            return Ok(Recipient {
                text: key.to_string(),
                key: Key::X25519(key),
            });
        }
        if s.starts_with("ssh-") {
            use age::ssh::ParseRecipientKeyError as E;
            let key: age::ssh::Recipient = s.parse().map_err(|e| match e {
                E::RsaModulusTooSmall => format!(
                    "{}: an ssh-rsa key shorter than 2048 bits, which age refuses",
                    shorten(s)
                ),
                E::RsaModulusTooLarge => format!(
                    "{}: an ssh-rsa key longer than age supports (4096 bits at most)",
                    shorten(s)
                ),
                E::Unsupported(kind) => format!(
                    "{}: age cannot encrypt to {kind} keys; give an ssh-ed25519 or ssh-rsa key, \
                     or an age1… recipient",
                    shorten(s)
                ),
                E::Ignore | E::Invalid(_) => format!(
                    "{}: not a valid SSH public key (give the one line of a .pub file)",
                    shorten(s)
                ),
            })?;
            return Ok(Recipient {
                text: key.to_string(),
                key: Key::Ssh(key),
            });
        }
        Err(format!(
            "{}: not a recipient; give an age1… public key (age-keygen -y KEYFILE prints it) \
             or an ssh-ed25519 / ssh-rsa public key",
            shorten(s)
        ))
    }

    /// The canonical text of the recipient.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn as_age(&self) -> &dyn age::Recipient {
        match &self.key {
            Key::X25519(k) => k,
            Key::Ssh(k) => k,
        }
    }
}

/// Why a value must not be taken as a recipient, if it is a private key.
fn looks_secret(s: &str) -> Option<&'static str> {
    if s.len() >= 16 && s[..16].eq_ignore_ascii_case("AGE-SECRET-KEY-1") {
        return Some(
            "this is an age private key (AGE-SECRET-KEY-1…), not a recipient: give its public \
             key (age-keygen -y KEYFILE prints it), and keep the private key with the help desk",
        );
    }
    if s.starts_with("-----BEGIN") {
        return Some(
            "this is a private key file, not a recipient: give the public key (the .pub file, \
             or age-keygen -y KEYFILE)",
        );
    }
    None
}

/// A recipient as a message may show it: public, but an ssh-rsa key is
/// hundreds of characters long.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX || !s.is_ascii() {
        return s.chars().take(MAX).collect();
    }
    format!("{}…{}", &s[..40], &s[s.len() - 16..])
}

/// Reads a recipients file in age's format: one recipient a line, `#`
/// comments and blank lines ignored. Errors name the file, and the line.
pub fn read_recipients_file(path: &Path) -> Result<Vec<Recipient>, String> {
    let shown = path.display();
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("--encrypt-to-file {shown}: cannot read it ({e})"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r = Recipient::parse(line)
            .map_err(|e| format!("--encrypt-to-file {shown}, line {}: {e}", i + 1))?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(format!(
            "--encrypt-to-file {shown}: no recipient in it (it is empty, or holds only \
             comments); give one age1… or SSH public key a line"
        ));
    }
    Ok(out)
}

/// The recipients of `--encrypt-to` and `--encrypt-to-file`, or `None` when
/// neither was given. Errors name the flag, and the file and line.
pub fn from_flags(
    given: &[String],
    files: &[std::path::PathBuf],
) -> Result<Option<Sealer>, String> {
    let mut all = Vec::new();
    for g in given {
        all.push(Recipient::parse(g).map_err(|e| format!("--encrypt-to: {e}"))?);
    }
    for f in files {
        all.extend(read_recipients_file(f)?);
    }
    Ok(Sealer::new(all))
}

/// How a run records its passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sealing {
    Clear,
    /// Sealed to these recipients (canonical text, sorted, each once).
    SealedTo(Vec<String>),
}

impl Sealing {
    /// The journal's first line for this sealing (see `parse_line`).
    pub fn line(&self) -> String {
        match self {
            Sealing::Clear => format!("{LINE_PREFIX}clear"),
            Sealing::SealedTo(r) => format!("{LINE_PREFIX}{SEALED_TO}{}", r.join(", ")),
        }
    }

    /// Reads a line written by `line`; `None` if it is not one.
    pub fn parse_line(line: &str) -> Option<Sealing> {
        let rest = line.trim_end().strip_prefix(LINE_PREFIX)?;
        if rest == "clear" {
            return Some(Sealing::Clear);
        }
        let list = rest.strip_prefix(SEALED_TO)?;
        Some(Sealing::SealedTo(
            list.split(", ").map(str::to_owned).collect(),
        ))
    }

    /// Why a resumed run must not go on with `now` after a run that recorded
    /// its passwords as `earlier` (`where_` names the file that says so).
    pub fn refuse_change(earlier: &Sealing, now: &Sealing, where_: &str) -> Result<(), String> {
        let list = |r: &[String]| r.iter().map(|s| shorten(s)).collect::<Vec<_>>().join(", ");
        match (earlier, now) {
            (Sealing::Clear, Sealing::Clear) => Ok(()),
            (Sealing::SealedTo(a), Sealing::SealedTo(b)) if a == b => Ok(()),
            (Sealing::SealedTo(a), Sealing::Clear) => Err(format!(
                "refusing to resume: the interrupted run sealed its passwords (to {}), as \
                 {where_} shows, and this run would write them in clear. Give the same \
                 --encrypt-to / --encrypt-to-file again",
                list(a)
            )),
            (Sealing::Clear, Sealing::SealedTo(_)) => Err(format!(
                "refusing to resume: the interrupted run wrote its passwords in clear, as \
                 {where_} shows, and this run would seal them, leaving a file of both kinds. \
                 Resume without --encrypt-to / --encrypt-to-file"
            )),
            (Sealing::SealedTo(a), Sealing::SealedTo(b)) => {
                let gone: Vec<String> = a.iter().filter(|r| !b.contains(r)).cloned().collect();
                let new: Vec<String> = b.iter().filter(|r| !a.contains(r)).cloned().collect();
                Err(format!(
                    "refusing to resume: the interrupted run sealed its passwords to other \
                     recipients, as {where_} shows (not given now: {}; not given then: {}), \
                     and the help desk could open only some of them. Give the same \
                     recipients as the interrupted run: {}",
                    if gone.is_empty() {
                        "none".into()
                    } else {
                        list(&gone)
                    },
                    if new.is_empty() {
                        "none".into()
                    } else {
                        list(&new)
                    },
                    list(a)
                ))
            }
        }
    }
}

const LINE_PREFIX: &str = "#passwords: ";
const SEALED_TO: &str = "sealed with age to ";

/// Seals passwords to a fixed set of recipients.
pub struct Sealer {
    /// Sorted by their text, each once.
    recipients: Vec<Recipient>,
}

impl Sealer {
    /// A sealer for these recipients; `None` if there are none.
    pub fn new(mut recipients: Vec<Recipient>) -> Option<Sealer> {
        recipients.sort_by(|a, b| a.text.cmp(&b.text));
        recipients.dedup_by(|a, b| a.text == b.text);
        (!recipients.is_empty()).then_some(Sealer { recipients })
    }

    pub fn sealing(&self) -> Sealing {
        Sealing::SealedTo(self.recipients.iter().map(|r| r.text.clone()).collect())
    }

    pub fn len(&self) -> usize {
        self.recipients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// Seals `secret` to every recipient: age's binary format, standard
    /// base64 with padding, one line. About a tenth of a millisecond of CPU
    /// per X25519 recipient (an RSA one costs more): callers that drive
    /// requests run it off their thread.
    pub fn seal(&self, secret: &str) -> Result<String, String> {
        let encryptor = age::Encryptor::with_recipients(self.recipients.iter().map(|r| r.as_age()))
            .map_err(|e| format!("cannot seal a password: {e}"))?;
        // Header (~100 bytes a recipient, more for RSA), nonce, payload and tag.
        let mut sealed = Vec::with_capacity(64 + 300 * self.recipients.len() + secret.len());
        let written = encryptor.wrap_output(&mut sealed).and_then(|mut w| {
            w.write_all(secret.as_bytes())?;
            w.finish()
        });
        written.map_err(|e| format!("cannot seal a password: {e}"))?;
        Ok(BASE64_STANDARD.encode(&sealed))
    }
}

/// Why a sealed field could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    NotBase64,
    NotAge(String),
    NoIdentityOpensIt,
    Damaged(String),
    NotText,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NotBase64 => write!(f, "the field is not base64"),
            OpenError::NotAge(e) => write!(f, "the field is not an age file ({e})"),
            OpenError::NoIdentityOpensIt => write!(
                f,
                "no identity given opens it (it was sealed to other recipients)"
            ),
            OpenError::Damaged(e) => write!(f, "the field is damaged ({e})"),
            OpenError::NotText => write!(f, "what it holds is not text"),
        }
    }
}

/// Opens a sealed field with any of `identities`. The password comes back in
/// memory that is wiped when dropped.
pub fn open(
    field: &str,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Zeroizing<String>, OpenError> {
    let bytes = BASE64_STANDARD
        .decode(field.trim())
        .map_err(|_| OpenError::NotBase64)?;
    let decryptor =
        age::Decryptor::new_buffered(&bytes[..]).map_err(|e| OpenError::NotAge(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => OpenError::NoIdentityOpensIt,
            e => OpenError::Damaged(e.to_string()),
        })?;
    let mut clear = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader
        .read_to_end(&mut clear)
        .map_err(|e| OpenError::Damaged(e.to_string()))?;
    let text = std::str::from_utf8(&clear).map_err(|_| OpenError::NotText)?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed SSH key pair, made with `ssh-keygen -t ed25519 -N ''` for these tests only.
    const SSH_ED25519_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC7D9xg7/vx5fb6ZuRYQkwv8/HVTW4s85dmjUN/INFbl test@example";

    // ssh-keygen -t rsa -b 2048, and a 1024-bit one that age refuses.
    const SSH_RSA_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCdgrHrHnltTvN1E9yCdihaQs2Klw3uTXFJTrkXX2C0vlmovJIcX2pvd8q8aoxNgDGoPQ+59QdlVT+Q+36zqLprzPP+nfdaD9pBWrQhPA4rRn8+U69Qjl10p9l+wwM/FSWjJk31BYa4MYIf8MFcvr4l3m7cMPAn/w6e5IW9onmDT4mNa7jUO1ZZMFRFKKNpkjwFuzhseWzm0GjPQ8TzqudkA31eBgql9P0m+SK/1unGAS4VJAVcrAFlTXfNt3BpFSURinLOGMp+mnloZwLVZc50xCArXHTYu3aOCRhpYG6j8eLs+FnyU3zSR0y4gdPVPcVhgqXklU6URvoYJ1o0CGzD desk";
    const SSH_RSA_1024_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDFNNDBJHegtHIe0YzqO4MawO2tJXWPY6Z52pwLWtC1uRJVas4q2qTljxUHsTpzj70WA0NOju6bnwc6qAwN6HvsMB7t1GbtiG3e6zJ7KITWWg4DtmHEhKBMei4QLwVyHsjyCD0Vyli/F9/0umkFah/fZTeeNitMAwk7ev+4Xno0OQ== weak";

    fn x25519() -> (age::x25519::Identity, String) {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        (id, public)
    }

    fn boxed(id: age::x25519::Identity) -> Vec<Box<dyn age::Identity + Send + Sync>> {
        vec![Box::new(id)]
    }

    #[test]
    fn a_sealed_password_opens_with_the_key_and_only_with_it() {
        let (id, public) = x25519();
        let sealer = Sealer::new(vec![Recipient::parse(&public).unwrap()]).unwrap();
        let sealed = sealer.seal("q8ZkE1mP0aR7nX2cV5bT9wYd").unwrap();
        assert!(is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains('\n') && !sealed.contains("q8ZkE1mP"));
        assert!(sealed.len() % 4 == 0, "padded base64: {}", sealed.len());
        let raw = BASE64_STANDARD.decode(&sealed).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n-> X25519 "));
        assert_eq!(
            open(&sealed, &boxed(id)).unwrap().as_str(),
            "q8ZkE1mP0aR7nX2cV5bT9wYd"
        );
        let (other, _) = x25519();
        assert_eq!(
            open(&sealed, &boxed(other)).unwrap_err(),
            OpenError::NoIdentityOpensIt
        );
        // Each seal is fresh: the same password never gives the same field.
        assert_ne!(sealed, sealer.seal("q8ZkE1mP0aR7nX2cV5bT9wYd").unwrap());
    }

    #[test]
    fn every_recipient_opens_a_field_sealed_to_several() {
        let (a, pa) = x25519();
        let (b, pb) = x25519();
        let ssh = Recipient::parse(SSH_ED25519_PUB).unwrap();
        let sealer = Sealer::new(vec![
            Recipient::parse(&pa).unwrap(),
            Recipient::parse(&pb).unwrap(),
            ssh,
        ])
        .unwrap();
        assert_eq!(sealer.len(), 3);
        let sealed = sealer.seal("pw with spaces, and \"quotes\"").unwrap();
        let raw = BASE64_STANDARD.decode(&sealed).unwrap();
        let header = String::from_utf8_lossy(&raw[..raw.len().min(600)]).into_owned();
        assert_eq!(header.matches("-> X25519 ").count(), 2, "{header}");
        assert_eq!(header.matches("-> ssh-ed25519 ").count(), 1, "{header}");
        for id in [a, b] {
            assert_eq!(
                open(&sealed, &boxed(id)).unwrap().as_str(),
                "pw with spaces, and \"quotes\""
            );
        }
    }

    #[test]
    fn ssh_rsa_keys_of_2048_bits_or_more_are_taken() {
        let rsa = Recipient::parse(SSH_RSA_PUB).unwrap();
        assert!(rsa.as_str().starts_with("ssh-rsa AAAA") && !rsa.as_str().ends_with("desk"));
        let sealed = Sealer::new(vec![rsa]).unwrap().seal("pw").unwrap();
        let raw = BASE64_STANDARD.decode(&sealed).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/v1\n-> ssh-rsa "));
        let e = Recipient::parse(SSH_RSA_1024_PUB).err().unwrap();
        assert!(e.contains("shorter than 2048 bits"), "{e}");
        assert!(e.len() < 300, "a long key is shortened in messages: {e}");
    }

    #[test]
    fn damaged_fields_are_told_apart() {
        let (id, public) = x25519();
        let sealer = Sealer::new(vec![Recipient::parse(&public).unwrap()]).unwrap();
        let ids = boxed(id);
        assert_eq!(open("not base64!", &ids).unwrap_err(), OpenError::NotBase64);
        assert!(matches!(
            open(&BASE64_STANDARD.encode(b"hello"), &ids),
            Err(OpenError::NotAge(_))
        ));
        let mut raw = BASE64_STANDARD
            .decode(sealer.seal("secret").unwrap())
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(matches!(
            open(&BASE64_STANDARD.encode(&raw), &ids),
            Err(OpenError::Damaged(_))
        ));
    }

    #[test]
    fn recipients_are_canonical_sorted_and_counted_once() {
        let (_, public) = x25519();
        let upper = public.to_ascii_uppercase();
        let a = Recipient::parse(&public).unwrap();
        let b = Recipient::parse(&format!("  {upper}  ")).unwrap();
        assert_eq!(a.as_str(), b.as_str());
        let ssh = Recipient::parse(SSH_ED25519_PUB).unwrap();
        assert!(!ssh.as_str().contains("test@example"), "no comment");
        let s1 = Sealer::new(vec![a.clone(), ssh.clone(), b]).unwrap();
        let s2 = Sealer::new(vec![ssh, a]).unwrap();
        assert_eq!(s1.sealing(), s2.sealing());
        assert_eq!(s1.len(), 2);
        assert!(Sealer::new(vec![]).is_none());
    }

    #[test]
    fn malformed_recipients_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("age1qqqq", "not an X25519 age recipient"),
            ("age1yubikey1qwerty", "not an X25519 age recipient"),
            ("ssh-ed25519 AAAA", "not a valid SSH public key"),
            (
                "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
                "not a valid SSH public key",
            ),
            ("ecdsa-sha2-nistp256 AAAAE2VjZHNh", "not a recipient"),
            ("bob@example.org", "not a recipient"),
        ];
        for (raw, want) in cases {
            let e = Recipient::parse(raw)
                .err()
                .unwrap_or_else(|| panic!("{raw}"));
            assert!(e.contains(want), "{raw}: {e}");
        }
        // A private key pasted by mistake is refused without being repeated.
        let secret = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let text = secret.to_string();
        let e = Recipient::parse(text.expose_secret()).err().unwrap();
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains(&text.expose_secret()[16..]), "{e}");
    }

    #[test]
    fn recipients_files_take_comments_and_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pa) = x25519();
        let (_, pb) = x25519();
        let good = dir.path().join("desk.txt");
        std::fs::write(
            &good,
            format!(
                "# help desk\n\n{pa}\n   # a comment after blanks\n{pb}  \n{SSH_ED25519_PUB}\n"
            ),
        )
        .unwrap();
        let got = read_recipients_file(&good).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_str(), pa);

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, format!("# desk\n{pa}\nage1oops\n")).unwrap();
        let e = read_recipients_file(&bad).err().unwrap();
        assert!(e.contains("bad.txt, line 3:"), "{e}");

        for (name, text) in [("empty.txt", ""), ("comments.txt", "# only\n\n  # this\n")] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = read_recipients_file(&p).err().unwrap();
            assert!(e.contains(name) && e.contains("no recipient in it"), "{e}");
        }

        let missing = dir.path().join("missing.txt");
        let e = read_recipients_file(&missing).err().unwrap();
        assert!(e.contains("missing.txt: cannot read it"), "{e}");
    }

    #[test]
    fn flags_combine_and_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pa) = x25519();
        let (_, pb) = x25519();
        let file = dir.path().join("r.txt");
        std::fs::write(&file, format!("{pb}\n")).unwrap();
        let s = from_flags(std::slice::from_ref(&pa), &[file])
            .unwrap()
            .unwrap();
        assert_eq!(s.len(), 2);
        assert!(from_flags(&[], &[]).unwrap().is_none());
        let e = from_flags(&["nope".into()], &[]).err().unwrap();
        assert!(e.starts_with("--encrypt-to: nope"), "{e}");
    }

    #[test]
    fn the_journal_line_round_trips_and_changes_are_refused() {
        let (_, pa) = x25519();
        let (_, pb) = x25519();
        let a = Sealer::new(vec![Recipient::parse(&pa).unwrap()]).unwrap();
        let ab = Sealer::new(vec![
            Recipient::parse(&pa).unwrap(),
            Recipient::parse(SSH_ED25519_PUB).unwrap(),
        ])
        .unwrap();
        let b = Sealer::new(vec![Recipient::parse(&pb).unwrap()]).unwrap();
        for s in [Sealing::Clear, a.sealing(), ab.sealing()] {
            assert_eq!(Sealing::parse_line(&s.line()), Some(s.clone()));
            assert!(Sealing::refuse_change(&s, &s, "j").is_ok());
        }
        assert_eq!(Sealing::parse_line("@a:x,pw"), None);

        let e = Sealing::refuse_change(&a.sealing(), &Sealing::Clear, "j").unwrap_err();
        assert!(e.contains("would write them in clear"), "{e}");
        let e = Sealing::refuse_change(&Sealing::Clear, &a.sealing(), "j").unwrap_err();
        assert!(
            e.contains("in clear") && e.contains("Resume without"),
            "{e}"
        );
        let e = Sealing::refuse_change(&a.sealing(), &b.sealing(), "j").unwrap_err();
        assert!(e.contains(&format!("not given now: {pa}")), "{e}");
        assert!(e.contains(&format!("not given then: {pb}")), "{e}");
        let e = Sealing::refuse_change(&ab.sealing(), &a.sealing(), "j").unwrap_err();
        assert!(e.contains("not given now: ssh-ed25519"), "{e}");
    }

    #[test]
    fn sealed_fields_are_recognised() {
        assert_eq!(
            BASE64_STANDARD.encode(b"age-encryption.org/v1"),
            SEALED_PREFIX
        );
        assert!(!is_sealed("q8ZkE1mP0aR7nX2cV5bT9wYd"));
        assert!(!is_sealed(""));
    }
}
