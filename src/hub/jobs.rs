//! Jobs as IoT Hub defines them: the request a back end sends, the job and per-device records
//! the engine keeps, and their statuses.
//!
//! - `request`: parsing and checking a JobRequest body (and a direct method call's).
//! - `json`: the JSON forms of a job (JobResponse) and of its device job records.

mod control;
mod json;
mod request;

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::{secs_us, Clock, Micros};
use crate::hub::error::ErrorCode;
use crate::hub::twin::Object;
use crate::ids::DeviceIdx;
use crate::report::DeviceJobStatistics;

pub use control::{Abort, AbortRule, Failure, JobControl, Ramp, Tally, Tripped};
pub(crate) use request::{check_job_id, parse_method_call};

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

impl MethodCall {
    /// `responseTimeoutInSeconds` in microseconds.
    pub(crate) fn response_timeout_us(&self) -> Micros {
        secs_us(self.response_timeout_s.into())
    }

    /// `connectTimeoutInSeconds` in microseconds.
    pub(crate) fn connect_timeout_us(&self) -> Micros {
        secs_us(self.connect_timeout_s.into())
    }
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
    pub(crate) fn type_name(&self) -> &'static str {
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
    /// Internal options (never from the REST API).
    pub control: JobControl,
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
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn parse(text: &str) -> Option<JobStatus> {
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
    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// Parses a job type filter or request type, case-insensitively.
pub(crate) fn parse_job_type(text: &str) -> Option<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "scheduledevicemethod" | "scheduledirectrequest" => Some("scheduleDeviceMethod"),
        "scheduleupdatetwin" => Some("scheduleUpdateTwin"),
        _ => None,
    }
}

/// Per-device status of a job's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum DeviceStatus {
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
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn is_terminal(self) -> bool {
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
pub(crate) struct DeviceRecord {
    /// The device id.
    pub(crate) device_id: Arc<str>,
    /// The registry index.
    pub(crate) device: DeviceIdx,
    /// Status.
    pub(crate) status: DeviceStatus,
    /// Error cause when failed.
    pub(crate) error: DeviceError,
    /// The device's method status (valid once answered).
    pub(crate) method_status: i32,
    /// When the operation was meant to happen (job start or throttle slot).
    pub(crate) scheduled_us: Micros,
    /// When it was dispatched (0 until then).
    pub(crate) start_us: Micros,
    /// When it ended (0 until then).
    pub(crate) end_us: Micros,
    /// The device's answer payload.
    pub payload: Option<Box<Value>>,
}

impl DeviceRecord {
    /// The record of `device` (`device_id`) in a job starting at `start_us`, not reached yet.
    pub(crate) fn pending(device: DeviceIdx, device_id: Arc<str>, start_us: Micros) -> Self {
        DeviceRecord {
            device_id,
            device,
            status: DeviceStatus::Pending,
            error: DeviceError::None,
            method_status: 0,
            scheduled_us: start_us,
            start_us: 0,
            end_us: 0,
            payload: None,
        }
    }
}

/// A job and everything the engine knows about it.
#[derive(Debug)]
pub(crate) struct Job {
    /// The checked request.
    pub(crate) request: JobRequest,
    /// Status.
    pub(crate) status: JobStatus,
    /// When it was created.
    pub(crate) created_us: Micros,
    /// When it is to start (clock time).
    pub(crate) start_us: Micros,
    /// When it ended.
    pub(crate) end_us: Option<Micros>,
    /// When its last device operation ended.
    pub(crate) last_done_us: Micros,
    /// Why it failed.
    pub(crate) failure_reason: Option<String>,
    /// A human status message.
    pub(crate) status_message: Option<String>,
    /// Device counts.
    pub stats: DeviceJobStatistics,
    /// One record per target device, in target order.
    pub(crate) records: Vec<DeviceRecord>,
    /// Failures by cause (for dashboards and reports).
    pub(crate) errors: ErrorCounts,
    /// The dispatch rate as it stands ([`JobControl::ramp`]).
    pub(crate) ramp: Option<Ramp>,
    /// Device outcomes counted for abort criteria.
    pub(crate) tally: Tally,
    /// The abort criterion that cancelled the job, with its figures.
    pub(crate) tripped: Option<Tripped>,
}

impl Job {
    /// A job created at `now` from a checked `request`, queued to start at its startTime (now
    /// when none is given or it has passed).
    pub(crate) fn new(request: JobRequest, clock: &Clock, now: Micros) -> Job {
        let start_us = request
            .start_time
            .map_or(now, |t| clock.us_at_wall(t).max(now));
        Job {
            request,
            status: JobStatus::Queued,
            created_us: now,
            start_us,
            end_us: None,
            last_done_us: 0,
            failure_reason: None,
            status_message: None,
            stats: DeviceJobStatistics::default(),
            records: Vec::new(),
            errors: Default::default(),
            ramp: None,
            tally: Default::default(),
            tripped: None,
        }
    }

    /// Ends the operation of record `r` at `now` with `status` and `error`, and keeps the
    /// statistics, the failure counts, the tally and the rate exact; answers whether it was
    /// running (dispatched) and whether it failed.
    pub(crate) fn end_op(
        &mut self,
        r: usize,
        status: DeviceStatus,
        error: DeviceError,
        now: Micros,
    ) -> (bool, bool) {
        let rec = &mut self.records[r];
        let was_running = rec.status == DeviceStatus::Running;
        rec.status = status;
        rec.error = error;
        rec.end_us = now;
        let method_status = rec.method_status;
        if was_running {
            self.stats.running_count -= 1;
        } else {
            self.stats.pending_count -= 1;
        }
        let failed = status != DeviceStatus::Completed;
        if failed {
            self.stats.failed_count += 1;
            self.errors.count(error, method_status);
        } else {
            self.stats.succeeded_count += 1;
        }
        self.last_done_us = self.last_done_us.max(now);
        self.tally.count(status, error);
        if let Some(ramp) = self.ramp.as_mut().filter(|_| !failed) {
            ramp.succeeded();
        }
        (was_running, failed)
    }

    /// When its `maxExecutionTimeInSeconds` runs out (saturating: "never" past the clock's end).
    pub(crate) fn expires_us(&self) -> Micros {
        self.start_us
            .saturating_add(secs_us(self.request.max_execution_s))
    }
}

/// Failure counts by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorCounts {
    /// 404103.
    pub(crate) offline: u64,
    /// 504101.
    pub(crate) timeout: u64,
    /// Not reached before max execution time.
    pub(crate) expired: u64,
    /// Refused updates or deleted devices.
    pub(crate) rejected: u64,
    /// Device status codes outside 2xx, with counts.
    pub(crate) by_status: Vec<(i32, u64)>,
}

impl ErrorCounts {
    /// Counts one failure.
    pub(crate) fn count(&mut self, error: DeviceError, status: i32) {
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

    /// The counts by cause as `summary.json` names them, without the causes that never
    /// happened.
    pub(crate) fn by_cause(&self) -> std::collections::BTreeMap<String, u64> {
        let code = |c: ErrorCode| format!("{} {}", c.number(), c.name());
        [
            (code(ErrorCode::DeviceNotOnline), self.offline),
            (code(ErrorCode::GatewayTimeout), self.timeout),
            ("expired".to_owned(), self.expired),
            ("rejected".to_owned(), self.rejected),
        ]
        .into_iter()
        .chain(
            self.by_status
                .iter()
                .map(|&(status, n)| (format!("device status {status}"), n)),
        )
        .filter(|&(_, n)| n > 0)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
