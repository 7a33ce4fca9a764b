//! The one owner of the snapshot file: a thread of its own that takes what
//! the readers send down a bounded channel and writes it with
//! `SnapshotWriter` (SQLite: blocking, and not to be shared between threads).
//!
//! The channel is bounded, so readers that outrun the disk wait instead of
//! filling memory. A write that fails stops the snapshot (a partial file
//! would pass for a whole one); the file then never appears. The file
//! appears under its name only through `close(true)`: every other ending,
//! a panic included, removes the temporary file.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::source::snapshot::SnapshotWriter;
use crate::source::{BackupSession, BeforeImage};
use crate::stop::StopSignal;
use crate::user_id::UserId;

/// What a reader asks of the file.
#[derive(Debug)]
pub enum Op {
    /// A user's before-image (before their sessions).
    Image(UserId, Box<BeforeImage>),
    /// A batch of sessions of the user's newest backup.
    Sessions(UserId, Vec<BackupSession>),
    /// Takes out a user whose reading failed after something was sent.
    Remove(UserId),
    /// No more: the thread hands the writer back.
    End,
}

/// Ops waiting for the disk, at most.
const QUEUED: usize = 16;

pub type FileSender = mpsc::Sender<Op>;

pub struct FileTask {
    sender: FileSender,
    thread: JoinHandle<(SnapshotWriter, Option<String>)>,
}

impl FileTask {
    /// Starts the thread that owns `writer`; a write that fails stops the run
    /// through `stop`, naming the file.
    pub fn start(
        writer: SnapshotWriter,
        output: PathBuf,
        stop: Arc<StopSignal>,
    ) -> anyhow::Result<Self> {
        let (sender, receiver) = mpsc::channel(QUEUED);
        let thread = std::thread::Builder::new()
            .name("snapshot-file".into())
            .spawn(move || own(writer, receiver, &output, &stop))
            .context("cannot start the thread that writes the snapshot")?;
        Ok(FileTask { sender, thread })
    }

    pub fn sender(&self) -> FileSender {
        self.sender.clone()
    }

    /// Ends the writing: with `keep`, the file is made durable and moved
    /// into place (returns its path); otherwise it is removed.
    pub async fn close(self, keep: bool) -> anyhow::Result<Option<PathBuf>> {
        let FileTask { sender, thread } = self;
        // Fails only when the thread has ended already (a write failed).
        let _ = sender.send(Op::End).await;
        drop(sender);
        let joined = tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("the snapshot writer's thread was lost")?;
        let (writer, failed) = match joined {
            Ok(ended) => ended,
            // The writer was dropped while unwinding: its file is gone.
            Err(_) => anyhow::bail!("the thread that writes the snapshot panicked"),
        };
        if !keep || failed.is_some() {
            tokio::task::spawn_blocking(move || writer.discard())
                .await
                .context("the snapshot writer's thread was lost")?;
            return Ok(None);
        }
        let path = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .context("the snapshot writer's thread was lost")??;
        Ok(Some(path))
    }
}

/// The thread: applies each op in arrival order until `End` (or until every
/// sender is gone), or until a write fails.
fn own(
    mut writer: SnapshotWriter,
    mut receiver: mpsc::Receiver<Op>,
    output: &std::path::Path,
    stop: &StopSignal,
) -> (SnapshotWriter, Option<String>) {
    while let Some(op) = receiver.blocking_recv() {
        let done = match op {
            Op::End => break,
            Op::Image(user, image) => writer.add_user(&user, &image),
            Op::Sessions(user, sessions) => writer.add_sessions(&user, &sessions),
            Op::Remove(user) => writer.remove_user(&user),
        };
        if let Err(e) = done {
            let reason = format!("cannot write the snapshot {}: {e:#}", output.display());
            stop.stop_run(reason.clone());
            return (writer, Some(reason));
        }
    }
    (writer, None)
}
