//! Reading the process metrics from `/proc` on Linux.

use std::fs;
use std::sync::OnceLock;

use crate::sys;

/// Reads `/proc/self/{stat,fd,limits}`: the values of `process::METRICS`,
/// in order, NaN where a file could not be read.
pub(crate) fn read() -> [f64; 7] {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields counted from 1; the command name (field 2) may hold spaces
    // and parentheses, so counting starts after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let ticks = sys::clock_ticks_per_second();
    let open_fds = fs::read_dir("/proc/self/fd").map_or(f64::NAN, |d| d.count() as f64);
    [
        (field(14) + field(15)) / ticks,
        max_fds(),
        open_fds,
        field(24) * sys::page_size(),
        *START.get_or_init(|| boot_time() + field(22) / ticks),
        field(20),
        field(23),
    ]
}

/// The start time never changes, and reading it needs `/proc/stat`.
static START: OnceLock<f64> = OnceLock::new();

fn boot_time() -> f64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn max_fds() -> f64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next());
    match soft {
        Some("unlimited") => f64::INFINITY,
        soft => soft.and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
    }
}
