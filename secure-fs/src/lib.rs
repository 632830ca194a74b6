//! The file rules every hsmkit component follows where a file becomes code, trust or state.
//!
//! - [`trust`]: a file that becomes code (a plugin, a PKCS#11 module) or trust (a config file,
//!   a CA file) is opened once with `O_NOFOLLOW`, checked on that descriptor (regular file,
//!   owner root or the current user, not writable by group or others) after every folder from
//!   `/` down was checked the way ssh's StrictModes does, and then used only through that
//!   descriptor (`/proc/self/fd/N` for `dlopen`).
//! - [`state`]: the state folder and its private subfolders (ours, not writable by others),
//!   atomic writes through randomly named `O_EXCL` temp files, fsync and rename, and removal of
//!   temp files that a killed run left behind.
//! - [`dump`]: secrets stay out of core dumps: the process is marked not dumpable
//!   (`PR_SET_DUMPABLE` 0) before a secret can be in memory; see that module for why this and
//!   not `MADV_DONTDUMP`.

pub mod dump;
pub mod state;
pub mod trust;
