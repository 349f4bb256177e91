//! The live connections: the cap, and closing the longest-idle one to make room.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

#[derive(Default)]
struct Inner {
    /// Each connection's socket and activity; a scan of a few thousand at most.
    live: Vec<(TcpStream, Arc<Activity>)>,
    /// Whether [`Connections::drain`] waits on `ended`.
    draining: bool,
}

/// Ranks idle connections: each answer ready takes the next ticket. A
/// counter rather than a clock, so two connections never tie.
static TICKETS: AtomicU64 = AtomicU64::new(0);

/// Whether a connection is between requests, and since which answer. Relaxed is
/// enough: compare-exchanges decide every race; the ticket only ranks candidates.
pub(super) struct Activity {
    state: AtomicU8,
    ticket: AtomicU64,
}

impl Activity {
    /// Marks the connection idle (evictable) once its answer is ready, not once
    /// written, so the idle order never hangs on scheduling; eviction shuts reading only.
    pub(super) fn answered(&self) {
        self.ticket.store(TICKETS.fetch_add(1, Relaxed), Relaxed);
        self.swap(BUSY, IDLE);
    }

    /// Marks the connection as serving a request; false if it was evicted and must close.
    pub(super) fn mark_busy(&self) -> bool {
        self.swap(IDLE, BUSY)
    }

    fn swap(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Relaxed, Relaxed)
            .is_ok()
    }

    fn idle_since(&self) -> Option<u64> {
        (self.state.load(Relaxed) == IDLE).then(|| self.ticket.load(Relaxed))
    }
}

/// A connection's place among the live ones, given up when dropped.
pub(super) struct Registration {
    connections: Arc<Connections>,
    pub(super) activity: Arc<Activity>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        let mine = |(_, a): &(TcpStream, Arc<Activity>)| Arc::ptr_eq(a, &self.activity);
        // An evicted connection is gone already.
        if let Some(i) = inner.live.iter().position(mine) {
            inner.live.swap_remove(i);
            self.connections.hooks.connections(inner.live.len());
            if inner.draining {
                self.connections.ended.notify_all();
            }
        }
    }
}

impl Connections {
    pub(super) fn new(max: usize, hooks: Arc<dyn Hooks>) -> Connections {
        Connections {
            max: max.max(1),
            hooks,
            inner: Mutex::default(),
            ended: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection, closing the longest-idle one at the cap; `None` when all are
    /// busy. Hooks run under the lock, so the last count reported is the true one.
    pub(super) fn admit(self: &Arc<Self>, stream: &TcpStream) -> Option<Registration> {
        let Ok(handle) = stream.try_clone() else {
            self.hooks.connection_rejected("limit");
            return None;
        };
        let mut inner = self.lock();
        while inner.live.len() >= self.max {
            let oldest = inner
                .live
                .iter()
                .enumerate()
                .filter_map(|(i, (_, a))| a.idle_since().map(|since| (since, i)))
                .min();
            let Some((_, i)) = oldest else {
                self.hooks.connection_rejected("limit");
                return None;
            };
            // Fails if it just became busy: look again. Its thread sees end of stream and closes.
            if inner.live[i].1.swap(IDLE, EVICTED) {
                let (stream, _) = inner.live.swap_remove(i);
                let _ = stream.shutdown(Shutdown::Read);
                self.hooks.connection_rejected("evicted");
            }
        }
        let ticket = AtomicU64::new(TICKETS.fetch_add(1, Relaxed));
        let activity = Arc::new(Activity {
            state: AtomicU8::new(IDLE),
            ticket,
        });
        inner.live.push((handle, activity.clone()));
        self.hooks.connections(inner.live.len());
        let connections = self.clone();
        Some(Registration {
            connections,
            activity,
        })
    }

    /// Closes each connection once idle (streams never are); true if none is left by `deadline`.
    pub(super) fn drain(&self, deadline: Instant) -> bool {
        let mut inner = self.lock();
        inner.draining = true;
        loop {
            for (stream, activity) in &inner.live {
                if activity.swap(IDLE, EVICTED) {
                    let _ = stream.shutdown(Shutdown::Read);
                }
            }
            if inner.live.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let waited = self.ended.wait_timeout(inner, left.min(DRAIN_POLL));
            inner = waited.unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Closes every live connection; their threads then end.
    pub(super) fn close_all(&self) {
        for (stream, _) in &self.lock().live {
            let _ = stream.shutdown(Shutdown::Both);
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
        assert!(rb.activity.mark_busy());
        rb.activity.answered();
        let rc = connections.admit(&c).unwrap();
        // Its reading side is shut, which its thread sees as the end of the stream.
        assert!(closed(&a));
        assert!(
            !ra.activity.mark_busy(),
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
        assert!(ra.activity.mark_busy());
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
