//! Helpers shared by the test modules: a work directory and the real binary
//! (`workdir`), a mock Synapse (`mock_synapse`) and a proxy that takes it
//! away and back (`outage_proxy`), the real Synapse of the run
//! (`real_synapse`), and a Matrix Authentication Service double (`mas`) with
//! a mock Synapse that follows it (`mas_world`); keys and the `age` command
//! for the sealing tests (`keys`).

// The MAS double offers more of MAS than every test uses.
#[allow(dead_code)]
pub mod keys;
pub mod mas;
pub mod mas_world;
pub mod mock_synapse;
pub mod outage_proxy;
pub mod real_synapse;
pub mod rich_account;
pub mod workdir;
