//! When a user was deactivated and which rooms to give back, from the user's
//! own leaves: pure functions, no I/O, table-tested.
//!
//! Synapse records no deactivation time. Deactivation makes the user leave
//! every room they are in, one room after another, in one burst; so the time
//! of the user's latest own leave is the deactivation's, and the rooms of the
//! burst are the rooms it took. A kick or a ban is not an own leave and never
//! counts (the caller passes own leaves only).

/// The most time between two leaves of one deactivation burst. Synapse parts a
/// user from their rooms back to back, so consecutive leaves of a burst are
/// milliseconds apart even for a user in thousands of rooms on a busy server;
/// a leave of the user's own accord is normally minutes or days older.
pub const BURST_GAP_MS: i64 = 60_000;

/// What the own leaves of one user say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The latest own leave; `None` for a user who left no room.
    pub deactivated_at: Option<i64>,
    /// The rooms to give back, sorted.
    pub rooms: Vec<String>,
}

/// Judges one user's own leaves `(room, time in ms)`. With `since`
/// (`--left-since`) the rooms are those left at or after it, as
/// `--rejoin-rooms` counts them; without it, the burst that ends at the latest
/// leave: each earlier leave that came less than `BURST_GAP_MS` before the
/// next one.
pub fn judge(leaves: &[(String, i64)], since: Option<i64>) -> Verdict {
    let deactivated_at = leaves.iter().map(|&(_, ts)| ts).max();
    let mut rooms: Vec<String> = match since {
        Some(since) => leaves
            .iter()
            .filter(|(_, ts)| *ts >= since)
            .map(|(room, _)| room.clone())
            .collect(),
        None => {
            let mut latest_first: Vec<&(String, i64)> = leaves.iter().collect();
            latest_first.sort_by_key(|l| std::cmp::Reverse(l.1));
            let mut burst = Vec::new();
            let mut next = i64::MAX;
            for (room, ts) in latest_first {
                if next != i64::MAX && next - ts >= BURST_GAP_MS {
                    break;
                }
                burst.push(room.clone());
                next = *ts;
            }
            burst
        }
    };
    rooms.sort();
    rooms.dedup();
    Verdict {
        deactivated_at,
        rooms,
    }
}

/// `--left-since` (inclusive) and `--left-until` (exclusive), in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// Where a deactivation time falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Listed: inside the window, or no window was given.
    Inside,
    Before,
    After,
    /// In no room, so no time, and a window was given.
    Unknown,
}

impl Window {
    pub fn is_set(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    pub fn place(&self, at: Option<i64>) -> Place {
        if !self.is_set() {
            return Place::Inside;
        }
        match at {
            None => Place::Unknown,
            Some(t) if self.since.is_some_and(|s| t < s) => Place::Before,
            Some(t) if self.until.is_some_and(|u| t >= u) => Place::After,
            Some(_) => Place::Inside,
        }
    }
}

/// Unix ms as RFC 3339 in UTC with milliseconds, `2026-11-26T01:00:00.123Z`:
/// the same width on every row, sorted as text as in time, and accepted back
/// by `--left-since`.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Beyond year 9999: no server sends this, but never lose the value.
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|&(r, t)| (r.to_owned(), t)).collect()
    }

    const MIN: i64 = 60_000;
    const T: i64 = 1_000_000_000_000;

    /// Own leaves `(room, time)`, and the rooms to give back.
    type Case = (&'static [(&'static str, i64)], &'static [&'static str]);

    #[test]
    fn without_since_the_burst_ends_at_the_latest_leave() {
        let cases: &[Case] = &[
            (&[], &[]),
            (&[("!a", T)], &["!a"]),
            // One burst, listed sorted by room.
            (
                &[("!b", T), ("!a", T + 10), ("!c", T + 20)],
                &["!a", "!b", "!c"],
            ),
            // A voluntary leave an hour before is not the deactivation's.
            (
                &[("!old", T - 60 * MIN), ("!a", T), ("!b", T + 5)],
                &["!a", "!b"],
            ),
            // A long burst (many rooms, a slow server) stays one burst: each
            // leave is less than 60 s from the next.
            (
                &[
                    ("!1", T),
                    ("!2", T + 50_000),
                    ("!3", T + 100_000),
                    ("!4", T + 150_000),
                ],
                &["!1", "!2", "!3", "!4"],
            ),
            // 60 s or more between two leaves splits them.
            (&[("!early", T), ("!late", T + MIN)], &["!late"]),
            (
                &[("!early", T), ("!late", T + MIN - 1)],
                &["!early", "!late"],
            ),
        ];
        for (input, want) in cases {
            let v = judge(&leaves(input), None);
            assert_eq!(v.rooms, *want, "{input:?}");
            assert_eq!(v.deactivated_at, input.iter().map(|x| x.1).max());
        }
    }

    #[test]
    fn with_since_every_leave_at_or_after_it_counts() {
        let l = leaves(&[("!old", 100), ("!edge", 1_000), ("!new", 5_000_000)]);
        let v = judge(&l, Some(1_000));
        assert_eq!(v.rooms, ["!edge", "!new"]);
        assert_eq!(v.deactivated_at, Some(5_000_000));
        assert!(judge(&l, Some(6_000_000)).rooms.is_empty());
    }

    #[test]
    fn window_places_times() {
        let none = Window::default();
        assert_eq!(none.place(None), Place::Inside);
        assert_eq!(none.place(Some(5)), Place::Inside);
        let w = Window {
            since: Some(10),
            until: Some(20),
        };
        let got: Vec<Place> = [None, Some(9), Some(10), Some(19), Some(20)]
            .into_iter()
            .map(|t| w.place(t))
            .collect();
        use Place::*;
        assert_eq!(got, [Unknown, Before, Inside, Inside, After]);
        let open_end = Window {
            since: Some(10),
            until: None,
        };
        assert_eq!(open_end.place(Some(i64::MAX)), Inside);
        let open_start = Window {
            since: None,
            until: Some(10),
        };
        assert_eq!(open_start.place(Some(-5)), Inside);
        assert_eq!(open_start.place(None), Unknown);
    }

    #[test]
    fn times_are_rfc3339_utc_with_ms_and_parse_back() {
        assert_eq!(rfc3339_ms(1_764_118_800_000), "2025-11-26T01:00:00.000Z");
        assert_eq!(rfc3339_ms(1_764_118_800_123), "2025-11-26T01:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        let back = crate::config::parse_time("--left-since", &rfc3339_ms(1_764_118_801_007));
        assert_eq!(back.unwrap(), 1_764_118_801_007);
    }
}
