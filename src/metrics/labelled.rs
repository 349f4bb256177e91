//! Public handles for labelled families of counters, gauges and histograms.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::counter::Counter;
use super::exemplar::Exemplar;
use super::family::Family;
use super::gauge::Gauge;
use super::histogram::Histogram;

/// A family of counters with a fixed list of label names. Cloning is cheap;
/// safe to share across threads.
///
/// Look a series up with [`CounterFamily::get`] and cache the handle, or
/// use the one-shot methods, which skip the handle's reference count.
/// Label values are given in the order the names were declared; a list of
/// the wrong length, or a new list past the series cap, lands on the
/// overflow series whose every value is `other`.
#[derive(Clone)]
pub struct CounterFamily {
    pub(crate) inner: Arc<Family<Counter>>,
}

impl CounterFamily {
    /// The counter for `values`, created at zero if new.
    pub fn get(&self, values: &[&str]) -> Counter {
        self.inner.with(values, Counter::clone)
    }

    /// The counter for `values` if it exists; never creates one.
    pub fn existing(&self, values: &[&str]) -> Option<Counter> {
        self.inner.existing(values).cloned()
    }

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

    /// Adds one to the counter for `values` and offers it an exemplar of
    /// that increment: `labels` as [`Exemplar::new`] keeps them, the value
    /// 1 and `timestamp` (Unix seconds). The counter keeps the latest
    /// exemplar by timestamp, and OpenMetrics scrapes show it.
    ///
    /// Slower than [`CounterFamily::inc`], and meant for events worth
    /// linking to (a finished run, not a request): it allocates and takes
    /// the family's exemplar lock.
    pub fn inc_with_exemplar(&self, values: &[&str], labels: &[(&str, &str)], timestamp: f64) {
        let exemplar = Exemplar::new(labels, 1.0, timestamp);
        self.inner.with_numbered(values, |i, c| {
            c.inc();
            if let Some(e) = exemplar {
                self.inner.exemplars.offer(i, 1, 0, e);
            }
        })
    }

    /// Offers an exemplar made elsewhere, such as one read back after a
    /// restart, to the counter for `values`, which keeps it unless it holds
    /// a later one. The value is unchanged.
    pub fn add_exemplar(&self, values: &[&str], e: Exemplar) {
        self.inner
            .with_numbered(values, |i, _| self.inner.exemplars.offer(i, 1, 0, e))
    }

    /// Every exemplar the family's counters hold, by the series numbers
    /// [`CounterFamily::each`] gives.
    pub fn exemplars(&self) -> BTreeMap<u32, Exemplar> {
        let by_series = self.inner.exemplars.lock();
        by_series
            .iter()
            .filter_map(|(i, slots)| Some((*i, slots.first()?.clone()?)))
            .collect()
    }

    /// Calls `f` with each series' number and counter, in label-value
    /// order, the overflow series last: adding each, by its
    /// [`CounterFamily::label_values`], to a new family in that order
    /// remakes this one. Cheap: the values are spelled out only when asked
    /// for, so that a copy of every value can be taken quickly.
    pub fn each(&self, f: impl FnMut(u32, &Counter)) {
        self.inner.each(f)
    }

    /// The label values of the series [`CounterFamily::each`] numbered `i`.
    pub fn label_values(&self, i: u32) -> Option<Vec<String>> {
        self.inner.label_values(i)
    }
}

/// A family of gauges with a fixed list of label names. Cloning is cheap;
/// safe to share across threads. Lookups behave as for [`CounterFamily`].
#[derive(Clone)]
pub struct GaugeFamily {
    pub(crate) inner: Arc<Family<Gauge>>,
}

impl GaugeFamily {
    /// The gauge for `values`, created at zero if new.
    pub fn get(&self, values: &[&str]) -> Gauge {
        self.inner.with(values, Gauge::clone)
    }

    /// The gauge for `values` if it exists; never creates one.
    pub fn existing(&self, values: &[&str]) -> Option<Gauge> {
        self.inner.existing(values).cloned()
    }

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

    /// Calls `f` with each series' number and gauge, as
    /// [`CounterFamily::each`] does.
    pub fn each(&self, f: impl FnMut(u32, &Gauge)) {
        self.inner.each(f)
    }

    /// The label values of the series [`GaugeFamily::each`] numbered `i`.
    pub fn label_values(&self, i: u32) -> Option<Vec<String>> {
        self.inner.label_values(i)
    }
}

/// A family of histograms sharing one set of buckets and a fixed list of
/// label names. Cloning is cheap; safe to share across threads. Lookups
/// behave as for [`CounterFamily`].
#[derive(Clone)]
pub struct HistogramFamily {
    pub(crate) inner: Arc<Family<Histogram>>,
}

impl HistogramFamily {
    /// The histogram for `values`, created empty if new.
    pub fn get(&self, values: &[&str]) -> Histogram {
        self.inner.with(values, Histogram::clone)
    }

    /// The histogram for `values` if it exists; never creates one.
    pub fn existing(&self, values: &[&str]) -> Option<Histogram> {
        self.inner.existing(values).cloned()
    }

    /// Records `v` in the histogram for `values`.
    #[inline]
    pub fn observe(&self, values: &[&str], v: f64) {
        self.inner.with(values, |h| h.observe(v))
    }

    /// Records `v` in the histogram for `values` and offers the bucket it
    /// falls in an exemplar: `labels` as [`Exemplar::new`] keeps them, the
    /// value `v` and `timestamp` (Unix seconds). Each bucket keeps the
    /// latest exemplar by timestamp, and OpenMetrics scrapes show it on the
    /// bucket's line.
    ///
    /// Slower than [`HistogramFamily::observe`], and meant for
    /// observations worth linking to (a run, not a request): it allocates
    /// and takes the family's exemplar lock.
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
                self.inner
                    .exemplars
                    .offer(i, h.bounds().len() + 1, h.slot(v), e);
            }
        })
    }

    /// Offers an exemplar made elsewhere, such as one read back after a
    /// restart, to the bucket of the histogram for `values` that its value
    /// falls in, which keeps it unless it holds a later one. The counts are
    /// unchanged.
    pub fn add_exemplar(&self, values: &[&str], e: Exemplar) {
        self.inner.with_numbered(values, |i, h| {
            let slot = h.slot(e.value());
            self.inner.exemplars.offer(i, h.bounds().len() + 1, slot, e)
        })
    }

    /// Every exemplar the family's histograms hold, by the series numbers
    /// [`HistogramFamily::each`] gives: one entry per bucket, `+Inf` last.
    pub fn exemplars(&self) -> BTreeMap<u32, Vec<Option<Exemplar>>> {
        let by_series = self.inner.exemplars.lock();
        by_series
            .iter()
            .map(|(i, slots)| (*i, slots.to_vec()))
            .collect()
    }

    /// The label names, in declaration order.
    pub fn label_names(&self) -> &[String] {
        self.inner.label_names()
    }

    /// Calls `f` with each series' number and histogram, as
    /// [`CounterFamily::each`] does.
    pub fn each(&self, f: impl FnMut(u32, &Histogram)) {
        self.inner.each(f)
    }

    /// The label values of the series [`HistogramFamily::each`] numbered `i`.
    pub fn label_values(&self, i: u32) -> Option<Vec<String>> {
        self.inner.label_values(i)
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
