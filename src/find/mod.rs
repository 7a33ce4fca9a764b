//! `matrix-reactivate find`: the list of who to restore, from the server.
//!
//! Lists the server's deactivated local users (by user ID, a page at a time),
//! reads each one's rooms and the member state of the rooms they left (each
//! room once), tells from the user's own leaves when the deactivation happened
//! and which rooms it took (`rule`), and writes one row per user to a file the
//! main command takes as its input.
//!
//! It must never change anything on the server: every request is a GET. It
//! holds one page of users, the users in flight and the room cache, never the
//! whole list: pages come sorted by user ID, so rows are written as they come.

mod list;
pub mod output;
pub mod rule;
pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::StreamExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::backend::synapse::ListedUser;
use crate::config::FindSettings;
use crate::progress::Progress;
use crate::report::summary::Ending;
use crate::retry::{CallError, Retrier};
use crate::run::preflight::{self, Needs};
use crate::stop::{Stop, StopSignal};
use crate::throttle::Throttle;
use list::{Assessed, Lister};
use output::{FoundFile, FoundRow};
use rule::{judge, Place, Window};
use summary::{FindCounts, FindSummary, FAILED_SHOWN};

/// Runs `find`; returns the exit code of a listing that got past the
/// preflight (errors before that are returned as errors).
pub async fn find(settings: FindSettings) -> anyhow::Result<i32> {
    let started = Instant::now();
    let file = FoundFile::create(&settings.output)?;
    let client = settings.server.client(settings.concurrency)?;
    let needs = Needs {
        server: &settings.server,
        pool: settings.concurrency,
        server_name: None,
        memberships: Some((
            "find",
            "find needs it to tell when each user was deactivated and which rooms that took; \
             list them with GET /_synapse/admin/v3/users?deactivated=true&locked=true and give \
             their rooms with --rooms-column",
        )),
        no_password: false,
        purpose: "find",
    };
    let checked = match preflight::check(&client, &needs).await {
        Ok(p) => p,
        Err(e) => {
            file.discard();
            return Err(e);
        }
    };
    say(
        &settings,
        &format!(
            "Synapse {} at {} · admin {} · listing deactivated users",
            checked.version.text, settings.server.homeserver, checked.admin
        ),
    );
    let stop = Arc::new(StopSignal::new());
    let retrier = Retrier::new(settings.server.retry.clone(), stop.clone());
    let throttle = Throttle::new(settings.rate, std::num::NonZeroU32::MIN);
    let lister = Lister::new(&client, &retrier, throttle.as_ref(), settings.page_size);
    let window = Window {
        since: settings.since,
        until: settings.until,
    };
    let mut sink = Sink {
        file,
        counts: FindCounts::default(),
        progress: Progress::new(settings.quiet, false, false, None),
        window,
        last: None,
        stop: &stop,
    };
    let listed = list_all(&settings, &lister, &mut sink).await;
    sink.progress.finish();
    let first_total = match listed {
        Ok(total) => total,
        Err(e) => {
            sink.file.discard();
            return Err(e);
        }
    };
    let ending = match stop.stop() {
        Some(Stop::Fatal(reason)) => Ending::Fatal(reason),
        Some(Stop::Interrupted) => Ending::Interrupted,
        None => Ending::Complete,
    };
    let Sink { file, counts, .. } = sink;
    let output = file.path().to_owned();
    if ending == Ending::Complete {
        file.finish()?;
    } else {
        file.discard();
    }
    let text = summary::summary(&FindSummary {
        counts: &counts,
        ending: &ending,
        elapsed: started.elapsed(),
        output: &output,
        homeserver: &settings.server.homeserver,
        window,
        rooms_read: lister.rooms.len(),
        totals: (first_total, lister.last_total()),
    });
    match (&ending, settings.quiet) {
        (_, false) => eprint!("{text}"),
        (Ending::Fatal(reason), true) => eprintln!("error: {reason}"),
        _ => {}
    }
    Ok(summary::exit_code(&ending, &counts))
}

fn say(settings: &FindSettings, msg: &str) {
    if !settings.quiet {
        eprintln!("{msg}");
    }
}

/// Reads the first page (for the total), then every user; returns the
/// server's first count of deactivated users.
async fn list_all(
    settings: &FindSettings,
    lister: &Lister<'_>,
    sink: &mut Sink<'_>,
) -> anyhow::Result<Option<u64>> {
    let first = match lister.page(None).await {
        Ok(page) => page,
        Err(CallError::Row(e)) => {
            sink.stop.stop_run(format!(
                "cannot list the deactivated users (GET /_synapse/admin/v3/users): {e}"
            ));
            return Ok(None);
        }
        Err(CallError::Stopped) => return Ok(None),
    };
    let total = first.total;
    // --verbose lines would break a bar: plain progress lines then.
    sink.progress = Progress::new(
        settings.quiet,
        settings.show_progress,
        !settings.server.verbose,
        total,
    );
    let assessed = lister
        .users(first)
        .map(|listed| lister.assess(listed))
        .buffered(settings.concurrency);
    drive(assessed, sink, lister.retrier).await?;
    Ok(total)
}

/// Takes each user's outcome in list order until the list ends or the run
/// stops. A stop ends it at once: nothing was changed, so nothing is waited for.
async fn drive(
    assessed: impl futures::Stream<Item = Assessed>,
    sink: &mut Sink<'_>,
    retrier: &Retrier,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let stop = sink.stop;
    tokio::pin!(assessed);
    loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => stop.halt(Stop::Interrupted),
            _ = sigterm.recv() => stop.halt(Stop::Interrupted),
            _ = stop.stopped() => {}
            item = assessed.next() => match item {
                Some(a) => sink.take(a)?,
                None => return Ok(()),
            },
            _ = ticker.tick() => {
                let counts = &sink.counts;
                sink.progress.tick_with(retrier.outage(), || counts.brief());
            }
        }
        if stop.is_stopped() {
            return Ok(());
        }
    }
}

/// The one consumer: it owns the file, the counts and the progress display.
struct Sink<'a> {
    file: FoundFile,
    counts: FindCounts,
    progress: Progress,
    window: Window,
    /// The last user ID taken, to skip repeats and notice disorder.
    last: Option<String>,
    stop: &'a StopSignal,
}

impl Sink<'_> {
    fn take(&mut self, assessed: Assessed) -> anyhow::Result<()> {
        match assessed {
            Assessed::Found { user, leaves } => {
                if self.in_order(&user) {
                    self.counts.listed += 1;
                    self.place(&user, &leaves)?;
                }
            }
            Assessed::Failed { user, why } => {
                self.counts.listed += 1;
                self.counts.failed += 1;
                if self.counts.failed_shown.len() < FAILED_SHOWN {
                    self.counts.failed_shown.push((user.clone(), why));
                }
                self.last = Some(user);
            }
            Assessed::ListFailed(e) => {
                self.stop
                    .stop_run(format!("the list of deactivated users broke off: {e}"));
                return Ok(());
            }
            Assessed::Stopped => return Ok(()),
        }
        let counts = &self.counts;
        self.progress.step(false, || counts.brief());
        Ok(())
    }

    /// False for a user to skip: listed twice (the list shifted between
    /// pages), or not deactivated at all.
    fn in_order(&mut self, user: &ListedUser) -> bool {
        if let Some(last) = &self.last {
            if user.name == *last {
                self.counts.repeated += 1;
                return false;
            }
            if user.name.as_str() < last.as_str() {
                self.counts.out_of_order += 1;
            }
        }
        self.last = Some(user.name.clone());
        if !user.deactivated {
            self.counts.not_deactivated += 1;
            return false;
        }
        true
    }

    /// Writes the user's row if the window keeps them, or counts why not.
    fn place(&mut self, user: &ListedUser, leaves: &[(String, i64)]) -> anyhow::Result<()> {
        let verdict = judge(leaves, self.window.since);
        let c = &mut self.counts;
        match self.window.place(verdict.deactivated_at) {
            Place::Before => c.before += 1,
            Place::After => c.after += 1,
            Place::Unknown => c.unknown += 1,
            Place::Inside => {
                self.file
                    .write(&FoundRow {
                        user_id: &user.name,
                        deactivated_at: verdict.deactivated_at,
                        erased: user.erased,
                        rooms: &verdict.rooms,
                    })
                    .with_context(|| format!("cannot write to {}", self.file.path().display()))?;
                c.written += 1;
                c.erased += u64::from(user.erased);
                c.locked += u64::from(user.locked);
                c.rooms += verdict.rooms.len() as u64;
                match verdict.deactivated_at {
                    Some(at) => c.note_time(at),
                    None => c.no_room += 1,
                }
            }
        }
        Ok(())
    }
}
