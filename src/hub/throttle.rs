//! The IoT Hub tier model (spec §6): how many job device operations per second and how many
//! concurrent jobs a hub of a given tier and unit count allows, and the pacing of device
//! operations under that rate. Off by default (`unlimited`).

use std::fmt;
use std::str::FromStr;

use crate::clock::Micros;

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
}

impl Limits {
    /// No limits at all.
    pub const UNLIMITED: Limits = Limits {
        tier: Tier::Unlimited,
        units: 1,
    };

    /// Job device operations per second, hub-wide (None: unlimited).
    pub fn device_ops_per_s(&self) -> Option<f64> {
        let units = self.units.max(1) as f64;
        match self.tier {
            Tier::Unlimited => None,
            Tier::F1 | Tier::S1 => Some(10.0),
            Tier::S2 => Some(units.max(10.0)),
            Tier::S3 => Some(50.0 * units),
        }
    }

    /// Jobs that may be active (not terminal) at once (None: unlimited).
    pub fn concurrent_jobs(&self) -> Option<usize> {
        match self.tier {
            Tier::Unlimited => None,
            Tier::F1 | Tier::S1 => Some(1),
            Tier::S2 => Some(5),
            Tier::S3 => Some(10),
        }
    }

    /// Job operations (create, get, list, cancel) per minute (None: unlimited).
    pub fn job_api_per_min(&self) -> Option<f64> {
        let units = self.units.max(1) as f64;
        match self.tier {
            Tier::Unlimited => None,
            Tier::F1 | Tier::S1 | Tier::S2 => Some(100.0 * units),
            Tier::S3 => Some(5000.0 * units),
        }
    }
}

/// Paces device operations at a fixed rate: each operation gets the next free slot, and the
/// slot time is the operation's intended time (so waiting for a slot shows up as delivery
/// latency, not hidden). Idle time is not banked: a burst after a pause still goes one slot at
/// a time.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval_us: f64,
    next_slot_us: f64,
}

impl Pacer {
    /// A pacer for `per_s` operations per second.
    pub fn new(per_s: f64) -> Self {
        Pacer {
            interval_us: 1_000_000.0 / per_s,
            next_slot_us: 0.0,
        }
    }

    /// Takes the next slot if it is open at `now`; returns the slot's time. `ready_us` is the
    /// earliest time the operation itself could run (its job's start).
    pub fn take(&mut self, now: Micros, ready_us: Micros) -> Option<Micros> {
        let slot = self.next_slot_us.max(ready_us as f64);
        if slot > now as f64 {
            return None;
        }
        self.next_slot_us = slot + self.interval_us;
        Some(slot as Micros)
    }

    /// When the next slot opens, given work ready at `ready_us`.
    pub fn next_open(&self, ready_us: Micros) -> Micros {
        self.next_slot_us.max(ready_us as f64).ceil() as Micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_quota_table() {
        let s1x2 = Limits {
            tier: Tier::S1,
            units: 2,
        };
        assert_eq!(s1x2.device_ops_per_s(), Some(10.0));
        assert_eq!(s1x2.concurrent_jobs(), Some(1));
        let s2 = Limits {
            tier: Tier::S2,
            units: 20,
        };
        assert_eq!(s2.device_ops_per_s(), Some(20.0));
        assert_eq!(
            Limits {
                tier: Tier::S2,
                units: 3
            }
            .device_ops_per_s(),
            Some(10.0)
        );
        let s3 = Limits {
            tier: Tier::S3,
            units: 4,
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
