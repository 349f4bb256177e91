//! The live client connections: the connection cap, and closing the
//! longest-idle connection to make room for a new one.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Hooks;

/// While draining, how often connections that became idle are looked for:
/// a connection's thread does not report finishing an answer.
const DRAIN_POLL: Duration = Duration::from_millis(10);

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const EVICTED: u8 = 2;

/// Every live client connection, with a handle to close it.
pub(super) struct Connections {
    max: usize,
    hooks: Arc<dyn Hooks>,
    inner: Mutex<Inner>,
    /// Signalled when a connection ends while a drain waits.
    ended: Condvar,
}

struct Inner {
    next_id: u64,
    live: HashMap<u64, Entry>,
    /// Whether [`Connections::drain`] waits on `ended`.
    draining: bool,
}

struct Entry {
    stream: TcpStream,
    activity: Arc<Activity>,
}

/// Ranks idle connections: each answer ready takes the next ticket. A
/// counter rather than a clock, so two connections never tie.
static TICKETS: AtomicU64 = AtomicU64::new(0);

/// Whether a connection is between requests, and since which answer.
pub(super) struct Activity {
    state: AtomicU8,
    ticket: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        let activity = Activity {
            state: AtomicU8::new(IDLE),
            ticket: AtomicU64::new(0),
        };
        activity.answered();
        activity
    }

    // Relaxed is enough: the state is a single atomic whose compare-exchanges
    // decide every race on their own, and the ticket only ranks candidates.

    /// Marks the connection idle (evictable) once its answer is ready, before
    /// it is written: no client can act on it earlier, so the idle order never
    /// hangs on thread scheduling. Eviction shuts only the reading side.
    pub(super) fn answered(&self) {
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        self.ticket.store(ticket, Ordering::Relaxed);
        let _ = self
            .state
            .compare_exchange(BUSY, IDLE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Marks the connection as serving a request. False if it was evicted
    /// while idle, in which case it must close.
    pub(super) fn mark_busy(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn idle_since(&self) -> Option<u64> {
        (self.state.load(Ordering::Relaxed) == IDLE).then(|| self.ticket.load(Ordering::Relaxed))
    }

    fn evict(&self) -> bool {
        self.state
            .compare_exchange(IDLE, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// A connection's place among the live ones, given up when dropped.
pub(super) struct Registration {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Registration {
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.remove(self.id);
    }
}

impl Connections {
    pub(super) fn new(max: usize, hooks: Arc<dyn Hooks>) -> Connections {
        Connections {
            max: max.max(1),
            hooks,
            inner: Mutex::new(Inner {
                next_id: 0,
                live: HashMap::new(),
                draining: false,
            }),
            ended: Condvar::new(),
        }
    }

    /// Admits a connection, closing the longest-idle one at the cap; `None`
    /// when all are busy (or the socket cannot be cloned). Hooks run under
    /// the lock, so the last count reported is the true one.
    pub(super) fn admit(self: &Arc<Self>, stream: &TcpStream) -> Option<Registration> {
        let Ok(handle) = stream.try_clone() else {
            self.hooks.connection_rejected("limit");
            return None;
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.live.len() >= self.max {
            let oldest = inner
                .live
                .iter()
                .filter_map(|(id, e)| e.activity.idle_since().map(|since| (since, *id)))
                .min();
            let Some((_, id)) = oldest else {
                self.hooks.connection_rejected("limit");
                return None;
            };
            // The compare-exchange fails if the connection just became busy;
            // then the loop looks again.
            if inner.live.get(&id).is_some_and(|e| e.activity.evict()) {
                // Its thread, waiting for a request or finishing an answer,
                // then reads the end of the stream and closes.
                if let Some(entry) = inner.live.remove(&id) {
                    let _ = entry.stream.shutdown(Shutdown::Read);
                }
                self.hooks.connection_rejected("evicted");
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new());
        inner.live.insert(
            id,
            Entry {
                stream: handle,
                activity: Arc::clone(&activity),
            },
        );
        self.hooks.connections(inner.live.len());
        Some(Registration {
            connections: Arc::clone(self),
            id,
            activity,
        })
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.live.remove(&id).is_some() {
            self.hooks.connections(inner.live.len());
            if inner.draining {
                self.ended.notify_all();
            }
        }
    }

    /// Closes each connection as soon as it is idle (streams never are),
    /// until none is left or `deadline` passes; true if none is left.
    pub(super) fn drain(&self, deadline: Instant) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.draining = true;
        loop {
            for entry in inner.live.values() {
                if entry.activity.evict() {
                    let _ = entry.stream.shutdown(Shutdown::Read);
                }
            }
            if inner.live.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self
                .ended
                .wait_timeout(inner, left.min(DRAIN_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Closes every live connection; their threads then end.
    pub(super) fn close_all(&self) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for entry in inner.live.values() {
            let _ = entry.stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Hooks;
    use super::Connections;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Hooks for Log {
        fn request_rejected(&self, _: &str, _: u16) {}
        fn connection_rejected(&self, reason: &str) {
            self.0.lock().unwrap().push(reason.to_string());
        }
        fn connections(&self, open: usize) {
            self.0.lock().unwrap().push(open.to_string());
        }
    }

    /// A connected pair: the server side to register, and the client side
    /// to observe closing from.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    fn closed(mut client: &TcpStream) -> bool {
        client.read(&mut [0u8; 1]).unwrap() == 0
    }

    #[test]
    fn at_the_cap_the_longest_idle_is_evicted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Log::default());
        let connections = Arc::new(Connections::new(2, log.clone()));
        let (a, _a_client) = pair(&listener);
        let (b, _b_client) = pair(&listener);
        let (c, _c_client) = pair(&listener);
        let ra = connections.admit(&a).unwrap();
        let rb = connections.admit(&b).unwrap();
        // `b` goes busy and back to idle, so it is now newer than `a`.
        assert!(rb.activity().mark_busy());
        rb.activity().answered();
        let rc = connections.admit(&c).unwrap();
        // Its reading side is shut, which its thread sees as the end of the stream.
        assert!(closed(&a));
        assert!(
            !ra.activity().mark_busy(),
            "an evicted connection must not serve"
        );
        drop(ra);
        drop(rb);
        drop(rc);
        assert_eq!(*log.0.lock().unwrap(), ["1", "2", "evicted", "2", "1", "0"]);
    }

    #[test]
    fn at_the_cap_with_all_busy_the_new_one_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Log::default());
        let connections = Arc::new(Connections::new(1, log.clone()));
        let (a, _a_client) = pair(&listener);
        let (b, _b_client) = pair(&listener);
        let ra = connections.admit(&a).unwrap();
        assert!(ra.activity().mark_busy());
        assert!(connections.admit(&b).is_none());
        assert_eq!(*log.0.lock().unwrap(), ["1", "limit"]);
    }

    #[test]
    fn close_all_shuts_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connections = Arc::new(Connections::new(4, Arc::new(Log::default())));
        let (a, a_client) = pair(&listener);
        let _ra = connections.admit(&a).unwrap();
        connections.close_all();
        assert!(closed(&a_client));
    }
}
