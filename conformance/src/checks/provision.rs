//! Provisioning end to end, one check per attestation: a plugin that passes provisions.
//!
//! Inside the check process a DPS emulator starts in process (TLS on loopback, a private
//! state folder). What the plugin reports is read in a fresh process (`enroll-info`, the code
//! `hsmkit enroll-info` runs) and enrolled; for symmetric keys the harness makes a random key,
//! enrolls it and imports it into the plugin in another fresh process (`import`). Then the
//! real device client registers in a fresh process (`register`, the code `hsmkit provision`
//! runs, trusting only the emulator's CA) and, in one more, makes the hub credentials
//! (`hub-token`, the code `hsmkit hub-token` runs). A failure names the step and, for
//! `register`, DPS's answer (HTTP status, errorCode, message) and the emulator's logged
//! reason for a refusal, which the service itself never tells a device.

use crate::context::CheckContext;
use crate::verdict::{CheckResult, Verdict};
use crate::{register, register_step};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use dps_proto::enrollment_file::EnrollmentFile;
use dps_proto::sas::{hub_resource, SasToken};
use hsm_api::{HSM_ERR_INVALID_ARGUMENT, HSM_ERR_NOT_FOUND, HSM_ERR_NOT_SUPPORTED};
use hsm_secure_fs::state::PrivateDir;
use provisioning_core::dps::{Attestation, DpsClientConfig, DpsError};
use provisioning_core::plugin::{LoadedPlugin, PluginError, PluginInstance};
use provisioning_core::provisioning::{
    enrollment_info, hub_credentials, load, provision, EnrollmentInfoError, HubCredentials,
    HubTokenError, ProvisioningRecord,
};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

register!(
    "provisioning.tpm",
    Provisioning,
    Tpm,
    true,
    "the device client provisions with TPM attestation against the DPS emulator (individual enrollment with the reported EK), each step in a fresh process, and hub-token makes a well-formed SAS token",
    provision_tpm
);
register!(
    "provisioning.x509",
    Provisioning,
    X509,
    true,
    "the device client provisions with X.509 attestation against the DPS emulator (group enrollment with the chain's root CA, or individual with the leaf), each step in a fresh process, and hub-token gives the enrolled chain",
    provision_x509
);
register!(
    "provisioning.symmetric-key",
    Provisioning,
    SymmetricKey,
    true,
    "a random key enrolled with the DPS emulator and imported into the plugin provisions the device, each step in a fresh process, and hub-token makes a SAS token that verifies with that key",
    provision_symmetric
);

register_step!("provisioning.enroll-info", step_enroll_info);
register_step!("provisioning.import", step_import);
register_step!("provisioning.register", step_register);
register_step!("provisioning.hub-token", step_hub_token);

/// What every provisioning check expects; a failure's text names the step and what happened.
const EXPECTED: &str =
    "the device client to provision through the plugin against the DPS emulator and hub-token to succeed";

/// Longest the device client may take for the whole registration (the check's default
/// timeout is 20 s; a refusal comes back at once, only retries of transient failures wait).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// Lifetime of the hub token asked for.
const HUB_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The file, in the check's private folder, that carries the enrolled key to the import step
/// (a file of mode 0600 rather than a command-line argument, which other users can read).
const IMPORT_KEY_FILE: &str = "import.key";

/// The group id of an X.509 group enrollment.
const GROUP_ID: &str = "hsm-conformance-group";

fn fail(step: &str, actual: impl std::fmt::Display) -> Verdict {
    Verdict::fail(EXPECTED, format!("step {step}: {actual}"))
}

fn provision_tpm(ctx: &mut CheckContext) -> CheckResult {
    end_to_end(ctx, Attestation::Tpm)
}

fn provision_x509(ctx: &mut CheckContext) -> CheckResult {
    end_to_end(ctx, Attestation::X509)
}

fn provision_symmetric(ctx: &mut CheckContext) -> CheckResult {
    end_to_end(ctx, Attestation::SymmetricKey)
}

/// The emulator's log lines, kept so that a refusal's reason (logged, never answered) can be
/// shown with DPS's answer.
#[derive(Clone, Default)]
struct LogLines(Arc<Mutex<Vec<u8>>>);

impl Write for LogLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a check never needs more than the first refusals.
        if v.len() < 64 * 1024 {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogLines {
    /// Captures the emulator's events in this process (the check process runs one check),
    /// down to `debug`, where it logs failed TLS handshakes.
    fn install() -> Self {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let lines = LogLines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target().starts_with("dps_emulator") && *m.level() <= tracing::Level::DEBUG
            }));
        // Only fails when one is set already; then the reasons are simply not shown.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        lines
    }

    /// The reasons of the refusals logged, waiting up to 2 s for the first: the emulator logs a
    /// refused TLS handshake on its own task, which may run only after the device has read the
    /// alert and its step process has ended.
    fn refusals_awaited(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let found = self.refusals();
            if !found.is_empty() || std::time::Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The reasons of the refusals logged so far.
    fn refusals(&self) -> Vec<String> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&v)
            .lines()
            .filter_map(|l| {
                if l.contains("request refused") {
                    l.split_once("reason=").map(|(_, r)| r.trim().to_string())
                } else if l.contains("TLS handshake failed") {
                    l.split_once("error=")
                        .map(|(_, r)| format!("TLS handshake failed: {}", r.trim()))
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The in-process emulator of one check, in a private temporary folder.
struct Dps {
    emulator: BackgroundEmulator,
    /// The device's folder for `provisioning.json`, as `hsmkit --state-dir` would hold it.
    device_dir: std::path::PathBuf,
    /// The check's private folder (0700), for the key handed to the import step.
    private: PrivateDir,
    _dir: tempfile::TempDir,
}

impl Dps {
    fn start() -> Result<Self, Verdict> {
        let dir = tempfile::Builder::new()
            .prefix("hsm-conformance-dps-")
            .tempdir()
            .map_err(|e| Verdict::skip(format!("cannot create a folder for the emulator: {e}")))?;
        let device_dir = dir.path().join("device");
        provisioning_core::state_dir::prepare_state_dir(&device_dir)
            .map_err(|e| Verdict::skip(format!("cannot create the device's state folder: {e}")))?;
        let private = PrivateDir::prepare(&dir.path().join("harness"))
            .map_err(|e| Verdict::skip(format!("cannot create a private folder: {e}")))?;
        let emulator = Emulator::start_in_background(EmulatorConfig::new(dir.path().join("dps")))
            .map_err(|e| Verdict::skip(format!("cannot start the DPS emulator: {e}")))?;
        Ok(Dps {
            emulator,
            device_dir,
            private,
            _dir: dir,
        })
    }

    /// Enrolls `info`: TPM and symmetric keys individually, X.509 in a group under the
    /// chain's root CA when it has one, else individually with the leaf.
    fn enroll(&self, info: &EnrollmentInfo) -> Result<&'static str, Verdict> {
        let store = self.emulator.enrollments();
        let group = match info {
            EnrollmentInfo::X509 {
                root_ca_pem: Some(_),
                ..
            } => Some(info.group(GROUP_ID)),
            _ => None,
        };
        match group {
            Some(g) => {
                let g = g.map_err(|e| fail("enroll", e))?;
                store.create_group(g).map_err(|e| {
                    fail(
                        "enroll",
                        format!("the emulator refused a group enrollment with the root CA: {e}"),
                    )
                })?;
                Ok("group enrollment with the root CA")
            }
            None => {
                store.create_individual(info.individual()).map_err(|e| {
                    fail(
                        "enroll",
                        format!("the emulator refused the individual enrollment: {e}"),
                    )
                })?;
                Ok("individual enrollment")
            }
        }
    }
}

fn end_to_end(ctx: &mut CheckContext, kind: Attestation) -> CheckResult {
    let interface = match kind {
        Attestation::Tpm => "tpm",
        Attestation::X509 => "x509",
        Attestation::SymmetricKey => "symmetric-key",
        // A kind this harness does not know has no interface to be refused.
        _ => "",
    };
    if let Some(reason) = ctx.refusal(interface) {
        return Err(Verdict::skip(reason));
    }
    let logs = LogLines::install();
    let dps = Dps::start()?;
    let kind_arg = kind.as_str();

    // enroll-info, in a fresh process: what the plugin reports.
    let value = crate::step::in_fresh_process(
        ctx,
        "provisioning.enroll-info",
        &[kind_arg],
        "step enroll-info (reading what the plugin reports)",
    )?;
    let mut file: EnrollmentFile = serde_json::from_value(value)
        .map_err(|e| fail("enroll-info", format!("unreadable result: {e}")))?;
    let registration_id = file.registration_id.clone();

    // Symmetric key: a random key, enrolled, and imported in a fresh process.
    let mut key = None;
    if kind == Attestation::SymmetricKey {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *raw);
        let b64 = Zeroizing::new(B64.encode(*raw));
        dps.private
            .write(IMPORT_KEY_FILE.as_ref(), &*raw, 0o600)
            .map_err(|e| Verdict::skip(format!("cannot hand the key to the import step: {e}")))?;
        let key_file = dps.private.path().join(IMPORT_KEY_FILE);
        crate::step::in_fresh_process(
            ctx,
            "provisioning.import",
            &[&registration_id, &key_file.display().to_string()],
            "step import (import_key of the enrolled key)",
        )?;
        file.primary_key = Some(b64);
        key = Some(raw);
    }
    let leaf_pem = file.certificates.as_ref().and_then(|c| c.leaf_pem.clone());
    let info = file
        .resolve(|_| Ok(None))
        .map_err(|e| fail("enroll-info", format!("the enrollment information {e}")))?;
    let how = dps.enroll(&info)?;

    // register, in a fresh process: the device client.
    let device_dir = dps.device_dir.display().to_string();
    let ca = dps.emulator.ca_cert_path().display().to_string();
    let endpoint = dps.emulator.endpoint();
    let registered = crate::step::in_fresh_process(
        ctx,
        "provisioning.register",
        &[
            kind_arg,
            &device_dir,
            &endpoint,
            dps.emulator.id_scope(),
            &ca,
        ],
        "step register (the device client)",
    );
    let registered = match registered {
        Ok(v) => v,
        Err(Verdict::Fail { expected, actual }) => {
            let reasons = logs.refusals_awaited();
            let actual = if reasons.is_empty() {
                actual
            } else {
                format!("{actual} [the emulator's reason: {}]", reasons.join("; "))
            };
            return Err(Verdict::Fail { expected, actual });
        }
        Err(other) => return Err(other),
    };
    let record: ProvisioningRecord = serde_json::from_value(registered)
        .map_err(|e| fail("register", format!("unreadable result: {e}")))?;
    check_assignment(&dps, &record, &registration_id)?;

    // hub-token, in a fresh process: the hub credentials from the saved record.
    let value = crate::step::in_fresh_process(
        ctx,
        "provisioning.hub-token",
        &[&device_dir],
        "step hub-token (the hub credentials)",
    )?;
    let creds: HubCredentials = serde_json::from_value(value)
        .map_err(|e| fail("hub-token", format!("unreadable result: {e}")))?;
    if creds.assigned_hub != record.assigned_hub() || creds.device_id != record.device_id() {
        return Err(fail(
            "hub-token",
            format!(
                "credentials for {} / {}, but the device was assigned to {} as {}",
                creds.assigned_hub,
                creds.device_id,
                record.assigned_hub(),
                record.device_id()
            ),
        ));
    }
    let what = match kind {
        Attestation::X509 => check_hub_chain(&creds, leaf_pem.as_deref())?,
        _ => check_hub_token(&creds, key.as_deref().map(|k| &k[..]))?,
    };
    Ok(Verdict::pass(format!(
        "{registration_id} ({how}) assigned to {} as {}; {what}",
        record.assigned_hub(),
        record.device_id()
    )))
}

/// The saved assignment names one of the emulator's hubs, and the emulator's own record of
/// the registration agrees with it.
fn check_assignment(
    dps: &Dps,
    record: &ProvisioningRecord,
    registration_id: &str,
) -> Result<(), Verdict> {
    if !record
        .result
        .registration_id
        .eq_ignore_ascii_case(registration_id)
    {
        return Err(fail(
            "register",
            format!(
                "registered as `{}`, but the plugin reported `{registration_id}`",
                record.result.registration_id
            ),
        ));
    }
    if !dps
        .emulator
        .hubs()
        .iter()
        .any(|h| h == record.assigned_hub())
    {
        return Err(fail(
            "register",
            format!(
                "assigned to `{}`, which is not one of the emulator's hubs ({})",
                record.assigned_hub(),
                dps.emulator.hubs().join(", ")
            ),
        ));
    }
    let records = dps
        .emulator
        .registration_records()
        .map_err(|e| Verdict::skip(format!("cannot read the emulator's records: {e}")))?;
    let agrees = records.iter().any(|r| {
        r.registration_id.eq_ignore_ascii_case(registration_id)
            && r.assigned_hub.as_deref() == Some(record.assigned_hub())
            && r.device_id.as_deref() == Some(record.device_id())
    });
    if !agrees {
        return Err(fail(
            "register",
            format!(
                "the device saved {} / {}, but the emulator has no such registration for `{registration_id}`",
                record.assigned_hub(),
                record.device_id()
            ),
        ));
    }
    Ok(())
}

/// A SAS token for `{hub}/devices/{device}`, unexpired, naming no key; when the key is known
/// (symmetric key), its signature verifies with it, as the hub would check it.
fn check_hub_token(creds: &HubCredentials, key: Option<&[u8]>) -> Result<String, Verdict> {
    let token = creds
        .sas_token
        .as_deref()
        .ok_or_else(|| fail("hub-token", "no SAS token"))?;
    let parsed = SasToken::parse(token)
        .map_err(|e| fail("hub-token", format!("the SAS token does not parse: {e}")))?;
    let scope = hub_resource(&creds.assigned_hub, &creds.device_id);
    parsed
        .check_claims(
            Some(&scope),
            None,
            provisioning_core::dps::sas::expiry_from_now(Duration::ZERO),
        )
        .map_err(|e| fail("hub-token", format!("the SAS token for {scope}: {e}")))?;
    if parsed.skn.is_some() {
        return Err(fail(
            "hub-token",
            "the SAS token names a key (skn); device tokens name none",
        ));
    }
    if parsed.sig.len() != 32 {
        return Err(fail(
            "hub-token",
            format!(
                "the SAS token's signature is {} bytes, not an HMAC-SHA256's 32",
                parsed.sig.len()
            ),
        ));
    }
    match key {
        Some(key) => {
            parsed.verify_signature_raw(key).map_err(|e| {
                fail(
                    "hub-token",
                    format!("the SAS token does not verify with the enrolled key: {e}"),
                )
            })?;
            Ok(format!("hub token for {scope} verifies with the enrolled key"))
        }
        None => Ok(format!(
            "hub token for {scope} well-formed (signed with the TPM identity key, which only the hub would hold)"
        )),
    }
}

/// The chain to present to the hub starts with the enrolled leaf, whose CN is the device id.
fn check_hub_chain(creds: &HubCredentials, leaf_pem: Option<&str>) -> Result<String, Verdict> {
    use x509_cert::der::{DecodePem, Encode};
    let pem = creds
        .certificate_chain_pem
        .as_deref()
        .ok_or_else(|| fail("hub-token", "no certificate chain"))?;
    let chain = x509_cert::Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| fail("hub-token", format!("the chain is not valid PEM: {e}")))?;
    let enrolled = leaf_pem
        .map(|p| x509_cert::Certificate::from_pem(p.as_bytes()))
        .transpose()
        .map_err(|e| fail("enroll-info", format!("the leaf does not parse: {e}")))?;
    let same = match (chain.first(), &enrolled) {
        (Some(a), Some(b)) => a.to_der().ok() == b.to_der().ok(),
        _ => false,
    };
    if !same {
        return Err(fail(
            "hub-token",
            "the chain does not start with the leaf that was enrolled and presented to DPS",
        ));
    }
    Ok(format!(
        "hub credentials: the enrolled leaf and {} more certificate(s) for mutual TLS",
        chain.len() - 1
    ))
}

/// The plugin loaded with the host loader and an instance with the check's settings, as
/// `hsmkit` makes them; a refused setting is SETUP.
fn device(ctx: &CheckContext, step: &str) -> Result<Arc<PluginInstance>, Verdict> {
    let plugin = LoadedPlugin::load(&ctx.plugin)
        .map_err(|e| fail(step, format!("the host loader refused the plugin: {e}")))?;
    PluginInstance::create(&plugin, &ctx.config)
        .map(Arc::new)
        .map_err(|e| match setup_status(&e) {
            true => Verdict::setup(format!(
                "step {step}: create refused the settings given: {e}; pass the setting with --set KEY=VALUE"
            )),
            false => fail(step, e),
        })
}

/// Whether a plugin error is a missing or wrong setting rather than a broken plugin.
fn setup_status(e: &PluginError) -> bool {
    e.code()
        .is_some_and(|c| c.status() == HSM_ERR_NOT_FOUND || c.status() == HSM_ERR_INVALID_ARGUMENT)
}

fn arg(args: &[String], n: usize) -> Result<&str, Verdict> {
    args.get(n)
        .map(String::as_str)
        .ok_or_else(|| Verdict::skip("a provisioning step was started without its arguments"))
}

fn kind_of(arg: &str) -> Result<Attestation, Verdict> {
    [
        Attestation::Tpm,
        Attestation::X509,
        Attestation::SymmetricKey,
    ]
    .into_iter()
    .find(|k| k.as_str() == arg)
    .ok_or_else(|| Verdict::skip(format!("unknown attestation `{arg}`")))
}

fn to_value<T: serde::Serialize>(step: &str, v: &T) -> Result<serde_json::Value, Verdict> {
    serde_json::to_value(v).map_err(|e| fail(step, format!("cannot encode the result: {e}")))
}

/// `enroll-info KIND`: the enrollment information, read as `hsmkit enroll-info` reads it.
fn step_enroll_info(ctx: &mut CheckContext, args: &[String]) -> Result<serde_json::Value, Verdict> {
    let kind = kind_of(arg(args, 0)?)?;
    let inst = device(ctx, "enroll-info")?;
    match enrollment_info(&inst, kind) {
        Ok(info) => to_value("enroll-info", &info),
        // An identity the plugin does not have with these settings (the symmetric plugin
        // without registration_id) is a missing setting, as in the identity checks.
        Err(EnrollmentInfoError::Plugin(e)) if e.code().is_some_and(|c| c.status() == HSM_ERR_NOT_FOUND) => {
            Err(Verdict::setup(format!(
                "step enroll-info: the plugin has no identity with the settings given: {e}; pass the setting with --set KEY=VALUE"
            )))
        }
        Err(e) => Err(fail("enroll-info", e)),
    }
}

/// `import REGISTRATION_ID KEY_FILE`: the enrolled key (raw bytes in a 0600 file) into the
/// plugin.
fn step_import(ctx: &mut CheckContext, args: &[String]) -> Result<serde_json::Value, Verdict> {
    let registration_id = arg(args, 0)?;
    let key = hsm_secure_fs::state::read_secret(Path::new(arg(args, 1)?))
        .map_err(|e| Verdict::skip(format!("the import step cannot read its key: {e}")))?;
    let inst = device(ctx, "import")?;
    let sym = inst.symmetric_key().map_err(|e| fail("import", e))?;
    match sym.import_key(Some(registration_id), &key) {
        Ok(()) => {}
        // As in the symmetric-key checks: a plugin (or its module) that cannot take keys
        // has nothing to provision with here, which is not a broken contract.
        Err(e)
            if e.code()
                .is_some_and(|c| c.status() == HSM_ERR_NOT_SUPPORTED) =>
        {
            return Err(Verdict::skip(format!(
                "step import: the plugin does not allow importing keys: {e}"
            )))
        }
        Err(e) => return Err(fail("import", e)),
    }
    Ok(serde_json::Value::Null)
}

/// `register KIND DEVICE_DIR ENDPOINT ID_SCOPE CA_FILE`: `hsmkit provision --force` against
/// the emulator, trusting only its CA; the saved record.
fn step_register(ctx: &mut CheckContext, args: &[String]) -> Result<serde_json::Value, Verdict> {
    let kind = kind_of(arg(args, 0)?)?;
    let device_dir = Path::new(arg(args, 1)?);
    let mut config = DpsClientConfig::new(arg(args, 3)?);
    config.endpoint = arg(args, 2)?.to_string();
    let ca = hsm_secure_fs::trust::read(Path::new(arg(args, 4)?))
        .map_err(|e| Verdict::skip(format!("cannot read the emulator's CA: {e}")))?;
    config.extra_trust_pem = Some(ca);
    config.trust_public_roots = false;
    config.overall_timeout = REGISTER_TIMEOUT;
    let inst = device(ctx, "register")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Verdict::skip(format!("cannot start an async runtime: {e}")))?;
    let outcome = runtime.block_on(provision(&config, inst, kind, device_dir, true, &|_| {}));
    match outcome {
        Ok((record, _)) => to_value("register", &record),
        Err(provisioning_core::provisioning::ProvisionError::Dps(DpsError::Plugin(e))) => {
            Err(fail("register", format!("the plugin failed: {e}")))
        }
        Err(e) => Err(fail("register", e)),
    }
}

/// `hub-token DEVICE_DIR`: `hsmkit hub-token` from the saved record.
fn step_hub_token(ctx: &mut CheckContext, args: &[String]) -> Result<serde_json::Value, Verdict> {
    let device_dir = Path::new(arg(args, 0)?);
    let record = load(device_dir)
        .map_err(|e| fail("hub-token", e))?
        .ok_or_else(|| fail("hub-token", "no provisioning record was saved by register"))?;
    let inst = device(ctx, "hub-token")?;
    match hub_credentials(&inst, &record, HUB_TOKEN_TTL) {
        Ok(creds) => to_value("hub-token", &creds),
        Err(HubTokenError::Plugin(e)) => Err(fail("hub-token", format!("the plugin failed: {e}"))),
        Err(e) => Err(fail("hub-token", e)),
    }
}
