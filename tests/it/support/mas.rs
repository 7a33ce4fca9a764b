//! A test double of the Matrix Authentication Service (MAS) 1.22: a stateful HTTP
//! server on loopback that answers the requests a tool managing accounts on a
//! MAS-delegated deployment makes, and the requests Synapse makes when it
//! delegates authentication to MAS. MAS itself ships only as release tarballs and
//! container images, so the tests cannot run the real one.
//!
//! It is faithful, as read from MAS v1.22.0's source, to: the discovery document;
//! the client-credentials grant at `/oauth2/token` (HTTP basic client
//! authentication, `mat_` tokens with a TTL and no refresh token, OAuth error
//! bodies); the token format (`prefix_30 random_CRC32 in base62`, checked before
//! any lookup, so a malformed token is an "Invalid type of access token"); the
//! admin API's authentication (its statuses and error titles, in MAS's order
//! of checks), user look-up, listing with cursor paging, reactivate, lock,
//! unlock, deactivate, set-password, adding and listing e-mails, personal
//! sessions (create, read, revoke: a token acting as a user, for a client-owned
//! session, whose introspection Synapse accepts as that user), with MAS's
//! JSON:API bodies, status codes, error titles and the web framework's
//! plain-text rejections of bad JSON bodies; and, when linked to a real Synapse,
//! token introspection for Synapse and the calls MAS makes to Synapse's
//! `/_synapse/mas/*` API with the same bodies (`provision_user`, `reactivate_user`,
//! `delete_user`, `upsert_device`). Reactivation, like MAS, calls Synapse first
//! and changes nothing when that fails; it clears `deactivated_at` and does not
//! unlock; on a user that is not deactivated it still calls Synapse and answers
//! 200 with the user unchanged. Deactivation keeps the password (MAS does).
//!
//! It leaves out: the web UI, registration, the authorization-code, device-code
//! and refresh-token grants, upstream (SSO) providers, the GraphQL API, policies
//! (the one client is an admin client), every admin route not listed above, and
//! Synapse macaroon tokens. Password strength is a minimum length, where MAS
//! scores the password with zxcvbn. Error bodies carry the route's own title
//! exactly; MAS appends the error's causes as further titles, which the double
//! reproduces only where they are fixed strings (token format, Synapse calls).
//! Work that MAS queues as jobs after answering (deactivation's Synapse call,
//! propagating a lock or e-mails to Synapse) the double does before answering,
//! so that a test sees a settled state; a Synapse failure there is printed, and
//! the answer is still MAS's (the job would be retried).
//!
//! Besides MAS's own routes, `POST /test/login {"username","password"}` stands in
//! for a password login through MAS: 200 `{"access_token": "mct_…"}` (a
//! compatibility token Synapse accepts) when the user exists, is neither
//! deactivated nor locked, and the password is the one MAS holds; else 403.

// A refused request's error is the whole HTTP response, built once and sent.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// The scope a token needs for the admin API.
const ADMIN_SCOPE: &str = "urn:mas:admin";
/// Scopes MAS puts on compatibility tokens, stable and unstable (MSC2967) names.
const API_SCOPES: [&str; 2] = [
    "urn:matrix:client:api:*",
    "urn:matrix:org.matrix.msc2967.client:api:*",
];
const SYNAPSE_ADMIN_SCOPE: &str = "urn:synapse:admin:*";

/// How the double is set up.
#[derive(Clone, Debug)]
pub struct MasConfig {
    /// The admin client allowed the client-credentials grant (MAS client IDs are ULIDs).
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of `mat_` tokens (MAS's `access_token_ttl`, 300 s by default).
    pub token_ttl: Duration,
    /// MAS's `passwords.enabled`: when false, set-password answers 403.
    pub passwords_enabled: bool,
    /// Passwords shorter than this (in characters) are "too weak" unless the
    /// check is skipped. Stands in for MAS's zxcvbn score.
    pub min_password_length: usize,
    /// The Synapse to call and to answer introspection for; also settable after
    /// start with [`MasDouble::set_synapse`] (Synapse needs the double's URL first).
    pub synapse: Option<SynapseLink>,
}

impl Default for MasConfig {
    fn default() -> Self {
        MasConfig {
            client_id: "01J9ZZRT0ADM1NC11ENT000000".into(),
            client_secret: "double-client-secret".into(),
            token_ttl: Duration::from_secs(300),
            passwords_enabled: true,
            min_password_length: 8,
            synapse: None,
        }
    }
}

/// A Synapse in MAS mode: its URL and the secret shared with MAS
/// (`matrix_authentication_service.secret`).
#[derive(Clone, Debug)]
pub struct SynapseLink {
    pub url: String,
    pub secret: String,
}

/// What MAS holds about a user, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSnapshot {
    pub id: String,
    pub username: String,
    pub admin: bool,
    pub deactivated: bool,
    /// `deactivated_at`, as MAS lists it (RFC 3339, to the microsecond).
    pub deactivated_at: Option<String>,
    pub locked: bool,
    pub password: Option<String>,
    pub emails: Vec<String>,
}

/// A personal session as MAS holds it, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub id: String,
    /// The username of the user it acts as.
    pub actor: String,
    pub human_name: String,
    pub scope: String,
    pub revoked: bool,
    /// Its token still works: not revoked, not expired.
    pub usable: bool,
}

/// The running double. Dropping it stops the server.
pub struct MasDouble {
    inner: Arc<Inner>,
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MasDouble {
    /// Starts the server on 127.0.0.1 on a free port, on its own thread and
    /// runtime: it keeps answering while a test blocks on the tool's process,
    /// and Synapse's calls back into it never wait for the test.
    pub fn start(config: MasConfig) -> MasDouble {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the MAS double");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the double's address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the double's runtime");
        let runtime_handle = runtime.handle().clone();
        let synapse = config.synapse.clone();
        let inner = Arc::new(Inner {
            base: format!("http://{addr}"),
            config,
            state: Mutex::new(State {
                synapse,
                ..State::default()
            }),
            // Never through a proxy: everything is on loopback.
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        });
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let server = inner.clone();
        let thread = std::thread::Builder::new()
            .name("mas-double".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    loop {
                        let stream = tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => stream,
                                Err(_) => continue,
                            },
                        };
                        let inner = server.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| handle(inner.clone(), req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                });
            })
            .expect("the double's thread");
        MasDouble {
            inner,
            addr,
            runtime: runtime_handle,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The issuer, `http://127.0.0.1:PORT/` (with the slash, as MAS gives it).
    pub fn issuer(&self) -> String {
        format!("{}/", self.url())
    }

    pub fn client_id(&self) -> &str {
        &self.inner.config.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.inner.config.client_secret
    }

    /// Links the double to a Synapse started with `--mas-endpoint <issuer>`.
    pub fn set_synapse(&self, link: SynapseLink) {
        self.inner.state().synapse = Some(link);
    }

    /// Creates a user as MAS's admin API does (and provisions it in Synapse when
    /// linked); returns its ULID. Panics if the username is taken or Synapse fails.
    pub async fn add_user(&self, localpart: &str, password: Option<&str>, admin: bool) -> String {
        let inner = self.inner.clone();
        let (localpart, password) = (localpart.to_owned(), password.map(str::to_owned));
        self.on_runtime(async move { inner.add_user(&localpart, password, admin).await })
            .await
    }

    /// Deactivates as MAS's admin API does, Synapse's side included.
    pub async fn deactivate(&self, localpart: &str, erase: bool) {
        let inner = self.inner.clone();
        let id = self.id_of(localpart);
        self.on_runtime(async move {
            if let Err(e) = inner.deactivate(&id, erase).await {
                panic!("deactivating in Synapse: {e:?}");
            }
        })
        .await
    }

    /// Sets when MAS says the user was deactivated, as if it had happened
    /// then: for scenarios that need a deactivation at a given time.
    pub fn set_deactivated_at(&self, localpart: &str, at: SystemTime) {
        let id = self.id_of(localpart);
        let mut st = self.inner.state();
        let u = st.users.get_mut(&id).expect("a known user");
        assert!(u.deactivated_at.is_some(), "{localpart} is not deactivated");
        u.deactivated_at = Some(at);
    }

    /// Locks as MAS's admin API does (and tells Synapse, which MAS does in a job).
    pub async fn lock(&self, localpart: &str) {
        let inner = self.inner.clone();
        let id = self.id_of(localpart);
        self.on_runtime(async move {
            if let Err(e) = inner.set_locked(&id, true).await {
                panic!("provisioning the lock in Synapse: {e:?}");
            }
        })
        .await
    }

    /// The user as MAS holds it, `None` if there is no such username.
    pub fn user(&self, localpart: &str) -> Option<UserSnapshot> {
        self.view().user(localpart)
    }

    /// See `MasView::personal_sessions`.
    pub fn personal_sessions(&self) -> Vec<SessionSnapshot> {
        self.view().personal_sessions()
    }

    /// A read-only view of the double's users that outlives a borrow of it:
    /// for a mock Synapse whose answers follow MAS's state.
    pub fn view(&self) -> MasView {
        MasView {
            inner: self.inner.clone(),
        }
    }
}

/// See `MasDouble::view`.
#[derive(Clone)]
pub struct MasView {
    inner: Arc<Inner>,
}

impl MasView {
    /// Every request received, in order: (method, path with its query string).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.state().requests.clone()
    }

    /// Every user MAS holds, in MAS's order (by ULID).
    pub fn users(&self) -> Vec<UserSnapshot> {
        let names: Vec<String> = {
            let st = self.inner.state();
            st.users.values().map(|u| u.username.clone()).collect()
        };
        names.iter().filter_map(|n| self.user(n)).collect()
    }

    /// Every personal session acting as a user, in creation order.
    pub fn personal_sessions(&self) -> Vec<SessionSnapshot> {
        let st = self.inner.state();
        st.personal_sessions
            .values()
            .map(|p| SessionSnapshot {
                id: p.id.clone(),
                actor: st
                    .users
                    .get(&p.actor)
                    .map(|u| u.username.clone())
                    .unwrap_or_default(),
                human_name: p.human_name.clone(),
                scope: scope_string(&p.scope),
                revoked: p.revoked_at.is_some(),
                usable: p
                    .token
                    .as_ref()
                    .and_then(|t| st.tokens.get(t))
                    .is_some_and(|t| !t.revoked && !t.expired()),
            })
            .collect()
    }

    /// The user as MAS holds it, `None` if there is no such username.
    pub fn user(&self, localpart: &str) -> Option<UserSnapshot> {
        let st = self.inner.state();
        let u = st.by_username(localpart)?;
        Some(UserSnapshot {
            id: u.id.clone(),
            username: u.username.clone(),
            admin: u.admin,
            deactivated: u.deactivated_at.is_some(),
            deactivated_at: u.deactivated_at.map(rfc3339),
            locked: u.locked_at.is_some(),
            password: u.password.clone(),
            emails: st
                .emails
                .values()
                .filter(|e| e.user_id == u.id)
                .map(|e| e.email.clone())
                .collect(),
        })
    }
}

impl MasDouble {
    /// What `mas-cli manage issue-compatibility-token <user>
    /// [--yes-i-want-to-grant-synapse-admin-privileges]` does: a new device in
    /// Synapse (when linked) and an `mct_` token for it, with Synapse admin
    /// rights when `admin`.
    pub async fn issue_compat_token(&self, localpart: &str, admin: bool) -> String {
        let inner = self.inner.clone();
        let id = self.id_of(localpart);
        self.on_runtime(async move {
            match inner.issue_compat_token(&id, admin).await {
                Ok((token, _)) => token,
                Err(e) => panic!("creating the device in Synapse: {e:?}"),
            }
        })
        .await
    }

    /// A personal access token (`mpt_`, no expiry) with the admin scope.
    pub fn add_personal_token(&self) -> String {
        let mut st = self.inner.state();
        let token = generate_token("mpt");
        let id = st.next_ulid();
        st.tokens.insert(
            token.clone(),
            Token::new(id, TokenKind::Personal, [ADMIN_SCOPE], None),
        );
        token
    }

    /// Revokes a token (its session ends): the admin API then answers
    /// "Access token revoked", introspection `{"active": false}`.
    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = self.inner.state().tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    /// Makes every client-credentials token expire now, as if the run had
    /// outlived them: the next admin request with one gets 401 "Access token
    /// expired".
    pub fn expire_admin_tokens(&self) {
        let past = Instant::now() - Duration::from_millis(1);
        for t in self.inner.state().tokens.values_mut() {
            if t.expires.is_some() {
                t.expires = Some(past);
            }
        }
    }

    /// Every request received, in order: (method, path with its query string).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.view().requests()
    }

    /// How many `mat_` tokens the client-credentials grant handed out.
    pub fn tokens_issued(&self) -> usize {
        self.inner.state().tokens_issued
    }

    /// Whether `password` is the password MAS holds for the user, whatever the
    /// user's state (see `/test/login` for a full login check).
    pub fn check_password(&self, localpart: &str, password: &str) -> bool {
        let st = self.inner.state();
        st.by_username(localpart)
            .is_some_and(|u| u.password.as_deref() == Some(password))
    }

    fn id_of(&self, localpart: &str) -> String {
        match self.inner.state().by_username(localpart) {
            Some(u) => u.id.clone(),
            None => panic!("no user {localpart:?} in the MAS double"),
        }
    }

    /// Runs `fut` on the double's runtime, where its HTTP client lives, and
    /// passes a panic on to the caller.
    async fn on_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self.runtime.spawn(fut).await {
            Ok(v) => v,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the MAS double's task: {e}"),
            },
        }
    }
}

impl Drop for MasDouble {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------- state

#[derive(Default)]
struct State {
    /// By ULID: MAS lists in ULID order, which is creation order.
    users: BTreeMap<String, User>,
    emails: BTreeMap<String, Email>,
    tokens: HashMap<String, Token>,
    /// Personal sessions by ULID.
    personal_sessions: BTreeMap<String, PersonalSession>,
    requests: Vec<(String, String)>,
    tokens_issued: usize,
    synapse: Option<SynapseLink>,
    last_ulid: u128,
}

struct User {
    id: String,
    username: String,
    created_at: SystemTime,
    locked_at: Option<SystemTime>,
    deactivated_at: Option<SystemTime>,
    admin: bool,
    /// MAS keeps it through deactivation.
    password: Option<String>,
}

struct Email {
    id: String,
    created_at: SystemTime,
    user_id: String,
    email: String,
}

/// A personal session: a token acting as `actor`, owned by the admin client.
struct PersonalSession {
    id: String,
    created_at: SystemTime,
    revoked_at: Option<SystemTime>,
    actor: String,
    human_name: String,
    scope: BTreeSet<String>,
    /// The session's current token, until the session is revoked.
    token: Option<String>,
}

#[derive(Clone)]
enum TokenKind {
    /// Client credentials (`mat_`).
    ClientCredentials,
    /// Personal access token owned by a client (`mpt_`).
    Personal,
    /// The token of a personal session acting as a user (`mpt_`).
    Acting { session_id: String },
    /// Compatibility session (`mct_`) of a user, with its Matrix device.
    Compat {
        user_id: String,
        device_id: String,
        synapse_admin: bool,
    },
}

struct Token {
    /// The `jti`.
    id: String,
    kind: TokenKind,
    scope: BTreeSet<String>,
    created_at: SystemTime,
    /// Monotonic deadline; `None` never expires (compat and personal tokens).
    expires: Option<Instant>,
    expires_at: Option<SystemTime>,
    /// The session was finished (logout, deactivation) or the token revoked.
    revoked: bool,
}

impl Token {
    fn new<'a>(
        id: String,
        kind: TokenKind,
        scope: impl IntoIterator<Item = &'a str>,
        ttl: Option<Duration>,
    ) -> Token {
        Token {
            id,
            kind,
            scope: scope.into_iter().map(str::to_owned).collect(),
            created_at: SystemTime::now(),
            expires: ttl.map(|t| Instant::now() + t),
            expires_at: ttl.map(|t| SystemTime::now() + t),
            revoked: false,
        }
    }

    fn expired(&self) -> bool {
        self.expires.is_some_and(|e| e < Instant::now())
    }
}

impl State {
    fn by_username(&self, username: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == username)
    }

    /// A new ULID, strictly above the last so that creation order is ID order.
    fn next_ulid(&mut self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis();
        let mut rnd = [0u8; 10];
        getrandom::fill(&mut rnd).expect("random bytes");
        let mut v = ms << 80;
        for (i, b) in rnd.iter().enumerate() {
            v |= (*b as u128) << (8 * (9 - i));
        }
        if v <= self.last_ulid {
            v = self.last_ulid + 1;
        }
        self.last_ulid = v;
        ulid_encode(v)
    }

    fn emails_of(&self, user_id: &str) -> Vec<String> {
        self.emails
            .values()
            .filter(|e| e.user_id == user_id)
            .map(|e| e.email.clone())
            .collect()
    }
}

// ---------------------------------------------------------------- operations

struct Inner {
    config: MasConfig,
    base: String,
    state: Mutex<State>,
    http: reqwest::Client,
}

/// A failed call to Synapse, as MAS's error chain titles it.
#[derive(Debug)]
struct SynapseFailure(Vec<String>);

/// One of Synapse's `/_synapse/mas/*` endpoints, with the contexts MAS's
/// `SynapseConnection` gives its errors (the first titles of an admin API error).
struct SynapseCall {
    endpoint: &'static str,
    /// The request did not complete.
    failed: &'static str,
    /// Synapse answered with an error status.
    unexpected: &'static str,
}

const PROVISION_USER: SynapseCall = SynapseCall {
    endpoint: "provision_user",
    failed: "Failed to provision user in Synapse",
    unexpected: "Unexpected HTTP response while provisioning user in Synapse",
};
const DELETE_USER: SynapseCall = SynapseCall {
    endpoint: "delete_user",
    failed: "Failed to delete user in Synapse",
    unexpected: "Unexpected HTTP response while deleting user in Synapse",
};
const REACTIVATE_USER: SynapseCall = SynapseCall {
    endpoint: "reactivate_user",
    failed: "Failed to reactivate user in Synapse",
    unexpected: "Unexpected HTTP response while reactivating user in Synapse",
};
const UPSERT_DEVICE: SynapseCall = SynapseCall {
    endpoint: "upsert_device",
    failed: "Failed to create device in Synapse",
    unexpected: "Unexpected HTTP response while creating device in Synapse",
};

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test must not turn every later request into a poison error.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn add_user(&self, localpart: &str, password: Option<String>, admin: bool) -> String {
        let id = {
            let mut st = self.state();
            assert!(
                st.by_username(localpart).is_none(),
                "user {localpart:?} already exists in the MAS double"
            );
            let id = st.next_ulid();
            st.users.insert(
                id.clone(),
                User {
                    id: id.clone(),
                    username: localpart.to_owned(),
                    created_at: SystemTime::now(),
                    locked_at: None,
                    deactivated_at: None,
                    admin,
                    password,
                },
            );
            id
        };
        // The admin API's "add user" provisions at once, without e-mails.
        let body = json!({"localpart": localpart, "locked": false});
        if let Err(e) = self.synapse_call(&PROVISION_USER, body).await {
            panic!("provisioning {localpart} in Synapse: {e:?}");
        }
        id
    }

    /// MAS's ProvisionUserJob: the lock flag and the e-mails, to Synapse.
    async fn provision(&self, id: &str) -> Result<(), SynapseFailure> {
        let body = {
            let st = self.state();
            let u = &st.users[id];
            json!({
                "localpart": u.username,
                "set_emails": st.emails_of(id),
                "locked": u.locked_at.is_some(),
            })
        };
        self.synapse_call(&PROVISION_USER, body).await
    }

    async fn set_locked(&self, id: &str, locked: bool) -> Result<(), SynapseFailure> {
        {
            let mut st = self.state();
            let u = st.users.get_mut(id).expect("a known user");
            match (locked, u.locked_at) {
                (true, None) => u.locked_at = Some(SystemTime::now()),
                (false, Some(_)) => u.locked_at = None,
                _ => {}
            }
        }
        self.provision(id).await
    }

    /// Deactivation: MAS's handler sets `deactivated_at`; its job then ends the
    /// sessions, deletes the e-mails, and asks Synapse to deactivate.
    async fn deactivate(&self, id: &str, erase: bool) -> Result<(), SynapseFailure> {
        let localpart = {
            let mut st = self.state();
            let u = st.users.get_mut(id).expect("a known user");
            if u.deactivated_at.is_none() {
                u.deactivated_at = Some(SystemTime::now());
            }
            let localpart = u.username.clone();
            for t in st.tokens.values_mut() {
                if matches!(&t.kind, TokenKind::Compat { user_id, .. } if user_id == id) {
                    t.revoked = true;
                }
            }
            st.emails.retain(|_, e| e.user_id != id);
            localpart
        };
        self.synapse_call(
            &DELETE_USER,
            json!({"localpart": localpart, "erase": erase}),
        )
        .await
    }

    /// Reactivation: Synapse first; only if that worked, `deactivated_at` is cleared.
    async fn reactivate(&self, id: &str) -> Result<(), SynapseFailure> {
        let localpart = self.state().users[id].username.clone();
        self.synapse_call(&REACTIVATE_USER, json!({"localpart": localpart}))
            .await?;
        self.state()
            .users
            .get_mut(id)
            .expect("a known user")
            .deactivated_at = None;
        Ok(())
    }

    /// A compatibility session with a new device: the device exists in Synapse
    /// before the token does, as with `mas-cli manage issue-compatibility-token`
    /// (Synapse refuses a token whose device it does not know).
    async fn issue_compat_token(
        &self,
        id: &str,
        synapse_admin: bool,
    ) -> Result<(String, String), SynapseFailure> {
        let device_id = random_alnum(10);
        let localpart = self.state().users[id].username.clone();
        self.synapse_call(
            &UPSERT_DEVICE,
            json!({"localpart": localpart, "device_id": device_id}),
        )
        .await?;
        let mut st = self.state();
        let token = generate_token("mct");
        let jti = st.next_ulid();
        st.tokens.insert(
            token.clone(),
            Token::new(
                jti,
                TokenKind::Compat {
                    user_id: id.to_owned(),
                    device_id: device_id.clone(),
                    synapse_admin,
                },
                [],
                None,
            ),
        );
        Ok((token, device_id))
    }

    /// `POST {synapse}/_synapse/mas/{endpoint}` with the shared secret, as MAS
    /// does; nothing when no Synapse is linked.
    async fn synapse_call(&self, call: &SynapseCall, body: Value) -> Result<(), SynapseFailure> {
        let Some(link) = self.state().synapse.clone() else {
            return Ok(());
        };
        let url = format!(
            "{}/_synapse/mas/{}",
            link.url.trim_end_matches('/'),
            call.endpoint
        );
        let resp = match self
            .http
            .post(&url)
            .bearer_auth(&link.secret)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let mut titles = vec![call.failed.to_owned()];
                titles.extend(error_chain(&e));
                return Err(SynapseFailure(titles));
            }
        };
        if let Err(e) = resp.error_for_status_ref() {
            let matrix = resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| {
                    Some(format!(
                        "{}: {}",
                        v["errcode"].as_str()?,
                        v["error"].as_str()?
                    ))
                })
                .unwrap_or_else(|| "(no specific error)".into());
            let mut titles = vec![call.unexpected.to_owned(), matrix];
            titles.extend(error_chain(&e));
            return Err(SynapseFailure(titles));
        }
        Ok(())
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut head = Some(e);
    while let Some(e) = head {
        out.push(e.to_string());
        head = e.source();
    }
    out
}

// ---------------------------------------------------------------- HTTP

type Resp = Response<Full<Bytes>>;

async fn handle(
    inner: Arc<Inner>,
    req: Request<hyper::body::Incoming>,
) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    inner.state().requests.push((
        parts.method.to_string(),
        parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    ));
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(route(&inner, &parts, &body).await)
}

async fn route(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let path = parts.uri.path();
    let m = &parts.method;
    match path {
        "/.well-known/openid-configuration" if m == Method::GET => discovery(inner),
        "/oauth2/token" if m == Method::POST => token_endpoint(inner, parts, body),
        "/oauth2/introspect" if m == Method::POST => introspect(inner, parts, body),
        "/test/login" if m == Method::POST => test_login(inner, parts, body).await,
        "/.well-known/openid-configuration"
        | "/oauth2/token"
        | "/oauth2/introspect"
        | "/test/login" => empty(StatusCode::METHOD_NOT_ALLOWED),
        _ => match path.strip_prefix("/api/admin/v1/") {
            Some(rest) => admin(inner, parts, body, rest).await,
            None => empty(StatusCode::NOT_FOUND),
        },
    }
}

fn discovery(inner: &Inner) -> Resp {
    let b = &inner.base;
    json_resp(
        StatusCode::OK,
        &json!({
            "issuer": format!("{b}/"),
            "authorization_endpoint": format!("{b}/authorize"),
            "token_endpoint": format!("{b}/oauth2/token"),
            "jwks_uri": format!("{b}/oauth2/keys.json"),
            "registration_endpoint": format!("{b}/oauth2/registration"),
            "scopes_supported": ["openid", "email"],
            "response_types_supported": ["code", "id_token", "code id_token"],
            "response_modes_supported": ["form_post", "query", "fragment"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code"
            ],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "client_secret_jwt",
                "private_key_jwt", "none"
            ],
            "revocation_endpoint": format!("{b}/oauth2/revoke"),
            "introspection_endpoint": format!("{b}/oauth2/introspect"),
            "userinfo_endpoint": format!("{b}/oauth2/userinfo"),
            "device_authorization_endpoint": format!("{b}/oauth2/device"),
            "code_challenge_methods_supported": ["plain", "S256"],
            "subject_types_supported": ["public"],
            "prompt_values_supported": ["login"],
            "org.matrix.matrix-authentication-service.graphql_endpoint": format!("{b}/graphql"),
            "account_management_uri": format!("{b}/account/"),
            "account_management_actions_supported": [
                "org.matrix.profile",
                "org.matrix.devices_list",
                "org.matrix.device_view",
                "org.matrix.device_delete",
                "org.matrix.cross_signing_reset",
                "org.matrix.sessions_list",
                "org.matrix.session_view",
                "org.matrix.session_end"
            ],
        }),
    )
}

/// Client credentials as MAS parses them: HTTP basic, or a form `client_id`.
enum ClientAuth {
    Basic(String, String),
    Bearer(String),
    FormOnly,
    None,
    Invalid,
}

fn client_auth(parts: &Parts, form: &HashMap<String, String>) -> ClientAuth {
    match parts.headers.get(AUTHORIZATION).map(|h| h.to_str()) {
        Some(Ok(h)) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = base64_decode(h[6..].trim()).and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((id, secret)) => ClientAuth::Basic(id.to_owned(), secret.to_owned()),
                None => ClientAuth::Invalid,
            }
        }
        Some(Ok(h)) if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") => {
            ClientAuth::Bearer(h[7..].trim().to_owned())
        }
        Some(_) => ClientAuth::Invalid,
        None if form.contains_key("client_id") => ClientAuth::FormOnly,
        None => ClientAuth::None,
    }
}

fn token_endpoint(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let form = parse_form(body);
    let cfg = &inner.config;
    // MAS's order: the Authorization header, then the form, then the client.
    let auth = client_auth(parts, &form);
    if matches!(auth, ClientAuth::Invalid) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid Authorization header",
        );
    }
    let grant = form.get("grant_type").map(String::as_str);
    let known = [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    ];
    if !grant.is_some_and(|g| known.contains(&g)) {
        // The form does not deserialise; MAS quotes serde's message after this.
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Failed to deserialize form",
        );
    }
    match auth {
        ClientAuth::None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "No credentials were presented",
            )
        }
        // The admin client authenticates with client_secret_basic: a secret in the
        // form (client_secret_post) or a bearer token does not verify.
        ClientAuth::FormOnly | ClientAuth::Bearer(_) | ClientAuth::Invalid => {
            return invalid_client()
        }
        ClientAuth::Basic(id, secret) => {
            if id != cfg.client_id || secret != cfg.client_secret {
                return invalid_client();
            }
        }
    }
    // An admin client is registered for client credentials only.
    if grant != Some("client_credentials") {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "The client is not authorized to request an access token using this method.",
        );
    }
    let scope: BTreeSet<String> = form
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut st = inner.state();
    let token = generate_token("mat");
    let jti = st.next_ulid();
    let mut t = Token::new(jti, TokenKind::ClientCredentials, [], Some(cfg.token_ttl));
    t.scope = scope.clone();
    st.tokens.insert(token.clone(), t);
    st.tokens_issued += 1;
    let mut reply = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": cfg.token_ttl.as_secs(),
    });
    // MAS returns the scope only when it is not empty.
    if !scope.is_empty() {
        reply["scope"] = json!(scope_string(&scope));
    }
    let mut resp = json_resp(StatusCode::OK, &reply);
    resp.headers_mut()
        .insert("cache-control", "no-store".parse().expect("a header"));
    resp.headers_mut()
        .insert("pragma", "no-cache".parse().expect("a header"));
    resp
}

fn invalid_client() -> Resp {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    )
}

/// RFC 7662 introspection, as MAS answers Synapse (bearer = the shared secret).
fn introspect(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let form = parse_form(body);
    let cfg = &inner.config;
    let st = inner.state();
    match client_auth(parts, &form) {
        ClientAuth::Bearer(secret) => {
            if st.synapse.as_ref().map(|l| &l.secret) != Some(&secret) {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "access_denied",
                    "bearer token presented is invalid",
                );
            }
        }
        ClientAuth::Basic(id, secret) => {
            if id != cfg.client_id || secret != cfg.client_secret {
                return invalid_client();
            }
        }
        ClientAuth::FormOnly => return invalid_client(),
        ClientAuth::None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "No credentials were presented",
            )
        }
        ClientAuth::Invalid => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid Authorization header",
            )
        }
    }
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Failed to deserialize form: missing field `token`",
        );
    };
    let inactive = || json_resp(StatusCode::OK, &json!({"active": false}));
    let Ok(kind) = token_type(token) else {
        return inactive();
    };
    let is_access = matches!(kind, "mat" | "mct" | "mpt");
    match form.get("token_type_hint").map(String::as_str) {
        Some("access_token") if !is_access => return inactive(),
        Some("refresh_token") if is_access => return inactive(),
        _ => {}
    }
    let Some(t) = st.tokens.get(token.as_str()) else {
        return inactive();
    };
    if t.revoked || t.expired() {
        return inactive();
    }
    let iat = unix(t.created_at);
    let reply = match &t.kind {
        TokenKind::ClientCredentials | TokenKind::Personal => {
            let mut r = json!({
                "active": true,
                "scope": scope_string(&t.scope),
                "client_id": cfg.client_id,
                "token_type": "access_token",
                "iat": iat,
                "nbf": iat,
                "jti": t.id,
            });
            if let Some(exp) = t.expires_at {
                r["exp"] = json!(unix(exp));
                r["expires_in"] = json!(unix(exp) - unix(SystemTime::now()));
            }
            r
        }
        TokenKind::Acting { session_id } => {
            let Some(session) = st.personal_sessions.get(session_id) else {
                return inactive();
            };
            let Some(user) = st.users.get(&session.actor) else {
                return inactive();
            };
            // MAS: the session must not be revoked, the actor neither locked
            // nor deactivated.
            if session.revoked_at.is_some()
                || user.locked_at.is_some()
                || user.deactivated_at.is_some()
            {
                return inactive();
            }
            // MAS adds each API scope's other name (stable, unstable).
            let mut scope = session.scope.clone();
            if API_SCOPES.iter().any(|s| scope.contains(*s)) {
                scope.extend(API_SCOPES.iter().map(|s| s.to_string()));
            }
            let mut r = json!({
                "active": true,
                "scope": scope_string(&scope),
                "client_id": cfg.client_id,
                "username": user.username,
                "token_type": "access_token",
                "iat": iat,
                "nbf": iat,
                "sub": user.id,
            });
            if let Some(exp) = t.expires_at {
                r["exp"] = json!(unix(exp));
                r["expires_in"] = json!(unix(exp) - unix(SystemTime::now()));
            }
            r
        }
        TokenKind::Compat {
            user_id,
            device_id,
            synapse_admin,
        } => {
            let Some(user) = st.users.get(user_id) else {
                return inactive();
            };
            if user.locked_at.is_some() || user.deactivated_at.is_some() {
                return inactive();
            }
            let mut scope: BTreeSet<String> = API_SCOPES.iter().map(|s| s.to_string()).collect();
            // Synapse announces that it reads `device_id`; older ones read the
            // device from the scope.
            let explicit = parts
                .headers
                .get("x-mas-supports-device-id")
                .is_some_and(|v| v == "1");
            if !explicit {
                scope.insert(format!("urn:matrix:client:device:{device_id}"));
                scope.insert(format!(
                    "urn:matrix:org.matrix.msc2967.client:device:{device_id}"
                ));
            }
            if *synapse_admin {
                scope.insert(SYNAPSE_ADMIN_SCOPE.to_owned());
            }
            json!({
                "active": true,
                "scope": scope_string(&scope),
                "client_id": "legacy",
                "username": user.username,
                "token_type": "access_token",
                "iat": iat,
                "nbf": iat,
                "sub": user.id,
                "device_id": device_id,
            })
        }
    };
    json_resp(StatusCode::OK, &reply)
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn test_login(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let login: LoginBody = match json_body(&parts.headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let refusal = |why: &str| {
        json_resp(
            StatusCode::FORBIDDEN,
            &json!({"errcode": "M_FORBIDDEN", "error": why}),
        )
    };
    let id = {
        let st = inner.state();
        let Some(u) = st.by_username(&login.username) else {
            return refusal("Invalid username/password");
        };
        if u.password.as_deref() != Some(login.password.as_str()) {
            return refusal("Invalid username/password");
        }
        if u.deactivated_at.is_some() {
            return refusal("User is deactivated");
        }
        if u.locked_at.is_some() {
            return refusal("User is locked");
        }
        u.id.clone()
    };
    match inner.issue_compat_token(&id, false).await {
        Ok((token, device_id)) => json_resp(
            StatusCode::OK,
            &json!({"access_token": token, "device_id": device_id}),
        ),
        Err(SynapseFailure(titles)) => json_resp(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"errcode": "M_UNKNOWN", "error": titles.join(": ")}),
        ),
    }
}

// ---------------------------------------------------------------- admin API

enum Admin {
    ListUsers,
    ByUsername(String),
    GetUser(String),
    UserAction(String, &'static str),
    ListEmails,
    AddEmail,
    AddPersonalSession,
    GetPersonalSession(String),
    RevokePersonalSession(String),
}

async fn admin(inner: &Inner, parts: &Parts, body: &Bytes, rest: &str) -> Resp {
    let segs: Vec<&str> = rest.split('/').collect();
    let get = parts.method == Method::GET;
    let post = parts.method == Method::POST;
    let route = match segs.as_slice() {
        ["users", ""] | ["users", "by-username", ""] | ["users", "", _] => {
            return empty(StatusCode::NOT_FOUND)
        }
        ["users"] if get => Admin::ListUsers,
        ["users", "by-username", name] if get => Admin::ByUsername(
            percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned(),
        ),
        ["users", id] if get => Admin::GetUser(id.to_string()),
        ["users", id, action] if post => match *action {
            "reactivate" => Admin::UserAction(id.to_string(), "reactivate"),
            "lock" => Admin::UserAction(id.to_string(), "lock"),
            "unlock" => Admin::UserAction(id.to_string(), "unlock"),
            "deactivate" => Admin::UserAction(id.to_string(), "deactivate"),
            "set-password" => Admin::UserAction(id.to_string(), "set-password"),
            _ => return empty(StatusCode::NOT_FOUND),
        },
        ["user-emails"] if get => Admin::ListEmails,
        ["user-emails"] if post => Admin::AddEmail,
        ["personal-sessions"] if post => Admin::AddPersonalSession,
        ["personal-sessions", id] if get => Admin::GetPersonalSession(id.to_string()),
        ["personal-sessions", id, "revoke"] if post => Admin::RevokePersonalSession(id.to_string()),
        ["users"]
        | ["users", "by-username", _]
        | ["users", _]
        | ["user-emails"]
        | ["personal-sessions"]
        | ["personal-sessions", _]
        | ["personal-sessions", _, "revoke"] => return empty(StatusCode::METHOD_NOT_ALLOWED),
        ["users", _, "reactivate" | "lock" | "unlock" | "deactivate" | "set-password"] => {
            return empty(StatusCode::METHOD_NOT_ALLOWED)
        }
        _ => return empty(StatusCode::NOT_FOUND),
    };
    // MAS's extractors run in this order: the token, then the path, then the body.
    if let Err(r) = authorize(inner, &parts.headers) {
        return r;
    }
    let query = parts.uri.query().unwrap_or("");
    match route {
        Admin::ListUsers => list_users(inner, query),
        Admin::ByUsername(name) => {
            let st = inner.state();
            match st.by_username(&name) {
                Some(u) => json_resp(
                    StatusCode::OK,
                    &single_user(u, format!("/api/admin/v1/users/by-username/{name}")),
                ),
                None => errors(
                    StatusCode::NOT_FOUND,
                    &[&format!("User with username {name:?} not found")],
                ),
            }
        }
        Admin::GetUser(id) => {
            let Some(id) = ulid_canonical(&id) else {
                return errors(StatusCode::BAD_REQUEST, &["Invalid ULID in path"]);
            };
            let st = inner.state();
            match st.users.get(&id) {
                Some(u) => json_resp(
                    StatusCode::OK,
                    &single_user(u, format!("/api/admin/v1/users/{id}")),
                ),
                None => user_not_found(&id),
            }
        }
        Admin::UserAction(id, action) => {
            let Some(id) = ulid_canonical(&id) else {
                return errors(StatusCode::BAD_REQUEST, &["Invalid ULID in path"]);
            };
            user_action(inner, parts, body, &id, action).await
        }
        Admin::ListEmails => list_emails(inner, query),
        Admin::AddEmail => add_email(inner, parts, body).await,
        Admin::AddPersonalSession => add_personal_session(inner, parts, body).await,
        Admin::GetPersonalSession(id) | Admin::RevokePersonalSession(id) => {
            let Some(id) = ulid_canonical(&id) else {
                return errors(StatusCode::BAD_REQUEST, &["Invalid ULID in path"]);
            };
            let revoke = parts.method == Method::POST;
            personal_session_action(inner, &id, revoke)
        }
    }
}

fn authorize(inner: &Inner, headers: &HeaderMap) -> Result<(), Resp> {
    let unauthorized = |titles: &[&str]| Err(errors(StatusCode::UNAUTHORIZED, titles));
    let Some(h) = headers.get(AUTHORIZATION) else {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            &["Missing authorization header"],
        ));
    };
    let token = match h.to_str() {
        Ok(h) if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") => h[7..].trim(),
        _ => {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                &["Invalid authorization header"],
            ))
        }
    };
    match token_type(token) {
        Err(e) => return unauthorized(&["Invalid type of access token", &e]),
        Ok("mat" | "mpt") => {}
        Ok(_) => return unauthorized(&["Invalid type of access token"]),
    }
    let st = inner.state();
    let Some(t) = st.tokens.get(token) else {
        return unauthorized(&["Unknown access token"]);
    };
    if t.revoked {
        return unauthorized(&["Access token revoked"]);
    }
    if t.expired() {
        return unauthorized(&["Access token expired"]);
    }
    if !t.scope.contains(ADMIN_SCOPE) {
        return unauthorized(&["Missing urn:mas:admin scope"]);
    }
    Ok(())
}

fn user_not_found(id: &str) -> Resp {
    errors(StatusCode::NOT_FOUND, &[&format!("User ID {id} not found")])
}

#[derive(Deserialize, Default)]
struct DeactivateBody {
    #[serde(default)]
    skip_erase: bool,
}

#[derive(Deserialize)]
struct SetPasswordBody {
    password: String,
    skip_password_check: Option<bool>,
}

async fn user_action(inner: &Inner, parts: &Parts, body: &Bytes, id: &str, action: &str) -> Resp {
    let self_path = format!("/api/admin/v1/users/{id}/{action}");
    // Body first (axum extracts it before the handler runs), then the handler's checks.
    let (set_password, skip_erase) = match action {
        "set-password" => match json_body::<SetPasswordBody>(&parts.headers, body) {
            Ok(b) => (Some(b), false),
            Err(r) => return r,
        },
        // `Option<Json<_>>`: no Content-Type means no body; one that is not JSON is refused.
        "deactivate" if parts.headers.contains_key(CONTENT_TYPE) => {
            match json_body::<DeactivateBody>(&parts.headers, body) {
                Ok(b) => (None, b.skip_erase),
                Err(r) => return r,
            }
        }
        _ => (None, false),
    };
    if let Some(b) = set_password {
        // MAS checks the configuration before it looks the user up.
        if !inner.config.passwords_enabled {
            return errors(StatusCode::FORBIDDEN, &["Password auth is disabled"]);
        }
        let mut st = inner.state();
        let Some(u) = st.users.get_mut(id) else {
            return user_not_found(id);
        };
        if !b.skip_password_check.unwrap_or(false)
            && b.password.chars().count() < inner.config.min_password_length
        {
            return errors(StatusCode::BAD_REQUEST, &["Password is too weak"]);
        }
        u.password = Some(b.password);
        return empty(StatusCode::NO_CONTENT);
    }
    if !inner.state().users.contains_key(id) {
        return user_not_found(id);
    }
    match action {
        "reactivate" => {
            if let Err(SynapseFailure(titles)) = inner.reactivate(id).await {
                let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
                return errors(StatusCode::INTERNAL_SERVER_ERROR, &titles);
            }
        }
        "lock" | "unlock" => {
            if let Err(e) = inner.set_locked(id, action == "lock").await {
                eprintln!("MAS double: provisioning {id} in Synapse after {action}: {e:?}");
            }
        }
        "deactivate" => {
            if let Err(e) = inner.deactivate(id, !skip_erase).await {
                eprintln!("MAS double: deactivating {id} in Synapse: {e:?}");
            }
        }
        _ => unreachable!("routed actions only"),
    }
    let st = inner.state();
    json_resp(StatusCode::OK, &single_user(&st.users[id], self_path))
}

fn user_attributes(u: &User) -> Value {
    json!({
        "username": u.username,
        "created_at": rfc3339(u.created_at),
        "locked_at": u.locked_at.map(rfc3339),
        "deactivated_at": u.deactivated_at.map(rfc3339),
        "admin": u.admin,
        "legacy_guest": false,
    })
}

fn single_user(u: &User, self_path: String) -> Value {
    json!({
        "data": {
            "type": "user",
            "id": u.id,
            "attributes": user_attributes(u),
            "links": {"self": format!("/api/admin/v1/users/{}", u.id)},
        },
        "links": {"self": self_path},
    })
}

fn email_resource(e: &Email) -> (String, Value) {
    (
        e.id.clone(),
        json!({"created_at": rfc3339(e.created_at), "user_id": e.user_id, "email": e.email}),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum IncludeCount {
    True,
    False,
    Only,
}

struct Pagination {
    before: Option<String>,
    after: Option<String>,
    forward: bool,
    count: usize,
    include_count: IncludeCount,
}

fn pagination(query: &[(String, String)]) -> Result<Pagination, Resp> {
    let invalid = || errors(StatusCode::BAD_REQUEST, &["Invalid pagination parameters"]);
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let ulid = |k: &str| match get(k) {
        None => Ok(None),
        Some(v) => ulid_canonical(v).map(Some).ok_or_else(invalid),
    };
    let size = |k: &str| match get(k) {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid()),
        },
    };
    let before = ulid("page[before]")?;
    let after = ulid("page[after]")?;
    let first = size("page[first]")?;
    let last = size("page[last]")?;
    let include_count = match get("count") {
        None | Some("true") => IncludeCount::True,
        Some("false") => IncludeCount::False,
        Some("only") => IncludeCount::Only,
        Some(_) => return Err(invalid()),
    };
    let (forward, count) = match (first, last) {
        (Some(_), Some(_)) => {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                &["Cannot specify both `page[first]` and `page[last]` parameters"],
            ))
        }
        (None, None) => (true, 10),
        (Some(n), None) => (true, n),
        (None, Some(n)) => (false, n),
    };
    Ok(Pagination {
        before,
        after,
        forward,
        count,
        include_count,
    })
}

fn with_pagination(
    base: &str,
    before: Option<&str>,
    after: Option<&str>,
    forward: bool,
    n: usize,
) -> String {
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    let mut q = query.to_owned();
    if let Some(b) = before {
        q.push_str(&format!("&page[before]={b}"));
    }
    if let Some(a) = after {
        q.push_str(&format!("&page[after]={a}"));
    }
    q.push_str(&if forward {
        format!("&page[first]={n}")
    } else {
        format!("&page[last]={n}")
    });
    format!("{path}?{}", q.trim_start_matches('&'))
}

/// A page of `(id, attributes)` in ID order, as MAS's `PaginatedResponse`.
fn paginated(
    kind: &str,
    path: &str,
    items: Vec<(String, Value)>,
    p: &Pagination,
    base: &str,
) -> Value {
    let total = items.len();
    let base = match p.include_count {
        IncludeCount::True => base.to_owned(),
        other => {
            let sep = if base.contains('?') { '&' } else { '?' };
            let v = if other == IncludeCount::False {
                "false"
            } else {
                "only"
            };
            format!("{base}{sep}count={v}")
        }
    };
    if p.include_count == IncludeCount::Only {
        return json!({"meta": {"count": total}, "links": {"self": base}});
    }
    let mut window: Vec<(String, Value)> = items
        .into_iter()
        .filter(|(id, _)| p.after.as_ref().is_none_or(|a| id > a))
        .filter(|(id, _)| p.before.as_ref().is_none_or(|b| id < b))
        .collect();
    let (has_prev, has_next) = if p.forward {
        window.truncate(p.count + 1);
        let full = window.len() == p.count + 1;
        if full {
            window.pop();
        }
        (false, full)
    } else {
        let skip = window.len().saturating_sub(p.count + 1);
        window.drain(..skip);
        let full = window.len() == p.count + 1;
        if full {
            window.remove(0);
        }
        (full, false)
    };
    let mut links = json!({
        "self": with_pagination(&base, p.before.as_deref(), p.after.as_deref(), p.forward, p.count),
        "first": with_pagination(&base, None, None, true, p.count),
        "last": with_pagination(&base, None, None, false, p.count),
    });
    if has_next {
        let last = window.last().map(|(id, _)| id.as_str());
        links["next"] = json!(with_pagination(&base, None, last, p.forward, p.count));
    }
    if has_prev {
        let first = window.first().map(|(id, _)| id.as_str());
        links["prev"] = json!(with_pagination(&base, first, None, p.forward, p.count));
    }
    let data: Vec<Value> = window
        .into_iter()
        .map(|(id, attributes)| {
            json!({
                "type": kind,
                "id": id,
                "attributes": attributes,
                "links": {"self": format!("{path}/{id}")},
                "meta": {"page": {"cursor": id}},
            })
        })
        .collect();
    let mut out = json!({"data": data, "links": links});
    if p.include_count == IncludeCount::True {
        out["meta"] = json!({"count": total});
    }
    out
}

fn list_users(inner: &Inner, query: &str) -> Resp {
    let q = parse_query(query);
    let p = match pagination(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let invalid = || errors(StatusCode::BAD_REQUEST, &["Invalid filter parameters"]);
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let boolean = |k: &str| match get(k) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(invalid()),
    };
    let admin = match boolean("filter[admin]") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let guest = match boolean("filter[legacy-guest]") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let search = get("filter[search]");
    let status = match get("filter[status]") {
        None => None,
        Some(s @ ("active" | "locked" | "deactivated")) => Some(s),
        Some(_) => return invalid(),
    };
    // The canonical query, in MAS's order, for the links.
    let mut base = String::from("/api/admin/v1/users");
    let mut sep = '?';
    let mut add = |k: &str, v: &str| {
        base.push_str(&format!("{sep}{k}={v}"));
        sep = '&';
    };
    if let Some(a) = admin {
        add("filter[admin]", &a.to_string());
    }
    if let Some(g) = guest {
        add("filter[legacy-guest]", &g.to_string());
    }
    if let Some(s) = search {
        add("filter[search]", s);
    }
    if let Some(s) = status {
        add("filter[status]", s);
    }
    let st = inner.state();
    let items = st
        .users
        .values()
        .filter(|u| admin.is_none_or(|a| u.admin == a))
        .filter(|_| guest != Some(true))
        // ILIKE '%search%'
        .filter(|u| search.is_none_or(|s| u.username.to_lowercase().contains(&s.to_lowercase())))
        .filter(|u| match status {
            // "locked" and "deactivated" overlap: each looks at its own timestamp.
            Some("active") => u.locked_at.is_none() && u.deactivated_at.is_none(),
            Some("locked") => u.locked_at.is_some(),
            Some("deactivated") => u.deactivated_at.is_some(),
            _ => true,
        })
        .map(|u| (u.id.clone(), user_attributes(u)))
        .collect();
    json_resp(
        StatusCode::OK,
        &paginated("user", "/api/admin/v1/users", items, &p, &base),
    )
}

fn list_emails(inner: &Inner, query: &str) -> Resp {
    let q = parse_query(query);
    let p = match pagination(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let user = match get("filter[user]") {
        None => None,
        Some(v) => match ulid_canonical(v) {
            Some(id) => Some(id),
            None => return errors(StatusCode::BAD_REQUEST, &["Invalid filter parameters"]),
        },
    };
    let email = get("filter[email]");
    let st = inner.state();
    let mut base = String::from("/api/admin/v1/user-emails");
    if let Some(u) = &user {
        if !st.users.contains_key(u) {
            return user_not_found(u);
        }
        base.push_str(&format!("?filter[user]={u}"));
    }
    if let Some(e) = email {
        let sep = if base.contains('?') { '&' } else { '?' };
        base.push_str(&format!("{sep}filter[email]={e}"));
    }
    let items = st
        .emails
        .values()
        .filter(|e| user.as_ref().is_none_or(|u| &e.user_id == u))
        .filter(|e| email.is_none_or(|m| e.email.eq_ignore_ascii_case(m)))
        .map(email_resource)
        .collect();
    json_resp(
        StatusCode::OK,
        &paginated("user-email", "/api/admin/v1/user-emails", items, &p, &base),
    )
}

#[derive(Deserialize)]
struct AddEmailBody {
    user_id: String,
    email: String,
}

async fn add_email(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let b: AddEmailBody = match json_body(&parts.headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(user_id) = ulid_canonical(&b.user_id) else {
        return text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: user_id: invalid ULID",
        );
    };
    let resource = {
        let mut st = inner.state();
        if !st.users.contains_key(&user_id) {
            return user_not_found(&user_id);
        }
        if let Err(cause) = email_problem(&b.email) {
            return errors(
                StatusCode::BAD_REQUEST,
                &[&format!("Email {:?} is not valid", b.email), cause],
            );
        }
        // MAS compares addresses lower-cased.
        if st
            .emails
            .values()
            .any(|e| e.email.eq_ignore_ascii_case(&b.email))
        {
            return errors(
                StatusCode::CONFLICT,
                &[&format!("User email {:?} already in use", b.email)],
            );
        }
        let id = st.next_ulid();
        let e = Email {
            id: id.clone(),
            created_at: SystemTime::now(),
            user_id: user_id.clone(),
            email: b.email,
        };
        let (_, attributes) = email_resource(&e);
        st.emails.insert(id.clone(), e);
        json!({
            "data": {
                "type": "user-email",
                "id": id,
                "attributes": attributes,
                "links": {"self": format!("/api/admin/v1/user-emails/{id}")},
            },
            "links": {"self": format!("/api/admin/v1/user-emails/{id}")},
        })
    };
    if let Err(e) = inner.provision(&user_id).await {
        eprintln!("MAS double: provisioning {user_id}'s e-mails in Synapse: {e:?}");
    }
    json_resp(StatusCode::CREATED, &resource)
}

#[derive(Deserialize)]
struct AddPersonalSessionBody {
    actor_user_id: String,
    human_name: String,
    scope: String,
    expires_in: Option<u32>,
}

/// RFC 6749's scope-token characters (MAS's `ScopeToken` parser).
fn nqchar(c: char) -> bool {
    c == '\x21' || ('\x23'..='\x5B').contains(&c) || ('\x5D'..='\x7E').contains(&c)
}

/// MAS's `PersonalSession` resource; the token only when it was just made.
fn personal_session_resource(
    st: &State,
    owner: &str,
    p: &PersonalSession,
    with_token: bool,
) -> Value {
    let token = p.token.as_ref().and_then(|t| st.tokens.get(t));
    let mut attributes = json!({
        "created_at": rfc3339(p.created_at),
        "revoked_at": p.revoked_at.map(rfc3339),
        "owner_user_id": null,
        "owner_client_id": owner,
        "actor_user_id": p.actor,
        "human_name": p.human_name,
        "scope": scope_string(&p.scope),
        "last_active_at": null,
        "last_active_ip": null,
        "expires_at": token.and_then(|t| t.expires_at).map(rfc3339),
    });
    if with_token {
        attributes["access_token"] = json!(p.token);
    }
    let path = format!("/api/admin/v1/personal-sessions/{}", p.id);
    json!({
        "data": {"type": "personal-session", "id": p.id, "attributes": attributes,
                 "links": {"self": path}},
        "links": {"self": path},
    })
}

/// `POST /personal-sessions`, in MAS's order of checks: the body, the
/// actor (404, then 410 when deactivated; a locked actor is allowed), the
/// scope (400); then the session, its `mpt_` token, and the devices its
/// scope names, created in Synapse.
async fn add_personal_session(inner: &Inner, parts: &Parts, body: &Bytes) -> Resp {
    let b: AddPersonalSessionBody = match json_body(&parts.headers, body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(actor) = ulid_canonical(&b.actor_user_id) else {
        return text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize the JSON body into the target type: actor_user_id: invalid ULID",
        );
    };
    let scope: Option<BTreeSet<String>> = b
        .scope
        .split(' ')
        .map(|t| (!t.is_empty() && t.chars().all(nqchar)).then(|| t.to_owned()))
        .collect();
    let (username, devices) = {
        let st = inner.state();
        let Some(u) = st.users.get(&actor) else {
            return errors(StatusCode::NOT_FOUND, &["User not found"]);
        };
        if u.deactivated_at.is_some() {
            return errors(StatusCode::GONE, &["User is not active"]);
        }
        let Some(scope) = &scope else {
            return errors(StatusCode::BAD_REQUEST, &["Invalid scope"]);
        };
        let devices: Vec<String> = scope
            .iter()
            .filter_map(|t| t.strip_prefix("urn:matrix:client:device:"))
            .map(str::to_owned)
            .collect();
        (u.username.clone(), devices)
    };
    for device_id in devices {
        let body = json!({"localpart": username, "device_id": device_id});
        if let Err(SynapseFailure(mut titles)) = inner.synapse_call(&UPSERT_DEVICE, body).await {
            titles.insert(0, "Failed to provision device".into());
            let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
            return errors(StatusCode::INTERNAL_SERVER_ERROR, &titles);
        }
    }
    let mut st = inner.state();
    let id = st.next_ulid();
    let token = generate_token("mpt");
    let ttl = b.expires_in.map(|s| Duration::from_secs(u64::from(s)));
    let mut t = Token::new(
        st.next_ulid(),
        TokenKind::Acting {
            session_id: id.clone(),
        },
        [],
        ttl,
    );
    let scope = scope.expect("checked above");
    t.scope = scope.clone();
    st.tokens.insert(token.clone(), t);
    let session = PersonalSession {
        id: id.clone(),
        created_at: SystemTime::now(),
        revoked_at: None,
        actor,
        human_name: b.human_name,
        scope,
        token: Some(token),
    };
    let resource = personal_session_resource(&st, &inner.config.client_id, &session, true);
    st.personal_sessions.insert(id, session);
    json_resp(StatusCode::CREATED, &resource)
}

/// `GET /personal-sessions/{id}` and `POST …/revoke` (409 when revoked
/// already; revoking ends the token at once).
fn personal_session_action(inner: &Inner, id: &str, revoke: bool) -> Resp {
    let mut st = inner.state();
    let Some(p) = st.personal_sessions.get(id) else {
        return errors(
            StatusCode::NOT_FOUND,
            &[&format!("Personal session with ID {id} not found")],
        );
    };
    if revoke {
        if p.revoked_at.is_some() {
            return errors(
                StatusCode::CONFLICT,
                &[&format!("Personal session with ID {id} is already revoked")],
            );
        }
        let token = st.personal_sessions.get_mut(id).and_then(|p| {
            p.revoked_at = Some(SystemTime::now());
            p.token.take()
        });
        if let Some(t) = token.and_then(|t| st.tokens.get_mut(&t)) {
            t.revoked = true;
        }
    }
    let p = &st.personal_sessions[id];
    let resource = personal_session_resource(&st, &inner.config.client_id, p, false);
    json_resp(StatusCode::OK, &resource)
}

/// The cause lettre gives for an address it refuses, roughly.
fn email_problem(email: &str) -> Result<(), &'static str> {
    let Some((user, domain)) = email.rsplit_once('@') else {
        return Err("Missing domain or user");
    };
    if user.is_empty() || domain.is_empty() {
        return Err("Missing domain or user");
    }
    if user
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"@\\".contains(c))
    {
        return Err("Invalid email user");
    }
    if !domain
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
    {
        return Err("Invalid email domain");
    }
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn json_resp(status: StatusCode, v: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("a response")
}

/// MAS's admin API error body.
fn errors(status: StatusCode, titles: &[&str]) -> Resp {
    let errors: Vec<Value> = titles.iter().map(|t| json!({"title": t})).collect();
    json_resp(status, &json!({"errors": errors}))
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Resp {
    json_resp(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

/// The web framework's (axum's) plain-text rejections.
fn text(status: StatusCode, msg: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(msg.to_owned())))
        .expect("a response")
}

fn empty(status: StatusCode) -> Resp {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("a response")
}

/// axum's `Json` extractor: 415 without a JSON content type, 400 for bad JSON,
/// 422 for JSON of the wrong shape.
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, Resp> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if !is_json {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expected request with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Failed to deserialize the JSON body into the target type: {e}"),
        ),
        _ => text(
            StatusCode::BAD_REQUEST,
            &format!("Failed to parse the request body as JSON: {e}"),
        ),
    })
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// A scope as OAuth writes it: its tokens, sorted (MAS keeps them in a set).
fn scope_string(scope: &BTreeSet<String>) -> String {
    scope
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 in UTC as MAS serialises its timestamps (microseconds, as
/// PostgreSQL keeps them, with chrono's automatic precision).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("a time after 1970");
    let secs = d.as_secs() as i64;
    let micros = d.subsec_micros();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if micros == 0 {
        String::new()
    } else if micros % 1000 == 0 {
        format!(".{:03}", micros / 1000)
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn ulid_encode(v: u128) -> String {
    (0..26)
        .map(|i| CROCKFORD[((v >> (5 * (25 - i))) & 31) as usize] as char)
        .collect()
}

/// The canonical (upper-case) form of a ULID, `None` if it is not one.
fn ulid_canonical(s: &str) -> Option<String> {
    if s.len() != 26 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in s.bytes().enumerate() {
        let d = CROCKFORD
            .iter()
            .position(|&x| x == c.to_ascii_uppercase())? as u128;
        // 26 digits hold 130 bits: the first may use only 3.
        if i == 0 && d > 7 {
            return None;
        }
        v = (v << 5) | d;
    }
    Some(ulid_encode(v))
}

fn random_alnum(n: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("random bytes");
        // 248 = 4 × 62: no bias.
        out.extend(
            b.iter()
                .filter(|&&x| x < 248)
                .map(|&x| ALNUM[(x % 62) as usize] as char),
        );
    }
    out.truncate(n);
    out
}

/// A token as MAS makes them: `prefix_<30 alphanumerics>_<CRC-32 in base62>`
/// (public for tests that need a well-formed token MAS never issued).
pub fn generate_token(prefix: &str) -> String {
    let base = format!("{prefix}_{}", random_alnum(30));
    let crc = base62(crc32(base.as_bytes()));
    format!("{base}_{crc}")
}

/// MAS's `TokenType::check`: the prefix, or the format error's message.
/// Legacy Synapse tokens (`syt_`, `syr_`) pass unchecked as compatibility tokens.
fn token_type(token: &str) -> Result<&'static str, String> {
    if token.starts_with("syt_") {
        return Ok("mct");
    }
    if token.starts_with("syr_") {
        return Ok("mcr");
    }
    let parts: Vec<&str> = token.split('_').collect();
    let [prefix, random, crc] = parts.as_slice() else {
        return Err("invalid token format".into());
    };
    if prefix.len() != 3 || random.len() != 30 || crc.len() != 6 {
        return Err("invalid token format".into());
    }
    let kind = match *prefix {
        "mat" => "mat",
        "mar" => "mar",
        "mct" => "mct",
        "mcr" => "mcr",
        "mpt" => "mpt",
        other => return Err(format!("unknown token prefix {other:?}")),
    };
    let expected = base62(crc32(format!("{prefix}_{random}").as_bytes()));
    if *crc != expected {
        return Err(format!("invalid crc {crc:?}, expected {expected:?}"));
    }
    Ok(kind)
}

/// CRC-32/ISO-HDLC (the zlib one).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// MAS's base62: least significant digit first, left-padded with zeros to 6.
fn base62(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    while n > 0 {
        s.push(DIGITS[(n % 62) as usize] as char);
        n /= 62;
    }
    format!("{s:0>6}")
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
