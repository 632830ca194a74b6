//! `dps-fleet`: a fleet simulator for DPS load. It provisions N simulated devices of a chosen
//! mix (symmetric key individually and through a group, X.509 DICE devices in a group on one
//! root CA, TPM devices on tpm-sim) through provisioning-core's real client and real plugin
//! instances (many in one process, each device with its own state folder), against the
//! in-process emulator or a DPS given by endpoint and service connection string; then it reads
//! the service's registration records back to check that none was lost or duplicated.
//!
//! The run has phases, each public so tests can act between them: [`Fleet::prepare`]
//! (plugins, manufacturing, the emulator), [`Fleet::enroll`] (service API), [`Fleet::run`]
//! (provisioning, cross-check, [`report::Report`]); [`write_outputs`] writes `report.json`,
//! `histogram.svg` and `throughput.svg`.

pub mod charts;
pub mod error;
pub mod manufacture;
pub mod mix;
pub mod progress;
pub mod provision;
pub mod report;
pub mod service;

pub use error::FleetError;
pub use mix::{DeviceKind, Mix};
pub use progress::ProgressMode;
pub use report::Report;

use manufacture::{Device, Factory, Plugins};
use provision::{DeviceOutcome, DeviceTarget};
use service::{ConnectionString, ServiceClient};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the fleet provisions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TargetSpec {
    /// An emulator started in this process on a free loopback port, in a temp folder.
    InProcess {
        /// Answer registrations with `202 assigning` and Retry-After (one poll per device)
        /// instead of the documented immediate `200` with the final state.
        polled: bool,
    },
    /// A running DPS (or emulator).
    Remote {
        /// The device API endpoint (`https://host:port`, or a host name).
        endpoint: String,
        /// The id scope.
        id_scope: String,
        /// The service connection string (enrollments, cross-check). Secret.
        service_connection_string: String,
        /// A CA certificate (PEM) to trust instead of the public roots.
        ca_pem: Option<Vec<u8>>,
    },
}

/// Everything a run is given.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Fleet size.
    pub devices: usize,
    /// The mix of device kinds.
    pub mix: Mix,
    /// Devices provisioning at once, at most.
    pub concurrency: usize,
    /// Where to provision.
    pub target: TargetSpec,
    /// The folder with `libhsmkit_plugin_{symmetric,dice,tpm_sim}.so`.
    pub plugin_dir: PathBuf,
    /// Keep manufactured devices here between runs (made on first use); `None`: a temp folder.
    pub manufacture_cache: Option<PathBuf>,
    /// Per-device deadline (retries and polls included).
    pub device_timeout: Duration,
    /// Progress display.
    pub progress: ProgressMode,
}

impl FleetOptions {
    /// Defaults: the in-process emulator (immediate answers), concurrency 64, 120 s per device.
    pub fn new(devices: usize, mix: Mix, plugin_dir: impl Into<PathBuf>) -> FleetOptions {
        FleetOptions {
            devices,
            mix,
            concurrency: 64,
            target: TargetSpec::InProcess { polled: false },
            plugin_dir: plugin_dir.into(),
            manufacture_cache: None,
            device_timeout: Duration::from_secs(120),
            progress: ProgressMode::Auto,
        }
    }
}

/// A prepared fleet: devices made and staged, the target reachable.
pub struct Fleet {
    opts: FleetOptions,
    plugins: Plugins,
    factory: Factory,
    devices: Vec<Device>,
    work: PathBuf,
    service: ServiceClient,
    target: DeviceTarget,
    target_name: String,
    manufacture_seconds: f64,
    enrollment: Duration,
    emulator: Option<dps_emulator::RunningEmulator>,
    // Dropped last: the folders the above live in.
    _temp: Vec<tempfile::TempDir>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("devices", &self.devices.len())
            .field("target", &self.target_name)
            .finish_non_exhaustive()
    }
}

fn temp_dir(what: &str) -> Result<tempfile::TempDir, FleetError> {
    tempfile::Builder::new()
        .prefix("dps-fleet-")
        .tempdir()
        .map_err(|e| FleetError::io(format!("making a temp folder for {what}"), e))
}

impl Fleet {
    /// Loads the plugins, manufactures (or reads from the cache) the devices, stages their
    /// state folders for this run and starts the in-process emulator when asked.
    pub async fn prepare(opts: FleetOptions) -> Result<Fleet, FleetError> {
        if opts.devices == 0 {
            return Err(FleetError::Config(
                "the fleet needs at least one device".into(),
            ));
        }
        if opts.concurrency == 0 {
            return Err(FleetError::Config("concurrency must be at least 1".into()));
        }
        let counts = opts.mix.counts(opts.devices);
        let kinds: Vec<DeviceKind> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, _)| *k)
            .collect();
        let plugins = Plugins::load(&opts.plugin_dir, &kinds)?;
        let mut temp = Vec::new();
        let started = Instant::now();
        let (factory_root, stage_into) = match &opts.manufacture_cache {
            Some(cache) => {
                let work = temp_dir("the device state folders")?;
                let w = work.path().to_path_buf();
                temp.push(work);
                (cache.clone(), Some(w))
            }
            None => {
                let made = temp_dir("manufacturing")?;
                let p = made.path().join("fleet");
                temp.push(made);
                (p, None)
            }
        };
        let (factory, devices, work) = {
            let plugins = plugins.clone();
            let counts = counts.clone();
            tokio::task::spawn_blocking(move || -> Result<_, FleetError> {
                let factory = Factory::manufacture(&factory_root, &counts, &plugins)?;
                let devices = factory.devices(&counts);
                let work = match stage_into {
                    Some(w) => {
                        factory.stage(&devices, &w)?;
                        w
                    }
                    None => factory.root().to_path_buf(),
                };
                Ok((factory, devices, work))
            })
            .await
            .map_err(|e| FleetError::Config(format!("manufacturing stopped: {e}")))??
        };
        let manufacture_seconds = started.elapsed().as_secs_f64();

        let (emulator, service, target, target_name) = match &opts.target {
            TargetSpec::InProcess { polled } => {
                let dir = temp_dir("the emulator")?;
                let mut cfg = dps_emulator::EmulatorConfig::new(dir.path().join("emulator"));
                temp.push(dir);
                cfg.hubs = vec![
                    "fleet-hub-1.azure-devices.net".into(),
                    "fleet-hub-2.azure-devices.net".into(),
                ];
                cfg.complete_registrations_immediately = !polled;
                // Every simulated device connects from 127.0.0.1: its limits must allow the
                // whole fleet's concurrency (plus connections closing behind it).
                cfg.max_connections = opts.concurrency * 4 + 64;
                cfg.max_connections_per_peer = Some(cfg.max_connections);
                let emu = dps_emulator::Emulator::start(cfg)
                    .await
                    .map_err(|e| FleetError::Emulator(e.to_string()))?;
                let host = format!("127.0.0.1:{}", emu.addr().port());
                let conn = ConnectionString::parse(&emu.service_connection_string(&host))?;
                let ca = emu.ca_cert_pem().as_bytes().to_vec();
                let service = ServiceClient::new(conn, Some(&ca))?;
                let target = DeviceTarget {
                    endpoint: emu.endpoint(),
                    id_scope: emu.id_scope().to_string(),
                    ca_pem: Some(ca),
                    overall_timeout: opts.device_timeout,
                };
                let name = format!(
                    "in-process emulator ({})",
                    if *polled {
                        "202 + poll"
                    } else {
                        "immediate 200"
                    }
                );
                (Some(emu), service, target, name)
            }
            TargetSpec::Remote {
                endpoint,
                id_scope,
                service_connection_string,
                ca_pem,
            } => {
                let conn = ConnectionString::parse(service_connection_string)?;
                let service = ServiceClient::new(conn, ca_pem.as_deref())?;
                let target = DeviceTarget {
                    endpoint: endpoint.clone(),
                    id_scope: id_scope.clone(),
                    ca_pem: ca_pem.clone(),
                    overall_timeout: opts.device_timeout,
                };
                (None, service, target, endpoint.clone())
            }
        };
        Ok(Fleet {
            opts,
            plugins,
            factory,
            devices,
            work,
            service,
            target,
            target_name,
            manufacture_seconds,
            enrollment: Duration::ZERO,
            emulator,
            _temp: temp,
        })
    }

    /// The in-process emulator, when the fleet started one.
    pub fn emulator(&self) -> Option<&dps_emulator::RunningEmulator> {
        self.emulator.as_ref()
    }

    /// The devices, in kind then index order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The service API client the fleet enrolls and cross-checks with.
    pub fn service(&self) -> &ServiceClient {
        &self.service
    }

    /// Creates the enrollments through the service API.
    pub async fn enroll(&mut self) -> Result<Duration, FleetError> {
        self.enrollment = provision::enroll(
            &self.factory,
            &self.devices,
            &self.service,
            self.opts.concurrency,
        )
        .await?;
        Ok(self.enrollment)
    }

    /// Provisions every device, cross-checks the service's records and builds the report;
    /// also returns each device's outcome (for the charts).
    pub async fn run(&self) -> Result<(Report, Vec<DeviceOutcome>), FleetError> {
        let progress = Arc::new(progress::Progress::new(
            self.devices.len(),
            self.opts.progress,
        ));
        let p = progress.clone();
        let on_done: Arc<dyn Fn(&DeviceOutcome) + Send + Sync> =
            Arc::new(move |o: &DeviceOutcome| p.device_done(o.result.is_ok()));
        let (outcomes, wall) = provision::provision(
            &self.factory,
            &self.devices,
            &self.work,
            &self.plugins,
            &self.target,
            self.opts.concurrency,
            on_done,
        )
        .await;
        progress.finish();
        let check = provision::cross_check(
            &self.service,
            &self.devices,
            &outcomes,
            self.opts.concurrency,
        )
        .await?;
        let facts = report::RunFacts {
            concurrency: self.opts.concurrency,
            target: self.target_name.clone(),
            manufacture: report::Manufacture {
                made: self.factory.made,
                reused: self.factory.reused,
                seconds: self.manufacture_seconds,
            },
            enrollment: self.enrollment,
            wall,
        };
        Ok((report::Report::build(facts, &outcomes, &check), outcomes))
    }

    /// Stops the in-process emulator, if any.
    pub async fn shutdown(mut self) {
        if let Some(emu) = self.emulator.take() {
            emu.shutdown().await;
        }
    }
}

/// Runs every phase: prepare, enroll, provision, cross-check.
pub async fn run(opts: FleetOptions) -> Result<(Report, Vec<DeviceOutcome>), FleetError> {
    let mut fleet = Fleet::prepare(opts).await?;
    fleet.enroll().await?;
    let out = fleet.run().await?;
    fleet.shutdown().await;
    Ok(out)
}

/// The files [`write_outputs`] writes into its folder.
pub const OUTPUT_FILES: [&str; 3] = ["report.json", "histogram.svg", "throughput.svg"];

/// Writes `report.json`, `histogram.svg` (latency) and `throughput.svg` into `dir` (created).
pub fn write_outputs(
    dir: &Path,
    report: &Report,
    outcomes: &[DeviceOutcome],
) -> Result<(), FleetError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| FleetError::io(format!("making {}", dir.display()), e))?;
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| FleetError::Config(format!("encoding the report: {e}")))?;
    let path = dir.join(OUTPUT_FILES[0]);
    std::fs::write(&path, json)
        .map_err(|e| FleetError::io(format!("writing {}", path.display()), e))?;
    charts::latency_histogram(&dir.join(OUTPUT_FILES[1]), outcomes)?;
    charts::throughput(&dir.join(OUTPUT_FILES[2]), &report.throughput)
}
