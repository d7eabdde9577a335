//! Looking at a scenario's fleet without running it: `fleetsim query` and `fleetsim run
//! --dry-run`, so a user can check a rollout's blast radius first.

use std::fmt::Write;

use anyhow::anyhow;
use serde_json::Value;

use crate::clock::Clock;
use crate::query::{parse_condition, parse_query, Source};
use crate::scenario::{build, Scenario};
use crate::shard::Shard;

/// Runs a query on the scenario's freshly built fleet (no job has run, so `devices.jobs` is
/// empty).
pub fn query(scenario: &Scenario, text: &str) -> anyhow::Result<Vec<Value>> {
    let q = parse_query(text).map_err(|e| anyhow!("invalid query: {e}"))?;
    if q.source() == Source::DeviceJobs {
        return Ok(Vec::new());
    }
    let mut registry = build::registry(scenario, Clock::start(), Shard::ALL);
    let selected = registry.select(q.condition());
    let docs: Vec<_> = selected.iter().filter_map(|&d| registry.doc(d)).collect();
    Ok(q.project(docs.iter()))
}

/// Per job: how many devices it would target now and the first few ids.
pub fn dry_run(scenario: &Scenario) -> anyhow::Result<String> {
    let mut registry = build::registry(scenario, Clock::start(), Shard::ALL);
    let mut out = String::new();
    for planned in build::planned_jobs(scenario) {
        let r = &planned.request;
        let cond =
            parse_condition(&r.query_condition).map_err(|e| anyhow!("job '{}': {e}", r.job_id))?;
        let targets = registry.select(&cond);
        let first: Vec<&str> = targets
            .iter()
            .take(5)
            .filter_map(|&d| registry.get(d).map(|e| &*e.id))
            .collect();
        let more = if targets.len() > first.len() {
            ", ..."
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{} ({}, starts +{:.1}s): {} devices [{}{more}]",
            r.job_id,
            r.kind.type_name(),
            planned.start_at as f64 / 1e6,
            targets.len(),
            first.join(", ")
        );
    }
    Ok(out)
}
