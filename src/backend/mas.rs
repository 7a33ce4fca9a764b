//! Accounts on a server whose logins belong to Matrix Authentication Service
//! (MAS): the state lives on both sides, and every change goes through MAS's
//! admin API, which keeps Synapse in step.
//!
//! - A user is deactivated when Synapse says so *or* MAS has `deactivated_at`:
//!   the two diverge in real life (a deactivation through Synapse's own API
//!   never reaches MAS). MAS's `reactivate` mends either side: it calls
//!   Synapse first, then clears its own flag.
//! - The password is set before the reactivation, so a refused password
//!   (password login disabled) changes nothing, and an account never comes
//!   back without the password the results file gives for it.
//! - A user MAS does not know is never created, on either side.
//! - MAS's admin tokens live minutes (300 s by default) and have no refresh
//!   token: a client-credentials token is asked for again well before it
//!   expires, and once more on a 401 that says it expired.
//!
//! E-mail addresses go to MAS (Synapse's copy would be overwritten by MAS);
//! rooms and profile stay with Synapse and are not this module's business.
//!
//! `find` reads MAS's list of deactivated users (`deactivated_users`): MAS
//! records when it deactivated each one, to the microsecond, where Synapse
//! records nothing.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::act_as::{Ending, UserSession};
use super::synapse::SynapseClient;
use super::{Account, Accounts, Lookup};
use crate::http::{bearer, field, ApiError, Auth, Http};
use crate::retry::{AuthFailure, CallError, Retrier};
use crate::source::Threepid;
use crate::user_id::UserId;

/// How the tool gets its MAS admin token.
#[derive(Clone)]
pub enum MasCredentials {
    /// A fixed token (`MAS_ADMIN_TOKEN`, `--mas-token-file`), e.g. a personal
    /// access token; used as it is until MAS refuses it.
    Fixed(SecretString),
    /// An OAuth client listed in MAS's `policy.data.admin_clients`
    /// (`MAS_CLIENT_ID`, `MAS_CLIENT_SECRET`).
    Client { id: String, secret: SecretString },
}

/// A token in use and when to ask for the next one.
struct Current {
    header: HeaderValue,
    renew_at: Instant,
}

enum Tokens {
    Fixed(HeaderValue),
    Client {
        endpoint: String,
        id: String,
        secret: SecretString,
        current: Mutex<Option<Current>>,
    },
}

/// MAS's admin API. Each method is one request (plus, for a client token, the
/// token request it may need); the retry policy is the caller's.
pub struct MasClient {
    http: Http,
    tokens: Tokens,
}

/// A MAS user, as far as the tool needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasUser {
    pub id: String,
    pub deactivated: bool,
    pub locked: bool,
}

#[derive(Deserialize)]
struct UserDocument {
    data: UserResource,
}

#[derive(Deserialize)]
struct UserResource {
    id: String,
    attributes: UserAttributes,
}

#[derive(Deserialize)]
struct UserAttributes {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    locked_at: Option<String>,
    #[serde(default)]
    deactivated_at: Option<String>,
}

impl From<UserDocument> for MasUser {
    fn from(d: UserDocument) -> Self {
        MasUser {
            id: d.data.id,
            deactivated: d.data.attributes.deactivated_at.is_some(),
            locked: d.data.attributes.locked_at.is_some(),
        }
    }
}

/// A user MAS holds deactivated, as its list gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasDeactivated {
    /// The localpart.
    pub username: String,
    /// When MAS deactivated the user, in Unix milliseconds.
    pub deactivated_at: i64,
    pub locked: bool,
}

/// One page of MAS's deactivated users, in MAS's order (by ULID, that is by
/// creation), not by name.
#[derive(Clone, Debug)]
pub struct MasUserPage {
    pub users: Vec<MasDeactivated>,
    /// Where the next page starts (the last user's ULID); `None` on the last
    /// page, which MAS marks by leaving out `links.next`.
    pub next: Option<String>,
    /// How many users match, when the page was asked to count them.
    pub count: Option<u64>,
}

#[derive(Deserialize)]
struct UserList {
    data: Vec<UserResource>,
    #[serde(default)]
    links: ListLinks,
    #[serde(default)]
    meta: Option<ListMeta>,
}

#[derive(Default, Deserialize)]
struct ListLinks {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(default)]
    count: Option<u64>,
}

impl UserList {
    fn into_page(self, status: u16) -> Result<MasUserPage, ApiError> {
        let bad = |message: String| ApiError::BadBody { status, message };
        let next = match (self.links.next, self.data.last()) {
            (None, _) => None,
            (Some(_), Some(last)) => Some(last.id.clone()),
            (Some(_), None) => {
                return Err(bad("MAS's list page is empty but names a next page".into()))
            }
        };
        let users = self
            .data
            .into_iter()
            .map(|u| {
                let a = u.attributes;
                let username = a
                    .username
                    .ok_or_else(|| bad(format!("MAS listed user {} without a username", u.id)))?;
                let at = a.deactivated_at.ok_or_else(|| {
                    bad(format!(
                        "MAS listed {username} as deactivated without a deactivated_at"
                    ))
                })?;
                let deactivated_at = unix_ms(&at).ok_or_else(|| {
                    bad(format!(
                        "MAS's deactivated_at of {username} is not an RFC 3339 time: {at:?}"
                    ))
                })?;
                Ok(MasDeactivated {
                    username,
                    deactivated_at,
                    locked: a.locked_at.is_some(),
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(MasUserPage {
            users,
            next,
            count: self.meta.and_then(|m| m.count),
        })
    }
}

/// An RFC 3339 time in Unix milliseconds (MAS writes microseconds: the
/// rest is dropped).
fn unix_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// The first path segment of the admin API.
const ADMIN: &str = "/api/admin/v1";

impl MasClient {
    /// Reads MAS's OpenID configuration (for the token endpoint) when the
    /// credentials are a client's. `base` is MAS's public base URL.
    pub async fn connect(
        http: Http,
        credentials: MasCredentials,
        check_url: impl Fn(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let tokens = match credentials {
            MasCredentials::Fixed(token) => Tokens::Fixed(bearer(&token)?),
            MasCredentials::Client { id, secret } => {
                let endpoint = token_endpoint(&http).await?;
                check_url(&endpoint)?;
                Tokens::Client {
                    endpoint,
                    id,
                    secret,
                    current: Mutex::new(None),
                }
            }
        };
        Ok(MasClient { http, tokens })
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    /// The token to send: the fixed one, or a client token still well inside
    /// its lifetime (asking for a new one when it is not).
    async fn token(&self, renew: bool) -> Result<HeaderValue, ApiError> {
        let (endpoint, id, secret, current) = match &self.tokens {
            Tokens::Fixed(h) => return Ok(h.clone()),
            Tokens::Client {
                endpoint,
                id,
                secret,
                current,
            } => (endpoint, id, secret, current),
        };
        // One request for a new token at a time; the others wait and share it.
        let mut current = current.lock().await;
        if let Some(c) = current.as_ref() {
            if !renew && Instant::now() < c.renew_at {
                return Ok(c.header.clone());
            }
        }
        let fresh = self.grant(endpoint, id, secret).await?;
        let header = fresh.header.clone();
        *current = Some(fresh);
        Ok(header)
    }

    /// The client-credentials grant, scope `urn:mas:admin`.
    async fn grant(
        &self,
        endpoint: &str,
        id: &str,
        secret: &SecretString,
    ) -> Result<Current, ApiError> {
        #[derive(Deserialize)]
        struct Grant {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let req = self
            .http
            .request(Method::POST, endpoint)
            .basic_auth(id, Some(secret.expose_secret()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "urn:mas:admin"),
            ]);
        let asked = Instant::now();
        let (status, v) = self
            .http
            .send_prepared(req)
            .await
            .map_err(|e| mas_error(e, "token"))?;
        let grant: Grant = field(status, v)?;
        let header =
            bearer(&SecretString::from(grant.access_token)).map_err(|e| ApiError::BadBody {
                status,
                message: format!("the token MAS issued is unusable: {e}"),
            })?;
        Ok(Current {
            header,
            renew_at: asked + renew_after(Duration::from_secs(grant.expires_in.unwrap_or(300))),
        })
    }

    /// One admin API request; a client token that MAS says expired is renewed
    /// and the request sent once more.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        let path = format!("{ADMIN}{path}");
        let mut renew = false;
        loop {
            let token = self.token(renew).await?;
            let sent = self
                .http
                .send(method.clone(), &path, body, Auth::Bearer(&token))
                .await;
            match sent {
                Err(e) if !renew && expired(&e) && matches!(self.tokens, Tokens::Client { .. }) => {
                    renew = true;
                }
                other => return other.map_err(|e| mas_error(e, "admin API")),
            }
        }
    }

    /// `GET /users/by-username/{localpart}`; a 404 is an answer.
    pub async fn user_by_name(&self, localpart: &str) -> Result<Option<MasUser>, ApiError> {
        let path = format!("/users/by-username/{}", encode(localpart));
        match self.send(Method::GET, &path, None).await {
            Ok((status, v)) => field::<UserDocument>(status, v).map(|d| Some(d.into())),
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A cheap request that needs the `urn:mas:admin` scope: proves the token.
    pub async fn check_admin(&self) -> Result<(), ApiError> {
        let path = "/users?page[first]=1&count=false";
        self.send(Method::GET, path, None).await.map(|_| ())
    }

    /// One page of the users MAS holds deactivated: `GET /users?filter[status]
    /// =deactivated&page[first]=N&page[after]=<ULID>`, `after` the `next` of
    /// the page before (none for the first). `count` asks MAS to count the
    /// matches too (a query of its own in MAS's database: the first page only).
    pub async fn deactivated_users(
        &self,
        after: Option<&str>,
        first: u32,
        count: bool,
    ) -> Result<MasUserPage, ApiError> {
        let mut path = format!("/users?filter[status]=deactivated&page[first]={first}");
        if let Some(cursor) = after {
            path.push_str("&page[after]=");
            path.push_str(&encode(cursor));
        }
        if !count {
            path.push_str("&count=false");
        }
        let (status, v) = self.send(Method::GET, &path, None).await?;
        field::<UserList>(status, v)?.into_page(status)
    }

    /// `POST /users/{id}/{action}` for reactivate, unlock; returns the user.
    async fn user_action(&self, id: &str, action: &str) -> Result<MasUser, ApiError> {
        let path = format!("/users/{}/{action}", encode(id));
        let (status, v) = self.send(Method::POST, &path, None).await?;
        field::<UserDocument>(status, v).map(Into::into)
    }

    pub async fn reactivate(&self, id: &str) -> Result<MasUser, ApiError> {
        self.user_action(id, "reactivate").await
    }

    pub async fn unlock(&self, id: &str) -> Result<MasUser, ApiError> {
        self.user_action(id, "unlock").await
    }

    /// `POST /users/{id}/set-password`. The tool's passwords are strong by
    /// construction or chosen by the admin, so MAS's strength check is skipped.
    pub async fn set_password(&self, id: &str, password: &str) -> Result<(), ApiError> {
        let path = format!("/users/{}/set-password", encode(id));
        let mut body = serde_json::json!({ "password": password, "skip_password_check": true });
        let result = self.send(Method::POST, &path, Some(&body)).await;
        crate::password::wipe_field(&mut body, "password");
        result.map(|_| ())
    }

    /// The user's e-mail addresses (`GET /user-emails?filter[user]=…`).
    pub async fn emails(&self, id: &str) -> Result<Vec<String>, ApiError> {
        #[derive(Deserialize)]
        struct List {
            data: Vec<Email>,
        }
        #[derive(Deserialize)]
        struct Email {
            attributes: EmailAttributes,
        }
        #[derive(Deserialize)]
        struct EmailAttributes {
            email: String,
        }
        let path = format!("/user-emails?filter[user]={}&page[first]=100", encode(id));
        let (status, v) = self.send(Method::GET, &path, None).await?;
        let list: List = field(status, v)?;
        Ok(list.data.into_iter().map(|e| e.attributes.email).collect())
    }

    /// `POST /user-emails`.
    pub async fn add_email(&self, id: &str, email: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({ "user_id": id, "email": email });
        self.send(Method::POST, "/user-emails", Some(&body))
            .await
            .map(|_| ())
    }
}

/// A personal session MAS opened: its ID (to revoke it) and its token.
pub struct PersonalSession {
    pub id: String,
    pub token: SecretString,
}

impl MasClient {
    /// `POST /personal-sessions`: a session acting as the user `actor` (MAS's
    /// ULID) with `scope`, whose token expires after `expires_in`. MAS
    /// answers 410 for a deactivated user (reactivate first), 404 for an
    /// unknown one, 400 for a scope it cannot parse.
    pub async fn create_personal_session(
        &self,
        actor: &str,
        human_name: &str,
        scope: &str,
        expires_in: Duration,
    ) -> Result<PersonalSession, ApiError> {
        #[derive(Deserialize)]
        struct Created {
            data: Resource,
        }
        #[derive(Deserialize)]
        struct Resource {
            id: String,
            attributes: Attributes,
        }
        #[derive(Deserialize)]
        struct Attributes {
            access_token: Option<String>,
        }
        let body = serde_json::json!({
            "actor_user_id": actor,
            "human_name": human_name,
            "scope": scope,
            // At least a second: MAS takes whole seconds, and 0 would be a
            // token already expired.
            "expires_in": expires_in.as_secs().clamp(1, u64::from(u32::MAX)),
        });
        let (status, v) = self
            .send(Method::POST, "/personal-sessions", Some(&body))
            .await?;
        let created: Created = field(status, v)?;
        let token = created
            .data
            .attributes
            .access_token
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: "MAS opened a personal session but sent no access_token".into(),
            })?;
        Ok(PersonalSession {
            id: created.data.id,
            token: SecretString::from(token),
        })
    }

    /// `POST /personal-sessions/{id}/revoke`. A session revoked already
    /// (409) is what was asked for.
    pub async fn revoke_personal_session(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/personal-sessions/{}/revoke", encode(id));
        match self.send(Method::POST, &path, None).await {
            Ok(_) | Err(ApiError::Http { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What a personal session to act as a user is called in MAS's lists.
pub const SESSION_NAME: &str = "matrix-reactivate restore";
/// The scope of that session: the client-server API, nothing more.
pub const SESSION_SCOPE: &str = "urn:matrix:client:api:*";

/// `token_endpoint` from `<MAS base>/.well-known/openid-configuration`.
async fn token_endpoint(http: &Http) -> anyhow::Result<String> {
    let path = "/.well-known/openid-configuration";
    let (status, v) = http
        .send(Method::GET, path, None, Auth::None)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read MAS's OpenID configuration at {}{path}: {e}",
                http.base()
            )
        })?;
    v.get("token_endpoint")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "MAS's OpenID configuration at {}{path} (HTTP {status}) has no token_endpoint",
                http.base()
            )
        })
}

/// When to ask for the next token: a minute before it expires, or half way
/// through a short lifetime.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime
        .saturating_sub(Duration::from_secs(60))
        .max(lifetime / 2)
}

fn expired(e: &ApiError) -> bool {
    matches!(e, ApiError::Http { status: 401, message, .. } if message.contains("expired"))
}

/// Says which API answered, so "HTTP 401" is never mistaken for Synapse's.
fn mas_error(e: ApiError, what: &str) -> ApiError {
    match e {
        ApiError::Http {
            status,
            errcode,
            message,
            retry_after,
        } => ApiError::Http {
            status,
            errcode,
            message: format!("MAS {what}: {message}"),
            retry_after,
        },
        e => e,
    }
}

fn encode(s: &str) -> String {
    super::synapse::encode_segment(s)
}

/// Accounts through MAS, with Synapse's view of each user beside it.
pub struct MasAccounts {
    synapse: SynapseClient,
    mas: Arc<MasClient>,
    retrier: Arc<Retrier>,
}

impl MasAccounts {
    pub fn new(synapse: SynapseClient, mas: Arc<MasClient>, retrier: Arc<Retrier>) -> Self {
        MasAccounts {
            synapse,
            mas,
            retrier,
        }
    }

    async fn call<T, F, Fut>(&self, auth: AuthFailure, request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retrier.call(auth, request).await
    }

    fn handle<'a>(&self, user: &UserId, account: &'a Account) -> Result<&'a str, CallError> {
        account.handle.as_deref().ok_or_else(|| {
            CallError::Row(ApiError::BadBody {
                status: 0,
                message: format!("{user} has no MAS user ID: it was not looked up in MAS"),
            })
        })
    }
}

impl Accounts for MasAccounts {
    async fn look_up(&self, user: &UserId) -> Result<Lookup, CallError> {
        let synapse = self
            .call(AuthFailure::StopsRun, || self.synapse.get_user(user))
            .await?;
        let Some(synapse) = synapse else {
            return Ok(Lookup::NotFound);
        };
        let mas = self
            .call(AuthFailure::StopsRun, || {
                self.mas.user_by_name(user.localpart())
            })
            .await?;
        let Some(mas) = mas else {
            return Ok(Lookup::NotFound);
        };
        Ok(Lookup::Found(Account {
            deactivated: synapse.deactivated || mas.deactivated,
            erased: synapse.erased,
            locked: synapse.locked || mas.locked,
            handle: Some(mas.id),
        }))
    }

    async fn reactivate(
        &self,
        user: &UserId,
        account: &Account,
        password: Option<&str>,
        unlock: bool,
    ) -> Result<(), CallError> {
        let id = self.handle(user, account)?;
        if let Some(p) = password {
            // A 403 here ("Password auth is disabled") is about this request:
            // the caller decides, and nothing has changed yet.
            self.call(AuthFailure::ForbiddenFailsRow, || {
                self.mas.set_password(id, p)
            })
            .await?;
        }
        let after_password = |e: CallError| match e {
            // The password is set: the outcome is no longer "nothing applied".
            CallError::Row(e) if password.is_some() => CallError::Row(ApiError::BadBody {
                status: e.status().unwrap_or(0),
                message: format!("the password was set, then reactivating failed: {e}"),
            }),
            e => e,
        };
        let back = self
            .call(AuthFailure::StopsRun, || self.mas.reactivate(id))
            .await
            .map_err(after_password)?;
        if back.deactivated {
            return Err(CallError::Row(ApiError::BadBody {
                status: 200,
                message: "MAS answered the reactivation, but still shows the user deactivated"
                    .into(),
            }));
        }
        if unlock {
            self.call(AuthFailure::StopsRun, || self.mas.unlock(id))
                .await
                .map_err(after_password)?;
        }
        Ok(())
    }

    async fn unlock(&self, user: &UserId, account: &Account) -> Result<(), CallError> {
        let id = self.handle(user, account)?;
        self.call(AuthFailure::StopsRun, || self.mas.unlock(id))
            .await
            .map(|_| ())
    }

    /// The e-mail addresses MAS holds (Synapse's copy follows MAS's).
    async fn threepids(
        &self,
        user: &UserId,
        account: &Account,
    ) -> Result<Vec<Threepid>, CallError> {
        let id = self.handle(user, account)?;
        let emails = self
            .call(AuthFailure::StopsRun, || self.mas.emails(id))
            .await?;
        Ok(emails
            .into_iter()
            .map(|address| Threepid {
                medium: "email".into(),
                address,
                validated_at: None,
                added_at: None,
            })
            .collect())
    }

    /// Adds the e-mail addresses MAS lacks. MAS holds no phone numbers: when
    /// some were asked for, the e-mails are added first and the error says
    /// which numbers were not.
    async fn add_threepids(
        &self,
        user: &UserId,
        account: &Account,
        threepids: &[Threepid],
    ) -> Result<(), CallError> {
        let id = self.handle(user, account)?;
        let have = self
            .call(AuthFailure::StopsRun, || self.mas.emails(id))
            .await?;
        let mut added: Vec<&str> = Vec::new();
        for t in threepids.iter().filter(|t| t.medium == "email") {
            let known = |h: &str| h.eq_ignore_ascii_case(&t.address);
            if have.iter().any(|h| known(h)) || added.iter().any(|h| known(h)) {
                continue;
            }
            self.call(AuthFailure::StopsRun, || self.mas.add_email(id, &t.address))
                .await?;
            added.push(&t.address);
        }
        let others: Vec<&str> = threepids
            .iter()
            .filter(|t| t.medium != "email")
            .map(|t| t.address.as_str())
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        Err(CallError::Row(ApiError::Unsupported(format!(
            "MAS holds no phone numbers: {} not given back",
            others.join(", ")
        ))))
    }

    /// A personal session of the user, scope `urn:matrix:client:api:*`; its
    /// token works on Synapse's client-server API as the user.
    async fn act_as(
        &self,
        user: &UserId,
        account: &Account,
        lifetime: Duration,
    ) -> Result<UserSession, CallError> {
        let id = self.handle(user, account)?;
        let session = self
            .call(AuthFailure::StopsRun, || {
                self.mas
                    .create_personal_session(id, SESSION_NAME, SESSION_SCOPE, lifetime)
            })
            .await?;
        let auth = bearer(&session.token).map_err(|e| {
            CallError::Row(ApiError::BadBody {
                status: 201,
                message: format!("the token MAS issued for {user} is unusable: {e}"),
            })
        })?;
        Ok(UserSession::new(
            user.clone(),
            self.synapse.http().clone(),
            auth,
            Ending::Revoke {
                session_id: session.id,
            },
        ))
    }

    async fn end_acting(&self, session: UserSession) -> Result<(), CallError> {
        match &session.ending {
            Ending::Revoke { session_id } => {
                let ended = self
                    .call(AuthFailure::StopsRun, || {
                        self.mas.revoke_personal_session(session_id)
                    })
                    .await;
                match ended {
                    // The run is stopping and sends nothing more, but this
                    // token must not outlive the user's turn: one try.
                    Err(CallError::Stopped) => self
                        .mas
                        .revoke_personal_session(session_id)
                        .await
                        .map(|_| ())
                        .map_err(CallError::Row),
                    other => other.map(|_| ()),
                }
            }
            Ending::Logout => {
                let ended = self
                    .call(AuthFailure::ForbiddenFailsRow, || session.logout())
                    .await;
                match ended {
                    Err(CallError::Stopped) => session.logout().await.map_err(CallError::Row),
                    other => other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_well_before_they_expire() {
        let s = Duration::from_secs;
        assert_eq!(renew_after(s(300)), s(240));
        assert_eq!(renew_after(s(60)), s(30));
        assert_eq!(renew_after(s(2)), s(1));
    }

    #[test]
    fn user_documents_read_both_flags() {
        let d: UserDocument = serde_json::from_value(serde_json::json!({
            "data": {"type": "user", "id": "01J", "attributes": {
                "username": "alice", "created_at": "2026-01-01T00:00:00Z",
                "locked_at": null, "deactivated_at": "2026-11-26T01:00:00Z",
                "admin": false, "legacy_guest": false}},
            "links": {"self": "/api/admin/v1/users/01J"}
        }))
        .unwrap();
        let u: MasUser = d.into();
        assert_eq!(
            u,
            MasUser {
                id: "01J".into(),
                deactivated: true,
                locked: false
            }
        );
    }

    #[test]
    fn list_pages_read_exact_times_and_the_cursor_only_when_a_next_page_exists() {
        let user = |id: &str, name: &str, at: Option<&str>| {
            serde_json::json!({"type": "user", "id": id, "attributes": {
                "username": name, "created_at": "2026-01-01T00:00:00Z",
                "locked_at": if name == "bob" { Some("2026-11-26T01:00:00Z") } else { None },
                "deactivated_at": at, "admin": false, "legacy_guest": false},
                "links": {"self": format!("/api/admin/v1/users/{id}")},
                "meta": {"page": {"cursor": id}}})
        };
        let page = |data: Vec<serde_json::Value>, next: bool| {
            let mut links = serde_json::json!({"self": "/api/admin/v1/users"});
            if next {
                links["next"] = "/api/admin/v1/users?page[after]=x".into();
            }
            let list: UserList = serde_json::from_value(serde_json::json!({
                "data": data, "links": links, "meta": {"count": 3}}))
            .unwrap();
            list.into_page(200)
        };
        let p = page(
            vec![
                user("01A", "alice", Some("2026-11-26T01:00:00.123456Z")),
                user("01B", "bob", Some("2026-11-26T02:00:00+01:00")),
            ],
            true,
        )
        .unwrap();
        assert_eq!(p.next.as_deref(), Some("01B"));
        assert_eq!(p.count, Some(3));
        assert_eq!(
            p.users,
            vec![
                MasDeactivated {
                    username: "alice".into(),
                    deactivated_at: 1_795_654_800_123,
                    locked: false
                },
                MasDeactivated {
                    username: "bob".into(),
                    deactivated_at: 1_795_654_800_000,
                    locked: true
                },
            ]
        );
        let last = page(
            vec![user("01C", "carol", Some("2026-11-26T03:00:00Z"))],
            false,
        );
        assert_eq!(last.unwrap().next, None);
        assert!(
            page(vec![], true).is_err(),
            "an empty page naming a next one"
        );
        assert!(page(vec![user("01D", "dan", None)], false).is_err());
        assert!(page(vec![user("01E", "eve", Some("yesterday"))], false).is_err());
    }

    #[test]
    fn only_an_expired_token_is_renewed() {
        let e = |m: &str| ApiError::Http {
            status: 401,
            errcode: None,
            message: m.into(),
            retry_after: None,
        };
        assert!(expired(&e("Access token expired")));
        assert!(!expired(&e("Unknown access token")));
        assert!(!expired(&e("Access token revoked")));
    }
}
