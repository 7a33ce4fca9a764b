//! Who left each room on their own, and when: the part of a room's state that
//! giving rooms back needs, read at most once per run however many users
//! shared the room.
//!
//! A user's own `leave` is a membership event the user sent about themselves;
//! deactivation makes the user send one in every room. A kick or a ban is sent
//! by someone else and never counts. The cache holds one small map per room;
//! how each room is fetched (paced, retried) is the caller's choice.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::synapse::StateEvent;
use crate::http::ApiError;
use crate::retry::CallError;

/// User ID → time (ms) of the user's own leave, the room's current membership.
pub type Leaves = Arc<HashMap<String, i64>>;

/// A room's leaves once fetched, or the error that will not change on retry.
type RoomSlot = Arc<OnceCell<Result<Leaves, ApiError>>>;

/// The own leaves of every room read so far in this run.
#[derive(Default)]
pub struct RoomCache {
    rooms: Mutex<HashMap<String, RoomSlot>>,
}

impl RoomCache {
    /// The own leaves of `room`, fetched with `fetch` the first time only.
    /// A final error (`CallError::Row`) is remembered like an answer; a stop is
    /// not remembered.
    pub async fn leaves<F, Fut>(&self, room: &str, fetch: F) -> Result<Leaves, CallError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<StateEvent>, CallError>>,
    {
        let cell = {
            let mut map = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(room.to_owned()).or_default().clone()
        };
        let slot = cell
            .get_or_try_init(|| async {
                match fetch().await {
                    Ok(state) => Ok(Ok(Arc::new(own_leaves(state)))),
                    Err(CallError::Row(e)) => Ok(Err(e)),
                    Err(CallError::Stopped) => Err(CallError::Stopped),
                }
            })
            .await?;
        slot.clone().map_err(CallError::Row)
    }

    /// How many rooms were read (or failed to be).
    pub fn len(&self) -> usize {
        self.rooms.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The users who left on their own, from a room's current state, with when.
pub fn own_leaves(state: Vec<StateEvent>) -> HashMap<String, i64> {
    state
        .into_iter()
        .filter(|ev| ev.kind == "m.room.member")
        .filter(|ev| ev.membership() == Some("leave"))
        // A kick is a leave sent by someone else.
        .filter_map(|ev| {
            let who = ev.state_key?;
            (who == ev.sender).then_some((who, ev.origin_server_ts))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn member(who: &str, sender: &str, membership: &str, ts: i64) -> StateEvent {
        serde_json::from_value(json!({"type": "m.room.member", "state_key": who,
            "sender": sender, "origin_server_ts": ts, "content": {"membership": membership}}))
        .unwrap()
    }

    #[test]
    fn only_own_leaves_count() {
        let leaves = own_leaves(vec![
            member("@a:x", "@a:x", "leave", 10),
            member("@k:x", "@admin:x", "leave", 11),
            member("@b:x", "@admin:x", "ban", 12),
            member("@j:x", "@j:x", "join", 13),
            serde_json::from_value(json!({"type": "m.room.name", "state_key": "",
                "sender": "@a:x", "content": {"name": "leave"}}))
            .unwrap(),
        ]);
        assert_eq!(leaves, HashMap::from([("@a:x".to_owned(), 10)]));
    }

    #[tokio::test]
    async fn each_room_is_fetched_once_and_errors_are_remembered() {
        let cache = RoomCache::default();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let l = cache
                .leaves("!r:x", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(vec![member("@a:x", "@a:x", "leave", 5)])
                })
                .await
                .unwrap();
            assert_eq!(l.get("@a:x"), Some(&5));
        }
        let gone = ApiError::Http {
            status: 404,
            errcode: None,
            message: "Room not found".into(),
            retry_after: None,
        };
        for _ in 0..2 {
            let r = cache
                .leaves("!gone:x", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(CallError::Row(gone.clone()))
                })
                .await;
            assert_eq!(r.err(), Some(CallError::Row(gone.clone())));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }
}
