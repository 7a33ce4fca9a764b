//! What happens to each user: pre-check, pace, journal, reactivate, give back.
//!
//! Invariants this module keeps:
//! - No PUT for a user that the GET did not find (a PUT on an unknown ID creates
//!   an account), and no password for a user the GET did not find deactivated
//!   (on an active one it would replace their password and log them out).
//! - No change in a dry run, for an erased user without `--include-erased`, or
//!   for a user of another server.
//! - No PUT carrying a password before that password is fsynced in the journal.
//! - Profile fields never ride on the reactivation request (a 429 there can
//!   leave the profile saved and the account still deactivated); they and the
//!   rooms are given back only after the reactivation succeeded.
//!
//! It does not write files or print: every outcome goes back to the one consumer
//! in `lib.rs`, which owns the results file and the progress display.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::config::Passwords;
use crate::input::{InputRow, Restore};
use crate::journal::Journal;
use crate::report::{ResultRow, Status};
use crate::retry::{AuthFailure, CallError, Pacer};
use crate::synapse::{ApiError, Client, Lookup, UserInfo};
use crate::throttle::Throttle;
use crate::user_id::UserId;

/// Everything a user's processing needs, shared by reference across the run.
pub struct Worker<'a> {
    pub client: &'a Client,
    pub pacer: &'a Pacer,
    pub throttle: Option<&'a Throttle>,
    /// `None` in a dry run.
    pub journal: Option<&'a Journal>,
    pub server_name: &'a str,
    /// The admin the token belongs to, named in hints.
    pub admin: &'a str,
    pub dry_run: bool,
    pub include_erased: bool,
    pub unlock: bool,
    pub passwords: &'a Passwords,
    /// `--left-since` in ms, when `--rejoin-rooms` is given.
    pub rejoin_since: Option<i64>,
    /// Passwords an interrupted run journaled for users with no result yet.
    pub earlier_passwords: &'a HashMap<String, String>,
    pub rooms: RoomCache,
}

/// The end of one user's processing.
#[derive(Debug)]
pub enum Done {
    Row(ResultRow),
    /// Failed because the server could not be reached. Written once the server
    /// is seen answering again; dropped (left for `--resume`) if the run stops
    /// because it never does.
    Unreached(ResultRow),
    /// The run is stopping (fatal error or interruption); the user gets no row
    /// now and is done again on `--resume`.
    Abandoned,
}

/// Who left each room on their own, and when: the part of a room's state that
/// rejoining needs, fetched at most once per room per run.
type Leaves = Arc<HashMap<String, i64>>;

/// A room's leaves once fetched, or why its state could not be read.
type RoomSlot = Arc<OnceCell<Result<Leaves, String>>>;

#[derive(Default)]
pub struct RoomCache {
    rooms: Mutex<HashMap<String, RoomSlot>>,
}

/// What was given back after a reactivation.
#[derive(Default)]
struct Restored {
    rooms_rejoined: Vec<String>,
    rooms_failed: Vec<String>,
    problems: Vec<String>,
}

impl Worker<'_> {
    pub async fn process(&self, row: InputRow) -> Done {
        let InputRow {
            line,
            raw,
            user,
            password: input_password,
            restore,
        } = row;
        let base = |user_id: String, status: Status| ResultRow {
            user_id,
            status,
            password: None,
            error: String::new(),
            line,
            rooms_rejoined: String::new(),
            rooms_failed: String::new(),
        };
        let with_error = |user_id: String, status: Status, error: &str| {
            Done::Row(ResultRow {
                error: error.to_owned(),
                ..base(user_id, status)
            })
        };
        let user = match user {
            Ok(u) => u,
            Err(reason) => return with_error(shorten(&raw), Status::Invalid, &reason),
        };
        let id = user.as_str().to_owned();
        if user.server_name() != self.server_name {
            let why = format!(
                "user of {}, not of {}",
                user.server_name(),
                self.server_name
            );
            return with_error(id, Status::NotLocal, &why);
        }

        let info = match self.call(|| self.client.get_user(&user)).await {
            Ok(Lookup::Found(info)) => info,
            Ok(Lookup::NotFound) => {
                let why = "no such user on the server; nothing was created";
                return with_error(id, Status::NotFound, why);
            }
            Err(CallError::Stopped) => return Done::Abandoned,
            Err(CallError::Row(e)) => {
                let why = format!("checking the user: {e}");
                return failed(&e, with_row(base(id, Status::Failed), &why));
            }
        };

        let journaled = self.earlier_passwords.get(&id);
        let unlock = self.unlock && info.locked;
        if !info.deactivated {
            return match journaled {
                // Only users found deactivated are ever journaled, so an active
                // user with a journaled password is one whose reactivation landed
                // just before the earlier run stopped: finish what it began.
                Some(p) if !self.dry_run => {
                    let row = ResultRow {
                        password: Some(p.clone()),
                        ..base(id, Status::Reactivated)
                    };
                    self.finish(&user, &restore, &info, row).await
                }
                _ if unlock && self.dry_run => with_error(id, Status::WouldUnlock, ""),
                _ if unlock => self.unlock_active(&user, base(id, Status::Unlocked)).await,
                _ => with_error(id, Status::AlreadyActive, ""),
            };
        }
        if info.erased && !self.include_erased {
            let why = "account was erased (GDPR); left alone without --include-erased";
            return with_error(id, Status::Erased, why);
        }
        if self.dry_run {
            let note = if info.erased {
                "erased; --include-erased given"
            } else {
                ""
            };
            let row = with_row(base(id, Status::WouldReactivate), note);
            return self.finish(&user, &restore, &info, row).await;
        }

        let password = match (journaled, self.passwords, input_password) {
            (Some(p), _, _) => Some(p.clone()),
            (None, Passwords::None, _) => None,
            (None, Passwords::FromColumn, Some(p)) => Some(p),
            (None, Passwords::FromColumn, None) => {
                return with_error(id, Status::Failed, "no password in the input")
            }
            (None, Passwords::Generate { length }, _) => match crate::password::generate(*length) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.pacer.stop_run(format!("{e:#}"));
                    return Done::Abandoned;
                }
            },
        };
        if let (Some(p), None, Some(journal)) = (&password, journaled, self.journal) {
            if let Err(e) = journal.record(&id, p).await {
                self.pacer.stop_run(format!(
                    "cannot write the password journal {} ({e}); no password was sent \
                     without being saved. Free space or fix the folder, then run again with --resume",
                    journal.path().display()
                ));
                return Done::Abandoned;
            }
        }

        if !self.pace().await {
            return Done::Abandoned;
        }
        let result = self
            .call(|| self.client.reactivate(&user, password.as_deref(), unlock))
            .await;
        match result {
            Ok(()) => {
                let row = ResultRow {
                    password,
                    ..base(id, Status::Reactivated)
                };
                self.finish(&user, &restore, &info, row).await
            }
            Err(CallError::Stopped) => Done::Abandoned,
            Err(CallError::Row(e)) if e.status().is_some_and(|s| s < 500) => {
                // The server refused: nothing was applied.
                let why = format!("reactivating: {e}");
                Done::Row(with_row(base(id, Status::Failed), &why))
            }
            Err(CallError::Row(e)) => {
                // No clear answer (timeouts, 5xx, a garbled body): the change may
                // have landed. Look again rather than guess, and never drop a
                // password the account may now hold.
                match self.call(|| self.client.get_user(&user)).await {
                    Ok(Lookup::Found(now)) if !now.deactivated => {
                        let row = ResultRow {
                            password,
                            ..base(id, Status::Reactivated)
                        };
                        self.finish(&user, &restore, &info, row).await
                    }
                    Ok(_) => {
                        let why = format!("reactivating: {e}");
                        failed(&e, with_row(base(id, Status::Failed), &why))
                    }
                    Err(CallError::Stopped) => Done::Abandoned,
                    Err(CallError::Row(again)) => {
                        let why = format!(
                            "reactivating: {e}; the server could not be asked whether it \
                             applied it ({again}): the account may now have the password in \
                             this row"
                        );
                        let row = ResultRow {
                            password,
                            ..with_row(base(id, Status::Failed), &why)
                        };
                        failed(&again, row)
                    }
                }
            }
        }
    }

    /// A core request: a 401/403 stops the run.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.pacer.call(AuthFailure::StopsRun, request).await
    }

    /// Waits for a slot of the throttle; false if the run stopped meanwhile.
    /// Waiting is not a request in flight: an interruption ends it.
    async fn pace(&self) -> bool {
        let Some(throttle) = self.throttle else {
            return true;
        };
        tokio::select! {
            _ = throttle.acquire() => true,
            _ = self.pacer.stopped() => false,
        }
    }

    /// An active, locked user and `--unlock`: `{"locked": false}` only, so the
    /// password and devices stay as they are.
    async fn unlock_active(&self, user: &UserId, row: ResultRow) -> Done {
        let body = serde_json::json!({ "locked": false });
        match self.call(|| self.client.modify_existing(user, &body)).await {
            Ok(()) => Done::Row(row),
            Err(CallError::Stopped) => Done::Abandoned,
            Err(CallError::Row(e)) => {
                let why = format!("unlocking: {e}");
                let row = ResultRow {
                    status: Status::Failed,
                    ..with_row(row, &why)
                };
                failed(&e, row)
            }
        }
    }

    /// Gives back rooms and profile after a reactivation (or lists the rooms
    /// that would be rejoined, in a dry run) and completes the row.
    async fn finish(
        &self,
        user: &UserId,
        restore: &Restore,
        info: &UserInfo,
        mut row: ResultRow,
    ) -> Done {
        let Ok(restored) = self.restore(user, restore).await else {
            return Done::Abandoned;
        };
        let mut problems: Vec<String> = Vec::new();
        if !row.error.is_empty() {
            problems.push(std::mem::take(&mut row.error));
        }
        if info.locked && !self.unlock {
            problems.push("still locked: run again with --unlock to unlock".into());
        }
        problems.extend(restored.problems);
        row.error = problems.join("; ");
        row.rooms_rejoined = restored.rooms_rejoined.join(";");
        row.rooms_failed = restored.rooms_failed.join("; ");
        Done::Row(row)
    }

    /// Err(()) when the run stops part way: the user is then done again on --resume.
    async fn restore(&self, user: &UserId, restore: &Restore) -> Result<Restored, ()> {
        let mut out = Restored {
            problems: restore.problems.clone(),
            ..Restored::default()
        };
        if restore.has_profile() && !self.dry_run {
            let mut body = serde_json::Map::new();
            if let Some(d) = &restore.displayname {
                body.insert("displayname".into(), d.as_str().into());
            }
            if let Some(a) = &restore.avatar_url {
                body.insert("avatar_url".into(), a.as_str().into());
            }
            if !restore.emails.is_empty() {
                let threepids: Vec<_> = restore
                    .emails
                    .iter()
                    .map(|e| serde_json::json!({ "medium": "email", "address": e }))
                    .collect();
                body.insert("threepids".into(), threepids.into());
            }
            let body = serde_json::Value::Object(body);
            match self.call(|| self.client.modify_existing(user, &body)).await {
                Ok(()) => {}
                Err(CallError::Stopped) => return Err(()),
                Err(CallError::Row(e)) => out.problems.push(format!("profile not given back: {e}")),
            }
        }

        let mut rooms: BTreeSet<String> = BTreeSet::new();
        if let Some(since) = self.rejoin_since {
            match self.call(|| self.client.memberships(user)).await {
                Ok(memberships) => {
                    let mut left: Vec<&String> = memberships
                        .iter()
                        .filter(|(_, m)| m.as_str() == "leave")
                        .map(|(room, _)| room)
                        .collect();
                    left.sort();
                    for room in left {
                        match self.leaves(room).await {
                            Ok(Ok(leaves)) => {
                                if leaves.get(user.as_str()).is_some_and(|&ts| ts >= since) {
                                    rooms.insert(room.clone());
                                }
                            }
                            Ok(Err(why)) => out
                                .rooms_failed
                                .push(format!("{room} (cannot read the room's state: {why})")),
                            Err(()) => return Err(()),
                        }
                    }
                }
                Err(CallError::Stopped) => return Err(()),
                Err(CallError::Row(e)) => out.problems.push(format!("rooms not looked up: {e}")),
            }
        }
        let mut ordered: Vec<String> = rooms.into_iter().collect();
        for room in &restore.rooms {
            if !ordered.contains(room) {
                ordered.push(room.clone());
            }
        }
        for room in ordered {
            if self.dry_run {
                out.rooms_rejoined.push(room);
                continue;
            }
            if !self.pace().await {
                return Err(());
            }
            let joined = self
                .pacer
                .call(AuthFailure::ForbiddenFailsRow, || {
                    self.client.join(&room, user)
                })
                .await;
            match joined {
                Ok(room_id) => out.rooms_rejoined.push(room_id),
                Err(CallError::Stopped) => return Err(()),
                Err(CallError::Row(e)) => {
                    let hint = if e.status() == Some(403) {
                        format!(
                            " — {} cannot join people to this room: invite {} to it (or make it \
                             join), then give the room with --rooms-column",
                            self.admin, self.admin
                        )
                    } else {
                        String::new()
                    };
                    out.rooms_failed.push(format!("{room} ({e}{hint})"));
                }
            }
        }
        Ok(out)
    }

    /// Who left `room` on their own, and when, from its state: fetched once per
    /// run however many users shared the room. Err(()) if the run stopped.
    async fn leaves(&self, room: &str) -> Result<Result<Leaves, String>, ()> {
        let cell = {
            let mut map = self.rooms.rooms.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(room.to_owned()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            match self.call(|| self.client.room_state(room)).await {
                Ok(state) => {
                    let leaves: HashMap<String, i64> = state
                        .into_iter()
                        .filter(|ev| ev.kind == "m.room.member")
                        .filter(|ev| {
                            ev.content.get("membership").and_then(|m| m.as_str()) == Some("leave")
                        })
                        // Left on their own (deactivation makes users leave themselves);
                        // a kick is a leave sent by someone else.
                        .filter_map(|ev| {
                            let who = ev.state_key?;
                            (who == ev.sender).then_some((who, ev.origin_server_ts))
                        })
                        .collect();
                    Ok(Ok(Arc::new(leaves)))
                }
                Err(CallError::Row(e)) => Ok(Err(e.to_string())),
                Err(CallError::Stopped) => Err(()),
            }
        })
        .await
        .cloned()
    }
}

fn with_row(row: ResultRow, error: &str) -> ResultRow {
    ResultRow {
        error: error.to_owned(),
        ..row
    }
}

fn failed(e: &ApiError, row: ResultRow) -> Done {
    if e.is_unreachable() {
        Done::Unreached(row)
    } else {
        Done::Row(row)
    }
}

/// Keeps an unusable cell readable in the results (a 1 MB line stays a short row).
fn shorten(raw: &str) -> String {
    const MAX: usize = 300;
    if raw.len() <= MAX {
        return raw.to_owned();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &raw[..end], raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_shortened_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let short = shorten(&s);
        assert!(short.len() < 320, "{}", short.len());
        assert!(short.ends_with("(2000 bytes)"));
        assert_eq!(shorten("abc"), "abc");
    }
}
