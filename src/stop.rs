//! The run-wide stop signal: why a run stops before its input is done, and a
//! way for every wait in the run to end at once when it does.
//!
//! One `StopSignal` is shared by the consumer, the workers and the retrier. It
//! never decides to stop on its own: callers say why (a fatal error, Ctrl-C),
//! and a fatal reason found later overrides an interruption, so the summary
//! names the real cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Why a run stops before its input is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Going on cannot succeed (token revoked, server gone, disk full …).
    Fatal(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

#[derive(Default)]
pub struct StopSignal {
    stop: Mutex<Option<Stop>>,
    stopped: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the run is stopping; cheaper than `stop()` on the hot path.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why the run is stopping, once it is.
    pub fn stop(&self) -> Option<Stop> {
        if !self.is_stopped() {
            return None;
        }
        self.stop.lock().map(|f| f.clone()).unwrap_or(None)
    }

    /// The fatal reason, if the run stops for one.
    pub fn fatal(&self) -> Option<String> {
        match self.stop() {
            Some(Stop::Fatal(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Resolves once the run is stopping.
    pub async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }

    /// Ends the run: no request starts after this, waits and back-offs end, and
    /// requests already sent finish. A fatal reason overrides an interruption.
    pub fn halt(&self, why: Stop) {
        if let Ok(mut s) = self.stop.lock() {
            match (&*s, &why) {
                (None, _) | (Some(Stop::Interrupted), Stop::Fatal(_)) => *s = Some(why),
                _ => {}
            }
        }
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Ends the run for a fatal reason.
    pub fn stop_run(&self, reason: String) {
        self.halt(Stop::Fatal(reason));
    }

    /// Sleeps for `d` unless the run stops first; false if it stopped.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stopped() => false,
        }
    }
}

/// Ctrl-C and SIGTERM, watched by a command that stops at the first of
/// either (`find`, `snapshot`), from before its first request.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn watch() -> anyhow::Result<Self> {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?,
        })
    }

    /// Waits for either signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fatal_reason_overrides_an_interruption_not_the_reverse() {
        let s = StopSignal::new();
        assert_eq!(s.stop(), None);
        s.halt(Stop::Interrupted);
        assert_eq!(s.stop(), Some(Stop::Interrupted));
        s.stop_run("disk full".into());
        assert_eq!(s.fatal().as_deref(), Some("disk full"));
        s.halt(Stop::Interrupted);
        s.stop_run("later".into());
        assert_eq!(s.fatal().as_deref(), Some("disk full"));
    }

    #[tokio::test]
    async fn a_stop_ends_sleeps_at_once() {
        let s = std::sync::Arc::new(StopSignal::new());
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s2.halt(Stop::Interrupted);
        });
        let started = std::time::Instant::now();
        assert!(!s.sleep(Duration::from_secs(60)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        s.stopped().await;
    }
}
