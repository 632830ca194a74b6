//! Command-line definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Prove a device's identity to Azure IoT Hub DPS with whatever secure hardware it has.
///
/// The HSM is a plugin (a shared library) picked by name: dice, tpm-sim, tpm2, pkcs11,
/// symmetric, or a vendor's. Settings come from a TOML file (--config, else HSMKIT_CONFIG,
/// else /etc/hsmkit/config.toml when it exists),
/// and every plugin setting can also be given with --set key=value.
#[derive(Debug, Parser)]
#[command(
    name = "hsmkit",
    version,
    propagate_version = true,
    after_help = top_after_help()
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// `hsmkit --help`'s closing text: examples, then the exit codes from the one mapping
/// (`provisioning_core::error_kind`).
fn top_after_help() -> String {
    let mut text = String::from(
        "Examples:
  hsmkit plugins list
  hsmkit enroll-info --plugin tpm-sim --out enroll/
  hsmkit provision --plugin tpm2 --set tcti=device:/dev/tpmrm0 --id-scope 0ne0012345
  hsmkit provision --plugin dice --id-scope 0ne00000001 --endpoint 127.0.0.1:8443 --trust-ca dev-ca.pem
  hsmkit provision --plugin symmetric --transport mqtt --id-scope 0ne0012345
  hsmkit hub-token --ttl 1h
  hsmkit hub send --property unit=C '{\"t\": 21.5}'
  hsmkit hub twin --get
  hsmkit demo --json

Exit codes (`check` exits 1 when a check failed):
  0  success\n",
    );
    for kind in provisioning_core::error_kind::ErrorKind::ALL {
        text.push_str(&format!(
            "  {}  {}: {}\n",
            kind.exit_code(),
            kind.as_str(),
            kind.summary()
        ));
    }
    text.push_str(
        "With --json a failure prints {\"error\": {\"kind\", \"message\", \"hint\"}} on stdout, kind as above.",
    );
    text
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Configuration file (TOML), first of: --config, HSMKIT_CONFIG, /etc/hsmkit/config.toml
    /// if it exists. See hsmkit.example.toml and `hsmkit config new`; `hsmkit check` and -v
    /// say which one was used.
    #[arg(long, global = true, env = "HSMKIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder holding plugins (overrides the config and the defaults).
    #[arg(long, global = true, env = "HSMKIT_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// State folder (keys, simulated TPM, provisioning result).
    #[arg(long, global = true, env = "HSMKIT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Which plugin and its settings.
#[derive(Debug, Args, Clone)]
pub(crate) struct PluginArgs {
    /// Plugin name (dice, tpm-sim, tpm2, pkcs11, symmetric, ...) or path to a .so.
    #[arg(long, short = 'p', value_name = "NAME|PATH")]
    pub plugin: Option<String>,
    /// A plugin setting, repeatable: --set tcti=swtpm:port=2321. Overrides [plugins.NAME].
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub settings: Vec<(String, String)>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect the plugins hsmkit can find.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Print (and write) what a DPS enrollment for this device needs.
    EnrollInfo(EnrollInfoArgs),
    /// Register the device with DPS through the plugin and save the result.
    Provision(ProvisionArgs),
    /// Renew the operational certificate DPS issued (`provision --issue-certificate`): a new
    /// key in the plugin, a new CSR in a new registration with the same onboarding
    /// attestation; the old key is removed only once the new chain is stored.
    #[command(after_help = "Examples:
  hsmkit renew                 # when 80% of the certificate's validity has passed
  hsmkit renew --before 7      # when it expires within 7 days
  hsmkit renew --force --json  # now")]
    Renew(RenewArgs),
    /// Print an IoT Hub SAS token for the provisioned device, signed inside the HSM.
    HubToken(HubTokenArgs),
    /// Talk to the assigned IoT hub as the provisioned device (MQTT over TLS, port 8883):
    /// send telemetry, read and patch the twin, receive C2D messages.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Start a local DPS emulator, enroll every software plugin and provision each over TLS
    /// (HTTPS, or MQTT with --transport mqtt).
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Write a configuration file (`config new`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the configuration, the plugin, the state folder, the DPS connection and the clock;
    /// each finding with a fix hint. Exits 1 when a check failed.
    Check(CheckArgs),
    /// Set up a PKCS#11 token for this device (runs `hsmkit-pkcs11`: init, import-hmac);
    /// module, token_uri, pin_file and pin_env default to `[plugins.pkcs11]` of the config.
    ///
    /// Example: hsmkit pkcs11 init --module /usr/lib/softhsm/libsofthsm2.so
    /// --token-uri pkcs11:token=device --pin-file pin.txt --label device-key --common-name my-device
    #[command(disable_help_flag = true)]
    Pkcs11 {
        /// Arguments for hsmkit-pkcs11 (try `hsmkit pkcs11 --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// `hsmkit config ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write a commented config for one attestation and plugin.
    ///
    /// Example: hsmkit config new --attestation tpm --plugin tpm2 --id-scope 0ne0012345
    New(ConfigNewArgs),
}

/// `hsmkit config new`
#[derive(Debug, Args)]
pub(crate) struct ConfigNewArgs {
    /// tpm, x509 or symmetricKey.
    #[arg(long, value_name = "KIND")]
    pub attestation: String,
    /// Plugin name or path.
    #[arg(long, short = 'p', value_name = "NAME|PATH")]
    pub plugin: String,
    /// The DPS id scope; left as a commented example when not given.
    #[arg(long, value_name = "SCOPE")]
    pub id_scope: Option<String>,
    /// Where to write (mode 0644); `-` for stdout. Default /etc/hsmkit/config.toml.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `hsmkit check`
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Machine-readable output: {"checks": [{"id", "status", "message", "hint"}], "failed": N}.
    #[arg(long)]
    pub json: bool,
}

/// `hsmkit plugins ...`
#[derive(Debug, Subcommand)]
pub(crate) enum PluginsCommand {
    /// Every file in the plugin folders: loaded, or refused and why.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Details of one plugin.
    Info {
        /// Plugin name or path.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `hsmkit enroll-info`
#[derive(Debug, Args)]
pub(crate) struct EnrollInfoArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Attestation to describe when the plugin offers several: tpm, x509 or symmetricKey.
    #[arg(long, value_name = "KIND")]
    pub attestation: Option<String>,
    /// Symmetric key: derive this device's key from an enrollment-group key (base64) instead of
    /// generating one.
    #[arg(
        long,
        value_name = "BASE64",
        env = "HSMKIT_GROUP_KEY",
        hide_env_values = true
    )]
    pub group_key: Option<String>,
    /// Also write enrollment.json and PEM/base64 files into this folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// `hsmkit provision`
#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Attestation to use when the plugin offers several: tpm, x509 or symmetricKey.
    #[arg(long, value_name = "KIND")]
    pub attestation: Option<String>,
    /// The DPS id scope (0ne...).
    #[arg(long, value_name = "SCOPE")]
    pub id_scope: Option<String>,
    /// DPS host (or host:port, or https URL). Default: global.azure-devices-provisioning.net.
    #[arg(long, value_name = "HOST")]
    pub endpoint: Option<String>,
    /// How to talk to DPS: https (default, port 443), mqtt (MQTT over TLS, port 8883; X.509
    /// and symmetric key only, DPS offers TPM over HTTPS) or mqtt-ws (the same MQTT over a
    /// WebSocket on TLS, port 443; endpoint host, host:port, wss://host or wss://host:port).
    #[arg(long, value_name = "https|mqtt|mqtt-ws")]
    pub transport: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the DPS emulator's dev CA.
    #[arg(long, value_name = "PEM")]
    pub trust_ca: Option<PathBuf>,
    /// Use this registration id instead of the plugin's.
    #[arg(long, value_name = "ID")]
    pub registration_id: Option<String>,
    /// Custom JSON payload for DPS (custom allocation).
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// DPS device API version: 2019-03-31, 2021-06-01 (default) or 2021-10-01.
    #[arg(long, value_name = "VERSION")]
    pub api_version: Option<String>,
    /// Give up after this many seconds (retries and polling included). Default 120.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Also ask DPS for an operational X.509 certificate: a P-256 key made and kept in the
    /// plugin (label hsmkit-operational), a CSR it signs, the issued chain verified and stored
    /// beside the key. Needs a plugin with the operational-key interface (ABI 1.2).
    #[arg(long)]
    pub issue_certificate: bool,
    /// With an issued certificate (implies --issue-certificate): renew it when it expires
    /// within DAYS days (`hsmkit renew --before DAYS`); nothing is sent when it is not due.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub renew_before: Option<u32>,
    /// Register again even when a saved result exists.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `hsmkit renew`
#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Renew when the certificate expires within DAYS days. Default: once 80% of its
    /// validity has passed.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub before: Option<u32>,
    /// Renew now, whatever the expiry.
    #[arg(long, conflicts_with = "before")]
    pub force: bool,
    /// How to talk to DPS: https (default), mqtt or mqtt-ws (as for `provision`).
    #[arg(long, value_name = "https|mqtt|mqtt-ws")]
    pub transport: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the DPS emulator's dev CA.
    #[arg(long, value_name = "PEM")]
    pub trust_ca: Option<PathBuf>,
    /// Give up after this many seconds (retries and polling included). Default 120.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `hsmkit hub-token`
#[derive(Debug, Args)]
pub(crate) struct HubTokenArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Token lifetime: 3600, 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `hsmkit hub ...`
#[derive(Debug, Subcommand)]
pub(crate) enum HubCommand {
    /// Send one telemetry message (QoS 1); returns once the hub acknowledged it.
    #[command(after_help = "Examples:
  hsmkit hub send 'hello'
  hsmkit hub send --property unit=C --property '$.ct=application/json' '{\"t\": 21.5}'
  sensor-read | hsmkit hub send -
  hsmkit hub send --hub-endpoint 127.0.0.1:8883 --trust-ca emu/dev-ca.pem hello")]
    Send(HubSendArgs),
    /// Read the device twin (default), or patch its reported properties.
    #[command(after_help = "Examples:
  hsmkit hub twin
  hsmkit hub twin --report '{\"firmware\": \"1.2.0\"}'")]
    Twin(HubTwinArgs),
    /// Print C2D messages and desired-property changes as they arrive, one per line, until
    /// Ctrl-C (or --count).
    #[command(after_help = "Examples:
  hsmkit hub listen
  hsmkit hub listen --json --count 1")]
    Listen(HubListenArgs),
}

/// What every `hsmkit hub` command takes.
#[derive(Debug, Args)]
pub(crate) struct HubCommonArgs {
    /// Plugin holding the device identity; default: the one the device was provisioned with.
    #[command(flatten)]
    pub plugin: PluginArgs,
    /// Connect to this host (and port) instead of the assigned hub; TLS still verifies the
    /// server as the assigned hub's name. Default: the assigned hub, port 8883.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub hub_endpoint: Option<String>,
    /// MQTT over a WebSocket on TLS (port 443, path /$iothub/websocket) instead of MQTT on
    /// port 8883, for networks where only 443 is open; --hub-endpoint then takes
    /// wss://HOST:PORT too.
    #[arg(long)]
    pub websocket: bool,
    /// Extra CA certificate (PEM) to trust; default: provisioning.trust_ca from the config
    /// (the same trust as for DPS).
    #[arg(long, value_name = "PEM")]
    pub trust_ca: Option<PathBuf>,
    /// Lifetime of each SAS token (symmetric key, TPM): 3600, 90s, 30m, 1h. Tokens are
    /// renewed, by reconnecting, after four fifths of it.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub sas_lifetime: std::time::Duration,
    /// Seconds to wait for the connection and for each answer (PUBACK, twin).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `hsmkit hub send`
#[derive(Debug, Args)]
pub(crate) struct HubSendArgs {
    #[command(flatten)]
    pub common: HubCommonArgs,
    /// A message property, repeatable: --property unit=C; system properties start with `$.`
    /// ($.ct content type, $.ce content encoding, $.mid message id).
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// The message body, or `-` to read it from standard input.
    #[arg(value_name = "MESSAGE|-")]
    pub message: String,
}

/// `hsmkit hub twin`
#[derive(Debug, Args)]
pub(crate) struct HubTwinArgs {
    #[command(flatten)]
    pub common: HubCommonArgs,
    /// Print the twin (desired and reported properties); the default.
    #[arg(long, conflicts_with = "report")]
    pub get: bool,
    /// Patch the reported properties with this JSON object and print their new version.
    #[arg(long, value_name = "JSON")]
    pub report: Option<String>,
}

/// `hsmkit hub listen`
#[derive(Debug, Args)]
pub(crate) struct HubListenArgs {
    #[command(flatten)]
    pub common: HubCommonArgs,
    /// Stop after this many C2D messages and desired changes.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `hsmkit demo`
#[cfg(feature = "demo")]
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's state (emulator database, device keys) when it ends: in DIR, else in
    /// --state-dir, else in a new temporary folder (printed). Without it the state is made in
    /// a temporary folder (inside --state-dir when given) and removed at the end.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub keep_state: Option<Option<PathBuf>>,
    /// Only these plugins (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "dice,tpm-sim,symmetric")]
    pub plugins: Vec<String>,
    /// Provision over https or mqtt (the emulator's MQTT listener; TPM plugins are skipped,
    /// since DPS offers TPM attestation over HTTPS only).
    #[arg(long, value_name = "https|mqtt", default_value = "https")]
    pub transport: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Parses `3600`, `90s`, `30m`, `1h`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: use e.g. 3600, 90s, 30m, 1h, 7d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("invalid duration `{s}`: use e.g. 3600, 90s, 30m, 1h, 7d"))?;
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }
}
