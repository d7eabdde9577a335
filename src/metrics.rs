//! TEMPORARY stand-in for the metrics module (replaced on merge).
#![allow(missing_docs, dead_code)]

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Measure {
    EngineLag,
    Delivery,
    RoundTrip,
    Completion,
}
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct JobSlot(pub u32);
#[derive(Debug, Default)]
pub struct Recorder {
    jobs: u32,
}
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot;
impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }
    pub fn add_job(&mut self, _job_id: &str) -> JobSlot {
        self.jobs += 1;
        JobSlot(self.jobs - 1)
    }
    pub fn record(&mut self, _job: JobSlot, _m: Measure, _us: u64) {}
    pub fn op_dispatched(&mut self, _job: JobSlot) {}
    pub fn op_done(&mut self, _job: JobSlot, _now: u64, _failed: bool) {}
    pub fn tick(&mut self, _now: u64) {}
    pub fn snapshot(&self, _now: u64) -> MetricsSnapshot {
        MetricsSnapshot
    }
}
pub mod results {
    pub fn write(
        _dir: &std::path::Path,
        _r: &crate::report::RunReport,
        _rec: &super::Recorder,
        _now: u64,
    ) -> Result<(), std::io::Error> {
        Ok(())
    }
}
