//! The emulated hubs' records in the emulator's database (the same SQLite file, WAL,
//! synchronous=FULL: a record is on disk before the device gets its PUBACK): device identities
//! with their twins, stored telemetry, and pending cloud-to-device messages. So they survive a
//! restart, and the CLI reads and writes them while the emulator runs.

use rusqlite::{params, OptionalExtension};
use serde_json::{Map, Value};

use super::twin;
use super::{
    C2dMessage, DeviceAuthentication, DeviceStatus, HubDevice, HubError, Telemetry, MAX_C2D_QUEUE,
    MAX_STORED_TELEMETRY,
};
use crate::error::EmulatorError;
use crate::store::Store;
use crate::timeutil::{now_rfc3339, random_guid};

/// The hub tables (created with the DPS ones when the database is opened).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hub_devices (hub TEXT NOT NULL, device_id TEXT NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (hub, device_id));
CREATE TABLE IF NOT EXISTS hub_telemetry (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hub TEXT NOT NULL, device_id TEXT NOT NULL, enqueued TEXT NOT NULL,
    properties TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS hub_telemetry_device ON hub_telemetry (hub, device_id, seq);
CREATE TABLE IF NOT EXISTS hub_c2d (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hub TEXT NOT NULL, device_id TEXT NOT NULL, enqueued TEXT NOT NULL,
    properties TEXT NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS hub_c2d_device ON hub_c2d (hub, device_id, seq);
";

fn corrupt(e: serde_json::Error) -> HubError {
    HubError::Store(EmulatorError::CorruptRecord(e.to_string()))
}

fn db(e: rusqlite::Error) -> HubError {
    HubError::Store(EmulatorError::Database(e))
}

/// A transaction that takes the write lock at once: a deferred one that reads first and then
/// writes fails with SQLITE_BUSY at once (no busy wait) when another connection (the CLI, or
/// the emulator) wrote in between.
fn write_transaction(
    conn: &mut rusqlite::Connection,
) -> Result<rusqlite::Transaction<'_>, HubError> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)
}

fn props_json(props: &[(String, String)]) -> Result<String, HubError> {
    serde_json::to_string(props).map_err(corrupt)
}

fn props_from(text: &str) -> Result<Vec<(String, String)>, HubError> {
    serde_json::from_str(text).map_err(corrupt)
}

fn read_device(
    conn: &rusqlite::Connection,
    hub: &str,
    device_id: &str,
) -> Result<Option<HubDevice>, HubError> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM hub_devices WHERE hub = ?1 AND device_id = ?2",
            params![hub, device_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    body.map(|b| serde_json::from_str(&b).map_err(corrupt))
        .transpose()
}

/// The `(seq, enqueued, properties, body)` rows of a stored-message query (telemetry or
/// cloud-to-device), properties decoded.
type MessageRow = (i64, String, Vec<(String, String)>, Vec<u8>);

fn message_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<MessageRow>, HubError> {
    let mut stmt = conn.prepare(sql).map_err(db)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    rows.into_iter()
        .map(|(seq, enqueued, props, body)| Ok((seq, enqueued, props_from(&props)?, body)))
        .collect()
}

fn write_device(conn: &rusqlite::Connection, d: &HubDevice) -> Result<(), HubError> {
    conn.execute(
        "INSERT OR REPLACE INTO hub_devices (hub, device_id, body) VALUES (?1, ?2, ?3)",
        params![
            d.hub,
            d.device_id,
            serde_json::to_string(d).map_err(corrupt)?
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// The hub device a registration assigns: what [`Store::provision_hub_device`] writes.
#[derive(Debug)]
pub struct HubAssignment<'a> {
    /// The assigned hub.
    pub hub: &'a str,
    /// The device id in that hub.
    pub device_id: &'a str,
    /// The DPS registration id.
    pub registration_id: &'a str,
    /// The credential the device connects to the hub with.
    pub authentication: DeviceAuthentication,
    /// The twin's desired properties for a new device (`$version` 1).
    pub initial_desired: Map<String, Value>,
    /// DPS issued the device an operational certificate in this registration.
    pub issued_certificate: bool,
}

/// Creates or updates the hub device of `a` inside the caller's transaction.
fn provision_hub_device_in(
    conn: &rusqlite::Connection,
    a: &HubAssignment<'_>,
) -> Result<HubDevice, HubError> {
    let now = now_rfc3339();
    let device = match read_device(conn, a.hub, a.device_id)? {
        Some(mut d) => {
            d.authentication = a.authentication.clone();
            d.registration_id = a.registration_id.to_string();
            d.last_updated = now;
            d.issued_certificate |= a.issued_certificate;
            d
        }
        None => HubDevice {
            hub: a.hub.to_string(),
            device_id: a.device_id.to_string(),
            registration_id: a.registration_id.to_string(),
            status: DeviceStatus::Enabled,
            authentication: a.authentication.clone(),
            created: now.clone(),
            last_updated: now,
            desired: twin::new_section(a.initial_desired.clone()),
            reported: twin::new_section(Map::new()),
            last_desired_patch: None,
            issued_certificate: a.issued_certificate,
        },
    };
    write_device(conn, &device)?;
    Ok(device)
}

impl Store {
    /// Creates the device `device_id` in `hub` with `authentication` and a twin whose desired
    /// properties are `initial_desired` (at `$version` 1), as a DPS assignment does; for a
    /// device that exists already (a re-registration), only the credential and the
    /// registration id change: its twin, status and messages stay. `issued_certificate`: DPS
    /// issued it an operational certificate in this registration (kept once set).
    pub fn provision_hub_device(
        &self,
        hub: &str,
        device_id: &str,
        registration_id: &str,
        authentication: DeviceAuthentication,
        initial_desired: Map<String, Value>,
        issued_certificate: bool,
    ) -> Result<HubDevice, HubError> {
        let mut conn = self.lock();
        let tx = write_transaction(&mut conn)?;
        let device = provision_hub_device_in(
            &tx,
            &HubAssignment {
                hub,
                device_id,
                registration_id,
                authentication,
                initial_desired,
                issued_certificate,
            },
        )?;
        tx.commit().map_err(db)?;
        Ok(device)
    }

    /// Records a registration's outcome and, when it assigned the device, creates or updates
    /// its hub device, in ONE transaction (one commit, one fsync under synchronous=FULL,
    /// instead of one for each): the hub device and the registration record become durable
    /// together, before the device is answered, so a device told "assigned" can connect to
    /// its hub at once and a crash never leaves one without the other. The registration side
    /// is [`Store::record_registration_with`]'s (substatus from the earlier hubs, operation
    /// retention); the hub side is [`Store::provision_hub_device`]'s.
    pub fn record_assignment(
        &self,
        state: crate::model::RegistrationState,
        ready_at_ms: i64,
        migrate_device_data: bool,
        hub_device: Option<HubAssignment<'_>>,
    ) -> Result<crate::store::Operation, HubError> {
        let mut conn = self.lock();
        let tx = write_transaction(&mut conn)?;
        if let Some(a) = &hub_device {
            provision_hub_device_in(&tx, a)?;
        }
        let op =
            crate::store::record_registration_in(&tx, state, ready_at_ms, migrate_device_data)?;
        tx.commit().map_err(db)?;
        Ok(op)
    }

    /// One hub device.
    pub fn hub_device(&self, hub: &str, device_id: &str) -> Result<Option<HubDevice>, HubError> {
        read_device(&self.lock(), hub, device_id)
    }

    /// Every hub device, by hub and id.
    pub fn hub_devices(&self) -> Result<Vec<HubDevice>, HubError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT body FROM hub_devices ORDER BY hub, device_id")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.iter()
            .map(|b| serde_json::from_str(b).map_err(corrupt))
            .collect()
    }

    /// Changes a device's record inside one transaction; `None` when it does not exist.
    fn update_hub_device<T>(
        &self,
        hub: &str,
        device_id: &str,
        f: impl FnOnce(&mut HubDevice) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let mut conn = self.lock();
        let tx = write_transaction(&mut conn)?;
        let mut d = read_device(&tx, hub, device_id)?
            .ok_or_else(|| HubError::DeviceNotFound(device_id.to_string()))?;
        let out = f(&mut d)?;
        d.last_updated = now_rfc3339();
        write_device(&tx, &d)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    /// Enables or disables a hub device (the identity registry's `status`). A disabled device
    /// is refused at CONNECT.
    pub fn set_hub_device_status(
        &self,
        hub: &str,
        device_id: &str,
        status: DeviceStatus,
    ) -> Result<(), HubError> {
        self.update_hub_device(hub, device_id, |d| {
            d.status = status;
            Ok(())
        })
    }

    /// Applies a reported-properties patch from the device; returns the new reported
    /// `$version`.
    pub fn patch_reported(
        &self,
        hub: &str,
        device_id: &str,
        patch: &Map<String, Value>,
    ) -> Result<u64, HubError> {
        self.update_hub_device(hub, device_id, |d| {
            twin::apply(&mut d.reported, patch).map_err(HubError::Twin)
        })
    }

    /// Applies a desired-properties patch from the solution (the CLI); returns the new desired
    /// `$version`. Connected devices subscribed to desired changes get the patch.
    pub fn patch_desired(
        &self,
        hub: &str,
        device_id: &str,
        patch: &Map<String, Value>,
    ) -> Result<u64, HubError> {
        self.update_hub_device(hub, device_id, |d| {
            let v = twin::apply(&mut d.desired, patch).map_err(HubError::Twin)?;
            let mut sent = patch.clone();
            sent.insert("$version".into(), Value::from(v));
            d.last_desired_patch = Some(sent);
            Ok(v)
        })
    }

    /// Stores one telemetry message (only the newest [`MAX_STORED_TELEMETRY`] of a device are
    /// kept); returns its sequence number.
    pub fn store_telemetry(
        &self,
        hub: &str,
        device_id: &str,
        properties: &[(String, String)],
        body: &[u8],
    ) -> Result<i64, HubError> {
        let mut conn = self.lock();
        let tx = write_transaction(&mut conn)?;
        tx.execute(
            "INSERT INTO hub_telemetry (hub, device_id, enqueued, properties, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hub, device_id, now_rfc3339(), props_json(properties)?, body],
        )
        .map_err(db)?;
        let seq = tx.last_insert_rowid();
        // Sequence numbers are shared by every device: the device's own oldest kept message
        // is the bound, not a distance in sequence numbers.
        let oldest_kept: Option<i64> = tx
            .query_row(
                "SELECT seq FROM hub_telemetry WHERE hub = ?1 AND device_id = ?2 \
                 ORDER BY seq DESC LIMIT 1 OFFSET ?3",
                params![hub, device_id, MAX_STORED_TELEMETRY as i64 - 1],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(oldest) = oldest_kept {
            tx.execute(
                "DELETE FROM hub_telemetry WHERE hub = ?1 AND device_id = ?2 AND seq < ?3",
                params![hub, device_id, oldest],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(seq)
    }

    /// The stored telemetry of a device, oldest first.
    pub fn telemetry(&self, hub: &str, device_id: &str) -> Result<Vec<Telemetry>, HubError> {
        let rows = message_rows(
            &self.lock(),
            "SELECT seq, enqueued, properties, body FROM hub_telemetry \
             WHERE hub = ?1 AND device_id = ?2 ORDER BY seq",
            params![hub, device_id],
        )?;
        Ok(rows
            .into_iter()
            .map(|(seq, enqueued, properties, body)| Telemetry {
                seq,
                hub: hub.to_string(),
                device_id: device_id.to_string(),
                enqueued,
                properties,
                body,
            })
            .collect())
    }

    /// Queues a cloud-to-device message for a device (at most [`MAX_C2D_QUEUE`] pending, as the
    /// service's queue depth); the system properties `$.mid` (a new message id) and `$.to` come
    /// first, then `properties`.
    pub fn enqueue_c2d(
        &self,
        hub: &str,
        device_id: &str,
        properties: &[(String, String)],
        body: &[u8],
    ) -> Result<C2dMessage, HubError> {
        let mut conn = self.lock();
        let tx = write_transaction(&mut conn)?;
        if read_device(&tx, hub, device_id)?.is_none() {
            return Err(HubError::DeviceNotFound(device_id.to_string()));
        }
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM hub_c2d WHERE hub = ?1 AND device_id = ?2",
                params![hub, device_id],
                |r| r.get(0),
            )
            .map_err(db)?;
        if pending >= MAX_C2D_QUEUE as i64 {
            return Err(HubError::QueueFull(device_id.to_string()));
        }
        let mut all = vec![
            ("$.mid".to_string(), random_guid()),
            (
                "$.to".to_string(),
                format!("/devices/{device_id}/messages/devicebound"),
            ),
        ];
        all.extend(properties.iter().cloned());
        let enqueued = now_rfc3339();
        tx.execute(
            "INSERT INTO hub_c2d (hub, device_id, enqueued, properties, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hub, device_id, enqueued, props_json(&all)?, body],
        )
        .map_err(db)?;
        let seq = tx.last_insert_rowid();
        tx.commit().map_err(db)?;
        Ok(C2dMessage {
            seq,
            hub: hub.to_string(),
            device_id: device_id.to_string(),
            enqueued,
            properties: all,
            body: body.to_vec(),
        })
    }

    /// The pending cloud-to-device messages of a device, oldest first, at most `limit`.
    pub fn pending_c2d(
        &self,
        hub: &str,
        device_id: &str,
        limit: usize,
    ) -> Result<Vec<C2dMessage>, HubError> {
        let rows = message_rows(
            &self.lock(),
            "SELECT seq, enqueued, properties, body FROM hub_c2d \
             WHERE hub = ?1 AND device_id = ?2 ORDER BY seq LIMIT ?3",
            params![hub, device_id, limit as i64],
        )?;
        Ok(rows
            .into_iter()
            .map(|(seq, enqueued, properties, body)| C2dMessage {
                seq,
                hub: hub.to_string(),
                device_id: device_id.to_string(),
                enqueued,
                properties,
                body,
            })
            .collect())
    }

    /// Removes a delivered cloud-to-device message (the device acknowledged it).
    pub fn complete_c2d(&self, seq: i64) -> Result<(), HubError> {
        self.lock()
            .execute("DELETE FROM hub_c2d WHERE seq = ?1", params![seq])
            .map_err(db)?;
        Ok(())
    }

    /// SQLite's `data_version`: changes whenever another connection (the CLI) committed a
    /// change to the database, so the running emulator notices queued messages and twin
    /// updates it did not make itself.
    pub(crate) fn data_version(&self) -> Result<i64, HubError> {
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db)
    }
}
