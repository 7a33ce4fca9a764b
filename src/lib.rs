//! matrix-reactivate: bulk reactivation of deactivated Synapse accounts.
//!
//! Modules, from the top down (no module reaches back up):
//! - `run`: one run, open → preflight → resume → drive → finish;
//! - `find`: the list of who to restore, read from the server (GET only);
//! - `snapshot`: the before-image of users, read from the server into a file;
//! - `pipeline`: what happens to each user (`decide` plans, the rest executes);
//! - `backend`: the account operations, on Synapse (and beside it, MAS);
//! - `pace`: how fast the run goes, fixed or `--rate auto` (a controller fed
//!   by a probe and by what the requests meet, setting the throttle);
//! - `retry`, `throttle`, `stop`: the policy every request goes through;
//! - `http`: one JSON request, typed errors;
//! - `report`, `journal`, `fsio`, `progress`, `input`, `user_id`, `user_set`,
//!   `password`: the records, the input and the values the run works with;
//! - `cli`, `config`: the command line, then validated settings; `generate`:
//!   completion scripts and the man page from the same definition;
//! - `seal`: passwords sealed to the help desk's age key (`--encrypt-to`), and
//!   `decrypt`, the command that opens them.

pub mod backend;
pub mod cli;
pub mod config;
pub mod decrypt;
pub mod find;
pub mod fsio;
pub mod generate;
pub mod http;
pub mod input;
pub mod journal;
pub mod pace;
pub mod password;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod retry;
pub mod run;
pub mod seal;
pub mod snapshot;
pub mod source;
pub mod stop;
pub mod throttle;
pub mod user_id;
pub mod user_set;

pub use run::resume::resume_command;
pub use run::run;
