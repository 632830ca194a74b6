//! The plugin's configuration keys, parsed and checked once at `create`.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `state_dir` | state folder (the host always passes it) | SDK default |
//! | `uds_hex` | UDS as 64 hex characters (tests, manufacturing) | `<state_dir>/dice/uds` |
//! | `code_hash_hex` | code hash (FWID), 64 bytes as 128 hex characters | zeros |
//! | `config_hex` | inline configuration value, 64 bytes | zeros |
//! | `authority_hash_hex` | authority hash, 64 bytes | zeros |
//! | `mode` | `not-configured`, `normal`, `debug` or `maintenance` | `normal` |
//! | `registration_id` | DPS registration id (leaf CN) | `dice-<first 10 bytes of the DeviceID ID in hex>` |
//! | `root_ca_key_path` | PKCS#8 PEM P-256 key of the development root CA | `<state_dir>/dice/root-ca-key.pem`, created |
//! | `allow_key_export` | allow exporting the leaf private key | `false` |
//! | `cdi_extension_critical` | mark the CDI certificate's OpenDiceInput extension critical (open-dice's profile); `false` for verifiers that refuse unknown critical extensions, e.g. a DPS enrollment group | `true` |

use std::path::PathBuf;

use hsm_plugin_sdk::{PluginConfig, Setting};
use zeroize::Zeroizing;

use crate::derive::{DiceInputs, Mode, Secret32, CDI_SIZE, HASH_SIZE};
use crate::error::DiceError;

/// Every key [`DiceSettings::from_config`] reads (the table above; `state_dir` is implied).
/// The SDK refuses any other.
pub const SETTINGS: &[Setting] = &[
    Setting::optional(
        "uds_hex",
        "UDS as 64 hex characters (tests, manufacturing); default: <state_dir>/dice/uds, created",
    ),
    Setting::optional(
        "code_hash_hex",
        "code hash (FWID), 64 bytes as 128 hex characters; default: zeros",
    ),
    Setting::optional(
        "config_hex",
        "inline configuration value, 64 bytes as 128 hex characters; default: zeros",
    ),
    Setting::optional(
        "authority_hash_hex",
        "authority hash, 64 bytes as 128 hex characters; default: zeros",
    ),
    Setting::optional(
        "mode",
        "DICE mode: not-configured, normal, debug or maintenance; default: normal",
    ),
    Setting::optional(
        "registration_id",
        "DPS registration id (leaf CN); default: dice-<first 10 bytes of the DeviceID ID in hex>",
    ),
    Setting::optional(
        "root_ca_key_path",
        "PKCS#8 PEM P-256 key of the development root CA; default: <state_dir>/dice/root-ca-key.pem, created",
    ),
    Setting::optional(
        "allow_key_export",
        "allow exporting the leaf private key (true/false); default: false",
    ),
    Setting::optional(
        "cdi_extension_critical",
        "mark the CDI certificate's OpenDiceInput extension critical (true/false); default: true",
    ),
];

/// Longest registration id DPS accepts.
pub const MAX_REGISTRATION_ID_LEN: usize = 128;

/// Where the UDS comes from.
#[derive(Debug)]
pub enum UdsSource {
    /// Given in the configuration (`uds_hex`).
    Configured(Secret32),
    /// The state folder's UDS file, created on first use.
    StateFile,
}

/// Everything `create` needs, validated.
#[derive(Debug)]
pub struct DiceSettings {
    /// The state folder.
    pub state_dir: PathBuf,
    /// The UDS source.
    pub uds: UdsSource,
    /// The measured inputs of the layer.
    pub inputs: DiceInputs,
    /// An explicit registration id, already validated.
    pub registration_id: Option<String>,
    /// A given root CA key file.
    pub root_ca_key_path: Option<PathBuf>,
    /// Whether the leaf private key may be exported.
    pub allow_key_export: bool,
    /// Whether the CDI certificate's OpenDiceInput extension is critical.
    pub cdi_extension_critical: bool,
}

/// Decodes `hex` of exactly `N` bytes; the error names the key but never echoes the value.
fn fixed_hex<const N: usize>(
    key: &'static str,
    hex: &str,
) -> Result<Zeroizing<[u8; N]>, DiceError> {
    let hex = hex.trim();
    if hex.len() != 2 * N {
        return Err(DiceError::setting(
            key,
            format!(
                "expected {} hex characters ({N} bytes), got {}",
                2 * N,
                hex.len()
            ),
        ));
    }
    // Zeroizing also wipes a partly decoded secret when decoding fails half way.
    let mut out = Zeroizing::new([0u8; N]);
    hex::decode_to_slice(hex, &mut out[..])
        .map_err(|_| DiceError::setting(key, "is not hexadecimal"))?;
    Ok(out)
}

fn optional_hash(config: &PluginConfig, key: &'static str) -> Result<[u8; HASH_SIZE], DiceError> {
    match config.get(key) {
        Some(value) => fixed_hex::<HASH_SIZE>(key, value).map(|hash| *hash),
        None => Ok([0; HASH_SIZE]),
    }
}

/// Checks a DPS registration id: 1 to 128 characters of lowercase letters, digits and
/// `- . _ :`, the set DPS accepts for individual and group enrollments.
pub fn validate_registration_id(id: &str) -> Result<(), DiceError> {
    if id.is_empty() || id.len() > MAX_REGISTRATION_ID_LEN {
        return Err(DiceError::setting(
            "registration_id",
            format!(
                "must be 1 to {MAX_REGISTRATION_ID_LEN} characters, got {}",
                id.len()
            ),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(*c)))
    {
        return Err(DiceError::setting(
            "registration_id",
            format!("character {bad:?} is not allowed (lowercase letters, digits, - . _ : only)"),
        ));
    }
    Ok(())
}

impl DiceSettings {
    /// Parses and validates the plugin configuration.
    pub fn from_config(config: &PluginConfig) -> Result<Self, DiceError> {
        let uds = match config.get("uds_hex") {
            Some(value) => {
                let raw = fixed_hex::<CDI_SIZE>("uds_hex", value)?;
                UdsSource::Configured(Secret32::new(*raw))
            }
            None => UdsSource::StateFile,
        };
        let mode = match config.get("mode") {
            Some(value) => value
                .trim()
                .parse::<Mode>()
                .map_err(|reason| DiceError::setting("mode", reason))?,
            None => Mode::Normal,
        };
        let inputs = DiceInputs {
            code_hash: optional_hash(config, "code_hash_hex")?,
            config: optional_hash(config, "config_hex")?,
            authority_hash: optional_hash(config, "authority_hash_hex")?,
            mode,
            hidden: [0; HASH_SIZE],
        };
        let registration_id = config.get("registration_id").map(str::to_owned);
        if let Some(id) = &registration_id {
            validate_registration_id(id)?;
        }
        Ok(DiceSettings {
            state_dir: config.state_dir()?,
            uds,
            inputs,
            registration_id,
            root_ca_key_path: config.get("root_ca_key_path").map(PathBuf::from),
            allow_key_export: config.get_bool("allow_key_export", false)?,
            cdi_extension_critical: config.get_bool("cdi_extension_critical", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<DiceSettings, DiceError> {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![("state_dir", dir.path().to_str().unwrap())];
        all.extend_from_slice(pairs);
        DiceSettings::from_config(&PluginConfig::from_pairs(all))
    }

    #[test]
    fn defaults_are_normal_mode_zero_inputs_no_export() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.inputs, DiceInputs::zero(Mode::Normal));
        assert!(!s.allow_key_export);
        assert!(s.cdi_extension_critical, "open-dice's profile by default");
        assert!(matches!(s.uds, UdsSource::StateFile));
    }

    #[test]
    fn bad_values_name_the_key_and_hide_the_secret() {
        let secret = "zz".repeat(32);
        let e = settings(&[("uds_hex", &secret)]).unwrap_err().to_string();
        assert!(e.contains("uds_hex") && !e.contains(&secret), "{e}");
        let e = settings(&[("uds_hex", "00")]).unwrap_err().to_string();
        assert!(e.contains("64 hex characters"), "{e}");
        let e = settings(&[("code_hash_hex", "00")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("code_hash_hex") && e.contains("128"), "{e}");
        let e = settings(&[("mode", "turbo")]).unwrap_err().to_string();
        assert!(e.contains("mode"), "{e}");
        assert!(settings(&[("allow_key_export", "perhaps")]).is_err());
        let e = settings(&[("cdi_extension_critical", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cdi_extension_critical"), "{e}");
        assert!(
            !settings(&[("cdi_extension_critical", "false")])
                .unwrap()
                .cdi_extension_critical
        );
    }

    #[test]
    fn registration_ids_follow_dps_rules() {
        assert!(validate_registration_id("dice-0a1b.c_d:e").is_ok());
        assert!(validate_registration_id("Upper").is_err());
        assert!(validate_registration_id("").is_err());
        assert!(validate_registration_id("a b").is_err());
        assert!(validate_registration_id(&"a".repeat(129)).is_err());
        assert!(validate_registration_id(&"a".repeat(128)).is_ok());
        assert!(settings(&[("registration_id", "Bad/Id")]).is_err());
    }
}
