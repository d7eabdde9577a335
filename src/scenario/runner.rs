//! Runs a scenario: builds the hub and the fleet in one process, creates the scenario's jobs at
//! their times, reports progress, stops when every job has ended (or at the duration limit, or
//! on Ctrl-C), and writes the result files.

pub mod devices;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Micros};
use crate::hub::throttle::{Limits, RateLimiter};
use crate::hub::{Engine, EngineOutput, Hub, HubView};
use crate::metrics::{self, Measure, MetricsSnapshot};
use crate::report::RunReport;
use crate::scenario::build::{self, PlannedJob};
use crate::scenario::format::Transport;
use crate::scenario::{default_out_dir, Scenario};
use crate::shard::Shard;
use crate::tui::{self, Dashboard};

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
    pub mqtt: devices::MqttOptions,
    /// Keys and TLS material (used when MQTT is served).
    pub state_dir: PathBuf,
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

/// A hub engine and a scenario's devices (in process, or over MQTT), running as tasks.
pub struct Running {
    /// The handle API calls and the job feeder use.
    pub hub: Hub,
    /// The engine's published view.
    pub view: watch::Receiver<Arc<HubView>>,
    /// The tier's allowances for service calls and device twin traffic (see [`RateLimiter`]).
    pub limiter: Arc<RateLimiter>,
    stop: CancellationToken,
    engine: JoinHandle<EngineOutput>,
    devices: devices::DeviceSide,
}

impl Running {
    /// Where the MQTT endpoint listens: (TCP, TLS).
    pub fn mqtt_addrs(&self) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        self.devices.mqtt_addrs()
    }

    /// Stops the engine and the devices; answers the engine's measurements and job reports.
    pub async fn stop(self) -> anyhow::Result<EngineOutput> {
        self.stop.cancel();
        let output = self.engine.await.context("the job engine task failed")?;
        self.devices.join().await?;
        Ok(output)
    }

    /// Waits (printing progress) until the devices expected over MQTT are connected, the wait
    /// bound passes, or `shutdown`; answers the clock reading then (0 when nothing to wait for).
    pub async fn await_devices(
        &mut self,
        clock: &Clock,
        ramp: u32,
        shutdown: &CancellationToken,
    ) -> Micros {
        let expected = self.devices.expect_connected;
        if expected == 0 {
            return 0;
        }
        let bound = clock.now_us() + connect_wait(expected, ramp);
        let mut next_line = 0;
        loop {
            let now = clock.now_us();
            let connected = self.view.borrow_and_update().connected;
            if connected >= expected || now >= bound || shutdown.is_cancelled() {
                eprintln!(
                    "fleetsim: {connected}/{expected} MQTT devices connected after {:.1}s",
                    now as f64 / 1e6
                );
                return now;
            }
            if now >= next_line {
                match &self.devices.fleet_status {
                    Some(s) => eprintln!("[{:>6.1}s] {}", now as f64 / 1e6, s.line()),
                    None => eprintln!(
                        "[{:>6.1}s] {connected}/{expected} devices connected",
                        now as f64 / 1e6
                    ),
                }
                next_line = now + 1_000_000;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.view.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    }
}

/// How long a run waits for `n` MQTT devices connecting at `ramp` per second.
fn connect_wait(n: u64, ramp: u32) -> Micros {
    let ramp_us = n.saturating_mul(1_000_000) / ramp.max(1) as u64;
    2 * ramp_us + 30_000_000
}

/// Builds `scenario`'s registry and fleet (with `seed`) and starts the engine over them, with
/// `limits` (the scenario's own unless overridden by the caller), and the device side `mqtt`
/// asks for (`security`: keys and TLS, needed when MQTT is served).
pub async fn start(
    scenario: &Scenario,
    seed: u64,
    shard: Shard,
    clock: Clock,
    limits: Limits,
    mqtt: &devices::MqttOptions,
    security: Option<devices::Security>,
) -> anyhow::Result<Running> {
    let registry = build::registry(scenario, clock, shard);
    let (from_dev_tx, from_dev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (view_tx, view_rx) = watch::channel(Arc::<HubView>::default());
    let stop = CancellationToken::new();
    let hub = Hub::new(cmd_tx);
    let limiter = Arc::new(RateLimiter::new(limits));

    let ends = devices::HubSide {
        clock,
        hub: hub.clone(),
        to_engine: from_dev_tx,
        stop: stop.clone(),
        limiter: limiter.clone(),
    };
    let (link, devices) = devices::start(scenario, seed, shard, mqtt, security, ends).await?;
    let engine = Engine::new(clock, limits, registry, link);
    let engine = tokio::spawn(engine.run(cmd_rx, from_dev_rx, view_tx, stop.clone()));
    Ok(Running {
        hub,
        view: view_rx,
        limiter,
        stop,
        engine,
        devices,
    })
}

/// The limits a scenario's `[hub]` asks for.
pub fn limits(scenario: &Scenario) -> Limits {
    Limits {
        tier: scenario.hub.tier.0,
        units: scenario.hub.units,
    }
}

/// Creates a scenario's jobs when they are due.
pub struct JobFeeder {
    plan: Vec<PlannedJob>,
    next: usize,
    /// Clock reading the plan's times count from (when the devices were ready).
    offset: Micros,
    /// Jobs the hub refused, with the reason.
    pub refused: Vec<(String, String)>,
}

impl JobFeeder {
    /// The feeder of `scenario`'s jobs.
    pub fn new(scenario: &Scenario) -> Self {
        JobFeeder {
            plan: build::planned_jobs(scenario),
            next: 0,
            offset: 0,
            refused: Vec::new(),
        }
    }

    /// Counts the plan's times from `offset` (when the devices were ready).
    pub fn starting_at(mut self, offset: Micros) -> Self {
        self.offset = offset;
        self
    }

    /// Creates every job due at `now`; answers the jobs the hub refused this time, with why
    /// (they are also kept in `refused`).
    pub async fn create_due(
        &mut self,
        hub: &Hub,
        clock: &Clock,
        now: Micros,
    ) -> &[(String, String)] {
        let before = self.refused.len();
        while self.next < self.plan.len() && self.offset + self.plan[self.next].create_at <= now {
            let planned = &self.plan[self.next];
            let mut request = planned.request.clone();
            request.start_time = Some(clock.wall_at(self.offset + planned.start_at));
            if let Err(e) = hub.create_job(request).await {
                self.refused
                    .push((planned.request.job_id.clone(), e.to_string()));
            }
            self.next += 1;
        }
        &self.refused[before..]
    }

    /// When the next job is due (None once all are created).
    pub fn next_at(&self) -> Option<Micros> {
        self.plan.get(self.next).map(|p| self.offset + p.create_at)
    }

    /// Jobs planned.
    pub fn planned(&self) -> usize {
        self.plan.len()
    }

    /// Jobs created so far.
    pub fn created(&self) -> usize {
        self.next - self.refused.len()
    }
}

/// Runs `scenario` until its jobs end, its duration passes, or `shutdown` fires.
pub async fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    let clock = Clock::start();
    let seed = opts.seed.unwrap_or(scenario.seed);
    let security = match devices::serves_mqtt(scenario, &opts.mqtt) {
        true => Some(devices::Security::from_state_dir(
            &opts.state_dir,
            clock,
            opts.mqtt.listen.tls.is_some(),
        )?),
        false => None,
    };
    let mut running = start(
        scenario,
        seed,
        opts.shard,
        clock,
        limits(scenario),
        &opts.mqtt,
        security,
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
    let offset = running
        .await_devices(&clock, scenario.hub.ramp, &shutdown)
        .await;
    let mut feeder = JobFeeder::new(scenario).starting_at(offset);
    let deadline = offset + scenario.duration.micros();
    // Only progress lines need a wake-up each second; a dashboard reads the view itself.
    let mut next_line = (opts.progress == Progress::Lines).then_some(offset + 1_000_000);

    let stop = loop {
        let now = clock.now_us();
        for (job, why) in feeder.create_due(&hub, &clock, now).await {
            tell(tui::Event::Refused {
                job: job.clone(),
                why: why.clone(),
            });
        }
        {
            let view = view_rx.borrow_and_update();
            if feeder.next_at().is_none()
                && view.jobs.len() == feeder.created()
                && view.all_jobs_done()
            {
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
                eprintln!("{}", progress_line(&view, feeder.planned()));
                next_line = Some(now + 1_000_000);
            }
        }
        if now >= deadline {
            break Stop::Duration;
        }
        let wake = [next_line, feeder.next_at()]
            .into_iter()
            .flatten()
            .fold(deadline, Micros::min);
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Interrupted,
            _ = view_rx.changed() => {}
            _ = tokio::time::sleep_until(clock.instant_at(wake)) => {}
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        let opts = RunOptions {
            seed: None,
            out: Some(dir.clone()),
            progress: Progress::Quiet,
            mqtt: devices::MqttOptions::default(),
            state_dir: dir.clone(),
            shard: Shard::ALL,
            scenario_text: None,
        };
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
}
