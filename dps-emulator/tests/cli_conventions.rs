//! The `dps-emulator` command line follows hsmkit's conventions: `--state-dir` (the old
//! `--state` still accepted), one-line `error: ...` messages with exit status 1, logs without
//! ANSI colour codes when stderr is not a terminal, and every option described in `--help`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dps-emulator"));
    c.env_remove("DPS_EMULATOR_STATE").env_remove("RUST_LOG");
    c
}

/// Runs the emulator CLI; (exit status, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().args(args).output().expect("run dps-emulator");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn listed_ids(state: &str, flag: &str) -> Vec<String> {
    let (code, out, err) = run(&["list", "--json", flag, state]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("list --json");
    let mut ids: Vec<String> = v["enrollments"]
        .as_array()
        .unwrap_or_else(|| panic!("no enrollments array: {v}"))
        .iter()
        .map(|e| e["registrationId"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn state_dir_is_the_flag_and_state_still_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("emu");
    let s = state.to_str().expect("UTF-8");
    for (flag, id) in [("--state-dir", "new-name"), ("--state", "old-name")] {
        let (code, _, err) = run(&[
            "enroll",
            "symmetric",
            "--registration-id",
            id,
            "--primary-key",
            KEY,
            flag,
            s,
        ]);
        assert_eq!(code, Some(0), "{flag}: {err}");
    }
    // Both names reach the same folder.
    assert_eq!(listed_ids(s, "--state-dir"), ["new-name", "old-name"]);
    assert_eq!(listed_ids(s, "--state"), ["new-name", "old-name"]);
    let (_, help, _) = run(&["list", "--help"]);
    assert!(help.contains("--state-dir <DIR>"), "{help}");
}

#[test]
fn errors_are_one_line_with_status_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = dir.path().join("emu");
    let missing = dir.path().join("no-such-leaf.pem");
    let (code, _, err) = run(&[
        "enroll",
        "x509",
        "--registration-id",
        "dev",
        "--cert",
        missing.to_str().expect("UTF-8"),
        "--state-dir",
        s.to_str().expect("UTF-8"),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    // The message and its cause on that line, as hsmkit prints them (`error: ...: cause`).
    assert!(
        lines[0].starts_with(&format!("error: reading {}: ", missing.display())),
        "{err}"
    );
    assert!(!err.contains("Caused by"), "{err}");
}

/// Starts `serve` on ephemeral ports with `rust_log` (none: the default), waits until it
/// serves, stops it and returns what it wrote to stderr (a pipe).
fn serve_stderr(rust_log: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--state-dir",
        dir.path().join("emu").to_str().expect("UTF-8"),
        "--listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--no-mqtt-ws",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let mut child = cmd.spawn().expect("start dps-emulator");
    // Up and serving once it prints its connection-string hint (after its listeners log).
    let stdout = child.stdout.take().expect("stdout");
    let up = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("service connection string:"));
    let _ = child.kill();
    let out = child.wait_with_output().expect("stopped");
    assert!(
        up,
        "the emulator did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Log lines on a pipe carry no escape byte; RUST_LOG picks the level, as `--help` says.
#[test]
fn logs_on_a_pipe_have_no_colour_codes_and_rust_log_sets_the_level() {
    let err = serve_stderr(None);
    assert!(
        err.contains("INFO"),
        "no log line at the default level: {err}"
    );
    assert!(err.contains("DPS emulator listening"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape bytes on a pipe: {err:?}");

    let err = serve_stderr(Some("warn"));
    assert!(
        !err.contains("listening"),
        "an INFO line at RUST_LOG=warn: {err}"
    );
    let (_, help, _) = run(&["--help"]);
    assert!(help.contains("RUST_LOG"), "{help}");
}

/// Every option of `enroll tpm` (and of the other enrollment kinds) has a description.
#[test]
fn enroll_help_describes_every_option() {
    for kind in ["tpm", "x509", "symmetric"] {
        let (code, help, err) = run(&["enroll", kind, "--help"]);
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = help.lines().collect();
        let mut options = 0;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !(t.starts_with("--") || t.starts_with('-') && t.chars().nth(1) != Some('-')) {
                continue;
            }
            options += 1;
            // `--flag <VALUE>  Description`, or the description on the next line.
            let described_here = t
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let described_next = lines.get(i + 1).is_some_and(|n| {
                let n = n.trim_start();
                !n.is_empty() && !n.starts_with('-')
            });
            assert!(
                described_here || described_next,
                "enroll {kind}: `{t}` has no description:\n{help}"
            );
        }
        assert!(options >= 8, "enroll {kind}: too few options seen:\n{help}");
    }
    let (_, help, _) = run(&["enroll", "tpm", "--help"]);
    assert!(help.contains("--endorsement-key <BASE64>"), "{help}");
    assert!(help.contains("TPM2B_PUBLIC"), "{help}");
}
