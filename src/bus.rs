//! The message bus: an ordered, durable log of typed messages that agents and orchestrators
//! append to and read after a given message id. Journalled in segments (`DATA_DIR/messages/`);
//! the newest are kept, in memory and on disk alike ([`MessageRetention`]).
//! `conductor_messagebus_appends_total` counts every append ever acknowledged, from the segment
//! headers, not from what is kept.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::commit_queue::CommitQueue;
use crate::error::Error;
use crate::metrics::Counter;
use crate::segments::{self, Segments};
use crate::time;

/// The largest message body, in bytes of its JSON encoding.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The deepest nesting of arrays and objects a message body may have: a listing wraps each
/// body two levels deeper, and serde_json reads no more than 128, so a deeper body could be
/// appended and never read back.
pub const MAX_BODY_DEPTH: usize = 64;

/// The most messages a read returns, and how many by default.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// How many of the newest messages, and bytes of them as journalled, the bus keeps for reads and
/// on disk; 0: no bound of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRetention {
    pub messages: u64,
    pub bytes: u64,
}

impl Default for MessageRetention {
    fn default() -> MessageRetention {
        MessageRetention {
            messages: 100_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

impl MessageRetention {
    /// Eight segments' worth, so that at most an eighth more than kept stays on disk.
    fn segments(self) -> segments::SegmentRetention {
        let eighth = |n: u64, fallback: u64| if n == 0 { fallback } else { (n / 8).max(1) };
        segments::SegmentRetention {
            records: self.messages,
            bytes: self.bytes,
            segment_records: eighth(self.messages, 16_384),
            segment_bytes: eighth(self.bytes, 8 * 1024 * 1024),
        }
    }

    fn keeps(self, messages: usize, bytes: u64) -> bool {
        (self.messages == 0 || messages as u64 <= self.messages)
            && (self.bytes == 0 || bytes <= self.bytes)
    }
}

/// A message on the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `MSG-` and the zero-padded `seq`, increasing in append order.
    pub msg_id: String,
    pub seq: u64,
    pub kind: String,
    /// Compact JSON text: a body costs its length in memory, where a parsed one of many small
    /// values could cost ten times that.
    pub body: Box<str>,
    pub run_id: Option<String>,
    /// Unix seconds when it was appended.
    pub timestamp: f64,
}

impl Message {
    /// Appends the message as a JSON object without building a tree: the body goes in as
    /// kept, which serde_json printed compact with sorted keys, just as it prints the tree.
    pub fn push_json(&self, out: &mut String) {
        use crate::json_text::{push_opt_str, push_str};
        out.push_str("{\"body\":");
        out.push_str(&self.body);
        out.push_str(",\"msg_id\":");
        push_str(out, &self.msg_id);
        out.push_str(",\"run_id\":");
        push_opt_str(out, self.run_id.as_deref());
        out.push_str(",\"timestamp\":\"");
        time::push_rfc3339(out, self.timestamp);
        out.push_str("\",\"type\":");
        push_str(out, &self.kind);
        out.push('}');
    }

    /// The tree [`Message::push_json`] prints, for tests to compare.
    #[cfg(test)]
    pub fn to_json(&self) -> Value {
        let mut text = String::with_capacity(self.body.len() + 128);
        self.push_json(&mut text);
        serde_json::from_str(&text).unwrap()
    }
}

/// Called with each message as it becomes visible, in sequence order, with the bus locked:
/// it must be quick and must not call into the bus.
pub type OnVisible = Box<dyn Fn(&Message) + Send + Sync>;

/// The bus, shared across threads.
pub struct Bus {
    state: Arc<Mutex<State>>,
    queue: CommitQueue,
    appends: Counter,
}

#[derive(Default)]
struct State {
    /// Visible messages (durable, with every earlier one durable too), each with its journalled
    /// size; `bytes` sums those.
    messages: VecDeque<(Message, u64)>,
    bytes: u64,
    retention: MessageRetention,
    /// The last sequence number handed out (durable or not).
    last_seq: u64,
    /// Told of each message as it becomes visible (not on replay).
    on_visible: Option<OnVisible>,
}

fn msg_id(seq: u64) -> String {
    format!("MSG-{seq:012}")
}

fn parse_msg_id(id: &str) -> Option<u64> {
    // `parse` alone would take a sign.
    let digits = id.strip_prefix("MSG-")?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
    digits.parse().ok()
}

impl Bus {
    /// Opens the message journal in `dir/messages/` (moving a legacy `messages.jsonl` in) and
    /// reads what `retention` keeps.
    pub fn open(dir: &Path, appends: Counter, retention: MessageRetention) -> Result<Bus, Error> {
        let legacy = dir.join("messages.jsonl");
        let mut state = State {
            retention,
            ..State::default()
        };
        let (journal, segments) = (dir.join("messages"), retention.segments());
        let segments = Segments::open(&journal, Some(&legacy), segments, None, |record| {
            // Each line's checksum was checked: a record without a seq was
            // written by another version, and skipping it would lose it.
            let Some(message) = read_record(record) else {
                let why = "a record without a seq, which no message lacks";
                return Err(format!(
                    "the message journal in {}: {why}",
                    journal.display()
                ));
            };
            state.last_seq = state.last_seq.max(message.seq);
            state.push(message, record.len() as u64 + 1);
            Ok(())
        })
        .map_err(Error::Storage)?;
        appends.inc_by(segments.appended());
        let queue =
            CommitQueue::start(segments, "bus").map_err(|e| Error::Storage(e.to_string()))?;
        Ok(Bus {
            state: Arc::new(Mutex::new(state)),
            queue,
            appends,
        })
    }

    fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
        // Each update is applied whole under the lock and cannot panic midway.
        state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a message, and returns it once durable, when it also becomes visible.
    pub fn append(
        &self,
        kind: String,
        body: Value,
        run_id: Option<String>,
    ) -> Result<Message, Error> {
        if kind.is_empty() || kind.len() > 128 {
            return Err(Error::invalid("type", "must be 1-128 bytes"));
        }
        if too_deep(&body, MAX_BODY_DEPTH) {
            return Err(Error::invalid(
                "body",
                format!("must not nest arrays and objects more than {MAX_BODY_DEPTH} deep"),
            ));
        }
        // Printed once: for the size check and then inside the record.
        let body_text = body.to_string();
        let size = body_text.len();
        if size > MAX_BODY_BYTES {
            return Err(Error::TooLarge(format!(
                "body is {size} bytes; the limit is {MAX_BODY_BYTES}"
            )));
        }
        let mut state = Self::lock(&self.state);
        state.last_seq += 1;
        let seq = state.last_seq;
        let message = Message {
            msg_id: msg_id(seq),
            seq,
            kind,
            body: body_text.into_boxed_str(),
            run_id,
            timestamp: time::now_unix(),
        };
        let record = record(&message);
        let size = record.len() as u64 + 1;
        let shared = self.state.clone();
        let appends = self.appends.clone();
        // Submitted under the lock, so journal order is sequence order, and
        // messages become visible in it, each once durable.
        let waiting = self.queue.submit_waiting(vec![record], move |o| {
            o.map_err(|e| Error::Storage(e.to_string()))?;
            let mut state = Self::lock(&shared);
            if let Some(f) = &state.on_visible {
                f(&message);
            }
            state.push(message.clone(), size);
            appends.inc();
            Ok(message)
        });
        drop(state);
        waiting
            .wait()
            .unwrap_or_else(|| Err(Error::Storage("the bus's committer failed".into())))
    }

    /// The sequence number a read after `after` reads after, 0 when `None`. An id that is
    /// malformed or beyond the last message is not found.
    pub fn cursor(&self, after: Option<&str>) -> Result<u64, Error> {
        let Some(id) = after else {
            return Ok(0);
        };
        let newest = Self::lock(&self.state)
            .messages
            .back()
            .map_or(0, |m| m.0.seq);
        match parse_msg_id(id) {
            Some(seq) if seq <= newest && seq > 0 => Ok(seq),
            _ => Err(Error::NotFound(format!("message {id} not found"))),
        }
    }

    /// Up to `limit` messages with a sequence number above `from`, oldest first, stopping
    /// early once their bodies reach `max_bytes` (but never before the first). Messages
    /// dropped meanwhile by retention are skipped: the page starts at the oldest one kept.
    pub fn read_after(&self, from: u64, limit: usize, max_bytes: usize) -> Vec<Message> {
        let state = Self::lock(&self.state);
        let start = state.messages.partition_point(|m| m.0.seq <= from);
        let mut bytes = 0;
        state
            .messages
            .iter()
            .skip(start)
            .take(limit.min(MAX_LIMIT))
            .take_while(|m| {
                let fits = bytes < max_bytes;
                bytes += m.0.body.len();
                fits
            })
            .map(|m| m.0.clone())
            .collect()
    }

    /// Sets the function told of each appended message as it becomes visible.
    pub fn on_visible(&self, f: OnVisible) {
        Self::lock(&self.state).on_visible = Some(f);
    }

    /// The number of messages appended and acknowledged, ever.
    pub fn appended(&self) -> u64 {
        self.appends.get() as u64
    }
}

/// The message a journal record holds, or `None` for a record without a seq. The body is
/// kept as the record's text of it, which [`record`] wrote compact: no tree is built.
fn read_record(record: &[u8]) -> Option<Message> {
    use serde_json::value::RawValue;
    let fields: BTreeMap<&str, &RawValue> = serde_json::from_slice(record).ok()?;
    let field = |k: &str| fields.get(k).map(|v| v.get());
    let seq: u64 = serde_json::from_str(field("seq")?).ok()?;
    let text = |k: &str| field(k).and_then(|v| serde_json::from_str::<Option<String>>(v).ok());
    Some(Message {
        msg_id: msg_id(seq),
        seq,
        kind: text("type").flatten().unwrap_or_default(),
        body: field("body").unwrap_or("null").into(),
        run_id: text("run_id").flatten(),
        timestamp: field("ts").and_then(|t| t.parse().ok()).unwrap_or(0.0),
    })
}

/// The journal record of `m`: `{"body","run_id","seq","ts","type"}` as serde_json prints it.
fn record(m: &Message) -> Vec<u8> {
    use crate::json_text::{push_f64, push_opt_str, push_str, push_u64};
    let mut out = String::with_capacity(m.body.len() + 96);
    out.push_str("{\"body\":");
    out.push_str(&m.body);
    out.push_str(",\"run_id\":");
    push_opt_str(&mut out, m.run_id.as_deref());
    out.push_str(",\"seq\":");
    push_u64(&mut out, m.seq);
    out.push_str(",\"ts\":");
    push_f64(&mut out, m.timestamp);
    out.push_str(",\"type\":");
    push_str(&mut out, &m.kind);
    out.push('}');
    out.into_bytes()
}

impl State {
    /// Keeps `m` (`size` journal bytes), letting the oldest past retention go; the newest stays.
    fn push(&mut self, m: Message, size: u64) {
        self.messages.push_back((m, size));
        self.bytes += size;
        while self.messages.len() > 1 && !self.retention.keeps(self.messages.len(), self.bytes) {
            self.bytes -= self.messages.pop_front().map_or(0, |m| m.1);
        }
    }
}

/// Whether `value` nests arrays and objects more than `max` deep. Walks without recursion,
/// since an embedding program may build any depth.
pub(crate) fn too_deep(value: &Value, max: usize) -> bool {
    let mut pending = vec![(value, 0usize)];
    while let Some((v, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth == max {
            return true;
        }
        pending.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nesting_depth_counts_levels_of_arrays_and_objects() {
        let nest = |n: usize| (0..n).fold(json!(1), |v, _| json!([v]));
        assert!(!too_deep(&json!(1), 0));
        assert!(too_deep(&json!([]), 0));
        assert!(!too_deep(&nest(MAX_BODY_DEPTH), MAX_BODY_DEPTH));
        assert!(too_deep(&nest(MAX_BODY_DEPTH + 1), MAX_BODY_DEPTH));
        // Six levels: object, array, object and three arrays.
        let mixed = json!({"a": [1, {"b": nest(3)}]});
        assert!(too_deep(&mixed, 5));
        assert!(!too_deep(&mixed, 6));
    }

    #[test]
    fn the_listing_text_is_what_json_prints() {
        for (body, run_id) in [
            (
                json!({"z": [1, 2.5, -0.0, 1e300], "a": "t\"x\n\u{1}é"}),
                Some("r-\"1"),
            ),
            (json!("hello"), None),
            (json!(null), None),
        ] {
            let m = Message {
                msg_id: msg_id(42),
                seq: 42,
                kind: "no\"te\t".into(),
                body: body.to_string().into_boxed_str(),
                run_id: run_id.map(str::to_string),
                timestamp: 1_795_439_678.123_456,
            };
            let mut text = String::new();
            m.push_json(&mut text);
            let tree = json!({
                "msg_id": m.msg_id,
                "type": m.kind,
                "body": body,
                "run_id": m.run_id,
                "timestamp": time::rfc3339(m.timestamp),
            });
            assert_eq!(text, tree.to_string());
            assert_eq!(m.to_json(), tree);
        }
    }

    #[test]
    fn ids_parse_strictly() {
        assert_eq!(parse_msg_id("MSG-000000000042"), Some(42));
        assert_eq!(parse_msg_id("MSG-"), None);
        assert_eq!(parse_msg_id("MSG-+1"), None);
        assert_eq!(parse_msg_id("msg-1"), None);
        assert_eq!(msg_id(7), "MSG-000000000007");
    }

    #[test]
    fn records_are_the_bytes_json_prints() {
        for (body, run_id) in [
            (json!({"z": [1, 2.5], "a": "t\"x\n"}), Some("r-1")),
            (json!("hello"), None),
        ] {
            let m = Message {
                msg_id: msg_id(42),
                seq: 42,
                kind: "no\"te".into(),
                body: body.to_string().into_boxed_str(),
                run_id: run_id.map(str::to_string),
                timestamp: 1_795_439_678.123_456,
            };
            let old = json!({
                "seq": m.seq, "type": m.kind, "body": body,
                "run_id": m.run_id, "ts": m.timestamp,
            });
            assert_eq!(record(&m), old.to_string().into_bytes());
        }
    }
}
