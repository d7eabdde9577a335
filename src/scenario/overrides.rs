//! Values set at paths into a scenario (`fleetsim sweep --set KEY=VALUE`): `hub.tier`,
//! `hub.units`, `cohort.<name>.count`, `cohort.<name>.methods.<method>.error_rate`,
//! `rollout.<id>.rate.base_per_minute`, `job.<id>.start`, `duration`, ... Array tables
//! (`[[cohort]]`, `[[rollout]]`, `[[job]]`) are addressed by their `name` or `id`; any other
//! segment is a key of a table, made when missing. The scenario is then parsed as a whole, so an
//! unknown key or a value of the wrong type is the parser's error, named by the key set.

use super::{parse, Scenario};

/// Why values cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("{file}: not TOML: {message}")]
    Toml { file: String, message: String },
    #[error("--set {key}: {message}")]
    Path { key: String, message: String },
    #[error("--set {keys}: the scenario it makes is refused: {message}")]
    Invalid { keys: String, message: String },
}

/// The array tables addressed by a field of theirs rather than by position.
const NAMED_ARRAYS: [(&str, &str); 3] = [("cohort", "name"), ("rollout", "id"), ("job", "id")];

/// `text` (the scenario file `file`) with each `(key, value)` of `sets` set, and the scenario it
/// makes. A value is read as TOML (`4`, `0.01`, `true`, `"S3"`) and otherwise taken as a string
/// (`S3`, `+10s`).
pub(crate) fn apply(
    text: &str,
    file: &str,
    sets: &[(String, String)],
) -> Result<(String, Scenario), OverrideError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| OverrideError::Toml {
        file: file.to_owned(),
        message: e.message().trim().to_owned(),
    })?;
    for (key, value) in sets {
        set(&mut doc, key, value).map_err(|message| OverrideError::Path {
            key: key.clone(),
            message,
        })?;
    }
    let out = toml::to_string(&doc).map_err(|e| OverrideError::Toml {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let scenario = parse(&out, file).map_err(|e| OverrideError::Invalid {
        keys: sets
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" --set "),
        message: e.message,
    })?;
    Ok((out, scenario))
}

/// Sets `key` (a dotted path) to `value` in `doc`.
fn set(doc: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let segments: Vec<&str> = key.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("a key is dot-separated names, such as hub.units".to_owned());
    }
    let (mut table, rest) = match NAMED_ARRAYS.iter().find(|(a, _)| *a == segments[0]) {
        Some(&(array, field)) => {
            let [_, name, rest @ ..] = &segments[..] else {
                return Err(format!("say which [[{array}]]: {array}.<{field}>.<key>"));
            };
            (named(doc, array, field, name)?, rest)
        }
        None => (doc, &segments[..]),
    };
    let Some((last, path)) = rest.split_last() else {
        return Err("say which key of it to set".to_owned());
    };
    for (i, segment) in path.iter().enumerate() {
        let entry = table
            .entry(segment.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(format!(
                    "{} is a {}, not a table",
                    segments[..segments.len() - rest.len() + i + 1].join("."),
                    other.type_str()
                ))
            }
        };
    }
    table.insert(last.to_string(), value_of(value));
    Ok(())
}

/// The `[[array]]` element whose `field` is `name`.
fn named<'a>(
    doc: &'a mut toml::Table,
    array: &str,
    field: &str,
    name: &str,
) -> Result<&'a mut toml::Table, String> {
    let elements = match doc.get_mut(array) {
        Some(toml::Value::Array(a)) => a,
        _ => return Err(format!("the scenario has no [[{array}]]")),
    };
    let names: Vec<String> = elements
        .iter()
        .filter_map(|e| e.get(field).and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    elements
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| t.get(field).and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| {
            format!(
                "no [[{array}]] with {field} '{name}' (the scenario has: {})",
                names.join(", ")
            )
        })
}

/// `text` as a TOML value, or as a string when it is not one.
fn value_of(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
name = "t"
duration = "1h"
[hub]
tier = "S1"
[[cohort]]
name = "a"
count = 10
id_prefix = "a-"
[[job]]
id = "j"
type = "scheduleDeviceMethod"
query = "*"
method = { name = "reboot" }
"#;

    fn apply1(key: &str, value: &str) -> Result<Scenario, String> {
        apply(TEXT, "t.toml", &[(key.to_owned(), value.to_owned())])
            .map(|(_, s)| s)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sets_tables_named_elements_and_missing_keys() {
        let s = apply1("hub.tier", "S3").unwrap();
        assert_eq!(s.hub.tier.0, crate::hub::throttle::Tier::S3);
        assert_eq!(apply1("hub.units", "4").unwrap().hub.units, 4);
        assert_eq!(apply1("cohort.a.count", "25").unwrap().cohorts[0].count, 25);
        let s = apply1("cohort.a.methods.reboot.error_rate", "0.1").unwrap();
        assert!(s.cohorts[0].methods.contains_key("reboot"));
        let s = apply1("job.j.start", "+20s").unwrap();
        assert_eq!(s.jobs[0].start.0.as_secs(), 20);
    }

    #[test]
    fn unknown_keys_names_and_wrong_types_are_errors_that_say_so() {
        let err = apply1("hub.unitz", "4").unwrap_err();
        assert!(
            err.contains("--set hub.unitz=4") && err.contains("unitz"),
            "{err}"
        );
        let err = apply1("cohort.b.count", "4").unwrap_err();
        assert!(
            err.contains("no [[cohort]] with name 'b' (the scenario has: a)"),
            "{err}"
        );
        let err = apply1("hub.units", "many").unwrap_err();
        assert!(err.contains("--set hub.units=many"), "{err}");
        let err = apply1("hub.tier.x", "1").unwrap_err();
        assert!(err.contains("hub.tier is a string, not a table"), "{err}");
        let err = apply1("rollout.r.rate.base_per_minute", "1").unwrap_err();
        assert!(err.contains("the scenario has no [[rollout]]"), "{err}");
        assert!(apply1("hub..units", "1").is_err());
    }
}
