//! Runs a scenario: builds the hub and the fleet in one process, creates the scenario's jobs at
//! their times, reports progress, stops when every job has ended (or at the duration limit, or
//! on Ctrl-C), and writes the result files.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::{wall_now, Clock, ClockMode, Micros, Stopwatch};
use crate::hub::HubView;
use crate::metrics::{self, Measure, MetricsSnapshot};
use crate::report::{RunReport, Timing};
use crate::scenario::format::Transport;
use crate::scenario::{self, default_out_dir, inspect, Scenario};
use crate::shard::Shard;
use crate::tui::{self, Dashboard};
use crate::units::fmt_us;
use crate::verdict::Exit;

use super::faults::FaultTimeline;
use super::feeder::JobFeeder;
use super::resume;
use super::rollouts::Rollouts;
use super::wiring::{self, MqttOptions, Security};

/// What `fleetsim run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Print what each job would target; run nothing.
    pub(crate) dry_run: bool,
    /// The shard asked for on the command line (None: from the environment, or all).
    pub shard: Option<Shard>,
    /// Progress lines instead of the dashboard.
    pub(crate) no_tui: bool,
    /// Dashboard frames per second.
    pub(crate) fps: u32,
    /// A result directory to compare with, and the tolerance.
    pub(crate) baseline: Option<(PathBuf, f64)>,
    /// The options of the run itself (its `progress`, `shard` and `scenario_text` are set from
    /// the fields above and the scenario file).
    pub(crate) run: RunOptions,
}

/// `fleetsim run`: runs the scenario (or only describes it, with `dry_run`), prints the final
/// table and the verdict, and answers the verdict.
pub(crate) fn command(cmd: RunCommand) -> anyhow::Result<Exit> {
    let s = scenario::load(&cmd.scenario)?;
    let shard = Shard::resolve(cmd.shard)?;
    if cmd.dry_run {
        print!("{}", inspect::dry_run(&s, cmd.run.seed.unwrap_or(s.seed))?);
        return Ok(Exit::Pass);
    }
    let progress = if cmd.no_tui || !std::io::stdout().is_terminal() {
        Progress::Lines
    } else {
        Progress::Dashboard { fps: cmd.fps }
    };
    let opts = RunOptions {
        progress,
        shard,
        scenario_text: Some(std::fs::read_to_string(&cmd.scenario)?),
        ..cmd.run
    };
    let outcome = run_blocking(&s, &opts)?;
    print!("{}", final_table(&outcome));
    let baseline = cmd.baseline.as_ref().map(|(b, t)| (b.as_path(), *t));
    let verdict = super::report::judge(&outcome.dir, &s.thresholds, baseline)?;
    if let Some(c) = &verdict.comparison {
        print!("{}", c.text(std::io::stdout().is_terminal()));
    }
    print!("{}", verdict.text());
    Ok(verdict.exit())
}

/// Runs `scenario` on a runtime of its own, stopped by Ctrl-C or SIGTERM: a multi-threaded one
/// in real time, a single-threaded one on tokio's paused clock in virtual time (it jumps to the
/// next timer whenever every task waits, and one thread makes the order of events, and so the
/// results, the same on every run).
pub fn run_blocking(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunOutcome> {
    let shutdown = CancellationToken::new();
    let watching = super::watch_signals(shutdown.clone())?;
    let outcome = run_until(scenario, opts, shutdown);
    watching.cancel();
    outcome
}

/// As [`run_blocking`], stopped by `shutdown` rather than by signals of its own.
pub(crate) fn run_until(
    scenario: &Scenario,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    match opts.clock.unwrap_or(scenario.clock) {
        ClockMode::Real => super::runtime()?.block_on(run(scenario, opts, shutdown)),
        ClockMode::Virtual => {
            // Only the timer: an in-process run has no sockets, and without an I/O driver the
            // runtime jumps to its next timer without a system call.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run(scenario, opts, shutdown))
        }
    }
}

/// Why `scenario` cannot run in virtual time with `opts`, if it cannot.
fn virtual_time_refused(scenario: &Scenario, opts: &RunOptions) -> Option<&'static str> {
    if scenario.hub.transport == Transport::Mqtt {
        Some("its [hub] transport is \"mqtt\", and real sockets live in real time (the in-process transport does not)")
    } else if opts.mqtt.external_fleet {
        Some("--external-fleet was given, and real sockets live in real time")
    } else if opts.mqtt.listen.plain.is_some() || opts.mqtt.listen.tls.is_some() {
        Some("--mqtt or --mqtts was given, and real sockets live in real time")
    } else if opts.keep_state {
        Some("--state-dir was given: a hub that keeps its state restarts in real time, and a virtual run replays from its seed instead")
    } else {
        None
    }
}

/// Blocks the run's only thread as long as simulated time runs ahead of `speed` times the real
/// time since `stopwatch` started, checking every 20 ms of real time; ends with `stop`.
async fn govern(clock: Clock, stopwatch: Stopwatch, speed: f64, stop: CancellationToken) {
    let tick_us = ((speed * 0.02 * 1e6) as Micros).max(1_000);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = clock.sleep_until(clock.now_us().saturating_add(tick_us)) => {}
        }
        let due = std::time::Duration::from_secs_f64(clock.now_us() as f64 / 1e6 / speed);
        if let Some(ahead) = due.checked_sub(stopwatch.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A line per second on stderr.
    Lines,
    /// Nothing until the end.
    Quiet,
    /// The live dashboard on the terminal, redrawn `fps` times a second; it stays up after the
    /// run until the user quits it.
    Dashboard {
        /// Frames per second.
        fps: u32,
    },
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
    pub mqtt: MqttOptions,
    /// Keys and TLS material (used when MQTT is served), and the hub's store with
    /// `keep_state`.
    pub state_dir: PathBuf,
    /// Keep the hub's registry, twins and jobs in `state_dir`'s store, and go on from what it
    /// holds (see [`super::resume`]); in memory only when false.
    pub keep_state: bool,
    /// The slice of the fleet to play ([`Shard::ALL`]: all of it).
    pub shard: Shard,
    /// The scenario file's text, copied into the result directory as `scenario.toml` so that
    /// `fleetsim merge` can recompute its thresholds.
    pub scenario_text: Option<String>,
    /// Real or virtual time; None: the scenario's `clock`.
    pub clock: Option<ClockMode>,
    /// In virtual time, simulated seconds per real second; None: as fast as possible.
    pub speed: Option<f64>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The result directory.
    pub(crate) dir: PathBuf,
    /// The report written to it.
    pub report: RunReport,
    /// Jobs the hub refused to create, with the reason.
    pub(crate) refused: Vec<(String, String)>,
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
    /// The engine died: see [`wiring::EngineDied`].
    EngineDied,
}

/// Runs `scenario` until its jobs end, its duration passes, or `shutdown` fires.
pub async fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    let mode = opts.clock.unwrap_or(scenario.clock);
    if mode == ClockMode::Virtual {
        if let Some(why) = virtual_time_refused(scenario, opts) {
            anyhow::bail!(
                "scenario '{}' cannot run in virtual time: {why}; use --clock real (or clock = \
                 \"real\")",
                scenario.name
            );
        }
    } else if opts.speed.is_some() {
        anyhow::bail!("--speed paces virtual time; add --clock virtual (or clock = \"virtual\")");
    }
    let started_wall = wall_now();
    let stopwatch = Stopwatch::start();
    let seed = opts.seed.unwrap_or(scenario.seed);
    let (store, resume) = match opts.keep_state {
        true => {
            let (store, resume) = resume::open(&opts.state_dir, scenario, seed)?;
            (Some(store), Some(resume))
        }
        false => (None, None),
    };
    let clock = match (mode, &resume) {
        (ClockMode::Real, Some(resume)) => resume.clock.clone(),
        (ClockMode::Real, None) => Clock::start(),
        (ClockMode::Virtual, _) => Clock::start_virtual(),
    };
    let governor = CancellationToken::new();
    if let Some(speed) = opts.speed {
        tokio::spawn(govern(clock.clone(), stopwatch, speed, governor.clone()));
    }
    let _governor = governor.drop_guard();
    let security = match wiring::serves_mqtt(scenario, &opts.mqtt) {
        true => Some(Security::from_state_dir(
            &opts.state_dir,
            clock.clone(),
            opts.mqtt.listen.tls.is_some(),
        )?),
        false => None,
    };
    let mut running = wiring::start_keeping(
        scenario,
        seed,
        opts.shard,
        clock.clone(),
        wiring::limits(scenario),
        &opts.mqtt,
        security,
        store,
        // A resumed run's jobs go on once its devices are back (see below).
        true,
    )
    .await?;
    let hub = running.hub.clone();
    let mut view_rx = running.view.clone();
    let dashboard = match opts.progress {
        Progress::Dashboard { fps } => {
            let header = tui::Header {
                scenario: scenario.name.clone(),
                seed: Some(seed),
                duration_us: Some(scenario.duration.micros()),
                transport: match scenario.hub.transport {
                    Transport::Mqtt => "mqtt",
                    Transport::Inproc => "in-process",
                },
                virtual_time: (mode == ClockMode::Virtual).then_some(stopwatch),
            };
            Some(Dashboard::spawn(
                view_rx.clone(),
                hub.clone(),
                header,
                shutdown.clone(),
                fps,
            ))
        }
        Progress::Lines | Progress::Quiet => None,
    };
    // Messages go to the dashboard's event log while it owns the terminal.
    let tell = |event: tui::Event| match &dashboard {
        Some(d) => d.send(event),
        None => eprintln!("fleetsim: {event}"),
    };
    let ready = running
        .await_devices(&clock, scenario.hub.ramp, &shutdown)
        .await;
    let offset = match &resume {
        Some(r) => {
            let offset = r.offset(scenario, seed, ready)?;
            hub.release().await?;
            if r.resumed {
                tell(tui::Event::Note(format!(
                    "resuming from {}: {} jobs kept, the run's times count from its first start \
                     (now +{})",
                    opts.state_dir.display(),
                    r.jobs.len(),
                    fmt_us(clock.now_us().saturating_sub(offset))
                )));
            }
            offset
        }
        None => ready,
    };
    running.begin_faults(offset);
    let mut faults = FaultTimeline::new(scenario, offset);
    let kept_jobs = resume.map(|r| r.jobs).unwrap_or_default();
    let mut feeder = JobFeeder::new(scenario)
        .starting_at(offset)
        .keeping(kept_jobs);
    let tier_per_minute = wiring::limits(scenario)
        .device_ops_per_s()
        .map(|per_s| per_s * 60.0);
    let plans = scenario::build::rollout_plans(scenario, seed);
    let mut rollouts = Rollouts::new(plans, offset, tier_per_minute);
    let deadline = offset.saturating_add(scenario.duration.micros());
    // Progress lines come every second: of the run's time in real time (the only wake-up the
    // loop sets for them; a dashboard reads the view itself), of real time in virtual time (the
    // loop wakes at each view, which the engine then publishes every 100 ms of real time).
    let lines = opts.progress == Progress::Lines;
    let mut next_line = (lines && mode == ClockMode::Real).then_some(offset + 1_000_000);
    let mut next_wall_line = std::time::Duration::from_secs(1);

    let stop = loop {
        let now = clock.now_us();
        let view = view_rx.borrow_and_update().clone();
        for (job, why) in feeder.create_due(&hub, &clock, now, &view).await {
            tell(tui::Event::Refused {
                job: job.clone(),
                why: why.clone(),
            });
        }
        for line in rollouts.advance(&hub, &clock, now, &view).await {
            tell(tui::Event::Note(line));
        }
        for line in faults.advance(&hub, now).await {
            tell(tui::Event::Note(line));
        }
        if let Some(d) = &dashboard {
            d.send(tui::Event::Rollouts(rollouts.views(&view)));
        }
        {
            let created = feeder.created() + rollouts.created();
            // A rollout's jobs are known as they are created.
            let planned = feeder.planned() + rollouts.created();
            let idle = !feeder.pending() && !rollouts.pending();
            if idle && view.jobs.len() == created && view.all_jobs_done() {
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
            if next_line.is_some_and(|at| now >= at) {
                eprintln!("{}", progress_line(&view, planned));
                next_line = Some(now + 1_000_000);
            }
            let wall = stopwatch.elapsed();
            if lines && mode == ClockMode::Virtual && wall >= next_wall_line {
                eprintln!(
                    "{} | wall {:.1}s, {:.0}x",
                    progress_line(&view, planned),
                    wall.as_secs_f64(),
                    now as f64 / 1e6 / wall.as_secs_f64()
                );
                next_wall_line += std::time::Duration::from_secs(1);
            }
        }
        if now >= deadline {
            break Stop::Duration;
        }
        let wake = [
            next_line,
            feeder.next_at(),
            rollouts.next_at(),
            faults.next_at(),
        ]
        .into_iter()
        .flatten()
        .fold(deadline, Micros::min);
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Interrupted,
            // The engine drops its view only when it ends, and it was not asked to yet: it died
            // (`running.stop` says why).
            changed = view_rx.changed() => if changed.is_err() { break Stop::EngineDied },
            _ = clock.sleep_until(wake) => {}
        }
    };

    let outcome = async {
        let mut output = running.stop().await?;
        let end = clock.now_us();
        let report = RunReport {
            scenario: scenario.name.clone(),
            seed,
            complete: stop == Stop::AllDone,
            started_at: clock.iso_at(0),
            ended_at: clock.iso_at(end),
            devices: output.devices,
            jobs: output.jobs,
            rollouts: rollouts.reports(),
            faults: scenario::build::fault_windows(scenario),
            shard: (!opts.shard.is_all()).then_some(opts.shard),
            clock: mode,
            timing: Timing::new(end, stopwatch.elapsed()),
            delivery_clock: output.delivery_clock.take(),
        };
        let dir = opts
            .out
            .clone()
            .unwrap_or_else(|| default_out_dir(scenario, started_wall));
        metrics::results::write(&dir, &report, &output.recorder, end)
            .with_context(|| format!("cannot write results to {}", dir.display()))?;
        if let Some(text) = &opts.scenario_text {
            let path = dir.join("scenario.toml");
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok::<_, anyhow::Error>(RunOutcome {
            dir,
            report,
            refused: feeder.refused,
            summary: output.recorder.snapshot(end),
        })
    }
    .await;
    if stop == Stop::Duration {
        tell(tui::Event::Note(format!(
            "the run reached its duration limit ({}) before every job ended",
            scenario.duration
        )));
    }
    if let Stop::Threshold(i) = stop {
        let t = &scenario.thresholds.list[i];
        tell(tui::Event::Note(format!(
            "threshold '{} {}' is lost for certain: run stopped (abort_on_fail)",
            t.key, t.condition
        )));
    }
    if let Some(d) = dashboard {
        let message = match &outcome {
            Ok(o) => format!("run ended; results written to {}", o.dir.display()),
            Err(e) => format!("error: {e:#}"),
        };
        d.finish(message).await?;
    }
    outcome
}

/// The one-line progress summary: jobs, operations, the current rate and delivery p99 so far.
pub(crate) fn progress_line(view: &HubView, planned: usize) -> String {
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

/// The final table printed after a run.
pub(crate) fn final_table(outcome: &RunOutcome) -> String {
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
    if let Some(c) = &r.delivery_clock {
        let offset = match (c.offset_us, c.uncertainty_us) {
            (Some(o), Some(u)) => {
                format!("{o:+} µs ± {u} µs (worst ± {} µs)", c.max_uncertainty_us)
            }
            _ => "never measured".to_owned(),
        };
        let _ = writeln!(
            s,
            "delivery clock: fleet offset {offset}; receipts {} recorded, {} refused",
            c.recorded, c.refused
        );
        if let Some(why) = &c.refusal {
            let _ = writeln!(s, "delivery clock: refused because {why}");
        }
    }
    for (id, why) in &outcome.refused {
        let _ = writeln!(s, "{id:<24} refused: {why}");
    }
    let _ = writeln!(s, "results: {}", outcome.dir.display());
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Options of a quiet run writing its results to `dir`.
    fn quiet_options(dir: &std::path::Path) -> RunOptions {
        RunOptions {
            seed: None,
            out: Some(dir.to_path_buf()),
            progress: Progress::Quiet,
            mqtt: MqttOptions::default(),
            state_dir: dir.to_path_buf(),
            keep_state: false,
            shard: Shard::ALL,
            scenario_text: None,
            clock: None,
            speed: None,
        }
    }

    /// Without progress lines (quiet, or a dashboard reading the view itself) the run loop must
    /// still wait between views. On tokio's paused clock time moves only while every task
    /// waits, so a loop that never waits never sees its job end: the watchdog, on real time,
    /// turns that into a failure.
    #[test]
    fn a_run_without_progress_lines_waits_instead_of_spinning() {
        let scenario = crate::scenario::parse(
            r#"
            name = "quiet"
            seed = 3
            duration = "1m"
            [[cohort]]
            name = "a"
            count = 50
            id_prefix = "q-"
            [cohort.methods.default]
            latency = { dist = "uniform", min = "100ms", max = "3s" }
            [[job]]
            id = "ping"
            type = "scheduleDeviceMethod"
            start = "+2s"
            query = "*"
            method = { name = "ping", response_timeout = "10s" }
            "#,
            "quiet.toml",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("fleetsim-quiet-{}", std::process::id()));
        let opts = quiet_options(&dir);
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let outcome = runtime.block_on(run(&scenario, &opts, CancellationToken::new()));
            let _ = done.send(outcome.map(|o| o.report.complete));
        });
        let complete = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("the run never ended: its loop keeps virtual time from moving")
            .unwrap();
        assert!(complete);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 16: a run whose engine dies ends at once with [`wiring::EngineDied`] (exit code 5)
    /// and the panic's message, instead of waiting out its duration against a dead hub. The job
    /// with [`crate::hub::engine::TEST_PANIC_JOB_ID`] makes a test build's engine panic.
    #[test]
    fn a_run_whose_engine_dies_stops_with_the_reason() {
        let scenario = crate::scenario::parse(
            &format!(
                r#"
                name = "dies"
                seed = 3
                duration = "1h"
                [[cohort]]
                name = "a"
                count = 5
                id_prefix = "d-"
                [[job]]
                id = "{}"
                type = "scheduleDeviceMethod"
                start = "+1s"
                query = "*"
                method = {{ name = "ping" }}
                "#,
                crate::hub::engine::TEST_PANIC_JOB_ID
            ),
            "dies.toml",
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("fleetsim-dies-{}", std::process::id()));
        let opts = quiet_options(&dir);
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = super::super::runtime().unwrap().block_on(run(
                &scenario,
                &opts,
                CancellationToken::new(),
            ));
            let _ = done.send(outcome.map(|o| o.report.complete));
        });
        let error = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("the run went on against a dead engine")
            .unwrap_err();
        assert_eq!(
            error.downcast_ref::<wiring::EngineDied>(),
            Some(&wiring::EngineDied::Crashed(
                "it panicked: job 'fleetsim-test-engine-panic' asks a test build to panic".into()
            )),
            "{error:#}"
        );
        assert_eq!(super::super::error_exit_code(&error), 5);
        assert!(
            !dir.join("summary.json").exists(),
            "no results from a dead engine"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
