//! A Synapse database backup (SQLite or PostgreSQL), opened read-only.

use std::path::Path;

use super::{BackupSession, BeforeImage, SessionCursor, Source};
use crate::user_id::UserId;

/// Whether `path` is a snapshot file (as opposed to a Synapse database).

/// A snapshot file, open for reading one user at a time.
pub struct SynapseDb {}

impl SynapseDb {
    pub fn open_sqlite(_path: &Path) -> anyhow::Result<Self> {
        todo!("SynapseDb::open")
    }
}

impl Source for SynapseDb {
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

impl SynapseDb {
    pub fn open_postgres(_url: &str) -> anyhow::Result<Self> {
        todo!("open_postgres")
    }
}
