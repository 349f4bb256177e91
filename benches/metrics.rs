//! The registry benchmark: prints one `<name> <value> <unit>` line per
//! figure. Each figure is the median of several timed rounds, because this
//! machine is shared and single rounds are noisy.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use conductor_metrics::metrics::{Format, Registry};

const ROUNDS: usize = 9;

/// Times `iters` calls of `f` per round and returns the median ns per call.
fn per_call_ns(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iters {
                f(i);
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    const N: u64 = 20_000_000;
    let registry = Registry::new();

    let atomic = AtomicU64::new(0);
    let baseline = per_call_ns(N, |_| {
        black_box(&atomic).fetch_add(1, Ordering::Relaxed);
    });
    println!("atomic_baseline {baseline:.2} ns");

    let counter = registry.counter("bench_total", "bench").unwrap();
    let inc = per_call_ns(N, |_| black_box(&counter).inc());
    println!("counter_inc {inc:.2} ns");
    println!("counter_inc_vs_baseline {:.2} x", inc / baseline);

    let family = registry
        .counter_family("bench_labelled_total", "bench", &["method", "status"])
        .unwrap();
    family.inc(&["GET", "200"]);
    let labelled = per_call_ns(N / 4, |_| {
        black_box(&family).inc(black_box(&["GET", "200"]));
    });
    println!("labelled_inc {labelled:.2} ns");

    let bounds = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let histogram = registry
        .histogram("bench_seconds", "bench", &bounds)
        .unwrap();
    let values: Vec<f64> = (0..64).map(|i| i as f64 * 0.37).collect();
    let observe = per_call_ns(N / 2, |i| {
        black_box(&histogram).observe(values[(i & 63) as usize]);
    });
    println!("histogram_observe {observe:.2} ns");

    // What a run's end pays for its exemplar: the labels made and escaped,
    // and the family's exemplar lock.
    let linked = registry
        .histogram_family("bench_linked_seconds", "bench", &[], &bounds)
        .unwrap();
    let trace = [
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("run_id", "run-000042"),
    ];
    let with_exemplar = per_call_ns(N / 20, |i| {
        let v = values[(i & 63) as usize];
        black_box(&linked).observe_with_exemplar(&[], v, black_box(&trace), i as f64);
    });
    println!("histogram_observe_with_exemplar {with_exemplar:.2} ns");

    let render_registry = Registry::new();
    let wide = render_registry
        .counter_family("bench_wide_total", "A 10,000-series family.", &["id"])
        .unwrap();
    for i in 0..10_000u64 {
        wide.inc_by(&[&format!("series-{i:05}")], i);
    }
    let mut out = Vec::new();
    let render = per_call_ns(200, |_| {
        out.clear();
        render_registry.render(&mut out, Format::Text);
        black_box(&out);
    });
    println!("render_10k {:.1} us", render / 1000.0);
    println!("render_10k_bytes {} bytes", out.len());
}
