//! Runs a scenario: builds the hub and the fleet in one process, creates the scenario's jobs at
//! their times, reports progress, stops when every job has ended (or at the duration limit, or
//! on Ctrl-C), and writes the result files.

pub mod devices;

use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::hub::throttle::Limits;
use crate::hub::{Engine, Hub, HubView};
use crate::metrics;
use crate::report::RunReport;
use crate::scenario::{build, default_out_dir, Scenario};

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
    /// The MQTT endpoint and fleet.
    pub mqtt: devices::MqttOptions,
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
}

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    AllDone,
    Duration,
    Interrupted,
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
    let registry = build::registry(scenario, clock);

    let (from_dev_tx, from_dev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (view_tx, mut view_rx) = watch::channel(HubView::default());
    let stop_engine = CancellationToken::new();
    let hub = Hub::new(cmd_tx);

    let (link, side) = devices::start(
        scenario,
        seed,
        &opts.mqtt,
        clock,
        &hub,
        from_dev_tx,
        stop_engine.clone(),
    )
    .await?;
    let fleet_status = side.fleet_status.clone();
    let engine = Engine::new(clock, limits, registry, link);
    let engine_task = tokio::spawn(engine.run(cmd_rx, from_dev_rx, view_tx, stop_engine.clone()));

    // Jobs start once the MQTT devices are connected (or the wait bound passes).
    let offset = if side.expect_connected > 0 {
        let bound = clock.now_us() + connect_wait(side.expect_connected, scenario.hub.ramp);
        let mut next_line = 0;
        loop {
            let now = clock.now_us();
            let connected = view_rx.borrow_and_update().connected;
            if connected >= side.expect_connected || now >= bound || shutdown.is_cancelled() {
                eprintln!(
                    "fleetsim: {connected}/{} MQTT devices connected after {:.1}s",
                    side.expect_connected,
                    now as f64 / 1e6
                );
                break now;
            }
            if now >= next_line {
                if let Some(s) = &fleet_status {
                    eprintln!("[{:>6.1}s] {}", now as f64 / 1e6, s.line());
                } else {
                    eprintln!(
                        "[{:>6.1}s] {connected}/{} devices connected",
                        now as f64 / 1e6,
                        side.expect_connected
                    );
                }
                next_line = now + 1_000_000;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = view_rx.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    } else {
        0
    };

    let plan = build::planned_jobs(scenario);
    let mut next_job = 0;
    let mut refused = Vec::new();
    let deadline = offset + scenario.duration.micros();
    let mut next_line: Micros = offset + 1_000_000;

    let stop = loop {
        let now = clock.now_us();
        while next_job < plan.len() && offset + plan[next_job].create_at <= now {
            let planned = &plan[next_job];
            let mut request = planned.request.clone();
            request.start_time = Some(clock.wall_at(offset + planned.start_at));
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
            wake = wake.min(offset + p.create_at);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Interrupted,
            _ = view_rx.changed() => {}
            _ = tokio::time::sleep_until(clock.instant_at(wake)) => {}
        }
    };

    stop_engine.cancel();
    let output = engine_task.await.context("the job engine task failed")?;
    side.join().await?;
    let end = clock.now_us();
    let report = RunReport {
        scenario: scenario.name.clone(),
        seed,
        complete: stop == Stop::AllDone,
        started_at: clock.iso_at(0),
        ended_at: clock.iso_at(end),
        devices: output.devices,
        jobs: output.jobs,
    };
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(scenario, clock.wall_at(0)));
    metrics::results::write(&dir, &report, &output.recorder, end)
        .with_context(|| format!("cannot write results to {}", dir.display()))?;
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
    })
}

/// How long a run waits for `n` MQTT devices connecting at `ramp` per second.
fn connect_wait(n: u64, ramp: u32) -> Micros {
    let ramp_us = n.saturating_mul(1_000_000) / ramp.max(1) as u64;
    2 * ramp_us + 30_000_000
}

/// The one-line progress summary.
pub fn progress_line(view: &HubView, planned: usize) -> String {
    let done = view.jobs.iter().filter(|j| j.status.is_terminal()).count();
    let (mut ops_done, mut ops_total, mut ops_per_s) = (0, 0, 0.0);
    for j in &view.jobs {
        ops_done += j.stats.succeeded_count + j.stats.failed_count;
        ops_total += j.stats.device_count;
        if !j.status.is_terminal() {
            ops_per_s += j.ops_per_s;
        }
    }
    format!(
        "[{:>6.1}s] jobs {done}/{planned} done | ops {ops_done}/{ops_total} | {ops_per_s:.0} ops/s | devices {}/{} connected",
        view.now_us as f64 / 1e6,
        view.connected,
        view.devices,
    )
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
    for (id, why) in &outcome.refused {
        let _ = writeln!(s, "{id:<24} refused: {why}");
    }
    let _ = writeln!(s, "results: {}", outcome.dir.display());
    s
}
