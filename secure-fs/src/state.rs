//! State folders and atomic writes.
//!
//! The state folder holds device secrets (UDS, simulated TPM keys, symmetric keys) and the
//! provisioning record, and `hsmkit` often runs as root. The rules, one copy for every writer:
//!
//! - A state folder or private subfolder is opened once with `O_DIRECTORY | O_NOFOLLOW` and
//!   checked on that descriptor: owned by us (effective uid) or root, not writable by group or
//!   others. Missing folders are created 0700. A folder someone else owns could be filled with
//!   symlinks or swapped under us, so it is refused, naming the owner found and the fix.
//! - Every later operation goes through the checked descriptor (`/proc/self/fd/N/name`, or the
//!   path when `/proc` is not mounted), so a folder renamed or replaced after the check is not
//!   the one written to.
//! - Every write is atomic through [`PrivateDir::write`] or [`PrivateDir::create_if_absent`]:
//!   a temp file with an unpredictable name created with `O_EXCL` (never following a planted
//!   symlink), mode 0600 unless told, written, fsynced, renamed (or linked without replacing
//!   for create-if-absent) onto the target, and the folder fsynced so the rename survives a
//!   power cut.
//! - Temp files are named `.hsmkit-tmp.<pid>.<random>`. A run killed between creating and
//!   renaming leaves one behind, possibly holding a secret; preparing the folder again removes
//!   those whose writer pid no longer exists, and never one of a live writer (the temp names
//!   older hsmkit versions used, with the pid in them too, are cleaned the same way).
//! - Secret files are read with `O_NOFOLLOW` and checked on the descriptor: a regular file,
//!   owned by us or root, not readable or writable by group or others.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

/// Start of every temp file name: `.hsmkit-tmp.<pid>.<random>`.
pub const TEMP_PREFIX: &str = ".hsmkit-tmp.";

/// Mode of files written without an explicit mode: owner read/write only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode of folders this module creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Random characters in a temp file name (62 possible each): far beyond guessing.
const TEMP_RANDOM_LEN: usize = 16;

/// Why a state folder or file was refused, or what the file system said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The operating system refused an operation.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done (`create`, `open`, `write`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the OS said (in the message, so not also the `source()`).
        error: io::Error,
    },
    /// The file or folder does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The missing file or folder.
        path: PathBuf,
    },
    /// A symbolic link where a state folder or secret file must be.
    #[error(
        "refusing {}: it is a symbolic link, which could point anywhere; \
         use the real path (or remove the link)",
        path.display()
    )]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a folder where a folder must be.
    #[error("refusing {}: it is not a folder", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a regular file where a secret file must be.
    #[error("refusing {}: it is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The folder or file belongs to another user, who could replace what is in it.
    #[error(
        "refusing {}: it belongs to uid {owner}, not to this user (uid {euid}) or root; \
         run `chown {euid} {}` or use another state folder",
        path.display(),
        path.display()
    )]
    ForeignOwner {
        /// The folder or file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// Group or other users can write to the folder.
    #[error(
        "refusing state folder {}: its mode {mode:o} lets group or other users write to it; \
         run `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    WritableFolder {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Group or other users can read or write the secret file.
    #[error(
        "refusing key file {}: its mode {mode:o} lets group or other users read or write it; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    ExposedFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path does not name a file inside a folder (`/`, `..`, empty, a name with `/`).
    #[error("{} does not name a file inside a folder", path.display())]
    BadName {
        /// The path or name.
        path: PathBuf,
    },
}

impl StateError {
    /// True when the file or folder does not exist (callers often create it then).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StateError::NotFound { .. })
    }

    /// True when a file or folder was refused by a rule (owner, mode, type, link) rather than
    /// failing in the operating system.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StateError::SymbolicLink { .. }
                | StateError::NotAFolder { .. }
                | StateError::NotAFile { .. }
                | StateError::ForeignOwner { .. }
                | StateError::WritableFolder { .. }
                | StateError::ExposedFile { .. }
        )
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |error| {
        if error.kind() == io::ErrorKind::NotFound {
            StateError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            StateError::Io {
                action,
                path: path.to_path_buf(),
                error,
            }
        }
    }
}

/// The effective uid: files and folders must belong to it or to root.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A state folder or private subfolder that passed the checks, held open so that every later
/// operation acts on the folder that was checked.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    dir: File,
    /// `/proc/self/fd/N` of `dir` when available, else `path`.
    anchor: PathBuf,
}

impl PrivateDir {
    /// Creates `path` (and missing parents) with mode 0700 when missing, checks it, and
    /// removes temp files that killed writers left in it.
    pub fn prepare(path: &Path) -> Result<PrivateDir, StateError> {
        create_missing(path)?;
        let dir = PrivateDir::open(path)?;
        dir.remove_stale_temp_files()?;
        Ok(dir)
    }

    /// Opens and checks an existing folder without creating or cleaning anything.
    pub fn open(path: &Path) -> Result<PrivateDir, StateError> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| open_refusal(path, e, true))?;
        let meta = dir.metadata().map_err(io_error("inspect", path))?;
        check_owner(path, meta.uid())?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StateError::WritableFolder {
                path: path.to_path_buf(),
                mode,
            });
        }
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let anchor = match std::fs::metadata(&fd_path) {
            Ok(m) if m.ino() == meta.ino() && m.dev() == meta.dev() => fd_path,
            _ => path.to_path_buf(),
        };
        Ok(PrivateDir {
            path: path.to_path_buf(),
            dir,
            anchor,
        })
    }

    /// The folder's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Prepares the private subfolder `name` (one path component) the way [`Self::prepare`]
    /// does, created inside this checked folder.
    pub fn subdir(&self, name: &str) -> Result<PrivateDir, StateError> {
        let name = self.checked_name(OsStr::new(name))?;
        let shown = self.path.join(name);
        match std::fs::DirBuilder::new()
            .mode(PRIVATE_DIR_MODE)
            .create(self.anchor.join(name))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", &shown)(e)),
        }
        let dir = PrivateDir::open(&self.anchor.join(name)).map_err(|e| rename_in(e, &shown))?;
        let dir = PrivateDir { path: shown, ..dir };
        dir.remove_stale_temp_files()?;
        Ok(dir)
    }

    /// Replaces (or creates) `name` with `bytes` atomically, with mode `mode`.
    pub fn write(&self, name: &OsStr, bytes: &[u8], mode: u32) -> Result<(), StateError> {
        let name = self.checked_name(name)?;
        let shown = self.path.join(name);
        let temp = self.temp_file_with(bytes, mode, &shown)?;
        temp.persist(self.anchor.join(name))
            .map_err(|e| io_error("replace", &shown)(e.error))?;
        self.sync(&shown)
    }

    /// Creates `name` with `bytes` and mode `mode` only if no file of that name exists, in one
    /// step: true when this call created it, false when it was already there (another writer
    /// got there first; read theirs).
    pub fn create_if_absent(
        &self,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
    ) -> Result<bool, StateError> {
        let name = self.checked_name(name)?;
        let shown = self.path.join(name);
        let temp = self.temp_file_with(bytes, mode, &shown)?;
        match temp.persist_noclobber(self.anchor.join(name)) {
            Ok(_) => {}
            // The temp file is removed as the error (which owns it) is dropped.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_error("create", &shown)(e.error)),
        }
        self.sync(&shown)?;
        Ok(true)
    }

    /// Reads secret file `name`: a regular file (not a symlink), owned by us or root, mode
    /// allowing nobody else to read or write it. The buffer is wiped when dropped.
    pub fn read_secret(&self, name: &OsStr) -> Result<Zeroizing<Vec<u8>>, StateError> {
        self.read_checked(name, 0o077)
    }

    /// Reads a private file that is not secret (the provisioning record, a registration id):
    /// checked like [`Self::read_secret`] except that others may read it.
    pub fn read_private(&self, name: &OsStr) -> Result<Vec<u8>, StateError> {
        self.read_checked(name, 0o022).map(|bytes| bytes.to_vec())
    }

    /// Removes `.hsmkit-tmp.<pid>.*` files whose writer pid no longer runs; returns how many.
    /// A file whose pid is alive (or unreadable) is left alone: its writer may be about to
    /// rename it.
    pub fn remove_stale_temp_files(&self) -> Result<usize, StateError> {
        let entries = std::fs::read_dir(&self.anchor).map_err(io_error("list", &self.path))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.path))?;
            let name = entry.file_name();
            let Some(pid) = temp_file_pid(&name).or_else(|| legacy_temp_file_pid(&name)) else {
                continue;
            };
            if process_exists(pid) {
                continue;
            }
            match std::fs::remove_file(self.anchor.join(&name)) {
                Ok(()) => removed += 1,
                // Another run cleaned it at the same time.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &self.path.join(&name))(e)),
            }
        }
        Ok(removed)
    }

    fn checked_name<'n>(&self, name: &'n OsStr) -> Result<&'n OsStr, StateError> {
        let mut components = Path::new(name).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(n)), None) if n == name => Ok(name),
            _ => Err(StateError::BadName {
                path: self.path.join(name),
            }),
        }
    }

    fn temp_file_with(
        &self,
        bytes: &[u8],
        mode: u32,
        shown: &Path,
    ) -> Result<tempfile::NamedTempFile, StateError> {
        let prefix = temp_prefix();
        let mut temp = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(TEMP_RANDOM_LEN)
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(&self.anchor)
            .map_err(io_error("create a temp file for", shown))?;
        let written = (|| {
            // The umask may have narrowed the mode; a caller asking for 0644 gets 0644.
            temp.as_file()
                .set_permissions(Permissions::from_mode(mode))?;
            temp.write_all(bytes)?;
            temp.as_file().sync_all()
        })();
        // On error the temp file is removed as `temp` is dropped.
        written.map_err(io_error("write", shown))?;
        Ok(temp)
    }

    /// Makes a rename in this folder durable.
    fn sync(&self, shown: &Path) -> Result<(), StateError> {
        self.dir
            .sync_all()
            .map_err(io_error("sync the folder of", shown))
    }

    fn read_checked(&self, name: &OsStr, forbidden: u32) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let name = self.checked_name(name)?;
        let shown = self.path.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            // O_NONBLOCK: a FIFO planted here must not hang the reader.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(self.anchor.join(name))
            .map_err(|e| open_refusal(&shown, e, false))?;
        let meta = file.metadata().map_err(io_error("inspect", &shown))?;
        if !meta.is_file() {
            return Err(StateError::NotAFile { path: shown });
        }
        check_owner(&shown, meta.uid())?;
        let mode = meta.mode() & 0o7777;
        if mode & forbidden != 0 {
            return Err(StateError::ExposedFile { path: shown, mode });
        }
        // Sized up front so that the buffer never grows, which would leave an unwiped copy.
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        file.read_to_end(&mut bytes)
            .map_err(io_error("read", &shown))?;
        Ok(bytes)
    }
}

fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}.", std::process::id())
}

/// The writer pid in a temp file name, `None` for any other name.
fn temp_file_pid(name: &OsStr) -> Option<libc::pid_t> {
    let rest = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'.')?;
    let digits = std::str::from_utf8(&rest[..end]).ok()?;
    digits.parse::<libc::pid_t>().ok().filter(|pid| *pid > 0)
}

/// The writer pid in a temp file name used before `.hsmkit-tmp.` (hsmkit 0.1 wrote
/// `.<name>.tmp<pid>`, `.<name>.new<pid>`, `.<name>.<pid>.tmp` and tpm-sim's `state.new<pid>`),
/// so that the secret copies a killed older run left are removed too; `None` for other names.
fn legacy_temp_file_pid(name: &OsStr) -> Option<libc::pid_t> {
    let name = std::str::from_utf8(name.as_bytes()).ok()?;
    let pid = |digits: &str| {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<libc::pid_t>().ok().filter(|pid| *pid > 0)
    };
    if let Some(digits) = name.strip_prefix("state.new") {
        return pid(digits);
    }
    let hidden = name.strip_prefix('.').filter(|rest| !rest.is_empty())?;
    if let Some(base) = hidden.strip_suffix(".tmp") {
        let (stem, digits) = base.rsplit_once('.')?;
        return pid(digits).filter(|_| !stem.is_empty());
    }
    for marker in [".tmp", ".new"] {
        if let Some((stem, digits)) = hidden.rsplit_once(marker) {
            if !stem.is_empty() {
                if let Some(found) = pid(digits) {
                    return Some(found);
                }
            }
        }
    }
    None
}

/// Whether process `pid` exists (in our pid namespace). When unsure, it does.
fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists and may be
    // signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn check_owner(path: &Path, owner: u32) -> Result<(), StateError> {
    let euid = euid();
    if owner == euid || owner == 0 {
        Ok(())
    } else {
        Err(StateError::ForeignOwner {
            path: path.to_path_buf(),
            owner,
            euid,
        })
    }
}

/// Turns an `open` failure into the refusal it stands for: with `O_NOFOLLOW` a symlink fails
/// with `ELOOP` (or `ENOTDIR` together with `O_DIRECTORY`).
fn open_refusal(path: &Path, e: io::Error, want_dir: bool) -> StateError {
    let code = e.raw_os_error();
    if code == Some(libc::ELOOP) || code == Some(libc::ENOTDIR) {
        let is_link = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            return StateError::SymbolicLink {
                path: path.to_path_buf(),
            };
        }
        if want_dir && code == Some(libc::ENOTDIR) {
            return StateError::NotAFolder {
                path: path.to_path_buf(),
            };
        }
    }
    io_error("open", path)(e)
}

/// Re-labels an error about `/proc/self/fd/N/name` with the path the user knows.
fn rename_in(e: StateError, shown: &Path) -> StateError {
    let path = shown.to_path_buf();
    match e {
        StateError::Io { action, error, .. } => StateError::Io {
            action,
            path,
            error,
        },
        StateError::NotFound { .. } => StateError::NotFound { path },
        StateError::SymbolicLink { .. } => StateError::SymbolicLink { path },
        StateError::NotAFolder { .. } => StateError::NotAFolder { path },
        StateError::NotAFile { .. } => StateError::NotAFile { path },
        StateError::ForeignOwner { owner, euid, .. } => {
            StateError::ForeignOwner { path, owner, euid }
        }
        StateError::WritableFolder { mode, .. } => StateError::WritableFolder { path, mode },
        StateError::ExposedFile { mode, .. } => StateError::ExposedFile { path, mode },
        StateError::BadName { .. } => StateError::BadName { path },
    }
}

fn create_missing(path: &Path) -> Result<(), StateError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(path)
            .map_err(io_error("create", path)),
        Err(e) => Err(io_error("inspect", path)(e)),
    }
}

/// Splits a file path into its folder (`.` when none) and file name.
fn split(path: &Path) -> Result<(&Path, &OsStr), StateError> {
    let bad = || StateError::BadName {
        path: path.to_path_buf(),
    };
    let name = match path.components().next_back() {
        Some(Component::Normal(name)) => name,
        _ => return Err(bad()),
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// [`PrivateDir::prepare`] by path.
pub fn prepare_dir(path: &Path) -> Result<PrivateDir, StateError> {
    PrivateDir::prepare(path)
}

/// Writes `bytes` to `path` atomically with mode `mode`, preparing its folder first.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let (dir, name) = split(path)?;
    PrivateDir::prepare(dir)?.write(name, bytes, mode)
}

/// Creates `path` with `bytes` and mode `mode` unless it exists, preparing its folder first;
/// see [`PrivateDir::create_if_absent`].
pub fn create_if_absent(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, StateError> {
    let (dir, name) = split(path)?;
    PrivateDir::prepare(dir)?.create_if_absent(name, bytes, mode)
}

/// Reads the secret file at `path` after checking its folder; see
/// [`PrivateDir::read_secret`]. A missing folder or file is [`StateError::NotFound`] naming
/// the file.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, StateError> {
    let (dir, name) = split(path)?;
    open_parent(dir, path)?.read_secret(name)
}

/// Reads the private (not secret) file at `path` after checking its folder; see
/// [`PrivateDir::read_private`].
pub fn read_private(path: &Path) -> Result<Vec<u8>, StateError> {
    let (dir, name) = split(path)?;
    open_parent(dir, path)?.read_private(name)
}

fn open_parent(dir: &Path, file: &Path) -> Result<PrivateDir, StateError> {
    PrivateDir::open(dir).map_err(|e| match e {
        StateError::NotFound { .. } => StateError::NotFound {
            path: file.to_path_buf(),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        names.sort();
        names
    }

    #[test]
    fn missing_folders_are_created_private_and_writes_are_atomic_and_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let state = root.path().join("a/b/state");
        let dir = PrivateDir::prepare(&state).expect("prepare");
        assert_eq!(mode_of(&state), 0o700);
        assert_eq!(mode_of(&root.path().join("a")), 0o700);
        dir.write(OsStr::new("key"), b"one", PRIVATE_FILE_MODE)
            .expect("write");
        dir.write(OsStr::new("key"), b"two", PRIVATE_FILE_MODE)
            .expect("replace");
        assert_eq!(
            &dir.read_secret(OsStr::new("key")).expect("read")[..],
            b"two"
        );
        assert_eq!(mode_of(&state.join("key")), 0o600);
        dir.write(OsStr::new("public"), b"x", 0o644).expect("write");
        assert_eq!(
            mode_of(&state.join("public")),
            0o644,
            "a given mode is kept"
        );
        assert_eq!(names(&state), ["key", "public"], "no temp file is left");
    }

    #[test]
    fn create_if_absent_creates_once() {
        let root = tempfile::tempdir().expect("temp dir");
        let path = root.path().join("dice/uds");
        assert!(create_if_absent(&path, b"first", PRIVATE_FILE_MODE).expect("create"));
        assert!(!create_if_absent(&path, b"second", PRIVATE_FILE_MODE).expect("exists"));
        assert_eq!(&read_secret(&path).expect("read")[..], b"first");
        assert_eq!(names(&root.path().join("dice")), ["uds"]);
    }

    #[test]
    fn subfolders_are_checked_like_the_state_folder() {
        let root = tempfile::tempdir().expect("temp dir");
        let state = PrivateDir::prepare(root.path()).expect("prepare");
        let dice = state.subdir("dice").expect("subdir");
        assert_eq!(dice.path(), root.path().join("dice"));
        assert_eq!(mode_of(&root.path().join("dice")), 0o700);
        std::fs::set_permissions(root.path().join("dice"), Permissions::from_mode(0o770))
            .expect("chmod");
        let e = state.subdir("dice").expect_err("group-writable");
        assert!(
            matches!(e, StateError::WritableFolder { mode: 0o770, .. }),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(&root.path().join("dice").display().to_string())
                && text.contains("chmod 700"),
            "{text}"
        );
        for bad in ["", ".", "..", "a/b", "/etc"] {
            assert!(
                matches!(state.subdir(bad), Err(StateError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_folder_swapped_after_the_check_is_not_written_to() {
        let root = tempfile::tempdir().expect("temp dir");
        let state = root.path().join("state");
        let dir = PrivateDir::prepare(&state).expect("prepare");
        // The checked folder moves away and another takes its path.
        std::fs::rename(&state, root.path().join("moved")).expect("rename");
        std::fs::create_dir(&state).expect("mkdir");
        dir.write(OsStr::new("key"), b"k", PRIVATE_FILE_MODE)
            .expect("write");
        assert!(
            root.path().join("moved/key").exists(),
            "written where checked"
        );
        assert!(!state.join("key").exists());
    }

    #[test]
    fn secret_files_must_be_private_regular_files() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = PrivateDir::prepare(root.path()).expect("prepare");
        dir.write(OsStr::new("open"), b"k", 0o640).expect("write");
        let e = dir
            .read_secret(OsStr::new("open"))
            .expect_err("group-readable");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert_eq!(
            dir.read_private(OsStr::new("open")).expect("not secret"),
            b"k"
        );
        std::fs::create_dir(root.path().join("sub")).expect("mkdir");
        assert!(matches!(
            dir.read_secret(OsStr::new("sub")),
            Err(StateError::NotAFile { .. })
        ));
        std::os::unix::fs::symlink("open", root.path().join("link")).expect("symlink");
        assert!(matches!(
            dir.read_secret(OsStr::new("link")),
            Err(StateError::SymbolicLink { .. })
        ));
        let missing = read_secret(&root.path().join("nope/key")).expect_err("missing");
        assert!(missing.is_not_found(), "{missing}");
        assert!(missing.to_string().contains("nope/key"), "{missing}");
    }

    #[test]
    fn a_symlinked_state_folder_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink("real", root.path().join("state")).expect("symlink");
        let e = PrivateDir::prepare(&root.path().join("state")).expect_err("symlink");
        assert!(matches!(e, StateError::SymbolicLink { .. }), "{e}");
    }

    #[test]
    fn temp_file_names_carry_the_writer_pid() {
        assert_eq!(temp_file_pid(OsStr::new(".hsmkit-tmp.42.abc")), Some(42));
        assert_eq!(temp_file_pid(OsStr::new(".hsmkit-tmp.0.abc")), None);
        assert_eq!(temp_file_pid(OsStr::new(".hsmkit-tmp.x.abc")), None);
        assert_eq!(temp_file_pid(OsStr::new(".hsmkit-tmp.42")), None);
        assert_eq!(temp_file_pid(OsStr::new("key")), None);
        assert!(temp_prefix().starts_with(TEMP_PREFIX));
    }

    #[test]
    fn older_hsmkit_temp_names_are_recognised_and_nothing_else() {
        for (name, pid) in [
            (".key.tmp42", 42),
            (".registration-id.tmp7", 7),
            (".uds.new42", 42),
            (".root-ca-key.pem.new42", 42),
            (".provisioning.json.42.tmp", 42),
            ("state.new42", 42),
        ] {
            assert_eq!(legacy_temp_file_pid(OsStr::new(name)), Some(pid), "{name}");
        }
        for name in [
            "key",
            "uds",
            "state",
            "provisioning.json",
            ".tmp42",
            ".new42",
            ".key.tmp",
            ".key.tmpx",
            ".key.tmp0",
            ".key.tmp+4",
            "key.tmp42",
            ".x.tmp",
            "..tmp",
            "state.new",
        ] {
            assert_eq!(legacy_temp_file_pid(OsStr::new(name)), None, "{name}");
        }
    }

    #[test]
    fn leftovers_of_dead_writers_go_and_live_ones_stay() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("run true");
        let dead = child.id();
        child.wait().expect("reap");
        let me = std::process::id();
        let dead_names = [
            format!("{TEMP_PREFIX}{dead}.AbCd"),
            format!(".uds.new{dead}"),
            format!("state.new{dead}"),
        ];
        let live_names = [format!("{TEMP_PREFIX}{me}.AbCd"), format!(".key.tmp{me}")];
        for name in dead_names.iter().chain(&live_names) {
            std::fs::write(root.path().join(name), b"secret").expect("write");
        }
        let dir = PrivateDir::open(root.path()).expect("open");
        assert_eq!(dir.remove_stale_temp_files().expect("clean"), 3);
        let mut expected = live_names.to_vec();
        expected.sort();
        assert_eq!(names(root.path()), expected);
    }
}
