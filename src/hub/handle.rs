//! The job engine's mailbox: the commands it takes, the cloneable [`Hub`] handle that sends them
//! and awaits the reply, and the [`HubView`] the engine publishes for dashboards and progress.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Micros;
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::jobs::{
    DeviceError, ErrorCounts, Failure, JobRequest, JobStatus, MethodCall, Ramp, Tally, Tripped,
};
use crate::hub::twin::{Object, Twin};
use crate::ids::DeviceIdx;
use crate::link::OpId;
use crate::metrics::MetricsSnapshot;
use crate::report::{DeliveryClockReport, DeviceJobStatistics};

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, HubError>>;

/// What a twin write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwinWrite {
    /// `PATCH /twins/{id}`: merge tags and desired properties.
    Patch,
    /// `PUT /twins/{id}`: replace tags and desired properties.
    Replace,
}

/// A command to the job engine.
#[derive(Debug)]
pub enum Command {
    /// Create a job; answers its JobResponse.
    CreateJob(Box<JobRequest>, Reply<Value>),
    /// Get a job's JobResponse.
    GetJob(String, Reply<Value>),
    /// Cancel a job; answers its JobResponse.
    CancelJob(String, Reply<Value>),
    /// List jobs, optionally filtered by type and status.
    ListJobs(Option<&'static str>, Option<JobStatus>, Reply<Vec<Value>>),
    /// The devices a WHERE clause (or `*`) selects now, ascending.
    Select(String, Reply<Vec<DeviceIdx>>),
    /// The devices of a job that failed with one of the given classes, with their errors.
    FailedDevices(String, Vec<Failure>, Reply<Vec<(DeviceIdx, DeviceError)>>),
    /// Run a query (`FROM devices` or `FROM devices.jobs`); answers the rows.
    Query(String, Reply<Vec<Value>>),
    /// Get a twin document.
    GetTwin(String, Reply<Value>),
    /// Write a twin (`body`: a twin document with `tags` and/or `properties.desired`) if the
    /// etag matches; answers the new twin.
    WriteTwin {
        /// Device id.
        id: String,
        /// Patch or replace.
        mode: TwinWrite,
        /// The twin document sent.
        body: Value,
        /// The `If-Match` header.
        if_match: Option<String>,
        /// The reply.
        reply: Reply<Value>,
    },
    /// Invoke a direct method; answers the device's status and payload.
    InvokeMethod(String, MethodCall, Reply<(i32, Value)>),
    /// Add a device identity with an initial twin; answers the twin.
    AddDevice(String, Box<Twin>, Reply<Value>),
    /// Remove a device identity; answers the removed twin.
    RemoveDevice(String, Reply<Value>),
    /// A device transport's requests (the MQTT endpoint).
    Device(DeviceCommand),
    /// Restart the hub (a scenario's `hub_restart` fault): every device connection drops and
    /// operations in flight are sent again; answers when done, with what it restarted from.
    Restart(Reply<Restarted>),
    /// Dispatch the restored jobs' device operations from now on: a resumed run holds them
    /// until its devices are connected (see [`crate::hub::engine::Engine::holding_restored`]).
    Release(Reply<()>),
}

/// What a restarted hub went on from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restarted {
    /// The state it held in memory (a hub without a store).
    FromMemory,
    /// Its store, read back after committing everything: the devices (deleted ones too) and
    /// jobs it holds.
    FromStore {
        /// Devices read back.
        devices: usize,
        /// Jobs read back.
        jobs: usize,
    },
    /// Its store could not be read back (why): it went on from the state it held in memory.
    StoreUnreadable(String),
}

/// What a device transport asks the engine on a device's behalf.
#[derive(Debug)]
pub enum DeviceCommand {
    /// The registry index of a device id (404001 when unknown).
    Lookup(String, Reply<DeviceIdx>),
    /// The twin as a device's twin GET sees it: `{"desired": .., "reported": ..}`.
    Twin(DeviceIdx, Reply<Value>),
    /// Merge a reported patch (acknowledging the twin update `ack_of`, if any); answers the
    /// new reported `$version`.
    Report {
        /// The device.
        device: DeviceIdx,
        /// The patch.
        patch: Object,
        /// The twin-update operation it acknowledges.
        ack_of: Option<OpId>,
        /// The reply.
        reply: Reply<u64>,
    },
}

/// A cloneable handle to the job engine.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: mpsc::Sender<Command>,
}

fn stopped() -> HubError {
    HubError::new(ErrorCode::IotHubQuotaExceeded, "the hub is shutting down")
}

impl Hub {
    /// A handle sending to `tx`.
    pub fn new(tx: mpsc::Sender<Command>) -> Self {
        Hub { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, HubError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Creates a job.
    pub async fn create_job(&self, req: JobRequest) -> Result<Value, HubError> {
        self.ask(|r| Command::CreateJob(Box::new(req), r)).await
    }

    /// Gets a job.
    pub async fn get_job(&self, id: &str) -> Result<Value, HubError> {
        self.ask(|r| Command::GetJob(id.to_owned(), r)).await
    }

    /// Releases the restored jobs (see [`Command::Release`]).
    pub(crate) async fn release(&self) -> Result<(), HubError> {
        self.ask(Command::Release).await
    }

    /// Restarts the hub (see [`Command::Restart`]).
    pub(crate) async fn restart(&self) -> Result<Restarted, HubError> {
        self.ask(Command::Restart).await
    }

    /// Cancels a job.
    pub async fn cancel_job(&self, id: &str) -> Result<Value, HubError> {
        self.ask(|r| Command::CancelJob(id.to_owned(), r)).await
    }

    /// Lists jobs.
    pub(crate) async fn list_jobs(
        &self,
        job_type: Option<&'static str>,
        status: Option<JobStatus>,
    ) -> Result<Vec<Value>, HubError> {
        self.ask(|r| Command::ListJobs(job_type, status, r)).await
    }

    /// The devices `condition` (a WHERE clause or `*`) selects now, ascending.
    pub(crate) async fn select(&self, condition: &str) -> Result<Vec<DeviceIdx>, HubError> {
        self.ask(|r| Command::Select(condition.to_owned(), r)).await
    }

    /// The devices of job `id` that failed with one of `failures`, with their errors.
    pub(crate) async fn failed_devices(
        &self,
        id: &str,
        failures: Vec<Failure>,
    ) -> Result<Vec<(DeviceIdx, DeviceError)>, HubError> {
        self.ask(|r| Command::FailedDevices(id.to_owned(), failures, r))
            .await
    }

    /// Runs a query.
    pub async fn query(&self, text: &str) -> Result<Vec<Value>, HubError> {
        self.ask(|r| Command::Query(text.to_owned(), r)).await
    }

    /// Gets a twin.
    pub async fn get_twin(&self, id: &str) -> Result<Value, HubError> {
        self.ask(|r| Command::GetTwin(id.to_owned(), r)).await
    }

    /// Patches or replaces a twin.
    pub async fn write_twin(
        &self,
        id: &str,
        mode: TwinWrite,
        body: Value,
        if_match: Option<String>,
    ) -> Result<Value, HubError> {
        self.ask(|reply| Command::WriteTwin {
            id: id.to_owned(),
            mode,
            body,
            if_match,
            reply,
        })
        .await
    }

    /// Invokes a direct method.
    pub async fn invoke_method(
        &self,
        id: &str,
        call: MethodCall,
    ) -> Result<(i32, Value), HubError> {
        self.ask(|r| Command::InvokeMethod(id.to_owned(), call, r))
            .await
    }

    /// Adds a device.
    pub(crate) async fn add_device(&self, id: &str, twin: Twin) -> Result<Value, HubError> {
        self.ask(|r| Command::AddDevice(id.to_owned(), Box::new(twin), r))
            .await
    }

    /// Removes a device.
    pub(crate) async fn remove_device(&self, id: &str) -> Result<Value, HubError> {
        self.ask(|r| Command::RemoveDevice(id.to_owned(), r)).await
    }

    /// The registry index of a device.
    pub(crate) async fn device_index(&self, id: &str) -> Result<DeviceIdx, HubError> {
        self.ask(|r| Command::Device(DeviceCommand::Lookup(id.to_owned(), r)))
            .await
    }

    /// A device's twin as the device sees it.
    pub(crate) async fn device_twin(&self, device: DeviceIdx) -> Result<Value, HubError> {
        self.ask(|r| Command::Device(DeviceCommand::Twin(device, r)))
            .await
    }

    /// Applies a device's reported patch; answers the new reported `$version`.
    pub(crate) async fn report_properties(
        &self,
        device: DeviceIdx,
        patch: Object,
        ack_of: Option<OpId>,
    ) -> Result<u64, HubError> {
        self.ask(|reply| {
            Command::Device(DeviceCommand::Report {
                device,
                patch,
                ack_of,
                reply,
            })
        })
        .await
    }
}

/// One job as a dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job id.
    pub(crate) id: String,
    /// The wire type.
    pub(crate) job_type: &'static str,
    /// The status.
    pub(crate) status: JobStatus,
    /// Device counts.
    pub stats: DeviceJobStatistics,
    /// Makespan so far, ms.
    pub(crate) makespan_ms: f64,
    /// Terminal device operations per second so far.
    pub(crate) ops_per_s: f64,
    /// Failures by cause.
    pub(crate) errors: ErrorCounts,
    /// When it starts or started.
    pub(crate) start_us: Micros,
    /// When it ended.
    pub(crate) end_us: Option<Micros>,
    /// Its dispatch rate, if it has one ([`crate::hub::jobs::JobControl::ramp`]).
    pub(crate) ramp: Option<Ramp>,
    /// Device outcomes as abort criteria count them.
    pub(crate) tally: Tally,
    /// The abort criterion that cancelled it.
    pub(crate) tripped: Option<Tripped>,
}

/// What the engine publishes every 100 ms (behind an `Arc`, so readers share it without copying):
/// a self-contained snapshot, never a reference into the engine's state.
#[derive(Debug, Clone)]
pub struct HubView {
    /// Clock reading of the snapshot.
    pub(crate) now_us: Micros,
    /// Devices in the registry.
    pub(crate) devices: u64,
    /// Devices connected.
    pub connected: u64,
    /// Jobs in creation order.
    pub jobs: Vec<JobView>,
    /// Histograms and throughput.
    pub metrics: MetricsSnapshot,
    /// How an external fleet's delivery receipts were judged so far, if any came.
    pub(crate) delivery_clock: Option<DeliveryClockReport>,
}

impl Default for HubView {
    fn default() -> Self {
        HubView {
            now_us: 0,
            devices: 0,
            connected: 0,
            jobs: Vec::new(),
            metrics: crate::metrics::Recorder::new().snapshot(0),
            delivery_clock: None,
        }
    }
}

impl HubView {
    /// Whether every job has ended.
    pub fn all_jobs_done(&self) -> bool {
        self.jobs.iter().all(|j| j.status.is_terminal())
    }
}
