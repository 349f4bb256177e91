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
use std::path::PathBuf;

pub(crate) use hub::{Closer, Published, Subscription, RETAINED};
pub use hub::{Filter, Hub, NewEvent, Next, Start, Transport, QUEUE_CAPACITY};
pub(crate) use publish::PreparedEvents;

/// Why the hub could not start or keep its sequence file. Safe to send
/// across threads.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: PathBuf,
}

#[derive(Debug)]
enum ErrorKind {
    Read(std::io::Error),
    Parse(String),
    Exhausted(u64),
    Write(std::io::Error),
    Metrics(crate::metrics::Error),
}

impl Error {
    fn new(path: PathBuf, kind: ErrorKind) -> Error {
        Error { kind, path }
    }

    fn metrics(e: crate::metrics::Error) -> Error {
        Error::new(PathBuf::new(), ErrorKind::Metrics(e))
    }

    /// Whether the sequence file exists but does not hold a sequence number,
    /// in which case the hub refuses to start rather than risk reusing one.
    #[cfg(test)]
    fn is_corrupt(&self) -> bool {
        matches!(self.kind, ErrorKind::Parse(_) | ErrorKind::Exhausted(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            ErrorKind::Read(e) => write!(f, "cannot read event sequence file {path}: {e}"),
            ErrorKind::Parse(text) => write!(
                f,
                "event sequence file {path} holds {text:?}, not a sequence number"
            ),
            ErrorKind::Exhausted(first) => write!(
                f,
                "event sequence file {path} holds {first}, too near the largest sequence number \
                 ({}) to reserve another block; refusing to start rather than wrap",
                u64::MAX
            ),
            ErrorKind::Write(e) => write!(f, "cannot write event sequence file {path}: {e}"),
            ErrorKind::Metrics(e) => write!(f, "event metric registration failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Read(e) | ErrorKind::Write(e) => Some(e),
            ErrorKind::Metrics(e) => Some(e),
            ErrorKind::Parse(_) | ErrorKind::Exhausted(_) => None,
        }
    }
}
