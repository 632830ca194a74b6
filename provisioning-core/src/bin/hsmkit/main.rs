//! `hsmkit`: pick an HSM plugin, print what DPS enrollment needs, provision the device and hand
//! out IoT Hub credentials.

mod cli;
mod commands;
mod config;
mod output;
mod plugin_setup;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // First, before anything can hold a secret (a PIN, a key a plugin loads): no core file and
    // no ptrace by the user's other processes. Process-wide; see hsm_secure_fs::dump for why.
    if let Err(e) = hsm_secure_fs::dump::disable_core_dumps() {
        eprintln!("error: cannot keep secrets out of core dumps (prctl PR_SET_DUMPABLE): {e}");
        return ExitCode::from(1);
    }
    let cli = cli::Cli::parse();
    init_tracing(cli.global.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr at the level `-v` asks for, or as `RUST_LOG` says (`info`, `debug`,
/// `provisioning_core=debug,warn`: targets and levels, without `EnvFilter`'s span and field
/// filters, whose regex engine would be a fifth of the device binary).
fn init_tracing(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(level));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// The error and its causes on one line, skipping a cause whose text the message already
/// carries (typed errors often include their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}
