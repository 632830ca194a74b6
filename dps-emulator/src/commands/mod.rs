//! The `dps-emulator` commands: argument types and one module per command. Each command only
//! turns arguments into library calls; enrollments are built by the library's constructors.

mod connection_string;
mod enroll;
mod hub;
mod list;
mod serve;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dps_emulator::model::{
    AllocationPolicy, CertificateIssuancePolicy, CustomAllocationDefinition, EnrollmentCommon,
    ProvisioningStatus,
};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "dps-emulator",
    version,
    about = "A local Azure IoT Hub Device Provisioning Service",
    after_help = "Logs go to stderr, without colour codes unless it is a terminal. RUST_LOG sets \
                  what is logged (default info): RUST_LOG=debug, or per crate such as \
                  RUST_LOG=dps_emulator=debug,warn."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct StateArg {
    /// State folder (dev CA, keys, database); `--state`, the old name, still works.
    #[arg(
        long = "state-dir",
        alias = "state",
        value_name = "DIR",
        env = "DPS_EMULATOR_STATE",
        default_value = "dps-emulator-state"
    )]
    pub(crate) state: PathBuf,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Serve the device and service APIs over HTTPS, and the device API over MQTT.
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
    /// The emulated IoT hubs: devices, telemetry, cloud-to-device messages, twins, status.
    Hub(hub::HubArgs),
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
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) state: StateArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub(crate) listen: SocketAddr,
    /// The id scope.
    #[arg(long, default_value = "0ne00000001")]
    pub(crate) id_scope: String,
    /// IoT hub names (repeat for several).
    #[arg(long = "hub")]
    pub(crate) hubs: Vec<String>,
    /// Extra server certificate names (host names or IPs).
    #[arg(long = "server-name")]
    pub(crate) server_names: Vec<String>,
    /// Milliseconds an operation stays "assigning".
    #[arg(long, default_value_t = 0)]
    pub(crate) assignment_delay_ms: u64,
    /// Retry-After seconds on 202 answers.
    #[arg(long, default_value_t = 1)]
    pub(crate) retry_after: u64,
    /// With --assignment-delay-ms 0, answer the register request itself with 200 and the
    /// final state instead of 202 and a poll.
    #[arg(long)]
    pub(crate) complete_immediately: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub(crate) max_body_bytes: usize,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = 512)]
    pub(crate) max_connections: usize,
    /// Most simultaneous connections from one source address (default: a quarter of
    /// --max-connections). Raise it when many devices share one address (NAT, a fleet
    /// simulated from one host).
    #[arg(long)]
    pub(crate) max_connections_per_peer: Option<usize>,
    /// Address of the MQTT listener (the device API over MQTT 3.1.1 on TLS, as the service
    /// offers it on 8883; same certificate and CA as HTTPS).
    #[arg(long, default_value = "127.0.0.1:8883")]
    pub(crate) mqtt_listen: SocketAddr,
    /// Serve no MQTT.
    #[arg(long, conflicts_with = "mqtt_listen")]
    pub(crate) no_mqtt: bool,
    /// Address of the MQTT over WebSocket listener (wss://ADDR/$iothub/websocket, sub-protocol
    /// `mqtt`; the service offers it on 443 beside HTTPS, here on a port of its own next to
    /// the HTTPS default; same certificate, CA and MQTT rules).
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub(crate) mqtt_ws_listen: SocketAddr,
    /// Serve no MQTT over WebSocket.
    #[arg(long, conflicts_with = "mqtt_ws_listen")]
    pub(crate) no_mqtt_ws: bool,
    /// Most packets per second one MQTT connection may send; a faster one is closed.
    #[arg(long, default_value_t = 20)]
    pub(crate) mqtt_max_packets_per_second: u32,
}

#[derive(Args, Clone)]
pub(crate) struct CommonArgs {
    /// Create it disabled.
    #[arg(long)]
    pub(crate) disabled: bool,
    /// Hubs for this enrollment (repeat); empty means all.
    #[arg(long = "hub")]
    pub(crate) hubs: Vec<String>,
    /// Allocation policy.
    #[arg(long, value_enum)]
    pub(crate) allocation: Option<Allocation>,
    /// Allocate by this custom allocation webhook (allocationPolicy custom,
    /// customAllocationDefinition.webhookUrl): https, or http to a loopback host.
    #[arg(long, value_name = "URL", conflicts_with = "allocation")]
    pub(crate) custom_allocation_webhook: Option<String>,
    /// The API version of the enrollment sent to the webhook
    /// (customAllocationDefinition.apiVersion; default 2021-10-01).
    #[arg(long, value_name = "VERSION", requires = "custom_allocation_webhook")]
    pub(crate) custom_allocation_api_version: Option<String>,
    /// JSON file with the initial twin.
    #[arg(long)]
    pub(crate) initial_twin: Option<PathBuf>,
    /// Issue operational certificates valid this many days for CSRs its devices send
    /// (certificateIssuancePolicy; emulator configuration, the real service configures
    /// issuance through Azure Device Registry).
    #[arg(long, value_name = "DAYS")]
    pub(crate) issue_certificates_days: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy)]
pub(crate) enum Allocation {
    Hashed,
    Static,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct EnrollArgs {
    #[command(subcommand)]
    pub(crate) kind: Option<EnrollKind>,
    /// Folder written by `hsmkit enroll-info --out`.
    #[arg(long)]
    pub(crate) from: Option<PathBuf>,
    /// With --from: create an enrollment group with this id instead (x509 root CA or symmetric group key).
    #[arg(long, requires = "from")]
    pub(crate) group: Option<String>,
    #[command(flatten)]
    pub(crate) state: StateArg,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

#[derive(Subcommand)]
pub(crate) enum EnrollKind {
    /// TPM: registration id and base64 EK (TPM2B_PUBLIC), as `hsmkit enroll-info` prints them.
    Tpm {
        /// The device's registration id (`hsmkit enroll-info` prints it; for a TPM, by
        /// convention derived from the EK).
        #[arg(long, value_name = "ID")]
        registration_id: String,
        /// The TPM's endorsement key: the marshalled TPM2B_PUBLIC, base64, as DPS takes it in
        /// `attestation.tpm.endorsementKey` (`hsmkit enroll-info --plugin tpm2` prints it).
        #[arg(long, value_name = "BASE64")]
        endorsement_key: String,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// X.509: registration id (= CN) and the device's leaf certificate file.
    X509 {
        /// The device's registration id: the leaf certificate's subject CN.
        #[arg(long, value_name = "ID")]
        registration_id: String,
        /// The device's leaf certificate (PEM), enrolled as its primary certificate.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Symmetric key: registration id and key (generated when left out; printed once).
    Symmetric {
        /// The device's registration id.
        #[arg(long, value_name = "ID")]
        registration_id: String,
        /// The device's primary key, base64; generated and printed once when left out.
        #[arg(
            long,
            value_name = "BASE64",
            env = "DPS_EMULATOR_PRIMARY_KEY",
            hide_env_values = true
        )]
        primary_key: Option<String>,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
pub(crate) struct GroupArgs {
    #[command(subcommand)]
    pub(crate) kind: GroupKind,
}

#[derive(Subcommand)]
pub(crate) enum GroupKind {
    /// X.509 group: the CA certificate that signs the devices' chains.
    X509 {
        /// The enrollment group's id (the DPS id rules: ASCII letters, digits and `-._:`).
        #[arg(long, value_name = "ID")]
        group_id: String,
        /// The CA certificate (PEM), root or intermediate, that the devices' chains lead to.
        #[arg(long, value_name = "FILE")]
        ca_cert: PathBuf,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Symmetric-key group: device keys are HMAC-SHA256(group key, registration id).
    Symmetric {
        /// The enrollment group's id.
        #[arg(long, value_name = "ID")]
        group_id: String,
        /// The group's primary key, base64; generated and printed once when left out.
        #[arg(
            long,
            env = "DPS_EMULATOR_GROUP_KEY",
            hide_env_values = true,
            value_name = "BASE64"
        )]
        primary_key: Option<String>,
        #[command(flatten)]
        state: StateArg,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Runs the command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Serve(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve::run(a)),
        Cmd::Enroll(a) => enroll::enroll(a),
        Cmd::Group(a) => enroll::group(a),
        Cmd::List { state, json } => list::run(&state.state, json),
        Cmd::ConnectionString { state, host } => connection_string::run(&state.state, &host),
        Cmd::Hub(a) => hub::run(a),
    }
}

/// The shared enrollment settings.
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
        allocation_policy: match (c.allocation, &c.custom_allocation_webhook) {
            (_, Some(_)) => Some(AllocationPolicy::Custom),
            (Some(Allocation::Hashed), None) => Some(AllocationPolicy::Hashed),
            (Some(Allocation::Static), None) => Some(AllocationPolicy::Static),
            (None, None) => None,
        },
        custom_allocation_definition: c.custom_allocation_webhook.as_ref().map(|url| {
            CustomAllocationDefinition {
                webhook_url: url.clone(),
                api_version: c
                    .custom_allocation_api_version
                    .clone()
                    .unwrap_or_else(|| "2021-10-01".to_string()),
            }
        }),
        iot_hubs: c.hubs.clone(),
        certificate_issuance_policy: c
            .issue_certificates_days
            .map(|validity_days| CertificateIssuancePolicy { validity_days }),
        ..Default::default()
    })
}
