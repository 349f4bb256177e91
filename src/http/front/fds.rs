//! Descriptor headroom for the upstream server.
//!
//! tiny_http stops accepting for good when it cannot get a descriptor: an
//! `accept()` error ends its accept thread, and so does the panic in its
//! `try_clone` of the accepted socket. In a process out of descriptors, a
//! new upstream connection would therefore kill the server for good, long
//! after the clients that used up the descriptors have gone. So the front
//! opens one only when enough descriptors are free for both ends of it,
//! tiny_http's clone, and a margin for the rest of the process; and while it
//! does, its own accept thread waits, so it cannot take them meanwhile.

use std::fs::File;
use std::sync::{Mutex, MutexGuard};

/// The descriptors that must be free to open an upstream connection: our
/// end, tiny_http's end and its clone (three), the accept thread's one
/// accepted socket and its registry clone, taken before it next waits at
/// the gate (two), and a margin for files the rest of the process opens
/// meanwhile (journals, `/proc` reads during a scrape).
pub(super) const UPSTREAM_HEADROOM: usize = 16;

/// A gate between taking descriptors for clients and for the upstream.
/// Safe to share between threads.
pub(super) struct Headroom {
    gate: Mutex<()>,
}

/// Proof that enough descriptors were free; the accept thread waits until
/// it is dropped.
pub(super) struct Reserved<'a> {
    _gate: MutexGuard<'a, ()>,
}

impl Headroom {
    pub(super) fn new() -> Headroom {
        Headroom {
            gate: Mutex::new(()),
        }
    }

    /// Waits while an upstream connection is being opened. The accept
    /// thread calls this before each `accept()`.
    pub(super) fn pass(&self) {
        drop(self.lock());
    }

    /// Closes the gate if [`UPSTREAM_HEADROOM`] descriptors are free, and
    /// keeps it closed until the result is dropped. `None` when they are not.
    pub(super) fn reserve(&self) -> Option<Reserved<'_>> {
        let gate = self.lock();
        free_at_least(UPSTREAM_HEADROOM).then_some(Reserved { _gate: gate })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The gate guards no data, so a panic while it was held leaves
        // nothing inconsistent behind.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `n` more descriptors can be opened right now, found by opening
/// them. An error other than running out (no `/dev/null`, say) cannot tell,
/// and counts as yes: refusing every upstream connection for it would be worse.
fn free_at_least(n: usize) -> bool {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(err) => return !crate::sys::out_of_descriptors(&err),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{free_at_least, Headroom, UPSTREAM_HEADROOM};
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn a_process_with_descriptors_to_spare_has_headroom() {
        assert!(free_at_least(UPSTREAM_HEADROOM));
        assert!(Headroom::new().reserve().is_some());
    }

    #[test]
    fn passing_waits_while_a_reservation_is_held() {
        let headroom = Arc::new(Headroom::new());
        let reserved = headroom.reserve().unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let headroom = Arc::clone(&headroom);
            thread::spawn(move || {
                headroom.pass();
                tx.send(()).unwrap();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(reserved);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
