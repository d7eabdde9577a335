//! Behaviour models: what a device of a cohort does with a request (how long it takes, whether
//! it fails or stays silent), how it acknowledges twin patches, how it churns, and the network
//! link between it and the hub (latency and loss each way). Every draw comes from a generator
//! seeded by (scenario seed, device, event), so a seed always gives the same failing devices and
//! the same latencies.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Normal, Pareto};

use crate::clock::Micros;

/// z for the 99th percentile of the standard normal.
const Z99: f64 = 2.326_347_874;

/// A latency distribution ready to sample, in microseconds.
#[derive(Debug, Clone)]
pub(crate) enum Latency {
    /// Always this.
    Fixed(Micros),
    /// Uniform in [min, max].
    Uniform(Micros, Micros),
    /// Normal, cut at zero.
    Normal(Normal<f64>),
    /// Log-normal.
    LogNormal(LogNormal<f64>),
    /// Exponential.
    Exp(Exp<f64>),
    /// Pareto.
    Pareto(Pareto<f64>),
}

impl Latency {
    /// Always `us`.
    pub(crate) fn fixed(us: Micros) -> Latency {
        Latency::Fixed(us)
    }

    /// Uniform in [`min`, `max`] µs.
    pub(crate) fn uniform(min: Micros, max: Micros) -> Latency {
        Latency::Uniform(min, max.max(min))
    }

    /// Normal with `mean` and `stddev` µs, cut at zero.
    pub(crate) fn normal(mean: f64, stddev: f64) -> Latency {
        Normal::new(mean, stddev).map_or(Latency::Fixed(0), Latency::Normal)
    }

    /// Log-normal with this `median` and 99th percentile, µs.
    pub(crate) fn lognormal(median: f64, p99: f64) -> Latency {
        let mu = median.ln();
        let sigma = (p99.ln() - mu) / Z99;
        LogNormal::new(mu, sigma).map_or(Latency::Fixed(0), Latency::LogNormal)
    }

    /// Exponential with this `mean`, µs.
    pub(crate) fn exponential(mean: f64) -> Latency {
        Exp::new(1.0 / mean.max(1.0)).map_or(Latency::Fixed(0), Latency::Exp)
    }

    /// Pareto with this `scale` (µs, the minimum) and `shape`.
    pub(crate) fn pareto(scale: f64, shape: f64) -> Latency {
        Pareto::new(scale, shape).map_or(Latency::Fixed(0), Latency::Pareto)
    }

    /// One draw.
    pub(crate) fn sample(&self, rng: &mut SmallRng) -> Micros {
        let v = match self {
            Latency::Fixed(v) => return *v,
            Latency::Uniform(lo, hi) => return rng.gen_range(*lo..=*hi),
            Latency::Normal(d) => d.sample(rng),
            Latency::LogNormal(d) => d.sample(rng),
            Latency::Exp(d) => d.sample(rng),
            Latency::Pareto(d) => d.sample(rng),
        };
        // Cap at one hour: a heavy tail must not park an answer forever.
        v.clamp(0.0, 3.6e9) as Micros
    }
}

/// How a device answers one method.
#[derive(Debug, Clone)]
pub(crate) struct MethodModel {
    /// Answer delay.
    pub(crate) latency: Latency,
    /// Share answered with `error_status`.
    pub(crate) error_rate: f64,
    /// Error status.
    pub(crate) error_status: i32,
    /// Share never answered.
    pub(crate) no_response: f64,
    /// Good status.
    pub(crate) ok_status: i32,
}

/// What a device does with a method request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodOutcome {
    /// Answer with `status` after `after` µs.
    Answer {
        /// Delay.
        after: Micros,
        /// Status.
        status: i32,
    },
    /// Never answer.
    Silent,
}

impl MethodModel {
    /// Draws the outcome of one request.
    pub(crate) fn draw(&self, rng: &mut SmallRng) -> MethodOutcome {
        let roll: f64 = rng.gen();
        if roll < self.no_response {
            return MethodOutcome::Silent;
        }
        let status = if roll < self.no_response + self.error_rate {
            self.error_status
        } else {
            self.ok_status
        };
        MethodOutcome::Answer {
            after: self.latency.sample(rng),
            status,
        }
    }
}

/// How a cohort's devices churn: disconnect at random (a Poisson process) and stay away for a
/// drawn downtime.
#[derive(Debug, Clone)]
pub(crate) struct Churn {
    /// Mean disconnects per device per hour (0: none).
    pub(crate) disconnects_per_hour: f64,
    /// Downtime per disconnect.
    pub(crate) downtime: Latency,
}

/// The network between the hub and a cohort's devices (a cellular link, a lossy radio): every
/// message, in each direction, is lost with probability `loss` or else arrives after a
/// `latency` draw (one way).
#[derive(Debug, Clone)]
pub(crate) struct LinkModel {
    /// One-way latency, each direction.
    pub(crate) latency: Latency,
    /// Share of messages lost, each direction.
    pub(crate) loss: f64,
}

/// What a device's link does to one message from the hub and to the device's answer to it:
/// each is `Some(one-way latency)` or `None` (lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trip {
    /// Hub to device.
    pub(crate) down: Option<Micros>,
    /// Device to hub (the answer or acknowledgement, if the device sends one).
    pub(crate) up: Option<Micros>,
}

impl LinkModel {
    /// Whether the link changes nothing (no latency, no loss): then it is not modelled at all.
    pub(crate) fn is_transparent(&self) -> bool {
        self.loss <= 0.0 && matches!(self.latency, Latency::Fixed(0))
    }

    /// One message's hop: `None` if lost, else its latency.
    fn hop(&self, rng: &mut SmallRng) -> Option<Micros> {
        if self.loss > 0.0 && rng.gen::<f64>() < self.loss {
            return None;
        }
        Some(self.latency.sample(rng))
    }

    /// The trip of `device`'s `n`th message from the hub (and its answer). Down and up draw
    /// from generators of their own (salts [`Salt::LinkDown`], [`Salt::LinkUp`]).
    pub(crate) fn trip(&self, seed: u64, device: u32, n: u32) -> Trip {
        let down = self.hop(&mut rng_for(seed, device, Salt::LinkDown, n));
        let up = match down {
            Some(_) => self.hop(&mut rng_for(seed, device, Salt::LinkUp, n)),
            None => None,
        };
        Trip { down, up }
    }
}

/// A cohort's behaviour.
#[derive(Debug, Clone)]
pub(crate) struct CohortModel {
    methods: HashMap<String, MethodModel>,
    default_method: MethodModel,
    /// Twin acknowledgement delay.
    pub(crate) ack_latency: Latency,
    /// Share of desired patches never acknowledged.
    pub(crate) ack_failure: f64,
    /// Share of devices that never connect.
    pub(crate) offline: f64,
    /// Mean gap between disconnects, µs (None: no churn).
    pub(crate) churn_gap: Option<Exp<f64>>,
    /// Downtime per disconnect.
    pub(crate) downtime: Latency,
    /// The network between hub and devices (None: none, messages arrive at once).
    pub(crate) link: Option<LinkModel>,
}

impl CohortModel {
    /// A cohort's model: `methods` by name (`default` answers the others; without it, an
    /// immediate 200), twin acknowledgements after `ack_latency` with `ack_failure` of them
    /// never sent, an `offline` share that never connects, and `churn`.
    pub(crate) fn new(
        mut methods: HashMap<String, MethodModel>,
        ack_latency: Latency,
        ack_failure: f64,
        offline: f64,
        churn: Option<Churn>,
    ) -> CohortModel {
        let default_method = methods.remove("default").unwrap_or(MethodModel {
            latency: Latency::Fixed(0),
            error_rate: 0.0,
            error_status: 500,
            no_response: 0.0,
            ok_status: 200,
        });
        let churn_gap = churn
            .as_ref()
            .filter(|ch| ch.disconnects_per_hour > 0.0)
            .and_then(|ch| Exp::new(ch.disconnects_per_hour / 3.6e9).ok());
        CohortModel {
            methods,
            default_method,
            ack_latency,
            ack_failure,
            offline,
            churn_gap,
            downtime: churn.map_or(Latency::Fixed(0), |ch| ch.downtime),
            link: None,
        }
    }

    /// The same model with its devices behind `link` (a transparent one, no latency and no loss,
    /// is left out: it would only cost draws).
    pub(crate) fn with_link(mut self, link: Option<LinkModel>) -> CohortModel {
        self.link = link.filter(|l| !l.is_transparent());
        self
    }

    /// The model for a method name (falling back to `default`).
    pub(crate) fn method(&self, name: &str) -> &MethodModel {
        self.methods.get(name).unwrap_or(&self.default_method)
    }
}

/// Event kinds that salt a device's generator.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Salt {
    /// Whether the device is offline for good.
    Offline = 1,
    /// A method request (plus the device's request counter).
    Method = 2,
    /// A desired patch (plus the device's patch counter).
    Desired = 3,
    /// Churn (plus the device's churn counter).
    Churn = 4,
    /// A message from the hub on the device's link (plus the device's link counter).
    LinkDown = 5,
    /// The answer to that message on the way back (same counter).
    LinkUp = 6,
    /// Whether a fault hits the device (plus the fault's number).
    Fault = 7,
    /// The jitter of a reconnection's backoff (plus the device's count of drops).
    Reconnect = 8,
}

/// The generator for one event of one device.
///
/// Each part goes through the mixer on its own, so no two (seed, device) pairs share a stream
/// (a plain `seed ^ device` would give seed 12's device 1 the draws of seed 13's device 0).
pub(crate) fn rng_for(seed: u64, device: u32, salt: Salt, counter: u32) -> SmallRng {
    let x = splitmix(splitmix(seed) ^ device as u64);
    SmallRng::seed_from_u64(splitmix(x ^ ((salt as u64) << 32 | counter as u64)))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn quantile(mut v: Vec<Micros>, q: f64) -> Micros {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * q) as usize]
    }

    #[test]
    fn lognormal_matches_median_and_p99() {
        let l = Latency::lognormal(40_000.0, 400_000.0);
        let draws: Vec<_> = (0..200_000)
            .map(|i| l.sample(&mut rng_for(7, i, Salt::Method, 0)))
            .collect();
        let (p50, p99) = (quantile(draws.clone(), 0.5), quantile(draws, 0.99));
        assert!((38_000..42_000).contains(&p50), "p50 {p50}");
        assert!((370_000..430_000).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn uniform_exponential_pareto_normal_stay_in_bounds() {
        let mut rng = rng_for(1, 2, Salt::Method, 3);
        let u = Latency::uniform(5_000, 50_000);
        let e = Latency::exponential(10_000.0);
        let p = Latency::pareto(2_000.0, 1.5);
        let n = Latency::normal(1_000.0, 5_000.0);
        let mut sum_e = 0;
        for _ in 0..100_000 {
            assert!((5_000..=50_000).contains(&u.sample(&mut rng)));
            sum_e += e.sample(&mut rng);
            assert!(p.sample(&mut rng) >= 2_000);
            let _ = n.sample(&mut rng); // cut at zero: never panics, never wraps
        }
        let mean_e = sum_e as f64 / 100_000.0;
        assert!(
            (9_500.0..10_500.0).contains(&mean_e),
            "exponential mean {mean_e}"
        );
    }

    #[test]
    fn error_and_silence_rates_hold_and_seeds_decide() {
        let m = MethodModel {
            latency: Latency::Fixed(0),
            error_rate: 0.02,
            error_status: 500,
            no_response: 0.005,
            ok_status: 200,
        };
        let outcomes = |seed| -> Vec<MethodOutcome> {
            (0..100_000)
                .map(|d| m.draw(&mut rng_for(seed, d, Salt::Method, 0)))
                .collect()
        };
        let a = outcomes(7);
        let errors = a
            .iter()
            .filter(|o| matches!(o, MethodOutcome::Answer { status: 500, .. }))
            .count();
        let silent = a.iter().filter(|o| **o == MethodOutcome::Silent).count();
        // Binomial: 2000 ± 4.4 sd and 500 ± 4.5 sd.
        assert!((1_800..2_200).contains(&errors), "errors {errors}");
        assert!((400..600).contains(&silent), "silent {silent}");
        assert_eq!(a, outcomes(7), "same seed, same draws");
        assert_ne!(a, outcomes(8), "another seed, other draws");
    }

    #[test]
    fn a_link_loses_its_share_each_way_and_replays_by_seed() {
        let link = LinkModel {
            latency: Latency::uniform(1_000, 9_000),
            loss: 0.1,
        };
        let trips: Vec<Trip> = (0..100_000).map(|d| link.trip(5, d, 0)).collect();
        let down_lost = trips.iter().filter(|t| t.down.is_none()).count();
        let up_lost = trips
            .iter()
            .filter(|t| t.down.is_some() && t.up.is_none())
            .count();
        // Binomial: 10000 ± 4 sd; 9000 ± 4 sd (of the 90000 that arrived).
        assert!((9_600..10_400).contains(&down_lost), "down {down_lost}");
        assert!((8_600..9_400).contains(&up_lost), "up {up_lost}");
        assert!(trips
            .iter()
            .flat_map(|t| [t.down, t.up])
            .flatten()
            .all(|us| (1_000..=9_000).contains(&us)));
        assert_eq!(
            link.trip(5, 3, 7),
            link.trip(5, 3, 7),
            "same draw, same trip"
        );
        assert_ne!(
            (0..10).map(|n| link.trip(5, 3, n)).collect::<Vec<_>>(),
            (0..10).map(|n| link.trip(6, 3, n)).collect::<Vec<_>>(),
            "another seed, other trips"
        );
    }

    #[test]
    fn a_transparent_link_is_not_modelled() {
        let model = |latency, loss| {
            CohortModel::new(HashMap::new(), Latency::fixed(0), 0.0, 0.0, None)
                .with_link(Some(LinkModel { latency, loss }))
                .link
                .is_some()
        };
        assert!(!model(Latency::fixed(0), 0.0));
        assert!(model(Latency::fixed(1), 0.0));
        assert!(model(Latency::fixed(0), 0.01));
    }
}
