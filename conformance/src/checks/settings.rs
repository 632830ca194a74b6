//! Settings: `create` refuses a key it does not know.
//!
//! The rule holds for every plugin, ABI 1.0 ones included: it is about `create`, which 1.0
//! has, the 1.0 header already asked for it, and only the plugin can keep it (a host cannot
//! tell a 1.0 plugin's keys from typos). A plugin that accepts an unknown key FAILS: a typo in
//! a setting (`registraton_id=...`) would silently configure a different device. For a 1.1
//! plugin the message must also name the settings it declares.

use crate::context::CheckContext;
use crate::raw::{table_string, RawInstance};
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;

register!(
    "lifecycle.unknown-setting-refused",
    Lifecycle,
    Any,
    true,
    "create with an unknown setting added is refused with HSM_ERR_INVALID_ARGUMENT naming it (and the declared settings)",
    unknown_setting_refused
);

/// A key no plugin has: added to the given settings.
const UNKNOWN_KEY: &str = "hsm_conformance_unknown_key";

fn unknown_setting_refused(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    let mut config = ctx.config.clone();
    config.push((UNKNOWN_KEY.to_string(), "1".to_string()));
    let expected = format!(
        "create with `{UNKNOWN_KEY}=1` added to the given settings to be refused with \
         HSM_ERR_INVALID_ARGUMENT and a message naming `{UNKNOWN_KEY}`"
    );
    // RawInstance rather than ctx.instance(): the context turns create's invalid-argument
    // refusals into SETUP, and here that refusal is the answer wanted.
    let refusal = match RawInstance::create(table, &config) {
        Ok(instance) => {
            drop(instance);
            return Err(Verdict::fail(
                expected,
                "it returned HSM_OK: the plugin ignores settings it does not know, so a typo in \
                 a setting would silently configure a different device; refuse every key but \
                 state_dir and the declared ones",
            ));
        }
        Err(e) => e,
    };
    if refusal.status == HSM_ERR_INVALID_ARGUMENT && refusal.message.contains(UNKNOWN_KEY) {
        let declared = declared_settings(table)?;
        let unnamed: Vec<&str> = declared
            .iter()
            .map(String::as_str)
            .filter(|name| !refusal.message.contains(name))
            .collect();
        if !unnamed.is_empty() {
            return Err(Verdict::fail(
                "the refusal to name the valid settings too (every declared one)",
                format!(
                    "the message does not name {}: {}",
                    unnamed.join(", "),
                    refusal.message
                ),
            ));
        }
        return Ok(Verdict::pass(refusal.message));
    }
    // Refused, but not as an unknown key: when the given settings alone are refused too, the
    // command line is what is missing (SETUP), not the rule.
    if let Err(base) = RawInstance::create(table, &ctx.config) {
        if base.status == HSM_ERR_INVALID_ARGUMENT || base.status == HSM_ERR_NOT_FOUND {
            return Err(Verdict::setup(format!(
                "create refused the settings given ({}): {}; pass the setting with --set KEY=VALUE",
                status_name(base.status),
                base.message
            )));
        }
    }
    Err(Verdict::fail(
        expected,
        if refusal.status == HSM_ERR_INVALID_ARGUMENT {
            format!(
                "it was refused with a message that does not name the key: {}",
                refusal.message
            )
        } else {
            format!("it returned {refusal}")
        },
    ))
}

/// The names a 1.1 plugin declares in its table; none for a 1.0 table, which has no
/// declaration (its header says how far the table goes).
fn declared_settings(table: &'static HsmPluginTable) -> Result<Vec<String>, Verdict> {
    if !HsmPluginTable::has_settings(&table.header) || table.settings_len == 0 {
        return Ok(Vec::new());
    }
    if table.settings.is_null() {
        return Err(Verdict::fail(
            "a settings declaration at `settings` when settings_len is not 0",
            "`settings` is NULL",
        ));
    }
    // SAFETY: a 1.1 table (checked above) holds `settings_len` static declarations at
    // `settings`, non-NULL (checked above).
    let decls = unsafe { std::slice::from_raw_parts(table.settings, table.settings_len) };
    decls
        .iter()
        .enumerate()
        .map(|(i, d)| {
            // SAFETY: a declaration's name is NULL or a NUL-terminated static string.
            match unsafe { table_string(d.name) } {
                Some(Ok(name)) => Ok(name),
                _ => Err(Verdict::fail(
                    format!("setting {i} to have a UTF-8 name"),
                    "a NULL or non-UTF-8 name",
                )),
            }
        })
        .collect()
}
