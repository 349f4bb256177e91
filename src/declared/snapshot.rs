//! The declared metrics' snapshot `metrics/snapshot`: every series' value as of one journal
//! record, so a start reads only later records and older segments go. In the journal's line
//! format: `{"snapshot":{"records":N,"format":2}}`; per series `{"series":[name,{label:value,
//! ...},type,value]}` (a counter's [`Counter::parts`], a gauge's value, a histogram's
//! `[cumulative counts, sum, bounds]`); then, as they were, lines of families no longer
//! declared so; and `{"end":N}`. Without a format (before 2), labels are positional and
//! counts unbounded ([`Positional`]).
//!
//! [`Counter::parts`]: crate::metrics::Counter::parts

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::journal;

use super::families::{with_family, Families, Handle};
#[cfg(doc)]
use super::update::Positional;

/// The snapshot format this version writes: label names and bucket bounds.
const FORMAT: u64 = 2;

/// The file name of the snapshot, in the store's directory.
pub const FILE: &str = "snapshot";

/// The declared metrics at one journal record: taken quickly, written later by [`Taken::write`].
pub struct Taken {
    /// The journal records it covers: those numbered below this.
    pub(super) records: u64,
    /// By family index: each series' number and value.
    series: Vec<(usize, u32, Value)>,
    families: Arc<Families>,
    /// What the declarations in force did not take, as it was.
    kept: Arc<Vec<Value>>,
}

impl Taken {
    /// Takes every series' value of `families` as of `records` journal records.
    pub(super) fn take(records: u64, families: &Arc<Families>, kept: &Arc<Vec<Value>>) -> Taken {
        let mut series = Vec::new();
        for (i, handle) in families.handles.iter().enumerate() {
            let mut add = |n, v| series.push((i, n, v));
            match handle {
                Handle::Counter(f) => f.each(|n, c| add(n, json!(c.parts()))),
                Handle::Gauge(f) => f.each(|n, g| add(n, json!(g.get()))),
                Handle::Histogram(f) => f.each(|n, h| {
                    let mut counts = Vec::new();
                    let (sum, _) = h.snapshot(&mut counts);
                    add(n, json!([counts, sum, families.declared[i].buckets]));
                }),
            }
        }
        Taken {
            records,
            series,
            families: families.clone(),
            kept: kept.clone(),
        }
    }

    /// Writes the snapshot at `path`, crash-only; returns its bytes.
    pub fn write(self, path: &Path) -> std::io::Result<u64> {
        let families = &self.families;
        let series = self.series.into_iter().filter_map(|(i, n, value)| {
            let d = &families.declared[i];
            let values = with_family!(&families.handles[i], |f| f.label_values(n))?;
            let labels = d.labels.iter().cloned();
            let labels = crate::ordered::object(labels.zip(values.into_iter().map(Value::String)));
            Some(json!({"series": [d.name, labels, d.kind.as_str(), value]}))
        });
        let head = json!({"snapshot": {"records": self.records, "format": FORMAT}});
        let all = std::iter::once(head)
            .chain(series)
            .chain(self.kept.iter().cloned());
        journal::write_snapshot(path, all)
    }
}

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The journal records it covers: those numbered below this.
    pub records: u64,
    /// Whether its series name their labels and bounds (format 2).
    pub named: bool,
}

/// Reads the snapshot at `path`, handing each line after the header to `line` with the header;
/// returns the header, `None` without a snapshot. Refuses a line that is not a snapshot's.
pub fn read(path: &Path, mut line: impl FnMut(&Value, Header)) -> Result<Option<Header>, String> {
    let mut header = None;
    journal::read_snapshot(path, |v| {
        if let Some(records) = v["snapshot"]["records"].as_u64() {
            let named = v["snapshot"]["format"]
                .as_u64()
                .is_some_and(|f| f >= FORMAT);
            header = Some(Header { records, named });
        } else if let (Some(h), true) = (header, v.get("series").is_some() || v.get("u").is_some())
        {
            line(&v, h);
        } else {
            return Err("not a snapshot line".into());
        }
        Ok(())
    })?;
    Ok(header)
}
