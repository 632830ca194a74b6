//! The ELF header check made on a plugin's checked descriptor before it is loaded, so that a
//! wrong file gets a clear reason instead of a loader error. The ownership and mode rules are
//! `hsm_secure_fs::trust`'s.

use super::LoadError;
use hsm_secure_fs::trust::TrustedFile;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ET_DYN: u16 = 3;

/// Reads the ELF identification and header fields that decide whether this host can load the
/// file: magic, class, byte order, type (shared object) and machine.
pub(crate) fn check_elf(file: &TrustedFile) -> Result<(), LoadError> {
    let path = file.path();
    let mut header = [0u8; 20];
    let read = file
        .read_at(&mut header, 0)
        .map_err(|error| LoadError::Io {
            path: path.to_path_buf(),
            error,
        })?;
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
    use std::fs;

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

    fn check(path: &std::path::Path) -> Result<(), LoadError> {
        check_elf(&hsm_secure_fs::trust::open_trusted(path).unwrap())
    }

    #[test]
    fn elf_checks_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.so");
        fs::write(&text, b"hello, not a library").unwrap();
        assert!(matches!(
            check(&text),
            Err(LoadError::NotSharedLibrary { .. })
        ));
        let empty = dir.path().join("empty.so");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(
            check(&empty),
            Err(LoadError::NotSharedLibrary { .. })
        ));
        let other = if cfg!(target_arch = "aarch64") {
            62
        } else {
            183
        };
        let foreign = dir.path().join("foreign.so");
        fs::write(&foreign, elf_header(other, ET_DYN)).unwrap();
        let e = check(&foreign).unwrap_err();
        assert!(matches!(e, LoadError::WrongArchitecture { .. }), "{e}");
        let exe = dir.path().join("exe.so");
        fs::write(&exe, elf_header(HostArch::current().machine, 2)).unwrap();
        assert!(matches!(
            check(&exe),
            Err(LoadError::NotSharedLibrary { .. })
        ));
    }
}
