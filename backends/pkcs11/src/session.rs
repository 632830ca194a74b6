//! Module registry, token selection, sessions and login.
//!
//! PKCS#11 allows one `C_Initialize` per module per process (cryptoki issues #93 and #260), so
//! every instance that uses a module shares one initialized context through a process-wide,
//! reference-counted registry; the last instance to go finalizes the module. Acquire and release
//! happen under the registry lock so a finalize can never race a new initialize.
//!
//! Opening a session, logging in and closing a session are serialized per module
//! (`session_lock`): tpm2-pkcs11 1.9 fails a `C_Login` (`CKR_GENERAL_ERROR`) when another
//! thread's `C_CloseSession` runs at the same moment (issue 13), and the specification lets a
//! module tie login state to the set of open sessions. Signing and the other calls of an open
//! session are not serialized: separate instances still run in parallel.

use crate::error::{Pkcs11Error, Result};
use crate::uri::{ObjectType, Pkcs11Uri};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

struct Entry {
    context: Pkcs11,
    users: usize,
    /// True when our `C_Initialize` succeeded. When someone else in the process had already
    /// initialized the module (another copy of this plugin, a host library), finalizing it
    /// would pull it away from under them, so only the initializer finalizes.
    owned: bool,
}

fn registry() -> MutexGuard<'static, HashMap<PathBuf, Entry>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    // A panic while holding the lock leaves the map itself consistent, so poisoning is ignored.
    hsm_plugin_sdk::sync::lock(REGISTRY.get_or_init(|| Mutex::new(HashMap::new())))
}

/// The lock that serializes session open, login and close on the module at `canonical`.
///
/// One mutex per module path for the life of the process (a handful of bytes per module ever
/// used), so that a session closing while holding it can never outlive it, and so that a module
/// finalized and initialized again keeps the same lock.
fn session_lock(canonical: &Path) -> &'static Mutex<()> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, &'static Mutex<()>>>> = OnceLock::new();
    let mut locks = hsm_plugin_sdk::sync::lock(LOCKS.get_or_init(|| Mutex::new(HashMap::new())));
    locks
        .entry(canonical.to_path_buf())
        .or_insert_with(|| Box::leak(Box::new(Mutex::new(()))))
}

/// A counted use of an initialized PKCS#11 module; the module is finalized when the last
/// lease is dropped.
#[derive(Debug)]
pub struct ModuleLease {
    path: PathBuf,
    context: Pkcs11,
}

impl ModuleLease {
    /// Loads and initializes the module at `path`, or shares the already initialized one.
    ///
    /// The module becomes code in this process, so it gets the plugin rules: opened once,
    /// checked on that descriptor (owner root or us, not writable by others, every folder up
    /// to `/`), and loaded from that descriptor, never by a second lookup of the path.
    pub fn acquire(path: &Path) -> Result<Self> {
        let checked = hsm_secure_fs::trust::open_trusted(path).map_err(|e| match e {
            hsm_secure_fs::trust::TrustError::Io { ref error, .. }
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                Pkcs11Error::not_found(format!(
                    "PKCS#11 module {} not found ({error}); for SoftHSM2 install it with `apt-get install softhsm2`",
                    path.display()
                ))
            }
            other => Pkcs11Error::invalid_argument(format!("PKCS#11 module {other}")),
        })?;
        let canonical = checked.real_path().to_path_buf();
        let mut map = registry();
        if let Some(entry) = map.get_mut(&canonical) {
            entry.users += 1;
            return Ok(Self {
                path: canonical,
                context: entry.context.clone(),
            });
        }
        let load_path = checked.pin_for_dlopen().map_err(|e| {
            Pkcs11Error::device(format!("PKCS#11 module {}: {e}", canonical.display()))
        })?;
        let context = Pkcs11::new(&load_path).map_err(|e| {
            crate::error::from_cryptoki(&format!("loading module {}", canonical.display()), e)
        })?;
        let owned = match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) => true,
            // Someone else in the process (another library) initialized it: share it.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => {
                return Err(crate::error::from_cryptoki(
                    &format!("initializing module {}", canonical.display()),
                    e,
                ))
            }
        };
        map.insert(
            canonical.clone(),
            Entry {
                context: context.clone(),
                users: 1,
                owned,
            },
        );
        Ok(Self {
            path: canonical,
            context,
        })
    }

    /// The initialized context.
    pub fn context(&self) -> &Pkcs11 {
        &self.context
    }

    /// The module's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many leases of the module at `path` are alive in this process (for tests).
    pub fn users(path: &Path) -> usize {
        let Ok(canonical) = std::fs::canonicalize(path) else {
            return 0;
        };
        registry().get(&canonical).map_or(0, |e| e.users)
    }
}

impl ModuleLease {
    /// Whether this registry's `C_Initialize` of the module at `path` succeeded (`None` when
    /// the module is not in use). A module finalized earlier initializes successfully again,
    /// while one that was never finalized answers `CKR_CRYPTOKI_ALREADY_INITIALIZED`.
    pub fn initialized_by_us(path: &Path) -> Option<bool> {
        let canonical = std::fs::canonicalize(path).ok()?;
        registry().get(&canonical).map(|e| e.owned)
    }
}

impl Drop for ModuleLease {
    fn drop(&mut self) {
        let mut map = registry();
        let last = match map.get_mut(&self.path) {
            Some(entry) => {
                entry.users -= 1;
                entry.users == 0
            }
            None => false,
        };
        if last {
            if let Some(entry) = map.remove(&self.path) {
                if entry.owned {
                    // Nothing to report to: a failed finalize leaves the process no worse off.
                    let _ = entry.context.finalize();
                }
            }
        }
    }
}

/// Finds the slot holding the token the URI describes. Exactly one token must match.
pub fn find_slot(context: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| crate::error::from_cryptoki("listing slots", e))?;
    let mut found = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let info = match context.get_token_info(slot) {
            Ok(info) => info,
            // A token pulled out between the two calls is simply not a match.
            Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
            Err(e) => return Err(crate::error::from_cryptoki("reading token info", e)),
        };
        let is = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w == have.trim_end())
        };
        if is(&uri.token, info.label())
            && is(&uri.serial, info.serial_number())
            && is(&uri.manufacturer, info.manufacturer_id())
            && is(&uri.model, info.model())
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Pkcs11Error::not_found(format!(
            "no token matches the token URI (token={}, serial={})",
            uri.token.as_deref().unwrap_or("*"),
            uri.serial.as_deref().unwrap_or("*")
        ))),
        _ => Err(Pkcs11Error::invalid_argument(format!(
            "{} tokens match the token URI; add `token=` or `serial=` to pick one",
            found.len()
        ))),
    }
}

/// An open, logged-in read/write session on one token. Dropping it closes the session under the
/// module's session lock and then releases the module (field order matters: the session must
/// close before a finalize).
#[derive(Debug)]
pub struct TokenSession {
    /// Always open; `None` only inside `drop`, which closes it under the module's session lock.
    session: Option<Session>,
    slot: Slot,
    lease: ModuleLease,
}

impl Drop for TokenSession {
    fn drop(&mut self) {
        // C_CloseSession must not overlap another thread's open or login (see the module
        // documentation); `lease` drops after this body, so any C_Finalize comes later.
        let _serialized = hsm_plugin_sdk::sync::lock(session_lock(self.lease.path()));
        drop(self.session.take());
    }
}

impl TokenSession {
    /// Opens a session on the token `token` of `module` and logs the user in. An existing login
    /// of this process on the token (`CKR_USER_ALREADY_LOGGED_IN`) is accepted.
    pub fn open(module: &Path, token: &Pkcs11Uri, pin: &str) -> Result<Self> {
        let lease = ModuleLease::acquire(module)?;
        // Held until logged in; on an error below the session drops (C_CloseSession) while
        // the guard is still held, since `session` is declared after it.
        let _serialized = hsm_plugin_sdk::sync::lock(session_lock(lease.path()));
        let slot = find_slot(lease.context(), token)?;
        // Read/write is needed only for imports and device setup; a write-protected token
        // still signs through a read-only session.
        let session = match lease.context().open_rw_session(slot) {
            Err(CkError::Pkcs11(RvError::TokenWriteProtected, _)) => {
                lease.context().open_ro_session(slot)
            }
            other => other,
        }
        .map_err(|e| crate::error::from_cryptoki("opening a session", e))?;
        let auth = AuthPin::new(pin.into());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(crate::error::from_cryptoki("logging in to the token", e)),
        }
        Ok(Self {
            session: Some(session),
            slot,
            lease,
        })
    }

    /// The cryptoki session.
    pub fn session(&self) -> &Session {
        match &self.session {
            Some(session) => session,
            // Taken only by `drop`, after which no method can run.
            None => unreachable!("a TokenSession's session is open until it is dropped"),
        }
    }

    /// The slot of the token.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The module lease (and through it the context).
    pub fn lease(&self) -> &ModuleLease {
        &self.lease
    }

    /// Finds exactly one object of class `class` matching the URI's label and id.
    pub fn find_one(
        &self,
        class: ObjectClass,
        uri: &Pkcs11Uri,
        what: &str,
    ) -> Result<ObjectHandle> {
        if let Some(t) = uri.object_type {
            if object_class(t) != class {
                return Err(Pkcs11Error::invalid_argument(format!(
                    "the URI for the {what} asks for type {t:?}"
                )));
            }
        }
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = self
            .session()
            .find_objects(&template)
            .map_err(|e| crate::error::from_cryptoki(&format!("searching the {what}"), e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Pkcs11Error::not_found(format!(
                "no {what} with {} in the token",
                uri.object_description()
            ))),
            many => Err(Pkcs11Error::invalid_argument(format!(
                "{} objects match {} for the {what}; add `id=` to pick one",
                many.len(),
                uri.object_description()
            ))),
        }
    }

    /// Reads one attribute's bytes-valued content.
    pub fn attribute_bytes(&self, object: ObjectHandle, kind: AttributeType) -> Result<Vec<u8>> {
        let attrs = self
            .session()
            .get_attributes(object, &[kind])
            .map_err(|e| crate::error::from_cryptoki(&format!("reading {kind:?}"), e))?;
        for attr in attrs {
            match attr {
                Attribute::Value(v)
                | Attribute::Label(v)
                | Attribute::Id(v)
                | Attribute::EcPoint(v)
                | Attribute::EcParams(v)
                | Attribute::Modulus(v) => return Ok(v),
                _ => {}
            }
        }
        // Tell a secret the token protects apart from an attribute the object lacks.
        let info = self
            .session()
            .get_attribute_info(object, &[kind])
            .map_err(|e| crate::error::from_cryptoki(&format!("inspecting {kind:?}"), e))?;
        if matches!(info.first(), Some(AttributeInfo::Sensitive)) {
            return Err(Pkcs11Error::not_supported(format!(
                "the token keeps the {kind:?} attribute secret (sensitive or non-extractable)"
            )));
        }
        Err(Pkcs11Error::not_found(format!(
            "the object has no readable {kind:?} attribute"
        )))
    }
}

fn object_class(t: ObjectType) -> ObjectClass {
    match t {
        ObjectType::Private => ObjectClass::PRIVATE_KEY,
        ObjectType::Public => ObjectClass::PUBLIC_KEY,
        ObjectType::Cert => ObjectClass::CERTIFICATE,
        ObjectType::SecretKey => ObjectClass::SECRET_KEY,
        ObjectType::Data => ObjectClass::DATA,
    }
}
