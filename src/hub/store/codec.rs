//! The store's rows: twins, job headers and device results as compact JSON text (written by
//! the writer thread, never the engine), and reading every row back when the store opens.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::clock::Micros;
use crate::hub::jobs::{DeviceError, DeviceStatus, JobRequest, JobStatus};
use crate::hub::twin::{Object, Section, Twin};

use super::schema::{self, failed};
use super::{Saved, SavedDevice, SavedJob, SavedResult, StoreError};

/// What the store keeps of a job besides its devices: the request and where the job stands.
#[derive(Debug, Clone)]
pub(crate) struct JobHeader {
    /// The job's slot.
    pub(crate) slot: u32,
    /// The request.
    pub(crate) request: JobRequest,
    /// Its status.
    pub(crate) status: JobStatus,
    /// When it was created.
    pub(crate) created_us: Micros,
    /// When it is to start.
    pub(crate) start_us: Micros,
    /// When it ended.
    pub(crate) end_us: Option<Micros>,
    /// Why it failed.
    pub(crate) failure_reason: Option<String>,
}

impl JobHeader {
    pub(super) fn encode(&self) -> String {
        json!({
            "request": self.request.to_json(),
            "status": self.status.name(),
            "created": self.created_us,
            "start": self.start_us,
            "end": self.end_us,
            "failureReason": self.failure_reason,
        })
        .to_string()
    }

    fn decode(slot: u32, text: &str) -> Result<JobHeader, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let request = JobRequest::from_json(&v["request"], None).map_err(|e| e.to_string())?;
        let status = v["status"]
            .as_str()
            .and_then(JobStatus::parse)
            .ok_or("no status")?;
        Ok(JobHeader {
            slot,
            request,
            status,
            created_us: micros(&v["created"])?,
            start_us: micros(&v["start"])?,
            end_us: v["end"].as_u64(),
            failure_reason: v["failureReason"].as_str().map(str::to_owned),
        })
    }
}

fn micros(v: &Value) -> Result<Micros, String> {
    v.as_u64().ok_or_else(|| format!("{v} is not a time"))
}

/// A twin section as the store writes it, borrowed: written straight to text.
#[derive(Serialize)]
struct SectionRow<'a> {
    props: &'a Object,
    version: u64,
    updated: Micros,
}

impl<'a> From<&'a Section> for SectionRow<'a> {
    fn from(s: &'a Section) -> Self {
        SectionRow {
            props: &s.props,
            version: s.version,
            updated: s.updated_us,
        }
    }
}

/// A device row's twin and status, borrowed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwinRow<'a> {
    enabled: bool,
    version: u64,
    tags: &'a Object,
    tags_updated: Micros,
    desired: SectionRow<'a>,
    reported: SectionRow<'a>,
}

fn section_of(v: &Value) -> Result<Section, String> {
    Ok(Section {
        props: Arc::new(object(&v["props"])?),
        version: v["version"].as_u64().ok_or("no $version")?,
        updated_us: micros(&v["updated"])?,
    })
}

fn object(v: &Value) -> Result<Object, String> {
    v.as_object()
        .cloned()
        .ok_or_else(|| format!("{v} is not an object"))
}

/// A twin and the device's status as a row.
pub(super) fn encode_twin(twin: &Twin, enabled: bool) -> String {
    let row = TwinRow {
        enabled,
        version: twin.version,
        tags: &twin.tags,
        tags_updated: twin.tags_updated_us,
        desired: (&twin.desired).into(),
        reported: (&twin.reported).into(),
    };
    // A map of JSON values always serializes.
    serde_json::to_string(&row).unwrap_or_default()
}

fn decode_twin(text: &str) -> Result<(Twin, bool), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let twin = Twin {
        tags: Arc::new(object(&v["tags"])?),
        tags_updated_us: micros(&v["tagsUpdated"])?,
        desired: section_of(&v["desired"])?,
        reported: section_of(&v["reported"])?,
        version: v["version"].as_u64().ok_or("no version")?,
    };
    Ok((twin, v["enabled"].as_bool().unwrap_or(true)))
}

/// Statuses and errors as the store numbers them: fixed here, whatever the enums' order.
const STATUSES: [DeviceStatus; 3] = [
    DeviceStatus::Completed,
    DeviceStatus::Failed,
    DeviceStatus::Canceled,
];
const ERRORS: [DeviceError; 6] = [
    DeviceError::None,
    DeviceError::NotOnline,
    DeviceError::Timeout,
    DeviceError::DeviceStatus,
    DeviceError::Expired,
    DeviceError::Rejected,
];

/// A device result as a row.
pub(super) fn encode_result(r: &SavedResult) -> String {
    let mut out = Map::new();
    let status = STATUSES.iter().position(|&s| s == r.status).unwrap_or(1);
    let error = ERRORS.iter().position(|&e| e == r.error).unwrap_or(0);
    out.insert("s".into(), json!(status));
    out.insert("e".into(), json!(error));
    out.insert("m".into(), json!(r.method_status));
    out.insert("at".into(), json!([r.scheduled_us, r.start_us, r.end_us]));
    if let Some(p) = &r.payload {
        out.insert("p".into(), (**p).clone());
    }
    Value::Object(out).to_string()
}

fn decode_result(record: u32, text: &str) -> Result<SavedResult, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let pick = |key: &str, len: usize| {
        v[key]
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < len)
            .ok_or_else(|| format!("{key} is {}", v[key]))
    };
    let at = |i: usize| micros(&v["at"][i]);
    Ok(SavedResult {
        record,
        status: STATUSES[pick("s", STATUSES.len())?],
        error: ERRORS[pick("e", ERRORS.len())?],
        method_status: v["m"]
            .as_i64()
            .and_then(|m| i32::try_from(m).ok())
            .ok_or("no method status")?,
        scheduled_us: at(0)?,
        start_us: at(1)?,
        end_us: at(2)?,
        payload: v.get("p").cloned().map(Box::new),
    })
}

/// The devices of the table (by registry position) with the changes of the device log applied
/// in order: a change replaces a device's twin, and its position unless it deletes the device.
fn replay(
    mut devices: Vec<(i64, SavedDevice)>,
    logged: Vec<(i64, SavedDevice)>,
) -> Vec<SavedDevice> {
    if !logged.is_empty() {
        let mut at: HashMap<String, usize> = devices
            .iter()
            .enumerate()
            .map(|(i, (_, d))| (d.id.clone(), i))
            .collect();
        for (seq, change) in logged {
            match at.get(&change.id) {
                Some(&i) => {
                    let (old_seq, device) = &mut devices[i];
                    if change.twin.is_some() {
                        *old_seq = seq;
                    }
                    device.twin = change.twin;
                }
                None => {
                    at.insert(change.id.clone(), devices.len());
                    devices.push((seq, change));
                }
            }
        }
        devices.sort_by_key(|&(seq, _)| seq);
    }
    devices.into_iter().map(|(_, d)| d).collect()
}

/// Reads everything the store at `path` holds.
pub(super) fn load(conn: &rusqlite::Connection, path: &Path) -> Result<Saved, StoreError> {
    let sql = |e| failed(path, e);
    let bad = |what: String| StoreError::Row {
        path: path.to_owned(),
        what,
    };
    let origin = schema::origin(conn, path)?;
    // Devices as (registry position, device), from the table or the log.
    let read = |query: &str| {
        let mut devices = Vec::new();
        let mut stmt = conn.prepare(query).map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            let id: String = row.get(0).map_err(sql)?;
            let seq: i64 = row.get(1).map_err(sql)?;
            let twin: Option<String> = row.get(2).map_err(sql)?;
            let twin = twin
                .map(|t| decode_twin(&t))
                .transpose()
                .map_err(|e| bad(format!("device '{id}': {e}")))?;
            devices.push((seq, SavedDevice { id, twin }));
        }
        Ok::<_, StoreError>(devices)
    };
    let devices = replay(
        read("SELECT id, seq, twin FROM devices ORDER BY seq")?,
        read("SELECT id, seq, twin FROM device_log ORDER BY n")?,
    );
    let mut jobs = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT jobs.slot, header, devices FROM jobs LEFT JOIN targets USING (slot) \
             ORDER BY jobs.slot",
        )
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let slot: u32 = row.get(0).map_err(sql)?;
        let header: String = row.get(1).map_err(sql)?;
        let targets: Option<String> = row.get(2).map_err(sql)?;
        let header =
            JobHeader::decode(slot, &header).map_err(|e| bad(format!("job slot {slot}: {e}")))?;
        let targets = targets
            .map(|t| serde_json::from_str::<Vec<String>>(&t))
            .transpose()
            .map_err(|e| bad(format!("targets of job slot {slot}: {e}")))?;
        jobs.push(SavedJob {
            header,
            targets,
            results: Vec::new(),
        });
    }
    let mut stmt = conn
        .prepare("SELECT slot, record, result FROM results ORDER BY slot, record")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    let mut at = 0;
    while let Some(row) = rows.next().map_err(sql)? {
        let slot: u32 = row.get(0).map_err(sql)?;
        let record: u32 = row.get(1).map_err(sql)?;
        let text: String = row.get(2).map_err(sql)?;
        let result = decode_result(record, &text)
            .map_err(|e| bad(format!("result {record} of job slot {slot}: {e}")))?;
        while jobs.get(at).is_some_and(|j| j.header.slot < slot) {
            at += 1;
        }
        match jobs.get_mut(at).filter(|j| j.header.slot == slot) {
            Some(job) => job.results.push(result),
            None => {
                return Err(bad(format!(
                    "a result of job slot {slot}, which is not saved"
                )))
            }
        }
    }
    Ok(Saved {
        origin,
        devices,
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_and_results_read_back_as_written() {
        let mut twin = Twin::new(
            Arc::new(object(&json!({"a": 1})).unwrap()),
            Arc::new(Map::new()),
            Arc::new(object(&json!({"fw": "1"})).unwrap()),
        );
        twin.patch_desired(&object(&json!({"x": {"y": true}})).unwrap(), 7)
            .unwrap();
        let (back, enabled) = decode_twin(&encode_twin(&twin, false)).unwrap();
        assert!(!enabled);
        assert_eq!(
            (
                back.version,
                back.etag(),
                back.desired.version,
                back.desired.updated_us
            ),
            (twin.version, twin.etag(), 2, 7)
        );
        assert_eq!(back.desired.props, twin.desired.props);
        assert_eq!(back.reported.props, twin.reported.props);

        let result = SavedResult {
            record: 4,
            status: DeviceStatus::Failed,
            error: DeviceError::DeviceStatus,
            method_status: 503,
            scheduled_us: 1,
            start_us: 2,
            end_us: 3,
            payload: Some(Box::new(json!({"why": "busy"}))),
        };
        let back = decode_result(4, &encode_result(&result)).unwrap();
        assert_eq!(
            (back.status, back.error, back.method_status, back.end_us),
            (DeviceStatus::Failed, DeviceError::DeviceStatus, 503, 3)
        );
        assert_eq!(back.payload, result.payload);
        assert!(decode_result(0, r#"{"s":9,"e":0,"m":0,"at":[0,0,0]}"#).is_err());
    }
}
