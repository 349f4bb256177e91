//! Live progress events: every acknowledged change (runs, their events,
//! messages, budget alerts) published once, numbered, kept for resuming,
//! and handed to subscribers (the SSE and WebSocket streams).
//!
//! - **Numbering.** Each event gets a `seq` that increases and is never
//!   reused within a data dir. The high-water mark lives in `events.seq`,
//!   written a block of `SEQ_RESERVE` numbers ahead and synced, so a
//!   restart continues after the reserved block with one sync per block
//!   rather than one per event.
//! - **Order.** A seq is given and the event handed to every subscriber under
//!   one lock, so seq order is publish order and each subscriber sees
//!   increasing seqs.
//! - **After the ack.** Publishers call the hub once a change is durable and
//!   before its request is answered, so a client that sees its answer can
//!   count on the event being out. Runs publish from the HTTP handlers'
//!   acknowledgement callbacks; the bus publishes from inside, in message
//!   order, because the acknowledgements of one journal batch run in any
//!   order while messages become visible in sequence.
//! - **Slow subscribers.** Each has a queue of [`QUEUE_CAPACITY`] events.
//!   Publishing never waits for a subscriber: one whose queue is full has it
//!   emptied, the lost events counted in `conductor_events_dropped_total`,
//!   and gets a final `lagged` notice naming the last seq it took, so it can
//!   resume from the newest events the hub keeps.
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
