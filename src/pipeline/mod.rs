//! What happens to each user: look up, decide, pace, journal, reactivate,
//! give back. `decide` holds the decisions; this module executes the plans.
//!
//! Invariants this module keeps, beside those of `decide`:
//! - No request that sets a password before that password is fsynced in the
//!   journal (sealed first, with `--encrypt-to`: see `password`).
//! - The clear password lives only until the request that sets it has its
//!   answer; rows and the journal get its recorded (sealed) form.
//! - A reactivation whose outcome is unknown (timeout, 5xx, a garbled answer)
//!   is looked up again, and a password the account may now hold is never
//!   dropped from the results.
//! - Profile fields never ride on the reactivation request (a 429 there can
//!   leave the profile saved and the account still deactivated); they and the
//!   rooms are given back only after the reactivation succeeded (`restore`).
//!
//! It does not write files or print: every outcome goes back to the one
//! consumer (`run::sink`), which owns the results file and the progress display.

pub mod decide;
pub mod give_back;
mod password;
mod restore;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::backend::synapse::SynapseClient;
use crate::backend::{Account, Accounts, Lookup};
use crate::config::Passwords;
use crate::http::ApiError;
use crate::input::{InputRow, Restore};
use crate::journal::Journal;
use crate::pace::Seen;
use crate::report::{format_restored, ResultRow, Status, NOT_IN_SOURCE};
use crate::retry::{auth_message, CallError, Retrier};
use crate::seal::Sealer;
use crate::source::{BeforeImage, Source};
use crate::stop::StopSignal;
use crate::throttle::Throttle;
use crate::user_id::UserId;

use crate::backend::rooms::RoomCache;
use decide::{decide, not_local, Choices, PasswordSource, Plan};
use password::Outgoing;

/// The options that shape what is done to each user.
#[derive(Clone, Debug)]
pub struct Options {
    pub server_name: String,
    /// The admin the token belongs to, named in hints.
    pub admin: String,
    pub dry_run: bool,
    pub include_erased: bool,
    pub unlock: bool,
    pub passwords: Passwords,
    /// `--left-since` in ms, when `--rejoin-rooms` is given.
    pub rejoin_since: Option<i64>,
    /// On `--resume` after a run that sealed its passwords: users it
    /// journaled are not looked up before this instant (see `password::settle`).
    pub settle_until: Option<SystemTime>,
}

/// What every user's processing shares for the whole run.
pub struct Shared<'a, A> {
    pub accounts: &'a A,
    /// Rooms and profile always go through Synapse, whoever holds the logins.
    pub synapse: &'a SynapseClient,
    pub retrier: &'a Retrier,
    pub throttle: Option<&'a Throttle>,
    /// `None` in a dry run.
    pub journal: Option<&'a Journal>,
    /// `--restore-from`: the before-images to give back from.
    pub source: Option<Arc<dyn Source>>,
    /// `--encrypt-to`: passwords are sealed to these recipients before they
    /// are written anywhere.
    pub sealer: Option<&'a Arc<Sealer>>,
    pub options: &'a Options,
}

/// What the run learns as it goes, or brought from an earlier run.
#[derive(Default)]
pub struct Caches {
    /// Passwords an interrupted run journaled for users with no result yet,
    /// as journaled (sealed, with `--encrypt-to`).
    pub earlier_passwords: HashMap<String, String>,
    pub rooms: RoomCache,
}

pub struct Worker<'a, A> {
    pub shared: Shared<'a, A>,
    pub caches: Caches,
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

/// One user being processed.
struct Job {
    user: UserId,
    line: u64,
    restore: Restore,
}

impl Job {
    fn row(&self, status: Status, password: Option<String>, error: &str) -> ResultRow {
        row(
            self.user.as_str().to_owned(),
            self.line,
            status,
            password,
            error,
        )
    }
}

fn row(
    user_id: String,
    line: u64,
    status: Status,
    password: Option<String>,
    error: &str,
) -> ResultRow {
    ResultRow {
        user_id,
        status,
        password,
        error: error.to_owned(),
        line,
        rooms_rejoined: String::new(),
        rooms_failed: String::new(),
        restored: String::new(),
    }
}

impl<A: Accounts> Worker<'_, A> {
    pub async fn process(&self, input: InputRow) -> Done {
        let options = self.shared.options;
        let user = match input.user {
            Ok(u) => u,
            Err(why) => {
                let id = shorten(&input.raw);
                return Done::Row(row(id, input.line, Status::Invalid, None, &why));
            }
        };
        let job = Job {
            user,
            line: input.line,
            restore: input.restore,
        };
        if let Some(why) = not_local(&job.user, &options.server_name) {
            return Done::Row(job.row(Status::NotLocal, None, &why));
        }
        let journaled = self.caches.earlier_passwords.get(job.user.as_str());
        let sealed = self.shared.sealer.is_some();
        if journaled.is_some() && sealed && !self.settle().await {
            return Done::Abandoned;
        }
        let lookup = match self.shared.accounts.look_up(&job.user).await {
            Ok(l) => l,
            Err(CallError::Stopped) => return Done::Abandoned,
            Err(CallError::Row(e)) => {
                let why = format!("checking the user: {e}");
                return failed(&e, job.row(Status::Failed, None, &why));
            }
        };
        let choices = Choices {
            dry_run: options.dry_run,
            include_erased: options.include_erased,
            unlock: options.unlock,
            passwords: &options.passwords,
            sealed,
        };
        let plan = decide(
            &lookup,
            journaled.map(String::as_str),
            input.password.as_deref(),
            &choices,
        );
        let account = match lookup {
            Lookup::Found(a) => a,
            Lookup::NotFound => Account::default(),
        };
        self.execute(plan, &job, &account).await
    }

    async fn execute(&self, plan: Plan, job: &Job, account: &Account) -> Done {
        match plan {
            Plan::Report { status, note } => Done::Row(job.row(status, None, note)),
            Plan::FinishEarlier { password } => {
                let row = job.row(Status::Reactivated, Some(password), "");
                self.finish(job, account, row).await
            }
            Plan::WouldReactivate { note } => {
                let row = job.row(Status::WouldReactivate, None, note);
                self.finish(job, account, row).await
            }
            Plan::Unlock => match self.shared.accounts.unlock(&job.user, account).await {
                Ok(()) => Done::Row(job.row(Status::Unlocked, None, "")),
                Err(CallError::Stopped) => Done::Abandoned,
                Err(CallError::Row(e)) => {
                    let why = format!("unlocking: {e}");
                    failed(&e, job.row(Status::Failed, None, &why))
                }
            },
            Plan::Reactivate { password, unlock } => {
                self.reactivate(job, account, password, unlock).await
            }
        }
    }

    fn stop(&self) -> &StopSignal {
        self.shared.retrier.stop_signal()
    }

    async fn reactivate(
        &self,
        job: &Job,
        account: &Account,
        source: PasswordSource,
        unlock: bool,
    ) -> Done {
        let Ok(password) = self.password(job, source).await else {
            return Done::Abandoned;
        };
        if !self.pace().await {
            return Done::Abandoned;
        }
        let sent = tokio::time::Instant::now();
        let outcome = self
            .shared
            .accounts
            .reactivate(
                &job.user,
                account,
                password.as_ref().map(Outgoing::clear),
                unlock,
            )
            .await;
        if outcome.is_ok() {
            // How long the server took: `--rate auto` watches it grow.
            let meter = self.shared.retrier.meter();
            meter.seen(Seen::Work(sent.elapsed()));
        }
        // The request has its answer: the clear password is wiped here, and
        // only the form the journal holds goes on into the row.
        let password = password.map(Outgoing::into_recorded);
        match self.confirm(job, &password, outcome).await {
            Ok(()) => {
                let row = job.row(Status::Reactivated, password, "");
                self.finish(job, account, row).await
            }
            Err(done) => done,
        }
    }

    /// Whether a reactivation took effect: `Ok` if it did, else the user's end.
    /// `password` is as recorded (sealed, with `--encrypt-to`).
    async fn confirm(
        &self,
        job: &Job,
        password: &Option<String>,
        outcome: Result<(), CallError>,
    ) -> Result<(), Done> {
        let e = match outcome {
            Ok(()) => return Ok(()),
            Err(CallError::Stopped) => return Err(Done::Abandoned),
            Err(CallError::Row(e)) => e,
        };
        let why = format!("reactivating: {e}");
        if e.status().is_some_and(|s| s < 500) {
            // The server refused: nothing was applied, so no password is set.
            if password.is_some() && !self.forget_password(job).await {
                return Err(Done::Abandoned);
            }
            if e.status() == Some(403) {
                // Refused for the whole run (password login off, admin right
                // lost), not for this user.
                self.stop().stop_run(auth_message(&e));
                return Err(Done::Abandoned);
            }
            return Err(Done::Row(job.row(Status::Failed, None, &why)));
        }
        // No clear answer: the change may have landed. Look again rather than
        // guess, and never drop a password the account may now hold.
        match self.shared.accounts.look_up(&job.user).await {
            Ok(Lookup::Found(now)) if !now.deactivated => Ok(()),
            Ok(_) => Err(failed(&e, job.row(Status::Failed, None, &why))),
            Err(CallError::Stopped) => Err(Done::Abandoned),
            Err(CallError::Row(again)) => {
                let why = format!(
                    "{why}; the server could not be asked whether it applied it ({again}): \
                     the account may now have the password in this row"
                );
                Err(failed(
                    &again,
                    job.row(Status::Failed, password.clone(), &why),
                ))
            }
        }
    }

    /// Records in the journal that the user's password was not set, so a
    /// resumed run does not send it again; false if the run had to stop.
    async fn forget_password(&self, job: &Job) -> bool {
        let Some(journal) = self.shared.journal else {
            return true;
        };
        match journal.forget(job.user.as_str()).await {
            Ok(()) => true,
            Err(e) => {
                self.stop().stop_run(format!(
                    "cannot write the password journal {} ({e}); free space or fix the folder, \
                     then run again with --resume",
                    journal.path().display()
                ));
                false
            }
        }
    }

    /// Waits for a slot of the throttle; false if the run stopped meanwhile.
    /// Waiting is not a request in flight: an interruption ends it.
    async fn pace(&self) -> bool {
        let Some(throttle) = self.shared.throttle else {
            return true;
        };
        tokio::select! {
            _ = throttle.acquire() => true,
            _ = self.stop().stopped() => false,
        }
    }

    /// Gives back rooms, profile and what the source holds after a
    /// reactivation (or lists what would come back, in a dry run) and
    /// completes the row.
    async fn finish(&self, job: &Job, account: &Account, mut row: ResultRow) -> Done {
        let image = match &self.shared.source {
            Some(source) => Some(give_back::read_image(source, &job.user).await),
            None => None,
        };
        let source_rooms = match &image {
            Some(Ok(Some(image))) => image.rooms.as_slice(),
            _ => &[],
        };
        let Ok(restored) = self.give_back(job, account, source_rooms).await else {
            return Done::Abandoned;
        };
        let mut problems: Vec<String> = Vec::new();
        if !row.error.is_empty() {
            problems.push(std::mem::take(&mut row.error));
        }
        if account.locked && !self.shared.options.unlock {
            problems.push("still locked: run again with --unlock to unlock".into());
        }
        problems.extend(restored.problems);
        match image {
            None => {}
            Some(Err(why)) => problems.push(format!("nothing given back from the source: {why}")),
            Some(Ok(None)) => problems.push(NOT_IN_SOURCE.into()),
            Some(Ok(Some(image))) => {
                let Ok(tally) = self
                    .give_back_from(job, account, &image, &restored.rooms_rejoined)
                    .await
                else {
                    return Done::Abandoned;
                };
                row.restored = format_restored(&tally.counts);
                problems.extend(tally.problems);
                problems.extend(tally.kept);
            }
        }
        row.error = problems.join("; ");
        row.rooms_rejoined = restored.rooms_rejoined.join(";");
        row.rooms_failed = restored.rooms_failed.join("; ");
        Done::Row(row)
    }

    /// What the before-image gives back (would give back, in a dry run),
    /// counting the source's rooms that were joined.
    async fn give_back_from(
        &self,
        job: &Job,
        account: &Account,
        image: &BeforeImage,
        joined: &[String],
    ) -> Result<give_back::Tally, give_back::Stopped> {
        let mut tally = if self.shared.options.dry_run {
            give_back::would_give_back(image)
        } else {
            let mut tally = give_back::Tally::default();
            self.give_back_image(job, account, image, &mut tally)
                .await?;
            tally
        };
        let rooms = image.rooms.iter().filter(|r| joined.contains(r)).count();
        tally.add(give_back::Item::Rooms, rooms as u64);
        Ok(tally)
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
