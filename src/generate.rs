//! `--generate`: shell completion scripts and the man page, made from the
//! clap definition itself so they can never fall behind the flags.
//!
//! `clap_complete` and `clap_mangen` are clap's own companions for this (what
//! ripgrep, fd and bat ship theirs with); hand-written scripts would drift.

use std::io::{self, Write};

use clap::CommandFactory;

use crate::cli::{Cli, Generate};

/// Writes what `kind` asks for to `out`.
pub fn write(kind: Generate, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    let shell = match kind {
        Generate::CompleteBash => clap_complete::Shell::Bash,
        Generate::CompleteZsh => clap_complete::Shell::Zsh,
        Generate::CompleteFish => clap_complete::Shell::Fish,
        Generate::Man => return clap_mangen::Man::new(cmd).render(out),
    };
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(kind: Generate) -> String {
        let mut out = Vec::new();
        write(kind, &mut out).unwrap();
        // roff escapes the hyphens of flags.
        String::from_utf8(out).unwrap().replace("\\-", "-")
    }

    #[test]
    fn every_kind_names_the_flags() {
        for kind in [
            Generate::CompleteBash,
            Generate::CompleteZsh,
            Generate::CompleteFish,
            Generate::Man,
        ] {
            let t = text(kind);
            for flag in ["max-outage", "summary-json", "homeserver", "generate"] {
                assert!(t.contains(flag), "{kind:?} lacks {flag}");
            }
        }
    }
}
