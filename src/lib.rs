//! conductor-metrics: a small server that makes AI-agent orchestration
//! observable, and the std-only metrics registry at its heart.
#![deny(missing_docs)]

pub mod app;
mod batch;
pub mod budget;
mod bus;
pub mod cli;
pub mod client;
mod commit_queue;
pub mod config;
mod crc32c;
pub mod declared;
pub mod demo;
pub mod error;
pub mod events;
#[cfg(test)]
mod failed_writes;
pub mod http;
mod journal;
mod json_text;
pub mod lock;
pub mod log;
pub mod metrics;
mod otlp;
mod repair;
mod runs;
mod segments;
#[cfg(test)]
mod streamed;
pub mod sys;
#[cfg(test)]
mod testing;
pub mod time;
pub mod ws;

/// The examples in `docs/metrics-library.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/metrics-library.md")]
pub struct MetricsLibraryDoctests;

/// The examples in `docs/instrumenting.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/instrumenting.md")]
pub struct InstrumentingDoctests;
