//! Plugin settings, read from the host's key/value configuration.
//!
//! | key | meaning |
//! |---|---|
//! | `module` | path of the PKCS#11 library (required) |
//! | `token_uri` | RFC 7512 token selector: `pkcs11:token=LABEL` or `pkcs11:serial=SERIAL` (required) |
//! | `pin_file` / `pin_env` | file holding the user PIN, or the name of an environment variable (one required) |
//! | `key_uri` | private key for X.509: `pkcs11:object=LABEL` and/or `id=%01` |
//! | `cert_uri` | certificate objects, leaf first, separated by white space |
//! | `cert_file` | PEM chain file, leaf first (instead of `cert_uri`) |
//! | `hmac_key_uri` | generic-secret key for the symmetric-key interface |
//! | `registration_id` | symmetric-key registration id (default: the key's label) |
//!
//! ```toml
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_uri = "pkcs11:token=device"
//! pin_file = "/etc/hsmkit/token.pin"
//! key_uri = "pkcs11:object=device;type=private"
//! cert_uri = "pkcs11:object=device;type=cert"
//! ```
//!
//! A PIN value is never accepted in configuration (nor `pin-value` in a URI).

use crate::error::{Pkcs11Error, Result};
use crate::uri::Pkcs11Uri;
use hsm_plugin_sdk::Setting;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Every key [`Pkcs11Config::from_lookup`] reads (the table above; `state_dir` is implied).
/// The SDK refuses any other, `pin` included.
pub const SETTINGS: &[Setting] = &[
    Setting::required(
        "module",
        "path of the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so",
    ),
    Setting::required(
        "token_uri",
        "RFC 7512 token selector: pkcs11:token=LABEL or pkcs11:serial=SERIAL",
    ),
    Setting::optional(
        "pin_file",
        "file holding the user PIN (this or pin_env is required)",
    ),
    Setting::optional(
        "pin_env",
        "environment variable holding the user PIN (this or pin_file is required)",
    ),
    Setting::optional(
        "key_uri",
        "private key for X.509: pkcs11:object=LABEL and/or id=%01",
    ),
    Setting::optional(
        "cert_uri",
        "certificate objects for X.509, leaf first, separated by white space",
    ),
    Setting::optional(
        "cert_file",
        "PEM chain file for X.509, leaf first (instead of cert_uri)",
    ),
    Setting::optional(
        "hmac_key_uri",
        "generic-secret key for the symmetric-key interface",
    ),
    Setting::optional(
        "registration_id",
        "symmetric-key registration id; default: the key's label",
    ),
];

/// Where the user PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose content (without a trailing newline) is the PIN.
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    /// Reads the PIN. Errors name the file or variable, never the PIN.
    pub fn read(&self) -> Result<Zeroizing<String>> {
        let pin = match self {
            PinSource::File(path) => {
                warn_if_readable_by_others(path);
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
                    Pkcs11Error::invalid_argument(format!(
                        "cannot read the PIN file {}: {e}",
                        path.display()
                    ))
                })?);
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Pkcs11Error::invalid_argument(format!(
                        "the PIN file {} is not UTF-8 text",
                        path.display()
                    ))
                })?;
                Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_string())
            }
            PinSource::Env(name) => {
                let value = std::env::var(name).map_err(|_| {
                    Pkcs11Error::invalid_argument(format!(
                        "the PIN environment variable {name} is not set or not UTF-8"
                    ))
                })?;
                Zeroizing::new(value)
            }
        };
        if pin.is_empty() {
            return Err(Pkcs11Error::invalid_argument(format!(
                "the PIN from {} is empty",
                self.describe()
            )));
        }
        Ok(pin)
    }

    fn describe(&self) -> String {
        match self {
            PinSource::File(p) => format!("file {}", p.display()),
            PinSource::Env(n) => format!("environment variable {n}"),
        }
    }
}

/// A PIN file others can read is a leak waiting to happen; say so (without refusing, since
/// some deployments hand the file over through a group on purpose).
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            hsm_plugin_sdk::log::warn(&format!(
                "the PIN file {} is accessible to group or others; chmod 600 it",
                path.display()
            ));
        }
    }
}

/// Where the certificate chain comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Certificate objects in the token, leaf first.
    Token(Vec<Pkcs11Uri>),
    /// A PEM file, leaf first.
    File(PathBuf),
}

/// Everything one plugin instance needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Which token to use.
    pub token: Pkcs11Uri,
    /// The private key (X.509 interface).
    pub key: Option<Pkcs11Uri>,
    /// The certificate chain (X.509 interface).
    pub cert: Option<CertSource>,
    /// The generic-secret HMAC key (symmetric-key interface).
    pub hmac_key: Option<Pkcs11Uri>,
    /// Registration id for the symmetric-key interface (default: the key's label).
    pub registration_id: Option<String>,
    /// Where the user PIN comes from.
    pub pin: PinSource,
}

impl Pkcs11Config {
    /// Reads the settings through `get` (the host's configuration lookup).
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self> {
        if get("pin").is_some() || get("pin_value").is_some() {
            return Err(Pkcs11Error::invalid_argument(
                "a PIN value is not accepted in configuration: use `pin_file` or `pin_env`",
            ));
        }
        let module = get("module").filter(|m| !m.is_empty()).ok_or_else(|| {
            Pkcs11Error::invalid_argument(
                "`module` is required: the path of the PKCS#11 library, for example /usr/lib/softhsm/libsofthsm2.so",
            )
        })?;
        let token_text = get("token_uri").ok_or_else(|| {
            Pkcs11Error::invalid_argument(
                "`token_uri` is required, for example pkcs11:token=LABEL or pkcs11:serial=SERIAL",
            )
        })?;
        let token = Pkcs11Uri::parse(token_text)?;
        let object_uri = |key: &str| -> Result<Option<Pkcs11Uri>> {
            match get(key) {
                None => Ok(None),
                Some(text) => {
                    let uri = Pkcs11Uri::parse(text)?;
                    check_object_uri(key, &uri, &token)?;
                    Ok(Some(uri))
                }
            }
        };
        let key = object_uri("key_uri")?;
        let hmac_key = object_uri("hmac_key_uri")?;
        let cert = match (get("cert_uri"), get("cert_file")) {
            (Some(_), Some(_)) => {
                return Err(Pkcs11Error::invalid_argument(
                    "give either `cert_uri` or `cert_file`, not both",
                ))
            }
            (Some(text), None) => {
                let mut uris = Vec::new();
                for part in text.split_whitespace() {
                    let uri = Pkcs11Uri::parse(part)?;
                    check_object_uri("cert_uri", &uri, &token)?;
                    uris.push(uri);
                }
                if uris.is_empty() {
                    return Err(Pkcs11Error::invalid_argument("`cert_uri` is empty"));
                }
                Some(CertSource::Token(uris))
            }
            (None, Some(path)) => Some(CertSource::File(PathBuf::from(path))),
            (None, None) => None,
        };
        let pin = match (get("pin_file"), get("pin_env")) {
            (Some(_), Some(_)) => {
                return Err(Pkcs11Error::invalid_argument(
                    "give either `pin_file` or `pin_env`, not both",
                ))
            }
            (Some(p), None) => PinSource::File(PathBuf::from(p)),
            (None, Some(v)) => PinSource::Env(v.to_string()),
            (None, None) => {
                return Err(Pkcs11Error::invalid_argument(
                    "`pin_file` or `pin_env` is required to log in to the token",
                ))
            }
        };
        Ok(Self {
            module: PathBuf::from(module),
            token,
            key,
            cert,
            hmac_key,
            registration_id: get("registration_id").map(str::to_string),
            pin,
        })
    }
}

/// Object URIs must name an object and must not contradict the configured token.
fn check_object_uri(key: &str, uri: &Pkcs11Uri, token: &Pkcs11Uri) -> Result<()> {
    if !uri.selects_object() {
        return Err(Pkcs11Error::invalid_argument(format!(
            "`{key}` must name an object with `object=` or `id=`"
        )));
    }
    let clash =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x != y);
    if clash(&uri.token, &token.token) || clash(&uri.serial, &token.serial) {
        return Err(Pkcs11Error::invalid_argument(format!(
            "`{key}` names a different token than `token_uri`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Pkcs11Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pkcs11Config::from_lookup(|k| map.get(k).map(String::as_str))
    }

    #[test]
    fn full_configuration() {
        let c = parse(&[
            ("module", "/m.so"),
            ("token_uri", "pkcs11:token=t"),
            ("key_uri", "pkcs11:object=dev"),
            ("cert_uri", "pkcs11:object=dev pkcs11:object=ca"),
            ("hmac_key_uri", "pkcs11:id=%07"),
            ("pin_env", "MY_PIN"),
        ])
        .unwrap();
        assert_eq!(c.module, PathBuf::from("/m.so"));
        assert_eq!(c.token.token.as_deref(), Some("t"));
        assert!(matches!(c.cert, Some(CertSource::Token(ref v)) if v.len() == 2));
        assert_eq!(c.hmac_key.unwrap().id, Some(vec![7]));
        assert_eq!(c.pin, PinSource::Env("MY_PIN".into()));
    }

    #[test]
    fn clear_errors_for_missing_or_contradicting_settings() {
        let base = [
            ("module", "/m.so"),
            ("token_uri", "pkcs11:token=t"),
            ("pin_env", "P"),
        ];
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("token_uri", "pkcs11:token=t"), ("pin_env", "P")],
                "`module` is required",
            ),
            (
                vec![("module", "/m.so"), ("pin_env", "P")],
                "`token_uri` is required",
            ),
            (
                vec![("module", "/m.so"), ("token_uri", "pkcs11:token=t")],
                "`pin_file` or `pin_env`",
            ),
            ([&base[..], &[("pin", "1234")]].concat(), "not accepted"),
            (
                [&base[..], &[("key_uri", "pkcs11:token=t")]].concat(),
                "must name an object",
            ),
            (
                [&base[..], &[("key_uri", "pkcs11:token=u;object=k")]].concat(),
                "different token",
            ),
            (
                [
                    &base[..],
                    &[("cert_uri", "pkcs11:object=c"), ("cert_file", "/c.pem")],
                ]
                .concat(),
                "not both",
            ),
        ];
        for (pairs, needle) in cases {
            let e = parse(&pairs).unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {}", e.message());
            assert!(!e.message().contains("1234"));
        }
    }

    #[test]
    fn pin_file_is_trimmed_and_empty_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "9876\n").unwrap();
        assert_eq!(
            PinSource::File(path.clone()).read().unwrap().as_str(),
            "9876"
        );
        std::fs::write(&path, "\n").unwrap();
        let e = PinSource::File(path).read().unwrap_err();
        assert!(e.message().contains("empty"));
        let e = PinSource::Env("HSMKIT_TEST_SURELY_UNSET_PIN_VAR".into())
            .read()
            .unwrap_err();
        assert!(e.message().contains("HSMKIT_TEST_SURELY_UNSET_PIN_VAR"));
    }
}
