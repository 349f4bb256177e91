//! Random trace and span ids: splitmix64 over a process-wide counter,
//! seeded once from `RandomState`. The ids need only not collide across
//! processes, not be secret, so that is enough and needs no dependency.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// splitmix64's increment: odd, so the state visits every value once.
pub(crate) const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

static SEED: OnceLock<u64> = OnceLock::new();
static STEP: AtomicU64 = AtomicU64::new(1);

fn seed() -> u64 {
    *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        // RandomState already draws from the OS; the clock and pid only
        // guard against a platform where it does not.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// The next random number. Relaxed ordering is enough: the counter only has
/// to hand each caller a distinct step, and publishes no other memory.
fn next_u64() -> u64 {
    let step = STEP.fetch_add(1, Ordering::Relaxed);
    splitmix64(seed().wrapping_add(step.wrapping_mul(GAMMA)))
}

/// splitmix64's output for state `z`.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new random span id; never all zero, which OTLP and W3C reserve for "no id".
pub fn new_span_id() -> [u8; 8] {
    loop {
        let n = next_u64();
        if n != 0 {
            return n.to_be_bytes();
        }
    }
}

/// A new random trace id; never all zero.
pub(crate) fn new_trace_id() -> [u8; 16] {
    loop {
        let n = (u128::from(next_u64()) << 64) | u128::from(next_u64());
        if n != 0 {
            return n.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_never_zero_and_do_not_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = new_span_id();
            assert_ne!(id, [0; 8]);
            assert!(seen.insert(id));
        }
        let a = new_trace_id();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, new_trace_id());
    }

    #[test]
    fn ids_from_many_threads_are_distinct() {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_span_id()).collect::<Vec<_>>()))
            .collect();
        let mut seen = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(seen.insert(id));
            }
        }
        assert_eq!(seen.len(), 4000);
    }
}
