//! The requests of `find`: the pages of deactivated users, then each user's
//! rooms and the member state of each room they left. GET only, each paced by
//! the throttle and retried by the retrier; room state read once per room.
//!
//! Nothing here writes or prints: each user comes back as an `Assessed` value
//! for the one consumer in `find`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, Stream};

use crate::backend::rooms::RoomCache;
use crate::backend::synapse::{ListedUser, SynapseClient, UserPage};
use crate::http::ApiError;
use crate::retry::{AuthFailure, CallError, Retrier};
use crate::throttle::Throttle;
use crate::user_id::UserId;

/// What became of one listed user.
#[derive(Debug)]
pub enum Assessed {
    /// The user's own leaves: `(room, time in ms)`, rooms sorted.
    Found {
        user: ListedUser,
        leaves: Vec<(String, i64)>,
    },
    /// The user's rooms could not be read: they are left out of the file.
    Failed { user: String, why: String },
    /// The list itself failed: nothing more can be told.
    ListFailed(ApiError),
    /// The run is stopping; the stop signal says why.
    Stopped,
}

pub struct Lister<'a> {
    pub client: &'a SynapseClient,
    pub retrier: &'a Retrier,
    pub throttle: Option<&'a Throttle>,
    pub rooms: RoomCache,
    pub page_size: u32,
    /// The `total` of the last page read, to tell whether the list changed
    /// while it was read.
    last_total: AtomicU64,
}

/// Why one user's rooms were not read.
enum Miss {
    Row(String),
    Stopped,
}

const NO_TOTAL: u64 = u64::MAX;

impl<'a> Lister<'a> {
    pub fn new(
        client: &'a SynapseClient,
        retrier: &'a Retrier,
        throttle: Option<&'a Throttle>,
        page_size: u32,
    ) -> Self {
        Lister {
            client,
            retrier,
            throttle,
            rooms: RoomCache::default(),
            page_size,
            last_total: AtomicU64::new(NO_TOTAL),
        }
    }

    /// Waits for a slot, then sends `request` until it succeeds or fails for good.
    async fn paced<T, F, Fut>(&self, request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        if let Some(throttle) = self.throttle {
            let stop = self.retrier.stop_signal();
            tokio::select! {
                _ = throttle.acquire() => {}
                _ = stop.stopped() => return Err(CallError::Stopped),
            }
        }
        self.retrier.call(AuthFailure::StopsRun, request).await
    }

    /// One page of deactivated users, starting at `from` (the first without).
    pub async fn page(&self, from: Option<&str>) -> Result<UserPage, CallError> {
        let page = self
            .paced(|| self.client.deactivated_users(from, self.page_size))
            .await?;
        if let Some(total) = page.total {
            self.last_total.store(total, Ordering::Relaxed);
        }
        Ok(page)
    }

    /// The server's count of deactivated users on the last page read.
    pub fn last_total(&self) -> Option<u64> {
        Some(self.last_total.load(Ordering::Relaxed)).filter(|&t| t != NO_TOTAL)
    }

    /// Every listed user, from `first` on, reading the next page only when the
    /// users before it are taken (so memory holds one page at most).
    pub fn users(&self, first: UserPage) -> impl Stream<Item = Result<ListedUser, CallError>> + '_ {
        let start = (VecDeque::from(first.users), first.next_token);
        stream::unfold(start, move |(mut queue, mut next)| async move {
            loop {
                if let Some(user) = queue.pop_front() {
                    return Some((Ok(user), (queue, next)));
                }
                let token = next.take()?;
                match self.page(Some(&token)).await {
                    Ok(page) if page.users.is_empty() && page.next_token.is_some() => {
                        // A page with nobody that says more follow would never end.
                        let e = ApiError::BadBody {
                            status: 200,
                            message: format!(
                                "the list page from {token} is empty but names a next page"
                            ),
                        };
                        return Some((Err(CallError::Row(e)), (queue, None)));
                    }
                    Ok(page) => {
                        queue.extend(page.users);
                        next = page.next_token;
                    }
                    Err(e) => return Some((Err(e), (queue, None))),
                }
            }
        })
    }

    /// Reads a listed user's own leaves (or passes on the list's failure).
    pub async fn assess(&self, listed: Result<ListedUser, CallError>) -> Assessed {
        let user = match listed {
            Ok(user) => user,
            Err(CallError::Row(e)) => return Assessed::ListFailed(e),
            Err(CallError::Stopped) => return Assessed::Stopped,
        };
        match self.own_leaves(&user).await {
            Ok(leaves) => Assessed::Found { user, leaves },
            Err(Miss::Row(why)) => Assessed::Failed {
                user: user.name,
                why,
            },
            Err(Miss::Stopped) => Assessed::Stopped,
        }
    }

    /// The rooms the user left on their own, with when, rooms sorted.
    async fn own_leaves(&self, user: &ListedUser) -> Result<Vec<(String, i64)>, Miss> {
        let id = UserId::parse(&user.name)
            .map_err(|e| Miss::Row(format!("the server listed {:?}: {e}", user.name)))?;
        let memberships = match self.paced(|| self.client.memberships(&id)).await {
            Ok(m) => m,
            Err(CallError::Row(e)) => return Err(Miss::Row(format!("rooms not listed: {e}"))),
            Err(CallError::Stopped) => return Err(Miss::Stopped),
        };
        let mut left: Vec<String> = memberships
            .into_iter()
            .filter(|(_, m)| m == "leave")
            .map(|(room, _)| room)
            .collect();
        left.sort();
        let mut own = Vec::new();
        for room in left {
            let fetch = || self.paced(|| self.client.room_members(&room));
            match self.rooms.leaves(&room, fetch).await {
                Ok(leaves) => {
                    if let Some(&ts) = leaves.get(user.name.as_str()) {
                        own.push((room, ts));
                    }
                }
                Err(CallError::Row(e)) => {
                    return Err(Miss::Row(format!("cannot read the state of {room}: {e}")))
                }
                Err(CallError::Stopped) => return Err(Miss::Stopped),
            }
        }
        Ok(own)
    }
}
