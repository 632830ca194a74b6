//! `dps-fleet`: provisions a simulated fleet against a DPS and reports how it went.

use anyhow::{Context, Result};
use clap::Parser;
use dps_fleet::{FleetOptions, Mix, ProgressMode, TargetSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Provisions N simulated devices (symmetric key, X.509 DICE, TPM on tpm-sim) through
/// hsmkit's DPS client and plugins, with bounded concurrency, against the in-process emulator
/// (default) or a DPS given by --endpoint and --service-connection-string; prints a summary per
/// attestation, writes report.json and SVG charts, and checks the service's registration
/// records (none lost, none duplicated). Exit code 1 when any device failed or a record is
/// lost, duplicated or wrong.
#[derive(Debug, Parser)]
#[command(name = "dps-fleet", version)]
struct Cli {
    /// Number of devices.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Device mix as kind=weight: symmetric (individual enrollments), symmetric-group,
    /// dice-group, tpm.
    #[arg(
        long,
        default_value = "symmetric=25,symmetric-group=25,dice-group=25,tpm=25"
    )]
    mix: String,
    /// Devices provisioning at once, at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Device API endpoint of a running DPS or emulator (`https://host:port`); needs
    /// --id-scope and --service-connection-string. Without it an emulator runs in process.
    #[arg(long, requires_all = ["id_scope", "service_connection_string"])]
    endpoint: Option<String>,
    /// The id scope (with --endpoint).
    #[arg(long)]
    id_scope: Option<String>,
    /// Service connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...),
    /// for the enrollments and the cross-check (with --endpoint).
    #[arg(long, env = "DPS_SERVICE_CONNECTION_STRING", hide_env_values = true)]
    service_connection_string: Option<String>,
    /// CA certificate (PEM) to trust for --endpoint and the service (an emulator's dev CA).
    #[arg(long)]
    trust_ca: Option<PathBuf>,
    /// In-process emulator: answer registrations 202 + Retry-After and let devices poll, instead
    /// of the immediate 200.
    #[arg(long)]
    polled: bool,
    /// Folder with libhsmkit_plugin_{symmetric,dice,tpm_sim}.so.
    #[arg(long, env = "HSMKIT_PLUGIN_DIR")]
    plugin_dir: PathBuf,
    /// Write report.json, histogram.svg and throughput.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Keep manufactured devices (keys, UDS, EK/SRK) in this folder between runs.
    #[arg(long)]
    manufacture_cache: Option<PathBuf>,
    /// Per-device deadline, seconds.
    #[arg(long, default_value_t = 120)]
    device_timeout_secs: u64,
    /// Progress: auto (bar on a terminal, lines otherwise), lines or quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "quiet"])]
    progress: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dps-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let mix: Mix = cli.mix.parse()?;
    let ca_pem = cli
        .trust_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading --trust-ca {}", p.display())))
        .transpose()?;
    let target = match cli.endpoint {
        Some(endpoint) => TargetSpec::Remote {
            endpoint,
            id_scope: cli.id_scope.context("--endpoint needs --id-scope")?,
            service_connection_string: cli
                .service_connection_string
                .context("--endpoint needs --service-connection-string")?,
            ca_pem,
        },
        None => TargetSpec::InProcess { polled: cli.polled },
    };
    let mut opts = FleetOptions::new(cli.devices, mix, cli.plugin_dir);
    opts.concurrency = cli.concurrency;
    opts.target = target;
    opts.manufacture_cache = cli.manufacture_cache;
    opts.device_timeout = Duration::from_secs(cli.device_timeout_secs.max(1));
    opts.progress = match cli.progress.as_str() {
        "lines" => ProgressMode::Lines,
        "quiet" => ProgressMode::Quiet,
        _ => ProgressMode::Auto,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (report, outcomes) = rt.block_on(dps_fleet::run(opts))?;
    if let Some(out) = &cli.out {
        dps_fleet::write_outputs(out, &report, &outcomes)?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if let Some(out) = &cli.out {
            println!(
                "wrote {}: report.json, histogram.svg, throughput.svg",
                out.display()
            );
        }
    }
    Ok(report.is_clean())
}
