//! Process metrics with client_golang's names and meanings.

use super::encode::Kind;
use super::registry::{Collector, Desc};

/// A collector of the standard `process_*` metrics, read from `/proc/self`
/// at each scrape. On other systems it describes nothing. Safe to share
/// across threads.
#[derive(Debug, Default)]
pub struct ProcessCollector {
    _private: (),
}

impl ProcessCollector {
    /// Creates the collector.
    pub fn new() -> ProcessCollector {
        ProcessCollector::default()
    }
}

const METRICS: [(&str, &str, Kind); 7] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        Kind::Counter,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        Kind::Gauge,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        Kind::Gauge,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        Kind::Gauge,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        Kind::Gauge,
    ),
    (
        "process_threads",
        "Number of OS threads in the process.",
        Kind::Gauge,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        Kind::Gauge,
    ),
];

impl Collector for ProcessCollector {
    fn describe(&self) -> Vec<Desc> {
        if !cfg!(target_os = "linux") {
            return Vec::new();
        }
        METRICS
            .iter()
            .map(|(name, help, kind)| Desc {
                name: name.to_string(),
                help: help.to_string(),
                kind: *kind,
            })
            .collect()
    }

    fn collect(&self) -> Vec<f64> {
        #[cfg(target_os = "linux")]
        {
            let s = super::process_linux::sample();
            vec![
                s.cpu_seconds,
                s.max_fds,
                s.open_fds,
                s.resident_bytes,
                s.start_time_seconds,
                s.threads,
                s.virtual_bytes,
            ]
        }
        #[cfg(not(target_os = "linux"))]
        Vec::new()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn values_are_plausible() {
        let c = ProcessCollector::new();
        let d = c.describe();
        let v = c.collect();
        assert_eq!(d.len(), v.len());
        let get = |n: &str| v[d.iter().position(|d| d.name == n).unwrap()];
        assert!(get("process_cpu_seconds_total") >= 0.0);
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
