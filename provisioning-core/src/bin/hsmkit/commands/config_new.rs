//! `hsmkit config new`: a commented config for one attestation and plugin (the role of
//! `aziotctl config mp`), written so that hsmkit reads it back as it is.

use crate::cli::ConfigNewArgs;
use crate::plugin_setup::Context_;
use anyhow::{bail, Context, Result};
use provisioning_core::dps::Attestation;
use provisioning_core::plugin::PluginSetting;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

/// Mode of the written file: readable by all (it holds no secret; PINs and keys live in their
/// own files), writable only by its owner, as the trust rules require.
const CONFIG_MODE: u32 = 0o644;

pub(super) fn run(ctx: &Context_, args: &ConfigNewArgs) -> Result<ExitCode> {
    let attestation: Attestation = args
        .attestation
        .parse()
        .map_err(|e| anyhow::anyhow!("--attestation: {e}"))?;
    // The plugin's declared settings, when it can be found here, become commented lines;
    // `config new` also works on a machine that does not have the plugin yet.
    let settings = ctx
        .search
        .find(&args.plugin)
        .ok()
        .and_then(|p| p.metadata().settings.clone());
    let text = render(args, attestation, settings.as_deref());
    match args.output.as_deref() {
        Some(p) if p == Path::new("-") => print!("{text}"),
        path => {
            let path = path.unwrap_or(Path::new(provisioning_core::config::DEFAULT_CONFIG_PATH));
            write_new(path, text.as_bytes(), args.force)?;
            eprintln!(
                "wrote {} ({}); check it with `hsmkit --config {} check`",
                path.display(),
                attestation.as_str(),
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A TOML string literal (basic string, escaped as TOML needs).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn render(
    args: &ConfigNewArgs,
    attestation: Attestation,
    settings: Option<&[PluginSetting]>,
) -> String {
    let mut t = String::new();
    let a = attestation.as_str();
    let _ = writeln!(
        t,
        "# hsmkit configuration, written by `hsmkit config new --attestation {a} --plugin {}`.",
        args.plugin
    );
    t.push_str(
        "# hsmkit reads /etc/hsmkit/config.toml when it exists; --config FILE or HSMKIT_CONFIG=FILE\n\
         # name another. Flags win over this file. Unknown keys are errors.\n\
         # `hsmkit check` verifies this file, the plugin, the state folder and the DPS connection.\n\n",
    );
    t.push_str(
        "# The HSM plugin: a name from `hsmkit plugins list`, or the path of a plugin .so.\n",
    );
    let _ = writeln!(t, "plugin = {}\n", quoted(&args.plugin));
    t.push_str(
        "# Where plugins are looked for. Default: plugins/ next to hsmkit, hsmkit's folder, then\n\
         # /usr/local/lib/hsmkit/plugins and /usr/lib/hsmkit/plugins.\n\
         # plugin_dir = \"/usr/lib/hsmkit/plugins\"\n\n\
         # Keys and the provisioning result (created 0700). Default: /var/lib/hsmkit for root.\n\
         # state_dir = \"/var/lib/hsmkit\"\n\n",
    );
    t.push_str("[provisioning]\n");
    let _ = writeln!(
        t,
        "# How the device proves its identity to DPS: tpm, x509 or symmetricKey.\nattestation = {}",
        quoted(a)
    );
    t.push_str("# Your DPS ID scope (Azure portal: DPS > Overview > ID Scope).\n");
    match &args.id_scope {
        Some(scope) => {
            let _ = writeln!(t, "id_scope = {}", quoted(scope));
        }
        None => t.push_str("# id_scope = \"0ne00000000\"\n"),
    }
    t.push_str("# endpoint = \"global.azure-devices-provisioning.net\"\n");
    match attestation {
        Attestation::Tpm => {
            t.push_str("# transport = \"https\"    # DPS offers TPM attestation over HTTPS only\n")
        }
        _ => t.push_str(
            "# transport = \"https\"    # or \"mqtt\" (port 8883) or \"mqtt-ws\" (port 443)\n",
        ),
    }
    t.push_str(
        "# trust_ca = \"/etc/hsmkit/dps-ca.pem\"   # an extra CA to trust (a test DPS)\n\
         # registration_id = \"my-device\"          # instead of the plugin's\n\
         # timeout_secs = 120\n\n",
    );
    let _ = writeln!(
        t,
        "# Settings for the plugin, as strings (`hsmkit plugins info {}` lists them).",
        args.plugin
    );
    let _ = writeln!(t, "[plugins.{}]", quoted_key(&args.plugin));
    match settings {
        Some(list) if !list.is_empty() => {
            for s in list {
                let need = if s.required { "required" } else { "optional" };
                let _ = writeln!(t, "# {} ({need}): {}", s.name, s.description);
                let _ = writeln!(t, "# {} = \"\"", s.name);
            }
        }
        Some(_) => t.push_str("# (this plugin has no settings of its own)\n"),
        None => t.push_str("# (plugin not found here: see its documentation for its settings)\n"),
    }
    t
}

/// A table key: bare when TOML allows, else quoted (a plugin path).
fn quoted_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        quoted(name)
    }
}

/// Writes `bytes` to `path` with mode 0644: a new temp file beside it (O_EXCL), synced, then
/// moved into place: renamed over an existing file with `force`, else hard-linked, which fails
/// if a file appeared meanwhile, so that an existing config is never replaced by accident.
fn write_new(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        bail!("{} exists; pass --force to replace it", path.display());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // /etc/hsmkit on a fresh machine: created readable by all and writable by its owner only,
    // which the trust rules for the config's folders require.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CONFIG_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        // The umask may have taken bits away; the mode is the point, so set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(CONFIG_MODE))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if force {
            std::fs::rename(&temp, path)
        } else {
            std::fs::hard_link(&temp, path)
        }
        .with_context(|| format!("cannot write {}", path.display()))
    })();
    if !force || result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
