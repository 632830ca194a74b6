//! A small RFC 7512 `pkcs11:` URI parser: just the attributes this plugin selects tokens and
//! objects by.
//!
//! Unknown standard attributes are refused rather than ignored, because a typo such as
//! `lable=` would otherwise silently match every object. Vendor attributes (`x-...`) are
//! ignored as the RFC allows. `pin-value` is refused: PINs come from a file or an environment
//! variable, never from configuration text.

use crate::error::{Pkcs11Error, Result};
use percent_encoding::percent_decode_str;

/// Object class selector (`type=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=private`
    Private,
    /// `type=public`
    Public,
    /// `type=cert`
    Cert,
    /// `type=secret-key`
    SecretKey,
    /// `type=data`
    Data,
}

/// A parsed `pkcs11:` URI. Every field is optional; an absent field matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label (`token=`).
    pub token: Option<String>,
    /// Token serial number (`serial=`).
    pub serial: Option<String>,
    /// Token manufacturer (`manufacturer=`).
    pub manufacturer: Option<String>,
    /// Token model (`model=`).
    pub model: Option<String>,
    /// Slot number (`slot-id=`); discouraged because modules renumber slots.
    pub slot_id: Option<u64>,
    /// Object label (`object=`).
    pub object: Option<String>,
    /// Object id bytes (`id=`), usually percent-encoded (`id=%01`).
    pub id: Option<Vec<u8>>,
    /// Object class (`type=`).
    pub object_type: Option<ObjectType>,
    /// Module path from the query (`module-path=`).
    pub module_path: Option<String>,
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI.
    pub fn parse(text: &str) -> Result<Self> {
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad(text, "it must start with `pkcs11:`"))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(text, &format!("path attribute `{part}` has no `=`")))?;
            uri.set_path_attribute(text, name, value)?;
        }
        for part in query.into_iter().flat_map(|q| q.split('&')) {
            if part.is_empty() {
                continue;
            }
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(text, &format!("query attribute `{part}` has no `=`")))?;
            match name {
                "module-path" => set_once(text, name, &mut uri.module_path, decode_str(text, value)?)?,
                "pin-value" => {
                    return Err(Pkcs11Error::invalid_argument(
                        "PKCS#11 URI carries `pin-value`: PINs are taken only from `pin_file` or `pin_env`",
                    ))
                }
                // module-name, pin-source and vendor query attributes do not select anything here.
                _ => {}
            }
        }
        Ok(uri)
    }

    fn set_path_attribute(&mut self, text: &str, name: &str, value: &str) -> Result<()> {
        match name {
            "token" => set_once(text, name, &mut self.token, decode_str(text, value)?),
            "serial" => set_once(text, name, &mut self.serial, decode_str(text, value)?),
            "manufacturer" => {
                set_once(text, name, &mut self.manufacturer, decode_str(text, value)?)
            }
            "model" => set_once(text, name, &mut self.model, decode_str(text, value)?),
            "object" => set_once(text, name, &mut self.object, decode_str(text, value)?),
            "id" => set_once(
                text,
                name,
                &mut self.id,
                percent_decode_str(value).collect(),
            ),
            "slot-id" => {
                let decoded = decode_str(text, value)?;
                let n = decoded
                    .parse::<u64>()
                    .map_err(|_| bad(text, "`slot-id` must be a decimal number"))?;
                set_once(text, name, &mut self.slot_id, n)
            }
            "type" => {
                let t = match decode_str(text, value)?.as_str() {
                    "private" => ObjectType::Private,
                    "public" => ObjectType::Public,
                    "cert" => ObjectType::Cert,
                    "secret-key" => ObjectType::SecretKey,
                    "data" => ObjectType::Data,
                    other => return Err(bad(text, &format!("unknown object type `{other}`"))),
                };
                set_once(text, name, &mut self.object_type, t)
            }
            // Attributes that describe the library or slot do not change which token we pick.
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => Ok(()),
            vendor if vendor.starts_with("x-") => Ok(()),
            other => Err(bad(text, &format!("unknown path attribute `{other}`"))),
        }
    }

    /// True when the URI names an object (label or id).
    pub fn selects_object(&self) -> bool {
        self.object.is_some() || self.id.is_some()
    }

    /// True when the URI says anything about the token.
    pub fn selects_token(&self) -> bool {
        self.token.is_some()
            || self.serial.is_some()
            || self.manufacturer.is_some()
            || self.model.is_some()
            || self.slot_id.is_some()
    }

    /// A short description of the object selector for messages (`object=dev;id=%01`).
    pub fn object_description(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            parts.push(format!("id={hex}"));
        }
        if parts.is_empty() {
            "any object".to_string()
        } else {
            parts.join(";")
        }
    }
}

fn set_once<T>(text: &str, name: &str, slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(bad(text, &format!("attribute `{name}` appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn decode_str(text: &str, value: &str) -> Result<String> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad(text, "a percent-encoded value is not UTF-8"))
}

fn bad(text: &str, why: &str) -> Pkcs11Error {
    // URIs hold no secrets once pin-value is refused, so quoting them helps the reader.
    let shown: String = text.chars().take(200).collect();
    Pkcs11Error::invalid_argument(format!("invalid PKCS#11 URI `{shown}`: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_object_with_percent_encoding() {
        let u = Pkcs11Uri::parse("pkcs11:token=My%20Token;object=dev%3Bkey;id=%01%ff;type=private")
            .unwrap();
        assert_eq!(u.token.as_deref(), Some("My Token"));
        assert_eq!(u.object.as_deref(), Some("dev;key"));
        assert_eq!(u.id, Some(vec![0x01, 0xff]));
        assert_eq!(u.object_type, Some(ObjectType::Private));
        assert!(u.selects_token() && u.selects_object());
        assert_eq!(u.object_description(), "object=dev;key;id=%01%ff");
    }

    #[test]
    fn serial_slot_and_query() {
        let u = Pkcs11Uri::parse(
            "pkcs11:serial=1a2b;slot-id=3;x-vendor=1?module-path=/usr/lib/m.so&pin-source=file:/p",
        )
        .unwrap();
        assert_eq!(u.serial.as_deref(), Some("1a2b"));
        assert_eq!(u.slot_id, Some(3));
        assert_eq!(u.module_path.as_deref(), Some("/usr/lib/m.so"));
        assert!(!u.selects_object());
    }

    #[test]
    fn empty_uri_matches_anything() {
        assert_eq!(Pkcs11Uri::parse("pkcs11:").unwrap(), Pkcs11Uri::default());
    }

    #[test]
    fn refuses_malformed_input() {
        for (text, needle) in [
            ("token=x", "must start with"),
            ("pkcs11:token", "has no `=`"),
            ("pkcs11:lable=x", "unknown path attribute `lable`"),
            ("pkcs11:token=a;token=b", "appears twice"),
            ("pkcs11:slot-id=x", "decimal"),
            ("pkcs11:type=secret", "unknown object type"),
            ("pkcs11:object=%ff%fe", "not UTF-8"),
        ] {
            let e = Pkcs11Uri::parse(text).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorKind::InvalidArgument, "{text}");
            assert!(e.message().contains(needle), "{text}: {}", e.message());
        }
    }

    #[test]
    fn refuses_pin_value_without_echoing_it() {
        let e = Pkcs11Uri::parse("pkcs11:token=t?pin-value=123456").unwrap_err();
        assert!(e.message().contains("pin-value"));
        assert!(!e.message().contains("123456"));
    }
}
