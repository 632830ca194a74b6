//! Opening a file that becomes code or trust: once, checked on the descriptor, used through it.
//!
//! The rules are ssh's StrictModes applied to the whole path:
//! - every folder from `/` down to the file is owned by root or the current user and is not
//!   writable by group or others, unless it has the sticky bit and is owned by root or the
//!   current user (as `/tmp` is); each folder is opened with `O_NOFOLLOW` relative to the one
//!   above it, so what was checked is what is walked;
//! - the file itself is opened with `O_RDONLY | O_NOFOLLOW | O_CLOEXEC` relative to its checked
//!   folder, and must be a regular file owned by root or the current user and not writable by
//!   group or others (checked with `fstat` on that descriptor);
//! - a symbolic link is resolved once: the folder holding the link must pass the folder rules,
//!   and then the real file and every folder above it must pass them too. A link that changes
//!   while it is being checked is refused.
//!
//! The caller then reads the file through [`TrustedFile::file`] or loads it as code through
//! [`TrustedFile::pin_for_dlopen`], so nobody can swap the file between the check and the use.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Why a file was not trusted. Every variant names the path and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The path could not be opened or examined.
    #[error("{path}: cannot read: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said (in the message, so not also the `source()`).
        error: io::Error,
    },
    /// The path names a folder, a device, a FIFO or a socket.
    #[error("{path}: not a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// Another user could replace or change the file, or a folder above it.
    #[error("{path}: refused because {reason}")]
    Insecure {
        /// The file that was asked for.
        path: PathBuf,
        /// Which file or folder is wrong, and how to fix it.
        reason: String,
    },
}

impl TrustError {
    /// The path that was asked for.
    pub fn path(&self) -> &Path {
        match self {
            TrustError::Io { path, .. }
            | TrustError::NotRegularFile { path }
            | TrustError::Insecure { path, .. } => path,
        }
    }
}

/// A file that passed the checks, held open. Its content is what was checked.
#[derive(Debug)]
pub struct TrustedFile {
    file: File,
    requested: PathBuf,
    real: PathBuf,
}

impl TrustedFile {
    /// The open file; read it through this, never by path.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path the caller asked for.
    pub fn path(&self) -> &Path {
        &self.requested
    }

    /// The path that was opened after resolving a symbolic link (the same as [`Self::path`],
    /// made absolute, when there was none).
    pub fn real_path(&self) -> &Path {
        &self.real
    }

    /// Reads `buf.len()` bytes at `offset`, or fewer at the end of the file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The whole content, read from the checked descriptor.
    pub fn read_to_end(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&self.file).read_to_end(&mut out)?;
        Ok(out)
    }

    /// The whole content as UTF-8, read from the checked descriptor.
    pub fn read_to_string(&self) -> io::Result<String> {
        let mut out = String::new();
        (&self.file).read_to_string(&mut out)?;
        Ok(out)
    }

    /// A path that names exactly this open file, for `dlopen`: `/proc/self/fd/N`.
    ///
    /// The descriptor is kept open for the rest of the process, one per distinct file
    /// (device and inode): glibc recognises an already loaded library by the name it was
    /// opened with, so a descriptor number that was closed and handed out again would make a
    /// later `dlopen` of another file return the library loaded earlier under that name.
    /// Libraries are never unloaded by hsmkit, so nothing is lost by keeping them.
    pub fn pin_for_dlopen(self) -> Result<PathBuf, TrustError> {
        let meta = self.file.metadata().map_err(|error| TrustError::Io {
            path: self.requested.clone(),
            error,
        })?;
        let proc_fd = Path::new("/proc/self/fd");
        if !proc_fd.is_dir() {
            return Err(TrustError::Io {
                path: self.requested,
                error: io::Error::new(
                    io::ErrorKind::NotFound,
                    "/proc is not mounted; hsmkit loads checked libraries through /proc/self/fd",
                ),
            });
        }
        let mut pinned = pinned()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fd: RawFd = pinned
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| OwnedFd::from(self.file))
            .as_raw_fd();
        Ok(proc_fd.join(fd.to_string()))
    }
}

/// Descriptors of files handed to `dlopen`, by (device, inode); see
/// [`TrustedFile::pin_for_dlopen`].
fn pinned() -> &'static Mutex<HashMap<(u64, u64), OwnedFd>> {
    static PINNED: OnceLock<Mutex<HashMap<(u64, u64), OwnedFd>>> = OnceLock::new();
    PINNED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The effective user id: the user whose files are trusted besides root's.
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Opens `path` under the rules in the module documentation. A relative path is taken
/// relative to the working folder, never looked up on a library search path.
pub fn open_trusted(path: &Path) -> Result<TrustedFile, TrustError> {
    let requested = path.to_path_buf();
    let io_err = |error| TrustError::Io {
        path: requested.clone(),
        error,
    };
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(io_err)?.join(path)
    };
    let (parent, name) = split_file_name(&absolute).ok_or_else(|| TrustError::NotRegularFile {
        path: requested.clone(),
    })?;
    let parent_real = std::fs::canonicalize(parent).map_err(io_err)?;
    let dir = open_checked_dir_chain(&parent_real, &requested)?;
    match open_file_at(&dir, name) {
        Ok(file) => {
            check_file(&file, &parent_real.join(name), &requested)?;
            Ok(TrustedFile {
                file,
                requested,
                real: parent_real.join(name),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // A symbolic link: resolve it once and check where it leads, whole chain.
            let real = std::fs::canonicalize(&absolute).map_err(io_err)?;
            let (real_parent, real_name) =
                split_file_name(&real).ok_or_else(|| TrustError::NotRegularFile {
                    path: requested.clone(),
                })?;
            let dir = open_checked_dir_chain(real_parent, &requested)?;
            let file = open_file_at(&dir, real_name).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    TrustError::Insecure {
                        path: requested.clone(),
                        reason: format!(
                            "the symbolic link changed while it was being checked ({} became a link)",
                            real.display()
                        ),
                    }
                } else {
                    io_err(e)
                }
            })?;
            check_file(&file, &real, &requested)?;
            Ok(TrustedFile {
                file,
                requested,
                real,
            })
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The content of a trusted file (a CA file, a config file), read through its checked
/// descriptor.
pub fn read(path: &Path) -> Result<Vec<u8>, TrustError> {
    open_trusted(path)?
        .read_to_end()
        .map_err(|error| TrustError::Io {
            path: path.to_path_buf(),
            error,
        })
}

/// [`read`] for text files.
pub fn read_to_string(path: &Path) -> Result<String, TrustError> {
    open_trusted(path)?
        .read_to_string()
        .map_err(|error| TrustError::Io {
            path: path.to_path_buf(),
            error,
        })
}

/// Checks `dir` and every folder above it under the folder rules, without opening a file in it
/// (for folders that are searched, such as a plugins folder). Returns the real path.
pub fn check_dir(dir: &Path) -> Result<PathBuf, TrustError> {
    let real = std::fs::canonicalize(dir).map_err(|error| TrustError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    open_checked_dir_chain(&real, dir)?;
    Ok(real)
}

fn split_file_name(path: &Path) -> Option<(&Path, &OsStr)> {
    match path.components().next_back()? {
        Component::Normal(name) => Some((path.parent()?, name)),
        _ => None,
    }
}

/// Opens `/`, then each component of the absolute, symlink-free `real` below the previous one
/// with `O_NOFOLLOW`, checking each folder on its descriptor. A component that became a link
/// after `real` was resolved is refused rather than followed.
fn open_checked_dir_chain(real: &Path, requested: &Path) -> Result<OwnedFd, TrustError> {
    let io_err = |error| TrustError::Io {
        path: requested.to_path_buf(),
        error,
    };
    let mut current = open_at(None, Path::new("/").as_os_str(), dir_flags()).map_err(io_err)?;
    let mut walked = PathBuf::from("/");
    check_dir_fd(&current, &walked, walked == real, requested)?;
    for component in real.components() {
        let name = match component {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            // canonicalize never yields these; refuse rather than guess.
            other => {
                return Err(TrustError::Insecure {
                    path: requested.to_path_buf(),
                    reason: format!(
                        "the resolved path {} has a `{}` component",
                        real.display(),
                        other.as_os_str().to_string_lossy()
                    ),
                })
            }
        };
        walked.push(name);
        current = open_at(Some(&current), name, dir_flags()).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
                TrustError::Insecure {
                    path: requested.to_path_buf(),
                    reason: format!(
                        "{} changed into a link or a file while it was being checked",
                        walked.display()
                    ),
                }
            } else {
                io_err(e)
            }
        })?;
        check_dir_fd(&current, &walked, walked == real, requested)?;
    }
    Ok(current)
}

fn dir_flags() -> libc::c_int {
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
}

fn open_file_at(dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
    // O_NONBLOCK: opening a FIFO must not hang; fstat then says it is not a regular file.
    let fd = open_at(
        Some(dir),
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
    )?;
    Ok(File::from(fd))
}

fn open_at(dir: Option<&OwnedFd>, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c_name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: c_name is a valid NUL-terminated string and dirfd an open descriptor (or
    // AT_FDCWD); openat does not retain either pointer.
    let fd = unsafe { libc::openat(dirfd, c_name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fd is an open descriptor and st points to writable memory for one stat.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the whole struct.
    Ok(unsafe { st.assume_init() })
}

fn check_dir_fd(
    fd: &OwnedFd,
    walked: &Path,
    is_parent: bool,
    requested: &Path,
) -> Result<(), TrustError> {
    let st = fstat(fd.as_raw_fd()).map_err(|error| TrustError::Io {
        path: requested.to_path_buf(),
        error,
    })?;
    folder_rule(st.st_uid, st.st_mode).map_err(|why| TrustError::Insecure {
        path: requested.to_path_buf(),
        reason: if is_parent {
            format!("its folder {} {why}", walked.display())
        } else {
            format!("the folder {} above it {why}", walked.display())
        },
    })
}

/// The folder rule on an owner and mode: `Err` says what is wrong and how to fix it.
pub fn folder_rule(uid: u32, mode: u32) -> Result<(), String> {
    let me = current_uid();
    let trusted_owner = uid == 0 || uid == me;
    if !trusted_owner {
        return Err(format!(
            "is owned by uid {uid}, neither root nor the current user (uid {me}); \
             move the file to a folder owned by root or by you"
        ));
    }
    let sticky = mode & libc::S_ISVTX != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(format!(
            "is writable by {} (mode {:o}); run `chmod go-w` on it",
            who(mode),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The file rule on an owner and mode (after the type was checked).
pub fn file_rule(uid: u32, mode: u32) -> Result<(), String> {
    let me = current_uid();
    if uid != 0 && uid != me {
        return Err(format!(
            "is owned by uid {uid}, neither root nor the current user (uid {me})"
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by {} (mode {:o}); run `chmod go-w` on it",
            who(mode),
            mode & 0o7777
        ));
    }
    Ok(())
}

fn check_file(file: &File, real: &Path, requested: &Path) -> Result<(), TrustError> {
    let st = fstat(file.as_raw_fd()).map_err(|error| TrustError::Io {
        path: requested.to_path_buf(),
        error,
    })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(TrustError::NotRegularFile {
            path: requested.to_path_buf(),
        });
    }
    file_rule(st.st_uid, st.st_mode).map_err(|why| {
        let which = if real == requested {
            "the file".to_string()
        } else {
            format!("the file {}", real.display())
        };
        TrustError::Insecure {
            path: requested.to_path_buf(),
            reason: format!("{which} {why}"),
        }
    })
}

fn who(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "other users",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        d
    }

    #[test]
    fn a_good_file_is_read_through_its_descriptor() {
        let d = private_dir();
        let f = d.path().join("ok.conf");
        std::fs::write(&f, b"hello").unwrap();
        chmod(&f, 0o644);
        let t = open_trusted(&f).unwrap();
        assert_eq!(t.read_to_string().unwrap(), "hello");
        let mut head = [0u8; 3];
        assert_eq!(t.read_at(&mut head, 1).unwrap(), 3);
        assert_eq!(&head, b"ell");
        assert_eq!(t.real_path(), f.as_path());
    }

    #[test]
    fn writable_files_and_folders_are_refused_with_the_fix() {
        let d = private_dir();
        let f = d.path().join("p.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o666);
        let e = open_trusted(&f).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        chmod(&f, 0o644);
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let g = sub.join("p.so");
        std::fs::write(&g, b"x").unwrap();
        chmod(&sub, 0o777);
        let e = open_trusted(&g).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("its folder {}", sub.display())),
            "{e}"
        );
        // Group-writable is refused too.
        chmod(&sub, 0o770);
        assert!(open_trusted(&g).is_err());
        // Sticky and ours: allowed, as /tmp is.
        chmod(&sub, 0o1777);
        open_trusted(&g).unwrap();
    }

    #[test]
    fn folders_fifos_and_missing_files_are_not_regular_files() {
        let d = private_dir();
        assert!(matches!(
            open_trusted(d.path()),
            Err(TrustError::NotRegularFile { .. }) | Err(TrustError::Io { .. })
        ));
        let fifo = d.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            open_trusted(&fifo),
            Err(TrustError::NotRegularFile { .. })
        ));
        assert!(matches!(
            open_trusted(&d.path().join("missing")),
            Err(TrustError::Io { .. })
        ));
    }

    #[test]
    fn a_link_is_resolved_once_and_both_folders_are_checked() {
        let d = private_dir();
        let real_dir = d.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        let target = real_dir.join("lib.so");
        std::fs::write(&target, b"x").unwrap();
        chmod(&target, 0o644);
        let links = d.path().join("links");
        std::fs::create_dir(&links).unwrap();
        let link = links.join("lib.so");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let t = open_trusted(&link).unwrap();
        assert_eq!(t.real_path(), target.as_path());
        assert_eq!(t.path(), link.as_path());
        // The folder holding the link is writable by others: refused.
        chmod(&links, 0o777);
        let e = open_trusted(&link).unwrap_err();
        assert!(e.to_string().contains("links"), "{e}");
        chmod(&links, 0o755);
        // The folder of the target is writable by others: refused, naming it.
        chmod(&real_dir, 0o777);
        let e = open_trusted(&link).unwrap_err();
        assert!(e.to_string().contains("real"), "{e}");
    }

    #[test]
    fn a_relative_name_is_relative_to_the_working_folder_only() {
        // A bare file name that does not exist here is not searched for anywhere else.
        let e = open_trusted(Path::new("libc.so.6")).unwrap_err();
        assert!(matches!(e, TrustError::Io { .. }), "{e}");
    }

    /// Needs root to give a folder to another user; fails (never skips) without it.
    #[test]
    fn a_folder_owned_by_another_user_is_refused() {
        assert_eq!(
            current_uid(),
            0,
            "this test needs root (it chowns a folder to uid 65534)"
        );
        let d = private_dir();
        let theirs = d.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let f = theirs.join("p.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o644);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = open_trusted(&f).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        std::os::unix::fs::chown(&theirs, Some(0), Some(0)).unwrap();
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        let e = open_trusted(&f).unwrap_err();
        assert!(
            e.to_string().contains("the file is owned by uid 65534"),
            "{e}"
        );
    }

    #[test]
    fn pinning_keeps_one_descriptor_per_file() {
        let d = private_dir();
        let f = d.path().join("lib.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o644);
        let a = open_trusted(&f).unwrap().pin_for_dlopen().unwrap();
        let b = open_trusted(&f).unwrap().pin_for_dlopen().unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("/proc/self/fd"));
        // The pinned name still reads the file even after the path is gone.
        std::fs::remove_file(&f).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"x");
    }
}
