//! One integration-test binary: command-line behaviour, scenarios against a mock
//! admin API, and end-to-end runs against a real Synapse.
//!
//! Every test that needs the real Synapse has `real_synapse` in its name, so
//! `cargo test real_synapse` runs them alone and `cargo test -- --skip
//! real_synapse` runs everything else.

// matrix-sdk's futures (the e2ee test) nest deeper than the default limit.
#![recursion_limit = "256"]

mod cli;
mod e2ee;
mod faults;
mod find;
mod give_back;
mod input_props;
mod interrupt;
mod mas;
mod mas_double;
mod mock;
mod pace;
mod restore;
mod restore_from;
mod runbook;
mod seal;
mod snapshot;
mod support;
mod synapse;
