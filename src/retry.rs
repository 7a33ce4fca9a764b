//! Retry and back-off policy shared by every request of a run.
//!
//! - 429: wait what the server asks (`Retry-After` or `retry_after_ms`) and pause
//!   the whole run for that long, not only the one request; without a hint,
//!   exponential back-off.
//! - 5xx, timeouts, connection errors: exponential back-off with full jitter.
//! - 401/403 on a core request: the token was revoked or lost its admin right;
//!   the run must stop, not fail every remaining row.
//! - Other 4xx: final for the row.
//!
//! A request that is retried is sent again exactly as it was; in particular a
//! reactivation carries the same password on every attempt, so a retry after an
//! unknown outcome (timeout, cut connection) is safe.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::http::ApiError;
use crate::stop::StopSignal;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Attempts per request for 5xx and transport errors (`--retries`).
    pub attempts: u32,
    /// First back-off step; doubles each attempt.
    pub base_delay: Duration,
    /// Largest back-off step.
    pub max_delay: Duration,
    /// Transport failures in a row that stop the run (`--max-consecutive-failures`).
    pub max_consecutive_failures: u32,
}

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
/// 429 pauses every request and transport failures are counted across them.
pub struct Retrier {
    policy: Policy,
    epoch: Instant,
    /// Milliseconds since `epoch` before which no request may be sent (429 pause).
    pause_until_ms: AtomicU64,
    consecutive_transport: AtomicU32,
    stop: Arc<StopSignal>,
}

impl Retrier {
    pub fn new(policy: Policy, stop: Arc<StopSignal>) -> Self {
        Retrier {
            policy,
            epoch: Instant::now(),
            pause_until_ms: AtomicU64::new(0),
            consecutive_transport: AtomicU32::new(0),
            stop,
        }
    }

    /// The run's stop signal, which this retrier raises on a fatal failure.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
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
            let now = self.epoch.elapsed().as_millis() as u64;
            if until <= now {
                return true;
            }
            if !self.stop.sleep(Duration::from_millis(until - now)).await {
                return false;
            }
        }
    }

    /// Runs `request` until it succeeds, fails for good, or the run must stop.
    pub async fn call<T, F, Fut>(&self, auth: AuthFailure, mut request: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut failures = 0u32; // 5xx and transport errors of this request
        let mut limited = 0u32; // 429s of this request
        loop {
            if self.stop.is_stopped() || !self.wait_if_paused().await {
                return Err(CallError::Stopped);
            }
            let err = match request().await {
                Ok(v) => {
                    self.consecutive_transport.store(0, Ordering::Release);
                    return Ok(v);
                }
                Err(e) => e,
            };
            match classify(&err) {
                Class::RateLimited(hint) => {
                    limited += 1;
                    if limited >= self.policy.rate_limit_attempts() {
                        return Err(CallError::Row(err));
                    }
                    let delay = match hint {
                        Some(d) => d,
                        None => {
                            let step = self.step(limited);
                            step / 2 + jitter(step / 2)
                        }
                    };
                    self.pause_all(delay);
                }
                Class::Auth
                    if auth == AuthFailure::StopsRun
                        || (auth == AuthFailure::ForbiddenFailsRow
                            && err.status() == Some(401)) =>
                {
                    self.stop.stop_run(auth_message(&err));
                    return Err(CallError::Stopped);
                }
                Class::Transient { transport } => {
                    if transport {
                        let n = self.consecutive_transport.fetch_add(1, Ordering::AcqRel) + 1;
                        if n >= self.policy.max_consecutive_failures {
                            self.stop.stop_run(format!(
                                "{n} requests in a row could not reach the server (last: {err}); \
                                 stopping instead of failing every remaining user"
                            ));
                            return Err(CallError::Stopped);
                        }
                    }
                    failures += 1;
                    if failures >= self.policy.attempts {
                        return Err(CallError::Row(err));
                    }
                    if !self.stop.sleep(jitter(self.step(failures))).await {
                        return Err(CallError::Stopped);
                    }
                }
                Class::Auth | Class::Final => return Err(CallError::Row(err)),
            }
        }
    }

    /// The back-off ceiling before attempt `n + 1`: base × 2^(n-1), capped.
    fn step(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        (self.policy.base_delay * factor).min(self.policy.max_delay)
    }
}

enum Class {
    RateLimited(Option<Duration>),
    Auth,
    Transient { transport: bool },
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
        // A gateway that cannot reach the server counts like a failed connection.
        ApiError::Transport(_) => Class::Transient { transport: true },
        e if e.is_unreachable() => Class::Transient { transport: true },
        ApiError::Http { status, .. } if *status >= 500 => Class::Transient { transport: false },
        // A truncated or garbled success body: the request may have been applied;
        // repeating it is safe (same request, same password) and may get a clean answer.
        ApiError::BadBody { .. } => Class::Transient { transport: false },
        ApiError::Http { .. } => Class::Final,
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
            max_consecutive_failures: 5,
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

    #[tokio::test]
    async fn consecutive_transport_failures_stop_the_run() {
        let pacer = retrier(Policy {
            attempts: 2,
            ..policy()
        });
        let mut fatal = None;
        for _ in 0..5 {
            let r: Result<(), _> = pacer
                .call(AuthFailure::StopsRun, || async {
                    Err(ApiError::Transport("could not connect".into()))
                })
                .await;
            if r == Err(CallError::Stopped) {
                fatal = pacer.stop_signal().fatal();
                break;
            }
        }
        let m = fatal.expect("the run stops after 5 transport failures in a row");
        assert!(m.starts_with("5 requests in a row"), "{m}");
    }

    #[tokio::test]
    async fn success_resets_the_transport_count() {
        let pacer = retrier(Policy {
            attempts: 4,
            ..policy()
        });
        for _ in 0..10 {
            let calls = AtomicUsize::new(0);
            let r = pacer
                .call(AuthFailure::StopsRun, || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                        Err(ApiError::Transport("reset".into()))
                    } else {
                        Ok(())
                    }
                })
                .await;
            assert_eq!(r, Ok(()));
        }
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
