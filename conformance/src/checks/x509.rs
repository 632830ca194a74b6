//! X.509 attestation: the chain verifies, the leaf's key verifies what sign_digest produces,
//! the common name is a valid DPS registration id.

use super::instance;
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use const_oid::db::rfc5280::ID_KP_CLIENT_AUTH;
use der::Decode;
use hsm_api::*;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::Certificate;

register!(
    "x509.chain-parses",
    X509,
    X509,
    true,
    "the chain is UTF-8 PEM of CERTIFICATE blocks only, each parsing as X.509",
    chain_parses
);
register!(
    "x509.chain-verifies",
    X509,
    X509,
    true,
    "each certificate is issued and signed by the next; a self-signed last one verifies itself",
    chain_verifies
);
register!(
    "x509.ca-constraints",
    X509,
    X509,
    true,
    "every certificate after the leaf is a CA (basicConstraints CA:TRUE)",
    ca_constraints
);
register!(
    "x509.validity",
    X509,
    X509,
    true,
    "every certificate is valid now",
    validity
);
register!(
    "x509.leaf-usage",
    X509,
    X509,
    true,
    "the leaf may sign (digitalSignature if keyUsage is present, clientAuth if EKU is present)",
    leaf_usage
);
register!(
    "x509.common-name",
    X509,
    X509,
    true,
    "get_common_name equals the leaf CN and is a valid DPS registration id",
    common_name
);
register!(
    "x509.sign-verifies",
    X509,
    X509,
    true,
    "sign_digest output verifies against the leaf's public key",
    sign_verifies
);
register!(
    "x509.sign-bad-digest",
    X509,
    X509,
    true,
    "sign_digest refuses a digest of the wrong length with HSM_ERR_INVALID_ARGUMENT",
    sign_bad_digest
);
register!("x509.sign-unknown-algorithm", X509, X509, true,
    "sign_digest refuses an unknown algorithm with HSM_ERR_NOT_SUPPORTED or HSM_ERR_INVALID_ARGUMENT", sign_unknown_algorithm);
register!("x509.export-policy", X509, X509, true,
    "export_private_key is refused with HSM_ERR_NOT_SUPPORTED, or returns a PKCS#8 key matching the leaf", export_policy);
register!(
    "x509.outputs-stable",
    X509,
    X509,
    true,
    "the chain and the common name are the same on every call and in every instance",
    outputs_stable
);

/// The parsed chain: openssl objects for signature checks, x509-cert ones for extensions.
pub(crate) struct Chain {
    ssl: Vec<X509>,
    rust: Vec<Certificate>,
}

/// The chain, parsed, with the leaf first: a chain whose order is reversed fails here with
/// that diagnosis, as every check that takes `ssl[0]` for the leaf would otherwise fail with
/// a misleading message (wrong CN, key usage, signature).
fn chain(inst: &RawInstance) -> Result<Chain, Verdict> {
    let c = parse_chain(inst)?;
    order_problem(&c).map_or(Ok(c), Err)
}

/// The diagnosis of a chain given issuer before leaf: certificate `i` is not issued by
/// certificate `i + 1`, but `i + 1` is issued by `i` (by name).
fn order_problem(c: &Chain) -> Option<Verdict> {
    for i in 0..c.ssl.len().saturating_sub(1) {
        let (this, next) = (&c.ssl[i], &c.ssl[i + 1]);
        let forward = this.issuer_name_hash() == next.subject_name_hash();
        let backward = next.issuer_name_hash() == this.subject_name_hash()
            && next.subject_name_hash() != this.subject_name_hash();
        if !forward && backward {
            return Some(Verdict::fail(
                "the leaf certificate first, then each issuer (RFC 8446 4.4.2 order)",
                format!(
                    "the chain is in the wrong order: certificate {} ({}) is issued by certificate {i} ({}), \
                     so an issuer comes before its leaf; reverse the PEM blocks",
                    i + 1,
                    subject_text(next),
                    subject_text(this)
                ),
            ));
        }
    }
    None
}

/// The subject as `CN=...` for messages.
fn subject_text(c: &X509) -> String {
    c.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The chain, parsed, in the order the plugin gave it.
fn parse_chain(inst: &RawInstance) -> Result<Chain, Verdict> {
    parse_chain_bytes(&ok(inst.chain()?, "get_certificate_chain")?)
}

/// A chain a plugin returned (possibly in another process), parsed and with the leaf first,
/// under the same rules as [`chain`].
pub(crate) fn chain_from_bytes(bytes: &[u8]) -> Result<Chain, Verdict> {
    let c = parse_chain_bytes(bytes)?;
    order_problem(&c).map_or(Ok(c), Err)
}

fn parse_chain_bytes(bytes: &[u8]) -> Result<Chain, Verdict> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Verdict::fail("a UTF-8 PEM chain", "bytes that are not UTF-8"))?;
    if text.contains('\0') {
        return Err(Verdict::fail(
            "PEM without NUL bytes (the ABI counts no terminating NUL in len)",
            "a NUL byte in the chain",
        ));
    }
    let mut labels = Vec::new();
    for line in text.lines() {
        if let Some(label) = line.trim().strip_prefix("-----BEGIN ") {
            labels.push(label.trim_end_matches('-').to_string());
        }
    }
    if labels.is_empty() {
        return Err(Verdict::fail("at least one PEM block", "none"));
    }
    if let Some(other) = labels.iter().find(|l| l.as_str() != "CERTIFICATE") {
        return Err(Verdict::fail(
            "only CERTIFICATE blocks",
            format!("a `{other}` block"),
        ));
    }
    let ssl = X509::stack_from_pem(text.as_bytes())
        .map_err(|e| Verdict::fail("every block to parse as X.509", e.to_string()))?;
    if ssl.len() != labels.len() {
        return Err(Verdict::fail(
            format!("{} certificates", labels.len()),
            format!("{} parsed", ssl.len()),
        ));
    }
    let mut rust = Vec::new();
    for (i, c) in ssl.iter().enumerate() {
        let der = c
            .to_der()
            .map_err(|e| Verdict::fail("DER re-encoding", e.to_string()))?;
        rust.push(Certificate::from_der(&der).map_err(|e| {
            Verdict::fail(
                format!("certificate {i} to be strict DER X.509"),
                e.to_string(),
            )
        })?);
    }
    Ok(Chain { ssl, rust })
}

pub(crate) fn leaf_key(c: &Chain) -> Result<PKey<Public>, Verdict> {
    c.ssl[0]
        .public_key()
        .map_err(|e| Verdict::fail("a leaf public key openssl can read", e.to_string()))
}

fn chain_parses(ctx: &mut CheckContext) -> CheckResult {
    // Only whether it parses: the order is judged by the other checks.
    let c = parse_chain(&instance(ctx)?)?;
    Ok(Verdict::pass(format!("{} certificate(s)", c.ssl.len())))
}

fn chain_verifies(ctx: &mut CheckContext) -> CheckResult {
    let c = chain(&instance(ctx)?)?;
    for i in 0..c.ssl.len() {
        let cert = &c.ssl[i];
        let issuer = match c.ssl.get(i + 1) {
            Some(next) => next,
            None if cert.issuer_name_hash() == cert.subject_name_hash() => cert,
            // The last certificate is issued by a root the device does not carry: fine.
            None => break,
        };
        if cert.issuer_name_hash() != issuer.subject_name_hash() {
            return Err(Verdict::fail(
                format!("certificate {i}'s issuer to be the subject of the next"),
                "different names",
            ));
        }
        let key = issuer
            .public_key()
            .map_err(|e| Verdict::fail("an issuer key openssl can read", e.to_string()))?;
        if !cert.verify(&key).unwrap_or(false) {
            return Err(Verdict::fail(
                format!("certificate {i}'s signature to verify with its issuer's key"),
                "it does not",
            ));
        }
    }
    Ok(Verdict::pass(format!("{} certificate(s)", c.ssl.len())))
}

fn ca_constraints(ctx: &mut CheckContext) -> CheckResult {
    let c = chain(&instance(ctx)?)?;
    for (i, cert) in c.rust.iter().enumerate().skip(1) {
        match cert.tbs_certificate.get::<BasicConstraints>() {
            Ok(Some((_, bc))) if bc.ca => {}
            Ok(_) => {
                return Err(Verdict::fail(
                    format!("certificate {i} (an issuer) to have basicConstraints CA:TRUE"),
                    "no CA flag",
                ))
            }
            Err(e) => {
                return Err(Verdict::fail(
                    format!("certificate {i}'s basicConstraints to parse"),
                    e.to_string(),
                ))
            }
        }
    }
    Ok(Verdict::pass(""))
}

fn validity(ctx: &mut CheckContext) -> CheckResult {
    let c = chain(&instance(ctx)?)?;
    let now = openssl::asn1::Asn1Time::days_from_now(0)
        .map_err(|e| Verdict::skip(format!("no clock: {e}")))?;
    for (i, cert) in c.ssl.iter().enumerate() {
        if cert.not_before() > now || cert.not_after() < now {
            return Err(Verdict::fail(
                format!("certificate {i} valid now"),
                format!("valid {} to {}", cert.not_before(), cert.not_after()),
            ));
        }
    }
    Ok(Verdict::pass(""))
}

fn leaf_usage(ctx: &mut CheckContext) -> CheckResult {
    let c = chain(&instance(ctx)?)?;
    let tbs = &c.rust[0].tbs_certificate;
    match tbs.get::<KeyUsage>() {
        Ok(Some((_, ku))) if !ku.0.contains(KeyUsages::DigitalSignature) => {
            return Err(Verdict::fail(
                "leaf keyUsage with digitalSignature",
                format!("{:?}", ku.0),
            ))
        }
        Err(e) => return Err(Verdict::fail("a leaf keyUsage that parses", e.to_string())),
        _ => {}
    }
    match tbs.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if !eku.0.contains(&ID_KP_CLIENT_AUTH) => {
            return Err(Verdict::fail(
                "leaf extendedKeyUsage with clientAuth",
                "no clientAuth",
            ))
        }
        Err(e) => {
            return Err(Verdict::fail(
                "a leaf extendedKeyUsage that parses",
                e.to_string(),
            ))
        }
        _ => {}
    }
    Ok(Verdict::pass(""))
}

/// DPS registration ids: 1 to 128 of lowercase letters, digits and `- . _ :`.
pub(crate) fn registration_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 128 {
        return Some(format!("{} characters (1 to 128 allowed)", id.len()));
    }
    id.chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(*c)))
        .map(|c| format!("character {c:?} (lowercase letters, digits, - . _ : only)"))
}

fn common_name(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let c = chain(&inst)?;
    let bytes = ok(inst.common_name()?, "get_common_name")?;
    let name = String::from_utf8(bytes)
        .map_err(|_| Verdict::fail("a UTF-8 common name", "invalid UTF-8"))?;
    if name.contains('\0') {
        return Err(Verdict::fail(
            "a common name without NUL bytes (no terminating NUL counted in len)",
            format!("{name:?}"),
        ));
    }
    let name = name.as_str();
    let leaf_cn = c.ssl[0]
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    let Some(leaf_cn) = leaf_cn else {
        return Err(Verdict::fail("a CN in the leaf subject", "none"));
    };
    if leaf_cn != name {
        return Err(Verdict::fail(
            format!("get_common_name equal to the leaf CN `{leaf_cn}`"),
            format!("`{name}`"),
        ));
    }
    if let Some(problem) = registration_id_problem(name) {
        return Err(Verdict::fail(
            "a valid DPS registration id",
            format!("`{name}`: {problem}"),
        ));
    }
    Ok(Verdict::pass(name.to_string()))
}

/// The algorithms the leaf key can do, as (ABI value, openssl verifier setup).
pub(crate) fn algorithms_for(key: &PKey<Public>) -> Vec<u32> {
    match key.id() {
        Id::EC => match key.ec_key().ok().and_then(|k| k.group().curve_name()) {
            Some(openssl::nid::Nid::X9_62_PRIME256V1) => vec![HSM_SIGN_ECDSA_P256_SHA256],
            Some(openssl::nid::Nid::SECP384R1) => vec![HSM_SIGN_ECDSA_P384_SHA384],
            _ => vec![],
        },
        Id::RSA => vec![HSM_SIGN_RSA_PKCS1_SHA256, HSM_SIGN_RSA_PSS_SHA256],
        _ => vec![],
    }
}

pub(crate) fn verify(
    key: &PKey<Public>,
    algorithm: u32,
    digest: &[u8],
    sig: &[u8],
) -> Result<bool, String> {
    use openssl::pkey_ctx::PkeyCtx;
    use openssl::rsa::Padding;
    let mut ctx = PkeyCtx::new(key).map_err(|e| e.to_string())?;
    ctx.verify_init().map_err(|e| e.to_string())?;
    match algorithm {
        HSM_SIGN_RSA_PKCS1_SHA256 => {
            ctx.set_rsa_padding(Padding::PKCS1)
                .map_err(|e| e.to_string())?;
            ctx.set_signature_md(openssl::md::Md::sha256())
                .map_err(|e| e.to_string())?;
        }
        HSM_SIGN_RSA_PSS_SHA256 => {
            ctx.set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(|e| e.to_string())?;
            ctx.set_signature_md(openssl::md::Md::sha256())
                .map_err(|e| e.to_string())?;
            ctx.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::custom(32))
                .map_err(|e| e.to_string())?;
        }
        _ => {}
    }
    Ok(ctx.verify(digest, sig).unwrap_or(false))
}

/// When an ECDSA signature that failed to verify is exactly two field-size integers, the
/// plugin most likely returned raw `r || s` (IEEE P1363, as PKCS#11 `CKM_ECDSA` and many
/// secure elements give it) where the ABI wants a DER `ECDSA-Sig-Value`; says so, and whether
/// the raw pair verifies once encoded.
pub(crate) fn raw_ecdsa_diagnosis(
    key: &PKey<Public>,
    alg: u32,
    digest: &[u8],
    sig: &[u8],
) -> Option<String> {
    let half = match alg {
        HSM_SIGN_ECDSA_P256_SHA256 => 32,
        HSM_SIGN_ECDSA_P384_SHA384 => 48,
        _ => return None,
    };
    if sig.len() != 2 * half || openssl::ecdsa::EcdsaSig::from_der(sig).is_ok() {
        return None;
    }
    let r = openssl::bn::BigNum::from_slice(&sig[..half]).ok()?;
    let s = openssl::bn::BigNum::from_slice(&sig[half..]).ok()?;
    let der = openssl::ecdsa::EcdsaSig::from_private_components(r, s)
        .ok()?
        .to_der()
        .ok()?;
    let verifies = verify(key, alg, digest, &der).unwrap_or(false);
    Some(format!(
        "{} bytes of raw r||s instead of a DER ECDSA-Sig-Value (SEQUENCE {{ r INTEGER, s INTEGER }}){}; \
         encode the pair as DER before returning it",
        sig.len(),
        if verifies {
            " (encoded as DER, it verifies)"
        } else {
            ""
        }
    ))
}

/// The digest `sign_digest` takes for `algorithm`: SHA-384 for P-384, SHA-256 otherwise.
pub(crate) fn digest_for(algorithm: u32, msg: &[u8]) -> Result<Vec<u8>, Verdict> {
    if algorithm == HSM_SIGN_ECDSA_P384_SHA384 {
        Ok(openssl::hash::hash(MessageDigest::sha384(), msg)
            .map_err(|e| Verdict::skip(e.to_string()))?
            .to_vec())
    } else {
        Ok(Sha256::digest(msg).to_vec())
    }
}

fn sign_verifies(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let c = chain(&inst)?;
    let key = leaf_key(&c)?;
    let algs = algorithms_for(&key);
    if algs.is_empty() {
        return Err(Verdict::skip(
            "the leaf key is neither P-256, P-384 nor RSA",
        ));
    }
    for alg in algs {
        for msg in [&b"tls 1.3 client certificate verify"[..], b"second message"] {
            let digest = digest_for(alg, msg)?;
            let sig = ok(
                inst.sign_digest(alg, &digest)?,
                &format!("sign_digest (algorithm {alg})"),
            )?;
            match verify(&key, alg, &digest, &sig) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Verdict::fail(
                        format!(
                        "a signature (algorithm {alg}) that verifies with the leaf's public key"
                    ),
                        raw_ecdsa_diagnosis(&key, alg, &digest, &sig)
                            .unwrap_or_else(|| format!("{} bytes that do not verify", sig.len())),
                    ))
                }
                Err(e) => return Err(Verdict::fail("a verifiable signature", e)),
            }
        }
    }
    Ok(Verdict::pass(""))
}

fn sign_bad_digest(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let c = chain(&inst)?;
    let Some(alg) = algorithms_for(&leaf_key(&c)?).first().copied() else {
        return Err(Verdict::skip(
            "the leaf key is neither P-256, P-384 nor RSA",
        ));
    };
    for len in [0usize, 31, 33, 64] {
        if let Some(status) = inst
            .sign_digest(alg, &vec![1u8; len])?
            .err()
            .map(|e| e.status)
        {
            if status != HSM_ERR_INVALID_ARGUMENT {
                return Err(Verdict::fail(
                    format!("HSM_ERR_INVALID_ARGUMENT for a {len}-byte digest"),
                    status_name(status),
                ));
            }
        } else {
            return Err(Verdict::fail(
                format!("a {len}-byte digest to be refused for algorithm {alg}"),
                "HSM_OK",
            ));
        }
    }
    Ok(Verdict::pass(""))
}

fn sign_unknown_algorithm(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    match inst.sign_digest(0xdead, &[0u8; 32])? {
        Ok(_) => Err(Verdict::fail("algorithm 0xdead to be refused", "HSM_OK")),
        Err(e) if e.status == HSM_ERR_NOT_SUPPORTED || e.status == HSM_ERR_INVALID_ARGUMENT => {
            Ok(Verdict::pass(status_name(e.status)))
        }
        Err(e) => Err(Verdict::fail(
            "HSM_ERR_NOT_SUPPORTED or HSM_ERR_INVALID_ARGUMENT for algorithm 0xdead",
            e.to_string(),
        )),
    }
}

fn export_policy(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let c = chain(&inst)?;
    match inst.export_key()? {
        Err(e) if e.status == HSM_ERR_NOT_SUPPORTED => Ok(Verdict::pass("export refused")),
        Err(e) => Err(Verdict::fail(
            "HSM_ERR_NOT_SUPPORTED or a key",
            e.to_string(),
        )),
        Ok(pem) => {
            let pem = zeroize::Zeroizing::new(pem);
            let key = PKey::private_key_from_pem(&pem)
                .map_err(|e| Verdict::fail("a PKCS#8 PEM private key", e.to_string()))?;
            let leaf = leaf_key(&c)?;
            let ours = key
                .public_key_to_der()
                .map_err(|e| Verdict::fail("a usable key", e.to_string()))?;
            let theirs = leaf
                .public_key_to_der()
                .map_err(|e| Verdict::fail("a usable leaf key", e.to_string()))?;
            if ours != theirs {
                return Err(Verdict::fail(
                    "the exported key to match the leaf certificate",
                    "another key",
                ));
            }
            Ok(Verdict::pass("export allowed, key matches the leaf"))
        }
    }
}

fn outputs_stable(ctx: &mut CheckContext) -> CheckResult {
    let a = instance(ctx)?;
    let first = (
        ok(a.chain()?, "get_certificate_chain")?,
        ok(a.common_name()?, "get_common_name")?,
    );
    let again = (
        ok(a.chain()?, "get_certificate_chain")?,
        ok(a.common_name()?, "get_common_name")?,
    );
    drop(a);
    let b = instance(ctx)?;
    let other = (
        ok(b.chain()?, "get_certificate_chain")?,
        ok(b.common_name()?, "get_common_name")?,
    );
    if first != again || first != other {
        return Err(Verdict::fail(
            "the same chain and name on every call and instance",
            "different output",
        ));
    }
    Ok(Verdict::pass(""))
}
