//! `hsmkit renew` (and `provision --renew-before`): renew the operational certificate DPS
//! issued, through `provisioning_core::provisioning::renew`.

use super::provision::print_progress;
use crate::cli::RenewArgs;
use crate::output::print_json;
use crate::plugin_setup::Context_;
use anyhow::{anyhow, Context, Result};
use provisioning_core::dps::DpsClientConfig;
use provisioning_core::plugin::PluginInstance;
use provisioning_core::provisioning::{load, record_path, renew, RenewOutcome, RenewWhen};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `renew --json` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RenewSummary {
    pub registration_id: String,
    pub assigned_hub: String,
    pub device_id: String,
    /// `renewed` or `notDue`.
    pub status: &'static str,
    /// The label of the key the current certificate is for.
    pub operational_key_label: String,
    /// The current certificate's notAfter (RFC 3339, UTC).
    pub not_after: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_not_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_removed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub millis: u128,
}

/// Unix seconds as RFC 3339 UTC (`2026-11-30T12:00:00Z`).
fn rfc3339(unix: u64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(unix))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{unix}"))
}

impl RenewSummary {
    fn new(outcome: &RenewOutcome, elapsed: Duration) -> Self {
        match outcome {
            RenewOutcome::NotDue { not_after, record } => RenewSummary {
                registration_id: record.result.registration_id.clone(),
                assigned_hub: record.result.assigned_hub.clone(),
                device_id: record.result.device_id.clone(),
                status: "notDue",
                operational_key_label: record.operational_key_label().unwrap_or("").to_string(),
                not_after: rfc3339(*not_after),
                previous_key_label: None,
                previous_not_after: None,
                previous_key_removed: None,
                warning: None,
                millis: elapsed.as_millis(),
            },
            RenewOutcome::Renewed(r) => RenewSummary {
                registration_id: r.record.result.registration_id.clone(),
                assigned_hub: r.record.result.assigned_hub.clone(),
                device_id: r.record.result.device_id.clone(),
                status: "renewed",
                operational_key_label: r.new_label.clone(),
                not_after: rfc3339(r.new_not_after),
                previous_key_label: Some(r.old_label.clone()),
                previous_not_after: Some(rfc3339(r.old_not_after)),
                previous_key_removed: Some(r.old_key_removed),
                warning: r.warning.clone(),
                millis: elapsed.as_millis(),
            },
        }
    }

    /// The human-readable lines (stdout); the warning goes to stderr.
    fn print(&self) {
        if let Some(w) = &self.warning {
            eprintln!("warning: {w}");
        }
        if self.status == "notDue" {
            println!(
                "Not due: the operational certificate is valid until {} (nothing sent to DPS; --force renews now)",
                self.not_after
            );
        } else {
            println!(
                "Renewed:         operational certificate for {}",
                self.device_id
            );
        }
        println!("Registration Id: {}", self.registration_id);
        println!("Assigned hub:    {}", self.assigned_hub);
        println!("Device id:       {}", self.device_id);
        println!(
            "Certificate:     valid until {}, key under {}",
            self.not_after, self.operational_key_label
        );
        if let (Some(label), Some(removed)) = (&self.previous_key_label, self.previous_key_removed)
        {
            let fate = if removed {
                "removed"
            } else {
                "kept (see warning)"
            };
            println!("Previous key:    {label}, {fate}");
        }
        println!("Time:            {} ms", self.millis);
    }
}

/// The renewal's DPS settings: the id scope and endpoint come from the record (the library
/// uses the record's); transport, trust and timeout from the flags, then `[provisioning]`.
fn client_config(
    ctx: &Context_,
    id_scope: &str,
    transport: Option<&str>,
    trust_ca: Option<&Path>,
    timeout: Option<u64>,
) -> Result<DpsClientConfig> {
    let file = &ctx.config.provisioning;
    let mut config = DpsClientConfig::new(id_scope.to_string());
    if let Some(t) = transport
        .map(str::to_string)
        .or_else(|| file.transport.clone())
    {
        config.transport = t.parse()?;
    }
    if let Some(ca) = trust_ca
        .map(Path::to_path_buf)
        .or_else(|| file.trust_ca.clone())
    {
        // A CA file decides whom the device trusts: the same rules as for plugins.
        let pem = hsm_secure_fs::trust::read(&ca)
            .context("cannot use the CA certificate file (--trust-ca)")?;
        config.extra_trust_pem = Some(pem);
    }
    if let Some(t) = timeout.or(file.timeout_secs) {
        config.overall_timeout = Duration::from_secs(t.max(1));
    }
    Ok(config)
}

/// Renews through `instance` as `when` says and prints the outcome.
pub(super) fn renew_and_print(
    ctx: &Context_,
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    when: RenewWhen,
    json: bool,
    started: Instant,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(renew(
        config,
        instance,
        &ctx.state_dir,
        when,
        &print_progress,
    ))?;
    let summary = RenewSummary::new(&outcome, started.elapsed());
    if json {
        print_json(&summary)?;
    } else {
        summary.print();
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run(ctx: &Context_, args: &RenewArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let record = load(&ctx.state_dir)?.ok_or_else(|| {
        anyhow!(
            "the device is not provisioned yet ({} does not exist): run `hsmkit provision --issue-certificate` first",
            record_path(&ctx.state_dir).display()
        )
    })?;
    let config = client_config(
        ctx,
        &record.id_scope,
        args.transport.as_deref(),
        args.trust_ca.as_deref(),
        args.timeout,
    )?;
    let mut plugin_args = args.plugin.clone();
    if plugin_args.plugin.is_none() {
        plugin_args.plugin = Some(record.plugin.clone());
    }
    let plugin = ctx.load_plugin(&plugin_args)?;
    let instance = ctx.create_instance(&plugin, &plugin_args)?;
    let when = match (args.force, args.before) {
        (true, _) => RenewWhen::Always,
        (false, Some(days)) => RenewWhen::Within(Duration::from_secs(u64::from(days) * 86_400)),
        (false, None) => RenewWhen::Due,
    };
    renew_and_print(ctx, &config, instance, when, args.json, started)
}
