//! The fleet simulator end to end: 200 mixed devices (all four kinds) against the in-process
//! emulator through the built plugins, a group the emulator refuses, and the command line.
//! Needs the workspace's plugin .so files (`cargo build --workspace`; the README test command
//! builds them first).

use dps_emulator::model::ProvisioningStatus;
use dps_fleet::provision::DICE_GROUP_ID;
use dps_fleet::{DeviceKind, Fleet, FleetOptions, Mix, ProgressMode, Report};
use hsm_test_support::{bundled_plugin, plugin_dir_with};
use std::path::Path;
use std::process::Command;

fn plugins() -> tempfile::TempDir {
    plugin_dir_with(&[
        &bundled_plugin("symmetric"),
        &bundled_plugin("dice"),
        &bundled_plugin("tpm_sim"),
    ])
}

fn options(devices: usize, plugin_dir: &Path) -> FleetOptions {
    let mut o = FleetOptions::new(devices, Mix::even(), plugin_dir);
    o.concurrency = 32;
    o.progress = ProgressMode::Quiet;
    o
}

/// Checks that `file` is well-formed XML with an `<svg>` root and returns how many elements
/// named `element` it holds.
fn svg_elements(file: &Path, element: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", file.display()));
    assert_eq!(
        doc.root_element().tag_name().name(),
        "svg",
        "{}",
        file.display()
    );
    doc.descendants()
        .filter(|n| n.tag_name().name() == element)
        .count()
}

fn kind(r: &Report, k: DeviceKind) -> &dps_fleet::report::KindReport {
    r.per_attestation
        .iter()
        .find(|x| x.kind == k)
        .unwrap_or_else(|| panic!("no {k} row in {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mixed_devices_provision_with_none_lost_or_duplicated() {
    let plugin_dir = plugins();
    let mut fleet = Fleet::prepare(options(200, plugin_dir.path()))
        .await
        .expect("prepared");
    fleet
        .enroll()
        .await
        .expect("enrolled through the service API");
    let (report, outcomes) = fleet.run().await.expect("ran");
    assert!(report.is_clean(), "{}", report.table());
    assert_eq!(
        (report.devices, report.succeeded, report.failed),
        (200, 200, 0)
    );
    for k in DeviceKind::ALL {
        let row = kind(&report, k);
        assert_eq!((row.count, row.succeeded), (50, 50), "{k}");
        assert!(
            row.failures_by_reason.is_empty(),
            "{k}: {:?}",
            row.failures_by_reason
        );
        assert!(row.latency_ms.p50 > 0.0 && row.latency_ms.p99 >= row.latency_ms.p50);
        assert!(row.latency_ms.max >= row.latency_ms.p99);
    }
    let c = &report.cross_check;
    assert_eq!(
        (c.expected, c.found, c.lost, c.duplicated, c.mismatched),
        (200, 200, 0, 0, 0)
    );
    // The emulator's own store, read directly, agrees with what the service API said.
    let records = fleet
        .emulator()
        .expect("in process")
        .registration_records()
        .unwrap();
    assert_eq!(records.len(), 200);
    let mut ids: Vec<&str> = records.iter().map(|r| r.registration_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200, "one record per device");

    let out = tempfile::tempdir().unwrap();
    dps_fleet::write_outputs(out.path(), &report, &outcomes).expect("outputs written");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap())
            .expect("report.json is JSON");
    assert_eq!(json["devices"], 200);
    assert_eq!(json["succeeded"], 200);
    assert_eq!(json["cross_check"]["lost"], 0);
    assert_eq!(json["cross_check"]["duplicated"], 0);
    assert_eq!(json["per_attestation"].as_array().map(Vec::len), Some(4));
    let back: Report = serde_json::from_value(json).expect("report.json reads back as a Report");
    assert_eq!(back.per_attestation[3].kind, DeviceKind::Tpm);
    assert_eq!(back.per_attestation[3].attestation, "tpm");
    // Histogram: a bar per non-empty bin and kind; throughput: the line.
    // Four kinds, at least one bar each, plus the background and the legend boxes.
    assert!(svg_elements(&out.path().join("histogram.svg"), "rect") > 4 + 4);
    assert!(svg_elements(&out.path().join("throughput.svg"), "polyline") >= 1);
    let hist = std::fs::read_to_string(out.path().join("histogram.svg")).unwrap();
    for k in DeviceKind::ALL {
        assert!(hist.contains(k.as_str()), "legend names {k}");
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_emulator_refuses_is_counted_by_reason() {
    let plugin_dir = plugins();
    let mut fleet = Fleet::prepare(options(40, plugin_dir.path()))
        .await
        .expect("prepared");
    fleet.enroll().await.expect("enrolled");
    let store = fleet.emulator().expect("in process").enrollments();
    let mut g = store
        .group(DICE_GROUP_ID)
        .unwrap()
        .expect("the DICE group exists");
    g.common.provisioning_status = ProvisioningStatus::Disabled;
    store.put_group(g, None).expect("group disabled");

    let (report, _) = fleet.run().await.expect("ran");
    assert!(!report.is_clean());
    assert_eq!(
        (report.succeeded, report.failed),
        (30, 10),
        "{}",
        report.table()
    );
    let dice = kind(&report, DeviceKind::DiceGroup);
    assert_eq!(dice.succeeded, 0);
    assert_eq!(
        dice.failures_by_reason.get("Disabled"),
        Some(&10),
        "{}",
        report.table()
    );
    assert!(report.failure_examples["Disabled"].contains("disabled"));
    for k in [
        DeviceKind::SymmetricIndividual,
        DeviceKind::SymmetricGroup,
        DeviceKind::Tpm,
    ] {
        assert_eq!(kind(&report, k).succeeded, 10, "{k}");
    }
    // The others are all there; the refused ones are not recorded as assigned (the emulator,
    // as DPS, keeps their `disabled` state).
    let c = &report.cross_check;
    assert_eq!(
        (c.expected, c.found, c.lost, c.recorded_but_failed),
        (30, 30, 0, 0)
    );
    fleet.shutdown().await;
}

#[test]
fn missing_plugins_and_bad_sizes_are_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let e = rt
        .block_on(Fleet::prepare(options(4, empty.path())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("libhsmkit_plugin_"), "{e}");
    let e = rt
        .block_on(Fleet::prepare(options(0, empty.path())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one device"), "{e}");
}

fn fleet_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dps-fleet"))
        .args(args)
        .env_remove("DPS_SERVICE_CONNECTION_STRING")
        .env_remove("HSMKIT_PLUGIN_DIR")
        .output()
        .expect("run dps-fleet")
}

#[test]
fn cli_help_names_the_options() {
    let out = fleet_cli(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--devices",
        "--mix",
        "--concurrency",
        "--endpoint",
        "--service-connection-string",
        "--plugin-dir",
        "--out",
        "--json",
        "--manufacture-cache",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
}

#[test]
fn cli_refuses_a_bad_mix_and_an_endpoint_without_credentials() {
    let out = fleet_cli(&["--plugin-dir", "/nonexistent", "--mix", "rsa=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device kind `rsa`"));
    let out = fleet_cli(&["--plugin-dir", "/x", "--endpoint", "https://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id-scope"));
}

/// The command line against a running emulator given by endpoint and service connection
/// string, with the wrong id scope: every device is refused (404 from DPS), the report counts
/// them by reason, the cache is reused by a second run, and the exit code is 1.
#[test]
fn cli_with_a_wrong_id_scope_reports_every_failure_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let emu = dps_emulator::Emulator::start_in_background(dps_emulator::EmulatorConfig::new(
        dir.path().join("emulator"),
    ))
    .expect("emulator");
    let conn = emu.service_connection_string(&format!("127.0.0.1:{}", emu.addr().port()));
    let plugin_dir = plugins();
    let out = dir.path().join("out");
    let cache = dir.path().join("cache");
    let endpoint = emu.endpoint();
    let args = [
        "--devices",
        "8",
        "--mix",
        "tpm=1,symmetric-group=1",
        "--endpoint",
        endpoint.as_str(),
        "--id-scope",
        "0ne0000ffff",
        "--trust-ca",
        emu.ca_cert_path().to_str().unwrap(),
        "--plugin-dir",
        plugin_dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--manufacture-cache",
        cache.to_str().unwrap(),
        "--progress",
        "lines",
        "--device-timeout-secs",
        "20",
    ];
    for run in 0..2 {
        let o = Command::new(env!("CARGO_BIN_EXE_dps-fleet"))
            .args(args)
            .env("DPS_SERVICE_CONNECTION_STRING", conn.as_str())
            .output()
            .expect("run dps-fleet");
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains("NotFound=4"), "{stdout}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("provisioned 8/8 (8 failed)"),
            "plain progress lines when not a terminal"
        );
        let report: Report =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert_eq!((report.succeeded, report.failed), (0, 8));
        assert_eq!(report.cross_check.expected, 0);
        assert_eq!(
            (report.manufacture.made, report.manufacture.reused),
            if run == 0 { (8, 0) } else { (0, 8) },
            "the second run takes its devices from the cache"
        );
        assert!(
            !conn.is_empty() && !stdout.contains(conn.as_str()),
            "the secret is not printed"
        );
    }
    // The enrollments were made through the service API all the same.
    assert_eq!(emu.enrollments().individuals().unwrap().len(), 4);
    assert!(emu.registration_records().unwrap().is_empty());
}
