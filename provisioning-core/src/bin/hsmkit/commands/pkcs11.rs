//! `hsmkit pkcs11 ...`: the PKCS#11 device set-up tool, kept in its own binary so that the
//! device's main executable does not link a PKCS#11 stack it may never use.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const TOOL: &str = "hsmkit-pkcs11";

pub(super) fn run(args: &[String]) -> Result<ExitCode> {
    let tool = locate()?;
    let status = Command::new(&tool)
        .args(args)
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
