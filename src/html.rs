//! `report.html`: one self-contained page (inline CSS, script and data; no network when viewed)
//! showing a run, several runs side by side (`fleetsim report`), or a sweep (`fleetsim sweep`).
//!
//! The page is a fixed template ([`page.html`](html/page.html)) with the chart library
//! (uPlot, MIT, vendored in `assets/uplot/` with its licence), the page's own style and script,
//! and the data as one JSON object: [`data`] builds it from result directories. The script draws
//! every table and chart from that object, so one page serves one run, a comparison and a sweep.

pub(crate) mod data;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::metrics::results::{write_atomic, ResultsError};
use crate::verdict::junit::escape;
use crate::verdict::Verdict;

pub(crate) use data::{RunData, SweepData, SweepRow};

const TEMPLATE: &str = include_str!("html/page.html");
const STYLE: &str = include_str!("html/report.css");
const SCRIPT: &str = include_str!("html/report.js");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../assets/uplot/LICENSE");

/// The file name a page is written under in a result or sweep directory.
pub(crate) const FILE_NAME: &str = "report.html";

/// Errors building a page. Each names the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(
        "{}: not a fleetsim result directory (no summary.json; give directories `fleetsim run` \
         or `fleetsim sweep` wrote)",
        dir.display()
    )]
    NotResults { dir: PathBuf },
    #[error("cannot encode the report's data: {0}")]
    Json(#[from] serde_json::Error),
}

/// What one page shows.
#[derive(Debug, Serialize)]
struct Page<'a> {
    /// `run`, `compare` or `sweep`.
    kind: &'static str,
    title: String,
    runs: &'a [RunData],
    sweep: Option<&'a SweepData>,
}

/// The page of one run.
pub(crate) fn run_page_of(run: &RunData) -> Result<String, HtmlError> {
    render(&Page {
        kind: "run",
        title: format!("fleetsim: {}", run.summary.run.scenario),
        runs: std::slice::from_ref(run),
        sweep: None,
    })
}

/// Writes `dir/report.html`, the page of the run in `dir` judged by `verdict`.
pub(crate) fn write_run(dir: &Path, verdict: &Verdict) -> Result<PathBuf, HtmlError> {
    let path = dir.join(FILE_NAME);
    let page = run_page_of(&RunData::read(dir, dir_label(dir), verdict)?)?;
    write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

/// The page comparing `runs` (the first is the reference the others are compared with).
pub(crate) fn compare_page(runs: &[RunData]) -> Result<String, HtmlError> {
    let names: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    render(&Page {
        kind: "compare",
        title: format!("fleetsim: {}", names.join(" vs ")),
        runs,
        sweep: None,
    })
}

/// The page of a sweep.
pub(crate) fn sweep_page(sweep: &SweepData) -> Result<String, HtmlError> {
    render(&Page {
        kind: "sweep",
        title: format!("fleetsim sweep: {}", sweep.scenario),
        runs: &[],
        sweep: Some(sweep),
    })
}

/// Checks that `dir` holds a run's results, before anything reads it.
pub(crate) fn check_result_dir(dir: &Path) -> Result<(), HtmlError> {
    if dir.join("summary.json").is_file() {
        Ok(())
    } else {
        Err(HtmlError::NotResults {
            dir: dir.to_owned(),
        })
    }
}

/// The name a run goes by on a page: its directory's name.
pub(crate) fn dir_label(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn render(page: &Page) -> Result<String, HtmlError> {
    // `</` inside a script element would end it: JSON escapes it as `<\/`.
    let data = serde_json::to_string(page)?.replace("</", "<\\/");
    let mut out = String::with_capacity(TEMPLATE.len() + UPLOT_JS.len() + data.len() + 8192);
    let mut rest = TEMPLATE;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find("}}").unwrap_or(after.len());
        match &after[..end] {
            "title" => out.push_str(&escape(&page.title)),
            "style" => out.push_str(STYLE),
            "uplot_css" => out.push_str(UPLOT_CSS),
            "uplot_js" => out.push_str(UPLOT_JS),
            "uplot_license" => out.push_str(&escape(UPLOT_LICENSE)),
            "data" => out.push_str(&data),
            "script" => out.push_str(SCRIPT),
            other => {
                out.push_str("{{");
                out.push_str(other);
                out.push_str("}}");
            }
        }
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
