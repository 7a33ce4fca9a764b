//! The run's loop: feed users from the input to the workers, collect their
//! outcomes into the sink, and stop cleanly on Ctrl-C, SIGTERM or a fatal
//! error. At most as many users are in flight as the pacer allows (the fixed
//! `--concurrency`, or what `--rate auto` holds now); the input is read on a
//! thread of its own, a bounded channel ahead.

use std::time::Duration;

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::resume::Earlier;
use super::sink::Sink;
use crate::backend::Accounts;
use crate::input::{Input, InputRow};
use crate::pace::Pacer;
use crate::pipeline::Worker;
use crate::stop::{Stop, StopSignal};
use crate::user_set::SEEN;

/// What the reader thread hands the loop, one item per non-empty input line.
pub enum Feed {
    User(InputRow),
    /// A user already listed earlier in the input.
    Duplicate,
    /// A line whose row an earlier, interrupted run already wrote.
    Earlier,
    /// The input became unreadable.
    Broken(anyhow::Error),
}

/// Starts the reader thread: it parses lines, removes duplicates, and skips
/// what an earlier run already recorded.
pub fn read_input(
    input: Input,
    server_name: String,
    earlier: Earlier,
) -> anyhow::Result<(mpsc::Receiver<Feed>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Feed>(1024);
    let reader = std::thread::Builder::new()
        .name("input".into())
        .spawn(move || feed(input, &server_name, earlier, tx))
        .context("cannot start the input reader")?;
    Ok((rx, reader))
}

fn feed(mut input: Input, server_name: &str, earlier: Earlier, tx: mpsc::Sender<Feed>) {
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

/// Runs users through the worker until the input ends or the run stops, and
/// every user in flight has finished.
pub async fn drive<A: Accounts>(
    worker: &Worker<'_, A>,
    sink: &mut Sink<'_>,
    mut feed: mpsc::Receiver<Feed>,
    stop: &StopSignal,
    pacer: &mut Pacer<'_>,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut in_flight = FuturesUnordered::new();
    let mut input_done = false;

    loop {
        let stopping = stop.is_stopped();
        if (input_done || stopping) && in_flight.is_empty() {
            return Ok(());
        }
        let room = in_flight.len() < pacer.at_once();
        tokio::select! {
            biased;
            _ = sigint.recv() => {
                if stopping { sink.exit_now() }
                stop.halt(Stop::Interrupted);
                sink.progress.println(&format!(
                    "Interrupted: finishing {} request(s) in flight (Ctrl-C again to quit at once; \
                     no password is lost either way)",
                    in_flight.len()
                ));
            }
            _ = sigterm.recv() => {
                if stopping { sink.exit_now() }
                stop.halt(Stop::Interrupted);
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => sink.done(done),
            item = feed.recv(), if !input_done && !stopping && room => {
                match item {
                    None => input_done = true,
                    Some(Feed::User(row)) => {
                        in_flight.push(worker.process(row));
                        if in_flight.len() >= pacer.at_once() {
                            pacer.full();
                        }
                    }
                    Some(Feed::Duplicate) => sink.duplicate(),
                    Some(Feed::Earlier) => sink.progress.advance(&sink.counts, true),
                    Some(Feed::Broken(e)) => stop.stop_run(format!("{e:#}")),
                }
            }
            _ = stop.stopped(), if !stopping => {}
            line = pacer.next() => {
                if let Some(line) = line {
                    sink.progress.println(&line);
                }
            }
            _ = ticker.tick() => {
                sink.progress.set_pace(pacer.brief());
                sink.progress.tick(&sink.counts, worker.shared.retrier.outage());
            }
        }
    }
}
