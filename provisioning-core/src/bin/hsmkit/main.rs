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

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
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
