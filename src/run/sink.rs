//! The one consumer of outcomes: it owns the results file, the counts and the
//! progress display. Workers only return outcomes; nothing else writes rows.

use std::path::Path;

use crate::pipeline::Done;
use crate::progress::Progress;
use crate::report::results::Results;
use crate::report::{Counts, ResultRow};
use crate::stop::StopSignal;

pub struct Sink<'a> {
    pub results: Results,
    pub counts: Counts,
    pub progress: Progress,
    pub stop: &'a StopSignal,
    pub journal_path: &'a Path,
    /// Rows that failed because the server could not be reached, held until
    /// it answers again (then written) or the run stops for the outage (then
    /// left for --resume rather than failed).
    unreached: Vec<ResultRow>,
}

impl<'a> Sink<'a> {
    pub fn new(
        results: Results,
        counts: Counts,
        progress: Progress,
        stop: &'a StopSignal,
        journal_path: &'a Path,
    ) -> Self {
        Sink {
            results,
            counts,
            progress,
            stop,
            journal_path,
            unreached: Vec::new(),
        }
    }

    pub fn done(&mut self, done: Done) {
        match done {
            Done::Row(row) => {
                // The server answered: rows held for an outage were real failures.
                self.flush_unreached();
                self.write(&row);
            }
            Done::Unreached(row) => self.unreached.push(row),
            Done::Abandoned => {}
        }
    }

    /// Writes the rows held for an outage: the server answered again, or the
    /// run went on to the end without it.
    pub fn flush_unreached(&mut self) {
        for row in std::mem::take(&mut self.unreached) {
            self.write(&row);
        }
    }

    /// An input line naming a user already seen.
    pub fn duplicate(&mut self) {
        self.counts.duplicates += 1;
        self.progress.advance(&self.counts, false);
    }

    fn write(&mut self, row: &ResultRow) {
        match self.results.write(row) {
            Ok(()) => {
                self.counts.record(row);
                self.progress.advance(&self.counts, false);
            }
            Err(e) => self.stop.stop_run(format!(
                "cannot write to the results file {} ({e}); every password sent is in the \
                 journal {}. Free space or fix the folder, then run again with --resume",
                self.results.path().display(),
                self.journal_path.display()
            )),
        }
    }

    /// A second Ctrl-C: save what is written and leave. Passwords of requests
    /// still in flight are in the fsynced journal, so `--resume` completes
    /// those users.
    pub fn exit_now(&mut self) -> ! {
        let _ = self.results.sync();
        eprintln!("\nStopped at once. Run again with --resume to finish.");
        std::process::exit(130)
    }
}
