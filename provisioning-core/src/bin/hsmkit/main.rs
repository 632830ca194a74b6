//! `hsmkit`: pick an HSM plugin, print what DPS enrollment needs, provision the device and hand
//! out IoT Hub credentials.

mod cli;
mod commands;
mod config;
mod failure;
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return failure::clap_failed(e, &args),
    };
    init_tracing(cli.global.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        // Exit code by kind (documented in `hsmkit --help` and the README); with --json the
        // error object on stdout.
        Err(e) => failure::report(&e, failure::wants_json(&args)),
    }
}

/// Logs to stderr at the level `-v` asks for, or as `RUST_LOG` says (`info`, `debug`,
/// `provisioning_core=debug,warn`: targets and levels, without `EnvFilter`'s span and field
/// filters, whose regex engine would be a fifth of the device binary).
fn init_tracing(verbose: u8) {
    use std::io::IsTerminal;
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
                // Colour codes only for a person at a terminal: a journal, a pipe or a log
                // file would keep the escape bytes.
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use provisioning_core::dps::DpsError;
    use provisioning_core::plugin::{LoadError, PluginError, PluginErrorCode};
    use std::path::Path;

    /// What `main` prints after `error: `, checked to hold each layer once.
    fn printed(e: &anyhow::Error) -> String {
        let layers: Vec<String> = e.chain().map(ToString::to_string).collect();
        for (i, outer) in layers.iter().enumerate() {
            for inner in &layers[i + 1..] {
                assert!(
                    !outer.contains(inner.as_str()),
                    "`{inner}` repeats in `{outer}`"
                );
            }
        }
        format!("{e:#}")
    }

    #[test]
    fn the_chain_prints_each_layer_once() {
        // An OS error shown in the typed error's message, under a context.
        let missing = Path::new("/nonexistent-hsmkit-test/config.toml");
        let os = std::fs::metadata(missing).unwrap_err().to_string();
        let e = hsm_secure_fs::trust::read_to_string(missing)
            .context("cannot use the config file")
            .unwrap_err();
        assert_eq!(
            printed(&e),
            format!(
                "cannot use the config file: {}: cannot read: {os}",
                missing.display()
            )
        );
        let e = anyhow::Error::from(LoadError::from(
            hsm_secure_fs::trust::open_trusted(missing).unwrap_err(),
        ));
        assert_eq!(
            printed(&e),
            format!("{}: cannot read: {os}", missing.display())
        );

        // A plugin error inside a DPS error inside a context: each text once.
        let plugin = PluginError::Call {
            plugin: "p".into(),
            operation: "sign",
            code: PluginErrorCode::Device,
            message: "no key".into(),
        };
        let plugin_text = plugin.to_string();
        let e = Err::<(), _>(DpsError::from(plugin))
            .context("provisioning failed")
            .unwrap_err();
        let text = printed(&e);
        assert!(
            text.starts_with("provisioning failed: the HSM plugin failed: "),
            "{text}"
        );
        assert_eq!(text.matches(plugin_text.as_str()).count(), 1, "{text}");

        // A source that is not in the message is printed after it.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start")]
        struct Start(#[source] std::io::Error);
        let e = anyhow::Error::new(Start(std::fs::metadata(missing).unwrap_err())).context("demo");
        assert_eq!(printed(&e), format!("demo: cannot start: {os}"));
    }
}
