//! One run, in five steps: open the input and the results file, preflight the
//! server, read what an earlier run left (`--resume`), drive every user
//! through the pipeline, and finish with the summary and the exit code.

pub mod drive;
pub mod preflight;
pub mod resume;
pub mod sink;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context};

use crate::backend::mas::MasAccounts;
use crate::backend::synapse::{SynapseAccounts, SynapseClient};
use crate::backend::Accounts;
use crate::config::{Passwords, Settings};
use crate::fsio;
use crate::input::{self, Input};
use crate::journal::{self, Journal};
use crate::pace;
use crate::pace::probe::Probe;
use crate::pace::{Controller, Limits, Meter, PaceReport, Pacer, Pacing, Seen};
use crate::pipeline::{Caches, Options, Shared, Worker};
use crate::progress::Progress;
use crate::report::json::{summary_json, RunFacts};
use crate::report::results::Results;
use crate::report::summary::{self, Ending, SummaryInput};
use crate::report::Counts;
use crate::retry::Retrier;
use crate::source::{Source, SourceSpec};
use crate::stop::{Stop, StopSignal};
use crate::throttle::Throttle;
use preflight::{Mode, Preflight};
use resume::Earlier;
use sink::Sink;

/// Runs the tool. `resume_command` is shown when the run stops early.
/// Returns the exit code of a run that got as far as the preflight; errors
/// before that are returned as errors.
pub async fn run(settings: Settings, resume_command: &str) -> anyhow::Result<i32> {
    let started = Instant::now();
    let opened = open(&settings)?;
    let client = settings.server.client(settings.concurrency)?;
    let needs = preflight::Needs {
        server: &settings.server,
        pool: settings.concurrency,
        server_name: settings.server_name.as_deref(),
        memberships: settings.rejoin_rooms_since.is_some().then_some((
            "--rejoin-rooms",
            "Give each user's rooms in the input with --rooms-column instead",
        )),
        no_password: settings.passwords == Passwords::None,
        purpose: "reactivating",
    };
    let preflight = match preflight::check(&client, &needs).await {
        Ok(p) => p,
        Err(e) => {
            opened.discard();
            return Err(e);
        }
    };
    say(&settings, &preflight.describe(&settings.server.homeserver));
    let (meter, auto) = match start_auto(&settings).await {
        Ok(started) => started,
        Err(e) => {
            opened.discard();
            return Err(e);
        }
    };
    let source = match &settings.restore_from {
        None => None,
        Some(spec) => match open_source(spec, &preflight.server_name).await {
            Ok(source) => {
                say(
                    &settings,
                    &format!(
                        "Giving back what deactivation deleted from {}",
                        source.describe()
                    ),
                );
                Some(source)
            }
            Err(e) => {
                opened.discard();
                return Err(e);
            }
        },
    };
    let resumed = resume(&settings, opened, &preflight.server_name)?;
    let stop = Arc::new(StopSignal::new());
    let retrier =
        Arc::new(Retrier::new(settings.server.retry.clone(), stop.clone()).metered(meter));
    let (ending, results, counts, pace) = match &preflight.mode {
        Mode::Synapse => {
            let accounts = SynapseAccounts::new(client.clone(), retrier.clone());
            let run = Drive {
                settings: &settings,
                client: &client,
                preflight: &preflight,
                retrier: &retrier,
                source,
                auto,
            };
            run.users(resumed, &accounts).await?
        }
        Mode::Mas(mas) => {
            let accounts = MasAccounts::new(client.clone(), mas.clone(), retrier.clone());
            let run = Drive {
                settings: &settings,
                client: &client,
                preflight: &preflight,
                retrier: &retrier,
                source,
                auto,
            };
            run.users(resumed, &accounts).await?
        }
    };
    let mas = matches!(preflight.mode, Mode::Mas(_));
    let run = Ran {
        ending,
        counts,
        started,
        mas,
        pace,
    };
    finish(&settings, run, results, resume_command)
}

/// With `--rate auto`: the meter the run's requests report to, and the
/// probe with its idle answer time, measured now, before any user is
/// touched. A fixed pace gets a meter that sends nothing.
async fn start_auto(settings: &Settings) -> anyhow::Result<(Meter, Option<AutoStart>)> {
    let Pacing::Auto {
        max_rate,
        max_slowdown,
    } = settings.pacing
    else {
        return Ok((Meter::default(), None));
    };
    // A client of its own: the probe stands for other users, not in the
    // run's queue; never in the --verbose lines.
    let probe = Probe::new(settings.server.client(1)?.verbose(false).http().clone());
    let idle = probe.idle().await?;
    let limits = Limits {
        ceiling: settings.concurrency,
        max_rate,
        max_slowdown,
    };
    let budget = Controller::new(limits.clone(), idle).budget();
    say(
        settings,
        &format!(
            "Pace: auto, up to {} at once{}; the server answers in {:.1} ms idle, and the run \
             keeps it under {:.1} ms (--max-slowdown {max_slowdown})",
            settings.concurrency,
            max_rate.map_or(String::new(), |r| format!(" and {r}/s")),
            pace::ms(idle),
            pace::ms(budget),
        ),
    );
    let (meter, seen) = Meter::channel();
    Ok((
        meter,
        Some(AutoStart {
            limits,
            probe,
            idle,
            seen,
        }),
    ))
}

/// What `--rate auto` starts from.
struct AutoStart {
    limits: Limits,
    probe: Probe,
    idle: std::time::Duration,
    seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
}

/// How the users' part of a run went.
struct Ran {
    ending: Ending,
    counts: Counts,
    started: Instant,
    mas: bool,
    pace: Option<PaceReport>,
}

fn say(settings: &Settings, msg: &str) {
    if !settings.quiet {
        eprintln!("{msg}");
    }
}

/// The input and the results file, opened before any request is sent.
struct Opened {
    input: Input,
    /// `None` when resuming into an existing results file (read once the
    /// server name is known).
    created: Option<Results>,
    output: PathBuf,
    journal_path: PathBuf,
    /// When the interrupted run last wrote to its journal or results
    /// (`--resume` only), read before this run writes to either.
    last_write: Option<SystemTime>,
}

impl Opened {
    /// Nothing was done: leave no empty results file to trip the next run.
    fn discard(self) {
        if self.created.is_some() {
            let _ = std::fs::remove_file(&self.output);
        }
    }
}

fn open(settings: &Settings) -> anyhow::Result<Opened> {
    let input = Input::open(settings.source.clone(), &settings.columns)?;
    let out = &settings.output;
    let journal_path = journal::path_for(out);
    let outputs = [
        Some(("--output", out)),
        settings
            .summary_json
            .as_ref()
            .map(|p| ("--summary-json", p)),
    ];
    for (flag, path) in outputs.into_iter().flatten() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                bail!(
                    "{flag} {}: the folder {} does not exist",
                    path.display(),
                    parent.display()
                );
            }
        }
    }
    let last_write = if settings.resume {
        // Before the preflight, and before either file is written to.
        resume::check_sealing(&journal_path, out, None, &settings.sealing())?;
        resume::last_write(&journal_path, out)
    } else {
        None
    };
    let created = if settings.resume && out.exists() {
        None
    } else {
        if !settings.resume && journal_path.exists() {
            bail!(
                "a journal of an interrupted run exists at {}: it may hold passwords already \
                 set. Finish that run with --resume and --output {}",
                journal_path.display(),
                out.display()
            );
        }
        Some(Results::create(out)?)
    };
    Ok(Opened {
        input,
        created,
        output: out.clone(),
        journal_path,
        last_write,
    })
}

/// What the run starts from: the results file, and what an earlier run left.
struct Resumed {
    input: Input,
    results: Results,
    earlier: Earlier,
    earlier_passwords: HashMap<String, String>,
    journal_path: PathBuf,
    /// See `pipeline::Options::settle_until`.
    settle_until: Option<SystemTime>,
}

fn resume(settings: &Settings, opened: Opened, server_name: &str) -> anyhow::Result<Resumed> {
    let (results, earlier) = match opened.created {
        Some(results) => (results, Earlier::none(server_name)),
        None => resume::reopen_results(&opened.output, server_name, settings.dry_run)?,
    };
    if settings.resume {
        let now = settings.sealing();
        resume::check_sealing(&opened.journal_path, &opened.output, Some(&earlier), &now)?;
    }
    // A journal is read even when the results file is gone: it may hold
    // passwords already set.
    let earlier_passwords = if settings.resume {
        resume::journaled_passwords(&opened.journal_path, &earlier)?
    } else {
        HashMap::new()
    };
    let settle_until = match &settings.sealer {
        Some(_) if !earlier_passwords.is_empty() => {
            resume::settle_until(opened.last_write, settings.server.timeout)
        }
        _ => None,
    };
    if settings.resume && (earlier.counts.rows() > 0 || !earlier_passwords.is_empty()) {
        say(
            settings,
            &format!(
                "Resuming: {} rows already in {}, {} journaled password(s) to check again",
                earlier.counts.rows(),
                settings.output.display(),
                earlier_passwords.len()
            ),
        );
    }
    if let Some(wait) = settle_until.and_then(|u| u.duration_since(SystemTime::now()).ok()) {
        say(
            settings,
            &format!(
                "The interrupted run wrote {:.0} s ago: its journaled users wait until it has \
                 been silent for --timeout ({:.0} s more), so that none of its requests can \
                 land after theirs",
                (settings.server.timeout.saturating_sub(wait)).as_secs_f64(),
                wait.as_secs_f64()
            ),
        );
    }
    Ok(Resumed {
        input: opened.input,
        results,
        earlier,
        earlier_passwords,
        journal_path: opened.journal_path,
        settle_until,
    })
}

/// Opens `--restore-from` (on the blocking pool: a database connection) and
/// checks that its users are this server's, before any user is touched.
async fn open_source(spec: &SourceSpec, server_name: &str) -> anyhow::Result<Arc<dyn Source>> {
    let spec = spec.clone();
    let source = tokio::task::spawn_blocking(move || crate::source::open(&spec))
        .await
        .context("the source reader failed")??;
    if source.server_name() != server_name {
        bail!(
            "--restore-from {}: its users are of {}, not of {server_name} (the server of this token): give the backup or snapshot of {server_name}",
            source.describe(),
            source.server_name()
        );
    }
    Ok(Arc::from(source))
}

/// What driving the users needs from the run.
struct Drive<'a> {
    settings: &'a Settings,
    client: &'a SynapseClient,
    preflight: &'a Preflight,
    retrier: &'a Retrier,
    source: Option<Arc<dyn Source>>,
    auto: Option<AutoStart>,
}

impl Drive<'_> {
    /// Streams every user through the pipeline; returns how the run ended.
    async fn users<A: Accounts>(
        self,
        resumed: Resumed,
        accounts: &A,
    ) -> anyhow::Result<(Ending, Results, Counts, Option<PaceReport>)> {
        let Drive {
            settings,
            client,
            preflight,
            retrier,
            source,
            auto,
        } = self;
        let Resumed {
            input,
            results,
            earlier,
            earlier_passwords,
            journal_path,
            settle_until,
        } = resumed;
        let total = input::count_rows(input.source(), input.layout().has_header);
        let mut counts = earlier.counts.clone();
        counts.resumed = earlier.counts.rows();
        let (feed, reader) = drive::read_input(input, preflight.server_name.clone(), earlier)?;

        let journal = if settings.dry_run {
            None
        } else {
            Some(Journal::open(&journal_path, &settings.sealing())?)
        };
        let stop = retrier.stop_signal();
        let throttle = match &auto {
            None => Throttle::new(settings.pacing.fixed_rate(), settings.burst),
            Some(_) => Some(Throttle::adjustable(settings.burst)),
        };
        let options = Options {
            server_name: preflight.server_name.clone(),
            admin: preflight.admin.clone(),
            dry_run: settings.dry_run,
            include_erased: settings.include_erased,
            unlock: settings.unlock,
            passwords: settings.passwords.clone(),
            rejoin_since: settings.rejoin_rooms_since,
            settle_until,
        };
        let worker = Worker {
            shared: Shared {
                accounts,
                synapse: client,
                retrier,
                throttle: throttle.as_ref(),
                journal: journal.as_ref(),
                sealer: settings.sealer.as_ref(),
                source,
                options: &options,
            },
            caches: Caches {
                earlier_passwords,
                ..Caches::default()
            },
        };
        // --verbose lines would break a bar: plain progress lines then.
        let progress = Progress::new(
            settings.quiet,
            settings.show_progress,
            !settings.server.verbose,
            total,
        );
        let mut sink = Sink::new(results, counts, progress, stop, &journal_path);
        let mut pacer = match (auto, throttle.as_ref()) {
            (Some(a), Some(throttle)) => {
                let verbose = settings.server.verbose;
                Pacer::auto(a.limits, a.probe, a.idle, throttle, a.seen, verbose)
            }
            _ => Pacer::Fixed(settings.concurrency),
        };
        drive::drive(&worker, &mut sink, feed, stop, &mut pacer).await?;
        let pace = pacer.report();
        let _ = reader.join();
        if let Some(j) = journal {
            j.close();
        }
        let ending = match stop.stop() {
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
        Ok((ending, sink.results, sink.counts, pace))
    }
}

/// Saves the results, removes the journal of a completed run, prints the
/// summary (and writes it as JSON if asked) and returns the exit code.
fn finish(
    settings: &Settings,
    run: Ran,
    mut results: Results,
    resume_command: &str,
) -> anyhow::Result<i32> {
    let Ran {
        ending,
        counts,
        started,
        mas,
        pace,
    } = run;
    results
        .sync()
        .with_context(|| format!("cannot save the results file {}", settings.output.display()))?;
    if ending == Ending::Complete {
        remove_journal(settings, &journal::path_for(&settings.output));
    }
    let input = SummaryInput {
        counts: &counts,
        ending: &ending,
        elapsed: started.elapsed(),
        results: results.path(),
        dry_run: settings.dry_run,
        resume_command,
        sets_passwords: settings.passwords != Passwords::None,
        mas,
        gives_back_rooms: settings.rejoin_rooms_since.is_some()
            || settings.columns.rooms.is_some()
            || settings.restore_from.is_some(),
    };
    if !settings.quiet {
        eprint!("{}", summary::summary(&input));
        if let Some(pace) = &pace {
            eprintln!("  {}", pace.summary_line());
        }
        if let Some(sealer) = settings.sealer.as_ref().filter(|_| !settings.dry_run) {
            eprintln!(
                "  The passwords are sealed with age to {} recipient(s): the help desk opens \
                 them with\n    matrix-reactivate decrypt {} -i KEY -o clear.csv",
                sealer.len(),
                resume::shell_quote(&settings.output.display().to_string())
            );
        }
    } else if let Ending::Fatal(reason) = &ending {
        eprintln!("error: {reason}");
    }
    let code = summary::exit_code(&ending, &counts);
    if let Some(path) = &settings.summary_json {
        let facts = RunFacts {
            homeserver: &settings.server.homeserver,
            // Who held the accounts' logins.
            mode: if mas { "mas" } else { "synapse" },
            pace: match &pace {
                Some(report) => report.json(),
                None => pace::fixed_json(&settings.pacing, settings.concurrency),
            },
        };
        let json = format!("{:#}\n", summary_json(&input, &facts));
        if let Err(e) = fsio::write_atomically(path, json.as_bytes()) {
            eprintln!(
                "error: --summary-json {}: cannot write it ({e})",
                path.display()
            );
            // A finished run must not let a runbook read an older summary as its own.
            if ending == Ending::Complete {
                return Ok(1);
            }
        }
    }
    Ok(code)
}

fn remove_journal(settings: &Settings, path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => say(
            settings,
            &format!(
                "warning: could not remove the journal {}: {e}",
                path.display()
            ),
        ),
    }
}
