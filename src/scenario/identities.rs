//! A scenario's device identities with their keys (`fleetsim keys`), to create the same fleet
//! on a real IoT Hub: a key file for `fleetsim devices --keys` ([`crate::fleet::keyfile`]), or
//! IoT Hub's bulk-import format, one `ExportImportDevice` JSON object per line (`id`,
//! `importMode: createOrUpdate`, `status`, `authentication` with the SAS keys, the cohort's
//! `tags`, and its `properties.desired` if it has any) for an import job, which reads such a
//! file as the blob `devices.txt`.
//!
//! The keys are the ones a fleetsim hub with the same state directory gives these devices:
//! derived from its secret (made at first use), so exporting again gives the same keys.

use std::io::{self, Write};

use serde::Serialize;

use crate::fleet::keyfile;
use crate::hub::auth::Authority;
use crate::hub::twin::Object;
use crate::sas::DeviceKeys;
use crate::scenario::build::{cohort_ids, json_object};
use crate::scenario::Scenario;

/// What `fleetsim keys` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `deviceId,primaryKey,secondaryKey` with a header: the key file of `fleetsim devices --keys`.
    Csv,
    /// IoT Hub's bulk-import format (JSON lines), for an import job.
    Import,
}

/// One line of the bulk-import format.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportDevice<'a> {
    id: &'a str,
    import_mode: &'static str,
    status: &'static str,
    authentication: Authentication<'a>,
    tags: &'a Object,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<Desired<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Authentication<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    symmetric_key: &'a DeviceKeys,
}

#[derive(Serialize)]
struct Desired<'a> {
    desired: &'a Object,
}

/// Writes every device of `scenario` (all cohorts, offline devices included) with its keys
/// from `authority` to `out` in `format`; answers how many devices it wrote.
pub fn export(
    scenario: &Scenario,
    authority: &Authority,
    format: KeyFormat,
    out: &mut impl Write,
) -> io::Result<u64> {
    if format == KeyFormat::Csv {
        writeln!(out, "{}", keyfile::HEADER)?;
    }
    let mut n = 0;
    for cohort in &scenario.cohorts {
        let tags = json_object(&cohort.tags);
        let desired = json_object(&cohort.desired);
        for id in cohort_ids(cohort) {
            let keys = authority.device_keys(&id);
            match format {
                KeyFormat::Csv => writeln!(out, "{}", keyfile::line(&id, &keys))?,
                KeyFormat::Import => {
                    let device = ImportDevice {
                        id: &id,
                        import_mode: "createOrUpdate",
                        status: "enabled",
                        authentication: Authentication {
                            kind: "sas",
                            symmetric_key: &keys,
                        },
                        tags: &tags,
                        properties: (!desired.is_empty()).then_some(Desired { desired: &desired }),
                    };
                    serde_json::to_writer(&mut *out, &device)?;
                    writeln!(out)?;
                }
            }
            n += 1;
        }
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::keyfile::KeyFile;
    use crate::hub::auth::default_policies;
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::path::Path;

    const SCENARIO: &str = r#"
name = "keys"
duration = "1m"
[[cohort]]
name = "a"
count = 2
id_prefix = "a-"
tags = { building = "43" }
desired = { fw = "1.2" }
offline = 1.0
[[cohort]]
name = "b"
count = 1
id_prefix = "b-"
"#;

    fn authority() -> Authority {
        Authority::new(vec![], default_policies(), b"s".to_vec(), HashMap::new())
    }

    #[test]
    fn csv_is_a_key_file_with_every_device() {
        let scenario = crate::scenario::parse(SCENARIO, "keys.toml").unwrap();
        let a = authority();
        let mut out = Vec::new();
        assert_eq!(export(&scenario, &a, KeyFormat::Csv, &mut out).unwrap(), 3);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("deviceId,primaryKey,secondaryKey\na-0,"));
        let file = KeyFile::parse(&text, Path::new("k.csv")).unwrap();
        assert_eq!(file.len(), 3);
        for id in ["a-0", "a-1", "b-0"] {
            assert_eq!(file.primary_key(id), Some(&*a.device_keys(id).primary_key));
        }
    }

    #[test]
    fn import_lines_are_iot_hub_export_import_devices() {
        let scenario = crate::scenario::parse(SCENARIO, "keys.toml").unwrap();
        let a = authority();
        let mut out = Vec::new();
        export(&scenario, &a, KeyFormat::Import, &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let keys = a.device_keys("a-1");
        assert_eq!(
            lines[1],
            json!({
                "id": "a-1",
                "importMode": "createOrUpdate",
                "status": "enabled",
                "authentication": {"type": "sas", "symmetricKey": {
                    "primaryKey": keys.primary_key, "secondaryKey": keys.secondary_key}},
                "tags": {"building": "43"},
                "properties": {"desired": {"fw": "1.2"}},
            })
        );
        assert_eq!(lines[2]["tags"], json!({}));
        assert!(lines[2].get("properties").is_none());
    }
}
