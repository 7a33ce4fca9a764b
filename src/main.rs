//! The binary: parse arguments, run, print the error chain, exit with the code.

use std::future::Future;
use std::io::Write;

use clap::Parser;

use matrix_reactivate::cli::{Cli, Command, Generate};
use matrix_reactivate::config::{EnvSecrets, FindSettings, Settings, SnapshotSettings, UsageError};
use matrix_reactivate::decrypt::DecryptSettings;

fn main() {
    let cli = Cli::parse();
    if let Some(kind) = cli.generate {
        std::process::exit(generate(kind));
    }
    let env = EnvSecrets::from_env();
    let code = match cli.command {
        Some(Command::Find(args)) => match FindSettings::from_args(args, env) {
            Err(e) => report(&e, FIND_HELP),
            Ok(settings) => {
                warn(settings.quiet, &settings.warnings);
                block_on(matrix_reactivate::find::find(settings), FIND_HELP)
            }
        },
        Some(Command::Snapshot(args)) => match SnapshotSettings::from_args(args, env) {
            Err(e) => report(&e, SNAPSHOT_HELP),
            Ok(settings) => {
                warn(settings.quiet, &settings.warnings);
                block_on(
                    matrix_reactivate::snapshot::snapshot(settings),
                    SNAPSHOT_HELP,
                )
            }
        },
        Some(Command::Decrypt(args)) => match DecryptSettings::from_args(args) {
            Err(e) => report(&e, DECRYPT_HELP),
            Ok(settings) => block_on(matrix_reactivate::decrypt::decrypt(settings), DECRYPT_HELP),
        },
        None => {
            // Lossy, never `env::args()`: that panics on a file name that is not UTF-8.
            let args: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            match Settings::from_cli(cli, env) {
                Err(e) => report(&e, HELP),
                Ok(settings) => {
                    warn(settings.quiet, &settings.warnings);
                    let resume = matrix_reactivate::resume_command(&args);
                    block_on(matrix_reactivate::run(settings, &resume), HELP)
                }
            }
        }
    };
    std::process::exit(code);
}

const HELP: &str = "matrix-reactivate --help";
const FIND_HELP: &str = "matrix-reactivate find --help";
const SNAPSHOT_HELP: &str = "matrix-reactivate snapshot --help";
const DECRYPT_HELP: &str = "matrix-reactivate decrypt --help";

/// What the admin should hear about how the tool was called, before it starts.
fn warn(quiet: bool, warnings: &[String]) {
    if !quiet {
        for w in warnings {
            eprintln!("warning: {w}");
        }
    }
}

/// Runs a command on a multi-threaded runtime and turns its outcome into the exit code.
fn block_on(command: impl Future<Output = anyhow::Result<i32>>, help: &str) -> i32 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
        Ok(rt) => match rt.block_on(command) {
            Ok(code) => code,
            Err(e) => report(&e, help),
        },
    }
}

/// `--generate`: the script or page on stdout. A closed pipe (`| head`) is
/// not an error.
fn generate(kind: Generate) -> i32 {
    let mut out = std::io::stdout().lock();
    match matrix_reactivate::generate::write(kind, &mut out).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            1
        }
    }
}

/// Prints the error chain; usage errors point to `help` and exit 2.
fn report(e: &anyhow::Error, help: &str) -> i32 {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<UsageError>().is_some() {
        eprintln!("(see {help})");
        2
    } else {
        1
    }
}
