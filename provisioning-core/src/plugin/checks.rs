//! Checks made on a plugin file before it is opened: the rules ssh and sudo apply to files
//! they trust, and an ELF header check so that a wrong file gets a clear reason instead of a
//! loader error.

use super::LoadError;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ET_DYN: u16 = 3;

/// Refuses files that are not regular, or that other users could change: the file or its
/// folder writable by group or others (folders with the sticky bit, like /tmp, excepted for
/// others), or owned by a user other than root or us.
pub(crate) fn check_permissions(path: &Path) -> Result<(), LoadError> {
    let meta = fs::metadata(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(LoadError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let insecure = |reason: String| LoadError::InsecurePermissions {
        path: path.to_path_buf(),
        reason,
    };
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(insecure(format!(
            "the file is writable by {} (mode {:o}); run `chmod go-w {}`",
            who(mode),
            mode & 0o777,
            path.display()
        )));
    }
    let me = current_uid();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(insecure(format!(
            "the file is owned by uid {}, neither root nor the current user (uid {me})",
            meta.uid()
        )));
    }
    let real = fs::canonicalize(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = real.parent() {
        let dmeta = fs::metadata(dir).map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let dmode = dmeta.permissions().mode();
        let sticky = dmode & 0o1000 != 0;
        if dmode & 0o020 != 0 || (dmode & 0o002 != 0 && !sticky) {
            return Err(insecure(format!(
                "its folder {} is writable by {} (mode {:o}); run `chmod go-w {}`",
                dir.display(),
                who(dmode),
                dmode & 0o7777,
                dir.display()
            )));
        }
    }
    Ok(())
}

fn who(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "other users",
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads the ELF identification and header fields that decide whether this host can load the
/// file: magic, class, byte order, type (shared object) and machine.
pub(crate) fn check_elf(path: &Path) -> Result<(), LoadError> {
    let mut header = [0u8; 20];
    let mut f = fs::File::open(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut read = 0;
    while read < header.len() {
        match f.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(source) => {
                return Err(LoadError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let not_so = |reason: String| LoadError::NotSharedLibrary {
        path: path.to_path_buf(),
        reason,
    };
    if read < header.len() || header[..4] != ELF_MAGIC {
        return Err(not_so(format!(
            "no ELF header; the file starts with {:?}",
            String::from_utf8_lossy(&header[..read.min(8)])
        )));
    }
    let class = header[4];
    let little = match header[5] {
        1 => true,
        2 => false,
        other => return Err(not_so(format!("invalid ELF byte order {other}"))),
    };
    let read_u16 = |at: usize| {
        let b = [header[at], header[at + 1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let e_type = read_u16(16);
    let machine = read_u16(18);
    let host = HostArch::current();
    let found = arch_name(machine, class, little);
    if machine != host.machine || class != host.class || little != host.little_endian {
        return Err(LoadError::WrongArchitecture {
            path: path.to_path_buf(),
            expected: arch_name(host.machine, host.class, host.little_endian),
            found,
        });
    }
    if e_type != ET_DYN {
        return Err(not_so(format!(
            "ELF type {e_type} is not a shared object (3); link it with -shared / crate-type cdylib"
        )));
    }
    Ok(())
}

struct HostArch {
    machine: u16,
    class: u8,
    little_endian: bool,
}

impl HostArch {
    fn current() -> Self {
        let machine = if cfg!(target_arch = "x86_64") {
            62
        } else if cfg!(target_arch = "aarch64") {
            183
        } else if cfg!(target_arch = "x86") {
            3
        } else if cfg!(target_arch = "arm") {
            40
        } else if cfg!(target_arch = "riscv64") {
            243
        } else if cfg!(target_arch = "powerpc64") {
            21
        } else {
            0
        };
        HostArch {
            machine,
            class: if cfg!(target_pointer_width = "64") {
                2
            } else {
                1
            },
            little_endian: cfg!(target_endian = "little"),
        }
    }
}

fn arch_name(machine: u16, class: u8, little: bool) -> String {
    let name = match machine {
        3 => "x86".to_string(),
        40 => "arm".to_string(),
        62 => "x86-64".to_string(),
        183 => "aarch64".to_string(),
        243 => "risc-v".to_string(),
        21 => "powerpc64".to_string(),
        8 => "mips".to_string(),
        other => format!("machine {other}"),
    };
    let bits = if class == 2 { 64 } else { 32 };
    let order = if little {
        "little-endian"
    } else {
        "big-endian"
    };
    format!("{name} ({bits}-bit {order})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header(machine: u16, e_type: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&ELF_MAGIC);
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_checks_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.so");
        fs::write(&text, b"hello, not a library").unwrap();
        assert!(matches!(
            check_elf(&text),
            Err(LoadError::NotSharedLibrary { .. })
        ));
        let empty = dir.path().join("empty.so");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(
            check_elf(&empty),
            Err(LoadError::NotSharedLibrary { .. })
        ));
        let other = if cfg!(target_arch = "aarch64") {
            62
        } else {
            183
        };
        let foreign = dir.path().join("foreign.so");
        fs::write(&foreign, elf_header(other, ET_DYN)).unwrap();
        let e = check_elf(&foreign).unwrap_err();
        assert!(matches!(e, LoadError::WrongArchitecture { .. }), "{e}");
        let exe = dir.path().join("exe.so");
        fs::write(&exe, elf_header(HostArch::current().machine, 2)).unwrap();
        assert!(matches!(
            check_elf(&exe),
            Err(LoadError::NotSharedLibrary { .. })
        ));
    }

    #[test]
    fn writable_files_and_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.so");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        check_permissions(&f).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_permissions(&f).unwrap_err();
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_permissions(&f).unwrap_err();
        assert!(e.to_string().contains("its folder"), "{e}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            check_permissions(dir.path()),
            Err(LoadError::NotRegularFile { .. })
        ));
    }
}
