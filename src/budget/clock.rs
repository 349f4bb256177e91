//! Where the budget reads the time: the system clock in production, a
//! settable one in tests, so that crossing midnight never means sleeping.

use crate::time;

/// A source of wall-clock time, read on every operation so the UTC day
/// rolls at midnight without a restart. It may jump either way; the budget
/// copes.
pub(crate) trait Clock: Send + Sync {
    /// Seconds since the Unix epoch, with the fraction.
    fn now_unix(&self) -> f64;
}

/// The system wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> f64 {
        time::now_unix()
    }
}

/// A clock that shows whatever it was last set to.
#[cfg(test)]
pub(crate) mod manual {
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    pub struct ManualClock {
        // f64 bits; Relaxed is enough because the time is one independent
        // value that publishes no other memory.
        bits: AtomicU64,
    }

    impl ManualClock {
        pub fn new(unix: f64) -> ManualClock {
            ManualClock {
                bits: AtomicU64::new(unix.to_bits()),
            }
        }

        pub fn set(&self, unix: f64) {
            self.bits.store(unix.to_bits(), Ordering::Relaxed);
        }

        /// Moves the time by `seconds`; a negative value steps it back.
        pub fn advance(&self, seconds: f64) {
            let step = |bits| Some((f64::from_bits(bits) + seconds).to_bits());
            // The closure always returns Some, so the update cannot fail.
            let _ = self
                .bits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step);
        }
    }

    impl super::Clock for ManualClock {
        fn now_unix(&self) -> f64 {
            f64::from_bits(self.bits.load(Ordering::Relaxed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::manual::ManualClock;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_moves_both_ways() {
        let clock = ManualClock::new(86_400.0 * 3.0 - 30.0);
        assert_eq!(clock.now_unix(), 259_170.0);
        clock.advance(45.5);
        assert_eq!(clock.now_unix(), 259_215.5);
        clock.advance(-100.0);
        assert_eq!(clock.now_unix(), 259_115.5);
        clock.set(1.0);
        assert_eq!(clock.now_unix(), 1.0);
    }

    #[test]
    fn concurrent_advances_all_land() {
        let clock = Arc::new(ManualClock::new(0.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| clock.advance(1.0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(clock.now_unix(), 4000.0);
    }

    #[test]
    fn system_clock_reads_the_wall_clock() {
        let (before, now) = (time::now_unix(), SystemClock.now_unix());
        assert!(now >= before && now - before < 60.0);
    }

    /// Checked when the tests compile: clocks are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SystemClock>();
        assert_send_sync::<ManualClock>();
        assert_send_sync::<Arc<dyn Clock>>();
    };
}
