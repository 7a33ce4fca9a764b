//! What the run's requests tell the pace controller: a 429, a 5xx or no
//! answer, and how long each reactivation took. Sent down a channel to the
//! one task that owns the controller (the run's loop); with a fixed `--rate`
//! nothing listens and nothing is sent.

use std::time::Duration;

use tokio::sync::mpsc;

/// One thing a request met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The server answered 429.
    Throttled,
    /// The server answered 5xx, or not at all.
    Failing,
    /// A paced write (a reactivation) was answered in this long.
    Work(Duration),
}

/// The sending end; the default sends nothing.
#[derive(Clone, Debug, Default)]
pub struct Meter {
    tx: Option<mpsc::UnboundedSender<Seen>>,
}

impl Meter {
    /// A meter and the receiver of what it sees.
    pub fn channel() -> (Meter, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Meter { tx: Some(tx) }, rx)
    }

    pub fn seen(&self, what: Seen) {
        if let Some(tx) = &self.tx {
            // The receiver is gone only once the run's loop has ended.
            let _ = tx.send(what);
        }
    }
}
