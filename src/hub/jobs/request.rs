//! Parsing and checking a JobRequest body as IoT Hub does, and the `cloudToDeviceMethod` object
//! a direct method call shares with method jobs.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::parse_iso8601;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::jobs::{parse_job_type, JobControl, JobKind, JobRequest, MethodCall, TwinUpdate};
use crate::hub::twin::Object;
use crate::query::check_length;

/// Largest method payload, request or response (128 KB).
pub(crate) const METHOD_PAYLOAD_LIMIT: usize = 128 * 1024;
/// Default `maxExecutionTimeInSeconds`.
pub(crate) const DEFAULT_MAX_EXECUTION_S: u64 = 3600;

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
                "{name} must be within [{}; {}]: {what}.{name} is {v}",
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
    pub(crate) fn from_json(body: &Value, path_id: Option<&str>) -> Result<JobRequest, HubError> {
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
            Some(Value::String(s)) if !s.trim().is_empty() => {
                check_length(s).map_err(|e| HubError::invalid(format!("queryCondition: {e}")))?;
                s.clone()
            }
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
            Some(Value::String(s)) => Some(
                parse_iso8601(s).map_err(|e| HubError::invalid(format!("startTime '{s}' {e}")))?,
            ),
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
            control: JobControl::default(),
        })
    }
}

/// Checks a job id: 1..=128 printable ASCII characters without `/`, `?`, `#` or spaces.
pub(crate) fn check_job_id(id: &str) -> Result<(), HubError> {
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
pub(crate) fn parse_method_call(m: &Object, what: &str) -> Result<MethodCall, HubError> {
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
    // A twin update job is a forced update: IoT Hub accepts only the '*' etag, and none at all
    // is refused too.
    match field(twin, "etag") {
        Some(etag) if etag.as_str().map(|s| s.trim_matches('"')) == Some("*") => {}
        Some(etag) => {
            return Err(HubError::invalid(format!(
                "updateTwin.etag is {etag}; a job's twin update must use etag '*'"
            )))
        }
        None => {
            return Err(HubError::invalid(
                "updateTwin has no etag; a job's twin update is a forced update and must carry etag '*'",
            ))
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
    use serde_json::json;

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
    fn a_request_reads_back_what_it_writes() {
        for body in [
            json!({"jobId": "m", "type": "scheduleDeviceMethod", "queryCondition": "*",
                "startTime": "2030-01-02T03:04:05.678Z", "maxExecutionTimeInSeconds": 60,
                "cloudToDeviceMethod": {"methodName": "ping", "payload": [1],
                    "responseTimeoutInSeconds": 9, "connectTimeoutInSeconds": 3}}),
            json!({"jobId": "t", "type": "scheduleUpdateTwin", "queryCondition": "tags.a = 1",
                "updateTwin": {"etag": "*", "tags": {"b": 2},
                    "properties": {"desired": {"c": {"d": 3}}}}}),
        ] {
            let request = JobRequest::from_json(&body, None).unwrap();
            let again = JobRequest::from_json(&request.to_json(), None).unwrap();
            assert_eq!(again, request);
        }
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

    /// The edges IoT Hub refuses, with its sources:
    /// - method timeouts: responseTimeoutInSeconds "minimum is 5 seconds, and maximum is 300
    ///   seconds", connectTimeoutInSeconds "maximum value ... is 300 seconds"
    ///   (https://learn.microsoft.com/dotnet/api/microsoft.azure.devices.client.methodrequest.responsetimeout,
    ///   .../methodrequest.connectiontimeout); the wording is the service's own, quoted by the
    ///   Node SDK's DigitalTwinClient docs ("The responseTimeoutInSeconds must be within [5; 300]",
    ///   Azure/azure-iot-sdk-node, service/src/cl/digital_twin_client.ts);
    /// - a twin update job without etag: "ScheduleUpdateTwin job type is a force update, which
    ///   only accepts '*' as the Etag ... Sample does not work without this"
    ///   (https://github.com/Azure/azure-iot-sdk-java/pull/969);
    /// - query length: "Query expressions can have a maximum length of 8192 characters"
    ///   (https://learn.microsoft.com/azure/iot-hub/query-jobs#jobs-query-limitations);
    /// - maxExecutionTimeInSeconds: no upper bound is documented; the SDKs refuse only a
    ///   negative one (Azure/azure-iot-sdk-java jobclient_requirements.md, SRS_JOBCLIENT_21_008).
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
                "responseTimeoutInSeconds must be within [5; 300]: cloudToDeviceMethod.responseTimeoutInSeconds is 1",
            ),
            (
                json!({"jobId": "a", "type": "scheduleDeviceMethod", "queryCondition": "*",
                    "cloudToDeviceMethod": {"methodName": "m", "connectTimeoutInSeconds": 301}}),
                "connectTimeoutInSeconds must be within [0; 300]",
            ),
            (
                json!({"jobId": "a", "type": "scheduleDeviceMethod", "queryCondition": "*",
                    "maxExecutionTimeInSeconds": -1, "cloudToDeviceMethod": {"methodName": "m"}}),
                "maxExecutionTimeInSeconds must be within [0; 4294967295]",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "updateTwin": {"tags": {"x": "1"}}}),
                "updateTwin has no etag",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin",
                    "queryCondition": format!("deviceId IN [{}'x']", "'d', ".repeat(2048)),
                    "updateTwin": {"etag": "*", "tags": {"x": "1"}}}),
                "queryCondition: the query is 10257 characters long; IoT Hub accepts at most 8192",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "updateTwin": {"etag": "abc", "tags": {"x": "1"}}}),
                "must use etag '*'",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "updateTwin": {"etag": "*", "tags": {"x": "a/b"}}}),
                "value of updateTwin.tags.x \"a/b\" contains '/'",
            ),
            (
                json!({"jobId": "a", "type": "scheduleUpdateTwin", "queryCondition": "*",
                    "startTime": "soon", "updateTwin": {"etag": "*", "tags": {"x": "1"}}}),
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
}
