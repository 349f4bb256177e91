//! Reservations: a run reserves its estimate when it starts, checked
//! against the day's limit in the same locked step.

use crate::error::Error;
use crate::time;

use super::money::dollars;
use super::report::Refusal;
use super::state::Hold;
use super::Budget;

impl Budget {
    /// Reserves the run estimate of `agent` for `run_id` if it fits, and
    /// returns the micro-dollars held; a run holding one keeps it.
    /// Reservations live in memory (see [`Budget::restore_reservation`]).
    pub(crate) fn reserve(&self, run_id: &str, agent: Option<&str>) -> Result<i64, Box<Refusal>> {
        let (mut state, now) = self.lock();
        if let Some(held) = state.held(run_id) {
            return Ok(held.micros);
        }
        let estimate = state.estimate(agent);
        if !state.admits(estimate) {
            state.rejections += 1;
            let status = state.status(now);
            let retry_after_seconds = ((status.reset_unix - now).ceil() as u64).max(1);
            return Err(Box::new(Refusal {
                status,
                run_estimate: dollars(estimate),
                retry_after_seconds,
            }));
        }
        let (day, micros) = (state.today, estimate);
        state.hold(run_id, Hold { day, micros });
        Ok(estimate)
    }

    pub(crate) fn run_estimate(&self, agent: Option<&str>) -> i64 {
        let (state, _) = self.lock();
        state.estimate(agent)
    }

    /// Re-reserves `micros` for a run still active when the process stopped,
    /// without the limit check (it was admitted), on the day it started.
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
        state.load(day)?;
        state.hold(run_id, Hold { day, micros });
        Ok(())
    }

    /// Grows `run_id`'s reservation to what it has spent so far, without the
    /// limit check: the run was admitted, and its spending is happening.
    pub(crate) fn cover(&self, run_id: &str, micros: i64) {
        let (mut state, _) = self.lock();
        state.grow(run_id, micros);
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
        let s = &refusal.status;
        assert_eq!(
            (s.daily_limit, s.today_spend, s.reserved),
            (0.35, 0.1, 0.15)
        );
        assert_eq!(
            (s.remaining, s.cycles_affordable, s.date.as_str()),
            (0.1, 0, "2026-11-23")
        );
        assert_eq!(s.reset_at, "2026-11-24T00:00:00.000Z");
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
            (refusal.status.remaining, refusal.status.reserved),
            (0.01, 0.0)
        );
        assert_eq!(refusal.to_json()["reason"], "budget_exhausted");
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
        assert_eq!(refusal.run_estimate, 4.0);
        let message = refusal.message();
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
