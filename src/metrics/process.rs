//! Process metrics with client_golang's names and meanings.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::encode::Kind;
use super::registry::{Collector, Desc};

/// A collector of the standard `process_*` metrics, read from `/proc/self`.
/// On other systems it describes nothing. Safe to share across threads.
///
/// Reading `/proc` costs more than rendering everything else (counting the
/// entries of `/proc/self/fd` alone is a quarter of a scrape with a few
/// dozen connections open), so a reading is reused for scrapes within
/// `max_age` of it. Prometheus scrapes every few seconds at most, so the
/// default of one second never shows it a stale value, while a burst of
/// scrapes stays cheap.
#[derive(Debug)]
pub struct ProcessCollector {
    max_age: Duration,
    last: Mutex<Option<(Instant, Vec<f64>)>>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::with_max_age(Duration::from_secs(1))
    }
}

impl ProcessCollector {
    /// Creates the collector with readings reused for up to one second.
    pub fn new() -> ProcessCollector {
        ProcessCollector::default()
    }

    /// Creates the collector with readings reused for up to `max_age`
    /// (zero reads `/proc` at every scrape).
    pub fn with_max_age(max_age: Duration) -> ProcessCollector {
        ProcessCollector {
            max_age,
            last: Mutex::new(None),
        }
    }
}

/// The metrics' names, in the order `process_linux::read` gives their
/// values; the first is a counter and the rest gauges.
const NAMES: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
    "process_virtual_memory_bytes",
];

const HELPS: [&str; 7] = [
    "Total user and system CPU time spent in seconds.",
    "Maximum number of open file descriptors.",
    "Number of open file descriptors.",
    "Resident memory size in bytes.",
    "Start time of the process since unix epoch in seconds.",
    "Number of OS threads in the process.",
    "Virtual memory size in bytes.",
];

impl Collector for ProcessCollector {
    fn describe(&self) -> Vec<Desc> {
        if !cfg!(target_os = "linux") {
            return Vec::new();
        }
        let desc = |(i, (name, help)): (usize, (&str, &str))| Desc {
            name: name.to_string(),
            help: help.to_string(),
            kind: if i == 0 { Kind::Counter } else { Kind::Gauge },
        };
        NAMES.into_iter().zip(HELPS).enumerate().map(desc).collect()
    }

    fn collect(&self) -> Vec<f64> {
        // The cache holds plain values; a panic elsewhere cannot corrupt it.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, values)) = last.as_ref() {
            if at.elapsed() < self.max_age {
                return values.clone();
            }
        }
        #[cfg(target_os = "linux")]
        let values = super::process_linux::read().to_vec();
        #[cfg(not(target_os = "linux"))]
        let values = Vec::new();
        *last = Some((Instant::now(), values.clone()));
        values
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn values_are_plausible() {
        let c = ProcessCollector::with_max_age(Duration::ZERO);
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
