//! The tpm2 plugin's settings.

use hsm_plugin_sdk::{HsmError, PluginConfig, Setting};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where the DPS identity key is persisted unless `identity_handle` says otherwise (the
/// Azure C SDK's choice).
pub const DEFAULT_IDENTITY_HANDLE: u32 = 0x8100_0100;
/// The TCG persistent handle of the RSA EK.
pub const EK_HANDLE: u32 = 0x8101_0001;
/// The TCG persistent handle of the SRK.
pub const SRK_HANDLE: u32 = 0x8100_0001;
/// Used when neither `tcti` nor TPM2TOOLS_TCTI is set: the kernel resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Every key [`Tpm2Config::from_plugin_config`] reads (`state_dir` is implied); the SDK
/// refuses any other.
pub const SETTINGS: &[Setting] = &[
    Setting::optional(
        "tcti",
        "TPM connection: device:/dev/tpmrm0, tabrmd:, swtpm:host=H,port=P or mssim:...; default: $TPM2TOOLS_TCTI, else device:/dev/tpmrm0",
    ),
    Setting::optional(
        "identity_handle",
        "persistent handle of the DPS identity key (0x81000000-0x817FFFFF); default: 0x81000100",
    ),
    Setting::optional(
        "owner_auth",
        "owner hierarchy authValue (text, or hex:0011...); default: empty",
    ),
    Setting::optional(
        "endorsement_auth",
        "endorsement hierarchy authValue (text, or hex:0011...); default: empty",
    ),
    Setting::optional(
        "operational_key_persistent_handle",
        "persist the operational key (ABI 1.2) at this handle (0x81000000-0x817FFFFF, one key) instead of keeping it as a TPM-wrapped blob file under state_dir; default: blob files",
    ),
];

/// Parsed settings.
pub struct Tpm2Config {
    /// TCTI string (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `tabrmd:`...).
    pub tcti: String,
    /// Persistent handle for the identity key (owner range 0x81000000-0x817FFFFF).
    pub identity_handle: u32,
    /// Owner hierarchy authValue.
    pub owner_auth: Zeroizing<Vec<u8>>,
    /// Endorsement hierarchy authValue.
    pub endorsement_auth: Zeroizing<Vec<u8>>,
    /// Where operational keys are persisted instead of kept as blob files (one key), if set.
    pub operational_key_persistent_handle: Option<u32>,
    /// The plugin's state folder (operational key files live under `tpm2/operational/`);
    /// `None` when none could be found, which only operational keys need.
    pub state_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Tpm2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm2Config")
            .field("tcti", &self.tcti)
            .field(
                "identity_handle",
                &format_args!("{:#010x}", self.identity_handle),
            )
            .field(
                "operational_key_persistent_handle",
                &self
                    .operational_key_persistent_handle
                    .map(|h| format!("{h:#010x}")),
            )
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Parses the setting `key`, `0x81000100` or decimal, as a free owner persistent handle.
fn parse_handle(key: &str, value: &str) -> Result<u32, HsmError> {
    let v = value.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => v.parse(),
    };
    let handle = parsed.map_err(|_| {
        HsmError::invalid_argument(format!(
            "setting `{key}` must be a number like 0x81000100, got `{value}`"
        ))
    })?;
    if !(0x8100_0000..=0x817f_ffff).contains(&handle) || handle == SRK_HANDLE {
        return Err(HsmError::invalid_argument(format!(
            "setting `{key}` {handle:#010x} is not a free owner persistent handle \
             (0x81000000-0x817FFFFF, not the SRK's 0x81000001)"
        )));
    }
    Ok(handle)
}

/// An authValue: `hex:0011...` for binary, anything else taken as UTF-8 bytes (tpm2-tools'
/// `str:` default; a `str:` prefix is accepted too).
fn parse_auth(key: &str, value: Option<&str>) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let Some(v) = value else {
        return Ok(Zeroizing::new(Vec::new()));
    };
    if let Some(hex) = v.strip_prefix("hex:") {
        if hex.len() % 2 != 0 {
            return Err(HsmError::invalid_argument(format!(
                "setting `{key}` has an odd number of hex digits"
            )));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
        for pair in hex.as_bytes().chunks(2) {
            let digits = std::str::from_utf8(pair).ok();
            let byte = digits
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| {
                    HsmError::invalid_argument(format!("setting `{key}` is not valid hex"))
                })?;
            out.push(byte);
        }
        return Ok(out);
    }
    Ok(Zeroizing::new(
        v.strip_prefix("str:").unwrap_or(v).as_bytes().to_vec(),
    ))
}

impl Tpm2Config {
    /// Reads `tcti` (else TPM2TOOLS_TCTI, else [`DEFAULT_TCTI`]), `identity_handle`,
    /// `owner_auth`, `endorsement_auth`, `operational_key_persistent_handle` and the state
    /// folder. The operational key's handle must differ from the identity key's: persisting
    /// one would evict the other.
    pub fn from_plugin_config(config: &PluginConfig) -> Result<Self, HsmError> {
        let tcti = match config.get("tcti") {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => std::env::var("TPM2TOOLS_TCTI")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_TCTI.to_string()),
        };
        let identity_handle = match config.get("identity_handle") {
            Some(v) => parse_handle("identity_handle", v)?,
            None => DEFAULT_IDENTITY_HANDLE,
        };
        let operational_key_persistent_handle =
            match config.get("operational_key_persistent_handle") {
                Some(v) => Some(parse_handle("operational_key_persistent_handle", v)?),
                None => None,
            };
        if operational_key_persistent_handle == Some(identity_handle) {
            return Err(HsmError::invalid_argument(format!(
                "setting `operational_key_persistent_handle` {identity_handle:#010x} is the \
                 identity key's handle (`identity_handle`): choose another"
            )));
        }
        Ok(Self {
            tcti,
            identity_handle,
            owner_auth: parse_auth("owner_auth", config.get("owner_auth"))?,
            endorsement_auth: parse_auth("endorsement_auth", config.get("endorsement_auth"))?,
            operational_key_persistent_handle,
            // Resolved now, used (and created) only by the first operational-key call.
            state_dir: config.state_dir().ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_handles_and_auth() {
        let c = Tpm2Config::from_plugin_config(&PluginConfig::from_pairs([
            ("tcti", "swtpm:port=1"),
            ("identity_handle", "0x81000200"),
            ("owner_auth", "hex:00ff"),
            ("endorsement_auth", "secret"),
        ]))
        .unwrap();
        assert_eq!(c.tcti, "swtpm:port=1");
        assert_eq!(c.identity_handle, 0x8100_0200);
        assert_eq!(&c.owner_auth[..], &[0, 0xff]);
        assert_eq!(&c.endorsement_auth[..], b"secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.operational_key_persistent_handle, None);
        let c = Tpm2Config::from_plugin_config(&PluginConfig::from_pairs([
            ("operational_key_persistent_handle", "0x817FFFFF"),
            ("state_dir", "/tmp/x"),
        ]))
        .unwrap();
        assert_eq!(c.operational_key_persistent_handle, Some(0x817f_ffff));
        assert_eq!(c.state_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn refuses_bad_values() {
        for (k, v) in [
            ("identity_handle", "0x81000001"),
            ("identity_handle", "0x01000100"),
            ("identity_handle", "nope"),
            ("operational_key_persistent_handle", "0x81000001"),
            ("operational_key_persistent_handle", "0x81800000"),
            ("operational_key_persistent_handle", "0x80000001"),
            ("operational_key_persistent_handle", "0x81000100"),
            ("operational_key_persistent_handle", "x"),
            ("owner_auth", "hex:abc"),
            ("owner_auth", "hex:zz"),
        ] {
            let err = Tpm2Config::from_plugin_config(&PluginConfig::from_pairs([(k, v)]));
            assert!(err.is_err(), "{k}={v}");
        }
    }
}
