//! The commands that work on files and finish at once: `validate`, `query`, `keys`, `compare`
//! and `merge`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::hub::state::StateDir;
use crate::metrics::merge;
use crate::scenario::identities::{self, KeyFormat};
use crate::scenario::{self, inspect};
use crate::verdict::{compare, markdown, Exit};

/// `fleetsim validate`: loads the scenario (its first problem is the error) and says what it
/// holds.
pub(crate) fn validate(path: &Path) -> anyhow::Result<Exit> {
    let s = scenario::load(path)?;
    let devices: u64 = s.cohorts.iter().map(|c| c.count).sum();
    println!(
        "{}: ok ({} cohorts, {devices} devices, {} jobs)",
        path.display(),
        s.cohorts.len(),
        s.jobs.len()
    );
    Ok(Exit::Pass)
}

/// `fleetsim query`: the rows of `query` over the scenario's fleet, as a table on a terminal
/// and as JSON lines otherwise.
pub(crate) fn query(path: &Path, query: &str) -> anyhow::Result<Exit> {
    let s = scenario::load(path)?;
    let rows = inspect::query(&s, query)?;
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        write!(out, "{}", inspect::table(&rows))?;
    } else {
        for row in rows {
            writeln!(out, "{row}")?;
        }
    }
    Ok(Exit::Pass)
}

/// How `fleetsim compare` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareFormat {
    /// A table; coloured when stdout is a terminal.
    Text,
    /// A Markdown table, for CI step summaries.
    Markdown,
    /// JSON.
    Json,
}

/// What `fleetsim compare` was asked to do.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The baseline result directory.
    pub(crate) baseline: PathBuf,
    /// The result directory to judge.
    pub(crate) run: PathBuf,
    /// How much worse than the baseline a figure may be (relative).
    pub(crate) tolerance: f64,
    /// How to print the comparison.
    pub(crate) format: CompareFormat,
}

/// `fleetsim compare`: prints the comparison; a regression is [`Exit::Regression`].
pub(crate) fn compare(opts: &CompareOptions) -> anyhow::Result<Exit> {
    let c = compare::compare(&opts.baseline, &opts.run, opts.tolerance)?;
    match opts.format {
        CompareFormat::Text => print!("{}", c.text(std::io::stdout().is_terminal())),
        CompareFormat::Markdown => print!("{}", markdown::comparison(&c)),
        CompareFormat::Json => println!("{}", serde_json::to_string_pretty(&c)?),
    }
    let regressed = c.regressions().next().is_some();
    Ok(if regressed {
        Exit::Regression
    } else {
        Exit::Pass
    })
}

/// `fleetsim merge`: merges the shards' results into `out` and judges the whole with the
/// thresholds of the scenario kept beside them.
pub(crate) fn merge(dirs: &[PathBuf], out: &Path) -> anyhow::Result<Exit> {
    merge::merge(dirs, out)?;
    let verdict = super::report::judge(out, &super::report::thresholds_of(out)?, None)?;
    println!("merged {} shards into {}", dirs.len(), out.display());
    print!("{}", verdict.text());
    Ok(verdict.exit())
}

/// What `fleetsim keys` was asked to do.
#[derive(Debug, Clone)]
pub struct KeysOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Where the key secret is kept.
    pub state_dir: PathBuf,
    /// What to write.
    pub(crate) format: KeyFormat,
    /// The output file (None: standard output).
    pub out: Option<PathBuf>,
}

/// `fleetsim keys`: exports the scenario's device identities with their keys.
pub(crate) fn keys(opts: &KeysOptions) -> anyhow::Result<Exit> {
    let s = scenario::load(&opts.scenario)?;
    let dir = &opts.state_dir;
    let state = StateDir::open(dir)
        .with_context(|| format!("cannot use state directory {}", dir.display()))?;
    let authority = state.authority(Vec::new())?;
    match &opts.out {
        Some(path) => {
            let file =
                private_file(path).with_context(|| format!("cannot write {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let n = identities::export(&s, &authority, opts.format, &mut w)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "fleetsim: wrote {n} device identities to {}",
                path.display()
            );
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            identities::export(&s, &authority, opts.format, &mut w)?;
        }
    }
    Ok(Exit::Pass)
}

/// Creates (or truncates) `path`, readable by its owner only on Unix: it holds keys.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::create(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}
