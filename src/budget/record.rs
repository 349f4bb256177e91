//! Direct spends: costs recorded outside a run's lifecycle, charged to
//! today (a run's own cost goes through `settlement.rs`).

use std::sync::MutexGuard;

use crate::error::Error;
use crate::runs::valid_run_id;

use super::ledger::{split_phases, Entry, OpKey};
use super::money::{self, SpendInput};
use super::report::{BudgetStatus, Recorded, Spent};
use super::state::State;
use super::Budget;

/// Checks a phase name, which becomes a label value; empty is no phase.
fn check_phase(phase: &str, field: &str) -> Result<(), Error> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_.:-".contains(&b);
    match phase.len() <= 64 && phase.bytes().all(allowed) {
        true => Ok(()),
        false => Err(Error::invalid(field, "must be 1 to 64 of [A-Za-z0-9_.:-]")),
    }
}

/// A run's cost by phase in micro-dollars, a phase named twice summed.
pub(crate) fn phase_micros(phase_costs: &[(String, f64)]) -> Result<Vec<(String, i64)>, Error> {
    let mut phases: Vec<(String, i64)> = Vec::with_capacity(phase_costs.len());
    for (phase, cost) in phase_costs {
        check_phase(phase, "phase_costs")?;
        let micros = money::to_micros(*cost, "phase_costs")?;
        match phases.iter_mut().find(|(p, _)| p == phase) {
            Some((_, sum)) => *sum += micros,
            None => phases.push((phase.clone(), micros)),
        }
    }
    Ok(phases)
}

/// What an operation id must be: the rule of run ids, since the trigger
/// route hands a run id out as the `operation_id` its client then reports.
pub(crate) const OPERATION_ID_RULE: &str = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";

impl Budget {
    /// Records a spend charged to today once its line is durable.
    pub(crate) fn spend(
        &self,
        input: SpendInput,
        run_id: Option<&str>,
        phase: Option<&str>,
    ) -> Result<Recorded, Error> {
        match self.direct(None, input, run_id, phase)? {
            Spent::New(r) | Spent::Repeat(r) => Ok(r),
        }
    }

    /// Records a spend unless today's ledger holds one of `operation_id`; a
    /// repeat arriving while the first is being appended waits for it.
    pub(crate) fn spend_once(
        &self,
        operation_id: &str,
        input: SpendInput,
        run_id: Option<&str>,
        phase: Option<&str>,
    ) -> Result<Spent, Error> {
        if !valid_run_id(operation_id) {
            return Err(Error::invalid("operation_id", OPERATION_ID_RULE));
        }
        self.direct(Some(operation_id), input, run_id, phase)
    }

    fn direct(
        &self,
        operation_id: Option<&str>,
        input: SpendInput,
        run_id: Option<&str>,
        phase: Option<&str>,
    ) -> Result<Spent, Error> {
        let phase = phase.filter(|p| !p.is_empty());
        phase.map_or(Ok(()), |p| check_phase(p, "phase"))?;
        let charge = input.charge(&self.pricing)?;
        let entry = Entry {
            run_id,
            phase,
            operation_id,
            ..Entry::new("direct", &charge, 0.0)
        };
        let key = entry.key();
        let (mut state, now) = self.lock_settled(None, key.as_slice());
        let day = state.today;
        if let Some(first) = key.and_then(|k| state.recorded(day, &k)) {
            let status = state.status(now);
            return Ok(Spent::Repeat(Recorded::new(first, day, Vec::new(), status)));
        }
        let spend = [Entry { ts: now, ..entry }];
        let (alerts, status) = self.record_spends(state, (day, now), &spend)?;
        let recorded = Recorded::new(charge.micros, day, alerts, status);
        Ok(Spent::New(recorded))
    }

    /// Appends `spends` to `day`'s ledger outside the lock `state` holds;
    /// returns the alerts they fired and today's budget after them.
    pub(super) fn record_spends(
        &self,
        mut state: MutexGuard<'_, State>,
        (day, now): (i64, f64),
        spends: &[Entry<'_>],
    ) -> Result<(Vec<u8>, BudgetStatus), Error> {
        let journal = state.journal(day)?;
        let mut lines = Vec::new();
        let fired = state.begin_spends((day, now), spends, &mut lines);
        drop(state);
        let appended = journal.append(&lines);
        let mut state = self.state();
        state.end_spends(day, spends, &fired, appended.is_ok());
        self.appended.notify_all();
        appended?;
        let status = state.status(now);
        drop(state);
        for s in spends {
            self.count_phases(s, s.charge.micros);
            self.note_models(s.charge.model.as_deref());
        }
        Ok((fired.concat(), status))
    }

    /// Locks the books once no append of `keys` to `day` (today when `None`)
    /// is in flight, so the caller's check of them is final.
    pub(super) fn lock_settled(
        &self,
        day: Option<i64>,
        keys: &[OpKey],
    ) -> (MutexGuard<'_, State>, f64) {
        let (state, mut now) = self.lock();
        let pending = |s: &mut State| {
            now = self.clock.now_unix();
            s.roll(now);
            let day = day.unwrap_or(s.today);
            keys.iter().any(|k| s.pending(day, k))
        };
        // As in `Budget::state`: a poisoned lock still guards books that add up.
        let state = self
            .appended
            .wait_while(state, pending)
            .unwrap_or_else(|e| e.into_inner());
        (state, now)
    }

    /// Adds a recorded spend to `agent_cost_dollars_total`.
    pub(super) fn count_phases(&self, entry: &Entry<'_>, micros: i64) {
        let Some(family) = self.phases.get() else {
            return;
        };
        split_phases(entry.phases, entry.phase, micros, |label, m| {
            family.inc_by(&[label], u64::try_from(m).unwrap_or(0));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, DAY};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn phase_names_are_checked() {
        let valid = |phase: &str| check_phase(phase, "phase").is_ok();
        assert!(valid("plan") && valid("a.b:c-d_9") && valid(&"x".repeat(64)));
        assert!(valid(""), "empty is no phase");
        assert!(!valid("sp ace") && !valid(&"x".repeat(65)));
        assert!(!valid("é") && !valid("a\"b"));
    }

    #[test]
    fn settle_records_the_cost_and_frees_the_reservation() {
        let f = Fixture::new("settle");
        let budget = f.open(1.0, 0.15);
        budget.reserve("r1", None).unwrap();
        let phases =
            [("plan", 0.05), ("act", 0.04), ("act", 0.06)].map(|(p, c)| (p.to_string(), c));
        let recorded = budget
            .settle("r1", SpendInput::Amount(0.2), &phases)
            .unwrap();
        assert_eq!(
            (recorded.amount, recorded.day.as_str()),
            (0.2, "2026-11-23")
        );
        let s = &recorded.status;
        assert_eq!(
            (s.today_spend, s.reserved, s.remaining, s.spend_events),
            (0.2, 0.0, 0.8, 1)
        );
        let line = std::fs::read_to_string(f.file(DAY)).unwrap();
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            (value["kind"].as_str(), value["run_id"].as_str()),
            (Some("run"), Some("r1"))
        );
        assert_eq!(
            (value["amount"].as_f64(), value["amount_micros"].as_i64()),
            (Some(0.2), Some(200_000))
        );
        assert_eq!(value["phases"]["act"], 0.1);
        budget.settle("r1", SpendInput::Amount(0.0), &[]).unwrap();
        assert_eq!(
            budget.status().spend_events,
            2,
            "a second settle is charged to today"
        );
    }

    #[test]
    fn spends_are_priced_and_checked() {
        let f = Fixture::new("spend");
        let budget = f.open(5.0, 0.15);
        let tokens = SpendInput::Tokens {
            input_tokens: 10_000,
            output_tokens: 1_000,
            model: None,
        };
        let recorded = budget.spend(tokens, Some("r9"), Some("review")).unwrap();
        assert_eq!(recorded.amount, 0.225);
        let invalid = |r: Result<Recorded, Error>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid(budget.spend(SpendInput::Amount(f64::NAN), None, None)),
            "amount"
        );
        assert_eq!(
            invalid(budget.spend(SpendInput::Amount(-1.0), None, None)),
            "amount"
        );
        assert_eq!(
            invalid(budget.spend(SpendInput::Amount(0.0), None, Some("a b"))),
            "phase"
        );
        budget.reserve("r", None).unwrap();
        let bad = [("ok".to_string(), -0.5)];
        assert_eq!(
            invalid(budget.settle("r", SpendInput::Amount(0.0), &bad)),
            "phase_costs"
        );
        assert_eq!(
            budget.status().reserved,
            0.15,
            "invalid settles keep the reservation"
        );
        let line = std::fs::read_to_string(f.file(DAY)).unwrap();
        assert!(line.contains(r#""kind":"direct""#) && line.contains(r#""phase":"review""#));
        assert!(line.contains(r#""input_tokens":10000,"output_tokens":1000"#));
    }

    #[test]
    fn reopening_sums_the_ledger_exactly() {
        let f = Fixture::new("reopen");
        let budget = f.open(100.0, 0.15);
        let amounts = [0.1, 0.2, 0.3, 0.000001, 12.345678, 0.15];
        for a in amounts {
            budget.spend(SpendInput::Amount(a), None, None).unwrap();
        }
        let before = budget.status();
        assert_eq!(before.today_spend, 13.095679);
        drop(budget);
        let after = f.open(100.0, 0.15).status();
        assert_eq!(after, before);
        assert_eq!(after.spend_events, 6);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_complete_lines_are_summed() {
        let f = Fixture::new("torn");
        let budget = f.open(5.0, 0.15);
        budget.spend(SpendInput::Amount(0.25), None, None).unwrap();
        budget.spend(SpendInput::Amount(0.5), None, None).unwrap();
        drop(budget);
        let complete = std::fs::read(f.file(DAY)).unwrap();
        let mut torn = complete.clone();
        torn.extend_from_slice(br#"{"ts":"2026-11-23T12:00:00.000Z","kind":"direct","amount":9"#);
        std::fs::write(f.file(DAY), torn).unwrap();
        let budget = f.open(5.0, 0.15);
        assert_eq!(
            (budget.status().today_spend, budget.status().spend_events),
            (0.75, 2)
        );
        assert_eq!(std::fs::read(f.file(DAY)).unwrap(), complete);
        budget.spend(SpendInput::Amount(0.25), None, None).unwrap();
        drop(budget);
        assert_eq!(f.open(5.0, 0.15).status().today_spend, 1.0);
    }

    #[test]
    fn alerts_fire_once_per_threshold_per_day_across_reopens() {
        let f = Fixture::new("alerts");
        let budget = f.open(1.0, 0.15);
        let spend = |b: &Budget, a: f64| b.spend(SpendInput::Amount(a), None, None).unwrap().alerts;
        assert_eq!(spend(&budget, 0.49), Vec::<u8>::new());
        assert_eq!(spend(&budget, 0.01), vec![50]);
        assert_eq!(spend(&budget, 0.1), Vec::<u8>::new());
        drop(budget);
        let budget = f.open(1.0, 0.15);
        assert_eq!(spend(&budget, 0.1), Vec::<u8>::new());
        assert_eq!(spend(&budget, 0.5), vec![80, 100]);
        drop(budget);
        let budget = f.open(1.0, 0.15);
        assert_eq!(spend(&budget, 1.0), Vec::<u8>::new());
        let ledger = std::fs::read_to_string(f.file(DAY)).unwrap();
        assert_eq!(ledger.matches(r#"{"alert":"#).count(), 3);
        f.at(DAY + 1, 10.0);
        assert_eq!(spend(&budget, 0.6), vec![50], "a new day fires again");
    }

    #[test]
    fn concurrent_spends_add_up_exactly_after_reopen() {
        let f = Fixture::new("concurrent");
        let budget = Arc::new(f.open(5.0, 0.15));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let spend = || budget.spend(SpendInput::Amount(0.01), None, Some("act"));
                    (0..200)
                        .map(|_| spend().unwrap().alerts.len())
                        .sum::<usize>()
                })
            })
            .collect();
        let alerts: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(alerts, 3);
        assert_eq!(budget.status().today_spend, 16.0);
        drop(budget);
        let status = f.open(5.0, 0.15).status();
        assert_eq!((status.today_spend, status.spend_events), (16.0, 1600));
    }

    #[test]
    fn an_operation_is_spent_once_a_day_across_reopens() {
        let f = Fixture::new("once");
        let budget = f.open(5.0, 0.15);
        let once = |b: &Budget, id: &str, a: f64| {
            b.spend_once(id, SpendInput::Amount(a), Some("r1"), Some("act"))
        };
        let first = once(&budget, "op_1", 0.5).unwrap();
        assert!(
            matches!(&first, Spent::New(r) if r.amount == 0.5),
            "{first:?}"
        );
        let Spent::Repeat(repeat) = once(&budget, "op_1", 0.7).unwrap() else {
            panic!("a repeat is not recorded again")
        };
        assert_eq!(
            (
                repeat.amount,
                repeat.alerts.len(),
                repeat.status.today_spend
            ),
            (0.5, 0, 0.5)
        );
        let invalid = once(&budget, "op 1", 0.1);
        assert!(
            matches!(invalid, Err(Error::Invalid { ref field, .. }) if field == "operation_id"),
            "{invalid:?}"
        );
        assert!(matches!(
            budget.spend_once("op_2", SpendInput::Amount(-1.0), None, None),
            Err(Error::Invalid { .. })
        ));
        drop(budget);
        let budget = f.open(5.0, 0.15);
        assert!(matches!(once(&budget, "op_1", 0.5), Ok(Spent::Repeat(_))));
        assert!(matches!(once(&budget, "op_2", 0.25), Ok(Spent::New(_))));
        let s = budget.status();
        assert_eq!((s.today_spend, s.spend_events), (0.75, 2));
        let line = std::fs::read_to_string(f.file(DAY)).unwrap();
        assert!(
            line.contains(r#""phase":"act","operation_id":"op_1""#),
            "{line}"
        );
        f.at(DAY + 1, 10.0);
        assert!(
            matches!(once(&budget, "op_1", 0.5), Ok(Spent::New(_))),
            "a new day counts it again"
        );
    }

    #[test]
    fn concurrent_spends_of_one_operation_count_once() {
        let f = Fixture::new("once-concurrent");
        let budget = Arc::new(f.open(100.0, 0.15));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| {
                            let id = format!("op_{}", (i + t) % 10);
                            let spent =
                                budget.spend_once(&id, SpendInput::Amount(0.25), None, None);
                            matches!(spent.unwrap(), Spent::New(_))
                        })
                        .filter(|new| *new)
                        .count()
                })
            })
            .collect();
        let new: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(new, 10);
        assert_eq!(budget.status().today_spend, 2.5);
        drop(budget);
        let s = f.open(100.0, 0.15).status();
        assert_eq!((s.today_spend, s.spend_events), (2.5, 10));
    }

    #[test]
    fn an_operation_whose_append_failed_is_recorded_by_its_retry() {
        let f = Fixture::new("once-retry");
        let budget = f.open(5.0, 0.15);
        std::fs::create_dir(f.file(DAY)).unwrap();
        let failed = budget.spend_once("op_1", SpendInput::Amount(0.5), None, None);
        assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
        std::fs::remove_dir(f.file(DAY)).unwrap();
        let retry = budget.spend_once("op_1", SpendInput::Amount(0.5), None, None);
        assert!(matches!(retry, Ok(Spent::New(_))), "{retry:?}");
        assert_eq!(budget.status().today_spend, 0.5);
    }
}
