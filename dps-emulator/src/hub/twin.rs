//! Device twin documents as the service keeps them (service documentation "Understand and use
//! device twins in IoT Hub"): the desired and reported sections, each a JSON object with its
//! own `$version`, changed by patches in which `null` deletes a property.
//!
//! The rules the service documents and the emulator enforces on a patch: an object; keys
//! UTF-8, case-sensitive, at most 1 KB, without control characters, `.`, `$` or space; objects
//! nested at most 10 deep; each section at most 32 KiB
//! ([`dps_proto::hub::MAX_TWIN_SECTION_BYTES`]) once patched. The `$`-keys (`$version`) are
//! the service's, never a patch's.

use serde_json::{Map, Value};

/// Deepest nesting of objects in a twin section (service documentation: "The maximum depth of
/// JSON objects in tags, desired properties, and reported properties is 10").
pub const MAX_DEPTH: usize = 10;

/// Longest key, bytes ("up to 1 KB in length").
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a twin patch was refused (answered 400, as the service does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// The patch is not a JSON object.
    #[error("a twin patch must be a JSON object")]
    NotAnObject,
    /// The patch is not JSON.
    #[error("the twin patch is not JSON: {0}")]
    NotJson(String),
    /// A key breaks the documented rules.
    #[error("the twin key `{0}` is empty, longer than 1 KB, or has a control character, `.`, `$` or a space")]
    BadKey(String),
    /// Objects nest deeper than [`MAX_DEPTH`].
    #[error("twin objects may nest at most {MAX_DEPTH} deep")]
    TooDeep,
    /// The patched section would be larger than the service keeps.
    #[error("the twin section would be {0} bytes, more than the 32 KiB the service keeps")]
    TooLarge(usize),
}

fn key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_BYTES
        && !k
            .chars()
            .any(|c| c.is_control() || c == '.' || c == '$' || c == ' ')
}

fn check(obj: &Map<String, Value>, depth: usize) -> Result<(), TwinError> {
    if depth > MAX_DEPTH {
        return Err(TwinError::TooDeep);
    }
    for (k, v) in obj {
        if !key_ok(k) {
            return Err(TwinError::BadKey(k.escape_debug().to_string()));
        }
        if let Value::Object(inner) = v {
            check(inner, depth + 1)?;
        }
    }
    Ok(())
}

/// Parses and checks a patch (the body of a reported-properties PATCH, or a desired update).
pub fn parse_patch(bytes: &[u8]) -> Result<Map<String, Value>, TwinError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| TwinError::NotJson(e.to_string()))?;
    check_patch(v)
}

/// Checks a patch given as a JSON value.
pub fn check_patch(v: Value) -> Result<Map<String, Value>, TwinError> {
    let Value::Object(patch) = v else {
        return Err(TwinError::NotAnObject);
    };
    check(&patch, 1)?;
    Ok(patch)
}

/// A copy of `v` without the `null` members of its objects (a new property set to an object
/// holding nulls stores only the non-null members).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies `patch` to `section`: `null` deletes, an object merges into an object, anything else
/// replaces.
pub fn merge(section: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                section.remove(k);
            }
            Value::Object(p) => match section.get_mut(k) {
                Some(Value::Object(existing)) => merge(existing, p),
                _ => {
                    section.insert(k.clone(), without_nulls(v));
                }
            },
            other => {
                section.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Applies `patch` to a section holding `$version`, bumps the version and checks the size;
/// returns the new version. The section is left unchanged on error.
pub fn apply(
    section: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<u64, TwinError> {
    let mut next = section.clone();
    merge(&mut next, patch);
    let version = section_version(section) + 1;
    next.insert("$version".into(), Value::from(version));
    let size = serde_json::to_vec(&next)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > dps_proto::hub::MAX_TWIN_SECTION_BYTES {
        return Err(TwinError::TooLarge(size));
    }
    check(&next, 1).or_else(|e| match e {
        // `$version` is the service's own key.
        TwinError::BadKey(_) => Ok(()),
        e => Err(e),
    })?;
    *section = next;
    Ok(version)
}

/// The `$version` of a section (0 when it has none).
pub fn section_version(section: &Map<String, Value>) -> u64 {
    section.get("$version").and_then(Value::as_u64).unwrap_or(0)
}

/// A new section at `$version` 1 holding `properties`.
pub fn new_section(properties: Map<String, Value>) -> Map<String, Value> {
    let mut s: Map<String, Value> = properties
        .into_iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .collect();
    s.insert("$version".into(), Value::from(1u64));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn null_deletes_objects_merge_versions_grow() {
        let mut s = new_section(obj(json!({"a": 1, "b": {"c": 2, "d": 3}})));
        let v = apply(
            &mut s,
            &obj(json!({"a": null, "b": {"c": null, "e": 4}, "f": [1]})),
        )
        .unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            Value::Object(s),
            json!({"b": {"d": 3, "e": 4}, "f": [1], "$version": 2})
        );
    }

    #[test]
    fn refused_patches_leave_the_section_alone() {
        for bad in [
            json!([1]),
            json!({"a.b": 1}),
            json!({"$version": 9}),
            json!({"a b": 1}),
            json!({"": 1}),
            json!({"a\u{1}": 1}),
        ] {
            assert!(check_patch(bad.clone()).is_err(), "{bad}");
        }
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!({ "k": deep });
        }
        assert!(check_patch(deep.clone()).is_ok());
        assert_eq!(check_patch(json!({ "k": deep })), Err(TwinError::TooDeep));
        let mut s = new_section(Map::new());
        let big = obj(json!({"x": "y".repeat(40 * 1024)}));
        assert!(matches!(apply(&mut s, &big), Err(TwinError::TooLarge(_))));
        assert_eq!(section_version(&s), 1);
        assert!(parse_patch(b"{").is_err());
    }
}
