//! The hub: numbers each event, keeps the newest, and fills one bounded queue per subscriber.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::agentgate;
use super::seq::{SeqFile, SEQ_RESERVE};
use crate::error::Error;
use crate::json_text::{push_key, push_str, push_u64, push_value};
use crate::log::Logger;
use crate::metrics::{lock, Counter, CounterFamily, GaugeFamily, Registry};
use crate::time;

/// How many of the newest events the hub keeps for subscribers that resume.
pub const RETAINED: usize = 10_000;

/// Their bytes at most: an event carries what its client sent, so a count alone would not bound it.
pub(crate) const RETAINED_BYTES: usize = 8 * 1024 * 1024;

/// How many events may wait for one subscriber before it is cut off as lagged.
pub const QUEUE_CAPACITY: usize = 1024;

/// The keys every event starts with; an event's own fields cannot override them.
const ENVELOPE: [&str; 7] = [
    "seq",
    "received_at",
    "type",
    "timestamp",
    "run_id",
    "correlation_id",
    "work_order_id",
];

/// An event about to be published. Plain data; safe to send across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    kind: &'static str,
    at: f64,
    run_id: Option<Arc<str>>,
    /// The envelope's run ids, rendered.
    ids: String,
    fields: Map<String, Value>,
    /// Rendered fields whose JSON text goes out as it is, after the others.
    raw: String,
}

impl NewEvent {
    /// An event of type `kind` that happened at `at` (Unix seconds).
    pub fn new(kind: &'static str, at: f64) -> NewEvent {
        NewEvent {
            kind,
            at,
            run_id: None,
            ids: String::new(),
            fields: Map::new(),
            raw: String::new(),
        }
    }

    /// Ties the event to a run; `correlation_id` defaults to the run id.
    pub fn run(
        mut self,
        run_id: &str,
        correlation_id: Option<&str>,
        work_order_id: Option<&str>,
    ) -> NewEvent {
        self.ids.clear();
        push_ids(&mut self.ids, run_id, correlation_id, work_order_id);
        self.run_id = Some(run_id.into());
        self
    }

    /// Adds one of the event's own fields; envelope names are ignored.
    pub fn field(mut self, key: &str, value: Value) -> NewEvent {
        if !ENVELOPE.contains(&key) {
            self.fields.insert(key.to_string(), value);
        }
        self
    }

    /// Adds a field as JSON text that goes out byte for byte (a client's text, which a `Value`
    /// would reorder), after the others: one JSON value on one line, under a key of ours.
    pub(crate) fn raw_field(mut self, key: &'static str, json: &str) -> NewEvent {
        debug_assert!(!ENVELOPE.contains(&key), "{key} is an envelope name");
        self.raw.push(',');
        push_key(&mut self.raw, key);
        self.raw.push_str(json);
        self
    }

    /// The event rendered up to its seq, so the lock is held only to number it.
    fn render(self) -> Rendered {
        let extra = self.raw.len() + 128;
        let mut tail = push_head(self.kind, &time::rfc3339(self.at), &self.ids, extra);
        for (key, value) in &self.fields {
            tail.push(',');
            push_str(&mut tail, key);
            tail.push(':');
            push_value(&mut tail, value);
        }
        tail.push_str(&self.raw);
        tail.push('}');
        Rendered {
            kind: self.kind,
            run_id: self.run_id,
            tail,
        }
    }
}

/// Appends the envelope's run ids; `correlation_id` defaults to the run id.
pub(super) fn push_ids(
    out: &mut String,
    run_id: &str,
    correlation_id: Option<&str>,
    work_order_id: Option<&str>,
) {
    let ids = [
        ("run_id", Some(run_id)),
        ("correlation_id", Some(correlation_id.unwrap_or(run_id))),
        ("work_order_id", work_order_id),
    ];
    for (key, value) in ids {
        if let Some(v) = value {
            out.push(',');
            push_key(out, key);
            push_str(out, v);
        }
    }
}

/// An event's JSON after `{"seq":N,` up to its own fields, with room for `extra` more bytes.
pub(super) fn push_head(kind: &str, timestamp: &str, ids: &str, extra: usize) -> String {
    let mut tail = String::with_capacity(ids.len() + timestamp.len() + extra);
    tail.push_str("\"type\":");
    push_str(&mut tail, kind);
    tail.push_str(",\"timestamp\":\"");
    tail.push_str(timestamp);
    tail.push('"');
    tail.push_str(ids);
    tail
}

/// An event rendered outside the hub's lock, not numbered yet.
pub(super) struct Rendered {
    pub(super) kind: &'static str,
    pub(super) run_id: Option<Arc<str>>,
    /// The JSON after `{"seq":N,`, closing brace included.
    pub(super) tail: String,
}

/// A published event: numbered and rendered once, shared by every subscriber.
#[derive(Debug, PartialEq)]
pub struct Published {
    pub seq: u64,
    pub kind: &'static str,
    pub run_id: Option<Arc<str>>,
    pub json: String,
    rendered: OnceLock<Box<str>>,
    agentgate: OnceLock<Option<Box<str>>>,
}

impl Published {
    /// Its bytes in the ring: its JSON twice (once rendered), thrice with an AgentGate frame, +128.
    fn bytes(&self) -> usize {
        // Lengths first, inline: a `str` comparison is a call.
        let frame =
            (agentgate::KINDS.iter()).any(|k| k.len() == self.kind.len() && *k == self.kind);
        (2 + usize::from(frame)) * self.json.len() + 128
    }

    /// The event as a transport sends it, rendered once by `render`, which every caller must share.
    pub fn rendered(&self, render: impl FnOnce(&Published) -> String) -> &str {
        self.rendered.get_or_init(|| render(self).into_boxed_str())
    }

    /// The event as AgentGate's dashboard takes it, made once; `None` if none.
    pub fn agentgate_frame(&self) -> Option<&str> {
        self.agentgate
            .get_or_init(|| agentgate::frame(self.kind, &self.json).map(String::into_boxed_str))
            .as_deref()
    }
}

/// Which events a subscriber wants. Plain data; safe to send across threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    run_id: Option<String>,
    kinds: Option<&'static [&'static str]>,
}

impl Filter {
    /// Every event.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Only the events of run `run_id`.
    pub fn run(run_id: &str) -> Filter {
        Filter {
            run_id: Some(run_id.to_string()),
            kinds: None,
        }
    }

    /// Only the events of these types, so no others are queued for it.
    pub fn only(self, kinds: &'static [&'static str]) -> Filter {
        Filter {
            kinds: Some(kinds),
            ..self
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Published) -> bool {
        (self.run_id.is_none() || self.run_id.as_deref() == event.run_id.as_deref())
            && self.kinds.is_none_or(|kinds| kinds.contains(&event.kind))
    }
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the next event published.
    Live,
    /// With the retained events after this seq, then live ones.
    After(u64),
    /// With the newest retained events (at most this many), then live ones.
    Tail(usize),
}

/// How a subscriber is connected, for `conductor_event_subscribers{transport}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Server-sent events.
    Sse,
    /// A WebSocket.
    WebSocket,
}

impl Transport {
    /// The label value.
    pub fn label(self) -> &'static str {
        ["sse", "websocket"][self as usize]
    }
}

/// The final notice to a subscriber cut off for lagging: events lost, and the last seq it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    pub dropped: u64,
    pub last_seq: Option<u64>,
}

impl Lagged {
    pub fn to_json(self) -> Value {
        json!({"type": "lagged", "dropped": self.dropped, "last_seq": self.last_seq})
    }
}

/// What a subscription's `next` found.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// The next event, in seq order.
    Event(Arc<Published>),
    /// Nothing arrived within the wait.
    Idle,
    /// The subscriber fell behind and is cut off; every later call returns `Closed`.
    Lagged(Lagged),
    /// The subscription was closed from another thread.
    Closed,
    /// The server is stopping, every earlier event delivered; every later call returns `Closed`.
    Stopping(Stopped),
}

/// The final notice to a subscriber when the server stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub last_seq: Option<u64>,
}

impl Stopped {
    pub fn to_json(self) -> Value {
        json!({"type": "shutdown", "last_seq": self.last_seq})
    }
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Arc<Published>>,
    /// How the queue ended: `Lagged`, `Closed` or `Stopping`, `last_seq` left to the reader.
    end: Option<Next>,
    /// Whether the reader waits on `ready`: only then does a push wake it (a system call).
    waiting: bool,
    /// Run once, by the publisher, when the subscriber is cut off for lagging.
    on_lag: Option<Box<dyn FnOnce() + Send>>,
}

/// One subscriber's queue: filled by publishers, emptied by its reader.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

// Every update of a queue's or the hub's state is whole and cannot panic midway, so a poisoned
// lock still guards a consistent state.
impl Queue {
    /// Queues `event`; if the queue has ended (now, for lagging), how many events that dropped.
    fn push(&self, event: &Arc<Published>) -> Option<u64> {
        let mut q = lock(&self.state);
        if q.end.is_some() {
            return Some(0);
        }
        if q.events.len() < QUEUE_CAPACITY {
            q.events.push_back(event.clone());
            // A waiting reader waits on an empty queue, so only the first push wakes it.
            if std::mem::take(&mut q.waiting) {
                drop(q);
                self.ready.notify_one();
            }
            return None;
        }
        // Queued events go too: a stuck reader never takes them; a slow one resumes from the ring.
        let dropped = q.events.len() as u64 + 1;
        q.events = VecDeque::new();
        let last_seq = None;
        q.end = Some(Next::Lagged(Lagged { dropped, last_seq }));
        let on_lag = q.on_lag.take();
        drop(q);
        self.ready.notify_all();
        if let Some(on_lag) = on_lag {
            on_lag();
        }
        Some(dropped)
    }

    fn end(&self, end: Next) {
        lock(&self.state).end.get_or_insert(end);
        self.ready.notify_all();
    }
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Every seq below this is covered by the sequence file.
    reserved: u64,
    /// Whether the last reservation failed, so the error is logged once.
    reserve_failing: bool,
    ring: VecDeque<Arc<Published>>,
    /// The bytes the ring's events hold, as [`RETAINED_BYTES`] counts them.
    ring_bytes: usize,
    subscribers: Vec<(Filter, Arc<Queue>)>,
    /// The latest `received_at` given, so it never goes back in seq order when the clock does.
    last_received: f64,
    /// Set by [`Hub::stop`]: new subscriptions end at once.
    stopping: bool,
}

impl State {
    /// Rings and queues `event`; returns the events lagging subscribers lost.
    fn deliver(&mut self, event: &Arc<Published>) -> u64 {
        self.ring_bytes += event.bytes();
        self.ring.push_back(event.clone());
        while self.ring.len() > RETAINED
            || (self.ring_bytes > RETAINED_BYTES && self.ring.len() > 1)
        {
            if let Some(old) = self.ring.pop_front() {
                self.ring_bytes -= old.bytes();
            }
        }
        let mut dropped = 0;
        self.subscribers.retain(|(filter, queue)| {
            let gone = filter.matches(event).then(|| queue.push(event)).flatten();
            dropped += gone.unwrap_or(0);
            gone.is_none()
        });
        dropped
    }
}

fn metric_error(e: crate::metrics::Error) -> Error {
    Error::Storage(format!("event metric registration failed: {e}"))
}

/// The event hub of one data dir. Safe to share across threads.
pub struct Hub {
    state: Mutex<State>,
    file: SeqFile,
    subscribers: GaugeFamily,
    published: CounterFamily,
    dropped: Counter,
    log: Logger,
}

impl Hub {
    /// Opens the hub for `dir` and registers its metrics in `registry`.
    pub fn open(dir: &Path, registry: &Registry, log: Logger) -> Result<Hub, Error> {
        let (file, first) = SeqFile::open(dir)?;
        let reserved = first.saturating_add(SEQ_RESERVE);
        file.reserve(reserved)?;
        let subscribers = registry.gauge_family(
            "conductor_event_subscribers",
            "Live event stream subscribers, by transport (sse or websocket).",
            &["transport"],
        );
        let subscribers = subscribers.map_err(metric_error)?;
        // Both transports show 0 from the start, so dashboards have a series.
        for transport in [Transport::Sse, Transport::WebSocket] {
            subscribers.add(&[transport.label()], 0.0);
        }
        let published = registry.counter_family(
            "conductor_events_published_total",
            "Progress events published, by type.",
            &["type"],
        );
        let dropped = registry.counter(
            "conductor_events_dropped_total",
            "Events thrown away unread because their subscriber fell too far behind.",
        );
        let state = State {
            next_seq: first,
            reserved,
            ..State::default()
        };
        Ok(Hub {
            state: Mutex::new(state),
            file,
            subscribers,
            published: published.map_err(metric_error)?,
            dropped: dropped.map_err(metric_error)?,
            log,
        })
    }

    /// Starts `conductor_events_published_total` from earlier starts' counts; before any publish.
    pub(crate) fn restore_published(&self, counts: &[(String, u64)]) {
        for (kind, n) in counts.iter().filter(|(_, n)| *n > 0) {
            self.published.inc_by(&[kind], *n);
        }
    }

    /// Publishes `event` to every matching subscriber and returns its seq.
    pub fn publish(&self, event: NewEvent) -> u64 {
        self.publish_all(vec![event.render()])
    }

    /// Publishes events under one hold of the lock, so a batch is contiguous; gives the last seq.
    pub(super) fn publish_all(&self, batch: Vec<Rendered>) -> u64 {
        let (mut dropped, mut seq) = (0, 0);
        // Counted after the lock is released, one increment per type.
        let mut counts: Vec<(&'static str, u64)> = Vec::new();
        {
            let mut s = lock(&self.state);
            // One clock for every event: `timestamp` is the emitter's, maybe late or simulated.
            s.last_received = s.last_received.max(time::now_unix());
            let mut received = String::with_capacity(40);
            received.push_str(",\"received_at\":\"");
            time::push_rfc3339(&mut received, s.last_received);
            received.push_str("\",");
            for event in batch {
                if s.next_seq >= s.reserved {
                    self.reserve(&mut s);
                }
                seq = s.next_seq;
                s.next_seq += 1;
                let mut json = String::with_capacity(event.tail.len() + 28 + received.len());
                json.push_str("{\"seq\":");
                push_u64(&mut json, seq);
                json.push_str(&received);
                json.push_str(&event.tail);
                dropped += s.deliver(&Arc::new(Published {
                    seq,
                    kind: event.kind,
                    run_id: event.run_id,
                    json,
                    rendered: OnceLock::new(),
                    agentgate: OnceLock::new(),
                }));
                match counts.iter_mut().find(|(k, _)| *k == event.kind) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((event.kind, 1)),
                }
            }
        }
        for (kind, n) in counts {
            self.published.inc_by(&[kind], n);
        }
        if dropped > 0 {
            self.dropped.inc_by(dropped);
        }
        seq
    }

    /// Extends the reservation. On failure (rare: the disk just took a durable change) the event
    /// still goes out, and the reservation is retried with every event.
    fn reserve(&self, s: &mut State) {
        let limit = s.next_seq.saturating_add(SEQ_RESERVE);
        match self.file.reserve(limit) {
            Ok(()) => {
                s.reserved = limit;
                if std::mem::take(&mut s.reserve_failing) {
                    self.log.info("event sequence file written again", &[]);
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut s.reserve_failing, true) {
                    self.log.error(
                        "cannot reserve event sequence numbers; a crash now may reuse some",
                        &[("error", json!(e.to_string()))],
                    );
                }
            }
        }
    }

    /// Subscribes to the events `filter` passes, from `start` on.
    pub fn subscribe(
        self: &Arc<Hub>,
        filter: Filter,
        start: Start,
        transport: Transport,
    ) -> Subscription {
        let queue = Arc::new(Queue::default());
        let mut s = lock(&self.state);
        let from = match start {
            Start::Live => s.ring.len(),
            Start::After(after) => s.ring.partition_point(|e| e.seq <= after),
            Start::Tail(_) => 0,
        };
        let matching = s.ring.range(from..).filter(|e| filter.matches(e));
        let mut backlog: VecDeque<Arc<Published>> = matching.cloned().collect();
        if let Start::Tail(n) = start {
            backlog.drain(..backlog.len().saturating_sub(n));
        }
        if s.stopping {
            queue.end(Next::Stopping(Stopped { last_seq: None }));
        }
        s.subscribers.push((filter, queue.clone()));
        drop(s);
        self.subscribers.inc(&[transport.label()]);
        Subscription {
            hub: self.clone(),
            queue,
            backlog,
            transport,
            last_seq: None,
        }
    }

    /// How many subscribers are still being fed (lagged ones are not).
    #[cfg(test)]
    fn subscribers(&self) -> usize {
        lock(&self.state).subscribers.len()
    }

    /// Ends every subscription, now and to come, with [`Next::Stopping`] after its queued events.
    pub fn stop(&self) {
        let mut s = lock(&self.state);
        s.stopping = true;
        for (_, queue) in &s.subscribers {
            queue.end(Next::Stopping(Stopped { last_seq: None }));
        }
    }
}

/// Ends a subscription from another thread, such as a WebSocket's reader.
#[derive(Clone)]
pub struct Closer(Arc<Queue>);

impl Closer {
    pub fn close(&self) {
        self.0.end(Next::Closed);
    }
}

/// One subscriber's view of the hub, which can move across threads; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    queue: Arc<Queue>,
    /// Events taken out of the queue, or retained ones it resumes with.
    backlog: VecDeque<Arc<Published>>,
    transport: Transport,
    last_seq: Option<u64>,
}

impl Subscription {
    pub fn next(&mut self, wait: Duration) -> Next {
        let deadline = Instant::now().checked_add(wait);
        // Events already taken out go first, unlocked, as if taken one by one before any end.
        if let Some(e) = self.backlog.pop_front() {
            self.last_seq = Some(e.seq);
            return Next::Event(e);
        }
        let mut q = lock(&self.queue.state);
        loop {
            // A lagged queue was emptied; a stopped one's events go out before the end. All move
            // out at once, so a reader taking a batch contends with publishers once.
            if !q.events.is_empty() {
                std::mem::swap(&mut self.backlog, &mut q.events);
                drop(q);
                return self.next(Duration::ZERO);
            }
            // Every later call finds the queue closed.
            if let Some(end) = q.end.as_mut().map(|e| std::mem::replace(e, Next::Closed)) {
                drop(q);
                let last_seq = self.last_seq;
                return match end {
                    Next::Lagged(l) => Next::Lagged(Lagged { last_seq, ..l }),
                    Next::Stopping(_) => Next::Stopping(Stopped { last_seq }),
                    end => end,
                };
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => wait,
            };
            if left.is_zero() {
                return Next::Idle;
            }
            q.waiting = true;
            q = self
                .queue
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            q.waiting = false;
        }
    }

    /// Runs `f` once if the subscriber is cut off for lagging, on the publisher's thread under the
    /// hub's lock: quick, never calling the hub (it stops a write a stuck client holds up).
    pub fn on_lag(&self, f: impl FnOnce() + Send + 'static) {
        lock(&self.queue.state).on_lag = Some(Box::new(f));
    }

    pub fn closer(&self) -> Closer {
        Closer(self.queue.clone())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let queue = &self.queue;
        lock(&self.hub.state)
            .subscribers
            .retain(|(_, q)| !Arc::ptr_eq(q, queue));
        self.hub.subscribers.dec(&[self.transport.label()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Level, LogFormat};
    use crate::testing::{quiet, TempDir};

    fn hub(name: &str) -> (Arc<Hub>, Registry, TempDir) {
        let dir = TempDir::new(&format!("events-hub-{name}"));
        let registry = Registry::new();
        let hub = Arc::new(Hub::open(&dir, &registry, quiet()).unwrap());
        (hub, registry, dir)
    }

    fn event(kind: &'static str, run: &str) -> NewEvent {
        NewEvent::new(kind, 0.0).run(run, None, None)
    }

    #[test]
    fn events_render_with_the_envelope_first() {
        let (hub, _, _dir) = hub("render");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let seq = hub.publish(
            NewEvent::new("phase_started", 1.5)
                .run("r1", Some("c1"), Some("wo-1"))
                .field("phase", json!("plan"))
                .field("seq", json!(99))
                .field("received_at", json!("forged")),
        );
        let Next::Event(e) = sub.next(Duration::ZERO) else {
            panic!("no event");
        };
        assert_eq!(e.seq, seq);
        assert!(e
            .json
            .starts_with(&format!("{{\"seq\":{seq},\"received_at\":\"")));
        let mut v: Value = serde_json::from_str(&e.json).unwrap();
        let received = v["received_at"].as_str().map(crate::time::parse_rfc3339);
        let now = crate::time::now_unix();
        assert!(
            matches!(received, Some(Some(t)) if (now - t).abs() < 60.0),
            "{v}"
        );
        v.as_object_mut().unwrap().remove("received_at");
        assert_eq!(
            v,
            json!({"seq": seq, "type": "phase_started", "timestamp": "1970-01-01T00:00:01.500Z",
                   "run_id": "r1", "correlation_id": "c1", "work_order_id": "wo-1", "phase": "plan"})
        );
    }

    #[test]
    fn subscribers_get_matching_events_in_seq_order() {
        let (hub, _, _dir) = hub("order");
        let mut all = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let mut one = hub.subscribe(Filter::run("b"), Start::Live, Transport::WebSocket);
        for i in 0..10 {
            hub.publish(event("run_started", if i % 2 == 0 { "a" } else { "b" }));
        }
        let mut seqs = Vec::new();
        while let Next::Event(e) = all.next(Duration::ZERO) {
            seqs.push(e.seq);
        }
        assert_eq!(seqs.len(), 10);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        let mut runs = Vec::new();
        while let Next::Event(e) = one.next(Duration::ZERO) {
            runs.push(e.run_id.as_deref().unwrap().to_string());
        }
        assert_eq!(runs, vec!["b"; 5]);
        assert_eq!(all.next(Duration::from_millis(1)), Next::Idle);
    }

    #[test]
    fn resuming_replays_retained_events_after_a_seq_or_the_tail() {
        let (hub, _, _dir) = hub("resume");
        let seqs: Vec<u64> = (0..20)
            .map(|_| hub.publish(event("run_started", "a")))
            .collect();
        let mut after = hub.subscribe(Filter::all(), Start::After(seqs[14]), Transport::Sse);
        hub.publish(event("run_completed", "a"));
        let mut got = Vec::new();
        while let Next::Event(e) = after.next(Duration::ZERO) {
            got.push(e.seq);
        }
        assert_eq!(got, (seqs[15]..=seqs[19] + 1).collect::<Vec<_>>());
        let mut tail = hub.subscribe(Filter::all(), Start::Tail(3), Transport::Sse);
        let mut got = Vec::new();
        while let Next::Event(e) = tail.next(Duration::ZERO) {
            got.push(e.seq);
        }
        assert_eq!(got, vec![seqs[18], seqs[19], seqs[19] + 1]);
    }

    #[test]
    fn the_ring_keeps_the_newest_events_only() {
        let (hub, _, _dir) = hub("ring");
        let first = hub.publish(event("run_started", "a"));
        for _ in 0..RETAINED {
            hub.publish(event("run_started", "a"));
        }
        let mut sub = hub.subscribe(Filter::all(), Start::After(0), Transport::Sse);
        let Next::Event(e) = sub.next(Duration::ZERO) else {
            panic!("no event");
        };
        assert_eq!(e.seq, first + 1);
    }

    #[test]
    fn a_subscriber_that_never_reads_is_cut_off_without_slowing_others() {
        let (hub, registry, _dir) = hub("lag");
        let mut stuck = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let mut reader = hub.subscribe(Filter::all(), Start::Live, Transport::WebSocket);
        let total = QUEUE_CAPACITY + 100;
        let mut got = 0;
        for _ in 0..total {
            hub.publish(event("run_started", "a"));
            while let Next::Event(_) = reader.next(Duration::ZERO) {
                got += 1;
            }
        }
        assert_eq!(got, total);
        assert_eq!(hub.subscribers(), 1);
        let dropped = QUEUE_CAPACITY as u64 + 1;
        assert_eq!(
            stuck.next(Duration::ZERO),
            Next::Lagged(Lagged {
                dropped,
                last_seq: None
            })
        );
        assert_eq!(stuck.next(Duration::ZERO), Next::Closed);
        let mut text = Vec::new();
        registry.render(&mut text, crate::metrics::Format::Text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(&format!("conductor_events_dropped_total {dropped}")),
            "{text}"
        );
        assert!(text.contains("conductor_event_subscribers{transport=\"sse\"} 1"));
        drop(stuck);
        let mut text = Vec::new();
        registry.render(&mut text, crate::metrics::Format::Text);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("conductor_event_subscribers{transport=\"sse\"} 0"));
    }

    #[test]
    fn a_lagging_subscriber_hears_of_it_at_once() {
        let (hub, _, _dir) = hub("on-lag");
        let stuck = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let (told, heard) = std::sync::mpsc::channel();
        stuck.on_lag(move || told.send(()).unwrap());
        for _ in 0..QUEUE_CAPACITY {
            hub.publish(event("run_started", "a"));
        }
        assert!(heard.try_recv().is_err());
        hub.publish(event("run_started", "a"));
        assert!(heard.try_recv().is_ok());
    }

    #[test]
    fn a_closer_ends_a_waiting_reader() {
        let (hub, _, _dir) = hub("close");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::WebSocket);
        let closer = sub.closer();
        let t = std::thread::spawn(move || sub.next(Duration::from_secs(30)));
        closer.close();
        assert_eq!(t.join().unwrap(), Next::Closed);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn a_stop_delivers_what_was_queued_then_ends_every_subscription() {
        let (hub, _, _dir) = hub("stop");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let first = hub.publish(event("run_started", "a"));
        let second = hub.publish(event("run_started", "b"));
        hub.stop();
        hub.publish(event("run_started", "c"));
        let mut seqs = Vec::new();
        let end = loop {
            match sub.next(Duration::from_secs(5)) {
                Next::Event(e) => seqs.push(e.seq),
                end => break end,
            }
        };
        assert_eq!(seqs, [first, second]);
        let stopped = Stopped {
            last_seq: Some(second),
        };
        assert_eq!(end, Next::Stopping(stopped));
        assert_eq!(stopped.to_json()["type"], "shutdown");
        assert_eq!(sub.next(Duration::ZERO), Next::Closed);
        let mut late = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let none = Stopped { last_seq: None };
        assert_eq!(late.next(Duration::from_secs(5)), Next::Stopping(none));
    }

    #[test]
    fn seqs_continue_after_the_reserved_block_on_reopen() {
        let (hub, _, dir) = hub("reopen");
        let first = hub.publish(event("run_started", "a"));
        assert_eq!(first, 1);
        drop(hub);
        let log = Logger::new(Level::Error, LogFormat::Json);
        let hub = Hub::open(&dir, &Registry::new(), log).unwrap();
        assert_eq!(hub.publish(event("run_started", "a")), 1 + SEQ_RESERVE);
    }
}
