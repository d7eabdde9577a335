//! Faults on the fleet's side of a scenario's timeline (`[[fault]]`): which devices a fault hits
//! and what it does to them while it lasts. Both transports ask the same [`FaultPlan`], so a
//! fault means the same in process and over MQTT:
//!
//! - `disconnect`: at its instant, the devices it hits drop their connection and reconnect
//!   after the fleet's backoff (jittered, as SDK devices do): a reconnect storm;
//! - `partition`: while it lasts, nothing passes between the hub and the devices it hits
//!   (requests and answers are lost, pings stop); a partition longer than the session timeout
//!   (1.5 keep-alives) costs the device its session, and it reconnects when the partition ends;
//! - `latency`: while it lasts, every message each way takes `add` longer;
//! - `errors`: while it lasts, the devices fail that share of method requests with their
//!   method's error status.
//!
//! Which devices of the cohort a fault with a share hits is a draw from the seed, per fault:
//! the same devices in every run. The hub's own fault (`hub_restart`) is the engine's.
//!
//! A fault's times count from the timeline's origin, the instant the run's jobs count from too
//! ([`FaultPlan::begin`]): with an MQTT fleet, once its devices have connected. Until then no
//! fault acts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::Rng;
use tokio::sync::Notify;

use crate::clock::Micros;
use crate::fleet::behaviour::{rng_for, Salt};

/// The MQTT fleet's keep-alive, seconds (the Python SDK's).
pub(crate) const KEEP_ALIVE_S: u16 = 60;

/// How long a silent device keeps its session at the hub: 1.5 keep-alives (MQTT 3.1.1
/// §3.1.2.10), after which the hub closes it.
pub(crate) const SESSION_TIMEOUT_US: Micros = KEEP_ALIVE_S as Micros * 1_500_000;

/// The first wait before a device reconnects after losing its connection; every failed attempt
/// doubles it, and each wait is jittered by ×0.5–1.5.
pub(crate) const RECONNECT_BACKOFF_US: Micros = 250_000;

/// What a device-side fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FaultKind {
    /// The connections drop at the fault's start.
    Disconnect,
    /// Nothing passes until the fault ends.
    Partition,
    /// Every message takes this much longer each way, µs.
    Latency(Micros),
    /// This share of method requests fail.
    Errors(f64),
}

/// One device-side fault: its kind, its window, and whom it hits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceFault {
    /// What it does.
    pub(crate) kind: FaultKind,
    /// When it starts, µs from the timeline's origin.
    pub(crate) start_us: Micros,
    /// When it ends (its start for a disconnect).
    pub(crate) end_us: Micros,
    /// The cohort it hits (None: every cohort).
    pub(crate) cohort: Option<u16>,
    /// The share of those devices it hits.
    pub(crate) share: f64,
}

/// The device-side faults of a run, in file order. Its copies share their origin.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultPlan {
    faults: Vec<DeviceFault>,
    origin: Arc<Origin>,
}

/// When a plan's timeline starts.
#[derive(Debug)]
struct Origin {
    /// µs of the clock; `Micros::MAX` until it starts.
    at: AtomicU64,
    begun: Notify,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            at: AtomicU64::new(Micros::MAX),
            begun: Notify::new(),
        }
    }
}

impl FaultPlan {
    /// The plan of `faults`, its timeline not begun.
    pub(crate) fn new(faults: Vec<DeviceFault>) -> FaultPlan {
        FaultPlan {
            faults,
            origin: Arc::default(),
        }
    }

    /// Starts the timeline at `at` (µs of the clock), unless it has started already: the first
    /// call decides.
    pub(crate) fn begin(&self, at: Micros) {
        let set =
            self.origin
                .at
                .compare_exchange(Micros::MAX, at, Ordering::Release, Ordering::Relaxed);
        if set.is_ok() {
            self.origin.begun.notify_one();
        }
    }

    /// The timeline's origin, once begun.
    pub(crate) fn origin(&self) -> Option<Micros> {
        let at = self.origin.at.load(Ordering::Acquire);
        (at != Micros::MAX).then_some(at)
    }

    /// Waits for the timeline to begin; answers its origin.
    pub(crate) async fn begun(&self) -> Micros {
        loop {
            let notified = self.origin.begun.notified();
            if let Some(at) = self.origin() {
                // Whoever else waits hears of it too.
                self.origin.begun.notify_one();
                return at;
            }
            notified.await;
        }
    }

    /// The faults, in file order (a fault's position is its number in [`FaultPlan::hits`]).
    pub(crate) fn faults(&self) -> &[DeviceFault] {
        &self.faults
    }

    /// Whether fault `k` hits device `idx` of `cohort` (drawn from `seed`).
    pub(crate) fn hits(&self, k: usize, seed: u64, idx: u32, cohort: u16) -> bool {
        let f = &self.faults[k];
        f.cohort.is_none_or(|c| c == cohort)
            && (f.share >= 1.0 || rng_for(seed, idx, Salt::Fault, k as u32).gen::<f64>() < f.share)
    }

    /// The faults active at `now` (µs of the clock) that hit device `idx` of `cohort`, with the
    /// timeline's origin.
    fn active(
        &self,
        now: Micros,
        seed: u64,
        idx: u32,
        cohort: u16,
    ) -> impl Iterator<Item = (&DeviceFault, Micros)> {
        let origin = self.origin().filter(|&o| o <= now);
        self.faults.iter().enumerate().filter_map(move |(k, f)| {
            let origin = origin?;
            let t = now - origin;
            (f.start_us <= t && t < f.end_us && self.hits(k, seed, idx, cohort))
                .then_some((f, origin))
        })
    }

    /// Until when (µs of the clock) a partition cuts device `idx` off at `now` (None: it is
    /// not cut off).
    pub(crate) fn partitioned_until(
        &self,
        now: Micros,
        seed: u64,
        idx: u32,
        cohort: u16,
    ) -> Option<Micros> {
        if self.faults.is_empty() {
            return None;
        }
        self.active(now, seed, idx, cohort)
            .filter(|(f, _)| f.kind == FaultKind::Partition)
            .map(|(f, origin)| origin.saturating_add(f.end_us))
            .max()
    }

    /// The latency that active faults add to device `idx`'s messages at `now`, each way.
    pub(crate) fn added_latency(&self, now: Micros, seed: u64, idx: u32, cohort: u16) -> Micros {
        if self.faults.is_empty() {
            return 0;
        }
        self.active(now, seed, idx, cohort)
            .map(|(f, _)| match f.kind {
                FaultKind::Latency(add) => add,
                _ => 0,
            })
            .fold(0, Micros::saturating_add)
    }

    /// The share of method requests that active faults make device `idx` fail at `now` (None:
    /// no such fault).
    pub(crate) fn error_rate(&self, now: Micros, seed: u64, idx: u32, cohort: u16) -> Option<f64> {
        if self.faults.is_empty() {
            return None;
        }
        self.active(now, seed, idx, cohort)
            .filter_map(|(f, _)| match f.kind {
                FaultKind::Errors(rate) => Some(rate),
                _ => None,
            })
            .reduce(f64::max)
    }
}

/// A device's wait before its `attempt`th reconnection attempt (0: the first after a drop):
/// [`RECONNECT_BACKOFF_US`] doubled per failed attempt (up to 30 s), jittered ×0.5–1.5 by a
/// draw from `seed`, the device and `n` (the device's count of drops, so each drop draws anew).
pub(crate) fn reconnect_wait(seed: u64, idx: u32, n: u32, attempt: u32) -> Micros {
    let base = (RECONNECT_BACKOFF_US << attempt.min(7)).min(30_000_000);
    let jitter: f64 = rng_for(seed, idx, Salt::Reconnect, n).gen_range(0.5..1.5);
    (base as f64 * jitter) as Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, cohort: Option<u16>, share: f64) -> DeviceFault {
        DeviceFault {
            kind,
            start_us: 10_000_000,
            end_us: 20_000_000,
            cohort,
            share,
        }
    }

    #[test]
    fn a_share_hits_that_share_of_its_cohort_only_and_the_seed_decides_which() {
        let plan = FaultPlan::new(vec![fault(FaultKind::Partition, Some(1), 0.25)]);
        let hit =
            |seed| -> Vec<u32> { (0..40_000).filter(|&d| plan.hits(0, seed, d, 1)).collect() };
        let a = hit(3);
        // Binomial: 10000 ± 4.5 sd.
        assert!((9_600..10_400).contains(&a.len()), "hit {}", a.len());
        assert_eq!(a, hit(3), "same seed, same devices");
        assert_ne!(a, hit(4), "another seed, other devices");
        assert!(
            !(0..1000).any(|d| plan.hits(0, 3, d, 0)),
            "cohort 0 is spared"
        );
    }

    #[test]
    fn a_fault_acts_only_inside_its_window_counted_from_the_origin() {
        let plan = FaultPlan::new(vec![
            fault(FaultKind::Partition, None, 1.0),
            fault(FaultKind::Latency(500_000), None, 1.0),
            fault(FaultKind::Latency(250_000), None, 1.0),
            fault(FaultKind::Errors(0.3), None, 1.0),
        ]);
        assert_eq!(
            plan.partitioned_until(15_000_000, 1, 0, 0),
            None,
            "nothing acts before the timeline begins"
        );
        plan.clone().begin(5_000_000);
        plan.begin(7_000_000); // the first call decides, for every copy
        assert_eq!(plan.origin(), Some(5_000_000));
        for now in [14_999_999, 25_000_000] {
            assert_eq!(plan.partitioned_until(now, 1, 0, 0), None);
            assert_eq!(plan.added_latency(now, 1, 0, 0), 0);
            assert_eq!(plan.error_rate(now, 1, 0, 0), None);
        }
        assert_eq!(
            plan.partitioned_until(15_000_000, 1, 0, 0),
            Some(25_000_000)
        );
        assert_eq!(
            plan.added_latency(20_000_000, 1, 0, 0),
            750_000,
            "latencies add up"
        );
        assert_eq!(plan.error_rate(24_999_999, 1, 0, 0), Some(0.3));
        assert_eq!(FaultPlan::default().added_latency(15_000_000, 1, 0, 0), 0);
    }

    #[tokio::test]
    async fn waiters_hear_when_the_timeline_begins() {
        let plan = FaultPlan::new(Vec::new());
        let (a, b) = (plan.clone(), plan.clone());
        let waiters = tokio::spawn(async move { (a.begun().await, b.begun().await) });
        tokio::task::yield_now().await;
        plan.begin(42);
        assert_eq!(waiters.await.unwrap(), (42, 42));
    }

    #[test]
    fn reconnect_waits_double_up_to_a_cap_and_jitter_by_seed() {
        let w = |attempt| reconnect_wait(1, 2, 0, attempt);
        assert!((125_000..375_000).contains(&w(0)), "{}", w(0));
        assert!((250_000..750_000).contains(&w(1)), "{}", w(1));
        assert!(w(30) <= 45_000_000, "capped: {}", w(30));
        assert_eq!(w(0), reconnect_wait(1, 2, 0, 0));
        assert_ne!(w(0), reconnect_wait(1, 2, 1, 0), "each drop draws anew");
    }
}
