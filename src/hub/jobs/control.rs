//! Internal job options the REST API does not expose, for clients inside the process (a staged
//! rollout): an explicit device set instead of the query, an exponential dispatch rate that
//! rises while the job runs, abort criteria checked at every device outcome, and acknowledged
//! success for twin jobs. AWS IoT Jobs has the same features (`jobExecutionsRolloutConfig`,
//! `abortConfig`, `timeoutConfig`); IoT Hub leaves them to the back end.

use std::sync::Arc;

use crate::clock::Micros;
use crate::hub::jobs::{DeviceError, DeviceStatus};
use crate::ids::DeviceIdx;

/// A job's internal options; the default changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobControl {
    /// Target exactly these devices (the query still names the job's target in its JSON).
    pub devices: Option<Arc<[DeviceIdx]>>,
    /// Pace dispatch at this rising rate, on top of the tier's pace.
    pub ramp: Option<Ramp>,
    /// Cancel the job once one of these trips.
    pub abort: Option<Abort>,
    /// Twin jobs: a device succeeds only once it reports the desired values back within this
    /// many seconds, and fails `timed_out` otherwise.
    pub ack_timeout_s: Option<u64>,
}

/// An exponential dispatch rate: `per_minute`, multiplied by `factor` (up to `max_per_minute`)
/// each time `notified_step` more devices were notified, or `succeeded_step` more succeeded,
/// since the last increase. A rate is earned over time: the first device goes one interval
/// after the job starts, so `n` devices at `r` per minute take exactly `n / r` minutes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// The current rate.
    pub per_minute: f64,
    /// The factor of each increase.
    pub factor: f64,
    /// Notifications per increase (0: none).
    pub notified_step: u64,
    /// Successes per increase (0: none).
    pub succeeded_step: u64,
    /// The highest rate.
    pub max_per_minute: f64,
    /// Notified since the last increase.
    pub notified_since: u64,
    /// Succeeded since the last increase.
    pub succeeded_since: u64,
    /// When the last device was notified (µs, fractional to stay exact).
    last_us: f64,
}

impl Ramp {
    /// A ramp starting at `per_minute`, with nothing counted yet.
    pub fn new(
        per_minute: f64,
        factor: f64,
        notified_step: u64,
        succeeded_step: u64,
        max_per_minute: f64,
    ) -> Self {
        Ramp {
            per_minute: per_minute.min(max_per_minute),
            factor,
            notified_step,
            succeeded_step,
            max_per_minute,
            notified_since: 0,
            succeeded_since: 0,
            last_us: 0.0,
        }
    }

    /// Starts counting intervals from `start_us`.
    pub(crate) fn start(&mut self, start_us: Micros) {
        self.last_us = start_us as f64;
    }

    /// When the next device may be notified.
    pub(crate) fn next_us(&self) -> f64 {
        self.last_us + 60e6 / self.per_minute
    }

    /// A device was notified at `at_us`.
    pub(crate) fn notified(&mut self, at_us: f64) {
        self.last_us = at_us;
        self.notified_since += 1;
        if self.notified_step > 0 && self.notified_since >= self.notified_step {
            self.increase();
        }
    }

    /// A device succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.succeeded_since += 1;
        if self.succeeded_step > 0 && self.succeeded_since >= self.succeeded_step {
            self.increase();
        }
    }

    fn increase(&mut self) {
        self.per_minute = (self.per_minute * self.factor).min(self.max_per_minute);
        self.notified_since = 0;
        self.succeeded_since = 0;
    }
}

/// A class of device failure, as abort and retry criteria name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Any failure.
    Failed,
    /// 504101, or no acknowledgement in time.
    TimedOut,
    /// 404103.
    NotOnline,
    /// A device status outside 200..=299.
    Rejected,
}

impl Failure {
    /// Every class, in key order.
    pub const ALL: [Failure; 4] = [
        Failure::Failed,
        Failure::TimedOut,
        Failure::NotOnline,
        Failure::Rejected,
    ];

    /// The key name (`all` is a synonym of `failed`).
    pub fn name(self) -> &'static str {
        match self {
            Failure::Failed => "failed",
            Failure::TimedOut => "timed_out",
            Failure::NotOnline => "not_online",
            Failure::Rejected => "rejected",
        }
    }

    /// Parses a key name.
    pub fn parse(text: &str) -> Option<Failure> {
        match text {
            "all" => Some(Failure::Failed),
            _ => Failure::ALL.into_iter().find(|f| f.name() == text),
        }
    }

    /// Whether a device that failed with `error` belongs to this class.
    pub(crate) fn matches(self, error: DeviceError) -> bool {
        match self {
            Failure::Failed => true,
            Failure::TimedOut => error == DeviceError::Timeout,
            Failure::NotOnline => error == DeviceError::NotOnline,
            Failure::Rejected => error == DeviceError::DeviceStatus,
        }
    }
}

/// Device outcomes counted for abort criteria: ended devices and failures by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Devices that ended (succeeded or failed; cancelled ones do not count).
    pub ended: u64,
    /// Failures by class, in [`Failure::ALL`] order.
    pub failed: [u64; 4],
}

impl Tally {
    /// Counts one outcome.
    pub(crate) fn count(&mut self, status: DeviceStatus, error: DeviceError) {
        if status == DeviceStatus::Canceled {
            return;
        }
        self.ended += 1;
        if status == DeviceStatus::Failed {
            self.add_failure(error, 1);
        }
    }

    /// Adds `n` failures of `error` (negative to take them back).
    pub(crate) fn add_failure(&mut self, error: DeviceError, n: i64) {
        for (i, f) in Failure::ALL.into_iter().enumerate() {
            if f.matches(error) {
                self.failed[i] = self.failed[i].saturating_add_signed(n);
            }
        }
    }

    /// Failures of class `f`.
    pub fn of(&self, f: Failure) -> u64 {
        self.failed[Failure::ALL.iter().position(|&x| x == f).unwrap_or(0)]
    }

    /// The sum of two tallies.
    pub fn plus(mut self, other: &Tally) -> Tally {
        self.ended += other.ended;
        for (a, b) in self.failed.iter_mut().zip(other.failed) {
            *a += b;
        }
        self
    }
}

/// One abort criterion: once `min_executed` devices ended, a share of `threshold` or more of
/// them failing with `failure` trips it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbortRule {
    /// The failure class counted.
    pub failure: Failure,
    /// The share that trips it, 0..=1.
    pub threshold: f64,
    /// Ended devices needed before it is judged.
    pub min_executed: u64,
}

impl AbortRule {
    /// Whether `tally` trips the rule.
    pub fn trips(&self, tally: &Tally) -> bool {
        tally.ended > 0
            && tally.ended >= self.min_executed
            && tally.of(self.failure) as f64 >= self.threshold * tally.ended as f64
    }
}

/// A job's abort criteria over outcomes counted before it (`base`: earlier jobs of the same
/// rollout) and its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    /// The criteria.
    pub rules: Vec<AbortRule>,
    /// Outcomes before this job.
    pub base: Tally,
}

/// Why a job was aborted: the rule and the figures that tripped it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tripped {
    /// The rule.
    pub rule: AbortRule,
    /// The outcomes then (base included).
    pub tally: Tally,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.tally.of(self.rule.failure);
        write!(
            f,
            "{} {n} of {} ended devices ({:.2}%) reached the abort threshold {}%",
            self.rule.failure.name(),
            self.tally.ended,
            n as f64 * 100.0 / self.tally.ended.max(1) as f64,
            self.rule.threshold * 100.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_earns_slots_and_steps_up_to_its_cap() {
        let mut r = Ramp::new(600.0, 2.0, 2, 0, 1500.0);
        r.start(0);
        assert_eq!(r.next_us(), 100_000.0);
        r.notified(100_000.0);
        r.notified(200_000.0);
        assert_eq!(r.per_minute, 1200.0);
        assert_eq!(r.next_us(), 250_000.0);
        r.notified(250_000.0);
        r.notified(300_000.0);
        assert_eq!(r.per_minute, 1500.0, "capped");
    }

    #[test]
    fn abort_rules_wait_for_min_executed() {
        let rule = AbortRule {
            failure: Failure::TimedOut,
            threshold: 0.05,
            min_executed: 100,
        };
        let mut t = Tally::default();
        for i in 0..99 {
            let (s, e) = if i < 10 {
                (DeviceStatus::Failed, DeviceError::Timeout)
            } else {
                (DeviceStatus::Completed, DeviceError::None)
            };
            t.count(s, e);
        }
        assert!(!rule.trips(&t));
        t.count(DeviceStatus::Completed, DeviceError::None);
        assert!(rule.trips(&t));
        assert_eq!(t.of(Failure::Failed), 10);
        assert_eq!(t.of(Failure::NotOnline), 0);
        assert_eq!(Failure::parse("all"), Some(Failure::Failed));
    }
}
