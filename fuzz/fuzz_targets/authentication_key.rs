//! Fuzzes the DPS authenticationKey parser and the TPM2B_PUBLIC parser behind it.
//!
//! Invariants checked beyond "no panic": a blob that parses re-marshals to exactly the input
//! (the parser neither drops nor invents bytes), and a public area that parses re-marshals
//! to a TPMT_PUBLIC that parses to the same value.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run authentication_key corpus/authentication_key seeds/authentication_key`
//! (the seeds are a DPS-shaped blob with random content and an EK TPM2B_PUBLIC).

#![no_main]

use hsm_tpm_common::dps::parse_authentication_key;
use hsm_tpm_common::public::PublicArea;
use libfuzzer_sys::fuzz_target;

fn check_public(tpmt: &[u8]) {
    if let Ok(area) = PublicArea::from_tpmt(tpmt) {
        let again = area.to_tpmt().expect("a parsed public area marshals");
        assert_eq!(PublicArea::from_tpmt(&again).expect("re-parse"), area);
        let _ = area.name();
        let _ = area.rsa_public_key();
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = parse_authentication_key(data) {
        assert_eq!(blob.to_bytes().expect("a parsed blob marshals"), data);
        check_public(blob.identity_public);
    }
    // The same bytes as a bare TPM2B_PUBLIC / TPMT_PUBLIC, as an EK from a device would be.
    let _ = PublicArea::from_tpm2b(data);
    check_public(data);
});
