//! `matrix-reactivate snapshot`: the before-image of users, read from the
//! live server into one file that `--restore-from` reads (for an admin with
//! the API and no database backup, before a risky change).
//!
//! The users of INPUT, or every active local user (`users`); for each, what
//! a deactivation would delete (`read`), sent to the one thread that owns the
//! file (`file`); then the summary (`summary`). Paced by `--rate`, at most
//! `--concurrency` users at once, retried like every request of the tool,
//! with progress on stderr.
//!
//! It never changes anything on the server but the short-lived tokens it
//! makes to act as each user, and ends each one when the user is read. It
//! never leaves a file that is not complete: the file is written under a
//! hidden name and moved into place only when every user was handled; an
//! error or Ctrl-C removes it. It never overwrites a file. Memory holds the
//! users in flight and a few batches of sessions, whatever the number of users.

pub mod file;
pub mod read;
pub mod summary;
pub mod users;

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{Stream, StreamExt};

use crate::backend::mas::{MasAccounts, MasClient};
use crate::backend::synapse::{SynapseAccounts, SynapseClient};
use crate::backend::Accounts;
use crate::config::SnapshotSettings;
use crate::http::bearer;
use crate::input::{count_rows, Columns, Input};
use crate::progress::Progress;
use crate::report::summary::Ending;
use crate::retry::{CallError, Retrier};
use crate::run::preflight::{self, Mode, Preflight};
use crate::source::snapshot::SnapshotWriter;
use crate::stop::{Signals, Stop, StopSignal};
use crate::throttle::Throttle;
use crate::user_id::UserId;
use file::FileTask;
use read::{Outcome, Pacer, Reader};
use summary::{SnapshotCounts, SnapshotSummary};
use users::Wanted;

/// How long users in flight may take to end their tokens after a stop.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// Runs `snapshot`; returns the exit code of a snapshot that got past the
/// preflight (errors before that are returned as errors, and leave no file).
pub async fn snapshot(settings: SnapshotSettings) -> anyhow::Result<i32> {
    let started = Instant::now();
    refuse_existing(&settings.output)?;
    let columns = Columns {
        user: settings.column.clone(),
        ..Columns::default()
    };
    let input = match &settings.input {
        Some(source) => Some(Input::open(source.clone(), &columns)?),
        None => None,
    };
    let client = settings.server.client(settings.concurrency)?;
    let needs = preflight::Needs {
        server: &settings.server,
        pool: settings.concurrency,
        server_name: settings.server_name.as_deref(),
        memberships: Some((
            "snapshot",
            "snapshot needs it to read the rooms each user is joined to.",
        )),
        no_password: false,
        purpose: "reading the users' e-mail addresses",
    };
    let checked = preflight::check(&client, &needs).await?;
    say(&settings, &checked.describe(&settings.server.homeserver));
    // Watched before the file exists: from here on, Ctrl-C removes it.
    let signals = Signals::watch()?;
    let writer = SnapshotWriter::create(&settings.output, &checked.server_name)
        .with_context(|| format!("--output {}", settings.output.display()))?;
    let stop = Arc::new(StopSignal::new());
    let file = FileTask::start(writer, settings.output.clone(), stop.clone())?;
    let run = Run {
        settings: &settings,
        client: &client,
        checked: &checked,
        retrier: Arc::new(Retrier::new(settings.server.retry.clone(), stop.clone())),
        throttle: Throttle::new(settings.rate, NonZeroU32::MIN),
        stop: &stop,
    };
    let read = run.all(input, &file, signals).await;
    let mut counts = match read {
        Ok(counts) => counts,
        Err(e) => {
            stop.stop_run(format!("{e:#}"));
            SnapshotCounts::default()
        }
    };
    let ending = match stop.stop() {
        Some(Stop::Fatal(reason)) => Ending::Fatal(reason),
        Some(Stop::Interrupted) => Ending::Interrupted,
        None => Ending::Complete,
    };
    let ending = match file.close(ending == Ending::Complete).await {
        Ok(_) => ending,
        Err(e) => {
            counts.written = 0;
            Ending::Fatal(format!("{e:#}"))
        }
    };
    let text = summary::summary(&SnapshotSummary {
        counts: &counts,
        ending: &ending,
        elapsed: started.elapsed(),
        output: &settings.output,
        homeserver: &settings.server.homeserver,
        input: settings.input.as_ref().map(|s| s.display()).as_deref(),
    });
    match (&ending, settings.quiet) {
        (_, false) => eprint!("{text}"),
        (Ending::Fatal(reason), true) => eprintln!("error: {reason}"),
        _ => {}
    }
    Ok(summary::exit_code(&ending, &counts))
}

/// The snapshot never replaces a file: say so before any request is sent
/// (the writer checks again when it creates the file and when it finishes).
fn refuse_existing(output: &std::path::Path) -> anyhow::Result<()> {
    if output.symlink_metadata().is_ok() {
        anyhow::bail!(
            "--output {}: the file exists, and snapshot never overwrites one; choose another \
             --output or remove the file",
            output.display()
        );
    }
    Ok(())
}

fn say(settings: &SnapshotSettings, msg: &str) {
    if !settings.quiet {
        eprintln!("{msg}");
    }
}

/// One snapshot past its preflight.
struct Run<'a> {
    settings: &'a SnapshotSettings,
    client: &'a SynapseClient,
    checked: &'a Preflight,
    retrier: Arc<Retrier>,
    throttle: Option<Throttle>,
    stop: &'a StopSignal,
}

type Users<'a> = Pin<Box<dyn Stream<Item = Wanted> + 'a>>;

impl Run<'_> {
    /// Reads every user into the file; returns the counts. The file's fate
    /// is the caller's.
    async fn all(
        &self,
        input: Option<Input>,
        file: &FileTask,
        mut signals: Signals,
    ) -> anyhow::Result<SnapshotCounts> {
        let pacer = Pacer {
            retrier: &self.retrier,
            throttle: self.throttle.as_ref(),
        };
        let (users, total): (Users<'_>, Option<u64>) = match input {
            Some(input) => {
                let total = count_rows(input.source(), input.layout().has_header);
                let server_name = self.checked.server_name.clone();
                (Box::pin(users::from_input(input, server_name)), total)
            }
            None => {
                let first = tokio::select! {
                    biased;
                    _ = signals.recv() => {
                        self.stop.halt(Stop::Interrupted);
                        return Ok(SnapshotCounts::default());
                    }
                    first = users::first_page(self.client, &pacer) => first,
                };
                match first {
                    Ok(page) => {
                        let total = page.total;
                        (
                            Box::pin(users::from_server(self.client, &pacer, page)),
                            total,
                        )
                    }
                    Err(CallError::Row(e)) => {
                        self.stop.stop_run(format!(
                            "cannot list the active users (GET /_synapse/admin/v3/users): {e}"
                        ));
                        return Ok(SnapshotCounts::default());
                    }
                    Err(CallError::Stopped) => return Ok(SnapshotCounts::default()),
                }
            }
        };
        let progress = Progress::new(
            self.settings.quiet,
            self.settings.show_progress,
            !self.settings.server.verbose,
            total,
        );
        let mut sink = Sink {
            counts: SnapshotCounts::default(),
            progress,
            stop: self.stop,
        };
        let acting = Acting {
            pacer: &pacer,
            admin: UserId::parse(&self.checked.admin).context("the admin's user ID")?,
            admin_auth: bearer(&self.settings.server.token)?,
            file,
        };
        match &self.checked.mode {
            Mode::Synapse => {
                let accounts = SynapseAccounts::new(self.client.clone(), self.retrier.clone());
                let reader = acting.reader(self.client, &accounts, None);
                self.drive(users, &reader, &mut sink, &mut signals).await;
            }
            Mode::Mas(mas) => {
                let accounts =
                    MasAccounts::new(self.client.clone(), mas.clone(), self.retrier.clone());
                let reader = acting.reader(self.client, &accounts, Some(mas));
                self.drive(users, &reader, &mut sink, &mut signals).await;
            }
        }
        sink.progress.finish();
        Ok(sink.counts)
    }

    /// Reads the users as they come, at most `--concurrency` at once, until
    /// the list ends or the run stops. After a stop, the users in flight get
    /// a few seconds to end the tokens they made.
    async fn drive<A: Accounts>(
        &self,
        users: Users<'_>,
        reader: &Reader<'_, A>,
        sink: &mut Sink<'_>,
        signals: &mut Signals,
    ) {
        let stop = self.stop;
        let outcomes = users
            .take_while(|_| std::future::ready(!stop.is_stopped()))
            .map(|wanted| async move {
                match wanted {
                    Wanted::User(user) => Step::Read(reader.read(user).await),
                    other => Step::Listed(other),
                }
            })
            .buffer_unordered(self.settings.concurrency);
        tokio::pin!(outcomes);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = signals.recv() => stop.halt(Stop::Interrupted),
                _ = stop.stopped() => {}
                step = outcomes.next() => match step {
                    Some(step) => sink.take(step),
                    None => return,
                },
                _ = ticker.tick() => {
                    let counts = &sink.counts;
                    sink.progress.tick_with(self.retrier.outage(), || counts.brief());
                }
            }
            if stop.is_stopped() {
                break;
            }
        }
        // Nothing new starts now; let those in flight end their tokens.
        let wind_down = async {
            while let Some(step) = outcomes.next().await {
                sink.take(step);
            }
        };
        let _ = tokio::time::timeout(WIND_DOWN, wind_down).await;
    }
}

/// What every reader shares: the pace, the admin, the file.
struct Acting<'a> {
    pacer: &'a Pacer<'a>,
    admin: UserId,
    admin_auth: reqwest::header::HeaderValue,
    file: &'a FileTask,
}

impl<'a> Acting<'a> {
    fn reader<A: Accounts>(
        &'a self,
        client: &'a SynapseClient,
        accounts: &'a A,
        mas: Option<&'a Arc<MasClient>>,
    ) -> Reader<'a, A> {
        Reader {
            client,
            accounts,
            mas: mas.map(|m| m.as_ref()),
            pacer: self.pacer,
            admin: &self.admin,
            admin_auth: &self.admin_auth,
            file: self.file.sender(),
        }
    }
}

/// One step of the drive: a user read, or an entry of the list that names
/// no user to read.
enum Step {
    Read(Outcome),
    Listed(Wanted),
}

/// The one consumer: the counts and the progress display.
struct Sink<'a> {
    counts: SnapshotCounts,
    progress: Progress,
    stop: &'a StopSignal,
}

impl Sink<'_> {
    fn take(&mut self, step: Step) {
        match step {
            Step::Read(Outcome::Stopped) | Step::Listed(Wanted::Stopped) => return,
            Step::Read(outcome) => self.counts.take(outcome),
            Step::Listed(Wanted::Skip { who, why }) => self.counts.skip(who, why),
            Step::Listed(Wanted::Broke(reason)) => {
                self.stop.stop_run(reason);
                return;
            }
            // Never sent: users are read, and come back as outcomes.
            Step::Listed(Wanted::User(_)) => return,
        }
        let counts = &self.counts;
        self.progress.step(false, || counts.brief());
    }
}
