//! Helpers shared by the test modules: a work directory and the real binary
//! (`workdir`), a mock Synapse (`mock_synapse`), and the real Synapse of the
//! run (`real_synapse`).

pub mod mock_synapse;
pub mod real_synapse;
pub mod workdir;
