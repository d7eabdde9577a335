//! Device twins: tags and desired / reported properties with versions and merge-patch
//! semantics (`null` deletes a key), the IoT Hub limits on keys, values, depth and size, and the
//! twin's JSON form.
//!
//! A million twins must fit in memory, so the property maps are `Arc`s: every device of a cohort
//! starts out sharing one map, and a patch copies only the twin it changes (`Arc::make_mut`).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::clock::{Clock, Micros};
use crate::hub::error::HubError;

/// A JSON object.
pub(crate) type Object = Map<String, Value>;

/// Size limits per section, in bytes of compact JSON.
pub(crate) const TAGS_LIMIT: usize = 8 * 1024;
/// Desired properties limit.
pub(crate) const DESIRED_LIMIT: usize = 32 * 1024;
/// Reported properties limit.
pub(crate) const REPORTED_LIMIT: usize = 32 * 1024;
/// Deepest nesting allowed in tags and properties.
pub(crate) const MAX_DEPTH: usize = 10;
/// Longest key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// One properties section (desired or reported) with its own version.
#[derive(Debug, Clone)]
pub struct Section {
    /// The properties, shared copy-on-write.
    pub(crate) props: Arc<Object>,
    /// `$version`: bumped by every patch to this section.
    pub(crate) version: u64,
    /// When the section last changed (`$metadata.$lastUpdated`).
    pub(crate) updated_us: Micros,
}

impl Section {
    fn new(props: Arc<Object>) -> Self {
        Section {
            props,
            version: 1,
            updated_us: 0,
        }
    }

    /// The section as the twin shows it, with `$metadata` and `$version`.
    pub(crate) fn to_json(&self, clock: &Clock) -> Value {
        let mut out = (*self.props).clone();
        out.insert(
            "$metadata".into(),
            metadata(&self.props, &clock.iso_at(self.updated_us)),
        );
        out.insert("$version".into(), json!(self.version));
        Value::Object(out)
    }

    /// The section for the MQTT twin GET answer: properties and `$version`, no metadata.
    pub(crate) fn to_device_json(&self) -> Value {
        let mut out = (*self.props).clone();
        out.insert("$version".into(), json!(self.version));
        Value::Object(out)
    }
}

/// `$metadata` mirrors the object's shape with `$lastUpdated` at every level. fleetsim keeps
/// one time per section, so every level shows the section's last update.
fn metadata(props: &Object, updated: &str) -> Value {
    let mut out = Map::new();
    out.insert("$lastUpdated".into(), Value::String(updated.to_owned()));
    for (key, value) in props {
        let child = match value {
            Value::Object(inner) => metadata(inner, updated),
            _ => json!({ "$lastUpdated": updated }),
        };
        out.insert(key.clone(), child);
    }
    Value::Object(out)
}

/// A device twin's mutable state.
#[derive(Debug, Clone)]
pub struct Twin {
    /// Tags, set by the back end only.
    pub tags: Arc<Object>,
    /// When the tags last changed.
    pub(crate) tags_updated_us: Micros,
    /// `properties.desired`.
    pub desired: Section,
    /// `properties.reported`.
    pub(crate) reported: Section,
    /// The twin's version: bumped by every change to any part.
    pub(crate) version: u64,
}

impl Twin {
    /// A new twin sharing the given initial maps.
    pub fn new(tags: Arc<Object>, desired: Arc<Object>, reported: Arc<Object>) -> Self {
        Twin {
            tags,
            tags_updated_us: 0,
            desired: Section::new(desired),
            reported: Section::new(reported),
            version: 1,
        }
    }

    /// The etag, derived from the version as IoT Hub does (base64 of the big-endian number).
    pub(crate) fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes())
    }

    /// Whether an `If-Match` value (quoted or not; `*` matches all) matches this twin.
    pub(crate) fn etag_matches(&self, if_match: &str) -> bool {
        let bare = if_match.trim().trim_matches('"');
        bare == "*" || bare == self.etag()
    }

    /// Merges a patch into the tags (`null` deletes).
    pub(crate) fn patch_tags(&mut self, patch: &Object, now: Micros) -> Result<(), HubError> {
        let merged = merged_checked(&self.tags, patch, "tags", TAGS_LIMIT)?;
        self.tags = Arc::new(merged);
        self.tags_updated_us = now;
        self.version += 1;
        Ok(())
    }

    /// Merges a patch into the desired properties; returns the new desired `$version`.
    pub(crate) fn patch_desired(&mut self, patch: &Object, now: Micros) -> Result<u64, HubError> {
        patch_section(
            &mut self.desired,
            patch,
            "properties.desired",
            DESIRED_LIMIT,
            now,
        )?;
        self.version += 1;
        Ok(self.desired.version)
    }

    /// Merges a patch into the reported properties; returns the new reported `$version`.
    pub(crate) fn patch_reported(&mut self, patch: &Object, now: Micros) -> Result<u64, HubError> {
        patch_section(
            &mut self.reported,
            patch,
            "properties.reported",
            REPORTED_LIMIT,
            now,
        )?;
        self.version += 1;
        Ok(self.reported.version)
    }

    /// Replaces tags and desired properties (`PUT /twins/{id}`).
    pub(crate) fn replace(
        &mut self,
        tags: Object,
        desired: Object,
        now: Micros,
    ) -> Result<(), HubError> {
        validate_section(&tags, "tags", TAGS_LIMIT)?;
        validate_section(&desired, "properties.desired", DESIRED_LIMIT)?;
        self.tags = Arc::new(tags);
        self.tags_updated_us = now;
        self.desired.props = Arc::new(desired);
        self.desired.version += 1;
        self.desired.updated_us = now;
        self.version += 1;
        Ok(())
    }
}

fn patch_section(
    section: &mut Section,
    patch: &Object,
    what: &str,
    limit: usize,
    now: Micros,
) -> Result<(), HubError> {
    let merged = merged_checked(&section.props, patch, what, limit)?;
    section.props = Arc::new(merged);
    section.version += 1;
    section.updated_us = now;
    Ok(())
}

/// `base` with `patch` merged in, after checking the patch and the size of the result.
fn merged_checked(
    base: &Object,
    patch: &Object,
    what: &str,
    limit: usize,
) -> Result<Object, HubError> {
    validate_object(patch, what, 1, true)?;
    let mut merged = base.clone();
    merge_patch(&mut merged, patch);
    check_size(&merged, what, limit)?;
    Ok(merged)
}

/// JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Object, patch: &Object) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge_patch(existing, inner),
                _ => {
                    let mut fresh = Map::new();
                    merge_patch(&mut fresh, inner);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Checks a whole section (no nulls allowed) and its size.
pub(crate) fn validate_section(obj: &Object, what: &str, limit: usize) -> Result<(), HubError> {
    validate_object(obj, what, 1, false)?;
    check_size(obj, what, limit)
}

fn check_size(obj: &Object, what: &str, limit: usize) -> Result<(), HubError> {
    let size = serde_json::to_vec(obj)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(HubError::new(
            crate::hub::error::ErrorCode::MessageTooLarge,
            format!("{what} would be {size} bytes; the limit is {limit} bytes"),
        ));
    }
    Ok(())
}

fn validate_object(obj: &Object, path: &str, depth: usize, nulls: bool) -> Result<(), HubError> {
    if depth > MAX_DEPTH {
        return Err(HubError::invalid(format!(
            "{path} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    for (key, value) in obj {
        validate_key(key, path)?;
        let here = format!("{path}.{key}");
        match value {
            Value::Array(_) => {
                return Err(HubError::invalid(format!(
                    "{here} is an array; twin values must be a bool, number, string or object"
                )))
            }
            Value::Null if !nulls => {
                return Err(HubError::invalid(format!(
                    "{here} is null; null only deletes a key in a patch"
                )))
            }
            Value::Object(inner) => validate_object(inner, &here, depth + 1, nulls)?,
            _ => {}
        }
    }
    Ok(())
}

fn validate_key(key: &str, path: &str) -> Result<(), HubError> {
    let bad = key
        .chars()
        .find(|c| *c == '.' || *c == '$' || *c == ' ' || c.is_control());
    if key.is_empty() || key.len() > MAX_KEY_LEN || bad.is_some() {
        let why = match bad {
            Some(c) => format!("contains {c:?}"),
            None if key.is_empty() => "is empty".to_owned(),
            None => format!("is {} bytes long", key.len()),
        };
        return Err(HubError::invalid(format!(
            "invalid key {key:?} in {path}: it {why}; keys are 1 to {MAX_KEY_LEN} bytes without '.', '$', spaces or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn twin() -> Twin {
        Twin::new(
            Arc::new(obj(json!({"building": "43"}))),
            Arc::new(Map::new()),
            Arc::new(obj(json!({"firmware": "1.0"}))),
        )
    }

    #[test]
    fn merge_patch_merges_and_deletes() {
        let mut t = obj(json!({"a": 1, "b": {"c": 2, "d": 3}}));
        merge_patch(
            &mut t,
            &obj(json!({"a": null, "b": {"c": null, "e": 5}, "f": "x"})),
        );
        assert_eq!(Value::Object(t), json!({"b": {"d": 3, "e": 5}, "f": "x"}));
    }

    #[test]
    fn patches_bump_versions_and_copy_on_write() {
        let shared = Arc::new(obj(json!({"building": "43"})));
        let mut a = Twin::new(shared.clone(), Arc::new(Map::new()), Arc::new(Map::new()));
        let b = Twin::new(shared.clone(), Arc::new(Map::new()), Arc::new(Map::new()));
        a.patch_tags(&obj(json!({"ring": "canary"})), 5).unwrap();
        assert_eq!(a.version, 2);
        assert_eq!(a.tags.get("ring"), Some(&json!("canary")));
        assert_eq!(
            b.tags.get("ring"),
            None,
            "the other twin keeps the shared map"
        );
        let v = a.patch_desired(&obj(json!({"fw": "2"})), 6).unwrap();
        assert_eq!((v, a.version, a.desired.updated_us), (2, 3, 6));
    }

    #[test]
    fn etag_wildcards_and_quotes() {
        let t = twin();
        assert!(t.etag_matches("*"));
        assert!(t.etag_matches("\"*\""));
        assert!(t.etag_matches(&format!("\"{}\"", t.etag())));
        assert!(!t.etag_matches("\"AAAAAAAAAAk=\""));
    }

    #[test]
    fn rejects_bad_keys_arrays_depth_and_size() {
        let mut t = twin();
        let e = t.patch_tags(&obj(json!({"a.b": 1})), 1).unwrap_err();
        assert!(
            e.message.contains("invalid key \"a.b\" in tags"),
            "{}",
            e.message
        );
        let e = t.patch_desired(&obj(json!({"x": [1, 2]})), 1).unwrap_err();
        assert!(
            e.message.contains("properties.desired.x is an array"),
            "{}",
            e.message
        );
        let mut deep = json!(1);
        for _ in 0..11 {
            deep = json!({ "k": deep });
        }
        assert!(t.patch_desired(&obj(deep), 1).is_err());
        let big = "x".repeat(9000);
        let e = t.patch_tags(&obj(json!({ "big": big })), 1).unwrap_err();
        assert_eq!(e.code, crate::hub::error::ErrorCode::MessageTooLarge);
        assert_eq!(t.version, 1, "failed patches change nothing");
    }

    #[test]
    fn section_json_has_metadata_and_version() {
        let t = twin();
        let clock = Clock::start();
        let j = t.reported.to_json(&clock);
        assert_eq!(j["firmware"], json!("1.0"));
        assert_eq!(j["$version"], json!(1));
        assert!(j["$metadata"]["firmware"]["$lastUpdated"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }
}
