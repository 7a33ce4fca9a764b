//! Who `snapshot` reads: the users of INPUT (the main command's input rules:
//! header detection, `--column`, bare localparts), or every active local user
//! of the server, read a page at a time (`GET /_synapse/admin/v3/users
//! ?deactivated=false&locked=true&guests=false&order_by=name`).
//!
//! Either way a stream, never a list held whole: the input is read a line at
//! a time, the server's list a page at a time when the users before are
//! taken. Lines that name no local user are passed on as skips, to be counted
//! and named; nothing here sends a request about a user.

use std::collections::VecDeque;

use futures::stream::{self, Stream};

use super::read::Pacer;
use crate::backend::synapse::{SynapseClient, UserPage};
use crate::http::ApiError;
use crate::input::Input;
use crate::retry::{AuthFailure, CallError};
use crate::user_id::UserId;
use crate::user_set::UserSet;

/// Users per list request.
pub const PAGE_SIZE: u32 = 500;

/// One entry of the stream of users.
#[derive(Debug)]
pub enum Wanted {
    User(UserId),
    /// An input line that names no user to read: counted and named.
    Skip {
        who: String,
        why: Skip,
    },
    /// The list cannot go on (an unreadable input, a list request that failed
    /// for good): the snapshot stops, with this reason.
    Broke(String),
    /// The run is stopping.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not a user ID (or an empty cell).
    Invalid,
    /// A user of another server.
    NotLocal,
    /// Named again: read once.
    Repeated,
}

/// The users of the input, each once, with its bad lines as skips.
pub fn from_input(input: Input, server_name: String) -> impl Stream<Item = Wanted> {
    let seen = UserSet::new(&server_name);
    stream::unfold(Some((input, seen, server_name)), |state| async move {
        let (mut input, mut seen, server_name) = state?;
        let wanted = match input.next_row(&server_name) {
            Err(e) => Wanted::Broke(format!("{e:#}")),
            Ok(None) => return None,
            Ok(Some(row)) => match row.user {
                // The reason names the line.
                Err(why) => Wanted::Skip {
                    who: why,
                    why: Skip::Invalid,
                },
                Ok(user) if user.server_name() != server_name => Wanted::Skip {
                    who: user.as_str().to_owned(),
                    why: Skip::NotLocal,
                },
                Ok(user) if !seen.insert(user.as_str()) => Wanted::Skip {
                    who: user.as_str().to_owned(),
                    why: Skip::Repeated,
                },
                Ok(user) => Wanted::User(user),
            },
        };
        let more = !matches!(wanted, Wanted::Broke(_));
        Some((wanted, more.then_some((input, seen, server_name))))
    })
}

/// The first page of the server's active local users, for the total.
pub async fn first_page(client: &SynapseClient, pacer: &Pacer<'_>) -> Result<UserPage, CallError> {
    pacer
        .call(AuthFailure::StopsRun, || {
            client.active_users(None, PAGE_SIZE)
        })
        .await
}

/// Every active local user from `first` on, reading the next page only when
/// the users before it are taken (so memory holds one page at most).
pub fn from_server<'a>(
    client: &'a SynapseClient,
    pacer: &'a Pacer<'a>,
    first: UserPage,
) -> impl Stream<Item = Wanted> + 'a {
    let start = (
        VecDeque::from(first.users),
        first.next_token,
        None::<String>,
    );
    stream::unfold(Some(start), move |state| async move {
        let (mut queue, mut next, mut last) = state?;
        loop {
            if let Some(listed) = queue.pop_front() {
                // Listed twice (the list shifted between pages): read once.
                if last.as_deref() == Some(listed.name.as_str()) {
                    continue;
                }
                let wanted = match UserId::parse(&listed.name) {
                    Ok(user) => Wanted::User(user),
                    Err(e) => Wanted::Skip {
                        who: format!("{} ({e})", listed.name),
                        why: Skip::Invalid,
                    },
                };
                last = Some(listed.name);
                return Some((wanted, Some((queue, next, last))));
            }
            let token = next.take()?;
            let page = pacer
                .call(AuthFailure::StopsRun, || {
                    client.active_users(Some(&token), PAGE_SIZE)
                })
                .await;
            match page {
                Ok(page) if page.users.is_empty() && page.next_token.is_some() => {
                    let e = ApiError::BadBody {
                        status: 200,
                        message: format!("the page from {token} is empty but names a next page"),
                    };
                    return Some((broke(e), None));
                }
                Ok(page) => {
                    queue.extend(page.users);
                    next = page.next_token;
                }
                Err(CallError::Row(e)) => return Some((broke(e), None)),
                Err(CallError::Stopped) => return Some((Wanted::Stopped, None)),
            }
        }
    })
}

fn broke(e: ApiError) -> Wanted {
    Wanted::Broke(format!(
        "the list of users (GET /_synapse/admin/v3/users) broke off: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Columns, Source};
    use futures::StreamExt;

    #[tokio::test]
    async fn input_lines_become_users_and_named_skips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(
            &path,
            "user_id\nalice\n@bob:example.org\n@carol:elsewhere.org\nalice\n@\n\n@dan:example.org\n",
        )
        .unwrap();
        let input = Input::open(Source::File(path), &Columns::default()).unwrap();
        let got: Vec<String> = from_input(input, "example.org".into())
            .map(|w| match w {
                Wanted::User(u) => u.as_str().to_owned(),
                Wanted::Skip { who, why } => format!("{why:?}: {who}"),
                other => format!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], "@alice:example.org");
        assert_eq!(got[1], "@bob:example.org");
        assert_eq!(got[2], "NotLocal: @carol:elsewhere.org");
        assert_eq!(got[3], "Repeated: @alice:example.org");
        assert!(got[4].starts_with("Invalid: line 6"), "{}", got[4]);
        assert_eq!(got[5], "@dan:example.org");
    }
}
