//! The password of one reactivation, from where it comes from to the request
//! that sets it: drawn (or taken from the input, or from a journal in clear),
//! sealed to the help desk's recipients when `--encrypt-to` asks for it,
//! journaled (fsynced) in the form it is recorded in, and only then handed to
//! the request.
//!
//! The clear text lives in `Outgoing`, whose memory is wiped when it is
//! dropped; the pipeline drops it as soon as the request that sets the password
//! has its answer. It never goes into a row, the journal, a message or a log:
//! those get `Outgoing::into_recorded`, the sealed text when sealing is on.
//!
//! Sealing costs about 0.1 ms of CPU per password and recipient: it runs on
//! tokio's blocking pool, never on the task that drives every request of the
//! run (all users in flight are polled there, so a seal on it would hold them
//! all up).
//!
//! With a sealed journal, `--resume` cannot send a journaled password again
//! (the tool holds no private key). `settle` is what makes a new one safe: see
//! its comment.

use std::sync::Arc;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::decide::PasswordSource;
use super::{Job, Worker};
use crate::backend::Accounts;
use crate::seal::Sealer;

/// A password on its way to the server.
pub struct Outgoing {
    /// Wiped when dropped.
    clear: Zeroizing<String>,
    /// What the journal and the results hold: the sealed text, or the
    /// password itself when sealing is off.
    recorded: String,
}

impl Outgoing {
    /// The password, for the request that sets it.
    pub fn clear(&self) -> &str {
        &self.clear
    }

    /// Ends the clear password's life (its memory is wiped) and keeps what
    /// the results record.
    pub fn into_recorded(self) -> String {
        self.recorded
    }
}

impl<A: Accounts> Worker<'_, A> {
    /// The password to set, journaled (fsynced) before it is sent.
    /// Err(()) when the run had to stop.
    pub(super) async fn password(
        &self,
        job: &Job,
        source: PasswordSource,
    ) -> Result<Option<Outgoing>, ()> {
        let clear = match source {
            // A journal in clear: the same password again, already journaled.
            PasswordSource::Journaled(p) => {
                let clear = Zeroizing::new(p);
                let recorded = clear.to_string();
                return Ok(Some(Outgoing { clear, recorded }));
            }
            PasswordSource::None => return Ok(None),
            PasswordSource::FromInput(p) => Zeroizing::new(p),
            PasswordSource::Generate { length } => match crate::password::generate(length) {
                Ok(p) => Zeroizing::new(p),
                Err(e) => {
                    self.stop().stop_run(format!("{e:#}"));
                    return Err(());
                }
            },
        };
        let outgoing = match self.shared.sealer {
            None => {
                let recorded = clear.to_string();
                Outgoing { clear, recorded }
            }
            Some(sealer) => match seal_off_thread(sealer, clear).await {
                Ok(o) => o,
                Err(e) => {
                    self.stop().stop_run(e);
                    return Err(());
                }
            },
        };
        if let Some(journal) = self.shared.journal {
            if let Err(e) = journal.record(job.user.as_str(), &outgoing.recorded).await {
                self.stop().stop_run(format!(
                    "cannot write the password journal {} ({e}); no password was sent \
                     without being saved. Free space or fix the folder, then run again with --resume",
                    journal.path().display()
                ));
                return Err(());
            }
        }
        Ok(Some(outgoing))
    }

    /// Waits, before a user that a sealed journal names is looked up, until
    /// the interrupted run has been silent for `--timeout`; false if the run
    /// stopped meanwhile.
    ///
    /// Why: such a user may be the subject of a request the interrupted run
    /// sent just before it died. If the account is still deactivated when it
    /// is looked up, it gets a new password (the journaled one is sealed and
    /// cannot be sent again); were the old request still being processed by
    /// the server, it could land after the new one and leave the account with
    /// the old password while the results give the new. Waiting until the
    /// earlier run's last write is `--timeout` old lets that request be
    /// answered or abandoned first, as the earlier run itself would have
    /// judged it. A resume started later than that (the usual case) waits not
    /// at all.
    pub(super) async fn settle(&self) -> bool {
        let Some(until) = self.shared.options.settle_until else {
            return true;
        };
        let Ok(wait) = until.duration_since(SystemTime::now()) else {
            return true;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.stop().stopped() => false,
        }
    }
}

/// Seals on tokio's blocking pool. The clear password moves there and back,
/// so it is never copied.
async fn seal_off_thread(
    sealer: &Arc<Sealer>,
    clear: Zeroizing<String>,
) -> Result<Outgoing, String> {
    let sealer = Arc::clone(sealer);
    let (clear, sealed) = tokio::task::spawn_blocking(move || {
        let sealed = sealer.seal(&clear);
        (clear, sealed)
    })
    .await
    .map_err(|e| format!("sealing a password failed: {e}"))?;
    Ok(Outgoing {
        clear,
        recorded: sealed?,
    })
}
