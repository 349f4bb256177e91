//! Live progress events: every acknowledged change (runs, their events,
//! messages, budget alerts) published once, numbered, kept for resuming,
//! and handed to subscribers (the SSE and WebSocket streams).
//!
//! - **Numbering.** A `seq` is never reused within a data dir (`seq.rs`).
//! - **Order.** Numbering and handing to every subscriber share one lock,
//!   so seq order is publish order and each subscriber sees increasing seqs.
//! - **After the ack.** Publishers call the hub once a change is durable,
//!   before its request is answered, so a client that sees its answer can
//!   count on the event. Runs publish from the HTTP acknowledgement
//!   callbacks; the bus from inside, in message order, since one journal
//!   batch's acknowledgements run in any order.
//! - **Slow subscribers.** Publishing never waits: a subscriber whose queue
//!   of [`QUEUE_CAPACITY`] is full is cut off with a `lagged` notice naming
//!   the last seq it took, to resume from.
//!
//! The events' JSON and types are in docs/api-reference.md.

pub(crate) mod agentgate;
mod hub;
mod publish;
mod seq;

use std::fmt;

pub(crate) use hub::{Closer, Published, Subscription, RETAINED};
pub use hub::{Filter, Hub, NewEvent, Next, Start, Transport, QUEUE_CAPACITY};
pub(crate) use publish::PreparedEvents;

/// Why the hub could not start or keep its sequence file, in words that
/// name the file. Safe to send across threads.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
