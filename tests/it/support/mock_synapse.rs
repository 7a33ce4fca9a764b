//! A mock Synapse admin API (wiremock) whose preflight succeeds and which
//! refuses every PUT a test did not allow.

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::workdir::TOKEN;

/// The percent-encoded path segment of a user ID.
pub fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('@', "%40")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace('!', "%21")
        .replace('#', "%23")
}

pub fn user_path(id: &str) -> String {
    format!("/_synapse/admin/v2/users/{}", enc(id))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Active,
    Deactivated,
    Erased,
    Missing,
}

/// A mock Synapse whose preflight succeeds, with no PUT allowed unless a test
/// mounts one (a catch-all PUT expects zero calls).
pub struct MockSynapse {
    pub server: MockServer,
}

impl MockSynapse {
    pub async fn start() -> Self {
        Self::start_with_version("1.163.2").await
    }

    pub async fn start_with_version(version: &str) -> Self {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/_synapse/admin/v1/server_version"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"server_version": version})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/account/whoami"))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"user_id": "@admin:example.org"})),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(user_path("@admin:example.org")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "name": "@admin:example.org", "admin": true, "deactivated": false
            })))
            .mount(&server)
            .await;
        // Any PUT that no test allowed is a bug: it might create or change an account.
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(500))
            .with_priority(100)
            .expect(0)
            .named("forbidden PUT")
            .mount(&server)
            .await;
        MockSynapse { server }
    }

    pub fn url(&self) -> String {
        self.server.uri()
    }

    /// Mounts the GET for a user in `state`.
    pub async fn user(&self, id: &str, state: State) {
        let resp = match state {
            State::Missing => ResponseTemplate::new(404)
                .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "User not found"})),
            _ => ResponseTemplate::new(200).set_body_json(json!({
                "name": id,
                "deactivated": state != State::Active,
                "erased": state == State::Erased,
                "locked": false,
                "admin": false,
            })),
        };
        Mock::given(method("GET"))
            .and(path(user_path(id)))
            .respond_with(resp)
            .named(format!("GET {id}"))
            .mount(&self.server)
            .await;
    }

    /// Mounts `@u0:example.org` … `@u{n-1}:example.org`, all deactivated, and
    /// returns them one per line, ready as an input.
    pub async fn deactivated_users(&self, n: usize) -> String {
        let mut input = String::new();
        for i in 0..n {
            let id = format!("@u{i}:example.org");
            self.user(&id, State::Deactivated).await;
            input.push_str(&format!("{id}\n"));
        }
        input
    }

    /// Allows exactly `times` reactivation PUTs for `id`, answered with `resp`.
    pub async fn allow_put(&self, id: &str, times: u64, resp: ResponseTemplate) {
        Mock::given(method("PUT"))
            .and(path(user_path(id)))
            .respond_with(resp)
            .expect(times)
            .named(format!("PUT {id}"))
            .mount(&self.server)
            .await;
    }

    /// The JSON bodies of the PUTs received for `id`.
    pub async fn put_bodies(&self, id: &str) -> Vec<serde_json::Value> {
        let want = user_path(id);
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == "PUT" && r.url.path() == want)
            .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
            .collect()
    }
}

pub fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"name": "x", "deactivated": false}))
}
