//! Keeping secrets out of core dumps.
//!
//! A crashing process that holds a UDS, a TPM-sim key, a symmetric key or a PIN would write
//! them to a core file (or hand them to systemd-coredump / apport). hsmkit turns core dumps off
//! for the whole process with `prctl(PR_SET_DUMPABLE, 0)`: at `hsmkit` start, and whenever an
//! SDK plugin instance is created, so that any host (the conformance harness, a vendor's own
//! program) is covered as soon as a plugin may hold a secret.
//!
//! Why not `MADV_DONTDUMP` on the pages holding secrets: it protects only memory we allocate
//! ourselves, page-aligned and kept apart, while secrets also live in buffers we do not
//! control (RSA and P-256 keys inside RustCrypto types, OpenSSL and tss-esapi/cryptoki copies,
//! C plugins' memory, temporary copies on the stack). Marking the whole process non-dumpable
//! covers all of them, and it also stops other processes of the same user from attaching with
//! ptrace or reading `/proc/<pid>/mem` — the same protection ssh-agent and gpg-agent use.
//!
//! What it costs: no core file for debugging a crash of hsmkit (debug under `gdb` instead,
//! as root), and `/proc/<pid>/*` become owned by root. The process itself still reaches its own
//! `/proc/self/fd/N`, which the plugin loader `dlopen`s through. The flag is reset by `execve`,
//! so programs hsmkit runs are not affected.

use std::io;

/// Marks this process as not dumpable: no core dump, no ptrace attach by non-root processes.
/// Idempotent and cheap; call it before a secret can be in memory.
pub fn disable_core_dumps() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and no pointers; it only changes a
    // flag of the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether core dumps of this process are off (as [`disable_core_dumps`] leaves them).
pub fn core_dumps_disabled() -> io::Result<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments and only reads a process flag.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc == 0)
    }
}
