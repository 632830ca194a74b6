//! Bytes a plugin produced, read where the plugin put them.

use hsm_api::HsmBuffer;

/// An output buffer owned by the plugin that filled it, read in place and handed back to the
/// plugin (which wipes it) when dropped.
///
/// The host never copies plugin output unless the caller asks for it (`to_vec()`
/// through `Deref`), so a signature or key costs no second allocation and leaves no copy in
/// host memory that would need wiping.
pub struct PluginBytes {
    buffer: HsmBuffer,
    release: unsafe extern "C" fn(*mut HsmBuffer),
}

// SAFETY: the ABI allows `release_buffer` from any thread, concurrently with other calls and
// after the producing instance is gone; the bytes themselves are only ever read.
unsafe impl Send for PluginBytes {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for PluginBytes {}

impl PluginBytes {
    /// Takes ownership of the buffer a plugin wrote to `out`, to be released with `release`
    /// (the producing plugin's `release_buffer`, valid for good since plugins are never
    /// unloaded).
    #[inline]
    pub(crate) fn take(out: &HsmBuffer, release: unsafe extern "C" fn(*mut HsmBuffer)) -> Self {
        // Field by field, with loads the compiler cannot widen: the plugin stored the fields
        // separately, and one wide load spanning two of its stores cannot be served from the
        // store buffer. That stall cost more than the rest of the host side of a call
        // (`cargo bench -p hsmkit-plugin-symmetric --bench abi_call`).
        // SAFETY: each pointer is to a field of a live, initialized `HsmBuffer`.
        let buffer = unsafe {
            HsmBuffer {
                data: std::ptr::read_volatile(&out.data),
                len: std::ptr::read_volatile(&out.len),
                reserved: std::ptr::read_volatile(&out.reserved),
            }
        };
        PluginBytes { buffer, release }
    }

    /// The bytes as UTF-8 text, or `None` when they are not.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self).ok()
    }
}

impl std::ops::Deref for PluginBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        if self.buffer.data.is_null() || self.buffer.len == 0 {
            &[]
        } else {
            // SAFETY: the plugin produced `len` readable bytes at `data` (ABI contract), and
            // they stay valid until the buffer is released in `drop`.
            unsafe { std::slice::from_raw_parts(self.buffer.data, self.buffer.len) }
        }
    }
}

impl AsRef<[u8]> for PluginBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for PluginBytes {
    // Outputs can be secrets: show the size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginBytes({} bytes)", self.buffer.len)
    }
}

impl Drop for PluginBytes {
    #[inline]
    fn drop(&mut self) {
        if !self.buffer.data.is_null() {
            // SAFETY: the buffer came from this plugin and is released exactly once, here.
            unsafe { (self.release)(&mut self.buffer) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RELEASED: AtomicUsize = AtomicUsize::new(0);
    static RELEASED_LEN: AtomicUsize = AtomicUsize::new(0);

    /// Frees what `leaked` made, counting calls the way a plugin's release would see them.
    unsafe extern "C" fn release(buffer: *mut HsmBuffer) {
        // SAFETY: the tests pass buffers made by `leaked`.
        let b = unsafe { &mut *buffer };
        RELEASED.fetch_add(1, Ordering::SeqCst);
        RELEASED_LEN.store(b.len, Ordering::SeqCst);
        // SAFETY: raw parts of the Vec `leaked` forgot.
        drop(unsafe { Vec::from_raw_parts(b.data, b.len, b.reserved) });
        *b = HsmBuffer::EMPTY;
    }

    fn leaked(bytes: &[u8]) -> HsmBuffer {
        let mut v = std::mem::ManuallyDrop::new(bytes.to_vec());
        HsmBuffer {
            data: v.as_mut_ptr(),
            len: v.len(),
            reserved: v.capacity(),
        }
    }

    // One test, so the counters are not shared between threads of the test runner.
    #[test]
    fn reads_in_place_releases_once_and_never_prints_contents() {
        let out = leaked(b"secret bytes");
        let bytes = PluginBytes::take(&out, release);
        assert_eq!(&*bytes, b"secret bytes");
        assert_eq!(bytes.as_str(), Some("secret bytes"));
        assert_eq!(format!("{bytes:?}"), "PluginBytes(12 bytes)");
        assert_eq!(
            RELEASED.load(Ordering::SeqCst),
            0,
            "nothing released while alive"
        );
        drop(bytes);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
        assert_eq!(RELEASED_LEN.load(Ordering::SeqCst), 12);

        // An empty buffer is never handed back (the plugin has nothing to free).
        let empty = PluginBytes::take(&HsmBuffer::EMPTY, release);
        assert!(empty.is_empty());
        drop(empty);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);

        let not_text = PluginBytes::take(&leaked(&[0xff, 0xfe]), release);
        assert_eq!(not_text.as_str(), None);
        drop(not_text);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 2);
    }
}
