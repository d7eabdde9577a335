//! One allowance's bucket under either throttle model: the arithmetic of serving a call at once,
//! queueing it behind the burst (traffic shaping), or refusing it, with no I/O and no clock of
//! its own (times come in as arguments).

use crate::clock::{secs_us, Micros};

use super::{Allowance, Model};

/// How long a call may wait in traffic shaping's backlog before it is refused with 429003.
/// IoT Hub does not publish the figure; 30 s is below the SDKs' own HTTP timeouts.
pub(crate) const BACKLOG_TIMEOUT_US: Micros = secs_us(30);

/// What a bucket decides for one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Served now.
    Now,
    /// Queued: served at this time (shape only).
    At(Micros),
    /// Refused at once: past the allowance (reject, 429001) or with the backlog full
    /// (shape, 429002). Carries how many calls (in cost units) the backlog held.
    Refused {
        /// Calls waiting ahead, in cost units (0 under reject).
        backlog: f64,
    },
    /// Shape: held in the backlog until this time, then refused with 429003.
    TimesOut(Micros),
}

/// A token bucket holding one window's allowance. Under shaping its level may go below zero:
/// the debt is the backlog of queued calls, paid back at the allowance's rate.
#[derive(Debug)]
pub(crate) struct Bucket {
    level: f64,
    last: Micros,
}

impl Bucket {
    /// A full bucket of `a`.
    pub(crate) fn full(a: Allowance) -> Self {
        Bucket {
            level: a.per_window,
            last: 0,
        }
    }

    /// Decides a call of `cost` at `now` under `model`, and takes its tokens if it will be
    /// served.
    pub(crate) fn take(&mut self, a: Allowance, model: Model, cost: f64, now: Micros) -> Decision {
        let per_us = a.per_window / (a.window_s * 1e6);
        let refill = now.saturating_sub(self.last) as f64 * per_us;
        self.level = (self.level + refill).min(a.per_window);
        self.last = self.last.max(now);
        if self.level >= cost {
            self.level -= cost;
            return Decision::Now;
        }
        let debt = cost - self.level;
        match model {
            Model::Reject => Decision::Refused { backlog: 0.0 },
            // The backlog holds at most one more window's allowance.
            Model::Shape if debt > a.per_window => Decision::Refused {
                backlog: -self.level.min(0.0),
            },
            Model::Shape => {
                let wait = (debt / per_us).round() as Micros;
                if wait > BACKLOG_TIMEOUT_US {
                    return Decision::TimesOut(now + BACKLOG_TIMEOUT_US);
                }
                self.level -= cost;
                Decision::At(now + wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_SECOND: Allowance = Allowance {
        per_window: 100.0,
        window_s: 1.0,
    };
    const PER_MINUTE: Allowance = Allowance {
        per_window: 20.0,
        window_s: 60.0,
    };

    #[test]
    fn reject_serves_the_burst_then_refuses() {
        let mut b = Bucket::full(PER_SECOND);
        for _ in 0..100 {
            assert_eq!(b.take(PER_SECOND, Model::Reject, 1.0, 0), Decision::Now);
        }
        assert_eq!(
            b.take(PER_SECOND, Model::Reject, 1.0, 0),
            Decision::Refused { backlog: 0.0 }
        );
        assert_eq!(
            b.take(PER_SECOND, Model::Reject, 1.0, 10_000),
            Decision::Now
        );
    }

    /// A full bucket of `a` after a burst at 0 of its whole allowance, served now, and of
    /// `queued` more, queued `every` microseconds apart.
    fn burst_then_queue(a: Allowance, queued: u64, every: Micros) -> Bucket {
        let mut b = Bucket::full(a);
        for _ in 0..a.per_window as usize {
            assert_eq!(b.take(a, Model::Shape, 1.0, 0), Decision::Now);
        }
        for k in 1..=queued {
            assert_eq!(b.take(a, Model::Shape, 1.0, 0), Decision::At(k * every));
        }
        b
    }

    #[test]
    fn shape_queues_at_the_rate_until_the_backlog_is_full() {
        // 100 per second: the queued calls are served 10 ms apart.
        let mut b = burst_then_queue(PER_SECOND, 100, 10_000);
        assert_eq!(
            b.take(PER_SECOND, Model::Shape, 1.0, 0),
            Decision::Refused { backlog: 100.0 }
        );
        // Half a second on, half of the backlog is served: there is room again.
        assert_eq!(
            b.take(PER_SECOND, Model::Shape, 1.0, 500_000),
            Decision::At(1_010_000)
        );
    }

    #[test]
    fn shape_times_out_a_call_that_would_wait_past_the_backlog_timeout() {
        // 20 per minute: one every 3 s; ten fit in 30 s of waiting.
        let mut b = burst_then_queue(PER_MINUTE, 10, 3_000_000);
        assert_eq!(
            b.take(PER_MINUTE, Model::Shape, 1.0, 0),
            Decision::TimesOut(BACKLOG_TIMEOUT_US)
        );
    }
}
