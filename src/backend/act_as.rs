//! Acting as a user for a few minutes, to write what no admin API writes:
//! account data, push rules, the key backup.
//!
//! A `UserSession` is the one place that holds a user's token. The token
//! expires by itself (Synapse's puppet login with `valid_until_ms`, MAS's
//! personal session with `expires_in`), is ended as soon as the user is done
//! (`Accounts::end_acting`: logout, or revoke), and is never printed, logged
//! or journaled: it lives in a header value marked sensitive.
//!
//! The requests here are single attempts; callers run them through the run's
//! retrier. Nothing here knows about rows or results.

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::value::RawValue;

use crate::http::{ApiError, Auth, Http};
use crate::source::{BackupSession, Json};
use crate::user_id::UserId;

/// How a session ends.
#[derive(Clone, Debug)]
pub enum Ending {
    /// Synapse puppet token: `POST /_matrix/client/v3/logout` with it.
    Logout,
    /// MAS personal session: `POST /api/admin/v1/personal-sessions/{id}/revoke`.
    Revoke { session_id: String },
}

/// The newest key backup version the account has now.
#[derive(Clone, Debug)]
pub struct BackupNow {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Json,
    pub count: u64,
}

/// A short-lived token of one user, and the client-server API through it.
pub struct UserSession {
    pub user: UserId,
    http: Http,
    /// `Bearer <user token>`, marked sensitive.
    auth: HeaderValue,
    pub ending: Ending,
}

impl UserSession {
    pub fn new(user: UserId, http: Http, auth: HeaderValue, ending: Ending) -> Self {
        UserSession {
            user,
            http,
            auth,
            ending,
        }
    }

    /// The bearer header, for the backend that ends the session.
    pub fn auth(&self) -> &HeaderValue {
        &self.auth
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
}
