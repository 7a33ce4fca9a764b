//! The requests of `find`: the pages of deactivated users, then each user's
//! rooms and the member state of each room they left. GET only, each paced by
//! the throttle and retried by the retrier; room state read once per room.
//!
//! On a server whose logins belong to MAS, MAS's list of deactivated users is
//! read first, whole, and sorted by user ID (MAS lists by ULID), then merged
//! with Synapse's list, which comes sorted: a user on either list is a
//! candidate, with MAS's exact deactivation time when MAS has one.
//!
//! Nothing here writes or prints: each user comes back as an `Assessed` value
//! for the one consumer in `find`.

use std::cmp::Ordering as Order;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, Stream, StreamExt};

use crate::backend::mas::MasClient;
use crate::backend::rooms::RoomCache;
use crate::backend::synapse::{ListedUser, SynapseClient, UserPage};
use crate::http::ApiError;
use crate::retry::{AuthFailure, CallError, Retrier};
use crate::throttle::Throttle;
use crate::user_id::UserId;

/// Which lists named a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lists {
    /// A server that owns its logins: Synapse's list, the only one.
    Synapse,
    /// A MAS server: both lists.
    Both,
    /// A MAS server, MAS's list alone: Synapse shows the user active (MAS's
    /// deactivation has not reached it). `erased` is read from Synapse's user.
    MasOnly,
    /// A MAS server, Synapse's list alone: MAS shows the user active (a
    /// deactivation through Synapse's own admin API, which MAS never hears of).
    SynapseOnly,
}

/// A user to assess: Synapse's view (or MAS's, for `MasOnly`), and when MAS
/// deactivated them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub user: ListedUser,
    /// MAS's `deactivated_at` in ms: exact, where Synapse records no time.
    pub mas_at: Option<i64>,
    pub lists: Lists,
}

impl Candidate {
    fn synapse(user: ListedUser) -> Self {
        Candidate {
            user,
            mas_at: None,
            lists: Lists::Synapse,
        }
    }
}

/// A user MAS holds deactivated, by full user ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasEntry {
    pub user_id: String,
    pub deactivated_at: i64,
    pub locked: bool,
}

/// What MAS's list gave: its users sorted by user ID, and MAS's count.
pub struct MasList {
    pub users: Vec<MasEntry>,
    pub count: Option<u64>,
}

/// What became of one listed user.
#[derive(Debug)]
pub enum Assessed {
    /// The user's own leaves: `(room, time in ms)`, rooms sorted.
    Found {
        candidate: Candidate,
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

impl Miss {
    fn into_assessed(self, user: String) -> Assessed {
        match self {
            Miss::Row(why) => Assessed::Failed { user, why },
            Miss::Stopped => Assessed::Stopped,
        }
    }
}

/// Which list gives the next user of the merge.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    Mas,
    Synapse,
    Both,
    Done,
}

/// The merge's one decision, from the next user of each sorted list.
fn pick(mas: Option<&MasEntry>, synapse: Option<&ListedUser>) -> Pick {
    match (mas, synapse) {
        (None, None) => Pick::Done,
        (Some(_), None) => Pick::Mas,
        (None, Some(_)) => Pick::Synapse,
        (Some(m), Some(s)) => match m.user_id.as_str().cmp(s.name.as_str()) {
            Order::Less => Pick::Mas,
            Order::Greater => Pick::Synapse,
            Order::Equal => Pick::Both,
        },
    }
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

    /// Every user MAS holds deactivated, read a page at a time and sorted by
    /// user ID (`@username:server_name`).
    pub async fn mas_users(
        &self,
        mas: &MasClient,
        server_name: &str,
    ) -> Result<MasList, CallError> {
        let mut users = Vec::new();
        let mut count = None;
        let mut after: Option<String> = None;
        loop {
            let first_page = after.is_none();
            let page = self
                .paced(|| mas.deactivated_users(after.as_deref(), self.page_size, first_page))
                .await?;
            if first_page {
                count = page.count;
                users.reserve(count.unwrap_or(0).min(1_000_000) as usize);
            }
            users.extend(page.users.into_iter().map(|u| MasEntry {
                user_id: format!("@{}:{server_name}", u.username),
                deactivated_at: u.deactivated_at,
                locked: u.locked,
            }));
            match page.next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        // Byte order: Synapse's list comes in it too (its database collation is C).
        users.sort_unstable_by(|a, b| a.user_id.cmp(&b.user_id));
        users.dedup_by(|a, b| a.user_id == b.user_id);
        users.shrink_to_fit();
        Ok(MasList { users, count })
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

    /// The users of Synapse's list, as candidates on a server that owns its logins.
    pub fn synapse_candidates(
        &self,
        first: UserPage,
    ) -> impl Stream<Item = Result<Candidate, CallError>> + '_ {
        self.users(first).map(|u| u.map(Candidate::synapse))
    }

    /// MAS's users and Synapse's list, merged by user ID: each user once,
    /// with the lists that named them.
    pub fn merged<'s>(
        &'s self,
        mas: Vec<MasEntry>,
        first: UserPage,
    ) -> impl Stream<Item = Result<Candidate, CallError>> + 's {
        let synapse = Box::pin(self.users(first).peekable());
        stream::unfold(
            (VecDeque::from(mas), synapse),
            |(mut mas, mut synapse)| async move {
                if let Some(Err(_)) = synapse.as_mut().peek().await {
                    // Synapse's list failed: pass it on at once, then end.
                    let e = synapse.next().await.and_then(Result::err);
                    return e.map(|e| (Err(e), (VecDeque::new(), synapse)));
                }
                let next = synapse.as_mut().peek().await.and_then(|r| r.as_ref().ok());
                let item = match pick(mas.front(), next) {
                    Pick::Done => return None,
                    Pick::Mas => {
                        let m = mas.pop_front().expect("pick saw MAS's next user");
                        Candidate {
                            user: ListedUser {
                                name: m.user_id,
                                deactivated: true,
                                erased: false,
                                locked: m.locked,
                            },
                            mas_at: Some(m.deactivated_at),
                            lists: Lists::MasOnly,
                        }
                    }
                    Pick::Synapse => match synapse.next().await {
                        Some(Ok(user)) => Candidate {
                            user,
                            mas_at: None,
                            lists: Lists::SynapseOnly,
                        },
                        _ => unreachable!("pick saw Synapse's next user"),
                    },
                    Pick::Both => {
                        let m = mas.pop_front().expect("pick saw MAS's next user");
                        match synapse.next().await {
                            Some(Ok(mut user)) => {
                                user.locked |= m.locked;
                                Candidate {
                                    user,
                                    mas_at: Some(m.deactivated_at),
                                    lists: Lists::Both,
                                }
                            }
                            _ => unreachable!("pick saw Synapse's next user"),
                        }
                    }
                };
                Some((Ok(item), (mas, synapse)))
            },
        )
    }

    /// Reads a candidate's own leaves (or passes on the list's failure).
    pub async fn assess(&self, listed: Result<Candidate, CallError>) -> Assessed {
        let mut candidate = match listed {
            Ok(candidate) => candidate,
            Err(CallError::Row(e)) => return Assessed::ListFailed(e),
            Err(CallError::Stopped) => return Assessed::Stopped,
        };
        if candidate.lists == Lists::MasOnly {
            if let Err(miss) = self.synapse_side(&mut candidate.user).await {
                return miss.into_assessed(candidate.user.name);
            }
        }
        match self.own_leaves(&candidate.user).await {
            Ok(leaves) => Assessed::Found { candidate, leaves },
            Err(miss) => miss.into_assessed(candidate.user.name),
        }
    }

    /// Synapse's `erased` and `locked` for a user whom only MAS listed.
    async fn synapse_side(&self, user: &mut ListedUser) -> Result<(), Miss> {
        let id = UserId::parse(&user.name)
            .map_err(|e| Miss::Row(format!("MAS listed {:?}: {e}", user.name)))?;
        match self.paced(|| self.client.get_user(&id)).await {
            Ok(Some(info)) => {
                user.erased = info.erased;
                user.locked |= info.locked;
                Ok(())
            }
            Ok(None) => Err(Miss::Row(
                "MAS holds the user deactivated, but Synapse does not know them".into(),
            )),
            Err(CallError::Row(e)) => Err(Miss::Row(format!("Synapse's user not read: {e}"))),
            Err(CallError::Stopped) => Err(Miss::Stopped),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mas(id: &str) -> MasEntry {
        MasEntry {
            user_id: id.into(),
            deactivated_at: 1,
            locked: false,
        }
    }

    fn listed(id: &str) -> ListedUser {
        ListedUser {
            name: id.into(),
            deactivated: true,
            erased: false,
            locked: false,
        }
    }

    #[test]
    fn the_merge_takes_the_smaller_user_id_and_pairs_equal_ones() {
        let (a, b) = (mas("@a:x"), listed("@b:x"));
        assert_eq!(pick(Some(&a), Some(&b)), Pick::Mas);
        assert_eq!(pick(Some(&mas("@c:x")), Some(&b)), Pick::Synapse);
        assert_eq!(pick(Some(&mas("@b:x")), Some(&b)), Pick::Both);
        assert_eq!(pick(Some(&a), None), Pick::Mas);
        assert_eq!(pick(None, Some(&b)), Pick::Synapse);
        assert_eq!(pick(None, None), Pick::Done);
        // Byte order, as Synapse's C collation sorts: '0' < 'A' < '_' < 'a'.
        assert_eq!(pick(Some(&mas("@0:x")), Some(&listed("@A:x"))), Pick::Mas);
        assert_eq!(
            pick(Some(&mas("@_:x")), Some(&listed("@A:x"))),
            Pick::Synapse
        );
    }
}
