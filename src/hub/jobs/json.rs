//! The JSON forms of a job: the JobResponse document and the device job records
//! (`SELECT * FROM devices.jobs`).

use serde_json::{json, Map, Value};

use crate::clock::{iso8601, Clock};
use crate::hub::error::ErrorCode;
use crate::hub::jobs::{DeviceError, DeviceRecord, DeviceStatus, Job, JobKind, JobRequest};

impl JobKind {
    /// The request's field for this kind, and its value: `cloudToDeviceMethod` or `updateTwin`.
    pub(crate) fn to_json(&self) -> (&'static str, Value) {
        match self {
            JobKind::Method(m) => (
                "cloudToDeviceMethod",
                json!({
                    "methodName": &*m.name,
                    "payload": &*m.payload,
                    "responseTimeoutInSeconds": m.response_timeout_s,
                    "connectTimeoutInSeconds": m.connect_timeout_s,
                }),
            ),
            JobKind::Twin(t) => {
                let mut twin = Map::new();
                twin.insert("etag".into(), json!("*"));
                if let Some(tags) = &t.tags {
                    twin.insert("tags".into(), Value::Object((**tags).clone()));
                }
                if let Some(desired) = &t.desired {
                    twin.insert("properties".into(), json!({ "desired": &**desired }));
                }
                ("updateTwin", Value::Object(twin))
            }
        }
    }
}

impl JobRequest {
    /// The request as a JobRequest body that [`JobRequest::from_json`] reads back (its internal
    /// [`JobControl`](crate::hub::jobs::JobControl) is not part of it).
    pub(crate) fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("jobId".into(), json!(self.job_id));
        out.insert("type".into(), json!(self.kind.type_name()));
        out.insert("queryCondition".into(), json!(self.query_condition));
        if let Some(start) = self.start_time {
            out.insert("startTime".into(), json!(iso8601(start)));
        }
        out.insert(
            "maxExecutionTimeInSeconds".into(),
            json!(self.max_execution_s),
        );
        let (key, what) = self.kind.to_json();
        out.insert(key.into(), what);
        Value::Object(out)
    }
}

impl Job {
    /// The JobResponse document.
    pub(crate) fn to_json(&self, clock: &Clock) -> Value {
        let r = &self.request;
        let mut out = Map::new();
        out.insert("jobId".into(), json!(r.job_id));
        out.insert("type".into(), json!(r.kind.type_name()));
        out.insert("status".into(), json!(self.status.name()));
        out.insert("queryCondition".into(), json!(r.query_condition));
        out.insert("createdTime".into(), json!(clock.iso_at(self.created_us)));
        out.insert("startTime".into(), json!(clock.iso_at(self.start_us)));
        if let Some(end) = self.end_us {
            out.insert("endTime".into(), json!(clock.iso_at(end)));
        }
        out.insert("maxExecutionTimeInSeconds".into(), json!(r.max_execution_s));
        let (key, what) = r.kind.to_json();
        out.insert(key.into(), what);
        if let Some(reason) = &self.failure_reason {
            out.insert("failureReason".into(), json!(reason));
        }
        if let Some(msg) = &self.status_message {
            out.insert("statusMessage".into(), json!(msg));
        }
        out.insert(
            "deviceJobStatistics".into(),
            serde_json::to_value(self.stats).unwrap_or(Value::Null),
        );
        Value::Object(out)
    }

    /// The per-device record document (`SELECT * FROM devices.jobs`).
    pub(crate) fn record_json(&self, rec: &DeviceRecord, clock: &Clock) -> Value {
        let mut out = Map::new();
        out.insert("deviceId".into(), json!(&*rec.device_id));
        out.insert("jobId".into(), json!(self.request.job_id));
        out.insert("jobType".into(), json!(self.request.kind.type_name()));
        out.insert("status".into(), json!(rec.status.name()));
        out.insert(
            "createdDateTimeUtc".into(),
            json!(clock.iso_at(self.created_us)),
        );
        let start = if rec.start_us > 0 {
            rec.start_us
        } else {
            self.start_us
        };
        out.insert("startTimeUtc".into(), json!(clock.iso_at(start)));
        if rec.status.is_terminal() {
            out.insert("endTimeUtc".into(), json!(clock.iso_at(rec.end_us)));
        }
        let updated = rec.end_us.max(rec.start_us).max(self.created_us);
        out.insert(
            "lastUpdatedDateTimeUtc".into(),
            json!(clock.iso_at(updated)),
        );
        if matches!(rec.error, DeviceError::None | DeviceError::DeviceStatus)
            && matches!(self.request.kind, JobKind::Method(_))
            && rec.status.is_terminal()
            && rec.status != DeviceStatus::Canceled
        {
            out.insert(
                "outcome".into(),
                json!({ "deviceMethodResponse": {
                    "status": rec.method_status,
                    "payload": rec.payload.as_deref().unwrap_or(&Value::Null),
                }}),
            );
        }
        if let Some((code, description)) = error_body(rec) {
            out.insert(
                "error".into(),
                json!({ "code": code, "description": description }),
            );
        }
        Value::Object(out)
    }
}

fn error_body(rec: &DeviceRecord) -> Option<(&'static str, String)> {
    Some(match rec.error {
        DeviceError::None => return None,
        DeviceError::NotOnline => (
            ErrorCode::DeviceNotOnline.name(),
            format!(
                "{}: the device was not online within the connect timeout",
                ErrorCode::DeviceNotOnline.number()
            ),
        ),
        DeviceError::Timeout => (
            ErrorCode::GatewayTimeout.name(),
            format!(
                "{}: the device did not answer within the response timeout",
                ErrorCode::GatewayTimeout.number()
            ),
        ),
        DeviceError::DeviceStatus => (
            "DeviceMethodFailed",
            format!("the device answered status {}", rec.method_status),
        ),
        DeviceError::Expired => (
            "JobExpired",
            "the job's maxExecutionTimeInSeconds ended before this device was reached".to_owned(),
        ),
        DeviceError::Rejected => (
            "ArgumentInvalid",
            "the device or its twin refused the operation".to_owned(),
        ),
    })
}
