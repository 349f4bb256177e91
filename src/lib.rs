//! conductor-metrics: a small server that makes AI-agent orchestration
//! observable, and the std-only metrics registry at its heart.
//!
//! An embedding program uses [`metrics`]; the binary calls [`run`]. The
//! other public modules are those the integration tests drive.
#![deny(missing_docs)]

mod app;
mod batch;
mod budget;
mod bus;
mod cli;
pub mod client;
mod commit_queue;
mod config;
mod crc32c;
mod declared;
mod demo;
mod error;
pub mod events;
#[cfg(test)]
mod failed_writes;
pub mod http;
mod journal;
mod json_text;
mod lock;
pub mod log;
pub mod metrics;
mod ordered;
mod otlp;
mod repair;
mod runs;
mod segments;
mod serve;
#[cfg(test)]
mod streamed;
mod sys;
#[cfg(test)]
mod testing;
pub mod time;
mod ws;

pub use cli::run;

/// The examples in `docs/metrics-library.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/metrics-library.md")]
pub struct MetricsLibraryDoctests;

/// The examples in `docs/instrumenting.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/instrumenting.md")]
pub struct InstrumentingDoctests;
