//! The MAS test double answers as MAS 1.22 does (checked against MAS's source),
//! and drives a real Synapse in MAS mode the way MAS does.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::mas::{generate_token, MasConfig, MasDouble, SynapseLink};
use crate::support::real_synapse::{synapse_venv, MasSynapse};

/// A plain HTTP client: the double and Synapse are on loopback.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// Status and JSON body (`Value::Null` when the body is empty or not JSON).
async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("a body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A `mat_` token from the double's client-credentials grant.
async fn admin_token(mas: &MasDouble) -> String {
    let (status, body) = answer(
        http()
            .post(format!("{}/oauth2/token", mas.url()))
            .basic_auth(mas.client_id(), Some(mas.client_secret()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "urn:mas:admin"),
            ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// The double's admin API with one token.
struct AdminApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminApi {
    async fn new(mas: &MasDouble) -> AdminApi {
        AdminApi {
            http: http(),
            base: format!("{}/api/admin/v1", mas.url()),
            token: admin_token(mas).await,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        answer(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token),
        )
        .await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        answer(r).await
    }
}

fn titles(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["title"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn mas_double_grants_client_credentials_that_expire() {
    let mas = MasDouble::start(MasConfig {
        token_ttl: Duration::from_secs(2),
        ..MasConfig::default()
    });
    let c = http();

    let (status, disco) =
        answer(c.get(format!("{}/.well-known/openid-configuration", mas.url()))).await;
    assert_eq!(status, 200);
    assert_eq!(disco["issuer"], json!(mas.issuer()));
    assert_eq!(
        disco["token_endpoint"],
        json!(format!("{}oauth2/token", mas.issuer()))
    );
    assert!(disco["account_management_uri"].is_string());

    // A wrong secret: OAuth's error body, no token.
    let (status, body) = answer(
        c.post(format!("{}/oauth2/token", mas.url()))
            .basic_auth(mas.client_id(), Some("wrong"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "urn:mas:admin"),
            ]),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "Client authentication failed."})
    );
    assert_eq!(mas.tokens_issued(), 0);

    let (status, grant) = answer(
        c.post(format!("{}/oauth2/token", mas.url()))
            .basic_auth(mas.client_id(), Some(mas.client_secret()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "urn:mas:admin"),
            ]),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let token = grant["access_token"].as_str().expect("a token").to_owned();
    assert!(token.starts_with("mat_"), "{token}");
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 2);
    assert_eq!(grant["scope"], "urn:mas:admin");
    assert!(grant.get("refresh_token").is_none(), "no refresh token");
    assert_eq!(mas.tokens_issued(), 1);

    let users = format!("{}/api/admin/v1/users", mas.url());
    let (status, _) = answer(c.get(&users).bearer_auth(&token)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = answer(c.get(&users).bearer_auth(&token)).await;
    assert_eq!(status, 401);
    assert_eq!(titles(&body), ["Access token expired"]);
}

#[tokio::test]
async fn mas_double_refuses_tokens_as_mas_does() {
    let mas = MasDouble::start(MasConfig::default());
    mas.add_user("carol", None, false).await;
    let c = http();
    let url = format!("{}/api/admin/v1/users/by-username/carol", mas.url());
    let with = |token: &str| c.get(&url).bearer_auth(token);

    let (status, body) = answer(c.get(&url)).await;
    assert_eq!(
        (status, titles(&body)),
        (400, vec!["Missing authorization header"])
    );
    // Well formed (the CRC matches) but never issued.
    let (status, body) = answer(with(&generate_token("mat"))).await;
    assert_eq!((status, titles(&body)), (401, vec!["Unknown access token"]));
    let (status, body) = answer(with("not-a-mas-token")).await;
    assert_eq!(
        (status, titles(&body)),
        (
            401,
            vec!["Invalid type of access token", "invalid token format"]
        )
    );
    // Compatibility tokens are Synapse's, never the admin API's.
    let compat = mas.issue_compat_token("carol", true).await;
    assert!(compat.starts_with("mct_"));
    for t in [compat.as_str(), "syt_YWRtaW4_AbCdEfGhIjKlMnOpQrSt_0aBcDe"] {
        let (status, body) = answer(with(t)).await;
        assert_eq!(
            (status, titles(&body)),
            (401, vec!["Invalid type of access token"]),
            "{t}"
        );
    }
    // A token without the admin scope.
    let (_, grant) = answer(
        c.post(format!("{}/oauth2/token", mas.url()))
            .basic_auth(mas.client_id(), Some(mas.client_secret()))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert!(grant.get("scope").is_none(), "{grant}");
    let (status, body) = answer(with(grant["access_token"].as_str().unwrap())).await;
    assert_eq!(
        (status, titles(&body)),
        (401, vec!["Missing urn:mas:admin scope"])
    );
    // A personal access token works until revoked.
    let pat = mas.add_personal_token();
    assert!(pat.starts_with("mpt_"));
    assert_eq!(answer(with(&pat)).await.0, 200);
    mas.revoke_token(&pat);
    let (status, body) = answer(with(&pat)).await;
    assert_eq!((status, titles(&body)), (401, vec!["Access token revoked"]));
}

#[tokio::test]
async fn mas_double_serves_users_as_json_api() {
    let mas = MasDouble::start(MasConfig::default());
    let alice = mas.add_user("alice", Some("alice-password"), true).await;
    let bob = mas.add_user("bob", Some("bob-password"), false).await;
    let carol = mas.add_user("carol", None, false).await;
    let api = AdminApi::new(&mas).await;

    let (status, body) = api.get("/users/by-username/alice").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["links"]["self"],
        "/api/admin/v1/users/by-username/alice"
    );
    let data = &body["data"];
    assert_eq!(data["type"], "user");
    assert_eq!(data["id"], json!(alice));
    assert_eq!(
        data["links"]["self"],
        json!(format!("/api/admin/v1/users/{alice}"))
    );
    let a = &data["attributes"];
    assert_eq!(a["username"], "alice");
    assert_eq!(a["admin"], true);
    assert_eq!(a["legacy_guest"], false);
    assert_eq!(a["locked_at"], Value::Null);
    assert_eq!(a["deactivated_at"], Value::Null);
    let created = a["created_at"].as_str().expect("a timestamp");
    assert!(
        created.len() >= 20 && created.ends_with('Z') && &created[10..11] == "T",
        "{created}"
    );
    assert_eq!(alice.len(), 26);

    let (status, body) = api.get("/users/by-username/nobody").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"errors": [{"title": "User with username \"nobody\" not found"}]})
    );
    let (status, body) = api.get(&format!("/users/{}", bob.to_lowercase())).await;
    assert_eq!((status, body["data"]["id"].clone()), (200, json!(bob)));
    let (status, body) = api.get("/users/not-a-ulid").await;
    assert_eq!((status, titles(&body)), (400, vec!["Invalid ULID in path"]));
    let (status, body) = api.get("/users/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(
        (status, titles(&body)),
        (404, vec!["User ID 01ARZ3NDEKTSV4RRFFQ69G5FAV not found"])
    );

    // Lock and deactivate bob, deactivate carol: listing and cursor paging.
    assert_eq!(api.post(&format!("/users/{bob}/lock"), None).await.0, 200);
    assert_eq!(
        api.post(&format!("/users/{bob}/deactivate"), None).await.0,
        200
    );
    let (status, body) = api
        .post(
            &format!("/users/{carol}/deactivate"),
            Some(json!({"skip_erase": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["data"]["attributes"]["deactivated_at"].is_string());
    let (status, page) = api
        .get("/users?filter[status]=deactivated&page[first]=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["meta"]["count"], 2);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["id"], json!(bob));
    assert_eq!(page["data"][0]["meta"]["page"]["cursor"], json!(bob));
    let next = page["links"]["next"].as_str().expect("a next page");
    assert_eq!(
        next,
        format!("/api/admin/v1/users?filter[status]=deactivated&page[after]={bob}&page[first]=1")
    );
    let (_, page) = api.get(next.trim_start_matches("/api/admin/v1")).await;
    assert_eq!(page["data"][0]["id"], json!(carol));
    assert!(page["links"].get("next").is_none(), "{page}");
    let (_, active) = api.get("/users?filter[status]=active").await;
    assert_eq!(active["meta"]["count"], 1);
    let (_, locked) = api.get("/users?filter%5Bstatus%5D=locked").await;
    assert_eq!(locked["data"][0]["id"], json!(bob));
    let (status, body) = api.get("/users?filter[status]=gone").await;
    assert_eq!(
        (status, titles(&body)),
        (400, vec!["Invalid filter parameters"])
    );

    // Reactivation clears deactivated_at and nothing else: bob stays locked.
    let (status, body) = api.post(&format!("/users/{bob}/reactivate"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["links"]["self"],
        json!(format!("/api/admin/v1/users/{bob}/reactivate"))
    );
    assert_eq!(body["data"]["attributes"]["deactivated_at"], Value::Null);
    assert!(body["data"]["attributes"]["locked_at"].is_string());
    let snap = mas.user("bob").unwrap();
    assert!(!snap.deactivated && snap.locked);
    assert_eq!(snap.password.as_deref(), Some("bob-password"), "kept");
    // On an active user it answers 200 and changes nothing.
    let (_, before) = api.get(&format!("/users/{alice}")).await;
    let (status, after) = api.post(&format!("/users/{alice}/reactivate"), None).await;
    assert_eq!(status, 200);
    assert_eq!(after["data"], before["data"]);
    let (status, body) = api.post(&format!("/users/{bob}/unlock"), None).await;
    assert_eq!(
        (status, body["data"]["attributes"]["locked_at"].clone()),
        (200, Value::Null)
    );

    // Passwords.
    let set = |pw: &str, skip: bool| json!({"password": pw, "skip_password_check": skip});
    let path = format!("/users/{carol}/set-password");
    let (status, body) = api.post(&path, Some(set("short", false))).await;
    assert_eq!((status, titles(&body)), (400, vec!["Password is too weak"]));
    assert_eq!(api.post(&path, Some(set("short", true))).await.0, 204);
    assert!(mas.check_password("carol", "short"));
    let (status, _) = api.post(&path, Some(json!({"pass": "x"}))).await;
    assert_eq!(status, 422, "a body of the wrong shape");

    // E-mails: added, refused when taken or invalid, gone with deactivation.
    let add = |user: &str, email: &str| json!({"user_id": user, "email": email});
    let (status, body) = api
        .post("/user-emails", Some(add(&alice, "alice@example.org")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["type"], "user-email");
    assert_eq!(body["data"]["attributes"]["user_id"], json!(alice));
    assert_eq!(body["data"]["attributes"]["email"], "alice@example.org");
    let (status, body) = api
        .post("/user-emails", Some(add(&bob, "alice@example.org")))
        .await;
    assert_eq!(
        (status, titles(&body)),
        (409, vec!["User email \"alice@example.org\" already in use"])
    );
    let (status, body) = api
        .post("/user-emails", Some(add(&bob, "no-at-sign")))
        .await;
    assert_eq!(status, 400);
    assert_eq!(titles(&body)[0], "Email \"no-at-sign\" is not valid");
    let (status, list) = api.get(&format!("/user-emails?filter[user]={alice}")).await;
    assert_eq!((status, list["meta"]["count"].clone()), (200, json!(1)));
    assert_eq!(mas.user("alice").unwrap().emails, ["alice@example.org"]);
    mas.deactivate("alice", true).await;
    assert!(mas.user("alice").unwrap().emails.is_empty());

    // Only what the double was asked, in order.
    let log = mas.requests();
    assert_eq!(log[0], ("POST".to_owned(), "/oauth2/token".to_owned()));
    assert_eq!(
        log[1],
        (
            "GET".to_owned(),
            "/api/admin/v1/users/by-username/alice".to_owned()
        )
    );
}

#[tokio::test]
async fn mas_double_refuses_passwords_when_disabled_and_keeps_state_when_synapse_fails() {
    let mas = MasDouble::start(MasConfig {
        passwords_enabled: false,
        ..MasConfig::default()
    });
    let dan = mas.add_user("dan", None, false).await;
    let api = AdminApi::new(&mas).await;
    let (status, body) = api
        .post(
            &format!("/users/{dan}/set-password"),
            Some(json!({"password": "a perfectly long password"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"errors": [{"title": "Password auth is disabled"}]})
        )
    );
    // Checked before the user is looked up, as MAS does.
    let (status, _) = api
        .post(
            "/users/01ARZ3NDEKTSV4RRFFQ69G5FAV/set-password",
            Some(json!({"password": "x"})),
        )
        .await;
    assert_eq!(status, 403);

    // Reactivation asks Synapse first; when Synapse cannot be reached, 500 and no change.
    mas.deactivate("dan", false).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    mas.set_synapse(SynapseLink {
        url: dead_url,
        secret: "s".into(),
    });
    let (status, body) = api.post(&format!("/users/{dan}/reactivate"), None).await;
    assert_eq!(status, 500);
    assert_eq!(titles(&body)[0], "Failed to reactivate user in Synapse");
    assert!(mas.user("dan").unwrap().deactivated);
}

#[tokio::test]
async fn mas_double_opens_and_revokes_personal_sessions_as_mas_does() {
    let mas = MasDouble::start(MasConfig::default());
    let alice = mas.add_user("alice", None, false).await;
    let dan = mas.add_user("dan", None, false).await;
    mas.deactivate("dan", false).await;
    let api = AdminApi::new(&mas).await;
    let c = http();
    let open = |actor: &str, scope: &str, expires_in: Option<u32>| {
        let mut body = json!({"actor_user_id": actor, "human_name": "restore", "scope": scope});
        if let Some(e) = expires_in {
            body["expires_in"] = json!(e);
        }
        api.post("/personal-sessions", Some(body))
    };
    let introspect = |token: &str| {
        c.post(format!("{}/oauth2/introspect", mas.url()))
            .basic_auth(mas.client_id(), Some(mas.client_secret()))
            .form(&[("token", token)])
    };

    let (status, body) = open(&alice, "urn:matrix:client:api:*", Some(300)).await;
    assert_eq!(status, 201, "{body}");
    let data = &body["data"];
    assert_eq!(data["type"], "personal-session");
    let id = data["id"].as_str().unwrap().to_owned();
    let a = &data["attributes"];
    assert_eq!(a["actor_user_id"], json!(alice));
    assert_eq!(a["owner_client_id"], json!(mas.client_id()));
    assert_eq!(a["owner_user_id"], Value::Null);
    assert_eq!(a["scope"], "urn:matrix:client:api:*");
    assert_eq!(a["revoked_at"], Value::Null);
    assert!(a["expires_at"].is_string(), "{body}");
    assert_eq!(
        body["links"]["self"],
        json!(format!("/api/admin/v1/personal-sessions/{id}"))
    );
    let token = a["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("mpt_"), "{token}");

    // Synapse sees the user, with both names of the API scope, and no device.
    let (status, seen) = answer(introspect(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["username"], "alice");
    assert_eq!(seen["sub"], json!(alice));
    assert_eq!(
        seen["scope"],
        "urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:api:*"
    );
    assert!(seen.get("device_id").is_none(), "{seen}");
    assert!(seen["exp"].is_i64());
    // Not an admin token.
    let (status, body) = answer(
        c.get(format!("{}/api/admin/v1/users", mas.url()))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        (status, titles(&body)),
        (401, vec!["Missing urn:mas:admin scope"])
    );
    // Read back without the token.
    let (status, body) = api.get(&format!("/personal-sessions/{id}")).await;
    assert_eq!(status, 200);
    assert!(body["data"]["attributes"].get("access_token").is_none());

    // Refusals, in MAS's order.
    let (status, body) = open(&dan, "urn:matrix:client:api:*", Some(300)).await;
    assert_eq!((status, titles(&body)), (410, vec!["User is not active"]));
    let unknown = "01J9ZZRT0000000000000000ZZ";
    let (status, body) = open(unknown, "urn:matrix:client:api:*", None).await;
    assert_eq!((status, titles(&body)), (404, vec!["User not found"]));
    let (status, body) = open(&alice, "urn:matrix:client:api:* two\nlines", None).await;
    assert_eq!((status, titles(&body)), (400, vec!["Invalid scope"]));
    let (status, _) = open("alice", "urn:matrix:client:api:*", None).await;
    assert_eq!(status, 422, "a username is not a ULID");
    assert_eq!(mas.personal_sessions().len(), 1);

    // Revoked: at once, for Synapse too; twice is a conflict.
    let (status, body) = api
        .post(&format!("/personal-sessions/{id}/revoke"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["attributes"]["revoked_at"].is_string());
    assert_eq!(body["data"]["attributes"]["expires_at"], Value::Null);
    let (_, seen) = answer(introspect(&token)).await;
    assert_eq!(seen, json!({"active": false}));
    let (status, body) = api
        .post(&format!("/personal-sessions/{id}/revoke"), None)
        .await;
    assert_eq!(
        (status, titles(&body)),
        (
            409,
            vec![format!("Personal session with ID {id} is already revoked").as_str()]
        )
    );
    let (status, _) = api
        .post(&format!("/personal-sessions/{unknown}/revoke"), None)
        .await;
    assert_eq!(status, 404);
    let sessions = mas.personal_sessions();
    assert!(sessions[0].revoked && !sessions[0].usable, "{sessions:?}");
    assert_eq!(sessions[0].actor, "alice");

    // A token that expires by itself; a locked actor may get a session (MAS
    // allows it) whose token Synapse is told is inactive.
    let (_, body) = open(&alice, "urn:matrix:client:api:*", Some(1)).await;
    let short = body["data"]["attributes"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(answer(introspect(&short)).await.1["active"], true);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(answer(introspect(&short)).await.1["active"], false);
    mas.lock("alice").await;
    let (status, body) = open(&alice, "urn:matrix:client:api:*", Some(300)).await;
    assert_eq!(status, 201, "{body}");
    let locked = body["data"]["attributes"]["access_token"].as_str().unwrap();
    assert_eq!(answer(introspect(locked)).await.1["active"], false);
}

// ---------------------------------------------------------------- real Synapse

#[tokio::test]
async fn mas_double_drives_a_real_synapse_end_to_end() {
    let Some(()) = synapse_venv() else { return };
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).unwrap();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();

    // The double listens before Synapse starts: Synapse's config names it.
    let mas = MasDouble::start(MasConfig::default());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-synapse-mas");
    let synapse = MasSynapse::start(dir, &mas.issuer(), &secret).await;
    assert!(
        mas.requests().is_empty(),
        "Synapse starts without asking MAS anything: {:?}",
        mas.requests()
    );
    mas.set_synapse(SynapseLink {
        url: synapse.url.clone(),
        secret,
    });
    let s = &synapse.url;
    let c = http();

    mas.add_user("admin", None, true).await;
    let bob = mas.add_user("bob", Some("bob-first-password"), false).await;
    let alice = mas.add_user("alice", Some("alice-password"), false).await;
    let admin = mas.issue_compat_token("admin", true).await;
    let whoami = |token: &str| {
        c.get(format!("{s}/_matrix/client/v3/account/whoami"))
            .bearer_auth(token.to_owned())
    };
    let user = |id: &str| {
        c.get(format!("{s}/_synapse/admin/v2/users/{id}"))
            .bearer_auth(&admin)
    };

    // The admin's compatibility token: a user, and an admin by its scope.
    let (status, body) = answer(whoami(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@admin:localhost");
    assert!(body["device_id"].is_string(), "{body}");
    assert!(mas
        .requests()
        .iter()
        .any(|(m, p)| m == "POST" && p == "/oauth2/introspect"));
    let (status, body) = answer(user("@bob:localhost")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deactivated"], false);
    assert_eq!(body["admin"], false, "rights come from the token's scope");
    let (status, body) = answer(
        c.get(format!(
            "{s}/_synapse/admin/v1/users/@admin:localhost/admin"
        ))
        .bearer_auth(&admin),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (404, json!("M_UNRECOGNIZED"))
    );

    // Synapse publishes the double's metadata.
    let (status, meta) = answer(c.get(format!("{s}/_matrix/client/v1/auth_metadata"))).await;
    assert_eq!(status, 200);
    assert_eq!(meta["issuer"], json!(mas.issuer()));
    assert_eq!(
        meta["account_management_uri"],
        json!(format!("{}account/", mas.issuer()))
    );

    // A MAS admin API token is not a Matrix token.
    let api = AdminApi::new(&mas).await;
    let (status, body) = answer(whoami(&api.token)).await;
    assert_eq!(
        (status, body["errcode"].clone()),
        (401, json!("M_UNKNOWN_TOKEN"))
    );

    // bob logs in through MAS; the token works on Synapse.
    let login = |user: &str, pw: &str| {
        c.post(format!("{}/test/login", mas.url()))
            .json(&json!({"username": user, "password": pw}))
    };
    let (status, body) = answer(login("bob", "bob-first-password")).await;
    assert_eq!(status, 200, "{body}");
    let bob_token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = answer(whoami(&bob_token)).await;
    assert_eq!(
        (status, body["user_id"].clone()),
        (200, json!("@bob:localhost"))
    );

    // An e-mail added in MAS reaches Synapse (MAS's provisioning job).
    let (status, _) = api
        .post(
            "/user-emails",
            Some(json!({"user_id": bob, "email": "bob@example.org"})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, body) = answer(user("@bob:localhost")).await;
    assert_eq!(body["threepids"][0]["address"], "bob@example.org", "{body}");

    // Deactivation with erasure, through the double: Synapse's side follows.
    mas.deactivate("bob", true).await;
    let (_, body) = answer(user("@bob:localhost")).await;
    assert_eq!(
        (body["deactivated"].clone(), body["erased"].clone()),
        (json!(true), json!(true)),
        "{body}"
    );
    assert_eq!(body["threepids"], json!([]));
    let (status, _) = answer(whoami(&bob_token)).await;
    assert_eq!(status, 401, "the device went with the deactivation");
    assert_eq!(answer(login("bob", "bob-first-password")).await.0, 403);

    // Reactivation through the admin API: Synapse first, then MAS.
    let (status, body) = api.post(&format!("/users/{bob}/reactivate"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["attributes"]["deactivated_at"], Value::Null);
    let (_, body) = answer(user("@bob:localhost")).await;
    assert_eq!(
        (body["deactivated"].clone(), body["erased"].clone()),
        (json!(false), json!(false)),
        "{body}"
    );
    // MAS kept the password through the deactivation.
    assert_eq!(answer(login("bob", "bob-first-password")).await.0, 200);

    // A new password: the old one stops working, the new one logs in on Synapse.
    let (status, _) = api
        .post(
            &format!("/users/{bob}/set-password"),
            Some(json!({"password": "bob-second-password"})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(answer(login("bob", "bob-first-password")).await.0, 403);
    let (status, body) = answer(login("bob", "bob-second-password")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = answer(whoami(body["access_token"].as_str().unwrap())).await;
    assert_eq!(
        (status, body["user_id"].clone()),
        (200, json!("@bob:localhost"))
    );

    // A personal session acts as bob on Synapse's client-server API, with
    // no device; the MAS admin API token that made it is not needed there.
    let (status, body) = api
        .post(
            "/personal-sessions",
            Some(json!({"actor_user_id": bob, "human_name": "restore",
                        "scope": "urn:matrix:client:api:*", "expires_in": 300})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let acting = body["data"]["attributes"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = answer(whoami(&acting)).await;
    assert_eq!(
        (status, body["user_id"].clone()),
        (200, json!("@bob:localhost")),
        "{body}"
    );
    assert!(body.get("device_id").is_none_or(Value::is_null), "{body}");
    let (status, body) = answer(
        c.put(format!(
            "{s}/_matrix/client/v3/user/@bob:localhost/account_data/org.example.test"
        ))
        .bearer_auth(&acting)
        .json(&json!({"written": "as bob"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = answer(
        c.get(format!(
            "{s}/_synapse/admin/v1/users/@bob:localhost/accountdata"
        ))
        .bearer_auth(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["account_data"]["global"]["org.example.test"],
        json!({"written": "as bob"})
    );
    let (status, body) = answer(
        c.get(format!("{s}/_synapse/admin/v2/users/@bob:localhost"))
            .bearer_auth(&acting),
    )
    .await;
    assert_eq!(status, 403, "not an admin token: {body}");

    // Reactivating an active user: Synapse accepts it, nothing changes.
    let (status, body) = api.post(&format!("/users/{alice}/reactivate"), None).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = answer(user("@alice:localhost")).await;
    assert_eq!(body["deactivated"], false);

    // A lock in MAS reaches Synapse's `locked` flag.
    let (status, _) = api.post(&format!("/users/{alice}/lock"), None).await;
    assert_eq!(status, 200);
    let (_, body) = answer(user("@alice:localhost")).await;
    assert_eq!(body["locked"], true, "{body}");
}

// ---------------------------------------------------------------- the backend

/// The tool's MAS backend against the double: e-mails given back as a union
/// (phone numbers refused), and a personal session to act as the user,
/// opened and revoked.
#[tokio::test]
async fn mas_double_serves_the_mas_backend_threepids_and_personal_sessions() {
    use matrix_reactivate::backend::mas::{MasAccounts, MasClient, MasCredentials};
    use matrix_reactivate::backend::synapse::SynapseClient;
    use matrix_reactivate::backend::{act_as::Ending, Account, Accounts};
    use matrix_reactivate::retry::{CallError, Policy, Retrier};
    use matrix_reactivate::source::Threepid;
    use matrix_reactivate::stop::StopSignal;
    use matrix_reactivate::user_id::UserId;
    use std::sync::Arc;

    let mas = MasDouble::start(MasConfig::default());
    let alice = mas.add_user("alice", None, false).await;
    let dan = mas.add_user("dan", None, false).await;
    mas.deactivate("dan", false).await;
    let timeout = Duration::from_secs(10);
    let http = matrix_reactivate::http::Http::new(&mas.url(), timeout, None, 2).unwrap();
    let client = MasClient::connect(
        http,
        MasCredentials::Client {
            id: mas.client_id().to_owned(),
            secret: mas.client_secret().to_owned().into(),
        },
        |_| Ok(()),
    )
    .await
    .unwrap();
    // Never called: the session's Synapse is only where its requests go.
    let synapse = SynapseClient::new(
        "http://127.0.0.1:9",
        &"unused".to_owned().into(),
        timeout,
        None,
        1,
    )
    .unwrap();
    let policy = Policy {
        attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_outage: None,
    };
    let retrier = Arc::new(Retrier::new(policy, Arc::new(StopSignal::new())));
    let accounts = MasAccounts::new(synapse, Arc::new(client), retrier);
    let user = UserId::parse("@alice:example.org").unwrap();
    let account = Account {
        handle: Some(alice.clone()),
        ..Account::default()
    };
    let tp = |medium: &str, address: &str| Threepid {
        medium: medium.into(),
        address: address.into(),
        validated_at: Some(1),
        added_at: None,
    };

    assert_eq!(accounts.threepids(&user, &account).await.unwrap(), []);
    let wanted = [
        tp("email", "alice@example.org"),
        tp("email", "Alice@Example.org"),
        tp("msisdn", "447700900000"),
        tp("email", "a2@example.org"),
    ];
    let e = accounts
        .add_threepids(&user, &account, &wanted)
        .await
        .unwrap_err();
    match e {
        CallError::Row(e) => {
            let text = e.to_string();
            assert!(
                text.contains("MAS holds no phone numbers") && text.contains("447700900000"),
                "{text}"
            );
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        mas.user("alice").unwrap().emails,
        ["alice@example.org", "a2@example.org"]
    );
    // Again: nothing added twice, and only e-mails asked for: no error.
    accounts
        .add_threepids(&user, &account, &wanted[..2])
        .await
        .unwrap();
    let now = accounts.threepids(&user, &account).await.unwrap();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|t| t.medium == "email"));

    let session = accounts
        .act_as(&user, &account, Duration::from_secs(300))
        .await
        .unwrap();
    let sessions = mas.personal_sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].actor.as_str(), sessions[0].scope.as_str()),
        ("alice", "urn:matrix:client:api:*")
    );
    assert!(sessions[0].usable);
    assert!(
        matches!(&session.ending, Ending::Revoke { session_id } if *session_id == sessions[0].id)
    );
    assert!(session.auth().is_sensitive());
    accounts.end_acting(session).await.unwrap();
    let sessions = mas.personal_sessions();
    assert!(sessions[0].revoked && !sessions[0].usable);

    let gone = Account {
        handle: Some(dan),
        ..Account::default()
    };
    let dan_id = UserId::parse("@dan:example.org").unwrap();
    match accounts
        .act_as(&dan_id, &gone, Duration::from_secs(60))
        .await
    {
        Err(CallError::Row(e)) => assert_eq!(e.status(), Some(410), "{e}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a session for a deactivated user"),
    }
}
