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

pub mod alloc;
mod app;
pub mod config;
mod device_api;
pub mod enroll_files;
pub mod error;
pub mod faults;
mod fsutil;
mod http;
pub mod model;
pub mod pki;
pub mod sas;
mod server;
mod service_api;
mod state;
pub mod store;
pub mod timeutil;
mod tls;
mod tpm;
pub mod validate;
pub mod x509auth;

pub use app::{DEVICE_API_VERSIONS, SERVICE_API_VERSIONS};
pub use config::EmulatorConfig;
pub use error::{EmulatorError, Result};
pub use faults::{Fault, Faults};
pub use server::{BackgroundEmulator, Emulator, RunningEmulator};
pub use state::{open_store, service_key, CA_CERT_FILE, DATABASE_FILE};
pub use store::Store;
