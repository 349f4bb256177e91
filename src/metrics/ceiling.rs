//! A ceiling in bytes shared by a set of families: their labels and exposition.

use std::sync::{Arc, Mutex};

use super::lock;

/// A ceiling on the bytes of families registered [`within`](super::Registry::within) it: their
/// escaped labels, and the most a scrape of them writes, each under its limit (0: none). A family
/// whose fixed part does not fit is refused; a new series that does not fit goes to the overflow
/// series. Clones are cheap and share the count; thread-safe.
#[derive(Clone, Debug)]
pub struct ByteCeiling {
    /// Limits and used, of labels and of exposition; changes cannot panic.
    inner: Arc<Mutex<[(u64, u64); 2]>>,
}

impl ByteCeiling {
    /// A ceiling of `label_bytes` and `exposition_bytes`; 0 is no limit.
    pub fn new(label_bytes: u64, exposition_bytes: u64) -> ByteCeiling {
        let limits = [(label_bytes, 0), (exposition_bytes, 0)];
        ByteCeiling {
            inner: Arc::new(Mutex::new(limits)),
        }
    }

    /// The label bytes and exposition bytes counted so far.
    pub fn used(&self) -> (u64, u64) {
        let [labels, exposition] = *lock(&self.inner);
        (labels.1, exposition.1)
    }

    /// Counts `labels` and `exposition` bytes if both fit, else gives what is left under each.
    pub(crate) fn take(&self, labels: u64, exposition: u64) -> Result<(), (u64, u64)> {
        let mut u = lock(&self.inner);
        let fits = |(limit, used): (u64, u64), more: u64| {
            limit == 0 || used.checked_add(more).is_some_and(|n| n <= limit)
        };
        if !fits(u[0], labels) || !fits(u[1], exposition) {
            let left = |(limit, used): (u64, u64)| limit.saturating_sub(used);
            return Err((left(u[0]), left(u[1])));
        }
        u[0].1 = u[0].1.saturating_add(labels);
        u[1].1 = u[1].1.saturating_add(exposition);
        Ok(())
    }

    pub(crate) fn give_back(&self, labels: u64, exposition: u64) {
        let mut u = lock(&self.inner);
        u[0].1 = u[0].1.saturating_sub(labels);
        u[1].1 = u[1].1.saturating_sub(exposition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Registry};

    #[test]
    fn counts_what_fits_and_nothing_of_what_does_not() {
        let c = ByteCeiling::new(10, 100);
        assert!(c.take(4, 60).is_ok());
        assert_eq!(c.take(7, 1), Err((6, 40)), "labels over");
        assert_eq!(c.take(1, 41), Err((6, 40)), "exposition over");
        assert_eq!(c.used(), (4, 60));
        assert!(c.take(6, 40).is_ok());
        assert!(c.take(0, 1).is_err());
        c.give_back(6, 40);
        assert_eq!(c.used(), (4, 60));
        let unlimited = ByteCeiling::new(0, 0);
        assert!(unlimited.take(u64::MAX, u64::MAX).is_ok());
        assert!(unlimited.take(1, 1).is_ok());
        // No limit leaves 0 of it, where the other is over.
        let one = ByteCeiling::new(0, 10);
        assert_eq!(one.take(u64::MAX, 11), Err((0, 10)));
    }

    /// The bytes of the lines of `text` that the ceiling counts: all but
    /// the header of `conductor_series_overflow_total` and its lines for
    /// families not under the ceiling.
    fn counted(text: &str) -> u64 {
        text.split_inclusive('\n')
            .filter(|l| !l.contains("conductor_series_overflow_total ") && *l != "# EOF\n")
            .filter(|l| !l.starts_with("conductor_series_overflow_total{metric=\"free"))
            .map(|l| l.len() as u64)
            .sum()
    }

    fn scrape(r: &Registry, fmt: Format) -> String {
        let mut out = Vec::new();
        r.render(&mut out, fmt);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_scrape_of_the_families_under_a_ceiling_never_weighs_more_than_it_counted() {
        let r = Registry::new();
        r.counter_family("free_total", "Not under the ceiling.", &["a"])
            .unwrap()
            .inc(&["x"]);
        let ceiling = ByteCeiling::new(0, 0);
        let w = r.within(&ceiling);
        let c = w
            .counter_family("c_total", "C \"q\" \\ help.", &["a", "b"])
            .unwrap();
        let g = w.gauge_family("g_bytes", "G.", &["a"]).unwrap();
        let h = w
            .histogram_family("h_seconds", "H.", &["a"], &[1e-7, 0.5, 123456.789])
            .unwrap();
        let u = w.gauge_family("u", "U.", &[]).unwrap();
        let widest = -1.2345678901234567e-300;
        u.set(&[], widest);
        c.add(&["x", "y\"z\n"], 1.2345678901234567e300);
        c.add(&["only one value"], 1.2345678901234567e300);
        g.set(&["\\"], widest);
        g.set(&["one", "too many"], widest);
        h.observe(&["x"], widest);
        h.observe(&["x", "y"], widest);
        let unlabelled = w.histogram_family("v_seconds", "V.", &[], &[1.0]).unwrap();
        unlabelled.observe(&[], widest);
        for fmt in [Format::Text, Format::OpenMetrics] {
            let text = scrape(&r, fmt);
            assert!(counted(&text) <= ceiling.used().1, "{fmt:?}: {text}");
        }
        // Counters and gauges at their widest weigh exactly what was
        // counted: a label set's line, as the scrape writes it.
        let before = ceiling.used();
        g.set(&["y"], widest);
        let line = "g_bytes{a=\"y\"} -1.2345678901234568e-300\n";
        assert_eq!(ceiling.used().1 - before.1, line.len() as u64);
        assert_eq!(ceiling.used().0 - before.0, "a=\"y\"".len() as u64);
        let text = scrape(&r, Format::Text);
        assert!(text.contains(line), "{text}");
    }

    #[test]
    fn a_family_whose_fixed_part_does_not_fit_is_refused_and_counts_nothing() {
        let r = Registry::new();
        let ceiling = ByteCeiling::new(1_000, 400);
        let w = r.within(&ceiling);
        w.gauge_family("small", "S.", &["a"]).unwrap();
        let used = ceiling.used();
        let err = w
            .histogram_family("big_seconds", "B.", &["a"], &[1.0, 2.0, 3.0])
            .err()
            .unwrap();
        assert!(err.to_string().contains("byte ceiling"), "{err}");
        assert_eq!(ceiling.used(), used);
        // A registration refused for another reason gives back its count.
        assert!(w.gauge_family("small", "S.", &["a"]).is_err());
        assert_eq!(ceiling.used(), used);
        // Once full, new label sets go to the overflow series.
        let f = w.gauge_family("more", "M.", &["a"]).unwrap();
        let mut i = 0;
        while ceiling.take(0, 0).is_ok() && f.existing(&["other"]).is_none() {
            f.set(&[&i.to_string()], 1.0);
            i += 1;
        }
        assert!(i > 0 && ceiling.used().1 <= 400, "{i} {:?}", ceiling.used());
    }

    /// Checked when the tests compile: the ceiling is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ByteCeiling>();
    };
}
