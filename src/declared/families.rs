//! The registered declared families: updates checked and applied, and
//! snapshot series restored, matched by label names and bucket bounds.

use std::collections::HashMap;

use serde_json::Value;

use super::spec::{Declaration, Type};
use super::update::{label_values, Positional, Update};
use crate::error::Error;
use crate::metrics::{
    saturating_sum, Counter, GaugeFamily, HistogramFamily, Labelled, Registry, OVERFLOW_VALUE,
};

/// A registered family's handle.
pub(super) enum Handle {
    Counter(crate::metrics::CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

/// Evaluates `$body` with `$f` bound to the family of `$handle`, whatever its type.
macro_rules! with_family {
    ($handle:expr, |$f:ident| $body:expr) => {
        match $handle {
            Handle::Counter($f) => $body,
            Handle::Gauge($f) => $body,
            Handle::Histogram($f) => $body,
        }
    };
}
pub(super) use with_family;

fn register(d: &Declaration, registry: &Registry) -> Result<Handle, Error> {
    let labels: Vec<&str> = d.labels.iter().map(String::as_str).collect();
    let (name, help) = (&d.name, &d.help);
    let handle = match d.kind {
        Type::Counter => registry
            .counter_family(name, help, &labels)
            .map(Handle::Counter),
        Type::Gauge => registry
            .gauge_family(name, help, &labels)
            .map(Handle::Gauge),
        Type::Histogram => registry
            .histogram_family(name, help, &labels, &d.buckets)
            .map(Handle::Histogram),
    };
    let handle = handle.map_err(|e| {
        let hint = match e.is_over_ceiling() {
            true => " (see --declared-label-bytes and --declared-exposition-bytes)",
            false => "",
        };
        Error::invalid(&format!("family {:?}", d.name), format!("{e}{hint}"))
    })?;
    // An unlabelled family has its one series from the start.
    if labels.is_empty() {
        with_family!(&handle, |f| {
            f.get(&[]);
        });
    }
    Ok(handle)
}

/// The series of `f` for `labels`, or if there is none yet the overflow series it may land in.
fn existing<M: Clone>(f: &Labelled<M>, labels: &[&str]) -> Option<M> {
    let other = vec![OVERFLOW_VALUE; labels.len()];
    f.existing(labels).or_else(|| f.existing(&other))
}

/// The declarations in force and their families; the store serialises `apply` and `restore`,
/// which read then write values.
pub(super) struct Families {
    pub(super) declared: Vec<Declaration>,
    pub(super) handles: Vec<Handle>,
    pub(super) index: HashMap<String, usize>,
}

impl Families {
    pub(super) fn register(
        declared: Vec<Declaration>,
        registry: &Registry,
    ) -> Result<Families, Error> {
        let handles = declared
            .iter()
            .map(|d| register(d, registry))
            .collect::<Result<Vec<_>, _>>()?;
        let index = declared
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        Ok(Families {
            declared,
            handles,
            index,
        })
    }

    /// Checks that no update, after the earlier ones of its batch, makes a value (a histogram's
    /// sum) infinite. Batches in flight are not counted: two may add up past the largest value,
    /// and `apply` saturates.
    pub(super) fn check(&self, updates: &[Update]) -> Result<(), Error> {
        let mut after: HashMap<(usize, &[String]), f64> = HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            let key = (u.family, u.labels.as_slice());
            let next = match u.op {
                "set" => u.value,
                _ => after.get(&key).copied().unwrap_or_else(|| self.value(u)) + u.value,
            };
            let field = u.op;
            if !next.is_finite() {
                return Err(Error::invalid(
                    &format!("updates[{i}].{field}"),
                    format!(
                        "would take {}{} past the largest finite value, {:e}",
                        self.declared[u.family].name,
                        self.describe(u),
                        f64::MAX
                    ),
                ));
            }
            after.insert(key, next);
        }
        Ok(())
    }

    /// The value `u` adds to now: see [`Families::check`].
    fn value(&self, u: &Update) -> f64 {
        let labels: Vec<&str> = u.labels.iter().map(String::as_str).collect();
        match &self.handles[u.family] {
            Handle::Counter(f) => existing(f, &labels).map(|c| c.get()),
            Handle::Gauge(f) => existing(f, &labels).map(|g| g.get()),
            Handle::Histogram(f) => existing(f, &labels).map(|h| h.sum()),
        }
        .unwrap_or(0.0)
    }

    /// `{a="x"}`, for messages; nothing when unlabelled.
    fn describe(&self, u: &Update) -> String {
        let names = self.declared[u.family].labels.iter();
        let pairs: Vec<String> = names
            .zip(&u.labels)
            .map(|(n, v)| format!("{n}={v:?}"))
            .collect();
        match pairs.is_empty() {
            true => String::new(),
            false => format!("{{{}}}", pairs.join(",")),
        }
    }

    /// Applies checked updates in order; an addition past `±f64::MAX` (from batches in flight
    /// together) stops there, the same at every replay.
    pub(super) fn apply(&self, updates: &[Update]) {
        for u in updates {
            let labels: Vec<&str> = u.labels.iter().map(String::as_str).collect();
            // Parsing pairs every operation with its type.
            match &self.handles[u.family] {
                Handle::Counter(f) => add_saturating(&f.get(&labels), u.value),
                Handle::Gauge(f) if u.op == "set" => f.set(&labels, u.value),
                Handle::Gauge(f) => {
                    let g = f.get(&labels);
                    g.set(saturating_sum(g.get(), u.value));
                }
                Handle::Histogram(f) => f.get(&labels).observe_saturating(u.value),
            }
        }
    }

    /// Adds a snapshot series line (see `snapshot.rs`) to its family, matched by name, type,
    /// label names and bounds; `None` when no family now takes it as it is.
    pub(super) fn restore(&self, line: &Value, positional: &mut Positional) -> Option<()> {
        let s = &line["series"];
        let (name, kind) = (s[0].as_str()?, s[2].as_str()?);
        let i = *self.index.get(name)?;
        let d = &self.declared[i];
        if kind != d.kind.as_str() {
            return None;
        }
        let labels = label_values(&s[1], d, positional)?;
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let value = &s[3];
        match &self.handles[i] {
            Handle::Counter(f) => {
                let (int, fraction) = (value[0].as_u64()?, value[1].as_f64()?);
                let c = f.get(&labels);
                c.add_parts(int, 0.0);
                add_saturating(&c, fraction);
            }
            Handle::Gauge(f) => f.set(&labels, value.as_f64()?),
            Handle::Histogram(f) => {
                let counts: Vec<u64> = numbers(&value[0], Value::as_u64)?;
                let sum = value[1].as_f64()?;
                let bounds = match &value[2] {
                    Value::Null => None,
                    b => Some(numbers(b, Value::as_f64)?),
                };
                let counts = counts_for(&d.buckets, bounds.as_deref(), &counts, positional)?;
                return f.get(&labels).add_counts(&counts, sum).then_some(());
            }
        }
        Some(())
    }
}

/// The members of the array `v`, each read by `read`.
fn numbers<T>(v: &Value, read: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    v.as_array()?.iter().map(read).collect()
}

/// Cumulative counts for buckets `declared` from `counts` under `bounds`, so a histogram that
/// only lost bounds keeps its counts exactly; `None` when a declared bound was not one then
/// (what fell below it is unknown) or counts misfit. Without bounds, as `positional` allows.
pub(super) fn counts_for(
    declared: &[f64],
    bounds: Option<&[f64]>,
    counts: &[u64],
    positional: &mut Positional,
) -> Option<Vec<u64>> {
    let Some(bounds) = bounds else {
        positional.seen += 1;
        return (positional.allowed && counts.len() == declared.len() + 1).then(|| counts.to_vec());
    };
    if counts.len() != bounds.len() + 1 {
        return None;
    }
    let mut out = Vec::with_capacity(declared.len() + 1);
    for b in declared {
        let at = bounds.iter().position(|x| x == b)?;
        out.push(counts[at]);
    }
    out.push(*counts.last()?);
    Some(out)
}

/// Adds `v` (not negative) to a counter, stopping at the largest finite value. Whole
/// increments that would take its integer part past `u64::MAX` go to its fractional part.
fn add_saturating(c: &Counter, v: f64) {
    let (int, fraction) = c.parts();
    if !(fraction + v).is_finite() {
        // `room` is rounded, maybe half a unit too much; one step down is then enough.
        let room = f64::MAX - fraction;
        let room = match (fraction + room).is_finite() {
            true => room,
            false => room.next_down(),
        };
        c.add_parts(0, room);
    } else if int.checked_add(v as u64).is_none() {
        c.add_parts(0, v);
    } else {
        c.add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_saturates_at_the_largest_finite_value() {
        let c = Counter::new();
        c.add_parts(3, 0.5);
        add_saturating(&c, 1.5e308);
        add_saturating(&c, 1.5e308);
        assert_eq!(c.get(), f64::MAX);
        add_saturating(&c, f64::MAX);
        c.inc();
        assert_eq!(c.get(), f64::MAX);
        assert!(c.parts().1.is_finite());
        for fraction in [1.0, 1e300, 8.98846567431158e307, 1.7e308] {
            let c = Counter::new();
            c.add(fraction + 0.5);
            add_saturating(&c, f64::MAX);
            assert!(c.get().is_finite() && c.get() > 1.79e308, "{fraction}");
        }
    }

    #[test]
    fn whole_increments_past_the_integer_keep_counting() {
        let c = Counter::new();
        for _ in 0..3_000 {
            add_saturating(&c, 8.9e15);
        }
        let want = 3_000.0 * 8.9e15;
        assert!((c.get() - want).abs() < want * 1e-12, "{}", c.get());
    }

    #[test]
    fn counts_follow_bounds() {
        let mut named = Positional::default();
        let counts = [3, 5, 9, 13];
        let bounds = [1.0, 5.0, 10.0];
        let got =
            |declared: &[f64], p: &mut Positional| counts_for(declared, Some(&bounds), &counts, p);
        assert_eq!(got(&[1.0, 10.0], &mut named), Some(vec![3, 9, 13]));
        assert_eq!(got(&[5.0], &mut named), Some(vec![5, 13]));
        assert_eq!(got(&[], &mut named), Some(vec![13]));
        assert_eq!(got(&[1.0, 100.0], &mut named), None);
        assert_eq!(got(&[2.0, 5.0, 10.0], &mut named), None);
        assert_eq!(
            counts_for(&[1.0], Some(&[1.0, 2.0]), &counts, &mut named),
            None
        );
        assert_eq!(named.seen, 0);
        // Without bounds, by position, only when the store may have them so.
        assert_eq!(counts_for(&bounds, None, &counts, &mut named), None);
        let mut legacy = Positional {
            allowed: true,
            seen: 0,
        };
        assert_eq!(
            counts_for(&bounds, None, &counts, &mut legacy),
            Some(counts.to_vec())
        );
        assert_eq!(counts_for(&[1.0], None, &counts, &mut legacy), None);
        assert_eq!(legacy.seen, 2);
    }
}
