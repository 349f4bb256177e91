//! OpenTelemetry trace export: `runs::trace` turns a finished run into
//! spans, and [`Exporter`] encodes, batches and posts them from a background
//! thread. Only plain `http://`: std has no TLS, so a local collector (or a
//! TLS-terminating proxy) sits next to the server.

mod context;
mod encode;
mod export;
#[cfg(test)]
mod fake_collector;
pub(crate) mod id;
pub(crate) mod span;

pub use context::TraceContext;
pub use export::Exporter;

use std::time::Duration;

const DEFAULT_SERVICE_NAME: &str = "conductor-metrics";
const DEFAULT_QUEUE_CAPACITY: usize = 2048;
const DEFAULT_BATCH_SIZE: usize = 512;
const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for an [`Exporter`], from the standard `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`; spans go to
    /// `<endpoint>/v1/traces`. Only `http://` is supported.
    pub endpoint: String,
    pub service_name: String,
    /// How many spans may wait for export; more are dropped and counted.
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub batch_delay: Duration,
    pub timeout: Duration,
}

impl OtlpConfig {
    /// Reads the settings through `get` (normally `std::env::var(..).ok()`);
    /// `None` when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset or empty: tracing
    /// is off. A batch setting that is not a positive number is ignored.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Option<OtlpConfig> {
        let endpoint = non_empty(get("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        let positive = |name: &str| {
            non_empty(get(name))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
        };
        let queue_capacity =
            positive("OTEL_BSP_MAX_QUEUE_SIZE").map_or(DEFAULT_QUEUE_CAPACITY, saturating_usize);
        let batch_size = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .map_or(DEFAULT_BATCH_SIZE, saturating_usize)
            .min(queue_capacity);
        Some(OtlpConfig {
            endpoint,
            service_name: non_empty(get("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
            queue_capacity,
            batch_size,
            batch_delay: positive("OTEL_BSP_SCHEDULE_DELAY")
                .map_or(DEFAULT_BATCH_DELAY, Duration::from_millis),
            timeout: positive("OTEL_EXPORTER_OTLP_TIMEOUT")
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        })
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Option<OtlpConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpConfig::from_env(&|k| map.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(from(&[]), None);
        assert_eq!(from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), None);
        assert_eq!(from(&[("OTEL_SERVICE_NAME", "x")]), None);
    }

    #[test]
    fn defaults_and_overrides() {
        let c = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(
            c,
            OtlpConfig {
                endpoint: "http://127.0.0.1:4318".into(),
                service_name: "conductor-metrics".into(),
                queue_capacity: 2048,
                batch_size: 512,
                batch_delay: Duration::from_secs(1),
                timeout: Duration::from_secs(5),
            }
        );
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", " http://c:4318 "),
            ("OTEL_SERVICE_NAME", "conductor-a"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "nonsense"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://c:4318");
        assert_eq!(c.service_name, "conductor-a");
        assert_eq!((c.queue_capacity, c.batch_size), (100, 100));
        assert_eq!(c.batch_delay, Duration::from_millis(250));
        assert_eq!(c.timeout, Duration::from_secs(5));
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ])
        .unwrap();
        assert_eq!(c.queue_capacity, 2048);
    }
}
