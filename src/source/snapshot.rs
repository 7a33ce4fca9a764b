//! The file `matrix-reactivate snapshot` writes, and the reader of it.

use std::path::Path;

use super::{BackupSession, BeforeImage, SessionCursor, Source};
use crate::user_id::UserId;

/// Whether `path` is a snapshot file (as opposed to a Synapse database).
pub fn is_snapshot(_path: &Path) -> anyhow::Result<bool> {
    todo!("is_snapshot")
}

/// A snapshot file, open for reading one user at a time.
pub struct SnapshotReader {}

impl SnapshotReader {
    pub fn open(_path: &Path) -> anyhow::Result<Self> {
        todo!("SnapshotReader::open")
    }
}

impl Source for SnapshotReader {
    fn describe(&self) -> String {
        todo!()
    }
    fn server_name(&self) -> &str {
        todo!()
    }
    fn image(&self, _user: &UserId) -> anyhow::Result<Option<BeforeImage>> {
        todo!()
    }
    fn sessions(
        &self,
        _user: &UserId,
        _version: &str,
        _after: Option<&SessionCursor>,
        _limit: usize,
    ) -> anyhow::Result<Vec<BackupSession>> {
        todo!()
    }
}
