//! One open TPM (a tss-esapi context) and the operations DPS attestation needs: EK and SRK
//! created when missing, the DPS import flow, and HMAC with the identity key; and the TPM side
//! of operational keys (ABI 1.2): TPM2_Create of a P-256 ECDSA key under the SRK, Load,
//! TPM2_Sign, and persisting at or evicting from an owner handle.
//!
//! Every transient object and session this code creates is flushed before the call returns,
//! on success and on failure, so a long-running host does not exhaust TPM slots.

use std::str::FromStr;

use hsm_plugin_sdk::HsmError;
use hsm_tpm_common::dps::AuthenticationKeyBlob;
use hsm_tpm_common::marshal::tpm2b;
use hsm_tpm_common::public::{ek_template_rsa2048, srk_template_rsa2048, PublicArea};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, ObjectHandle, PersistentTpmHandle, SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, CapabilityData, Data, Digest, EccScheme, EncryptedSecret, HashScheme, HashcheckTicket,
    IdObject, MaxBuffer, Nonce, Private, Public, Signature, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};

use crate::config::{Tpm2Config, EK_HANDLE, SRK_HANDLE};

/// Largest TPM2B_MAX_BUFFER tss-esapi marshals (TPM2_MAX_DIGEST_BUFFER).
const MAX_BUFFER: usize = 1024;

/// An error for an authenticationKey part that a TPM structure cannot hold.
fn invalid(what: &'static str) -> impl Fn(tss_esapi::Error) -> HsmError {
    move |e| HsmError::invalid_argument(format!("authenticationKey {what} does not fit: {e}"))
}

/// A TPM failure as a plugin error; the TSS message names the response code, never secrets.
/// A wrong hierarchy authValue (or a TPM in dictionary-attack lockout) is an authentication
/// failure, so the host can tell a bad `owner_auth` from a broken TPM.
pub fn tpm_error(action: &str, e: tss_esapi::Error) -> HsmError {
    let message = format!("TPM {action} failed: {e}");
    match e {
        tss_esapi::Error::Tss2Error(rc)
            if matches!(
                rc.kind(),
                Some(
                    Tss2ResponseCodeKind::BadAuth
                        | Tss2ResponseCodeKind::AuthFail
                        | Tss2ResponseCodeKind::Lockout
                )
            ) =>
        {
            HsmError::authentication(format!(
                "{message} (check the `owner_auth` / `endorsement_auth` settings)"
            ))
        }
        _ => HsmError::device(message),
    }
}

fn persistent(handle: u32) -> Result<PersistentTpmHandle, HsmError> {
    PersistentTpmHandle::new(handle)
        .map_err(|e| HsmError::invalid_argument(format!("bad persistent handle {handle:#x}: {e}")))
}

/// Converts a wire-library template into the tss-esapi type by marshalling, so the TPM gets
/// byte for byte the template the rest of hsmkit uses.
fn public_from_template(area: &PublicArea) -> Result<Public, HsmError> {
    let bytes = area
        .to_tpmt()
        .map_err(|e| HsmError::internal(format!("template: {e}")))?;
    Public::unmarshall(&bytes).map_err(|e| HsmError::internal(format!("template: {e}")))
}

/// An open TPM.
pub struct TpmDevice {
    ctx: Context,
    owner_auth: Auth,
    endorsement_auth: Auth,
    identity_handle: u32,
    /// ESYS handle of the persisted identity key, looked up once per connection.
    identity: Option<ObjectHandle>,
}

impl TpmDevice {
    /// Connects through the configured TCTI and sets the hierarchy authValues.
    pub fn open(config: &Tpm2Config) -> Result<Self, HsmError> {
        crate::tss_log::quiet_unless_asked();
        let tcti = TctiNameConf::from_str(&config.tcti).map_err(|e| {
            HsmError::invalid_argument(format!("setting `tcti` `{}` is invalid: {e}", config.tcti))
        })?;
        let ctx = Context::new(tcti).map_err(|e| {
            HsmError::device(format!(
                "cannot open the TPM through TCTI `{}`: {e} (is the TPM or simulator running \
                 and the TCTI library, libtss2-tcti-*, installed?)",
                config.tcti
            ))
        })?;
        let auth = |bytes: &[u8], key: &str| {
            Auth::try_from(bytes.to_vec())
                .map_err(|_| HsmError::invalid_argument(format!("setting `{key}` is too long")))
        };
        Ok(Self {
            ctx,
            owner_auth: auth(&config.owner_auth, "owner_auth")?,
            endorsement_auth: auth(&config.endorsement_auth, "endorsement_auth")?,
            identity_handle: config.identity_handle,
            identity: None,
        })
    }

    /// The underlying context, for tests that drive the TPM directly.
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    fn set_hierarchy_auth(&mut self) -> Result<(), HsmError> {
        self.ctx
            .tr_set_auth(ObjectHandle::Owner, self.owner_auth.clone())
            .map_err(|e| tpm_error("setting owner auth", e))?;
        self.ctx
            .tr_set_auth(ObjectHandle::Endorsement, self.endorsement_auth.clone())
            .map_err(|e| tpm_error("setting endorsement auth", e))
    }

    /// Whether something is persisted at `handle`, asked with GetCapability so that a missing
    /// key is an answer, not a TPM error (which the TSS would also log).
    fn is_persisted(&mut self, handle: u32) -> Result<bool, HsmError> {
        let wanted = TpmHandle::Persistent(persistent(handle)?);
        let (data, _) = self
            .ctx
            .get_capability(CapabilityType::Handles, handle, 1)
            .map_err(|e| tpm_error("GetCapability(handles)", e))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.contains(&wanted),
            _ => false,
        })
    }

    /// The ESYS handle of a persistent object, or `None` when nothing is stored there.
    fn find_persistent(&mut self, handle: u32) -> Result<Option<ObjectHandle>, HsmError> {
        if !self.is_persisted(handle)? {
            return Ok(None);
        }
        let tpm_handle = TpmHandle::Persistent(persistent(handle)?);
        self.ctx
            .tr_from_tpm_public(tpm_handle)
            .map(Some)
            .map_err(|e| tpm_error("reading a persistent handle", e))
    }

    /// The key at `handle`, created from `template` under `hierarchy` and persisted when
    /// missing, as the Azure C SDK does.
    fn ensure_primary(
        &mut self,
        handle: u32,
        hierarchy: Hierarchy,
        template: &PublicArea,
    ) -> Result<KeyHandle, HsmError> {
        if let Some(existing) = self.find_persistent(handle)? {
            return Ok(existing.into());
        }
        self.set_hierarchy_auth()?;
        let public = public_from_template(template)?;
        let created = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(hierarchy, public, None, None, None, None)
            })
            .map_err(|e| tpm_error("CreatePrimary", e))?
            .key_handle;
        let target = Persistent::Persistent(persistent(handle)?);
        let persisted = self.ctx.execute_with_nullauth_session(|ctx| {
            ctx.evict_control(Provision::Owner, created.into(), target)
        });
        let flushed = self.ctx.flush_context(created.into());
        let persisted = persisted.map_err(|e| tpm_error("EvictControl", e))?;
        flushed.map_err(|e| tpm_error("FlushContext", e))?;
        hsm_plugin_sdk::log::info(&format!(
            "tpm2: created and persisted primary key at {handle:#010x}"
        ));
        Ok(persisted.into())
    }

    /// The EK at 0x81010001 (TCG RSA-2048 template), created when missing.
    pub fn endorsement_key(&mut self) -> Result<KeyHandle, HsmError> {
        self.ensure_primary(EK_HANDLE, Hierarchy::Endorsement, &ek_template_rsa2048())
    }

    /// The SRK at 0x81000001 (TCG RSA-2048 template), created when missing.
    pub fn storage_root_key(&mut self) -> Result<KeyHandle, HsmError> {
        self.ensure_primary(SRK_HANDLE, Hierarchy::Owner, &srk_template_rsa2048())
    }

    /// The marshalled TPM2B_PUBLIC of a loaded key.
    pub fn public_tpm2b(&mut self, key: KeyHandle) -> Result<Vec<u8>, HsmError> {
        let (public, _, _) = self
            .ctx
            .read_public(key)
            .map_err(|e| tpm_error("ReadPublic", e))?;
        let tpmt = public
            .marshall()
            .map_err(|e| tpm_error("marshalling TPMT_PUBLIC", e))?;
        tpm2b(&tpmt, "TPM2B_PUBLIC").map_err(|e| HsmError::internal(e.to_string()))
    }

    /// ActivateCredential under a PolicySecret(endorsement) session, which the EK's policy
    /// demands. The policy session is flushed whatever happens.
    fn activate_credential(
        &mut self,
        ek: KeyHandle,
        srk: KeyHandle,
        parts: &AuthenticationKeyBlob<'_>,
    ) -> Result<Digest, HsmError> {
        let id_object =
            IdObject::try_from(parts.id_object.to_vec()).map_err(invalid("credential"))?;
        let secret = EncryptedSecret::try_from(parts.ek_encrypted_secret.to_vec())
            .map_err(invalid("EK secret"))?;
        self.set_hierarchy_auth()?;
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(|e| tpm_error("StartAuthSession", e))?
            .ok_or_else(|| HsmError::device("TPM returned no policy session"))?;
        let result = (|| {
            let policy =
                PolicySession::try_from(session).map_err(|e| tpm_error("policy session", e))?;
            self.ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.policy_secret(
                        policy,
                        AuthHandle::Endorsement,
                        Nonce::default(),
                        Digest::default(),
                        Nonce::default(),
                        None,
                    )
                })
                .map_err(|e| tpm_error("PolicySecret(endorsement)", e))?;
            self.ctx
                .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                    ctx.activate_credential(srk, ek, id_object, secret)
                })
                .map_err(|e| {
                    HsmError::authentication(format!(
                        "ActivateCredential refused the authenticationKey (not made for this \
                         TPM's EK and SRK?): {e}"
                    ))
                })
        })();
        // A failed command may already have freed the session; nothing more to do then.
        let _ = self.ctx.flush_context(SessionHandle::from(session).into());
        result
    }

    /// The DPS flow: ActivateCredential, Import, Load, and persisting the identity key at the
    /// configured handle in place of any earlier one.
    pub fn import_dps_blob(&mut self, parts: &AuthenticationKeyBlob<'_>) -> Result<(), HsmError> {
        let public = Public::unmarshall(parts.identity_public).map_err(invalid("public key"))?;
        let duplicate =
            Private::try_from(parts.duplicate.to_vec()).map_err(invalid("duplicate"))?;
        let seed = EncryptedSecret::try_from(parts.srk_encrypted_secret.to_vec())
            .map_err(invalid("SRK seed"))?;
        let ek = self.endorsement_key()?;
        let srk = self.storage_root_key()?;
        let inner_key = self.activate_credential(ek, srk, parts)?;
        let inner_key = Data::try_from(inner_key.value().to_vec())
            .map_err(|e| HsmError::invalid_argument(format!("credential too long: {e}")))?;
        let private = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.import(
                    srk.into(),
                    Some(inner_key),
                    public.clone(),
                    duplicate,
                    seed,
                    SymmetricDefinitionObject::AES_128_CFB,
                )
            })
            .map_err(|e| {
                HsmError::authentication(format!("Import refused the identity key: {e}"))
            })?;
        let loaded = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(srk, private, public))
            .map_err(|e| tpm_error("Load", e))?;
        let persisted = self.replace_identity(loaded);
        let flushed = self.ctx.flush_context(loaded.into());
        persisted?;
        flushed.map_err(|e| tpm_error("FlushContext", e))
    }

    fn replace_identity(&mut self, loaded: KeyHandle) -> Result<(), HsmError> {
        self.set_hierarchy_auth()?;
        let target = Persistent::Persistent(persistent(self.identity_handle)?);
        // Whatever happens next, a cached handle to the old key is stale.
        self.identity = None;
        if let Some(old) = self.find_persistent(self.identity_handle)? {
            // Through `evict`, which also closes ESYS's record of the old key: left open, the
            // records of every replaced key pile up under this handle, and only the new key's
            // record (kept open as `self.identity`, and newer records are found first) stops
            // a later look-up from seeing a stale name ("Name mismatch between two calls of
            // Esys_TR_FromTPMPublic", as operational keys hit once their record was closed).
            self.evict(old, self.identity_handle)?;
        }
        let persisted = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.evict_control(Provision::Owner, loaded.into(), target)
            })
            .map_err(|e| tpm_error("EvictControl (persisting the identity key)", e))?;
        self.identity = Some(persisted);
        Ok(())
    }

    /// The persisted identity key, or `InvalidState` when none was activated.
    pub fn identity_key(&mut self) -> Result<ObjectHandle, HsmError> {
        if let Some(handle) = self.identity {
            return Ok(handle);
        }
        let found = self.find_persistent(self.identity_handle)?.ok_or_else(|| {
            HsmError::invalid_state(format!(
                "no identity key at {:#010x}: activate the DPS authenticationKey first",
                self.identity_handle
            ))
        })?;
        self.identity = Some(found);
        Ok(found)
    }

    /// The largest input TPM2_HMAC takes in one command on this TPM.
    pub fn input_buffer_limit(&mut self) -> Result<usize, HsmError> {
        let reported = self
            .ctx
            .get_tpm_property(PropertyTag::InputBuffer)
            .map_err(|e| tpm_error("GetCapability(TPM_PT_INPUT_BUFFER)", e))?;
        Ok(reported.map_or(MAX_BUFFER, |v| (v as usize).min(MAX_BUFFER)))
    }

    /// TPM2_HMAC with the identity key, for input within [`TpmDevice::input_buffer_limit`].
    pub fn hmac_identity(&mut self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let key = self.identity_key()?;
        let buffer = MaxBuffer::try_from(data.to_vec()).map_err(|e| {
            HsmError::invalid_argument(format!("input too long for TPM2_HMAC: {e}"))
        })?;
        // The identity key has an empty authValue (DPS makes it so): a password session costs
        // no extra TPM round trips, unlike an HMAC session.
        let digest = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.hmac(key, buffer, HashingAlgorithm::Sha256)
            })
            .map_err(|e| {
                // The key may have been evicted behind our back: look it up again next time.
                self.identity = None;
                tpm_error("HMAC", e)
            })?;
        Ok(digest.value().to_vec())
    }

    /// TPM2_Create of an operational key under the SRK (created when missing): ECC P-256,
    /// ECDSA with SHA-256, fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, sign,
    /// empty authValue. Returns its public area and its private part, which only this TPM's
    /// SRK can load (TPM-wrapped); nothing stays loaded.
    pub fn create_operational_key(&mut self) -> Result<(Public, Private), HsmError> {
        let srk = self.storage_root_key()?;
        let template = tss_esapi::utils::create_unrestricted_signing_ecc_public(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
        .map_err(|e| HsmError::internal(format!("operational key template: {e}")))?;
        // The SRK has an empty authValue (it is made so above): a password session costs no
        // extra TPM round trips.
        let created = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create(srk, template, None, None, None, None)
            })
            .map_err(|e| tpm_error("Create (operational key)", e))?;
        Ok((created.out_public, created.out_private))
    }

    /// Loads an operational key blob under the SRK; the caller flushes the handle. The raw TSS
    /// error is returned so the caller can say which file did not load.
    pub fn load_under_srk(
        &mut self,
        public: Public,
        private: Private,
    ) -> Result<Result<KeyHandle, tss_esapi::Error>, HsmError> {
        let srk = self.storage_root_key()?;
        Ok(self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.load(srk, private, public)
            }))
    }

    /// Flushes a transient object, ignoring a failure (the object may be gone already).
    pub fn flush_transient(&mut self, key: KeyHandle) {
        let _ = self.ctx.flush_context(key.into());
    }

    /// TPM2_Sign of a SHA-256 digest with a loaded (or persistent) P-256 ECDSA key of empty
    /// authValue, as a DER Ecdsa-Sig-Value.
    pub fn sign_ecdsa_p256(
        &mut self,
        key: KeyHandle,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, HsmError> {
        let digest = Digest::try_from(digest.to_vec())
            .map_err(|e| HsmError::internal(format!("digest: {e}")))?;
        // A NULL ticket: the key is not restricted, so the TPM need not have hashed the data.
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| HsmError::internal(format!("hashcheck ticket: {e}")))?;
        let signature = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.sign(key, digest, SignatureScheme::Null, validation)
            })
            .map_err(|e| tpm_error("Sign (operational key)", e))?;
        let Signature::EcDsa(ecc) = signature else {
            return Err(HsmError::device(
                "TPM2_Sign with the operational key returned no ECDSA signature",
            ));
        };
        let scalar = |v: &[u8]| -> Result<p256::FieldBytes, HsmError> {
            let mut out = p256::FieldBytes::default();
            let start = out.len().checked_sub(v.len()).ok_or_else(|| {
                HsmError::device("TPM2_Sign returned an ECDSA value longer than P-256's")
            })?;
            out[start..].copy_from_slice(v);
            Ok(out)
        };
        let r = scalar(ecc.signature_r().value())?;
        let s = scalar(ecc.signature_s().value())?;
        let signature = p256::ecdsa::Signature::from_scalars(r, s)
            .map_err(|_| HsmError::device("TPM2_Sign returned an invalid ECDSA signature"))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    /// The object persisted at `handle` and its public area, or `None` when nothing is there.
    /// The caller closes the ESYS handle with [`TpmDevice::close`].
    pub fn read_persistent(
        &mut self,
        handle: u32,
    ) -> Result<Option<(ObjectHandle, Public)>, HsmError> {
        let Some(object) = self.find_persistent(handle)? else {
            return Ok(None);
        };
        match self.ctx.read_public(object.into()) {
            Ok((public, _, _)) => Ok(Some((object, public))),
            Err(e) => {
                self.close(object);
                Err(tpm_error("ReadPublic", e))
            }
        }
    }

    /// Forgets an ESYS handle of a persistent object (the TPM keeps the object).
    pub fn close(&mut self, object: ObjectHandle) {
        let mut object = object;
        let _ = self.ctx.tr_close(&mut object);
    }

    /// Persists the loaded `key` at the owner `handle` (EvictControl, owner authorization).
    pub fn persist_at(&mut self, key: KeyHandle, handle: u32) -> Result<(), HsmError> {
        self.set_hierarchy_auth()?;
        let target = Persistent::Persistent(persistent(handle)?);
        let mut persisted = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.evict_control(Provision::Owner, key.into(), target)
            })
            .map_err(|e| tpm_error(&format!("EvictControl (persisting at {handle:#010x})"), e))?;
        let _ = self.ctx.tr_close(&mut persisted);
        Ok(())
    }

    /// Removes the persistent `object` at `handle` (EvictControl, owner authorization).
    pub fn evict(&mut self, object: ObjectHandle, handle: u32) -> Result<(), HsmError> {
        self.set_hierarchy_auth()?;
        let target = Persistent::Persistent(persistent(handle)?);
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.evict_control(Provision::Owner, object, target)
            })
            .map_err(|e| tpm_error(&format!("EvictControl (removing {handle:#010x})"), e))?;
        // ESYS keeps its record of the evicted object (name included) under the TPM handle,
        // and would refuse a later Esys_TR_FromTPMPublic of a new key at the same handle
        // ("name mismatch"): close it. tss-esapi already counts it closed, so its bookkeeping
        // error after the ESYS close is expected and ignored.
        self.close(object);
        Ok(())
    }
}
