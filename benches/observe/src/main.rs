//! Times `Histogram::observe` in conductor-metrics and in prometheus-client,
//! on histograms with the same buckets fed the same values, and prints one
//! `<name> <value> <unit>` line per figure. Each figure is the median of
//! several rounds, the two libraries taking turns within each round, so
//! that a busy machine slows both alike.

use std::hint::black_box;
use std::sync::Barrier;

use conductor_metrics::metrics::Histogram as Ours;
use prometheus_client::metrics::histogram::Histogram as Theirs;

/// client_golang's default buckets and a 30 s one, as `benches/metrics.rs`.
const BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const ROUNDS: usize = 31;
const CALLS: usize = 1_000_000;
const THREADS: usize = 2;

/// Observes `values` in turn, `calls` times, on `threads` threads at
/// once, and returns the CPU nanoseconds per call on one thread, their
/// mean. CPU time, not wall time, so that the time this machine's other
/// work takes the processor away is not counted.
fn time(threads: usize, calls: usize, values: &[f64; 64], observe: impl Fn(f64) + Sync) -> f64 {
    let start = Barrier::new(threads);
    let spent: Vec<f64> = std::thread::scope(|scope| {
        let one = || {
            start.wait();
            let began = thread_cpu_ns();
            for i in 0..calls {
                // A mask, not `%`: a division would cost more than `observe`.
                observe(black_box(values[i & 63]));
            }
            (thread_cpu_ns() - began) as f64
        };
        let all: Vec<_> = (0..threads).map(|_| scope.spawn(one)).collect();
        all.into_iter().map(|t| t.join().unwrap()).collect()
    });
    spent.iter().sum::<f64>() / threads as f64 / calls as f64
}

/// The CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn median(mut rounds: Vec<f64>) -> f64 {
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() {
    // Spread over every bucket and past the last, so that a bucket search
    // that stops early is neither favoured nor punished; then one value in
    // the first bucket, the best case for such a search.
    let spread: [f64; 64] = std::array::from_fn(|i| i as f64 * 0.37);
    let first = [0.003; 64];
    let ours = Ours::new(&BOUNDS).expect("the bounds are increasing");
    let theirs = Theirs::new(BOUNDS);
    let cases: [(&str, usize, usize, &[f64; 64]); 3] = [
        ("observe", 1, CALLS, &spread),
        ("observe_one_value", 1, CALLS, &first),
        ("observe_contended", THREADS, CALLS / 4, &spread),
    ];
    for (name, threads, calls, values) in cases {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(time(threads, calls, values, |v| {
                black_box(&ours).observe(v)
            }));
            b.push(time(threads, calls, values, |v| {
                black_box(&theirs).observe(v)
            }));
        }
        let (a, b) = (median(a), median(b));
        println!("{name}_ns_ours {a:.2} ns");
        println!("{name}_ns_prometheus_client {b:.2} ns");
        println!("{name}_ratio {:.2} x", a / b);
    }
}
