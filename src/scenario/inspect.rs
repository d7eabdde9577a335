//! Looking at a scenario's fleet without running it: `fleetsim query` and `fleetsim run
//! --dry-run`, so a user can check a rollout's blast radius first.

use std::fmt::Write;

use anyhow::anyhow;
use serde_json::Value;

use crate::clock::Clock;
use crate::hub::registry::Registry;
use crate::ids::DeviceIdx;
use crate::query::{parse_condition, parse_query, Source};
use crate::scenario::{build, Scenario};
use crate::shard::Shard;

/// Runs a query on the scenario's freshly built fleet (no job has run, so `devices.jobs` is
/// empty).
pub(crate) fn query(scenario: &Scenario, text: &str) -> anyhow::Result<Vec<Value>> {
    let q = parse_query(text).map_err(|e| anyhow!("invalid query: {e}"))?;
    if q.source() == Source::DeviceJobs {
        return Ok(Vec::new());
    }
    let mut registry = build::registry(scenario, Clock::start(), Shard::ALL);
    let selected = registry.select(q.condition());
    let docs: Vec<_> = selected.iter().filter_map(|&d| registry.doc(d)).collect();
    Ok(q.project(docs.iter()))
}

/// Rows as a text table for a terminal: one column per top-level key (in first-seen order),
/// strings bare, everything else as compact JSON, cells cut at 40 characters.
pub(crate) fn table(rows: &[Value]) -> String {
    const WIDEST: usize = 40;
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for key in row.as_object().into_iter().flat_map(|o| o.keys()) {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let cell = |row: &Value, col: &str| -> String {
        let text = match row.get(col) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        text.chars().take(WIDEST).collect()
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.clone());
    for row in rows {
        out += &line(columns.iter().map(|c| cell(row, c)).collect());
    }
    out += &format!("({} rows)\n", rows.len());
    out
}

/// Per job: how many devices it would target now and the first few ids; per rollout (its
/// sample drawn from `seed`), each wave's size and first ids.
pub(crate) fn dry_run(scenario: &Scenario, seed: u64) -> anyhow::Result<String> {
    let mut registry = build::registry(scenario, Clock::start(), Shard::ALL);
    let mut out = String::from("targets as the fleet is built, before any job changes a twin:\n");
    for planned in build::planned_jobs(scenario) {
        let r = &planned.request;
        let cond =
            parse_condition(&r.query_condition).map_err(|e| anyhow!("job '{}': {e}", r.job_id))?;
        let targets = registry.select(&cond);
        let _ = writeln!(
            out,
            "{} ({}, starts +{:.1}s): {}",
            r.job_id,
            r.kind.type_name(),
            planned.start_at as f64 / 1e6,
            devices(&registry, &targets),
        );
    }
    for plan in build::rollout_plans(scenario, seed) {
        let select = |registry: &mut Registry, text: &str| {
            parse_condition(text)
                .map(|c| {
                    let mut v = registry.select(&c);
                    v.sort_unstable();
                    v
                })
                .map_err(|e| anyhow!("rollout '{}': {e}", plan.id))
        };
        let targets = select(&mut registry, &plan.query)?;
        let mut matching = Vec::with_capacity(plan.waves.len());
        for w in &plan.waves {
            matching.push(match w.narrowing() {
                Some(clause) => select(&mut registry, clause)?,
                None => Vec::new(),
            });
        }
        let waves = plan.split(&targets, |i| std::mem::take(&mut matching[i]));
        let _ = writeln!(
            out,
            "rollout {} ({}, starts +{:.1}s): {} devices in {} waves",
            plan.id,
            plan.kind.type_name(),
            plan.start_at as f64 / 1e6,
            targets.len(),
            waves.len(),
        );
        for (n, wave) in waves.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}: {}",
                plan.job_id(n + 1, 0),
                devices(&registry, wave)
            );
        }
        let unreached = targets.len() - waves.iter().map(Vec::len).sum::<usize>();
        if unreached > 0 {
            let _ = writeln!(
                out,
                "  ({unreached} devices of the target set are in no wave)"
            );
        }
    }
    Ok(out)
}

/// `N devices [first, ids, ...]`.
fn devices(registry: &Registry, list: &[DeviceIdx]) -> String {
    let first: Vec<&str> = list
        .iter()
        .take(5)
        .filter_map(|&d| registry.get(d).map(|e| &*e.id))
        .collect();
    let more = if list.len() > first.len() {
        ", ..."
    } else {
        ""
    };
    format!("{} devices [{}{more}]", list.len(), first.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns_and_counts_rows() {
        let rows = vec![
            json!({"fw": "1.4.2", "n": 6000}),
            json!({"fw": "1.3.9", "n": 4000, "x": true}),
        ];
        assert_eq!(
            table(&rows),
            "fw     n     x\n1.4.2  6000\n1.3.9  4000  true\n(2 rows)\n"
        );
    }

    #[test]
    fn query_and_dry_run_on_the_quickstart() {
        let s = crate::scenario::load(std::path::Path::new("scenarios/quickstart.toml")).unwrap();
        let rows = query(
            &s,
            "SELECT properties.reported.firmware AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.firmware",
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                json!({"fw": "1.4.2", "n": 6000}),
                json!({"fw": "1.3.9", "n": 4000})
            ]
        );
        let plan = dry_run(&s, s.seed).unwrap();
        assert!(
            plan.contains(
                "reboot-b43-f3 (scheduleDeviceMethod, starts +2.0s): 6000 devices [b43-f3-0000"
            ),
            "{plan}"
        );
        assert!(
            plan.contains("firmware-b44 (scheduleUpdateTwin, starts +3.0s): 4000 devices"),
            "{plan}"
        );
    }
}
