//! `junit.xml`: the verdict as JUnit test results, which CI systems (GitHub Actions reporters,
//! GitLab, Jenkins, Azure Pipelines) show as tests. One suite per concern: `validity` (one case:
//! the engine-lag limit), `thresholds` (a case per threshold) and `compare` (a case per compared
//! figure, when a baseline was given).

use std::fmt::Write as _;

use super::thresholds::show_value;
use super::Verdict;

/// One test case: its name and, when it failed, the failure message.
struct Case {
    name: String,
    failure: Option<String>,
    skipped: bool,
}

/// The whole `junit.xml` document.
pub(crate) fn report(v: &Verdict) -> String {
    let validity = vec![Case {
        name: format!(
            "engine_lag.p99 <= {}",
            show_value(true, v.engine_lag_limit_us as f64)
        ),
        failure: v.invalid.clone(),
        skipped: false,
    }];
    let thresholds = v
        .thresholds
        .iter()
        .map(|t| Case {
            name: format!("{} {}", t.key, t.condition),
            failure: (!t.held).then(|| match &t.actual {
                Some(a) => format!("{} is {a}, expected {}", t.key, t.condition),
                None => format!("{}: no data (the job did not run, or no samples)", t.key),
            }),
            skipped: t.skipped,
        })
        .collect::<Vec<_>>();
    let compared = v.comparison.as_ref().map(|c| {
        c.rows
            .iter()
            .map(|r| Case {
                name: format!("{} {}", r.scope(), r.figure),
                failure: r.regression.then(|| {
                    format!(
                        "{} {}: {} against a baseline of {} ({}), beyond the tolerance of {:.1}%",
                        r.scope(),
                        r.figure,
                        r.show(r.run),
                        r.show(r.baseline),
                        r.show_change(),
                        c.tolerance * 100.0
                    )
                }),
                skipped: false,
            })
            .collect::<Vec<_>>()
    });

    let mut suites = vec![("validity", validity), ("thresholds", thresholds)];
    if let Some(rows) = compared {
        suites.push(("compare", rows));
    }
    let count = |cases: &[Case], f: fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
    let failed = |c: &Case| c.failure.is_some();
    let skipped = |c: &Case| c.skipped;
    let tests: usize = suites.iter().map(|(_, c)| c.len()).sum();
    let failures: usize = suites.iter().map(|(_, c)| count(c, failed)).sum();
    let scenario = escape(&v.summary.run.scenario);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"fleetsim {scenario}\" tests=\"{tests}\" failures=\"{failures}\" time=\"{:.3}\">",
        v.summary.elapsed_s
    );
    for (name, cases) in &suites {
        let (t, f, k) = (cases.len(), count(cases, failed), count(cases, skipped));
        let _ = writeln!(
            s,
            "  <testsuite name=\"fleetsim.{name}\" tests=\"{t}\" failures=\"{f}\" errors=\"0\" skipped=\"{k}\">"
        );
        for c in cases {
            let case_name = escape(&c.name);
            match &c.failure {
                None if c.skipped => {
                    let _ = writeln!(
                        s,
                        "    <testcase classname=\"fleetsim.{scenario}.{name}\" name=\"{case_name}\">\n      <skipped message=\"a count in one shard: fleetsim merge judges it\"/>\n    </testcase>"
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "    <testcase classname=\"fleetsim.{scenario}.{name}\" name=\"{case_name}\"/>"
                    );
                }
                Some(message) => {
                    let m = escape(message);
                    let _ = writeln!(
                        s,
                        "    <testcase classname=\"fleetsim.{scenario}.{name}\" name=\"{case_name}\">\n      <failure message=\"{m}\" type=\"{name}\">{m}</failure>\n    </testcase>"
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// Escapes text for an XML (or HTML) attribute or element.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a < b & \"c\"\u{1}"), "a &lt; b &amp; &quot;c&quot;");
    }
}
