//! `hsmkit pkcs11 ...`: the PKCS#11 device set-up tool, kept in its own binary so that the
//! device's main executable does not link a PKCS#11 stack it may never use.

use crate::plugin_setup::Context_;
use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const TOOL: &str = "hsmkit-pkcs11";

/// `[plugins.pkcs11]` keys the tool takes, and the variables it reads them from (its flags'
/// `env`): the token the plugin will use is the one set up.
const FROM_CONFIG: &[(&str, &str)] = &[
    ("module", "HSMKIT_PKCS11_MODULE"),
    ("token_uri", "HSMKIT_PKCS11_TOKEN_URI"),
    ("pin_file", "HSMKIT_PKCS11_PIN_FILE"),
    ("pin_env", "HSMKIT_PKCS11_PIN_ENV"),
];

pub(super) fn run(ctx: &Context_, args: &[String]) -> Result<ExitCode> {
    let tool = locate()?;
    let mut command = Command::new(&tool);
    // Its usage lines then read `hsmkit pkcs11 init ...`, the command the user typed (clap
    // takes the program name from argv[0]).
    command.arg0("hsmkit pkcs11").args(args);
    for (key, value) in ctx.config.plugin_settings("pkcs11") {
        if let Some((_, var)) = FROM_CONFIG.iter().find(|(k, _)| *k == key) {
            command.env(var, value);
        }
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// Next to this executable first (a build or an install keeps them together), then PATH.
fn locate() -> Result<PathBuf> {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        let candidate = dir.join(TOOL);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(TOOL))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{TOOL} not found next to hsmkit or in PATH: build it with `cargo build -p hsmkit-backend-pkcs11`")
        })
}
