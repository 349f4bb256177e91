//! The text encoders (Prometheus 0.0.4, OpenMetrics 1.0), writing into a buffer sent in pieces.

use std::io;

use super::exemplar::Slots;
use super::family::{Family, Series};
use super::format::{
    write_float, write_float_openmetrics, write_help, write_label_value, write_small_uint,
    write_uint,
};
use super::histogram::Histogram;
use super::lock;

/// The Content-Type of text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Content-Type of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default.
    Text,
    /// OpenMetrics 1.0 text, served only when a scrape asks for it.
    OpenMetrics,
}

impl Format {
    /// The Content-Type header value for this format.
    pub fn content_type(self) -> &'static str {
        [TEXT_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE][self as usize]
    }

    /// The format for a scrape's `Accept`: OpenMetrics when `application/openmetrics-text` (version
    /// 1.0.0 or none) has a quality no lower than any text format's; otherwise 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut om, mut text) = (0.0f64, 0.0f64);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version) = (1.0f64, None);
            for (k, v) in parts.filter_map(|p| p.split_once('=')) {
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text" if matches!(version, None | Some("1.0.0")) => {
                    om = om.max(q)
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// A metric type, as named on a `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up; its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        ["counter", "gauge", "histogram"][self as usize]
    }
}

/// The base units that earn a `# UNIT` line in OpenMetrics.
const UNITS: [&str; 9] = [
    "seconds", "bytes", "ratio", "joules", "grams", "meters", "volts", "amperes", "celsius",
];

/// The OpenMetrics family name: a counter's name without `_total`.
pub(crate) fn openmetrics_name(name: &str, kind: Kind) -> &str {
    match kind {
        Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// Writes the `# HELP` and `# TYPE` lines (and `# UNIT` in OpenMetrics).
pub(crate) fn write_header(out: &mut Vec<u8>, fmt: Format, name: &str, help: &str, kind: Kind) {
    match fmt {
        Format::Text => {
            start_line(out, "# HELP ", name);
            write_help(out, help);
            start_line(out, "\n# TYPE ", name);
            out.extend_from_slice(kind.as_str().as_bytes());
        }
        Format::OpenMetrics => {
            let base = openmetrics_name(name, kind);
            start_line(out, "# TYPE ", base);
            out.extend_from_slice(kind.as_str().as_bytes());
            if let Some(unit) = UNITS
                .iter()
                .find(|u| base.strip_suffix(*u).is_some_and(|s| s.ends_with('_')))
            {
                start_line(out, "\n# UNIT ", base);
                out.extend_from_slice(unit.as_bytes());
            }
            start_line(out, "\n# HELP ", base);
            write_label_value(out, help);
        }
    }
    out.push(b'\n');
}

fn start_line(out: &mut Vec<u8>, tag: &str, name: &str) {
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
}

#[inline(always)]
fn write_value(out: &mut Vec<u8>, fmt: Format, v: f64) {
    // The usual value, a whole number below 1e6, is its digits; the u32 round trip skips `trunc`.
    if (0.0..1e6).contains(&v) && v as u32 as f64 == v {
        write_small_uint(out, v as u32);
        if fmt == Format::OpenMetrics {
            out.extend_from_slice(b".0");
        }
        return;
    }
    match fmt {
        Format::Text => write_float(out, v),
        Format::OpenMetrics => write_float_openmetrics(out, v),
    }
}

fn write_series_name(out: &mut Vec<u8>, name: &str, labels: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if !labels.is_empty() {
        out.push(b'{');
        out.extend_from_slice(labels);
        out.push(b'}');
    }
    out.push(b' ');
}

pub(crate) fn write_single(out: &mut Vec<u8>, fmt: Format, name: &str, v: f64) {
    write_series_name(out, name, b"");
    write_value(out, fmt, v);
    out.push(b'\n');
}

/// Where a scrape goes: `flush` gets the buffer between series once it holds a piece. `numbers`
/// copies a family's series numbers, so its insert mutex is not held while `flush` waits for a
/// slow client; `scratch` is reused between histogram series.
pub(crate) struct Pieces<'a> {
    piece: usize,
    flush: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
    numbers: Vec<u32>,
    scratch: Vec<u64>,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(
        piece: usize,
        flush: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Pieces<'a> {
        Pieces {
            piece,
            flush,
            numbers: Vec::new(),
            scratch: Vec::new(),
        }
    }

    #[cold]
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if !out.is_empty() {
            (self.flush)(out)?;
            out.clear();
        }
        Ok(())
    }

    /// Calls `write` on each series of `f` in render order, with its exemplars if asked, locked
    /// while writing (offers wait rather than a scrape copy them) but not while a piece is flushed.
    fn each<M: Clone>(
        &mut self,
        out: &mut Vec<u8>,
        f: &Family<M>,
        exemplars: bool,
        mut write: impl FnMut(&mut Vec<u8>, &Series<M>, Option<&Slots>),
    ) -> io::Result<()> {
        let mut numbers = std::mem::take(&mut self.numbers);
        f.numbers_into(&mut numbers);
        let lock = || exemplars.then(|| lock(&f.exemplars));
        let mut held = lock();
        let mut result = Ok(());
        for &i in &numbers {
            let Some(s) = f.series(i) else {
                continue;
            };
            write(out, s, held.as_ref().and_then(|e| e.get(&i)));
            if out.len() >= self.piece {
                drop(held.take());
                result = self.flush(out);
                if result.is_err() {
                    break;
                }
                held = lock();
            }
        }
        self.numbers = numbers;
        result
    }
}

/// Writes one `name{labels} value` line per series, and in OpenMetrics its exemplar. Each series
/// keeps its `name{labels} ` from the first scrape (unless the family has exemplars), so a line is
/// one copy and the value. Out of line so its loop compiles on its own.
#[inline(never)]
pub(crate) fn write_samples<M: Clone>(
    out: &mut Vec<u8>,
    pieces: &mut Pieces<'_>,
    fmt: Format,
    name: &str,
    f: &Family<M>,
    get: impl Fn(&M) -> f64,
) -> io::Result<()> {
    let exemplars = fmt == Format::OpenMetrics && !lock(&f.exemplars).is_empty();
    let cached = !exemplars && f.prefixes(name);
    pieces.each(out, f, exemplars, |out, s, slots| {
        if cached {
            out.extend_from_slice(s.prefix.get_or_init(|| {
                let mut prefix = Vec::new();
                write_series_name(&mut prefix, name, &s.labels);
                prefix.into()
            }));
        } else {
            write_series_name(out, name, &s.labels);
        }
        write_value(out, fmt, get(&s.metric));
        if let Some(e) = slots.and_then(|slots| slots.first()?.as_ref()) {
            e.write(out);
        }
        out.push(b'\n');
    })
}

/// Writes every sample of a histogram family (`les` from [`le_strings`]).
pub(crate) fn write_histograms(
    out: &mut Vec<u8>,
    pieces: &mut Pieces<'_>,
    fmt: Format,
    name: &str,
    les: &[Box<[u8]>],
    f: &Family<Histogram>,
) -> io::Result<()> {
    let mut scratch = std::mem::take(&mut pieces.scratch);
    let result = pieces.each(out, f, fmt == Format::OpenMetrics, |out, s, slots| {
        let (sum, count) = s.metric.snapshot(&mut scratch);
        for (bucket, (le, n)) in les.iter().zip(scratch.iter()).enumerate() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"_bucket{");
            if !s.labels.is_empty() {
                out.extend_from_slice(&s.labels);
                out.push(b',');
            }
            out.extend_from_slice(b"le=\"");
            out.extend_from_slice(le);
            out.extend_from_slice(b"\"} ");
            write_uint(out, *n);
            if let Some(Some(e)) = slots.and_then(|slots| slots.get(bucket)) {
                e.write(out);
            }
            out.push(b'\n');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"_sum");
        write_series_name(out, "", &s.labels);
        write_value(out, fmt, sum);
        out.push(b'\n');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"_count");
        write_series_name(out, "", &s.labels);
        write_uint(out, count);
        out.push(b'\n');
    });
    pieces.scratch = scratch;
    result
}

/// The widest value either format writes, `-1.2345678901234567e-300`.
const MAX_VALUE_BYTES: usize = 24;

/// The widest count, `u64::MAX`.
const MAX_COUNT_BYTES: usize = 20;

/// The most bytes a series with `labels` bytes of labels takes in a scrape.
pub(crate) fn series_bytes(name: &str, kind: Kind, les: &[Box<[u8]>], labels: usize) -> u64 {
    let n = name.len();
    // `{labels} ` on a sample line; `labels,` before a bucket's `le`.
    let (braced, before_le) = match labels {
        0 => (0, 0),
        l => (l + 2, l + 1),
    };
    let bytes = match kind {
        Kind::Counter | Kind::Gauge => n + braced + 1 + MAX_VALUE_BYTES + 1,
        Kind::Histogram => {
            let bucket = n + "_bucket{".len() + before_le + "le=\"\"} ".len() + MAX_COUNT_BYTES + 1;
            let buckets: usize = les.iter().map(|le| bucket + le.len()).sum();
            let sum = n + "_sum".len() + braced + 1 + MAX_VALUE_BYTES + 1;
            let count = n + "_count".len() + braced + 1 + MAX_COUNT_BYTES + 1;
            buckets + sum + count
        }
    };
    bytes as u64
}

/// The bytes of a family's header lines in the longer of the two formats.
pub(crate) fn header_bytes(name: &str, help: &str, kind: Kind) -> u64 {
    let mut out = Vec::new();
    write_header(&mut out, Format::Text, name, help, kind);
    let text = out.len();
    out.clear();
    write_header(&mut out, Format::OpenMetrics, name, help, kind);
    text.max(out.len()) as u64
}

/// Bucket bounds as `le` values, `+Inf` last, the same in both formats.
pub(crate) fn le_strings(bounds: &[f64]) -> Box<[Box<[u8]>]> {
    let le = |b: &f64| {
        let mut s = Vec::new();
        write_float(&mut s, *b);
        s
    };
    let les = bounds.iter().map(le).chain([b"+Inf".to_vec()]);
    les.map(Vec::into_boxed_slice).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counter, Gauge};

    #[test]
    fn negotiation_follows_accept() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        for text in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain"),
            Some("application/openmetrics-text;version=0.0.1"),
            Some("application/openmetrics-text;q=0"),
            Some("text/plain;q=1,application/openmetrics-text;q=0.5"),
            Some("application/json"),
        ] {
            assert_eq!(Format::negotiate(text), Format::Text, "{text:?}");
        }
    }

    #[test]
    fn openmetrics_header_uses_base_name_and_unit() {
        let mut out = Vec::new();
        write_header(
            &mut out,
            Format::OpenMetrics,
            "a_seconds_total",
            "h \"q\"",
            Kind::Counter,
        );
        write_header(&mut out, Format::OpenMetrics, "b_bytes", "h", Kind::Gauge);
        write_header(
            &mut out,
            Format::OpenMetrics,
            "c_microseconds",
            "h",
            Kind::Gauge,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# TYPE a_seconds counter\n# UNIT a_seconds seconds\n# HELP a_seconds h \\\"q\\\"\n\
             # TYPE b_bytes gauge\n# UNIT b_bytes bytes\n# HELP b_bytes h\n\
             # TYPE c_microseconds gauge\n# HELP c_microseconds h\n"
        );
    }

    #[test]
    fn samples_are_exact_in_both_formats_and_scrapes() {
        let f = Family::new(&["k"], 10, Counter::new(), Gauge::new, None);
        for (k, v) in [
            ("a", 0.0),
            ("b", 7.0),
            ("c", 999_999.0),
            ("d", 1e6),
            ("e", -3.0),
        ] {
            f.with(&[k], |g| g.set(v));
        }
        f.with(&["f"], |g| g.set(0.25));
        let unlabelled = Family::new(&[], 1, Counter::new(), Counter::new, None);
        unlabelled.with(&[], |c| c.inc_by(42));
        let text = "g{k=\"a\"} 0\ng{k=\"b\"} 7\ng{k=\"c\"} 999999\ng{k=\"d\"} 1e+06\n\
                    g{k=\"e\"} -3\ng{k=\"f\"} 0.25\nc_total 42\n";
        let om = "g{k=\"a\"} 0.0\ng{k=\"b\"} 7.0\ng{k=\"c\"} 999999.0\ng{k=\"d\"} 1e+06\n\
                  g{k=\"e\"} -3.0\ng{k=\"f\"} 0.25\nc_total 42.0\n";
        // The second scrape of each format reuses the prefixes the first built.
        for (fmt, want) in [(Format::Text, text), (Format::OpenMetrics, om)] {
            for _ in 0..2 {
                let (mut out, mut never) = (Vec::new(), |_: &[u8]| Ok(()));
                let mut pieces = Pieces::new(usize::MAX, &mut never);
                write_samples(&mut out, &mut pieces, fmt, "g", &f, Gauge::get).unwrap();
                write_samples(
                    &mut out,
                    &mut pieces,
                    fmt,
                    "c_total",
                    &unlabelled,
                    Counter::get,
                )
                .unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
        // A family rendered under a second name does not use the first's.
        let (mut out, mut never) = (Vec::new(), |_: &[u8]| Ok(()));
        let mut pieces = Pieces::new(usize::MAX, &mut never);
        let text = Format::Text;
        write_samples(
            &mut out,
            &mut pieces,
            text,
            "d_total",
            &unlabelled,
            Counter::get,
        )
        .unwrap();
        assert_eq!(out, b"d_total 42\n");
    }

    /// A registry whose families record the same values, through
    /// exemplars or not.
    fn recorded(exemplars: bool) -> super::super::Registry {
        let r = super::super::Registry::new();
        let h = r
            .histogram_family("took_seconds", "Took.", &["phase"], &[1.0, 10.0])
            .unwrap();
        let c = r
            .counter_family("done_total", "Done.", &["outcome"])
            .unwrap();
        r.alias(
            "source_took_seconds",
            "Took, by another name.",
            "took_seconds",
        )
        .unwrap();
        let ex = |id: &'static str| {
            [
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("run_id", id),
            ]
        };
        for (phase, v, id, at) in [
            ("a", 0.5, "r-1", 1_795_439_678.5),
            ("a", 0.25, "r-2", 1_795_439_679.0),
            ("a", 12.0, "r\"3", 1_795_439_680.25),
            ("b", 2.0, "r-4", 1_795_439_681.0),
        ] {
            if exemplars {
                h.observe_with_exemplar(&[phase], v, &ex(id), at);
                c.inc_with_exemplar(&["completed"], &ex(id)[1..], at);
            } else {
                h.observe(&[phase], v);
                c.inc(&["completed"]);
            }
        }
        c.inc(&["failed"]);
        r
    }

    fn rendered(r: &super::super::Registry, fmt: Format) -> String {
        let mut out = Vec::new();
        r.render(&mut out, fmt);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn exemplars_follow_their_samples_in_openmetrics() {
        let om = rendered(&recorded(true), Format::OpenMetrics);
        let want = r#"# TYPE done counter
# HELP done Done.
done_total{outcome="completed"} 4.0 # {run_id="r-4"} 1.0 1795439681
done_total{outcome="failed"} 1.0
# TYPE source_took_seconds histogram
# UNIT source_took_seconds seconds
# HELP source_took_seconds Took, by another name.
source_took_seconds_bucket{phase="a",le="1"} 2 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",run_id="r-2"} 0.25 1795439679
source_took_seconds_bucket{phase="a",le="10"} 2
source_took_seconds_bucket{phase="a",le="+Inf"} 3 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",run_id="r\"3"} 12.0 1795439680.25
source_took_seconds_sum{phase="a"} 12.75
source_took_seconds_count{phase="a"} 3
source_took_seconds_bucket{phase="b",le="1"} 0
source_took_seconds_bucket{phase="b",le="10"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",run_id="r-4"} 2.0 1795439681
source_took_seconds_bucket{phase="b",le="+Inf"} 1
source_took_seconds_sum{phase="b"} 2.0
source_took_seconds_count{phase="b"} 1
"#;
        assert!(om.contains(want), "{om}");
        // The original name shows the same exemplars as its alias.
        assert!(om.contains(
            "\ntook_seconds_bucket{phase=\"a\",le=\"1\"} 2 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",run_id=\"r-2\"} 0.25 1795439679\n"
        ));
        // Without exemplars, OpenMetrics is what it always was.
        let plain = rendered(&recorded(false), Format::OpenMetrics);
        let stripped: String = om
            .lines()
            .map(|l| l.split(" # {").next().unwrap_or(l).to_string() + "\n")
            .collect();
        assert_eq!(stripped, plain);
    }

    #[test]
    fn text_format_is_the_same_bytes_with_exemplars() {
        let with = rendered(&recorded(true), Format::Text);
        assert_eq!(with, rendered(&recorded(false), Format::Text));
        let want = r#"# HELP done_total Done.
# TYPE done_total counter
done_total{outcome="completed"} 4
done_total{outcome="failed"} 1
# HELP source_took_seconds Took, by another name.
# TYPE source_took_seconds histogram
source_took_seconds_bucket{phase="a",le="1"} 2
source_took_seconds_bucket{phase="a",le="10"} 2
source_took_seconds_bucket{phase="a",le="+Inf"} 3
source_took_seconds_sum{phase="a"} 12.75
source_took_seconds_count{phase="a"} 3
source_took_seconds_bucket{phase="b",le="1"} 0
source_took_seconds_bucket{phase="b",le="10"} 1
source_took_seconds_bucket{phase="b",le="+Inf"} 1
source_took_seconds_sum{phase="b"} 2
source_took_seconds_count{phase="b"} 1
"#;
        assert!(with.contains(want), "{with}");
        assert!(!with.contains(" # {"));
    }

    #[test]
    fn le_strings_match_the_value_format() {
        let les = le_strings(&[0.1, 1.0, 3600.0, 1e6]);
        let les: Vec<_> = les
            .iter()
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect();
        assert_eq!(les, ["0.1", "1", "3600", "1e+06", "+Inf"]);
    }
}
