//! One integration-test binary: command-line behaviour, scenarios against a mock
//! admin API, and end-to-end runs against a real Synapse.

mod cli;
mod faults;
mod input_props;
mod interrupt;
mod mock;
mod restore;
mod synapse;
mod util;
