//! `hsmkit demo`: the whole flow on one machine with no cloud and no hardware. A DPS emulator
//! starts in-process over real TLS; each software plugin prints its enrollment information,
//! which is enrolled in the emulator exactly as `dps-emulator enroll --from DIR` would; then
//! each device provisions through its plugin and the results are printed as a table. With
//! `--transport mqtt` the emulator's MQTT listener is on and the devices provision over MQTT;
//! TPM plugins are skipped with the reason (DPS offers TPM attestation over HTTPS only).
//! Each provisioned device then connects to its assigned (emulated) hub over MQTT with the
//! same identity, sends one message and reads its twin, whose desired properties are the
//! enrollment's initialTwin.

use super::enroll_info::{collect, write_files};
use super::provision::{print_progress, ProvisionSummary};
use crate::cli::{DemoArgs, PluginArgs};
use crate::output::{print_json, print_table};
use crate::plugin_setup::{choose_attestation, Context_};
use anyhow::{Context, Result};
use dps_emulator::enroll_files::{EnrollmentInfo as EnrollmentFiles, EnrollmentInfoExt};
use dps_emulator::{Emulator, EmulatorConfig};
use provisioning_core::dps::{Attestation, DpsClientConfig, Transport};
use provisioning_core::hub::{HubClient, HubOptions};
use provisioning_core::provisioning::provision;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Serialize)]
struct DemoRow {
    #[serde(flatten)]
    summary: Option<ProvisionSummary>,
    plugin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Why the plugin was not provisioned over this transport (not a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
    /// What the device did on its hub after provisioning.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub: Option<HubCheck>,
}

/// One message sent and the twin read on the assigned hub.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubCheck {
    /// The message was acknowledged (PUBACK).
    message_acknowledged: bool,
    /// The twin's desired properties: the enrollment's initialTwin.
    desired: serde_json::Map<String, serde_json::Value>,
    /// Connect, send and twin, in milliseconds.
    millis: u128,
}

/// The initialTwin every demo enrollment gets, which each device then reads from its hub.
fn demo_initial_twin() -> serde_json::Value {
    serde_json::json!({"tags": {"demo": true}, "properties": {"desired": {"telemetryInterval": 30}}})
}

/// What became of one plugin.
enum Provisioned {
    Done(Box<ProvisionSummary>, HubCheck),
    Skipped(String),
}

#[derive(Serialize)]
struct DemoReport {
    results: Vec<DemoRow>,
    #[serde(rename = "emulatorEndpoint")]
    emulator_endpoint: String,
    transport: String,
    #[serde(rename = "stateDir")]
    state_dir: String,
}

pub(super) fn run(ctx: &Context_, args: &DemoArgs) -> Result<ExitCode> {
    let temp;
    let chosen = ctx.state_dir_chosen.then_some(ctx.state_dir.as_path());
    let root: PathBuf = match (&args.keep_state, chosen) {
        (Some(Some(dir)), _) => dir.clone(),
        (Some(None), Some(dir)) => dir.to_path_buf(),
        (Some(None), None) => tempfile::Builder::new()
            .prefix("hsmkit-demo-")
            .tempdir()
            .context("cannot create a temporary folder")?
            .keep(),
        (None, Some(dir)) => {
            // Removed at the end with everything in it, so never the named folder itself.
            provisioning_core::state_dir::prepare_state_dir(dir)?;
            temp = tempfile::Builder::new()
                .prefix("demo-")
                .tempdir_in(dir)
                .with_context(|| format!("cannot create a folder in {}", dir.display()))?;
            temp.path().to_path_buf()
        }
        (None, None) => {
            temp = tempfile::tempdir().context("cannot create a temporary folder")?;
            temp.path().to_path_buf()
        }
    };
    if args.keep_state.is_some() {
        eprintln!("demo state kept in {}", root.display());
    }
    let transport: Transport = args.transport.parse()?;
    provisioning_core::state_dir::prepare_state_dir(&root)?;
    let mut emulator_config = EmulatorConfig::new(root.join("emulator"));
    // The hubs are served on the MQTT listener: on for every transport, since each device
    // goes on to its hub.
    emulator_config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let loopback = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    match transport {
        Transport::Mqtt => emulator_config.mqtt_listen = loopback,
        Transport::MqttWs => emulator_config.mqtt_ws_listen = loopback,
        Transport::Https => {}
    }
    let emulator =
        Emulator::start_in_background(emulator_config).context("cannot start the DPS emulator")?;
    let endpoint = match (transport, emulator.mqtt_addr(), emulator.mqtt_ws_addr()) {
        (Transport::Mqtt, Some(at), _) => format!("127.0.0.1:{}", at.port()),
        (Transport::MqttWs, _, Some(at)) => format!("wss://127.0.0.1:{}", at.port()),
        _ => emulator.endpoint(),
    };
    if !args.json {
        let shown = match transport {
            Transport::Mqtt => format!("mqtts://{endpoint}"),
            _ => endpoint.clone(),
        };
        eprintln!(
            "DPS emulator on {shown} (id scope {}, dev CA {})",
            emulator.id_scope(),
            emulator.ca_cert_path().display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let mut rows = Vec::new();
    for name in &args.plugins {
        let target = Target {
            emulator: &emulator,
            endpoint: &endpoint,
            transport,
        };
        let outcome = provision_one(ctx, &target, &runtime, &root, name, args.json);
        rows.push(match outcome {
            Ok(Provisioned::Done(summary, hub)) => DemoRow {
                plugin: summary.plugin.clone(),
                summary: Some(*summary),
                error: None,
                skipped: None,
                hub: Some(hub),
            },
            Ok(Provisioned::Skipped(why)) => DemoRow {
                plugin: name.clone(),
                summary: None,
                error: None,
                skipped: Some(why),
                hub: None,
            },
            Err(e) => DemoRow {
                plugin: name.clone(),
                summary: None,
                error: Some(format!("{e:#}")),
                skipped: None,
                hub: None,
            },
        });
    }
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let report = DemoReport {
        results: rows,
        emulator_endpoint: emulator.endpoint(),
        transport: transport.to_string(),
        state_dir: root.display().to_string(),
    };
    if args.json {
        // The rows name the plugin once, from the summary when there is one.
        let mut value = serde_json::to_value(&report)?;
        if let Some(results) = value.get_mut("results").and_then(|r| r.as_array_mut()) {
            for r in results {
                if let Some(obj) = r.as_object_mut() {
                    for key in ["error", "skipped"] {
                        if obj.get(key).is_some_and(|v| v.is_null()) {
                            obj.remove(key);
                        }
                    }
                }
            }
        }
        print_json(&value)?;
    } else {
        let table: Vec<Vec<String>> = report
            .results
            .iter()
            .map(|r| match (&r.summary, &r.error, &r.skipped) {
                (None, None, Some(why)) => vec![
                    r.plugin.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "SKIPPED".into(),
                    why.clone(),
                    "-".into(),
                ],
                (Some(s), _, _) => vec![
                    s.plugin.clone(),
                    s.attestation.clone(),
                    s.registration_id.clone(),
                    s.assigned_hub.clone(),
                    s.status.clone(),
                    format!("{} ms", s.millis),
                    r.hub
                        .as_ref()
                        .map(|h| format!("message acknowledged, twin read ({} ms)", h.millis))
                        .unwrap_or_else(|| "-".into()),
                ],
                (None, e, _) => vec![
                    r.plugin.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "FAILED".into(),
                    e.clone().unwrap_or_default(),
                    "-".into(),
                ],
            })
            .collect();
        print_table(
            &[
                "PLUGIN",
                "ATTESTATION",
                "REGISTRATION ID",
                "ASSIGNED HUB",
                "STATUS",
                "TIME",
                "HUB",
            ],
            &table,
        );
    }
    emulator.shutdown();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where the demo's devices provision.
struct Target<'a> {
    emulator: &'a dps_emulator::BackgroundEmulator,
    /// `https://...` or, for MQTT, `127.0.0.1:PORT` of the MQTT listener.
    endpoint: &'a str,
    transport: Transport,
}

fn provision_one(
    ctx: &Context_,
    target: &Target<'_>,
    runtime: &tokio::runtime::Runtime,
    root: &std::path::Path,
    name: &str,
    quiet: bool,
) -> Result<Provisioned> {
    let emulator = target.emulator;
    let started = Instant::now();
    let device_state = root.join("devices").join(name);
    let device_ctx = Context_ {
        config: Default::default(),
        search: ctx.search.clone(),
        state_dir: device_state.clone(),
        state_dir_chosen: true,
    };
    let mut plugin_args = PluginArgs {
        plugin: Some(name.to_string()),
        settings: ctx.config.plugin_settings(name),
    };
    if name == "symmetric"
        && !plugin_args
            .settings
            .iter()
            .any(|(k, _)| k == "registration_id")
    {
        plugin_args
            .settings
            .push(("registration_id".into(), "demo-symmetric-device".into()));
    }
    let plugin = device_ctx.load_plugin(&plugin_args)?;
    let attestation = choose_attestation(&plugin, None)?;
    if attestation == Attestation::Tpm && target.transport != Transport::Https {
        return Ok(Provisioned::Skipped(format!(
            "DPS offers TPM attestation over HTTPS only, not over {}",
            target.transport
        )));
    }
    let instance = device_ctx.create_instance(&plugin, &plugin_args)?;

    // Enrollment: the files enroll-info writes, read back by the emulator's own reader.
    let info = collect(&instance, attestation, None)?;
    let files = device_state.join("enrollment");
    write_files(&files, &info)?;
    let enrollment = EnrollmentFiles::read_dir(&files)
        .with_context(|| format!("the emulator cannot read {}", files.display()))?;
    let mut individual = enrollment.individual();
    individual.common.initial_twin = Some(demo_initial_twin());
    emulator
        .enrollments()
        .create_individual(individual)
        .context("cannot create the enrollment")?;

    let mut config = DpsClientConfig::new(emulator.id_scope());
    config.endpoint = target.endpoint.to_string();
    config.transport = target.transport;
    config.extra_trust_pem = Some(emulator.ca_cert_pem().as_bytes().to_vec());
    config.trust_public_roots = false;
    let progress = |e: &provisioning_core::dps::ProgressEvent| {
        if !quiet {
            print_progress(e)
        }
    };
    let (record, outcome) = runtime.block_on(provision(
        &config,
        instance.clone(),
        attestation,
        &device_state,
        true,
        &progress,
    ))?;
    let summary = ProvisionSummary::new(&record, outcome, started.elapsed());
    let hub = runtime
        .block_on(hub_check(emulator, &record, instance))
        .with_context(|| {
            format!(
                "provisioned, but the device's hub {} failed",
                record.assigned_hub()
            )
        })?;
    if !quiet {
        eprintln!(
            "{} on {}: message acknowledged, twin desired {}",
            record.device_id(),
            record.assigned_hub(),
            serde_json::Value::Object(hub.desired.clone())
        );
    }
    Ok(Provisioned::Done(Box::new(summary), hub))
}

/// Connects the provisioned device to its hub on the emulator's MQTT listener (TLS verifying
/// the hub's name), sends one message and reads the twin.
async fn hub_check(
    emulator: &dps_emulator::BackgroundEmulator,
    record: &provisioning_core::provisioning::ProvisioningRecord,
    instance: std::sync::Arc<provisioning_core::plugin::PluginInstance>,
) -> Result<HubCheck> {
    let started = Instant::now();
    let at = emulator
        .mqtt_addr()
        .context("the emulator has no MQTT listener for its hubs")?;
    let options = HubOptions {
        endpoint: Some(format!("127.0.0.1:{}", at.port())),
        extra_trust_pem: Some(emulator.ca_cert_pem().as_bytes().to_vec()),
        trust_public_roots: false,
        ..HubOptions::default()
    };
    let hub = HubClient::connect(record, instance, options).await?;
    let body = serde_json::json!({"demo": true, "deviceId": record.device_id()}).to_string();
    let sent = hub
        .send(
            body.into_bytes(),
            &[("$.ct".into(), "application/json".into())],
        )
        .await;
    let twin = hub.twin().await;
    hub.close().await;
    sent?;
    let mut desired = twin?.desired;
    desired.remove("$version");
    Ok(HubCheck {
        message_acknowledged: true,
        desired,
        millis: started.elapsed().as_millis(),
    })
}
