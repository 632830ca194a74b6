//! Loading and ABI: the file, the entry symbol, version negotiation and the tables.

use crate::context::CheckContext;
use crate::raw::{table_string, RawError, RawLibrary};
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use std::io::Read;

register!("loading.table-entries", Loading, Any, false,
    "every ABI 1.0 function entry of the plugin table and the declared interface tables is non-NULL", table_entries);
register!(
    "loading.elf-header",
    Loading,
    Any,
    false,
    "the file is an ELF shared object for this machine's class and architecture",
    elf_header
);
register!(
    "loading.entry-symbol",
    Loading,
    Any,
    false,
    "dlopen(RTLD_NOW|RTLD_LOCAL) succeeds and `hsm_plugin_entry` is exported with C linkage",
    entry_symbol
);
register!(
    "loading.host-loader",
    Loading,
    Any,
    false,
    "the hsmkit host loader accepts the plugin (permissions, ABI, layout, tables)",
    host_loader
);
register!(
    "loading.abi-version",
    Loading,
    Any,
    false,
    "the plugin table speaks ABI major 1 and is at least as large as ABI 1.0's",
    abi_version
);
register!(
    "loading.refuses-unknown-major",
    Loading,
    Any,
    false,
    "the entry refuses a host of an unknown ABI major with HSM_ERR_ABI_MISMATCH",
    refuses_unknown_major
);
register!(
    "loading.accepts-newer-minor",
    Loading,
    Any,
    false,
    "the entry accepts a host of the same major and a newer minor",
    accepts_newer_minor
);
register!(
    "loading.metadata",
    Loading,
    Any,
    false,
    "name, version, vendor and description are non-NULL UTF-8; the name is a valid selector",
    metadata
);
register!(
    "loading.capabilities",
    Loading,
    Any,
    false,
    "capability bits are known and match the non-NULL interface tables and their headers",
    capabilities
);
register!(
    "loading.entry-stable",
    Loading,
    Any,
    false,
    "calling the entry again returns HSM_OK and the same static table",
    entry_stable
);

const EM_HOST: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "arm") {
    40
} else if cfg!(target_arch = "riscv64") {
    243
} else {
    0
};

fn elf_header(ctx: &mut CheckContext) -> CheckResult {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(&ctx.plugin)
        .map_err(|e| Verdict::fail("a readable file", e.to_string()))?;
    f.read_exact(&mut head)
        .map_err(|_| Verdict::fail("an ELF header (20 bytes or more)", "a shorter file"))?;
    if head[..4] != [0x7f, b'E', b'L', b'F'] {
        return Err(Verdict::fail(
            "the ELF magic 7f 45 4c 46",
            format!("{:02x?}", &head[..4]),
        ));
    }
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    if head[4] != class {
        return Err(Verdict::fail(
            format!("ELF class {class}"),
            format!("class {}", head[4]),
        ));
    }
    let le = head[5] == 1;
    let u16_at = |i: usize| {
        let b = [head[i], head[i + 1]];
        if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    if cfg!(target_endian = "little") != le {
        return Err(Verdict::fail(
            "this host's byte order",
            "the other byte order",
        ));
    }
    if u16_at(16) != 3 {
        return Err(Verdict::fail(
            "e_type ET_DYN (3), a shared object",
            format!("e_type {}", u16_at(16)),
        ));
    }
    if EM_HOST != 0 && u16_at(18) != EM_HOST {
        return Err(Verdict::fail(
            format!("e_machine {EM_HOST}"),
            format!("e_machine {}", u16_at(18)),
        ));
    }
    Ok(Verdict::pass(""))
}

fn entry_symbol(ctx: &mut CheckContext) -> CheckResult {
    match RawLibrary::open(&ctx.plugin) {
        Ok(_) => Ok(Verdict::pass("")),
        Err(e @ RawError::NoEntry) => Err(Verdict::fail(
            format!("an exported `{HSM_ENTRY_SYMBOL}` symbol"),
            e.to_string(),
        )),
        Err(e) => Err(Verdict::fail("dlopen to succeed", e.to_string())),
    }
}

fn host_loader(ctx: &mut CheckContext) -> CheckResult {
    match provisioning_core::plugin::LoadedPlugin::load(&ctx.plugin) {
        Ok(p) => Ok(Verdict::pass(format!(
            "{} {} (ABI {}, layout checked: {})",
            p.name(),
            p.metadata().version,
            p.metadata().abi_version,
            p.metadata().layout_checked
        ))),
        Err(e) => Err(Verdict::fail(
            "the host loader to accept the plugin",
            format!("refused ({}): {e}", e.kind()),
        )),
    }
}

/// The library, or a skip when it cannot even be opened (loading.entry-symbol reports that).
fn library(ctx: &mut CheckContext) -> Result<&'static RawLibrary, Verdict> {
    ctx.library().map_err(|_| {
        Verdict::skip(
            "the library cannot be opened or has no entry symbol (see loading.entry-symbol)",
        )
    })
}

fn abi_version(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (status, table) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    // SAFETY: a non-NULL table from the entry is static (ABI contract).
    let Some(t) = (unsafe { table.as_ref() }) else {
        return Err(Verdict::fail(
            "the entry to write its table (even when refusing the host)",
            format!("no table, status {}", status_name(status)),
        ));
    };
    if t.header.abi_major != HSM_ABI_MAJOR {
        return Err(Verdict::fail(
            format!("ABI major {HSM_ABI_MAJOR}"),
            format!("ABI {}.{}", t.header.abi_major, t.header.abi_minor),
        ));
    }
    // Each minor appends entries: a table is as large as its own minor's (1.0 at least).
    let need = match t.header.abi_minor {
        0 => HsmPluginTable::SIZE_1_0,
        1 => HsmPluginTable::SIZE_1_1,
        _ => HsmPluginTable::SIZE_1_2,
    };
    if (t.header.struct_size as usize) < need {
        return Err(Verdict::fail(
            format!("struct_size >= {need}"),
            format!("struct_size {}", t.header.struct_size),
        ));
    }
    if status != HSM_OK {
        return Err(Verdict::fail(
            "HSM_OK for this host's version",
            status_name(status),
        ));
    }
    Ok(Verdict::pass(format!(
        "ABI {}.{}",
        t.header.abi_major, t.header.abi_minor
    )))
}

fn refuses_unknown_major(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (status, _) = lib.call_entry(u16::MAX, 0);
    if status != HSM_ERR_ABI_MISMATCH {
        return Err(Verdict::fail(
            format!(
                "HSM_ERR_ABI_MISMATCH for a host speaking ABI {}.0",
                u16::MAX
            ),
            status_name(status),
        ));
    }
    Ok(Verdict::pass(""))
}

fn accepts_newer_minor(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let minor = HSM_ABI_MINOR.saturating_add(7);
    let (status, _) = lib.call_entry(HSM_ABI_MAJOR, minor);
    if status != HSM_OK {
        return Err(Verdict::fail(
            format!("HSM_OK for a host speaking ABI {HSM_ABI_MAJOR}.{minor}"),
            status_name(status),
        ));
    }
    Ok(Verdict::pass(""))
}

fn metadata(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (_, table) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    // SAFETY: as in abi_version.
    let Some(t) = (unsafe { table.as_ref() }) else {
        return Err(Verdict::skip(
            "the entry wrote no table (see loading.abi-version)",
        ));
    };
    let fields = [
        ("name", t.name),
        ("version", t.version),
        ("vendor", t.vendor),
        ("description", t.description),
    ];
    let mut name = String::new();
    for (field, p) in fields {
        // SAFETY: table strings are NULL or NUL-terminated statics per the ABI; a plugin
        // breaking that may crash this child, which is then reported as a crash.
        match unsafe { table_string(p) } {
            None => return Err(Verdict::fail(format!("a non-NULL {field}"), "NULL")),
            Some(Err(_)) => {
                return Err(Verdict::fail(format!("{field} in UTF-8"), "invalid UTF-8"))
            }
            Some(Ok(s)) if field == "name" => name = s,
            Some(Ok(_)) => {}
        }
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Verdict::fail(
            "a name of ASCII letters, digits, '-', '_' or '.'",
            format!("{name:?}"),
        ));
    }
    Ok(Verdict::pass(name))
}

fn capabilities(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (_, table) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    // SAFETY: as in abi_version.
    let Some(t) = (unsafe { table.as_ref() }) else {
        return Err(Verdict::skip(
            "the entry wrote no table (see loading.abi-version)",
        ));
    };
    let caps = CapabilitySet::from_bits(t.capabilities);
    if caps.unknown_bits() != 0 {
        return Err(Verdict::fail(
            format!(
                "only known capability bits ({:#x})",
                CapabilitySet::KNOWN.bits()
            ),
            format!("capabilities {:#x}", t.capabilities),
        ));
    }
    if t.threading > HSM_THREADING_CONCURRENT {
        return Err(Verdict::fail(
            "threading 0 or 1",
            format!("threading {}", t.threading),
        ));
    }
    let interfaces: [(&str, CapabilitySet, *const HsmTableHeader, usize); 3] = [
        (
            "TPM",
            CapabilitySet::TPM,
            t.tpm.cast(),
            std::mem::size_of::<HsmTpmTable>(),
        ),
        (
            "X.509",
            CapabilitySet::X509,
            t.x509.cast(),
            std::mem::size_of::<HsmX509Table>(),
        ),
        (
            "symmetric-key",
            CapabilitySet::SYMMETRIC_KEY,
            t.symmetric_key.cast(),
            std::mem::size_of::<HsmSymmetricKeyTable>(),
        ),
    ];
    for (name, bit, ptr, size) in interfaces {
        let declared = caps.contains(bit);
        // SAFETY: every interface table starts with its header and is static when non-NULL.
        match (declared, unsafe { ptr.as_ref() }) {
            (false, None) => {}
            (true, None) => {
                return Err(Verdict::fail(
                    format!("a {name} table (capability declared)"),
                    "NULL",
                ))
            }
            (false, Some(_)) => {
                return Err(Verdict::fail(
                    format!("the {name} capability bit (a {name} table is present)"),
                    "bit not set",
                ))
            }
            (true, Some(h)) => {
                if h.abi_major != HSM_ABI_MAJOR || (h.struct_size as usize) < size {
                    return Err(Verdict::fail(
                        format!("{name} table ABI {HSM_ABI_MAJOR}.x of at least {size} bytes"),
                        format!(
                            "ABI {}.{}, {} bytes",
                            h.abi_major, h.abi_minor, h.struct_size
                        ),
                    ));
                }
            }
        }
    }
    Ok(Verdict::pass(format!("capabilities {:#x}", t.capabilities)))
}

fn entry_stable(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (s1, t1) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    if s1 != HSM_OK {
        return Err(Verdict::skip(
            "the entry refuses this host (see loading.abi-version)",
        ));
    }
    let (s2, t2) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    if s2 != HSM_OK || t1 != t2 {
        return Err(Verdict::fail(
            "HSM_OK and the same table pointer on a second call",
            format!(
                "{} and {}",
                status_name(s2),
                if t1 == t2 {
                    "the same table"
                } else {
                    "another table"
                }
            ),
        ));
    }
    Ok(Verdict::pass(""))
}

fn table_entries(ctx: &mut CheckContext) -> CheckResult {
    let lib = library(ctx)?;
    let (_, table) = lib.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
    // SAFETY: as in abi_version.
    let Some(t) = (unsafe { table.as_ref() }) else {
        return Err(Verdict::skip(
            "the entry wrote no table (see loading.abi-version)",
        ));
    };
    if t.header.abi_major != HSM_ABI_MAJOR {
        return Err(Verdict::skip("another ABI major (see loading.abi-version)"));
    }
    let nulls = crate::raw::null_entries(t);
    if !nulls.is_empty() {
        return Err(Verdict::fail(
            "no NULL function entries",
            format!("NULL: {}", nulls.join(", ")),
        ));
    }
    Ok(Verdict::pass(""))
}
