//! Live progress events: every acknowledged change (runs, their events, messages, budget alerts)
//! numbered once and handed to subscribers (SSE and WebSocket). Numbering and delivery share one
//! lock, so seq order is publish order; publishers call the hub once a change is durable, before
//! answering; publishing never waits: a subscriber whose queue is full is cut off with a `lagged`
//! notice. The events' JSON is in docs/api-reference.md.

pub(crate) mod agentgate;
mod hub;
mod publish;
mod seq;

pub(crate) use hub::{Closer, Published, Subscription, RETAINED};
pub use hub::{Filter, Hub, NewEvent, Next, Start, Transport, QUEUE_CAPACITY};
pub(crate) use publish::PreparedEvents;
