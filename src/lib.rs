//! matrix-reactivate: bulk reactivation of deactivated Synapse accounts.
//!
//! `run` drives one run: open the input and the results file, preflight the
//! server, then stream users through the pipeline. One consumer (the loop in
//! `run`) owns the results file, the counts and the progress display; workers
//! only return outcomes.

pub mod cli;
pub mod config;
pub mod input;
pub mod journal;
pub mod password;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod retry;
pub mod synapse;
pub mod throttle;
pub mod user_id;
pub mod user_set;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Passwords, Settings};
use crate::input::{Input, InputRow};
use crate::journal::Journal;
use crate::pipeline::{Done, Worker};
use crate::progress::Progress;
use crate::report::{Earlier, Ending, Results, SummaryInput};
use crate::retry::{AuthFailure, CallError, Pacer, Policy, Stop};
use crate::synapse::{ApiError, Client, ServerVersion};
use crate::user_id::UserId;
use crate::user_set::SEEN;

/// What the reader thread hands the consumer, one item per non-empty input line.
enum Feed {
    User(InputRow),
    /// A user already listed earlier in the input.
    Duplicate,
    /// A line whose row an earlier, interrupted run already wrote.
    Earlier,
    /// The input became unreadable.
    Broken(anyhow::Error),
}

/// The first Synapse version that reactivates without a password.
const NO_PASSWORD_SINCE: (u32, u32) = (1, 99);

/// Runs the tool. `resume_command` is shown when the run stops early.
/// Returns the exit code of a run that got as far as the preflight; errors
/// before that are returned as errors.
pub async fn run(settings: Settings, resume_command: &str) -> anyhow::Result<i32> {
    let started = Instant::now();
    let say = |msg: &str| {
        if !settings.quiet {
            eprintln!("{msg}");
        }
    };

    let input = Input::open(settings.source.clone(), &settings.columns)?;
    let journal_path = journal::path_for(&settings.output);
    let opening = open_results(&settings, &journal_path)?;
    let created = matches!(opening, Opening::New(_));

    let client = Client::new(
        &settings.homeserver,
        &settings.token,
        settings.timeout,
        settings.ca_cert.clone(),
        settings.concurrency,
    )?;
    let preflight = match preflight(&client, &settings).await {
        Ok(p) => p,
        Err(e) => {
            if created {
                // Nothing was done: leave no empty results file to trip the next run.
                let _ = std::fs::remove_file(&settings.output);
            }
            return Err(e);
        }
    };
    say(&format!(
        "Synapse {} at {} · admin {} · server name {}",
        preflight.version.text, settings.homeserver, preflight.admin, preflight.server_name
    ));
    let (results, earlier) = match opening {
        Opening::New(results) => (*results, Earlier::none(&preflight.server_name)),
        Opening::Resume => resume_results(&settings, &preflight.server_name)?,
    };
    // Passwords an interrupted run may have set: checked again, reused, never replaced.
    let mut earlier_passwords = if settings.resume {
        journal::read(&journal_path)?
    } else {
        HashMap::new()
    };
    earlier_passwords.retain(|user, _| !earlier.users.contains(user));
    if settings.resume && (earlier.counts.rows() > 0 || !earlier_passwords.is_empty()) {
        say(&format!(
            "Resuming: {} rows already in {}, {} journaled password(s) to check again",
            earlier.counts.rows(),
            settings.output.display(),
            earlier_passwords.len()
        ));
    }

    let total = input::count_rows(input.source(), input.layout().has_header);
    let mut counts = earlier.counts.clone();
    counts.resumed = earlier.counts.rows();
    let (feed_tx, mut feed) = mpsc::channel::<Feed>(1024);
    let server_name = preflight.server_name.clone();
    let reader = std::thread::Builder::new()
        .name("input".into())
        .spawn(move || read_input(input, &server_name, earlier, feed_tx))
        .context("cannot start the input reader")?;

    let journal = if settings.dry_run {
        None
    } else {
        Some(Journal::open(&journal_path)?)
    };
    let pacer = Pacer::new(settings.retry.clone());
    let throttle = throttle::Throttle::new(settings.rate, settings.burst);
    let worker = Worker {
        client: &client,
        pacer: &pacer,
        throttle: throttle.as_ref(),
        journal: journal.as_ref(),
        server_name: &preflight.server_name,
        admin: &preflight.admin,
        dry_run: settings.dry_run,
        include_erased: settings.include_erased,
        unlock: settings.unlock,
        passwords: &settings.passwords,
        rejoin_since: settings.rejoin_rooms_since,
        earlier_passwords: &earlier_passwords,
        rooms: Default::default(),
    };
    let mut sink = Sink {
        results,
        counts,
        progress: Progress::new(settings.quiet, settings.show_progress, total),
        pacer: &pacer,
        journal_path: &journal_path,
        unreached: Vec::new(),
    };

    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut in_flight = FuturesUnordered::new();
    let mut input_done = false;

    loop {
        let stopping = pacer.stop().is_some();
        if (input_done || stopping) && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = sigint.recv() => {
                if stopping { exit_now(&mut sink.results) }
                pacer.halt(Stop::Interrupted);
                sink.progress.println(&format!(
                    "Interrupted: finishing {} request(s) in flight (Ctrl-C again to quit at once; \
                     no password is lost either way)",
                    in_flight.len()
                ));
            }
            _ = sigterm.recv() => {
                if stopping { exit_now(&mut sink.results) }
                pacer.halt(Stop::Interrupted);
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => sink.done(done),
            item = feed.recv(), if !input_done && !stopping && in_flight.len() < settings.concurrency => {
                match item {
                    None => input_done = true,
                    Some(Feed::User(row)) => in_flight.push(worker.process(row)),
                    Some(Feed::Duplicate) => {
                        sink.counts.duplicates += 1;
                        sink.progress.advance(&sink.counts, false);
                    }
                    Some(Feed::Earlier) => sink.progress.advance(&sink.counts, true),
                    Some(Feed::Broken(e)) => pacer.stop_run(format!("{e:#}")),
                }
            }
            _ = pacer.stopped(), if !stopping => {}
            _ = ticker.tick() => sink.progress.tick(&sink.counts),
        }
    }
    drop(in_flight);
    drop(feed);
    let _ = reader.join();
    if let Some(j) = journal {
        j.close();
    }
    let ending = match pacer.stop() {
        Some(Stop::Fatal(reason)) => Ending::Fatal(reason),
        Some(Stop::Interrupted) => Ending::Interrupted,
        None => Ending::Complete,
    };
    if ending == Ending::Complete {
        // The server never came back for these, but the run went on to the end:
        // they are failures to report, not work to resume.
        sink.flush_unreached();
    }
    sink.progress.finish();
    let Sink {
        mut results,
        counts,
        ..
    } = sink;
    results
        .sync()
        .with_context(|| format!("cannot save the results file {}", settings.output.display()))?;

    if ending == Ending::Complete {
        match std::fs::remove_file(&journal_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => say(&format!(
                "warning: could not remove the journal {}: {e}",
                journal_path.display()
            )),
        }
    }
    if !settings.quiet {
        eprint!(
            "{}",
            report::summary(&SummaryInput {
                counts: &counts,
                ending: &ending,
                elapsed: started.elapsed(),
                results: results.path(),
                dry_run: settings.dry_run,
                resume_command,
            })
        );
    } else if let Ending::Fatal(reason) = &ending {
        eprintln!("error: {reason}");
    }
    Ok(report::exit_code(&ending, &counts))
}

/// The single owner of the results file, the counts and the progress display.
struct Sink<'a> {
    results: Results,
    counts: report::Counts,
    progress: Progress,
    pacer: &'a Pacer,
    journal_path: &'a Path,
    /// Rows that failed because the server could not be reached, held until
    /// it answers again (then written) or the run stops for the outage (then
    /// left for --resume rather than failed).
    unreached: Vec<report::ResultRow>,
}

impl Sink<'_> {
    fn done(&mut self, done: Done) {
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

    fn flush_unreached(&mut self) {
        for row in std::mem::take(&mut self.unreached) {
            self.write(&row);
        }
    }

    fn write(&mut self, row: &report::ResultRow) {
        match self.results.write(row) {
            Ok(()) => {
                self.counts.record(row);
                self.progress.advance(&self.counts, false);
            }
            Err(e) => self.pacer.stop_run(format!(
                "cannot write to the results file {} ({e}); every password sent is in the \
                 journal {}. Free space or fix the folder, then run again with --resume",
                self.results.path().display(),
                self.journal_path.display()
            )),
        }
    }
}

/// A second Ctrl-C: save what is written and leave. Passwords of requests still
/// in flight are in the fsynced journal, so `--resume` completes those users.
fn exit_now(results: &mut Results) -> ! {
    let _ = results.sync();
    eprintln!("\nStopped at once. Run again with --resume to finish.");
    std::process::exit(130)
}

/// The results file before the preflight: created for a new run, or found
/// for a resumed one (read once the server name is known).
enum Opening {
    New(Box<Results>),
    Resume,
}

fn open_results(settings: &Settings, journal_path: &Path) -> anyhow::Result<Opening> {
    let out = &settings.output;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "--output {}: the folder {} does not exist",
                out.display(),
                parent.display()
            );
        }
    }
    if settings.resume && out.exists() {
        return Ok(Opening::Resume);
    }
    if !settings.resume && journal_path.exists() {
        bail!(
            "a journal of an interrupted run exists at {}: it may hold passwords already set. \
             Finish that run with --resume and --output {}",
            journal_path.display(),
            out.display()
        );
    }
    Ok(Opening::New(Box::new(Results::create(out)?)))
}

/// Reads what an earlier run left, for `--resume`.
fn resume_results(settings: &Settings, server_name: &str) -> anyhow::Result<(Results, Earlier)> {
    let out = &settings.output;
    let (results, earlier) = Results::resume(out, server_name)?;
    if earlier.dry_run && !settings.dry_run {
        bail!(
            "{} holds the results of a --dry-run; a real run needs its own results file: \
             choose another --output",
            out.display()
        );
    }
    Ok((results, earlier))
}

struct Preflight {
    version: ServerVersion,
    admin: String,
    server_name: String,
}

/// Three requests before any user is touched: the server answers, the token is
/// valid, and its user is an admin.
async fn preflight(client: &Client, settings: &Settings) -> anyhow::Result<Preflight> {
    let url = client.base();
    let pacer = Pacer::new(Policy {
        attempts: settings.retry.attempts.min(3),
        ..settings.retry.clone()
    });
    let call_err = |e: CallError| match e {
        CallError::Row(e) => e,
        CallError::Stopped => {
            ApiError::Transport(pacer.fatal().unwrap_or_else(|| "stopped".into()))
        }
    };

    let version = pacer
        .call(AuthFailure::FailsRow, || client.server_version())
        .await
        .map_err(call_err)
        .map_err(|e| match e {
            ApiError::Http { status: 404, .. } => anyhow::anyhow!(
                "{url} answered 404 for /_synapse/admin/v1/server_version: is it a Synapse \
                 server, and does its reverse proxy forward /_synapse/admin?"
            ),
            e => anyhow::anyhow!("cannot reach the homeserver at {url}: {e}"),
        })?;

    let me = pacer
        .call(AuthFailure::FailsRow, || client.whoami())
        .await
        .map_err(call_err)
        .map_err(|e| match e.status() {
            Some(401) => anyhow::anyhow!(
                "{url} rejected the access token ({e}): check MATRIX_ADMIN_TOKEN or --token-file"
            ),
            _ => anyhow::anyhow!("cannot check the access token at {url}: {e}"),
        })?;
    let me_id = UserId::parse(&me)
        .map_err(|e| anyhow::anyhow!("the server says the token belongs to {me:?}: {e}"))?;

    let not_admin = || {
        anyhow::anyhow!(
            "the access token belongs to {me}, who is not a server admin on {url}; use an \
             admin's token (make one an admin with the admin API or `register_new_matrix_user --admin`)"
        )
    };
    match pacer
        .call(AuthFailure::FailsRow, || client.is_admin(&me_id))
        .await
        .map_err(call_err)
    {
        Ok(true) => {}
        Ok(false) => return Err(not_admin()),
        Err(e) if e.status() == Some(403) => return Err(not_admin()),
        Err(e) => bail!("cannot check that {me} is an admin on {url}: {e}"),
    }

    if settings.rejoin_rooms_since.is_some() {
        // One more request, only with --rejoin-rooms: does the server list a
        // user's past rooms at all?
        match pacer
            .call(AuthFailure::FailsRow, || client.memberships(&me_id))
            .await
            .map_err(call_err)
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) || e.status() == Some(400) => bail!(
                "--rejoin-rooms: Synapse {} at {url} cannot list the rooms a user left \
                 (GET /_synapse/admin/v1/users/…/memberships answered {e}; it needs Synapse \
                 1.145 or later). Give each user's rooms in the input with --rooms-column instead",
                version.text
            ),
            Err(e) => bail!("--rejoin-rooms: cannot list {me}'s rooms on {url}: {e}"),
        }
    }
    if settings.passwords == Passwords::None
        && version.is_older_than(NO_PASSWORD_SINCE.0, NO_PASSWORD_SINCE.1)
    {
        bail!(
            "--no-password: Synapse {} requires a password to reactivate a user (1.99 and later \
             do not); drop --no-password to set generated passwords",
            version.text
        );
    }
    Ok(Preflight {
        version,
        server_name: settings
            .server_name
            .clone()
            .unwrap_or_else(|| me_id.server_name().to_owned()),
        admin: me,
    })
}

/// The reader thread: parses lines, removes duplicates, and skips what an
/// earlier run already recorded. Sends one item per non-empty line.
fn read_input(mut input: Input, server_name: &str, earlier: Earlier, tx: mpsc::Sender<Feed>) {
    let Earlier {
        users: mut seen,
        invalid_lines: done_invalid,
        ..
    } = earlier;
    loop {
        let item = match input.next_row(server_name) {
            Ok(None) => return,
            Ok(Some(row)) => match &row.user {
                Err(_) if done_invalid.contains(&row.line) => Feed::Earlier,
                Err(_) => Feed::User(row),
                Ok(id) => match seen.visit(id.as_str(), SEEN) {
                    None => Feed::User(row),
                    Some(flags) if flags & SEEN != 0 => Feed::Duplicate,
                    Some(_) => Feed::Earlier,
                },
            },
            Err(e) => Feed::Broken(e),
        };
        let broken = matches!(item, Feed::Broken(_));
        if tx.blocking_send(item).is_err() || broken {
            return;
        }
    }
}

/// The command line to continue this run: the same arguments plus `--resume`.
pub fn resume_command(args: &[String]) -> String {
    let mut parts: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    if !args.iter().any(|a| a == "--resume") {
        parts.push("--resume".into());
    }
    parts.join(" ")
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_command_quotes_and_adds_the_flag() {
        let args: Vec<String> = [
            "matrix-reactivate",
            "my users.csv",
            "-o",
            "out.csv",
            "--column",
            "it's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            resume_command(&args),
            r"matrix-reactivate 'my users.csv' -o out.csv --column 'it'\''s' --resume"
        );
        let args: Vec<String> = ["m", "in.csv", "--resume"].map(String::from).to_vec();
        assert_eq!(resume_command(&args), "m in.csv --resume");
    }
}
