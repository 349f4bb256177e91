//! conductor-metrics: a small server that makes AI-agent orchestration
//! observable, and the std-only metrics registry at its heart.
#![deny(missing_docs)]

pub mod journal;
pub mod metrics;
pub mod sys;
pub mod ws;
