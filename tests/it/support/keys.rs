//! Keys for the sealing tests: age X25519 identities made with the `age`
//! crate (written as `age-keygen` writes them), SSH keys made with
//! `ssh-keygen`, and two ways to open a sealed field: the library, and the
//! standard `age` command (Debian's package, which `scripts/test.sh` installs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use age::secrecy::ExposeSecret;
use base64::prelude::{Engine, BASE64_STANDARD};

/// A private key file and its recipient.
pub struct Key {
    pub path: PathBuf,
    pub recipient: String,
}

/// A new age X25519 key in `dir/name`.
pub fn age_key(dir: &Path, name: &str) -> Key {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# created: by the test\n# public key: {recipient}\n{}\n",
            id.to_string().expose_secret()
        ),
    )
    .expect("write the key file");
    Key { path, recipient }
}

/// A new unencrypted ed25519 SSH key in `dir/name` (and `name.pub`).
pub fn ssh_key(dir: &Path, name: &str) -> Key {
    let path = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "help-desk", "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs (Debian: openssh-client; scripts/test.sh installs it)");
    assert!(made.success(), "ssh-keygen failed");
    let recipient = std::fs::read_to_string(path.with_extension("pub"))
        .expect("the .pub file")
        .trim()
        .to_owned();
    Key { path, recipient }
}

/// Opens a sealed field with the library, as `decrypt` does.
pub fn open(field: &str, key: &Path) -> Result<String, String> {
    let ids = matrix_reactivate::decrypt::read_identities(key)?;
    matrix_reactivate::seal::open(field, &ids)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

/// Opens a sealed field with the standard `age` command:
/// `printf %s "$FIELD" | base64 -d | age -d -i KEY`.
pub fn age_cli_open(field: &str, key: &Path) -> String {
    let bytes = BASE64_STANDARD
        .decode(field)
        .expect("standard padded base64");
    let mut child = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the age command runs (Debian package age; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&bytes)
        .expect("feed age");
    let out = child.wait_with_output().expect("age ends");
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a text password")
}

/// Whether the bytes of `file` contain any of `secrets`.
pub fn holds_any(file: &[u8], secrets: &[String]) -> Option<String> {
    secrets
        .iter()
        .find(|s| !s.is_empty() && file.windows(s.len()).any(|w| w == s.as_bytes()))
        .cloned()
}
