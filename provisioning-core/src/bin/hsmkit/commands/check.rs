//! `hsmkit check`: what stands between this device and a working provisioning, one finding a
//! line with a fix hint (the model of `aziotctl check`). Exit 1 when any check failed.
//!
//! The checks only read: no registration, no key generated or imported (a state folder that
//! does not exist yet is reported, not created, unless the plugin must be started to read the
//! identity, which `create` needs the folder for).

use crate::cli::{CheckArgs, GlobalArgs};
use crate::output::print_json;
use crate::plugin_setup::{choose_attestation, Context_};
use anyhow::Result;
use provisioning_core::config::DEFAULT_CONFIG_PATH;
use provisioning_core::dps::probe::{probe, ProbeError};
use provisioning_core::dps::{Attestation, DpsClientConfig};
use provisioning_core::plugin::PluginErrorCode;
use provisioning_core::provisioning::{enrollment_info, load as load_record, record_path};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A finding's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding: a stable id, its outcome, what was found and, unless ok, how to fix it.
#[derive(Debug, Serialize)]
pub(crate) struct Finding {
    id: &'static str,
    status: Status,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn ok(&mut self, id: &'static str, message: impl Into<String>) {
        self.push(id, Status::Ok, message.into(), None);
    }
    fn warn(&mut self, id: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(id, Status::Warn, message.into(), Some(hint.into()));
    }
    fn fail(&mut self, id: &'static str, message: impl Into<String>, hint: impl Into<String>) {
        self.push(id, Status::Fail, message.into(), Some(hint.into()));
    }
    fn push(&mut self, id: &'static str, status: Status, message: String, hint: Option<String>) {
        self.0.push(Finding {
            id,
            status,
            message,
            hint,
        });
    }
}

/// The earliest time a working device clock can show: no hsmkit was built before it, and a
/// clock behind it (a board without RTC battery, booted to 1970) makes every certificate
/// "not yet valid" and every SAS token expired on arrival.
const CLOCK_FLOOR_UNIX: u64 = 1_764_460_800; // 2025-11-30T00:00:00Z

/// How long each network step of the DPS check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the checks; builds its own context so that a config that does not parse is a finding.
pub(super) fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<ExitCode> {
    let mut f = Findings::default();
    match Context_::new(global) {
        Ok(ctx) => run_checks(&ctx, args, &mut f),
        Err(e) => f.fail(
            "config",
            format!("{e:#}"),
            "fix what the message names (`hsmkit config new` writes a valid file; --config or \
             HSMKIT_CONFIG names another); the other checks need a usable config",
        ),
    }
    let failed = f.0.iter().filter(|x| x.status == Status::Fail).count();
    let warned = f.0.iter().filter(|x| x.status == Status::Warn).count();
    if args.json {
        #[derive(Serialize)]
        struct Report<'a> {
            checks: &'a [Finding],
            failed: usize,
            warnings: usize,
        }
        print_json(&Report {
            checks: &f.0,
            failed,
            warnings: warned,
        })?;
    } else {
        for x in &f.0 {
            let tag = match x.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("[{tag}] {}: {}", x.id, x.message);
            if let Some(h) = &x.hint {
                println!("       fix: {h}");
            }
        }
        println!(
            "{} checks: {} ok, {warned} warning(s), {failed} failed",
            f.0.len(),
            f.0.len() - failed - warned
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_checks(ctx: &Context_, args: &CheckArgs, f: &mut Findings) {
    match ctx.config.path.as_deref() {
        Some(p) => f.ok(
            "config",
            format!("{} parses (from {})", p.display(), ctx.config.source.as_str()),
        ),
        None => f.warn(
            "config",
            format!("no config file (none at {DEFAULT_CONFIG_PATH}, no --config or HSMKIT_CONFIG): flags only"),
            format!("hsmkit config new --attestation KIND --plugin NAME -o {DEFAULT_CONFIG_PATH}"),
        ),
    }
    f.0.push(clock_finding(SystemTime::now()));
    let state_ok = state_dir_finding(&ctx.state_dir, f);

    let identity = plugin_checks(ctx, args, f, state_ok);
    let dps = dps_config(ctx, f);
    if let Some(config) = &dps {
        dps_probe(config, f);
    }
    record_check(ctx, f, identity.as_ref(), dps.as_ref());
}

fn clock_finding(now: SystemTime) -> Finding {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if secs < CLOCK_FLOOR_UNIX {
        Finding {
            id: "clock",
            status: Status::Fail,
            message: format!("the clock says {secs} s after 1970, before this hsmkit was built"),
            hint: Some(
                "set the time (timedatectl set-ntp true; systemd-timesyncd or chrony): \
                 certificate checks and SAS token expiry depend on it"
                    .into(),
            ),
        }
    } else {
        Finding {
            id: "clock",
            status: Status::Ok,
            message: format!("{secs} s after 1970 (not before this hsmkit was built)"),
            hint: None,
        }
    }
}

/// The state folder: owned by this user or root, nobody else able to write or read it; files
/// in it private. Returns whether it is usable (or absent and creatable).
fn state_dir_finding(dir: &Path, f: &mut Findings) -> bool {
    match hsm_secure_fs::state::PrivateDir::open(dir) {
        Err(e) if e.is_not_found() => {
            f.warn(
                "state-dir",
                format!("{} does not exist yet", dir.display()),
                "it is created (0700) by `hsmkit enroll-info` or `hsmkit provision`",
            );
            true
        }
        Err(e) => {
            f.fail(
                "state-dir",
                e.to_string(),
                format!(
                    "chown {}:{} {d} && chmod 0700 {d} (or choose another with --state-dir / state_dir)",
                    hsm_secure_fs::trust::current_uid(),
                    // SAFETY: getegid has no preconditions and cannot fail.
                    unsafe { libc::getegid() },
                    d = dir.display()
                ),
            );
            false
        }
        Ok(_) => {
            let mode = std::fs::metadata(dir).map_or(0, |m| m.mode() & 0o7777);
            let exposed: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    (m.is_file() && m.mode() & 0o077 != 0).then(|| {
                        format!(
                            "{} ({:o})",
                            e.file_name().to_string_lossy(),
                            m.mode() & 0o777
                        )
                    })
                })
                .collect();
            if exposed.is_empty() && mode & 0o077 == 0 {
                f.ok(
                    "state-dir",
                    format!("{} (mode {mode:o}, private)", dir.display()),
                );
            } else {
                f.warn(
                    "state-dir",
                    format!(
                        "{} (mode {mode:o}) readable by others: {}",
                        dir.display(),
                        if exposed.is_empty() {
                            "the folder".to_string()
                        } else {
                            exposed.join(", ")
                        }
                    ),
                    format!("chmod 0700 {d} && chmod 0600 {d}/*", d = dir.display()),
                );
            }
            true
        }
    }
}

/// The identity read through the plugin: (plugin name, attestation, registration id).
struct Identity {
    plugin: String,
    registration_id: String,
}

fn plugin_checks(
    ctx: &Context_,
    args: &CheckArgs,
    f: &mut Findings,
    state_ok: bool,
) -> Option<Identity> {
    let plugin = match ctx.load_plugin(&args.plugin) {
        Ok(p) => {
            f.ok(
                "plugin-load",
                format!("{} from {}", p.name(), p.path().display()),
            );
            p
        }
        Err(e) => {
            f.fail(
                "plugin-load",
                format!("{e:#}"),
                "`hsmkit plugins list` shows the plugins found and why files were refused; \
                 set `plugin` in the config or pass --plugin",
            );
            return None;
        }
    };
    if !state_ok {
        f.fail(
            "plugin-instance",
            "not started: the state folder is unusable",
            "fix the state-dir finding",
        );
        return None;
    }
    let instance = match ctx.create_instance(&plugin, &args.plugin) {
        Ok(i) => {
            f.ok("plugin-instance", format!("{} started", plugin.name()));
            i
        }
        Err(e) => {
            f.fail(
                "plugin-instance",
                format!("{e:#}"),
                format!(
                    "`hsmkit plugins info {}` lists its settings; set them in [plugins.{}] or with --set",
                    plugin.name(),
                    plugin.name()
                ),
            );
            return None;
        }
    };
    let requested = ctx.config.provisioning.attestation.as_deref();
    let kind = match choose_attestation(&plugin, requested) {
        Ok(k) => k,
        Err(e) => {
            f.fail(
                "identity",
                format!("{e:#}"),
                "set provisioning.attestation in the config (tpm, x509 or symmetricKey)",
            );
            return None;
        }
    };
    match enrollment_info(&instance, kind) {
        Ok(info) => {
            if kind == Attestation::SymmetricKey {
                let probe = instance
                    .symmetric_key()
                    .map_err(anyhow::Error::from)
                    .and_then(|s| s.sign(b"hsmkit check").map_err(anyhow::Error::from));
                if let Err(e) = probe {
                    let missing = e
                        .downcast_ref::<provisioning_core::plugin::PluginError>()
                        .and_then(|p| p.code())
                        == Some(PluginErrorCode::NotFound);
                    f.fail(
                        "identity",
                        format!("{} ({}): no usable key: {e:#}", info.registration_id, kind.as_str()),
                        if missing {
                            "import the device key: `hsmkit enroll-info` (generates one, or --group-key)".to_string()
                        } else {
                            "see the plugin's message above".to_string()
                        },
                    );
                    return None;
                }
            }
            f.ok(
                "identity",
                format!(
                    "{} attestation, registration id {}",
                    kind.as_str(),
                    info.registration_id
                ),
            );
            Some(Identity {
                plugin: plugin.name().to_string(),
                registration_id: ctx
                    .config
                    .provisioning
                    .registration_id
                    .clone()
                    .unwrap_or(info.registration_id),
            })
        }
        Err(e) => {
            f.fail(
                "identity",
                format!("{e:#}"),
                "`hsmkit enroll-info` creates or shows the identity; check the device (TPM, token) is present",
            );
            None
        }
    }
}

/// The DPS settings from the config (`check` takes no DPS flags: it checks what `provision`
/// run from the config would use).
fn dps_config(ctx: &Context_, f: &mut Findings) -> Option<DpsClientConfig> {
    let p = &ctx.config.provisioning;
    let Some(scope) = p.id_scope.clone() else {
        f.fail(
            "dps-config",
            "no id scope",
            "set provisioning.id_scope (Azure portal: DPS > Overview > ID Scope)",
        );
        return None;
    };
    let mut config = DpsClientConfig::new(scope);
    if let Some(e) = &p.endpoint {
        config.endpoint = e.clone();
    }
    if let Some(t) = &p.transport {
        match t.parse() {
            Ok(t) => config.transport = t,
            Err(e) => {
                f.fail(
                    "dps-config",
                    format!("{e}"),
                    "provisioning.transport: https, mqtt or mqtt-ws",
                );
                return None;
            }
        }
    }
    if let Some(ca) = &p.trust_ca {
        match hsm_secure_fs::trust::read(ca) {
            Ok(pem) => config.extra_trust_pem = Some(pem),
            Err(e) => {
                f.fail(
                    "dps-config",
                    format!("cannot use the CA certificate file (trust_ca): {e}"),
                    "provisioning.trust_ca must name a PEM file owned by root or you, writable only by its owner",
                );
                return None;
            }
        }
    }
    f.ok(
        "dps-config",
        format!(
            "id scope {}, endpoint {} over {}",
            config.id_scope, config.endpoint, config.transport
        ),
    );
    Some(config)
}

fn dps_probe(config: &DpsClientConfig, f: &mut Findings) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            f.fail(
                "dps-tls",
                format!("cannot start the async runtime: {e}"),
                "see the message",
            );
            return;
        }
    };
    match runtime.block_on(probe(config, PROBE_TIMEOUT)) {
        Ok(r) => f.ok(
            "dps-tls",
            format!(
                "{}:{} resolves ({} address(es)); TLS handshake with {} succeeded",
                r.host,
                r.port,
                r.addresses.len(),
                r.connected
            ),
        ),
        Err(e) => {
            let hint = match &e {
                ProbeError::BadEndpoint(_) => "provisioning.endpoint: host, host:port or https://host[:port]".to_string(),
                ProbeError::Resolve { .. } => "check the endpoint's spelling and DNS (resolvectl query HOST)".to_string(),
                ProbeError::Connect { port, .. } | ProbeError::Timeout { port, .. } => {
                    format!("check the network and that outbound TCP port {port} is open (firewall, proxy)")
                }
                ProbeError::Trust(_) => "provisioning.trust_ca must hold PEM CERTIFICATE blocks".to_string(),
                ProbeError::Handshake { .. } => "the server's certificate is not trusted or not for this host: set provisioning.trust_ca to the CA that issued it (a test DPS), check the endpoint and the clock".to_string(),
            };
            f.fail("dps-tls", format!("{e:#}", e = anyhow::Error::new(e)), hint);
        }
    }
}

fn record_check(
    ctx: &Context_,
    f: &mut Findings,
    identity: Option<&Identity>,
    dps: Option<&DpsClientConfig>,
) {
    let path = record_path(&ctx.state_dir);
    match load_record(&ctx.state_dir) {
        Ok(None) => f.warn(
            "record",
            format!("not provisioned yet (no {})", path.display()),
            "hsmkit provision",
        ),
        Err(e) => f.fail(
            "record",
            format!("{e:#}", e = anyhow::Error::new(e)),
            "hsmkit provision --force registers again and replaces it",
        ),
        Ok(Some(r)) => {
            let mut differences = Vec::new();
            if let Some(id) = identity {
                if r.plugin != id.plugin {
                    differences.push(format!("plugin {} (now {})", r.plugin, id.plugin));
                }
                if r.result.registration_id != id.registration_id {
                    differences.push(format!(
                        "registration id {} (now {})",
                        r.result.registration_id, id.registration_id
                    ));
                }
            }
            if let Some(c) = dps {
                if r.id_scope != c.id_scope {
                    differences.push(format!("id scope {} (now {})", r.id_scope, c.id_scope));
                }
            }
            if differences.is_empty() {
                f.ok(
                    "record",
                    format!(
                        "{} on {} as {}{}",
                        path.display(),
                        r.result.assigned_hub,
                        r.result.device_id,
                        if identity.is_some() {
                            ", matching the current identity"
                        } else {
                            ""
                        }
                    ),
                );
            } else {
                f.fail(
                    "record",
                    format!(
                        "the saved record does not match: {}",
                        differences.join(", ")
                    ),
                    "hsmkit provision --force registers the current identity again",
                );
            }
        }
    }
}
