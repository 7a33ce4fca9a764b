//! Giving back what deactivation took, after a reactivation: display name and
//! avatar (through Synapse), e-mail addresses (through the account backend),
//! and rooms (through Synapse's admin join).
//!
//! Rooms to rejoin are the ones the user left on their own at or after
//! `--left-since` (deactivation makes a user leave every room), plus the
//! rooms the input names. Kicks and bans are never undone. Each room's state is
//! read at most once per run, however many users shared the room.

use std::collections::BTreeSet;

use super::{Job, Worker};
use crate::backend::rooms::Leaves;
use crate::backend::{Account, Accounts};
use crate::http::ApiError;
use crate::retry::{AuthFailure, CallError};
use crate::source::Threepid;
use crate::user_id::UserId;

/// What was given back after a reactivation.
#[derive(Default)]
pub(super) struct Restored {
    pub rooms_rejoined: Vec<String>,
    pub rooms_failed: Vec<String>,
    pub problems: Vec<String>,
}

/// The run stopped part way: the user is then done again on --resume.
pub(super) struct Stopped;

impl<A: Accounts> Worker<'_, A> {
    pub(super) async fn give_back(
        &self,
        job: &Job,
        account: &Account,
        source_rooms: &[String],
    ) -> Result<Restored, Stopped> {
        let mut out = Restored {
            problems: job.restore.problems.clone(),
            ..Restored::default()
        };
        if !self.shared.options.dry_run {
            self.profile(job, account, &mut out.problems).await?;
        }
        let rooms = self.rooms_to_join(job, source_rooms, &mut out).await?;
        for room in rooms {
            self.join(&job.user, room, &mut out).await?;
        }
        Ok(out)
    }

    /// Display name and avatar in one request, then the e-mail addresses.
    async fn profile(
        &self,
        job: &Job,
        account: &Account,
        problems: &mut Vec<String>,
    ) -> Result<(), Stopped> {
        let r = &job.restore;
        let mut body = serde_json::Map::new();
        if let Some(d) = &r.displayname {
            body.insert("displayname".into(), d.as_str().into());
        }
        if let Some(a) = &r.avatar_url {
            body.insert("avatar_url".into(), a.as_str().into());
        }
        if !body.is_empty() {
            let body = serde_json::Value::Object(body);
            let put = self.shared.retrier.call(AuthFailure::StopsRun, || {
                self.shared.synapse.modify_existing(&job.user, &body)
            });
            match put.await {
                Ok(()) => {}
                Err(CallError::Stopped) => return Err(Stopped),
                Err(CallError::Row(e)) => problems.push(format!("profile not given back: {e}")),
            }
        }
        if !r.emails.is_empty() {
            let emails: Vec<Threepid> = r
                .emails
                .iter()
                .map(|address| Threepid {
                    medium: "email".into(),
                    address: address.clone(),
                    validated_at: None,
                    added_at: None,
                })
                .collect();
            let added = self
                .shared
                .accounts
                .add_threepids(&job.user, account, &emails);
            match added.await {
                Ok(()) => {}
                Err(CallError::Stopped) => return Err(Stopped),
                Err(CallError::Row(e)) => {
                    problems.push(format!("e-mail addresses not given back: {e}"))
                }
            }
        }
        Ok(())
    }

    /// The rooms the deactivation made the user leave (with `--rejoin-rooms`),
    /// then those the input names, then those the before-image holds, each once.
    async fn rooms_to_join(
        &self,
        job: &Job,
        source_rooms: &[String],
        out: &mut Restored,
    ) -> Result<Vec<String>, Stopped> {
        let mut rooms: BTreeSet<String> = BTreeSet::new();
        if let Some(since) = self.shared.options.rejoin_since {
            let memberships = self.shared.retrier.call(AuthFailure::StopsRun, || {
                self.shared.synapse.memberships(&job.user)
            });
            match memberships.await {
                Ok(memberships) => {
                    let mut left: Vec<&String> = memberships
                        .iter()
                        .filter(|(_, m)| m.as_str() == "leave")
                        .map(|(room, _)| room)
                        .collect();
                    left.sort();
                    for room in left {
                        match self.leaves(room).await? {
                            Ok(leaves) => {
                                if leaves.get(job.user.as_str()).is_some_and(|&ts| ts >= since) {
                                    rooms.insert(room.clone());
                                }
                            }
                            Err(why) => out
                                .rooms_failed
                                .push(format!("{room} (cannot read the room's state: {why})")),
                        }
                    }
                }
                Err(CallError::Stopped) => return Err(Stopped),
                Err(CallError::Row(e)) => out.problems.push(format!("rooms not looked up: {e}")),
            }
        }
        let mut ordered: Vec<String> = rooms.into_iter().collect();
        for room in job.restore.rooms.iter().chain(source_rooms) {
            if !ordered.contains(room) {
                ordered.push(room.clone());
            }
        }
        Ok(ordered)
    }

    /// Joins one room (in a dry run, lists it).
    async fn join(&self, user: &UserId, room: String, out: &mut Restored) -> Result<(), Stopped> {
        if self.shared.options.dry_run {
            out.rooms_rejoined.push(room);
            return Ok(());
        }
        if !self.pace().await {
            return Err(Stopped);
        }
        let joined = self
            .shared
            .retrier
            .call(AuthFailure::ForbiddenFailsRow, || {
                self.shared.synapse.join(&room, user)
            })
            .await;
        match joined {
            Ok(room_id) => out.rooms_rejoined.push(room_id),
            // A resumed run finds the user in a private room the interrupted
            // one joined: Synapse's invite step refuses, and that is success.
            Err(CallError::Row(e)) if already_in_room(&e, user) => out.rooms_rejoined.push(room),
            Err(CallError::Stopped) => return Err(Stopped),
            Err(CallError::Row(e)) => {
                let hint = if e.status() == Some(403) {
                    let admin = &self.shared.options.admin;
                    format!(
                        " — {admin} cannot join people to this room: invite {admin} to it (or \
                         make it join), then give the room with --rooms-column"
                    )
                } else {
                    String::new()
                };
                out.rooms_failed.push(format!("{room} ({e}{hint})"));
            }
        }
        Ok(())
    }

    /// Who left `room` on their own, and when, from its state: fetched once per
    /// run however many users shared the room.
    async fn leaves(&self, room: &str) -> Result<Result<Leaves, String>, Stopped> {
        let fetch = || {
            self.shared.retrier.call(AuthFailure::StopsRun, || {
                self.shared.synapse.room_members(room)
            })
        };
        match self.caches.rooms.leaves(room, fetch).await {
            Ok(leaves) => Ok(Ok(leaves)),
            Err(CallError::Row(e)) => Ok(Err(e.to_string())),
            Err(CallError::Stopped) => Err(Stopped),
        }
    }
}

/// Synapse's "@u:x is already in the room." (403, from its event auth rules).
fn already_in_room(e: &ApiError, user: &UserId) -> bool {
    matches!(e, ApiError::Http { status: 403, message, .. }
        if message == &format!("{user} is already in the room."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_already_in_the_room_is_told_from_other_refusals() {
        let user = UserId::parse("@ann:example.org").unwrap();
        let refusal = |status, message: &str| ApiError::Http {
            status,
            errcode: Some("M_FORBIDDEN".into()),
            message: message.into(),
            retry_after: None,
        };
        assert!(already_in_room(
            &refusal(403, "@ann:example.org is already in the room."),
            &user
        ));
        assert!(!already_in_room(
            &refusal(403, "@bob:example.org is already in the room."),
            &user
        ));
        assert!(!already_in_room(
            &refusal(403, "@admin:example.org not in room"),
            &user
        ));
        assert!(!already_in_room(
            &refusal(400, "@ann:example.org is already in the room."),
            &user
        ));
    }
}
