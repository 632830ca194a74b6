//! Making the devices ("manufacturing"): each device's state folder with its secret (symmetric
//! key imported into the symmetric plugin, DICE UDS, tpm-sim EK and SRK) and what enrollment
//! needs (registration ids, EKs, the DICE root CA certificate, the group key). Not part of
//! provisioning: it happens before the clock starts, and a cache folder keeps it between runs.
//!
//! Layout of a manufacture folder: `fleet.json` (0600, the manifest, holds the symmetric keys),
//! `dice-root/` (the development root CA key every DICE device's chain ends in), and
//! `devices/<kind>/<index>/` (one plugin state folder per device).

use crate::error::FleetError;
use crate::mix::DeviceKind;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const MANIFEST: &str = "fleet.json";
const FORMAT: u32 = 1;

/// The loaded plugins, one per plugin file, shared by every device instance.
#[derive(Debug, Clone, Default)]
pub struct Plugins {
    loaded: BTreeMap<&'static str, Arc<LoadedPlugin>>,
}

impl Plugins {
    /// Loads from `dir` the plugin files `kinds` need (`libhsmkit_plugin_<name>.so`).
    pub fn load(dir: &Path, kinds: &[DeviceKind]) -> Result<Plugins, FleetError> {
        let mut loaded = BTreeMap::new();
        for kind in kinds {
            let name = kind.plugin();
            if loaded.contains_key(name) {
                continue;
            }
            let path = dir.join(format!("libhsmkit_plugin_{name}.so"));
            let plugin =
                LoadedPlugin::load(&path).map_err(|source| FleetError::Load { path, source })?;
            loaded.insert(name, plugin);
        }
        Ok(Plugins { loaded })
    }

    fn get(&self, kind: DeviceKind) -> Result<&Arc<LoadedPlugin>, FleetError> {
        self.loaded.get(kind.plugin()).ok_or_else(|| {
            FleetError::Config(format!("the {} plugin was not loaded", kind.plugin()))
        })
    }

    /// A new instance of `kind`'s plugin on `settings`.
    pub fn instance(
        &self,
        kind: DeviceKind,
        settings: &[(&str, String)],
    ) -> Result<PluginInstance, FleetError> {
        PluginInstance::create(self.get(kind)?, settings).map_err(|source| FleetError::Plugin {
            kind: kind.as_str(),
            source,
        })
    }
}

/// One made device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// Its kind.
    pub kind: DeviceKind,
    /// Its number among the devices of its kind.
    pub index: usize,
    /// The registration id it presents.
    pub registration_id: String,
    /// The TPM endorsement key (TPM2B_PUBLIC, base64), for TPM devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement_key: Option<String>,
}

impl Device {
    /// The device's state folder under a manufacture (or staging) folder `root`.
    pub fn state_dir(&self, root: &Path) -> PathBuf {
        root.join("devices")
            .join(self.kind.as_str())
            .join(format!("{:06}", self.index))
    }
}

/// The manifest: secrets, the root CA, and the devices made so far.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    symmetric_group_key: String,
    symmetric_individual_seed: String,
    #[serde(default)]
    dice_root_ca_pem: Option<String>,
    devices: Vec<Device>,
}

impl Drop for Manifest {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.symmetric_group_key.zeroize();
        self.symmetric_individual_seed.zeroize();
    }
}

/// A manufactured fleet.
pub struct Factory {
    root: PathBuf,
    manifest: Manifest,
    /// Devices made by this call (the rest came from the cache).
    pub made: usize,
    /// Devices found in the cache.
    pub reused: usize,
    /// Wall time of manufacturing (cache reads included).
    pub elapsed: Duration,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("root", &self.root)
            .field("devices", &self.manifest.devices.len())
            .finish_non_exhaustive()
    }
}

fn random_key_b64() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    Zeroizing::new(B64.encode(&key[..]))
}

fn registration_id(kind: DeviceKind, index: usize) -> String {
    format!("fleet-{}-{index:06}", kind.as_str())
}

impl Factory {
    /// Makes (or finds in `root`, a cache from an earlier run) `counts` devices of each kind.
    /// Devices are made on every core; a cache holding more devices than asked keeps them.
    pub fn manufacture(
        root: &Path,
        counts: &[(DeviceKind, usize)],
        plugins: &Plugins,
    ) -> Result<Factory, FleetError> {
        let started = Instant::now();
        hsm_secure_fs::state::prepare_dir(root).map_err(|source| FleetError::State {
            what: format!("preparing the manufacture folder {}", root.display()),
            source,
        })?;
        let manifest_path = root.join(MANIFEST);
        let manifest = match hsm_secure_fs::state::read_secret(&manifest_path) {
            Ok(bytes) => {
                let m: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| FleetError::Manifest {
                        path: manifest_path.clone(),
                        reason: e.to_string(),
                    })?;
                if m.format != FORMAT {
                    return Err(FleetError::Manifest {
                        path: manifest_path,
                        reason: format!("format {} (this build reads {FORMAT})", m.format),
                    });
                }
                m
            }
            Err(e) if e.is_not_found() => Manifest {
                format: FORMAT,
                symmetric_group_key: random_key_b64().to_string(),
                symmetric_individual_seed: random_key_b64().to_string(),
                dice_root_ca_pem: None,
                devices: Vec::new(),
            },
            Err(source) => {
                return Err(FleetError::State {
                    what: format!("reading {}", manifest_path.display()),
                    source,
                })
            }
        };
        let mut factory = Factory {
            root: root.to_path_buf(),
            manifest,
            made: 0,
            reused: 0,
            elapsed: Duration::ZERO,
        };
        if counts
            .iter()
            .any(|(k, n)| *k == DeviceKind::DiceGroup && *n > 0)
            && factory.manifest.dice_root_ca_pem.is_none()
        {
            factory.manifest.dice_root_ca_pem = Some(factory.make_dice_root(plugins)?);
        }
        let mut todo = Vec::new();
        for (kind, n) in counts {
            for index in 0..*n {
                let have = factory
                    .manifest
                    .devices
                    .iter()
                    .any(|d| d.kind == *kind && d.index == index);
                if have {
                    factory.reused += 1;
                } else {
                    todo.push((*kind, index));
                }
            }
        }
        let made = factory.make_all(&todo, plugins)?;
        factory.made = made.len();
        factory.manifest.devices.extend(made);
        factory.save()?;
        factory.elapsed = started.elapsed();
        Ok(factory)
    }

    fn save(&self) -> Result<(), FleetError> {
        let path = self.root.join(MANIFEST);
        let bytes = Zeroizing::new(serde_json::to_vec(&self.manifest).map_err(|e| {
            FleetError::Manifest {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
        hsm_secure_fs::state::write_atomic(&path, &bytes, 0o600).map_err(|source| {
            FleetError::State {
                what: format!("writing {}", path.display()),
                source,
            }
        })
    }

    /// The development root CA key file every DICE device signs its chain with.
    pub fn dice_root_key(&self) -> PathBuf {
        self.root
            .join("dice-root")
            .join("dice")
            .join("root-ca-key.pem")
    }

    /// The DICE root CA certificate (PEM), the X.509 group's signing certificate.
    pub fn dice_root_ca_pem(&self) -> Option<&str> {
        self.manifest.dice_root_ca_pem.as_deref()
    }

    /// The symmetric enrollment group's key (base64).
    pub fn symmetric_group_key(&self) -> &str {
        &self.manifest.symmetric_group_key
    }

    /// The primary key (base64) of the individual enrollment of symmetric device `reg`,
    /// derived from the fleet's seed as a group key would be, so that it need not be stored
    /// per device.
    pub fn individual_key(&self, registration_id: &str) -> Result<Zeroizing<String>, FleetError> {
        dps_proto::group_key::derive_device_key_b64(
            &self.manifest.symmetric_individual_seed,
            registration_id,
        )
        .map_err(|e| FleetError::Manifest {
            path: self.root.join(MANIFEST),
            reason: format!("the symmetric seed: {e}"),
        })
    }

    /// The devices `counts` asks for (the cache may hold more), in kind then index order.
    pub fn devices(&self, counts: &[(DeviceKind, usize)]) -> Vec<Device> {
        let mut out: Vec<Device> = self
            .manifest
            .devices
            .iter()
            .filter(|d| counts.iter().any(|(k, n)| *k == d.kind && d.index < *n))
            .cloned()
            .collect();
        out.sort_by_key(|d| (d.kind, d.index));
        out
    }

    /// The manufacture folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Plugin settings for `device`'s instance on state folder `state`.
    pub fn settings(&self, device: &Device, state: &Path) -> Vec<(&'static str, String)> {
        let mut s = vec![("state_dir", state.display().to_string())];
        if device.kind == DeviceKind::DiceGroup {
            s.push(("registration_id", device.registration_id.clone()));
            s.push((
                "root_ca_key_path",
                self.dice_root_key().display().to_string(),
            ));
        }
        s
    }

    fn make_dice_root(&self, plugins: &Plugins) -> Result<String, FleetError> {
        let state = self.root.join("dice-root");
        prepare(&state)?;
        let root = plugins.instance(
            DeviceKind::DiceGroup,
            &[
                ("state_dir", state.display().to_string()),
                ("registration_id", "fleet-dice-root".to_string()),
            ],
        )?;
        let chain = root
            .x509()
            .and_then(|x| x.certificate_chain_pem())
            .map_err(|source| FleetError::Plugin {
                kind: "dice-group",
                source,
            })?;
        chain
            .split_inclusive("-----END CERTIFICATE-----")
            .map(str::trim)
            .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----"))
            .last()
            .map(|c| format!("{c}\n"))
            .ok_or_else(|| {
                FleetError::Config("the dice plugin returned no certificate chain".into())
            })
    }

    fn make_all(
        &self,
        todo: &[(DeviceKind, usize)],
        plugins: &Plugins,
    ) -> Result<Vec<Device>, FleetError> {
        if todo.is_empty() {
            return Ok(Vec::new());
        }
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(todo.len());
        // Each worker takes the next device in turn: a TPM device (two RSA key generations)
        // costs a hundred times a symmetric one, so fixed halves would leave one core idle.
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut made = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((k, index)) = todo.get(i) else {
                                return Ok(made);
                            };
                            made.push(self.make_one(*k, *index, plugins)?);
                        }
                    })
                })
                .collect();
            let mut out: Vec<Device> = Vec::with_capacity(todo.len());
            for h in handles {
                let part: Result<Vec<Device>, FleetError> = h
                    .join()
                    .map_err(|_| FleetError::Config("a manufacturing thread panicked".into()))?;
                out.extend(part?);
            }
            Ok(out)
        })
    }

    fn make_one(
        &self,
        kind: DeviceKind,
        index: usize,
        plugins: &Plugins,
    ) -> Result<Device, FleetError> {
        let mut device = Device {
            kind,
            index,
            registration_id: registration_id(kind, index),
            endorsement_key: None,
        };
        let state = device.state_dir(&self.root);
        // A folder left by an interrupted run is made again from scratch.
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .map_err(|e| FleetError::io(format!("removing {}", state.display()), e))?;
        }
        prepare(&state)?;
        let instance = plugins.instance(kind, &self.settings(&device, &state))?;
        let plugin_err = |source| FleetError::Plugin {
            kind: kind.as_str(),
            source,
        };
        match kind {
            DeviceKind::SymmetricIndividual | DeviceKind::SymmetricGroup => {
                let key = if kind == DeviceKind::SymmetricGroup {
                    dps_proto::group_key::derive_device_key_b64(
                        &self.manifest.symmetric_group_key,
                        &device.registration_id,
                    )
                    .map_err(|e| FleetError::Config(format!("the group key: {e}")))?
                } else {
                    self.individual_key(&device.registration_id)?
                };
                let raw = Zeroizing::new(
                    B64.decode(key.as_bytes())
                        .map_err(|_| FleetError::Config("a derived key is not base64".into()))?,
                );
                instance
                    .symmetric_key()
                    .and_then(|s| s.import_key(Some(&device.registration_id), &raw))
                    .map_err(plugin_err)?;
            }
            DeviceKind::DiceGroup => {
                // The UDS is created on first use; reading the chain makes and checks it.
                instance
                    .x509()
                    .and_then(|x| x.certificate_chain_pem())
                    .map_err(plugin_err)?;
            }
            DeviceKind::Tpm => {
                let ek = instance
                    .tpm()
                    .and_then(|t| t.endorsement_key())
                    .map_err(plugin_err)?;
                instance
                    .tpm()
                    .and_then(|t| t.storage_root_key())
                    .map_err(plugin_err)?;
                device.registration_id = provisioning_core::dps::tpm_registration_id(&ek);
                device.endorsement_key = Some(B64.encode(&*ek));
            }
        }
        Ok(device)
    }

    /// Copies the state folders of `devices` into `work` (fresh per run), so that a run never
    /// changes the cache; returns nothing but the folders, found again with
    /// [`Device::state_dir`] on `work`.
    pub fn stage(&self, devices: &[Device], work: &Path) -> Result<(), FleetError> {
        for d in devices {
            let from = d.state_dir(&self.root);
            let to = d.state_dir(work);
            copy_tree(&from, &to)?;
        }
        Ok(())
    }
}

fn prepare(dir: &Path) -> Result<(), FleetError> {
    hsm_secure_fs::state::prepare_dir(dir)
        .map(|_| ())
        .map_err(|source| FleetError::State {
            what: format!("preparing {}", dir.display()),
            source,
        })
}

/// Copies folder `from` into `to` (made 0700 with its parents), file modes kept.
fn copy_tree(from: &Path, to: &Path) -> Result<(), FleetError> {
    prepare(to)?;
    let entries = std::fs::read_dir(from)
        .map_err(|e| FleetError::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FleetError::io(format!("reading {}", from.display()), e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ty = entry
            .file_type()
            .map_err(|e| FleetError::io(format!("reading {}", src.display()), e))?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ty.is_file() {
            std::fs::copy(&src, &dst)
                .map_err(|e| FleetError::io(format!("copying {}", src.display()), e))?;
        }
    }
    Ok(())
}
