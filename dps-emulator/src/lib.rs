//! dps-emulator: a local Azure IoT Hub Device Provisioning Service that verifies credentials for
//! real (TPM challenge, X.509 chain over mutual TLS, SAS) and speaks the service's device and
//! service REST APIs, so official SDK clients work against it without a cloud account.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dps_emulator::EmulatorError> {
//! use dps_emulator::{Emulator, EmulatorConfig};
//! let running = Emulator::start(EmulatorConfig::new("/tmp/dps-state")).await?;
//! println!("trust {} and register at {}", running.ca_cert_path().display(), running.endpoint());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

//!
//! Modules by what they are: [`transport`](crate) (TLS, HTTP server, MQTT listener, connection
//! caps), `api` (device and service REST APIs; the device API's core serves both transports),
//! [`auth`] (one authenticator per attestation), [`store`] (SQLite records and the state
//! folder), [`model`] (the service API's shapes; the device API's and every protocol rule are
//! `dps-proto`'s), [`hub`] (the emulated IoT hubs the devices are assigned to: identities,
//! twins, telemetry, cloud-to-device messages, and their MQTT device API). The CLI's commands
//! are in the binary.

pub mod alloc;
mod api;
mod app_state;
pub mod auth;
pub mod config;
pub mod custom_allocation;
mod emulator;
pub mod enroll_files;
pub mod error;
pub mod faults;
pub mod hub;
pub mod issuance;
pub mod model;
pub mod pki;
pub mod store;
pub mod timeutil;
mod transport;
pub mod validate;

pub use config::EmulatorConfig;
pub use dps_proto::{DEVICE_API_VERSIONS, SERVICE_API_VERSIONS};
pub use emulator::{BackgroundEmulator, Emulator, RunningEmulator};
pub use error::{EmulatorError, Result};
pub use faults::{Fault, Faults};
pub use store::state_dir::{
    open_store, service_key, CA_CERT_FILE, DATABASE_FILE, ISSUING_CA_CERT_FILE,
};
pub use store::Store;
