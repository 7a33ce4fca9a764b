//! What to do for one user, decided from what the servers said, the journal
//! and the options: a pure function returning a plan. No I/O happens here;
//! `pipeline` executes the plans.
//!
//! The invariants of the tool live here, and the table tests below hold them:
//! - nothing is done to a user the servers do not know (no account is ever
//!   created), and nothing to a user of another server;
//! - an active user is never reactivated, so never gets a password (it would
//!   replace theirs and log them out); at most `--unlock` unlocks them;
//! - an erased user is left alone without `--include-erased`;
//! - a dry run plans no change;
//! - a password an interrupted run journaled in clear is reused, never
//!   replaced;
//! - a sealed journal cannot be read back (the tool holds no private key): an
//!   account found active finishes with the journaled (sealed) password it
//!   took, and one still deactivated gets a new password, which the pipeline
//!   journals before it sends it. Either way the results hold the password the
//!   account has.

use crate::backend::{Account, Lookup};
use crate::config::Passwords;
use crate::report::Status;
use crate::user_id::UserId;

/// The options that bear on the decision.
#[derive(Clone, Debug)]
pub struct Choices<'a> {
    pub dry_run: bool,
    pub include_erased: bool,
    pub unlock: bool,
    pub passwords: &'a Passwords,
    /// Passwords are sealed (`--encrypt-to`): a journaled one is sealed text.
    pub sealed: bool,
}

/// Where the password of a reactivation comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    /// An interrupted run journaled it in clear: the account may already hold it.
    Journaled(String),
    FromInput(String),
    Generate {
        length: usize,
    },
    /// Reactivate without setting one.
    None,
}

/// What to do for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Change nothing; the row has this status and note.
    Report { status: Status, note: &'static str },
    /// An active user with a journaled password (in clear or sealed, as
    /// journaled): the earlier run's reactivation landed just before it
    /// stopped. Finish what it began.
    FinishEarlier { password: String },
    /// Dry run: say it would be reactivated, and which rooms it would rejoin.
    WouldReactivate { note: &'static str },
    /// An active, locked user and `--unlock`: unlock only.
    Unlock,
    Reactivate {
        password: PasswordSource,
        unlock: bool,
    },
}

/// Why a user of another server is left alone; `None` for a local user.
pub fn not_local(user: &UserId, server_name: &str) -> Option<String> {
    (user.server_name() != server_name)
        .then(|| format!("user of {}, not of {server_name}", user.server_name()))
}

/// Decides what to do for a looked-up user.
pub fn decide(
    lookup: &Lookup,
    journaled: Option<&str>,
    input_password: Option<&str>,
    choices: &Choices,
) -> Plan {
    let account = match lookup {
        Lookup::NotFound => {
            return Plan::Report {
                status: Status::NotFound,
                note: "no such user on the server; nothing was created",
            }
        }
        Lookup::Found(a) => a,
    };
    if !account.deactivated {
        return active(account, journaled, choices);
    }
    if account.erased && !choices.include_erased {
        return Plan::Report {
            status: Status::Erased,
            note: "account was erased (GDPR); left alone without --include-erased",
        };
    }
    if choices.dry_run {
        let note = if account.erased {
            "erased; --include-erased given"
        } else {
            ""
        };
        return Plan::WouldReactivate { note };
    }
    // A sealed password cannot be sent again: the account, still deactivated,
    // did not take it (see `pipeline` for the wait that makes this so), so it
    // gets a new one as if nothing had been journaled.
    let resend = journaled.filter(|_| !choices.sealed);
    let password = match (resend, choices.passwords, input_password) {
        (Some(p), _, _) => PasswordSource::Journaled(p.to_owned()),
        (None, Passwords::None, _) => PasswordSource::None,
        (None, Passwords::FromColumn, Some(p)) => PasswordSource::FromInput(p.to_owned()),
        (None, Passwords::FromColumn, None) => {
            return Plan::Report {
                status: Status::Failed,
                note: "no password in the input",
            }
        }
        (None, Passwords::Generate { length }, _) => PasswordSource::Generate { length: *length },
    };
    Plan::Reactivate {
        password,
        unlock: choices.unlock && account.locked,
    }
}

fn active(account: &Account, journaled: Option<&str>, choices: &Choices) -> Plan {
    let unlock = choices.unlock && account.locked;
    match journaled {
        // Only users found deactivated are ever journaled, so an active user
        // with a journaled password is one whose reactivation landed just
        // before the earlier run stopped.
        Some(p) if !choices.dry_run => Plan::FinishEarlier {
            password: p.to_owned(),
        },
        _ if unlock && choices.dry_run => Plan::Report {
            status: Status::WouldUnlock,
            note: "",
        },
        _ if unlock => Plan::Unlock,
        _ => Plan::Report {
            status: Status::AlreadyActive,
            note: "",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATE: Passwords = Passwords::Generate { length: 24 };

    fn account(deactivated: bool, erased: bool, locked: bool) -> Lookup {
        Lookup::Found(Account {
            deactivated,
            erased,
            locked,
            handle: None,
        })
    }

    fn choices(dry_run: bool, include_erased: bool, unlock: bool) -> Choices<'static> {
        Choices {
            dry_run,
            include_erased,
            unlock,
            passwords: &GENERATE,
            sealed: false,
        }
    }

    /// Every combination of what the server can say and of the options.
    fn every_case() -> Vec<(Lookup, Option<&'static str>, Choices<'static>)> {
        every_case_with(&[false, true])
    }

    fn every_case_with(sealing: &[bool]) -> Vec<(Lookup, Option<&'static str>, Choices<'static>)> {
        let mut cases = vec![];
        let lookups = [false, true].into_iter().flat_map(|d| {
            [false, true]
                .into_iter()
                .flat_map(move |e| [false, true].map(|l| account(d, e, l)))
        });
        for lookup in lookups.chain([Lookup::NotFound]) {
            for journaled in [None, Some("journaled-pw")] {
                for dry in [false, true] {
                    for erased in [false, true] {
                        for unlock in [false, true] {
                            for &sealed in sealing {
                                let c = Choices {
                                    sealed,
                                    ..choices(dry, erased, unlock)
                                };
                                cases.push((lookup.clone(), journaled, c));
                            }
                        }
                    }
                }
            }
        }
        cases
    }

    fn changes(plan: &Plan) -> bool {
        matches!(
            plan,
            Plan::Reactivate { .. } | Plan::Unlock | Plan::FinishEarlier { .. }
        )
    }

    #[test]
    fn an_unknown_user_is_never_touched() {
        for (lookup, journaled, c) in every_case() {
            if lookup == Lookup::NotFound {
                let plan = decide(&lookup, journaled, None, &c);
                assert!(
                    matches!(
                        plan,
                        Plan::Report {
                            status: Status::NotFound,
                            ..
                        }
                    ),
                    "{plan:?}"
                );
            }
        }
    }

    #[test]
    fn an_active_user_is_never_reactivated() {
        for (lookup, journaled, c) in every_case() {
            if let Lookup::Found(a) = &lookup {
                if !a.deactivated {
                    let plan = decide(&lookup, journaled, Some("input-pw"), &c);
                    assert!(!matches!(plan, Plan::Reactivate { .. }), "{a:?} {plan:?}");
                    if matches!(plan, Plan::Unlock) {
                        assert!(c.unlock && a.locked && !c.dry_run);
                    }
                }
            }
        }
    }

    #[test]
    fn a_dry_run_plans_no_change() {
        for (lookup, journaled, c) in every_case() {
            if c.dry_run {
                let plan = decide(&lookup, journaled, None, &c);
                assert!(!changes(&plan), "{lookup:?} {plan:?}");
            }
        }
    }

    #[test]
    fn an_erased_user_needs_the_flag() {
        for (lookup, journaled, c) in every_case() {
            if let Lookup::Found(a) = &lookup {
                if a.deactivated && a.erased {
                    let plan = decide(&lookup, journaled, None, &c);
                    if c.include_erased {
                        assert_ne!(
                            plan,
                            Plan::Report {
                                status: Status::Erased,
                                note:
                                    "account was erased (GDPR); left alone without --include-erased"
                            }
                        );
                    } else {
                        assert!(
                            matches!(
                                plan,
                                Plan::Report {
                                    status: Status::Erased,
                                    ..
                                }
                            ),
                            "{plan:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_journaled_password_is_reused_never_replaced() {
        for (lookup, journaled, c) in every_case_with(&[false]) {
            let plan = decide(&lookup, journaled, Some("input-pw"), &c);
            match (&plan, journaled) {
                (
                    Plan::Reactivate {
                        password: PasswordSource::Journaled(p),
                        ..
                    },
                    Some(j),
                ) => assert_eq!(p, j),
                (Plan::Reactivate { password, .. }, Some(_)) => {
                    panic!("journaled password replaced by {password:?}")
                }
                (Plan::FinishEarlier { password }, Some(j)) => assert_eq!(password, j),
                (Plan::FinishEarlier { .. }, None) => panic!("finish without a journal"),
                _ => {}
            }
        }
    }

    #[test]
    fn a_sealed_journal_finishes_an_active_user_and_renews_a_deactivated_one() {
        let column = Passwords::FromColumn;
        for (lookup, journaled, c) in every_case_with(&[true]) {
            let Lookup::Found(a) = &lookup else { continue };
            for (c, input) in [
                (c.clone(), None),
                (
                    Choices {
                        passwords: &column,
                        ..c.clone()
                    },
                    Some("input-pw"),
                ),
            ] {
                let plan = decide(&lookup, journaled, input, &c);
                match (&plan, journaled) {
                    (Plan::FinishEarlier { password }, Some(j)) => {
                        assert!(!a.deactivated && !c.dry_run, "{a:?}");
                        assert_eq!(password, j, "the sealed text the account took");
                    }
                    (Plan::FinishEarlier { .. }, None) => panic!("finish without a journal"),
                    (Plan::Reactivate { password, .. }, _) => {
                        assert!(a.deactivated);
                        let fresh = match c.passwords {
                            Passwords::FromColumn => PasswordSource::FromInput("input-pw".into()),
                            _ => PasswordSource::Generate { length: 24 },
                        };
                        assert_eq!(password, &fresh, "never sends sealed text");
                    }
                    _ => {}
                }
                if journaled.is_some() && !a.deactivated && !c.dry_run {
                    assert!(matches!(plan, Plan::FinishEarlier { .. }), "{plan:?}");
                }
            }
        }
    }

    /// What the server said, the journaled and input passwords, the options,
    /// and the plan wanted.
    type Case<'a> = (Lookup, Option<&'a str>, Option<&'a str>, Choices<'a>, Plan);

    /// The plain table: one row per situation a run meets.
    #[test]
    fn decisions() {
        let none = Passwords::None;
        let column = Passwords::FromColumn;
        let c = choices(false, false, false);
        let reactivate = |password, unlock| Plan::Reactivate { password, unlock };
        let report = |status, note| Plan::Report { status, note };
        let table: Vec<Case> = vec![
            (
                account(true, false, false),
                None,
                None,
                c.clone(),
                reactivate(PasswordSource::Generate { length: 24 }, false),
            ),
            (
                account(true, false, true),
                None,
                None,
                choices(false, false, true),
                reactivate(PasswordSource::Generate { length: 24 }, true),
            ),
            (
                account(true, false, true),
                None,
                None,
                c.clone(),
                reactivate(PasswordSource::Generate { length: 24 }, false),
            ),
            (
                account(true, false, false),
                None,
                Some("pw"),
                Choices {
                    passwords: &column,
                    ..c.clone()
                },
                reactivate(PasswordSource::FromInput("pw".into()), false),
            ),
            (
                account(true, false, false),
                None,
                None,
                Choices {
                    passwords: &column,
                    ..c.clone()
                },
                report(Status::Failed, "no password in the input"),
            ),
            (
                account(true, false, false),
                None,
                Some("pw"),
                Choices {
                    passwords: &none,
                    ..c.clone()
                },
                reactivate(PasswordSource::None, false),
            ),
            (
                account(true, true, false),
                None,
                None,
                choices(false, true, false),
                reactivate(PasswordSource::Generate { length: 24 }, false),
            ),
            (
                account(true, true, false),
                None,
                None,
                choices(true, true, false),
                Plan::WouldReactivate {
                    note: "erased; --include-erased given",
                },
            ),
            (
                account(false, false, false),
                None,
                None,
                c.clone(),
                report(Status::AlreadyActive, ""),
            ),
            (
                account(false, false, true),
                None,
                None,
                c.clone(),
                report(Status::AlreadyActive, ""),
            ),
            (
                account(false, false, true),
                None,
                None,
                choices(false, false, true),
                Plan::Unlock,
            ),
            (
                account(false, false, true),
                None,
                None,
                choices(true, false, true),
                report(Status::WouldUnlock, ""),
            ),
            (
                account(false, false, false),
                Some("j"),
                None,
                c.clone(),
                Plan::FinishEarlier {
                    password: "j".into(),
                },
            ),
            (
                account(true, false, false),
                Some("j"),
                None,
                Choices {
                    passwords: &none,
                    ..c.clone()
                },
                reactivate(PasswordSource::Journaled("j".into()), false),
            ),
            (
                account(true, false, false),
                Some("YWdl-sealed"),
                None,
                Choices {
                    sealed: true,
                    ..c.clone()
                },
                reactivate(PasswordSource::Generate { length: 24 }, false),
            ),
            (
                account(false, false, false),
                Some("YWdl-sealed"),
                None,
                Choices {
                    sealed: true,
                    ..c.clone()
                },
                Plan::FinishEarlier {
                    password: "YWdl-sealed".into(),
                },
            ),
        ];
        for (lookup, journaled, input, choices, want) in table {
            assert_eq!(
                decide(&lookup, journaled, input, &choices),
                want,
                "{lookup:?} journaled={journaled:?} input={input:?} {choices:?}"
            );
        }
    }

    #[test]
    fn only_local_users_go_on() {
        let id = |s| UserId::parse(s).unwrap();
        assert_eq!(not_local(&id("@a:x.org"), "x.org"), None);
        assert_eq!(
            not_local(&id("@a:y.org"), "x.org").as_deref(),
            Some("user of y.org, not of x.org")
        );
        assert!(not_local(&id("@a:x.org:8448"), "x.org").is_some());
    }
}
