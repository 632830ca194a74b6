//! `hsmkit hub-token`: IoT Hub credentials for the provisioned device.

use crate::cli::HubTokenArgs;
use crate::output::print_json;
use crate::plugin_setup::Context_;
use anyhow::{anyhow, Result};
use provisioning_core::dps::Attestation;
use provisioning_core::provisioning::{hub_sas_token, load, record_path};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubCredentials {
    assigned_hub: String,
    device_id: String,
    attestation: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sas_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_chain_pem: Option<String>,
}

pub(super) fn run(ctx: &Context_, args: &HubTokenArgs) -> Result<ExitCode> {
    let record = load(&ctx.state_dir)?.ok_or_else(|| {
        anyhow!(
            "the device is not provisioned yet ({} does not exist): run `hsmkit provision` first",
            record_path(&ctx.state_dir).display()
        )
    })?;
    let mut plugin_args = args.plugin.clone();
    if plugin_args.plugin.is_none() {
        plugin_args.plugin = Some(record.plugin.clone());
    }
    let plugin = ctx.load_plugin(&plugin_args)?;
    let instance = ctx.create_instance(&plugin, &plugin_args)?;
    let attestation = record.attestation();
    let mut out = HubCredentials {
        assigned_hub: record.assigned_hub().to_string(),
        device_id: record.device_id().to_string(),
        attestation: attestation.as_str(),
        sas_token: None,
        expires_in_secs: None,
        certificate_chain_pem: None,
    };
    if attestation == Attestation::X509 {
        // X.509 devices authenticate to the hub with mutual TLS; the key stays in the plugin
        // (provisioning_core::provisioning::tls_client_config_signing_through_plugin).
        out.certificate_chain_pem = Some(instance.x509()?.certificate_chain_pem()?);
    } else {
        out.sas_token = Some(hub_sas_token(
            &instance,
            attestation,
            record.assigned_hub(),
            record.device_id(),
            args.ttl,
        )?);
        out.expires_in_secs = Some(args.ttl.as_secs());
    }
    if args.json {
        print_json(&out)?;
    } else if let Some(token) = &out.sas_token {
        println!("{token}");
    } else if let Some(chain) = &out.certificate_chain_pem {
        eprintln!(
            "X.509 device {} on {}: connect with mutual TLS using this chain; the private key stays in the HSM",
            out.device_id, out.assigned_hub
        );
        print!("{chain}");
    }
    Ok(ExitCode::SUCCESS)
}
