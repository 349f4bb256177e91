//! The request a handler gets and the answer it returns.

use std::net::TcpStream;

use super::body::BodyWriter;
pub use super::wire::Reply;

/// A request as a handler gets it: its head checked, and its body read
/// whole (before [`super::Handler::admits`], not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method token, exactly as the client sent it.
    pub method: String,
    /// The request target: the path and any query, as sent.
    pub target: String,
    /// The client's end-to-end header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body; empty when there is none.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first field named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What runs a stream on the client's socket, given the bytes the client
/// sent after its request, which are the stream's first.
pub type Takeover = Box<dyn FnOnce(TcpStream, Vec<u8>)>;

/// What makes a streamed answer's body, writing it to the [`BodyWriter`]
/// as the connection sends it.
pub type Producer = Box<dyn FnOnce(&mut BodyWriter<'_>)>;

/// A handler's answer, which its connection's thread writes.
pub enum Answer {
    /// A whole answer.
    Reply(Reply),
    /// 200 with these headers and a body the producer makes while the
    /// connection sends it, in pieces.
    Stream(Vec<(&'static str, String)>, Producer),
    /// This status and headers, no framed body; then the socket goes to the
    /// takeover, which holds the connection's place under the cap until it returns.
    TakeOver(u16, Vec<(&'static str, String)>, Takeover),
}
