//! The PostgreSQL side of a Synapse database: the URL, the password, the
//! connection on a thread of its own, and errors that say what went wrong.
//!
//! `postgres::Client` drives a tokio runtime of its own: creating or dropping
//! one on a thread that runs a tokio runtime panics. So the client is made,
//! used and dropped on one plain thread, and the rest of the tool talks to it
//! over channels; dropping the [`PgWorker`] closes the channel, and the thread
//! then closes the connection and ends.
//!
//! Never a password in the URL, never TLS (yet), never a write: the session
//! is made read-only before the first query.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};
use secrecy::ExposeSecret;

use super::{Cell, Param, Row};
use crate::source::pgpass;

/// How long to wait for the server to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `postgresql://user@host[:port]/dbname` URL.
pub(super) struct Target {
    config: Config,
    /// `host:port` (or the socket folder), for messages.
    pub(super) where_: String,
    pub(super) dbname: String,
    user: String,
    /// The password file consulted, and whether it was skipped, for messages.
    password: pgpass::Found,
}

impl Target {
    pub(super) fn parse(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("{url}: not a valid URL"))?;
        if !matches!(parsed.scheme(), "postgresql" | "postgres") {
            bail!("{url}: a PostgreSQL URL starts with postgresql://");
        }
        if parsed.password().is_some() {
            bail!(
                "the PostgreSQL URL carries a password, which anyone on this machine can read \
                 in the process list: remove it and give it in PGPASSWORD or ~/.pgpass"
            );
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = match decode(parsed.username()) {
            u if !u.is_empty() => u,
            _ => match std::env::var("PGUSER").or_else(|_| std::env::var("USER")) {
                Ok(u) if !u.is_empty() => u,
                _ => bail!("{url}: name the database user, postgresql://USER@HOST/DBNAME"),
            },
        };
        let dbname = decode(parsed.path().trim_start_matches('/'));
        if dbname.is_empty() {
            bail!("{url}: name the database, postgresql://USER@HOST[:PORT]/DBNAME");
        }
        let mut host = decode(parsed.host_str().unwrap_or_default());
        let mut config = Config::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => check_sslmode(url, &v)?,
                "host" => host = v.into_owned(),
                "application_name" => {
                    config.application_name(&v);
                }
                other => bail!(
                    "{url}: the parameter {other:?} is not supported; \
                     give postgresql://USER@HOST[:PORT]/DBNAME[?sslmode=disable]"
                ),
            }
        }
        if host.is_empty() {
            bail!("{url}: name the database host, postgresql://USER@HOST[:PORT]/DBNAME");
        }
        let port = match parsed.port() {
            Some(p) => p,
            None => match std::env::var("PGPORT") {
                Ok(p) => p
                    .parse()
                    .with_context(|| format!("PGPORT={p:?} is not a port number"))?,
                Err(_) => 5432,
            },
        };
        // A host that is a folder is a Unix socket; libpq matches it as `localhost`.
        let socket = host.starts_with('/');
        if socket {
            config.host_path(&host);
        } else {
            config.host(&host);
        }
        let password = pgpass::find(&pgpass::Key {
            host: if socket { "localhost" } else { &host },
            port,
            database: &dbname,
            user: &user,
        });
        if let Some(p) = &password.password {
            config.password(p.expose_secret());
        }
        if config.get_application_name().is_none() {
            config.application_name("matrix-reactivate");
        }
        config
            .user(&user)
            .dbname(&dbname)
            .port(port)
            .connect_timeout(CONNECT_TIMEOUT)
            .ssl_mode(postgres::config::SslMode::Disable);
        Ok(Self {
            config,
            where_: format!("{host}:{port}"),
            dbname,
            user,
            password,
        })
    }

    /// Turns a connection error into one that says which of the three
    /// usual causes it is, and what to do.
    fn explain(&self, e: &postgres::Error) -> anyhow::Error {
        let at = &self.where_;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_CATALOG_NAME {
                return anyhow::anyhow!(
                    "the database {} does not exist on the PostgreSQL server at {at}: \
                     check the name in the URL (the database the backup was restored into)",
                    self.dbname
                );
            }
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return self.login_refused(db.message());
            }
            return anyhow::anyhow!(
                "the PostgreSQL server at {at} refused the connection: {}",
                db.message()
            );
        }
        // The cause is in the chain: "invalid configuration: password missing".
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text = format!("{text}: {c}");
            cause = c.source();
        }
        if text.contains("password missing") {
            return self.login_refused("it asks for a password");
        }
        anyhow::anyhow!("cannot reach the PostgreSQL server at {at}: {text}")
    }

    fn login_refused(&self, why: &str) -> anyhow::Error {
        let tried = match (&self.password.from, &self.password.file) {
            (Some(from), _) => format!("the password from {from} was refused"),
            (None, Some(f)) if self.password.file_too_open => format!(
                "no password was given: PGPASSWORD is not set, and {} was not used because \
                 others can read it (chmod 600 it)",
                f.display()
            ),
            (None, Some(f)) if !self.password.file_found => format!(
                "no password was given: neither PGPASSWORD nor {} is there",
                f.display()
            ),
            (None, Some(f)) => format!(
                "no password was given: PGPASSWORD is not set and {} has no line for \
                 {}:{}:{}",
                f.display(),
                self.where_,
                self.dbname,
                self.user
            ),
            (None, None) => "no password was given: PGPASSWORD is not set".to_owned(),
        };
        anyhow::anyhow!(
            "the PostgreSQL server at {} refused the login of {} ({why}); {tried}. Give the \
             password in PGPASSWORD or in ~/.pgpass (host:port:database:user:password, mode 0600)",
            self.where_,
            self.user
        )
    }
}

/// libpq's `sslmode`: the ones that allow a plain connection are accepted.
fn check_sslmode(url: &str, mode: &str) -> anyhow::Result<()> {
    match mode {
        "disable" | "allow" | "prefer" => Ok(()),
        "require" | "verify-ca" | "verify-full" => bail!(
            "{url}: sslmode={mode} cannot be met: matrix-reactivate does not support TLS to the \
             database yet. Connect over a trusted network (loopback, a Unix socket, an SSH tunnel) \
             with sslmode=disable"
        ),
        other => bail!("{url}: unknown sslmode {other:?} (disable, allow, prefer)"),
    }
}

/// One query for the connection's thread, and where to send its rows.
struct Job {
    sql: String,
    params: Vec<Param>,
    reply: mpsc::SyncSender<anyhow::Result<Vec<Row>>>,
}

/// A PostgreSQL connection that lives on its own thread. Safe to create,
/// use and drop from any thread, in or out of a tokio runtime.
pub(super) struct PgWorker {
    jobs: mpsc::Sender<Job>,
}

impl PgWorker {
    /// Connects (on the new thread) and waits until the session is read-only.
    pub(super) fn connect(target: Target) -> anyhow::Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<anyhow::Result<()>>(1);
        std::thread::Builder::new()
            .name("postgres-source".into())
            .spawn(move || {
                let mut client = match open(&target) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                serve(&mut client, &inbox);
                // `client` is dropped here, on this thread, outside any runtime.
            })
            .context("cannot start the PostgreSQL connection's thread")?;
        ready
            .recv()
            .context("the PostgreSQL connection's thread ended")??;
        Ok(Self { jobs })
    }

    pub(super) fn query(&self, sql: &str, params: &[Param]) -> anyhow::Result<Vec<Row>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            sql: sql.to_owned(),
            params: params.to_vec(),
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the PostgreSQL connection is closed"))?;
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("the PostgreSQL connection is closed"))?
    }
}

fn open(target: &Target) -> anyhow::Result<Client> {
    let mut client = target
        .config
        .connect(NoTls)
        .map_err(|e| target.explain(&e))?;
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .with_context(|| format!("cannot make the session on {} read-only", target.where_))?;
    Ok(client)
}

fn serve(client: &mut Client, inbox: &mpsc::Receiver<Job>) {
    let mut prepared: HashMap<String, Statement> = HashMap::new();
    while let Ok(job) = inbox.recv() {
        let rows = run(client, &mut prepared, &job.sql, &job.params);
        let _ = job.reply.send(rows);
    }
}

fn run(
    client: &mut Client,
    prepared: &mut HashMap<String, Statement>,
    sql: &str,
    params: &[Param],
) -> anyhow::Result<Vec<Row>> {
    let st = match prepared.get(sql) {
        Some(st) => st.clone(),
        None => {
            let st = client.prepare(sql)?;
            prepared.insert(sql.to_owned(), st.clone());
            st
        }
    };
    let values: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn ToSql + Sync),
            Param::Int(n) => n as &(dyn ToSql + Sync),
        })
        .collect();
    let rows = client.query(&st, &values)?;
    rows.iter().map(row).collect()
}

fn row(r: &postgres::Row) -> anyhow::Result<Row> {
    let mut cells = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let cell = if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?.map(|v| Cell::Int(v.into()))
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into()))
        } else if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Cell::Bool)
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t) {
            r.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        } else {
            bail!("column {} has type {t}, which is not read", col.name());
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        format!("{:#}", Target::parse(url).err().expect(url))
    }

    #[test]
    fn urls_are_read_and_passwords_and_tls_refused() {
        let t = Target::parse("postgresql://synapse@db.example.org:5433/synapse_restored").unwrap();
        assert_eq!(t.where_, "db.example.org:5433");
        assert_eq!(t.dbname, "synapse_restored");
        assert_eq!(t.user, "synapse");
        assert_eq!(t.config.get_ports(), [5433]);
        let t = Target::parse("postgres://s@h/d?sslmode=prefer").unwrap();
        let default_port = std::env::var("PGPORT").map_or(5432, |p| p.parse().unwrap());
        assert_eq!(t.config.get_ports(), [default_port]);
        let t = Target::parse("postgresql://s@%2Fvar%2Frun%2Fpostgresql/d").unwrap();
        assert_eq!(t.where_, format!("/var/run/postgresql:{default_port}"));

        let e = err("postgresql://s:hunter2@h/d");
        assert!(e.contains("PGPASSWORD") && !e.contains("hunter2"), "{e}");
        let e = err("postgresql://s@h/d?sslmode=verify-full");
        assert!(
            e.contains("sslmode=verify-full") && e.contains("TLS"),
            "{e}"
        );
        assert!(err("postgresql://s@h/").contains("name the database"));
        assert!(err("postgresql://s@h/d?foo=1").contains("\"foo\""));
    }

    #[test]
    fn an_unreachable_server_is_named() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Target::parse(&format!("postgresql://s@127.0.0.1:{port}/d")).unwrap();
        let e = format!("{:#}", PgWorker::connect(t).err().unwrap());
        assert!(
            e.contains(&format!(
                "cannot reach the PostgreSQL server at 127.0.0.1:{port}"
            )),
            "{e}"
        );
    }
}
