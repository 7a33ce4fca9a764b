//! Synapse's admin API: the client for every Synapse request the tool makes,
//! and the account operations through it for servers that own their logins.
//!
//! It never sends a PUT for a user that a GET did not find deactivated (a PUT
//! on an unknown ID creates an account), and it never puts the token anywhere
//! but the (sensitive) Authorization header. Requests here are single
//! attempts; `SynapseAccounts` runs them through the run's retrier.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;

use super::act_as::{Ending, UserSession};
use super::{Account, Accounts, Lookup};
use crate::http::{bearer, field, ApiError, Auth, Http};
use crate::retry::{AuthFailure, CallError, Retrier};
use crate::source::{AccountData, Json, Profile, Threepid};
use crate::user_id::UserId;

/// What `GET /_synapse/admin/v2/users/{id}` says about a user.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    #[serde(default, deserialize_with = "flag")]
    pub deactivated: bool,
    #[serde(default, deserialize_with = "flag")]
    pub erased: bool,
    #[serde(default, deserialize_with = "flag")]
    pub locked: bool,
}

/// Older Synapse versions send flags as 0/1 (SQLite integers); newer ones as booleans.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
        Null(()),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
        Flag::Null(()) => false,
    })
}

/// The whole of `GET /_synapse/admin/v2/users/{id}` that a before-image
/// needs: the flags, e-mails and phone numbers, display name and avatar.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct UserDetails {
    #[serde(flatten)]
    pub info: UserInfo,
    #[serde(default, deserialize_with = "nullable")]
    pub threepids: Vec<Threepid>,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

impl UserDetails {
    pub fn profile(&self) -> Profile {
        Profile {
            displayname: self.displayname.clone(),
            avatar_url: self.avatar_url.clone(),
        }
    }
}

/// A list that a server may send as `null`.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The threepids of `wanted` that `current` lacks. E-mail addresses are
/// compared without case (Synapse stores them lower-cased); phone numbers
/// exactly.
pub fn missing_threepids<'a>(current: &[Threepid], wanted: &'a [Threepid]) -> Vec<&'a Threepid> {
    let same = |a: &Threepid, b: &Threepid| {
        a.medium == b.medium
            && if a.medium == "email" {
                a.address.eq_ignore_ascii_case(&b.address)
            } else {
                a.address == b.address
            }
    };
    let mut missing: Vec<&Threepid> = Vec::new();
    for w in wanted {
        if !current.iter().any(|c| same(c, w)) && !missing.iter().any(|m| same(m, w)) {
            missing.push(w);
        }
    }
    missing
}

impl From<UserInfo> for Account {
    fn from(u: UserInfo) -> Self {
        Account {
            deactivated: u.deactivated,
            erased: u.erased,
            locked: u.locked,
            ..Account::default()
        }
    }
}

/// A Synapse server version, as far as the tool needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerVersion {
    pub text: String,
    /// (major, minor) when the text starts with them.
    pub numbers: Option<(u32, u32)>,
}

impl ServerVersion {
    pub fn parse(text: &str) -> Self {
        let mut parts = text.trim().split(|c: char| !c.is_ascii_digit());
        let numbers = match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => a.parse().ok().zip(b.parse().ok()),
            _ => None,
        };
        ServerVersion {
            text: text.trim().to_owned(),
            numbers,
        }
    }

    /// Whether this server is known to be older than `major.minor`.
    pub fn is_older_than(&self, major: u32, minor: u32) -> bool {
        self.numbers.is_some_and(|v| v < (major, minor))
    }
}

/// The Synapse admin API client. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct SynapseClient {
    http: Http,
    /// `Bearer …`, marked sensitive.
    auth: HeaderValue,
}

impl SynapseClient {
    /// `base` is the client-server API base URL.
    pub fn new(
        base: &str,
        token: &SecretString,
        timeout: Duration,
        ca_cert: Option<reqwest::Certificate>,
        max_idle_per_host: usize,
    ) -> anyhow::Result<Self> {
        Ok(SynapseClient {
            http: Http::new(base, timeout, ca_cert, max_idle_per_host)?,
            auth: bearer(token)?,
        })
    }

    /// With `on`, every request prints a line on stderr (`--verbose`).
    pub fn verbose(mut self, on: bool) -> Self {
        self.http = self.http.verbose(on);
        self
    }

    pub fn base(&self) -> &str {
        self.http.base()
    }

    /// The HTTP client of the client-server API (for sessions as a user).
    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        self.http
            .send(method, path, body, Auth::Bearer(&self.auth))
            .await
    }

    /// A string field of a success body.
    fn text(status: u16, v: &serde_json::Value, name: &str) -> Result<String, ApiError> {
        v.get(name)
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: format!("no {name} in the answer"),
            })
    }

    /// `GET /_synapse/admin/v1/server_version`, sent without the token.
    pub async fn server_version(&self) -> Result<ServerVersion, ApiError> {
        let path = "/_synapse/admin/v1/server_version";
        let (status, v) = self.http.send(Method::GET, path, None, Auth::None).await?;
        Ok(ServerVersion::parse(&Self::text(
            status,
            &v,
            "server_version",
        )?))
    }

    /// The issuer of the server's delegated authentication (MAS), from
    /// `GET /_matrix/client/v1/auth_metadata` or its unstable MSC2965 path
    /// (both sent without the token); `None` when the server answers 404 to
    /// both, i.e. owns its logins.
    pub async fn auth_issuer(&self) -> Result<Option<String>, ApiError> {
        const PATHS: [&str; 2] = [
            "/_matrix/client/v1/auth_metadata",
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        ];
        for path in PATHS {
            match self.http.send(Method::GET, path, None, Auth::None).await {
                Ok((status, v)) => return Self::text(status, &v, "issuer").map(Some),
                Err(ApiError::Http {
                    status: 404 | 405, ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// `GET /_matrix/client/v3/account/whoami`: the token's own user ID.
    pub async fn whoami(&self) -> Result<String, ApiError> {
        let path = "/_matrix/client/v3/account/whoami";
        let (status, v) = self.send(Method::GET, path, None).await?;
        Self::text(status, &v, "user_id")
    }

    /// `GET /_synapse/admin/v2/users/{id}`. A 404 is an answer, not an error.
    pub async fn get_user(&self, user: &UserId) -> Result<Option<UserInfo>, ApiError> {
        let path = format!("/_synapse/admin/v2/users/{}", user.path_segment());
        match self.send(Method::GET, &path, None).await {
            Ok((status, v)) => field(status, v).map(Some),
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /_synapse/admin/v2/users/{id}` read whole: flags, threepids and
    /// profile. A 404 is an answer.
    pub async fn user_details(&self, user: &UserId) -> Result<Option<UserDetails>, ApiError> {
        let path = format!("/_synapse/admin/v2/users/{}", user.path_segment());
        match self.send(Method::GET, &path, None).await {
            Ok((status, v)) => field(status, v).map(Some),
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user's display name and avatar; `None` for an unknown user.
    pub async fn profile(&self, user: &UserId) -> Result<Option<Profile>, ApiError> {
        Ok(self.user_details(user).await?.map(|d| d.profile()))
    }

    /// Every item of the user's account data, global then per room, each
    /// content as the server sent it (`GET /_synapse/admin/v1/users/{id}/accountdata`).
    pub async fn account_data(&self, user: &UserId) -> Result<Vec<AccountData>, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            account_data: Sections,
        }
        #[derive(Deserialize)]
        struct Sections {
            #[serde(default)]
            global: BTreeMap<String, Json>,
            #[serde(default)]
            rooms: BTreeMap<String, BTreeMap<String, Json>>,
        }
        let path = format!(
            "/_synapse/admin/v1/users/{}/accountdata",
            user.path_segment()
        );
        let body: Body = self.http.get(&path, Auth::Bearer(&self.auth)).await?;
        let Sections { global, rooms } = body.account_data;
        let mut items: Vec<AccountData> = global
            .into_iter()
            .map(|(kind, content)| AccountData {
                room_id: None,
                kind,
                content,
            })
            .collect();
        for (room, data) in rooms {
            items.extend(data.into_iter().map(|(kind, content)| AccountData {
                room_id: Some(room.clone()),
                kind,
                content,
            }));
        }
        Ok(items)
    }

    /// `POST /_synapse/admin/v1/users/{id}/login` with `valid_until_ms`: a
    /// puppet token of the user (no device), valid until then. The admin
    /// cannot get one of their own: Synapse answers 400.
    pub async fn login_as(&self, user: &UserId, valid_until_ms: u64) -> Result<String, ApiError> {
        let path = format!("/_synapse/admin/v1/users/{}/login", user.path_segment());
        let body = serde_json::json!({ "valid_until_ms": valid_until_ms });
        let (status, v) =
            self.send(Method::POST, &path, Some(&body))
                .await
                .map_err(|e| match e {
                    ApiError::Http {
                        status,
                        errcode,
                        message,
                        retry_after,
                    } if message.contains("login as self") => ApiError::Http {
                        status,
                        errcode,
                        message: format!(
                            "{message}: the admin cannot act as themselves; use the admin's own \
                         token for the admin's account"
                        ),
                        retry_after,
                    },
                    e => e,
                })?;
        Self::text(status, &v, "access_token")
    }

    /// `PUT /_synapse/admin/v2/users/{id}` with `body`, for a user known to
    /// exist. Only the fields in `body` change.
    pub async fn modify_existing(
        &self,
        user: &UserId,
        body: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let path = format!("/_synapse/admin/v2/users/{}", user.path_segment());
        let (status, _) = self.send(Method::PUT, &path, Some(body)).await?;
        if status == StatusCode::CREATED.as_u16() {
            // The user vanished between the GET and the PUT and the server just
            // created it: say so loudly rather than report success.
            return Err(ApiError::BadBody {
                status,
                message: "the server CREATED this user (it no longer existed when the \
                          change was sent); check and deactivate it by hand"
                    .into(),
            });
        }
        Ok(())
    }

    /// `GET /_synapse/admin/v1/users/{id}/memberships` (Synapse 1.145+): room → membership.
    pub async fn memberships(&self, user: &UserId) -> Result<HashMap<String, String>, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            memberships: HashMap<String, String>,
        }
        let path = format!(
            "/_synapse/admin/v1/users/{}/memberships",
            user.path_segment()
        );
        let (status, v) = self.send(Method::GET, &path, None).await?;
        field::<Body>(status, v).map(|b| b.memberships)
    }

    /// `GET /_synapse/admin/v1/rooms/{room_id}/state?type=m.room.member`: the
    /// room's current membership events. (A server that ignores `type` sends
    /// the whole state, which callers filter anyway.)
    pub async fn room_members(&self, room_id: &str) -> Result<Vec<StateEvent>, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            state: Vec<StateEvent>,
        }
        let path = format!(
            "/_synapse/admin/v1/rooms/{}/state?type=m.room.member",
            encode_segment(room_id)
        );
        // Read straight into events: a big room's state is large.
        let body: Body = self.http.get(&path, Auth::Bearer(&self.auth)).await?;
        Ok(body.state)
    }

    /// One page of the server's deactivated local users, by user ID:
    /// `GET /_synapse/admin/v3/users?deactivated=true&locked=true&guests=false
    /// &order_by=name&dir=f&limit=…&from=…`.
    ///
    /// v3 because v2's `deactivated=true` lists active users too; `locked=true`
    /// because without it Synapse leaves out users who are also locked;
    /// `guests=false` because a server that delegates to MAS refuses the
    /// default (`guests=true`) with 400. `from` is the `next_token` of the page
    /// before (none for the first).
    pub async fn deactivated_users(
        &self,
        from: Option<&str>,
        limit: u32,
    ) -> Result<UserPage, ApiError> {
        self.users_page(true, from, limit).await
    }

    /// One page of the server's active local users (locked ones included),
    /// by user ID: as `deactivated_users`, with `deactivated=false`.
    pub async fn active_users(&self, from: Option<&str>, limit: u32) -> Result<UserPage, ApiError> {
        self.users_page(false, from, limit).await
    }

    async fn users_page(
        &self,
        deactivated: bool,
        from: Option<&str>,
        limit: u32,
    ) -> Result<UserPage, ApiError> {
        let mut path = format!(
            "/_synapse/admin/v3/users?deactivated={deactivated}&locked=true&guests=false\
             &order_by=name&dir=f&limit={limit}"
        );
        if let Some(token) = from {
            path.push_str("&from=");
            path.push_str(&encode_segment(token));
        }
        self.http.get(&path, Auth::Bearer(&self.auth)).await
    }

    /// `POST /_synapse/admin/v1/join/{room_id_or_alias}`: joins a local user;
    /// returns the room ID.
    pub async fn join(&self, room: &str, user: &UserId) -> Result<String, ApiError> {
        let path = format!("/_synapse/admin/v1/join/{}", encode_segment(room));
        let body = serde_json::json!({ "user_id": user.as_str() });
        let (status, v) = self.send(Method::POST, &path, Some(&body)).await?;
        Self::text(status, &v, "room_id")
    }
}

/// One page of a user list.
#[derive(Clone, Debug, Deserialize)]
pub struct UserPage {
    pub users: Vec<ListedUser>,
    /// Where the next page starts; absent on the last page.
    #[serde(default, deserialize_with = "token")]
    pub next_token: Option<String>,
    /// How many users match, as the server counted when it sent this page.
    #[serde(default)]
    pub total: Option<u64>,
}

/// A user as a list gives it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ListedUser {
    pub name: String,
    #[serde(default, deserialize_with = "flag")]
    pub deactivated: bool,
    #[serde(default, deserialize_with = "flag")]
    pub erased: bool,
    #[serde(default, deserialize_with = "flag")]
    pub locked: bool,
}

/// Synapse sends `next_token` as a string; accept a number too.
fn token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Token {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Token>::deserialize(d)?.map(|t| match t {
        Token::Text(s) => s,
        Token::Number(n) => n.to_string(),
    }))
}

/// One state event, as far as rejoining needs it: nothing else of it is kept.
#[derive(Clone, Debug, Deserialize)]
pub struct StateEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: Option<String>,
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub origin_server_ts: i64,
    #[serde(default)]
    pub content: StateContent,
}

/// The part of a state event's content that rejoining reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StateContent {
    /// A string in membership events; kept loose so that another event type
    /// with a field of that name never makes the whole state unreadable.
    #[serde(default)]
    pub membership: Option<serde_json::Value>,
}

impl StateEvent {
    /// `join`, `leave`, … for a membership event.
    pub fn membership(&self) -> Option<&str> {
        self.content.membership.as_ref().and_then(|m| m.as_str())
    }
}

/// Percent-encodes a room ID or alias as one path segment.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, crate::user_id::PATH_SEGMENT).to_string()
}

/// Accounts on a server that owns its logins: Synapse alone holds the state.
pub struct SynapseAccounts {
    client: SynapseClient,
    retrier: Arc<Retrier>,
}

impl SynapseAccounts {
    pub fn new(client: SynapseClient, retrier: Arc<Retrier>) -> Self {
        SynapseAccounts { client, retrier }
    }

    async fn put(
        &self,
        auth: AuthFailure,
        user: &UserId,
        body: serde_json::Value,
    ) -> Result<(), CallError> {
        self.retrier
            .call(auth, || self.client.modify_existing(user, &body))
            .await
    }
}

impl Accounts for SynapseAccounts {
    async fn look_up(&self, user: &UserId) -> Result<Lookup, CallError> {
        let found = self
            .retrier
            .call(AuthFailure::StopsRun, || self.client.get_user(user))
            .await?;
        Ok(match found {
            Some(info) => Lookup::Found(info.into()),
            None => Lookup::NotFound,
        })
    }

    /// One PUT: `{"deactivated": false}`, the password if any, and
    /// `"locked": false` if asked.
    async fn reactivate(
        &self,
        user: &UserId,
        _: &Account,
        password: Option<&str>,
        unlock: bool,
    ) -> Result<(), CallError> {
        let mut body = serde_json::json!({ "deactivated": false });
        if let Some(p) = password {
            body["password"] = p.into();
        }
        if unlock {
            body["locked"] = false.into();
        }
        // A 403 here ("Password change disabled") is about this request; the
        // caller decides, knowing that nothing was applied.
        let auth = AuthFailure::ForbiddenFailsRow;
        let result = self
            .retrier
            .call(auth, || self.client.modify_existing(user, &body))
            .await;
        crate::password::wipe_field(&mut body, "password");
        result
    }

    /// `{"locked": false}` only, so the password and devices stay as they are.
    async fn unlock(&self, user: &UserId, _: &Account) -> Result<(), CallError> {
        self.put(
            AuthFailure::StopsRun,
            user,
            serde_json::json!({ "locked": false }),
        )
        .await
    }

    async fn threepids(&self, user: &UserId, _: &Account) -> Result<Vec<Threepid>, CallError> {
        let details = self
            .retrier
            .call(AuthFailure::StopsRun, || self.client.user_details(user))
            .await?;
        details.map(|d| d.threepids).ok_or_else(|| not_found(user))
    }

    /// Synapse's PUT replaces the whole list: it gets the union of what the
    /// account has now and what is missing, and is not sent when nothing is.
    async fn add_threepids(
        &self,
        user: &UserId,
        account: &Account,
        threepids: &[Threepid],
    ) -> Result<(), CallError> {
        let current = self.threepids(user, account).await?;
        let missing = missing_threepids(&current, threepids);
        if missing.is_empty() {
            return Ok(());
        }
        let all: Vec<serde_json::Value> = current
            .iter()
            .chain(missing)
            .map(|t| serde_json::json!({ "medium": t.medium, "address": t.address }))
            .collect();
        let body = serde_json::json!({ "threepids": all });
        self.put(AuthFailure::StopsRun, user, body).await
    }

    async fn act_as(
        &self,
        user: &UserId,
        _: &Account,
        lifetime: Duration,
    ) -> Result<UserSession, CallError> {
        let until = SystemTime::now()
            .checked_add(lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_millis() as u64);
        let token = self
            .retrier
            .call(AuthFailure::StopsRun, || self.client.login_as(user, until))
            .await?;
        let auth = bearer(&SecretString::from(token)).map_err(|e| {
            CallError::Row(ApiError::BadBody {
                status: 200,
                message: format!("the token Synapse issued for {user} is unusable: {e}"),
            })
        })?;
        Ok(UserSession::new(
            user.clone(),
            self.client.http().clone(),
            auth,
            Ending::Logout,
        ))
    }

    async fn end_acting(&self, session: UserSession) -> Result<(), CallError> {
        match &session.ending {
            Ending::Logout => {
                let ended = self
                    .retrier
                    .call(AuthFailure::ForbiddenFailsRow, || session.logout())
                    .await;
                match ended {
                    // The run is stopping and sends nothing more, but this
                    // token must not outlive the user's turn: one try.
                    Err(CallError::Stopped) => session.logout().await.map_err(CallError::Row),
                    other => other,
                }
            }
            Ending::Revoke { .. } => Err(CallError::Row(ApiError::Unsupported(
                "a MAS personal session cannot be ended through Synapse".into(),
            ))),
        }
    }
}

/// A user that was there a moment ago and is not now.
fn not_found(user: &UserId) -> CallError {
    CallError::Row(ApiError::Http {
        status: 404,
        errcode: Some("M_NOT_FOUND".into()),
        message: format!("{user} not found"),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        let v = ServerVersion::parse("1.163.2");
        assert_eq!(v.numbers, Some((1, 163)));
        assert!(!v.is_older_than(1, 99));
        let v = ServerVersion::parse("1.98.0rc1");
        assert!(v.is_older_than(1, 99));
        let v = ServerVersion::parse("1.20.0 (b=master, abc)");
        assert_eq!(v.numbers, Some((1, 20)));
        let v = ServerVersion::parse("unknown");
        assert_eq!(v.numbers, None);
        assert!(!v.is_older_than(1, 99));
    }

    #[test]
    fn flags_accept_bools_and_ints() {
        let u: UserInfo =
            serde_json::from_str(r#"{"deactivated": 1, "erased": false, "locked": null}"#).unwrap();
        assert_eq!(
            u,
            UserInfo {
                deactivated: true,
                erased: false,
                locked: false
            }
        );
        let u: UserInfo = serde_json::from_str(r#"{"name": "@a:b"}"#).unwrap();
        assert!(!u.deactivated);
    }

    #[test]
    fn user_pages_read_both_token_forms_and_the_last_page() {
        let p: UserPage = serde_json::from_str(
            r#"{"users": [{"name": "@a:x", "deactivated": true, "erased": 1, "locked": false}],
                "next_token": "100", "total": 250}"#,
        )
        .unwrap();
        assert_eq!(p.next_token.as_deref(), Some("100"));
        assert_eq!(p.total, Some(250));
        assert!(p.users[0].erased && p.users[0].deactivated && !p.users[0].locked);
        let p: UserPage = serde_json::from_str(r#"{"users": [], "next_token": 7}"#).unwrap();
        assert_eq!(p.next_token.as_deref(), Some("7"));
        let p: UserPage = serde_json::from_str(r#"{"users": [], "total": 0}"#).unwrap();
        assert_eq!(p.next_token, None);
    }

    mod with_a_server {
        use super::super::*;
        use crate::stop::StopSignal;
        use serde_json::json;
        use wiremock::matchers::{body_json, header, method, path};
        use wiremock::{Mock, MockServer, Request, ResponseTemplate};

        const USER: &str = "/_synapse/admin/v2/users/%40al%2Fice%3Aexample.org";

        fn accounts(server: &MockServer) -> SynapseAccounts {
            let token = SecretString::from("admin-token".to_owned());
            let client =
                SynapseClient::new(&server.uri(), &token, Duration::from_secs(5), None, 1).unwrap();
            let policy = crate::retry::Policy {
                attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
                max_outage: None,
            };
            let retrier = Retrier::new(policy, Arc::new(StopSignal::new()));
            SynapseAccounts::new(client, Arc::new(retrier))
        }

        fn alice() -> UserId {
            UserId::parse("@al/ice:example.org").unwrap()
        }

        fn tp(medium: &str, address: &str) -> Threepid {
            Threepid {
                medium: medium.into(),
                address: address.into(),
                validated_at: None,
                added_at: None,
            }
        }

        async fn user_with(server: &MockServer, threepids: serde_json::Value) {
            Mock::given(method("GET"))
                .and(path(USER))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                    "name": "@al/ice:example.org", "deactivated": false,
                    "displayname": "Alice", "avatar_url": null,
                    "threepids": threepids})))
                .mount(server)
                .await;
        }

        #[test]
        fn missing_threepids_compare_emails_without_case() {
            let current = [tp("email", "a@example.org"), tp("msisdn", "4477")];
            let wanted = [
                tp("email", "A@Example.org"),
                tp("email", "b@example.org"),
                tp("email", "B@example.org"),
                tp("msisdn", "4477"),
                tp("msisdn", "4478"),
            ];
            let missing = missing_threepids(&current, &wanted);
            assert_eq!(missing, [&wanted[1], &wanted[4]]);
        }

        #[tokio::test]
        async fn threepids_are_added_as_a_union_and_never_replaced() {
            let server = MockServer::start().await;
            user_with(
                &server,
                json!([{"medium": "email", "address": "a@example.org",
                        "validated_at": 5, "added_at": 6}]),
            )
            .await;
            Mock::given(method("PUT"))
                .and(path(USER))
                .and(body_json(json!({"threepids": [
                    {"medium": "email", "address": "a@example.org"},
                    {"medium": "email", "address": "b@example.org"},
                    {"medium": "msisdn", "address": "4477"}]})))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
                .expect(1)
                .mount(&server)
                .await;
            let a = accounts(&server);
            let account = Account::default();
            let now = a.threepids(&alice(), &account).await.unwrap();
            assert_eq!(now.len(), 1);
            assert_eq!((now[0].validated_at, now[0].added_at), (Some(5), Some(6)));
            let wanted = [
                tp("email", "A@example.org"),
                tp("email", "b@example.org"),
                tp("msisdn", "4477"),
            ];
            a.add_threepids(&alice(), &account, &wanted).await.unwrap();
            // Nothing missing: no PUT at all (the mock expects one, above).
            a.add_threepids(&alice(), &account, &wanted[..1])
                .await
                .unwrap();
        }

        #[tokio::test]
        async fn details_profile_and_account_data() {
            let server = MockServer::start().await;
            user_with(&server, serde_json::Value::Null).await;
            Mock::given(method("GET"))
                .and(path(
                    "/_synapse/admin/v1/users/%40al%2Fice%3Aexample.org/accountdata",
                ))
                .respond_with(ResponseTemplate::new(200).set_body_string(
                    r#"{"account_data": {"global": {"m.direct": {"@b:x": ["!d:x"]},
                        "im.vector.setting": {"a": 1.50}},
                        "rooms": {"!r:x": {"m.tag": {"tags": {"u.work": {}}}}}}}"#,
                ))
                .mount(&server)
                .await;
            let a = accounts(&server);
            let details = a.client.user_details(&alice()).await.unwrap().unwrap();
            assert!(details.threepids.is_empty());
            assert_eq!(details.profile().displayname.as_deref(), Some("Alice"));
            assert_eq!(details.profile().avatar_url, None);
            let items = a.client.account_data(&alice()).await.unwrap();
            let seen: Vec<(Option<&str>, &str, &str)> = items
                .iter()
                .map(|i| (i.room_id.as_deref(), i.kind.as_str(), i.content.get()))
                .collect();
            assert_eq!(
                seen,
                [
                    (None, "im.vector.setting", r#"{"a": 1.50}"#),
                    (None, "m.direct", r#"{"@b:x": ["!d:x"]}"#),
                    (Some("!r:x"), "m.tag", r#"{"tags": {"u.work": {}}}"#),
                ]
            );
        }

        #[tokio::test]
        async fn acting_as_a_user_is_a_puppet_login_ended_by_logout() {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(
                    "/_synapse/admin/v1/users/%40al%2Fice%3Aexample.org/login",
                ))
                .and(header("authorization", "Bearer admin-token"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"access_token": "puppet"})),
                )
                .expect(1)
                .mount(&server)
                .await;
            Mock::given(method("POST"))
                .and(path("/_matrix/client/v3/logout"))
                .and(header("authorization", "Bearer puppet"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
                .up_to_n_times(1)
                .expect(1)
                .mount(&server)
                .await;
            let a = accounts(&server);
            let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let session = a
                .act_as(&alice(), &Account::default(), Duration::from_secs(300))
                .await
                .unwrap();
            assert!(session.auth().is_sensitive());
            assert_eq!(session.user, alice());
            let sent: Vec<Request> = server.received_requests().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
            let until = body["valid_until_ms"].as_u64().unwrap();
            let from = before.as_millis() as u64;
            assert!(
                until >= from + 300_000 && until < from + 310_000,
                "{until} {from}"
            );
            a.end_acting(session).await.unwrap();

            // A token that expired already: logging it out is done.
            Mock::given(method("POST"))
                .and(path("/_matrix/client/v3/logout"))
                .respond_with(
                    ResponseTemplate::new(401)
                        .set_body_json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "expired"})),
                )
                .mount(&server)
                .await;
            let http = a.client.http().clone();
            let mut auth = HeaderValue::from_static("Bearer stale");
            auth.set_sensitive(true);
            let stale = UserSession::new(alice(), http, auth, Ending::Logout);
            a.end_acting(stale).await.unwrap();
            assert!(
                !a.retrier.stop_signal().is_stopped(),
                "a 401 there stops nothing"
            );
        }

        #[tokio::test]
        async fn the_admin_acting_as_themselves_hears_why_not() {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(
                    "/_synapse/admin/v1/users/%40al%2Fice%3Aexample.org/login",
                ))
                .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                    "errcode": "M_UNKNOWN", "error": "Cannot use admin API to login as self"})))
                .mount(&server)
                .await;
            let a = accounts(&server);
            match a
                .act_as(&alice(), &Account::default(), Duration::from_secs(60))
                .await
            {
                Err(CallError::Row(e)) => {
                    let text = e.to_string();
                    assert!(text.contains("the admin's own token"), "{text}");
                }
                Err(e) => panic!("{e:?}"),
                Ok(_) => panic!("a session"),
            }
        }
    }
}
