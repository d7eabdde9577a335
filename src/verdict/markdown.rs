//! `summary.md`: the verdict as Markdown, written for CI step summaries (GitHub Actions'
//! `$GITHUB_STEP_SUMMARY`, GitLab and Azure Pipelines summaries) and pull-request comments.

use std::fmt::Write as _;

use super::compare::Comparison;
use super::thresholds::show_value;
use super::Verdict;
use crate::metrics::Measure;

/// The whole `summary.md`.
pub(crate) fn summary(v: &Verdict) -> String {
    let r = &v.summary.run;
    let exit = v.exit();
    let mut s = String::new();
    let mark = if exit.code() == 0 { "✅" } else { "❌" };
    let _ = writeln!(
        s,
        "## {mark} fleetsim `{}`: {}\n",
        r.scenario,
        exit.headline()
    );
    let shard = r.shard.map_or(String::new(), |sh| format!(", shard {sh}"));
    let _ = writeln!(
        s,
        "{} devices, seed {}{shard}, {:.1} s, {}, exit code {}.\n",
        r.devices,
        r.seed,
        v.summary.elapsed_s,
        if r.complete {
            "complete"
        } else {
            "**incomplete**"
        },
        exit.code()
    );
    if let Some(why) = &v.invalid {
        let _ = writeln!(s, "**Invalid run:** {why}.\n");
    }
    if !v.thresholds.is_empty() {
        s.push_str("### Thresholds\n\n| figure | condition | actual | result |\n| --- | --- | --- | --- |\n");
        for t in &v.thresholds {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | {} |",
                t.key,
                t.condition,
                t.actual.as_deref().unwrap_or("(no data)"),
                if t.skipped {
                    "skipped (shard)"
                } else if t.held {
                    "held"
                } else {
                    "**broken**"
                }
            );
        }
        s.push('\n');
    }
    s.push_str("### Latency\n\n| measure | count | p50 | p90 | p99 | p99.9 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for m in Measure::ALL {
        let h = v.summary.histograms.get(m);
        let t = |us: u64| show_value(true, us as f64);
        let _ = writeln!(
            s,
            "| {m} | {} | {} | {} | {} | {} | {} |",
            h.count,
            t(h.p50_us),
            t(h.p90_us),
            t(h.p99_us),
            t(h.p999_us),
            t(h.max_us)
        );
    }
    s.push_str("\n### Jobs\n\n| job | status | devices | succeeded | failed | makespan | ops/s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
    for j in &r.jobs {
        let st = &j.statistics;
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {:.0} |",
            j.job_id,
            j.status,
            st.device_count,
            st.succeeded_count,
            st.failed_count,
            show_value(true, j.makespan_ms * 1e3),
            j.ops_per_s
        );
    }
    let t = &v.summary.throughput;
    let _ = writeln!(
        s,
        "\nThroughput: {} ops ({} failed), {:.0} ops/s mean, {:.0} ops/s peak.",
        t.ops_total, t.failures_total, t.ops_per_s_mean, t.ops_per_s_peak
    );
    if let Some(c) = &v.comparison {
        s.push_str("\n### Compared with the baseline\n\n");
        s.push_str(&comparison(c));
    }
    s
}

/// A comparison as a Markdown table (what `fleetsim compare --format md` prints).
pub(crate) fn comparison(c: &Comparison) -> String {
    let mut s = String::new();
    let n = c.regressions().count();
    let _ = writeln!(
        s,
        "Baseline `{}`, run `{}`, tolerance {:.1}%: {}.\n",
        c.baseline,
        c.run,
        c.tolerance * 100.0,
        if n == 0 {
            "no regression".to_owned()
        } else {
            format!("**{n} regression(s)**")
        }
    );
    s.push_str("| job | figure | baseline | run | change | verdict |\n| --- | --- | ---: | ---: | ---: | --- |\n");
    for r in &c.rows {
        let verdict = match r.verdict() {
            "regression" => "❌ **regression**",
            "better" => "✅ better",
            other => other,
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {verdict} |",
            r.scope(),
            r.figure,
            r.show(r.baseline),
            r.show(r.run),
            r.show_change()
        );
    }
    s
}
