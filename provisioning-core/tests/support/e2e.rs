//! Shared by the e2e and fault tests (included with `#[path]`): an emulator per test on a free
//! loopback port with its own temp state, plugin instances of the built plugins, enrollments,
//! and a DPS client configuration that trusts the emulator's dev CA.
#![allow(dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

#[path = "mod.rs"]
mod support;

use base64::Engine;
use dps_emulator::model::{EnrollmentGroup, IndividualEnrollment};
use dps_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use provisioning_core::dps::{DpsClientConfig, ProgressEvent, RetryPolicy};
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
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
    cfg.hubs = vec!["hub-a".into(), "hub-b".into()];
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
