//! Checks of a `[[rollout]]` block that serde cannot make: its job type and action, its query
//! and waves, the success rule, the rate, abort and retry criteria, and its job ids (every wave
//! and retry id must be a valid job id, unique among the scenario's jobs).

use std::collections::HashSet;
use std::ops::Range;

use crate::hub::jobs::{check_job_id, parse_job_type, Failure};
use crate::query::parse_condition;
use crate::scenario::format::{Percent, RolloutSpec};

/// The most retries a rule may ask for.
const MAX_RETRIES: u32 = 10;

/// Checks `r`; adds its wave and retry job ids to `ids` (the job ids so far). Errors carry the
/// span to point at.
pub(super) fn check(
    r: &RolloutSpec,
    ids: &mut HashSet<String>,
) -> Result<(), (Range<usize>, String)> {
    let id = r.id.get_ref();
    let what = format!("rollout '{id}'");
    super::check_kind(
        &what,
        &r.id,
        &r.job_type,
        r.method.as_ref(),
        r.twin.as_ref(),
    )?;
    parse_condition(r.query.get_ref())
        .map_err(|e| (r.query.span(), format!("{what}: query does not parse: {e}")))?;
    let waves = r.waves.get_ref();
    if waves.is_empty() {
        return Err((
            r.waves.span(),
            format!("{what}: waves is empty; expected shares such as [\"1%\", \"10%\", \"100%\"] or WHERE clauses such as [\"tags.ring = 'canary'\", \"*\"]"),
        ));
    }
    let mut last_share = 0.0;
    for w in waves {
        let text = w.get_ref();
        if let Some(p) = Percent::parse(text) {
            if p.0 <= last_share {
                return Err((
                    w.span(),
                    format!("{what}: wave \"{text}\" is not above the wave before it; shares are cumulative (\"1%\", \"10%\", \"100%\")"),
                ));
            }
            last_share = p.0;
        } else if text.trim().ends_with('%') {
            return Err((
                w.span(),
                format!("{what}: wave \"{text}\" is not a share from 0% to 100%"),
            ));
        } else if text.trim() != "*" {
            parse_condition(text).map_err(|e| {
                (
                    w.span(),
                    format!("{what}: wave \"{text}\" is neither a share such as \"10%\" nor a WHERE clause: {e}"),
                )
            })?;
        }
    }
    let twin_desired = parse_job_type(r.job_type.get_ref()) == Some("scheduleUpdateTwin")
        && r.twin.as_ref().is_some_and(|t| t.desired.is_some());
    match r.success.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("written", _)) => {
            if let Some(t) = &r.ack_timeout {
                return Err((
                    t.span(),
                    format!("{what}: ack_timeout applies only with success = \"acknowledged\""),
                ));
            }
        }
        Some(("acknowledged", span)) => {
            if !twin_desired {
                return Err((span, format!("{what}: success = \"acknowledged\" needs a scheduleUpdateTwin rollout with twin.desired: devices acknowledge desired properties")));
            }
            if let Some(t) = r.ack_timeout.as_ref().filter(|t| t.get_ref().0.is_zero()) {
                return Err((t.span(), format!("{what}: ack_timeout must be above 0s")));
            }
        }
        Some((other, span)) => {
            return Err((
                span,
                format!("{what}: success = \"{other}\"; expected \"written\" or \"acknowledged\""),
            ))
        }
    }
    if let Some(rate) = &r.rate {
        let (span, rate) = (rate.span(), rate.get_ref());
        let fail = |m: String| Err((span.clone(), format!("{what}: rate: {m}")));
        if !(rate.base_per_minute > 0.0 && rate.base_per_minute.is_finite()) {
            return fail(format!(
                "base_per_minute {} must be above 0",
                rate.base_per_minute
            ));
        }
        if !(1.1..=5.0).contains(&rate.increment_factor) {
            return fail(format!(
                "increment_factor {} is outside 1.1..5",
                rate.increment_factor
            ));
        }
        if rate.notified.unwrap_or(0) == 0 && rate.succeeded.unwrap_or(0) == 0 {
            return fail(
                "give `notified` or `succeeded` (devices per rate increase), above 0".into(),
            );
        }
        if rate
            .max_per_minute
            .is_some_and(|m| m < rate.base_per_minute)
        {
            return fail("max_per_minute is below base_per_minute".into());
        }
    }
    let failure = |text: &str, span: Range<usize>| {
        Failure::parse(text).ok_or_else(|| {
            (
                span,
                format!("{what}: failure \"{text}\" is unknown; expected failed, timed_out, not_online, rejected or all"),
            )
        })
    };
    for a in &r.abort {
        failure(&a.get_ref().failure, a.span())?;
        if a.get_ref().threshold.0 <= 0.0 {
            return Err((
                a.span(),
                format!("{what}: abort threshold 0% would abort at once; expected above 0%"),
            ));
        }
    }
    let mut retries = 0;
    for t in &r.retry {
        failure(&t.get_ref().failure, t.span())?;
        let times = t.get_ref().times;
        if !(1..=MAX_RETRIES).contains(&times) {
            return Err((
                t.span(),
                format!("{what}: retry times = {times}; expected 1 to {MAX_RETRIES}"),
            ));
        }
        retries = retries.max(times);
    }
    for n in 1..=waves.len() {
        for k in 0..=retries {
            let job = crate::rollout::job_id(id, n, k);
            check_job_id(&job).map_err(|e| (r.id.span(), format!("{what}: {}", e.message)))?;
            if !ids.insert(job.clone()) {
                return Err((
                    r.id.span(),
                    format!("{what}: its job id '{job}' is taken by another job; job ids must be unique"),
                ));
            }
        }
    }
    Ok(())
}
