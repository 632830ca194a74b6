//! `dps-emulator`: a thin CLI over the library: `serve`, `enroll`, `group`, `list`,
//! `connection-string` (see [`commands`]).

mod commands;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    commands::run(commands::Cli::parse())
}
