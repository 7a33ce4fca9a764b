//! What happens to each user: pre-check, pace, journal, reactivate.
//!
//! Invariants this module keeps:
//! - No PUT for a user that the GET did not find deactivated (a PUT on an unknown
//!   ID creates an account; on an active one it replaces the password).
//! - No PUT in a dry run, for an erased user without `--include-erased`, or for a
//!   user of another server.
//! - No PUT carrying a password before that password is fsynced in the journal.
//!
//! It does not write files or print: every outcome goes back to the one consumer
//! in `lib.rs`, which owns the results file and the progress display.

use std::collections::HashMap;

use crate::config::Passwords;
use crate::input::InputRow;
use crate::journal::Journal;
use crate::report::{ResultRow, Status};
use crate::retry::{AuthFailure, CallError, Pacer};
use crate::synapse::{ApiError, Client, Lookup};
use crate::throttle::Throttle;

/// Everything a user's processing needs, shared by reference across the run.
pub struct Worker<'a> {
    pub client: &'a Client,
    pub pacer: &'a Pacer,
    pub throttle: Option<&'a Throttle>,
    /// `None` in a dry run.
    pub journal: Option<&'a Journal>,
    pub server_name: &'a str,
    pub dry_run: bool,
    pub include_erased: bool,
    pub passwords: &'a Passwords,
    /// Passwords an interrupted run journaled for users with no result yet.
    pub earlier_passwords: &'a HashMap<String, String>,
}

/// The end of one user's processing.
#[derive(Debug)]
pub enum Done {
    Row(ResultRow),
    /// Failed because the server could not be reached. Written once the server
    /// is seen answering again; dropped (left for `--resume`) if the run stops
    /// because it never does.
    Unreached(ResultRow),
    /// The run is stopping (fatal error); the user gets no row now and is done
    /// again on `--resume`.
    Abandoned,
}

fn failed(e: &ApiError, row: ResultRow) -> Done {
    if e.is_unreachable() {
        Done::Unreached(row)
    } else {
        Done::Row(row)
    }
}

impl Worker<'_> {
    pub async fn process(&self, row: InputRow) -> Done {
        let line = row.line;
        let make =
            |user_id: String, status: Status, password: Option<String>, error: String| ResultRow {
                user_id,
                status,
                password,
                error,
                line,
            };
        let done = |user_id: String, status: Status, password: Option<String>, error: String| {
            Done::Row(make(user_id, status, password, error))
        };
        let user = match row.user {
            Ok(u) => u,
            Err(reason) => return done(shorten(&row.raw), Status::Invalid, None, reason),
        };
        let id = user.as_str().to_owned();
        if user.server_name() != self.server_name {
            return done(
                id,
                Status::NotLocal,
                None,
                format!(
                    "user of {}, not of {}",
                    user.server_name(),
                    self.server_name
                ),
            );
        }

        let lookup = self
            .pacer
            .call(AuthFailure::StopsRun, || self.client.get_user(&user))
            .await;
        let info = match lookup {
            Ok(Lookup::Found(info)) => info,
            Ok(Lookup::NotFound) => {
                return done(
                    id,
                    Status::NotFound,
                    None,
                    "no such user on the server; nothing was created".into(),
                )
            }
            Err(CallError::Stopped) => return Done::Abandoned,
            Err(CallError::Row(e)) => {
                let row = make(id, Status::Failed, None, format!("checking the user: {e}"));
                return failed(&e, row);
            }
        };

        let journaled = self.earlier_passwords.get(&id);
        if !info.deactivated {
            return match journaled {
                // Only users found deactivated are ever journaled, so an active
                // user with a journaled password is one whose reactivation landed
                // just before the earlier run stopped.
                Some(p) if !self.dry_run => {
                    done(id, Status::Reactivated, Some(p.clone()), String::new())
                }
                _ => done(id, Status::AlreadyActive, None, String::new()),
            };
        }
        if info.erased && !self.include_erased {
            return done(
                id,
                Status::Erased,
                None,
                "account was erased (GDPR); left alone without --include-erased".into(),
            );
        }
        if self.dry_run {
            let note = if info.erased {
                "erased; --include-erased given"
            } else {
                ""
            };
            return done(id, Status::WouldReactivate, None, note.into());
        }

        let password = match (journaled, self.passwords, row.password) {
            (Some(p), _, _) => Some(p.clone()),
            (None, Passwords::None, _) => None,
            (None, Passwords::FromColumn, Some(p)) => Some(p),
            (None, Passwords::FromColumn, None) => {
                return done(id, Status::Failed, None, "no password in the input".into())
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

        if let Some(throttle) = self.throttle {
            // Waiting for a slot is not a request in flight: an interruption
            // ends it. The password is journaled, so --resume reuses it.
            tokio::select! {
                _ = throttle.acquire() => {}
                _ = self.pacer.stopped() => return Done::Abandoned,
            }
        }
        let result = self
            .pacer
            .call(AuthFailure::StopsRun, || {
                self.client.reactivate(&user, password.as_deref())
            })
            .await;
        match result {
            Ok(()) => done(id, Status::Reactivated, password, String::new()),
            Err(CallError::Stopped) => Done::Abandoned,
            Err(CallError::Row(e)) => {
                let row = make(id, Status::Failed, None, format!("reactivating: {e}"));
                failed(&e, row)
            }
        }
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
