//! A value that can go up and down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::counter::update_f64;

/// A gauge: a value set, raised and lowered. Clones are cheap and share the value; thread-safe.
#[derive(Clone, Debug, Default)]
pub struct Gauge {
    // f64 bits; Relaxed is enough: one independent atomic, publishing nothing.
    bits: Arc<AtomicU64>,
}

impl Gauge {
    /// Creates a gauge at zero, not registered anywhere.
    pub fn new() -> Gauge {
        Gauge::default()
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        self.bits.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Adds `v`, which may be negative.
    #[inline]
    pub fn add(&self, v: f64) {
        update_f64(&self.bits, |x| x + v);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_both_ways() {
        let g = Gauge::new();
        g.set(5.0);
        g.inc();
        g.dec();
        g.dec();
        g.add(0.25);
        g.add(-1.0);
        assert_eq!(g.get(), 3.25);
        g.set(-2.0);
        assert_eq!(g.get(), -2.0);
    }

    #[test]
    fn concurrent_updates_land_exactly() {
        let g = Gauge::new();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        if i % 2 == 0 {
                            g.inc();
                        } else {
                            g.add(2.0);
                            g.dec();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.get(), 400_000.0);
    }

    /// Checked when the tests compile: handles are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Gauge>();
    };
}
