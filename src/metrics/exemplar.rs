//! Exemplars: a sample's link to one observation behind it, written on OpenMetrics scrapes only.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use super::format::{write_float_openmetrics, write_labels};
use super::lock;
use super::name::valid_label_name;

/// The most characters OpenMetrics 1.0 lets an exemplar's label names and values hold together.
const EXEMPLAR_MAX_LABEL_CHARS: usize = 128;

/// One observation behind a sample: its labels (a trace id, say), value and time; thread-safe.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// Kept escaped, as a scrape writes them.
    labels: Box<str>,
    value: f64,
    timestamp: f64,
}

impl Exemplar {
    /// An exemplar of `value` at `timestamp` (Unix seconds). A label with an invalid or repeated
    /// name, or past OpenMetrics' 128 characters, is left out whole (a cut id names nothing).
    /// `None` with no label left, or a number not finite.
    pub fn new(labels: &[(&str, &str)], value: f64, timestamp: f64) -> Option<Exemplar> {
        if !value.is_finite() || !timestamp.is_finite() {
            return None;
        }
        let mut kept: Vec<(&str, &str)> = Vec::with_capacity(labels.len());
        let mut chars = 0;
        for &(name, value) in labels {
            let size = name.chars().count() + value.chars().count();
            let new = !kept.iter().any(|(n, _)| *n == name);
            if valid_label_name(name) && new && chars + size <= EXEMPLAR_MAX_LABEL_CHARS {
                kept.push((name, value));
                chars += size;
            }
        }
        if kept.is_empty() {
            return None;
        }
        let mut text = Vec::new();
        write_labels(&mut text, kept.into_iter());
        Some(Exemplar {
            // ASCII names, UTF-8 values, and escaping adds ASCII: the text is UTF-8.
            labels: String::from_utf8(text).ok()?.into(),
            value,
            timestamp,
        })
    }

    /// The labels, in order, unescaped.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        let mut rest = self.labels.chars();
        loop {
            let name: String = rest.by_ref().take_while(|&c| c != '=').collect();
            if name.is_empty() {
                return labels;
            }
            rest.next(); // the opening quote
            let mut value = String::new();
            while let Some(c) = rest.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(rest.next().map(|c| if c == 'n' { '\n' } else { c })),
                    c => value.push(c),
                }
            }
            labels.push((name, value));
            rest.next(); // the comma between labels
        }
    }

    /// The observed value.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// When it was observed, in Unix seconds.
    pub fn timestamp(&self) -> f64 {
        self.timestamp
    }

    /// Appends ` # {labels} value timestamp`, the timestamp in plain decimal:
    /// prometheus_client reads the Go client's `1.7954396785e+09` as 1.795 s.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b" # {");
        out.extend_from_slice(self.labels.as_bytes());
        out.extend_from_slice(b"} ");
        write_float_openmetrics(out, self.value);
        // Writing to a Vec cannot fail, and `{}` never uses an exponent.
        let _ = write!(out, " {}", self.timestamp);
    }
}

/// A series' exemplar slots: a histogram's one per bucket, a counter's one.
pub(crate) type Slots = Box<[Option<Exemplar>]>;

/// A family's exemplars by series number, beside the series: having none costs nothing per series,
/// and `inc` and `observe` never take its lock. Each change is one assignment (see `lock`).
pub(crate) type Exemplars = Mutex<BTreeMap<u32, Slots>>;

/// Keeps `e` in slot `slot` of `series` (of `slots`) unless it holds a later one, so a replay
/// after a restart ends as it began.
pub(crate) fn offer(exemplars: &Exemplars, series: u32, slots: usize, slot: usize, e: Exemplar) {
    let mut by_series = lock(exemplars);
    let slots = by_series
        .entry(series)
        .or_insert_with(|| vec![None; slots].into());
    if let Some(held) = slots.get_mut(slot) {
        if held.as_ref().is_none_or(|h| h.timestamp <= e.timestamp) {
            *held = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(e: &Exemplar) -> String {
        let mut out = Vec::new();
        e.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn labels_are_escaped_once_and_read_back() {
        let hostile = "a\\b\"c\nd}{é,=";
        let e = Exemplar::new(&[("trace_id", "4bf9"), ("run_id", hostile)], 3.25, 1.5).unwrap();
        assert_eq!(
            written(&e),
            " # {trace_id=\"4bf9\",run_id=\"a\\\\b\\\"c\\nd}{é,=\"} 3.25 1.5"
        );
        let want = [
            ("trace_id".to_string(), "4bf9".to_string()),
            ("run_id".to_string(), hostile.to_string()),
        ];
        assert_eq!(e.labels(), want);
        let again = Exemplar::new(&[("a", "")], 1.0, 1_795_439_678.5).unwrap();
        assert_eq!(again.labels(), [("a".to_string(), String::new())]);
        assert_eq!(written(&again), " # {a=\"\"} 1.0 1795439678.5");
        let whole = Exemplar::new(&[("a", "b")], 2.5e-7, 1e12).unwrap();
        assert_eq!(written(&whole), " # {a=\"b\"} 2.5e-07 1000000000000");
    }

    #[test]
    fn labels_past_128_characters_are_left_out_whole() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        // 8 + 32 + 6 + 82 = 128: exactly at the limit, both are kept.
        let fits = "r".repeat(82);
        let e = Exemplar::new(&[("trace_id", trace), ("run_id", &fits)], 1.0, 0.0).unwrap();
        assert_eq!(e.labels().len(), 2);
        // One more, and the run id is left out, never cut.
        let long = "r".repeat(83);
        let e = Exemplar::new(&[("trace_id", trace), ("run_id", &long)], 1.0, 0.0).unwrap();
        assert_eq!(e.labels(), [("trace_id".to_string(), trace.to_string())]);
        // Characters, not bytes: 127 two-byte characters fit beside `v`.
        let wide = "é".repeat(127);
        assert!(Exemplar::new(&[("v", &wide)], 1.0, 0.0).is_some());
        assert!(Exemplar::new(&[("v", &format!("{wide}é"))], 1.0, 0.0).is_none());
    }

    #[test]
    fn bad_names_repeats_and_non_finite_numbers_are_refused() {
        let e = Exemplar::new(
            &[("1x", "a"), ("a", "1"), ("a", "2"), ("__b", "3")],
            1.0,
            0.0,
        );
        let want = [
            ("a".to_string(), "1".to_string()),
            ("__b".to_string(), "3".to_string()),
        ];
        assert_eq!(e.unwrap().labels(), want);
        assert!(Exemplar::new(&[], 1.0, 0.0).is_none());
        assert!(Exemplar::new(&[("a", "1")], f64::NAN, 0.0).is_none());
        assert!(Exemplar::new(&[("a", "1")], 1.0, f64::INFINITY).is_none());
    }

    #[test]
    fn a_slot_keeps_the_latest_by_time() {
        let store = Exemplars::default();
        assert!(lock(&store).is_empty());
        let at = |t: f64| Exemplar::new(&[("t", &t.to_string())], 1.0, t).unwrap();
        offer(&store, 3, 2, 1, at(10.0));
        offer(&store, 3, 2, 1, at(5.0));
        offer(&store, 3, 2, 0, at(7.0));
        offer(&store, 3, 2, 9, at(99.0));
        let slots = lock(&store);
        let times: Vec<_> = slots[&3]
            .iter()
            .map(|e| e.as_ref().map(|e| e.timestamp))
            .collect();
        assert_eq!(times, [Some(7.0), Some(10.0)]);
    }

    #[test]
    fn concurrent_offers_keep_the_latest() {
        let store = Exemplars::default();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..1_000 {
                        let ts = f64::from(i * 4 + t);
                        offer(
                            store,
                            0,
                            1,
                            0,
                            Exemplar::new(&[("i", "x")], 1.0, ts).unwrap(),
                        );
                    }
                });
            }
        });
        assert_eq!(lock(&store)[&0][0].as_ref().unwrap().timestamp, 3_999.0);
    }

    /// Checked when the tests compile: exemplars cross threads.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Exemplar>();
        assert_send_sync::<Exemplars>();
    };
}
