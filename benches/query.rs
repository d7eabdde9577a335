//! Query benchmark: parse time, and full-scan WHERE time over 1,000,000 synthetic twins.
//! Run with `cargo bench --bench query`; it prints figures and checks the 1 s budget per scan.
//!
//! Each scan reports wall time and this thread's CPU time (Linux `/proc/thread-self/schedstat`):
//! on a shared machine the wall time also counts the time other processes held the core. A
//! hand-written `serde_json` lookup of the first condition gives the floor that the document
//! representation itself sets.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fleetsim::query::{parse_condition, parse_query};
use serde_json::{json, Value};

const TWINS: usize = 1_000_000;
const BUDGET: Duration = Duration::from_secs(1);

const CONDITIONS: [&str; 3] = [
    "tags.building = '43'",
    "properties.reported.temp > 30.5 AND status = 'enabled' AND connectionState = 'Connected'",
    "(properties.reported.firmware IN ['1.0', '1.1'] OR NOT IS_DEFINED(tags.floor)) \
     AND properties.reported.temp * 2 + tags.floor % 3 > 40",
];

const QUERY: &str = "SELECT properties.reported.firmware AS fw, COUNT() AS n FROM devices \
                     WHERE status = 'enabled' GROUP BY properties.reported.firmware";

const FIRMWARE: [&str; 3] = ["1.0", "1.1", "2.0"];

/// A deterministic twin: every field is a simple function of `i`.
fn twin(i: usize) -> Value {
    let mut tags = json!({
        "building": (i % 100).to_string(),
        "location": { "region": if i.is_multiple_of(2) { "US" } else { "EU" } },
    });
    if !i.is_multiple_of(5) {
        tags["floor"] = json!(i % 7);
    }
    json!({
        "deviceId": format!("device-{i:07}"),
        "status": if i.is_multiple_of(10) { "disabled" } else { "enabled" },
        "connectionState": if i.is_multiple_of(3) { "Disconnected" } else { "Connected" },
        "tags": tags,
        "properties": {
            "desired": { "interval": 30 + i % 4 * 30 },
            "reported": {
                "firmware": FIRMWARE[i % 3],
                "temp": (i * 37 % 400) as f64 / 10.0,
                "battery": i % 101,
            },
        },
    })
}

fn main() {
    let started = Instant::now();
    let twins: Vec<Value> = (0..TWINS).map(twin).collect();
    println!("built {TWINS} twins in {:.2?}", started.elapsed());

    const PARSES: u32 = 10_000;
    let started = Instant::now();
    for _ in 0..PARSES {
        for text in CONDITIONS {
            black_box(parse_condition(black_box(text)).unwrap());
        }
        black_box(parse_query(black_box(QUERY)).unwrap());
    }
    let per_parse = started.elapsed() / (PARSES * (CONDITIONS.len() as u32 + 1));
    println!("parse: {per_parse:.2?} per query or condition (mean of {PARSES} x 4)");

    let (matched, wall, cpu) = measure(|| {
        twins
            .iter()
            .filter(|t| t["tags"]["building"].as_str() == Some("43"))
            .count()
    });
    println!(
        "floor, hand-written serde_json lookup of tags.building = '43': wall {wall:.2?}, cpu {cpu:.2?}, matched {matched}"
    );

    let mut over_budget = false;
    for text in CONDITIONS {
        let condition = parse_condition(text).unwrap();
        let (matched, wall, cpu) =
            measure(|| twins.iter().filter(|t| condition.matches(*t)).count());
        over_budget |= cpu.unwrap_or(wall) > BUDGET;
        println!("scan {TWINS} twins: wall {wall:.2?}, cpu {cpu:.2?}, matched {matched}: {text}");
    }

    let query = parse_query(QUERY).unwrap();
    let started = Instant::now();
    let selected = twins.iter().filter(|t| query.condition().matches(*t));
    let rows = query.project(selected);
    println!(
        "scan + GROUP BY {TWINS} twins: {:.2?}, rows {}: {QUERY}",
        started.elapsed(),
        serde_json::to_string(&rows).unwrap()
    );
    println!(
        "budget {BUDGET:?} of CPU time per scan: {}",
        if over_budget { "EXCEEDED" } else { "met" }
    );
}

/// Runs `scan` three times; returns its result and the best wall and CPU times.
fn measure(mut scan: impl FnMut() -> usize) -> (usize, Duration, Option<Duration>) {
    let mut result = 0;
    let mut best_wall = Duration::MAX;
    let mut best_cpu: Option<Duration> = None;
    for _ in 0..3 {
        let (wall_start, cpu_start) = (Instant::now(), thread_cpu_time());
        result = black_box(scan());
        best_wall = best_wall.min(wall_start.elapsed());
        if let (Some(start), Some(end)) = (cpu_start, thread_cpu_time()) {
            let cpu = end.saturating_sub(start);
            best_cpu = Some(best_cpu.map_or(cpu, |best| best.min(cpu)));
        }
    }
    (result, best_wall, best_cpu)
}

/// CPU time this thread has run, where Linux tells it.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
