//! Shared by the e2e and fault tests (included with `#[path]`): an emulator per test on a free
//! loopback port with its own temp state, plugin instances of the built plugins, enrollments,
//! and a DPS client configuration that trusts the emulator's dev CA.
#![allow(dead_code, unused_imports, unreachable_pub)] // shared by several test binaries, which see it through `pub`

#[path = "mod.rs"]
mod support;

use base64::Engine;
use dps_emulator::model::{EnrollmentGroup, IndividualEnrollment};
use dps_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use hsmkit_backend_pkcs11::config::PinSource;
use hsmkit_backend_pkcs11::provision::{init_device, InitOptions, InitOutcome};
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use provisioning_core::dps::{
    derive_group_device_key, register, Attestation, DpsClientConfig, DpsError, ProgressEvent,
    RegistrationResult, RetryPolicy,
};
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use provisioning_core::provisioning::{self, Outcome, ProvisioningRecord};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use support::bundled_plugin;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A running emulator and the temp folder holding its state.
pub struct Env {
    pub emu: RunningEmulator,
    pub dir: tempfile::TempDir,
}

pub async fn emulator() -> Env {
    emulator_with(|_| {}).await
}

pub async fn emulator_with(f: impl FnOnce(&mut EmulatorConfig)) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = EmulatorConfig::new(dir.path().join("emulator"));
    cfg.hubs = vec![
        "hub-a.azure-devices.net".into(),
        "hub-b.azure-devices.net".into(),
    ];
    f(&mut cfg);
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    Env { emu, dir }
}

/// A client configuration for the emulator: its CA only, short timeouts and back-off.
pub fn dps_config(emu: &RunningEmulator) -> DpsClientConfig {
    let mut c = DpsClientConfig::new(emu.id_scope());
    c.endpoint = emu.endpoint();
    c.extra_trust_pem = Some(emu.ca_cert_pem().as_bytes().to_vec());
    c.trust_public_roots = false;
    c.overall_timeout = Duration::from_secs(60);
    c.request_timeout = Duration::from_secs(20);
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(800),
        default_poll_interval: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    c
}

/// An instance of a built plugin with `settings`.
pub fn instance(suffix: &str, settings: &[(&str, String)]) -> Arc<PluginInstance> {
    let plugin = LoadedPlugin::load(&bundled_plugin(suffix))
        .unwrap_or_else(|e| panic!("loading the {suffix} plugin: {e}"));
    Arc::new(
        PluginInstance::create(&plugin, settings)
            .unwrap_or_else(|e| panic!("creating a {suffix} instance: {e}")),
    )
}

pub fn individual(emu: &RunningEmulator, enrollment: Value) -> IndividualEnrollment {
    let e: IndividualEnrollment = serde_json::from_value(enrollment).expect("enrollment JSON");
    emu.enrollments()
        .create_individual(e)
        .expect("enrollment stored")
}

pub fn group(emu: &RunningEmulator, enrollment: Value) -> EnrollmentGroup {
    let g: EnrollmentGroup = serde_json::from_value(enrollment).expect("group JSON");
    emu.enrollments().create_group(g).expect("group stored")
}

/// A symmetric-key individual enrollment for `reg`; returns its primary key (raw bytes).
pub fn symmetric_enrollment(emu: &RunningEmulator, reg: &str) -> Vec<u8> {
    let e = individual(
        emu,
        json!({"registrationId": reg, "attestation": {"type": "symmetricKey"}}),
    );
    let key = e
        .attestation
        .symmetric_key
        .and_then(|k| k.primary_key)
        .expect("the emulator generates keys");
    B64.decode(key).expect("base64 key")
}

/// A symmetric-key plugin instance in `state` holding `key` for `reg`.
pub fn symmetric_device(state: &std::path::Path, reg: &str, key: &[u8]) -> Arc<PluginInstance> {
    let inst = instance("symmetric", &[("state_dir", state.display().to_string())]);
    inst.symmetric_key()
        .and_then(|s| s.import_key(Some(reg), key))
        .expect("key import");
    inst
}

/// Collects progress events.
#[derive(Default, Clone)]
pub struct Events(pub Arc<Mutex<Vec<ProgressEvent>>>);

impl Events {
    pub fn sink(&self) -> impl Fn(&ProgressEvent) + Sync + '_ {
        move |e| {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.clone())
        }
    }
    pub fn all(&self) -> Vec<ProgressEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn waits(&self) -> Vec<(String, Duration)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                ProgressEvent::Waiting { reason, wait } => Some((reason, wait)),
                _ => None,
            })
            .collect()
    }
    /// The waits whose reason mentions `text` (`"429"`, `"HTTP 500"`...).
    pub fn waits_for(&self, text: &str) -> Vec<(String, Duration)> {
        self.waits()
            .into_iter()
            .filter(|(r, _)| r.contains(text))
            .collect()
    }
}

/// Asserts the emulator holds exactly one registration record, for `reg`, and returns it.
pub fn single_record(emu: &RunningEmulator, reg: &str) -> dps_emulator::model::RegistrationState {
    let records = emu.registration_records().expect("records");
    assert_eq!(
        records.len(),
        1,
        "expected one registration record: {records:?}"
    );
    assert_eq!(records[0].registration_id, reg);
    records[0].clone()
}

/// HMAC-SHA256 computed here, independently of the plugin.
pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// A symmetric-key device enrolled individually as `reg`: its state folder (kept for as long as
/// the device is used) and its plugin instance.
pub fn symmetric_setup(env: &Env, reg: &str) -> (tempfile::TempDir, Arc<PluginInstance>) {
    let key = symmetric_enrollment(&env.emu, reg);
    let state = tempfile::tempdir().expect("temp dir");
    let device = symmetric_device(state.path(), reg, &key);
    (state, device)
}

/// A dice plugin instance in `state` with the registration id `reg`.
pub fn dice_device(state: &std::path::Path, reg: &str) -> Arc<PluginInstance> {
    instance(
        "dice",
        &[
            ("state_dir", state.display().to_string()),
            ("registration_id", reg.to_string()),
        ],
    )
}

/// An individual X.509 enrollment for `reg` with `certificate_pem` as its primary certificate.
pub fn x509_enrollment(
    emu: &RunningEmulator,
    reg: &str,
    certificate_pem: &str,
) -> IndividualEnrollment {
    individual(
        emu,
        json!({"registrationId": reg, "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": certificate_pem}}}}}),
    )
}

/// Enrolls the leaf of `device`'s certificate chain as `reg`.
pub fn enroll_leaf(env: &Env, device: &PluginInstance, reg: &str) {
    let chain = device
        .x509()
        .expect("an X.509 plugin")
        .certificate_chain_pem()
        .expect("the certificate chain");
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .expect("a certificate")
        .trim()
        .to_string();
    x509_enrollment(&env.emu, reg, &leaf);
}

/// A tpm-sim plugin instance in `state`, enrolled individually: the instance and its
/// registration id.
pub fn tpm_sim_enrolled(env: &Env, state: &std::path::Path) -> (Arc<PluginInstance>, String) {
    let device = instance("tpm_sim", &[("state_dir", state.display().to_string())]);
    tpm_enrolled(env, device)
}

/// A tpm2 plugin instance in `state` on `swtpm`, enrolled individually: the instance and its
/// registration id.
pub fn tpm2_enrolled(
    env: &Env,
    state: &std::path::Path,
    swtpm: &hsm_tpm_common::swtpm::Swtpm,
) -> (Arc<PluginInstance>, String) {
    let device = instance(
        "tpm2",
        &[
            ("state_dir", state.display().to_string()),
            ("tcti", swtpm.tcti()),
        ],
    );
    tpm_enrolled(env, device)
}

/// Enrolls the TPM `device` individually by its endorsement key: the instance and its
/// registration id.
fn tpm_enrolled(env: &Env, device: Arc<PluginInstance>) -> (Arc<PluginInstance>, String) {
    let ek = device
        .tpm()
        .expect("a TPM plugin")
        .endorsement_key()
        .expect("the endorsement key");
    let reg = provisioning_core::dps::tpm_registration_id(&ek);
    individual(
        &env.emu,
        json!({"registrationId": reg, "attestation": {"type": "tpm", "tpm": {"endorsementKey": B64.encode(&ek)}}}),
    );
    (device, reg)
}

/// A PKCS#11 token as the pkcs11 plugin is configured for it.
pub struct Pkcs11Token<'a> {
    pub module: &'a std::path::Path,
    pub uri: String,
    pub pin_file: &'a std::path::Path,
}

/// Makes a device key pair and certificate with the common name `common_name` on `token`;
/// `what` names the token in the panic message.
pub fn pkcs11_init(token: &Pkcs11Token<'_>, common_name: &str, what: &str) -> InitOutcome {
    init_device(&InitOptions {
        module: token.module.to_path_buf(),
        token: Pkcs11Uri::parse(&token.uri).expect("token URI"),
        pin: PinSource::File(token.pin_file.to_path_buf()),
        label: "dps-device".into(),
        id: None,
        common_name: common_name.into(),
        ca: None,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("device init on {what}: {e}"))
}

/// Enrolls the device `out` made on `token` (its registration id is `reg`), registers it over
/// X.509 through a pkcs11 plugin instance with the configuration `config` makes, and asserts
/// the device id and the emulator's one record; `what` is the panic message on failure.
pub async fn pkcs11_device_registers(
    env: &Env,
    token: &Pkcs11Token<'_>,
    out: &InitOutcome,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
    what: &str,
) {
    x509_enrollment(&env.emu, &out.registration_id, &out.certificate_pem);
    let state = tempfile::tempdir().expect("temp dir");
    let device = instance(
        "pkcs11",
        &[
            ("state_dir", state.path().display().to_string()),
            ("module", token.module.display().to_string()),
            ("token_uri", token.uri.clone()),
            ("pin_file", token.pin_file.display().to_string()),
            ("key_uri", out.key_uri.clone()),
            ("cert_uri", out.cert_uri.clone()),
        ],
    );
    let r = register(&config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect(what);
    assert_eq!(r.device_id, reg);
    single_record(&env.emu, reg);
}

/// A device provisioned by [`provision_symmetric_with_payload`].
pub struct Provisioned {
    /// The device's state folder.
    pub state: tempfile::TempDir,
    pub device: Arc<PluginInstance>,
    /// The enrolled symmetric key (raw bytes).
    pub key: Vec<u8>,
    /// The configuration used, with the payload.
    pub config: DpsClientConfig,
    pub record: ProvisioningRecord,
    pub events: Events,
}

/// A symmetric-key device enrolled as `reg` and provisioned (not reused) with `config` and the
/// payload `{"model": "m1"}`: asserts the record's registration id, device id, status, that
/// no payload came back (none without a custom allocation webhook) and the hub (one of the
/// emulator's, the one of its only record).
pub async fn provision_symmetric_with_payload(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) -> Provisioned {
    let key = symmetric_enrollment(&env.emu, reg);
    let state = tempfile::tempdir().expect("temp dir");
    let device = symmetric_device(state.path(), reg, &key);
    let mut config = config(&env.emu);
    config.payload = Some(json!({"model": "m1"}));
    let events = Events::default();
    let (record, outcome) = provisioning::provision(
        &config,
        device.clone(),
        Attestation::SymmetricKey,
        state.path(),
        false,
        &events.sink(),
    )
    .await
    .expect("provisioned");
    assert_eq!(outcome, Outcome::Registered);
    assert_eq!(record.result.registration_id, reg);
    assert_eq!(record.result.device_id, reg);
    assert_eq!(record.result.status, "assigned");
    assert!(env.emu.hubs().contains(&record.result.assigned_hub));
    // The payload reaches the service, which returns one only from a custom allocation
    // webhook: the emulator no longer echoes it.
    assert_eq!(record.result.payload, None);
    let stored = single_record(&env.emu, reg);
    assert_eq!(stored.assigned_hub.as_deref(), Some(record.assigned_hub()));
    Provisioned {
        state,
        device,
        key,
        config,
        record,
        events,
    }
}

/// Enrolls a symmetric-key group `group_id` and registers one member (`{member_prefix}-{i}`)
/// per API version with the configuration `config` makes; asserts each member's device id and
/// that the emulator holds a record per version.
pub async fn group_members_with_every_api_version(
    env: &Env,
    group_id: &str,
    member_prefix: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) {
    let g = group(
        &env.emu,
        json!({"enrollmentGroupId": group_id, "attestation": {"type": "symmetricKey"}}),
    );
    let group_key = B64
        .decode(g.attestation.symmetric_key.unwrap().primary_key.unwrap())
        .unwrap();
    for (i, version) in provisioning_core::dps::ApiVersion::ALL
        .into_iter()
        .enumerate()
    {
        let reg = format!("{member_prefix}-{i}");
        let state = tempfile::tempdir().unwrap();
        let device = symmetric_device(
            state.path(),
            &reg,
            &derive_group_device_key(&group_key, &reg),
        );
        let mut config = config(&env.emu);
        config.api_version = version;
        let r = register(&config, device, Attestation::SymmetricKey, &|_| {})
            .await
            .unwrap_or_else(|e| panic!("api-version {version}: {e}"));
        assert_eq!(r.device_id, reg);
    }
    assert_eq!(
        env.emu.registration_records().unwrap().len(),
        provisioning_core::dps::ApiVersion::ALL.len()
    );
}

// Fault scenarios, one per transport: `config` makes the client configuration for it.

/// Registers `device` (symmetric key) with `config`, collecting the progress events;
/// `what` is the panic message on failure.
pub async fn register_symmetric_with_events(
    config: &DpsClientConfig,
    device: Arc<PluginInstance>,
    what: &str,
) -> (RegistrationResult, Events) {
    let events = Events::default();
    let r = register(config, device, Attestation::SymmetricKey, &events.sink())
        .await
        .expect(what);
    (r, events)
}

/// An emulator setting: the assignment takes 1.5 s and polls are told Retry-After 1 s.
pub fn assigned_after_polling(c: &mut EmulatorConfig) {
    c.assignment_delay = Duration::from_millis(1500);
    c.retry_after_secs = 1;
}

/// Three 500s, retried with back-off: three waits naming HTTP 500, then one record for `reg`.
pub async fn server_errors_are_retried(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) -> RegistrationResult {
    let (_s, device) = symmetric_setup(env, reg);
    env.emu.faults().fail_next(3);
    let (r, events) =
        register_symmetric_with_events(&config(&env.emu), device, "succeeds after the 500s").await;
    let server_waits = events.waits_for("HTTP 500");
    assert_eq!(server_waits.len(), 3, "{:?}", events.waits());
    single_record(&env.emu, reg);
    r
}

/// Two 429s with Retry-After 2 s: two waits of exactly 2 s, then one record for `reg`.
pub async fn throttling_honours_retry_after(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) {
    let (_s, device) = symmetric_setup(env, reg);
    env.emu.faults().throttle_next(2, 2);
    let (_, events) =
        register_symmetric_with_events(&config(&env.emu), device, "succeeds after throttling")
            .await;
    let throttled = events.waits_for("429");
    assert_eq!(throttled.len(), 2, "{throttled:?}");
    assert!(
        throttled.iter().all(|(_, w)| *w == Duration::from_secs(2)),
        "{throttled:?}"
    );
    single_record(&env.emu, reg);
}

/// On an emulator set up with [`assigned_after_polling`]: the polls wait the service's 1 s.
pub async fn polls_follow_the_services_retry_after(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) {
    let (_s, device) = symmetric_setup(env, reg);
    let (_, events) =
        register_symmetric_with_events(&config(&env.emu), device, "assigned after polling").await;
    let polls = events.waits_for("polling");
    assert!(!polls.is_empty());
    assert!(
        polls.iter().all(|(_, w)| *w == Duration::from_secs(1)),
        "{polls:?}"
    );
}

/// Two connections dropped (the register request, then a poll of the accepted operation):
/// success with `reg`'s one record; returns the progress events.
pub async fn dropped_connections_are_retried(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) -> Events {
    let (_s, device) = symmetric_setup(env, reg);
    env.emu.faults().drop_next(2);
    let (r, events) =
        register_symmetric_with_events(&config(&env.emu), device, "succeeds after the drops").await;
    assert_eq!(r.device_id, reg);
    single_record(&env.emu, reg);
    events
}

/// Answers slower than the request timeout, forever: a clear overall timeout; then slow answers
/// within it: success. Returns how long the timed-out registration took.
pub async fn slow_answers_end_in_success_or_a_clear_timeout(
    env: &Env,
    reg: &str,
    config: impl Fn(&RunningEmulator) -> DpsClientConfig,
) -> Duration {
    let (_s, device) = symmetric_setup(env, reg);

    // Slower than the per-request timeout, forever: a clear overall timeout, no hang.
    env.emu.faults().delay_responses(Duration::from_secs(5));
    let mut timing_out = config(&env.emu);
    timing_out.request_timeout = Duration::from_millis(400);
    timing_out.overall_timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let e = register(
        &timing_out,
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(e, DpsError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");

    // Slow but within the request timeout: success.
    env.emu.faults().delay_responses(Duration::from_millis(300));
    let r = register(
        &config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .expect("slow but fine");
    assert_eq!(r.device_id, reg);
    elapsed
}
