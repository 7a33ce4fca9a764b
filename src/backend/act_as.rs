//! Acting as a user for a few minutes, to read and write what no admin API
//! does: push rules, account data, the key backup.
//!
//! A `UserSession` is the one place that holds a user's token. The token
//! expires by itself (Synapse's puppet login with `valid_until_ms`, MAS's
//! personal session with `expires_in`), is ended as soon as the user is done
//! (`Accounts::end_acting`: logout, or revoke), and is never printed, logged
//! or journaled: it lives in a header value marked sensitive.
//!
//! The requests here are single attempts; callers run them through the run's
//! retrier. Bodies kept as `RawValue` (actions, account data, encrypted
//! sessions) go out byte for byte. Nothing here knows about rows or results.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::key_stream::SessionStream;
use super::synapse::encode_segment;
use crate::http::{field, ApiError, Auth, Http};
use crate::source::{AccountData, BackupSession, CustomRule, Json, PUSH_RULE_KINDS};
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
#[derive(Clone, Debug, Deserialize)]
pub struct BackupNow {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Json,
    #[serde(default)]
    pub count: u64,
}

/// A push rule as the server holds it for the user now, server defaults
/// included (`default: true`).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleNow {
    /// One of `PUSH_RULE_KINDS`.
    pub kind: String,
    pub rule_id: String,
    pub default: bool,
    pub enabled: bool,
    pub actions: Value,
    pub conditions: Option<Value>,
    pub pattern: Option<String>,
}

/// Reads `GET /_matrix/client/v3/pushrules/`'s answer: the `global` rules,
/// by kind in `PUSH_RULE_KINDS` order and within a kind in the server's order
/// (the order it evaluates them). Kinds the server does not send are empty;
/// entries without a `rule_id` are left out.
pub fn parse_push_rules(answer: &Value) -> Vec<RuleNow> {
    let global = &answer["global"];
    let mut rules = Vec::new();
    for kind in PUSH_RULE_KINDS {
        let Some(list) = global[kind].as_array() else {
            continue;
        };
        for rule in list {
            let Some(rule_id) = rule["rule_id"].as_str() else {
                continue;
            };
            rules.push(RuleNow {
                kind: kind.to_owned(),
                rule_id: rule_id.to_owned(),
                default: rule["default"].as_bool().unwrap_or(false),
                enabled: rule["enabled"].as_bool().unwrap_or(true),
                actions: rule.get("actions").cloned().unwrap_or(Value::Array(vec![])),
                conditions: rule.get("conditions").cloned(),
                pattern: rule["pattern"].as_str().map(str::to_owned),
            });
        }
    }
    rules
}

/// A short-lived token of one user, and the client-server API through it.
pub struct UserSession {
    pub user: UserId,
    http: Http,
    /// `Bearer <user token>`, marked sensitive.
    auth: HeaderValue,
    pub ending: Ending,
}

/// The body of a push rule PUT; `conditions` or `pattern` by kind.
#[derive(Serialize)]
struct RuleBody<'a> {
    actions: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    conditions: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<&'a str>,
}

/// One session of `PUT /room_keys/keys`, `session_data` as the client made it.
#[derive(Serialize)]
struct SessionBody<'a> {
    first_message_index: i64,
    forwarded_count: i64,
    is_verified: bool,
    session_data: &'a RawValue,
}

#[derive(Serialize)]
struct RoomBody<'a> {
    sessions: BTreeMap<&'a str, SessionBody<'a>>,
}

#[derive(Serialize)]
struct KeysBody<'a> {
    rooms: BTreeMap<&'a str, RoomBody<'a>>,
}

/// How long reading a whole key backup may take: a large one is tens of
/// megabytes, read as fast as the file it goes to takes it.
const BACKUP_READ_TIMEOUT: Duration = Duration::from_secs(600);

const CLIENT: &str = "/_matrix/client/v3";

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
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        self.http
            .send(method, path, body, Auth::Bearer(&self.auth))
            .await
    }

    async fn send_with<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(u16, Value), ApiError> {
        self.http
            .send_with(method, path, body, Auth::Bearer(&self.auth))
            .await
    }

    /// Ends a Synapse puppet token (`POST /logout` with it). A 401 means the
    /// token is gone already (it expired): that is success too.
    pub async fn logout(&self) -> Result<(), ApiError> {
        let path = format!("{CLIENT}/logout");
        match self.send(Method::POST, &path, None).await {
            Ok(_) | Err(ApiError::Http { status: 401, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every push rule the user has now, defaults included, in the server's
    /// order (`GET /pushrules/`).
    pub async fn push_rules(&self) -> Result<Vec<RuleNow>, ApiError> {
        let (_, v) = self
            .send(Method::GET, &format!("{CLIENT}/pushrules/"), None)
            .await?;
        Ok(parse_push_rules(&v))
    }

    fn rule_path(kind: &str, rule_id: &str) -> String {
        format!(
            "{CLIENT}/pushrules/global/{}/{}",
            encode_segment(kind),
            encode_segment(rule_id)
        )
    }

    /// Creates (or replaces) a custom rule, placed right after the rule
    /// `after` of the same kind, or at the top of its kind without one (the
    /// server puts a new rule first). Content rules carry their pattern, the
    /// others their conditions (the server makes room and sender rules'
    /// conditions from the rule ID itself).
    pub async fn put_push_rule(
        &self,
        rule: &CustomRule,
        after: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut path = Self::rule_path(&rule.kind, &rule.rule_id);
        if let Some(after) = after {
            path.push_str("?after=");
            path.push_str(&encode_segment(after));
        }
        let empty = RawValue::from_string("[]".into()).expect("[] is JSON");
        let body = match rule.kind.as_str() {
            "content" => RuleBody {
                actions: &rule.actions,
                conditions: None,
                pattern: Some(rule.pattern.as_deref().unwrap_or_default()),
            },
            kind => RuleBody {
                actions: &rule.actions,
                conditions: match (&rule.conditions, kind) {
                    (Some(c), _) => Some(c),
                    // The server refuses these two without conditions.
                    (None, "override" | "underride") => Some(&empty),
                    (None, _) => None,
                },
                pattern: None,
            },
        };
        self.send_with(Method::PUT, &path, &body).await.map(|_| ())
    }

    /// `PUT …/{kind}/{ruleId}/enabled`.
    pub async fn set_push_rule_enabled(
        &self,
        kind: &str,
        rule_id: &str,
        enabled: bool,
    ) -> Result<(), ApiError> {
        let path = format!("{}/enabled", Self::rule_path(kind, rule_id));
        let body = serde_json::json!({ "enabled": enabled });
        self.send(Method::PUT, &path, Some(&body)).await.map(|_| ())
    }

    /// `PUT …/{kind}/{ruleId}/actions`.
    pub async fn set_push_rule_actions(
        &self,
        kind: &str,
        rule_id: &str,
        actions: &RawValue,
    ) -> Result<(), ApiError> {
        #[derive(Serialize)]
        struct Body<'a> {
            actions: &'a RawValue,
        }
        let path = format!("{}/actions", Self::rule_path(kind, rule_id));
        self.send_with(Method::PUT, &path, &Body { actions })
            .await
            .map(|_| ())
    }

    /// Writes one item of account data as it is. `m.fully_read` (room
    /// account data Synapse refuses to take as such: 405) goes through the
    /// room's read markers instead, which need the event it points at.
    pub async fn put_account_data(&self, item: &AccountData) -> Result<(), ApiError> {
        let user = self.user.path_segment();
        let kind = encode_segment(&item.kind);
        let path = match &item.room_id {
            None => format!("{CLIENT}/user/{user}/account_data/{kind}"),
            Some(room) if item.kind == "m.fully_read" => {
                return self.set_fully_read(room, &item.content).await;
            }
            Some(room) => format!(
                "{CLIENT}/user/{user}/rooms/{}/account_data/{kind}",
                encode_segment(room)
            ),
        };
        self.send_with(Method::PUT, &path, &*item.content)
            .await
            .map(|_| ())
    }

    async fn set_fully_read(&self, room: &str, content: &RawValue) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct FullyRead {
            event_id: String,
        }
        let event = serde_json::from_str::<FullyRead>(content.get()).map_err(|_| {
            ApiError::Unsupported(format!("the m.fully_read of {room} names no event_id"))
        })?;
        let path = format!("{CLIENT}/rooms/{}/read_markers", encode_segment(room));
        let body = serde_json::json!({ "m.fully_read": event.event_id });
        self.send(Method::POST, &path, Some(&body))
            .await
            .map(|_| ())
    }

    /// The newest key backup version, `None` when the user has none
    /// (`GET /room_keys/version`: 404 `M_NOT_FOUND`).
    pub async fn backup(&self) -> Result<Option<BackupNow>, ApiError> {
        let path = format!("{CLIENT}/room_keys/version");
        match self.send(Method::GET, &path, None).await {
            Ok((status, v)) => field(status, v).map(Some),
            Err(ApiError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a backup version with this algorithm and `auth_data` exactly
    /// (`POST /room_keys/version`); returns its version.
    pub async fn create_backup(
        &self,
        algorithm: &str,
        auth_data: &RawValue,
    ) -> Result<String, ApiError> {
        #[derive(Serialize)]
        struct Body<'a> {
            algorithm: &'a str,
            auth_data: &'a RawValue,
        }
        #[derive(Deserialize)]
        struct Created {
            version: String,
        }
        let path = format!("{CLIENT}/room_keys/version");
        let body = Body {
            algorithm,
            auth_data,
        };
        let (status, v) = self.send_with(Method::POST, &path, &body).await?;
        field::<Created>(status, v).map(|c| c.version)
    }

    /// Uploads sessions to backup `version` (`PUT /room_keys/keys?version=V`),
    /// each `session_data` byte for byte; returns the number of sessions the
    /// backup holds now, as the server counts them. Sending a session again
    /// is harmless.
    pub async fn upload_sessions(
        &self,
        version: &str,
        sessions: &[BackupSession],
    ) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Uploaded {
            count: u64,
        }
        let mut rooms: BTreeMap<&str, RoomBody> = BTreeMap::new();
        for s in sessions {
            let room = rooms.entry(&s.room_id).or_insert_with(|| RoomBody {
                sessions: BTreeMap::new(),
            });
            room.sessions.insert(
                &s.session_id,
                SessionBody {
                    first_message_index: s.first_message_index,
                    forwarded_count: s.forwarded_count,
                    is_verified: s.is_verified,
                    session_data: &s.session_data,
                },
            );
        }
        let path = format!(
            "{CLIENT}/room_keys/keys?version={}",
            encode_segment(version)
        );
        let (status, v) = self
            .send_with(Method::PUT, &path, &KeysBody { rooms })
            .await?;
        field::<Uploaded>(status, v).map(|u| u.count)
    }

    /// Every session of backup `version`, read as a stream in batches of
    /// `batch` (`GET /room_keys/keys?version=V`, parsed as it arrives, so a
    /// backup of any size costs a few batches of memory). This call is the
    /// request, a single attempt; a failure while reading comes out of the
    /// stream, after the batches read before it.
    pub async fn backup_sessions(
        &self,
        version: &str,
        batch: usize,
    ) -> Result<SessionStream, ApiError> {
        let path = format!(
            "{CLIENT}/room_keys/keys?version={}",
            encode_segment(version)
        );
        let resp = self
            .http
            .open(&path, Auth::Bearer(&self.auth), BACKUP_READ_TIMEOUT)
            .await?;
        Ok(SessionStream::start(resp, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const TOKEN: &str = "Bearer user-token";

    fn raw(s: &str) -> Json {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn session(server: &MockServer) -> UserSession {
        let http = Http::new(&server.uri(), Duration::from_secs(5), None, 1).unwrap();
        let mut auth = HeaderValue::from_static(TOKEN);
        auth.set_sensitive(true);
        UserSession::new(
            UserId::parse("@al/ice:example.org").unwrap(),
            http,
            auth,
            Ending::Logout,
        )
    }

    #[test]
    fn push_rules_come_in_kind_order_then_server_order() {
        let answer = json!({"global": {
            "underride": [{"rule_id": ".m.rule.call", "default": true, "enabled": true,
                           "actions": ["notify"], "conditions": []}],
            "content": [
                {"rule_id": "kw", "default": false, "enabled": false,
                 "actions": ["notify"], "pattern": "cake"},
                {"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
                 "actions": [], "pattern": "alice"}],
            "override": [
                {"rule_id": "mine", "default": false, "enabled": true, "actions": [],
                 "conditions": [{"kind": "event_match", "key": "type", "pattern": "x"}]},
                {"rule_id": ".m.rule.master", "default": true, "enabled": false, "actions": []},
                {"default": false, "actions": []}],
            "room": [{"rule_id": "!r:example.org", "default": false, "enabled": true,
                      "actions": ["dont_notify"]}],
            "unknown_kind": [{"rule_id": "z", "default": false, "enabled": true, "actions": []}]
        }});
        let rules = parse_push_rules(&answer);
        let ids: Vec<(&str, &str)> = rules
            .iter()
            .map(|r| (r.kind.as_str(), r.rule_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("override", "mine"),
                ("override", ".m.rule.master"),
                ("content", "kw"),
                ("content", ".m.rule.contains_user_name"),
                ("room", "!r:example.org"),
                ("underride", ".m.rule.call"),
            ]
        );
        assert!(!rules[0].default && rules[0].enabled);
        assert_eq!(rules[0].conditions.as_ref().unwrap()[0]["key"], "type");
        assert!(rules[1].default && !rules[1].enabled);
        assert_eq!(rules[2].pattern.as_deref(), Some("cake"));
        assert!(!rules[2].enabled);
        assert_eq!(rules[4].actions, json!(["dont_notify"]));
        assert_eq!(rules[4].conditions, None);
        assert!(parse_push_rules(&json!({})).is_empty());
    }

    #[tokio::test]
    async fn push_rule_requests_encode_their_segments_and_keep_the_order() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path(
                "/_matrix/client/v3/pushrules/global/room/%21r%3Aexample.org",
            ))
            .and(query_param("after", "!q:example.org"))
            .and(header("authorization", TOKEN))
            .and(body_json(json!({"actions": ["dont_notify"]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path("/_matrix/client/v3/pushrules/global/content/kw"))
            .and(body_string(
                r#"{"actions":["notify",{"set_tweak":"highlight"}],"pattern":"cake"}"#,
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path("/_matrix/client/v3/pushrules/global/override/o"))
            .and(body_json(json!({"actions": [], "conditions": []})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path(
                "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled",
            ))
            .and(body_json(json!({"enabled": true})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path(
                "/_matrix/client/v3/pushrules/global/underride/.m.rule.call/actions",
            ))
            .and(body_string(r#"{"actions":[ "dont_notify" ]}"#))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        let s = session(&server);
        let rule = |kind: &str, id: &str, actions: &str, pattern: Option<&str>| CustomRule {
            kind: kind.into(),
            rule_id: id.into(),
            pattern: pattern.map(str::to_owned),
            conditions: None,
            actions: raw(actions),
            enabled: true,
        };
        s.put_push_rule(
            &rule("room", "!r:example.org", r#"["dont_notify"]"#, None),
            Some("!q:example.org"),
        )
        .await
        .unwrap();
        s.put_push_rule(
            &rule(
                "content",
                "kw",
                r#"["notify",{"set_tweak":"highlight"}]"#,
                Some("cake"),
            ),
            None,
        )
        .await
        .unwrap();
        s.put_push_rule(&rule("override", "o", "[]", None), None)
            .await
            .unwrap();
        s.set_push_rule_enabled("override", ".m.rule.master", true)
            .await
            .unwrap();
        s.set_push_rule_actions("underride", ".m.rule.call", &raw(r#"[ "dont_notify" ]"#))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn account_data_goes_byte_for_byte_and_fully_read_through_read_markers() {
        let server = MockServer::start().await;
        let content = r#"{"@bob:example.org":["!dm:example.org"],  "z":1.50}"#;
        Mock::given(method("PUT"))
            .and(path(
                "/_matrix/client/v3/user/%40al%2Fice%3Aexample.org/account_data/m.direct",
            ))
            .and(body_string(content))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .and(path(
                "/_matrix/client/v3/user/%40al%2Fice%3Aexample.org/rooms/%21r%3Aexample.org/account_data/m.tag",
            ))
            .and(body_json(json!({"tags": {"m.favourite": {}}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(
                "/_matrix/client/v3/rooms/%21r%3Aexample.org/read_markers",
            ))
            .and(body_json(json!({"m.fully_read": "$ev"})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .mount(&server)
            .await;
        let s = session(&server);
        let item = |room: Option<&str>, kind: &str, content: &str| AccountData {
            room_id: room.map(str::to_owned),
            kind: kind.into(),
            content: raw(content),
        };
        s.put_account_data(&item(None, "m.direct", content))
            .await
            .unwrap();
        s.put_account_data(&item(
            Some("!r:example.org"),
            "m.tag",
            r#"{"tags":{"m.favourite":{}}}"#,
        ))
        .await
        .unwrap();
        s.put_account_data(&item(
            Some("!r:example.org"),
            "m.fully_read",
            r#"{"event_id":"$ev"}"#,
        ))
        .await
        .unwrap();
        let e = s
            .put_account_data(&item(Some("!r:example.org"), "m.fully_read", "{}"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("event_id"), "{e}");
    }

    #[tokio::test]
    async fn backups_read_none_create_and_upload_byte_for_byte() {
        let server = MockServer::start().await;
        let s = session(&server);
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/room_keys/version"))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(json!({"errcode": "M_NOT_FOUND", "error": "No backup found"})),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        assert!(s.backup().await.unwrap().is_none());
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/room_keys/version"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
                "auth_data": {"public_key": "abc", "signatures": {}},
                "count": 2, "etag": "1", "version": "3"})))
            .mount(&server)
            .await;
        let b = s.backup().await.unwrap().unwrap();
        assert_eq!((b.version.as_str(), b.count), ("3", 2));
        assert_eq!(b.auth_data.get(), r#"{"public_key":"abc","signatures":{}}"#);

        let auth_data = r#"{"public_key": "abc" ,"signatures":{"@a:x":{"ed25519:D":"s"}}}"#;
        Mock::given(method("POST"))
            .and(path("/_matrix/client/v3/room_keys/version"))
            .and(body_string(format!(
                r#"{{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{auth_data}}}"#
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"version": "4"})))
            .expect(1)
            .mount(&server)
            .await;
        let v = s
            .create_backup("m.megolm_backup.v1.curve25519-aes-sha2", &raw(auth_data))
            .await
            .unwrap();
        assert_eq!(v, "4");

        let data = r#"{"ephemeral":"e", "ciphertext":"c","mac":"m"}"#;
        Mock::given(method("PUT"))
            .and(path("/_matrix/client/v3/room_keys/keys"))
            .and(query_param("version", "4"))
            .and(body_string(format!(
                r#"{{"rooms":{{"!a:x":{{"sessions":{{"s1":{{"first_message_index":1,"forwarded_count":0,"is_verified":true,"session_data":{data}}},"s2":{{"first_message_index":0,"forwarded_count":2,"is_verified":false,"session_data":{data}}}}}}},"!b:x":{{"sessions":{{"s3":{{"first_message_index":5,"forwarded_count":0,"is_verified":false,"session_data":{data}}}}}}}}}}}"#
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"etag": "2", "count": 3})))
            .expect(1)
            .mount(&server)
            .await;
        let one = |room: &str, id: &str, first: i64, fwd: i64, verified: bool| BackupSession {
            room_id: room.into(),
            session_id: id.into(),
            first_message_index: first,
            forwarded_count: fwd,
            is_verified: verified,
            session_data: raw(data),
        };
        let n = s
            .upload_sessions(
                "4",
                &[
                    one("!b:x", "s3", 5, 0, false),
                    one("!a:x", "s2", 0, 2, false),
                    one("!a:x", "s1", 1, 0, true),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn a_whole_backup_streams_in_batches() {
        let server = MockServer::start().await;
        let mut rooms = Vec::new();
        for r in 0..20 {
            let sessions: Vec<String> = (0..50)
                .map(|n| {
                    format!(
                        r#""s{n}":{{"first_message_index":{n},"forwarded_count":0,"is_verified":false,"session_data":{{"ciphertext":"{}"}}}}"#,
                        "x".repeat(200)
                    )
                })
                .collect();
            rooms.push(format!(
                r#""!r{r}:x":{{"sessions":{{{}}}}}"#,
                sessions.join(",")
            ));
        }
        let body = format!(r#"{{"rooms":{{{}}}}}"#, rooms.join(","));
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/room_keys/keys"))
            .and(query_param("version", "7"))
            .and(header("authorization", TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/room_keys/keys"))
            .and(query_param("version", "8"))
            .respond_with(ResponseTemplate::new(404).set_body_json(
                json!({"errcode": "M_NOT_FOUND", "error": "Unknown backup version"}),
            ))
            .mount(&server)
            .await;
        let s = session(&server);
        let mut stream = s.backup_sessions("7", 300).await.unwrap();
        let mut sizes = Vec::new();
        let mut last = None;
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            sizes.push(batch.len());
            last = batch
                .last()
                .map(|b| (b.room_id.clone(), b.session_id.clone()));
        }
        assert_eq!(sizes, [300, 300, 300, 100]);
        assert_eq!(last, Some(("!r19:x".into(), "s49".into())));
        let e = s.backup_sessions("8", 300).await.err().unwrap();
        assert_eq!(e.status(), Some(404));
    }
}
