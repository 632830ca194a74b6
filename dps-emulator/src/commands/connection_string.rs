//! `dps-emulator connection-string`: the service API connection string (secret) for a host.

use anyhow::{Context, Result};
use base64::Engine;
use std::path::Path;

pub(crate) fn run(state: &Path, host: &str) -> Result<()> {
    let key = dps_emulator::service_key(state)?;
    let key_str: &str = &key;
    // A corrupt key file would give a connection string that can never authenticate.
    base64::engine::general_purpose::STANDARD
        .decode(key_str)
        .context("the stored service key is corrupt")?;
    println!(
        "HostName={host};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={key_str}"
    );
    Ok(())
}
