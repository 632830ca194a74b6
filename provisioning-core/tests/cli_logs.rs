//! What hsmkit writes to stderr besides its error: log lines without ANSI colour codes when
//! stderr is not a terminal (a pipe, the journal, a file), `RUST_LOG` choosing what is logged,
//! and none of the TSS library's own `ERROR:tcti:` lines when the tpm2 plugin already explains
//! the failure (unless the user asks for them with `TSS2_LOG`).

mod support;

use support::*;

/// A failing provision (nothing listens at the endpoint) logged at debug level into a pipe:
/// log lines, then the error, and not one escape byte.
#[test]
fn logs_into_a_pipe_have_no_colour_codes_and_rust_log_sets_the_level() {
    let dir = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let d = dir.path().to_str().expect("UTF-8");
    let state = tempfile::tempdir().expect("temp dir");
    let s = state.path().to_str().expect("UTF-8");
    let base = ["--plugin-dir", d, "--state-dir", s];
    let (ok, _, err) = run_hsmkit_with_env(
        &[
            &base[..],
            &[
                "enroll-info",
                "--plugin",
                "symmetric",
                "--set",
                "registration_id=logs",
            ],
        ]
        .concat(),
        &[],
    );
    assert!(ok, "{err}");
    let provision = [
        &base[..],
        &[
            "provision",
            "--plugin",
            "symmetric",
            "--set",
            "registration_id=logs",
            "--id-scope",
            "0ne00000001",
            "--endpoint",
            "127.0.0.1:9",
            "--timeout",
            "2",
        ],
    ]
    .concat();
    let (ok, _, err) = run_hsmkit_with_env(&provision, &[("RUST_LOG", "debug")]);
    assert!(!ok);
    assert!(
        err.contains("DEBUG"),
        "no debug line at RUST_LOG=debug: {err}"
    );
    assert!(
        err.contains("DPS over HTTPS without a proxy"),
        "the transport's debug line is missing: {err}"
    );
    assert!(!err.contains('\u{1b}'), "escape bytes in a pipe: {err:?}");
    assert!(
        err.lines().last().is_some_and(|l| l.starts_with("error: ")),
        "{err}"
    );

    // The default level (warnings) leaves the debug line out; -vv turns it on again.
    let (_, _, err) = run_hsmkit_with_env(&provision, &[]);
    assert!(!err.contains("DEBUG"), "{err}");
    let (_, _, err) = run_hsmkit_with_env(&[&["-vv"][..], &provision[..]].concat(), &[]);
    assert!(err.contains("DPS over HTTPS without a proxy"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");

    let (_, help, _) = run_hsmkit_with_env(&["--help"], &[]);
    assert!(help.contains("RUST_LOG"), "{help}");
}

/// The tpm2 plugin pointed at a swtpm port where nothing listens: hsmkit's own explanation,
/// without the library's `ERROR:tcti:` lines; with `TSS2_LOG` set by the user they are back.
#[test]
fn tss_library_lines_stay_off_stderr_unless_tss2_log_asks() {
    let dir = plugin_dir_with(&[&bundled_plugin("tpm2")]);
    let d = dir.path().to_str().expect("UTF-8");
    let state = tempfile::tempdir().expect("temp dir");
    let s = state.path().to_str().expect("UTF-8");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = dead.local_addr().expect("port").port();
    drop(dead);
    let tcti = format!("tcti=swtpm:host=127.0.0.1,port={port}");
    let args = [
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "tpm2",
        "--set",
        &tcti,
    ];
    let (ok, _, err) = run_hsmkit_with_env(&args, &[]);
    assert!(!ok);
    assert!(
        err.contains("cannot open the TPM through TCTI"),
        "hsmkit's explanation is missing: {err}"
    );
    assert!(!err.contains("ERROR:tcti:"), "{err}");
    assert!(!err.contains(":tcti:") && !err.contains(":esys:"), "{err}");

    // The user's TSS2_LOG wins: the library's lines are there (so the check above can fail).
    let (ok, _, err) = run_hsmkit_with_env(&args, &[("TSS2_LOG", "all+ERROR")]);
    assert!(!ok);
    assert!(
        err.contains("ERROR:tcti:"),
        "TSS2_LOG=all+ERROR showed nothing: {err}"
    );
    assert!(err.contains("cannot open the TPM through TCTI"), "{err}");
}
