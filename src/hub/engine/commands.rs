//! The API's commands: jobs (create, get, cancel, list), queries over twins and device job
//! records, twin reads and writes, direct method calls, and adding or removing devices.

use serde_json::Value;

use crate::clock::Micros;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::handle::{Command, Reply, TwinWrite};
use crate::hub::jobs::{
    DeviceError, DeviceStatus, Failure, Job, JobRequest, JobStatus, MethodCall,
};
use crate::hub::twin::Object;
use crate::ids::{DeviceIdx, RecordIdx, SlotIdx};
use crate::query::{parse_condition, parse_query, Document, Plan, Source};

use super::{metrics_slot, Engine};

impl Engine {
    pub(super) fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now_us();
        // A job past its history is gone for every command, whenever the engine last stepped.
        self.slots.retain_active(now);
        match cmd {
            Command::CreateJob(req, reply) => {
                let created = self.create_job(*req, now);
                self.answer(reply, created);
            }
            Command::GetJob(id, reply) => {
                let _ = reply.send(
                    self.slots
                        .find(&id)
                        .map(|s| self.slots[s].job.to_json(&self.clock)),
                );
            }
            Command::CancelJob(id, reply) => {
                let cancelled = self.cancel_job(&id, now);
                self.answer(reply, cancelled);
            }
            Command::ListJobs(job_type, status, reply) => {
                let list = self
                    .slots
                    .kept()
                    .map(|s| &s.job)
                    .filter(|j| job_type.is_none_or(|t| j.request.kind.type_name() == t))
                    .filter(|j| status.is_none_or(|st| j.status == st))
                    .map(|j| j.to_json(&self.clock))
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Command::Select(condition, reply) => {
                let selected = parse_condition(&condition)
                    .map(|c| {
                        let mut devices = self.registry.select(&c);
                        devices.sort_unstable();
                        devices
                    })
                    .map_err(|e| HubError::invalid(format!("invalid condition: {e}")));
                let _ = reply.send(selected);
            }
            Command::FailedDevices(id, failures, reply) => {
                let _ = reply.send(self.failed_devices(&id, &failures));
            }
            Command::Query(text, reply) => {
                let _ = reply.send(self.query(&text));
            }
            Command::GetTwin(id, reply) => {
                let twin = self.registry.lookup(&id).map(|d| self.twin_json(d));
                let _ = reply.send(twin);
            }
            Command::WriteTwin {
                id,
                mode,
                body,
                if_match,
                reply,
            } => {
                let written = self.write_twin(&id, mode, &body, if_match.as_deref(), now);
                self.answer(reply, written);
            }
            Command::InvokeMethod(id, call, reply) => self.invoke_method(&id, call, reply, now),
            Command::AddDevice(id, twin, reply) => {
                let added = self.registry.add(&id, *twin).map(|d| self.twin_json(d));
                self.answer(reply, added);
            }
            Command::RemoveDevice(id, reply) => {
                let removed = self.registry.remove(&id);
                self.recorder.set_connected(self.registry.connected());
                self.answer(reply, removed);
            }
            Command::Device(cmd) => self.on_device_command(cmd, now),
            Command::Restart(reply) => {
                let restarted = self.restart(now);
                let _ = reply.send(Ok(restarted));
            }
            Command::Release(reply) => {
                self.release_restored(now);
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn twin_json(&self, device: DeviceIdx) -> Value {
        self.registry
            .doc(device)
            .map_or(Value::Null, |doc| doc.to_json())
    }

    fn create_job(&mut self, req: JobRequest, now: Micros) -> Result<Value, HubError> {
        #[cfg(test)]
        if req.job_id == super::TEST_PANIC_JOB_ID {
            panic!("job '{}' asks a test build to panic", req.job_id);
        }
        if self.slots.contains(&req.job_id) {
            return Err(HubError::new(
                ErrorCode::JobAlreadyExists,
                format!("a job with id '{}' already exists", req.job_id),
            ));
        }
        if self.slots.forgot(&req.job_id) {
            return Err(HubError::new(
                ErrorCode::JobAlreadyExists,
                format!(
                    "job id '{}' belonged to a job forgotten 30 days after it ended; fleetsim keeps its measurements by id, so a hub process does not reuse a job id: choose another",
                    req.job_id
                ),
            ));
        }
        if let Some(limit) = self.limits.concurrent_jobs() {
            let active = self
                .slots
                .active()
                .iter()
                .filter(|&&s| !self.slots[s].job.status.is_terminal())
                .count();
            if active >= limit {
                return Err(HubError::new(
                    ErrorCode::ThrottlingMaxActiveJobCountExceeded,
                    format!(
                        "the {} tier allows {limit} active job(s); {active} are active",
                        self.limits.tier
                    ),
                ));
            }
        }
        let slot = self.recorder.add_job(&req.job_id);
        debug_assert_eq!(
            slot,
            metrics_slot(self.slots.next_slot()),
            "metrics slots follow job slots"
        );
        let job = Job::new(req, &self.clock, now);
        let answer = job.to_json(&self.clock);
        let s = self.slots.push(job);
        self.job_changed(s);
        Ok(answer)
    }

    fn cancel_job(&mut self, id: &str, now: Micros) -> Result<Value, HubError> {
        let s = self.slots.find(id)?;
        self.cancel(s, now);
        Ok(self.slots[s].job.to_json(&self.clock))
    }

    /// Cancels job `s` and every device operation of it not yet ended.
    pub(super) fn cancel(&mut self, s: SlotIdx, now: Micros) {
        if self.slots[s].job.status.is_terminal() {
            return;
        }
        for r in RecordIdx::all(self.slots[s].job.records.len()) {
            if !self.slots[s].record(r).status.is_terminal() {
                self.finish_op(s, r, now, DeviceStatus::Canceled, DeviceError::None);
            }
        }
        let slot = &mut self.slots[s];
        slot.stop_dispatch();
        slot.job.status = JobStatus::Cancelled;
        slot.job.end_us = Some(now);
        self.job_changed(s);
    }

    /// The devices of job `id` that failed with one of `failures`, with their errors.
    fn failed_devices(
        &self,
        id: &str,
        failures: &[Failure],
    ) -> Result<Vec<(DeviceIdx, DeviceError)>, HubError> {
        let s = self.slots.find(id)?;
        Ok(self.slots[s]
            .job
            .records
            .iter()
            .filter(|r| r.status == DeviceStatus::Failed)
            .filter(|r| failures.iter().any(|f| f.matches(r.error)))
            .map(|r| (r.device, r.error))
            .collect())
    }

    fn query(&mut self, text: &str) -> Result<Vec<Value>, HubError> {
        let query =
            parse_query(text).map_err(|e| HubError::invalid(format!("invalid query: {e}")))?;
        match query.source() {
            Source::Devices => {
                let selected = self.registry.select(query.condition());
                let docs: Vec<_> = selected
                    .iter()
                    .filter_map(|&d| self.registry.doc(d))
                    .collect();
                Ok(query.project(docs.iter()))
            }
            Source::DeviceJobs => {
                let only_job = match query.condition().plan() {
                    Plan::Equals { path, value } if path.last().is_some_and(|p| p == "jobId") => {
                        value.as_str().map(str::to_owned)
                    }
                    _ => None,
                };
                let mut rows = Vec::new();
                for slot in self.slots.kept() {
                    if only_job
                        .as_deref()
                        .is_some_and(|j| j != slot.job.request.job_id)
                    {
                        continue;
                    }
                    for rec in &slot.job.records {
                        let doc = slot.job.record_json(rec, &self.clock);
                        if query.condition().matches(&JobRecordDoc(&doc)) {
                            rows.push(doc);
                        }
                    }
                }
                let docs: Vec<JobRecordDoc> = rows.iter().map(JobRecordDoc).collect();
                Ok(query.project(docs.iter()))
            }
        }
    }

    fn write_twin(
        &mut self,
        id: &str,
        mode: TwinWrite,
        body: &Value,
        if_match: Option<&str>,
        now: Micros,
    ) -> Result<Value, HubError> {
        let device = self.registry.lookup(id)?;
        let entry = self
            .registry
            .get(device)
            .ok_or_else(|| HubError::new(ErrorCode::DeviceNotFound, id))?;
        if let Some(tag) = if_match {
            if !entry.twin.etag_matches(tag) {
                return Err(HubError::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "If-Match {tag} does not match the twin's etag \"{}\"",
                        entry.twin.etag()
                    ),
                ));
            }
        }
        let obj = body
            .as_object()
            .ok_or_else(|| HubError::invalid("the twin must be a JSON object"))?;
        let tags = section(obj.get("tags"), "tags")?;
        let desired = section(
            obj.get("properties").and_then(|p| p.get("desired")),
            "properties.desired",
        )?;
        let desired_version = self.registry.update_twin(device, |twin| match mode {
            TwinWrite::Patch => {
                if let Some(tags) = &tags {
                    twin.patch_tags(tags, now)?;
                }
                desired
                    .as_ref()
                    .map(|d| twin.patch_desired(d, now))
                    .transpose()
            }
            TwinWrite::Replace => {
                twin.replace(
                    tags.clone().unwrap_or_default(),
                    desired.clone().unwrap_or_default(),
                    now,
                )?;
                Ok(Some(twin.desired.version))
            }
        })?;
        if let (Some(version), Some(desired)) = (desired_version, desired) {
            self.notify_desired(device, None, version, &desired);
        }
        Ok(self.twin_json(device))
    }

    fn invoke_method(
        &mut self,
        id: &str,
        call: MethodCall,
        reply: Reply<(i32, Value)>,
        now: Micros,
    ) {
        let device = match self.registry.lookup(id) {
            Ok(d) => d,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let connected = self.registry.is_connected(device);
        if !connected && call.connect_timeout_s == 0 {
            let _ = reply.send(Err(HubError::new(
                ErrorCode::DeviceNotOnline,
                format!("device '{id}' is not online"),
            )));
            return;
        }
        self.direct
            .start(device, connected, call, reply, now, &mut *self.link);
    }
}

/// A twin section from a write body: absent, or an object.
fn section(v: Option<&Value>, what: &str) -> Result<Option<Object>, HubError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(other) => Err(HubError::invalid(format!(
            "{what} is {other}; expected an object"
        ))),
    }
}

/// A device job record seen by the query language: paths may carry the `devices.jobs.` prefix.
struct JobRecordDoc<'a>(&'a Value);

impl Document for JobRecordDoc<'_> {
    fn resolve(&self, path: &[&str]) -> Option<std::borrow::Cow<'_, Value>> {
        let path = match path {
            ["devices", "jobs", rest @ ..] => rest,
            other => other,
        };
        self.0.resolve(path)
    }

    fn to_json(&self) -> Value {
        self.0.clone()
    }
}
