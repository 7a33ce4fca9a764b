//! How fast the main command goes: a fixed `--rate` and `--concurrency`, or
//! `--rate auto`, where the pace follows how the server answers.
//!
//! The run's loop asks a [`Pacer`] how many users may be in flight, tells it
//! when that many are, and lets it work between users: with `--rate auto` it
//! takes the probe's answer times and what the run's requests met (through
//! the [`Meter`] the retrier and the pipeline hold), steps the
//! [`Controller`] once a second and sets the new rate on the throttle (the
//! same governor limiter a fixed `--rate` uses). The pacer never sends a
//! user's request and never touches a row: pacing is all it does.

pub mod controller;
pub mod meter;
pub mod probe;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use crate::throttle::Throttle;
pub use controller::{Change, Controller, Limits, Pace};
pub use meter::{Meter, Seen};
use probe::Probe;

/// How often the controller judges what it measured.
const STEP: Duration = Duration::from_secs(1);

/// The pace the admin asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Pacing {
    /// `--rate N` (`None`: 0, no limit), at most `--concurrency` at once.
    Fixed { rate: Option<f64> },
    /// `--rate auto`, with `--max-rate` and `--max-slowdown`.
    Auto {
        max_rate: Option<f64>,
        max_slowdown: f64,
    },
}

impl Pacing {
    /// The rate of a fixed pace (`None`: no limit); `None` for auto, whose
    /// rate the pacer sets.
    pub fn fixed_rate(&self) -> Option<f64> {
        match self {
            Pacing::Fixed { rate } => *rate,
            Pacing::Auto { .. } => None,
        }
    }
}

/// What the run's loop asks.
pub enum Pacer<'a> {
    /// `--concurrency` at once; the throttle holds the rate.
    Fixed(usize),
    Auto(Box<Auto<'a>>),
}

/// `--rate auto`: the controller, what feeds it, and what it held.
pub struct Auto<'a> {
    controller: Controller,
    throttle: &'a Throttle,
    probes: mpsc::Receiver<Duration>,
    _probing: probe::Running,
    seen: mpsc::UnboundedReceiver<Seen>,
    ticker: Interval,
    /// The throttle's writes at the last step, and when that was.
    last: (u64, Instant),
    /// Writes per second over the last step.
    writes_per_sec: f64,
    verbose: bool,
    held: Held,
}

impl<'a> Pacer<'a> {
    /// `--rate auto`, from the probe's `idle` answer time (measured before
    /// anything was sent): starts probing. `seen` is what the run's meter
    /// sends; `verbose` logs each change.
    pub fn auto(
        limits: Limits,
        probe: Probe,
        idle: Duration,
        throttle: &'a Throttle,
        seen: mpsc::UnboundedReceiver<Seen>,
        verbose: bool,
    ) -> Pacer<'a> {
        let controller = Controller::new(limits, idle);
        throttle.set_rate(controller.pace().rate);
        let (probes, probing) = probe.spawn();
        let mut ticker = tokio::time::interval(STEP);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = Instant::now();
        Pacer::Auto(Box::new(Auto {
            throttle,
            probes,
            _probing: probing,
            seen,
            ticker,
            last: (throttle.granted(), now),
            writes_per_sec: 0.0,
            verbose,
            held: Held::new(controller.pace().at_once, now),
            controller,
        }))
    }

    /// Users in flight at most, now.
    pub fn at_once(&self) -> usize {
        match self {
            Pacer::Fixed(n) => *n,
            Pacer::Auto(a) => a.controller.pace().at_once,
        }
    }

    /// The run has as many users in flight as it may.
    pub fn full(&mut self) {
        if let Pacer::Auto(a) = self {
            a.controller.full();
        }
    }

    /// Takes the next measurement, or steps the controller; returns a line
    /// to print (a change, with `--verbose`). Never ends with a fixed pace.
    /// Cancel-safe: each await only receives.
    pub async fn next(&mut self) -> Option<String> {
        let Pacer::Auto(a) = self else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(d) = a.probes.recv() => {
                a.held.probe(d);
                a.controller.probe(d);
                None
            }
            Some(seen) = a.seen.recv() => {
                match seen {
                    Seen::Throttled => a.controller.throttled(),
                    Seen::Failing => a.controller.failing(),
                    Seen::Work(d) => a.controller.work(d),
                }
                None
            }
            now = a.ticker.tick() => a.step(now),
        }
    }

    /// The pace for the progress line: "auto 7.8/s, 3 at once · server 1.6× idle".
    pub fn brief(&self) -> Option<String> {
        let Pacer::Auto(a) = self else { return None };
        let pace = a.controller.pace();
        let mut brief = format!("auto {:.1}/s, {} at once", a.writes_per_sec, pace.at_once);
        if let Some(s) = a.controller.slowdown() {
            brief.push_str(&format!(" · server {s:.1}× idle"));
        }
        Some(brief)
    }

    /// The pace held over the run, for the summary; `None` with a fixed pace.
    pub fn report(&self) -> Option<PaceReport> {
        let Pacer::Auto(a) = self else { return None };
        Some(a.held.report(
            a.controller.idle(),
            a.controller.budget(),
            a.controller.pace(),
            a.throttle.granted(),
        ))
    }
}

impl Auto<'_> {
    fn step(&mut self, now: Instant) -> Option<String> {
        let granted = self.throttle.granted();
        let (before, since) = self.last;
        let secs = now.saturating_duration_since(since).as_secs_f64();
        let writes = granted - before;
        self.last = (granted, now);
        if secs > 0.0 {
            self.writes_per_sec = writes as f64 / secs;
        }
        let writes_per_sec = (writes > 0 && secs > 0.0).then_some(self.writes_per_sec);
        let change = self.controller.step(now, writes_per_sec)?;
        self.throttle.set_rate(change.to.rate);
        self.held.change(&change, now);
        self.verbose.then(|| describe(&change))
    }
}

/// The `--verbose` line of a change.
pub fn describe(change: &Change) -> String {
    let rate = |p: &Pace| match p.rate {
        Some(r) => format!("{r:.1}/s"),
        None => "no rate cap".to_owned(),
    };
    format!(
        "pace: {} → {} at once, {} → {}: {}",
        change.from.at_once,
        change.to.at_once,
        rate(&change.from),
        rate(&change.to),
        change.why
    )
}

/// How long each level was held, and what the probe answered.
struct Held {
    /// Time held at each number of users at once (index = at once).
    time_at: Vec<Duration>,
    level: usize,
    since: Instant,
    started: Instant,
    changes: u64,
    probes: Vec<Duration>,
}

/// The probe samples kept for the run's median: beyond this, every other
/// one is dropped, so a long run keeps a fair sample in bounded memory.
const PROBES_KEPT: usize = 4096;

impl Held {
    fn new(level: usize, now: Instant) -> Self {
        Held {
            time_at: Vec::new(),
            level,
            since: now,
            started: now,
            changes: 0,
            probes: Vec::new(),
        }
    }

    fn probe(&mut self, d: Duration) {
        if self.probes.len() >= PROBES_KEPT {
            let mut i = 0;
            self.probes.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
        self.probes.push(d);
    }

    fn change(&mut self, change: &Change, now: Instant) {
        add(
            &mut self.time_at,
            self.level,
            now.saturating_duration_since(self.since),
        );
        self.level = change.to.at_once;
        self.since = now;
        self.changes += 1;
    }

    fn report(&self, idle: Duration, budget: Duration, last: Pace, writes: u64) -> PaceReport {
        let now = Instant::now();
        let mut time_at = self.time_at.clone();
        add(
            &mut time_at,
            self.level,
            now.saturating_duration_since(self.since),
        );
        let at_once = (1..time_at.len())
            .max_by_key(|&n| time_at[n])
            .unwrap_or(last.at_once);
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        PaceReport {
            idle,
            budget,
            probe_median: controller::median(&self.probes),
            at_once,
            time_at,
            writes_per_sec: writes as f64 / elapsed.max(1e-3),
            last,
            changes: self.changes,
        }
    }
}

/// Adds `d` to the time held at `level`.
fn add(time_at: &mut Vec<Duration>, level: usize, d: Duration) {
    if time_at.len() <= level {
        time_at.resize(level + 1, Duration::ZERO);
    }
    time_at[level] += d;
}

/// The pace a `--rate auto` run held, for the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct PaceReport {
    /// The probe's answer time before the run sent anything.
    pub idle: Duration,
    /// The slowest the probe was allowed to answer.
    pub budget: Duration,
    /// The probe's median answer time while the run worked.
    pub probe_median: Option<Duration>,
    /// The number of users at once held the longest.
    pub at_once: usize,
    /// How long each number at once was held (index = at once).
    pub time_at: Vec<Duration>,
    /// Paced writes per second over the run.
    pub writes_per_sec: f64,
    /// The pace at the end.
    pub last: Pace,
    pub changes: u64,
}

/// `d` in milliseconds, to a tenth.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl PaceReport {
    /// The summary's line: the pace held and what the server's other users saw.
    pub fn summary_line(&self) -> String {
        let probe = match self.probe_median {
            Some(p) => format!(
                "the server answered others in {:.1} ms (median) against {:.1} ms idle, {:.1}×",
                ms(p),
                ms(self.idle),
                p.as_secs_f64() / self.idle.as_secs_f64().max(1e-6)
            ),
            None => "the probe got no answer".to_owned(),
        };
        format!(
            "Pace: auto held {} at once the longest ({:.1} reactivations and joins a second \
             over the run, {} change(s)); {probe}, budget {:.1} ms",
            self.at_once,
            self.writes_per_sec,
            self.changes,
            ms(self.budget)
        )
    }

    /// The `pace` object of `--summary-json`.
    pub fn json(&self) -> Value {
        let held: serde_json::Map<String, Value> = self
            .time_at
            .iter()
            .enumerate()
            .filter(|(n, t)| *n > 0 && !t.is_zero())
            .map(|(n, t)| {
                (
                    n.to_string(),
                    json!((t.as_secs_f64() * 1000.0).round() / 1000.0),
                )
            })
            .collect();
        json!({
            "mode": "auto",
            "at_once": self.at_once,
            "seconds_at_once": held,
            "writes_per_second": (self.writes_per_sec * 100.0).round() / 100.0,
            "rate_cap_at_end": self.last.rate.map(|r| (r * 100.0).round() / 100.0),
            "at_once_at_end": self.last.at_once,
            "probe_idle_ms": ms(self.idle),
            "probe_budget_ms": ms(self.budget),
            "probe_median_ms": self.probe_median.map(ms),
            "changes": self.changes,
        })
    }
}

/// The `pace` object of `--summary-json` for a fixed pace.
pub fn fixed_json(pacing: &Pacing, concurrency: usize) -> Value {
    json!({
        "mode": "fixed",
        "at_once": concurrency,
        "rate": pacing.fixed_rate(),
    })
}
