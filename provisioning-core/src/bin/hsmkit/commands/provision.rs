//! `hsmkit provision`: register with DPS through the plugin, save and print the result.

use crate::cli::ProvisionArgs;
use crate::config::ProvisioningSection;
use crate::failure::{config as config_error, usage};
use crate::output::print_json;
use crate::plugin_setup::{choose_attestation, Context_};
use anyhow::{Context, Result};
use provisioning_core::dps::{ApiVersion, DpsClientConfig, DpsError, ProgressEvent, Transport};
use provisioning_core::issuance::{IssueError, OPERATIONAL_KEY_LABEL};
use provisioning_core::provisioning::{
    provision, provision_with_certificate, Outcome, ProvisionError, ProvisioningRecord,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `provision --json` prints (and the demo's rows reuse).
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProvisionSummary {
    pub plugin: String,
    pub attestation: String,
    pub registration_id: String,
    pub assigned_hub: String,
    pub device_id: String,
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`... as DPS said it.
    pub substatus: Option<String>,
    /// The payload DPS returned (a custom allocation webhook's), when it returned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    pub reused: bool,
    pub millis: u128,
}

impl ProvisionSummary {
    pub(super) fn new(record: &ProvisioningRecord, outcome: Outcome, elapsed: Duration) -> Self {
        ProvisionSummary {
            plugin: record.plugin.clone(),
            attestation: record.result.attestation.as_str().to_string(),
            registration_id: record.result.registration_id.clone(),
            assigned_hub: record.result.assigned_hub.clone(),
            device_id: record.result.device_id.clone(),
            status: record.result.status.clone(),
            substatus: record.result.substatus.clone(),
            payload: record.result.payload.clone(),
            reused: outcome == Outcome::Reused,
            millis: elapsed.as_millis(),
        }
    }
}

/// Merges flags over the `[provisioning]` section into a client configuration.
pub(super) fn client_config(
    args: &ProvisionArgs,
    file: &ProvisioningSection,
) -> Result<DpsClientConfig> {
    let id_scope = args
        .id_scope
        .clone()
        .or_else(|| file.id_scope.clone())
        .ok_or_else(|| config_error("no id scope: pass --id-scope (Azure portal: DPS > Overview > ID Scope) or set provisioning.id_scope"))?;
    let mut config = DpsClientConfig::new(id_scope);
    if let Some(e) = args.endpoint.clone().or_else(|| file.endpoint.clone()) {
        config.endpoint = e;
    }
    // A bad value on the command line is a usage error, in the file a configuration error.
    let bad = |flag: bool, e: String| if flag { usage(e) } else { config_error(e) };
    if let Some(t) = args.transport.clone().or_else(|| file.transport.clone()) {
        config.transport = t
            .parse::<Transport>()
            .map_err(|e| bad(args.transport.is_some(), e.to_string()))?;
    }
    if let Some(v) = args
        .api_version
        .clone()
        .or_else(|| file.api_version.clone())
    {
        config.api_version = v
            .parse::<ApiVersion>()
            .map_err(|e| bad(args.api_version.is_some(), e.to_string()))?;
    }
    if let Some((ca, from)) = trust_ca_setting(&args.trust_ca, &file.trust_ca) {
        config.extra_trust_pem = Some(read_trust_ca(ca, from)?);
    }
    config.registration_id = args
        .registration_id
        .clone()
        .or_else(|| file.registration_id.clone());
    if let Some(p) = args.payload.clone().or_else(|| file.payload.clone()) {
        config.payload = Some(
            serde_json::from_str(&p)
                .map_err(|e| usage(format!("--payload is not valid JSON: {e}")))?,
        );
    }
    if let Some(t) = args.timeout.or(file.timeout_secs) {
        config.overall_timeout = Duration::from_secs(t.max(1));
    }
    Ok(config)
}

/// The CA file to trust and where it was set: the flag, else `provisioning.trust_ca`.
pub(super) fn trust_ca_setting<'a>(
    flag: &'a Option<PathBuf>,
    file: &'a Option<PathBuf>,
) -> Option<(&'a Path, &'static str)> {
    match (flag, file) {
        (Some(flag), _) => Some((flag, "--trust-ca")),
        (None, Some(setting)) => Some((setting, "provisioning.trust_ca")),
        (None, None) => None,
    }
}

/// When TLS with DPS or the hub failed (`tls`) although a CA file was given, names that file:
/// the library's message alone suggests passing --trust-ca, which was done.
pub(super) fn name_trusted_ca(
    e: anyhow::Error,
    tls: bool,
    trust_ca: Option<(&Path, &str)>,
) -> anyhow::Error {
    match trust_ca {
        Some((ca, from)) if tls => e.context(format!(
            "TLS failed although the CA certificate file {} ({from}) was trusted",
            ca.display()
        )),
        _ => e,
    }
}

/// Whether provisioning failed because the server's certificate was not trusted.
fn is_tls_trust(e: &ProvisionError) -> bool {
    matches!(
        e,
        ProvisionError::Dps(DpsError::TlsTrust { .. })
            | ProvisionError::Issue(IssueError::Dps(DpsError::TlsTrust { .. }))
    )
}

/// Reads a CA file to trust and checks that it holds certificates, naming the file and where
/// it was set in every error: a wrong file is otherwise reported only at the TLS handshake,
/// without its name.
pub(super) fn read_trust_ca(ca: &Path, from: &str) -> Result<Vec<u8>> {
    // A CA file decides whom the device trusts: the same rules as for plugins.
    // (A refused or unreadable file's error starts with its path.)
    let pem = hsm_secure_fs::trust::read(ca)
        .with_context(|| format!("cannot use the CA certificate file ({from})"))?;
    provisioning_core::dps::root_store(Some(&pem), false).with_context(|| {
        format!(
            "cannot use the CA certificate file {} ({from})",
            ca.display()
        )
    })?;
    Ok(pem)
}

/// Prints progress on stderr so that stdout stays clean for --json.
pub(super) fn print_progress(event: &ProgressEvent) {
    match event {
        ProgressEvent::Registering {
            registration_id,
            attempt,
        } => {
            if *attempt == 1 {
                eprintln!("registering {registration_id} ...");
            } else {
                eprintln!("registering {registration_id} (attempt {attempt}) ...");
            }
        }
        ProgressEvent::TpmChallenge => {
            eprintln!("TPM challenge received, activating identity key ...")
        }
        ProgressEvent::Assigning { operation_id } => {
            eprintln!("assigning (operation {operation_id}) ...")
        }
        ProgressEvent::Waiting { reason, wait } => {
            eprintln!("waiting {:.1} s: {reason}", wait.as_secs_f64())
        }
        ProgressEvent::Assigned {
            assigned_hub,
            device_id,
        } => eprintln!("assigned to {assigned_hub} as {device_id}"),
    }
}

pub(super) fn run(ctx: &Context_, args: &ProvisionArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let config = client_config(args, &ctx.config.provisioning)?;
    let trust_ca = trust_ca_setting(&args.trust_ca, &ctx.config.provisioning.trust_ca);
    let plugin = ctx.load_plugin(&args.plugin)?;
    let attestation = choose_attestation(
        &plugin,
        args.attestation
            .as_deref()
            .or(ctx.config.provisioning.attestation.as_deref()),
    )?;
    let instance = ctx.create_instance(&plugin, &args.plugin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let issue = args.issue_certificate
        || args.renew_before.is_some()
        || ctx.config.provisioning.issue_certificate;
    let (record, outcome) = if issue {
        runtime
            .block_on(provision_with_certificate(
                &config,
                instance.clone(),
                attestation,
                &ctx.state_dir,
                args.force,
                OPERATIONAL_KEY_LABEL,
                &print_progress,
            ))
            .map_err(|e| {
                let tls = is_tls_trust(&e);
                name_trusted_ca(e.into(), tls, trust_ca)
            })?
    } else {
        runtime
            .block_on(provision(
                &config,
                instance.clone(),
                attestation,
                &ctx.state_dir,
                args.force,
                &print_progress,
            ))
            .map_err(|e| {
                let tls = is_tls_trust(&e);
                name_trusted_ca(e.into(), tls, trust_ca)
            })?
    };
    if let (Some(days), Outcome::Reused) = (args.renew_before, outcome) {
        // Already provisioned with a certificate: renew it if it expires within DAYS days.
        drop(runtime);
        return super::renew::renew_and_print(
            ctx,
            &config,
            instance,
            provisioning_core::provisioning::RenewWhen::Within(Duration::from_secs(
                u64::from(days) * 86_400,
            )),
            args.json,
            started,
        );
    }
    let summary = ProvisionSummary::new(&record, outcome, started.elapsed());
    if args.json {
        print_json(&summary)?;
    } else {
        if summary.reused {
            println!("Already provisioned (saved result reused; --force registers again)");
        }
        println!("Registration Id: {}", summary.registration_id);
        println!("Assigned hub:    {}", summary.assigned_hub);
        println!("Device id:       {}", summary.device_id);
        println!("Attestation:     {}", summary.attestation);
        if let Some(substatus) = &summary.substatus {
            println!("Substatus:       {substatus}");
        }
        if let Some(payload) = &summary.payload {
            println!("Payload:         {payload}");
        }
        if let Some(label) = record.operational_key_label() {
            println!("Certificate:     issued, stored in the plugin under {label}");
        }
        println!("Time:            {} ms", summary.millis);
    }
    Ok(ExitCode::SUCCESS)
}
