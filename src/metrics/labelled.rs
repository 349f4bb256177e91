//! Public handles for labelled families of counters, gauges and histograms.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::counter::Counter;
use super::exemplar::{offer, Exemplar};
use super::family::Family;
use super::gauge::Gauge;
use super::histogram::Histogram;
use super::lock;

/// A family of metrics of one type with fixed label names; cheap clones, thread-safe. Values go in
/// the names' order; the wrong number, or a new set past the cap, lands on the `other` series.
#[derive(Clone)]
pub struct Labelled<M> {
    pub(crate) inner: Arc<Family<M>>,
}

/// A family of counters.
pub type CounterFamily = Labelled<Counter>;
/// A family of gauges.
pub type GaugeFamily = Labelled<Gauge>;
/// A family of histograms sharing one set of buckets.
pub type HistogramFamily = Labelled<Histogram>;

impl<M: Clone> Labelled<M> {
    /// The metric for `values`, created at zero (or empty) if new.
    pub fn get(&self, values: &[&str]) -> M {
        self.inner.with(values, M::clone)
    }

    /// The metric for `values` if it exists; never creates one.
    pub fn existing(&self, values: &[&str]) -> Option<M> {
        self.inner.existing(values).cloned()
    }

    /// Calls `f` with each series' number and metric in label-value order, overflow last.
    pub fn each(&self, f: impl FnMut(u32, &M)) {
        self.inner.each(f)
    }

    /// The label values of the series [`Labelled::each`] numbered `i`.
    pub fn label_values(&self, i: u32) -> Option<Vec<String>> {
        self.inner.label_values(i)
    }
}

impl CounterFamily {
    /// Adds one to the counter for `values`.
    #[inline]
    pub fn inc(&self, values: &[&str]) {
        self.inner.with(values, Counter::inc)
    }

    /// Adds a whole number to the counter for `values`.
    #[inline]
    pub fn inc_by(&self, values: &[&str], n: u64) {
        self.inner.with(values, |c| c.inc_by(n))
    }

    /// Adds `v` to the counter for `values`; negative and NaN are ignored.
    pub fn add(&self, values: &[&str], v: f64) {
        self.inner.with(values, |c| c.add(v))
    }

    /// Adds one to the counter for `values`, offering it an exemplar (see [`Exemplar::new`]) of 1.
    pub fn inc_with_exemplar(&self, values: &[&str], labels: &[(&str, &str)], timestamp: f64) {
        let exemplar = Exemplar::new(labels, 1.0, timestamp);
        self.inner.with_numbered(values, |i, c| {
            c.inc();
            if let Some(e) = exemplar {
                offer(&self.inner.exemplars, i, 1, 0, e);
            }
        })
    }

    /// Offers an exemplar (one read back after a restart) to the counter for `values`.
    pub fn add_exemplar(&self, values: &[&str], e: Exemplar) {
        self.inner
            .with_numbered(values, |i, _| offer(&self.inner.exemplars, i, 1, 0, e))
    }

    /// Every exemplar the family's counters hold, by series number.
    pub fn exemplars(&self) -> BTreeMap<u32, Exemplar> {
        // Inserted: a `collect` into a map compiles its own sort, and these are in key order.
        let mut latest = BTreeMap::new();
        for (i, slots) in lock(&self.inner.exemplars).iter() {
            if let Some(Some(e)) = slots.first() {
                latest.insert(*i, e.clone());
            }
        }
        latest
    }
}

impl GaugeFamily {
    /// Sets the gauge for `values`.
    pub fn set(&self, values: &[&str], v: f64) {
        self.inner.with(values, |g| g.set(v))
    }

    /// Adds `v` (which may be negative) to the gauge for `values`.
    pub fn add(&self, values: &[&str], v: f64) {
        self.inner.with(values, |g| g.add(v))
    }

    /// Adds one to the gauge for `values`.
    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1.0)
    }

    /// Subtracts one from the gauge for `values`.
    pub fn dec(&self, values: &[&str]) {
        self.add(values, -1.0)
    }
}

impl HistogramFamily {
    /// Records `v` in the histogram for `values`.
    #[inline]
    pub fn observe(&self, values: &[&str], v: f64) {
        self.inner.with(values, |h| h.observe(v))
    }

    /// Records `v` for `values`, offering its bucket an exemplar of `v` (see [`Exemplar::new`]).
    pub fn observe_with_exemplar(
        &self,
        values: &[&str],
        v: f64,
        labels: &[(&str, &str)],
        timestamp: f64,
    ) {
        let exemplar = Exemplar::new(labels, v, timestamp);
        self.inner.with_numbered(values, |i, h| {
            h.observe(v);
            if let Some(e) = exemplar {
                self.offer(i, h, e);
            }
        })
    }

    /// Offers an exemplar to its value's bucket of the histogram for `values`.
    pub fn add_exemplar(&self, values: &[&str], e: Exemplar) {
        self.inner.with_numbered(values, |i, h| self.offer(i, h, e))
    }

    fn offer(&self, i: u32, h: &Histogram, e: Exemplar) {
        let slot = h.slot(e.value());
        offer(&self.inner.exemplars, i, h.bounds().len() + 1, slot, e)
    }

    /// Every exemplar the family's histograms hold, by series number, one per bucket, `+Inf` last.
    pub fn exemplars(&self) -> BTreeMap<u32, Vec<Option<Exemplar>>> {
        let mut all = BTreeMap::new();
        for (i, slots) in lock(&self.inner.exemplars).iter() {
            all.insert(*i, slots.to_vec());
        }
        all
    }

    /// The label names, in declaration order.
    pub fn label_names(&self) -> &[String] {
        self.inner.label_names()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Registry;

    #[test]
    fn one_shot_and_cached_handles_share_series() {
        let r = Registry::new();
        let c = r.counter_family("x_total", "x", &["a"]).unwrap();
        c.inc(&["1"]);
        let cached = c.get(&["1"]);
        cached.inc_by(2);
        c.add(&["1"], 0.5);
        assert_eq!(c.get(&["1"]).get(), 3.5);

        let g = r.gauge_family("y", "y", &["a"]).unwrap();
        g.set(&["1"], 4.0);
        g.inc(&["1"]);
        g.dec(&["1"]);
        g.add(&["1"], -1.5);
        assert_eq!(g.get(&["1"]).get(), 2.5);

        let h = r
            .histogram_family("z_seconds", "z", &["a"], &[1.0])
            .unwrap();
        h.observe(&["1"], 0.5);
        h.get(&["1"]).observe(2.0);
        let mut counts = Vec::new();
        assert_eq!(h.get(&["1"]).snapshot(&mut counts), (2.5, 2));
        assert_eq!(h.label_names(), &["a".to_string()]);
    }

    #[test]
    fn each_gives_values_that_remake_the_family() {
        let r = Registry::new();
        let c = r.counter_family("x_total", "x", &["a", "b"]).unwrap();
        let long = "a value longer than eight bytes, \u{e9}t\u{e9}";
        c.inc_by(&["2", long], 3);
        c.add(&["1", ""], 0.25);
        c.inc(&["only one value"]);
        let mut seen = Vec::new();
        c.each(|i, counter| seen.push((c.label_values(i).unwrap(), counter.parts())));
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                (owned(&["1", ""]), (0, 0.25)),
                (owned(&["2", long]), (3, 0.0)),
                (owned(&["other", "other"]), (1, 0.0)),
            ]
        );
    }

    /// Checked when the tests compile: handles are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<super::CounterFamily>();
        assert_send_sync::<super::GaugeFamily>();
        assert_send_sync::<super::HistogramFamily>();
    };
}
