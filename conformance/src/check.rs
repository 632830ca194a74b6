//! What a check is: an id, a group, the interface it needs, a one-line description and the
//! function that runs it (inside a child process). Checks register themselves with
//! `inventory`, so adding one is adding one function.

use crate::context::CheckContext;
use crate::verdict::CheckResult;
use serde::{Deserialize, Serialize};

/// The interface a check exercises; checks for interfaces the plugin does not declare are
/// skipped with that reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Interface {
    /// Any plugin (loading, lifecycle, memory...).
    Any,
    /// The TPM table.
    Tpm,
    /// The X.509 table.
    X509,
    /// The symmetric-key table.
    SymmetricKey,
    /// The operational-key table (ABI 1.2).
    OperationalKey,
}

impl Interface {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Any => "any",
            Interface::Tpm => "tpm",
            Interface::X509 => "x509",
            Interface::SymmetricKey => "symmetricKey",
            Interface::OperationalKey => "operationalKey",
        }
    }
}

/// The contract area a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// File format, entry symbol, ABI versions, tables.
    Loading,
    /// Instances: create, destroy, independence.
    Lifecycle,
    /// TPM attestation.
    Tpm,
    /// X.509 attestation.
    X509,
    /// Symmetric-key attestation.
    SymmetricKey,
    /// The operational key (ABI 1.2).
    OperationalKey,
    /// Provisioning end to end against the DPS emulator, one check per attestation.
    Provisioning,
    /// Buffer ownership.
    Memory,
    /// Malformed arguments.
    BadInput,
    /// Threads.
    Concurrency,
    /// Speed and growth; only ever warns.
    Performance,
}

impl Group {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Loading => "loading",
            Group::Lifecycle => "lifecycle",
            Group::Tpm => "tpm",
            Group::X509 => "x509",
            Group::SymmetricKey => "symmetric-key",
            Group::OperationalKey => "operational-key",
            Group::Provisioning => "provisioning",
            Group::Memory => "memory",
            Group::BadInput => "bad-input",
            Group::Concurrency => "concurrency",
            Group::Performance => "performance",
        }
    }
}

/// One registered check.
#[derive(Debug)]
pub struct Check {
    /// Stable id, `group.name`.
    pub id: &'static str,
    /// Contract area.
    pub group: Group,
    /// Interface it needs.
    pub interface: Interface,
    /// One line saying what contract point it checks.
    pub description: &'static str,
    /// Runs the check (in a child process).
    pub run: fn(&mut CheckContext) -> CheckResult,
    /// Whether the check needs the plugin to load (everything but the loading checks).
    pub needs_load: bool,
}

inventory::collect!(Check);

/// Every registered check, sorted by id.
pub fn all_checks() -> Vec<&'static Check> {
    let mut v: Vec<&'static Check> = inventory::iter::<Check>.into_iter().collect();
    v.sort_by_key(|c| c.id);
    v
}

/// The check with `id`.
pub fn find_check(id: &str) -> Option<&'static Check> {
    inventory::iter::<Check>.into_iter().find(|c| c.id == id)
}

/// Registers a check: `register!(id, Group, Interface, needs_load, "description", function)`.
#[macro_export]
#[doc(hidden)]
macro_rules! register {
    ($id:literal, $group:ident, $iface:ident, $needs_load:expr, $desc:literal, $run:path) => {
        inventory::submit! {
            $crate::check::Check {
                id: $id,
                group: $crate::check::Group::$group,
                interface: $crate::check::Interface::$iface,
                description: $desc,
                run: $run,
                needs_load: $needs_load,
            }
        }
    };
}

/// Glob match with `*` (any run) and `?` (one character), for `--only` / `--skip`. A pattern
/// without wildcards matches an id equal to it or starting with `pattern.` (a whole group).
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return id == pattern || id.starts_with(&format!("{pattern}."));
    }
    glob(pattern.as_bytes(), id.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("tpm", "tpm.ek-format"));
        assert!(!pattern_matches("tpm", "tpmx.a"));
        assert!(pattern_matches("*.ek-*", "tpm.ek-format"));
        assert!(pattern_matches("tpm.ek-forma?", "tpm.ek-format"));
        assert!(!pattern_matches("x509.*", "tpm.ek-format"));
    }

    #[test]
    fn ids_are_unique_and_described() {
        let all = all_checks();
        assert!(all.len() >= 30, "only {} checks registered", all.len());
        for w in all.windows(2) {
            assert_ne!(w[0].id, w[1].id, "duplicate check id");
        }
        for c in &all {
            assert!(
                c.id.starts_with(c.group.as_str()),
                "{} not in group {:?}",
                c.id,
                c.group
            );
            assert!(!c.description.is_empty());
        }
    }
}
