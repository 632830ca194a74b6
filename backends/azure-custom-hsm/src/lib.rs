//! Hosts an existing Azure IoT C SDK custom-HSM library (the `hsm_client_*` contract of the C
//! SDK's `hsm_client_data.h`, as `hsmkit-azure-custom-hsm-api` spells it) as an hsmkit plugin,
//! so that a device that already has such a library can move to hsmkit without rewriting it.
//!
//! Settings: `library` (required: path of the `.so`, loaded under the plugin file rules: opened
//! once, owner and mode of the file and every folder checked on the descriptor, `dlopen`ed from
//! that descriptor), `registration_id` (optional: the symmetric-key registration id, instead of
//! the library's `hsm_client_get_registration_name`). `state_dir` is accepted and unused: the
//! contract has no configuration, the library keeps its own state.
//!
//! Capabilities: the plugin table declares all three interfaces, because the table is static and
//! which interfaces a library exports is known only when `create` has read the `library`
//! setting. An interface whose symbol the library does not export answers every call with
//! `HSM_ERR_NOT_SUPPORTED` naming the missing symbol (the contract: a missing symbol means the
//! interface is absent); `hsm-conformance` skips that interface's checks.
//!
//! The mapping:
//! - TPM: EK/SRK (`hsm_client_get_ek/srk`, checked to be a `TPM2B_PUBLIC`), activation
//!   (`hsm_client_activate_identity_key` with the DPS `authenticationKey` blob, checked to
//!   parse first), signing (`hsm_client_sign_with_identity`, checked to be 32 bytes).
//! - X.509: chain (`hsm_client_get_cert`, PEM, leaf first), common name, and signatures made in
//!   software with the PEM key `hsm_client_get_key` returns (the C SDK's own model: the key is in
//!   the library's memory; P-256 and RSA), wiped after each signature.
//! - Symmetric key: registration id, HMAC-SHA256 in software with the base64 key
//!   `hsm_client_get_symm_key` returns (the C SDK computes the SAS itself the same way), import
//!   through `hsm_client_set_symm_key_info`.
//!
//! The library is loaded once per process and file and its `hsm_client_tpm_init` /
//! `hsm_client_x509_init` are called once, at that load; every call into it holds one lock per
//! library (the contract says nothing about threads); everything it returns is released with
//! `free()` after being copied (secrets wiped first); NULL, failed or malformed answers become
//! errors naming the function, never a crash on this side.

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
#[allow(unsafe_code)]
mod library;
mod sign;

pub use error::LibraryError;

use base64::Engine as _;
use hsm_plugin_sdk::{
    ErrorCode, HsmError, HsmPlugin, PluginConfig, PluginInfo, Setting, SignAlgorithm,
    SymmetricKeyHsm, TpmHsm, X509Hsm,
};
// DPS's registration id rule and the SAS HMAC, kept once in the symmetric backend.
use hsmkit_backend_symmetric::{hmac_sha256, validate_registration_id};
use library::{CustomHsmLibrary, Handle, Kind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use zeroize::Zeroizing;

/// One instance: the shared library and this instance's handles, made on first use.
pub struct AzureCustomHsmPlugin {
    lib: Arc<CustomHsmLibrary>,
    registration_id: Option<String>,
    tpm: Mutex<Option<Arc<Handle>>>,
    x509: Mutex<Option<Arc<Handle>>>,
    key: Mutex<Option<Arc<Handle>>>,
}

impl std::fmt::Debug for AzureCustomHsmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureCustomHsmPlugin")
            .field("library", &self.lib.path())
            .field("registration_id", &self.registration_id)
            .finish()
    }
}

impl HsmPlugin for AzureCustomHsmPlugin {
    const INFO: PluginInfo = PluginInfo {
        name: "azure-custom-hsm",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "An existing Azure IoT C SDK custom-HSM library (hsm_client_* TPM, X.509 and symmetric-key interfaces), hosted",
    };
    const SETTINGS: &'static [Setting] = &[
        Setting::required(
            "library",
            "path of the custom-HSM .so (checked like a plugin: owner root or you, not writable by others)",
        ),
        Setting::optional(
            "registration_id",
            "symmetric-key registration id; default: the library's hsm_client_get_registration_name",
        ),
    ];

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        let library = PathBuf::from(config.require("library")?);
        let registration_id = match config.get("registration_id") {
            Some(id) => Some(validate_registration_id(id)?.to_string()),
            None => None,
        };
        let lib = CustomHsmLibrary::load(&library)?;
        Ok(AzureCustomHsmPlugin {
            lib,
            registration_id,
            tpm: Mutex::new(None),
            x509: Mutex::new(None),
            key: Mutex::new(None),
        })
    }
}

impl AzureCustomHsmPlugin {
    /// This instance's handle of `kind`, created on first use (a failed create is retried).
    fn handle(&self, kind: Kind) -> Result<Arc<Handle>, HsmError> {
        let slot = match kind {
            Kind::Tpm => &self.tpm,
            Kind::X509 => &self.x509,
            Kind::Key => &self.key,
        };
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = slot.as_ref() {
            return Ok(Arc::clone(h));
        }
        let h = Arc::new(self.lib.create(kind)?);
        *slot = Some(Arc::clone(&h));
        Ok(h)
    }

    /// Whether the hosted library has interface `kind` (exported, complete, initialised).
    pub fn has_tpm(&self) -> bool {
        self.lib.has(Kind::Tpm)
    }

    /// Whether the hosted library has the X.509 interface.
    pub fn has_x509(&self) -> bool {
        self.lib.has(Kind::X509)
    }

    /// Whether the hosted library has the symmetric-key interface.
    pub fn has_symmetric_key(&self) -> bool {
        self.lib.has(Kind::Key)
    }
}

/// A TPM2B_PUBLIC check on what `function` returned.
fn tpm2b_public(function: &str, bytes: &[u8]) -> Result<Vec<u8>, HsmError> {
    hsm_tpm_common::public::PublicArea::from_tpm2b(bytes).map_err(|e| {
        HsmError::device(format!(
            "{function} returned {} bytes that are not a marshalled TPM2B_PUBLIC ({e})",
            bytes.len()
        ))
    })?;
    Ok(bytes.to_vec())
}

impl TpmHsm for AzureCustomHsmPlugin {
    fn endorsement_key(&self) -> Result<Vec<u8>, HsmError> {
        let ek = self.handle(Kind::Tpm)?.get_ek()?;
        tpm2b_public("hsm_client_get_ek", &ek)
    }

    fn storage_root_key(&self) -> Result<Vec<u8>, HsmError> {
        let srk = self.handle(Kind::Tpm)?.get_srk()?;
        tpm2b_public("hsm_client_get_srk", &srk)
    }

    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), HsmError> {
        let h = self.handle(Kind::Tpm)?;
        // A blob that is no DPS authenticationKey never reaches the library.
        hsm_tpm_common::dps::parse_authentication_key(blob).map_err(|e| {
            HsmError::invalid_argument(format!("not a DPS authenticationKey blob: {e}"))
        })?;
        h.activate_identity_key(blob).map_err(HsmError::from)
    }

    fn sign_with_identity(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.handle(Kind::Tpm)?
            .sign_with_identity(data)
            .map_err(|e| match e {
                // The contract gives no reason; the usual one is that nothing was activated.
                LibraryError::Failed { .. } => HsmError::invalid_state(format!(
                    "{e} (the contract gives no reason; usually no identity key is activated)"
                )),
                other => other.into(),
            })
    }
}

impl X509Hsm for AzureCustomHsmPlugin {
    fn certificate_chain_pem(&self) -> Result<String, HsmError> {
        let pem = self.handle(Kind::X509)?.get_cert()?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(HsmError::device(
                "hsm_client_get_cert returned no PEM CERTIFICATE block",
            ));
        }
        Ok(pem.to_string())
    }

    fn common_name(&self) -> Result<String, HsmError> {
        Ok(self.handle(Kind::X509)?.get_common_name()?.to_string())
    }

    fn sign_digest(&self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.handle(Kind::X509)?.get_key()?;
        sign::sign_digest(&key, algorithm, digest)
    }
}

impl SymmetricKeyHsm for AzureCustomHsmPlugin {
    fn registration_id(&self) -> Result<String, HsmError> {
        if let Some(id) = &self.registration_id {
            return Ok(id.clone());
        }
        self.handle(Kind::Key)?
            .get_registration_name()
            .map(|s| s.to_string())
            .map_err(|e| {
                not_found_when_null(
                    e,
                    "no registration id: set `registration_id` or import a key with one",
                )
            })
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let b64 = self
            .handle(Kind::Key)?
            .get_symm_key()
            .map_err(|e| not_found_when_null(e, "no key: import one first"))?;
        let key = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim().as_bytes())
                .map_err(|e| {
                    HsmError::device(format!(
                        "hsm_client_get_symm_key returned a key that is not base64 ({e})"
                    ))
                })?,
        );
        hmac_sha256(&key, data)
    }

    fn import_key(&self, registration_id: Option<&str>, key: &[u8]) -> Result<(), HsmError> {
        if key.len() < 16 || key.len() > 64 {
            return Err(HsmError::invalid_argument(format!(
                "symmetric keys must be 16 to 64 bytes, got {}",
                key.len()
            )));
        }
        let h = self.handle(Kind::Key)?;
        let id = match registration_id.filter(|id| !id.is_empty()) {
            Some(id) => validate_registration_id(id)?.to_string(),
            None => match &self.registration_id {
                Some(id) => id.clone(),
                None => h.get_registration_name().map(|s| s.to_string()).map_err(|e| {
                    HsmError::invalid_argument(format!(
                        "hsm_client_set_symm_key_info needs a registration id: pass one, set `registration_id`, or have the library hold one ({e})"
                    ))
                })?,
            },
        };
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key));
        let c_id = library::c_string(&id)
            .ok_or_else(|| HsmError::invalid_argument("registration id holds a NUL byte"))?;
        let c_key =
            library::c_string(&b64).ok_or_else(|| HsmError::internal("base64 holds a NUL byte"))?;
        h.set_symm_key_info(as_c(&c_id)?, as_c(&c_key)?)
            .map_err(HsmError::from)
    }
}

/// `v` (NUL-terminated, no other NUL) as a C string.
fn as_c(v: &[u8]) -> Result<&std::ffi::CStr, HsmError> {
    std::ffi::CStr::from_bytes_with_nul(v).map_err(|e| HsmError::internal(format!("C string: {e}")))
}

/// A NULL answer from a getter that has nothing to give is "not found", with `hint`.
fn not_found_when_null(e: LibraryError, hint: &str) -> HsmError {
    match e {
        LibraryError::Null { .. } => HsmError::new(ErrorCode::NotFound, format!("{e} ({hint})")),
        other => other.into(),
    }
}

hsm_plugin_sdk::plugin_entry!(
    /// The plugin table (all three interfaces; those the hosted library lacks answer
    /// `HSM_ERR_NOT_SUPPORTED`), exported by no symbol: `plugin/` exports it as
    /// `hsm_plugin_entry`, and a host that links this crate in calls it directly.
    pub fn plugin_entry for AzureCustomHsmPlugin, tpm, x509, symmetric_key
);
