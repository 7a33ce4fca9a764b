//! Paces the reactivations: at most `rate` a second, `burst` at once after idle.
//! With `--rate auto` the pacer sets a new rate as the run goes
//! ([`Throttle::set_rate`]): governor's quota is fixed, so the limiter is
//! replaced whole, behind a lock taken only for a check (never across a wait).
//!
//! The pacing is the `governor` crate's GCRA, one limiter shared by all
//! workers: a [`Quota`] of one cell per `1 / rate` (fractional rates work:
//! `--rate 0.5` is one cell every 2 s) with `--burst` as its burst. Only the
//! waiting is ours, because of how GCRA treats a late check: with no burst
//! tolerance left (always, at `--burst 1`) a cell admitted after its slot puts
//! the next slot one period after the *check*, so the lateness of every
//! wake-up is added to the schedule. governor's `until_ready` re-checks after a
//! relative sleep, on a timer that wakes up a little late and on another clock
//! (quanta) than the timer's: it measured 49.59/s for `--rate 50` (-0.8 %).
//! So, still with governor's own API:
//!
//! - its clock is tokio's ([`TokioClock`]): the limiter, the timer and the
//!   paused clock of the tests read the same time;
//! - a refused caller sleeps until the absolute instant governor names
//!   ([`earliest_possible`](governor::NotUntil::earliest_possible)) and checks
//!   again *as of that instant*, not as of its wake-up, so slots stay exact
//!   multiples of the period. An earlier check time never lets GCRA admit more
//!   than a check now would. The credit is capped at half a period: a task
//!   woken long after its slot (a stalled machine) does not get the slots it
//!   missed, at `--burst 1` two cells are never less than half a period apart,
//!   and a 1 s window keeps half a period to spare for the requests' own
//!   jitter before it could hold more than rate + burst. (Capped at a whole
//!   period, a stall of a period puts two cells at once; so capped, the
//!   benchmark once saw rate + burst + 1 PUTs in a second.)

use std::cell::Cell;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<At>>;

pub struct Throttle {
    /// `None`: no limit (`--rate auto` before it sets one). Replaced whole
    /// when `--rate auto` sets a new rate: governor's quota is fixed.
    limit: RwLock<Option<Limit>>,
    burst: NonZeroU32,
    /// Cells admitted so far, for `--rate auto` to measure the pace.
    granted: AtomicU64,
}

struct Limit {
    limiter: Limiter,
    /// The most lateness a wake-up is credited with: half a period.
    credit: Duration,
}

impl Limit {
    /// `None` for no limit.
    fn new(rate: Option<f64>, burst: NonZeroU32) -> Option<Limit> {
        // governor has no zero period; a nanosecond is no limit in practice.
        let period = Duration::from_secs_f64(1.0 / rate?).max(Duration::from_nanos(1));
        // governor keeps (burst - 1) periods in a u64 of nanoseconds, which
        // overflows for huge bursts at slow rates; a burst lasting over a
        // century at the rate is as good as the one asked for.
        let most = (u64::MAX / 4 / period.as_nanos() as u64).clamp(1, u32::MAX.into()) as u32;
        let burst = burst.min(NonZeroU32::new(most).unwrap_or(NonZeroU32::MIN));
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Limit {
            limiter: RateLimiter::direct_with_clock(quota, TokioClock),
            credit: period / 2,
        })
    }
}

impl Throttle {
    /// `None` for no limit (`--rate 0`).
    pub fn new(rate: Option<f64>, burst: NonZeroU32) -> Option<Self> {
        let limit = Limit::new(rate, burst)?;
        Some(Throttle {
            limit: RwLock::new(Some(limit)),
            burst,
            granted: AtomicU64::new(0),
        })
    }

    /// A throttle whose rate is set as the run goes (`--rate auto`, whose
    /// pacer sets the first one); it admits everyone until a rate is set.
    pub fn adjustable(burst: NonZeroU32) -> Self {
        Throttle {
            limit: RwLock::new(None),
            burst,
            granted: AtomicU64::new(0),
        }
    }

    /// Sets a new rate (`None`: no limit). The new limiter starts with its
    /// burst available; a caller waiting on the old one checks the new one
    /// when it wakes.
    pub fn set_rate(&self, rate: Option<f64>) {
        let limit = Limit::new(rate, self.burst);
        *self.limit.write().unwrap_or_else(PoisonError::into_inner) = limit;
    }

    /// Cells admitted so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Waits until the limiter admits this request. Cancelling it while it
    /// waits takes no slot.
    pub async fn acquire(&self) {
        let mut due: Option<Instant> = None;
        loop {
            match self.check(due) {
                None => {
                    self.granted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    due = Some(at);
                }
            }
        }
    }

    /// One check: `None` if admitted, else when to check again. `due`: the
    /// slot the caller slept until, if it did.
    fn check(&self, due: Option<Instant>) -> Option<Instant> {
        let limit = self.limit.read().unwrap_or_else(PoisonError::into_inner);
        let limit = limit.as_ref()?;
        let now = Instant::now();
        // A wake-up is checked as of its slot, so its lateness does not
        // move the next one; but never credited more than half a period.
        let as_of = match due {
            None => now,
            Some(due) => due
                .max(now.checked_sub(limit.credit).unwrap_or(now))
                .min(now),
        };
        match TokioClock::reading(as_of, || limit.limiter.check()) {
            Ok(()) => None,
            Err(refused) => Some(refused.earliest_possible().0),
        }
    }
}

thread_local! {
    /// What [`TokioClock`] reads during a check; `None` outside one.
    static AS_OF: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// governor's clock on tokio's time, which [`Throttle::acquire`] can set back
/// for the one check it makes.
struct TokioClock;

impl TokioClock {
    /// Runs `check` with the clock reading `at`. `check` does not await, so no
    /// other task on this thread can see that reading.
    fn reading<T>(at: Instant, check: impl FnOnce() -> T) -> T {
        AS_OF.set(Some(at));
        let result = check();
        AS_OF.set(None);
        result
    }
}

impl Clock for TokioClock {
    type Instant = At;

    fn now(&self) -> At {
        At(AS_OF.get().unwrap_or_else(Instant::now))
    }
}

/// A reading of [`TokioClock`]: governor's traits can't be implemented on
/// tokio's `Instant` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct At(Instant);

impl Add<Nanos> for At {
    type Output = At;

    fn add(self, d: Nanos) -> At {
        At(self.0 + Duration::from(d))
    }
}

impl Reference for At {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, d: Nanos) -> Self {
        At(self.0.checked_sub(d.into()).unwrap_or(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::{FuturesUnordered, StreamExt};
    use std::sync::Arc;

    fn throttle(rate: f64, burst: u32) -> Throttle {
        Throttle::new(Some(rate), NonZeroU32::new(burst).unwrap()).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Acquires `n` times in a row; when each was admitted, from `start`.
    async fn admitted(t: &Throttle, start: Instant, n: usize) -> Vec<Duration> {
        let mut times = vec![];
        for _ in 0..n {
            t.acquire().await;
            times.push(start.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_set_while_running_applies_from_the_next_slot() {
        let t = Throttle::adjustable(NonZeroU32::MIN);
        assert_eq!(admitted(&t, Instant::now(), 3).await, [ms(0); 3]);
        t.set_rate(Some(10.0));
        let start = Instant::now();
        assert_eq!(admitted(&t, start, 3).await, [ms(0), ms(100), ms(200)]);
        // A caller waiting for the old limiter's slot checks the new one.
        let mut waiting = Box::pin(t.acquire());
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        t.set_rate(Some(2.0));
        tokio::time::advance(ms(100)).await;
        waiting.await;
        assert_eq!(admitted(&t, start, 1).await, [ms(800)]);
        t.set_rate(None);
        assert_eq!(admitted(&t, start, 2).await, [ms(800); 2]);
        assert_eq!(t.granted(), 10);
    }

    #[test]
    fn zero_rate_means_no_throttle() {
        assert!(Throttle::new(None, NonZeroU32::MIN).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_exactly_one_period_apart() {
        let t = throttle(50.0, 1);
        let slots = admitted(&t, Instant::now(), 5).await;
        assert_eq!(slots, [ms(0), ms(20), ms(40), ms(60), ms(80)]);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_after_idle_then_the_rate() {
        let t = throttle(10.0, 3);
        let slots = admitted(&t, Instant::now(), 5).await;
        // Three at once, then one every 100 ms.
        assert_eq!(slots, [ms(0), ms(0), ms(0), ms(100), ms(200)]);
        // After a long idle the burst is available again, no more.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let slots = admitted(&t, Instant::now(), 4).await;
        assert_eq!(slots, [ms(0), ms(0), ms(0), ms(100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_request_a_second_is_one_every_two_seconds() {
        let t = throttle(0.5, 1);
        let slots = admitted(&t, Instant::now(), 3).await;
        let s = Duration::from_secs;
        assert_eq!(slots, [s(0), s(2), s(4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_up_does_not_shift_later_slots() {
        let t = throttle(50.0, 1);
        let start = Instant::now();
        t.acquire().await;
        // Due at 20 ms, woken at 25 ms.
        let mut late = std::pin::pin!(t.acquire());
        assert!(futures::poll!(late.as_mut()).is_pending());
        tokio::time::advance(ms(25)).await;
        late.await;
        assert_eq!(start.elapsed(), ms(25));
        // The next slots are still at 40 and 60 ms; a check as of the wake-up
        // would have put them at 45 and 65 ms.
        assert_eq!(admitted(&t, start, 2).await, [ms(40), ms(60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_credited_half_a_period() {
        let t = throttle(50.0, 1);
        let start = Instant::now();
        t.acquire().await;
        // Eight callers due at 20 ms, woken at 1 s: the missed slots are gone.
        let mut waiters: Vec<_> = (0..8).map(|_| Box::pin(t.acquire())).collect();
        for w in &mut waiters {
            assert!(futures::poll!(w.as_mut()).is_pending());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut times: Vec<Duration> = waiters
            .into_iter()
            .map(|w| async move {
                w.await;
                start.elapsed()
            })
            .collect::<FuturesUnordered<_>>()
            .collect()
            .await;
        times.sort();
        // The first is credited half a period (checked as of 990 ms), so the
        // second is due at 1010 ms; then one every 20 ms.
        let expected: Vec<Duration> = [1000, 1010, 1030, 1050, 1070, 1090, 1110, 1130]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(times, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_takes_no_slot() {
        let t = throttle(50.0, 1);
        let start = Instant::now();
        t.acquire().await;
        let mut gone = Box::pin(t.acquire());
        assert!(futures::poll!(gone.as_mut()).is_pending());
        drop(gone);
        assert_eq!(admitted(&t, start, 1).await, [ms(20)]);
    }

    /// When eight workers sharing `t` got 200 cells, on a clock that jumps by
    /// uneven steps of up to 9 ms, so wake-ups are up to 9 ms late (less than
    /// the credit at 50/s).
    async fn admitted_late(t: Throttle) -> Vec<Duration> {
        let t = Arc::new(t);
        let start = Instant::now();
        let times = Arc::new(std::sync::Mutex::new(vec![]));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (t, times) = (t.clone(), times.clone());
                tokio::spawn(async move {
                    loop {
                        t.acquire().await;
                        let mut times = times.lock().unwrap();
                        if times.len() == 200 {
                            break;
                        }
                        times.push(start.elapsed());
                    }
                })
            })
            .collect();
        for step in [7, 3, 9, 4].into_iter().cycle() {
            if times.lock().unwrap().len() == 200 {
                break;
            }
            tokio::time::advance(ms(step)).await;
            // Let every worker woken by the jump run before the next one.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        for w in workers {
            w.await.unwrap();
        }
        let times = times.lock().unwrap().clone();
        assert!(
            times.iter().any(|t| (*t - times[0]).as_millis() % 20 != 0),
            "no wake-up was late"
        );
        times
    }

    fn busiest_second(times: &[Duration]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|b| **b - times[i] < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_neither_add_up_nor_crowd_a_second() {
        let times = admitted_late(throttle(50.0, 1)).await;
        let busiest = busiest_second(&times);
        assert!(busiest <= 50 + 1, "{busiest} in one second");
        let closest = times.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(closest >= ms(10), "two cells {closest:?} apart");
        // The last is due 199 periods after the first and is at most one step
        // late: the lateness of the wake-ups before it did not add up.
        let last = times[199] - times[0];
        assert!(last >= ms(199 * 20) && last < ms(199 * 20 + 9), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_with_a_burst() {
        let times = admitted_late(throttle(50.0, 3)).await;
        let busiest = busiest_second(&times);
        assert!(busiest <= 50 + 3, "{busiest} in one second");
        // Three at once, then 197 at one every 20 ms. (Here GCRA's own
        // tolerance, (burst - 1) periods, absorbs lateness as well.)
        let last = times[199] - times[0];
        assert!(last >= ms(197 * 20) && last < ms(197 * 20 + 9), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_burst_at_the_slowest_rate_does_not_overflow() {
        let t = Throttle::new(Some(0.001), NonZeroU32::MAX).unwrap();
        let slots = admitted(&t, Instant::now(), 3).await;
        assert_eq!(slots, [ms(0), ms(0), ms(0)]);
    }
}
