//! Operational keys (ABI 1.2) of the tpm2 plugin on swtpm, started per test on free loopback
//! ports (fails with an install hint when swtpm is missing): keys made by TPM2_Create under the
//! SRK sign what their SPKI verifies, survive a TPM restart and a new instance, their blob is
//! of no use to another TPM, chains round-trip byte for byte, delete removes everything, the
//! persistent-handle mode, and the refusals (labels, digests, damaged files, a taken handle).

use hsm_plugin_sdk::hsm_api::*;
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, OperationalKeyHsm, PluginConfig, TpmHsm};
use hsm_tpm_common::swtpm::Swtpm;
use hsmkit_backend_tpm2::Tpm2Plugin;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A persistent handle for the tests of that mode (owner range, not the SRK's or the
/// identity key's default).
const HANDLE: u32 = 0x8100_0200;

fn swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("cannot run the tpm2 operational-key tests: {e}"))
}

/// A tpm2 instance on `tpm` keeping its files in `state`, with `extra` settings.
fn tpm2(tpm: &Swtpm, state: &Path, extra: &[(&str, &str)]) -> Tpm2Plugin {
    let tcti = tpm.tcti();
    let state = state.display().to_string();
    let mut pairs = vec![("tcti", tcti.as_str()), ("state_dir", state.as_str())];
    pairs.extend_from_slice(extra);
    Tpm2Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap()
}

/// Checks `signature` (DER) over `digest` with the SPKI.
fn verifies(spki: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    let key = VerifyingKey::from_public_key_der(spki).expect("a P-256 SPKI");
    let Ok(signature) = DerSignature::try_from(signature) else {
        return false;
    };
    key.verify_prehash(digest, &signature).is_ok()
}

fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn key_file(state: &Path, label: &str) -> std::path::PathBuf {
    state.join(format!("tpm2/operational/{label}.key"))
}

/// Transient objects loaded in the TPM (0x80...), to see nothing is left behind.
fn transients(p: &Tpm2Plugin) -> Vec<u32> {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::structures::CapabilityData;
    p.with_device(|d| {
        let (data, _) = d
            .context()
            .get_capability(CapabilityType::Handles, 0x8000_0000, 64)
            .unwrap();
        Ok(match data {
            CapabilityData::Handles(list) => list
                .iter()
                .map(|h| u32::from(*h))
                .filter(|h| h >> 24 == 0x80)
                .collect(),
            _ => Vec::new(),
        })
    })
    .unwrap()
}

/// Whether something is persisted at `handle`.
fn persisted(p: &Tpm2Plugin, handle: u32) -> bool {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::structures::CapabilityData;
    p.with_device(|d| {
        let (data, _) = d
            .context()
            .get_capability(CapabilityType::Handles, handle, 1)
            .unwrap();
        Ok(matches!(data, CapabilityData::Handles(list)
            if list.iter().any(|h| u32::from(*h) == handle)))
    })
    .unwrap()
}

#[test]
fn the_key_signs_in_the_tpm_and_survives_a_restart_and_a_new_instance() {
    let mut tpm = swtpm();
    let state = tempfile::tempdir().unwrap();
    let p = tpm2(&tpm, state.path(), &[]);
    assert_eq!(
        p.operational_public_key("op").unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        p.sign_operational_digest("op", &[1; 32])
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    let spki = p.create_operational_key("op").unwrap();
    // A P-256 SPKI: id-ecPublicKey with prime256v1, checked by the parser.
    VerifyingKey::from_public_key_der(&spki).unwrap();
    assert_eq!(p.create_operational_key("op").unwrap(), spki, "found again");
    assert_eq!(p.operational_public_key("op").unwrap(), spki);
    let other = p.create_operational_key("op2").unwrap();
    assert_ne!(other, spki, "one key per label");

    let d = digest(b"to be signed");
    let sig = p.sign_operational_digest("op", &d).unwrap();
    assert!(verifies(&spki, &d, &sig));
    assert!(!verifies(&other, &d, &sig), "signed by that label's key");
    assert!(!verifies(&spki, &digest(b"something else"), &sig));
    assert!(transients(&p).is_empty(), "loaded keys are flushed");

    // The file: 0600, the blob only (the magic, then TPM2B_PUBLIC and TPM2B_PRIVATE).
    let file = key_file(state.path(), "op");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..10], b"HKTPM2OK\x01\x00");

    // A reboot of the TPM and a new instance (a new process would see the same).
    drop(p);
    tpm.restart().unwrap();
    let q = tpm2(&tpm, state.path(), &[]);
    assert_eq!(q.operational_public_key("op").unwrap(), spki);
    assert_eq!(q.create_operational_key("op").unwrap(), spki);
    let sig = q.sign_operational_digest("op", &d).unwrap();
    assert!(verifies(&spki, &d, &sig));
    // The plugin's other interface still works beside it.
    q.endorsement_key().unwrap();
}

#[test]
fn the_blob_is_of_no_use_to_another_tpm() {
    let first = swtpm();
    let second = swtpm();
    let state = tempfile::tempdir().unwrap();
    let spki = tpm2(&first, state.path(), &[])
        .create_operational_key("op")
        .unwrap();
    // The same files, another TPM: its SRK cannot unwrap the private part.
    let elsewhere = tpm2(&second, state.path(), &[]);
    assert_eq!(elsewhere.operational_public_key("op").unwrap(), spki);
    let e = elsewhere
        .sign_operational_digest("op", &digest(b"x"))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Device, "{e}");
    assert!(
        e.message().contains("does not load under this TPM's SRK"),
        "{e}"
    );
    assert!(e.message().contains("op.key"), "{e}");
    assert!(transients(&elsewhere).is_empty());
    // The first TPM still signs with it.
    let d = digest(b"y");
    let sig = tpm2(&first, state.path(), &[])
        .sign_operational_digest("op", &d)
        .unwrap();
    assert!(verifies(&spki, &d, &sig));
}

#[test]
fn chains_round_trip_and_delete_removes_key_and_chain() {
    let tpm = swtpm();
    let state = tempfile::tempdir().unwrap();
    let p = tpm2(&tpm, state.path(), &[]);
    assert_eq!(
        p.store_operational_chain("op", "PEM").unwrap_err().code(),
        ErrorCode::NotFound,
        "no chain without a key"
    );
    let spki = p.create_operational_key("op").unwrap();
    assert_eq!(
        p.operational_chain("op").unwrap_err().code(),
        ErrorCode::NotFound
    );
    // Byte for byte, whatever the line endings.
    let chain = "-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\n \n";
    p.store_operational_chain("op", "old").unwrap();
    p.store_operational_chain("op", chain).unwrap();
    assert_eq!(p.operational_chain("op").unwrap(), chain);
    let chain_file = state.path().join("tpm2/operational/op.chain.pem");
    let meta = std::fs::metadata(&chain_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        tpm2(&tpm, state.path(), &[])
            .operational_chain("op")
            .unwrap(),
        chain
    );

    p.delete_operational_key("op").unwrap();
    assert!(!key_file(state.path(), "op").exists() && !chain_file.exists());
    for code in [
        p.operational_public_key("op").unwrap_err().code(),
        p.sign_operational_digest("op", &[1; 32])
            .unwrap_err()
            .code(),
        p.operational_chain("op").unwrap_err().code(),
        p.delete_operational_key("op").unwrap_err().code(),
    ] {
        assert_eq!(code, ErrorCode::NotFound);
    }
    assert_ne!(
        p.create_operational_key("op").unwrap(),
        spki,
        "a new key after delete"
    );
}

#[test]
fn persistent_handle_mode_keeps_one_key_at_the_handle() {
    let mut tpm = swtpm();
    let state = tempfile::tempdir().unwrap();
    let handle = format!("{HANDLE:#x}");
    let settings = [("operational_key_persistent_handle", handle.as_str())];
    let p = tpm2(&tpm, state.path(), &settings);
    assert!(!persisted(&p, HANDLE));
    let spki = p.create_operational_key("op").unwrap();
    assert!(persisted(&p, HANDLE));
    assert_eq!(p.create_operational_key("op").unwrap(), spki);
    // The file names the handle and the public area, no private part.
    let bytes = std::fs::read(key_file(state.path(), "op")).unwrap();
    assert_eq!(&bytes[..10], b"HKTPM2OK\x01\x01");
    assert_eq!(&bytes[10..14], &HANDLE.to_be_bytes());
    let d = digest(b"persistent");
    assert!(verifies(
        &spki,
        &d,
        &p.sign_operational_digest("op", &d).unwrap()
    ));
    assert!(transients(&p).is_empty());

    // The handle keeps one key: a second label is refused and nothing is left behind.
    let e = p.create_operational_key("second").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState, "{e}");
    assert!(e.message().contains("0x81000200"), "{e}");
    assert!(!key_file(state.path(), "second").exists());
    assert!(transients(&p).is_empty());

    drop(p);
    tpm.restart().unwrap();
    let q = tpm2(&tpm, state.path(), &settings);
    assert_eq!(q.operational_public_key("op").unwrap(), spki);
    assert!(verifies(
        &spki,
        &d,
        &q.sign_operational_digest("op", &d).unwrap()
    ));
    q.store_operational_chain("op", "CHAIN").unwrap();

    q.delete_operational_key("op").unwrap();
    assert!(!persisted(&q, HANDLE), "evicted");
    assert_eq!(
        q.operational_chain("op").unwrap_err().code(),
        ErrorCode::NotFound
    );
    let second = q.create_operational_key("second").unwrap();
    assert_ne!(second, spki);
    assert!(persisted(&q, HANDLE));
    // The same instance signs with the new key at the handle the old one left.
    assert!(verifies(
        &second,
        &d,
        &q.sign_operational_digest("second", &d).unwrap()
    ));

    // Evicted behind the plugin's back: a clear error, not another key's signature.
    q.with_device(|d| {
        use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
        use tss_esapi::interface_types::dynamic_handles::Persistent;
        use tss_esapi::interface_types::resource_handles::Provision;
        let ctx = d.context();
        let h = PersistentTpmHandle::new(HANDLE).unwrap();
        let object = ctx.tr_from_tpm_public(TpmHandle::Persistent(h)).unwrap();
        ctx.execute_with_nullauth_session(|c| {
            c.evict_control(Provision::Owner, object, Persistent::Persistent(h))
        })
        .unwrap();
        Ok(())
    })
    .unwrap();
    let e = q.sign_operational_digest("second", &d).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Device, "{e}");
    assert!(e.message().contains("no longer persisted"), "{e}");
}

#[test]
fn damaged_key_files_are_clear_errors() {
    let tpm = swtpm();
    let state = tempfile::tempdir().unwrap();
    let p = tpm2(&tpm, state.path(), &[]);
    p.create_operational_key("op").unwrap();
    let file = key_file(state.path(), "op");
    let good = std::fs::read(&file).unwrap();

    // Not a key file at all.
    std::fs::write(&file, b"not a key").unwrap();
    for e in [
        p.operational_public_key("op").unwrap_err(),
        p.sign_operational_digest("op", &[1; 32]).unwrap_err(),
        p.create_operational_key("op").unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::Device, "{e}");
        assert!(
            e.message()
                .contains("not a valid tpm2 operational key file"),
            "{e}"
        );
        assert!(e.message().contains(&file.display().to_string()), "{e}");
    }

    // A well-formed file whose private part was changed: the TPM's integrity check refuses it.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    std::fs::write(&file, &tampered).unwrap();
    let e = p.sign_operational_digest("op", &[1; 32]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Device, "{e}");
    assert!(
        e.message().contains("does not load under this TPM's SRK"),
        "{e}"
    );
    assert!(transients(&p).is_empty());

    // Put back, it works again.
    std::fs::write(&file, &good).unwrap();
    p.sign_operational_digest("op", &[1; 32]).unwrap();
}

#[test]
fn bad_labels_and_digest_lengths_are_refused() {
    let tpm = swtpm();
    let state = tempfile::tempdir().unwrap();
    // The library itself refuses labels that are not plain file names.
    let p = tpm2(&tpm, state.path(), &[]);
    for label in ["", "..", "../op", "a/b", "a b", &"l".repeat(65)] {
        assert_eq!(
            p.create_operational_key(label).unwrap_err().code(),
            ErrorCode::InvalidArgument,
            "{label:?}"
        );
    }
    drop(p);

    // Through the plugin table, as a host calls it: the interface is advertised, a digest of
    // any length but 32 and a bad label are refused, a good call signs in the TPM.
    let mut table: *const HsmPluginTable = std::ptr::null();
    // SAFETY: no host callbacks (NULL is allowed) and a writable out slot.
    let status = unsafe {
        hsmkit_backend_tpm2::plugin_entry(
            HSM_ABI_MAJOR,
            HSM_ABI_MINOR,
            std::ptr::null(),
            &mut table,
        )
    };
    assert_eq!(status, HSM_OK);
    // SAFETY: a static table the entry returned with HSM_OK.
    let table = unsafe { &*table };
    assert!(HsmPluginTable::has_operational_key(&table.header));
    assert!(!table.operational_key.is_null(), "the table advertises it");
    // SAFETY: non-NULL, static.
    let ops = unsafe { &*table.operational_key };
    let tcti = tpm.tcti();
    let dir = state.path().display().to_string();
    let config = [
        HsmKeyValue {
            key: HsmSlice::from_bytes(b"tcti"),
            value: HsmSlice::from_bytes(tcti.as_bytes()),
        },
        HsmKeyValue {
            key: HsmSlice::from_bytes(b"state_dir"),
            value: HsmSlice::from_bytes(dir.as_bytes()),
        },
    ];
    let mut instance: *mut HsmInstance = std::ptr::null_mut();
    // SAFETY: settings borrowed for the call, writable out slots.
    let status = unsafe {
        (table.create)(
            config.as_ptr(),
            config.len(),
            &mut instance,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, HSM_OK);
    let label = HsmSlice::from_bytes(b"op");
    let mut out = HsmBuffer::EMPTY;
    // SAFETY: live instance, borrowed label, writable buffer.
    let status = unsafe { (ops.create_key)(instance, label, &mut out) };
    assert_eq!(status, HSM_OK);
    // SAFETY: a buffer written with HSM_OK holds `len` bytes.
    let spki = unsafe { std::slice::from_raw_parts(out.data, out.len) }.to_vec();
    // SAFETY: the plugin's buffer, released once.
    unsafe { (table.release_buffer)(&mut out) };
    for len in [0, 20, 31, 33, 64] {
        let d = vec![1u8; len];
        // SAFETY: as above.
        let status =
            unsafe { (ops.sign_digest)(instance, label, HsmSlice::from_bytes(&d), &mut out) };
        assert_eq!(status, HSM_ERR_INVALID_ARGUMENT, "{len}-byte digest");
        assert!(out.data.is_null());
    }
    // SAFETY: as above.
    let status = unsafe { (ops.create_key)(instance, HsmSlice::from_bytes(b"../op"), &mut out) };
    assert_eq!(status, HSM_ERR_INVALID_ARGUMENT);
    let d = digest(b"through the table");
    // SAFETY: as above.
    let status = unsafe { (ops.sign_digest)(instance, label, HsmSlice::from_bytes(&d), &mut out) };
    assert_eq!(status, HSM_OK);
    // SAFETY: as above.
    let signature = unsafe { std::slice::from_raw_parts(out.data, out.len) }.to_vec();
    // SAFETY: as above.
    unsafe { (table.release_buffer)(&mut out) };
    assert!(verifies(&spki, &d, &signature));
    // SAFETY: made above, not used after.
    unsafe { (table.destroy)(instance) };
}
