//! `dps-emulator`: a thin CLI over the library: `serve`, `enroll`, `group`, `list`,
//! `connection-string`.

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dps_emulator::model::{
    AllocationPolicy, AttestationMechanism, EnrollmentCommon, EnrollmentGroup,
    IndividualEnrollment, ProvisioningStatus, SymmetricKeyAttestation, TpmAttestation,
    X509Attestation, X509CertificateWithInfo, X509Certificates,
};
use dps_emulator::{enroll_files::EnrollmentInfo, Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "dps-emulator",
    version,
    about = "A local Azure IoT Hub Device Provisioning Service"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct StateArg {
    /// State folder (dev CA, keys, database).
    #[arg(
        long = "state",
        env = "DPS_EMULATOR_STATE",
        default_value = "dps-emulator-state"
    )]
    state: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the device and service APIs over HTTPS.
    Serve(ServeArgs),
    /// Create or replace an individual enrollment.
    Enroll(EnrollArgs),
    /// Create or replace an enrollment group.
    Group(GroupArgs),
    /// List enrollments, groups and registration records.
    List {
        #[command(flatten)]
        state: StateArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the service API connection string (secret) for a host name.
    ConnectionString {
        #[command(flatten)]
        state: StateArg,
        /// The host name clients use.
        #[arg(long, default_value = "localhost")]
        host: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    state: StateArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The id scope.
    #[arg(long, default_value = "0ne00000001")]
    id_scope: String,
    /// IoT hub names (repeat for several).
    #[arg(long = "hub")]
    hubs: Vec<String>,
    /// Extra server certificate names (host names or IPs).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Milliseconds an operation stays "assigning".
    #[arg(long, default_value_t = 0)]
    assignment_delay_ms: u64,
    /// Retry-After seconds on 202 answers.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// With --assignment-delay-ms 0, answer the register request itself with 200 and the
    /// final state instead of 202 and a poll.
    #[arg(long)]
    complete_immediately: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Most simultaneous connections from one source address (default: a quarter of
    /// --max-connections). Raise it when many devices share one address (NAT, a fleet
    /// simulated from one host).
    #[arg(long)]
    max_connections_per_peer: Option<usize>,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Hubs for this enrollment (repeat); empty means all.
    #[arg(long = "hub")]
    hubs: Vec<String>,
    /// Allocation policy.
    #[arg(long, value_enum)]
    allocation: Option<Allocation>,
    /// JSON file with the initial twin.
    #[arg(long)]
    initial_twin: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy)]
enum Allocation {
    Hashed,
    Static,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct EnrollArgs {
    #[command(subcommand)]
    kind: Option<EnrollKind>,
    /// Folder written by `hsmkit enroll-info --out`.
    #[arg(long)]
    from: Option<PathBuf>,
    /// With --from: create an enrollment group with this id instead (x509 root CA or symmetric group key).
    #[arg(long, requires = "from")]
    group: Option<String>,
    #[command(flatten)]
    state: StateArg,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Subcommand)]
enum EnrollKind {
    /// TPM: registration id and base64 EK (TPM2B_PUBLIC).
    Tpm {
        #[arg(long)]
        registration_id: String,
        #[arg(long)]
        endorsement_key: String,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// X.509: registration id (= CN) and the device's leaf certificate file.
    X509 {
        #[arg(long)]
        registration_id: String,
        #[arg(long)]
        cert: PathBuf,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Symmetric key: registration id and key (generated when left out; printed once).
    Symmetric {
        #[arg(long)]
        registration_id: String,
        #[arg(long, env = "DPS_EMULATOR_PRIMARY_KEY", hide_env_values = true)]
        primary_key: Option<String>,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
struct GroupArgs {
    #[command(subcommand)]
    kind: GroupKind,
}

#[derive(Subcommand)]
enum GroupKind {
    /// X.509 group: the CA certificate that signs the devices' chains.
    X509 {
        #[arg(long)]
        group_id: String,
        #[arg(long)]
        ca_cert: PathBuf,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Symmetric-key group: device keys are HMAC-SHA256(group key, registration id).
    Symmetric {
        #[arg(long)]
        group_id: String,
        #[arg(long, env = "DPS_EMULATOR_GROUP_KEY", hide_env_values = true)]
        primary_key: Option<String>,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
}

fn common(c: &CommonArgs) -> Result<EnrollmentCommon> {
    let initial_twin = match &c.initial_twin {
        Some(p) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not JSON", p.display()))?,
        ),
        None => None,
    };
    Ok(EnrollmentCommon {
        provisioning_status: if c.disabled {
            ProvisioningStatus::Disabled
        } else {
            ProvisioningStatus::Enabled
        },
        initial_twin,
        allocation_policy: c.allocation.map(|a| match a {
            Allocation::Hashed => AllocationPolicy::Hashed,
            Allocation::Static => AllocationPolicy::Static,
        }),
        iot_hubs: c.hubs.clone(),
        ..Default::default()
    })
}

fn cert_slots(path: &Path) -> Result<X509Certificates> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(X509Certificates {
        primary: Some(X509CertificateWithInfo {
            certificate: Some(pem),
            info: None,
        }),
        secondary: None,
    })
}

fn attestation(kind: &str) -> AttestationMechanism {
    AttestationMechanism {
        kind: kind.into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    }
}

/// A symmetric-key attestation with `primary_key`, and whether the store will generate the
/// key (none given), so that the CLI knows to show it.
fn symmetric_attestation(primary_key: Option<String>) -> (AttestationMechanism, bool) {
    let generated = primary_key.is_none();
    let mut a = attestation("symmetricKey");
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key,
        secondary_key: None,
    });
    (a, generated)
}

fn print_individual(e: &IndividualEnrollment, show_key: bool) {
    println!(
        "enrolled {} ({}, {:?})",
        e.registration_id, e.attestation.kind, e.common.provisioning_status
    );
    if show_key {
        if let Some(k) = e
            .attestation
            .symmetric_key
            .as_ref()
            .and_then(|s| s.primary_key.as_ref())
        {
            println!("primary key: {k}");
        }
    }
}

fn enroll(args: EnrollArgs) -> Result<()> {
    match (args.kind, args.from) {
        (None, Some(dir)) => {
            let store = dps_emulator::open_store(&args.state.state)?;
            let info = EnrollmentInfo::read_dir(&dir)?;
            let c = common(&args.common)?;
            if let Some(gid) = args.group {
                let mut g = info.group(&gid)?;
                g.common = c;
                let g = store.create_group(g)?;
                println!(
                    "enrollment group {} ({})",
                    g.enrollment_group_id, g.attestation.kind
                );
            } else {
                let mut e = info.individual();
                e.common = c;
                print_individual(&store.create_individual(e)?, false);
            }
            Ok(())
        }
        (Some(kind), None) => {
            let (state, c, e, generated) = match kind {
                EnrollKind::Tpm {
                    registration_id,
                    endorsement_key,
                    state,
                    common: c,
                } => {
                    let mut a = attestation("tpm");
                    a.tpm = Some(TpmAttestation {
                        endorsement_key,
                        storage_root_key: None,
                    });
                    (
                        state,
                        c,
                        IndividualEnrollment {
                            registration_id,
                            device_id: None,
                            attestation: a,
                            common: Default::default(),
                        },
                        false,
                    )
                }
                EnrollKind::X509 {
                    registration_id,
                    cert,
                    state,
                    common: c,
                } => {
                    let mut a = attestation("x509");
                    a.x509 = Some(X509Attestation {
                        client_certificates: Some(cert_slots(&cert)?),
                        ..Default::default()
                    });
                    (
                        state,
                        c,
                        IndividualEnrollment {
                            registration_id,
                            device_id: None,
                            attestation: a,
                            common: Default::default(),
                        },
                        false,
                    )
                }
                EnrollKind::Symmetric {
                    registration_id,
                    primary_key,
                    state,
                    common: c,
                } => {
                    let (a, generated) = symmetric_attestation(primary_key);
                    (
                        state,
                        c,
                        IndividualEnrollment {
                            registration_id,
                            device_id: None,
                            attestation: a,
                            common: Default::default(),
                        },
                        generated,
                    )
                }
            };
            let store = dps_emulator::open_store(&state.state)?;
            let mut e = e;
            e.common = common(&c)?;
            print_individual(&store.create_individual(e)?, generated);
            Ok(())
        }
        (None, None) => bail!("say what to enroll: tpm, x509, symmetric, or --from DIR"),
        (Some(_), Some(_)) => bail!("--from cannot be combined with a kind"),
    }
}

fn group(args: GroupArgs) -> Result<()> {
    let (state, c, g, generated) = match args.kind {
        GroupKind::X509 {
            group_id,
            ca_cert,
            state,
            common: c,
        } => {
            let mut a = attestation("x509");
            a.x509 = Some(X509Attestation {
                signing_certificates: Some(cert_slots(&ca_cert)?),
                ..Default::default()
            });
            (
                state,
                c,
                EnrollmentGroup {
                    enrollment_group_id: group_id,
                    attestation: a,
                    common: Default::default(),
                },
                false,
            )
        }
        GroupKind::Symmetric {
            group_id,
            primary_key,
            state,
            common: c,
        } => {
            let (a, generated) = symmetric_attestation(primary_key);
            (
                state,
                c,
                EnrollmentGroup {
                    enrollment_group_id: group_id,
                    attestation: a,
                    common: Default::default(),
                },
                generated,
            )
        }
    };
    let store = dps_emulator::open_store(&state.state)?;
    let mut g = g;
    g.common = common(&c)?;
    let g = store.create_group(g)?;
    println!(
        "enrollment group {} ({})",
        g.enrollment_group_id, g.attestation.kind
    );
    if generated {
        if let Some(k) = g
            .attestation
            .symmetric_key
            .as_ref()
            .and_then(|s| s.primary_key.as_ref())
        {
            println!("group key: {k}");
        }
    }
    Ok(())
}

fn list(state: &Path, json: bool) -> Result<()> {
    let store = dps_emulator::open_store(state)?;
    let mut individuals = store.individuals()?;
    let mut groups = store.groups()?;
    // Listing must not print keys.
    for e in &mut individuals {
        if let Some(s) = e.attestation.symmetric_key.as_mut() {
            s.primary_key = None;
            s.secondary_key = None;
        }
    }
    for g in &mut groups {
        if let Some(s) = g.attestation.symmetric_key.as_mut() {
            s.primary_key = None;
            s.secondary_key = None;
        }
    }
    let regs = store.registrations()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "enrollments": individuals, "enrollmentGroups": groups, "registrations": regs
            }))?
        );
        return Ok(());
    }
    println!("enrollments:");
    for e in &individuals {
        println!(
            "  {} {} {:?}",
            e.registration_id, e.attestation.kind, e.common.provisioning_status
        );
    }
    println!("enrollment groups:");
    for g in &groups {
        println!(
            "  {} {} {:?}",
            g.enrollment_group_id, g.attestation.kind, g.common.provisioning_status
        );
    }
    println!("registrations:");
    for r in &regs {
        println!(
            "  {} {} {} {}",
            r.registration_id,
            r.status,
            r.assigned_hub.as_deref().unwrap_or("-"),
            r.device_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn serve(a: ServeArgs) -> Result<()> {
    let mut cfg = EmulatorConfig::new(&a.state.state);
    cfg.listen = a.listen;
    cfg.id_scope = a.id_scope;
    if !a.hubs.is_empty() {
        cfg.hubs = a.hubs;
    }
    cfg.server_names = a.server_names;
    cfg.assignment_delay = Duration::from_millis(a.assignment_delay_ms);
    cfg.retry_after_secs = a.retry_after;
    cfg.complete_registrations_immediately = a.complete_immediately;
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.max_connections = a.max_connections;
    cfg.max_connections_per_peer = a.max_connections_per_peer;
    let running = Emulator::start(cfg).await?;
    println!("listening: {}", running.endpoint());
    println!("id scope: {}", running.id_scope());
    println!("hubs: {}", running.hubs().join(", "));
    println!("dev CA certificate: {}", running.ca_cert_path().display());
    println!(
        "service connection string: dps-emulator connection-string --state {}",
        a.state.state.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.shutdown().await;
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(a)),
        Cmd::Enroll(a) => enroll(a),
        Cmd::Group(a) => group(a),
        Cmd::List { state, json } => list(&state.state, json),
        Cmd::ConnectionString { state, host } => {
            let key = dps_emulator::service_key(&state.state)?;
            let key_str: &str = &key;
            let _ = base64::engine::general_purpose::STANDARD
                .decode(key_str)
                .context("the stored service key is corrupt")?;
            println!(
                "HostName={host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={key_str}"
            );
            Ok(())
        }
    }
}
