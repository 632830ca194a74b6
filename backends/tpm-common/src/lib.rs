//! hsm-tpm-common: the TPM 2.0 wire library of hsmkit.
//!
//! One place for what the simulated TPM (device side), the real-TPM backend (splitting the DPS
//! blob) and the DPS emulator (server side) all need: bounds-checked TPM2B marshalling, the
//! EK/SRK templates, KDFa/KDFe, software MakeCredential/ActivateCredential and
//! Duplicate/Import, and the DPS `authenticationKey` format in both directions.
//! Malformed input always yields a [`TpmWireError`], never a panic or an over-read.

#![deny(missing_docs)]

pub mod alg;
pub mod cipher;
pub mod credential;
pub mod dps;
pub mod duplication;
mod error;
pub mod kdf;
pub mod marshal;
pub mod public;
pub mod seed;
#[cfg(feature = "swtpm-harness")]
pub mod swtpm;

pub use error::{Result, TpmWireError};
