//! The account operations the pipeline needs, behind one seam: look a user up,
//! reactivate, unlock, read and give back e-mail addresses and phone numbers,
//! and act as a user for a few minutes (`act_as`).
//!
//! Where the logins live decides who holds an account's state: Synapse itself
//! (`synapse`), or Matrix Authentication Service beside it. Each backend runs
//! its requests through the run's retrier and answers in the terms of this
//! module, so the pipeline's decisions never learn which backend it talks to.
//! A backend never learns about rows, results or the progress display.

pub mod act_as;
pub mod key_stream;
pub mod mas;
pub mod rooms;
pub mod synapse;

use std::time::Duration;

use crate::retry::CallError;
use crate::source::Threepid;
use crate::user_id::UserId;
use act_as::UserSession;

/// What the servers say about one account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub deactivated: bool,
    /// Erased (GDPR): the user asked to be forgotten, or was made to be.
    pub erased: bool,
    pub locked: bool,
    /// The backend's own handle for the account (MAS's user ID), when it has one.
    pub handle: Option<String>,
}

/// The outcome of a lookup that the servers answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Account),
    /// No such user: nothing may be created for it.
    NotFound,
}

/// Account operations, each retried by the run's policy. `Err(CallError::Row)`
/// is final for the user; `Err(CallError::Stopped)` means the run is stopping.
// The futures are polled on the run's own task and never spawned, so no
// `Send` bound is promised.
#[allow(async_fn_in_trait)]
pub trait Accounts {
    /// Looks the user up. Never creates anything.
    async fn look_up(&self, user: &UserId) -> Result<Lookup, CallError>;

    /// Reactivates a user that `look_up` found deactivated, setting `password`
    /// when given and unlocking when asked. An error with a status below 500
    /// means the server refused and applied nothing (a 403 is returned, not
    /// turned into a stop, so the caller can forget the password first); any
    /// other error leaves the outcome unknown, and the caller looks again.
    async fn reactivate(
        &self,
        user: &UserId,
        account: &Account,
        password: Option<&str>,
        unlock: bool,
    ) -> Result<(), CallError>;

    /// Unlocks an active user, changing nothing else.
    async fn unlock(&self, user: &UserId, account: &Account) -> Result<(), CallError>;

    /// The user's e-mail addresses and phone numbers as the backend holds
    /// them now: Synapse's list, or the e-mails MAS holds (MAS has no phone
    /// numbers).
    async fn threepids(&self, user: &UserId, account: &Account)
        -> Result<Vec<Threepid>, CallError>;

    /// Gives back e-mail addresses and phone numbers that deactivation
    /// removed, keeping every one the account has now (a union, never a
    /// replacement; e-mails compared without case). Nothing is sent when
    /// nothing is missing. On MAS, phone numbers cannot be given back: the
    /// e-mails are added, then a row error names the numbers.
    async fn add_threepids(
        &self,
        user: &UserId,
        account: &Account,
        threepids: &[Threepid],
    ) -> Result<(), CallError>;

    /// A token to act as an active user, valid for `lifetime` at most
    /// (Synapse's puppet login, which makes no device; MAS's personal
    /// session, scope `urn:matrix:client:api:*`). The admin cannot act as
    /// themselves on Synapse (a row error says so: use the admin's own token);
    /// MAS refuses a deactivated user (410). A retried request may leave a
    /// second token behind, which expires by itself. A locked user's token
    /// is refused by the server.
    async fn act_as(
        &self,
        user: &UserId,
        account: &Account,
        lifetime: Duration,
    ) -> Result<UserSession, CallError>;

    /// Ends a session at once (logout, or revoke). A token that is gone
    /// already (expired, revoked) counts as ended.
    async fn end_acting(&self, session: UserSession) -> Result<(), CallError>;
}
