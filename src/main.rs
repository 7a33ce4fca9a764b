//! The binary: parse arguments, run, print the error chain, exit with the code.

use std::io::Write;

use clap::Parser;

use matrix_reactivate::cli::{Cli, Generate};
use matrix_reactivate::config::{EnvSecrets, Settings, UsageError};

fn main() {
    let cli = Cli::parse();
    if let Some(kind) = cli.generate {
        std::process::exit(generate(kind));
    }
    // Lossy, never `env::args()`: that panics on a file name that is not UTF-8.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let code = match Settings::from_cli(cli, EnvSecrets::from_env()) {
        Err(e) => report(&e),
        Ok(settings) => {
            if !settings.quiet {
                for w in &settings.warnings {
                    eprintln!("warning: {w}");
                }
            }
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

fn report(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<UsageError>().is_some() {
        eprintln!("(see matrix-reactivate --help)");
        2
    } else {
        1
    }
}
