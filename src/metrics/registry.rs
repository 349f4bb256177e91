//! The registry: owns every family, checks names, and renders a scrape.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};

use super::ceiling::ByteCeiling;
use super::counter::Counter;
use super::encode::{
    header_bytes, le_strings, openmetrics_name, series_bytes, write_header, write_histograms,
    write_samples, write_single, Format, Kind, Pieces,
};
use super::error::{Error, ErrorKind, Result};
use super::family::{Charge, Family, DEFAULT_SERIES_CAP, OVERFLOW_VALUE};
use super::format::write_labels;
use super::gauge::Gauge;
use super::histogram::{checked_bounds, Histogram};
use super::labelled::{CounterFamily, GaugeFamily, HistogramFamily};
use super::lock;
use super::name::{check_label_names, valid_metric_name};

/// The name of the counter of lookups sent to a family's overflow series.
const OVERFLOW_METRIC: &str = "conductor_series_overflow_total";

/// About how many bytes [`Registry::render_to`] writes at a time.
pub const RENDER_PIECE: usize = 32 * 1024;

/// Settings for a [`Registry`]. The default is a sensible production setting.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// How many series a labelled family holds before new ones go to its overflow series (10,000).
    pub series_cap: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            series_cap: DEFAULT_SERIES_CAP,
        }
    }
}

/// One metric a [`Collector`] produces.
#[derive(Clone, Debug)]
pub struct Desc {
    /// The metric name.
    pub name: String,
    /// The HELP text.
    pub help: String,
    /// Counter or gauge; collectors produce single unlabelled values.
    pub kind: Kind,
}

/// A source of several unlabelled values read together at scrape time.
pub trait Collector: Send + Sync {
    /// The metrics produced, in a fixed order.
    fn describe(&self) -> Vec<Desc>;
    /// One value per described metric, in order; once per scrape, unlocked.
    fn collect(&self) -> Vec<f64>;
}

#[derive(Clone)]
enum Body {
    /// Counters, and what their values are divided by when rendered.
    Counters(Arc<Family<Counter>>, u32),
    Gauges(Arc<Family<Gauge>>),
    /// Histograms, and their bounds as `le` values, `+Inf` last.
    Histograms(Arc<Family<Histogram>>, Box<[Box<[u8]>]>),
    GaugeFn(Arc<dyn Fn() -> f64 + Send + Sync>),
    Collected(Arc<dyn Collector>, usize),
}

struct Entry {
    name: String,
    help: String,
    kind: Kind,
    body: Body,
}

#[derive(Default)]
struct Entries {
    by_name: BTreeMap<String, Arc<Entry>>,
    /// Every name a family's samples or OpenMetrics header use, to owner.
    claimed: HashMap<String, String>,
}

/// The registry of metric families. Clones are cheap and share the families; thread-safe.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
    ceiling: Option<ByteCeiling>,
}

struct Inner {
    options: RegistryOptions,
    /// Entries are only ever inserted or removed whole (see `lock`).
    entries: Mutex<Entries>,
    overflow: Arc<Family<Counter>>,
}

type Meta<'a> = (&'a str, &'a str, Kind);

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// Creates a registry with default options.
    pub fn new() -> Registry {
        Registry::with_options(RegistryOptions::default())
    }

    /// Creates a registry. It always holds `conductor_series_overflow_total`.
    pub fn with_options(options: RegistryOptions) -> Registry {
        // One series per labelled family, so it cannot itself overflow.
        let overflow = Arc::new(Family::new(
            &["metric"],
            usize::MAX,
            Counter::new(),
            Counter::new,
            None,
        ));
        let registry = Registry {
            inner: Arc::new(Inner {
                options,
                entries: Mutex::new(Entries::default()),
                overflow: overflow.clone(),
            }),
            ceiling: None,
        };
        // The name is valid and the registry empty, so this cannot fail.
        let _ = registry.insert(
            (OVERFLOW_METRIC, "Lookups of new label sets sent to a family's overflow series because it reached its series cap.", Kind::Counter),
            Body::Counters(overflow, 1),
            false,
        );
        registry
    }

    /// A handle on the same registry that holds the labelled families it registers under `ceiling`.
    pub fn within(&self, ceiling: &ByteCeiling) -> Registry {
        Registry {
            inner: self.inner.clone(),
            ceiling: Some(ceiling.clone()),
        }
    }

    /// This registry without a ceiling, for unlabelled metrics.
    fn unbounded(&self) -> Registry {
        Registry {
            inner: self.inner.clone(),
            ceiling: None,
        }
    }

    /// Registers an unlabelled counter. Its name must end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter> {
        Ok(self.unbounded().counter_family(name, help, &[])?.get(&[]))
    }

    /// Registers an unlabelled gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge> {
        Ok(self.unbounded().gauge_family(name, help, &[])?.get(&[]))
    }

    /// Registers a gauge whose value `f` computes at scrape time, with no registry lock held.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Result<()> {
        let body = Body::GaugeFn(Arc::new(f));
        self.insert((name, help, Kind::Gauge), body, false)
    }

    /// Registers an unlabelled histogram with strictly increasing finite bounds (`+Inf` implied).
    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Result<Histogram> {
        let family = self.unbounded().histogram_family(name, help, &[], bounds)?;
        Ok(family.get(&[]))
    }

    /// Registers a family of counters with the given label names.
    pub fn counter_family(&self, name: &str, help: &str, labels: &[&str]) -> Result<CounterFamily> {
        self.fixed_point_counter_family(name, help, labels, 1)
    }

    /// Registers counters rendered divided by `per_unit` (0 is 1). For money: a micro-dollar sum
    /// is exact, 5,703,720 renders `5.70372`; a float sum of dollars `5.703720000000001`.
    pub fn fixed_point_counter_family(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        per_unit: u32,
    ) -> Result<CounterFamily> {
        check_label_names(name, labels)?;
        let body = |f| Body::Counters(f, per_unit.max(1));
        let meta = (name, help, Kind::Counter);
        let inner = self.family(meta, labels, &[], Counter::new, body)?;
        Ok(CounterFamily { inner })
    }

    /// Registers a family of gauges with the given label names.
    pub fn gauge_family(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeFamily> {
        check_label_names(name, labels)?;
        let meta = (name, help, Kind::Gauge);
        let inner = self.family(meta, labels, &[], Gauge::new, Body::Gauges)?;
        Ok(GaugeFamily { inner })
    }

    /// Registers a family of histograms with the given label names and bounds.
    pub fn histogram_family(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
    ) -> Result<HistogramFamily> {
        check_label_names(name, labels)?;
        let bounds = checked_bounds(name, bounds)?;
        let les = le_strings(&bounds);
        let make = move || Histogram::with_checked_bounds(bounds.clone());
        let body = |f| Body::Histograms(f, les.clone());
        let meta = (name, help, Kind::Histogram);
        let inner = self.family(meta, labels, &les, make, body)?;
        Ok(HistogramFamily { inner })
    }

    /// Serves the counter, gauge or histogram family registered as `of` under a second name too,
    /// with its own HELP, for a fact two systems name differently; a gauge's may end in `_total`
    /// (conductor-loop's `conductor_active_runs_total`). Fails as registration does.
    pub fn alias(&self, name: &str, help: &str, of: &str) -> Result<()> {
        let original = lock(&self.inner.entries).by_name.get(of).cloned();
        let computed = |e: &Arc<Entry>| matches!(e.body, Body::GaugeFn(_) | Body::Collected(..));
        let Some(e) = original.filter(|e| !computed(e)) else {
            let what = "is not a registered counter, gauge or histogram family";
            return Err(Error::refused(format!("alias {name}: {of} {what}")));
        };
        self.insert((name, help, e.kind), e.body.clone(), e.kind == Kind::Gauge)
    }

    /// Registers every metric a collector describes, or none of them.
    pub fn register_collector(&self, collector: Arc<dyn Collector>) -> Result<()> {
        let descs = collector.describe();
        for (i, d) in descs.iter().enumerate() {
            let body = Body::Collected(collector.clone(), i);
            if let Err(e) = self.insert((&d.name, &d.help, d.kind), body, false) {
                self.remove(descs[..i].iter().map(|d| d.name.as_str()));
                return Err(e);
            }
        }
        Ok(())
    }

    /// The number of series across all families, for cardinality checks.
    pub fn series_count(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|e| match &e.body {
                Body::Counters(f, _) => f.len(),
                Body::Gauges(f) => f.len(),
                Body::Histograms(f, _) => f.len(),
                Body::GaugeFn(_) | Body::Collected(..) => 1,
            })
            .sum()
    }

    /// Appends a scrape in `fmt` to `out`, sorted by name and label values; callbacks run unlocked.
    pub fn render(&self, out: &mut Vec<u8>, fmt: Format) {
        let mut never = |_: &[u8]| Ok(());
        // Nothing is ever passed on, so nothing can fail.
        let _ = self.render_pieces(out, &mut Pieces::new(usize::MAX, &mut never), fmt);
    }

    /// Writes [`Registry::render`]'s bytes to `out` in pieces of about [`RENDER_PIECE`] cut between
    /// series, holding no lock recording needs while `out` waits; stops at its first error.
    pub fn render_to(&self, out: &mut impl io::Write, fmt: Format) -> io::Result<()> {
        // Room for a piece and the series that passes it, mostly.
        let mut buf = Vec::with_capacity(RENDER_PIECE + RENDER_PIECE / 4);
        let mut write = |piece: &[u8]| out.write_all(piece);
        let mut pieces = Pieces::new(RENDER_PIECE, &mut write);
        self.render_pieces(&mut buf, &mut pieces, fmt)?;
        pieces.flush(&mut buf)
    }

    fn render_pieces(
        &self,
        out: &mut Vec<u8>,
        pieces: &mut Pieces<'_>,
        fmt: Format,
    ) -> io::Result<()> {
        let mut collected: Vec<(*const (), Vec<f64>)> = Vec::new();
        for e in &self.snapshot() {
            let name = e.name.as_str();
            // A family with no series still shows HELP and TYPE, as the Go and Python clients do.
            write_header(out, fmt, name, &e.help, e.kind);
            match &e.body {
                Body::Counters(f, 1) => write_samples(out, pieces, fmt, name, f, Counter::get)?,
                Body::Counters(f, per_unit) => {
                    // One correctly rounded division: the double nearest the exact decimal.
                    let per_unit = f64::from(*per_unit);
                    write_samples(out, pieces, fmt, name, f, |c| c.get() / per_unit)?
                }
                Body::Gauges(f) => write_samples(out, pieces, fmt, name, f, Gauge::get)?,
                Body::Histograms(f, les) => write_histograms(out, pieces, fmt, name, les, f)?,
                Body::GaugeFn(f) => {
                    let v = guarded(|| vec![f()]).first().copied().unwrap_or(f64::NAN);
                    write_single(out, fmt, name, v);
                }
                Body::Collected(c, i) => {
                    // A collector's values are read once per scrape.
                    let key = Arc::as_ptr(c) as *const ();
                    if !collected.iter().any(|(k, _)| *k == key) {
                        collected.push((key, guarded(|| c.collect())));
                    }
                    let values = collected.iter().find(|(k, _)| *k == key);
                    let v = values.and_then(|(_, v)| v.get(*i)).copied();
                    let v = v.unwrap_or(f64::NAN);
                    write_single(out, fmt, name, v);
                }
            }
        }
        if fmt == Format::OpenMetrics {
            out.extend_from_slice(b"# EOF\n");
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<Arc<Entry>> {
        lock(&self.inner.entries)
            .by_name
            .values()
            .cloned()
            .collect()
    }

    /// Registers a family made by `make`; `les` are a histogram's bounds.
    fn family<M: Clone>(
        &self,
        meta: Meta<'_>,
        labels: &[&str],
        les: &[Box<[u8]>],
        make: impl Fn() -> M + Send + Sync + 'static,
        body: impl FnOnce(Arc<Family<M>>) -> Body,
    ) -> Result<Arc<Family<M>>> {
        let overflowed = self.overflowed(meta.0, labels);
        let (charge, counted) = self.charge(meta, les, labels)?;
        let cap = self.inner.options.series_cap;
        let family = Arc::new(Family::new(labels, cap, overflowed, make, charge));
        self.insert(meta, body(family.clone()), false)
            .inspect_err(|_| {
                if let Some(ceiling) = &self.ceiling {
                    ceiling.give_back(counted.0, counted.1);
                }
            })?;
        Ok(family)
    }

    /// Counts a new family's fixed part (header; its one series, or its overflow series and that
    /// one's `OVERFLOW_METRIC` line) under the ceiling, if any; gives the series' charge and count.
    fn charge(
        &self,
        (name, help, kind): Meta<'_>,
        les: &[Box<[u8]>],
        labels: &[&str],
    ) -> Result<(Option<Charge>, (u64, u64))> {
        let Some(ceiling) = &self.ceiling else {
            return Ok((None, (0, 0)));
        };
        let header = header_bytes(name, help, kind);
        let (label_bytes, series) = if labels.is_empty() {
            (0, series_bytes(name, kind, les, 0))
        } else {
            // `a="other",b="other"`, and `metric="name"`.
            let other: usize = labels
                .iter()
                .map(|l| l.len() + "=\"\",".len() + OVERFLOW_VALUE.len())
                .sum::<usize>()
                - 1;
            let mut metric = Vec::new();
            write_labels(&mut metric, [("metric", name)].into_iter());
            let overflow = series_bytes(OVERFLOW_METRIC, Kind::Counter, &[], metric.len());
            let series = series_bytes(name, kind, les, other);
            (other as u64, series + overflow)
        };
        let fixed = (label_bytes, header + series);
        if let Err(left) = ceiling.take(fixed.0, fixed.1) {
            let message = format!(
                "metric {name} does not fit under its byte ceiling: its header and \
                 overflow series take {} bytes of a scrape and {} label bytes, where \
                 {} and {} are left",
                fixed.1, fixed.0, left.1, left.0
            );
            return Err(Error::new(ErrorKind::OverCeiling, message));
        }
        // An unlabelled family's one series is counted: every lookup finds it.
        let charge = (!labels.is_empty()).then(|| {
            let (name, les) = (name.to_string(), les.to_vec());
            Charge {
                ceiling: ceiling.clone(),
                weigh: Box::new(move |labels| series_bytes(&name, kind, &les, labels)),
            }
        });
        Ok((charge, fixed))
    }

    fn overflowed(&self, name: &str, labels: &[&str]) -> Counter {
        if labels.is_empty() || !valid_metric_name(name) {
            return Counter::new();
        }
        self.inner.overflow.with(&[name], Counter::clone)
    }

    /// Adds a family; `total_gauge` lets a gauge's name end in `_total`.
    fn insert(&self, (name, help, kind): Meta<'_>, body: Body, total_gauge: bool) -> Result<()> {
        let total = name.ends_with("_total");
        let refused = if !valid_metric_name(name) {
            format!("metric name {name:?} must match [a-zA-Z_:][a-zA-Z0-9_:]*")
        } else if kind == Kind::Counter && !total {
            format!("counter {name} must end in _total")
        } else if kind != Kind::Counter && total && !total_gauge {
            format!("metric {name} is not a counter and must not end in _total")
        } else {
            String::new()
        };
        if !refused.is_empty() {
            return Err(Error::refused(refused));
        }
        let claims = claimed_names(name, kind);
        let mut entries = lock(&self.inner.entries);
        let duplicate = |m| Err(Error::new(ErrorKind::Duplicate, m));
        if entries.by_name.contains_key(name) {
            return duplicate(format!("metric {name} is already registered"));
        }
        if let Some(owner) = claims.iter().find_map(|c| entries.claimed.get(c)) {
            return duplicate(format!(
                "metric {name} clashes with the samples of registered metric {owner}"
            ));
        }
        for c in claims {
            entries.claimed.insert(c, name.to_string());
        }
        let entry = Entry {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            body,
        };
        entries.by_name.insert(name.to_string(), Arc::new(entry));
        Ok(())
    }

    fn remove<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut entries = lock(&self.inner.entries);
        for name in names {
            entries.by_name.remove(name);
            entries.claimed.retain(|_, owner| owner != name);
        }
    }
}

/// Runs a user callback, a panic giving no values (rendered as NaN).
fn guarded(f: impl FnOnce() -> Vec<f64>) -> Vec<f64> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_default()
}

/// The names a family's samples and OpenMetrics header occupy.
fn claimed_names(name: &str, kind: Kind) -> Vec<String> {
    let mut names = vec![name.to_string()];
    let base = openmetrics_name(name, kind);
    if base != name {
        names.push(base.to_string());
    }
    if kind == Kind::Histogram {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.push(format!("{name}{suffix}"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        r.render(&mut out, Format::Text);
        String::from_utf8(out).expect("the encoder writes UTF-8")
    }

    /// A registry whose scrape is many pieces long: counters, gauges and
    /// histograms with 2,000 series each, in both formats' shapes, and
    /// exemplars on some counters and buckets.
    fn large() -> (Registry, CounterFamily, HistogramFamily) {
        let r = Registry::new();
        let c = r.counter_family("c_total", "C.", &["phase"]).unwrap();
        let g = r.gauge_family("g", "G.", &["phase"]).unwrap();
        let h = r
            .histogram_family("h_seconds", "H.", &["phase"], &[0.5, 1.0])
            .unwrap();
        r.gauge_fn("f", "F.", || 1.5).unwrap();
        for i in 0..2000 {
            let phase = format!("phase-{i:05}");
            c.inc_by(&[&phase], i);
            g.set(&[&phase], f64::from(i as u32) / 8.0);
            h.observe(&[&phase], 0.75);
            if i % 100 == 0 {
                let run = [("run_id", phase.as_str())];
                c.inc_with_exemplar(&[&phase], &run, 1_795_000_000.5);
                h.observe_with_exemplar(&[&phase], 0.25, &run, 1_795_000_000.5);
            }
        }
        (r, c, h)
    }

    /// Records each `write_all` a scrape makes.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_scrape_in_pieces_is_the_whole_scrape_cut_between_series() {
        let (r, _, _) = large();
        for fmt in [Format::Text, Format::OpenMetrics] {
            let mut whole = Vec::new();
            r.render(&mut whole, fmt);
            let mut writes = Writes::default();
            r.render_to(&mut writes, fmt).unwrap();
            assert!(writes.0.len() > 4, "{} pieces", writes.0.len());
            assert_eq!(writes.0.concat(), whole);
            // Each piece ends a series, and holds a piece and at most the
            // series that passed it (a histogram's 5 lines here).
            for piece in &writes.0 {
                assert!(piece.ends_with(b"\n"));
                assert!(piece.len() < RENDER_PIECE + 512, "{}", piece.len());
            }
        }
    }

    #[test]
    fn a_failing_writer_stops_the_scrape() {
        struct Fails(usize);
        impl io::Write for Fails {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0 += 1;
                if self.0 > 1 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (r, _, _) = large();
        let mut out = Fails(0);
        let err = r.render_to(&mut out, Format::Text).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(out.0, 2, "nothing is written after the first error");
    }

    #[test]
    fn a_slow_writer_holds_no_lock_that_recording_needs() {
        let (r, c, _) = large();
        // The writer waits, as a slow client makes it wait, for a new
        // series of the family being rendered: it would never come if the
        // family's insert mutex were held during the write.
        struct AddsSeries(CounterFamily, usize, Vec<u8>);
        impl io::Write for AddsSeries {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    self.2 = buf.to_vec();
                }
                self.1 += 1;
                let family = self.0.clone();
                let n = self.1;
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    family.inc(&[&format!("added-{n}")]);
                    let _ = tx.send(());
                });
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .map_err(|_| io::Error::other("recording was blocked by the scrape"))?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = AddsSeries(c.clone(), 0, Vec::new());
        r.render_to(&mut out, Format::Text).unwrap();
        // The first write came in the middle of c_total's series.
        let first = String::from_utf8(out.2).unwrap();
        assert!(first.starts_with("# HELP c_total ") && !first.contains("# HELP conductor"));
        assert!(text(&r).contains("c_total{phase=\"added-1\"} 1\n"));
    }

    #[test]
    fn a_slow_writer_never_holds_up_an_exemplar() {
        let (r, c, h) = large();
        // The writer waits, as a slow client makes it wait, for exemplars
        // offered to the families being rendered: they would never come if
        // a scrape held the families' exemplars while it writes.
        struct Offers(CounterFamily, HistogramFamily, usize);
        impl io::Write for Offers {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.2 += 1;
                let (c, h) = (self.0.clone(), self.1.clone());
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let run = [("run_id", "late")];
                    c.inc_with_exemplar(&["phase-00100"], &run, 1_795_000_001.0);
                    h.observe_with_exemplar(&["phase-00100"], 0.25, &run, 1_795_000_001.0);
                    let _ = tx.send(());
                });
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .map_err(|_| io::Error::other("an exemplar was held up by the scrape"))?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Offers(c, h, 0);
        r.render_to(&mut out, Format::OpenMetrics).unwrap();
        assert!(out.2 > 4);
    }

    #[test]
    fn an_alias_serves_the_same_series_under_a_second_name() {
        let r = Registry::new();
        let g = r.gauge("active_runs", "Runs running.").unwrap();
        let h = r
            .histogram_family("phase_seconds", "Phases.", &["phase"], &[1.0])
            .unwrap();
        r.alias("active_runs_total", "Source name.", "active_runs")
            .unwrap();
        r.alias("source_phase_seconds", "Source name.", "phase_seconds")
            .unwrap();
        g.set(3.0);
        h.observe(&["design"], 0.5);
        let out = text(&r);
        assert!(out.contains("# TYPE active_runs_total gauge\nactive_runs_total 3\n"));
        assert!(out.contains("\nactive_runs 3\n"));
        assert!(out.contains("source_phase_seconds_bucket{phase=\"design\",le=\"1\"} 1\n"));
        assert!(out.contains("\nphase_seconds_count{phase=\"design\"} 1\n"));
        assert!(out.contains("# HELP source_phase_seconds Source name.\n"));
    }

    #[test]
    fn an_alias_is_checked_as_a_registration_is() {
        let r = Registry::new();
        r.counter("done_total", "Done.").unwrap();
        r.histogram("took_seconds", "Took.", &[1.0]).unwrap();
        let missing = r.alias("x_total", "X.", "nothing").unwrap_err();
        assert!(missing.to_string().contains("nothing is not a registered"));
        let suffix = r.alias("done", "Done.", "done_total").unwrap_err();
        assert_eq!(suffix.to_string(), "counter done must end in _total");
        // Only a gauge's second name may end in _total.
        let histogram = r.alias("took_total", "Took.", "took_seconds").unwrap_err();
        assert!(histogram.to_string().contains("must not end in _total"));
        assert!(r
            .alias("done_total", "Done.", "done_total")
            .unwrap_err()
            .is_duplicate());
        let clash = r.alias("took_seconds_count_total", "X.", "done_total");
        assert!(clash.unwrap_err().is_duplicate());
    }
}
