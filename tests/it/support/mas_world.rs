//! A server whose logins belong to MAS, for scenarios: the MAS double, and a
//! mock Synapse whose answers follow the double's state (its users, its
//! deactivated ones, in the list too), with the preflight's answers and no
//! PUT or POST to Synapse's admin API allowed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::mas::{MasConfig, MasDouble, MasView};
use super::workdir::*;
/// What Synapse says of a user on a MAS server: MAS's state (Synapse follows
/// it), except where a test makes the two sides diverge.
#[derive(Clone)]
pub struct SynapseView {
    mas: MasView,
    server: &'static str,
    /// Erased on Synapse's side (MAS's deactivation erases by default).
    pub erased: Arc<Mutex<HashSet<String>>>,
    /// Deactivated through Synapse's own API: MAS never heard of it.
    pub deactivated_here: Arc<Mutex<HashSet<String>>>,
    /// Deactivated in MAS, but MAS's job has not reached Synapse yet.
    pub active_here: Arc<Mutex<HashSet<String>>>,
}

impl Respond for SynapseView {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let id = percent_decode(req.url.path().rsplit('/').next().unwrap_or(""));
        let localpart = id
            .strip_prefix('@')
            .and_then(|r| r.strip_suffix(&format!(":{}", self.server)))
            .unwrap_or("");
        match self.user(localpart) {
            Some(user) => ResponseTemplate::new(200).set_body_json(user),
            None => ResponseTemplate::new(404)
                .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "User not found"})),
        }
    }
}

impl SynapseView {
    /// Synapse's admin view of a user, `None` for one MAS does not know.
    fn user(&self, localpart: &str) -> Option<serde_json::Value> {
        let u = self.mas.user(localpart)?;
        let here = self.deactivated_here.lock().unwrap().contains(localpart);
        let not_yet = self.active_here.lock().unwrap().contains(localpart);
        // Reactivation through MAS mends Synapse's side too.
        let deactivated =
            (u.deactivated && !not_yet) || (here && !self.reactivated_since(localpart));
        Some(json!({
            "name": format!("@{localpart}:{}", self.server),
            "deactivated": deactivated,
            "erased": deactivated && self.erased.lock().unwrap().contains(localpart),
            "locked": u.locked,
            "admin": false,
            "is_guest": false,
        }))
    }

    /// Whether MAS reactivated the user (and so called Synapse) since the
    /// scenario was built.
    fn reactivated_since(&self, localpart: &str) -> bool {
        let Some(u) = self.mas.user(localpart) else {
            return false;
        };
        self.mas
            .requests()
            .iter()
            .any(|(m, p)| m == "POST" && p == &format!("/api/admin/v1/users/{}/reactivate", u.id))
    }
}

/// Synapse's `GET /_synapse/admin/v3/users?deactivated=true&locked=true…`
/// on a MAS server: the users Synapse holds deactivated, by user ID, `limit`
/// at a time from offset `from` (`next_token`), and 400 unless the query says
/// `guests=false`, as Synapse answers when it delegates to MAS.
pub struct SynapseList(pub SynapseView);

impl Respond for SynapseList {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let q: std::collections::HashMap<String, String> =
            req.url.query_pairs().into_owned().collect();
        let is = |k: &str, v: &str| q.get(k).map(String::as_str) == Some(v);
        if !is("guests", "false") {
            return ResponseTemplate::new(400).set_body_json(json!({
                "errcode": "M_INVALID_PARAM",
                "error": "The guests parameter is not supported when delegating to MAS."
            }));
        }
        assert!(
            is("deactivated", "true") && is("locked", "true") && is("order_by", "name"),
            "find's list query: {:?}",
            req.url.query()
        );
        let number =
            |k: &str, default: usize| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        let (from, limit) = (number("from", 0), number("limit", 100));
        let mut users: Vec<serde_json::Value> = self
            .0
            .mas
            .users()
            .iter()
            .filter_map(|u| self.0.user(&u.username))
            .filter(|u| u["deactivated"] == true)
            .collect();
        users.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let total = users.len();
        let page: Vec<_> = users.into_iter().skip(from).take(limit).collect();
        let mut body = json!({"users": page, "total": total});
        if from + limit < total {
            body["next_token"] = json!((from + limit).to_string());
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A MAS server: the double, and a mock Synapse that delegates to it.
pub struct MasWorld {
    pub mas: MasDouble,
    pub synapse: MockServer,
    pub view: SynapseView,
}

pub const SERVER: &str = "example.org";

impl MasWorld {
    pub async fn start(config: MasConfig) -> MasWorld {
        let mas = MasDouble::start(config);
        let synapse = MockServer::start().await;
        let view = SynapseView {
            mas: mas.view(),
            server: SERVER,
            erased: Arc::default(),
            deactivated_here: Arc::default(),
            active_here: Arc::default(),
        };
        Self::mount(&synapse, &mas.issuer()).await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/_synapse/admin/v2/users/[^/]+$"))
            .respond_with(view.clone())
            .mount(&synapse)
            .await;
        Mock::given(method("GET"))
            .and(path("/_synapse/admin/v3/users"))
            .respond_with(SynapseList(view.clone()))
            .mount(&synapse)
            .await;
        let world = MasWorld { mas, synapse, view };
        world.mas.add_user("admin", None, true).await;
        world
    }

    /// The preflight's answers of a Synapse delegating to `issuer`, and no
    /// PUT or POST to Synapse's admin API (MAS does the changes).
    pub async fn mount(synapse: &MockServer, issuer: &str) {
        let get = |p: &str, body: serde_json::Value| {
            Mock::given(method("GET"))
                .and(path(p.to_owned()))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
        };
        get(
            "/_synapse/admin/v1/server_version",
            json!({"server_version": "1.163.2"}),
        )
        .mount(synapse)
        .await;
        get(
            "/_matrix/client/v1/auth_metadata",
            json!({
                "issuer": issuer,
                "token_endpoint": format!("{issuer}oauth2/token"),
                "account_management_uri": format!("{issuer}account"),
            }),
        )
        .mount(synapse)
        .await;
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/account/whoami"))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"user_id": format!("@admin:{SERVER}")})),
            )
            .mount(synapse)
            .await;
        for verb in ["PUT", "POST"] {
            Mock::given(method(verb))
                .and(path_regex("^/_synapse/admin/"))
                .respond_with(ResponseTemplate::new(500))
                .expect(0)
                .named(format!("{verb} to Synapse's admin API on a MAS server"))
                .mount(synapse)
                .await;
        }
    }

    /// A user in MAS (and so in Synapse) with `password`, deactivated or not.
    pub async fn user(&self, localpart: &str, password: &str, deactivated: bool) {
        self.mas.add_user(localpart, Some(password), false).await;
        if deactivated {
            self.mas.deactivate(localpart, false).await;
        }
    }

    /// The tool against this world, with the double's admin client.
    pub fn tool(&self, w: &Workdir, args: &[&str]) -> assert_cmd::Command {
        let mut c = w.reactivate(&self.synapse.uri(), args);
        c.env("MAS_CLIENT_ID", self.mas.client_id())
            .env("MAS_CLIENT_SECRET", self.mas.client_secret());
        c
    }

    /// The admin API requests MAS received, as "METHOD path".
    pub fn admin_requests(&self) -> Vec<String> {
        self.mas
            .requests()
            .into_iter()
            .filter(|(_, p)| p.starts_with("/api/admin/v1"))
            .map(|(m, p)| format!("{m} {p}"))
            .collect()
    }
}

pub fn id(localpart: &str) -> String {
    format!("@{localpart}:{SERVER}")
}
