//! A histogram with caller-given buckets whose scrapes are always self-consistent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::counter::update_f64;
use super::error::Error;
use super::lock;

/// A histogram: observations counted into buckets, and their sum. Clones are cheap and share it;
/// thread-safe. `observe` is lock-free, yet a scrape sees `_count`, `_sum` and buckets agree.
#[derive(Clone, Debug)]
pub struct Histogram {
    core: Arc<Core>,
}

#[derive(Debug)]
struct Core {
    bounds: Box<[f64]>,
    // Bit 63 selects the hot shard; the low 63 bits count observations.
    count_and_hot: AtomicU64,
    shards: [Shard; 2],
    /// Serialises scrapes; it guards no data, so poisoning is irrelevant.
    scrape: Mutex<()>,
}

#[derive(Debug)]
struct Shard {
    // Not cumulative: one slot per bound plus the +Inf slot.
    buckets: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
}

const HOT_BIT: u64 = 1 << 63;

/// Checks bucket bounds and drops a trailing `+Inf`, which is implied.
pub(crate) fn checked_bounds(name: &str, bounds: &[f64]) -> Result<Box<[f64]>, Error> {
    let bounds = bounds.strip_suffix(&[f64::INFINITY]).unwrap_or(bounds);
    let why = if bounds.iter().any(|b| !b.is_finite()) {
        "bucket bounds must be finite, +Inf is implied"
    } else if bounds.windows(2).any(|w| w[0] >= w[1]) {
        "bucket bounds must be strictly increasing"
    } else {
        return Ok(bounds.into());
    };
    Err(Error::refused(format!("histogram {name}: {why}")))
}

impl Histogram {
    /// Creates an unregistered histogram; bounds finite and strictly increasing (`+Inf` implied).
    pub fn new(bounds: &[f64]) -> Result<Histogram, Error> {
        checked_bounds("histogram", bounds).map(Histogram::with_checked_bounds)
    }

    pub(crate) fn with_checked_bounds(bounds: Box<[f64]>) -> Histogram {
        let shard = || Shard {
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        };
        Histogram {
            core: Arc::new(Core {
                shards: [shard(), shard()],
                bounds,
                count_and_hot: AtomicU64::new(0),
                scrape: Mutex::new(()),
            }),
        }
    }

    /// Records one observation; NaN, which would make `_sum` NaN for good, is ignored.
    #[inline]
    pub fn observe(&self, v: f64) {
        self.observe_with(v, |sum| sum + v)
    }

    /// [`Histogram::observe`], the sum stopping at `±f64::MAX`: a sum of finite values is finite.
    pub fn observe_saturating(&self, v: f64) {
        self.observe_with(v, |sum| saturating_sum(sum, v))
    }

    #[inline(always)]
    fn observe_with(&self, v: f64, add: impl Fn(f64) -> f64) {
        if v.is_nan() {
            return;
        }
        let core = &*self.core;
        let slot = bucket_of(&core.bounds, v);
        let n = core.count_and_hot.fetch_add(1, Ordering::Relaxed);
        let shard = &core.shards[(n >> 63) as usize];
        update_f64(&shard.sum_bits, add);
        // Release: a scrape that sees this increment also sees the sum.
        shard.buckets[slot].fetch_add(1, Ordering::Release);
    }

    /// The sum of the observations, as a scrape would show it now.
    pub fn sum(&self) -> f64 {
        // One shard holds folded observations, the other newer ones: the lock keeps folds whole.
        let _guard = lock(&self.core.scrape);
        let sum = |s: &Shard| f64::from_bits(s.sum_bits.load(Ordering::Relaxed));
        saturating_sum(sum(&self.core.shards[0]), sum(&self.core.shards[1]))
    }

    /// The upper bounds, without the implied `+Inf`.
    pub fn bounds(&self) -> &[f64] {
        &self.core.bounds
    }

    /// The bucket `v` is counted in, `+Inf`'s being the number of bounds.
    pub(crate) fn slot(&self, v: f64) -> usize {
        bucket_of(&self.core.bounds, v)
    }

    /// A consistent snapshot: `cumulative` gets a count per bound and `+Inf`; gives `(sum, count)`.
    /// As client_golang does, it flips the hot and cold shards with one atomic add, waits for the
    /// observations under way on the now-cold shard, reads it, and folds it into the hot one.
    pub fn snapshot(&self, cumulative: &mut Vec<u64>) -> (f64, u64) {
        let core = &*self.core;
        let _guard = lock(&core.scrape);
        let n = core.count_and_hot.fetch_add(HOT_BIT, Ordering::AcqRel);
        let count = n & !HOT_BIT;
        let cold = &core.shards[(n >> 63) as usize];
        let hot = &core.shards[((n >> 63) ^ 1) as usize];
        // Wait for observers that picked the cold shard before the flip.
        let counted = || cold.buckets.iter().map(|b| b.load(Ordering::Acquire));
        let mut spins = 0u32;
        while counted().sum::<u64>() != count {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        cumulative.clear();
        let mut running = 0;
        for bucket in cold.buckets.iter() {
            running += bucket.swap(0, Ordering::Relaxed);
            cumulative.push(running);
        }
        let sum = f64::from_bits(cold.sum_bits.swap(0f64.to_bits(), Ordering::Relaxed));
        // The hot shard must hold every observation by the next flip; saturating, as `add_counts`.
        add_to(hot, cumulative, sum, Ordering::Relaxed);
        (sum, count)
    }

    /// Adds counts as [`Histogram::snapshot`] gives them (across a restart), the sum saturating;
    /// counts of the wrong length or that decrease change nothing and return false.
    pub fn add_counts(&self, cumulative: &[u64], sum: f64) -> bool {
        let core = &*self.core;
        let slots = core.bounds.len() + 1;
        if cumulative.len() != slots || cumulative.windows(2).any(|w| w[0] > w[1]) || sum.is_nan() {
            return false;
        }
        // As observations: counted, then added to the shard the count chose, so a scrape waits.
        let n = core
            .count_and_hot
            .fetch_add(cumulative[slots - 1], Ordering::Relaxed);
        add_to(
            &core.shards[(n >> 63) as usize],
            cumulative,
            sum,
            Ordering::Release,
        );
        true
    }
}

/// Adds cumulative counts and a sum to a shard; saturating, as a saturated sum's halves may not.
#[inline(always)]
fn add_to(shard: &Shard, cumulative: &[u64], sum: f64, order: Ordering) {
    update_f64(&shard.sum_bits, |s| saturating_sum(s, sum));
    let mut previous = 0;
    for (bucket, &total) in shard.buckets.iter().zip(cumulative) {
        bucket.fetch_add(total - previous, order);
        previous = total;
    }
}

/// `a + b`, or `±f64::MAX` where two finite numbers add up past it (infinities as IEEE adds them).
pub(crate) fn saturating_sum(a: f64, b: f64) -> f64 {
    let sum = a + b;
    if sum.is_infinite() && a.is_finite() && b.is_finite() {
        f64::MAX.copysign(sum)
    } else {
        sum
    }
}

/// The slot of `v`: the number of bounds below it. Up to `LINEAR_BOUNDS` bounds every one is
/// compared: the comparisons vectorise, where a binary search's dependent loads were a third of
/// `observe` at 12 bounds (and measured faster past 32).
#[inline(always)]
fn bucket_of(bounds: &[f64], v: f64) -> usize {
    if bounds.len() <= LINEAR_BOUNDS {
        bounds.iter().map(|b| usize::from(*b < v)).sum()
    } else {
        bounds.partition_point(|b| *b < v)
    }
}

const LINEAR_BOUNDS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new(&[1.0, 2.5, 10.0]).unwrap();
        for v in [0.5, 1.0, 1.5, 2.5, 3.0, 100.0, f64::NAN] {
            h.observe(v);
        }
        let mut counts = Vec::new();
        let (sum, count) = h.snapshot(&mut counts);
        assert_eq!(counts, vec![2, 4, 5, 6]);
        assert_eq!(count, 6);
        assert_eq!(sum, 108.5);
        // A second snapshot sees the same totals plus new observations.
        h.observe(5.0);
        let (sum, count) = h.snapshot(&mut counts);
        assert_eq!((counts, sum, count), (vec![2, 4, 6, 7], 113.5, 7));
    }

    #[test]
    fn added_counts_remake_a_histogram_exactly() {
        let h = Histogram::new(&[1.0, 2.5, 10.0]).unwrap();
        for v in [0.5, 1.0, 1.5, 2.5, 3.0, 100.0, 0.1] {
            h.observe(v);
        }
        let mut counts = Vec::new();
        let (sum, count) = h.snapshot(&mut counts);
        let copy = Histogram::new(&[1.0, 2.5, 10.0]).unwrap();
        assert!(copy.add_counts(&counts, sum));
        assert!(!copy.add_counts(&[1, 2], 1.0));
        assert!(!copy.add_counts(&[3, 2, 2, 2], 1.0));
        copy.observe(5.0);
        h.observe(5.0);
        let mut again = Vec::new();
        assert_eq!(copy.snapshot(&mut again), h.snapshot(&mut counts));
        assert_eq!(again, counts);
        assert_eq!(count, 7);
    }

    #[test]
    fn a_saturating_sum_of_finite_values_stays_finite() {
        let h = Histogram::new(&[1.0]).unwrap();
        h.observe_saturating(1.5e308);
        let mut counts = Vec::new();
        // Folded into the other shard by the scrape, then added to there.
        h.snapshot(&mut counts);
        h.observe_saturating(1.5e308);
        assert_eq!(h.sum(), f64::MAX);
        assert_eq!(h.snapshot(&mut counts), (f64::MAX, 2));
        h.observe_saturating(-f64::MAX);
        assert_eq!(h.sum(), 0.0);
        assert!(h.add_counts(&[0, 1], f64::MAX));
        assert!(h.add_counts(&[0, 1], f64::MAX));
        assert_eq!(h.snapshot(&mut counts), (f64::MAX, 5));
        assert_eq!(counts, [1, 5]);
        // Infinity itself is still summed as IEEE sums it.
        h.observe_saturating(f64::INFINITY);
        assert_eq!(h.sum(), f64::INFINITY);
        let plain = Histogram::new(&[1.0]).unwrap();
        plain.observe(1.5e308);
        plain.observe(1.5e308);
        assert_eq!(
            plain.sum(),
            f64::INFINITY,
            "observe itself does not saturate"
        );
    }

    #[test]
    fn linear_and_binary_bucket_searches_agree() {
        for n in [0, 1, 2, LINEAR_BOUNDS, LINEAR_BOUNDS + 1, 100] {
            let bounds: Vec<f64> = (0..n).map(|i| i as f64 - 10.0).collect();
            let mut values: Vec<f64> = bounds.iter().flat_map(|b| [b - 0.5, *b]).collect();
            values.extend([f64::NEG_INFINITY, f64::INFINITY, -0.0, 1e300]);
            for v in values {
                let want = bounds.iter().filter(|b| **b < v).count();
                assert_eq!(bucket_of(&bounds, v), want, "{n} bounds, {v}");
            }
        }
    }

    #[test]
    fn bounds_are_checked() {
        assert!(Histogram::new(&[1.0, 1.0]).is_err());
        assert!(Histogram::new(&[2.0, 1.0]).is_err());
        assert!(Histogram::new(&[f64::NAN]).is_err());
        assert!(Histogram::new(&[f64::NEG_INFINITY, 1.0]).is_err());
        let h = Histogram::new(&[1.0, f64::INFINITY]).unwrap();
        assert_eq!(h.bounds(), &[1.0]);
        assert!(Histogram::new(&[]).is_ok());
    }

    #[test]
    fn scrapes_under_concurrent_observation_are_consistent() {
        let h = Histogram::new(&[0.5, 1.5]).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (h, stop) = (h.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && n < 2_000_000 {
                        h.observe(1.0);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut counts = Vec::new();
        for _ in 0..2_000 {
            let (sum, count) = h.snapshot(&mut counts);
            assert_eq!(sum, count as f64);
            assert_eq!(counts[0], 0);
            assert_eq!(counts[1], count);
            assert_eq!(counts[2], count);
        }
        stop.store(true, Ordering::Relaxed);
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let (sum, count) = h.snapshot(&mut counts);
        assert_eq!((sum, count), (total as f64, total));
    }

    #[test]
    fn timer_observes_on_drop() {
        let h = Histogram::new(&[60.0]).unwrap();
        drop(h.start_timer());
        let t = h.start_timer();
        t.discard();
        let mut counts = Vec::new();
        let (sum, count) = h.snapshot(&mut counts);
        assert_eq!(count, 1);
        assert!((0.0..60.0).contains(&sum));
        assert_eq!(counts, vec![1, 1]);
    }
}
