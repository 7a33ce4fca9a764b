//! The checks before any user is touched: the server answers, who owns its
//! logins (Synapse itself, or Matrix Authentication Service), the tokens are
//! valid and an admin's, and the server can do what the flags ask.
//!
//! Each failure ends the run with a message that names the URL, the user or
//! the flag at fault. Nothing here changes anything on the server.

use std::sync::Arc;

use anyhow::{bail, Context};

use crate::backend::mas::{MasClient, MasCredentials};
use crate::backend::synapse::{ServerVersion, SynapseClient};
use crate::config::{
    check_base_url, Server, MAS_CLIENT_ID_ENV, MAS_CLIENT_SECRET_ENV, MAS_TOKEN_ENV,
};
use crate::http::ApiError;
use crate::http::Http;
use crate::retry::{AuthFailure, CallError, Policy, Retrier};
use crate::user_id::UserId;

/// The first Synapse version that reactivates without a password.
const NO_PASSWORD_SINCE: (u32, u32) = (1, 99);

/// Who owns the server's logins.
pub enum Mode {
    /// Synapse itself: accounts change through its admin API alone.
    Synapse,
    /// Matrix Authentication Service: accounts change through MAS's admin API.
    Mas(Arc<MasClient>),
}

/// What the preflight learned.
pub struct Preflight {
    pub version: ServerVersion,
    /// The admin the token belongs to, named in hints.
    pub admin: String,
    pub server_name: String,
    pub mode: Mode,
}

impl Preflight {
    /// The preflight line: what the run talks to.
    pub fn describe(&self, homeserver: &str) -> String {
        let logins = match &self.mode {
            Mode::Synapse => String::new(),
            Mode::Mas(mas) => format!(" · logins by MAS at {}", mas.base()),
        };
        format!(
            "Synapse {} at {homeserver}{logins} · admin {} · server name {}",
            self.version.text, self.admin, self.server_name
        )
    }
}

/// What a command needs of the server, beyond an admin's token.
pub struct Needs<'a> {
    /// The server settings: the retry policy (the preflight tries at most 3
    /// times), and what it takes to reach MAS on a server that delegates.
    pub server: &'a Server,
    /// Connections to keep to MAS (the command's concurrency).
    pub pool: usize,
    /// `--server-name`, when given.
    pub server_name: Option<&'a str>,
    /// Who needs to list the rooms a user left (a flag or a command), and what
    /// the admin can do instead on a server that cannot.
    pub memberships: Option<(&'a str, &'a str)>,
    /// `--no-password`: reactivating without a password (Synapse 1.99+).
    pub no_password: bool,
    /// What the command needs MAS's admin API for, said when its
    /// credentials are missing ("reactivating").
    pub purpose: &'a str,
}

/// Sends preflight requests with a small retry budget of their own; a 401 or
/// 403 is explained here rather than stopping a run that has not started.
struct Checker<'a> {
    client: &'a SynapseClient,
    retrier: Retrier,
    url: &'a str,
}

impl Checker<'_> {
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retrier
            .call(AuthFailure::FailsRow, request)
            .await
            .map_err(|e| match e {
                CallError::Row(e) => e,
                CallError::Stopped => ApiError::Transport(
                    self.retrier
                        .stop_signal()
                        .fatal()
                        .unwrap_or_else(|| "stopped".into()),
                ),
            })
    }
}

/// Five requests on a server that owns its logins (one more when rooms are
/// needed; on a MAS server one fewer, then MAS's configuration, a token and
/// one admin read) before any user is touched.
pub async fn check(client: &SynapseClient, needs: &Needs<'_>) -> anyhow::Result<Preflight> {
    let checker = Checker {
        client,
        retrier: Retrier::new(
            Policy {
                attempts: needs.server.retry.attempts.min(3),
                // A server unreachable before the run starts is a wrong URL or
                // a server down: say so now, do not wait --max-outage for it.
                max_outage: None,
                ..needs.server.retry.clone()
            },
            Default::default(),
        ),
        url: client.base(),
    };
    let version = server_version(&checker).await?;
    let me = token_owner(&checker).await?;
    admin_check(&checker, &me).await?;
    let mas = mas_wanted(&checker, needs).await?;
    let mode = match mas {
        None => Mode::Synapse,
        Some((url, credentials)) => {
            Mode::Mas(Arc::new(connect_mas(needs, &url, credentials).await?))
        }
    };
    if let Some((who, instead)) = needs.memberships {
        memberships_check(&checker, &me, &version, who, instead).await?;
    }
    if matches!(mode, Mode::Synapse)
        && needs.no_password
        && version.is_older_than(NO_PASSWORD_SINCE.0, NO_PASSWORD_SINCE.1)
    {
        bail!(
            "--no-password: Synapse {} requires a password to reactivate a user (1.99 and later \
             do not); drop --no-password to set generated passwords",
            version.text
        );
    }
    Ok(Preflight {
        version,
        server_name: needs
            .server_name
            .unwrap_or_else(|| me.server_name())
            .to_owned(),
        admin: me.as_str().to_owned(),
        mode,
    })
}

/// Whether the server delegates its logins to MAS: its URL and the
/// credentials for it, or `None` for a server that owns its logins.
async fn mas_wanted(
    c: &Checker<'_>,
    needs: &Needs<'_>,
) -> anyhow::Result<Option<(String, MasCredentials)>> {
    let settings = needs.server;
    let url = c.url;
    let issuer = c.call(|| c.client.auth_issuer()).await.map_err(|e| {
        anyhow::anyhow!("cannot ask {url} who owns its logins (auth_metadata): {e}")
    })?;
    let Some(issuer) = issuer else {
        if let Some(mas) = &settings.mas.url {
            bail!(
                "--mas-url {mas}: {url} does not delegate its logins to Matrix Authentication \
                 Service (it has no auth_metadata); drop --mas-url"
            );
        }
        return Ok(None);
    };
    let mas_url = match &settings.mas.url {
        Some(u) => u.clone(),
        None => check_base_url(
            &format!("the MAS issuer {url} advertises"),
            &issuer,
            settings.allow_insecure_http,
        )
        .context("give MAS's URL with --mas-url")?,
    };
    let Some(credentials) = settings.mas.credentials.clone() else {
        bail!(
            "{url} delegates its logins to Matrix Authentication Service at {mas_url}: \
             {} needs MAS's admin API. Give an admin client with {MAS_CLIENT_ID_ENV} \
             and {MAS_CLIENT_SECRET_ENV}, or a token with {MAS_TOKEN_ENV} (or --mas-token-file)",
            needs.purpose
        );
    };
    Ok(Some((mas_url, credentials)))
}

/// Connects to MAS and proves its admin token with one read.
async fn connect_mas(
    needs: &Needs<'_>,
    url: &str,
    credentials: MasCredentials,
) -> anyhow::Result<MasClient> {
    let settings = needs.server;
    let http = Http::new(url, settings.timeout, settings.ca_cert.clone(), needs.pool)?
        .verbose(settings.verbose);
    let insecure = settings.allow_insecure_http;
    let check =
        |endpoint: &str| check_base_url("MAS's token endpoint", endpoint, insecure).map(|_| ());
    let mas = MasClient::connect(http, credentials, check).await?;
    mas.check_admin().await.map_err(|e| {
        let hint = match e.status() {
            Some(401 | 403) => format!(
                ": check {MAS_CLIENT_ID_ENV}/{MAS_CLIENT_SECRET_ENV} (the client must be listed in \
                 MAS's policy.data.admin_clients) or {MAS_TOKEN_ENV}; the token needs the \
                 urn:mas:admin scope"
            ),
            _ => String::new(),
        };
        anyhow::anyhow!("MAS at {url} refused its admin API ({e}){hint}")
    })?;
    Ok(mas)
}

async fn server_version(c: &Checker<'_>) -> anyhow::Result<ServerVersion> {
    let url = c.url;
    c.call(|| c.client.server_version())
        .await
        .map_err(|e| match e {
            ApiError::Http { status: 404, .. } => anyhow::anyhow!(
                "{url} answered 404 for /_synapse/admin/v1/server_version: is it a Synapse \
                 server, and does its reverse proxy forward /_synapse/admin?"
            ),
            e => anyhow::anyhow!("cannot reach the homeserver at {url}: {e}"),
        })
}

/// The user the token belongs to.
async fn token_owner(c: &Checker<'_>) -> anyhow::Result<UserId> {
    let url = c.url;
    let me = c
        .call(|| c.client.whoami())
        .await
        .map_err(|e| match e.status() {
            Some(401) => anyhow::anyhow!(
                "{url} rejected the access token ({e}): check MATRIX_ADMIN_TOKEN or \
                 --token-file (on a server whose logins belong to MAS: a compatibility token \
                 with admin rights, see the README)"
            ),
            _ => anyhow::anyhow!("cannot check the access token at {url}: {e}"),
        })?;
    UserId::parse(&me)
        .map_err(|e| anyhow::anyhow!("the server says the token belongs to {me:?}: {e}"))
}

/// Reading one's own user through the admin API proves admin rights on every
/// server: a MAS server does not serve the admin flag
/// (`/_synapse/admin/v1/users/…/admin` answers 404 there), and its v2 user
/// says `admin: false` even for an admin, whose rights come from the token.
async fn admin_check(c: &Checker<'_>, me: &UserId) -> anyhow::Result<()> {
    let url = c.url;
    let not_admin = || {
        anyhow::anyhow!(
            "the access token belongs to {me}, who is not a server admin on {url}; use an \
             admin's token (make one an admin with the admin API or `register_new_matrix_user --admin`)"
        )
    };
    match c.call(|| c.client.get_user(me)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!("the token belongs to {me}, whom {url} does not know as a user"),
        Err(e) if e.status() == Some(403) => Err(not_admin()),
        Err(e) => bail!("cannot check that {me} is an admin on {url}: {e}"),
    }
}

/// Only when rooms are needed (`who`: `--rejoin-rooms`, `find`): does the
/// server list a user's past rooms at all?
async fn memberships_check(
    c: &Checker<'_>,
    me: &UserId,
    version: &ServerVersion,
    who: &str,
    instead: &str,
) -> anyhow::Result<()> {
    let url = c.url;
    match c.call(|| c.client.memberships(me)).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) || e.status() == Some(400) => bail!(
            "{who}: Synapse {} at {url} cannot list the rooms a user left \
             (GET /_synapse/admin/v1/users/…/memberships answered {e}; it needs Synapse \
             1.145 or later). {instead}",
            version.text
        ),
        Err(e) => bail!("{who}: cannot list {me}'s rooms on {url}: {e}"),
    }
}
