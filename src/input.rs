//! Streaming reader for the users CSV: header detection, column choice, line
//! numbers, and one `InputRow` per non-empty line.
//!
//! The file is never loaded whole. A line that cannot be used becomes a row with
//! an error that names the line; only an unreadable file is fatal.
//!
//! Records are split here (RFC 4180: quotes, doubled quotes, fields across
//! lines), not by the csv crate, because the line number is what an admin
//! looks up: the csv crate's record positions miscount physical lines after
//! blank lines and with CRLF line ends (measured with csv 1.3). Keep it so.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::user_id::{InvalidUserId, UserId};

/// Header names recognised for the user column, in order of preference.
pub const USER_COLUMN_NAMES: [&str; 4] = ["user_id", "mxid", "user", "localpart"];

/// Where the users come from, as the admin named it.
#[derive(Clone, Debug)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn from_arg(path: &Path) -> Self {
        if path.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(path.to_owned())
        }
    }

    /// The name used in messages.
    pub fn display(&self) -> String {
        match self {
            Source::Stdin => "standard input".to_owned(),
            Source::File(p) => p.display().to_string(),
        }
    }

    fn open(&self) -> anyhow::Result<Box<dyn Read + Send>> {
        match self {
            Source::Stdin => Ok(Box::new(io::stdin())),
            Source::File(p) => {
                let meta = std::fs::metadata(p)
                    .with_context(|| format!("cannot read input {}", p.display()))?;
                if meta.is_dir() {
                    bail!("input {} is a directory, not a CSV file", p.display());
                }
                let f =
                    File::open(p).with_context(|| format!("cannot read input {}", p.display()))?;
                Ok(Box::new(f))
            }
        }
    }
}

/// Which columns of the input to use.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    /// `--column`
    pub user: Option<String>,
    /// `--password-column`
    pub password: Option<String>,
    /// `--rooms-column`
    pub rooms: Option<String>,
}

/// Optional columns that give back what deactivation took, found by name.
pub const DISPLAYNAME_COLUMN: &str = "displayname";
pub const AVATAR_URL_COLUMN: &str = "avatar_url";
pub const EMAIL_COLUMN: &str = "email";

/// The layout decided from the first row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub has_header: bool,
    pub user_column: usize,
    pub user_column_name: Option<String>,
    pub password_column: Option<usize>,
    pub rooms_column: Option<usize>,
    pub displayname_column: Option<usize>,
    pub avatar_url_column: Option<usize>,
    pub email_column: Option<usize>,
}

/// What the input asks to give back to a user after reactivation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub emails: Vec<String>,
    /// Room IDs or aliases to join.
    pub rooms: Vec<String>,
    /// What in the input could not be used (a bad e-mail address, …), by name.
    pub problems: Vec<String>,
}

impl Restore {
    pub fn has_profile(&self) -> bool {
        self.displayname.is_some() || self.avatar_url.is_some() || !self.emails.is_empty()
    }
}

/// One non-empty line of the input.
#[derive(Clone, Debug)]
pub struct InputRow {
    /// 1-based line number in the input.
    pub line: u64,
    /// The user cell as written (trimmed), for the results of an invalid row.
    pub raw: String,
    pub user: Result<UserId, String>,
    pub password: Option<String>,
    pub restore: Restore,
}

/// An opened input whose layout is known. Reading the first row happens in
/// `open`, before any request is sent, so a bad `--column` fails early.
pub struct Input {
    source: Source,
    reader: RecordReader,
    layout: Layout,
    /// The first record when it is data rather than a header.
    pending_first: Option<Record>,
    record: Record,
}

/// One CSV record with the physical line it starts on.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub line: u64,
    fields: Vec<Vec<u8>>,
    len: usize,
}

impl Record {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        (i < self.len).then(|| self.fields[i].as_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.fields[..self.len].iter().map(Vec::as_slice)
    }

    fn push_field(&mut self) {
        if self.fields.len() == self.len {
            self.fields.push(Vec::new());
        }
        self.fields[self.len].clear();
        self.len += 1;
    }

    /// Parses `buf` (one or more physical lines) as RFC 4180 CSV. Returns false
    /// when a quoted field is still open at the end: the record goes on.
    fn parse(&mut self, buf: &[u8]) -> bool {
        self.len = 0;
        self.push_field();
        let mut at_start = true;
        let mut in_quotes = false;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if in_quotes {
                if b == b'"' {
                    if buf.get(i + 1) == Some(&b'"') {
                        self.fields[self.len - 1].push(b'"');
                        i += 1;
                    } else {
                        in_quotes = false;
                    }
                } else {
                    self.fields[self.len - 1].push(b);
                }
            } else if b == b',' {
                self.push_field();
                at_start = true;
                i += 1;
                continue;
            } else if b == b'"' && at_start {
                in_quotes = true;
            } else if b == b'\n' || (b == b'\r' && buf.get(i + 1) == Some(&b'\n')) {
                // End of the record; what follows is the next line.
                break;
            } else {
                self.fields[self.len - 1].push(b);
            }
            at_start = false;
            i += 1;
        }
        !in_quotes
    }
}

/// Largest record accepted: a quoted field left open would otherwise swallow
/// the rest of the file.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Reads CSV records line by line, counting physical lines as an editor shows them.
struct RecordReader {
    inner: io::BufReader<Box<dyn Read + Send>>,
    line: u64,
    buf: Vec<u8>,
}

impl RecordReader {
    fn new(inner: Box<dyn Read + Send>) -> Self {
        RecordReader {
            inner: io::BufReader::with_capacity(64 * 1024, inner),
            line: 0,
            buf: Vec::new(),
        }
    }

    /// Reads the next record into `record`; false at the end of the input.
    fn read(&mut self, record: &mut Record) -> io::Result<bool> {
        self.buf.clear();
        let first_line = self.line + 1;
        loop {
            let n = self.inner.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                // End of input inside an open quote: take what is there.
                record.parse(&self.buf);
                break;
            }
            self.line += 1;
            if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            if record.parse(&self.buf) {
                break;
            }
            if self.buf.len() > MAX_RECORD_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line {first_line}: a quoted field is never closed"),
                ));
            }
        }
        record.line = first_line;
        Ok(true)
    }
}

/// A cell as text, trimmed.
fn cell_text(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(bytes).map(str::trim)
}

fn is_blank(record: &Record) -> bool {
    record
        .iter()
        .all(|f| cell_text(f).map(str::is_empty).unwrap_or(false))
}

impl Input {
    pub fn open(source: Source, columns: &Columns) -> anyhow::Result<Self> {
        let name = source.display();
        let mut reader = RecordReader::new(source.open()?);
        let mut first = Record::default();
        loop {
            let more = reader
                .read(&mut first)
                .with_context(|| format!("cannot read input {name}"))?;
            if !more {
                bail!("input {name} is empty: no user to reactivate");
            }
            if !is_blank(&first) {
                break;
            }
        }
        let layout = decide_layout(&first, columns, &name)?;
        let pending_first = (!layout.has_header).then_some(first);
        Ok(Input {
            source,
            reader,
            layout,
            pending_first,
            record: Record::default(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The next non-empty row, `None` at the end of the input. An I/O error is
    /// returned as such; everything else about a line is in the row.
    pub fn next_row(&mut self, server_name: &str) -> anyhow::Result<Option<InputRow>> {
        if let Some(first) = self.pending_first.take() {
            return Ok(Some(self.row_from(&first, server_name)));
        }
        loop {
            let more = self
                .reader
                .read(&mut self.record)
                .with_context(|| format!("cannot read input {}", self.source.display()))?;
            if !more {
                return Ok(None);
            }
            if !is_blank(&self.record) {
                let record = std::mem::take(&mut self.record);
                let row = self.row_from(&record, server_name);
                self.record = record;
                return Ok(Some(row));
            }
        }
    }

    fn row_from(&self, record: &Record, server_name: &str) -> InputRow {
        let line = record.line;
        let user_cell = record.get(self.layout.user_column);
        let (raw, user) = match user_cell.map(cell_text) {
            None => (
                String::new(),
                Err(format!(
                    "line {line}: no value in column {} (the line has {} field{})",
                    self.column_label(),
                    record.len(),
                    if record.len() == 1 { "" } else { "s" }
                )),
            ),
            Some(Err(_)) => (
                String::from_utf8_lossy(user_cell.unwrap_or_default())
                    .trim()
                    .to_owned(),
                Err(format!("line {line}: not valid UTF-8")),
            ),
            Some(Ok(text)) => (
                text.to_owned(),
                UserId::from_cell(text, server_name)
                    .map_err(|e: InvalidUserId| format!("line {line}: {e}")),
            ),
        };
        let (password, user) = match (self.layout.password_column, user) {
            (Some(col), Ok(id)) => match password_cell(record.get(col), line) {
                Ok(p) => (Some(p), Ok(id)),
                Err(e) => (None, Err(e)),
            },
            (_, user) => (None, user),
        };
        let restore = self.restore_from(record);
        InputRow {
            line,
            raw,
            user,
            password,
            restore,
        }
    }

    fn restore_from(&self, record: &Record) -> Restore {
        let l = &self.layout;
        let text = |col: Option<usize>| -> Option<String> {
            let cell = record.get(col?)?;
            let t = String::from_utf8_lossy(cell).trim().to_owned();
            (!t.is_empty()).then_some(t)
        };
        let list = |col: Option<usize>| -> Vec<String> {
            text(col)
                .map(|t| {
                    t.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut r = Restore {
            displayname: text(l.displayname_column),
            ..Restore::default()
        };
        if let Some(url) = text(l.avatar_url_column) {
            if url.starts_with("mxc://") && url.len() > 6 && !url.contains(char::is_whitespace) {
                r.avatar_url = Some(url);
            } else {
                r.problems
                    .push(format!("avatar_url {url:?} is not an mxc:// URI"));
            }
        }
        for email in list(l.email_column) {
            if valid_email(&email) {
                r.emails.push(email);
            } else {
                r.problems
                    .push(format!("email {email:?} is not an e-mail address"));
            }
        }
        for room in list(l.rooms_column) {
            if (room.starts_with('!') || room.starts_with('#'))
                && room.len() > 1
                && !room.contains(char::is_whitespace)
            {
                r.rooms.push(room);
            } else {
                r.problems
                    .push(format!("room {room:?} is not a room ID or alias"));
            }
        }
        r
    }

    fn column_label(&self) -> String {
        match &self.layout.user_column_name {
            Some(n) => format!("'{n}'"),
            None => format!("{}", self.layout.user_column + 1),
        }
    }
}

/// A plain check of an e-mail address: one `@`, a local part, a domain with a
/// dot, no spaces, at most 254 characters. The server checks the rest.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Counts the non-empty data lines of a file, for the progress total. `None`
/// for standard input (it can be read only once) or if the file cannot be read.
pub fn count_rows(source: &Source, has_header: bool) -> Option<u64> {
    let Source::File(_) = source else {
        return None;
    };
    let mut reader = RecordReader::new(source.open().ok()?);
    let mut record = Record::default();
    let mut n = 0u64;
    while reader.read(&mut record).ok()? {
        if !is_blank(&record) {
            n += 1;
        }
    }
    Some(n.saturating_sub(u64::from(has_header)))
}

/// A password from the input: not trimmed (spaces may be meant), but never empty,
/// never longer than Synapse accepts, never with control characters.
fn password_cell(cell: Option<&[u8]>, line: u64) -> Result<String, String> {
    let Some(cell) = cell else {
        return Err(format!("line {line}: no value in the password column"));
    };
    let Ok(text) = std::str::from_utf8(cell) else {
        return Err(format!("line {line}: password is not valid UTF-8"));
    };
    if text.trim().is_empty() {
        return Err(format!("line {line}: empty password"));
    }
    if text.chars().count() > crate::password::MAX_LENGTH {
        return Err(format!(
            "line {line}: password is longer than {} characters",
            crate::password::MAX_LENGTH
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "line {line}: password contains a control character"
        ));
    }
    Ok(text.to_owned())
}

/// Decides from the first non-empty record whether it is a header and which
/// column holds the users.
pub fn decide_layout(
    first: &Record,
    columns: &Columns,
    input_name: &str,
) -> anyhow::Result<Layout> {
    let cells: Vec<String> = first
        .iter()
        .map(|c| {
            cell_text(c)
                .map(str::to_owned)
                .unwrap_or_else(|_| String::from_utf8_lossy(c).into_owned())
        })
        .collect();
    let find = |name: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(name));
    let list = || cells.join(", ");

    let named = match &columns.user {
        Some(name) => Some(find(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--column {name}: no such column in the first row of {input_name} (it has: {})",
                list()
            )
        })?),
        None => USER_COLUMN_NAMES.iter().find_map(|n| find(n)),
    };

    let (has_header, user_column) = match named {
        Some(i) => (true, i),
        None if cells.len() == 1 => {
            let c = &cells[0];
            // A first cell that looks like a user, or that was meant as one (it
            // starts with '@'), is data: dropping it as a header would lose a row.
            (!(UserId::looks_like_user(c) || c.starts_with('@')), 0)
        }
        None => {
            let ids: Vec<usize> = cells
                .iter()
                .enumerate()
                .filter(|(_, c)| c.starts_with('@') && UserId::parse(c).is_ok())
                .map(|(i, _)| i)
                .collect();
            match ids.as_slice() {
                [i] => (false, *i),
                _ => bail!(
                    "cannot tell which column of {input_name} holds the users: the first row has \
                     {} columns ({}) and none is named {}; name it with --column",
                    cells.len(),
                    list(),
                    USER_COLUMN_NAMES.join(", ")
                ),
            }
        }
    };

    let password_column = match &columns.password {
        Some(name) if has_header => Some(find(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--password-column {name}: no such column in the header of {input_name} (it has: {})",
                list()
            )
        })?),
        Some(name) => bail!(
            "--password-column {name}: {input_name} has no header row to name its columns"
        ),
        None => None,
    };

    let rooms_column = match &columns.rooms {
        Some(name) if has_header => Some(find(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--rooms-column {name}: no such column in the header of {input_name} (it has: {})",
                list()
            )
        })?),
        Some(name) => {
            bail!("--rooms-column {name}: {input_name} has no header row to name its columns")
        }
        None => None,
    };
    let named_column = |name: &str| if has_header { find(name) } else { None };

    Ok(Layout {
        has_header,
        user_column,
        user_column_name: has_header.then(|| cells[user_column].clone()),
        password_column,
        rooms_column,
        displayname_column: named_column(DISPLAYNAME_COLUMN),
        avatar_url_column: named_column(AVATAR_URL_COLUMN),
        email_column: named_column(EMAIL_COLUMN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of(text: &str, columns: &Columns) -> anyhow::Result<Layout> {
        let mut r = RecordReader::new(Box::new(io::Cursor::new(text.as_bytes().to_vec())));
        let mut rec = Record::default();
        r.read(&mut rec).unwrap();
        decide_layout(&rec, columns, "test.csv")
    }

    fn rows_of(text: &str, columns: &Columns) -> anyhow::Result<Vec<InputRow>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let mut input = Input::open(Source::File(path), columns)?;
        let mut out = vec![];
        while let Some(row) = input.next_row("example.org")? {
            out.push(row);
        }
        Ok(out)
    }

    #[test]
    fn recognised_headers_in_any_case() {
        for (text, col) in [
            ("user_id\n@a:b", 0),
            ("MXID\n@a:b", 0),
            ("name,User\nx,@a:b", 1),
            ("email,Localpart,note\nx,a,y", 1),
            // user_id wins over user when both exist (first recognised name in order).
            ("user,user_id\na,@a:b", 1),
        ] {
            let l = layout_of(text, &Columns::default()).unwrap();
            assert!(l.has_header, "{text}");
            assert_eq!(l.user_column, col, "{text}");
        }
    }

    #[test]
    fn headerless_single_column() {
        let l = layout_of("@alice:example.org\n", &Columns::default()).unwrap();
        assert!(!l.has_header);
        let l = layout_of("alice\n", &Columns::default()).unwrap();
        assert!(!l.has_header);
        // A malformed ID is still data, not a header: it must get its own row.
        let l = layout_of("@bad user:example.org\n", &Columns::default()).unwrap();
        assert!(!l.has_header);
        // An unrecognised name that cannot be a localpart is a header.
        let l = layout_of("Account\n", &Columns::default()).unwrap();
        assert!(l.has_header);
    }

    #[test]
    fn headerless_several_columns_picks_the_user_id() {
        let l = layout_of("Alice,@alice:example.org,x\n", &Columns::default()).unwrap();
        assert_eq!((l.has_header, l.user_column), (false, 1));
        let e = layout_of("a,b,c\n", &Columns::default()).unwrap_err();
        assert!(e.to_string().contains("--column"), "{e}");
        assert!(e.to_string().contains("test.csv"), "{e}");
    }

    #[test]
    fn explicit_column() {
        let cols = Columns {
            user: Some("Account".into()),
            ..Columns::default()
        };
        let l = layout_of("name,account\nx,@a:b", &cols).unwrap();
        assert_eq!((l.has_header, l.user_column), (true, 1));
        let e = layout_of("name,login\nx,@a:b", &cols).unwrap_err();
        assert!(e.to_string().contains("--column Account"), "{e}");
        assert!(e.to_string().contains("name, login"), "{e}");
    }

    #[test]
    fn password_column_needs_a_header() {
        let cols = Columns {
            password: Some("password".into()),
            ..Columns::default()
        };
        let l = layout_of("user_id,Password\n@a:b,x", &cols).unwrap();
        assert_eq!(l.password_column, Some(1));
        let e = layout_of("@a:b,x\n", &cols).unwrap_err();
        assert!(e.to_string().contains("--password-column"), "{e}");
    }

    #[test]
    fn bom_crlf_blank_lines_and_whitespace() {
        let text = "\u{feff}user_id\r\n  @alice:example.org  \r\n\r\n   \r\nbob\r\n";
        let rows = rows_of(text, &Columns::default()).unwrap();
        let ids: Vec<_> = rows
            .iter()
            .map(|r| r.user.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["@alice:example.org", "@bob:example.org"]);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn bad_lines_become_invalid_rows_naming_the_line() {
        let mut text = b"user_id,password\n@a:example.org,pw1\n,\n@b:example.org\n".to_vec();
        text.extend_from_slice(b"@c\xff:example.org,pw\n@d:example.org, \n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, &text).unwrap();
        let cols = Columns {
            password: Some("password".into()),
            ..Columns::default()
        };
        let mut input = Input::open(Source::File(path), &cols).unwrap();
        let mut rows = vec![];
        while let Some(r) = input.next_row("example.org").unwrap() {
            rows.push(r);
        }
        // The line ",\n" is blank after trimming and is skipped.
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].password.as_deref(), Some("pw1"));
        let err = |i: usize| rows[i].user.clone().unwrap_err();
        assert_eq!(err(1), "line 4: no value in the password column");
        assert_eq!(err(2), "line 5: not valid UTF-8");
        assert_eq!(err(3), "line 6: empty password");
    }

    #[test]
    fn quoted_fields_and_physical_line_numbers() {
        let text = "user_id,note\n\"@a:example.org\",\"x, \"\"y\"\"\"\n\n@b:example.org,\"two\nlines\"\n@c:example.org,z\n";
        let rows = rows_of(text, &Columns::default()).unwrap();
        let got: Vec<(u64, String)> = rows
            .iter()
            .map(|r| (r.line, r.user.as_ref().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "@a:example.org".to_string()),
                (4, "@b:example.org".to_string()),
                (6, "@c:example.org".to_string())
            ]
        );
        let mut rec = Record::default();
        assert!(rec.parse(b"\"x, \"\"y\"\"\",o\"brien,\r\n"));
        let fields: Vec<&[u8]> = rec.iter().collect();
        assert_eq!(fields, [&b"x, \"y\""[..], b"o\"brien", b""]);
    }

    #[test]
    fn restore_columns_are_read_and_checked() {
        let cols = Columns {
            rooms: Some("Rooms".into()),
            ..Columns::default()
        };
        let text = "user_id,DisplayName,avatar_url,email,rooms\n\
                    alice,Alice Martin,mxc://example.org/abc,a@example.org; alice@work.example,!r1:example.org;#team:example.org\n\
                    bob,,https://x/y.png,not-an-address,lobby\n";
        let rows = rows_of(text, &cols).unwrap();
        let a = &rows[0].restore;
        assert_eq!(a.displayname.as_deref(), Some("Alice Martin"));
        assert_eq!(a.avatar_url.as_deref(), Some("mxc://example.org/abc"));
        assert_eq!(a.emails, ["a@example.org", "alice@work.example"]);
        assert_eq!(a.rooms, ["!r1:example.org", "#team:example.org"]);
        assert!(a.problems.is_empty());
        let b = &rows[1].restore;
        assert_eq!(b.displayname, None);
        assert!(!b.has_profile());
        assert_eq!(b.problems.len(), 3, "{:?}", b.problems);
        assert!(b.problems[0].contains("mxc://"));
        assert!(b.problems[1].contains("not-an-address"));
        assert!(b.problems[2].contains("lobby"));
    }

    #[test]
    fn email_check() {
        for ok in ["a@b.c", "first.last+tag@sub.example.org"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@b.c@d.e",
            "a b@c.d",
            "a@.c",
            "a@c.",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn empty_and_header_only_inputs() {
        let e = rows_of("", &Columns::default()).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = rows_of("\n\n  \n", &Columns::default()).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let rows = rows_of("user_id\n", &Columns::default()).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Input::open(Source::File(dir.path().to_owned()), &Columns::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}
