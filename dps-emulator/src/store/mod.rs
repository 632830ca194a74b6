//! Persistence in SQLite (WAL, synchronous=FULL: a write is on disk before it is acknowledged,
//! so a kill after an answer loses nothing). Records are stored as their JSON documents.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{io_at, EmulatorError, Result};
use crate::model::{
    AttestationMechanism, EnrollmentCommon, EnrollmentGroup, IndividualEnrollment,
    RegistrationState,
};
use crate::timeutil::{now_rfc3339, random_guid, random_hex};
use crate::validate;

pub mod state_dir;
use dps_proto::wire::{status, substatus};

/// Result of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome<T> {
    /// Written; the stored document (with etag and timestamps).
    Written(T),
    /// The caller's If-Match did not match the stored etag.
    EtagMismatch,
}

/// A stored registration operation: the answer the device gets once `ready_at_ms` has passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The operation id.
    pub operation_id: String,
    /// Its registration id.
    pub registration_id: String,
    /// When the operation turns from assigning to its final status (Unix ms).
    pub ready_at_ms: i64,
    /// The final registration state.
    pub state: RegistrationState,
}

/// Handle on the emulator's database: enrollments, groups, registration records, operations.
/// Cheap to clone; all clones share one connection.
#[derive(Clone, Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    commits: Arc<AtomicU64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enrollment_groups (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registrations (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations (id TEXT PRIMARY KEY, registration_id TEXT NOT NULL,
    ready_at_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS operations_by_ready_at ON operations (ready_at_ms);
CREATE TABLE IF NOT EXISTS registration_hubs (registration_id TEXT NOT NULL, hub TEXT NOT NULL,
    PRIMARY KEY (registration_id, hub));
CREATE TABLE IF NOT EXISTS tpm_challenges (registration_id TEXT NOT NULL,
    authentication_key TEXT NOT NULL, identity_key BLOB NOT NULL, fresh_at_ms INTEGER NOT NULL,
    PRIMARY KEY (registration_id, authentication_key));
-- Every TPM challenge first deletes the expired ones by age: without this index that is a scan
-- of every challenge issued within the lifetime, a fleet of N TPM devices costing N^2.
CREATE INDEX IF NOT EXISTS tpm_challenges_by_fresh_at ON tpm_challenges (fresh_at_ms);
";

/// How long an operation can be polled after it completed: older ones are deleted when a new
/// registration is recorded, so the table does not grow with every register request for
/// ever. The service does not document how long it keeps an operation id; a device polls its
/// operation within seconds (Retry-After), so a day is far beyond any device's need.
pub const OPERATION_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

fn corrupt(e: serde_json::Error) -> EmulatorError {
    EmulatorError::CorruptRecord(e.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(corrupt)
}

fn random_key_b64() -> String {
    let mut k = zeroize::Zeroizing::new([0u8; 64]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, k.as_mut());
    B64.encode(k.as_ref())
}

impl Store {
    /// Opens (creating if needed) the database file at `path`, mode 0600.
    pub fn open(path: &Path) -> Result<Self> {
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Create it 0600 before SQLite does, so it never exists with a looser mode.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io_at(path))?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(EmulatorError::Config(format!(
                "the database refused WAL mode (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::hub::store::SCHEMA)?;
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        conn.commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            false // never turns the commit into a rollback
        }));
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            commits,
        })
    }

    /// Transactions this handle (and its clones) committed since it was opened, each one fsync
    /// under synchronous=FULL: what a registration costs the disk (counted by SQLite's commit
    /// hook, so an autocommit statement counts as one).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_body(&self, table: &str, id: &str) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT body FROM {table} WHERE id = ?1"),
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    }

    fn list_bodies(&self, table: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT body FROM {table} ORDER BY id"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    fn delete(&self, table: &str, id: &str, if_match: Option<&str>) -> Result<PutOutcome<()>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existing: Option<String> = tx
            .query_row(
                &format!("SELECT body FROM {table} WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(body) = existing else {
            return Err(EmulatorError::EnrollmentNotFound(id.to_string()));
        };
        if let Some(want) = if_match.filter(|m| *m != "*") {
            let v: serde_json::Value = serde_json::from_str(&body).map_err(corrupt)?;
            if v.get("etag").and_then(|e| e.as_str()) != Some(want) {
                return Ok(PutOutcome::EtagMismatch);
            }
        }
        tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), params![id])?;
        tx.commit()?;
        Ok(PutOutcome::Written(()))
    }

    /// Checks the etag precondition and returns the stored created time, inside a transaction.
    fn precondition(
        tx: &rusqlite::Transaction<'_>,
        table: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<std::result::Result<Option<String>, ()>> {
        let existing: Option<String> = tx
            .query_row(
                &format!("SELECT body FROM {table} WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let existing: Option<serde_json::Value> = existing
            .map(|b| serde_json::from_str(&b))
            .transpose()
            .map_err(corrupt)?;
        if let Some(want) = if_match.filter(|m| *m != "*") {
            let have = existing
                .as_ref()
                .and_then(|v| v.get("etag"))
                .and_then(|e| e.as_str());
            if have != Some(want) {
                return Ok(Err(()));
            }
        }
        Ok(Ok(existing.and_then(|v| {
            v.get("createdDateTimeUtc")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })))
    }

    /// Creates or replaces an individual enrollment after validating it. Missing symmetric keys
    /// are generated, as the service does.
    pub fn put_individual(
        &self,
        mut e: IndividualEnrollment,
        if_match: Option<&str>,
    ) -> Result<PutOutcome<IndividualEnrollment>> {
        validate::individual(&e)?;
        fill_symmetric_keys(&mut e.attestation);
        let id = e.registration_id.clone();
        self.put_versioned("enrollments", &id, if_match, e, |e| &mut e.common)
    }

    /// Creates or replaces an enrollment group after validating it.
    pub fn put_group(
        &self,
        mut g: EnrollmentGroup,
        if_match: Option<&str>,
    ) -> Result<PutOutcome<EnrollmentGroup>> {
        validate::group(&g)?;
        fill_symmetric_keys(&mut g.attestation);
        let id = g.enrollment_group_id.clone();
        self.put_versioned("enrollment_groups", &id, if_match, g, |g| &mut g.common)
    }

    /// Writes an enrollment or group under `id` in `table` when `if_match` allows it, stamping
    /// its creation time (kept across replacements), update time and a new etag.
    fn put_versioned<T: serde::Serialize>(
        &self,
        table: &'static str,
        id: &str,
        if_match: Option<&str>,
        mut record: T,
        common: fn(&mut T) -> &mut EnrollmentCommon,
    ) -> Result<PutOutcome<T>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let created = match Self::precondition(&tx, table, id, if_match)? {
            Ok(c) => c,
            Err(()) => return Ok(PutOutcome::EtagMismatch),
        };
        let now = now_rfc3339();
        let c = common(&mut record);
        c.created_date_time_utc = Some(created.unwrap_or_else(|| now.clone()));
        c.last_updated_date_time_utc = Some(now);
        c.etag = Some(random_etag());
        tx.execute(
            &format!("INSERT OR REPLACE INTO {table} (id, body) VALUES (?1, ?2)"),
            params![id, to_json(&record)?],
        )?;
        tx.commit()?;
        Ok(PutOutcome::Written(record))
    }

    /// Creates or replaces an individual enrollment unconditionally.
    pub fn create_individual(&self, e: IndividualEnrollment) -> Result<IndividualEnrollment> {
        match self.put_individual(e, None)? {
            PutOutcome::Written(e) => Ok(e),
            PutOutcome::EtagMismatch => Err(EmulatorError::Config("unexpected etag".into())),
        }
    }

    /// Creates or replaces an enrollment group unconditionally.
    pub fn create_group(&self, g: EnrollmentGroup) -> Result<EnrollmentGroup> {
        match self.put_group(g, None)? {
            PutOutcome::Written(g) => Ok(g),
            PutOutcome::EtagMismatch => Err(EmulatorError::Config("unexpected etag".into())),
        }
    }

    /// One individual enrollment.
    pub fn individual(&self, registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        self.get_body("enrollments", registration_id)?
            .map(|b| serde_json::from_str(&b).map_err(corrupt))
            .transpose()
    }

    /// One enrollment group.
    pub fn group(&self, group_id: &str) -> Result<Option<EnrollmentGroup>> {
        self.get_body("enrollment_groups", group_id)?
            .map(|b| serde_json::from_str(&b).map_err(corrupt))
            .transpose()
    }

    /// Every individual enrollment, by id.
    pub fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        self.list_bodies("enrollments")?
            .iter()
            .map(|b| serde_json::from_str(b).map_err(corrupt))
            .collect()
    }

    /// Every enrollment group, by id.
    pub fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        self.list_bodies("enrollment_groups")?
            .iter()
            .map(|b| serde_json::from_str(b).map_err(corrupt))
            .collect()
    }

    /// Deletes an individual enrollment (and, as the service does, its registration record).
    pub fn delete_individual(&self, id: &str, if_match: Option<&str>) -> Result<PutOutcome<()>> {
        let out = self.delete("enrollments", id, if_match)?;
        if out == PutOutcome::Written(()) {
            let conn = self.lock();
            conn.execute("DELETE FROM registrations WHERE id = ?1", params![id])?;
            conn.execute(
                "DELETE FROM registration_hubs WHERE registration_id = ?1",
                params![id],
            )?;
        }
        Ok(out)
    }

    /// Deletes a registration record ("Device Registration State - Delete"), when `if_match`
    /// (optional) names its etag; `None` when there is none.
    pub fn delete_registration(
        &self,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<Option<PutOutcome<()>>> {
        match self.delete("registrations", id, if_match) {
            Ok(PutOutcome::Written(())) => {
                // A deleted registration state starts over: its next assignment is initial.
                self.lock().execute(
                    "DELETE FROM registration_hubs WHERE registration_id = ?1",
                    params![id],
                )?;
                Ok(Some(PutOutcome::Written(())))
            }
            Ok(out) => Ok(Some(out)),
            Err(EmulatorError::EnrollmentNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an enrollment group.
    pub fn delete_group(&self, id: &str, if_match: Option<&str>) -> Result<PutOutcome<()>> {
        self.delete("enrollment_groups", id, if_match)
    }

    /// Stores the outcome of a registration attempt: the registration record (keeping its
    /// creation time) and the operation the device polls, in one transaction. Returns the
    /// operation as stored.
    pub fn record_registration(
        &self,
        state: RegistrationState,
        ready_at_ms: i64,
    ) -> Result<Operation> {
        self.record_registration_with(state, ready_at_ms, true)
    }

    /// [`Store::record_registration`] under the enrollment's `migrateDeviceData`. The
    /// substatus of an assignment follows "Device Registration State" (service API): the
    /// first hub of a device is `initialAssignment` (so is being assigned its current hub
    /// again); another hub it had before is `reprovisionedToInitialAssignment` ("re-provisioned
    /// to a previously assigned IoT hub"); a new hub is `deviceDataMigrated`, or
    /// `deviceDataReset` when `migrate_device_data` is false. Operations completed more than
    /// [`OPERATION_RETENTION_MS`] ago are deleted in the same transaction.
    pub fn record_registration_with(
        &self,
        state: RegistrationState,
        ready_at_ms: i64,
        migrate_device_data: bool,
    ) -> Result<Operation> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let op = record_registration_in(&tx, state, ready_at_ms, migrate_device_data)?;
        tx.commit()?;
        Ok(op)
    }

    /// One operation.
    pub fn operation(&self, operation_id: &str) -> Result<Option<Operation>> {
        let conn = self.lock();
        let row: Option<(String, i64, String)> = conn
            .query_row(
                "SELECT registration_id, ready_at_ms, body FROM operations WHERE id = ?1",
                params![operation_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(registration_id, ready_at_ms, body)| {
            Ok(Operation {
                operation_id: operation_id.to_string(),
                registration_id,
                ready_at_ms,
                state: serde_json::from_str(&body).map_err(corrupt)?,
            })
        })
        .transpose()
    }

    /// One registration record.
    pub fn registration(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        self.get_body("registrations", registration_id)?
            .map(|b| serde_json::from_str(&b).map_err(corrupt))
            .transpose()
    }

    /// Number of stored operations (one per acknowledged register request).
    pub fn operation_count(&self) -> Result<u64> {
        let conn = self.lock();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM operations", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Every registration record, by id.
    pub fn registrations(&self) -> Result<Vec<RegistrationState>> {
        self.list_bodies("registrations")?
            .iter()
            .map(|b| serde_json::from_str(b).map_err(corrupt))
            .collect()
    }
}

/// [`Store::record_registration_with`]'s writes, inside the caller's transaction (so that the
/// hub device of an assignment can be written in the same one: one commit per registration).
pub(crate) fn record_registration_in(
    tx: &Connection,
    mut state: RegistrationState,
    ready_at_ms: i64,
    migrate_device_data: bool,
) -> Result<Operation> {
    let previous: Option<String> = tx
        .query_row(
            "SELECT body FROM registrations WHERE id = ?1",
            params![state.registration_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(prev) = previous {
        let prev: RegistrationState = serde_json::from_str(&prev).map_err(corrupt)?;
        state.created_date_time_utc = prev.created_date_time_utc;
        if state.status == status::ASSIGNED {
            let current = (prev.status == status::ASSIGNED)
                .then_some(prev.assigned_hub)
                .flatten();
            let earlier: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT hub FROM registration_hubs WHERE registration_id = ?1")?;
                let rows = stmt.query_map(params![state.registration_id], |r| r.get(0))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            let new_hub = state.assigned_hub.clone().unwrap_or_default();
            let sub = if earlier.is_empty() || current.as_deref() == Some(new_hub.as_str()) {
                substatus::INITIAL_ASSIGNMENT
            } else if earlier.contains(&new_hub) {
                substatus::REPROVISIONED_TO_INITIAL_ASSIGNMENT
            } else if migrate_device_data {
                substatus::DEVICE_DATA_MIGRATED
            } else {
                substatus::DEVICE_DATA_RESET
            };
            state.substatus = Some(sub.to_string());
        }
    }
    if let (true, Some(hub)) = (state.status == status::ASSIGNED, &state.assigned_hub) {
        tx.execute(
            "INSERT OR IGNORE INTO registration_hubs (registration_id, hub) VALUES (?1, ?2)",
            params![state.registration_id, hub],
        )?;
    }
    tx.execute(
        "DELETE FROM operations WHERE ready_at_ms < ?1",
        params![crate::timeutil::unix_now_ms() - OPERATION_RETENTION_MS],
    )?;
    let body = to_json(&state)?;
    let op_id = format!("5.{}.{}", random_hex(8), random_guid());
    tx.execute(
        "INSERT OR REPLACE INTO registrations (id, body) VALUES (?1, ?2)",
        params![state.registration_id, body],
    )?;
    tx.execute(
        "INSERT INTO operations (id, registration_id, ready_at_ms, body) VALUES (?1, ?2, ?3, ?4)",
        params![op_id, state.registration_id, ready_at_ms, body],
    )?;
    Ok(Operation {
        operation_id: op_id,
        registration_id: state.registration_id.clone(),
        ready_at_ms,
        state,
    })
}

fn random_etag() -> String {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    B64.encode(b)
}

/// A symmetric-key attestation without keys gets random ones, as the service does.
fn fill_symmetric_keys(attestation: &mut AttestationMechanism) {
    if attestation.attestation_kind() == Some(dps_proto::AttestationKind::SymmetricKey)
        && attestation.symmetric_key.is_none()
    {
        attestation.symmetric_key = Some(Default::default());
    }
    if let Some(sk) = attestation.symmetric_key.as_mut() {
        sk.primary_key.get_or_insert_with(random_key_b64);
        sk.secondary_key.get_or_insert_with(random_key_b64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan SQLite picks for `sql`, one line per step.
    fn plan(store: &Store, sql: &str) -> String {
        let conn = store.lock();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    /// Found by the fleet simulator (dps-fleet): the statements run on every register request
    /// or TPM challenge look rows up by an index, never by scanning a table that grows with
    /// the fleet.
    #[test]
    fn per_request_deletes_and_lookups_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        for sql in [
            "DELETE FROM tpm_challenges WHERE fresh_at_ms <= 1",
            "DELETE FROM tpm_challenges WHERE registration_id = 'r' AND authentication_key = 'k'",
            "DELETE FROM operations WHERE ready_at_ms < 1",
            "SELECT body FROM operations WHERE id = 'o'",
            "SELECT hub FROM registration_hubs WHERE registration_id = 'r'",
        ] {
            let p = plan(&store, sql);
            assert!(
                p.contains("USING INDEX")
                    || p.contains("USING COVERING INDEX")
                    || p.contains("USING PRIMARY KEY"),
                "{sql} scans the table: {p}"
            );
        }
        // A database made before the index existed gets it when opened.
        {
            let conn = store.lock();
            conn.execute_batch("DROP INDEX tpm_challenges_by_fresh_at")
                .unwrap();
        }
        drop(store);
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(
            plan(&store, "DELETE FROM tpm_challenges WHERE fresh_at_ms <= 1")
                .contains("tpm_challenges_by_fresh_at")
        );
    }
}
