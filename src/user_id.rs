//! The Matrix user ID: parsing an input cell, normalising a bare localpart, and
//! encoding the ID as one URL path segment.
//!
//! This module never changes the case of an ID: Synapse looks users up exactly, and
//! historical IDs with upper-case letters must still be found as they are.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// A user ID is at most 255 bytes long, sigil and server name included.
pub const MAX_USER_ID_BYTES: usize = 255;

/// Characters that stay unencoded in a path segment (RFC 3986 "unreserved").
/// Everything else, `@`, `:` and `/` included, is percent-encoded.
pub(crate) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A syntactically valid Matrix user ID, `@localpart:server_name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    full: String,
    /// Byte offset of the colon that separates localpart and server name.
    colon: usize,
}

/// Why a cell is not a usable user ID. The text is shown to the admin as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    #[error("empty user ID")]
    Empty,
    #[error("user ID is {0} bytes long; the limit is 255")]
    TooLong(usize),
    #[error("user ID has no ':' between localpart and server name")]
    MissingServerName,
    #[error("user ID has an empty localpart")]
    EmptyLocalpart,
    #[error("user ID contains a control character or white space")]
    BadCharacter,
    #[error("user ID has an invalid server name {0:?}")]
    BadServerName(String),
    #[error("localpart contains ':'; write the full user ID as @localpart:server")]
    ColonInLocalpart,
}

impl UserId {
    /// Parses a full user ID (`@localpart:server_name`). The input must already be trimmed.
    pub fn parse(s: &str) -> Result<Self, InvalidUserId> {
        if s.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if s.len() > MAX_USER_ID_BYTES {
            return Err(InvalidUserId::TooLong(s.len()));
        }
        let Some(rest) = s.strip_prefix('@') else {
            return Err(InvalidUserId::MissingServerName);
        };
        let Some(colon_in_rest) = rest.find(':') else {
            return Err(InvalidUserId::MissingServerName);
        };
        let (localpart, server) = (&rest[..colon_in_rest], &rest[colon_in_rest + 1..]);
        check_localpart(localpart)?;
        check_server_name(server)?;
        Ok(UserId {
            full: s.to_owned(),
            colon: colon_in_rest + 1,
        })
    }

    /// Parses an input cell: a full user ID, or a bare localpart completed with
    /// `server_name`. The cell is trimmed first.
    pub fn from_cell(cell: &str, server_name: &str) -> Result<Self, InvalidUserId> {
        let cell = cell.trim();
        if cell.is_empty() {
            return Err(InvalidUserId::Empty);
        }
        if cell.starts_with('@') {
            return Self::parse(cell);
        }
        if cell.contains(':') {
            return Err(InvalidUserId::ColonInLocalpart);
        }
        check_localpart(cell)?;
        Self::parse(&format!("@{cell}:{server_name}"))
    }

    /// Whether a cell looks like user data (a full ID or a plain localpart) rather
    /// than a header. Used to decide whether the first row of a file is a header.
    pub fn looks_like_user(cell: &str) -> bool {
        let cell = cell.trim();
        if cell.starts_with('@') {
            return Self::parse(cell).is_ok();
        }
        // A plain localpart in the modern grammar: a-z 0-9 . _ = - / +
        !cell.is_empty()
            && cell.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'=' | b'-' | b'/' | b'+')
            })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn localpart(&self) -> &str {
        &self.full[1..self.colon]
    }

    pub fn server_name(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// The ID percent-encoded as a single URL path segment (`@` → `%40`, `/` → `%2F`).
    pub fn path_segment(&self) -> String {
        utf8_percent_encode(&self.full, PATH_SEGMENT).to_string()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Historical localparts may hold almost any character but ':'; Synapse must
/// still accept them, so only what can never be part of one is refused.
fn check_localpart(localpart: &str) -> Result<(), InvalidUserId> {
    if localpart.is_empty() {
        return Err(InvalidUserId::EmptyLocalpart);
    }
    if localpart.contains(':') {
        return Err(InvalidUserId::ColonInLocalpart);
    }
    if localpart
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(InvalidUserId::BadCharacter);
    }
    Ok(())
}

/// A server name: a DNS name, an IPv4 address or a bracketed IPv6 literal,
/// optionally followed by `:port`.
pub fn check_server_name(server: &str) -> Result<(), InvalidUserId> {
    let bad = || InvalidUserId::BadServerName(server.to_owned());
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let literal = &rest[..end];
        if literal.is_empty()
            || literal.len() > 45
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || literal.parse::<std::net::Ipv6Addr>().is_err()
        {
            return Err(bad());
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return Err(bad()),
        }
    } else {
        match server.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (server, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if !server.starts_with('[')
        && (host.is_empty()
            || host.len() > 255
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_id() {
        let id = UserId::parse("@alice:example.org").unwrap();
        assert_eq!(id.localpart(), "alice");
        assert_eq!(id.server_name(), "example.org");
        assert_eq!(id.as_str(), "@alice:example.org");
    }

    #[test]
    fn server_name_with_port_and_ip_literals() {
        let id = UserId::parse("@bob:example.org:8448").unwrap();
        assert_eq!(id.localpart(), "bob");
        assert_eq!(id.server_name(), "example.org:8448");

        let id = UserId::parse("@bob:[2001:db8::1]:8448").unwrap();
        assert_eq!(id.server_name(), "[2001:db8::1]:8448");
        let id = UserId::parse("@bob:[::1]").unwrap();
        assert_eq!(id.server_name(), "[::1]");
        let id = UserId::parse("@bob:127.0.0.1:8008").unwrap();
        assert_eq!(id.server_name(), "127.0.0.1:8008");

        for bad in [
            "@bob:[2001:db8::1",
            "@bob:[zz::1]",
            "@bob:[::1]x",
            "@bob:example.org:",
            "@bob:example.org:123456",
            "@bob:example.org:80a",
            "@bob:",
            "@bob:exa mple.org",
            "@bob:exa_mple.org",
        ] {
            assert!(
                matches!(UserId::parse(bad), Err(InvalidUserId::BadServerName(_))),
                "{bad} should have a bad server name"
            );
        }
    }

    #[test]
    fn historical_ids_keep_their_case_and_characters() {
        for s in [
            "@Alice:example.org",
            "@o'brien:example.org",
            "@a!b$c:example.org",
        ] {
            let id = UserId::parse(s).unwrap();
            assert_eq!(id.as_str(), s);
        }
    }

    #[test]
    fn rejects_malformed_ids() {
        assert_eq!(UserId::parse(""), Err(InvalidUserId::Empty));
        assert_eq!(
            UserId::parse("alice:example.org"),
            Err(InvalidUserId::MissingServerName)
        );
        assert_eq!(
            UserId::parse("@alice"),
            Err(InvalidUserId::MissingServerName)
        );
        assert_eq!(
            UserId::parse("@:example.org"),
            Err(InvalidUserId::EmptyLocalpart)
        );
        assert_eq!(
            UserId::parse("@al ice:example.org"),
            Err(InvalidUserId::BadCharacter)
        );
        assert_eq!(
            UserId::parse("@al\u{7}ice:example.org"),
            Err(InvalidUserId::BadCharacter)
        );
    }

    #[test]
    fn enforces_the_255_byte_limit() {
        let server = ":example.org";
        let at_limit = format!("@{}{}", "a".repeat(255 - 1 - server.len()), server);
        assert_eq!(at_limit.len(), 255);
        assert!(UserId::parse(&at_limit).is_ok());
        let over = format!("@{}{}", "a".repeat(256 - 1 - server.len()), server);
        assert_eq!(UserId::parse(&over), Err(InvalidUserId::TooLong(256)));
        // Multi-byte characters count in bytes, not characters.
        let multibyte = format!("@{}{}", "é".repeat(122), server);
        assert_eq!(multibyte.len(), 1 + 244 + server.len());
        assert!(matches!(
            UserId::parse(&multibyte),
            Err(InvalidUserId::TooLong(_))
        ));
    }

    #[test]
    fn bare_localparts_take_the_server_name() {
        let id = UserId::from_cell("  alice ", "example.org").unwrap();
        assert_eq!(id.as_str(), "@alice:example.org");
        let id = UserId::from_cell("Bob", "example.org:8448").unwrap();
        assert_eq!(id.as_str(), "@Bob:example.org:8448");
        assert_eq!(
            UserId::from_cell("alice:example.org", "example.org"),
            Err(InvalidUserId::ColonInLocalpart)
        );
        assert_eq!(
            UserId::from_cell("   ", "example.org"),
            Err(InvalidUserId::Empty)
        );
        let long = "a".repeat(250);
        assert!(matches!(
            UserId::from_cell(&long, "example.org"),
            Err(InvalidUserId::TooLong(_))
        ));
    }

    #[test]
    fn percent_encodes_as_one_segment() {
        let id = UserId::parse("@a/b+c:example.org:8448").unwrap();
        assert_eq!(id.path_segment(), "%40a%2Fb%2Bc%3Aexample.org%3A8448");
        let id = UserId::parse("@é:[::1]").unwrap();
        assert_eq!(id.path_segment(), "%40%C3%A9%3A%5B%3A%3A1%5D");
    }

    #[test]
    fn header_detection_helper() {
        assert!(UserId::looks_like_user("@alice:example.org"));
        assert!(UserId::looks_like_user("alice.smith"));
        assert!(!UserId::looks_like_user("User ID"));
        assert!(!UserId::looks_like_user("Username"));
        assert!(!UserId::looks_like_user(""));
    }
}
