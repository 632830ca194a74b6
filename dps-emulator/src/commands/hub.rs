//! `dps-emulator hub ...`: the emulated hubs' devices, stored telemetry, cloud-to-device
//! messages, twins and device status, on a state folder (of a running emulator or not; a
//! running one delivers queued messages and desired changes to connected devices within a
//! fraction of a second). Keys are never printed.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use dps_emulator::hub::{DeviceStatus, Hubs, MAX_C2D_BYTES};
use std::io::Read;

use super::StateArg;

#[derive(Args)]
pub(crate) struct HubArgs {
    #[command(subcommand)]
    pub(crate) cmd: HubCmd,
}

/// Which device: its id, and its hub when several hubs have that id.
#[derive(Args)]
pub(crate) struct DeviceArg {
    /// The device id.
    #[arg(long = "device")]
    device: String,
    /// The hub (needed only when several hubs have a device with this id).
    #[arg(long = "hub")]
    hub: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum HubCmd {
    /// List the hub devices (id, hub, status, authentication type, twin).
    Devices {
        #[command(flatten)]
        state: StateArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The telemetry a device sent, oldest first, with its properties.
    Messages {
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        state: StateArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a cloud-to-device message (delivered at QoS 1 to the device when it subscribes;
    /// removed once acknowledged).
    C2d {
        #[command(flatten)]
        device: DeviceArg,
        /// An application property `name=value` (repeat).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        #[command(flatten)]
        state: StateArg,
        /// Print JSON (`deviceId`, `hub`, `messageId`).
        #[arg(long)]
        json: bool,
        /// The message body, or `-` to read it from standard input.
        message: String,
    },
    /// Show a device's twin; with --desired, apply a desired-properties patch first (null
    /// deletes) and push it to the device when it is connected and subscribed.
    Twin {
        #[command(flatten)]
        device: DeviceArg,
        /// A JSON object: the desired-properties patch.
        #[arg(long)]
        desired: Option<String>,
        #[command(flatten)]
        state: StateArg,
    },
    /// Disable a device in its hub: its next CONNECT is refused (not authorized).
    Disable {
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        state: StateArg,
    },
    /// Enable a disabled device again.
    Enable {
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        state: StateArg,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not name=value"))?;
    Ok((k.to_string(), v.to_string()))
}

/// The body: the argument, or standard input for `-` (bounded: one byte over the limit is
/// enough to refuse).
fn body(message: &str) -> Result<Vec<u8>> {
    if message != "-" {
        return Ok(message.as_bytes().to_vec());
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_C2D_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading the message from standard input")?;
    Ok(buf)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

pub(crate) fn run(a: HubArgs) -> Result<()> {
    match a.cmd {
        HubCmd::Devices { state, json } => {
            let devices = Hubs::open(&state.state)?.devices()?;
            if json {
                let list: Vec<_> = devices.iter().map(|d| d.public_view()).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "devices": list }))?
                );
                return Ok(());
            }
            for d in &devices {
                println!(
                    "{} {} {:?} {} desired v{} reported v{}",
                    d.hub,
                    d.device_id,
                    d.status,
                    d.authentication.type_name(),
                    d.twin().desired_version().unwrap_or(0),
                    d.twin().reported_version().unwrap_or(0),
                );
            }
        }
        HubCmd::Messages {
            device,
            state,
            json,
        } => {
            let msgs = Hubs::open(&state.state)?.messages(&device.device, device.hub.as_deref())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "messages": msgs }))?
                );
                return Ok(());
            }
            for m in &msgs {
                let props: Vec<String> = m
                    .properties
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("{} [{}] {}", m.enqueued, props.join(" "), text(&m.body));
            }
        }
        HubCmd::C2d {
            device,
            properties,
            state,
            json,
            message,
        } => {
            let body = body(&message)?;
            if body.len() > MAX_C2D_BYTES {
                bail!("a cloud-to-device message is at most {MAX_C2D_BYTES} bytes");
            }
            let m = Hubs::open(&state.state)?.send_c2d(
                &device.device,
                device.hub.as_deref(),
                &properties,
                &body,
            )?;
            let mid = m
                .properties
                .iter()
                .find(|(k, _)| k == "$.mid")
                .map(|(_, v)| v.as_str())
                .unwrap_or("-");
            if json {
                println!(
                    "{}",
                    serde_json::json!({"deviceId": m.device_id, "hub": m.hub, "messageId": mid})
                );
            } else {
                println!("queued for {} in {}: message id {mid}", m.device_id, m.hub);
            }
        }
        HubCmd::Twin {
            device,
            desired,
            state,
        } => {
            let hubs = Hubs::open(&state.state)?;
            if let Some(patch) = desired {
                let patch: serde_json::Value =
                    serde_json::from_str(&patch).context("--desired is not JSON")?;
                hubs.update_desired(&device.device, device.hub.as_deref(), patch)?;
            }
            let d = hubs.device(&device.device, device.hub.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&d.twin())?);
        }
        HubCmd::Disable { device, state } => {
            Hubs::open(&state.state)?.set_status(
                &device.device,
                device.hub.as_deref(),
                DeviceStatus::Disabled,
            )?;
            println!("disabled {}", device.device);
        }
        HubCmd::Enable { device, state } => {
            Hubs::open(&state.state)?.set_status(
                &device.device,
                device.hub.as_deref(),
                DeviceStatus::Enabled,
            )?;
            println!("enabled {}", device.device);
        }
    }
    Ok(())
}
