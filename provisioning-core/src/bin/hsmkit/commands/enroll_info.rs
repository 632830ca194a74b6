//! `hsmkit enroll-info`: what a DPS enrollment for this device needs.

use crate::cli::EnrollInfoArgs;
use crate::output::print_json;
use crate::plugin_setup::{choose_attestation, Context_};
use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dps_proto::enrollment_file::{EnrollmentFile, ENROLLMENT_FILE};
use provisioning_core::dps::Attestation;
use provisioning_core::plugin::{PluginErrorCode, PluginInstance};
use provisioning_core::provisioning::enrollment_info;
use std::path::Path;
use std::process::ExitCode;
use zeroize::Zeroizing;

/// The enrollment information: `enrollment.json` as `dps-emulator enroll --from DIR` reads it
/// (dps-proto's schema, one for writer and reader).
pub(super) type EnrollmentInfo = EnrollmentFile;

pub(super) fn run(ctx: &Context_, args: &EnrollInfoArgs) -> Result<ExitCode> {
    let plugin = ctx.load_plugin(&args.plugin)?;
    let kind = choose_attestation(
        &plugin,
        args.attestation
            .as_deref()
            .or(ctx.config.provisioning.attestation.as_deref()),
    )?;
    let instance = ctx.create_instance(&plugin, &args.plugin)?;
    let info = collect(&instance, kind, args.group_key.as_deref())?;
    if let Some(dir) = &args.out {
        write_files(dir, &info)?;
    }
    if args.json {
        print_json(&info)?;
    } else {
        print_human(&info, args.out.as_deref());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the enrollment information through the plugin; for symmetric keys, also derives
/// the device key from `group_key_b64` or generates one, and imports it.
pub(super) fn collect(
    instance: &PluginInstance,
    kind: Attestation,
    group_key_b64: Option<&str>,
) -> Result<EnrollmentInfo> {
    let mut info = enrollment_info(instance, kind)?;
    if kind == Attestation::SymmetricKey {
        let sym = instance.symmetric_key()?;
        let has_key = match sym.sign(b"hsmkit key probe") {
            Ok(_) => true,
            Err(e) if e.code() == Some(PluginErrorCode::NotFound) => false,
            Err(e) => return Err(e.into()),
        };
        if let Some(group_key) = group_key_b64 {
            let group_key = Zeroizing::new(
                B64.decode(group_key.trim())
                    .context("--group-key is not valid base64")?,
            );
            let device_key =
                provisioning_core::dps::derive_group_device_key(&group_key, &info.registration_id);
            sym.import_key(Some(&info.registration_id), &device_key)?;
            info.primary_key = Some(Zeroizing::new(B64.encode(&**device_key)));
            info.note = Some(
                "device key derived from the enrollment-group key and imported into the HSM".into(),
            );
        } else if !has_key {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *key);
            sym.import_key(Some(&info.registration_id), &*key)?;
            info.primary_key = Some(Zeroizing::new(B64.encode(*key)));
            info.note = Some("new key generated and imported into the HSM; register primaryKey with DPS now, it is not shown again".into());
        } else {
            info.note = Some("the HSM already holds a key; it cannot be read back (create the enrollment with the key you imported, or re-key with --group-key)".into());
        }
    }
    Ok(info)
}

pub(super) fn write_files(dir: &Path, info: &EnrollmentInfo) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &[u8], secret: bool| -> Result<()> {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(text)?;
        Ok(())
    };
    let json = serde_json::to_vec_pretty(info)?;
    write(ENROLLMENT_FILE, &json, info.primary_key.is_some())?;
    for (name, text) in info.companions() {
        write(name, text.as_bytes(), false)?;
    }
    Ok(())
}

fn print_human(info: &EnrollmentInfo, out: Option<&Path>) {
    if let Some(plugin) = &info.plugin {
        println!("Plugin:          {plugin}");
    }
    println!("Attestation:     {}", info.attestation);
    println!("Registration Id: {}", info.registration_id);
    if let Some(ek) = &info.endorsement_key {
        println!("Endorsement Key: {ek}");
    }
    if let Some(c) = &info.certificates {
        if let Some(leaf) = &c.leaf_pem {
            println!(
                "Leaf certificate (individual enrollment):\n{}",
                leaf.trim_end()
            );
        }
        if let Some(root) = &c.root_ca_pem {
            println!(
                "Root CA certificate (group enrollment):\n{}",
                root.trim_end()
            );
        }
    }
    if let Some(k) = &info.primary_key {
        println!("Primary Key:     {}", k.as_str());
    }
    if let Some(n) = &info.note {
        println!("Note:            {n}");
    }
    if let Some(dir) = out {
        println!("Files written to {}", dir.display());
    }
}
