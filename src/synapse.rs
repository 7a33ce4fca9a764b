//! The Synapse Admin API client: typed requests and typed errors.
//!
//! One request per method, no retry policy (that lives in `retry`). It never
//! sends a PUT for a user it has not been told to reactivate, and it never puts
//! the token anywhere but the (sensitive) Authorization header.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::user_id::UserId;

/// An error from one request, as the server or the network gave it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("{}", http_error_text(*status, errcode, message))]
    Http {
        status: u16,
        errcode: Option<String>,
        message: String,
        /// From `Retry-After` or `retry_after_ms`, when the server gave one.
        retry_after: Option<Duration>,
    },
    /// No usable answer: connection refused or cut, timeout, truncated body.
    #[error("{0}")]
    Transport(String),
    /// A success status with a body that is not what the API documents.
    #[error("unexpected answer from the server (HTTP {status}): {message}")]
    BadBody { status: u16, message: String },
}

fn http_error_text(status: u16, errcode: &Option<String>, message: &str) -> String {
    match errcode {
        Some(code) => format!("HTTP {status} {code}: {message}"),
        None => format!("HTTP {status}: {message}"),
    }
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server could not be reached at all (no answer, or a
    /// gateway's 502/503/504), as opposed to an answer about this request.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ApiError::Transport(_)
                | ApiError::Http {
                    status: 502..=504,
                    ..
                }
        )
    }

    pub fn errcode(&self) -> Option<&str> {
        match self {
            ApiError::Http { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }
}

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

/// The outcome of a user lookup that the API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(UserInfo),
    NotFound,
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

/// The admin API client. Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `Bearer …`, marked sensitive so it never shows in debug output.
    auth: HeaderValue,
}

#[derive(Deserialize)]
struct ErrorBody {
    errcode: Option<String>,
    error: Option<String>,
    retry_after_ms: Option<u64>,
}

impl Client {
    /// `base` is the client-server API base URL, without a trailing slash.
    pub fn new(
        base: &str,
        token: &SecretString,
        timeout: Duration,
        ca_cert: Option<reqwest::Certificate>,
        max_idle_per_host: usize,
    ) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| {
                anyhow::anyhow!(
                    "the access token contains characters not allowed in an HTTP header"
                )
            })?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("matrix-reactivate/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(max_idle_per_host)
            // Never follow a redirect with the token to another place.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(cert) = ca_cert {
            builder = builder.add_root_certificate(cert);
        }
        Ok(Client {
            http: builder.build()?,
            base: base.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and returns the JSON body of a success, or the error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        with_token: bool,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if with_token {
            req = req.header(AUTHORIZATION, self.auth.clone());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes).map_err(|_| ApiError::BadBody {
                status: status.as_u16(),
                message: format!("not JSON: {}", snippet(&bytes)),
            })?;
            return Ok((status.as_u16(), value));
        }
        Err(http_error(status, &bytes, retry_after))
    }

    /// `GET /_synapse/admin/v1/server_version`, sent without the token.
    pub async fn server_version(&self) -> Result<ServerVersion, ApiError> {
        let (status, v) = self
            .send(
                Method::GET,
                "/_synapse/admin/v1/server_version",
                None,
                false,
            )
            .await?;
        let text = v
            .get("server_version")
            .and_then(|s| s.as_str())
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: "no server_version in the answer".into(),
            })?;
        Ok(ServerVersion::parse(text))
    }

    /// `GET /_matrix/client/v3/account/whoami`: the token's own user ID.
    pub async fn whoami(&self) -> Result<String, ApiError> {
        let (status, v) = self
            .send(Method::GET, "/_matrix/client/v3/account/whoami", None, true)
            .await?;
        v.get("user_id")
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: "no user_id in the answer".into(),
            })
    }

    /// `GET /_synapse/admin/v1/users/{id}/admin`.
    pub async fn is_admin(&self, user: &UserId) -> Result<bool, ApiError> {
        let path = format!("/_synapse/admin/v1/users/{}/admin", user.path_segment());
        let (status, v) = self.send(Method::GET, &path, None, true).await?;
        v.get("admin")
            .and_then(|a| a.as_bool())
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: "no admin flag in the answer".into(),
            })
    }

    /// `GET /_synapse/admin/v2/users/{id}`. A 404 is an answer, not an error.
    pub async fn get_user(&self, user: &UserId) -> Result<Lookup, ApiError> {
        let path = format!("/_synapse/admin/v2/users/{}", user.path_segment());
        match self.send(Method::GET, &path, None, true).await {
            Ok((status, v)) => serde_json::from_value::<UserInfo>(v)
                .map(Lookup::Found)
                .map_err(|e| ApiError::BadBody {
                    status,
                    message: e.to_string(),
                }),
            Err(ApiError::Http { status: 404, .. }) => Ok(Lookup::NotFound),
            Err(e) => Err(e),
        }
    }

    /// `PUT /_synapse/admin/v2/users/{id}` with `{"deactivated": false}`, the
    /// password if any, and `"locked": false` if asked. Only ever called for a
    /// user that a GET found deactivated: on an unknown user this call would
    /// create an account.
    pub async fn reactivate(
        &self,
        user: &UserId,
        password: Option<&str>,
        unlock: bool,
    ) -> Result<(), ApiError> {
        let mut body = serde_json::json!({ "deactivated": false });
        if let Some(p) = password {
            body["password"] = p.into();
        }
        if unlock {
            body["locked"] = false.into();
        }
        self.modify_existing(user, &body).await
    }

    /// `PUT /_synapse/admin/v2/users/{id}` with `body`, for a user known to
    /// exist. Only the fields in `body` change.
    pub async fn modify_existing(
        &self,
        user: &UserId,
        body: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let path = format!("/_synapse/admin/v2/users/{}", user.path_segment());
        let (status, _) = self.send(Method::PUT, &path, Some(body), true).await?;
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
}

impl Client {
    /// `GET /_synapse/admin/v1/users/{id}/memberships` (Synapse 1.145+): room → membership.
    pub async fn memberships(
        &self,
        user: &UserId,
    ) -> Result<std::collections::HashMap<String, String>, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            memberships: std::collections::HashMap<String, String>,
        }
        let path = format!(
            "/_synapse/admin/v1/users/{}/memberships",
            user.path_segment()
        );
        let (status, v) = self.send(Method::GET, &path, None, true).await?;
        serde_json::from_value::<Body>(v)
            .map(|b| b.memberships)
            .map_err(|e| ApiError::BadBody {
                status,
                message: e.to_string(),
            })
    }

    /// `GET /_synapse/admin/v1/rooms/{room_id}/state`: the room's current state events.
    pub async fn room_state(&self, room_id: &str) -> Result<Vec<StateEvent>, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            state: Vec<StateEvent>,
        }
        let path = format!("/_synapse/admin/v1/rooms/{}/state", encode_segment(room_id));
        let (status, v) = self.send(Method::GET, &path, None, true).await?;
        serde_json::from_value::<Body>(v)
            .map(|b| b.state)
            .map_err(|e| ApiError::BadBody {
                status,
                message: e.to_string(),
            })
    }

    /// `POST /_synapse/admin/v1/join/{room_id_or_alias}`: joins a local user;
    /// returns the room ID.
    pub async fn join(&self, room: &str, user: &UserId) -> Result<String, ApiError> {
        let path = format!("/_synapse/admin/v1/join/{}", encode_segment(room));
        let body = serde_json::json!({ "user_id": user.as_str() });
        let (status, v) = self.send(Method::POST, &path, Some(&body), true).await?;
        v.get("room_id")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadBody {
                status,
                message: "no room_id in the answer".into(),
            })
    }
}

/// One state event, as far as rejoining needs it.
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
    pub content: serde_json::Value,
}

/// Percent-encodes a room ID or alias as one path segment.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, crate::user_id::PATH_SEGMENT).to_string()
}

fn transport_error(e: reqwest::Error) -> ApiError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "request failed"
    };
    // The source chain says why (refused, reset, TLS, DNS); the URL is not secret.
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    ApiError::Transport(text)
}

fn http_error(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> ApiError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (errcode, message, retry_ms) = match parsed {
        Some(b) => (
            b.errcode,
            b.error.unwrap_or_else(|| snippet(body)),
            b.retry_after_ms,
        ),
        None => (None, non_json_message(status, body), None),
    };
    ApiError::Http {
        status: status.as_u16(),
        errcode,
        message,
        retry_after: retry_after.or(retry_ms.map(Duration::from_millis)),
    }
}

fn non_json_message(status: StatusCode, body: &[u8]) -> String {
    let reason = status.canonical_reason().unwrap_or("error");
    if body.is_empty() {
        reason.to_owned()
    } else {
        format!(
            "{reason} (not a Matrix answer, a proxy's page?: {})",
            snippet(body)
        )
    }
}

/// At most 120 characters of a body, on one line, for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        one_line = one_line.chars().take(120).collect::<String>() + "…";
    }
    if one_line.is_empty() {
        "empty body".into()
    } else {
        one_line
    }
}

/// `Retry-After` is either whole seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
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
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let past = SystemTime::now() - Duration::from_secs(30);
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(past)),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_bodies() {
        let e = http_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":4782}"#,
            None,
        );
        assert_eq!(e.errcode(), Some("M_LIMIT_EXCEEDED"));
        assert!(
            matches!(e, ApiError::Http { retry_after: Some(d), .. } if d == Duration::from_millis(4782))
        );
        let e = http_error(
            StatusCode::BAD_GATEWAY,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            Some(Duration::from_secs(2)),
        );
        let text = e.to_string();
        assert!(
            text.contains("HTTP 502") && text.contains("502 Bad Gateway"),
            "{text}"
        );
        assert!(
            matches!(e, ApiError::Http { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
    }
}
