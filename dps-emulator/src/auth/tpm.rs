//! TPM attestation, server side: challenges made with `hsm-tpm-common` (MakeCredential to the EK,
//! Duplicate of a fresh HMAC identity key to the SRK), and the identity keys remembered until the
//! device answers with a SAS signed by that key.
//!
//! Anyone who knows a device's EK (public: it is printed for enrollment) can ask for a
//! challenge for it. If each new challenge replaced the previous one, such a caller could
//! keep invalidating the real device's challenge between the moment it is issued and the
//! moment the device answers, and the device could never register. So every registration id
//! keeps several recent challenges, each answerable for [`CHALLENGE_LIFETIME`], at most
//! [`CHALLENGES_PER_REGISTRATION`] of them (the oldest is dropped first), so memory stays
//! bounded by the number of enrolled TPM devices. They are kept in the emulator's database as
//! well, so a restart does not give a waiting device a new challenge.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rusqlite::params;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use zeroize::Zeroizing;

use dps_proto::sas::DEVICE_KEY_NAME;
use dps_proto::wire::TpmChallenge;
use dps_proto::AttestationKind;

use super::sas::checked_token;
use super::{AuthContext, AuthError, Authenticator, DeviceRequest, Section};
use crate::error::EmulatorError;
use crate::model::{EnrollmentGroup, IndividualEnrollment};
use crate::store::Store;
use crate::timeutil::unix_now_ms;

/// How long an issued challenge can be answered. Long enough for a slow TPM (several RSA
/// operations) and a slow link; short enough that stale identity keys do not pile up.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);

/// An answered challenge's new freshness is written to the database only when it is this much
/// later than the saved one (a quarter of [`CHALLENGE_LIFETIME`]).
pub const FRESHNESS_SAVE_STEP: Duration = Duration::from_secs(30);

/// Most challenges kept per registration id; issuing one more drops the oldest.
pub const CHALLENGES_PER_REGISTRATION: usize = 32;

/// An issued challenge: the identity key (secret) and the blob the device received.
struct Issued {
    identity_key: Zeroizing<Vec<u8>>,
    authentication_key_b64: String,
    /// When it was issued, or last answered correctly (Unix ms; an answered challenge is in
    /// use: the device polls its operation with tokens signed by the same key). Wall-clock
    /// time, as it is kept across restarts.
    fresh_at_ms: i64,
    /// The freshness the database holds for it (equal to `fresh_at_ms` until it is answered).
    saved_fresh_at_ms: i64,
}

/// Why a challenge could not be issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChallengeError {
    /// The EK or SRK could not be used (a 400 for the device).
    #[error("cannot make a TPM challenge: {0}")]
    Wire(#[from] hsm_tpm_common::TpmWireError),
    /// The challenge could not be saved.
    #[error(transparent)]
    Store(#[from] EmulatorError),
}

/// Identity keys of outstanding and answered TPM challenges, by registration id. With a store
/// (the emulator's database) they are also written there and read back at start, so a device
/// that got a challenge before a restart can still answer it afterwards, as from the service,
/// which does not lose a device's challenge when one of its machines restarts. The database
/// is 0600 and already holds the enrollments' symmetric keys.
#[derive(Default)]
pub(crate) struct Challenges {
    by_registration: Mutex<HashMap<String, VecDeque<Issued>>>,
    store: Option<Store>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges { .. }")
    }
}

fn lifetime_ms() -> i64 {
    CHALLENGE_LIFETIME.as_millis() as i64
}

fn expired(i: &Issued, now_ms: i64) -> bool {
    now_ms.saturating_sub(i.fresh_at_ms) >= lifetime_ms()
}

impl Challenges {
    /// Challenges kept in `store` as well; the ones still answerable are loaded now.
    pub(crate) fn persistent(store: Store) -> Result<Self, EmulatorError> {
        let now = unix_now_ms();
        let mut map: HashMap<String, VecDeque<Issued>> = HashMap::new();
        {
            let conn = store.lock();
            conn.execute(
                "DELETE FROM tpm_challenges WHERE fresh_at_ms <= ?1",
                params![now - lifetime_ms()],
            )?;
            let mut stmt = conn.prepare(
                "SELECT registration_id, authentication_key, identity_key, fresh_at_ms
                 FROM tpm_challenges ORDER BY fresh_at_ms",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Issued {
                        authentication_key_b64: r.get(1)?,
                        identity_key: Zeroizing::new(r.get::<_, Vec<u8>>(2)?),
                        fresh_at_ms: r.get(3)?,
                        saved_fresh_at_ms: r.get(3)?,
                    },
                ))
            })?;
            for row in rows {
                let (reg, issued) = row?;
                let list = map.entry(reg).or_default();
                if list.len() >= CHALLENGES_PER_REGISTRATION {
                    list.pop_front();
                }
                list.push_back(issued);
            }
        }
        Ok(Self {
            by_registration: Mutex::new(map),
            store: Some(store),
        })
    }

    /// Makes a challenge for `ek`/`srk` (marshalled TPM2B_PUBLIC) and remembers its key. Returns
    /// the base64 authenticationKey.
    pub(crate) fn issue(
        &self,
        registration_id: &str,
        ek: &[u8],
        srk: &[u8],
    ) -> Result<String, ChallengeError> {
        let ch = hsm_tpm_common::dps::make_dps_challenge(ek, srk)?;
        let now = unix_now_ms();
        let b64 = B64.encode(&ch.blob);
        self.remember(
            registration_id,
            Issued {
                identity_key: ch.identity_key,
                authentication_key_b64: b64.clone(),
                fresh_at_ms: now,
                saved_fresh_at_ms: now,
            },
        )?;
        Ok(b64)
    }

    fn remember(&self, registration_id: &str, issued: Issued) -> Result<(), EmulatorError> {
        let now = issued.fresh_at_ms;
        let mut map = self
            .by_registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Forget what can no longer be answered, for every device, so ids whose challenges
        // all expired do not stay in the map.
        map.retain(|_, list| {
            list.retain(|i| !expired(i, now));
            !list.is_empty()
        });
        let list = map.entry(registration_id.to_string()).or_default();
        let mut dropped = Vec::new();
        while list.len() >= CHALLENGES_PER_REGISTRATION {
            if let Some(old) = list.pop_front() {
                dropped.push(old.authentication_key_b64);
            }
        }
        if let Some(store) = &self.store {
            let mut conn = store.lock();
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM tpm_challenges WHERE fresh_at_ms <= ?1",
                params![now - lifetime_ms()],
            )?;
            for key in &dropped {
                tx.execute(
                    "DELETE FROM tpm_challenges WHERE registration_id = ?1 AND authentication_key = ?2",
                    params![registration_id, key],
                )?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO tpm_challenges
                 (registration_id, authentication_key, identity_key, fresh_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    registration_id,
                    issued.authentication_key_b64,
                    issued.identity_key.as_slice(),
                    now
                ],
            )?;
            tx.commit()?;
        }
        list.push_back(issued);
        Ok(())
    }

    /// Runs `verify` with the identity keys of the challenges still answerable for
    /// `registration_id`, newest first. `None` when none is outstanding (the caller issues a
    /// new one); otherwise the accepted challenge's blob (base64) and identity key, or the
    /// last refusal.
    pub(crate) fn verify_with<E>(
        &self,
        registration_id: &str,
        mut verify: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Option<Result<(String, IdentityKey), E>> {
        let now = unix_now_ms();
        let mut map = self
            .by_registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(registration_id)?;
        list.retain(|i| !expired(i, now));
        let mut refusal = None;
        for idx in (0..list.len()).rev() {
            match verify(&list[idx].identity_key) {
                Ok(()) => {
                    // Keep the answered challenge the freshest: the device goes on signing
                    // its operation polls with this key.
                    let mut answered = list.remove(idx)?;
                    answered.fresh_at_ms = now;
                    let blob = answered.authentication_key_b64.clone();
                    let key = IdentityKey(answered.identity_key.clone());
                    // Only its freshness changes, so it is saved only when that extends the
                    // saved life by more than FRESHNESS_SAVE_STEP: a challenge answered right
                    // after it was issued (every first registration) costs no second commit
                    // (one fsync). A restart shortens an answered challenge's life by less
                    // than that step at most; failing to save it likewise shortens its life
                    // after a restart, nothing else, so the answer is not refused either way.
                    let save = now.saturating_sub(answered.saved_fresh_at_ms)
                        > FRESHNESS_SAVE_STEP.as_millis() as i64;
                    if save {
                        answered.saved_fresh_at_ms = now;
                    }
                    list.push_back(answered);
                    if let (Some(store), true) = (&self.store, save) {
                        if let Err(e) = store.lock().execute(
                            "UPDATE tpm_challenges SET fresh_at_ms = ?1
                             WHERE registration_id = ?2 AND authentication_key = ?3",
                            params![now, registration_id, blob],
                        ) {
                            tracing::warn!(error = %e, "could not save a TPM challenge's use");
                        }
                    }
                    return Some(Ok((blob, key)));
                }
                Err(e) => refusal = Some(e),
            }
        }
        if list.is_empty() {
            map.remove(registration_id);
        }
        refusal.map(Err)
    }
}

/// The identity key an answered challenge delivered (secret: never printed): the key the
/// device's hub verifies its SAS tokens with, as the service registers it.
#[derive(Clone)]
pub(crate) struct IdentityKey(Zeroizing<Vec<u8>>);

impl IdentityKey {
    /// The key, base64 (how hub keys are kept).
    pub(crate) fn to_b64(&self) -> String {
        B64.encode(self.0.as_slice())
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

/// Checks TPM devices: a challenge for the enrolled EK, then a SAS signed with the identity key
/// it delivered.
pub(crate) struct TpmAuthenticator;

/// The challenge for the device's EK, when it matches the enrollment's.
fn challenge(
    ctx: &AuthContext<'_>,
    request: &DeviceRequest,
    enrolled_ek: &str,
) -> Result<Section, AuthError> {
    let tpm = request.body.tpm.as_ref().ok_or_else(|| {
        AuthError::refused("TPM registration needs tpm.endorsementKey and tpm.storageRootKey")
    })?;
    // Refused like any other credential (not a 400): for an id that is not TPM-enrolled the
    // EK is never looked at, so a different answer here would reveal the enrollment.
    let ek = B64
        .decode(tpm.endorsement_key.trim())
        .map_err(|_| AuthError::refused("tpm.endorsementKey is not valid base64"))?;
    let enrolled = B64
        .decode(enrolled_ek.trim())
        .map_err(|_| AuthError::Internal("the enrolled endorsement key is corrupt"))?;
    if ek != enrolled {
        return Err(AuthError::refused(
            "the endorsement key does not match the enrollment",
        ));
    }
    let srk = tpm
        .storage_root_key
        .as_deref()
        .ok_or_else(|| AuthError::BadRequest("tpm.storageRootKey is required".into()))
        .and_then(|s| {
            B64.decode(s.trim())
                .map_err(|_| AuthError::BadRequest("tpm.storageRootKey is not valid base64".into()))
        })?;
    let blob = ctx
        .challenges
        .issue(&request.registration_id, &ek, &srk)
        .map_err(|e| match e {
            ChallengeError::Wire(_) => AuthError::BadRequest(e.to_string()),
            ChallengeError::Store(e) => AuthError::Store(e),
        })?;
    Err(AuthError::Challenge(TpmChallenge {
        authentication_key: blob,
        unencrypted_authentication_key: None,
        key_name: Some(DEVICE_KEY_NAME.into()),
    }))
}

impl Authenticator for TpmAuthenticator {
    fn kind(&self) -> AttestationKind {
        AttestationKind::Tpm
    }

    fn individual(
        &self,
        ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        enrollment: &IndividualEnrollment,
    ) -> Result<Section, AuthError> {
        let ek = enrollment
            .attestation
            .tpm
            .as_ref()
            .map(|t| t.endorsement_key.clone())
            .unwrap_or_default();
        if request.authorization.is_none() {
            return challenge(ctx, request, &ek);
        }
        let token = checked_token(ctx, request)?;
        match ctx
            .challenges
            .verify_with(&request.registration_id, |k| token.verify_signature_raw(k))
        {
            Some(Ok((blob, identity_key))) => Ok(Section::Tpm {
                authentication_key_b64: blob,
                identity_key,
            }),
            Some(Err(e)) => Err(AuthError::refused(e)),
            // No challenge outstanding (e.g. after a restart): issue one.
            None => challenge(ctx, request, &ek),
        }
    }

    fn presents_group_credentials(&self, _request: &DeviceRequest) -> bool {
        // DPS has no TPM enrollment groups.
        false
    }

    fn group(
        &self,
        _ctx: &AuthContext<'_>,
        _request: &DeviceRequest,
        _groups: &[EnrollmentGroup],
    ) -> Result<(usize, Section), AuthError> {
        Err(AuthError::refused("TPM devices have no enrollment groups"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(key: u8, at: i64) -> Issued {
        Issued {
            identity_key: Zeroizing::new(vec![key; 32]),
            authentication_key_b64: format!("blob-{key}"),
            fresh_at_ms: at,
            saved_fresh_at_ms: at,
        }
    }

    fn accepts(key: u8) -> impl FnMut(&[u8]) -> Result<(), ()> {
        move |k| if k[0] == key { Ok(()) } else { Err(()) }
    }

    /// The accepted blob only (the key is the one `issued` made from the same byte).
    fn verify(c: &Challenges, reg: &str, key: u8) -> Option<Result<String, ()>> {
        c.verify_with(reg, accepts(key)).map(|r| {
            r.map(|(blob, k)| {
                assert_eq!(k.0.as_slice(), &[key; 32][..]);
                blob
            })
        })
    }

    #[test]
    fn an_earlier_challenge_still_verifies_after_newer_ones() {
        let c = Challenges::default();
        let now = unix_now_ms();
        c.remember("dev", issued(1, now)).unwrap();
        for k in 2..10 {
            c.remember("dev", issued(k, now)).unwrap();
        }
        assert_eq!(verify(&c, "dev", 1), Some(Ok("blob-1".into())));
        assert_eq!(verify(&c, "dev", 9), Some(Ok("blob-9".into())));
        assert_eq!(verify(&c, "dev", 200), Some(Err(())));
        assert_eq!(verify(&c, "other", 1), None);
    }

    #[test]
    fn the_count_per_registration_is_bounded_and_the_oldest_goes_first() {
        let c = Challenges::default();
        let now = unix_now_ms();
        for k in 0..(CHALLENGES_PER_REGISTRATION as u8 + 5) {
            c.remember("dev", issued(k, now)).unwrap();
        }
        let map = c.by_registration.lock().unwrap();
        assert_eq!(map["dev"].len(), CHALLENGES_PER_REGISTRATION);
        drop(map);
        assert_eq!(verify(&c, "dev", 4), Some(Err(())));
        assert_eq!(verify(&c, "dev", 5), Some(Ok("blob-5".into())));
    }

    #[test]
    fn expired_challenges_are_forgotten_for_every_device() {
        let c = Challenges::default();
        let long_ago = unix_now_ms() - lifetime_ms() - 1000;
        c.remember("old", issued(1, long_ago)).unwrap();
        c.remember("dev", issued(2, long_ago)).unwrap();
        assert_eq!(verify(&c, "dev", 2), None, "expired");
        c.remember("new", issued(3, unix_now_ms())).unwrap();
        let map = c.by_registration.lock().unwrap();
        assert!(
            !map.contains_key("old"),
            "swept when another device got one"
        );
        assert!(map.contains_key("new"));
    }

    /// The database row's freshness for `reg`'s challenge `blob`.
    fn saved_freshness(store: &Store, reg: &str, blob: &str) -> i64 {
        store
            .lock()
            .query_row(
                "SELECT fresh_at_ms FROM tpm_challenges
                 WHERE registration_id = ?1 AND authentication_key = ?2",
                params![reg, blob],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn an_answer_right_after_the_challenge_costs_no_commit_a_later_one_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let c = Challenges::persistent(store.clone()).unwrap();
        let now = unix_now_ms();
        c.remember("fresh", issued(1, now)).unwrap();
        let before = store.commits();
        assert_eq!(verify(&c, "fresh", 1), Some(Ok("blob-1".into())));
        assert_eq!(store.commits(), before, "nothing worth saving: no commit");
        assert_eq!(saved_freshness(&store, "fresh", "blob-1"), now);

        // Issued (or last saved) longer than the step ago: the use is saved, so a restart
        // keeps the challenge answerable for the lifetime from now.
        let earlier = now - FRESHNESS_SAVE_STEP.as_millis() as i64 - 1000;
        c.remember("older", issued(2, earlier)).unwrap();
        let before = store.commits();
        assert_eq!(verify(&c, "older", 2), Some(Ok("blob-2".into())));
        assert_eq!(store.commits(), before + 1);
        let saved = saved_freshness(&store, "older", "blob-2");
        assert!(saved >= now, "saved {saved}, answered at or after {now}");
        let reloaded = Challenges::persistent(store.clone()).unwrap();
        assert_eq!(verify(&reloaded, "older", 2), Some(Ok("blob-2".into())));
    }
}
