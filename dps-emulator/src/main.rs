//! `dps-emulator`: a thin CLI over the library: `serve`, `enroll`, `group`, `list`,
//! `connection-string` (see [`commands`]).

mod commands;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a pipe, a journal or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match commands::run(commands::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // hsmkit's style: one line, the message then each cause (`{:#}`), exit status 1.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
