//! The HTTP layer shared by every API the tool talks to: one JSON request at a
//! time, typed errors, nothing else.
//!
//! It knows the two error body shapes the tool meets (Matrix's
//! `{"errcode","error"}` and MAS's JSON:API `{"errors":[{"title"}]}`), reads
//! `Retry-After`, and never follows a redirect, so a token can never be sent
//! somewhere the admin did not name. It has no retry policy (see `retry`) and
//! knows no endpoint (see `backend`).
//!
//! With `--verbose` it prints one line per request to stderr: method, path,
//! status (or the kind of transport failure), try number and latency. Never
//! the token, a request body (passwords) or a query string.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

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
    /// Not sent: the server cannot hold what was asked (a phone number for
    /// MAS). Final; nothing to retry.
    #[error("{0}")]
    Unsupported(String),
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

/// A JSON-over-HTTP client for one base URL. Cheap to clone; clones share
/// one connection pool.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    /// `--verbose`: a line on stderr per request.
    verbose: bool,
}

tokio::task_local! {
    /// The try of the request being sent (1 for the first), set by the retrier.
    static ATTEMPT: u32;
}

/// Runs `request` as try number `n` of its request, for the `--verbose` lines.
pub async fn as_attempt<F: Future>(n: u32, request: F) -> F::Output {
    ATTEMPT.scope(n, request).await
}

/// How an API authenticates a request.
pub enum Auth<'a> {
    None,
    Bearer(&'a HeaderValue),
}

/// `Bearer <token>` as a header value marked sensitive, so it never shows in
/// debug output.
pub fn bearer(token: &SecretString) -> anyhow::Result<HeaderValue> {
    let mut auth =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            anyhow::anyhow!("the access token contains characters not allowed in an HTTP header")
        })?;
    auth.set_sensitive(true);
    Ok(auth)
}

impl Http {
    /// `base` is the API's base URL; a trailing slash is dropped.
    pub fn new(
        base: &str,
        timeout: Duration,
        ca_cert: Option<reqwest::Certificate>,
        max_idle_per_host: usize,
    ) -> anyhow::Result<Self> {
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
        Ok(Http {
            client: builder.build()?,
            base: base.trim_end_matches('/').to_owned(),
            verbose: false,
        })
    }

    /// With `on`, every request prints a line on stderr (`--verbose`).
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request with an optional JSON body and returns the JSON body
    /// of a success (`null` for an empty one), or the error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        auth: Auth<'_>,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Auth::Bearer(h) = auth {
            req = req.header(AUTHORIZATION, h.clone());
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(wiped_json(b)?);
        }
        self.send_prepared(req).await
    }

    /// Sends one request whose JSON body is any serialisable value, so that
    /// parts kept as `RawValue` (encrypted key backup sessions, account data)
    /// go out byte for byte; reads the answer as `send` does.
    pub async fn send_with<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        auth: Auth<'_>,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .json(body);
        if let Auth::Bearer(h) = auth {
            req = req.header(AUTHORIZATION, h.clone());
        }
        self.send_prepared(req).await
    }

    /// A GET whose success body is left unread, for the caller to read a
    /// chunk at a time (a whole key backup is tens of megabytes). An error
    /// answer is read and returned as `send` does; the `--verbose` line is
    /// printed when the answer's head arrives. `timeout` replaces the
    /// client's for this request: reading a large body takes longer.
    pub async fn open(
        &self,
        path: &str,
        auth: Auth<'_>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self
            .client
            .get(format!("{}{}", self.base, path))
            .timeout(timeout);
        if let Auth::Bearer(h) = auth {
            req = req.header(AUTHORIZATION, h.clone());
        }
        let (client, built) = req.build_split();
        let request = built.map_err(transport_error)?;
        let what = format!("{} {}", request.method(), request.url().path());
        let started = Instant::now();
        let result = match client.execute(request).await {
            Err(e) => Err(transport_error(e)),
            Ok(resp) if resp.status().is_success() => Ok(resp),
            // An error answer is small: read it whole, as `send` does.
            Ok(resp) => Err(match read_bytes(Ok(resp)).await {
                Err(e) => e,
                Ok((status, _)) => ApiError::BadBody {
                    status,
                    message: "the answer changed from an error to a success".into(),
                },
            }),
        };
        if self.verbose {
            let outcome = result.as_ref().map(|r| r.status().as_u16());
            eprintln!("{}", verbose_line(&what, outcome, started.elapsed()));
        }
        result
    }

    /// A GET whose success body is read straight into `T`, with no JSON tree
    /// in between: for large answers (a big room's state). Its `--verbose`
    /// line is `send`'s.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        auth: Auth<'_>,
    ) -> Result<T, ApiError> {
        let mut req = self.client.get(format!("{}{}", self.base, path));
        if let Auth::Bearer(h) = auth {
            req = req.header(AUTHORIZATION, h.clone());
        }
        let read = |status, bytes: &[u8]| {
            serde_json::from_slice(bytes).map_err(|e| ApiError::BadBody {
                status,
                message: format!("{e}: {}", snippet(bytes)),
            })
        };
        self.exchange(req, read).await.map(|(_, body)| body)
    }

    /// A request to an absolute URL (one the server itself advertised), for
    /// the cases `send` does not cover, such as form posts.
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request made with `request` and reads its answer as `send`
    /// does, with its `--verbose` line.
    pub async fn send_prepared(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, serde_json::Value), ApiError> {
        self.exchange(req, json_value).await
    }

    /// Sends a request, reads a success body with `read` (an error answer
    /// becomes an `ApiError`), and prints the `--verbose` line once the
    /// answer is read.
    async fn exchange<T>(
        &self,
        req: reqwest::RequestBuilder,
        read: impl FnOnce(u16, &[u8]) -> Result<T, ApiError>,
    ) -> Result<(u16, T), ApiError> {
        if !self.verbose {
            let (status, bytes) = read_bytes(req.send().await).await?;
            return read(status, bytes.as_ref()).map(|body| (status, body));
        }
        let (client, built) = req.build_split();
        let request = built.map_err(transport_error)?;
        // The path only: the base URL is known, and a query could carry a secret.
        let what = format!("{} {}", request.method(), request.url().path());
        let started = Instant::now();
        let result = read_bytes(client.execute(request).await)
            .await
            .and_then(|(status, bytes)| read(status, bytes.as_ref()).map(|body| (status, body)));
        let outcome = result.as_ref().map(|(status, _)| *status);
        eprintln!("{}", verbose_line(&what, outcome, started.elapsed()));
        result
    }
}

/// A JSON body whose bytes are wiped once the HTTP client is done with them:
/// a reactivation's carries a password. Sized once, so serialising never
/// leaves a copy behind in a buffer it outgrew (bodies that carry a password
/// are far smaller than the first guess).
fn wiped_json(body: &serde_json::Value) -> Result<bytes::Bytes, ApiError> {
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(1024));
    serde_json::to_writer(&mut *buf, body).map_err(|e| ApiError::Transport(e.to_string()))?;
    Ok(bytes::Bytes::from_owner(buf))
}

/// The `--verbose` line of one request: its status, or the error.
fn verbose_line(what: &str, result: Result<u16, &ApiError>, latency: Duration) -> String {
    let outcome = match result {
        Ok(status) => status.to_string(),
        Err(ApiError::Http { status, .. }) => status.to_string(),
        Err(ApiError::BadBody { status, .. }) => format!("{status} (unreadable answer)"),
        // "timed out", "could not connect", …: the kind, not the whole chain.
        Err(ApiError::Transport(text)) => text.split(':').next().unwrap_or(text).to_owned(),
        Err(ApiError::Unsupported(_)) => "not sent".to_owned(),
    };
    let attempt = ATTEMPT
        .try_with(|n| format!(" · attempt {n}"))
        .unwrap_or_default();
    format!(
        "request: {what} → {outcome}{attempt} · {} ms",
        latency.as_millis()
    )
}

/// Sends a prepared request and reads its answer as `send` does.
pub async fn answer(req: reqwest::RequestBuilder) -> Result<(u16, serde_json::Value), ApiError> {
    let (status, bytes) = read_bytes(req.send().await).await?;
    json_value(status, bytes.as_ref()).map(|v| (status, v))
}

/// A success body as JSON; `null` for an empty one.
fn json_value(status: u16, bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|_| ApiError::BadBody {
        status,
        message: format!("not JSON: {}", snippet(bytes)),
    })
}

/// The status and body of a success, or the error.
async fn read_bytes(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, impl AsRef<[u8]>), ApiError> {
    let resp = sent.map_err(transport_error)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let bytes = resp.bytes().await.map_err(transport_error)?;
    if status.is_success() {
        return Ok((status.as_u16(), bytes));
    }
    Err(http_error(status, &bytes, retry_after))
}

/// Reads a field of a success body, or says what was missing.
pub fn field<T: serde::de::DeserializeOwned>(
    status: u16,
    value: serde_json::Value,
) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::BadBody {
        status,
        message: e.to_string(),
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    errcode: Option<String>,
    error: Option<String>,
    retry_after_ms: Option<u64>,
    /// MAS's JSON:API errors: one entry per cause.
    errors: Option<Vec<JsonApiError>>,
}

#[derive(Deserialize)]
struct JsonApiError {
    title: Option<String>,
}

/// A failure to send a request or to read its answer, as an `ApiError`.
pub fn transport_error(e: reqwest::Error) -> ApiError {
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
        Some(b) => {
            let titles: Vec<String> = (b.errors.into_iter().flatten())
                .filter_map(|e| e.title)
                .collect();
            let message = match b.error {
                Some(m) => m,
                None if !titles.is_empty() => titles.join("; "),
                None => snippet(body),
            };
            (b.errcode, message, b.retry_after_ms)
        }
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

    #[tokio::test]
    async fn verbose_lines_name_the_try_and_never_a_body() {
        // The line is made from the status alone: no body reaches it.
        let line = as_attempt(2, async {
            verbose_line(
                "PUT /_synapse/admin/v2/users/%40a%3Ax",
                Ok(200),
                Duration::from_millis(12),
            )
        })
        .await;
        assert_eq!(
            line,
            "request: PUT /_synapse/admin/v2/users/%40a%3Ax → 200 · attempt 2 · 12 ms"
        );
        let refused = ApiError::Transport(
            "could not connect: error sending request: Connection refused".into(),
        );
        let line = verbose_line("GET /x", Err(&refused), Duration::ZERO);
        assert_eq!(line, "request: GET /x → could not connect · 0 ms");
        let garbled = ApiError::BadBody {
            status: 200,
            message: "expected value".into(),
        };
        let line = verbose_line("GET /y", Err(&garbled), Duration::ZERO);
        assert_eq!(line, "request: GET /y → 200 (unreadable answer) · 0 ms");
    }

    #[test]
    fn mas_error_bodies_give_every_title() {
        let e = http_error(
            StatusCode::UNAUTHORIZED,
            br#"{"errors":[{"title":"Access token expired"},{"title":"more"}]}"#,
            None,
        );
        assert_eq!(e.to_string(), "HTTP 401: Access token expired; more");
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
