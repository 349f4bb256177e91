//! The request a handler gets, and the duty to answer it.
//!
//! Every answer is written by its connection's own thread, and no other
//! thread writes to a socket. One that comes after the handler returned,
//! from the thread that made a write durable, is waited for: the connection
//! thread sleeps on the answer's slot until it is sent (or dropped unsent,
//! which closes the connection).

use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::body::BodyWriter;
use super::conns::Activity;
pub use super::wire::Reply;
pub(super) use super::wire::{encode, head, reason, status_label, Delivery, Framing};

/// A request as a handler gets it: its head checked, and its body read
/// whole and within the limit (or, before [`super::Handler::admits`], not
/// yet). Framing and connection fields are left out.
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
pub type Takeover = Box<dyn FnOnce(TcpStream, Vec<u8>) + Send>;

/// What makes a streamed answer's body, writing it to the [`BodyWriter`]
/// as it goes, in the connection's thread.
pub type Producer = Box<dyn FnOnce(&mut BodyWriter<'_>) + Send>;

/// The duty to answer one request. Safe to send to another thread;
/// [`Answer::send`] takes it, so it answers at most once.
pub struct Answer {
    slot: Option<Arc<Slot>>,
}

/// Where an answer meets its connection thread.
pub(crate) struct Slot {
    state: Mutex<Handoff>,
    changed: Condvar,
    delivery: Delivery,
    /// Marked idle, and given its place in the idle order, when the answer
    /// is sent.
    activity: Arc<Activity>,
}

/// Where an answer stands; once the handler has returned, what its
/// connection thread does.
pub(super) enum Handoff {
    /// Not answered yet; the connection thread waits for the answer.
    Waiting,
    /// Answered; the connection thread writes these bytes.
    Ready(Vec<u8>),
    /// Taken over by a stream: the connection thread writes the head, then
    /// runs the stream.
    Stream(Vec<u8>, Takeover),
    /// Answered 200 with these headers and a body the connection thread
    /// writes as the producer makes it.
    Body(Vec<(&'static str, String)>, Producer),
    /// No answer: the connection must close.
    Failed,
}

impl Answer {
    pub(super) fn new(delivery: Delivery, activity: Arc<Activity>) -> (Answer, Arc<Slot>) {
        let slot = Arc::new(Slot {
            state: Mutex::new(Handoff::Waiting),
            changed: Condvar::new(),
            delivery,
            activity,
        });
        let answer = Answer {
            slot: Some(slot.clone()),
        };
        (answer, slot)
    }

    /// Sends `response`.
    pub fn send(mut self, response: Reply) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let d = slot.delivery;
        let bytes = encode(&response, d.head_only, d.close, d.keep_alive_10);
        slot.activity.answered();
        *slot.lock() = Handoff::Ready(bytes);
        slot.changed.notify_all();
    }

    /// Answers with `status` and `headers` and no framed body, then hands
    /// the client's socket to `run` in the connection's thread, which keeps
    /// its place under the connection cap until `run` returns. It must be
    /// called before the handler returns; later, the connection closes.
    pub fn take_over(mut self, status: u16, headers: &[(&'static str, String)], run: Takeover) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut bytes = Vec::with_capacity(256);
        head(&mut bytes, status, headers, Framing::None, false, false);
        let head = bytes;
        let mut state = slot.lock();
        if let Handoff::Waiting = *state {
            *state = Handoff::Stream(head, run);
        }
        slot.changed.notify_all();
    }

    /// Answers 200 with `headers` and a body that `write` makes while the
    /// connection thread sends it, in pieces. Like [`Answer::take_over`],
    /// it must be called before the handler returns.
    pub fn stream(mut self, headers: Vec<(&'static str, String)>, write: Producer) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        slot.activity.answered();
        let mut state = slot.lock();
        if let Handoff::Waiting = *state {
            *state = Handoff::Body(headers, write);
        }
        slot.changed.notify_all();
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        // Unsent: the connection thread, waiting for it, closes.
        *slot.lock() = Handoff::Failed;
        slot.changed.notify_all();
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Handoff> {
        // Every section under this lock only moves values, so a panic
        // elsewhere cannot leave it half updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the connection thread does once the handler has returned:
    /// waits until the answer is sent, then takes it. Never `Waiting`.
    pub(super) fn handoff(&self) -> Handoff {
        let mut state = self.lock();
        loop {
            match std::mem::replace(&mut *state, Handoff::Failed) {
                Handoff::Waiting => {
                    *state = Handoff::Waiting;
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                taken => return taken,
            }
        }
    }

    pub(super) fn delivery(&self) -> Delivery {
        self.delivery
    }
}

#[cfg(test)]
impl Answer {
    /// An answer for a keep-alive HTTP/1.1 request and its slot, for tests
    /// elsewhere in the crate; [`Slot::answered`] shows what was sent.
    pub(crate) fn for_test() -> (Answer, Arc<Slot>) {
        let activity = Arc::new(Activity::new());
        let delivery = Delivery {
            head_only: false,
            close: false,
            keep_alive_10: false,
            http10: false,
            write_timeout: std::time::Duration::from_secs(10),
        };
        Answer::new(delivery, activity)
    }
}

#[cfg(test)]
impl Slot {
    /// The answer, as the client would read it, if one was sent.
    pub(crate) fn answered(&self) -> Option<String> {
        match &*self.lock() {
            Handoff::Ready(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{encode, Answer, Handoff, Reply};

    fn body(n: usize) -> Reply {
        Reply {
            status: 201,
            headers: Vec::new(),
            body: vec![b'x'; n],
        }
    }

    #[test]
    fn an_answer_sent_before_the_handler_returns_is_written_by_the_connection() {
        let (answer, slot) = Answer::for_test();
        answer.send(body(2));
        let Handoff::Ready(bytes) = slot.handoff() else {
            panic!("not ready");
        };
        assert!(bytes.ends_with(b"Content-Length: 2\r\n\r\nxx"));
    }

    #[test]
    fn a_late_answer_is_waited_for_and_one_dropped_unsent_fails() {
        let (answer, slot) = Answer::for_test();
        let sender = std::thread::spawn(move || answer.send(body(3)));
        let Handoff::Ready(bytes) = slot.handoff() else {
            panic!("not ready");
        };
        assert!(bytes.ends_with(b"Content-Length: 3\r\n\r\nxxx"));
        sender.join().unwrap();
        let (answer, slot) = Answer::for_test();
        std::thread::spawn(move || drop(answer));
        assert!(matches!(slot.handoff(), Handoff::Failed));
    }

    fn response(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", "text/plain".to_string()),
                ("X-Bad", "a\r\nSet-Cookie: x".to_string()),
                ("X-Request-ID", "r1".to_string()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_are_framed_by_length() {
        let out = encode(&response(200, "hello"), false, false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        let out = encode(&response(404, "missing"), true, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http10_keep_alive_is_announced_and_odd_statuses_have_no_phrase() {
        let out = encode(&response(299, ""), false, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 299 \r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn bodiless_statuses_carry_no_length_or_body() {
        let out = encode(&response(204, "ignored"), false, false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("X-Request-ID: r1\r\n\r\n"));
    }
}
