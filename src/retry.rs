//! Retry and back-off policy shared by every request of a run.
//!
//! - 429: wait what the server asks (`Retry-After` or `retry_after_ms`) and pause
//!   the whole run for that long, not only the one request; without a hint,
//!   exponential back-off.
//! - The server unreachable (no connection, no answer, or a gateway's
//!   502/503/504): a run-wide outage. Every request that meets it waits, with a
//!   capped back-off and without spending its own attempts, until the server
//!   answers again (any answer ends it); only an outage longer than
//!   `--max-outage` stops the run. Upgrades, OOM kills and proxy reloads take a
//!   server away for seconds to minutes, and no user should end `failed` for
//!   that. A request that waited through an outage and still cannot reach a
//!   server that answers others is failing on its own: it spends attempts.
//! - Other 5xx and garbled answers: exponential back-off with full jitter, up
//!   to `--max-attempts` tries of the request.
//! - 401/403 on a core request: the token was revoked or lost its admin right;
//!   the run must stop, not fail every remaining row.
//! - Other 4xx: final for the row.
//!
//! A request that is retried is sent again exactly as it was; in particular a
//! reactivation carries the same password on every attempt, so a retry after an
//! unknown outcome (timeout, cut connection) is safe.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::http::ApiError;
use crate::pace::{Meter, Seen};
use crate::stop::StopSignal;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Tries per request for 5xx and garbled answers (`--max-attempts`); an
    /// unreachable server spends them only without `max_outage`.
    pub attempts: u32,
    /// First back-off step; doubles each attempt.
    pub base_delay: Duration,
    /// Largest back-off step.
    pub max_delay: Duration,
    /// How long the server may stay unreachable before the run stops
    /// (`--max-outage`). `None`: an unreachable server is retried like any
    /// other failure, within `attempts` (the preflight, which must not wait
    /// minutes on a mistyped URL).
    pub max_outage: Option<Duration>,
}

/// The first wait of a request that finds the server unreachable; it doubles
/// with every failed try, up to `OUTAGE_MAX_WAIT`.
pub const OUTAGE_FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between two tries during an outage: a server that comes
/// back is found within about this long.
pub const OUTAGE_MAX_WAIT: Duration = Duration::from_secs(10);

impl Policy {
    /// 429s that carry the server's own wait are not the server failing: they get
    /// a larger budget than other errors before a row is given up.
    fn rate_limit_attempts(&self) -> u32 {
        self.attempts.saturating_mul(4).max(1)
    }
}

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Final for this row; the run goes on.
    Row(ApiError),
    /// The run is stopping (a fatal error or an interruption; the
    /// `StopSignal` says which); the row is left for `--resume`.
    Stopped,
}

/// Whether a 401/403 ends the run or only the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Core requests: the token was revoked or lost its admin right.
    StopsRun,
    /// A 401 still stops the run, but a 403 is about this request (joining a
    /// room the admin is not in).
    ForbiddenFailsRow,
    /// The preflight, which explains each failure itself.
    FailsRow,
}

/// Sends requests again by the policy; shared by all requests of a run, so a
/// 429 pauses every request and an outage is one state of the whole run.
pub struct Retrier {
    policy: Policy,
    epoch: Instant,
    /// Milliseconds since `epoch` before which no request may be sent (429 pause).
    pause_until_ms: AtomicU64,
    /// When the current outage began, in milliseconds since `epoch` plus one;
    /// 0 while the server answers.
    outage_since: AtomicU64,
    /// Outages that ended so far. A request that waited through one and still
    /// cannot reach the server is failing on its own (a proxy route that is
    /// down while the rest answers), and spends its own attempts.
    outages_ended: AtomicU64,
    stop: Arc<StopSignal>,
    /// Tells `--rate auto` of every 429, 5xx and unanswered try.
    meter: Meter,
}

/// What one request has been through so far.
#[derive(Default)]
struct Tries {
    /// Tries sent, the first included.
    sent: u32,
    /// 5xx, garbled answers, and failures to reach a server that answers others.
    failures: u32,
    /// 429s.
    limited: u32,
    /// Waits for an outage to end.
    outage_waits: u32,
    /// `outages_ended` when this request last found the server unreachable.
    outage_seen: Option<u64>,
}

/// What to do after a failed try.
enum Next {
    /// Send the request again after this wait (and after any 429 pause).
    Retry(Duration),
    Give(CallError),
}

impl Retrier {
    pub fn new(policy: Policy, stop: Arc<StopSignal>) -> Self {
        Retrier {
            policy,
            epoch: Instant::now(),
            pause_until_ms: AtomicU64::new(0),
            outage_since: AtomicU64::new(0),
            outages_ended: AtomicU64::new(0),
            stop,
            meter: Meter::default(),
        }
    }

    /// Tells `meter` of every 429, 5xx and unanswered try (`--rate auto`).
    pub fn metered(mut self, meter: Meter) -> Self {
        self.meter = meter;
        self
    }

    /// Where the run's requests report what they met, for `--rate auto`.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The run's stop signal, which this retrier raises on a fatal failure.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long the server has been unreachable, while it is.
    pub fn outage(&self) -> Option<Duration> {
        match self.outage_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(
                (self.now_ms() + 1).saturating_sub(since),
            )),
        }
    }

    /// The server could not be reached: an outage begins now unless one is
    /// on already. Returns how long it has lasted.
    fn unreachable_now(&self) -> Duration {
        let now = self.now_ms() + 1;
        let since =
            match self
                .outage_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        Duration::from_millis(now.saturating_sub(since))
    }

    /// The server answered (whatever it said): an outage, if one was on, is over.
    fn answered(&self) {
        if self.outage_since.load(Ordering::Acquire) != 0
            && self.outage_since.swap(0, Ordering::AcqRel) != 0
        {
            self.outages_ended.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Pauses the whole run until at least `delay` from now.
    fn pause_all(&self, delay: Duration) {
        let until = (self.epoch.elapsed() + delay).as_millis() as u64;
        self.pause_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Waits while the run is paused by a 429; false if the run stopped meanwhile.
    pub async fn wait_if_paused(&self) -> bool {
        loop {
            let until = self.pause_until_ms.load(Ordering::Acquire);
            let now = self.now_ms();
            if until <= now {
                return true;
            }
            if !self.stop.sleep(Duration::from_millis(until - now)).await {
                return false;
            }
        }
    }

    /// Runs `request` until it succeeds, fails for good, or the run must stop.
    /// Every try is the same request (a reactivation carries the same password).
    pub async fn call<T, F, Fut>(&self, auth: AuthFailure, mut request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut tries = Tries::default();
        loop {
            if self.stop.is_stopped() || !self.wait_if_paused().await {
                return Err(CallError::Stopped);
            }
            tries.sent += 1;
            let err = match crate::http::as_attempt(tries.sent, request()).await {
                Ok(v) => {
                    self.answered();
                    return Ok(v);
                }
                Err(e) => e,
            };
            match self.after(auth, err, &mut tries) {
                Next::Give(e) => return Err(e),
                Next::Retry(wait) if wait.is_zero() => {}
                Next::Retry(wait) => {
                    if !self.stop.sleep(wait).await {
                        return Err(CallError::Stopped);
                    }
                }
            }
        }
    }

    /// Decides what follows a failed try.
    fn after(&self, auth: AuthFailure, err: ApiError, tries: &mut Tries) -> Next {
        let class = classify(&err);
        match class {
            Class::Unreachable => self.meter.seen(Seen::Failing),
            Class::RateLimited(_) => self.meter.seen(Seen::Throttled),
            Class::Transient if err.status().is_some_and(|s| s >= 500) => {
                self.meter.seen(Seen::Failing)
            }
            _ => {}
        }
        if !matches!(class, Class::Unreachable) {
            self.answered();
        }
        match class {
            Class::RateLimited(hint) => {
                tries.limited += 1;
                if tries.limited >= self.policy.rate_limit_attempts() {
                    return Next::Give(CallError::Row(err));
                }
                let delay = hint.unwrap_or_else(|| {
                    let step = self.step(tries.limited);
                    step / 2 + jitter(step / 2)
                });
                self.pause_all(delay);
                Next::Retry(Duration::ZERO)
            }
            Class::Auth
                if auth == AuthFailure::StopsRun
                    || (auth == AuthFailure::ForbiddenFailsRow && err.status() == Some(401)) =>
            {
                self.stop.stop_run(auth_message(&err));
                Next::Give(CallError::Stopped)
            }
            Class::Unreachable => match self.policy.max_outage {
                Some(max) => self.wait_for_server(err, max, tries),
                None => self.failed_try(err, tries),
            },
            Class::Transient => self.failed_try(err, tries),
            Class::Auth | Class::Final => Next::Give(CallError::Row(err)),
        }
    }

    /// A try that failed on its own: back off, within the request's attempts.
    fn failed_try(&self, err: ApiError, tries: &mut Tries) -> Next {
        tries.failures += 1;
        if tries.failures >= self.policy.attempts {
            return Next::Give(CallError::Row(err));
        }
        Next::Retry(jitter(self.step(tries.failures)))
    }

    /// The server could not be reached: wait for it, however many tries that
    /// takes, unless the outage has lasted `max` (the run stops) or the server
    /// answers everyone but this request (its own attempts are spent then).
    fn wait_for_server(&self, err: ApiError, max: Duration, tries: &mut Tries) -> Next {
        let ended = self.outages_ended.load(Ordering::Acquire);
        let seen = tries.outage_seen.replace(ended);
        if seen.is_some_and(|s| s != ended) {
            return self.failed_try(err, tries);
        }
        let lasted = self.unreachable_now();
        if lasted >= max {
            self.stop.stop_run(format!(
                "the server has been unreachable for {:.0} s (last: {err}), longer than \
                 --max-outage {}; stopping instead of failing every remaining user",
                lasted.as_secs_f64(),
                max.as_secs_f64()
            ));
            return Next::Give(CallError::Stopped);
        }
        tries.outage_waits += 1;
        let step = backoff(OUTAGE_FIRST_WAIT, OUTAGE_MAX_WAIT, tries.outage_waits);
        // Never wait past the deadline: the stop comes on time.
        Next::Retry((step / 2 + jitter(step / 2)).min(max - lasted))
    }

    /// The back-off ceiling before attempt `n + 1`.
    fn step(&self, n: u32) -> Duration {
        backoff(self.policy.base_delay, self.policy.max_delay, n)
    }
}

/// The `n`th step of an exponential back-off: `first` × 2^(n-1), capped at `max`.
fn backoff(first: Duration, max: Duration, n: u32) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    (first * factor).min(max)
}

enum Class {
    RateLimited(Option<Duration>),
    Auth,
    /// No answer from the server, or a gateway's saying it has none.
    Unreachable,
    /// An answer that may be better on another try.
    Transient,
    Final,
}

fn classify(err: &ApiError) -> Class {
    match err {
        ApiError::Http {
            status: 429,
            retry_after,
            ..
        } => Class::RateLimited(*retry_after),
        ApiError::Http {
            status: 401 | 403, ..
        } => Class::Auth,
        e if e.is_unreachable() => Class::Unreachable,
        ApiError::Http { status, .. } if *status >= 500 => Class::Transient,
        // A truncated or garbled success body: the request may have been applied;
        // repeating it is safe (same request, same password) and may get a clean answer.
        ApiError::BadBody { .. } => Class::Transient,
        ApiError::Http { .. } | ApiError::Transport(_) | ApiError::Unsupported(_) => Class::Final,
    }
}

/// Why a 401/403 stops the run, and what the admin can do about it.
pub fn auth_message(err: &ApiError) -> String {
    let hint = match err {
        ApiError::Http { message, .. } if message.contains("Password change disabled") => {
            "this server does not allow setting passwords (SSO, LDAP-only or Matrix \
             Authentication Service): run again with --no-password"
        }
        ApiError::Http { message, .. } if message.contains("Password auth is disabled") => {
            "Matrix Authentication Service has password login turned off (passwords.enabled: \
             false): run again with --no-password; users keep logging in as they did"
        }
        ApiError::Http { status: 401, .. } => {
            "the access token was rejected: was it revoked or did it expire? \
             Get a new admin token and run again with --resume"
        }
        _ => {
            "the token's user is no longer allowed to do this: check that it is still \
             a server admin, then run again with --resume"
        }
    };
    format!("the server refused a request ({err}); {hint}")
}

/// A uniformly random duration in [0, max].
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return max;
    }
    max.mul_f64(f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::Stop;
    use std::sync::atomic::AtomicUsize;

    fn policy() -> Policy {
        Policy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_outage: Some(Duration::from_secs(300)),
        }
    }

    fn retrier(policy: Policy) -> Retrier {
        Retrier::new(policy, Arc::new(StopSignal::new()))
    }

    fn http(status: u16) -> ApiError {
        ApiError::Http {
            status,
            errcode: None,
            message: String::new(),
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn retries_5xx_up_to_the_limit() {
        let pacer = retrier(policy());
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = pacer
            .call(AuthFailure::StopsRun, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(http(500))
            })
            .await;
        assert_eq!(r, Err(CallError::Row(http(500))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_4xx_are_not_retried() {
        let pacer = retrier(policy());
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = pacer
            .call(AuthFailure::StopsRun, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(http(400))
            })
            .await;
        assert_eq!(r, Err(CallError::Row(http(400))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn auth_failure_stops_the_run_or_the_row() {
        let pacer = retrier(policy());
        let r: Result<(), _> = pacer
            .call(AuthFailure::FailsRow, || async { Err(http(403)) })
            .await;
        assert_eq!(r, Err(CallError::Row(http(403))));
        assert!(pacer.stop_signal().fatal().is_none());
        let r: Result<(), _> = pacer
            .call(AuthFailure::StopsRun, || async { Err(http(401)) })
            .await;
        assert_eq!(r, Err(CallError::Stopped));
        assert!(pacer
            .stop_signal()
            .fatal()
            .is_some_and(|m| m.contains("--resume")));
        // Every later call stops at once.
        let r: Result<(), _> = pacer.call(AuthFailure::StopsRun, || async { Ok(()) }).await;
        assert_eq!(r, Err(CallError::Stopped));
    }

    fn refused() -> ApiError {
        ApiError::Transport("could not connect: connection refused".into())
    }

    /// A request that cannot reach the server until `back` after the start.
    async fn until(back: Duration, start: Instant, calls: &AtomicUsize) -> Result<(), ApiError> {
        calls.fetch_add(1, Ordering::SeqCst);
        if start.elapsed() < back {
            Err(refused())
        } else {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_max_outage_is_waited_out() {
        // Four requests meet a 40 s outage; none gives up, though each tries
        // far more often than its 3 attempts.
        let pacer = Arc::new(retrier(policy()));
        let start = Instant::now();
        let calls = Arc::new(AtomicUsize::new(0));
        let requests = (0..4).map(|i| {
            let (pacer, calls) = (pacer.clone(), calls.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(i * 5)).await;
                let r = pacer
                    .call(AuthFailure::StopsRun, || {
                        until(Duration::from_secs(40), start, &calls)
                    })
                    .await;
                (r, Instant::now())
            }
        });
        let outage_seen = {
            let pacer = pacer.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                pacer.outage()
            }
        };
        let (done, seen) = tokio::join!(futures::future::join_all(requests), outage_seen);
        let seen = seen.expect("the outage is visible while it lasts");
        assert!(
            (Duration::from_secs(19)..=Duration::from_secs(21)).contains(&seen),
            "{seen:?}"
        );
        for (r, at) in done {
            assert_eq!(r, Ok(()));
            // Found again within the longest wait once the server is back.
            let back = at - start;
            assert!(
                back >= Duration::from_secs(40)
                    && back <= Duration::from_secs(40) + OUTAGE_MAX_WAIT,
                "{back:?}"
            );
        }
        assert!(
            calls.load(Ordering::SeqCst) > 4 * 3,
            "waits cost no attempts"
        );
        assert_eq!(pacer.outage(), None, "the outage ended with the answers");
        assert!(pacer.stop_signal().stop().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_max_outage_stops_the_run() {
        let pacer = retrier(Policy {
            max_outage: Some(Duration::from_secs(60)),
            ..policy()
        });
        let start = Instant::now();
        let calls = AtomicUsize::new(0);
        let r = pacer
            .call(AuthFailure::StopsRun, || {
                until(Duration::from_secs(3600), start, &calls)
            })
            .await;
        assert_eq!(r, Err(CallError::Stopped));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(60) && took < Duration::from_secs(61),
            "stops on time, not a back-off step later: {took:?}"
        );
        let m = pacer.stop_signal().fatal().expect("a fatal reason");
        assert!(
            m.contains("--max-outage 60")
                && m.contains("unreachable for 60 s")
                && m.contains("connection refused"),
            "{m}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_are_an_outage_other_5xx_are_not() {
        let pacer = retrier(policy());
        let calls = AtomicUsize::new(0);
        let r = pacer
            .call(AuthFailure::StopsRun, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0..=5 => Err(http(502 + (n % 3) as u16)),
                        _ => Ok(()),
                    }
                }
            })
            .await;
        assert_eq!(
            r,
            Ok(()),
            "six gateway errors, three attempts: still waited out"
        );
        let r: Result<(), _> = pacer
            .call(AuthFailure::StopsRun, || async { Err(http(500)) })
            .await;
        assert_eq!(r, Err(CallError::Row(http(500))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_unreachable_while_others_are_answered_spends_its_attempts() {
        // A proxy route that is down while the server answers the rest: the
        // request gives up after its attempts instead of waiting for ever.
        let pacer = Arc::new(retrier(policy()));
        let broken = pacer.call(AuthFailure::StopsRun, || async { Err::<(), _>(http(503)) });
        let others = {
            let pacer = pacer.clone();
            async move {
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = pacer.call(AuthFailure::StopsRun, || async { Ok(()) }).await;
                }
            }
        };
        let r = tokio::select! {
            r = broken => r,
            _ = others => panic!("the broken request never gave up"),
        };
        assert_eq!(r, Err(CallError::Row(http(503))));
        assert!(pacer.stop_signal().stop().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn without_max_outage_an_unreachable_server_fails_the_request() {
        // The preflight: a mistyped URL must not keep the admin waiting.
        let pacer = retrier(Policy {
            max_outage: None,
            ..policy()
        });
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = pacer
            .call(AuthFailure::FailsRow, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(refused())
            })
            .await;
        assert_eq!(r, Err(CallError::Row(refused())));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_pauses_every_request() {
        // One request meets a 429 asking for 3 s; four other requests, started
        // while that pause is on, must each wait for it too.
        let pacer = Arc::new(retrier(policy()));
        let start = tokio::time::Instant::now();
        let limited = pacer.call(AuthFailure::StopsRun, {
            let calls = AtomicUsize::new(0);
            move || {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(ApiError::Http {
                            status: 429,
                            errcode: Some("M_LIMIT_EXCEEDED".into()),
                            message: String::new(),
                            retry_after: Some(Duration::from_secs(3)),
                        })
                    } else {
                        Ok(tokio::time::Instant::now())
                    }
                }
            }
        });
        let others = (0..4).map(|i| {
            let pacer = pacer.clone();
            async move {
                // Start after the 429 was seen.
                tokio::time::sleep(Duration::from_millis(10 + i * 100)).await;
                pacer
                    .call(AuthFailure::StopsRun, || async {
                        Ok(tokio::time::Instant::now())
                    })
                    .await
            }
        });
        let (first, rest) = tokio::join!(limited, futures::future::join_all(others));
        let mut sent = vec![first.expect("the limited request succeeds")];
        sent.extend(
            rest.into_iter()
                .map(|r| r.expect("a paused request succeeds")),
        );
        assert_eq!(sent.len(), 5);
        for at in sent {
            assert!(at - start >= Duration::from_secs(3), "{:?}", at - start);
        }
    }

    #[tokio::test]
    async fn an_interruption_ends_back_off_at_once() {
        let pacer = Arc::new(retrier(Policy {
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            ..policy()
        }));
        let p2 = pacer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p2.stop_signal().halt(Stop::Interrupted);
        });
        let started = std::time::Instant::now();
        let r: Result<(), _> = pacer
            .call(AuthFailure::StopsRun, || async { Err(http(500)) })
            .await;
        assert_eq!(r, Err(CallError::Stopped));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(pacer.stop_signal().stop(), Some(Stop::Interrupted));
        // A fatal reason found later still wins over the interruption.
        pacer.stop_signal().stop_run("disk full".into());
        assert_eq!(pacer.stop_signal().fatal().as_deref(), Some("disk full"));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
    }
}
