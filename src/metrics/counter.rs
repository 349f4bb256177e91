//! A monotonically increasing counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A counter: a value that only goes up. Clones are cheap and share the value; thread-safe.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    // As client_golang's: whole increments in an integer, fractional ones in a float, each
    // saturating. Relaxed: each is one independent total, publishing no other memory.
    core: Arc<(AtomicU64, AtomicU64)>,
}

impl Counter {
    /// Creates a counter at zero, not registered anywhere.
    pub fn new() -> Counter {
        Counter::default()
    }

    /// Adds one, saturating as [`Counter::inc_by`] does.
    #[inline]
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds a whole number, saturating at `u64::MAX`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        // The closure always returns Some, so the update cannot fail.
        let _ = (self.core.0).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_add(n))
        });
    }

    /// Adds `v`, ignoring a negative, NaN or infinite one (a NaN would poison it for good).
    pub fn add(&self, v: f64) {
        if v.is_nan() || v < 0.0 || v.is_infinite() {
            return;
        }
        if v.fract() == 0.0 && v < 9.0e15 {
            self.inc_by(v as u64);
            return;
        }
        add_fraction(&self.core.1, v);
    }

    /// The value's whole and fractional parts, for [`Counter::add_parts`].
    pub fn parts(&self) -> (u64, f64) {
        let int = self.core.0.load(Ordering::Relaxed);
        (int, f64::from_bits(self.core.1.load(Ordering::Relaxed)))
    }

    /// Adds the parts [`Counter::parts`] gives, exactly; a fraction `add` would ignore is ignored.
    pub fn add_parts(&self, int: u64, fraction: f64) {
        self.inc_by(int);
        if fraction.is_finite() && fraction >= 0.0 {
            add_fraction(&self.core.1, fraction);
        }
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        let int = self.core.0.load(Ordering::Relaxed) as f64;
        int + f64::from_bits(self.core.1.load(Ordering::Relaxed))
    }
}

/// Replaces an f64 stored as bits with `f` of it.
#[inline(always)]
pub(crate) fn update_f64(cell: &AtomicU64, f: impl Fn(f64) -> f64) {
    // The closure always returns Some, so the update cannot fail.
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some(f(f64::from_bits(bits)).to_bits())
    });
}

/// Adds a finite, non-negative `v` to a float part, saturating at `f64::MAX`.
fn add_fraction(cell: &AtomicU64, v: f64) {
    update_f64(cell, |x| (x + v).min(f64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rejects_decrements() {
        let c = Counter::new();
        c.inc();
        c.inc_by(4);
        c.add(0.5);
        c.add(2.0);
        c.add(-1.0);
        c.add(f64::NAN);
        c.add(f64::INFINITY);
        assert_eq!(c.get(), 7.5);
    }

    #[test]
    fn huge_increments_saturate_and_never_go_back() {
        let c = Counter::new();
        let mut last = 0.0;
        for _ in 0..3 {
            c.inc_by(8_900_000_000_000_000_000);
            assert!(c.get() >= last, "{} after {last}", c.get());
            last = c.get();
        }
        assert_eq!(c.parts().0, u64::MAX);
        c.inc();
        c.add_parts(5, 0.0);
        assert_eq!(c.parts().0, u64::MAX);
        c.add(1.5e308);
        c.add(1.5e308);
        c.add_parts(0, 1.5e308);
        assert_eq!(c.parts().1, f64::MAX);
        assert!(c.get().is_finite());
    }

    #[test]
    fn concurrent_increments_land_exactly() {
        let c = Counter::new();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        c.inc();
                        c.add(0.5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 1_200_000.0);
    }

    /// Checked when the tests compile: handles are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Counter>();
    };
}
