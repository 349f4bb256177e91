//! The storage behind a labelled family: lock-free lookup, render order, cap.

mod key;

use std::cmp::Ordering::Less;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::ceiling::ByteCeiling;
use super::counter::Counter;
use super::exemplar::Exemplars;
use super::format::write_labels;
use super::lock;
use key::{decode, for_each_word, order, Lookup, HEAD};

/// The label value every label of the overflow series carries.
pub const OVERFLOW_VALUE: &str = "other";

/// The default series cap (see [`super::RegistryOptions`]).
pub(crate) const DEFAULT_SERIES_CAP: usize = 10_000;

/// How many series chunks and index tables a family can have.
const LEVELS: usize = 32;

/// The slots of index table 0; table `t` has `2^(t + 4)`.
const FIRST_TABLE: usize = 16;

/// The most series a family holds whatever its cap: indexes fit a `u32`, chunks and tables exist.
const MAX_SERIES: usize = 1 << 31;

pub(crate) struct Series<M> {
    /// The values as the words a `Lookup` hashes (see `for_each_word`).
    key: Box<[u64]>,
    /// `a="x",b="y"`, escaped once at creation so scrapes only copy bytes.
    pub(crate) labels: Box<[u8]>,
    /// `name{labels} `, built by the first scrape (see `Family::prefixes`).
    pub(crate) prefix: OnceLock<Box<[u8]>>,
    pub(crate) metric: M,
}

/// Series slots: chunk `k` holds `2^k` of them, each set once.
type Chunk<M> = OnceLock<Box<[OnceLock<Series<M>>]>>;

/// An index slot: enough to recognise a series by its first key words and reach its metric without
/// visiting the series (a pointer followed costs a few nanoseconds of every lookup).
#[derive(Clone)]
struct Entry<M> {
    hash: u64,
    index: u32,
    /// The number of key words, or `HEAD + 1` for any more.
    len: u32,
    /// The first key words, zero-padded.
    head: [u64; HEAD],
    metric: M,
}

/// An index table: open addressing with linear probing, each slot set once.
type Table<M> = Box<[OnceLock<Entry<M>>]>;

/// A ceiling new series count against: their labels, and what `weigh` says a scrape of them writes.
pub(crate) struct Charge {
    pub(crate) ceiling: ByteCeiling,
    pub(crate) weigh: Box<dyn Fn(usize) -> u64 + Send + Sync>,
}

/// What the insert mutex guards: series numbers in label-value order, and the overflow's number.
#[derive(Default)]
struct Writer {
    sorted: Vec<u32>,
    overflow: Option<u32>,
}

/// A family of series of one metric type, keyed by label values; thread-safe. Lookups take no lock:
/// they probe an open-addressing index of set-once slots by a seeded hash; inserts take a mutex. A
/// slot holds a clone of its metric, so `M` is a handle whose clones share a value. Series live in
/// doubling chunks, never moved. The index grows into a table twice the size; old tables live on,
/// so a lookup still probing one is safe (a miss goes slow).
pub(crate) struct Family<M> {
    label_names: Box<[String]>,
    cap: usize,
    seed: u64,
    make: Box<dyn Fn() -> M + Send + Sync>,
    overflowed: Counter,
    chunks: [Chunk<M>; LEVELS],
    tables: [OnceLock<Table<M>>; LEVELS],
    /// Which table lookups probe.
    current: AtomicUsize,
    /// The insert mutex; a panic cannot half update its state (see `push`).
    writer: Mutex<Writer>,
    /// The metric name in the series' prefixes.
    prefixed: OnceLock<Box<str>>,
    charge: Option<Charge>,
    pub(crate) exemplars: Exemplars,
}

// Ordering: a series is stored in its `OnceLock` before its slot's is set, and a table is filled
// before `current` names it with `Release`; lookups load `current` with `Acquire` and `OnceLock`
// orders its own contents the same way, so a slot they see leads to a series they see.

impl<M: Clone> Family<M> {
    /// An empty family; `overflowed` counts lookups sent to its overflow series.
    pub(crate) fn new(
        label_names: &[&str],
        cap: usize,
        overflowed: Counter,
        make: impl Fn() -> M + Send + Sync + 'static,
        charge: Option<Charge>,
    ) -> Family<M> {
        let tables: [OnceLock<_>; LEVELS] = std::array::from_fn(|_| OnceLock::new());
        tables[0].get_or_init(|| empty_table(FIRST_TABLE));
        Family {
            label_names: label_names.iter().map(|s| s.to_string()).collect(),
            cap: cap.min(MAX_SERIES),
            seed: RandomState::new().build_hasher().finish(),
            make: Box::new(make),
            overflowed,
            chunks: std::array::from_fn(|_| OnceLock::new()),
            tables,
            current: AtomicUsize::new(0),
            writer: Mutex::default(),
            prefixed: OnceLock::new(),
            charge,
            exemplars: Exemplars::default(),
        }
    }

    pub(crate) fn label_names(&self) -> &[String] {
        &self.label_names
    }

    /// Runs `f` on the series for `values`, created if new; the wrong length, or a new one past the
    /// cap or ceiling, gets the overflow series. Inlined: a call's register spills were a tenth
    /// of a lookup, and a known list length unrolls the hashing.
    #[inline(always)]
    pub(crate) fn with<R>(&self, values: &[&str], f: impl FnOnce(&M) -> R) -> R {
        self.with_numbered(values, |_, m| f(m))
    }

    #[inline(always)]
    pub(crate) fn with_numbered<R>(&self, values: &[&str], f: impl FnOnce(u32, &M) -> R) -> R {
        let (i, metric) = match self.find(&Lookup::new(self.seed, values)) {
            Some(found) => found,
            // Hashed again there: passing the lookup made it spill to memory.
            None => self.find_or_insert(values),
        };
        f(i, metric)
    }

    /// The number and metric of the series `key` names, if indexed.
    #[inline(always)]
    fn find(&self, key: &Lookup) -> Option<(u32, &M)> {
        let table = self.tables.get(self.current.load(Ordering::Acquire))?;
        let table = table.get()?;
        let mask = table.len() - 1;
        let mut at = key.hash as usize;
        loop {
            let e = table.get(at & mask)?.get()?;
            if e.hash == key.hash
                && key.matches_head(e.len, &e.head)
                && (key.len <= HEAD || self.series(e.index).is_some_and(|s| key.matches(&s.key)))
            {
                return Some((e.index, &e.metric));
            }
            at = (at & mask) + 1;
        }
    }

    /// Series number `i`, if it exists; no lock, since series never move.
    #[inline(always)]
    pub(crate) fn series(&self, i: u32) -> Option<&Series<M>> {
        let (k, at) = place_of(i);
        self.chunks.get(k)?.get()?.get(at)?.get()
    }

    #[cold]
    #[inline(never)]
    fn find_or_insert(&self, values: &[&str]) -> (u32, &M) {
        let key = &Lookup::new(self.seed, values);
        let mut w = lock(&self.writer);
        // Another thread may have added it, or grown the index, since.
        if let Some(found) = self.find(key) {
            return found;
        }
        let live = w.sorted.len() - usize::from(w.overflow.is_some());
        if values.len() == self.label_names.len() && live < self.cap {
            let labels = self.render(values);
            if self.affords(&labels) {
                return self.push(&mut w, key, labels);
            }
        }
        self.overflowed.inc();
        if let Some((i, s)) = w.overflow.and_then(|i| Some((i, self.series(i)?))) {
            return (i, &s.metric);
        }
        let other = vec![OVERFLOW_VALUE; self.label_names.len()];
        let other = Lookup::new(self.seed, &other);
        let (i, m) = match self.find(&other) {
            Some(found) => found,
            None => self.push(&mut w, &other, self.render(other.values)),
        };
        w.overflow = Some(i);
        (i, m)
    }

    /// `a="x",b="y"`: the labels of the series for `values`, escaped.
    fn render(&self, values: &[&str]) -> Vec<u8> {
        let mut labels = Vec::new();
        let names = self.label_names.iter().map(String::as_str);
        write_labels(&mut labels, names.zip(values.iter().copied()));
        labels
    }

    /// Whether the ceiling, if any, takes (and counts) a series' `labels`.
    fn affords(&self, labels: &[u8]) -> bool {
        self.charge.as_ref().is_none_or(|c| {
            let exposition = (c.weigh)(labels.len());
            c.ceiling.take(labels.len() as u64, exposition).is_ok()
        })
    }

    fn push(&self, w: &mut Writer, key: &Lookup, labels: Vec<u8>) -> (u32, &M) {
        let below = |&j: &u32| self.series(j).map_or(Less, |s| order(&s.key, key.values));
        // A snapshot restores series in render order: each goes last, found in one comparison.
        let position = match w.sorted.last().is_none_or(|j| below(j) == Less) {
            true => w.sorted.len(),
            false => w.sorted.binary_search_by(below).unwrap_or_else(|p| p),
        };
        // Only allocation can fail from here, and it aborts, so a series is always indexed.
        w.sorted.reserve(1);
        let i = w.sorted.len() as u32;
        let (k, at) = place_of(i);
        let chunk =
            self.chunks[k].get_or_init(|| (0..1usize << k).map(|_| OnceLock::new()).collect());
        let series = chunk[at].get_or_init(|| Series {
            key: {
                let mut words = Vec::with_capacity(key.len);
                for_each_word(key.values, |w| words.push(w));
                words.into()
            },
            labels: labels.into(),
            prefix: OnceLock::new(),
            metric: (self.make)(),
        });
        self.index(Entry {
            hash: key.hash,
            index: i,
            len: key.len.min(HEAD + 1) as u32,
            head: key.words,
            metric: series.metric.clone(),
        });
        w.sorted.insert(position, i);
        (i, &series.metric)
    }

    /// Indexes `e`, the newest series, in a table twice the size if this one would be half full.
    fn index(&self, e: Entry<M>) {
        let mut level = self.current.load(Ordering::Relaxed);
        let Some(mut table) = self.tables[level].get() else {
            return;
        };
        if 2 * (e.index as usize + 1) > table.len() {
            level += 1;
            table = self.tables[level].get_or_init(|| {
                let bigger = empty_table(table.len() * 2);
                for old in table.iter().filter_map(OnceLock::get) {
                    place(&bigger, old.clone());
                }
                bigger
            });
            self.current.store(level, Ordering::Release);
        }
        place(table, e);
    }

    /// Whether the series' `prefix`es are for `name`, the first one rendered (not an alias).
    pub(crate) fn prefixes(&self, name: &str) -> bool {
        **self.prefixed.get_or_init(|| name.into()) == *name
    }

    pub(crate) fn each(&self, mut f: impl FnMut(u32, &M)) {
        let w = lock(&self.writer);
        let overflow = w.overflow;
        let order = w.sorted.iter().filter(|&&i| Some(i) != overflow);
        for &i in order.chain(overflow.as_ref()) {
            if let Some(s) = self.series(i) {
                f(i, &s.metric);
            }
        }
    }

    /// The metric of the series for `values`, if it exists; takes no lock.
    pub(crate) fn existing(&self, values: &[&str]) -> Option<&M> {
        self.find(&Lookup::new(self.seed, values)).map(|(_, m)| m)
    }

    pub(crate) fn label_values(&self, i: u32) -> Option<Vec<String>> {
        self.series(i).map(|s| decode(&s.key))
    }

    /// Replaces `out` with the series' numbers in label-value order.
    pub(crate) fn numbers_into(&self, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&lock(&self.writer).sorted);
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.writer).sorted.len()
    }
}

/// The chunk of series `i`, `floor(log2(i + 1))` read from `i + 1`'s f64 exponent, and its place
/// there: `ilog2` is BSR on baseline x86-64, several micro-ops on some CPUs, half of iterating.
#[inline(always)]
fn place_of(i: u32) -> (usize, usize) {
    let n = u64::from(i) + 1;
    let k = ((n as f64).to_bits() >> 52) as usize - 1023;
    (k, n as usize - (1 << k))
}

fn empty_table<M>(size: usize) -> Table<M> {
    (0..size).map(|_| OnceLock::new()).collect()
}

/// Stores `e` in its first free probe slot; only the writer places, so `set` cannot fail.
fn place<M>(table: &[OnceLock<Entry<M>>], e: Entry<M>) {
    let mask = table.len() - 1;
    let mut at = e.hash as usize & mask;
    while table[at].get().is_some() {
        at = (at + 1) & mask;
    }
    let _ = table[at].set(e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(cap: usize) -> (Family<Counter>, Counter) {
        let overflowed = Counter::new();
        let f = Family::new(&["a", "b"], cap, overflowed.clone(), Counter::new, None);
        (f, overflowed)
    }

    /// Each series' labels and count, in render order.
    fn series(f: &Family<Counter>) -> Vec<(String, f64)> {
        let labels = |s: &Series<Counter>| String::from_utf8(s.labels.to_vec()).unwrap();
        let mut numbers = Vec::new();
        f.numbers_into(&mut numbers);
        numbers
            .iter()
            .filter_map(|&i| f.series(i))
            .map(|s| (labels(s), s.metric.get()))
            .collect()
    }

    fn labels(a: &str, b: &str) -> String {
        format!("a=\"{a}\",b=\"{b}\"")
    }

    #[test]
    fn joined_values_never_share_a_series() {
        let (f, _) = family(10);
        f.with(&["ab", "c"], Counter::inc);
        f.with(&["a", "bc"], Counter::inc);
        f.with(&["a", "bc"], Counter::inc);
        let want = [(labels("a", "bc"), 2.0), (labels("ab", "c"), 1.0)];
        assert_eq!(series(&f), want);
    }

    #[test]
    fn colliding_hashes_compare_values() {
        // One hash for every key puts them all in one probe run of the
        // first table (8 fit before it grows): lookups must still be exact.
        fn seven<'a>(values: &'a [&'a str]) -> Lookup<'a> {
            let key = Lookup::new(0, values);
            Lookup { hash: 7, ..key }
        }
        let (f, _) = family(100);
        let mut w = f.writer.lock().unwrap();
        for i in 0..8 {
            let values = [&i.to_string()[..], "x"];
            f.push(&mut w, &seven(&values), f.render(&values));
        }
        assert_eq!(f.current.load(Ordering::Relaxed), 0);
        for i in 0..8 {
            let found = f.find(&seven(&[&i.to_string(), "x"])).map(|(j, _)| j);
            assert_eq!(found, Some(i));
        }
        for missing in [&["8", "x"][..], &["1", "y"], &["1"]] {
            assert!(f.find(&seven(missing)).is_none());
        }
    }

    #[test]
    fn similar_values_spread_over_the_index() {
        let (f, _) = family(10_000);
        for i in 0..2_000 {
            f.with(&[&format!("id-{i:05}"), "x"], Counter::inc);
        }
        let table = f.tables[f.current.load(Ordering::Relaxed)].get().unwrap();
        let (mut run, mut longest) = (0, 0);
        for slot in table.iter() {
            let full = slot.get().is_some();
            run = if full { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        // At most half full, probe runs stay short if the hashes spread.
        assert!(longest < 64, "{longest}");
    }

    #[test]
    fn series_indexes_map_to_chunks() {
        let mut want = (0, 0);
        for i in 0..100_000 {
            assert_eq!(place_of(i), want);
            let full = want.1 + 1 == 1 << want.0;
            want = if full {
                (want.0 + 1, 0)
            } else {
                (want.0, want.1 + 1)
            };
        }
        assert_eq!(place_of(u32::MAX - 1), (31, (1 << 31) - 1));
        assert_eq!(place_of(u32::MAX), (32, 0));
    }

    #[test]
    fn series_are_sorted_by_values() {
        let (f, _) = family(10);
        let values = ["b", "a", "c", "", "a longer value, over 8 bytes", "bb"];
        for v in values {
            f.with(&[v, "z"], Counter::inc);
        }
        let mut sorted = values;
        sorted.sort();
        let want: Vec<_> = sorted.iter().map(|v| (labels(v, "z"), 1.0)).collect();
        assert_eq!(series(&f), want);
    }

    #[test]
    fn cap_sends_new_label_sets_to_overflow() {
        let (f, overflowed) = family(3);
        for i in 0..10 {
            f.with(&[&i.to_string(), "x"], Counter::inc);
        }
        f.with(&["only one value"], Counter::inc);
        f.with(&["0", "x"], Counter::inc);
        assert_eq!(f.len(), 4);
        assert_eq!(overflowed.get(), 8.0);
        let all = series(&f);
        assert!(all.contains(&(labels("other", "other"), 8.0)));
        assert!(all.contains(&(labels("0", "x"), 2.0)));
    }

    #[test]
    fn a_ceiling_sends_series_it_cannot_take_to_overflow() {
        let ceiling = ByteCeiling::new(40, 1_000);
        let overflowed = Counter::new();
        // Each series weighs twice its labels, plus 10.
        let charge = Charge {
            ceiling: ceiling.clone(),
            weigh: Box::new(|labels| 2 * labels as u64 + 10),
        };
        let f = Family::new(
            &["a", "b"],
            100,
            overflowed.clone(),
            Counter::new,
            Some(charge),
        );
        f.with(&["1", "x"], Counter::inc);
        f.with(&["a longer one", "x"], Counter::inc);
        assert_eq!(ceiling.used(), (11 + 22, 32 + 54));
        // `a="22",b="x"` is 12 bytes: 45 is over the label limit.
        f.with(&["22", "x"], Counter::inc);
        f.with(&["1", "x"], Counter::inc);
        assert_eq!(
            ceiling.used(),
            (33, 86),
            "the overflow series is not counted"
        );
        assert_eq!(overflowed.get(), 1.0);
        let all = series(&f);
        assert!(all.contains(&(labels("other", "other"), 1.0)), "{all:?}");
        assert!(all.contains(&(labels("1", "x"), 2.0)), "{all:?}");
        assert!(f.existing(&["22", "x"]).is_none());
        assert_eq!(f.existing(&["1", "x"]).map(Counter::get), Some(2.0));
    }

    #[test]
    fn labels_are_escaped_once() {
        let (f, _) = family(10);
        f.with(&["q\"\\\n", "}"], Counter::inc);
        assert_eq!(series(&f)[0].0, labels("q\\\"\\\\\\n", "}"));
    }

    #[test]
    fn concurrent_lookups_create_each_series_once() {
        let (f, _) = family(1_000);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for i in 0..10_000 {
                        f.with(&[&(i % 100).to_string(), "x"], Counter::inc);
                    }
                });
            }
        });
        let all = series(&f);
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|(_, v)| *v == 800.0));
    }

    #[test]
    fn lookups_race_inserts_through_index_growth() {
        const N: usize = 3_000;
        let (f, _) = family(N);
        let inserted = AtomicUsize::new(0);
        let reader = |mut i: usize| {
            let mut hits = vec![0u64; N];
            loop {
                let done = inserted.load(Ordering::Acquire);
                if done > 0 {
                    i = (i * 7 + 1) % done;
                    f.with(&[&i.to_string(), "x"], Counter::inc);
                    hits[i] += 1;
                }
                if done == N {
                    return hits;
                }
            }
        };
        let hits: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let readers = [scope.spawn(|| reader(0)), scope.spawn(|| reader(1))];
            for i in 0..N {
                f.with(&[&i.to_string(), "x"], Counter::inc);
                inserted.store(i + 1, Ordering::Release);
            }
            readers.map(|r| r.join().unwrap()).into()
        });
        // Eight growths from the first table of 16 slots.
        assert_eq!(f.current.load(Ordering::Relaxed), 9);
        let mut all = series(&f);
        assert_eq!(all.len(), N);
        let value = |labels: &str| labels[3..labels.len() - 7].parse::<usize>().unwrap();
        all.sort_by_key(|(labels, _)| value(labels));
        for (i, (got, count)) in all.iter().enumerate() {
            assert_eq!(*got, labels(&i.to_string(), "x"));
            assert_eq!(*count, (1 + hits[0][i] + hits[1][i]) as f64, "{i}");
        }
    }
}
