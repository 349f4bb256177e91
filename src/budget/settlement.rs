//! A run's cost, carried by the run's end record so both become durable together; the ledger
//! line is a copy, mended at the next start when a crash or a failed append left it out.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::Error;

use super::ledger::{self, Entry};
use super::money::SpendInput;
use super::record::phase_micros;
use super::report::read_records;
use super::report::Recorded;
use super::Budget;

/// A run's priced cost, as its end record carries it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Settlement {
    pub run_id: String,
    /// The day of the run's reservation, or of its pricing without one.
    pub day: i64,
    pub micros: i64,
    pub phases: Vec<(String, i64)>,
    /// The run's end: the ledger line's time.
    pub ts: f64,
    /// The run's start once the end is applied, telling it from an earlier run of the same id.
    pub started_at: Option<f64>,
    /// The models its tokens were priced for; not in the record.
    pub models: Vec<String>,
}

impl Settlement {
    /// The `spend` member of a run's end record.
    pub fn to_json(&self) -> Value {
        let phases = self
            .phases
            .iter()
            .map(|(p, m)| (p.clone(), Value::from(*m)));
        let phases = crate::ordered::object(phases);
        json!({"day": self.day, "micros": self.micros, "phases": phases})
    }

    /// Reads the `spend` member of an end record; `None` in an old one.
    pub fn from_record(run_id: &str, ts: f64, spend: &Value) -> Option<Settlement> {
        let phases = spend["phases"].as_object().map_or_else(Vec::new, |m| {
            m.iter()
                .filter_map(|(p, v)| Some((p.clone(), v.as_i64()?)))
                .collect()
        });
        Some(Settlement {
            run_id: run_id.to_string(),
            day: spend["day"].as_i64()?,
            micros: spend["micros"].as_i64().filter(|m| *m >= 0)?,
            phases,
            ts,
            ..Settlement::default()
        })
    }
}

#[derive(Debug)]
pub(crate) struct LedgerLines {
    day: i64,
    lines: Vec<Vec<u8>>,
}

impl Budget {
    /// Prices the end of `run_id` at `ts`, changing nothing.
    pub(crate) fn price(
        &self,
        run_id: &str,
        cost: SpendInput,
        phase_costs: &[(String, f64)],
        ts: f64,
    ) -> Result<Settlement, Error> {
        let phases = phase_micros(phase_costs)?;
        let micros = cost.charge(&self.pricing)?.micros;
        let (state, _) = self.lock();
        let day = state.held(run_id).map_or(state.today, |h| h.day);
        Ok(Settlement {
            run_id: run_id.to_string(),
            day,
            micros,
            phases,
            ts,
            ..Settlement::default()
        })
    }

    /// Charges a settlement whose run end is durable, releasing its reservation, and returns the
    /// ledger lines to write. It cannot fail: the record holding the cost is already on disk.
    pub(crate) fn charge(&self, s: &Settlement) -> (Recorded, LedgerLines) {
        let entry = Entry {
            run_id: Some(&s.run_id),
            run_started_at: s.started_at,
            phases: &s.phases,
            ..Entry::new("run", s.micros, s.ts)
        };
        let (mut state, now) = self.lock();
        state.unhold(&s.run_id);
        // A day no reservation pins is summed first, so its alerts fire once;
        // if its ledger is unreadable the charge still counts, the append fails.
        let _ = state.load(&self.dir, s.day);
        let mut lines = Vec::new();
        let alerts = state.charge((s.day, now), &entry, &mut lines);
        state.inflight(s.day, 1);
        state.recorded = state.recorded.saturating_add(s.micros);
        let status = state.status(now);
        drop(state);
        self.count_phases(&entry, s.micros);
        self.note_models(s.models.iter().map(String::as_str));
        let recorded = Recorded::new(s.micros, s.day, alerts, status);
        (recorded, LedgerLines { day: s.day, lines })
    }

    /// Appends a charged settlement's lines after earlier failed ones (a restart restores both).
    pub(crate) fn write_settlement(&self, lines: LedgerLines) -> Result<(), Error> {
        let day = lines.day;
        let mut state = self.state();
        let mut all = state.owed.remove(&day).unwrap_or_default();
        all.extend(lines.lines);
        let journal = state.journal(&self.dir, day);
        drop(state);
        let appended = journal.and_then(|j| j.append(&all));
        let mut state = self.state();
        state.inflight(day, -1);
        if appended.is_err() {
            // Ahead of any owed since.
            let owed = state.owed.entry(day).or_default();
            all.append(owed);
            *owed = all;
        }
        state.prune();
        appended
    }

    /// Charges and writes the settlements a crash kept out of their ledger; returns those whose
    /// append failed.
    pub(crate) fn reconcile(&self, settlements: &[Settlement]) -> Result<Vec<Settlement>, Error> {
        let mut days: Vec<i64> = settlements.iter().map(|s| s.day).collect();
        days.sort_unstable();
        days.dedup();
        let mut owed = Vec::new();
        for day in days {
            let mut settled = settled_runs(&ledger::path(&self.dir, day))?;
            for s in settlements.iter().filter(|s| s.day == day) {
                // A settlement in the snapshot may also be in the journal after it: charged once.
                if settled.take(s) {
                    let (recorded, lines) = self.charge(s);
                    self.state().alerts += recorded.alerts.len() as u64;
                    if self.write_settlement(lines).is_err() {
                        owed.push(s.clone());
                    }
                }
            }
        }
        Ok(owed)
    }
}

/// The settlements one day's `"run"` lines hold: a line naming run id and start settles that end
/// (an id returns once retention forgot it); an older one without it, the earliest unsettled end.
#[derive(Default)]
struct Settled {
    /// Run id and start time (its bits) of the lines that name both.
    exact: HashSet<(String, u64)>,
    /// By run id: how many (older) lines name no start, each settling one end.
    plain: HashMap<String, u32>,
}

impl Settled {
    /// Whether `s` is still to be charged; if so, it is settled from now on.
    fn take(&mut self, s: &Settlement) -> bool {
        let id = &s.run_id;
        let Some(at) = s.started_at else {
            // From an old snapshot: any line of the id settles it.
            let any = self.exact.iter().any(|(r, _)| r == id) || self.plain.contains_key(id);
            if !any {
                self.plain.insert(id.clone(), 0);
            }
            return !any;
        };
        if !self.exact.insert((id.clone(), at.to_bits())) {
            return false;
        }
        match self.plain.get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        }
    }
}

/// What the `"run"` lines of one ledger file settle.
fn settled_runs(path: &Path) -> Result<Settled, Error> {
    let values = match read_records(path, 0, u64::MAX) {
        Ok((values, _)) => values,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ledger::storage(path, e)),
    };
    let mut settled = Settled::default();
    for v in &values {
        let Some(id) = v["run_id"].as_str().filter(|_| v["kind"] == "run") else {
            continue;
        };
        match v["run_started_at"].as_f64() {
            Some(at) => {
                settled.exact.insert((id.to_string(), at.to_bits()));
            }
            None => *settled.plain.entry(id.to_string()).or_default() += 1,
        }
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settlement(id: &str, started_at: Option<f64>) -> Settlement {
        Settlement {
            run_id: id.into(),
            day: 0,
            micros: 1,
            phases: Vec::new(),
            ts: 2.0,
            started_at,
            models: Vec::new(),
        }
    }

    #[test]
    fn a_line_from_before_start_times_settles_one_end_of_its_id() {
        let mut settled = Settled::default();
        settled.plain.insert("x".into(), 1);
        settled.exact.insert(("y".into(), 5f64.to_bits()));
        // The old line settles x's first end; its second is charged, once.
        assert!(!settled.take(&settlement("x", Some(1.0))));
        assert!(settled.take(&settlement("x", Some(3.0))));
        assert!(!settled.take(&settlement("x", Some(3.0))));
        assert!(!settled.take(&settlement("y", Some(5.0))));
        assert!(settled.take(&settlement("y", Some(6.0))));
        // From an old snapshot: any line of the id settles it.
        assert!(!settled.take(&settlement("y", None)));
        assert!(settled.take(&settlement("z", None)));
        assert!(!settled.take(&settlement("z", None)));
    }
}
