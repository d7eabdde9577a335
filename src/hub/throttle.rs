//! The IoT Hub tier model: how many job device operations per second and how many
//! concurrent jobs a hub of a given tier and unit count allows, the pacing of device operations
//! under that rate, and the [`RateLimiter`] that meters service calls (job operations, queries,
//! twin reads and updates, direct methods) under a throttle [`Model`]: traffic shaping as IoT
//! Hub documents it (burst, then a queue at the allowance's rate, 429002/429003 past the
//! backlog) or refusal at once (429001). Off by default (`unlimited`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::clock::{Clock, Micros};
use crate::hub::error::{ErrorCode, HubError};

mod bucket;

use bucket::{Bucket, Decision, BACKLOG_TIMEOUT_US};

/// An IoT Hub pricing tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// No limits: the simulator's own speed.
    Unlimited,
    /// Free.
    F1,
    /// Standard 1.
    S1,
    /// Standard 2.
    S2,
    /// Standard 3.
    S3,
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "UNLIMITED" => Tier::Unlimited,
            "F1" => Tier::F1,
            "S1" => Tier::S1,
            "S2" => Tier::S2,
            "S3" => Tier::S3,
            _ => {
                return Err(format!(
                    "unknown tier '{s}'; expected unlimited, F1, S1, S2 or S3"
                ))
            }
        })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Unlimited => "unlimited",
            Tier::F1 => "F1",
            Tier::S1 => "S1",
            Tier::S2 => "S2",
            Tier::S3 => "S3",
        })
    }
}

/// The limits of a hub: a tier and its unit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The tier.
    pub tier: Tier,
    /// Units (at least 1).
    pub units: u32,
    /// What happens to service calls past an allowance.
    pub throttle: Model,
}

impl Limits {
    /// No limits at all.
    pub const UNLIMITED: Limits = Limits {
        tier: Tier::Unlimited,
        units: 1,
        throttle: Model::Shape,
    };

    /// Job device operations per second, hub-wide (None: unlimited).
    pub(crate) fn device_ops_per_s(&self) -> Option<f64> {
        let units = self.units.max(1) as f64;
        match self.tier {
            Tier::Unlimited => None,
            Tier::F1 | Tier::S1 => Some(10.0),
            Tier::S2 => Some(units.max(10.0)),
            Tier::S3 => Some(50.0 * units),
        }
    }

    /// Jobs that may be active (not terminal) at once (None: unlimited).
    pub(crate) fn concurrent_jobs(&self) -> Option<usize> {
        match self.tier {
            Tier::Unlimited => None,
            Tier::F1 | Tier::S1 => Some(1),
            Tier::S2 => Some(5),
            Tier::S3 => Some(10),
        }
    }

    /// The allowance of `op` (None: unlimited), from the quota table.
    pub(crate) fn allowance(&self, op: Metered) -> Option<Allowance> {
        let units = self.units.max(1) as f64;
        let (per_window, window_s) = match (self.tier, op) {
            (Tier::Unlimited, _) => return None,
            (Tier::S3, Metered::JobApi) => (5000.0 * units, 60.0),
            (_, Metered::JobApi) => (100.0 * units, 60.0),
            (Tier::S3, Metered::Query) => (1000.0 * units, 60.0),
            (_, Metered::Query) => (20.0 * units, 60.0),
            (Tier::S3, Metered::TwinRead) => (500.0 * units, 1.0),
            (Tier::S2, Metered::TwinRead) => ((10.0 * units).max(100.0), 1.0),
            (_, Metered::TwinRead) => (100.0, 1.0),
            (Tier::S3, Metered::TwinUpdate) => (250.0 * units, 1.0),
            (Tier::S2, Metered::TwinUpdate) => ((5.0 * units).max(50.0), 1.0),
            (_, Metered::TwinUpdate) => (50.0, 1.0),
            // 160 KB/s, 480 KB/s and 24 MB/s per unit, metered in 4 KB chunks.
            (Tier::S3, Metered::DirectMethod) => (6000.0 * units, 1.0),
            (Tier::S2, Metered::DirectMethod) => (120.0 * units, 1.0),
            (_, Metered::DirectMethod) => (40.0 * units, 1.0),
        };
        Some(Allowance {
            per_window,
            window_s,
        })
    }
}

/// The service calls a tier meters, beside job device operations (paced by [`Pacer`]).
/// Declared in the order of [`Metered::ALL`], which indexes the limiter's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metered {
    /// Job create, get, list and cancel.
    JobApi,
    /// Device queries (each page asked for).
    Query,
    /// Twin reads.
    TwinRead,
    /// Twin updates (tags and desired properties).
    TwinUpdate,
    /// Direct methods, in 4 KB chunks of request payload.
    DirectMethod,
}

impl Metered {
    const ALL: [Metered; 5] = [
        Metered::JobApi,
        Metered::Query,
        Metered::TwinRead,
        Metered::TwinUpdate,
        Metered::DirectMethod,
    ];

    fn what(self) -> &'static str {
        match self {
            Metered::JobApi => "job operations",
            Metered::Query => "queries",
            Metered::TwinRead => "twin reads",
            Metered::TwinUpdate => "twin updates",
            Metered::DirectMethod => "direct methods (4 KB chunks)",
        }
    }
}

/// How much of one kind of call a hub allows: `per_window` every `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Allowance {
    /// Calls (or chunks) per window.
    pub(crate) per_window: f64,
    /// The window, seconds (60 for per-minute quotas, 1 for per-second ones).
    pub(crate) window_s: f64,
}

/// What a hub does with service calls past an allowance. IoT Hub documents traffic shaping
/// (`Shape`); a hub may still refuse at once, so both are offered (`[hub] throttle`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Model {
    /// The burst (one window's allowance) is served at once; later calls queue and are
    /// served at the allowance's rate; a full backlog refuses with 429002, a call that would
    /// wait too long is held that long and refused with 429003.
    #[default]
    Shape,
    /// A token bucket that refuses with 429001 at once past the allowance.
    Reject,
}

impl FromStr for Model {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "shape" => Ok(Model::Shape),
            "reject" => Ok(Model::Reject),
            _ => Err(format!(
                "unknown throttle model '{s}'; expected shape (queue past the allowance, as IoT Hub documents) or reject (refuse at once with 429001)"
            )),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Shape => "shape",
            Model::Reject => "reject",
        })
    }
}

/// How a metered call is let through.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Serve it now.
    Now,
    /// Queued by traffic shaping: serve it at this time.
    At(Micros),
    /// Held in the backlog until this time, then answered with this error (429003).
    RefusedAt(Micros, HubError),
}

/// Buckets over the [`Metered`] calls, one per kind, each holding one window's allowance and
/// refilling continuously, under the hub's throttle [`Model`].
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    /// Indexed by `Metered as usize`. A std mutex held for a few arithmetic steps, never
    /// across `.await`.
    buckets: [Mutex<Bucket>; 5],
    /// Calls queued by shaping, then refused with 429001, 429002 and 429003 (for `/metrics`).
    counts: [AtomicU64; 4],
}

/// What a [`RateLimiter`] did with the calls past an allowance, since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThrottleCounts {
    /// Calls queued by traffic shaping (served late).
    pub(crate) queued: u64,
    /// Refusals by code: 429001, 429002, 429003.
    pub(crate) refused: [(ErrorCode, u64); 3],
}

impl RateLimiter {
    /// The buckets of `limits`, full.
    pub(crate) fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            buckets: Metered::ALL.map(|op| {
                Mutex::new(Bucket::full(limits.allowance(op).unwrap_or(Allowance {
                    per_window: 0.0,
                    window_s: 1.0,
                })))
            }),
            counts: Default::default(),
        }
    }

    /// What it did with calls past an allowance so far.
    pub(crate) fn counts(&self) -> ThrottleCounts {
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        ThrottleCounts {
            queued: n(0),
            refused: [
                (ErrorCode::ThrottlingException, n(1)),
                (ErrorCode::ThrottleBacklogLimitExceeded, n(2)),
                (ErrorCode::ThrottlingBacklogTimeout, n(3)),
            ],
        }
    }

    /// Takes `cost` tokens of `op` at `now` under the hub's model: served now, queued, or
    /// refused (429001 under reject, 429002 with shaping's backlog full).
    pub(crate) fn take(&self, op: Metered, cost: f64, now: Micros) -> Result<Admission, HubError> {
        self.decide(op, cost, now)
    }

    /// Lets a call of `cost` of `op` through on `clock`: at once, after its turn in shaping's
    /// backlog, or with the error (429003 only after it was held for the backlog timeout).
    pub(crate) async fn pass(&self, op: Metered, cost: f64, clock: &Clock) -> Result<(), HubError> {
        match self.take(op, cost, clock.now_us())? {
            Admission::Now => Ok(()),
            Admission::At(at) => {
                tokio::time::sleep_until(clock.instant_at(at)).await;
                Ok(())
            }
            Admission::RefusedAt(at, e) => {
                tokio::time::sleep_until(clock.instant_at(at)).await;
                Err(e)
            }
        }
    }

    fn decide(&self, op: Metered, cost: f64, now: Micros) -> Result<Admission, HubError> {
        let model = self.limits.throttle;
        let Some(a) = self.limits.allowance(op) else {
            return Ok(Admission::Now);
        };
        let decision = self.buckets[op as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(a, model, cost, now);
        let counted = match decision {
            Decision::Now => None,
            Decision::At(_) => Some(0),
            Decision::Refused { .. } if model == Model::Reject => Some(1),
            Decision::Refused { .. } => Some(2),
            Decision::TimesOut(_) => Some(3),
        };
        if let Some(i) = counted {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        match decision {
            Decision::Now => Ok(Admission::Now),
            Decision::At(at) => Ok(Admission::At(at)),
            Decision::TimesOut(at) => Ok(Admission::RefusedAt(at, self.refusal(op, decision))),
            Decision::Refused { .. } => Err(self.refusal(op, decision)),
        }
    }

    fn refusal(&self, op: Metered, decision: Decision) -> HubError {
        let a = self.limits.allowance(op).unwrap_or(Allowance {
            per_window: 0.0,
            window_s: 1.0,
        });
        let per = if a.window_s >= 60.0 {
            "minute"
        } else {
            "second"
        };
        let limit = format!(
            "{} are limited to {:.0} per {per} on {} with {} unit(s)",
            op.what(),
            a.per_window,
            self.limits.tier,
            self.limits.units.max(1)
        );
        match (self.limits.throttle, decision) {
            (Model::Shape, Decision::Refused { backlog }) => HubError::new(
                ErrorCode::ThrottleBacklogLimitExceeded,
                format!("{limit}; the backlog already holds {backlog:.0} waiting, its limit; retry later"),
            ),
            (_, Decision::TimesOut(_)) => HubError::new(
                ErrorCode::ThrottlingBacklogTimeout,
                format!(
                    "{limit}; this call waited {} s in the backlog without its turn coming; retry later",
                    BACKLOG_TIMEOUT_US / 1_000_000
                ),
            ),
            _ => HubError::new(
                ErrorCode::ThrottlingException,
                format!("{limit}; retry later"),
            ),
        }
    }
}

/// Paces device operations at a fixed rate: each operation gets the next free slot, and the
/// slot time is the operation's intended time (so waiting for a slot shows up as delivery
/// latency, not hidden). Idle time is not banked: a burst after a pause still goes one slot at
/// a time.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    interval_us: f64,
    next_slot_us: f64,
}

impl Pacer {
    /// A pacer for `per_s` operations per second.
    pub(crate) fn new(per_s: f64) -> Self {
        Pacer {
            interval_us: 1_000_000.0 / per_s,
            next_slot_us: 0.0,
        }
    }

    /// Opens no slot before `now_us`: a restarted hub ([`crate::hub::store`]) does not catch up
    /// on the slots of its downtime in a burst.
    pub(crate) fn open_from(&mut self, now_us: Micros) {
        self.next_slot_us = self.next_slot_us.max(now_us as f64);
    }

    /// Takes the next slot if it is open at `now`; returns the slot's time. `ready_us` is the
    /// earliest time the operation itself could run (its job's start).
    pub(crate) fn take(&mut self, now: Micros, ready_us: Micros) -> Option<Micros> {
        let slot = self.next_slot_us.max(ready_us as f64);
        if slot > now as f64 {
            return None;
        }
        self.next_slot_us = slot + self.interval_us;
        Some(slot as Micros)
    }

    /// When the next slot opens, given work ready at `ready_us`.
    pub(crate) fn next_open(&self, ready_us: Micros) -> Micros {
        self.next_slot_us.max(ready_us as f64).ceil() as Micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_opened_later_does_not_catch_up() {
        let mut pacer = Pacer::new(10.0);
        pacer.open_from(5_000_000);
        assert_eq!(pacer.take(5_000_000, 0), Some(5_000_000));
        assert_eq!(
            pacer.take(5_000_000, 0),
            None,
            "one slot per 100 ms, none from before"
        );
        assert_eq!(pacer.next_open(0), 5_100_000);
    }

    #[test]
    fn tiers_follow_the_quota_table() {
        let s1x2 = Limits {
            tier: Tier::S1,
            units: 2,
            ..Limits::UNLIMITED
        };
        assert_eq!(s1x2.device_ops_per_s(), Some(10.0));
        assert_eq!(s1x2.concurrent_jobs(), Some(1));
        let s2 = Limits {
            tier: Tier::S2,
            units: 20,
            ..Limits::UNLIMITED
        };
        assert_eq!(s2.device_ops_per_s(), Some(20.0));
        assert_eq!(
            Limits {
                tier: Tier::S2,
                units: 3,
                ..Limits::UNLIMITED
            }
            .device_ops_per_s(),
            Some(10.0)
        );
        let s3 = Limits {
            tier: Tier::S3,
            units: 4,
            ..Limits::UNLIMITED
        };
        assert_eq!(
            (s3.device_ops_per_s(), s3.concurrent_jobs()),
            (Some(200.0), Some(10))
        );
        assert_eq!(Limits::UNLIMITED.device_ops_per_s(), None);
        assert_eq!("s3".parse::<Tier>(), Ok(Tier::S3));
        assert!("S9"
            .parse::<Tier>()
            .unwrap_err()
            .contains("expected unlimited, F1, S1, S2 or S3"));
    }

    fn s1_limiter(throttle: Model) -> RateLimiter {
        RateLimiter::new(Limits {
            tier: Tier::S1,
            units: 1,
            throttle,
        })
    }

    #[test]
    fn service_calls_get_their_tiers_allowance_then_429001_under_reject() {
        let s1 = s1_limiter(Model::Reject);
        for _ in 0..20 {
            s1.take(Metered::Query, 1.0, 0).unwrap();
        }
        let e = s1.take(Metered::Query, 1.0, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::ThrottlingException);
        assert!(
            e.message
                .contains("queries are limited to 20 per minute on S1"),
            "{}",
            e.message
        );
        assert!(
            s1.take(Metered::Query, 1.0, 3_000_000).is_ok(),
            "one query back after 3 s"
        );
        // Buckets are separate: twin reads still have their 100 per second.
        for _ in 0..100 {
            s1.take(Metered::TwinRead, 1.0, 3_000_000).unwrap();
        }
        assert!(s1.take(Metered::TwinRead, 1.0, 3_000_000).is_err());
        // A 40-chunk method call takes S1's whole second of direct-method metering.
        assert!(s1.take(Metered::DirectMethod, 40.0, 0).is_ok());
        assert!(s1.take(Metered::DirectMethod, 1.0, 0).is_err());
        let s3 = Limits {
            tier: Tier::S3,
            units: 2,
            ..Limits::UNLIMITED
        };
        assert_eq!(
            s3.allowance(Metered::TwinUpdate),
            Some(Allowance {
                per_window: 500.0,
                window_s: 1.0
            })
        );
        let open = RateLimiter::new(Limits::UNLIMITED);
        assert!((0..10_000).all(|_| open.take(Metered::Query, 1.0, 0) == Ok(Admission::Now)));
    }

    /// Traffic shaping as https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling#traffic-shaping
    /// describes it (a burst at once, then a queue served at the throttle rate, then refusals),
    /// with the codes of https://learn.microsoft.com/azure/iot-hub/troubleshoot-error-codes
    /// ("429002 ThrottleBacklogLimitExceeded: the number of requests in the backlog exceeded the
    /// backlog limit"; "429003 ThrottlingBacklogTimeout: backlogged requests timed out while
    /// waiting in the backlog queue").
    #[test]
    fn shaping_queues_past_the_burst_and_refuses_only_a_full_or_stale_backlog() {
        let s1 = s1_limiter(Model::Shape);
        for _ in 0..100 {
            assert_eq!(s1.take(Metered::TwinRead, 1.0, 0), Ok(Admission::Now));
        }
        assert_eq!(
            s1.take(Metered::TwinRead, 1.0, 0),
            Ok(Admission::At(10_000))
        );
        for _ in 1..100 {
            assert!(matches!(
                s1.take(Metered::TwinRead, 1.0, 0),
                Ok(Admission::At(_))
            ));
        }
        let full = s1.take(Metered::TwinRead, 1.0, 0).unwrap_err();
        assert_eq!(full.code, ErrorCode::ThrottleBacklogLimitExceeded);
        assert!(
            full.message.contains("backlog already holds 100"),
            "{}",
            full.message
        );
        // Queries: 20 per minute, one every 3 s; the 31st call would wait 33 s.
        for k in 0..30 {
            assert!(s1.take(Metered::Query, 1.0, 0).is_ok(), "query {k}");
        }
        let Ok(Admission::RefusedAt(at, e)) = s1.take(Metered::Query, 1.0, 0) else {
            panic!("the 31st query is not held for 429003");
        };
        assert_eq!(
            (at, e.code),
            (30_000_000, ErrorCode::ThrottlingBacklogTimeout)
        );
        assert!("Reject".parse::<Model>() == Ok(Model::Reject));
        assert!("queue"
            .parse::<Model>()
            .unwrap_err()
            .contains("expected shape"));
    }

    #[test]
    fn pacer_spaces_slots_and_does_not_bank_idle_time() {
        let mut p = Pacer::new(10.0);
        assert_eq!(p.take(0, 0), Some(0));
        assert_eq!(p.take(50_000, 0), None, "next slot opens at 100 ms");
        assert_eq!(p.next_open(0), 100_000);
        assert_eq!(p.take(100_000, 0), Some(100_000));
        // A long pause: the next two operations still come one interval apart.
        assert_eq!(p.take(5_000_000, 5_000_000), Some(5_000_000));
        assert_eq!(p.take(5_000_000, 5_000_000), None);
        assert_eq!(p.take(5_100_000, 5_000_000), Some(5_100_000));
    }
}
