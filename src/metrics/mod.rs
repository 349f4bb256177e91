//! The metrics core (std only): counters, gauges, histograms, labelled families, a registry, and
//! Prometheus text and OpenMetrics encoders; see `docs/metrics-library.md`.

mod ceiling;
mod counter;
mod encode;
mod error;
mod exemplar;
mod family;
mod format;
mod gauge;
mod histogram;
mod labelled;
mod name;
mod process;
#[cfg(target_os = "linux")]
mod process_linux;
mod registry;
mod timer;

pub use ceiling::ByteCeiling;
pub use counter::Counter;
pub use encode::{Format, Kind, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
pub use error::{Error, Result};
pub use exemplar::Exemplar;
pub use family::OVERFLOW_VALUE;
pub use gauge::Gauge;
pub(crate) use histogram::saturating_sum;
pub use histogram::Histogram;
pub use labelled::{CounterFamily, GaugeFamily, HistogramFamily, Labelled};
pub use name::{valid_label_name, valid_metric_name};
pub use process::ProcessCollector;
pub use registry::{Collector, Desc, Registry, RegistryOptions, RENDER_PIECE};
pub use timer::Timer;

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if poisoned: no change under these locks can be left half made by a panic (each
/// says why), so the state it guards is sound.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
