//! Engine benchmarks that print measured figures (run with `cargo bench --bench engine`):
//! - million: a method job on 1,000,000 zero-latency devices: device ops/s over the job's
//!   makespan, and the process's peak RSS (VmHWM);
//! - engine lag with 100,000 devices, paced (S3 x 200 units = 10,000 ops/s) and as a burst;
//! - quickstart: wall time of the shipped quickstart scenario.

use std::path::Path;
use std::time::Instant;

use fleetsim::app::run::{self, Progress, RunOptions};
use fleetsim::metrics::Measure;
use fleetsim::shard::Shard;
use fleetsim::units::fmt_us;
use tokio_util::sync::CancellationToken;

// The binary's allocator (see Cargo.toml), so the figures are those of `fleetsim run`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run(file: &str) -> (run::RunOutcome, f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenario = fleetsim::scenario::load(&root.join(file)).expect("scenario");
    let out = std::env::temp_dir().join(format!("fleetsim-bench-{}", scenario.name));
    let opts = RunOptions {
        seed: None,
        out: Some(out.clone()),
        progress: Progress::Quiet,
        mqtt: Default::default(),
        state_dir: out.join("state"),
        keep_state: false,
        shard: Shard::ALL,
        scenario_text: None,
        clock: None,
        speed: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = rt
        .block_on(run::run(&scenario, &opts, CancellationToken::new()))
        .expect("run");
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(out);
    (outcome, wall)
}

/// Registry look-ups over the million-device fleet: an id (index look-up), an id list, and a
/// tag equality (first use builds the index, later uses read it).
fn registry_lookups() {
    use fleetsim::query::parse_condition;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenario =
        fleetsim::scenario::load(&root.join("scenarios/million.toml")).expect("scenario");
    let mut registry =
        fleetsim::scenario::build::registry(&scenario, fleetsim::clock::Clock::start(), Shard::ALL);
    for text in [
        "deviceId = 'm-500000'",
        "deviceId IN ['m-000001', 'm-999999', 'nope']",
        "tags.fleet = 'million' AND properties.reported.firmware = '1.0.0'",
        "tags.fleet = 'million' AND properties.reported.firmware = '1.0.0'",
    ] {
        let cond = parse_condition(text).expect("condition");
        let started = Instant::now();
        let n = registry.select(&cond).len();
        println!(
            "registry select over 1,000,000 twins: {:?} for {n} rows: {text}",
            started.elapsed()
        );
    }
}

fn main() {
    registry_lookups();
    let (o, wall) = run("scenarios/million.toml");
    let job = &o.report.jobs[0];
    let s = job.statistics;
    println!(
        "million: {} devices, {} succeeded, {} failed; makespan {:.0} ms; {:.0} device ops/s; run wall {wall:.2} s; peak RSS {:.0} MB",
        s.device_count,
        s.succeeded_count,
        s.failed_count,
        job.makespan_ms,
        job.ops_per_s,
        peak_rss_mb()
    );
    for file in ["bench/engine-lag-100k.toml", "bench/engine-burst-100k.toml"] {
        let (o, _) = run(file);
        let lag = &o.summary.measure(Measure::EngineLag).stats;
        let job = &o.report.jobs[0];
        println!(
            "{}: engine lag p50 {} p99 {} p99.9 {} max {}; {:.0} device ops/s; {} completed of {}",
            o.report.scenario,
            fmt_us(lag.p50_us),
            fmt_us(lag.p99_us),
            fmt_us(lag.p999_us),
            fmt_us(lag.max_us),
            job.ops_per_s,
            job.statistics.succeeded_count,
            job.statistics.device_count
        );
    }
    let (o, wall) = run("scenarios/quickstart.toml");
    println!(
        "quickstart: wall {wall:.2} s, complete {}, delivery p99 {}",
        o.report.complete,
        fmt_us(o.summary.measure(Measure::Delivery).stats.p99_us)
    );
}
