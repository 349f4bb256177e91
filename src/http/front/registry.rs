//! The live client connections: the connection cap, and closing the
//! longest-idle connection to make room for a new one.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::FrontHooks;

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const EVICTED: u8 = 2;

/// Every live client connection, with a handle to close it. Safe to share
/// between threads.
pub(super) struct Registry {
    max: usize,
    epoch: Instant,
    hooks: Arc<dyn FrontHooks>,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    live: HashMap<u64, Entry>,
}

struct Entry {
    stream: TcpStream,
    activity: Arc<Activity>,
}

/// Whether a connection is between requests, and since when. Shared by the
/// connection's thread (which marks it) and the registry (which may evict it).
pub(super) struct Activity {
    epoch: Instant,
    state: AtomicU8,
    since_nanos: AtomicU64,
}

impl Activity {
    pub(super) fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            state: AtomicU8::new(IDLE),
            since_nanos: AtomicU64::new(0),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since_nanos.store(nanos, Ordering::Relaxed);
    }

    // Relaxed is enough: the state is a single atomic whose compare-exchanges
    // decide every race on their own, and the timestamp only ranks candidates.

    /// Marks the connection as waiting for a request, and so evictable.
    pub(super) fn mark_idle(&self) {
        self.touch();
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
        (self.state.load(Ordering::Relaxed) == IDLE)
            .then(|| self.since_nanos.load(Ordering::Relaxed))
    }

    fn evict(&self) -> bool {
        self.state
            .compare_exchange(IDLE, EVICTED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// A connection's place in the registry, given up when dropped.
pub(super) struct Registration {
    registry: Arc<Registry>,
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
        self.registry.remove(self.id);
    }
}

impl Registry {
    /// A registry of at most `max` connections (at least one).
    pub(super) fn new(max: usize, hooks: Arc<dyn FrontHooks>) -> Registry {
        Registry {
            max: max.max(1),
            epoch: Instant::now(),
            hooks,
            inner: Mutex::new(Inner {
                next_id: 0,
                live: HashMap::new(),
            }),
        }
    }

    /// Admits a new connection, closing the longest-idle one if the registry
    /// is full. `None` when it is full of busy connections (or the socket
    /// cannot be cloned): the caller must close the new one.
    ///
    /// Hooks are called with the lock held, so that the last count reported
    /// is always the true one.
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
                if let Some(entry) = inner.live.remove(&id) {
                    let _ = entry.stream.shutdown(Shutdown::Both);
                }
                self.hooks.connection_rejected("evicted");
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new(self.epoch));
        inner.live.insert(
            id,
            Entry {
                stream: handle,
                activity: Arc::clone(&activity),
            },
        );
        self.hooks.connections(inner.live.len());
        Some(Registration {
            registry: Arc::clone(self),
            id,
            activity,
        })
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.live.remove(&id).is_some() {
            self.hooks.connections(inner.live.len());
        }
    }

    /// Closes every live connection; their threads then end on their own.
    pub(super) fn close_all(&self) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for entry in inner.live.values() {
            let _ = entry.stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::FrontHooks;
    use super::Registry;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl FrontHooks for Log {
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
    fn full_registry_evicts_the_longest_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Log::default());
        let registry = Arc::new(Registry::new(2, log.clone()));
        let (a, a_client) = pair(&listener);
        let (b, _b_client) = pair(&listener);
        let (c, _c_client) = pair(&listener);
        let ra = registry.admit(&a).unwrap();
        let rb = registry.admit(&b).unwrap();
        // `b` goes busy and back to idle, so it is now newer than `a`.
        assert!(rb.activity().mark_busy());
        rb.activity().mark_idle();
        let rc = registry.admit(&c).unwrap();
        assert!(closed(&a_client));
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
    fn full_registry_of_busy_connections_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Log::default());
        let registry = Arc::new(Registry::new(1, log.clone()));
        let (a, _a_client) = pair(&listener);
        let (b, _b_client) = pair(&listener);
        let ra = registry.admit(&a).unwrap();
        assert!(ra.activity().mark_busy());
        assert!(registry.admit(&b).is_none());
        assert_eq!(*log.0.lock().unwrap(), ["1", "limit"]);
    }

    #[test]
    fn close_all_shuts_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let registry = Arc::new(Registry::new(4, Arc::new(Log::default())));
        let (a, a_client) = pair(&listener);
        let _ra = registry.admit(&a).unwrap();
        registry.close_all();
        assert!(closed(&a_client));
    }
}
