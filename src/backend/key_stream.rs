//! Reading a whole key backup (`GET /room_keys/keys?version=V`) as a stream
//! of sessions, in batches, with flat memory.
//!
//! The server sends every session in one body, about 35 MB for 100,000
//! sessions. The body is never held whole: a task reads it a chunk at a time
//! and hands the chunks to a blocking thread, which parses the JSON as it
//! comes (serde_json's streaming deserializer, with visitors that walk
//! `rooms` → room → `sessions` → session) and hands out sessions in batches.
//! Both hand-overs are bounded channels, so a slow consumer slows the reading
//! down instead of filling memory; dropping the stream stops both.
//!
//! `session_data` is kept byte for byte (`RawValue`). Nothing here retries:
//! a failure part way comes out of the stream after the batches before it.

use std::fmt;
use std::io::{self, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::http::{transport_error, ApiError};
use crate::source::{BackupSession, Json};

/// Chunks read ahead of the parser, at most.
const CHUNKS_AHEAD: usize = 8;
/// Batches parsed ahead of the consumer, at most.
const BATCHES_AHEAD: usize = 2;

type Batch = Result<Vec<BackupSession>, ApiError>;

/// The sessions of one backup, a batch at a time.
pub struct SessionStream {
    batches: mpsc::Receiver<Batch>,
}

impl SessionStream {
    /// Starts reading the body of `resp` (a success answer of
    /// `GET /room_keys/keys`). Must be called within a tokio runtime.
    pub(super) fn start(resp: reqwest::Response, batch: usize) -> Self {
        let (chunk_tx, chunk_rx) = mpsc::channel(CHUNKS_AHEAD);
        let (batch_tx, batch_rx) = mpsc::channel(BATCHES_AHEAD);
        tokio::spawn(feed(resp, chunk_tx));
        tokio::task::spawn_blocking(move || parse_chunks(chunk_rx, batch_tx, batch.max(1)));
        SessionStream { batches: batch_rx }
    }

    /// The next batch (never empty); `None` once every session was given.
    /// After an error, nothing more comes.
    pub async fn next(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }
}

/// Reads the body a chunk at a time until it ends, fails, or no one listens.
async fn feed(mut resp: reqwest::Response, chunks: mpsc::Sender<Result<Vec<u8>, ApiError>>) {
    loop {
        let next = match resp.chunk().await {
            Ok(Some(chunk)) => Ok(chunk.to_vec()),
            Ok(None) => return,
            Err(e) => Err(transport_error(e)),
        };
        let failed = next.is_err();
        if chunks.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// The parsing thread: chunks in, batches out.
fn parse_chunks(
    chunks: mpsc::Receiver<Result<Vec<u8>, ApiError>>,
    batches: mpsc::Sender<Batch>,
    batch: usize,
) {
    let mut reader = ChunkReader {
        chunks,
        current: Vec::new(),
        at: 0,
        failure: None,
    };
    let mut emit = |sessions: Vec<BackupSession>| batches.blocking_send(Ok(sessions)).is_ok();
    let parsed = parse_sessions(&mut reader, batch, &mut emit);
    let failure = match parsed {
        Ok(_) | Err(Parse::Cancelled) => return,
        Err(Parse::Invalid(message)) => reader.failure.take().unwrap_or(ApiError::BadBody {
            status: 200,
            message: format!("the key backup is not what the API documents: {message}"),
        }),
    };
    let _ = batches.blocking_send(Err(failure));
}

/// The body's chunks as one `Read`; a transport failure is kept for the
/// stream's error and ends the reading.
struct ChunkReader {
    chunks: mpsc::Receiver<Result<Vec<u8>, ApiError>>,
    current: Vec<u8>,
    at: usize,
    failure: Option<ApiError>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.current.len() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    self.failure = Some(e);
                    return Err(io::Error::other(text));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Why parsing stopped early.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// `emit` said no one takes the sessions any more.
    Cancelled,
    /// The body is not a key backup (or could not be read).
    Invalid(String),
}

/// Parses a `GET /room_keys/keys` body from `reader` as it is read, calling
/// `emit` with each batch of at most `batch` sessions (in the body's order)
/// until it returns false; returns how many sessions there were.
pub fn parse_sessions(
    reader: impl Read,
    batch: usize,
    emit: &mut dyn FnMut(Vec<BackupSession>) -> bool,
) -> Result<u64, Parse> {
    let mut sink = Sink {
        batch: batch.max(1),
        held: Vec::new(),
        emit,
        count: 0,
        cancelled: false,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = Body(&mut sink).deserialize(&mut de).and_then(|()| de.end());
    if sink.cancelled {
        return Err(Parse::Cancelled);
    }
    parsed.map_err(|e| Parse::Invalid(e.to_string()))?;
    if !sink.held.is_empty() {
        let rest = std::mem::take(&mut sink.held);
        if !(sink.emit)(rest) {
            return Err(Parse::Cancelled);
        }
    }
    Ok(sink.count)
}

struct Sink<'a> {
    batch: usize,
    held: Vec<BackupSession>,
    emit: &'a mut dyn FnMut(Vec<BackupSession>) -> bool,
    count: u64,
    cancelled: bool,
}

impl Sink<'_> {
    /// False once the consumer is gone.
    fn push(&mut self, session: BackupSession) -> bool {
        self.held.push(session);
        self.count += 1;
        if self.held.len() >= self.batch {
            let full = std::mem::replace(&mut self.held, Vec::with_capacity(self.batch));
            if !(self.emit)(full) {
                self.cancelled = true;
                return false;
            }
        }
        true
    }
}

/// One session as the server sends it, under its room and session ID.
#[derive(Deserialize)]
struct Stored {
    first_message_index: i64,
    forwarded_count: i64,
    is_verified: bool,
    session_data: Json,
}

/// `{"rooms": {…}}`
struct Body<'s, 'a>(&'s mut Sink<'a>);
/// `{room_id: {"sessions": {…}}}`
struct Rooms<'s, 'a>(&'s mut Sink<'a>);
/// `{"sessions": {…}}` of one room.
struct Room<'s, 'a>(&'s mut Sink<'a>, String);
/// `{session_id: {…}}` of one room.
struct Sessions<'s, 'a>(&'s mut Sink<'a>, &'s str);

macro_rules! map_seed {
    ($($t:ident),*) => {$(
        impl<'de> DeserializeSeed<'de> for $t<'_, '_> {
            type Value = ();
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_map(self)
            }
        }
    )*};
}
map_seed!(Body, Rooms, Room, Sessions);

impl<'de> Visitor<'de> for Body<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with rooms")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "rooms" {
                map.next_value_seed(Rooms(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Rooms<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of rooms")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(room_id) = map.next_key::<String>()? {
            map.next_value_seed(Room(&mut *self.0, room_id))?;
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Room<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a room with sessions")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Room(sink, room_id) = self;
        while let Some(key) = map.next_key::<String>()? {
            if key == "sessions" {
                map.next_value_seed(Sessions(&mut *sink, &room_id))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Sessions<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of sessions")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Sessions(sink, room_id) = self;
        while let Some(session_id) = map.next_key::<String>()? {
            let s: Stored = map.next_value()?;
            let session = BackupSession {
                room_id: room_id.to_owned(),
                session_id,
                first_message_index: s.first_message_index,
                forwarded_count: s.forwarded_count,
                is_verified: s.is_verified,
                session_data: s.session_data,
            };
            if !sink.push(session) {
                return Err(de::Error::custom("the reader of the sessions is gone"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives one byte per read: the parser never sees more
    /// than the chunk it is given.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(out)) => {
                    *out = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn body(rooms: usize, per_room: usize) -> String {
        let rooms: Vec<String> = (0..rooms)
            .map(|r| {
                let sessions: Vec<String> = (0..per_room)
                    .map(|s| {
                        format!(
                            r#""s{s}": {{"first_message_index": {s}, "forwarded_count": 1,
                            "is_verified": {}, "session_data": {{"ciphertext": "c{r}.{s}", "mac":"m"}} }}"#,
                            s % 2 == 0
                        )
                    })
                    .collect();
                format!(r#""!r{r}:x": {{"sessions": {{{}}}}}"#, sessions.join(","))
            })
            .collect();
        format!(r#"{{"etag": "9", "rooms": {{{}}}}}"#, rooms.join(","))
    }

    #[test]
    fn sessions_come_in_batches_in_order_byte_for_byte() {
        let text = body(3, 5);
        let mut got: Vec<Vec<BackupSession>> = Vec::new();
        let n = parse_sessions(Trickle(text.as_bytes()), 4, &mut |b| {
            got.push(b);
            true
        })
        .unwrap();
        assert_eq!(n, 15);
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 4, 3]);
        let all: Vec<&BackupSession> = got.iter().flatten().collect();
        assert_eq!(all[0].room_id, "!r0:x");
        assert_eq!(all[0].session_id, "s0");
        assert!(all[0].is_verified);
        assert_eq!(all[7].room_id, "!r1:x");
        assert_eq!(all[7].session_id, "s2");
        assert_eq!(all[7].first_message_index, 2);
        assert_eq!(all[7].forwarded_count, 1);
        assert_eq!(
            all[14].session_data.get(),
            r#"{"ciphertext": "c2.4", "mac":"m"}"#
        );
    }

    #[test]
    fn an_empty_backup_a_bad_body_and_a_consumer_that_leaves() {
        let mut calls = 0;
        let n = parse_sessions(&br#"{"rooms": {}}"#[..], 10, &mut |_| {
            calls += 1;
            true
        });
        assert_eq!((n, calls), (Ok(0), 0));
        let cut = body(2, 2);
        let cut = &cut.as_bytes()[..cut.len() - 10];
        let e = parse_sessions(cut, 10, &mut |_| true).unwrap_err();
        assert!(matches!(e, Parse::Invalid(_)), "{e:?}");
        let wrong = br#"{"rooms": {"!r:x": {"sessions": {"s": {"first_message_index": "x"}}}}}"#;
        assert!(matches!(
            parse_sessions(&wrong[..], 10, &mut |_| true),
            Err(Parse::Invalid(_))
        ));
        let text = body(4, 4);
        let mut batches = 0;
        let e = parse_sessions(text.as_bytes(), 3, &mut |_| {
            batches += 1;
            batches < 2
        });
        assert_eq!((e, batches), (Err(Parse::Cancelled), 2));
    }
}
