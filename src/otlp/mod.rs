//! OpenTelemetry trace export: `runs::trace` turns a finished run into
//! spans, `encode_request` writes the OTLP/HTTP JSON body, and [`Exporter`]
//! queues, batches and posts it from a background thread, never blocking
//! the caller. Only plain `http://` endpoints: there is no TLS in std, so a
//! local collector (or a TLS-terminating proxy) sits next to the server.

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
