//! Scenarios: reading and checking a scenario file ([`format`]), turning it into the domain's own
//! types: a registry, a fleet with its behaviour models, job requests ([`build`]); describing it
//! ([`inspect`]) and exporting its device identities ([`identities`]). Running one is the
//! application layer's business.

pub mod build;
pub(crate) mod format;
pub mod identities;
pub(crate) mod inspect;
pub(crate) mod overrides;
mod rollout;

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub(crate) use format::Scenario;

use toml::Spanned;

use crate::scenario::format::{MethodSpec, TwinSpec};

use crate::query::parse_condition;
use crate::verdict::thresholds::{Threshold, Thresholds, DEFAULT_ENGINE_LAG_LIMIT};

/// The most times one `[[job]]` repeats: each repetition is a job of its own, with its id and
/// its records, made when the scenario is read.
const MAX_TIMES: u32 = 10_000;

/// The most devices a scenario holds, over all cohorts: a device's index has 32 bits.
const MAX_DEVICES: u64 = u32::MAX as u64;

/// A scenario that cannot be used, with the file, line and column of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The scenario file.
    pub(crate) file: String,
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
    /// What is wrong and what would be accepted.
    pub(crate) message: String,
}

/// Checks that a job's or a rollout's `type` goes with its `method` or `twin`; `what` names it
/// in messages. Errors carry the span to point at.
fn check_kind(
    what: &str,
    id: &Spanned<String>,
    job_type: &Spanned<String>,
    method: Option<&MethodSpec>,
    twin: Option<&TwinSpec>,
) -> Result<(), (Range<usize>, String)> {
    let ty = job_type.get_ref().as_str();
    match (crate::hub::jobs::parse_job_type(ty), method, twin) {
        (Some("scheduleDeviceMethod"), Some(m), None) => {
            let rt = m.response_timeout.0.as_secs_f64();
            if !(5.0..=300.0).contains(&rt) {
                return Err((id.span(), format!("{what}: response_timeout {} is outside 5s..300s", m.response_timeout)));
            }
            if m.connect_timeout.0.as_secs_f64() > 300.0 {
                return Err((id.span(), format!("{what}: connect_timeout {} is over 300s", m.connect_timeout)));
            }
            Ok(())
        }
        (Some("scheduleUpdateTwin"), None, Some(t)) if t.tags.is_some() || t.desired.is_some() => Ok(()),
        (Some("scheduleDeviceMethod"), _, _) => Err((job_type.span(), format!("{what}: a scheduleDeviceMethod job needs `method = {{ name = ... }}` and no `twin`"))),
        (Some(_), _, _) => Err((job_type.span(), format!("{what}: a scheduleUpdateTwin job needs `twin = {{ tags = ..., desired = ... }}` and no `method`"))),
        (None, _, _) => Err((job_type.span(), format!("unknown job type '{ty}'; expected scheduleDeviceMethod or scheduleUpdateTwin"))),
    }
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
    Ok(parse(&text, &path.display().to_string())?)
}

/// Parses and checks scenario text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let at = |span: Option<Range<usize>>, message: String| {
        let (line, column) = span.map_or((1, 1), |s| line_col(text, s.start));
        ScenarioError {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    };
    let mut scenario: Scenario =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_owned()))?;
    // Checks serde cannot make: point at the key's line by searching for it.
    let find = |needle: &str| text.find(needle).map(|i| i..i + needle.len());
    if scenario.name.trim().is_empty() || scenario.name.contains(['/', '\\']) {
        return Err(at(
            find("name"),
            format!(
                "name {:?} must be non-empty and without slashes",
                scenario.name
            ),
        ));
    }
    if scenario.hub.units == 0 {
        return Err(at(find("units"), "units must be at least 1".into()));
    }
    if scenario.hub.ramp == 0 {
        return Err(at(
            find("ramp"),
            "ramp must be at least 1 connection per second".into(),
        ));
    }
    let mut prefixes = HashSet::new();
    let mut devices: u64 = 0;
    for c in &scenario.cohorts {
        let span = find(&format!("\"{}\"", c.name));
        if c.count == 0 {
            return Err(at(
                span,
                format!(
                    "cohort '{}' has count 0; expected at least 1 device",
                    c.name
                ),
            ));
        }
        devices = devices.saturating_add(c.count);
        if devices > MAX_DEVICES {
            return Err(at(
                span,
                format!(
                    "cohort '{}' brings the scenario to {devices} devices; expected at most {MAX_DEVICES} in all (devices are numbered with 32 bits)",
                    c.name
                ),
            ));
        }
        if !prefixes.insert(c.id_prefix.as_str()) {
            return Err(at(
                span,
                format!(
                    "cohort '{}' reuses id_prefix '{}'; device ids must be unique",
                    c.name, c.id_prefix
                ),
            ));
        }
        for (name, m) in &c.methods {
            if m.error_rate.0 + m.no_response.0 > 1.0 {
                return Err(at(
                    span.clone(),
                    format!(
                        "cohort '{}' method '{name}': error_rate + no_response exceeds 1",
                        c.name
                    ),
                ));
            }
        }
        for d in c
            .methods
            .values()
            .map(|m| &m.latency)
            .chain([&c.twin.ack_latency])
        {
            check_dist(d).map_err(|m| at(span.clone(), format!("cohort '{}': {m}", c.name)))?;
        }
        if let Some(link) = &c.link {
            // The cohort's own `[cohort.link]` table: the first one after its name.
            let table = span.clone().and_then(|s| {
                let from = s.start;
                text[from..]
                    .find("[cohort.link]")
                    .map(|i| from + i..from + i + "[cohort.link]".len())
            });
            check_dist(&link.latency).map_err(|m| {
                at(
                    table.or(span.clone()),
                    format!("cohort '{}': link {m}", c.name),
                )
            })?;
        }
        if let Some(churn) = &c.churn {
            if !(churn.disconnects_per_hour >= 0.0 && churn.disconnects_per_hour.is_finite()) {
                return Err(at(
                    span,
                    format!(
                        "cohort '{}': churn.disconnects_per_hour must be 0 or more",
                        c.name
                    ),
                ));
            }
            check_dist(&churn.downtime)
                .map_err(|m| at(span.clone(), format!("cohort '{}': {m}", c.name)))?;
        }
    }
    let mut ids = HashSet::new();
    for j in &scenario.jobs {
        check_kind(
            &format!("job '{}'", j.id.get_ref()),
            &j.id,
            &j.job_type,
            j.method.as_ref(),
            j.twin.as_ref(),
        )
        .map_err(|(span, m)| at(Some(span), m))?;
        if let Err(e) = parse_condition(j.query.get_ref()) {
            return Err(at(
                Some(j.query.span()),
                format!("job '{}': query does not parse: {e}", j.id.get_ref()),
            ));
        }
        if let Some(times) = j.times.filter(|t| !(1..=MAX_TIMES).contains(t)) {
            return Err(at(
                Some(j.id.span()),
                format!(
                    "job '{}': times = {times}; expected 1 to {MAX_TIMES} (each repetition is a job of its own)",
                    j.id.get_ref()
                ),
            ));
        }
        if j.times.unwrap_or(1) > 1 && j.every.is_none_or(|e| e.0.is_zero()) {
            return Err(at(
                Some(j.id.span()),
                format!(
                    "job '{}': times > 1 needs a non-zero `every`",
                    j.id.get_ref()
                ),
            ));
        }
        if let Some(after) = &j.after {
            if j.every.is_some() {
                return Err(at(
                    Some(after.span()),
                    format!(
                        "job '{}': `after` and `every` do not go together; give each repetition its own [[job]]",
                        j.id.get_ref()
                    ),
                ));
            }
            if !ids.contains(after.get_ref()) {
                return Err(at(
                    Some(after.span()),
                    format!(
                        "job '{}': after = '{}' names no earlier job; expected the id of a [[job]] above it",
                        j.id.get_ref(),
                        after.get_ref()
                    ),
                ));
            }
        }
        for id in build::instance_ids(j) {
            if let Err(e) = crate::hub::jobs::check_job_id(&id) {
                return Err(at(Some(j.id.span()), e.message));
            }
            if !ids.insert(id.clone()) {
                return Err(at(
                    Some(j.id.span()),
                    format!("two jobs have the id '{id}'; job ids must be unique"),
                ));
            }
        }
    }
    let mut rollouts = HashSet::new();
    for r in &scenario.rollouts {
        rollout::check(r, &mut ids).map_err(|(span, m)| at(Some(span), m))?;
        rollouts.insert(r.id.get_ref().as_str());
    }
    for f in &scenario.faults {
        check_fault(f.get_ref(), &scenario).map_err(|m| at(Some(f.span()), m))?;
    }
    let table = &scenario.threshold_table;
    let mut list = Vec::with_capacity(table.conditions.len());
    for (key, condition) in &table.conditions {
        let span = Some(condition.span());
        let t = Threshold::parse(key, condition.get_ref()).map_err(|m| at(span.clone(), m))?;
        if let Some(job) = t.figure.job() {
            if !ids.contains(job) {
                let mut known: Vec<&str> = ids.iter().map(String::as_str).collect();
                known.sort_unstable();
                return Err(at(
                    span,
                    format!(
                        "threshold '{key}' names job '{job}', which the scenario does not create; its jobs are: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(id) = t.figure.rollout() {
            if !rollouts.contains(id) {
                let mut known: Vec<&str> = rollouts.iter().copied().collect();
                known.sort_unstable();
                return Err(at(
                    span,
                    format!(
                        "threshold '{key}' names rollout '{id}', which the scenario does not have; its rollouts are: {}",
                        if known.is_empty() { "(none)".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
        }
        list.push(t);
    }
    scenario.thresholds = Thresholds {
        abort_on_fail: table.abort_on_fail,
        engine_lag_limit: table
            .engine_lag_limit
            .map_or(DEFAULT_ENGINE_LAG_LIMIT, |d| d.0),
        list,
    };
    Ok(scenario)
}

/// Checks that a `[[fault]]` has the keys its kind needs and no others, and names a cohort
/// the scenario has.
fn check_fault(f: &format::FaultSpec, scenario: &Scenario) -> Result<(), String> {
    use format::FaultKindSpec as K;
    let kind = f.kind.name();
    let refuse = |key: &str, why: &str| Err(format!("fault '{kind}': `{key}` {why}"));
    let lasts = matches!(f.kind, K::Partition | K::Latency | K::Errors);
    match (lasts, f.lasts) {
        (true, None) => {
            return refuse(
                "for",
                "is missing; write how long it lasts, e.g. for = \"2m\"",
            )
        }
        (true, Some(d)) if d.0.is_zero() => {
            return refuse("for", "is 0; expected a duration such as \"2m\"")
        }
        (false, Some(_)) => {
            return refuse(
                "for",
                "does not apply: a disconnect or a hub restart is an instant",
            )
        }
        _ => {}
    }
    match (f.kind, f.add) {
        (K::Latency, None) => {
            return refuse(
                "add",
                "is missing; write what it adds each way, e.g. add = \"500ms\"",
            )
        }
        (K::Latency, _) | (_, None) => {}
        (_, Some(_)) => return refuse("add", "applies to kind = \"latency\" only"),
    }
    match (f.kind, f.error_rate) {
        (K::Errors, None) => {
            return refuse(
                "error_rate",
                "is missing; write the share of methods that fail, e.g. error_rate = 0.3",
            )
        }
        (K::Errors, _) | (_, None) => {}
        (_, Some(_)) => return refuse("error_rate", "applies to kind = \"errors\" only"),
    }
    if f.kind == K::HubRestart && (f.cohort.is_some() || f.share.is_some()) {
        return refuse(
            "cohort/share",
            "does not apply: a hub restart drops every connection",
        );
    }
    if let Some(name) = &f.cohort {
        if !scenario.cohorts.iter().any(|c| &c.name == name) {
            let known: Vec<&str> = scenario.cohorts.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "fault '{kind}': cohort '{name}' is not in the scenario; its cohorts are: {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn check_dist(d: &format::Dist) -> Result<(), String> {
    use format::Dist;
    match d {
        Dist::Uniform { min, max } if min > max => {
            Err(format!("uniform latency has min {min} above max {max}"))
        }
        Dist::Lognormal { median, p99 } if p99 <= median || median.0.is_zero() => Err(format!(
            "lognormal latency needs 0 < median < p99 (median {median}, p99 {p99})"
        )),
        Dist::Pareto { scale, shape } if shape.is_nan() || *shape <= 0.0 || scale.0.is_zero() => {
            Err(format!(
                "pareto latency needs scale > 0 and shape > 0 (scale {scale}, shape {shape})"
            ))
        }
        _ => Ok(()),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a run's results go by default: `results/<scenario>/<UTC timestamp>/`.
pub(crate) fn default_out_dir(scenario: &Scenario, started: time::OffsetDateTime) -> PathBuf {
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        started.year(),
        started.month() as u8,
        started.day(),
        started.hour(),
        started.minute(),
        started.second()
    );
    PathBuf::from("results").join(&scenario.name).join(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
seed = 3
duration = "10s"
[[cohort]]
name = "a"
count = 10
id_prefix = "a-"
tags = { building = "43" }
[cohort.methods.reboot]
latency = { dist = "lognormal", median = "40ms", p99 = "400ms" }
[[job]]
id = "j"
type = "scheduleDeviceMethod"
start = "+1s"
query = "tags.building = '43'"
method = { name = "reboot", response_timeout = "5s" }
every = "2s"
times = 3
"#;

    #[test]
    fn reads_a_good_scenario() {
        let s = parse(GOOD, "good.toml").unwrap();
        assert_eq!(s.cohorts[0].count, 10);
        assert_eq!(s.jobs[0].start.0.as_secs(), 1);
        assert_eq!(build::instance_ids(&s.jobs[0]), vec!["j-1", "j-2", "j-3"]);
    }

    fn error_of(text: &str) -> ScenarioError {
        parse(text, "bad.toml").unwrap_err()
    }

    #[test]
    fn faults_need_the_keys_of_their_kind_and_a_known_cohort() {
        let with = |fault: &str| format!("{GOOD}[[fault]]\n{fault}\n");
        let ok = parse(
            &with("at = \"+2s\"\nkind = \"partition\"\ncohort = \"a\"\nshare = 0.5\nfor = \"1m\""),
            "f.toml",
        )
        .unwrap();
        assert_eq!(ok.faults.len(), 1);
        for (fault, says) in [
            (
                "at = \"+1s\"\nkind = \"meteor\"",
                "unknown variant `meteor`",
            ),
            ("at = \"+1s\"\nkind = \"partition\"", "`for` is missing"),
            (
                "at = \"+1s\"\nkind = \"disconnect\"\nfor = \"1m\"",
                "`for` does not apply",
            ),
            (
                "at = \"+1s\"\nkind = \"latency\"\nfor = \"1m\"",
                "`add` is missing",
            ),
            (
                "at = \"+1s\"\nkind = \"errors\"\nfor = \"1m\"\nadd = \"1s\"",
                "applies to kind = \"latency\" only",
            ),
            (
                "at = \"+1s\"\nkind = \"errors\"\nfor = \"1m\"",
                "`error_rate` is missing",
            ),
            (
                "at = \"+1s\"\nkind = \"hub_restart\"\ncohort = \"a\"",
                "does not apply: a hub restart",
            ),
            (
                "at = \"+1s\"\nkind = \"disconnect\"\ncohort = \"b\"",
                "cohort 'b' is not in the scenario; its cohorts are: a",
            ),
            (
                "at = \"+1s\"\nkind = \"disconnect\"\nshare = 2.0",
                "share 2 is outside 0..1",
            ),
        ] {
            let e = error_of(&with(fault));
            assert!(e.message.contains(says), "{fault}: {}", e.message);
            assert!(
                e.line >= 19,
                "{fault}: points at the fault, line {}",
                e.line
            );
        }
    }

    #[test]
    fn errors_name_file_line_and_value() {
        let e = error_of(&GOOD.replace("duration = \"10s\"", "duration = \"10 parsecs\""));
        assert_eq!((e.file.as_str(), e.line), ("bad.toml", 4));
        assert!(
            e.message.contains("unknown unit 'parsecs'"),
            "{}",
            e.message
        );

        let e = error_of(&GOOD.replace("count = 10", "count = -5"));
        assert_eq!(e.line, 7);

        let e = error_of(&GOOD.replace("seed = 3", "seed = 3\nsede = 4"));
        assert!(e.message.contains("unknown field `sede`"), "{}", e.message);

        let e = error_of(&GOOD.replace("id_prefix = \"a-\"", "id_prefix = \"a-\"\noffline = 1.5"));
        assert!(
            e.message.contains("share 1.5 is outside 0..1"),
            "{}",
            e.message
        );

        let e = error_of(&GOOD.replace("[[job]]", "[cohort.link]\nloss = 1.5\n[[job]]"));
        assert_eq!(e.line, 13);
        assert!(
            e.message.contains("share 1.5 is outside 0..1"),
            "{}",
            e.message
        );

        let e = error_of(&GOOD.replace(
            "[[job]]",
            "[cohort.link]\nlatency = { dist = \"lognormal\", median = \"1s\", p99 = \"100ms\" }\n[[job]]",
        ));
        assert_eq!(e.line, 12);
        assert!(
            e.message
                .contains("cohort 'a': link lognormal latency needs 0 < median < p99"),
            "{}",
            e.message
        );

        let e = error_of(&GOOD.replace("times = 3", "times = 3\n[[job]]\nid = \"j-2\"\ntype = \"scheduleDeviceMethod\"\nquery = \"*\"\nmethod = { name = \"x\" }"));
        assert!(
            e.message.contains("two jobs have the id 'j-2'"),
            "{}",
            e.message
        );
        assert_eq!(e.line, 21);
    }
}
