//! The C side of the SDK: generic `extern "C"` functions the export macro puts in the tables.
//! Everything here is an implementation detail of [`crate::export_plugin`].

pub mod operational_key;
pub mod symmetric_key;
pub mod tpm;
pub mod x509;

use crate::{HsmError, HsmPlugin, PluginConfig};
use hsm_api::*;
use std::any::Any;
use std::cell::RefCell;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use zeroize::Zeroize;

pub use abi_stable::type_layout::TypeLayout;

/// The interface tables a plugin exports; NULL for an interface it does not implement.
#[derive(Clone, Copy)]
pub struct Interfaces {
    /// TPM table or NULL.
    pub tpm: *const HsmTpmTable,
    /// X.509 table or NULL.
    pub x509: *const HsmX509Table,
    /// Symmetric-key table or NULL.
    pub symmetric_key: *const HsmSymmetricKeyTable,
    /// Operational-key table (ABI 1.2) or NULL; announced by its entry, not a capability bit.
    pub operational_key: *const HsmOperationalKeyTable,
}

impl Interfaces {
    /// No interface.
    pub const NONE: Interfaces = Interfaces {
        tpm: std::ptr::null(),
        x509: std::ptr::null(),
        symmetric_key: std::ptr::null(),
        operational_key: std::ptr::null(),
    };

    /// The capability bits the host checks against the tables present.
    fn capabilities(&self) -> CapabilitySet {
        let mut caps = CapabilitySet::NONE;
        if !self.tpm.is_null() {
            caps |= CapabilitySet::TPM;
        }
        if !self.x509.is_null() {
            caps |= CapabilitySet::X509;
        }
        if !self.symmetric_key.is_null() {
            caps |= CapabilitySet::SYMMETRIC_KEY;
        }
        caps
    }
}

thread_local! {
    /// The message of the last failed call made by this thread, with the address of the
    /// instance it failed on. Kept per thread, like `errno`, because SDK instances take
    /// concurrent calls: a per-instance slot would let one thread's failure overwrite another's
    /// before it is read, and would need a lock on every call.
    static LAST_ERROR: RefCell<Option<(usize, String)>> = const { RefCell::new(None) };
}

fn set_last_error(instance: *mut HsmInstance, message: String) {
    // `try_with` fails only while the thread is being torn down; the message is lost then.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some((instance as usize, message)));
}

fn last_error_of(instance: *mut HsmInstance) -> String {
    LAST_ERROR
        .try_with(|slot| match &*slot.borrow() {
            Some((at, message)) if *at == instance as usize => message.clone(),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn leak_cstr(s: &str) -> HsmStaticStr {
    let cleaned: String = s.chars().filter(|c| *c != '\0').collect();
    // Interior NULs were removed above, so CString::new cannot fail; fall back to empty.
    CString::new(cleaned).unwrap_or_default().into_raw()
}

/// The table's settings declaration (ABI 1.1), made once per plugin type like the table and
/// kept for the process.
fn leak_settings(settings: &[crate::Setting]) -> (*const HsmSetting, usize) {
    if settings.is_empty() {
        return (std::ptr::null(), 0);
    }
    let decls: Vec<HsmSetting> = settings
        .iter()
        .map(|s| HsmSetting {
            name: leak_cstr(s.name),
            description: leak_cstr(s.description),
            required: u32::from(s.required),
        })
        .collect();
    let decls: &'static [HsmSetting] = Box::leak(decls.into_boxed_slice());
    (decls.as_ptr(), decls.len())
}

/// The entry point body: installs the host logger, builds the table once, runs `on_load`.
///
/// # Safety
/// `host` is NULL or valid for the life of the process; `out_table` is NULL or writable.
pub unsafe fn entry<T: HsmPlugin>(
    host_major: u16,
    _host_minor: u16,
    host: *const HsmHostApi,
    out_table: *mut *const HsmPluginTable,
    table: &'static OnceLock<HsmPluginTable>,
    interfaces: Interfaces,
) -> HsmStatus {
    if out_table.is_null() {
        return HSM_ERR_INVALID_ARGUMENT;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        if !host.is_null() {
            // SAFETY: non-NULL host pointers are valid per the entry contract; the header is
            // read first so that an older, smaller host table is never over-read.
            let header = unsafe { (*host).header };
            if header.abi_major == HSM_ABI_MAJOR
                && header.struct_size as usize >= std::mem::size_of::<HsmHostApi>()
            {
                // SAFETY: same pointer, size checked above.
                crate::log::install(unsafe { (*host).log });
            }
        }
        let t = table.get_or_init(|| {
            let (settings, settings_len) = leak_settings(T::SETTINGS);
            HsmPluginTable {
                header: HsmTableHeader::current::<HsmPluginTable>(),
                name: leak_cstr(T::INFO.name),
                version: leak_cstr(T::INFO.version),
                vendor: leak_cstr(T::INFO.vendor),
                description: leak_cstr(T::INFO.description),
                capabilities: interfaces.capabilities().bits(),
                threading: HSM_THREADING_CONCURRENT,
                create: create::<T>,
                destroy: destroy::<T>,
                last_error: last_error::<T>,
                release_buffer,
                tpm: interfaces.tpm,
                x509: interfaces.x509,
                symmetric_key: interfaces.symmetric_key,
                settings,
                settings_len,
                operational_key: interfaces.operational_key,
            }
        });
        // SAFETY: out_table checked non-NULL above.
        unsafe { *out_table = t };
        if host_major != HSM_ABI_MAJOR {
            return HSM_ERR_ABI_MISMATCH;
        }
        match T::on_load() {
            Ok(()) => HSM_OK,
            Err(e) => {
                crate::log::error(&format!("plugin initialisation failed: {e}"));
                e.code().status()
            }
        }
    }));
    match result {
        Ok(status) => status,
        Err(payload) => {
            crate::log::error(&format!(
                "plugin panicked while loading: {}",
                panic_message(payload.as_ref())
            ));
            HSM_ERR_PANIC
        }
    }
}

/// The layout export body.
///
/// # Safety
/// `out_minor` is NULL or valid for one write.
pub unsafe fn abi_layout(out_minor: *mut u16) -> &'static TypeLayout {
    if !out_minor.is_null() {
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *out_minor = HSM_ABI_MINOR };
    }
    <HsmPluginTable as abi_stable::StableAbi>::LAYOUT
}

/// Moves `bytes` into a plugin-owned buffer written to `out`.
///
/// # Safety
/// `out` is valid for one write.
#[inline]
unsafe fn put_buffer(out: *mut HsmBuffer, bytes: Vec<u8>) {
    let buffer = if bytes.capacity() == 0 {
        HsmBuffer::EMPTY
    } else {
        // Handed over as is, capacity in `reserved`: no shrinking reallocation per call.
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        HsmBuffer {
            data: bytes.as_mut_ptr(),
            len: bytes.len(),
            reserved: bytes.capacity(),
        }
    };
    // SAFETY: caller guarantees `out` is writable.
    unsafe { *out = buffer };
}

/// Wipes the `capacity` bytes at `data` (the output and any spare capacity behind it): with
/// inline word stores when the block is whole aligned words, as signatures, MACs and keys are,
/// else with one `memset`. Never byte by byte: `free` reads the block's first words right
/// after, and a word load over byte stores still in flight stalls store forwarding.
///
/// # Safety
/// `data` is valid for writes of `capacity` bytes.
unsafe fn wipe(data: *mut u8, capacity: usize) {
    const WORD: usize = std::mem::size_of::<u64>();
    // Spare capacity may be uninitialised, so the block is only ever seen as `MaybeUninit`.
    if (data as usize) % WORD == 0 && capacity % WORD == 0 {
        // SAFETY: per the caller's contract, and the block is whole aligned words.
        let words = unsafe {
            std::slice::from_raw_parts_mut(data.cast::<MaybeUninit<u64>>(), capacity / WORD)
        };
        for word in words {
            word.zeroize();
        }
    } else {
        // SAFETY: per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(data.cast::<MaybeUninit<u8>>(), capacity) }
            .zeroize();
    }
}

/// Releases a buffer made by `put_buffer`, wiping it first: outputs can be secrets.
///
/// # Safety
/// `buffer` is NULL or points to a buffer this plugin produced and did not release yet.
pub unsafe extern "C" fn release_buffer(buffer: *mut HsmBuffer) {
    if buffer.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: checked non-NULL; the caller hands back a buffer we produced.
        let b = unsafe { &mut *buffer };
        if !b.data.is_null() && b.reserved > 0 {
            // SAFETY: data and capacity describe the allocation of the Vec put_buffer leaked.
            unsafe {
                wipe(b.data, b.reserved);
                drop(Vec::from_raw_parts(b.data, 0, b.reserved));
            }
        }
        *b = HsmBuffer::EMPTY;
    }));
}

/// Borrows an ABI slice as a Rust slice; `None` for a NULL pointer with a non-zero length.
///
/// # Safety
/// A non-NULL `ptr` is valid for `len` bytes for the duration of the call.
#[inline]
unsafe fn slice<'a>(s: HsmSlice) -> Option<&'a [u8]> {
    if s.len == 0 {
        Some(&[])
    } else if s.ptr.is_null() {
        None
    } else {
        // SAFETY: per the caller's contract.
        Some(unsafe { std::slice::from_raw_parts(s.ptr, s.len) })
    }
}

/// Runs `f` on the instance behind `instance`, with panics caught, the error message kept for
/// `last_error` and the output moved into `out` (when given).
///
/// # Safety
/// `instance` is NULL or a live instance made by `create::<T>`; `out` is NULL or writable.
#[inline(always)]
unsafe fn with_instance<T: HsmPlugin>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
    f: impl FnOnce(&T) -> Result<Vec<u8>, HsmError>,
) -> HsmStatus {
    // A failure leaves an empty buffer; success writes it once, at the end.
    let empty_out = || {
        if !out.is_null() {
            // SAFETY: non-NULL outputs are writable per contract.
            unsafe { *out = HsmBuffer::EMPTY };
        }
    };
    if instance.is_null() {
        empty_out();
        return HSM_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: non-NULL instances are live `T`s made by `create::<T>` per the contract; `T` is
    // `Sync`, so shared references from concurrent calls are fine.
    let inner = unsafe { &*(instance as *const T) };
    match catch_unwind(AssertUnwindSafe(|| f(inner))) {
        Ok(Ok(bytes)) => {
            if !out.is_null() {
                // SAFETY: out checked non-NULL and writable per contract.
                unsafe { put_buffer(out, bytes) };
            }
            HSM_OK
        }
        Ok(Err(e)) => {
            empty_out();
            record_error(instance, e)
        }
        Err(payload) => {
            empty_out();
            record_panic(instance, payload)
        }
    }
}

// The failure paths live out of line so that the success path of every call stays small.
#[cold]
#[inline(never)]
fn record_error(instance: *mut HsmInstance, e: HsmError) -> HsmStatus {
    let status = e.code().status();
    set_last_error(instance, e.message().to_string());
    status
}

#[cold]
#[inline(never)]
fn record_panic(instance: *mut HsmInstance, payload: Box<dyn Any + Send>) -> HsmStatus {
    set_last_error(
        instance,
        format!("plugin panicked: {}", panic_message(payload.as_ref())),
    );
    HSM_ERR_PANIC
}

/// Checks an output pointer and clears it, so that a failure leaves an empty buffer.
///
/// # Safety
/// `out` is NULL or writable.
#[inline]
unsafe fn prepare_out(out: *mut HsmBuffer) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: non-NULL per check; writable per contract.
    unsafe { *out = HsmBuffer::EMPTY };
    true
}

/// `create` for plugin type `T`.
///
/// # Safety
/// ABI contract of `HsmPluginTable::create`.
pub unsafe extern "C" fn create<T: HsmPlugin>(
    config: *const HsmKeyValue,
    config_len: usize,
    out_instance: *mut *mut HsmInstance,
    out_error: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: out_error is NULL or writable.
    let have_error_out = unsafe { prepare_out(out_error) };
    let fail = |status: HsmStatus, message: String| {
        if have_error_out {
            // SAFETY: checked writable above.
            unsafe { put_buffer(out_error, message.into_bytes()) };
        }
        status
    };
    if out_instance.is_null() || (config.is_null() && config_len > 0) {
        return fail(
            HSM_ERR_INVALID_ARGUMENT,
            "create: NULL output or configuration pointer".into(),
        );
    }
    let mut pairs = Vec::with_capacity(config_len);
    for i in 0..config_len {
        // SAFETY: config points to config_len entries per contract.
        let kv = unsafe { &*config.add(i) };
        // SAFETY: entries' slices are valid for the call per contract.
        let (k, v) = match unsafe { (slice(kv.key), slice(kv.value)) } {
            (Some(k), Some(v)) => (k, v),
            _ => {
                return fail(
                    HSM_ERR_INVALID_ARGUMENT,
                    format!("create: configuration entry {i} has a NULL pointer"),
                )
            }
        };
        match (std::str::from_utf8(k), std::str::from_utf8(v)) {
            (Ok(k), Ok(v)) => pairs.push((k.to_string(), v.to_string())),
            _ => {
                return fail(
                    HSM_ERR_INVALID_ARGUMENT,
                    format!("create: configuration entry {i} is not UTF-8"),
                )
            }
        }
    }
    // An instance may load or derive secrets; whatever the host is, its memory must not end
    // up in a core file from now on (process-wide, see hsm_secure_fs::dump for why).
    if let Err(e) = hsm_secure_fs::dump::disable_core_dumps() {
        return fail(
            HSM_ERR_DEVICE,
            format!("create: cannot keep secrets out of core dumps (prctl PR_SET_DUMPABLE): {e}"),
        );
    }
    let config = PluginConfig::from_pairs(pairs);
    // A key the plugin does not read is a typo or a setting for another plugin: refused here,
    // before the plugin's create, so every SDK plugin keeps the rule whatever its create does.
    if let Err(e) = crate::settings::check(T::SETTINGS, &config) {
        return fail(e.code().status(), e.message().to_string());
    }
    match catch_unwind(AssertUnwindSafe(|| T::create(&config))) {
        Ok(Ok(inner)) => {
            let boxed = Box::new(inner);
            // SAFETY: out_instance checked non-NULL.
            unsafe { *out_instance = Box::into_raw(boxed) as *mut HsmInstance };
            HSM_OK
        }
        Ok(Err(e)) => fail(e.code().status(), e.message().to_string()),
        Err(payload) => fail(
            HSM_ERR_PANIC,
            format!(
                "plugin panicked in create: {}",
                panic_message(payload.as_ref())
            ),
        ),
    }
}

/// `destroy` for plugin type `T`.
///
/// # Safety
/// `instance` is NULL or a live instance made by `create::<T>`, not used afterwards.
pub unsafe extern "C" fn destroy<T: HsmPlugin>(instance: *mut HsmInstance) {
    if instance.is_null() {
        return;
    }
    // A later instance may reuse the address: it must not inherit this one's message.
    let _ = LAST_ERROR.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if matches!(&*slot, Some((at, _)) if *at == instance as usize) {
            *slot = None;
        }
    });
    // SAFETY: the instance was made by Box::into_raw in create::<T>.
    let boxed = unsafe { Box::from_raw(instance as *mut T) };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(boxed))) {
        crate::log::error(&format!(
            "plugin panicked while destroying an instance: {}",
            panic_message(payload.as_ref())
        ));
    }
}

/// `last_error` for plugin type `T`.
///
/// # Safety
/// ABI contract of `HsmPluginTable::last_error`.
pub unsafe extern "C" fn last_error<T: HsmPlugin>(
    instance: *mut HsmInstance,
    out_message: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: forwarded contract.
    if instance.is_null() || !unsafe { prepare_out(out_message) } {
        return HSM_ERR_INVALID_ARGUMENT;
    }
    let message = last_error_of(instance);
    // SAFETY: out_message checked writable.
    unsafe { put_buffer(out_message, message.into_bytes()) };
    HSM_OK
}

/// Shared body of every interface call that produces bytes.
///
/// # Safety
/// `instance` NULL or live; `out` NULL or writable.
#[inline(always)]
pub(crate) unsafe fn call_with_output<T: HsmPlugin>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
    f: impl FnOnce(&T) -> Result<Vec<u8>, HsmError>,
) -> HsmStatus {
    if out.is_null() {
        return record_invalid(instance, "output pointer is NULL");
    }
    // SAFETY: forwarded contract; `with_instance` writes `*out` on every path.
    unsafe { with_instance(instance, out, f) }
}

/// Shared body of every interface call without output bytes.
///
/// # Safety
/// `instance` NULL or live.
pub(crate) unsafe fn call_without_output<T: HsmPlugin>(
    instance: *mut HsmInstance,
    f: impl FnOnce(&T) -> Result<(), HsmError>,
) -> HsmStatus {
    // SAFETY: forwarded contract.
    unsafe {
        with_instance(instance, std::ptr::null_mut(), |t: &T| {
            f(t).map(|()| Vec::new())
        })
    }
}

/// Borrows an input slice, or records an invalid-argument error naming `what`.
///
/// # Safety
/// Contract of [`slice`].
#[inline]
pub(crate) unsafe fn input<'a>(s: HsmSlice, what: &str) -> Result<&'a [u8], HsmError> {
    // SAFETY: forwarded contract.
    unsafe { slice(s) }.ok_or_else(|| null_input(what, s.len))
}

#[cold]
#[inline(never)]
fn null_input(what: &str, len: usize) -> HsmError {
    HsmError::invalid_argument(format!("{what}: NULL pointer with length {len}"))
}

fn record_invalid(instance: *mut HsmInstance, message: &str) -> HsmStatus {
    if !instance.is_null() {
        set_last_error(instance, message.to_string());
    }
    HSM_ERR_INVALID_ARGUMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_clears_exactly_the_block_aligned_or_not() {
        let mut block = vec![0xAAu8; 64];
        let base = block.as_mut_ptr();
        // Whole aligned words (the word path), then an odd, unaligned range (the memset path).
        let aligned = base.align_offset(8);
        // SAFETY: both ranges lie inside `block`.
        unsafe {
            wipe(base.add(aligned), 32);
            wipe(base.add(aligned + 41), 13);
        }
        for (i, b) in block.iter().enumerate() {
            let wiped =
                (aligned..aligned + 32).contains(&i) || (aligned + 41..aligned + 54).contains(&i);
            assert_eq!(*b, if wiped { 0 } else { 0xAA }, "byte {i}");
        }
    }

    #[test]
    fn buffers_round_trip_with_their_capacity_and_empty_ones_stay_empty() {
        let mut out = HsmBuffer::EMPTY;
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(b"signature");
        // SAFETY: `out` is a valid local.
        unsafe { put_buffer(&mut out, v) };
        assert_eq!(
            (out.len, out.reserved),
            (9, 48),
            "capacity travels in `reserved`"
        );
        assert_eq!(
            // SAFETY: the buffer was just made by put_buffer.
            unsafe { std::slice::from_raw_parts(out.data, out.len) },
            b"signature"
        );
        // SAFETY: as above; released exactly once.
        unsafe { release_buffer(&mut out) };
        assert!(out.data.is_null() && out.len == 0 && out.reserved == 0);
        // A second release of the emptied buffer is a no-op.
        // SAFETY: empty buffers are accepted.
        unsafe { release_buffer(&mut out) };

        // SAFETY: as above.
        unsafe { put_buffer(&mut out, Vec::new()) };
        assert!(out.data.is_null() && out.reserved == 0);
    }
}
