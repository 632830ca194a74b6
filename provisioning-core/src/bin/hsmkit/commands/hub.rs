//! `hsmkit hub send|twin|listen`: the provisioned device talking to its IoT hub through
//! `provisioning_core::hub::HubClient`.

use super::provision::{name_trusted_ca, trust_ca_setting};
use crate::cli::{HubCommand, HubCommonArgs, HubListenArgs, HubSendArgs, HubTwinArgs};
use crate::failure::config as config_error;
use crate::output::print_json;
use crate::plugin_setup::Context_;
use anyhow::{anyhow, Context, Result};
use base64::Engine;
use provisioning_core::hub::{HubClient, HubError, HubEvent, HubOptions};
use provisioning_core::provisioning::{load, record_path};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

pub(super) fn run(ctx: &Context_, cmd: HubCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cmd {
        HubCommand::Send(args) => runtime.block_on(send(ctx, args)),
        HubCommand::Twin(args) => runtime.block_on(twin(ctx, args)),
        HubCommand::Listen(args) => runtime.block_on(listen(ctx, args)),
    }
}

/// Loads the record and the plugin, and connects.
async fn connect(ctx: &Context_, common: &HubCommonArgs) -> Result<HubClient> {
    let record = load(&ctx.state_dir)?.ok_or_else(|| {
        config_error(format!(
            "the device is not provisioned yet ({} does not exist): run `hsmkit provision` first",
            record_path(&ctx.state_dir).display()
        ))
    })?;
    let mut plugin_args = common.plugin.clone();
    if plugin_args.plugin.is_none() {
        plugin_args.plugin = Some(record.plugin.clone());
    }
    let plugin = ctx.load_plugin(&plugin_args)?;
    let instance = ctx.create_instance(&plugin, &plugin_args)?;
    let mut options = HubOptions {
        endpoint: common.hub_endpoint.clone(),
        websocket: common.websocket,
        sas_lifetime: common.sas_lifetime,
        connect_timeout: Duration::from_secs(common.timeout.max(1)),
        operation_timeout: Duration::from_secs(common.timeout.max(1)),
        ..HubOptions::default()
    };
    let trust_ca = trust_ca_setting(&common.trust_ca, &ctx.config.provisioning.trust_ca);
    if let Some((ca, from)) = trust_ca {
        // The same rules and checks as for DPS.
        options.extra_trust_pem = Some(super::provision::read_trust_ca(ca, from)?);
    }
    eprintln!(
        "connecting to {} as {} ...",
        record.assigned_hub(),
        record.device_id()
    );
    HubClient::connect(&record, instance, options)
        .await
        .map_err(|e| {
            let tls = matches!(e, HubError::TlsTrust { .. });
            name_trusted_ca(e.into(), tls, trust_ca)
        })
}

async fn send(ctx: &Context_, args: HubSendArgs) -> Result<ExitCode> {
    let body = if args.message == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the message from standard input")?;
        buf
    } else {
        args.message.clone().into_bytes()
    };
    let hub = connect(ctx, &args.common).await?;
    let sent = hub.send(body.clone(), &args.properties).await;
    let (hub_name, device) = (hub.hub().to_string(), hub.device_id().to_string());
    hub.close().await;
    sent?;
    if args.common.json {
        print_json(&json!({
            "assignedHub": hub_name,
            "deviceId": device,
            "bytes": body.len(),
            "properties": properties_object(&args.properties),
            "acknowledged": true,
        }))?;
    } else {
        println!(
            "sent {} bytes to {hub_name} as {device} (acknowledged)",
            body.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn twin(ctx: &Context_, args: HubTwinArgs) -> Result<ExitCode> {
    let patch = match &args.report {
        Some(text) => {
            let v: Value = serde_json::from_str(text).context("--report is not valid JSON")?;
            if !v.is_object() {
                anyhow::bail!(
                    "--report must be a JSON object, such as '{{\"firmware\": \"1.2.0\"}}'"
                );
            }
            Some(v)
        }
        None => None,
    };
    let hub = connect(ctx, &args.common).await?;
    let result = match &patch {
        Some(p) => hub.report(p).await.map(Err),
        None => hub.twin().await.map(Ok),
    };
    hub.close().await;
    match result? {
        Ok(twin) => {
            // The twin is JSON either way; --json prints it on one line.
            if args.common.json {
                println!("{}", serde_json::to_string(&twin)?);
            } else {
                print_json(&twin)?;
            }
        }
        Err(version) => {
            if args.common.json {
                println!("{}", json!({ "reportedVersion": version }));
            } else {
                println!("reported properties stored (version {version})");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn listen(ctx: &Context_, args: HubListenArgs) -> Result<ExitCode> {
    let hub = connect(ctx, &args.common).await?;
    let mut events = hub.events()?;
    // Ctrl-C (SIGINT) and SIGTERM stop it cleanly (DISCONNECT). Registered before saying that
    // it listens, so a signal from then on is never the default kill.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    eprintln!("listening for C2D messages and desired-property changes (Ctrl-C to stop)");
    let mut received = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|n| received >= n) {
            break Ok(());
        }
        let event = tokio::select! {
            e = events.recv() => e,
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
        };
        let Some(event) = event else {
            break Err(anyhow!("the connection to the hub ended"));
        };
        match event {
            HubEvent::Disconnected { reason } => {
                eprintln!("disconnected: {reason}");
                continue;
            }
            HubEvent::Reconnected => {
                eprintln!("reconnected");
                continue;
            }
            e => {
                print_event(&e, args.common.json);
                received += 1;
            }
        }
    };
    hub.close().await;
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// One line per event: JSON (`--json`) or `message k=v ...: body` / `desired vN {patch}`.
fn print_event(event: &HubEvent, as_json: bool) {
    match event {
        HubEvent::Message(m) => {
            if as_json {
                let mut line = json!({
                    "type": "message",
                    "properties": properties_object(&m.properties),
                });
                match std::str::from_utf8(&m.body) {
                    Ok(text) => line["body"] = Value::String(text.to_string()),
                    Err(_) => {
                        line["bodyBase64"] =
                            Value::String(base64::engine::general_purpose::STANDARD.encode(&m.body))
                    }
                }
                println!("{line}");
            } else {
                let props: Vec<String> = m
                    .properties
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "message [{}]: {}",
                    props.join(" "),
                    String::from_utf8_lossy(&m.body).escape_debug()
                );
            }
        }
        HubEvent::DesiredPatch(d) => {
            if as_json {
                println!(
                    "{}",
                    json!({"type": "desired", "version": d.version, "patch": d.patch})
                );
            } else {
                println!("desired v{}: {}", d.version, d.patch);
            }
        }
        HubEvent::Disconnected { .. } | HubEvent::Reconnected => {}
    }
}

fn properties_object(properties: &[(String, String)]) -> Value {
    Value::Object(
        properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}
