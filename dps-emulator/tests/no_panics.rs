//! Parsers that face network or file input return typed errors on arbitrary bytes, never panic.

use dps_proto::sas::SasToken;

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % max;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let good = dps_proto::sas::create_token(
        "scope/registrations/dev",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        Some("registration"),
        2_000_000_000,
    )
    .unwrap();
    let root = dps_emulator::pki::CertifiedKey::new_root_ca(
        "fuzz root",
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let der = root.cert_der().to_vec();
    let pem = root.cert_pem();
    let mut accepted = 0;
    for _ in 0..3000 {
        // Token: random bytes, and the good token with one byte flipped or truncated.
        let rand = String::from_utf8_lossy(&rng.bytes(200)).into_owned();
        let _ = SasToken::parse(&rand);
        let mut t = good.clone().into_bytes();
        let i = (rng.next() as usize) % t.len();
        t[i] = rng.next() as u8;
        t.truncate((rng.next() as usize) % (t.len() + 1));
        if let Ok(tok) = SasToken::parse(&String::from_utf8_lossy(&t)) {
            accepted += 1;
            let _ = tok.verify_signature_b64("AAAAAAAAAAAAAAAAAAAAAA==");
        }
        // Certificates: mutated DER, mutated PEM, random text.
        let mut d = der.clone();
        let j = (rng.next() as usize) % d.len();
        d[j] ^= 1 << (rng.next() % 8);
        d.truncate((rng.next() as usize) % (d.len() + 1));
        let _ = dps_emulator::auth::x509::common_name(&d);
        let _ = dps_emulator::auth::x509::certificate_info(&d);
        let _ = dps_emulator::auth::x509::verify_group(&[d.clone()], &[pem.as_str()], "x");
        let mut p = pem.clone().into_bytes();
        let k = (rng.next() as usize) % p.len();
        p[k] = rng.next() as u8;
        let _ = dps_emulator::pki::parse_certificates(&String::from_utf8_lossy(&p));
        let _ = dps_emulator::pki::parse_certificates(&rand);
        let _ = serde_json::from_str::<dps_emulator::model::IndividualEnrollment>(&rand);
    }
    // The mutation loop must also have produced parseable tokens, or it tested nothing.
    assert!(accepted > 0);
}
