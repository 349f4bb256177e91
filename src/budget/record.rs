//! Reservations, made at a run's start and checked against the day's limit in one locked step;
//! and direct spends, charged to today outside a run (a run's own cost: `settlement.rs`).

use std::sync::MutexGuard;

use crate::error::{Error, ExhaustedAnswer};
use crate::runs::valid_run_id;
use crate::time;

use super::ledger::{split_phases, Entry, OpKey};
use super::money::{self, dollars, SpendInput};
use super::report::{refusal, BudgetStatus, Recorded, Spent};
use super::state::{Hold, State};
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
    /// Records a spend charged to today once its line is durable, unless today's ledger holds one
    /// of `operation_id`; a repeat arriving while the first is being appended waits for it.
    pub(crate) fn spend_once(
        &self,
        operation_id: Option<&str>,
        input: SpendInput,
        run_id: Option<&str>,
        phase: Option<&str>,
    ) -> Result<Spent, Error> {
        if operation_id.is_some_and(|id| !valid_run_id(id)) {
            return Err(Error::invalid("operation_id", OPERATION_ID_RULE));
        }
        let phase = phase.filter(|p| !p.is_empty());
        phase.map_or(Ok(()), |p| check_phase(p, "phase"))?;
        let entry = Entry {
            run_id,
            phase,
            operation_id,
            ..input.charge(&self.pricing)?
        };
        let key = entry.key();
        let (mut state, now) = self.lock_settled(None, key.as_slice());
        let day = state.today;
        if let Some(first) = key.and_then(|k| state.recorded(day, &k)) {
            let status = state.status(now);
            return Ok(Spent::Repeat(Recorded::new(first, day, Vec::new(), status)));
        }
        let (micros, spend) = (entry.micros, [Entry { ts: now, ..entry }]);
        let (alerts, status) = self.record_spends(state, (day, now), &spend)?;
        let recorded = Recorded::new(micros, day, alerts, status);
        Ok(Spent::New(recorded))
    }

    /// Appends `spends` to `day`'s ledger outside `state`'s lock; returns their alerts and status.
    pub(super) fn record_spends(
        &self,
        mut state: MutexGuard<'_, State>,
        (day, now): (i64, f64),
        spends: &[Entry<'_>],
    ) -> Result<(Vec<u8>, BudgetStatus), Error> {
        let journal = state.journal(&self.dir, day)?;
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
            self.count_phases(s, s.micros);
            self.note_models(s.model);
        }
        Ok((fired.concat(), status))
    }

    /// Locks the books once no append of `keys` to `day` (default today) is in flight.
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

    /// Reserves the estimate of `agent` for `run_id` if it fits; returns what the run holds.
    pub(crate) fn reserve(
        &self,
        run_id: &str,
        agent: Option<&str>,
    ) -> Result<i64, Box<ExhaustedAnswer>> {
        let (mut state, now) = self.lock();
        if let Some(held) = state.held(run_id) {
            return Ok(held.micros);
        }
        let estimate = state.estimate(agent);
        if !state.admits(estimate) {
            state.rejections += 1;
            let status = state.status(now);
            return Err(Box::new(refusal(&status, dollars(estimate), now)));
        }
        let (day, micros) = (state.today, estimate);
        state.hold(run_id, Hold { day, micros });
        Ok(estimate)
    }

    pub(crate) fn run_estimate(&self, agent: Option<&str>) -> i64 {
        self.lock().0.estimate(agent)
    }

    /// Re-reserves `micros` for a run active at the last stop, on its start day, unchecked.
    pub(crate) fn restore_reservation(
        &self,
        run_id: &str,
        started_at_unix: f64,
        micros: i64,
    ) -> Result<(), Error> {
        if !started_at_unix.is_finite() {
            return Err(Error::invalid("started_at", "must be a finite Unix time"));
        }
        let (mut state, _) = self.lock();
        if state.held(run_id).is_some() {
            return Ok(());
        }
        let day = time::day_of(started_at_unix).min(state.today);
        state.load(&self.dir, day)?;
        state.hold(run_id, Hold { day, micros });
        Ok(())
    }

    /// Grows `run_id`'s reservation to what it has spent, unchecked: the run was admitted.
    pub(crate) fn cover(&self, run_id: &str, micros: i64) {
        self.lock().0.grow(run_id, micros);
    }

    /// Drops `run_id`'s reservation, for a start that did not happen.
    pub(crate) fn release(&self, run_id: &str) {
        let (mut state, _) = self.lock();
        if state.unhold(run_id).is_some() {
            state.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, DAY};
    use super::*;
    use std::sync::Arc;

    impl Budget {
        /// A direct spend without an operation id.
        pub(crate) fn spend(
            &self,
            input: SpendInput,
            run_id: Option<&str>,
            phase: Option<&str>,
        ) -> Result<Recorded, Error> {
            match self.spend_once(None, input, run_id, phase)? {
                Spent::New(r) | Spent::Repeat(r) => Ok(r),
            }
        }
    }

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
            b.spend_once(Some(id), SpendInput::Amount(a), Some("r1"), Some("act"))
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
            budget.spend_once(Some("op_2"), SpendInput::Amount(-1.0), None, None),
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
                                budget.spend_once(Some(&id), SpendInput::Amount(0.25), None, None);
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
        let failed = budget.spend_once(Some("op_1"), SpendInput::Amount(0.5), None, None);
        assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
        std::fs::remove_dir(f.file(DAY)).unwrap();
        let retry = budget.spend_once(Some("op_1"), SpendInput::Amount(0.5), None, None);
        assert!(matches!(retry, Ok(Spent::New(_))), "{retry:?}");
        assert_eq!(budget.status().today_spend, 0.5);
    }
}

#[cfg(test)]
mod reserve_tests {
    use super::super::tests::{Fixture, DAY};
    use super::super::{Budget, BudgetConfig, Clock, SpendInput};
    use std::sync::Arc;

    #[test]
    fn concurrent_reserves_admit_exactly_what_fits() {
        let f = Fixture::new("admit");
        let budget = Arc::new(f.open(1.50, 0.15));
        let threads: Vec<_> = (0..100)
            .map(|i| {
                let budget = budget.clone();
                std::thread::spawn(move || budget.reserve(&format!("run-{i}"), None).is_ok())
            })
            .collect();
        let admitted = threads.into_iter().map(|t| t.join().unwrap());
        assert_eq!(admitted.filter(|ok| *ok).count(), 10);
        let status = budget.status();
        assert_eq!(
            (status.reserved, status.remaining, status.cycles_affordable),
            (1.5, 0.0, 0)
        );
        assert_eq!(budget.state().rejections, 90);
        assert!(!f.file(DAY).exists(), "reservations are not journaled");
    }

    #[test]
    fn refusal_reports_the_budget_and_seconds_to_midnight() {
        let f = Fixture::new("refusal");
        f.at(DAY, 86_400.0 - 30.0);
        let budget = f.open(0.35, 0.15);
        budget.reserve("a", None).unwrap();
        budget.spend(SpendInput::Amount(0.1), None, None).unwrap();
        let refusal = budget.reserve("b", None).unwrap_err();
        assert_eq!(refusal.retry_after_seconds, 30);
        let b = &refusal.body;
        assert_eq!(
            (&b["daily_limit"], &b["today_spend"], &b["reserved"]),
            (&serde_json::json!(0.35), &0.1.into(), &0.15.into())
        );
        assert_eq!(b["remaining"], 0.1);
        assert_eq!(b["reset_at"], "2026-11-24T00:00:00.000Z");
        let s = budget.status();
        assert_eq!((s.cycles_affordable, s.date.as_str()), (0, "2026-11-23"));
        f.at(DAY, 86_400.0 - 0.25);
        assert_eq!(
            budget.reserve("e", None).unwrap_err().retry_after_seconds,
            1
        );
        assert_eq!(budget.status().spend_events, 1, "refusals journal nothing");
    }

    #[test]
    fn a_budget_below_one_estimate_refuses_the_first_run() {
        let f = Fixture::new("tiny");
        let budget = f.open(0.01, 0.15);
        let refusal = budget.reserve("first", None).unwrap_err();
        assert_eq!(
            (&refusal.body["remaining"], &refusal.body["reserved"]),
            (&serde_json::json!(0.01), &0.0.into())
        );
        assert_eq!(refusal.body["reason"], "budget_exhausted");
    }

    #[test]
    fn reserve_is_idempotent_and_release_frees() {
        let f = Fixture::new("release");
        let budget = f.open(0.30, 0.15);
        budget.reserve("a", None).unwrap();
        budget.reserve("a", None).unwrap();
        assert_eq!(budget.status().reserved, 0.15);
        budget.reserve("b", None).unwrap();
        assert!(budget.reserve("c", None).is_err());
        budget.release("a");
        budget.release("unknown");
        assert_eq!(budget.status().reserved, 0.15);
        budget.reserve("c", None).unwrap();
    }

    #[test]
    fn restored_reservations_skip_the_check_and_keep_their_day() {
        let f = Fixture::new("restore");
        f.at(DAY - 1, 50_000.0);
        let budget = f.open(1.0, 0.15);
        budget.spend(SpendInput::Amount(0.45), None, None).unwrap();
        drop(budget);
        f.at(DAY, 100.0);
        let budget = f.open(0.20, 0.15);
        budget
            .restore_reservation("old", (DAY - 1) as f64 * 86_400.0 + 60_000.0, 150_000)
            .unwrap();
        budget
            .restore_reservation("now", DAY as f64 * 86_400.0 + 50.0, 150_000)
            .unwrap();
        budget
            .restore_reservation("later", (DAY + 5) as f64 * 86_400.0, 150_000)
            .unwrap();
        assert_eq!(
            budget.status().reserved,
            0.3,
            "over the limit, and yesterday's not counted"
        );
        assert!(budget.restore_reservation("x", f64::NAN, 1).is_err());
        let recorded = budget.settle("old", SpendInput::Amount(0.1), &[]).unwrap();
        // Yesterday's $0.55 against today's $0.20 limit reaches every threshold.
        assert_eq!(
            (recorded.day.as_str(), recorded.alerts.as_slice()),
            ("2026-11-22", &[50u8, 80, 100][..])
        );
        assert_eq!(budget.status().today_spend, 0.0);
    }

    #[test]
    fn settles_racing_reserves_never_let_spend_pass_the_limit() {
        let f = Fixture::new("race");
        let budget = Arc::new(f.open(1.5, 0.15));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut settled = 0;
                    for i in 0..20 {
                        let run = format!("{t}-{i}");
                        if budget.reserve(&run, None).is_ok() {
                            budget.settle(&run, SpendInput::Amount(0.15), &[]).unwrap();
                            settled += 1;
                        }
                        let s = budget.status();
                        assert!(s.today_spend + s.reserved <= 1.5 + 1e-9, "{s:?}");
                    }
                    settled
                })
            })
            .collect();
        let settled: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(settled, 10);
        let s = budget.status();
        assert_eq!((s.today_spend, s.reserved, s.spend_events), (1.5, 0.0, 10));
        assert_eq!(s.date, crate::time::date_string(DAY));
    }

    #[test]
    fn auto_reserves_the_learned_percentile_of_the_agent_and_fixed_does_not() {
        let f = Fixture::new("learned");
        let budget = f.open(10.0, 0.15);
        // No history: the configured estimate, the research agent's contract.
        assert_eq!(budget.reserve("first", Some("coder")), Ok(150_000));
        let now = f.clock.now_unix();
        for cost in [1.0, 2.0, 3.0, 4.0, 2.5] {
            budget.learn(Some("coder"), (cost * 1e6) as i64, now);
        }
        budget.learn(Some("tidy"), 10_000, now);
        assert_eq!(budget.run_estimate(Some("coder")), 4_000_000);
        assert_eq!(budget.run_estimate(Some("tidy")), 150_000, "never below it");
        assert_eq!(budget.run_estimate(None), 150_000);
        let s = budget.status();
        assert_eq!((s.run_estimate, s.run_estimate_mode), (4.0, "auto"));
        assert_eq!(s.cycles_affordable, 2, "$9.85 left is two of $4.00");
        assert_eq!(budget.reserve("a", Some("coder")), Ok(4_000_000));
        assert_eq!(budget.reserve("a", Some("tidy")), Ok(4_000_000), "kept");
        assert_eq!(budget.reserve("b", Some("coder")), Ok(4_000_000));
        let refusal = budget.reserve("c", Some("coder")).unwrap_err();
        assert_eq!(refusal.body["run_estimate"], 4.0);
        let message = &refusal.message;
        assert!(message.contains("estimate of $4.00"), "{message}");
        assert!(message.contains("only $1.85 of"), "{message}");
        assert_eq!(budget.reserve("d", Some("tidy")), Ok(150_000));
        // A day later the agent has not run: the status forgets it, its
        // own starts still reserve what it learned.
        f.clock.advance(86_400.0);
        assert_eq!(budget.status().run_estimate, 0.15);
        assert_eq!(budget.run_estimate(Some("coder")), 4_000_000);
        drop(budget);

        let config = BudgetConfig {
            daily_limit: 10.0,
            run_estimate: 0.15,
            learn: false,
            ..BudgetConfig::new(f.dir.parent().unwrap())
        };
        let fixed = Budget::open(config, f.clock.clone()).unwrap();
        fixed.learn(Some("coder"), 4_000_000, f.clock.now_unix());
        assert_eq!(fixed.reserve("e", Some("coder")), Ok(150_000));
        let s = fixed.status();
        assert_eq!((s.run_estimate, s.run_estimate_mode), (0.15, "fixed"));
    }

    #[test]
    fn cover_grows_a_reservation_and_never_shrinks_it() {
        let f = Fixture::new("cover");
        let budget = f.open(2.0, 0.15);
        budget.reserve("a", None).unwrap();
        budget.cover("a", 1_000_000);
        assert_eq!(budget.status().reserved, 1.0);
        budget.cover("a", 500_000);
        budget.cover("unknown", 9_000_000);
        let s = budget.status();
        assert_eq!((s.reserved, s.remaining), (1.0, 1.0));
        budget.settle("a", SpendInput::Amount(1.2), &[]).unwrap();
        let s = budget.status();
        assert_eq!((s.reserved, s.today_spend), (0.0, 1.2));
    }
}
