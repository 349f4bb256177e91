//! OpenTelemetry trace export: `runs::trace` turns a finished run into
//! spans, and [`Exporter`] encodes, batches and posts them from a background
//! thread. Only plain `http://`: std has no TLS, so a local collector (or a
//! TLS-terminating proxy) sits next to the server.

mod config;
mod context;
mod encode;
mod export;
#[cfg(test)]
mod fake_collector;
pub(crate) mod id;
pub(crate) mod span;

pub use config::OtlpConfig;
pub use context::TraceContext;
pub use export::Exporter;
