//! `report.html`: written beside every run's results once it is judged, and `fleetsim report`,
//! which puts several runs on one page.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::html::{self, RunData};
use crate::scenario;
use crate::verdict::thresholds::Thresholds;
use crate::verdict::{self, Exit, Verdict};

/// Judges the result directory `dir` (writing `junit.xml` and `summary.md`, as
/// [`verdict::judge`]) and writes its `report.html`.
pub(crate) fn judge(
    dir: &Path,
    thresholds: &Thresholds,
    baseline: Option<(&Path, f64)>,
) -> anyhow::Result<Verdict> {
    let verdict = verdict::judge(dir, thresholds, baseline)?;
    html::write_run(dir, &verdict)
        .with_context(|| format!("cannot write the HTML report of {}", dir.display()))?;
    Ok(verdict)
}

/// The thresholds of the scenario a result directory keeps (`scenario.toml`); none without it.
pub(crate) fn thresholds_of(dir: &Path) -> anyhow::Result<Thresholds> {
    let file = dir.join("scenario.toml");
    Ok(match file.is_file() {
        true => scenario::load(&file)?.thresholds,
        false => Thresholds::default(),
    })
}

/// `fleetsim report DIR... [--out FILE]`: one page comparing the runs in `dirs` (the first is
/// the reference), each judged by its own scenario's thresholds; `out` defaults to
/// `report.html` in the current directory.
pub(crate) fn command(dirs: &[PathBuf], out: Option<&Path>) -> anyhow::Result<Exit> {
    anyhow::ensure!(
        !dirs.is_empty(),
        "give one or more result directories (as `fleetsim run` writes them under results/)"
    );
    for dir in dirs {
        html::check_result_dir(dir)?;
    }
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let summary = crate::metrics::results::read_summary(dir)?;
        let verdict = Verdict::new(summary, &thresholds_of(dir)?, None);
        runs.push(RunData::read(dir, html::dir_label(dir), &verdict)?);
    }
    let page = if let [run] = &runs[..] {
        html::run_page_of(run)?
    } else {
        html::compare_page(&runs)?
    };
    let out = out.map_or_else(|| PathBuf::from(html::FILE_NAME), Path::to_owned);
    crate::metrics::results::write_atomic(&out, page.as_bytes())?;
    println!(
        "wrote {} ({} runs, {} KiB)",
        out.display(),
        runs.len(),
        page.len() / 1024
    );
    Ok(Exit::Pass)
}
