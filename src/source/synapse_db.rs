//! A Synapse database backup (SQLite or PostgreSQL), opened read-only.
//!
//! The queries are written once, with `$1`-style placeholders, and run on
//! either engine; rows come back as plain [`Cell`]s so that the differences
//! between the engines (SQLite's integers where PostgreSQL has booleans and
//! small integers) stay in one place. Only tables and columns that every
//! schema version from [`MIN_SCHEMA`] to [`MAX_SCHEMA`] has are read, and a
//! database outside that range is refused before any of them is.
//!
//! This module never writes: SQLite files are opened `immutable=1` and
//! read-only, PostgreSQL sessions are read-only. It also never reads more than
//! one page of a user's key backup at a time.

mod pg;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::snapshot::raw;
use super::sqlite::{self, WHAT_IT_MUST_BE};
use super::{
    AccountData, Backup, BackupSession, BeforeImage, CustomRule, DefaultRule, Json, Profile,
    PushRules, SessionCursor, Source, Threepid, PUSH_RULE_KINDS,
};
use crate::user_id::UserId;

/// The oldest schema read: 78 is the first where every `profiles` row has
/// its `full_user_id` (added in 76, filled and made NOT NULL in 78).
pub const MIN_SCHEMA: i64 = 78;
/// The newest schema read: Synapse 1.163's.
pub const MAX_SCHEMA: i64 = 94;
/// The Synapse releases that wrote `MIN_SCHEMA` and `MAX_SCHEMA` first and last.
const SYNAPSE_RANGE: &str = "Synapse 1.86 to 1.163";

/// A query parameter: text, or a 64-bit integer (PostgreSQL types the
/// parameters of `LIMIT` and of BIGINT columns as `int8`).
#[derive(Clone, Debug)]
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// One value of a result row, whatever the engine's type for it was.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
}

/// One result row.
#[derive(Clone, Debug)]
pub(super) struct Row(pub(super) Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> anyhow::Result<&Cell> {
        self.0
            .get(i)
            .with_context(|| format!("a result row has no column {i}"))
    }

    fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            Cell::Int(n) => Ok(Some(n.to_string())),
            other => bail!("column {i} holds {other:?} where text was expected"),
        }
    }

    fn text(&self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?
            .with_context(|| format!("column {i} is NULL where text was expected"))
    }

    fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            Cell::Bool(b) => Ok(Some(i64::from(*b))),
            Cell::Text(s) => s
                .trim()
                .parse()
                .map(Some)
                .with_context(|| format!("column {i} holds {s:?} where a number was expected")),
        }
    }

    fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?
            .with_context(|| format!("column {i} is NULL where a number was expected"))
    }

    /// A flag stored as a boolean (PostgreSQL) or an integer (SQLite); NULL is false.
    fn flag(&self, i: usize) -> anyhow::Result<bool> {
        Ok(self.opt_int(i)?.is_some_and(|n| n != 0))
    }

    fn json(&self, i: usize) -> anyhow::Result<Json> {
        let text = self.text(i)?;
        raw(text).with_context(|| format!("column {i} is not JSON"))
    }
}

/// The engine behind a Synapse database.
enum Db {
    /// rusqlite connections are `Send` but not `Sync`; queries are short.
    Sqlite(Mutex<Connection>),
    Postgres(pg::PgWorker),
}

impl Db {
    fn query(&self, sql: &str, params: &[Param]) -> anyhow::Result<Vec<Row>> {
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                sqlite_query(&conn, sql, params)
            }
            Db::Postgres(pg) => pg.query(sql, params),
        }
    }

    fn has_table(&self, name: &str) -> anyhow::Result<bool> {
        match self {
            Db::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                Ok(sqlite::has_table(&conn, name)?)
            }
            Db::Postgres(pg) => {
                let rows = pg.query(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_name = $1 AND table_schema = ANY (current_schemas(false))",
                    &[Param::Text(name.to_owned())],
                )?;
                Ok(rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0)
            }
        }
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
        })
    }
}

/// `$1` → `?1`: SQLite reads `$1` as a *named* parameter, numbered by first
/// appearance, which would bind the wrong values when `$2` comes first.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn sqlite_query(conn: &Connection, sql: &str, params: &[Param]) -> anyhow::Result<Vec<Row>> {
    let mut st = conn.prepare_cached(&sqlite_placeholders(sql))?;
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut cells = Vec::with_capacity(n);
        for i in 0..n {
            cells.push(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                // Synapse stores no fractions in the columns read here.
                ValueRef::Real(v) => Cell::Int(v as i64),
                ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(
                    String::from_utf8(t.to_vec())
                        .with_context(|| format!("column {i} is not UTF-8 text"))?,
                ),
            });
        }
        out.push(Row(cells));
    }
    Ok(out)
}

/// A Synapse database, open for reading one user at a time.
pub struct SynapseDb {
    db: Db,
    describe: String,
    server_name: String,
    schema: i64,
}

impl SynapseDb {
    /// Opens a Synapse SQLite database read-only and immutable, and checks
    /// that it is one (its tables, its schema version, its users).
    pub fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        let conn = sqlite::open_read_only(path)?;
        let db = Db::Sqlite(Mutex::new(conn));
        let describe = format!("Synapse SQLite database {}", path.display());
        Self::checked(db, describe, &path.display().to_string(), WHAT_IT_MUST_BE)
    }

    /// Opens a Synapse PostgreSQL database, `postgresql://user@host[:port]/dbname`
    /// (or `postgres://`), in read-only sessions.
    ///
    /// The password comes from `PGPASSWORD`, else from the password file
    /// (`PGPASSFILE`, else `~/.pgpass`), never from the URL: a URL with a
    /// password is refused, since the command line shows in `ps`.
    ///
    /// The connection is plain (no TLS): `sslmode` absent, `disable`, `allow`
    /// or `prefer` connect without TLS; `require`, `verify-ca` and
    /// `verify-full` are refused, as TLS to the database is not supported
    /// yet (use a loopback address, a Unix socket or an SSH tunnel).
    ///
    /// The connection lives on a thread of its own, so the source can be
    /// opened, used and dropped from any thread, tokio's workers included.
    pub fn open_postgres(url: &str) -> anyhow::Result<Self> {
        let target = pg::Target::parse(url)?;
        let describe = format!("PostgreSQL database {} on {}", target.dbname, target.where_);
        let what = describe.clone();
        let db = Db::Postgres(pg::PgWorker::connect(target)?);
        Self::checked(db, describe, &what, "not a Synapse database")
    }

    fn checked(db: Db, describe: String, shown: &str, not_synapse: &str) -> anyhow::Result<Self> {
        let is_synapse = db.has_table("users")? && db.has_table("schema_version")?;
        if !is_synapse {
            bail!(
                "{shown} is {not_synapse} (it has no Synapse `users` and `schema_version` tables)"
            );
        }
        let schema = schema_version(&db).with_context(|| format!("cannot read {shown}"))?;
        if !(MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) {
            bail!(
                "{shown}: matrix-reactivate reads Synapse schema versions {MIN_SCHEMA} to \
                 {MAX_SCHEMA}, {SYNAPSE_RANGE}; this database is schema {schema}{}",
                if schema < MIN_SCHEMA {
                    ": restore it into a Synapse of that range once (it upgrades the schema), \
                     then read it again"
                } else {
                    ", from a newer Synapse: use a newer matrix-reactivate"
                }
            );
        }
        let first = db
            .query("SELECT name FROM users ORDER BY name LIMIT 1", &[])
            .with_context(|| format!("cannot read the users of {shown}"))?;
        let Some(first) = first.first() else {
            bail!("{shown} has no users: there is nothing to give back from it");
        };
        let name = first.text(0)?;
        let Some((_, server)) = name.split_once(':') else {
            bail!("{shown}: the user {name:?} has no server name");
        };
        Ok(Self {
            server_name: server.to_owned(),
            db,
            describe,
            schema,
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> i64 {
        self.schema
    }

    fn read<T>(
        &self,
        what: &str,
        user: &UserId,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        f().with_context(|| format!("cannot read the {what} of {user} from {}", self.describe))
    }

    fn q(&self, sql: &str, user: &UserId) -> anyhow::Result<Vec<Row>> {
        self.db.query(sql, &[Param::Text(user.as_str().to_owned())])
    }

    fn threepids(&self, user: &UserId) -> anyhow::Result<Vec<Threepid>> {
        let rows = self.q(
            "SELECT medium, address, validated_at, added_at FROM user_threepids \
             WHERE user_id = $1 ORDER BY added_at, medium, address",
            user,
        )?;
        rows.iter()
            .map(|r| {
                Ok(Threepid {
                    medium: r.text(0)?,
                    address: r.text(1)?,
                    validated_at: r.opt_int(2)?,
                    added_at: r.opt_int(3)?,
                })
            })
            .collect()
    }

    fn profile(&self, user: &UserId) -> anyhow::Result<Profile> {
        let rows = self.q(
            "SELECT displayname, avatar_url FROM profiles WHERE full_user_id = $1",
            user,
        )?;
        match rows.first() {
            None => Ok(Profile::default()),
            Some(r) => Ok(Profile {
                displayname: r.opt_text(0)?,
                avatar_url: r.opt_text(1)?,
            }),
        }
    }

    fn rooms(&self, user: &UserId) -> anyhow::Result<Vec<String>> {
        let rows = self.q(
            "SELECT room_id FROM local_current_membership \
             WHERE user_id = $1 AND membership = 'join' ORDER BY room_id",
            user,
        )?;
        rows.iter().map(|r| r.text(0)).collect()
    }

    /// Global, then per-room account data. Content `{}` is how Synapse marks
    /// deleted account data (MSC3391): such rows are not given back.
    fn account_data(&self, user: &UserId) -> anyhow::Result<Vec<AccountData>> {
        let global = self.q(
            "SELECT account_data_type, content FROM account_data \
             WHERE user_id = $1 AND content <> '{}' ORDER BY account_data_type",
            user,
        )?;
        let rooms = self.q(
            "SELECT room_id, account_data_type, content FROM room_account_data \
             WHERE user_id = $1 AND content <> '{}' ORDER BY room_id, account_data_type",
            user,
        )?;
        let mut out = Vec::with_capacity(global.len() + rooms.len());
        for r in &global {
            let kind = r.text(0)?;
            let content = r.json(1).with_context(|| format!("account data {kind}"))?;
            out.push(AccountData {
                room_id: None,
                kind,
                content,
            });
        }
        for r in &rooms {
            let (room, kind) = (r.text(0)?, r.text(1)?);
            let content = r
                .json(2)
                .with_context(|| format!("account data {kind} of room {room}"))?;
            out.push(AccountData {
                room_id: Some(room),
                kind,
                content,
            });
        }
        Ok(out)
    }

    fn push_rules(&self, user: &UserId) -> anyhow::Result<PushRules> {
        let rules = self.q(
            "SELECT rule_id, priority_class, conditions, actions FROM push_rules \
             WHERE user_name = $1 ORDER BY priority_class DESC, priority DESC, rule_id",
            user,
        )?;
        let enabled = self.q(
            "SELECT rule_id, enabled FROM push_rules_enable WHERE user_name = $1",
            user,
        )?;
        let mut rows = Vec::with_capacity(rules.len());
        for r in &rules {
            rows.push(RuleRow {
                rule_id: r.text(0)?,
                priority_class: r.int(1)?,
                conditions: r.text(2)?,
                actions: r.text(3)?,
            });
        }
        let mut flags = HashMap::with_capacity(enabled.len());
        for r in &enabled {
            flags.insert(r.text(0)?, r.flag(1)?);
        }
        normalise_push_rules(&rows, &flags)
    }

    fn backup(&self, user: &UserId) -> anyhow::Result<Option<Backup>> {
        // `version` is a BIGINT: ordered as a number, not as text.
        let rows = self.q(
            "SELECT version, algorithm, auth_data FROM e2e_room_keys_versions \
             WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
            user,
        )?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let version = r.int(0)?;
        let count = self.db.query(
            "SELECT count(*) FROM e2e_room_keys WHERE user_id = $1 AND version = $2",
            &[Param::Text(user.as_str().to_owned()), Param::Int(version)],
        )?;
        let sessions = count.first().map(|c| c.int(0)).transpose()?.unwrap_or(0);
        Ok(Some(Backup {
            version: version.to_string(),
            algorithm: r.text(1)?,
            auth_data: r.json(2).context("the backup's auth_data")?,
            sessions: u64::try_from(sessions).unwrap_or(0),
        }))
    }
}

impl Source for SynapseDb {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn server_name(&self) -> &str {
        &self.server_name
    }

    fn image(&self, user: &UserId) -> anyhow::Result<Option<BeforeImage>> {
        let known = self.read("account", user, || {
            self.q("SELECT name FROM users WHERE name = $1", user)
        })?;
        if known.is_empty() {
            return Ok(None);
        }
        Ok(Some(BeforeImage {
            threepids: self.read("e-mails and phone numbers", user, || self.threepids(user))?,
            profile: self.read("profile", user, || self.profile(user))?,
            rooms: self.read("rooms", user, || self.rooms(user))?,
            account_data: self.read("account data", user, || self.account_data(user))?,
            push_rules: self.read("push rules", user, || self.push_rules(user))?,
            backup: self.read("key backup", user, || self.backup(user))?,
        }))
    }

    fn sessions(
        &self,
        user: &UserId,
        version: &str,
        after: Option<&SessionCursor>,
        limit: usize,
    ) -> anyhow::Result<Vec<BackupSession>> {
        let Ok(version) = version.parse::<i64>() else {
            // Synapse's versions are numbers: another one names no backup here.
            return Ok(Vec::new());
        };
        let cols = "SELECT room_id, session_id, first_message_index, forwarded_count, \
                    is_verified, session_data FROM e2e_room_keys";
        let mut params = vec![
            Param::Text(user.as_str().to_owned()),
            Param::Int(version),
            Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let sql = match after {
            None => format!(
                "{cols} WHERE user_id = $1 AND version = $2 \
                 ORDER BY room_id, session_id LIMIT $3"
            ),
            Some(c) => {
                params.push(Param::Text(c.room_id.clone()));
                params.push(Param::Text(c.session_id.clone()));
                format!(
                    "{cols} WHERE user_id = $1 AND version = $2 \
                     AND (room_id, session_id) > ($4, $5) \
                     ORDER BY room_id, session_id LIMIT $3"
                )
            }
        };
        self.read("backup sessions", user, || {
            let rows = self.db.query(&sql, &params)?;
            rows.iter().map(session).collect()
        })
    }
}

fn session(r: &Row) -> anyhow::Result<BackupSession> {
    let (room_id, session_id) = (r.text(0)?, r.text(1)?);
    let session_data = r
        .json(5)
        .with_context(|| format!("session {session_id} of room {room_id}"))?;
    Ok(BackupSession {
        first_message_index: r.opt_int(2)?.unwrap_or(0),
        forwarded_count: r.opt_int(3)?.unwrap_or(0),
        is_verified: r.flag(4)?,
        room_id,
        session_id,
        session_data,
    })
}

/// One row of `push_rules`.
struct RuleRow {
    /// `global/<kind>/<rule_id>`.
    rule_id: String,
    priority_class: i64,
    conditions: String,
    actions: String,
}

/// `PRIORITY_CLASS_MAP` of `synapse/push/rulekinds.py`.
fn kind_of_class(class: i64) -> Option<&'static str> {
    Some(match class {
        1 => "underride",
        2 => "sender",
        3 => "room",
        4 => "content",
        5 => "override",
        6 => "postcontent",
        _ => return None,
    })
}

/// `global/<kind>/<id>` → (kind, id).
fn split_rule_id(full: &str) -> Option<(&str, &str)> {
    let rest = full.strip_prefix("global/")?;
    let (kind, id) = rest.split_once('/')?;
    PUSH_RULE_KINDS.contains(&kind).then_some((kind, id))
}

/// Server-default rule IDs start with a dot (`.m.rule.master`); a user's
/// cannot (`synapse/rest/client/push_rule.py`).
fn is_default(id: &str) -> bool {
    id.starts_with('.')
}

/// Turns `push_rules` rows (already ordered by priority class and priority,
/// highest first) and the `push_rules_enable` flags into the client's view:
/// custom rules by kind in evaluation order, and the default rules whose
/// actions (rows of priority class -1) or enabled flag the user changed.
fn normalise_push_rules(
    rows: &[RuleRow],
    flags: &HashMap<String, bool>,
) -> anyhow::Result<PushRules> {
    let mut custom: Vec<CustomRule> = Vec::new();
    let mut defaults: Vec<DefaultRule> = Vec::new();
    for row in rows {
        let Some((path_kind, id)) = split_rule_id(&row.rule_id) else {
            continue;
        };
        if row.priority_class == -1 || is_default(id) {
            let actions = raw(row.actions.clone())
                .with_context(|| format!("the actions of push rule {}", row.rule_id))?;
            defaults.push(DefaultRule {
                kind: path_kind.to_owned(),
                rule_id: id.to_owned(),
                enabled: None,
                actions: Some(actions),
            });
            continue;
        }
        // Synapse files a rule under the kind of its priority class.
        let Some(kind) = kind_of_class(row.priority_class) else {
            continue;
        };
        if let Some(rule) = custom_rule(row, kind, id)? {
            custom.push(CustomRule {
                enabled: flags.get(&row.rule_id).copied().unwrap_or(true),
                ..rule
            });
        }
    }
    for (full, &enabled) in flags {
        let Some((kind, id)) = split_rule_id(full) else {
            continue;
        };
        if !is_default(id) {
            continue;
        }
        match defaults
            .iter_mut()
            .find(|d| d.kind == kind && d.rule_id == id)
        {
            Some(d) => d.enabled = Some(enabled),
            None => defaults.push(DefaultRule {
                kind: kind.to_owned(),
                rule_id: id.to_owned(),
                enabled: Some(enabled),
                actions: None,
            }),
        }
    }
    let rank = |kind: &str| PUSH_RULE_KINDS.iter().position(|k| *k == kind);
    // Stable: within a kind, the priority order of the query stays.
    custom.sort_by_key(|r| rank(&r.kind));
    defaults.sort_by(|a, b| (rank(&a.kind), &a.rule_id).cmp(&(rank(&b.kind), &b.rule_id)));
    Ok(PushRules { custom, defaults })
}

/// A custom rule as the client sees it (`synapse/push/clientformat.py`):
/// `override`, `underride` and `postcontent` carry their conditions;
/// `room` and `sender` rules none (their ID says it all); a `content` rule
/// its pattern, which Synapse stores as the one condition's `pattern`.
/// `None` for a content rule Synapse would not show either.
fn custom_rule(row: &RuleRow, kind: &str, id: &str) -> anyhow::Result<Option<CustomRule>> {
    let actions = raw(row.actions.clone())
        .with_context(|| format!("the actions of push rule {}", row.rule_id))?;
    let mut rule = CustomRule {
        kind: kind.to_owned(),
        rule_id: id.to_owned(),
        pattern: None,
        conditions: None,
        actions,
        enabled: true,
    };
    match kind {
        "override" | "underride" | "postcontent" => {
            rule.conditions = Some(
                raw(row.conditions.clone())
                    .with_context(|| format!("the conditions of push rule {}", row.rule_id))?,
            );
        }
        "content" => {
            let conditions: Vec<serde_json::Value> = serde_json::from_str(&row.conditions)
                .with_context(|| format!("the conditions of push rule {}", row.rule_id))?;
            let pattern = match conditions.as_slice() {
                [only] => only.get("pattern").and_then(|p| p.as_str()),
                _ => None,
            };
            let Some(pattern) = pattern else {
                return Ok(None);
            };
            rule.pattern = Some(pattern.to_owned());
        }
        _ => {}
    }
    Ok(Some(rule))
}

fn schema_version(db: &Db) -> anyhow::Result<i64> {
    let rows = db.query("SELECT version FROM schema_version", &[])?;
    match rows.first() {
        Some(r) => r.int(0),
        None => bail!("its schema_version table is empty"),
    }
}
