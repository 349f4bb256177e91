//! The HTTP layer: it translates between tiny_http and the domain, and
//! owns every HTTP concern (routing, statuses, headers, auth, request ids,
//! counting and logging of requests). Domain modules never see it.

pub mod exchange;
pub mod front;
pub mod json;
pub mod response;
pub mod routes;
pub mod server;
pub mod streams;

pub use server::Server;
