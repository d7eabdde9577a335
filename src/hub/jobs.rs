//! Jobs as IoT Hub defines them: the request a back end sends (parsed and checked), the job and
//! per-device records the engine keeps, and their JSON forms (JobResponse, device job records).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::clock::{parse_iso8601, Clock, Micros};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::twin::Object;
use crate::report::DeviceJobStatistics;

/// Largest method payload, request or response (128 KB).
pub const METHOD_PAYLOAD_LIMIT: usize = 128 * 1024;
/// Default `maxExecutionTimeInSeconds`.
pub const DEFAULT_MAX_EXECUTION_S: u64 = 3600;

/// A direct-method invocation, in a job or on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    /// `methodName`.
    pub name: Arc<str>,
    /// `payload` (JSON null when absent).
    pub payload: Arc<Value>,
    /// `responseTimeoutInSeconds`, 5..=300, default 30.
    pub response_timeout_s: u32,
    /// `connectTimeoutInSeconds`, 0..=300, default 0 (the device must be online now).
    pub connect_timeout_s: u32,
}

/// A twin update applied to each device of a job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TwinUpdate {
    /// Tags patch.
    pub tags: Option<Arc<Object>>,
    /// Desired properties patch.
    pub desired: Option<Arc<Object>>,
}

/// What a job does on each device.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// `scheduleDeviceMethod`.
    Method(MethodCall),
    /// `scheduleUpdateTwin`.
    Twin(TwinUpdate),
}

impl JobKind {
    /// The wire type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            JobKind::Method(_) => "scheduleDeviceMethod",
            JobKind::Twin(_) => "scheduleUpdateTwin",
        }
    }
}

/// A checked job request.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// `jobId`.
    pub job_id: String,
    /// What to do per device.
    pub kind: JobKind,
    /// `queryCondition`: a WHERE clause or `*`.
    pub query_condition: String,
    /// `startTime`; `None` means now.
    pub start_time: Option<OffsetDateTime>,
    /// `maxExecutionTimeInSeconds`.
    pub max_execution_s: u64,
}

/// Job status, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Accepted, not yet looked at by the scheduler.
    Queued,
    /// Waiting for its start time.
    Scheduled,
    /// Dispatching or awaiting device answers.
    Running,
    /// Every device reached a terminal state.
    Completed,
    /// The job itself failed (a bad query, or devices not reached in time).
    Failed,
    /// Cancelled by the back end.
    Cancelled,
}

impl JobStatus {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name, case-insensitively (`pending` and `enqueued` mean queued).
    pub fn parse(text: &str) -> Option<JobStatus> {
        Some(match text.to_ascii_lowercase().as_str() {
            "queued" | "pending" | "enqueued" => JobStatus::Queued,
            "scheduled" => JobStatus::Scheduled,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" | "canceled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Parses a job type filter or request type, case-insensitively.
pub fn parse_job_type(text: &str) -> Option<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "scheduledevicemethod" | "scheduledirectrequest" => Some("scheduleDeviceMethod"),
        "scheduleupdatetwin" => Some("scheduleUpdateTwin"),
        _ => None,
    }
}

/// Per-device status of a job's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceStatus {
    /// Not dispatched yet.
    Pending,
    /// Waiting for the device to connect (connect timeout running).
    Scheduled,
    /// Dispatched; awaiting the answer.
    Running,
    /// Succeeded.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled with its job.
    Canceled,
}

impl DeviceStatus {
    /// The wire name (single l in `canceled`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Scheduled => "scheduled",
            DeviceStatus::Running => "running",
            DeviceStatus::Completed => "completed",
            DeviceStatus::Failed => "failed",
            DeviceStatus::Canceled => "canceled",
        }
    }

    /// Whether the operation has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeviceStatus::Completed | DeviceStatus::Failed | DeviceStatus::Canceled
        )
    }
}

/// Why a device operation failed, beyond the device's own status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceError {
    /// No error.
    None,
    /// 404103: offline past the connect timeout.
    NotOnline,
    /// 504101: no answer within the response timeout.
    Timeout,
    /// The device answered a status outside 200..=299.
    DeviceStatus,
    /// The job's max execution time ended before the device was reached.
    Expired,
    /// The device was deleted or the twin update was refused.
    Rejected,
}

/// One device's operation within a job.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// The device id.
    pub device_id: Arc<str>,
    /// The registry index.
    pub device: u32,
    /// Status.
    pub status: DeviceStatus,
    /// Error cause when failed.
    pub error: DeviceError,
    /// The device's method status (valid once answered).
    pub method_status: i32,
    /// When the operation was meant to happen (job start or throttle slot).
    pub scheduled_us: Micros,
    /// When it was dispatched (0 until then).
    pub start_us: Micros,
    /// When it ended (0 until then).
    pub end_us: Micros,
    /// The device's answer payload.
    pub payload: Option<Box<Value>>,
}

/// A job and everything the engine knows about it.
#[derive(Debug)]
pub struct Job {
    /// The checked request.
    pub request: JobRequest,
    /// Status.
    pub status: JobStatus,
    /// When it was created.
    pub created_us: Micros,
    /// When it is to start (clock time).
    pub start_us: Micros,
    /// When it ended.
    pub end_us: Option<Micros>,
    /// When its last device operation ended.
    pub last_done_us: Micros,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// A human status message.
    pub status_message: Option<String>,
    /// Device counts.
    pub stats: DeviceJobStatistics,
    /// One record per target device, in target order.
    pub records: Vec<DeviceRecord>,
    /// Failures by cause (for dashboards and reports).
    pub errors: ErrorCounts,
}

/// Failure counts by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// 404103.
    pub offline: u64,
    /// 504101.
    pub timeout: u64,
    /// Not reached before max execution time.
    pub expired: u64,
    /// Refused updates or deleted devices.
    pub rejected: u64,
    /// Device status codes outside 2xx, with counts.
    pub by_status: Vec<(i32, u64)>,
}

impl ErrorCounts {
    /// Counts one failure.
    pub fn count(&mut self, error: DeviceError, status: i32) {
        match error {
            DeviceError::NotOnline => self.offline += 1,
            DeviceError::Timeout => self.timeout += 1,
            DeviceError::Expired => self.expired += 1,
            DeviceError::Rejected => self.rejected += 1,
            DeviceError::DeviceStatus => {
                match self.by_status.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, n)) => *n += 1,
                    None => self.by_status.push((status, 1)),
                }
            }
            DeviceError::None => {}
        }
    }
}

impl Job {
    /// The JobResponse document.
    pub fn to_json(&self, clock: &Clock) -> Value {
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
        match &r.kind {
            JobKind::Method(m) => {
                out.insert(
                    "cloudToDeviceMethod".into(),
                    json!({
                        "methodName": &*m.name,
                        "payload": &*m.payload,
                        "responseTimeoutInSeconds": m.response_timeout_s,
                        "connectTimeoutInSeconds": m.connect_timeout_s,
                    }),
                );
            }
            JobKind::Twin(t) => {
                let mut twin = Map::new();
                twin.insert("etag".into(), json!("*"));
                if let Some(tags) = &t.tags {
                    twin.insert("tags".into(), Value::Object((**tags).clone()));
                }
                if let Some(desired) = &t.desired {
                    twin.insert("properties".into(), json!({ "desired": &**desired }));
                }
                out.insert("updateTwin".into(), Value::Object(twin));
            }
        }
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
    pub fn record_json(&self, rec: &DeviceRecord, clock: &Clock) -> Value {
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

fn field<'a>(obj: &'a Object, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn int_field(
    obj: &Object,
    name: &str,
    what: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, HubError> {
    match field(obj, name) {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(n),
            _ => Err(HubError::invalid(format!(
                "{what}.{name} is {v}; expected an integer from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Checks a job property name or string value: printable US-ASCII without the characters IoT
/// Hub reserves.
fn check_job_text(text: &str, what: &str) -> Result<(), HubError> {
    const RESERVED: &str = "$()<>@,;:\\\"/[]?={}";
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii_graphic() || RESERVED.contains(*c))
    {
        return Err(HubError::invalid(format!(
            "{what} {text:?} contains {c:?}; job property names and values must be printable US-ASCII without spaces, tabs or $ ( ) < > @ , ; : \\ \" / [ ] ? = {{ }}"
        )));
    }
    Ok(())
}

fn check_job_object(obj: &Object, path: &str) -> Result<(), HubError> {
    for (key, value) in obj {
        check_job_text(key, &format!("property name in {path}"))?;
        let here = format!("{path}.{key}");
        match value {
            Value::Object(inner) => check_job_object(inner, &here)?,
            Value::String(s) => check_job_text(s, &format!("value of {here}"))?,
            _ => {}
        }
    }
    Ok(())
}

impl JobRequest {
    /// Parses and checks a JobRequest body; `path_id` is the id in the URL, if any.
    pub fn from_json(body: &Value, path_id: Option<&str>) -> Result<JobRequest, HubError> {
        let obj = body.as_object().ok_or_else(|| {
            HubError::invalid(format!(
                "the job request must be a JSON object, found {}",
                kind_of(body)
            ))
        })?;
        let job_id = match field(obj, "jobId") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(HubError::invalid(format!(
                    "jobId is {other}; expected a string"
                )))
            }
            None => path_id
                .map(str::to_owned)
                .ok_or_else(|| HubError::invalid("the job request has no jobId"))?,
        };
        if let Some(p) = path_id {
            if p != job_id {
                return Err(HubError::invalid(format!(
                    "the jobId in the body ('{job_id}') differs from the one in the path ('{p}')"
                )));
            }
        }
        check_job_id(&job_id)?;
        let type_text = match field(obj, "type") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(HubError::invalid(format!(
                    "type is {other}; expected a string"
                )))
            }
            None => return Err(HubError::invalid(
                "the job request has no type; expected scheduleDeviceMethod or scheduleUpdateTwin",
            )),
        };
        let kind = match parse_job_type(type_text) {
            Some("scheduleDeviceMethod") => JobKind::Method(parse_method(obj)?),
            Some(_) => JobKind::Twin(parse_twin_update(obj)?),
            None => {
                return Err(HubError::invalid(format!(
                    "unknown job type '{type_text}'; expected scheduleDeviceMethod or scheduleUpdateTwin"
                )))
            }
        };
        let query_condition = match field(obj, "queryCondition") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(other) => {
                return Err(HubError::invalid(format!(
                    "queryCondition is {other}; expected a WHERE clause or '*'"
                )))
            }
            None => {
                return Err(HubError::invalid(
                    "the job request has no queryCondition; use '*' for every device",
                ))
            }
        };
        let start_time = match field(obj, "startTime") {
            None => None,
            Some(Value::String(s)) => Some(parse_iso8601(s).ok_or_else(|| {
                HubError::invalid(format!(
                    "startTime '{s}' is not an ISO-8601 time such as 2026-11-23T02:00:00Z"
                ))
            })?),
            Some(other) => {
                return Err(HubError::invalid(format!(
                    "startTime is {other}; expected an ISO-8601 string"
                )))
            }
        };
        let max_execution_s = int_field(
            obj,
            "maxExecutionTimeInSeconds",
            "job",
            0..=u32::MAX as u64,
            DEFAULT_MAX_EXECUTION_S,
        )?;
        Ok(JobRequest {
            job_id,
            kind,
            query_condition,
            start_time,
            max_execution_s,
        })
    }
}

/// Checks a job id: 1..=128 printable ASCII characters without `/`, `?`, `#` or spaces.
pub fn check_job_id(id: &str) -> Result<(), HubError> {
    if id.is_empty()
        || id.len() > 128
        || id
            .chars()
            .any(|c| !c.is_ascii_graphic() || "/?#".contains(c))
    {
        return Err(HubError::invalid(format!(
            "invalid jobId {id:?}; expected 1 to 128 printable ASCII characters without '/', '?', '#' or spaces"
        )));
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a `cloudToDeviceMethod` object (also the body of a direct method call).
pub fn parse_method_call(m: &Object, what: &str) -> Result<MethodCall, HubError> {
    let name = match field(m, "methodName") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(other) => {
            return Err(HubError::invalid(format!(
                "{what}.methodName is {other}; expected a non-empty string"
            )))
        }
        None => return Err(HubError::invalid(format!("{what} has no methodName"))),
    };
    check_job_text(name, "methodName")?;
    let payload = m.get("payload").cloned().unwrap_or(Value::Null);
    let size = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(0);
    if size > METHOD_PAYLOAD_LIMIT {
        return Err(HubError::new(
            ErrorCode::MessageTooLarge,
            format!("{what}.payload is {size} bytes; the limit is {METHOD_PAYLOAD_LIMIT} bytes"),
        ));
    }
    Ok(MethodCall {
        name: name.into(),
        payload: Arc::new(payload),
        response_timeout_s: int_field(m, "responseTimeoutInSeconds", what, 5..=300, 30)? as u32,
        connect_timeout_s: int_field(m, "connectTimeoutInSeconds", what, 0..=300, 0)? as u32,
    })
}

fn parse_method(obj: &Object) -> Result<MethodCall, HubError> {
    match field(obj, "cloudToDeviceMethod") {
        Some(Value::Object(m)) => parse_method_call(m, "cloudToDeviceMethod"),
        Some(other) => Err(HubError::invalid(format!(
            "cloudToDeviceMethod is {other}; expected an object"
        ))),
        None => Err(HubError::invalid(
            "a scheduleDeviceMethod job needs cloudToDeviceMethod",
        )),
    }
}

fn parse_twin_update(obj: &Object) -> Result<TwinUpdate, HubError> {
    let twin = match field(obj, "updateTwin") {
        Some(Value::Object(t)) => t,
        Some(other) => {
            return Err(HubError::invalid(format!(
                "updateTwin is {other}; expected an object"
            )))
        }
        None => {
            return Err(HubError::invalid(
                "a scheduleUpdateTwin job needs updateTwin",
            ))
        }
    };
    if let Some(etag) = field(twin, "etag") {
        if etag.as_str().map(|s| s.trim_matches('"')) != Some("*") {
            return Err(HubError::invalid(format!(
                "updateTwin.etag is {etag}; a job's twin update must use etag '*'"
            )));
        }
    }
    let tags = match field(twin, "tags") {
        None => None,
        Some(Value::Object(t)) => {
            check_job_object(t, "updateTwin.tags")?;
            Some(Arc::new(t.clone()))
        }
        Some(other) => {
            return Err(HubError::invalid(format!(
                "updateTwin.tags is {other}; expected an object"
            )))
        }
    };
    let mut desired = None;
    if let Some(props) = field(twin, "properties") {
        let props = props.as_object().ok_or_else(|| {
            HubError::invalid(format!(
                "updateTwin.properties is {props}; expected an object"
            ))
        })?;
        if let Some(rep) = field(props, "reported") {
            if rep.as_object().is_none_or(|r| !r.is_empty()) {
                return Err(HubError::invalid(
                    "updateTwin.properties.reported must be empty: only devices report",
                ));
            }
        }
        match field(props, "desired") {
            None => {}
            Some(Value::Object(d)) => {
                check_job_object(d, "updateTwin.properties.desired")?;
                desired = Some(Arc::new(d.clone()));
            }
            Some(other) => {
                return Err(HubError::invalid(format!(
                    "updateTwin.properties.desired is {other}; expected an object"
                )))
            }
        }
    }
    if tags.is_none() && desired.is_none() {
        return Err(HubError::invalid(
            "updateTwin changes nothing: give tags or properties.desired",
        ));
    }
    Ok(TwinUpdate { tags, desired })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_method_job_with_defaults() {
        let body = json!({
            "jobId": 42, "type": "scheduleDirectRequest", "queryCondition": "*",
            "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 0}}
        });
        let r = JobRequest::from_json(&body, Some("42")).unwrap();
        assert_eq!(r.job_id, "42");
        assert_eq!(r.max_execution_s, 3600);
        let JobKind::Method(m) = r.kind else {
            panic!("not a method job")
        };
        assert_eq!((m.response_timeout_s, m.connect_timeout_s), (30, 0));
        assert_eq!(*m.payload, json!({"delay": 0}));
    }

    #[test]
    fn parses_a_twin_job() {
        let body = json!({
            "jobId": "t1", "type": "scheduleUpdateTwin", "queryCondition": "tags.b = '1'",
            "startTime": "2030-01-01T00:00:00Z", "maxExecutionTimeInSeconds": 60,
            "updateTwin": {"etag": "\"*\"", "tags": {"ring": "canary"}, "properties": {"desired": {"fw": "1.4.2"}, "reported": {}}}
        });
        let r = JobRequest::from_json(&body, None).unwrap();
        assert!(r.start_time.is_some());
        let JobKind::Twin(t) = r.kind else {
            panic!("not a twin job")
        };
        assert_eq!(t.desired.unwrap().get("fw"), Some(&json!("1.4.2")));
    }

    #[test]
    fn refuses_bad_requests_with_clear_messages() {
        let cases = [
            (json!([]), "must be a JSON object, found an array"),
            (
                json!({"jobId": "a", "type": "reboot", "queryCondition": "*"}),
                "unknown job type 'reboot'",
            ),
            (
                json!({"jobId": "a", "type": "scheduleDeviceMethod", "queryCondition": "*"}),
                "needs cloudToDeviceMethod",
            ),
            (
                json!({"jobId": "a", "type": "scheduleDeviceMethod", "queryCondition": "*",
                    "cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": 1}}),
                "responseTimeoutInSeconds is 1; expected an integer from 5 to 300",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "updateTwin": {"etag": "abc", "tags": {"x": "1"}}}),
                "must use etag '*'",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "updateTwin": {"tags": {"x": "a/b"}}}),
                "value of updateTwin.tags.x \"a/b\" contains '/'",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "startTime": "soon", "updateTwin": {"tags": {"x": "1"}}}),
                "startTime 'soon' is not an ISO-8601 time",
            ),
            (
                json!({"jobId": "a b", "type": "scheduleUpdateTwin"}),
                "invalid jobId \"a b\"",
            ),
        ];
        for (body, expected) in cases {
            let err = JobRequest::from_json(&body, None).unwrap_err();
            assert_eq!(err.code, ErrorCode::ArgumentInvalid);
            assert!(
                err.message.contains(expected),
                "{} does not contain {expected}",
                err.message
            );
        }
    }

    #[test]
    fn status_names_parse_case_insensitively() {
        assert_eq!(JobStatus::parse("Cancelled"), Some(JobStatus::Cancelled));
        assert_eq!(JobStatus::parse("pending"), Some(JobStatus::Queued));
        assert_eq!(
            parse_job_type("ScheduleUpdateTwin"),
            Some("scheduleUpdateTwin")
        );
        assert_eq!(JobStatus::parse("nope"), None);
    }
}
