//! `matrix-reactivate find`: the list of who to restore, from the server.
//!
//! Lists the server's deactivated local users (by user ID, a page at a time),
//! reads each one's rooms and the member state of the rooms they left (each
//! room once), tells from the user's own leaves when the deactivation happened
//! and which rooms it took (`rule`), and writes one row per user to a file the
//! main command takes as its input.
//!
//! On a server whose logins belong to MAS, MAS's list of deactivated users
//! comes first: it says when each one was deactivated, exactly, and names
//! users whose deactivation has not reached Synapse; Synapse's list, merged
//! with it, names those whom MAS never heard of (deactivated through
//! Synapse's own admin API) and says who is erased.
//!
//! It must never change anything on the server: every request is a GET. It
//! holds one page of users, the users in flight and the room cache, never the
//! whole list: pages come sorted by user ID, so rows are written as they come.
//! MAS lists by ULID, not by name: its list is held whole and sorted (a
//! hundred bytes or so a user, about 10 MB for 100,000), the one exception.

mod list;
pub mod output;
pub mod rule;
pub mod summary;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{Stream, StreamExt};

use crate::backend::mas::MasClient;
use crate::backend::synapse::ListedUser;
use crate::config::FindSettings;
use crate::progress::Progress;
use crate::report::summary::Ending;
use crate::retry::{CallError, Retrier};
use crate::run::preflight::{self, Mode, Needs};
use crate::stop::{Signals, Stop, StopSignal};
use crate::throttle::Throttle;
use list::{Assessed, Candidate, Lister, Lists, MasList};
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
            "{} · listing deactivated users",
            checked.describe(&settings.server.homeserver)
        ),
    );
    let mas = match &checked.mode {
        Mode::Synapse => None,
        Mode::Mas(mas) => Some(Source {
            mas: mas.as_ref(),
            server_name: &checked.server_name,
        }),
    };
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
    let listed = list_all(&settings, &lister, &mut sink, mas.as_ref()).await;
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
        mas: mas.as_ref().map(|m| m.mas.base()),
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

/// MAS, on a server whose logins belong to it, and the server name that
/// makes its usernames user IDs.
struct Source<'a> {
    mas: &'a MasClient,
    server_name: &'a str,
}

/// Every candidate, in user ID order.
type Candidates<'a> = Pin<Box<dyn Stream<Item = Result<Candidate, CallError>> + Send + 'a>>;

/// Reads MAS's whole list (on a MAS server) and Synapse's first page (for
/// the total), then every user; returns Synapse's first count of deactivated
/// users.
async fn list_all(
    settings: &FindSettings,
    lister: &Lister<'_>,
    sink: &mut Sink<'_>,
    mas: Option<&Source<'_>>,
) -> anyhow::Result<Option<u64>> {
    let mut signals = Signals::watch()?;
    let start = tokio::select! {
        biased;
        _ = signals.recv() => {
            sink.stop.halt(Stop::Interrupted);
            return Ok(None);
        }
        start = first_pages(lister, mas) => start,
    };
    let (mas_list, first) = match start {
        Ok(pages) => pages,
        Err(Some(reason)) => {
            sink.stop.stop_run(reason);
            return Ok(None);
        }
        Err(None) => return Ok(None),
    };
    let total = first.total;
    let mut expected = total;
    let candidates: Candidates<'_> = match mas_list {
        None => Box::pin(lister.synapse_candidates(first)),
        Some(list) => {
            let held = list.users.len() as u64;
            sink.counts.mas_listed = Some(list.count.unwrap_or(held).max(held));
            expected = Some(total.unwrap_or(0).max(held));
            Box::pin(lister.merged(list.users, first))
        }
    };
    // --verbose lines would break a bar: plain progress lines then.
    sink.progress = Progress::new(
        settings.quiet,
        settings.show_progress,
        !settings.server.verbose,
        expected,
    );
    let assessed = candidates
        .map(|candidate| lister.assess(candidate))
        .buffered(settings.concurrency);
    drive(assessed, sink, lister.retrier, &mut signals).await?;
    Ok(total)
}

/// MAS's list (on a MAS server), then Synapse's first page. `Err(None)`: the
/// run is stopping; `Err(Some(reason))`: why it must.
async fn first_pages(
    lister: &Lister<'_>,
    mas: Option<&Source<'_>>,
) -> Result<(Option<MasList>, crate::backend::synapse::UserPage), Option<String>> {
    let failed = |what: &str, e: CallError| match e {
        CallError::Row(e) => Some(format!("cannot list the deactivated users ({what}): {e}")),
        CallError::Stopped => None,
    };
    let mas_list = match mas {
        None => None,
        Some(source) => Some(
            lister
                .mas_users(source.mas, source.server_name)
                .await
                .map_err(|e| failed("MAS: GET /api/admin/v1/users", e))?,
        ),
    };
    let first = lister
        .page(None)
        .await
        .map_err(|e| failed("GET /_synapse/admin/v3/users", e))?;
    Ok((mas_list, first))
}

/// Takes each user's outcome in list order until the list ends or the run
/// stops. A stop ends it at once: nothing was changed, so nothing is waited for.
async fn drive(
    assessed: impl futures::Stream<Item = Assessed>,
    sink: &mut Sink<'_>,
    retrier: &Retrier,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let stop = sink.stop;
    tokio::pin!(assessed);
    loop {
        tokio::select! {
            biased;
            _ = signals.recv() => stop.halt(Stop::Interrupted),
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
            Assessed::Found { candidate, leaves } => {
                if self.in_order(&candidate.user) {
                    self.counts.listed += 1;
                    self.place(&candidate, &leaves)?;
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
    /// MAS's deactivation time, where there is one, is exact: it is the one
    /// written and compared with the window; the rooms come from Synapse's
    /// leaves either way.
    fn place(&mut self, candidate: &Candidate, leaves: &[(String, i64)]) -> anyhow::Result<()> {
        let user = &candidate.user;
        let verdict = judge(leaves, self.window.since);
        let deactivated_at = candidate.mas_at.or(verdict.deactivated_at);
        let c = &mut self.counts;
        match self.window.place(deactivated_at) {
            Place::Before => c.before += 1,
            Place::After => c.after += 1,
            Place::Unknown => c.unknown += 1,
            Place::Inside => {
                self.file
                    .write(&FoundRow {
                        user_id: &user.name,
                        deactivated_at,
                        erased: user.erased,
                        rooms: &verdict.rooms,
                    })
                    .with_context(|| format!("cannot write to {}", self.file.path().display()))?;
                c.written += 1;
                c.erased += u64::from(user.erased);
                c.locked += u64::from(user.locked);
                c.rooms += verdict.rooms.len() as u64;
                match candidate.lists {
                    Lists::MasOnly => c.mas_only += 1,
                    Lists::SynapseOnly => c.synapse_only += 1,
                    Lists::Synapse | Lists::Both => {}
                }
                match deactivated_at {
                    Some(at) => c.note_time(at),
                    None => c.no_room += 1,
                }
            }
        }
        Ok(())
    }
}
