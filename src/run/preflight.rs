//! The checks before any user is touched: the server answers, the token is
//! valid, its user is an admin, and the server can do what the flags ask.
//!
//! Each failure ends the run with a message that names the URL, the user or
//! the flag at fault. Nothing here changes anything on the server.

use anyhow::bail;

use crate::backend::synapse::{ServerVersion, SynapseClient};
use crate::config::{Passwords, Settings};
use crate::http::ApiError;
use crate::retry::{AuthFailure, CallError, Policy, Retrier};
use crate::user_id::UserId;

/// The first Synapse version that reactivates without a password.
const NO_PASSWORD_SINCE: (u32, u32) = (1, 99);

/// What the preflight learned.
pub struct Preflight {
    pub version: ServerVersion,
    /// The admin the token belongs to, named in hints.
    pub admin: String,
    pub server_name: String,
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

/// Three requests (four with `--rejoin-rooms`) before any user is touched.
pub async fn check(client: &SynapseClient, settings: &Settings) -> anyhow::Result<Preflight> {
    let checker = Checker {
        client,
        retrier: Retrier::new(
            Policy {
                attempts: settings.retry.attempts.min(3),
                ..settings.retry.clone()
            },
            Default::default(),
        ),
        url: client.base(),
    };
    let version = server_version(&checker).await?;
    let me = token_owner(&checker).await?;
    admin_check(&checker, &me).await?;
    if settings.rejoin_rooms_since.is_some() {
        memberships_check(&checker, &me, &version).await?;
    }
    if settings.passwords == Passwords::None
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
        server_name: settings
            .server_name
            .clone()
            .unwrap_or_else(|| me.server_name().to_owned()),
        admin: me.as_str().to_owned(),
    })
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
                "{url} rejected the access token ({e}): check MATRIX_ADMIN_TOKEN or --token-file"
            ),
            _ => anyhow::anyhow!("cannot check the access token at {url}: {e}"),
        })?;
    UserId::parse(&me)
        .map_err(|e| anyhow::anyhow!("the server says the token belongs to {me:?}: {e}"))
}

async fn admin_check(c: &Checker<'_>, me: &UserId) -> anyhow::Result<()> {
    let url = c.url;
    let not_admin = || {
        anyhow::anyhow!(
            "the access token belongs to {me}, who is not a server admin on {url}; use an \
             admin's token (make one an admin with the admin API or `register_new_matrix_user --admin`)"
        )
    };
    match c.call(|| c.client.is_admin(me)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(not_admin()),
        Err(e) if e.status() == Some(403) => Err(not_admin()),
        Err(e) => bail!("cannot check that {me} is an admin on {url}: {e}"),
    }
}

/// Only with `--rejoin-rooms`: does the server list a user's past rooms at all?
async fn memberships_check(
    c: &Checker<'_>,
    me: &UserId,
    version: &ServerVersion,
) -> anyhow::Result<()> {
    let url = c.url;
    match c.call(|| c.client.memberships(me)).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(404) || e.status() == Some(400) => bail!(
            "--rejoin-rooms: Synapse {} at {url} cannot list the rooms a user left \
             (GET /_synapse/admin/v1/users/…/memberships answered {e}; it needs Synapse \
             1.145 or later). Give each user's rooms in the input with --rooms-column instead",
            version.text
        ),
        Err(e) => bail!("--rejoin-rooms: cannot list {me}'s rooms on {url}: {e}"),
    }
}
