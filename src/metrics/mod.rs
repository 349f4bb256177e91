//! The metrics core: counters, gauges, histograms, labelled families, a
//! registry and hand-written Prometheus text and OpenMetrics encoders.
//!
//! It uses the standard library only. Handles are cheap to clone and safe
//! to share across threads; their hot paths (`inc`, `add`, `observe`)
//! return nothing and cannot fail, because names and labels are checked
//! once, at registration. A family's series may carry exemplars, shown on
//! OpenMetrics scrapes. See `docs/metrics-library.md` for a tour.

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
pub use error::Error;
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
