//! Process metrics with client_golang's names and meanings.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::encode::Kind;
use super::lock;
use super::registry::{Collector, Desc};

/// A collector of the standard `process_*` metrics from `/proc/self` (elsewhere, none). Reading
/// `/proc` costs more than rendering the rest (`/proc/self/fd` alone is a quarter of a scrape with
/// a few dozen connections), so a reading serves scrapes for a second (`MAX_AGE`); thread-safe.
#[derive(Debug, Default)]
pub struct ProcessCollector {
    last: Mutex<Option<(Instant, Vec<f64>)>>,
}

/// How long a reading of `/proc` is reused.
const MAX_AGE: Duration = Duration::from_secs(1);

impl ProcessCollector {
    /// Creates the collector.
    pub fn new() -> ProcessCollector {
        ProcessCollector::default()
    }
}

/// Each metric's name and HELP, in `process_linux::read`'s order; the first a counter, then gauges.
const METRICS: [&str; 7] = [
    "process_cpu_seconds_total Total user and system CPU time spent in seconds.",
    "process_max_fds Maximum number of open file descriptors.",
    "process_open_fds Number of open file descriptors.",
    "process_resident_memory_bytes Resident memory size in bytes.",
    "process_start_time_seconds Start time of the process since unix epoch in seconds.",
    "process_threads Number of OS threads in the process.",
    "process_virtual_memory_bytes Virtual memory size in bytes.",
];

impl Collector for ProcessCollector {
    fn describe(&self) -> Vec<Desc> {
        if !cfg!(target_os = "linux") {
            return Vec::new();
        }
        let desc = |(i, line): (usize, &&str)| {
            let (name, help) = line.split_once(' ').unwrap_or((line, ""));
            let kind = if i == 0 { Kind::Counter } else { Kind::Gauge };
            let (name, help) = (name.to_string(), help.to_string());
            Desc { name, help, kind }
        };
        METRICS.iter().enumerate().map(desc).collect()
    }

    fn collect(&self) -> Vec<f64> {
        // The cache holds plain values; a panic elsewhere cannot corrupt it.
        let mut last = lock(&self.last);
        if let Some((_, values)) = last.as_ref().filter(|(at, _)| at.elapsed() < MAX_AGE) {
            return values.clone();
        }
        #[cfg(target_os = "linux")]
        let values = super::process_linux::read().to_vec();
        #[cfg(not(target_os = "linux"))]
        let values = Vec::new();
        *last = Some((Instant::now(), values.clone()));
        values
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    #[test]
    fn values_are_plausible() {
        let c = ProcessCollector::new();
        let d = c.describe();
        let cpu = d.iter().position(|d| d.name == "process_cpu_seconds_total");
        // Run alone, the test may not have used one clock tick yet: work
        // until it has, so that the figure must have moved.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut spun = 0u64;
        let v = loop {
            let v = c.collect();
            if v[cpu.unwrap()] > 0.0 || std::time::Instant::now() > deadline {
                break v;
            }
            for i in 0..1_000_000u64 {
                spun = std::hint::black_box(spun.wrapping_add(i));
            }
        };
        assert_eq!(d.len(), v.len());
        let get = |n: &str| v[d.iter().position(|d| d.name == n).unwrap()];
        assert!(
            get("process_cpu_seconds_total") > 0.0,
            "the process has used CPU"
        );
        assert!(get("process_max_fds") >= get("process_open_fds"));
        assert!(get("process_open_fds") >= 3.0);
        assert!(get("process_resident_memory_bytes") > 100_000.0);
        assert!(get("process_virtual_memory_bytes") >= get("process_resident_memory_bytes"));
        assert!(get("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = get("process_start_time_seconds");
        assert!(
            start > now - 86_400.0 * 30.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }
}
