//! Hot-path cost of `Recorder`: 10,000,000 events into a recorder with 2 jobs, printed as
//! ns/event. An event is one `record` call; every fourth event also completes an operation
//! (`op_dispatched` + `op_done`), and the clock advances 1 µs per operation, so one-second
//! intervals close along the way (2.5 s of run time) as they would in the engine. Two latency
//! mixes: `spread` (0-50 ms, 1% up to 10 s, 0.1% outliers: bins all over, so cache misses) and
//! `clustered` (1.0-1.2 ms).
//!
//! Run: `cargo bench --bench recorder`. Prints thread CPU time per event (the figure to quote on
//! a shared machine) and wall time per event.

use std::hint::black_box;
use std::time::Instant;

use fleetsim::metrics::{Measure, Recorder};

const EVENTS: u64 = 10_000_000;

fn main() {
    // Pseudo-random latencies (xorshift64), mostly sub-50 ms with a 1% tail up to 10 s and a few
    // outliers, drawn up front so the generator is not timed.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let values: Vec<u64> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 1000 {
                0 => 4_000_000_000,
                1..=10 => x % 10_000_000,
                _ => x % 50_000,
            }
        })
        .collect();

    // The same events with latencies clustered in 1.0-1.2 ms: the cache-friendly best case.
    let clustered: Vec<u64> = values.iter().map(|v| 1_000 + v % 200).collect();

    for (name, values) in [("spread", &values), ("clustered", &clustered)] {
        for round in 0..3 {
            run(name, round, values);
        }
    }
}

fn run(name: &str, round: u32, values: &[u64]) {
    {
        let mut r = Recorder::new();
        let jobs = [r.add_job("job-a"), r.add_job("job-b")];
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let mut now_us = 0u64;
        for i in 0..EVENTS {
            let job = jobs[(i >> 2) as usize & 1];
            let measure = Measure::ALL[(i & 3) as usize];
            r.record(job, measure, values[(i & 0xFFFF) as usize]);
            if i & 3 == 3 {
                now_us += 1;
                r.op_dispatched(job);
                r.op_done(job, now_us, i % 1001 == 0);
            }
        }
        let elapsed = start.elapsed();
        let cpu_ns = thread_cpu_ns() - cpu_start;
        let snap_start = Instant::now();
        let snap = black_box(r.snapshot(now_us));
        let snap_us = snap_start.elapsed().as_secs_f64() * 1e6;
        assert_eq!(
            snap.overall.iter().map(|m| m.stats.count).sum::<u64>(),
            EVENTS
        );
        println!(
            "{name:>9} round {round}: {EVENTS} events: {:.2} ns/event CPU ({:.2} ns/event wall, {:.3} s; {} seconds closed; snapshot {:.0} µs wall)",
            cpu_ns as f64 / EVENTS as f64,
            elapsed.as_nanos() as f64 / EVENTS as f64,
            elapsed.as_secs_f64(),
            r.closed_rows().len(),
            snap_us
        );
    }
}

/// CPU time of this thread in ns: unlike wall time, not inflated when other processes share the
/// cores.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
