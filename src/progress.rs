//! Progress on stderr: a bar when stderr is a terminal, a plain line every few
//! seconds when it is not (CI logs, runbooks piping to a file), nothing with
//! `--quiet` or `--no-progress`. It knows counts, and how long the server has
//! been unreachable when it is (told by the command's loop), never HTTP: each
//! command hands it a one-line brief of its own counts.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::report::Counts;

/// How often a plain progress line is printed.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

enum Mode {
    /// `--quiet`: nothing at all.
    Silent,
    /// `--no-progress`: no progress, but messages still print.
    Hidden,
    Bar(ProgressBar),
    Plain {
        last: Instant,
    },
}

pub struct Progress {
    mode: Mode,
    total: Option<u64>,
    start: Instant,
    /// Lines of input handled so far this run (rows, duplicates, resumed skips).
    done: u64,
    /// Lines handled by an earlier run, not counted in this run's speed.
    skipped: u64,
    /// How long the server has been unreachable, at the last tick.
    outage: Option<Duration>,
    /// With `--rate auto`: the pace and why, at the last tick.
    pace: Option<String>,
}

impl Progress {
    /// `bar`: a bar is allowed on a terminal (not when other lines, such as
    /// `--verbose`'s, print on stderr all the time; plain lines then).
    pub fn new(quiet: bool, show: bool, bar: bool, total: Option<u64>) -> Self {
        let mode = if quiet {
            Mode::Silent
        } else if !show {
            Mode::Hidden
        } else if bar && std::io::stderr().is_terminal() {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{elapsed_precise} [{wide_bar}] {pos}/{len} · {rate} · ETA {eta}\n{msg}"
            } else {
                "{elapsed_precise} {spinner} {pos} users · {rate}\n{msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(
                    style
                        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.1}/s", s.per_sec());
                        })
                        .progress_chars("=> "),
                );
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Mode::Bar(bar)
        } else {
            Mode::Plain {
                last: Instant::now(),
            }
        };
        Progress {
            mode,
            total,
            start: Instant::now(),
            done: 0,
            skipped: 0,
            outage: None,
            pace: None,
        }
    }

    /// One more input line handled; `earlier` if an earlier run had done it.
    pub fn advance(&mut self, counts: &Counts, earlier: bool) {
        self.step(earlier, || counts.brief());
    }

    /// One more item handled; `brief` sums up the counts so far.
    pub fn step(&mut self, earlier: bool, brief: impl FnOnce() -> String) {
        self.done += 1;
        if earlier {
            self.skipped += 1;
        }
        match &mut self.mode {
            Mode::Silent | Mode::Hidden => {}
            Mode::Bar(bar) => {
                bar.set_position(self.done);
                bar.set_message(message(self.pace.as_deref(), &brief(), self.outage));
            }
            Mode::Plain { last } => {
                if last.elapsed() >= PLAIN_INTERVAL {
                    *last = Instant::now();
                    self.print_line(&brief());
                }
            }
        }
    }

    /// Called on a timer so an idle stretch (a long 429 pause, an outage)
    /// still shows a line. `outage`: how long the server has been
    /// unreachable, while it is; its start and end are told once each.
    pub fn tick(&mut self, counts: &Counts, outage: Option<Duration>) {
        self.tick_with(outage, || counts.brief());
    }

    /// `tick` for a command with counts of its own: `brief` sums them up.
    pub fn tick_with(&mut self, outage: Option<Duration>, brief: impl FnOnce() -> String) {
        match (self.outage, outage) {
            (None, Some(_)) => self
                .println("server unreachable: waiting for it to answer again (see --max-outage)"),
            (Some(was), None) => self.println(&format!(
                "server answers again after about {} s unreachable; going on",
                was.as_secs().max(1)
            )),
            _ => {}
        }
        self.outage = outage;
        match &mut self.mode {
            Mode::Bar(bar) => bar.set_message(message(self.pace.as_deref(), &brief(), outage)),
            Mode::Plain { last } if last.elapsed() >= PLAIN_INTERVAL => {
                *last = Instant::now();
                self.print_line(&brief());
            }
            _ => {}
        }
    }

    fn print_line(&self, brief: &str) {
        let _ = writeln!(std::io::stderr(), "{}", self.line(brief));
    }

    /// The plain progress line.
    fn line(&self, brief: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = (self.done - self.skipped) as f64 / secs.max(0.001);
        let mut line = match self.total {
            Some(t) => format!(
                "progress: {}/{} ({:.0}%)",
                self.done,
                t,
                100.0 * self.done as f64 / (t.max(1) as f64)
            ),
            None => format!("progress: {} users", self.done),
        };
        line.push_str(&format!(" · {rate:.1}/s"));
        if let Some(t) = self.total {
            if rate > 0.0 && t > self.done {
                line.push_str(&format!(" · ETA {}", eta((t - self.done) as f64 / rate)));
            }
        }
        line.push_str(&format!(
            " · {}",
            message(self.pace.as_deref(), brief, self.outage)
        ));
        line
    }

    /// Prints a message without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Bar(bar) => bar.println(msg),
            Mode::Hidden | Mode::Plain { .. } => eprintln!("{msg}"),
        }
    }

    pub fn finish(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

impl Progress {
    /// The pace (`--rate auto`) the next lines show: "auto 7.8/s, 3 at once
    /// · server 1.6× idle".
    pub fn set_pace(&mut self, pace: Option<String>) {
        self.pace = pace;
    }
}

/// The counts' brief, led by the outage while there is one, and by the pace
/// with `--rate auto`.
fn message(pace: Option<&str>, brief: &str, outage: Option<Duration>) -> String {
    let brief = match pace {
        Some(pace) => format!("{pace} · {brief}"),
        None => brief.to_owned(),
    };
    match outage {
        Some(d) => format!(
            "server unreachable for {} s, waiting · {brief}",
            d.as_secs()
        ),
        None => brief,
    }
}

fn eta(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn the_plain_line_says_when_the_server_is_unreachable() {
        let mut p = Progress::new(false, false, false, Some(10));
        let mut counts = Counts::default();
        counts.add(Status::Reactivated);
        p.done = 1;
        let line = |p: &Progress| p.line(&counts.brief());
        assert!(line(&p).ends_with("· reactivated 1"), "{}", line(&p));
        p.tick(&counts, Some(Duration::from_millis(12_400)));
        let line = line(&p);
        assert!(
            line.contains("progress: 1/10")
                && line.ends_with("server unreachable for 12 s, waiting · reactivated 1"),
            "{line}"
        );
        p.tick(&counts, None);
        assert!(!p.line(&counts.brief()).contains("unreachable"));
    }

    #[test]
    fn the_plain_line_shows_the_pace_after_the_outage() {
        let mut p = Progress::new(false, false, false, Some(10));
        let mut counts = Counts::default();
        counts.add(Status::Reactivated);
        p.set_pace(Some("auto 7.8/s, 3 at once · server 1.6× idle".into()));
        let line = p.line(&counts.brief());
        assert!(
            line.ends_with("· auto 7.8/s, 3 at once · server 1.6× idle · reactivated 1"),
            "{line}"
        );
        p.tick(&counts, Some(Duration::from_secs(3)));
        let line = p.line(&counts.brief());
        assert!(
            line.ends_with("server unreachable for 3 s, waiting · auto 7.8/s, 3 at once · server 1.6× idle · reactivated 1"),
            "{line}"
        );
    }

    #[test]
    fn eta_format() {
        assert_eq!(super::eta(5.2), "5s");
        assert_eq!(super::eta(125.0), "2m05s");
        assert_eq!(super::eta(7300.0), "2h01m");
    }
}
