//! The PostgreSQL password, found as psql finds it: `PGPASSWORD`, else the
//! password file (`PGPASSFILE`, else `~/.pgpass`). Never from the URL.
//!
//! The password file follows libpq's rules: lines
//! `hostname:port:database:username:password`, the first matching line wins,
//! `*` in any of the first four fields matches anything, `\:` and `\\` stand
//! for `:` and `\`, lines starting with `#` are comments, and a file that its
//! group or others can read is not used at all (libpq ignores it too).
//!
//! The password is never printed: errors only say where it was looked for.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// Where a password was looked for and what was found, for messages.
#[derive(Debug)]
pub struct Found {
    pub password: Option<SecretString>,
    /// `PGPASSWORD`, or the password file that gave it.
    pub from: Option<String>,
    /// The password file consulted (or skipped), if any.
    pub file: Option<PathBuf>,
    /// The file exists.
    pub file_found: bool,
    /// The file was not used because its group or others can read it.
    pub file_too_open: bool,
}

/// What a connection is to, as the password file matches it.
#[derive(Clone, Debug)]
pub struct Key<'a> {
    /// The host name, or `localhost` for a Unix socket (as libpq does).
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// The password for `key`: `PGPASSWORD` if set and not empty, else the
/// first matching line of the password file.
pub fn find(key: &Key<'_>) -> Found {
    find_with(
        key,
        std::env::var("PGPASSWORD").ok(),
        std::env::var_os("PGPASSFILE").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn find_with(
    key: &Key<'_>,
    pgpassword: Option<String>,
    pgpassfile: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Found {
    let mut found = Found {
        password: None,
        from: None,
        file: None,
        file_found: false,
        file_too_open: false,
    };
    if let Some(p) = pgpassword.filter(|p| !p.is_empty()) {
        found.password = Some(SecretString::from(p));
        found.from = Some("PGPASSWORD".into());
        return found;
    }
    let Some(file) = pgpassfile.or_else(|| home.map(|h| h.join(".pgpass"))) else {
        return found;
    };
    found.file = Some(file.clone());
    match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => {
            found.file_found = true;
            if m.permissions().mode() & 0o077 != 0 {
                found.file_too_open = true;
                return found;
            }
        }
        _ => return found,
    }
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Some(p) = lookup(&text, key) {
            found.password = Some(SecretString::from(p));
            found.from = Some(file.display().to_string());
        }
    }
    found
}

/// The password of the first line of `text` that matches `key`.
pub fn lookup(text: &str, key: &Key<'_>) -> Option<String> {
    let port = key.port.to_string();
    let wanted = [key.host, port.as_str(), key.database, key.user];
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((fields, password)) = split_line(line) else {
            continue;
        };
        let matches = fields
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        if matches {
            return Some(password);
        }
    }
    None
}

/// The four matching fields (unescaped) and the password (unescaped) of a
/// line; `None` for a line with fewer than five fields.
fn split_line(line: &str) -> Option<([String; 4], String)> {
    let mut fields: [String; 4] = Default::default();
    let mut chars = line.chars();
    for field in &mut fields {
        loop {
            match chars.next()? {
                ':' => break,
                '\\' => field.push(chars.next()?),
                c => field.push(c),
            }
        }
    }
    // The rest of the line is the password, backslashes taken out as libpq does.
    let mut password = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    password.push(n);
                }
            }
            c => password.push(c),
        }
    }
    Some((fields, password))
}

/// The default password file, for messages: `PGPASSFILE`, else `~/.pgpass`.
pub fn default_file() -> Option<PathBuf> {
    std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn key<'a>(host: &'a str, port: u16, database: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port,
            database,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let text = "\
# comment:line:that:looks:like-one
db.example.org:5432:synapse:synapse:first
*:5432:synapse:synapse:second
*:*:*:*:anything
";
        let k = key("db.example.org", 5432, "synapse", "synapse");
        assert_eq!(lookup(text, &k).as_deref(), Some("first"));
        let k = key("other", 5432, "synapse", "synapse");
        assert_eq!(lookup(text, &k).as_deref(), Some("second"));
        let k = key("other", 5433, "synapse", "synapse");
        assert_eq!(lookup(text, &k).as_deref(), Some("anything"));
        assert_eq!(
            lookup(
                "db:5432:synapse:synapse:x\n",
                &key("db", 1, "synapse", "synapse")
            ),
            None
        );
    }

    #[test]
    fn escapes_and_short_lines_follow_libpq() {
        let text = "short:line\nh\\:1:5432:d\\\\b:u:pa\\:ss\\\\wo:rd\r\n";
        let k = key("h:1", 5432, "d\\b", "u");
        assert_eq!(lookup(text, &k).as_deref(), Some("pa:ss\\wo:rd"));
        assert_eq!(
            lookup("h:5432:d:u:\n", &key("h", 5432, "d", "u")).as_deref(),
            Some("")
        );
        assert_eq!(lookup("h:5432:d:u\n", &key("h", 5432, "d", "u")), None);
    }

    #[test]
    fn pgpassword_comes_first_and_open_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = key("h", 5432, "d", "u");

        let f = find_with(&k, Some("env".into()), Some(file.clone()), None);
        assert_eq!(f.password.unwrap().expose_secret(), "env");
        assert_eq!(f.from.as_deref(), Some("PGPASSWORD"));

        // An empty PGPASSWORD is no password (libpq), so the file is read.
        let f = find_with(&k, Some(String::new()), Some(file.clone()), None);
        assert_eq!(f.password.unwrap().expose_secret(), "from-file");

        // ~/.pgpass when PGPASSFILE is not set.
        std::fs::copy(&file, dir.path().join(".pgpass")).unwrap();
        std::fs::set_permissions(
            dir.path().join(".pgpass"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        let f = find_with(&k, None, None, Some(dir.path().to_owned()));
        assert_eq!(f.password.unwrap().expose_secret(), "from-file");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let f = find_with(&k, None, Some(file.clone()), None);
        assert!(f.password.is_none() && f.file_too_open);
        assert_eq!(f.file.as_deref(), Some(file.as_path()));

        let f = find_with(&k, None, Some(dir.path().join("missing")), None);
        assert!(f.password.is_none() && !f.file_too_open && !f.file_found);
    }
}
