//! Runs a scenario: builds the hub and the fleet in one process, creates the scenario's jobs at
//! their times, reports progress, stops when every job has ended (or at the duration limit, or
//! on Ctrl-C), and writes the result files.

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::fleet::inproc::{InProcFleet, InProcLink};
use crate::fleet::Fleet;
use crate::hub::throttle::Limits;
use crate::hub::{Engine, Hub, HubView};
use crate::metrics::{self, Measure, MetricsSnapshot};
use crate::report::RunReport;
use crate::scenario::{build, default_out_dir, Scenario};
use crate::shard::Shard;

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A line per second on stderr.
    Lines,
    /// Nothing until the end.
    Quiet,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Where results go (default `results/<scenario>/<UTC timestamp>/`).
    pub out: Option<PathBuf>,
    /// Progress display.
    pub progress: Progress,
    /// The slice of the fleet to play ([`Shard::ALL`]: all of it).
    pub shard: Shard,
    /// The scenario file's text, copied into the result directory as `scenario.toml` so that
    /// `fleetsim merge` can recompute its thresholds.
    pub scenario_text: Option<String>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The result directory.
    pub dir: PathBuf,
    /// The report written to it.
    pub report: RunReport,
    /// Jobs the hub refused to create, with the reason.
    pub refused: Vec<(String, String)>,
    /// The final metrics.
    pub summary: MetricsSnapshot,
}

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    AllDone,
    Duration,
    Interrupted,
    /// A threshold (its index) was certainly lost and the scenario asks to abort then.
    Threshold(usize),
}

/// Runs `scenario` until its jobs end, its duration passes, or `shutdown` fires.
pub async fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    let clock = Clock::start();
    let seed = opts.seed.unwrap_or(scenario.seed);
    let limits = Limits {
        tier: scenario.hub.tier.0,
        units: scenario.hub.units,
    };
    let registry = build::registry(scenario, clock, opts.shard);
    let fleet = Fleet::new(scenario, seed, opts.shard);

    let (to_dev_tx, to_dev_rx) = mpsc::unbounded_channel();
    let (from_dev_tx, from_dev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (view_tx, mut view_rx) = watch::channel(HubView::default());
    let stop_engine = CancellationToken::new();

    let engine = Engine::new(
        clock,
        limits,
        registry,
        Box::new(InProcLink::new(to_dev_tx)),
    );
    let engine_task = tokio::spawn(engine.run(cmd_rx, from_dev_rx, view_tx, stop_engine.clone()));
    let fleet_task = tokio::spawn(
        InProcFleet::new(fleet, clock, from_dev_tx).run(to_dev_rx, stop_engine.clone()),
    );
    let hub = Hub::new(cmd_tx);

    let plan = build::planned_jobs(scenario);
    let mut next_job = 0;
    let mut refused = Vec::new();
    let deadline = scenario.duration.micros();
    let mut next_line: Micros = 1_000_000;

    let stop = loop {
        let now = clock.now_us();
        while next_job < plan.len() && plan[next_job].create_at <= now {
            let planned = &plan[next_job];
            let mut request = planned.request.clone();
            request.start_time = Some(clock.wall_at(planned.start_at));
            if let Err(e) = hub.create_job(request).await {
                eprintln!("fleetsim: job '{}' refused: {e}", planned.request.job_id);
                refused.push((planned.request.job_id.clone(), e.to_string()));
            }
            next_job += 1;
        }
        let created = next_job - refused.len();
        {
            let view = view_rx.borrow_and_update();
            if next_job == plan.len() && view.jobs.len() == created && view.all_jobs_done() {
                break Stop::AllDone;
            }
            let thresholds = &scenario.thresholds;
            if thresholds.abort_on_fail {
                if let Some(i) = thresholds
                    .list
                    .iter()
                    .position(|t| t.certainly_lost(&view, !opts.shard.is_all()))
                {
                    break Stop::Threshold(i);
                }
            }
            if opts.progress == Progress::Lines && now >= next_line {
                eprintln!("{}", progress_line(&view, plan.len()));
                next_line = now + 1_000_000;
            }
        }
        if now >= deadline {
            break Stop::Duration;
        }
        let mut wake = deadline.min(next_line);
        if let Some(p) = plan.get(next_job) {
            wake = wake.min(p.create_at);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Interrupted,
            _ = view_rx.changed() => {}
            _ = tokio::time::sleep_until(clock.instant_at(wake)) => {}
        }
    };

    stop_engine.cancel();
    let output = engine_task.await.context("the job engine task failed")?;
    fleet_task.await.context("the fleet task failed")?;
    let end = clock.now_us();
    let report = RunReport {
        scenario: scenario.name.clone(),
        seed,
        complete: stop == Stop::AllDone,
        started_at: clock.iso_at(0),
        ended_at: clock.iso_at(end),
        devices: output.devices,
        jobs: output.jobs,
        shard: (!opts.shard.is_all()).then_some(opts.shard),
    };
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(scenario, clock.wall_at(0)));
    metrics::results::write(&dir, &report, &output.recorder, end)
        .with_context(|| format!("cannot write results to {}", dir.display()))?;
    if let Some(text) = &opts.scenario_text {
        let path = dir.join("scenario.toml");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Stop::Threshold(i) = stop {
        let t = &scenario.thresholds.list[i];
        eprintln!(
            "fleetsim: threshold '{} {}' is lost for certain: run stopped (abort_on_fail)",
            t.key, t.condition
        );
    }
    if stop == Stop::Duration {
        eprintln!(
            "fleetsim: the run reached its duration limit ({}) before every job ended",
            scenario.duration
        );
    }
    Ok(RunOutcome {
        dir,
        report,
        refused,
        summary: output.recorder.snapshot(end),
    })
}

/// The one-line progress summary: jobs, operations, the current rate and delivery p99 so far.
pub fn progress_line(view: &HubView, planned: usize) -> String {
    let done = view.jobs.iter().filter(|j| j.status.is_terminal()).count();
    let (mut ops_done, mut ops_total) = (0, 0);
    for j in &view.jobs {
        ops_done += j.stats.succeeded_count + j.stats.failed_count;
        ops_total += j.stats.device_count;
    }
    let m = &view.metrics;
    let rate = m.recent.last().map_or(m.current.ops_per_s, |r| r.ops_per_s);
    format!(
        "[{:>6.1}s] jobs {done}/{planned} done | ops {ops_done}/{ops_total} | {rate:.0} ops/s | delivery p99 {} | {}/{} connected",
        view.now_us as f64 / 1e6,
        fmt_us(m.measure(Measure::Delivery).stats.p99_us),
        view.connected,
        view.devices,
    )
}

/// A latency for people: µs, ms or s.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// The final table printed after a run.
pub fn final_table(outcome: &RunOutcome) -> String {
    use std::fmt::Write;
    let r = &outcome.report;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scenario {} (seed {}), {} devices, {}",
        r.scenario,
        r.seed,
        r.devices,
        if r.complete { "complete" } else { "INCOMPLETE" }
    );
    let _ = writeln!(
        s,
        "{:<24} {:<22} {:<10} {:>9} {:>9} {:>8} {:>11} {:>10}",
        "job", "type", "status", "devices", "succeeded", "failed", "makespan", "ops/s"
    );
    for j in &r.jobs {
        let _ = writeln!(
            s,
            "{:<24} {:<22} {:<10} {:>9} {:>9} {:>8} {:>10.1}s {:>10.0}",
            j.job_id,
            j.job_type,
            j.status,
            j.statistics.device_count,
            j.statistics.succeeded_count,
            j.statistics.failed_count,
            j.makespan_ms / 1000.0,
            j.ops_per_s
        );
    }
    let _ = writeln!(
        s,
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for m in Measure::ALL {
        let h = &outcome.summary.measure(m).stats;
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            m.name(),
            h.count,
            fmt_us(h.p50_us),
            fmt_us(h.p90_us),
            fmt_us(h.p99_us),
            fmt_us(h.p999_us),
            fmt_us(h.max_us)
        );
    }
    let t = &outcome.summary.totals;
    let _ = writeln!(
        s,
        "throughput: {} ops, {:.0} ops/s mean, {:.0} ops/s peak",
        t.ops_done, t.ops_per_s_mean, t.ops_per_s_peak
    );
    for (id, why) in &outcome.refused {
        let _ = writeln!(s, "{id:<24} refused: {why}");
    }
    let _ = writeln!(s, "results: {}", outcome.dir.display());
    s
}
