//! The `--rate auto` decision: measurements in, pace out, no I/O and no clock
//! of its own (the time is an argument), so that it is tested on a paused
//! clock against a simulated server.
//!
//! The pace is two numbers: users at once (the main knob: a reactivation is
//! a bcrypt hash, and a server hashes as many at once as it has cores) and a
//! rate cap on the paced writes (a brake on bursts, and the answer to a 429).
//!
//! Each step looks at what happened since the last change:
//! - a 429 or a 5xx (or no answer at all): halve both, at once;
//! - the probe (a cheap request standing for the server's other users) slower
//!   than the budget, `--max-slowdown` × its idle answer time (never less
//!   than idle + 5 ms, below which loopback timings are noise): scale the pace
//!   by the gradient budget ÷ probe: the users at once when that takes a
//!   whole one off, else the rate cap;
//! - the run's own reactivations queueing in the server, measured the TCP
//!   Vegas way: with `base` their answer time when nothing queued and `now`
//!   the current one, `at once × (1 − base ÷ now)` of them are waiting; more
//!   than `QUEUED_HIGH`: lower by one;
//! - else, if the run had users waiting for a place and both signals have
//!   room (the probe within `RAISE_WITHIN` of the slowdown the budget
//!   allows, fewer than `QUEUED_LOW`
//!   queued): raise by one;
//! - else hold.
//!
//! A level that was lowered from is the knee: it is tried again only after a
//! hold (`KNEE_HOLD`) that doubles each time it fails again soon after it was
//! tried (up to `KNEE_HOLD_MAX`), so the pace settles below the knee instead
//! of oscillating across it.

use std::time::Duration;

use tokio::time::Instant;

/// Below this many milliseconds over idle a probe's slowdown is noise.
pub const NOISE_FLOOR: Duration = Duration::from_millis(5);
/// The share of the slowdown the budget allows that the probe may show and
/// the pace still rise: the rest is the margin that keeps a rise from
/// going over the budget at once.
const RAISE_WITHIN: f64 = 0.75;
/// Reactivations queued in the server above which the pace is lowered.
const QUEUED_HIGH: f64 = 2.0;
/// Reactivations queued in the server below which the pace may rise.
const QUEUED_LOW: f64 = 1.0;
/// Probes since the last change needed to raise the pace (on average within
/// `RAISE_WITHIN`) and to lower it (a median: a lone slow answer
/// is not a slowdown).
const MIN_PROBES_TO_RAISE: usize = 2;
const MIN_PROBES_TO_LOWER: usize = 3;
/// Own answer times since the last change needed to judge them.
const MIN_WORK: usize = 3;
/// The most probes a judgement looks at: the latest ones.
const PROBE_WINDOW: usize = 5;
/// How long a knee is left alone after the pace was lowered from it.
pub const KNEE_HOLD: Duration = Duration::from_secs(5);
const KNEE_HOLD_MAX: Duration = Duration::from_secs(40);
/// The rate cap, over the writes per second of the last window: room to grow
/// without bursts.
const RATE_HEADROOM: f64 = 2.0;
/// The lowest rate cap a backing off sets.
const MIN_RATE: f64 = 0.1;

/// The bounds the admin set.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// `--concurrency`: users at once, at most.
    pub ceiling: usize,
    /// `--max-rate`: writes per second, at most.
    pub max_rate: Option<f64>,
    /// `--max-slowdown`: how much slower than idle the probe may answer.
    pub max_slowdown: f64,
}

/// The pace the run holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Users in flight at most.
    pub at_once: usize,
    /// Paced writes per second at most; `None`: no cap.
    pub rate: Option<f64>,
}

/// Why the pace changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Why {
    /// Users were waiting and the server had room: the probe at this many
    /// times idle.
    Room { slowdown: f64 },
    /// The probe answered this many times slower than idle, over the budget.
    Slow { slowdown: f64 },
    /// The run's own reactivations queued in the server: about this many.
    Queued { queued: f64 },
    /// The server answered 429.
    Throttled,
    /// The server answered 5xx, or not at all.
    Failing,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Room { slowdown } => write!(f, "server {slowdown:.1}× idle, room to grow"),
            Why::Slow { slowdown } => write!(f, "server {slowdown:.1}× idle, over the budget"),
            Why::Queued { queued } => {
                write!(
                    f,
                    "own reactivations queue in the server (~{queued:.1} waiting)"
                )
            }
            Why::Throttled => f.write_str("the server answered 429"),
            Why::Failing => f.write_str("the server answered 5xx or not at all"),
        }
    }
}

/// A change of pace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub from: Pace,
    pub to: Pace,
    pub why: Why,
}

/// What a step decides.
struct Verdict {
    at_once: usize,
    rate: Rate,
    why: Why,
}

/// What becomes of the rate cap.
#[derive(Clone, Copy)]
enum Rate {
    Keep,
    /// To `RATE_HEADROOM` × the writes per second, if that is more.
    Grow,
    /// To this share of the writes per second.
    Scale(f64),
}

/// A level that proved too much, and when it may be tried again.
#[derive(Clone, Copy, Debug)]
struct Knee {
    at_once: usize,
    until: Instant,
    hold: Duration,
}

/// What was measured since the last change of pace.
#[derive(Debug, Default)]
struct Window {
    probes: Vec<Duration>,
    work: Vec<Duration>,
    throttled: u32,
    failing: u32,
    /// Whether the run had as many users in flight as it may.
    full: bool,
}

pub struct Controller {
    limits: Limits,
    idle: Duration,
    pace: Pace,
    /// The own answer time with nothing queued (Vegas's base RTT): the
    /// lowest median of a judged window.
    base_work: Option<Duration>,
    knee: Option<Knee>,
    window: Window,
    /// The probe's slowdown at the last judgement, for the progress line.
    slowdown: Option<f64>,
    /// When the pace last changed.
    changed_at: Instant,
}

impl Controller {
    /// Starts at one user at once, with no rate cap below `--max-rate`.
    /// `idle`: the probe's answer time before the run sent anything.
    pub fn new(limits: Limits, idle: Duration) -> Self {
        let pace = Pace {
            at_once: 1,
            rate: limits.max_rate,
        };
        Controller {
            limits,
            idle,
            pace,
            base_work: None,
            knee: None,
            window: Window::default(),
            slowdown: None,
            changed_at: Instant::now(),
        }
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The probe's slowdown at the last judgement.
    pub fn slowdown(&self) -> Option<f64> {
        self.slowdown
    }

    /// The slowest the probe may answer: `--max-slowdown` × idle, and never
    /// less than idle + `NOISE_FLOOR`.
    pub fn budget(&self) -> Duration {
        self.idle
            .mul_f64(self.limits.max_slowdown)
            .max(self.idle + NOISE_FLOOR)
    }

    /// The probe answered in `d`.
    pub fn probe(&mut self, d: Duration) {
        keep_latest(&mut self.window.probes, d);
    }

    /// One of the run's paced writes (a reactivation) was answered in `d`.
    pub fn work(&mut self, d: Duration) {
        keep_latest(&mut self.window.work, d);
    }

    /// The server answered 429.
    pub fn throttled(&mut self) {
        self.window.throttled += 1;
    }

    /// The server answered 5xx, or could not be reached.
    pub fn failing(&mut self) {
        self.window.failing += 1;
    }

    /// The run had as many users in flight as the pace allows.
    pub fn full(&mut self) {
        self.window.full = true;
    }

    /// Judges what was measured since the last change. `writes_per_sec`: the
    /// paced writes the run sent per second since the last step, if any.
    pub fn step(&mut self, now: Instant, writes_per_sec: Option<f64>) -> Option<Change> {
        let from = self.pace;
        let verdict = self.judge(now, writes_per_sec)?;
        if verdict.at_once < from.at_once || matches!(verdict.rate, Rate::Scale(_)) {
            self.remember_knee(now, from.at_once);
        }
        let rate = match (verdict.rate, writes_per_sec) {
            (Rate::Keep, _) => from.rate,
            (Rate::Grow, Some(w)) => Some((w * RATE_HEADROOM).max(from.rate.unwrap_or(0.0))),
            (Rate::Grow, None) => from.rate,
            (Rate::Scale(f), Some(w)) => Some((w * f).max(MIN_RATE)),
            (Rate::Scale(f), None) => from.rate.map(|r| (r * f).max(MIN_RATE)),
        };
        let rate = match (rate, self.limits.max_rate) {
            (Some(r), Some(max)) => Some(r.min(max)),
            (r, None) => r,
            (None, max) => max,
        };
        self.pace = Pace {
            at_once: verdict.at_once,
            rate,
        };
        self.window = Window::default();
        self.changed_at = now;
        Some(Change {
            from,
            to: self.pace,
            why: verdict.why,
        })
    }

    /// The new pace and why, or `None` to hold (and keep measuring).
    fn judge(&mut self, now: Instant, writes_per_sec: Option<f64>) -> Option<Verdict> {
        let at_once = self.pace.at_once;
        let backing_off = |why| Verdict {
            at_once: (at_once / 2).max(1),
            rate: Rate::Scale(0.5),
            why,
        };
        if self.window.throttled > 0 {
            return Some(backing_off(Why::Throttled));
        }
        if self.window.failing > 0 {
            return Some(backing_off(Why::Failing));
        }
        let probe = self.judged_probe();
        let queued = self.queued();
        if let Some(probe) = probe {
            let slowdown = probe.as_secs_f64() / self.idle.as_secs_f64().max(1e-6);
            self.slowdown = Some(slowdown);
            let budget = self.budget();
            if probe > budget && self.window.probes.len() >= MIN_PROBES_TO_LOWER {
                // The gradient: the pace × budget ÷ probe (by half at most).
                // Users at once are coarse: they go down when the gradient
                // takes a whole one off (rounded); a smaller overshoot
                // scales the rate cap instead, so that 10 % over the budget
                // costs 10 % of the pace, not half of two at once.
                let gradient = (budget.as_secs_f64() / probe.as_secs_f64()).max(0.5);
                let why = Why::Slow { slowdown };
                let lower = ((at_once as f64 * gradient).round() as usize).clamp(1, at_once);
                if lower < at_once {
                    return Some(Verdict {
                        at_once: lower,
                        rate: Rate::Keep,
                        why,
                    });
                }
                return writes_per_sec.map(|_| Verdict {
                    at_once,
                    rate: Rate::Scale(gradient),
                    why,
                });
            }
        }
        if let Some(q) = queued.filter(|q| *q > QUEUED_HIGH) {
            return (at_once > 1).then_some(Verdict {
                at_once: at_once - 1,
                rate: Rate::Keep,
                why: Why::Queued { queued: q },
            });
        }
        let probe = probe?;
        let within = self.idle + (self.budget() - self.idle).mul_f64(RAISE_WITHIN);
        let room = self.window.full && probe <= within && queued.is_none_or(|q| q < QUEUED_LOW);
        let grow = |at_once| Verdict {
            at_once,
            rate: Rate::Grow,
            why: Why::Room {
                slowdown: self.slowdown.unwrap_or(1.0),
            },
        };
        if room && at_once < self.limits.ceiling && self.knee_allows(now, at_once + 1) {
            return Some(grow(at_once + 1));
        }
        // At the ceiling (or below a knee) with the rate cap holding the
        // writes back: raise the cap alone.
        let capped = match (self.pace.rate, writes_per_sec) {
            (Some(cap), Some(w)) => {
                w >= 0.8 * cap && self.limits.max_rate.is_none_or(|max| cap < max)
            }
            _ => false,
        };
        (room && capped).then(|| grow(at_once))
    }

    /// The median of the latest probes since the last change, once there are
    /// enough of them.
    fn judged_probe(&self) -> Option<Duration> {
        let probes = &self.window.probes;
        if probes.len() < MIN_PROBES_TO_RAISE {
            return None;
        }
        median(&probes[probes.len().saturating_sub(PROBE_WINDOW)..])
    }

    /// How many of the run's reactivations wait in the server, once there
    /// are enough answers to tell; updates the base answer time.
    fn queued(&mut self) -> Option<f64> {
        if self.window.work.len() < MIN_WORK {
            return None;
        }
        let now = median(&self.window.work)?;
        let base = self.base_work.map_or(now, |b| b.min(now));
        self.base_work = Some(base);
        let at_once = self.pace.at_once as f64;
        Some(at_once * (1.0 - base.as_secs_f64() / now.as_secs_f64().max(1e-9)))
    }

    fn knee_allows(&self, now: Instant, at_once: usize) -> bool {
        match self.knee {
            Some(k) => at_once < k.at_once || now >= k.until,
            None => true,
        }
    }

    /// The pace was lowered from `at_once`: it is the knee, left alone for a
    /// while; for twice as long if it failed again soon after it was tried
    /// again (within its hold), else for `KNEE_HOLD` (a lone bad second
    /// does not keep the run slow for minutes).
    fn remember_knee(&mut self, now: Instant, at_once: usize) {
        let hold = match self.knee {
            Some(k) if k.at_once == at_once && now < self.changed_at + k.hold => {
                (k.hold * 2).min(KNEE_HOLD_MAX)
            }
            _ => KNEE_HOLD,
        };
        self.knee = Some(Knee {
            at_once,
            until: now + hold,
            hold,
        });
    }
}

/// The most samples of each kind a window keeps: a long hold judges its
/// latest ones, in bounded memory.
const WINDOW_MAX: usize = 64;

fn keep_latest(v: &mut Vec<Duration>, d: Duration) {
    if v.len() >= WINDOW_MAX {
        v.drain(..WINDOW_MAX / 2);
    }
    v.push(d);
}

/// The median of `v` (the mean of an even count's two middles).
pub fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort_unstable();
    let upper = *v.get(v.len() / 2)?;
    Some(match v.len() % 2 {
        0 => (v[v.len() / 2 - 1] + upper) / 2,
        _ => upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A server whose answers slow with load: `cores` reactivations hash at
    /// once at full speed, more share the cores; the probe answers in 3 ms
    /// idle, up to 2 ms slower as the cores fill, and 6 ms slower per
    /// reactivation queued behind them (as measured on 2 cores at
    /// bcrypt_rounds 12).
    struct Server {
        cores: usize,
        hash: Duration,
    }

    impl Server {
        const IDLE: Duration = Duration::from_millis(3);

        /// The probe's answer time with `k` reactivations in the server.
        fn probe(&self, k: f64) -> Duration {
            let cores = self.cores as f64;
            let busy = k.min(cores) / cores;
            let queued = (k - cores).max(0.0);
            Self::IDLE + ms(2).mul_f64(busy) + ms(6).mul_f64(queued)
        }

        /// A reactivation's answer time with `k` in the server.
        fn work(&self, k: f64) -> Duration {
            self.hash.mul_f64((k / self.cores as f64).max(1.0))
        }

        /// Reactivations a second with `k` in the server.
        fn throughput(&self, k: f64) -> f64 {
            k / self.work(k).as_secs_f64()
        }

        /// How many reactivations are in the server at `pace`: its users
        /// at once, unless the rate cap holds them back (Little's law).
        fn in_server(&self, pace: Pace) -> f64 {
            let k = pace.at_once as f64;
            match pace.rate {
                Some(r) if r < self.throughput(k) => (r * self.hash.as_secs_f64()).min(k),
                _ => k,
            }
        }
    }

    /// Runs the controller against `server` with users always waiting, on
    /// tokio's paused clock: a probe every 500 ms, a step every second, the
    /// reactivations of each second answered as the model says. `event`
    /// may act on the controller at each second. Returns the pace each
    /// second.
    async fn simulate(
        server: &Server,
        limits: Limits,
        seconds: u64,
        mut event: impl FnMut(u64, &mut Controller),
    ) -> Vec<Pace> {
        let mut c = Controller::new(limits, Server::IDLE);
        let mut paces = vec![];
        for second in 0..seconds {
            let k = server.in_server(c.pace());
            let work = server.work(k);
            let done = server.throughput(k);
            for _ in 0..2 {
                tokio::time::advance(ms(500)).await;
                c.probe(server.probe(k));
            }
            for _ in 0..done.round() as u64 {
                c.work(work);
            }
            c.full();
            event(second, &mut c);
            c.step(Instant::now(), Some(done));
            paces.push(c.pace());
        }
        paces
    }

    fn limits(ceiling: usize) -> Limits {
        Limits {
            ceiling,
            max_rate: None,
            max_slowdown: 2.0,
        }
    }

    fn two_cores() -> Server {
        Server {
            cores: 2,
            hash: ms(300),
        }
    }

    /// Seconds spent at each number at once.
    fn time_at(paces: &[Pace]) -> Vec<usize> {
        let mut at = vec![0; 10];
        for p in paces {
            at[p.at_once] += 1;
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn climbs_to_the_knee_and_holds_below_it() {
        let paces = simulate(&two_cores(), limits(8), 300, |_, _| {}).await;
        assert_eq!(paces[0].at_once, 2, "one step to reach both cores");
        let at = time_at(&paces);
        // Both cores busy nearly all the time; three at once (one queued)
        // tried now and then, four never.
        assert!(at[2] >= 270, "{at:?}");
        assert!(at[3] <= 25 && at[4..].iter().all(|&n| n == 0), "{at:?}");
        assert!(at[1] <= 10, "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_knee_is_tried_again_ever_more_rarely() {
        let paces = simulate(&two_cores(), limits(8), 300, |_, _| {}).await;
        let tries: Vec<usize> = (1..paces.len())
            .filter(|&i| paces[i].at_once == 3 && paces[i - 1].at_once == 2)
            .collect();
        assert!(tries.len() >= 3, "{tries:?}");
        let gaps: Vec<usize> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps[0] >= KNEE_HOLD.as_secs() as usize, "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn climbs_to_the_ceiling_on_a_server_with_room() {
        let big = Server {
            cores: 16,
            hash: ms(300),
        };
        let paces = simulate(&big, limits(6), 30, |_, _| {}).await;
        assert!(paces.iter().all(|p| p.at_once <= 6));
        assert_eq!(paces[5..].iter().map(|p| p.at_once).min(), Some(6));
        // One a step: 1 → 6 in five steps.
        let firsts: Vec<usize> = paces[..5].iter().map(|p| p.at_once).collect();
        assert_eq!(firsts, [2, 3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_when_the_server_slows_for_everyone() {
        // Something else loads the server at second 40: every probe 12 ms
        // slower, over the 8 ms budget even at one at once.
        let server = two_cores();
        let mut c = Controller::new(limits(8), Server::IDLE);
        for _ in 0..40 {
            for _ in 0..2 {
                tokio::time::advance(ms(500)).await;
                c.probe(server.probe(c.pace().at_once as f64));
            }
            c.full();
            c.step(Instant::now(), Some(6.0));
        }
        assert_eq!(c.pace().at_once, 2);
        // Three slow probes of the latest five: the median is slow.
        for _ in 0..3 {
            tokio::time::advance(ms(500)).await;
            c.probe(server.probe(2.0) + ms(12));
        }
        let change = c.step(Instant::now(), Some(6.0)).expect("a change");
        assert_eq!(change.to.at_once, 1);
        assert!(
            matches!(change.why, Why::Slow { slowdown } if slowdown > 5.0),
            "{change:?}"
        );
        // Still slow at one at once: the rate comes down, by the gradient.
        for _ in 0..3 {
            tokio::time::advance(ms(500)).await;
            c.probe(server.probe(1.0) + ms(12));
        }
        let change = c.step(Instant::now(), Some(3.0)).expect("a change");
        assert_eq!(change.to.at_once, 1);
        let rate = change.to.rate.expect("a rate cap");
        assert!((1.5..3.0).contains(&rate), "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_overshoot_trims_the_rate_not_half_the_users() {
        let mut c = Controller::new(limits(8), Server::IDLE);
        c.probe(Server::IDLE);
        c.probe(Server::IDLE);
        c.full();
        c.step(Instant::now(), Some(3.0)).expect("room to grow");
        assert_eq!(c.pace().at_once, 2);
        // 10 % over the 8 ms budget, three times.
        for _ in 0..3 {
            tokio::time::advance(ms(500)).await;
            c.probe(ms(8) + ms(8) / 10);
        }
        let change = c.step(Instant::now(), Some(6.0)).expect("a change");
        assert_eq!(change.to.at_once, 2, "{change:?}");
        let rate = change.to.rate.expect("a rate cap");
        assert!((rate - 6.0 / 1.1).abs() < 1e-9, "{rate}");
        // 60 % over: one user fewer.
        for _ in 0..3 {
            tokio::time::advance(ms(500)).await;
            c.probe(ms(8) * 16 / 10);
        }
        let change = c.step(Instant::now(), Some(5.0)).expect("a change");
        assert_eq!(change.to.at_once, 1, "{change:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_on_a_429_and_on_a_5xx() {
        for (second, why) in [(20, Why::Throttled), (25, Why::Failing)] {
            let mut changes = vec![];
            let big = Server {
                cores: 16,
                hash: ms(300),
            };
            let paces = simulate(&big, limits(8), 40, |s, c| {
                if s == second {
                    match why {
                        Why::Throttled => c.throttled(),
                        _ => c.failing(),
                    }
                    changes.push(s);
                }
            })
            .await;
            assert_eq!(changes, [second]);
            let (before, after) = (paces[second as usize - 1], paces[second as usize]);
            assert_eq!(before.at_once, 8, "{why:?}");
            assert_eq!(after.at_once, 4, "{why:?}: halved");
            // Half the writes per second it was sending (8 at 300 ms).
            let sent = 8.0 / 0.3;
            assert_eq!(after.rate, Some(sent / 2.0), "{why:?}");
            // It climbs again, but not back to 8 before the knee's hold.
            let hold = KNEE_HOLD.as_secs() as usize;
            let s = second as usize;
            assert!(paces[s..s + hold - 1].iter().all(|p| p.at_once < 8));
            assert!(paces[s + 1].at_once > 4, "{why:?}: climbs again");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn own_answers_queueing_lower_the_pace() {
        // A server whose probe never slows (its other users have cores of
        // their own) but whose reactivations queue past 2 at once.
        let mut c = Controller::new(limits(8), Server::IDLE);
        let server = two_cores();
        let mut at_once = vec![];
        for _ in 0..60 {
            let n = c.pace().at_once;
            for _ in 0..2 {
                tokio::time::advance(ms(500)).await;
                c.probe(Server::IDLE);
            }
            for _ in 0..4 {
                c.work(server.work(n as f64));
            }
            c.full();
            if let Some(change) = c.step(Instant::now(), Some(6.0)) {
                if change.to.at_once < change.from.at_once {
                    assert!(matches!(change.why, Why::Queued { .. }), "{change:?}");
                }
            }
            at_once.push(c.pace().at_once);
        }
        // At 3, one of three waits: 3 × (1 - 2/3) = 1 queued, not raised;
        // at 4, 2 queued: lowered.
        assert!(at_once.iter().all(|&n| n <= 4), "{at_once:?}");
        assert!(
            at_once[10..].iter().all(|&n| (2..=3).contains(&n)),
            "{at_once:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_above_the_ceiling_or_the_max_rate() {
        let big = Server {
            cores: 64,
            hash: ms(100),
        };
        let capped = Limits {
            ceiling: 5,
            max_rate: Some(12.0),
            max_slowdown: 2.0,
        };
        let paces = simulate(&big, capped, 60, |s, c| {
            if s % 17 == 0 {
                c.throttled();
            }
        })
        .await;
        assert!(paces.iter().all(|p| p.at_once <= 5), "{paces:?}");
        assert!(
            paces.iter().all(|p| p.rate.is_some_and(|r| r <= 12.0)),
            "{paces:?}"
        );
        assert!(
            paces.iter().any(|p| p.rate == Some(12.0)),
            "reaches the cap"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn holds_without_evidence() {
        let mut c = Controller::new(limits(8), Server::IDLE);
        // One probe only, nothing waiting: no judgement either way.
        c.probe(Server::IDLE);
        assert_eq!(c.step(Instant::now(), None), None);
        c.probe(Server::IDLE);
        assert_eq!(c.step(Instant::now(), None), None, "no user was waiting");
        c.full();
        let change = c.step(Instant::now(), None).expect("room to grow");
        assert_eq!(change.to.at_once, 2);
        assert_eq!(change.to.rate, None, "no writes measured: no cap yet");
    }

    #[test]
    fn the_budget_is_never_under_the_noise_floor() {
        let c = Controller::new(limits(4), ms(3));
        assert_eq!(c.budget(), ms(8));
        let c = Controller::new(limits(4), ms(40));
        assert_eq!(c.budget(), ms(80));
    }
}
