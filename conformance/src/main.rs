//! `hsm-conformance PLUGIN`: runs every applicable check against a plugin, each in its own
//! child process, and says which contract points it breaks.

use anyhow::{bail, Context, Result};
use clap::Parser;
use hsm_conformance::runner::parse_setting;
use hsm_conformance::{all_checks, child, run, RunOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Conformance harness for hsmkit HSM plugins.
#[derive(Parser, Debug)]
#[command(name = "hsm-conformance", version)]
struct Cli {
    /// The plugin: a path to its .so, or a name found in the plugins folders
    /// (--plugin-dir, else HSMKIT_PLUGIN_DIR, else plugins/ next to this program and the
    /// system folders).
    #[arg(required_unless_present = "list")]
    plugin: Option<String>,
    /// Print the settings the plugin's create accepts, one line each (name, required or
    /// optional, description), and exit; "settings not declared" for an ABI 1.0 plugin. The
    /// plugin is loaded in a child process and no instance is created.
    #[arg(long)]
    list_settings: bool,
    /// Folder to find a plugin given by name in, as hsmkit's flag (`NAME` is
    /// `libhsmkit_plugin_NAME.so` there); replaces every other plugins folder.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// A setting passed to the plugin's create (repeatable), e.g. `--set tcti=swtpm:port=2321`,
    /// as hsmkit's flag (`--config`, the old name, still works). Without `state_dir`, every
    /// check gets a private copy of a prepared state folder.
    #[arg(long = "set", alias = "config", value_name = "KEY=VALUE", value_parser = parse_setting)]
    config: Vec<(String, String)>,
    /// The plugin's state folder, as hsmkit's flag: the same as `--set state_dir=DIR` (every
    /// check then shares that folder instead of a private copy).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Run only checks matching PATTERN (an id, a group like `tpm`, or a glob like `*.ek-*`).
    #[arg(long, value_name = "PATTERN")]
    only: Vec<String>,
    /// Leave out checks matching PATTERN.
    #[arg(long, value_name = "PATTERN")]
    skip: Vec<String>,
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
    /// Write a JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Checks run at the same time [default: 2, or 1 when `tcti` names swtpm or mssim, which
    /// serve one connection at a time].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: Option<u32>,
    /// Seconds one check may take before it is killed and reported as a timeout.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// Internal: run one check in this process and print its result.
    #[arg(long, hide = true, value_name = "ID")]
    run_check: Option<String>,
    /// Internal: load the plugin in this process and print what it declares.
    #[arg(long, hide = true)]
    probe: bool,
    /// Internal: run one step of a multi-process check in this process.
    #[arg(long, hide = true, value_name = "NAME")]
    step: Option<String>,
    /// Internal: an argument of `--step` (repeatable).
    #[arg(long, hide = true, value_name = "ARG", allow_hyphen_values = true)]
    step_arg: Vec<String>,
}

fn resolve_plugin(arg: &str, plugin_dir: Option<&std::path::Path>) -> Result<PathBuf> {
    let as_path = PathBuf::from(arg);
    if arg.contains('/') || arg.ends_with(".so") || as_path.is_file() {
        return std::fs::canonicalize(&as_path).with_context(|| format!("plugin {arg}"));
    }
    // By name, without loading anything in this process: a broken plugin must only ever be
    // run inside a check's child process.
    let file = format!(
        "{}{}.so",
        provisioning_core::plugin::PLUGIN_FILE_PREFIX,
        arg.replace('-', "_")
    );
    let search = provisioning_core::plugin::PluginSearchPath::resolve(plugin_dir, None);
    search
        .candidates()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == file.as_str()))
        .with_context(|| {
            format!(
                "no plugin named `{arg}` ({file}) in the plugins folders; pass its path instead"
            )
        })
}

/// `--list-settings`: the plugin's settings as `hsmkit plugins info` prints them, learnt from
/// a probe child.
fn list_settings(plugin: &std::path::Path, timeout: f64) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program to probe the plugin")?;
    let probe =
        hsm_conformance::runner::probe_settings(&exe, plugin, Duration::from_secs_f64(timeout))?;
    if !probe.loaded {
        bail!(
            "{}: the plugin did not load: {}",
            plugin.display(),
            probe.error.as_deref().unwrap_or("unknown reason")
        );
    }
    for line in provisioning_core::plugin::settings_lines(probe.settings.as_deref()) {
        println!("{line}");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            // hsmkit's style: one line, the message then each cause (`{:#}`), exit status 1.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs the command; the exit status on success (a report's, see
/// `hsm_conformance::report::EXIT_BROKEN`), an error for anything that stopped the run.
fn run_cli(mut cli: Cli) -> Result<u8> {
    if let Some(dir) = cli.state_dir.take() {
        if cli.config.iter().any(|(k, _)| k == "state_dir") {
            bail!("--state-dir and --set state_dir=... both name the state folder; give one");
        }
        let dir = dir
            .to_str()
            .context("--state-dir must be a UTF-8 path (plugin settings are text)")?
            .to_string();
        cli.config.push(("state_dir".to_string(), dir));
    }
    if cli.list {
        for c in all_checks() {
            println!(
                "{:<44} {:<13} {}",
                c.id,
                c.interface.as_str(),
                c.description
            );
        }
        return Ok(0);
    }
    let plugin_arg = cli.plugin.clone().context("a plugin is required")?;
    if let Some(id) = &cli.run_check {
        std::process::exit(child::run_check(id, PathBuf::from(plugin_arg), cli.config));
    }
    if let Some(name) = &cli.step {
        std::process::exit(hsm_conformance::step::run_step(
            name,
            &cli.step_arg,
            PathBuf::from(plugin_arg),
            cli.config,
        ));
    }
    if cli.probe && cli.list_settings {
        std::process::exit(child::run_settings_probe(PathBuf::from(plugin_arg)));
    }
    if cli.probe {
        std::process::exit(child::run_probe(PathBuf::from(plugin_arg), cli.config));
    }
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let plugin = resolve_plugin(&plugin_arg, cli.plugin_dir.as_deref())?;
    if cli.list_settings {
        return list_settings(&plugin, cli.timeout).map(|()| 0);
    }
    let single_connection_tpm = cli
        .config
        .iter()
        .any(|(k, v)| k == "tcti" && (v.starts_with("swtpm") || v.starts_with("mssim")));
    let jobs = cli
        .jobs
        .unwrap_or(if single_connection_tpm { 1 } else { 2 });
    let options = RunOptions {
        plugin: plugin.clone(),
        config: cli.config,
        only: cli.only,
        skip: cli.skip,
        jobs: jobs as usize,
        timeout: Duration::from_secs_f64(cli.timeout),
        exe: std::env::current_exe().context("finding this program to run checks")?,
    };
    println!("hsm-conformance: {}", plugin.display());
    let print = |r: &hsm_conformance::CheckReport| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", r.line());
    };
    let report = run(&options, &print)?;
    if let Some(e) = &report.load_error {
        println!("note: the plugin did not load, so only the loading checks ran: {e}");
    }
    let broken: Vec<&hsm_conformance::CheckReport> = report
        .results
        .iter()
        .filter(|r| r.status.is_failure())
        .collect();
    if !broken.is_empty() {
        println!("\ncontract points broken:");
        for r in broken {
            println!("  {} {}: {}", r.status.label(), r.id, r.description);
            println!("      {}", r.message);
        }
        println!();
    }
    println!("{}", report.summary());
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.junit {
        std::fs::write(path, report.to_junit())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.success() && report.needs_setup() {
        println!(
            "note: nothing is shown broken, but the plugin refused the settings given (SETUP); pass them with --set KEY=VALUE and run again"
        );
    }
    // Exit codes are 0, 1 and 3 (report.rs), all within a u8.
    Ok(u8::try_from(report.exit_code()).unwrap_or(1))
}
