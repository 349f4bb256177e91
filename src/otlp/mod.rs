//! OpenTelemetry trace export: each agent run becomes one trace, sent to an
//! OTLP/HTTP collector as JSON from a background thread.
//!
//! The pieces are plain data in, plain data out: `runs::trace` turns a
//! finished run into spans, `encode_request` writes the
//! OTLP/HTTP JSON body, and [`Exporter`] queues, batches and posts it
//! without ever blocking the caller. A full queue, a dead collector or a
//! refused batch costs spans, never memory or caller latency; every span
//! lost that way is counted in `conductor_trace_spans_dropped_total`.
//!
//! Only plain `http://` endpoints are supported: there is no TLS in std.
//! Put a local collector (or a TLS-terminating proxy) next to the server
//! when traces must leave the machine.

mod config;
mod context;
mod encode;
mod export;
#[cfg(test)]
mod fake_collector;
pub(crate) mod id;
pub(crate) mod span;
mod transport;

pub use config::OtlpConfig;
pub use context::TraceContext;
pub use export::Exporter;
