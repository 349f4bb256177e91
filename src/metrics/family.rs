//! The storage behind a labelled family: series lookup by label values,
//! a stable render order, and the series cap.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{RwLock, RwLockReadGuard};

use super::counter::Counter;
use super::format::write_label_value;

/// The label value every label of the overflow series carries.
pub const OVERFLOW_VALUE: &str = "other";

/// The default number of series a family may hold before new label sets
/// go to the overflow series.
pub const DEFAULT_SERIES_CAP: usize = 10_000;

/// One series: its label values, their pre-escaped rendering and its metric.
pub(crate) struct Series<M> {
    values: Box<[String]>,
    /// `a="x",b="y"`, escaped once at creation so scrapes only copy bytes.
    pub(crate) labels: Box<[u8]>,
    /// The next series whose values hash alike, or `NONE`.
    next: u32,
    pub(crate) metric: M,
}

const NONE: u32 = u32::MAX;

struct State<M> {
    series: Vec<Series<M>>,
    by_hash: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Indexes into `series`, kept sorted by label values.
    sorted: Vec<u32>,
    overflow: Option<u32>,
}

/// A family of series of one metric type, keyed by label values. Safe to
/// share across threads.
///
/// Lookups hash the values with a per-family random seed, then compare the
/// values themselves, so two different value lists never share a series,
/// and colliding hashes only cost a comparison.
pub(crate) struct Family<M> {
    label_names: Box<[String]>,
    cap: usize,
    seed: u64,
    make: Box<dyn Fn() -> M + Send + Sync>,
    overflowed: Counter,
    state: RwLock<State<M>>,
}

impl<M: Clone> Family<M> {
    /// Creates an empty family. `overflowed` counts lookups sent to the
    /// overflow series.
    pub(crate) fn new(
        label_names: &[&str],
        cap: usize,
        overflowed: Counter,
        make: impl Fn() -> M + Send + Sync + 'static,
    ) -> Family<M> {
        Family {
            label_names: label_names.iter().map(|s| s.to_string()).collect(),
            cap,
            seed: RandomState::new().build_hasher().finish(),
            make: Box::new(make),
            overflowed,
            state: RwLock::new(State {
                series: Vec::new(),
                by_hash: HashMap::default(),
                sorted: Vec::new(),
                overflow: None,
            }),
        }
    }

    /// The label names, in declaration order.
    pub(crate) fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// Runs `f` on the series for `values`, creating it if needed. A value
    /// list of the wrong length, or a new one past the cap, gets the
    /// overflow series.
    #[inline]
    pub(crate) fn with<R>(&self, values: &[&str], f: impl FnOnce(&M) -> R) -> R {
        let hash = hash_values(self.seed, values);
        {
            // A panic while holding this lock cannot leave the maps half
            // updated (see `insert`), so a poisoned lock is still usable.
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = find(&state, hash, values) {
                return f(&state.series[i as usize].metric);
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Another thread may have inserted it between the two locks.
        let i = match find(&state, hash, values) {
            Some(i) => i,
            None => self.insert(&mut state, hash, values),
        };
        f(&state.series[i as usize].metric)
    }

    fn insert(&self, state: &mut State<M>, hash: u64, values: &[&str]) -> u32 {
        let live = state.series.len() - usize::from(state.overflow.is_some());
        if values.len() != self.label_names.len() || live >= self.cap {
            self.overflowed.inc();
            if let Some(i) = state.overflow {
                return i;
            }
            let other = vec![OVERFLOW_VALUE; self.label_names.len()];
            let hash = hash_values(self.seed, &other);
            if let Some(i) = find(state, hash, &other) {
                state.overflow = Some(i);
                return i;
            }
            let i = self.push(state, hash, &other);
            state.overflow = Some(i);
            return i;
        }
        self.push(state, hash, values)
    }

    fn push(&self, state: &mut State<M>, hash: u64, values: &[&str]) -> u32 {
        let mut labels = Vec::new();
        for (i, (name, value)) in self.label_names.iter().zip(values).enumerate() {
            if i > 0 {
                labels.push(b',');
            }
            labels.extend_from_slice(name.as_bytes());
            labels.extend_from_slice(b"=\"");
            write_label_value(&mut labels, value);
            labels.push(b'"');
        }
        let i = state.series.len() as u32;
        let position = state
            .sorted
            .binary_search_by(|&j| {
                let existing = &state.series[j as usize].values;
                existing
                    .iter()
                    .map(String::as_str)
                    .cmp(values.iter().copied())
            })
            .unwrap_or_else(|p| p);
        let next = state.by_hash.insert(hash, i).unwrap_or(NONE);
        state.series.push(Series {
            values: values.iter().map(|s| s.to_string()).collect(),
            labels: labels.into(),
            next,
            metric: (self.make)(),
        });
        state.sorted.insert(position, i);
        i
    }

    /// Read access to the series in label-value order, for rendering.
    pub(crate) fn read(&self) -> SortedSeries<'_, M> {
        SortedSeries {
            guard: self.state.read().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn find<M>(state: &State<M>, hash: u64, values: &[&str]) -> Option<u32> {
    let mut i = *state.by_hash.get(&hash)?;
    while i != NONE {
        let series = &state.series[i as usize];
        if series.values.len() == values.len()
            && series.values.iter().zip(values).all(|(a, b)| a == b)
        {
            return Some(i);
        }
        i = series.next;
    }
    None
}

/// A read-locked view of a family's series in label-value order.
pub(crate) struct SortedSeries<'a, M> {
    guard: RwLockReadGuard<'a, State<M>>,
}

impl<M> SortedSeries<'_, M> {
    /// Iterates the series in label-value order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Series<M>> {
        self.guard
            .sorted
            .iter()
            .map(|&i| &self.guard.series[i as usize])
    }

    /// The number of series.
    pub(crate) fn len(&self) -> usize {
        self.guard.series.len()
    }
}

/// Hashes label values with their lengths, so `["ab","c"]` and
/// `["a","bc"]` differ even before the values are compared.
fn hash_values(seed: u64, values: &[&str]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = seed;
    for v in values {
        h = mix(h, v.len() as u64);
        let mut chunks = v.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = mix(h, u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = mix(h, u64::from_le_bytes(w));
        }
    }
    // Fold the high bits down: the map's buckets and control bytes use both.
    h ^ (h >> 29)
}

/// A hasher for keys that are already well-mixed hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(cap: usize) -> (Family<Counter>, Counter) {
        let overflowed = Counter::new();
        (
            Family::new(&["a", "b"], cap, overflowed.clone(), Counter::new),
            overflowed,
        )
    }

    fn values(f: &Family<Counter>) -> Vec<(Vec<String>, f64)> {
        f.read()
            .iter()
            .map(|s| (s.values.to_vec(), s.metric.get()))
            .collect()
    }

    #[test]
    fn joined_values_never_share_a_series() {
        let (f, _) = family(10);
        f.with(&["ab", "c"], Counter::inc);
        f.with(&["a", "bc"], Counter::inc);
        f.with(&["a", "bc"], Counter::inc);
        assert_eq!(
            values(&f),
            vec![
                (vec!["a".into(), "bc".into()], 2.0),
                (vec!["ab".into(), "c".into()], 1.0)
            ]
        );
    }

    #[test]
    fn colliding_hashes_compare_values() {
        let (f, _) = family(100);
        // Force every key onto one hash chain: lookups must still be exact.
        let mut state = f.state.write().unwrap();
        for i in 0..20 {
            let a = i.to_string();
            f.push(&mut state, 7, &[&a, "x"]);
        }
        for i in 0..20 {
            let a = i.to_string();
            assert_eq!(find(&state, 7, &[&a, "x"]), Some(i));
        }
        assert_eq!(find(&state, 7, &["20", "x"]), None);
    }

    #[test]
    fn series_are_sorted_by_values() {
        let (f, _) = family(10);
        for v in ["b", "a", "c", ""] {
            f.with(&[v, "z"], Counter::inc);
        }
        let order: Vec<_> = values(&f).into_iter().map(|(v, _)| v[0].clone()).collect();
        assert_eq!(order, vec!["", "a", "b", "c"]);
    }

    #[test]
    fn cap_sends_new_label_sets_to_overflow() {
        let (f, overflowed) = family(3);
        for i in 0..10 {
            f.with(&[&i.to_string(), "x"], Counter::inc);
        }
        f.with(&["only one value"], Counter::inc);
        f.with(&["0", "x"], Counter::inc);
        assert_eq!(f.read().len(), 4);
        assert_eq!(overflowed.get(), 8.0);
        let all = values(&f);
        assert!(all.contains(&(vec!["other".into(), "other".into()], 8.0)));
        assert!(all.contains(&(vec!["0".into(), "x".into()], 2.0)));
    }

    #[test]
    fn labels_are_escaped_once() {
        let (f, _) = family(10);
        f.with(&["q\"\\\n", "}"], Counter::inc);
        let r = f.read();
        let s = r.iter().next().unwrap();
        assert_eq!(&*s.labels, b"a=\"q\\\"\\\\\\n\",b=\"}\"");
    }

    #[test]
    fn concurrent_lookups_create_each_series_once() {
        let (f, _) = family(1_000);
        let f = std::sync::Arc::new(f);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        f.with(&[&(i % 100).to_string(), "x"], Counter::inc);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = values(&f);
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|(_, v)| *v == 800.0));
    }
}
