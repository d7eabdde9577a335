//! Staged rollouts as the domain knows them: a plan (the job each wave runs, its waves, rate,
//! abort criteria, retries and success rule), built from a scenario's `[[rollout]]` by
//! `scenario::build` and played against a hub by `app::rollouts`; and the split of a target set
//! into waves (a seeded sample for shares, WHERE clauses otherwise), which `--dry-run` shows.

use crate::clock::Micros;
use crate::hub::jobs::{AbortRule, Failure, JobKind, Ramp, Tally};
use crate::ids::DeviceIdx;

/// A staged rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// The rollout id: its waves' jobs are `{id}-w{n}`, their retries `{id}-w{n}-r{k}`.
    pub id: String,
    /// What each device's job does.
    pub kind: JobKind,
    /// The target set's WHERE clause (or `*`), evaluated when the rollout starts.
    pub query: String,
    /// When it starts, from the run's start.
    pub start_at: Micros,
    /// `maxExecutionTimeInSeconds` of each wave's (and retry's) job.
    pub max_execution_s: u64,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// The wait after a wave ends before the next begins.
    pub soak_us: Micros,
    /// Twin rollouts: succeed only when devices report the desired values back within this
    /// many seconds.
    pub ack_timeout_s: Option<u64>,
    /// The exponential rate (None: the tier's pace alone).
    pub ramp: Option<Ramp>,
    /// Abort criteria, over the whole rollout so far.
    pub abort: Vec<AbortRule>,
    /// Retries of failed devices.
    pub retry: Vec<RetryRule>,
    /// The seed of the sample that share waves draw.
    pub seed: u64,
}

/// One wave's devices.
#[derive(Debug, Clone, PartialEq)]
pub enum Wave {
    /// A cumulative share of the target set (0..=1): the wave holds the sample's devices up to
    /// this share, less those of earlier waves.
    Share(f64),
    /// The target set's devices matching this WHERE clause (`*`: all), less those of earlier
    /// waves.
    Where(String),
}

impl Wave {
    /// The WHERE clause that narrows the target set for this wave: None for a share and for `*`.
    pub fn narrowing(&self) -> Option<&str> {
        match self {
            Wave::Where(clause) if clause.trim() != "*" => Some(clause),
            _ => None,
        }
    }
}

/// Retry devices that failed with `failure` up to `times` more times, `backoff` after the
/// try that failed ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryRule {
    /// The failure class retried.
    pub failure: Failure,
    /// Retries at most.
    pub times: u32,
    /// The wait before each retry.
    pub backoff_us: Micros,
}

impl RolloutPlan {
    /// The job id of wave `n` (from 1), or of its `k`th retry.
    pub fn job_id(&self, n: usize, k: u32) -> String {
        job_id(&self.id, n, k)
    }

    /// The WHERE clause that names wave `w`'s candidates (the target set, narrowed by a WHERE
    /// wave's own clause).
    pub fn wave_condition(&self, w: &Wave) -> String {
        match w.narrowing() {
            Some(clause) if self.query.trim() == "*" => clause.to_owned(),
            Some(clause) => format!("({}) AND ({clause})", self.query),
            None => self.query.clone(),
        }
    }

    /// Splits `targets` (the target set, ascending) into the waves' device sets (each
    /// ascending). `matching(i)` answers the devices matching WHERE wave `i`'s clause, ascending
    /// (asked only for WHERE waves other than `*`).
    pub fn split(
        &self,
        targets: &[DeviceIdx],
        mut matching: impl FnMut(usize) -> Vec<DeviceIdx>,
    ) -> Vec<Vec<DeviceIdx>> {
        let mut sample: Vec<DeviceIdx> = targets.to_vec();
        let key = self.seed ^ fnv1a(self.id.as_bytes());
        sample.sort_by_key(|d| (splitmix(key ^ u64::from(d.get())), d.get()));
        let mut taken = vec![false; targets.len()];
        let position = |d: &DeviceIdx| targets.binary_search(d).ok();
        let mut count = 0usize;
        let mut cursor = 0usize;
        let mut out = Vec::with_capacity(self.waves.len());
        for (i, wave) in self.waves.iter().enumerate() {
            let mut devices = Vec::new();
            match wave {
                Wave::Share(share) => {
                    let upto = ((share * targets.len() as f64) - 1e-9).ceil().max(0.0) as usize;
                    while count < upto && cursor < sample.len() {
                        let d = sample[cursor];
                        cursor += 1;
                        if let Some(p) = position(&d).filter(|&p| !taken[p]) {
                            taken[p] = true;
                            devices.push(d);
                            count += 1;
                        }
                    }
                }
                Wave::Where(_) => {
                    let candidates = match wave.narrowing() {
                        None => targets.to_vec(),
                        Some(_) => matching(i),
                    };
                    for d in candidates {
                        if let Some(p) = position(&d).filter(|&p| !taken[p]) {
                            taken[p] = true;
                            devices.push(d);
                            count += 1;
                        }
                    }
                }
            }
            devices.sort_unstable();
            out.push(devices);
        }
        out
    }
}

/// What the dashboard shows of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutView {
    /// The rollout id.
    pub id: String,
    /// Where it stands, in words: "wave 2 of 3", "soaking before wave 3", "aborted", ...
    pub status: String,
    /// The current rate (None without `rate`).
    pub rate_per_minute: Option<f64>,
    /// Every wave, started or not.
    pub waves: Vec<WaveView>,
    /// How far the failure share is from each abort threshold.
    pub margins: Vec<Margin>,
}

/// One wave's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveView {
    /// The wave's job id.
    pub job_id: String,
    /// Devices in the wave (0 until the rollout starts).
    pub devices: u64,
    /// Whether its job was created.
    pub started: bool,
    /// Devices whose last try succeeded so far.
    pub succeeded: u64,
    /// Devices whose last try failed so far.
    pub failed: u64,
}

/// One abort criterion against the rollout's outcomes so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margin {
    /// The criterion.
    pub rule: AbortRule,
    /// The outcomes so far.
    pub tally: Tally,
}

impl Margin {
    /// The share of ended devices that failed as the rule counts (0 before any ended).
    pub fn share(&self) -> f64 {
        self.tally.of(self.rule.failure) as f64 / self.tally.ended.max(1) as f64
    }

    /// Whether enough devices ended for the rule to be judged.
    pub fn judged(&self) -> bool {
        self.tally.ended >= self.rule.min_executed
    }
}

/// The job id of rollout `id`'s wave `n` (from 1), or of its `k`th retry (`k` from 1; 0: the
/// wave itself).
pub fn job_id(id: &str, n: usize, k: u32) -> String {
    match k {
        0 => format!("{id}-w{n}"),
        k => format!("{id}-w{n}-r{k}"),
    }
}

/// FNV-1a of `bytes`: a stable hash of the rollout id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: a well-mixed, stable key per device.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::jobs::TwinUpdate;

    fn plan(waves: Vec<Wave>, seed: u64) -> RolloutPlan {
        RolloutPlan {
            id: "fw".into(),
            kind: JobKind::Twin(TwinUpdate::default()),
            query: "tags.model = 'x1'".into(),
            start_at: 0,
            max_execution_s: 3600,
            waves,
            soak_us: 0,
            ack_timeout_s: None,
            ramp: None,
            abort: Vec::new(),
            retry: Vec::new(),
            seed,
        }
    }

    #[test]
    fn share_waves_are_a_seeded_cumulative_sample() {
        let targets: Vec<DeviceIdx> = (0..1000).map(DeviceIdx::new).collect();
        let p = plan(
            vec![Wave::Share(0.01), Wave::Share(0.1), Wave::Share(1.0)],
            7,
        );
        let waves = p.split(&targets, |_| unreachable!());
        let sizes: Vec<usize> = waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 90, 900]);
        assert_eq!(waves, p.split(&targets, |_| unreachable!()), "reproducible");
        assert_ne!(
            waves[0],
            plan(p.waves.clone(), 8).split(&targets, |_| unreachable!())[0]
        );
        assert_ne!(
            waves[0],
            targets[..10].to_vec(),
            "a sample, not the first ids"
        );
    }

    #[test]
    fn where_waves_take_matching_devices_not_yet_targeted() {
        let targets: Vec<DeviceIdx> = (0..10).map(DeviceIdx::new).collect();
        let p = plan(
            vec![
                Wave::Where("tags.ring = 'canary'".into()),
                Wave::Where("*".into()),
            ],
            1,
        );
        let waves = p.split(&targets, |_| vec![DeviceIdx::new(3), DeviceIdx::new(42)]);
        assert_eq!(
            waves[0],
            vec![DeviceIdx::new(3)],
            "outside the target set: not taken"
        );
        assert_eq!(waves[1].len(), 9);
        assert_eq!(
            p.wave_condition(&p.waves[0]),
            "(tags.model = 'x1') AND (tags.ring = 'canary')"
        );
        assert_eq!(p.job_id(2, 0), "fw-w2");
        assert_eq!(p.job_id(2, 1), "fw-w2-r1");
    }
}
