//! Giving back what deactivation deleted, from a before-image (`--restore-from`):
//! e-mail addresses and phone numbers, display name and avatar, account data
//! (global and per room), push rules and the newest key backup. Rooms come
//! back with the others in `restore`.
//!
//! Never clobber: only what the account lacks now is written. An item the
//! account holds as the source has it counts as given back (a resumed run
//! finds what the interrupted one wrote); an item it holds otherwise is kept
//! as it is, and the row says so. A backup version whose algorithm and
//! `auth_data` are the source's is the one an interrupted run created: its
//! sessions are uploaded again (harmless), and no second version is made.
//!
//! The functions that say what is missing are pure and table-tested below;
//! the executor acts as the user through a token that expires by itself, and
//! ends it as soon as the user is done.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::{Job, Worker};
use crate::backend::act_as::{BackupNow, RuleNow, UserSession};
use crate::backend::{Account, Accounts};
use crate::http::ApiError;
use crate::report::{KEPT_NOTE, RESTORED_ITEMS};
use crate::retry::{AuthFailure, CallError};
use crate::source::{
    AccountData, Backup, BeforeImage, CustomRule, Json, Profile, PushRules, Source, Threepid,
};
use crate::user_id::UserId;

/// How long a user's token lives at most. Restoring one user takes seconds;
/// the margin covers a 429 pause or an outage ridden through. After a crash
/// nothing else ends the token, so it stays short.
pub const ACT_AS_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Sessions uploaded per request: about 350 KB of JSON.
pub const SESSIONS_PER_UPLOAD: usize = 1000;

/// The items of the `restored` column, as indexes into `RESTORED_ITEMS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Emails = 0,
    Profile = 1,
    Rooms = 2,
    AccountData = 3,
    RoomAccountData = 4,
    PushRules = 5,
    BackupKeys = 6,
}

impl Item {
    pub fn name(self) -> &'static str {
        RESTORED_ITEMS[self as usize]
    }
}

/// What was given back for one user, what was kept, what failed.
#[derive(Debug, Default)]
pub struct Tally {
    pub counts: [u64; 7],
    /// `kept: …` notes: the account already had these, otherwise.
    pub kept: Vec<String>,
    /// Items that could not be given back, with the reason.
    pub problems: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, item: Item, n: u64) {
        self.counts[item as usize] += n;
    }

    fn keep(&mut self, what: String) {
        self.kept.push(format!("{KEPT_NOTE}{what}"));
    }

    fn fail(&mut self, item: Item, e: impl std::fmt::Display) {
        self.problems
            .push(format!("{} not given back: {e}", item.name()));
    }
}

/// The run stopped part way: the user is done again on --resume.
pub struct Stopped;

// ---------------------------------------------------------------------------
// What is missing: pure functions.
// ---------------------------------------------------------------------------

/// Whether two JSON texts hold the same value (key order and spacing aside).
fn same_json(a: &Json, b: &Value) -> bool {
    serde_json::from_str::<Value>(a.get()).is_ok_and(|a| &a == b)
}

fn same_threepid(a: &Threepid, b: &Threepid) -> bool {
    a.medium == b.medium
        && if a.medium == "email" {
            a.address.eq_ignore_ascii_case(&b.address)
        } else {
            a.address == b.address
        }
}

/// The source's addresses the account lacks, and how many it has already.
pub fn missing_threepids<'a>(before: &'a [Threepid], now: &[Threepid]) -> (Vec<&'a Threepid>, u64) {
    let (present, missing): (Vec<&Threepid>, Vec<&Threepid>) = before
        .iter()
        .partition(|b| now.iter().any(|n| same_threepid(b, n)));
    (missing, present.len() as u64)
}

/// What to do with the display name and avatar.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProfilePlan {
    /// Fields the account lacks and the source has.
    pub set: Profile,
    /// Fields the account holds otherwise.
    pub kept: Vec<&'static str>,
    /// Fields that hold the source's value already.
    pub same: u64,
}

pub fn missing_profile(before: &Profile, now: &Profile) -> ProfilePlan {
    let mut plan = ProfilePlan::default();
    let fields = [
        ("displayname", &before.displayname, &now.displayname),
        ("avatar_url", &before.avatar_url, &now.avatar_url),
    ];
    for (name, was, is) in fields {
        let Some(was) = was.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        match is.as_deref().filter(|v| !v.is_empty()) {
            None => {
                let value = Some(was.to_owned());
                if name == "displayname" {
                    plan.set.displayname = value;
                } else {
                    plan.set.avatar_url = value;
                }
            }
            Some(is) if is == was => plan.same += 1,
            Some(_) => plan.kept.push(name),
        }
    }
    plan
}

/// What to do with account data.
#[derive(Debug, Default)]
pub struct AccountDataPlan<'a> {
    pub put: Vec<&'a AccountData>,
    /// Items the account holds as the source has them: (global, per room).
    pub same: (u64, u64),
    /// `type` or `room/type` of items the account holds otherwise.
    pub kept: Vec<String>,
}

pub fn missing_account_data<'a>(
    before: &'a [AccountData],
    now: &[AccountData],
) -> AccountDataPlan<'a> {
    let mut plan = AccountDataPlan::default();
    for item in before {
        let current = now
            .iter()
            .find(|n| n.room_id == item.room_id && n.kind == item.kind);
        let Some(current) = current else {
            plan.put.push(item);
            continue;
        };
        let current: Value = serde_json::from_str(current.content.get()).unwrap_or(Value::Null);
        if same_json(&item.content, &current) {
            match item.room_id {
                None => plan.same.0 += 1,
                Some(_) => plan.same.1 += 1,
            }
        } else {
            plan.kept.push(match &item.room_id {
                None => item.kind.clone(),
                Some(room) => format!("{room}/{}", item.kind),
            });
        }
    }
    plan
}

/// One change to the user's push rules.
#[derive(Debug)]
pub enum PushStep<'a> {
    /// A custom rule the account lacks, placed after the rule before it in
    /// the source (at the top of its kind when it was the first).
    Put {
        rule: &'a CustomRule,
        after: Option<&'a str>,
    },
    Enable {
        kind: &'a str,
        rule_id: &'a str,
        enabled: bool,
    },
    Actions {
        kind: &'a str,
        rule_id: &'a str,
        actions: &'a Json,
    },
}

#[derive(Debug, Default)]
pub struct PushPlan<'a> {
    pub steps: Vec<PushStep<'a>>,
    /// Rules the plan changes (a rule put and disabled counts once).
    pub changed: u64,
    /// Rules that hold the source's state already.
    pub same: u64,
    /// `kind/rule_id` of custom rules the account holds otherwise.
    pub kept: Vec<String>,
    /// Default rules the server does not have.
    pub unknown: Vec<String>,
}

fn same_custom(rule: &CustomRule, now: &RuleNow) -> bool {
    let conditions = match (&rule.conditions, &now.conditions) {
        (Some(a), Some(b)) => same_json(a, b),
        (None, None) => true,
        (None, Some(b)) => b.as_array().is_some_and(|a| a.is_empty()) || rule.pattern.is_some(),
        (Some(a), None) => same_json(a, &Value::Array(vec![])),
    };
    now.enabled == rule.enabled
        && same_json(&rule.actions, &now.actions)
        && rule.pattern == now.pattern
        && conditions
}

pub fn push_rule_plan<'a>(before: &'a PushRules, now: &[RuleNow]) -> PushPlan<'a> {
    let mut plan = PushPlan::default();
    let find = |kind: &str, id: &str| now.iter().find(|n| n.kind == kind && n.rule_id == id);
    let mut previous: Option<(&str, &str)> = None;
    for rule in &before.custom {
        let after = previous
            .filter(|(kind, _)| *kind == rule.kind)
            .map(|(_, id)| id);
        previous = Some((&rule.kind, &rule.rule_id));
        match find(&rule.kind, &rule.rule_id) {
            Some(current) if same_custom(rule, current) => plan.same += 1,
            Some(_) => plan.kept.push(format!("{}/{}", rule.kind, rule.rule_id)),
            None => {
                plan.changed += 1;
                plan.steps.push(PushStep::Put { rule, after });
                if !rule.enabled {
                    plan.steps.push(PushStep::Enable {
                        kind: &rule.kind,
                        rule_id: &rule.rule_id,
                        enabled: false,
                    });
                }
            }
        }
    }
    for rule in &before.defaults {
        let Some(current) = find(&rule.kind, &rule.rule_id).filter(|n| n.default) else {
            if rule.enabled.is_some() || rule.actions.is_some() {
                plan.unknown.push(format!("{}/{}", rule.kind, rule.rule_id));
            }
            continue;
        };
        let mut changed = false;
        if let Some(enabled) = rule.enabled.filter(|e| *e != current.enabled) {
            plan.steps.push(PushStep::Enable {
                kind: &rule.kind,
                rule_id: &rule.rule_id,
                enabled,
            });
            changed = true;
        }
        if let Some(actions) = rule
            .actions
            .as_ref()
            .filter(|a| !same_json(a, &current.actions))
        {
            plan.steps.push(PushStep::Actions {
                kind: &rule.kind,
                rule_id: &rule.rule_id,
                actions,
            });
            changed = true;
        }
        if changed {
            plan.changed += 1;
        }
    }
    plan
}

/// What to do with the key backup.
#[derive(Debug, PartialEq, Eq)]
pub enum BackupPlan {
    /// The source has none.
    Nothing,
    /// The account has none: create one with the source's algorithm and
    /// `auth_data`, then upload every session.
    Create,
    /// The account's newest version is the source's (an interrupted run made
    /// it): upload every session into it.
    Continue(String),
    /// The account has a backup of its own (the user set up a new one).
    Kept(String),
}

pub fn backup_plan(before: Option<&Backup>, now: Option<&BackupNow>) -> BackupPlan {
    let Some(before) = before.filter(|b| b.sessions > 0 || !b.algorithm.is_empty()) else {
        return BackupPlan::Nothing;
    };
    match now {
        None => BackupPlan::Create,
        Some(now) => {
            let auth: Value = serde_json::from_str(now.auth_data.get()).unwrap_or(Value::Null);
            if now.algorithm == before.algorithm && same_json(&before.auth_data, &auth) {
                BackupPlan::Continue(now.version.clone())
            } else {
                BackupPlan::Kept(now.version.clone())
            }
        }
    }
}

/// What a dry run says would come back: everything the source holds.
pub fn would_give_back(image: &BeforeImage) -> Tally {
    let mut tally = Tally::default();
    let (global, room): (Vec<&AccountData>, Vec<&AccountData>) =
        image.account_data.iter().partition(|a| a.room_id.is_none());
    let profile = [&image.profile.displayname, &image.profile.avatar_url]
        .iter()
        .any(|f| f.as_deref().is_some_and(|v| !v.is_empty()));
    tally.add(Item::Emails, image.threepids.len() as u64);
    tally.add(Item::Profile, profile as u64);
    tally.add(Item::AccountData, global.len() as u64);
    tally.add(Item::RoomAccountData, room.len() as u64);
    // Changes to default rules are only known by comparing with the account's.
    tally.add(Item::PushRules, image.push_rules.custom.len() as u64);
    tally.add(
        Item::BackupKeys,
        image.backup.as_ref().map_or(0, |b| b.sessions),
    );
    tally
}

// ---------------------------------------------------------------------------
// The executor.
// ---------------------------------------------------------------------------

/// Reads one user's before-image on the blocking pool (a query, a file read).
pub async fn read_image(
    source: &std::sync::Arc<dyn Source>,
    user: &UserId,
) -> Result<Option<BeforeImage>, String> {
    let source = source.clone();
    let user = user.clone();
    match tokio::task::spawn_blocking(move || source.image(&user)).await {
        Ok(Ok(image)) => Ok(image),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(e) => Err(format!("the source reader failed: {e}")),
    }
}

impl<A: Accounts> Worker<'_, A> {
    /// Gives back what `image` holds and the account lacks, after a
    /// reactivation. Rooms are given back by `restore`.
    pub(super) async fn give_back_image(
        &self,
        job: &Job,
        account: &Account,
        image: &BeforeImage,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        self.give_back_threepids(job, account, &image.threepids, tally)
            .await?;
        self.give_back_profile(&job.user, &image.profile, tally)
            .await?;
        let needs_user = !image.account_data.is_empty()
            || !image.push_rules.custom.is_empty()
            || !image.push_rules.defaults.is_empty()
            || image.backup.is_some();
        if !needs_user {
            return Ok(());
        }
        let begun = self
            .shared
            .accounts
            .act_as(&job.user, account, ACT_AS_LIFETIME);
        let session = match begun.await {
            Ok(s) => s,
            Err(CallError::Stopped) => return Err(Stopped),
            Err(CallError::Row(e)) => {
                tally.problems.push(format!(
                    "account data, push rules and key backup not given back: cannot act as the \
                     user ({e})"
                ));
                return Ok(());
            }
        };
        let done = self.as_user(&session, image, tally).await;
        // Ended even when the run is stopping: the token must not outlive the user's turn.
        if let Err(CallError::Row(e)) = self.shared.accounts.end_acting(session).await {
            tally.problems.push(format!(
                "the user's temporary token could not be ended ({e}); it expires by itself \
                 within {} minutes",
                ACT_AS_LIFETIME.as_secs() / 60
            ));
        }
        done
    }

    async fn as_user(
        &self,
        session: &UserSession,
        image: &BeforeImage,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        self.give_back_account_data(session, &image.account_data, tally)
            .await?;
        self.give_back_push_rules(session, &image.push_rules, tally)
            .await?;
        if let Some(backup) = &image.backup {
            self.give_back_backup(session, backup, tally).await?;
        }
        Ok(())
    }

    /// A request as the admin, retried; a 401/403 ends the run.
    async fn admin<T, F, Fut>(&self, request: F) -> Result<Result<T, ApiError>, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retried(AuthFailure::StopsRun, request).await
    }

    /// A request as the user, retried; a 401/403 fails the item, not the run
    /// (the user's token is not the admin's).
    async fn user<T, F, Fut>(&self, request: F) -> Result<Result<T, ApiError>, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retried(AuthFailure::FailsRow, request).await
    }

    /// The item's answer, or `Stopped` when the run is stopping.
    async fn retried<T, F, Fut>(
        &self,
        auth: AuthFailure,
        request: F,
    ) -> Result<Result<T, ApiError>, Stopped>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        match self.shared.retrier.call(auth, request).await {
            Ok(v) => Ok(Ok(v)),
            Err(CallError::Row(e)) => Ok(Err(e)),
            Err(CallError::Stopped) => Err(Stopped),
        }
    }

    async fn give_back_threepids(
        &self,
        job: &Job,
        account: &Account,
        before: &[Threepid],
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        if before.is_empty() {
            return Ok(());
        }
        let accounts = self.shared.accounts;
        let now = match accounts.threepids(&job.user, account).await {
            Ok(now) => now,
            Err(CallError::Stopped) => return Err(Stopped),
            Err(CallError::Row(e)) => {
                tally.fail(Item::Emails, e);
                return Ok(());
            }
        };
        let (missing, present) = missing_threepids(before, &now);
        tally.add(Item::Emails, present);
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<Threepid> = missing.into_iter().cloned().collect();
        match accounts.add_threepids(&job.user, account, &missing).await {
            Ok(()) => tally.add(Item::Emails, missing.len() as u64),
            Err(CallError::Stopped) => return Err(Stopped),
            Err(CallError::Row(e)) => {
                tally.fail(Item::Emails, e);
                // Some may have been added before the failure: count what is there.
                if let Ok(now) = accounts.threepids(&job.user, account).await {
                    let (_, present) = missing_threepids(&missing, &now);
                    tally.add(Item::Emails, present);
                }
            }
        }
        Ok(())
    }

    async fn give_back_profile(
        &self,
        user: &UserId,
        before: &Profile,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        if before.displayname.is_none() && before.avatar_url.is_none() {
            return Ok(());
        }
        let synapse = self.shared.synapse;
        let now = match self.admin(|| synapse.profile(user)).await? {
            Ok(now) => now,
            Err(e) => {
                tally.fail(Item::Profile, e);
                return Ok(());
            }
        };
        let plan = missing_profile(before, &now.unwrap_or_default());
        for field in &plan.kept {
            tally.keep(format!("{field} (the account has its own)"));
        }
        let mut body = serde_json::Map::new();
        if let Some(d) = &plan.set.displayname {
            body.insert("displayname".into(), d.as_str().into());
        }
        if let Some(a) = &plan.set.avatar_url {
            body.insert("avatar_url".into(), a.as_str().into());
        }
        if body.is_empty() {
            tally.add(Item::Profile, (plan.same > 0) as u64);
            return Ok(());
        }
        let body = Value::Object(body);
        match self.admin(|| synapse.modify_existing(user, &body)).await? {
            Ok(()) => tally.add(Item::Profile, 1),
            Err(e) => tally.fail(Item::Profile, e),
        }
        Ok(())
    }

    async fn give_back_account_data(
        &self,
        session: &UserSession,
        before: &[AccountData],
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        if before.is_empty() {
            return Ok(());
        }
        let synapse = self.shared.synapse;
        let now = match self.admin(|| synapse.account_data(&session.user)).await? {
            Ok(now) => now,
            Err(e) => {
                tally.fail(Item::AccountData, e);
                return Ok(());
            }
        };
        let plan = missing_account_data(before, &now);
        tally.add(Item::AccountData, plan.same.0);
        tally.add(Item::RoomAccountData, plan.same.1);
        if !plan.kept.is_empty() {
            tally.keep(format!(
                "account data the account has its own of: {}",
                plan.kept.join(", ")
            ));
        }
        let mut failed: Vec<String> = Vec::new();
        for item in plan.put {
            match self.user(|| session.put_account_data(item)).await? {
                Ok(()) if item.room_id.is_none() => tally.add(Item::AccountData, 1),
                Ok(()) => tally.add(Item::RoomAccountData, 1),
                Err(e) => failed.push(format!(
                    "{}{} ({e})",
                    item.room_id
                        .as_deref()
                        .map(|r| format!("{r}/"))
                        .unwrap_or_default(),
                    item.kind
                )),
            }
        }
        if !failed.is_empty() {
            tally.fail(Item::AccountData, failed.join(", "));
        }
        Ok(())
    }

    async fn give_back_push_rules(
        &self,
        session: &UserSession,
        before: &PushRules,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        if before.custom.is_empty() && before.defaults.is_empty() {
            return Ok(());
        }
        let now = match self.user(|| session.push_rules()).await? {
            Ok(now) => now,
            Err(e) => {
                tally.fail(Item::PushRules, e);
                return Ok(());
            }
        };
        let plan = push_rule_plan(before, &now);
        if !plan.kept.is_empty() {
            tally.keep(format!(
                "push rules the account has its own of: {}",
                plan.kept.join(", ")
            ));
        }
        if !plan.unknown.is_empty() {
            tally.keep(format!(
                "changes to default push rules this server does not have: {}",
                plan.unknown.join(", ")
            ));
        }
        let mut failed: Vec<String> = Vec::new();
        let mut touched: HashSet<(&str, &str)> = HashSet::new();
        for step in &plan.steps {
            let (kind, rule_id, sent) = match step {
                PushStep::Put { rule, after } => (
                    rule.kind.as_str(),
                    rule.rule_id.as_str(),
                    self.user(|| session.put_push_rule(rule, *after)).await?,
                ),
                PushStep::Enable {
                    kind,
                    rule_id,
                    enabled,
                } => (
                    *kind,
                    *rule_id,
                    self.user(|| session.set_push_rule_enabled(kind, rule_id, *enabled))
                        .await?,
                ),
                PushStep::Actions {
                    kind,
                    rule_id,
                    actions,
                } => (
                    *kind,
                    *rule_id,
                    self.user(|| session.set_push_rule_actions(kind, rule_id, actions))
                        .await?,
                ),
            };
            match sent {
                Ok(()) => {
                    touched.insert((kind, rule_id));
                }
                Err(e) => failed.push(format!("{kind}/{rule_id} ({e})")),
            }
        }
        tally.add(Item::PushRules, plan.same + touched.len() as u64);
        if !failed.is_empty() {
            tally.fail(Item::PushRules, failed.join(", "));
        }
        Ok(())
    }

    async fn give_back_backup(
        &self,
        session: &UserSession,
        before: &Backup,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        let now = match self.user(|| session.backup()).await? {
            Ok(now) => now,
            Err(e) => {
                tally.fail(Item::BackupKeys, e);
                return Ok(());
            }
        };
        let version = match backup_plan(Some(before), now.as_ref()) {
            BackupPlan::Nothing => return Ok(()),
            BackupPlan::Kept(v) => {
                tally.keep(format!(
                    "key backup (the account has a backup of its own, version {v})"
                ));
                return Ok(());
            }
            BackupPlan::Continue(v) => v,
            BackupPlan::Create => {
                let created = self
                    .user(|| session.create_backup(&before.algorithm, &before.auth_data))
                    .await?;
                match created {
                    Ok(v) => v,
                    Err(e) => {
                        tally.fail(Item::BackupKeys, e);
                        return Ok(());
                    }
                }
            }
        };
        self.upload_sessions(session, before, &version, tally).await
    }

    /// Uploads every session of the source's backup into `version`, a page
    /// at a time: memory holds one page, whatever the backup's size.
    async fn upload_sessions(
        &self,
        session: &UserSession,
        before: &Backup,
        version: &str,
        tally: &mut Tally,
    ) -> Result<(), Stopped> {
        let Some(source) = self.shared.source.clone() else {
            return Ok(());
        };
        let mut after = None;
        loop {
            let (src, user, from, cursor) = (
                source.clone(),
                session.user.clone(),
                before.version.clone(),
                after.clone(),
            );
            let read = tokio::task::spawn_blocking(move || {
                src.sessions(&user, &from, cursor.as_ref(), SESSIONS_PER_UPLOAD)
            })
            .await;
            let page = match read {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tally.fail(Item::BackupKeys, format!("{e:#}"));
                    return Ok(());
                }
                Err(e) => {
                    tally.fail(Item::BackupKeys, e);
                    return Ok(());
                }
            };
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.cursor());
            match self
                .user(|| session.upload_sessions(version, &page))
                .await?
            {
                Ok(_) => tally.add(Item::BackupKeys, page.len() as u64),
                Err(e) => {
                    tally.fail(Item::BackupKeys, e);
                    return Ok(());
                }
            }
            if page.len() < SESSIONS_PER_UPLOAD {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn raw(v: Value) -> Json {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn email(a: &str) -> Threepid {
        Threepid {
            medium: "email".into(),
            address: a.into(),
            validated_at: None,
            added_at: None,
        }
    }

    fn data(room: Option<&str>, kind: &str, content: Value) -> AccountData {
        AccountData {
            room_id: room.map(str::to_owned),
            kind: kind.into(),
            content: raw(content),
        }
    }

    fn custom(kind: &str, id: &str, enabled: bool) -> CustomRule {
        CustomRule {
            kind: kind.into(),
            rule_id: id.into(),
            pattern: (kind == "content").then(|| id.to_owned()),
            conditions: (kind != "content").then(|| raw(json!([]))),
            actions: raw(json!(["notify"])),
            enabled,
        }
    }

    fn now_rule(kind: &str, id: &str, default: bool, enabled: bool, actions: Value) -> RuleNow {
        RuleNow {
            kind: kind.into(),
            rule_id: id.into(),
            default,
            enabled,
            actions,
            conditions: (kind != "content").then(|| json!([])),
            pattern: (kind == "content" && !default).then(|| id.to_owned()),
        }
    }

    #[test]
    fn threepids_missing_are_added_and_present_ones_counted() {
        let phone = Threepid {
            medium: "msisdn".into(),
            ..email("4412345")
        };
        let before = vec![email("Ann@Example.org"), email("b@x"), phone.clone()];
        let (missing, present) = missing_threepids(&before, &[email("ann@example.org")]);
        assert_eq!(present, 1);
        assert_eq!(missing, vec![&before[1], &phone]);
        let (missing, present) = missing_threepids(&before, &before);
        assert!(missing.is_empty());
        assert_eq!(present, 3);
    }

    #[test]
    fn profile_fields_are_set_only_where_the_account_has_none() {
        let before = Profile {
            displayname: Some("Ann".into()),
            avatar_url: Some("mxc://x/a".into()),
        };
        let plan = missing_profile(&before, &Profile::default());
        assert_eq!(plan.set, before);
        let now = Profile {
            displayname: Some("Ann B.".into()),
            avatar_url: Some("".into()),
        };
        let plan = missing_profile(&before, &now);
        assert_eq!(plan.set.displayname, None, "never clobber a display name");
        assert_eq!(plan.set.avatar_url.as_deref(), Some("mxc://x/a"));
        assert_eq!(plan.kept, vec!["displayname"]);
        let plan = missing_profile(&before, &before);
        assert_eq!(plan.same, 2);
        assert_eq!(plan.set, Profile::default());
    }

    #[test]
    fn account_data_present_is_kept_or_counted_never_written() {
        let before = vec![
            data(None, "m.direct", json!({"@b:x": ["!dm:x"]})),
            data(None, "m.ignored_user_list", json!({"ignored_users": {}})),
            data(Some("!r:x"), "m.tag", json!({"tags": {"m.favourite": {}}})),
            data(None, "im.vector.setting", json!({"a": 1, "b": 2})),
        ];
        let now = vec![
            data(None, "m.direct", json!({"@c:x": ["!other:x"]})),
            // Same value, other key order: already given back.
            data(None, "im.vector.setting", json!({"b": 2, "a": 1})),
        ];
        let plan = missing_account_data(&before, &now);
        let put: Vec<&str> = plan.put.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(put, vec!["m.ignored_user_list", "m.tag"]);
        assert_eq!(plan.kept, vec!["m.direct"]);
        assert_eq!(plan.same, (1, 0));
        // The same type in a room is another item than the global one.
        let now = vec![data(None, "m.tag", json!({}))];
        let plan = missing_account_data(&before, &now);
        assert_eq!(plan.put.len(), 4);
    }

    #[test]
    fn push_rules_are_put_in_order_after_their_predecessor() {
        let before = PushRules {
            custom: vec![
                custom("override", "o1", true),
                custom("override", "o2", false),
                custom("content", "kw", true),
                custom("room", "!r:x", true),
            ],
            defaults: vec![],
        };
        let plan = push_rule_plan(&before, &[]);
        let steps: Vec<String> = plan
            .steps
            .iter()
            .map(|s| match s {
                PushStep::Put { rule, after } => format!("put {} after {after:?}", rule.rule_id),
                PushStep::Enable {
                    rule_id, enabled, ..
                } => format!("enable {rule_id} {enabled}"),
                PushStep::Actions { rule_id, .. } => format!("actions {rule_id}"),
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                "put o1 after None",
                "put o2 after Some(\"o1\")",
                "enable o2 false",
                "put kw after None",
                "put !r:x after None",
            ]
        );
        assert_eq!(plan.changed, 4);
    }

    #[test]
    fn push_rules_present_are_counted_or_kept_and_defaults_compared() {
        let before = PushRules {
            custom: vec![
                custom("content", "kw", true),
                custom("override", "o1", true),
            ],
            defaults: vec![
                crate::source::DefaultRule {
                    kind: "override".into(),
                    rule_id: ".m.rule.contains_display_name".into(),
                    enabled: Some(false),
                    actions: None,
                },
                crate::source::DefaultRule {
                    kind: "underride".into(),
                    rule_id: ".m.rule.message".into(),
                    enabled: Some(true),
                    actions: Some(raw(json!(["notify"]))),
                },
                crate::source::DefaultRule {
                    kind: "override".into(),
                    rule_id: ".m.rule.gone".into(),
                    enabled: Some(false),
                    actions: None,
                },
            ],
        };
        let now = vec![
            now_rule("content", "kw", false, true, json!(["notify"])),
            now_rule("override", "o1", false, true, json!(["dont_notify"])),
            now_rule(
                "override",
                ".m.rule.contains_display_name",
                true,
                true,
                json!(["notify"]),
            ),
            now_rule(
                "underride",
                ".m.rule.message",
                true,
                true,
                json!(["notify"]),
            ),
        ];
        let plan = push_rule_plan(&before, &now);
        assert_eq!(plan.same, 1, "kw is as the source has it");
        assert_eq!(plan.kept, vec!["override/o1"]);
        assert_eq!(plan.unknown, vec!["override/.m.rule.gone"]);
        assert!(
            matches!(
                plan.steps[..],
                [PushStep::Enable {
                    kind: "override",
                    rule_id: ".m.rule.contains_display_name",
                    enabled: false
                }]
            ),
            "a default already as the source has it is left alone: {:?}",
            plan.steps
        );
        assert_eq!(plan.changed, 1);
        let changed_actions = PushRules {
            custom: vec![],
            defaults: vec![crate::source::DefaultRule {
                kind: "underride".into(),
                rule_id: ".m.rule.message".into(),
                enabled: None,
                actions: Some(raw(json!(["dont_notify"]))),
            }],
        };
        let plan = push_rule_plan(&changed_actions, &now);
        assert!(matches!(plan.steps[..], [PushStep::Actions { .. }]));
    }

    #[test]
    fn a_backup_is_created_continued_or_kept_never_duplicated() {
        let before = Backup {
            version: "3".into(),
            algorithm: "m.megolm_backup.v1.curve25519-aes-sha2".into(),
            auth_data: raw(json!({"public_key": "abc", "signatures": {}})),
            sessions: 10,
        };
        let now = |algorithm: &str, auth: Value| BackupNow {
            version: "1".into(),
            algorithm: algorithm.into(),
            auth_data: raw(auth),
            count: 0,
        };
        assert_eq!(backup_plan(None, None), BackupPlan::Nothing);
        assert_eq!(backup_plan(Some(&before), None), BackupPlan::Create);
        let ours = now(
            &before.algorithm,
            json!({"signatures": {}, "public_key": "abc"}),
        );
        assert_eq!(
            backup_plan(Some(&before), Some(&ours)),
            BackupPlan::Continue("1".into()),
            "an interrupted run's version is continued"
        );
        let theirs = now(&before.algorithm, json!({"public_key": "new"}));
        assert_eq!(
            backup_plan(Some(&before), Some(&theirs)),
            BackupPlan::Kept("1".into())
        );
    }

    #[test]
    fn a_dry_run_counts_what_the_source_holds() {
        let image = BeforeImage {
            threepids: vec![email("a@x")],
            profile: Profile {
                displayname: Some("A".into()),
                avatar_url: None,
            },
            rooms: vec!["!a:x".into()],
            account_data: vec![
                data(None, "m.direct", json!({})),
                data(Some("!a:x"), "m.tag", json!({})),
            ],
            push_rules: PushRules {
                custom: vec![custom("content", "kw", true)],
                defaults: vec![],
            },
            backup: Some(Backup {
                version: "1".into(),
                algorithm: "a".into(),
                auth_data: raw(json!({})),
                sessions: 42,
            }),
        };
        let t = would_give_back(&image);
        assert_eq!(t.counts, [1, 1, 0, 1, 1, 1, 42]);
    }
}
