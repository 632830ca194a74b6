//! hsmkit's device side: load HSM plugins at run time and provision the device with Azure
//! IoT Hub Device Provisioning Service through them.
//!
//! [`plugin`] finds, checks and loads plugin libraries and wraps them in safe handles, one per
//! interface. The library holds no server code; the DPS emulator is only linked into the
//! `hsmkit` binary's `demo` feature.

#![deny(missing_docs)]

#[cfg(feature = "config")]
pub mod config;
pub mod dps;
pub mod error_kind;
pub mod hub;
pub mod issuance;
pub mod plugin;
pub mod provisioning;
pub mod state_dir;
