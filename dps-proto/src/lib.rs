//! The Azure IoT Hub Device Provisioning Service (DPS) protocol as data and pure functions,
//! shared by every side of hsmkit: the device client (`provisioning-core`), the local service
//! (`dps-emulator`) and the conformance harness. One definition of each rule, so the client and
//! the emulator cannot drift apart.
//!
//! What is here: the device API's JSON shapes ([`wire`]), the attestation kinds
//! ([`AttestationKind`]), shared access signatures ([`sas`]), symmetric-key group derivation
//! ([`group_key`]), registration-id rules and the TPM registration id ([`id`]), the API
//! versions ([`api_version`]), the `enrollment.json` schema ([`enrollment_file`]), the MQTT
//! user name and topics ([`mqtt`]), and IoT Hub's device API over MQTT ([`hub`]), the
//! connection a device opens after DPS assigned it.
//! What is not: sockets, TLS, files, clocks beyond what a caller passes in.
//!
//! ```
//! use dps_proto::sas::{create_token, SasToken};
//! let key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";
//! let token = create_token("0ne00000001/registrations/dev-1", key, Some("registration"), 2_000_000_000)?;
//! let parsed = SasToken::parse(&token)?;
//! parsed.verify_signature_b64(key)?;
//! # Ok::<(), dps_proto::sas::SasError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api_version;
pub mod attestation;
pub mod enrollment_file;
pub mod group_key;
pub mod hub;
pub mod id;
pub mod mqtt;
pub mod sas;
pub mod wire;

pub use api_version::{ApiVersion, DEVICE_API_VERSIONS, SERVICE_API_VERSIONS};
pub use attestation::{AttestationKind, UnknownAttestationKind};
pub use id::{is_valid_id, survives_url_normalisation, tpm_registration_id};
