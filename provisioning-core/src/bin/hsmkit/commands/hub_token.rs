//! `hsmkit hub-token`: IoT Hub credentials for the provisioned device.

use crate::cli::HubTokenArgs;
use crate::output::print_json;
use crate::plugin_setup::Context_;
use anyhow::{anyhow, bail, Result};
use provisioning_core::provisioning::{hub_credentials, load, record_path};
use std::process::ExitCode;

pub(super) fn run(ctx: &Context_, args: &HubTokenArgs) -> Result<ExitCode> {
    let record = load(&ctx.state_dir)?.ok_or_else(|| {
        anyhow!(
            "the device is not provisioned yet ({} does not exist): run `hsmkit provision` first",
            record_path(&ctx.state_dir).display()
        )
    })?;
    if let Some(label) = record.operational_key_label() {
        bail!(
            "device {} on {} has an operational certificate issued by DPS (key {label}) and connects to IoT Hub with it over mutual TLS, not with a SAS token: use `hsmkit hub send`, `hsmkit hub twin` or `hsmkit hub listen`",
            record.device_id(),
            record.assigned_hub()
        );
    }
    let mut plugin_args = args.plugin.clone();
    if plugin_args.plugin.is_none() {
        plugin_args.plugin = Some(record.plugin.clone());
    }
    let plugin = ctx.load_plugin(&plugin_args)?;
    let instance = ctx.create_instance(&plugin, &plugin_args)?;
    let out = hub_credentials(&instance, &record, args.ttl)?;
    if args.json {
        print_json(&out)?;
    } else if let Some(token) = &out.sas_token {
        println!("{token}");
    } else if let Some(chain) = &out.certificate_chain_pem {
        eprintln!(
            "X.509 device {} on {}: it connects with mutual TLS using this chain, not a SAS token (`hsmkit hub send|twin|listen` does); the private key stays in the HSM",
            out.device_id, out.assigned_hub
        );
        print!("{chain}");
    }
    Ok(ExitCode::SUCCESS)
}
