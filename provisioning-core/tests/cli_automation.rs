//! `hsmkit` for automation and its rough edges, as a script runs it: each documented exit code
//! provoked for real (a bad flag, a bad config key, a missing plugin, a broken HSM state file,
//! an unreachable endpoint, a disabled enrollment, a server that never answers), the `--json`
//! error object, and one test per fixed rough edge asserting its message.

mod support;

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::model::{AllocationPolicy, CustomAllocationDefinition, ProvisioningStatus};
use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

/// What one run of `hsmkit` did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON error object a `--json` failure prints, checked to be the only thing on
    /// stdout and to have exactly `kind`, `message` and `hint`.
    fn error_json(&self) -> Value {
        let v: Value = serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        });
        let error = v["error"].as_object().unwrap_or_else(|| panic!("{v}"));
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["hint", "kind", "message"], "{v}");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        for k in keys {
            assert!(
                !error[k].as_str().unwrap_or_default().is_empty(),
                "{k} empty: {v}"
            );
        }
        v["error"].clone()
    }
}

/// Runs hsmkit with a clean environment plus `env`.
fn hsmkit_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = hsmkit_command(args, env).output().expect("run hsmkit");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn hsmkit(args: &[&str]) -> Run {
    hsmkit_env(args, &[])
}

/// Runs `args` twice, as text and with `--json` appended: both exit with `code`; the text run
/// prints nothing on stdout and its message on stderr; the JSON run prints only the error
/// object of `kind` on stdout. Returns the JSON message.
fn fails_with(args: &[&str], code: i32, kind: &str) -> String {
    let text = hsmkit(args);
    assert_eq!(
        text.code, code,
        "{args:?}: stdout {}\nstderr {}",
        text.stdout, text.stderr
    );
    assert!(text.stdout.is_empty(), "{args:?}: {}", text.stdout);
    assert!(text.stderr.contains("error"), "{args:?}: {}", text.stderr);
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let json = hsmkit(&with_json);
    assert_eq!(json.code, code, "{with_json:?}: {}", json.stderr);
    let error = json.error_json();
    assert_eq!(error["kind"], kind, "{error}");
    error["message"].as_str().unwrap().to_string()
}

/// `--plugin-dir plugins --state-dir state`, then `rest`.
fn in_dirs<'a>(plugins: &'a str, state: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--plugin-dir", plugins, "--state-dir", state];
    args.extend_from_slice(rest);
    args
}

/// A private 0700 folder holding one 0600 file `name` with `text`.
fn private_file(dir: &Path, name: &str, text: &str) -> String {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn usage_errors_exit_2() {
    let msg = fails_with(&["provision", "--no-such-flag"], 2, "usage");
    assert!(msg.contains("--no-such-flag"), "{msg}");
    // Help and version are not failures.
    let help = hsmkit(&["--help"]);
    assert_eq!(help.code, 0);
    // `hsmkit --help` documents every code and the JSON object.
    for (code, kind) in [
        (1, "other"),
        (2, "usage"),
        (3, "config"),
        (4, "plugin"),
        (5, "hsm"),
        (6, "network"),
        (7, "dps-refused"),
        (8, "timeout"),
    ] {
        assert!(
            help.stdout.contains(&format!("  {code}  {kind}: ")),
            "{code} {kind} missing in:\n{}",
            help.stdout
        );
    }
    assert!(
        help.stdout
            .contains(r#"{"error": {"kind", "message", "hint"}}"#),
        "{}",
        help.stdout
    );
}

#[test]
fn config_errors_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = private_file(dir.path(), "c.toml", "plugin = \"dice\"\nbogus_key = 1\n");
    let msg = fails_with(&["--config", &config, "plugins", "list"], 3, "config");
    assert!(msg.contains("bogus_key"), "{msg}");
    // A missing setting is configuration too.
    let plugins = software_plugin_dir();
    let state = tempfile::tempdir().unwrap();
    let msg = fails_with(
        &in_dirs(
            plugins.path().to_str().unwrap(),
            state.path().to_str().unwrap(),
            &["provision", "--plugin", "symmetric"],
        ),
        3,
        "config",
    );
    assert!(msg.contains("--id-scope"), "{msg}");
}

#[test]
fn plugin_errors_exit_4_and_suggest_the_nearest_name() {
    let plugins = software_plugin_dir();
    let d = plugins.path().to_str().unwrap();
    let msg = fails_with(&["--plugin-dir", d, "plugins", "info", "nope"], 4, "plugin");
    assert!(msg.contains("no plugin named `nope`"), "{msg}");
    assert!(
        !msg.contains("did you mean"),
        "nothing is near `nope`: {msg}"
    );
    // A typo gets the nearest name, a swapped pair too.
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap();
    let msg = fails_with(
        &in_dirs(d, s, &["enroll-info", "--plugin", "dcie"]),
        4,
        "plugin",
    );
    assert!(msg.contains("did you mean `dice`?"), "{msg}");
    let msg = fails_with(
        &["--plugin-dir", d, "plugins", "info", "tmp-sim"],
        4,
        "plugin",
    );
    assert!(msg.contains("did you mean `tpm-sim`?"), "{msg}");
    // The file-name form names the plugin.
    let run = hsmkit(&["--plugin-dir", d, "plugins", "info", "tpm_sim", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["name"], "tpm-sim");
    let run = hsmkit(&in_dirs(
        d,
        s,
        &["enroll-info", "--plugin", "tpm_sim", "--json"],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_broken_hsm_state_file_exits_5() {
    let plugins = software_plugin_dir();
    let state = tempfile::tempdir().unwrap();
    let tpm = state.path().join("tpm-sim");
    std::fs::create_dir(&tpm).unwrap();
    private_file(&tpm, "state", "this is not a simulated TPM");
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let msg = fails_with(
        &in_dirs(
            plugins.path().to_str().unwrap(),
            state.path().to_str().unwrap(),
            &["enroll-info", "--plugin", "tpm-sim"],
        ),
        5,
        "hsm",
    );
    assert!(msg.contains("corrupt"), "{msg}");
}

/// A symmetric-key device (plugin folder, state folder) with a key, for runs that never reach
/// a DPS that knows it.
fn symmetric_device() -> (tempfile::TempDir, tempfile::TempDir) {
    let plugins = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let state = tempfile::tempdir().unwrap();
    let run = hsmkit(&in_dirs(
        plugins.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
        &[
            "enroll-info",
            "--plugin",
            "symmetric",
            "--set",
            "registration_id=auto-dev",
        ],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
    (plugins, state)
}

fn provision_args<'a>(plugins: &'a str, state: &'a str, endpoint: &'a str) -> Vec<&'a str> {
    in_dirs(
        plugins,
        state,
        &[
            "provision",
            "--plugin",
            "symmetric",
            "--set",
            "registration_id=auto-dev",
            "--id-scope",
            "0ne00000001",
            "--endpoint",
            endpoint,
        ],
    )
}

#[test]
fn an_unreachable_endpoint_exits_6() {
    let (plugins, state) = symmetric_device();
    // A port just freed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut args = provision_args(
        plugins.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
        &endpoint,
    );
    // Long enough that the connection failures, not the clock, end it.
    args.extend(["--timeout", "60"]);
    let msg = fails_with(&args, 6, "network");
    assert!(msg.contains(&endpoint), "{msg}");
}

#[test]
fn a_server_that_never_answers_exits_8_naming_the_timeout_settings() {
    let (plugins, state) = symmetric_device();
    // Accepts connections and holds them without a byte.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let mut args = provision_args(
        plugins.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
        &endpoint,
    );
    args.extend(["--timeout", "2"]);
    let msg = fails_with(&args, 8, "timeout");
    assert!(
        msg.contains("--timeout") && msg.contains("timeout_secs"),
        "{msg}"
    );
}

/// A device with the symmetric plugin whose enrollment files `hsmkit enroll-info --out` wrote;
/// `edit` changes the individual enrollment before the emulator stores it.
fn enrolled(
    emulator: &BackgroundEmulator,
    root: &Path,
    edit: impl FnOnce(&mut dps_emulator::model::IndividualEnrollment),
) -> (tempfile::TempDir, String) {
    let plugins = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let state = root.join("device").to_str().unwrap().to_string();
    let out = root.join("enroll");
    let run = hsmkit(&in_dirs(
        plugins.path().to_str().unwrap(),
        &state,
        &[
            "enroll-info",
            "--plugin",
            "symmetric",
            "--set",
            "registration_id=auto-dev",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let info = EnrollmentInfo::read_dir(&out).expect("the enrollment files");
    let mut enrollment = info.individual();
    edit(&mut enrollment);
    emulator
        .enrollments()
        .create_individual(enrollment)
        .expect("enrollment stored");
    (plugins, state)
}

#[test]
fn a_disabled_enrollment_exits_7() {
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let (plugins, state) = enrolled(&emulator, root.path(), |e| {
        e.common.provisioning_status = ProvisioningStatus::Disabled
    });
    let endpoint = emulator.endpoint();
    let ca = emulator.ca_cert_path().to_str().unwrap().to_string();
    let mut args = provision_args(plugins.path().to_str().unwrap(), &state, &endpoint);
    args.extend(["--trust-ca", &ca]);
    let msg = fails_with(&args, 7, "dps-refused");
    assert!(msg.contains("disabled"), "{msg}");
    emulator.shutdown();
}

/// A custom allocation webhook over plain HTTP (the emulator's tests use one too) that
/// assigns `hub` and returns `payload` to the device, for as many requests as come.
fn webhook(hub: String, payload: Value) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/alloc", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            // Headers, then Content-Length bytes of body.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body_len = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break Some(end + 4 + len);
                }
            };
            let Some(total) = body_len else { continue };
            while buf.len() < total {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = serde_json::json!({"iotHubHostName": hub, "payload": payload}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// `provision` prints the substatus and the payload DPS returned, and endpoints that name the
/// same target (`https://h:p/` and `h:p`) reuse the saved record, which keeps one spelling.
#[test]
fn provision_prints_substatus_and_payload_and_normalises_the_endpoint() {
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let hub = emulator.hubs()[0].clone();
    let url = webhook(hub, serde_json::json!({"firmware": "2.0"}));
    let (plugins, state) = enrolled(&emulator, root.path(), |e| {
        e.common.allocation_policy = Some(AllocationPolicy::Custom);
        e.common.custom_allocation_definition = Some(CustomAllocationDefinition {
            webhook_url: url,
            api_version: "2021-10-01".into(),
        });
    });
    let endpoint = emulator.endpoint();
    let host_port = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let url_form = format!("https://{host_port}/");
    let ca = emulator.ca_cert_path().to_str().unwrap().to_string();
    let p = plugins.path().to_str().unwrap();
    let mut args = provision_args(p, &state, &url_form);
    args.extend(["--trust-ca", &ca]);
    let run = hsmkit(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Substatus:       initialAssignment"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(r#"Payload:         {"firmware":"2.0"}"#),
        "{}",
        run.stdout
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(Path::new(&state).join("provisioning.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["endpoint"], host_port.as_str(), "{record}");

    let mut args = provision_args(p, &state, &host_port);
    args.extend(["--trust-ca", &ca, "--json"]);
    let run = hsmkit(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["reused"], true, "the same target: {v}");
    assert_eq!(v["substatus"], "initialAssignment", "{v}");
    assert_eq!(v["payload"], serde_json::json!({"firmware": "2.0"}), "{v}");
    assert_eq!(emulator.registration_records().unwrap().len(), 1);
    emulator.shutdown();
}

#[test]
fn a_plugin_dir_that_does_not_exist_is_an_error_naming_its_source() {
    let missing = "/nonexistent-hsmkit-test/plugins";
    let msg = fails_with(&["--plugin-dir", missing, "plugins", "list"], 2, "usage");
    assert!(
        msg.contains(missing) && msg.contains("flag --plugin-dir"),
        "{msg}"
    );
    let run = hsmkit_env(
        &["plugins", "list", "--json"],
        &[("HSMKIT_PLUGIN_DIR", missing)],
    );
    assert_eq!(run.code, 3, "{}", run.stdout);
    let e = run.error_json();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("env HSMKIT_PLUGIN_DIR"),
        "{e}"
    );
}

#[test]
fn plugins_list_says_where_each_folder_came_from() {
    let plugins = software_plugin_dir();
    let d = plugins.path().to_str().unwrap();
    let flag = hsmkit(&["--plugin-dir", d, "plugins", "list"]);
    assert_eq!(flag.code, 0, "{}", flag.stderr);
    assert!(
        flag.stdout
            .contains(&format!("searched: {d} (flag --plugin-dir)")),
        "{}",
        flag.stdout
    );
    let env = hsmkit_env(&["plugins", "list"], &[("HSMKIT_PLUGIN_DIR", d)]);
    assert_eq!(env.code, 0, "{}", env.stderr);
    assert!(
        env.stdout
            .contains(&format!("searched: {d} (env HSMKIT_PLUGIN_DIR)")),
        "{}",
        env.stdout
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = private_file(
        config_dir.path(),
        "c.toml",
        &format!("plugin_dir = \"{d}\"\n"),
    );
    let conf = hsmkit(&["--config", &config, "plugins", "list"]);
    assert_eq!(conf.code, 0, "{}", conf.stderr);
    assert!(
        conf.stdout
            .contains(&format!("searched: {d} (config plugin_dir)")),
        "{}",
        conf.stdout
    );
    // The defaults, in words rather than Rust names.
    let defaults = hsmkit(&["plugins", "list"]);
    assert_eq!(defaults.code, 0, "{}", defaults.stderr);
    let searched = defaults.stdout.lines().next().unwrap_or_default();
    assert!(searched.contains("(default: system)"), "{searched}");
    for rust_name in [
        "ExecutablePlugins",
        "ExecutableDir",
        "System)",
        "Flag",
        "Environment",
    ] {
        assert!(!searched.contains(rust_name), "{searched}");
    }
}

#[test]
fn an_unknown_set_key_is_a_usage_error_naming_the_valid_keys() {
    let plugins = software_plugin_dir();
    let state = tempfile::tempdir().unwrap();
    let msg = fails_with(
        &in_dirs(
            plugins.path().to_str().unwrap(),
            state.path().to_str().unwrap(),
            &[
                "enroll-info",
                "--plugin",
                "symmetric",
                "--set",
                "registraton_id=x",
            ],
        ),
        2,
        "usage",
    );
    assert!(
        msg.contains("`registraton_id`") && msg.contains("registration_id"),
        "{msg}"
    );
}

#[test]
fn a_wrong_trust_ca_is_named() {
    let (plugins, state) = symmetric_device();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = private_file(dir.path(), "not-a-ca.pem", "hello, not a certificate\n");
    let mut args = provision_args(
        plugins.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
        "127.0.0.1:9",
    );
    args.extend(["--trust-ca", &not_pem]);
    let msg = fails_with(&args, 3, "config");
    assert!(
        msg.contains(&not_pem) && msg.contains("--trust-ca"),
        "{msg}"
    );

    // A real CA, but not the server's: the TLS failure names the file that was trusted.
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let other =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("other"))).unwrap();
    let wrong_ca = other.ca_cert_path().to_str().unwrap().to_string();
    let endpoint = emulator.endpoint();
    let mut args = provision_args(
        plugins.path().to_str().unwrap(),
        state.path().to_str().unwrap(),
        &endpoint,
    );
    args.extend(["--trust-ca", &wrong_ca]);
    let msg = fails_with(&args, 6, "network");
    assert!(
        msg.contains(&format!(
            "TLS failed although the CA certificate file {wrong_ca} (--trust-ca) was trusted"
        )),
        "{msg}"
    );
    other.shutdown();
    emulator.shutdown();
}

/// The demo keeps its state in --state-dir when asked, and otherwise removes what it made
/// there.
#[test]
fn demo_honours_state_dir_and_keep_state() {
    let plugins = software_plugin_dir();
    let d = plugins.path().to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = state.path().join("demo");
    let s = s.to_str().unwrap();
    let run = hsmkit(&in_dirs(
        d,
        s,
        &["demo", "--plugins", "symmetric", "--json"],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let used = v["stateDir"].as_str().unwrap();
    assert!(used.starts_with(s), "{used} is not in {s}");
    assert!(!Path::new(used).exists(), "{used} was not removed");

    let run = hsmkit(&in_dirs(
        d,
        s,
        &["demo", "--plugins", "symmetric", "--keep-state", "--json"],
    ));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["stateDir"], s);
    assert!(Path::new(s).join("emulator").is_dir());
    assert!(Path::new(s).join("devices").join("symmetric").is_dir());
}

/// Every command's help: one spelling of the attestation names (DPS's: tpm, x509,
/// symmetricKey), and no option saying its default twice (in its text and clap's
/// `[default: ...]`).
#[test]
fn help_texts_spell_attestations_one_way_and_defaults_once() {
    let commands: &[&[&str]] = &[
        &[],
        &["plugins", "list"],
        &["plugins", "info"],
        &["enroll-info"],
        &["provision"],
        &["hub-token"],
        &["hub", "send"],
        &["hub", "twin"],
        &["hub", "listen"],
        &["demo"],
        &["config", "new"],
        &["check"],
    ];
    for command in commands {
        let mut args = vec!["help"];
        args.extend_from_slice(command);
        let run = hsmkit(&args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let help = run.stdout;
        assert!(!help.contains("symmetric-key"), "{args:?}:\n{help}");
        if ["enroll-info", "provision", "config"].contains(&command.first().copied().unwrap_or(""))
        {
            assert!(
                help.contains("tpm, x509 or symmetricKey"),
                "{args:?}:\n{help}"
            );
        }
        // One option's text runs from its `-x, --name` / `--name` line to the next.
        let mut block = String::new();
        for line in help.lines().chain(std::iter::once("  --end")) {
            let t = line.trim_start();
            if t.starts_with("--") || (t.starts_with('-') && t.len() > 1 && !t.starts_with("- ")) {
                let lower = block.to_lowercase();
                assert!(
                    !(lower.contains("[default:") && lower.matches("default").count() > 1),
                    "{args:?}: the default is said twice in:\n{block}"
                );
                block.clear();
            }
            block.push_str(line);
            block.push('\n');
        }
    }
}

/// `hsmkit pkcs11` runs the set-up tool under its own name and with `[plugins.pkcs11]` of the
/// config as defaults.
#[test]
fn pkcs11_help_names_hsmkit_pkcs11_and_the_config_is_read() {
    let tool = profile_dir().join("hsmkit-pkcs11");
    assert!(
        tool.is_file(),
        "{} is missing: build it with `cargo build -p hsmkit-backend-pkcs11` (the workspace build does)",
        tool.display()
    );
    let run = hsmkit(&["pkcs11", "--help"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Usage: hsmkit pkcs11"),
        "{}",
        run.stdout
    );
    let run = hsmkit(&["pkcs11", "init", "--help"]);
    assert!(
        run.stdout.contains("Usage: hsmkit pkcs11 init"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("HSMKIT_PKCS11_MODULE"),
        "{}",
        run.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let pin = private_file(dir.path(), "pin", "1234\n");
    let module = dir.path().join("libnot-a-module.so");
    let config = private_file(
        dir.path(),
        "c.toml",
        &format!(
            "[plugins.pkcs11]\nmodule = \"{}\"\ntoken_uri = \"pkcs11:token=device\"\npin_file = \"{pin}\"\n",
            module.display()
        ),
    );
    // No --module, --token-uri or --pin-file: the config's are used, so the tool gets as far
    // as the module named there.
    let run = hsmkit(&[
        "--config",
        &config,
        "pkcs11",
        "init",
        "--label",
        "k",
        "--common-name",
        "dev",
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(&module.display().to_string()),
        "{}",
        run.stderr
    );
}
