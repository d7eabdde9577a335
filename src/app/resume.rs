//! `fleetsim run --state-dir DIR`: a run whose hub keeps its registry, twins and jobs in DIR's
//! store, so that a run stopped by a crash (or Ctrl-C) goes on when started again with the same
//! directory. Its clock resumes from the first start (a scheduled job keeps its start), the
//! jobs the hub kept are not created again, the others are created at their times counted
//! from the first start, and the duration limit counts from there too.
//!
//! Not kept, so refused on resume: a rollout's progress (its waves, rate and abort state live
//! in the run, not the hub) and a fault timeline's (a storm that already happened would happen
//! again). Measurements start again at the resume: the result directory's histograms cover the
//! resumed part; its job reports cover every job.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Micros};
use crate::hub::state::StateDir;
use crate::hub::store::Store;
use crate::scenario::Scenario;

/// The file in the state directory that names the run its store belongs to.
const RUN_FILE: &str = "run.json";

/// What a run notes in its state directory once its devices are ready.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunMark {
    /// The scenario's name.
    scenario: String,
    /// The run's seed.
    seed: u64,
    /// The clock reading the run's times count from (µs from the first start).
    offset_us: Micros,
}

/// What a run's store says about an earlier start.
pub(crate) struct Resume {
    /// The run's clock: resumed from the first start when the store has run before.
    pub(crate) clock: Clock,
    /// Whether the store has run before: this run goes on from an earlier start.
    pub(crate) resumed: bool,
    /// The offset the earlier start noted, if it did.
    offset: Option<Micros>,
    /// The ids of the jobs the store holds.
    pub(crate) jobs: Vec<String>,
    mark: PathBuf,
}

/// Opens the store in `dir` for a run of `scenario` with `seed`; refuses a store that belongs
/// to another run, or a resume the scenario cannot make.
pub(crate) fn open(dir: &Path, scenario: &Scenario, seed: u64) -> anyhow::Result<(Store, Resume)> {
    StateDir::open(dir).with_context(|| format!("cannot use state directory {}", dir.display()))?;
    let store = Store::open(dir).context("cannot open the run's store")?;
    let mark_path = dir.join(RUN_FILE);
    let start_over = format!(
        "choose another --state-dir, or delete {} and {} to start over",
        store.path().display(),
        mark_path.display()
    );
    let mark = match std::fs::read_to_string(&mark_path) {
        Ok(text) => Some(serde_json::from_str::<RunMark>(&text).with_context(|| {
            format!(
                "{} is not a run's mark (scenario, seed, offsetUs); {start_over}",
                mark_path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", mark_path.display())),
    };
    if let Some(m) = &mark {
        if m.scenario != scenario.name || m.seed != seed {
            anyhow::bail!(
                "{} holds the state of a run of scenario '{}' with seed {}, not of '{}' with seed \
                 {seed}; {start_over}",
                dir.display(),
                m.scenario,
                m.seed,
                scenario.name
            );
        }
    }
    let origin = store.origin();
    if origin.is_some() {
        let timeline = match (scenario.rollouts.is_empty(), scenario.faults.is_empty()) {
            (false, _) => Some("[[rollout]]"),
            (true, false) => Some("[[fault]]"),
            (true, true) => None,
        };
        if let Some(what) = timeline {
            anyhow::bail!(
                "{} holds the state of an earlier start of scenario '{}', and a run with {what} \
                 cannot go on from it: its progress lives in the run, not in the hub's store; \
                 {start_over}",
                dir.display(),
                scenario.name
            );
        }
    }
    let clock = origin.map_or_else(Clock::start, Clock::resume);
    let jobs = store.job_ids().map(str::to_owned).collect();
    Ok((
        store,
        Resume {
            clock,
            resumed: origin.is_some(),
            offset: mark.map(|m| m.offset_us),
            jobs,
            mark: mark_path,
        },
    ))
}

impl Resume {
    /// The clock reading the run's times count from, given the one this start measured
    /// (`ready`): the earlier start's when resuming; otherwise `ready`, noted in the state
    /// directory for a later resume.
    pub(crate) fn offset(
        &self,
        scenario: &Scenario,
        seed: u64,
        ready: Micros,
    ) -> anyhow::Result<Micros> {
        if let Some(offset) = self.offset {
            return Ok(offset);
        }
        let mark = RunMark {
            scenario: scenario.name.clone(),
            seed,
            offset_us: ready,
        };
        let tmp = self.mark.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&mark)?)
            .and_then(|()| std::fs::rename(&tmp, &self.mark))
            .with_context(|| format!("cannot write {}", self.mark.display()))?;
        Ok(ready)
    }
}
