//! The probe: a request that does no work for the run and stands for the
//! server's other users, `GET /_matrix/client/versions`, sent on a connection
//! of its own (so it never waits behind the run's own requests in the
//! client) every `INTERVAL`. Its answer time, against the same before the run
//! sent anything, is how much the run slows everyone else down.

use std::time::Duration;

use reqwest::Method;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::http::{Auth, Http};

/// How often the probe is sent while the run works.
pub const INTERVAL: Duration = Duration::from_millis(500);
/// Probes that make up the idle answer time, after one to open the connection.
const IDLE_PROBES: usize = 9;
const IDLE_GAP: Duration = Duration::from_millis(20);
const PATH: &str = "/_matrix/client/versions";

pub struct Probe {
    http: Http,
}

impl Probe {
    /// `http` should be a client of its own, not the run's.
    pub fn new(http: Http) -> Self {
        Probe { http }
    }

    /// One probe's answer time; `None` if the server did not answer at all
    /// (an outage is the retrier's to tell). Any status counts: it is the
    /// time that is measured.
    pub async fn once(&self) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        match self.http.send(Method::GET, PATH, None, Auth::None).await {
            Err(e) if e.is_unreachable() => None,
            _ => Some(started.elapsed()),
        }
    }

    /// The answer time before the run sends anything: the median of a few
    /// probes, after one that opens the connection.
    pub async fn idle(&self) -> anyhow::Result<Duration> {
        let mut times = Vec::with_capacity(IDLE_PROBES);
        self.once().await;
        for _ in 0..IDLE_PROBES {
            if let Some(d) = self.once().await {
                times.push(d);
            }
            tokio::time::sleep(IDLE_GAP).await;
        }
        super::controller::median(&times).ok_or_else(|| {
            anyhow::anyhow!(
                "--rate auto: the server did not answer GET {PATH}, so its idle answer time \
                 cannot be measured; give a fixed --rate"
            )
        })
    }

    /// Probes every `INTERVAL` until the receiver is dropped; the task ends
    /// with it (and is aborted when the handle is dropped).
    pub fn spawn(self) -> (mpsc::Receiver<Duration>, Running) {
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Some(d) = self.once().await {
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
            }
        });
        (rx, Running(task))
    }
}

/// The probing task; stopped when dropped.
pub struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}
