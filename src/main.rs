//! The binary: parse arguments, run, print the error chain, exit with the code.

use clap::Parser;

use matrix_reactivate::cli::Cli;
use matrix_reactivate::config::{EnvSecrets, Settings, UsageError};

fn main() {
    let cli = Cli::parse();
    // Lossy, never `env::args()`: that panics on a file name that is not UTF-8.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = match Settings::from_cli(cli, EnvSecrets::from_env()) {
        Err(e) => report(&e),
        Ok(settings) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            match runtime {
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    1
                }
                Ok(rt) => {
                    let resume = matrix_reactivate::resume_command(&args);
                    match rt.block_on(matrix_reactivate::run(settings, &resume)) {
                        Ok(code) => code,
                        Err(e) => report(&e),
                    }
                }
            }
        }
    };
    std::process::exit(code);
}

fn report(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<UsageError>().is_some() {
        eprintln!("(see matrix-reactivate --help)");
        2
    } else {
        1
    }
}
