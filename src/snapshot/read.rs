//! Reading one user's before-image from the live server, and sending it to
//! the file.
//!
//! As the admin: the user (flags, e-mails and phone numbers, profile), on a
//! MAS server the user in MAS (its ID, and the e-mails MAS holds), the rooms
//! the user is joined to, every item of account data. Then as the user,
//! through a token that expires by itself within minutes (the admin's own
//! token for the admin, who cannot act as themselves): the push rules, and
//! the newest key backup with every session, streamed to the file in
//! batches. The token is ended as soon as the user is read, whatever
//! happened; after a stop, with one attempt outside the retrier.
//!
//! Every request waits for the pace (`--rate`) and goes through the retrier.
//! A request as the user that is refused (401, 403) fails that user, never
//! the run: it says nothing about the admin's token. Nothing here changes
//! anything on the server but the short-lived tokens.

use std::time::Duration;

use reqwest::header::HeaderValue;
use serde_json::value::to_raw_value;

use super::file::{FileSender, Op};
use crate::backend::act_as::{Ending, RuleNow, UserSession};
use crate::backend::mas::MasClient;
use crate::backend::synapse::SynapseClient;
use crate::backend::{Account, Accounts};
use crate::http::ApiError;
use crate::retry::{AuthFailure, CallError, Retrier};
use crate::source::{Backup, BeforeImage, CustomRule, DefaultRule, Json, PushRules};
use crate::throttle::Throttle;
use crate::user_id::UserId;

/// How long a token to act as a user lives at most: reading even a large
/// backup takes seconds; the token is ended before this anyway.
pub const ACTING_LIFETIME: Duration = Duration::from_secs(300);
/// Sessions per batch sent to the file.
pub const SESSION_BATCH: usize = 1000;

/// The pace and the retries every request of the snapshot goes through.
pub struct Pacer<'a> {
    pub retrier: &'a Retrier,
    pub throttle: Option<&'a Throttle>,
}

impl Pacer<'_> {
    /// Waits for the next slot of `--rate`, unless the run stops first.
    pub async fn slot(&self) -> Result<(), CallError> {
        let stop = self.retrier.stop_signal();
        if let Some(throttle) = self.throttle {
            tokio::select! {
                _ = throttle.acquire() => {}
                _ = stop.stopped() => return Err(CallError::Stopped),
            }
        }
        if stop.is_stopped() {
            return Err(CallError::Stopped);
        }
        Ok(())
    }

    /// One paced request, retried by the run's policy.
    pub async fn call<T, F, Fut>(&self, auth: AuthFailure, request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.slot().await?;
        self.retrier.call(auth, request).await
    }
}

/// What became of one user.
#[derive(Debug)]
pub enum Outcome {
    Written {
        user: UserId,
        /// Sessions of the newest backup written (0 without a backup).
        sessions: u64,
        backup: bool,
        /// The token to act as the user could not be ended: it expires by itself.
        left_open: bool,
    },
    /// Written without push rules and key backup: the user is locked, and
    /// the server refuses a locked user's token.
    Locked(UserId),
    NotFound(UserId),
    Deactivated(UserId),
    Failed {
        user: UserId,
        why: String,
    },
    Stopped,
}

/// Why a user was not written.
enum Miss {
    NotFound,
    Deactivated,
    Failed(String),
    Stopped,
}

/// How much of a user was written.
enum Read {
    Whole {
        /// Sessions of the newest backup written (0 without a backup).
        sessions: u64,
        backup: bool,
        /// The token made to act as the user was ended.
        ended: bool,
    },
    Locked,
}

/// The session a user is read through.
enum Acting {
    /// The admin's own token: never ended.
    Own(UserSession),
    /// A token made for the user: ended when the user is read.
    Made(UserSession),
}

impl Acting {
    fn session(&self) -> &UserSession {
        match self {
            Acting::Own(s) | Acting::Made(s) => s,
        }
    }
}

pub struct Reader<'a, A: Accounts> {
    pub client: &'a SynapseClient,
    pub accounts: &'a A,
    /// MAS, on a server whose logins belong to it.
    pub mas: Option<&'a MasClient>,
    pub pacer: &'a Pacer<'a>,
    /// The admin: read with their own token.
    pub admin: &'a UserId,
    /// `Bearer <admin token>`, marked sensitive.
    pub admin_auth: &'a HeaderValue,
    pub file: FileSender,
}

impl<A: Accounts> Reader<'_, A> {
    /// Reads the user and sends what was read to the file.
    pub async fn read(&self, user: UserId) -> Outcome {
        match self.read_user(&user).await {
            Ok(Read::Locked) => Outcome::Locked(user),
            Ok(Read::Whole {
                sessions,
                backup,
                ended,
            }) => Outcome::Written {
                user,
                sessions,
                backup,
                left_open: !ended,
            },
            Err(Miss::NotFound) => Outcome::NotFound(user),
            Err(Miss::Deactivated) => Outcome::Deactivated(user),
            Err(Miss::Failed(why)) => Outcome::Failed { user, why },
            Err(Miss::Stopped) => Outcome::Stopped,
        }
    }

    async fn read_user(&self, user: &UserId) -> Result<Read, Miss> {
        let (account, image) = self.as_admin(user).await?;
        if account.locked && user != self.admin {
            // What the admin API gives is all there is to keep.
            self.send(Op::Image(user.clone(), Box::new(image))).await?;
            return Ok(Read::Locked);
        }
        let acting = self.open_session(user, &account).await?;
        let read = self.as_user(acting.session(), user, image).await;
        let ended = self.close_session(acting).await;
        if read.is_err() {
            // Whatever of the user reached the file goes again: a user is
            // written whole or not at all. (Fails only once the file failed.)
            let _ = self.file.send(Op::Remove(user.clone())).await;
        }
        read.map(|(sessions, backup)| Read::Whole {
            sessions,
            backup,
            ended,
        })
    }

    /// What a failed call means for the user: the run's stop, or a reason.
    fn miss(&self, what: &'static str) -> impl Fn(CallError) -> Miss + '_ {
        move |e| match e {
            _ if self.pacer.retrier.stop_signal().is_stopped() => Miss::Stopped,
            CallError::Stopped => Miss::Stopped,
            CallError::Row(e) => Miss::Failed(format!("{what}: {e}")),
        }
    }

    /// Everything the admin API gives, and the account to act as.
    async fn as_admin(&self, user: &UserId) -> Result<(Account, BeforeImage), Miss> {
        let details = self
            .pacer
            .call(AuthFailure::StopsRun, || self.client.user_details(user))
            .await
            .map_err(self.miss("reading the user"))?
            .ok_or(Miss::NotFound)?;
        if details.info.deactivated {
            return Err(Miss::Deactivated);
        }
        let mut account = Account::from(details.info.clone());
        let threepids = match self.mas {
            None => details.threepids.clone(),
            Some(mas) => {
                let found = self
                    .pacer
                    .call(AuthFailure::StopsRun, || mas.user_by_name(user.localpart()))
                    .await
                    .map_err(self.miss("reading the user in MAS"))?;
                let Some(found) = found else {
                    return Err(Miss::Failed(
                        "Synapse has the user, MAS does not: its logins cannot be read".into(),
                    ));
                };
                if found.deactivated {
                    return Err(Miss::Deactivated);
                }
                account.locked |= found.locked;
                account.handle = Some(found.id);
                self.pacer.slot().await.map_err(self.miss(""))?;
                (self.accounts.threepids(user, &account).await)
                    .map_err(self.miss("reading the e-mails in MAS"))?
            }
        };
        let memberships = self
            .pacer
            .call(AuthFailure::StopsRun, || self.client.memberships(user))
            .await
            .map_err(self.miss("reading the rooms"))?;
        let mut rooms: Vec<String> = (memberships.into_iter())
            .filter(|(_, m)| m == "join")
            .map(|(room, _)| room)
            .collect();
        rooms.sort_unstable();
        let account_data = self
            .pacer
            .call(AuthFailure::StopsRun, || self.client.account_data(user))
            .await
            .map_err(self.miss("reading the account data"))?;
        let image = BeforeImage {
            threepids,
            profile: details.profile(),
            rooms,
            account_data,
            ..BeforeImage::default()
        };
        Ok((account, image))
    }

    async fn open_session(&self, user: &UserId, account: &Account) -> Result<Acting, Miss> {
        if user == self.admin {
            let http = self.client.http().clone();
            let own = UserSession::new(user.clone(), http, self.admin_auth.clone(), Ending::Logout);
            return Ok(Acting::Own(own));
        }
        self.pacer.slot().await.map_err(self.miss(""))?;
        (self.accounts.act_as(user, account, ACTING_LIFETIME).await)
            .map(Acting::Made)
            .map_err(self.miss("acting as the user"))
    }

    /// Ends a token made for the user; true when it is ended (or was the
    /// admin's own). After a stop the retrier sends nothing: one attempt then.
    async fn close_session(&self, acting: Acting) -> bool {
        let Acting::Made(session) = acting else {
            return true;
        };
        if !self.pacer.retrier.stop_signal().is_stopped() {
            return self.accounts.end_acting(session).await.is_ok();
        }
        match (&session.ending, self.mas) {
            (Ending::Logout, _) => session.logout().await.is_ok(),
            (Ending::Revoke { session_id }, Some(mas)) => {
                mas.revoke_personal_session(session_id).await.is_ok()
            }
            (Ending::Revoke { .. }, None) => false,
        }
    }

    /// Push rules and the backup as the user; the image goes to the file,
    /// then the sessions. Returns (sessions written, had a backup).
    async fn as_user(
        &self,
        session: &UserSession,
        user: &UserId,
        mut image: BeforeImage,
    ) -> Result<(u64, bool), Miss> {
        let rules = self
            .pacer
            .call(AuthFailure::FailsRow, || session.push_rules())
            .await
            .map_err(self.miss("reading the push rules as the user"))?;
        image.push_rules = push_rules_image(&rules).map_err(Miss::Failed)?;
        let backup = self
            .pacer
            .call(AuthFailure::FailsRow, || session.backup())
            .await
            .map_err(self.miss("reading the key backup version as the user"))?;
        let version = backup.as_ref().map(|b| b.version.clone());
        image.backup = backup.map(|b| Backup {
            version: b.version,
            algorithm: b.algorithm,
            auth_data: b.auth_data,
            sessions: b.count,
        });
        self.send(Op::Image(user.clone(), Box::new(image))).await?;
        let Some(version) = version else {
            return Ok((0, false));
        };
        let copied = self
            .pacer
            .call(AuthFailure::FailsRow, || {
                self.copy_sessions(session, user, &version)
            })
            .await
            .map_err(self.miss("reading the key backup as the user"))?;
        Ok((copied, true))
    }

    /// One reading of the whole backup into the file. A retry reads it all
    /// again: a session stored twice is stored once.
    async fn copy_sessions(
        &self,
        session: &UserSession,
        user: &UserId,
        version: &str,
    ) -> Result<u64, ApiError> {
        let stop = self.pacer.retrier.stop_signal();
        let mut stream = session.backup_sessions(version, SESSION_BATCH).await?;
        let mut copied = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if stop.is_stopped() {
                return Err(ApiError::Transport("the snapshot is stopping".into()));
            }
            copied += batch.len() as u64;
            self.file
                .send(Op::Sessions(user.clone(), batch))
                .await
                .map_err(|_| file_closed())?;
        }
        Ok(copied)
    }

    async fn send(&self, op: Op) -> Result<(), Miss> {
        match self.file.send(op).await {
            Ok(()) => Ok(()),
            Err(_) if self.pacer.retrier.stop_signal().is_stopped() => Err(Miss::Stopped),
            Err(_) => Err(Miss::Failed(file_closed().to_string())),
        }
    }
}

fn file_closed() -> ApiError {
    ApiError::BadBody {
        status: 0,
        message: "the snapshot file is no longer written".into(),
    }
}

/// The push rules as a before-image keeps them: the user's own rules in the
/// server's order, with enabled, actions and conditions or pattern; and every
/// server default with its enabled flag and actions, so that a restore can
/// tell what the user changed.
pub fn push_rules_image(rules: &[RuleNow]) -> Result<PushRules, String> {
    let raw = |v: &serde_json::Value| -> Result<Json, String> {
        to_raw_value(v).map_err(|e| format!("a push rule's JSON: {e}"))
    };
    let mut image = PushRules::default();
    for r in rules {
        if r.default {
            image.defaults.push(DefaultRule {
                kind: r.kind.clone(),
                rule_id: r.rule_id.clone(),
                enabled: Some(r.enabled),
                actions: Some(raw(&r.actions)?),
            });
        } else {
            image.custom.push(CustomRule {
                kind: r.kind.clone(),
                rule_id: r.rule_id.clone(),
                pattern: r.pattern.clone(),
                conditions: r.conditions.as_ref().map(raw).transpose()?,
                actions: raw(&r.actions)?,
                enabled: r.enabled,
            });
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::act_as::parse_push_rules;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn raw_text(v: &RawValue) -> &str {
        v.get()
    }

    #[test]
    fn own_rules_keep_their_order_and_defaults_their_state() {
        let rules = parse_push_rules(&json!({"global": {
            "override": [
                {"rule_id": ".m.rule.master", "default": true, "enabled": true, "actions": []},
                {"rule_id": "mute", "default": false, "enabled": false, "actions": [],
                 "conditions": [{"kind": "event_match", "key": "room_id", "pattern": "!a:x"}]}],
            "content": [{"rule_id": "cake", "default": false, "enabled": true,
                         "actions": ["notify"], "pattern": "cake"}],
            "room": [
                {"rule_id": "!b:x", "default": false, "enabled": true, "actions": ["dont_notify"]},
                {"rule_id": "!a:x", "default": false, "enabled": true, "actions": []}],
            "underride": [{"rule_id": ".m.rule.message", "default": true, "enabled": false,
                           "actions": ["notify"]}]
        }}));
        let image = push_rules_image(&rules).unwrap();
        let custom: Vec<(&str, &str, bool)> = image
            .custom
            .iter()
            .map(|r| (r.kind.as_str(), r.rule_id.as_str(), r.enabled))
            .collect();
        assert_eq!(
            custom,
            [
                ("override", "mute", false),
                ("content", "cake", true),
                ("room", "!b:x", true),
                ("room", "!a:x", true),
            ]
        );
        assert_eq!(image.custom[1].pattern.as_deref(), Some("cake"));
        assert!(raw_text(image.custom[0].conditions.as_ref().unwrap()).contains("!a:x"));
        assert_eq!(raw_text(&image.custom[2].actions), r#"["dont_notify"]"#);
        let defaults: Vec<(&str, Option<bool>, &str)> = image
            .defaults
            .iter()
            .map(|d| {
                (
                    d.rule_id.as_str(),
                    d.enabled,
                    d.actions.as_deref().map_or("", raw_text),
                )
            })
            .collect();
        assert_eq!(
            defaults,
            [
                (".m.rule.master", Some(true), "[]"),
                (".m.rule.message", Some(false), r#"["notify"]"#),
            ]
        );
    }
}
