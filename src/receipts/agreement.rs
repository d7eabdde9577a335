//! How far another process's clock can be trusted: an NTP-style estimate of its offset from
//! timed exchanges, and the judgement of delivery receipts stamped with it.
//!
//! An exchange: the hub reads its clock (`sent`), asks the other side for its clock, which
//! answers its reading (`remote`), and reads its own clock again when the answer arrives
//! (`back`). The other side read its clock somewhere in between, so its offset is
//! `remote - (sent + back) / 2`, give or take half the exchange's round trip. Clocks also drift
//! apart between exchanges: an estimate's uncertainty grows by [`DRIFT_PPM`] of its age. The
//! estimate is the exchange of the last [`WINDOW`] with the smallest uncertainty now (NTP's
//! clock filter). All readings are microseconds since the Unix epoch, by each process's own
//! wall-clock mapping of its monotonic clock, so on one machine the offset is about zero.

use std::collections::VecDeque;

use crate::clock::Micros;
use crate::link::ClockAgreement;

/// The exchanges an estimate is chosen from.
pub(crate) const WINDOW: usize = 8;
/// How fast two machines' clocks may drift apart, parts per million: a generous bound for
/// quartz clocks without NTP discipline (processes of one machine share one clock and do not
/// drift at all).
pub(crate) const DRIFT_PPM: u64 = 50;
/// A delivery batch is recorded only when the clocks agree to within this fraction of its
/// median latency (1/10: a tenth).
pub(crate) const TRUST_DIVISOR: u64 = 10;
/// The uncertainty of an offset not measured yet.
pub(crate) const UNMEASURED: u64 = u64::MAX;

/// One timed exchange, every reading in Unix microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// The hub's clock when it asked.
    pub(crate) sent: i64,
    /// The other clock's reading in its answer.
    pub(crate) remote: i64,
    /// The hub's clock when the answer arrived.
    pub(crate) back: i64,
}

impl Exchange {
    /// The other clock minus the hub's, and half the round trip (None: the answer came back
    /// before the question left, which no real exchange does).
    fn offset(&self) -> Option<(i64, u64)> {
        let rtt = self.back.checked_sub(self.sent).filter(|&d| d >= 0)?;
        let mid = self.sent + rtt / 2;
        Some((self.remote.saturating_sub(mid), (rtt as u64).div_ceil(2)))
    }
}

/// The last [`WINDOW`] exchanges with one other clock.
#[derive(Debug, Default)]
pub(crate) struct Estimator {
    exchanges: VecDeque<(i64, u64, i64)>,
}

impl Estimator {
    /// Adds an exchange; one whose readings make no sense is ignored.
    pub(crate) fn add(&mut self, x: Exchange) {
        let Some((offset, half_rtt)) = x.offset() else {
            return;
        };
        if self.exchanges.len() == WINDOW {
            self.exchanges.pop_front();
        }
        self.exchanges.push_back((offset, half_rtt, x.back));
    }

    /// The best estimate at hub time `now` (Unix µs): the offset whose uncertainty (half its
    /// round trip plus the drift since) is smallest now; unmeasured before any exchange.
    pub(crate) fn agreement(&self, now: i64) -> ClockAgreement {
        self.exchanges
            .iter()
            .map(|&(offset_us, half_rtt, at)| {
                let age = now.saturating_sub(at).max(0) as u64;
                let drift = age.saturating_mul(DRIFT_PPM).div_ceil(1_000_000);
                ClockAgreement {
                    offset_us,
                    uncertainty_us: half_rtt.saturating_add(drift),
                }
            })
            .min_by_key(|a| a.uncertainty_us)
            .unwrap_or(ClockAgreement {
                offset_us: 0,
                uncertainty_us: UNMEASURED,
            })
    }
}

/// Why a batch of receipts was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Untrusted {
    /// No exchange has measured the other clock yet.
    #[error(
        "the fleet's clock offset was not measured yet (no answer on the receipts side channel)"
    )]
    Unmeasured,
    /// The clocks agree too loosely for the latencies measured.
    #[error(
        "the fleet's clock agrees with the hub's to ±{uncertainty_us} µs, more than 1/{TRUST_DIVISOR} of the deliveries' median ({median_us} µs): delivery not recorded"
    )]
    TooUncertain {
        /// The clocks' uncertainty.
        uncertainty_us: u64,
        /// The batch's median delivery latency.
        median_us: Micros,
    },
}

/// Whether deliveries with `latencies` (reordered here), stamped with a clock agreeing as
/// `clock` says, can be trusted: the uncertainty must be at most 1/[`TRUST_DIVISOR`] of their
/// median. An empty batch is trusted if the clock was measured.
pub(crate) fn judge(clock: ClockAgreement, latencies: &mut [Micros]) -> Result<(), Untrusted> {
    if clock.uncertainty_us == UNMEASURED {
        return Err(Untrusted::Unmeasured);
    }
    if latencies.is_empty() {
        return Ok(());
    }
    let mid = latencies.len() / 2;
    let median_us = *latencies.select_nth_unstable(mid).1;
    if clock.uncertainty_us.saturating_mul(TRUST_DIVISOR) > median_us {
        return Err(Untrusted::TooUncertain {
            uncertainty_us: clock.uncertainty_us,
            median_us,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_midpoint_and_the_uncertainty_half_the_round_trip() {
        let mut e = Estimator::default();
        assert_eq!(e.agreement(0).uncertainty_us, UNMEASURED);
        // The other clock is 5,000 µs ahead; the exchange took 400 µs.
        e.add(Exchange {
            sent: 1_000_000,
            remote: 1_005_200,
            back: 1_000_400,
        });
        let a = e.agreement(1_000_400);
        assert_eq!((a.offset_us, a.uncertainty_us), (5_000, 200));
        // A quicker exchange later is better, even with the drift of the earlier one.
        e.add(Exchange {
            sent: 2_000_000,
            remote: 2_005_030,
            back: 2_000_060,
        });
        let a = e.agreement(2_000_060);
        assert_eq!((a.offset_us, a.uncertainty_us), (5_000, 30));
        // Ten seconds on, the drift allowance (50 ppm: 500 µs) has grown the uncertainty.
        let a = e.agreement(12_000_060);
        assert_eq!(a.uncertainty_us, 530);
    }

    #[test]
    fn only_the_last_window_counts_and_nonsense_is_ignored() {
        let mut e = Estimator::default();
        e.add(Exchange {
            sent: 0,
            remote: 100,
            back: 2,
        });
        for k in 1..=WINDOW as i64 {
            e.add(Exchange {
                sent: k * 1_000,
                remote: k * 1_000 + 50,
                back: k * 1_000 + 100,
            });
        }
        e.add(Exchange {
            sent: 10,
            remote: 0,
            back: 5,
        });
        // The 2 µs exchange has left the window: the best is a 100 µs round trip.
        let a = e.agreement(WINDOW as i64 * 1_000 + 100);
        assert_eq!((a.offset_us, a.uncertainty_us), (0, 50));
    }

    #[test]
    fn deliveries_are_refused_when_the_clocks_agree_too_loosely() {
        let clock = |u| ClockAgreement {
            offset_us: -3,
            uncertainty_us: u,
        };
        let mut lat = vec![900, 1_000, 50_000];
        assert_eq!(judge(clock(100), &mut lat), Ok(()));
        let refused = judge(clock(101), &mut lat).unwrap_err();
        assert_eq!(
            refused,
            Untrusted::TooUncertain {
                uncertainty_us: 101,
                median_us: 1_000
            }
        );
        assert!(refused.to_string().contains("±101 µs"), "{refused}");
        assert_eq!(
            judge(clock(UNMEASURED), &mut lat),
            Err(Untrusted::Unmeasured)
        );
        assert_eq!(judge(clock(5), &mut []), Ok(()));
    }
}
