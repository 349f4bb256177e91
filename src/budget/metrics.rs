//! The budget's metrics: its state read under its lock at scrape time, and cost by phase. The
//! names are the research agent's (`agent_budget_*`), which its dashboard queries. Today's spend
//! is `agent_budget_today_spend_dollars`: a gauge cannot share the family of the running total
//! `agent_budget_spend_total`.

use std::sync::Arc;

use crate::metrics::{self, Collector, Desc, Kind, Registry};

use super::money::{dollars, MICROS_PER_DOLLAR};
use super::Budget;

/// The metrics the collector produces, in the order of its values: gauges, then counters.
const GAUGES: [(&str, &str); 7] = [
    ("agent_budget_limit_dollars", "The daily budget limit in dollars."),
    ("agent_budget_today_spend_dollars", "Dollars recorded against the current UTC day's budget."),
    (
        "agent_budget_reserved_dollars",
        "Dollars reserved by runs that started today and have not ended.",
    ),
    (
        "agent_budget_remaining_dollars",
        "Dollars left today after spend and reservations, never negative.",
    ),
    (
        "agent_budget_run_estimate_dollars",
        "Dollars a run reserves when it starts (the estimate in force, the largest of any recent agent); a start is refused when less than this remains.",
    ),
    (
        "agent_budget_exhausted_in_seconds",
        "Seconds until today's remaining budget runs out at the last hour's spend rate; +Inf when it lasts to the reset, 0 when nothing remains.",
    ),
    (
        "agent_budget_reset_timestamp_seconds",
        "When the daily budget next resets (UTC midnight), in Unix seconds.",
    ),
];
const COUNTERS: [(&str, &str); 2] = [
    (
        "agent_budget_spend_total",
        "Dollars of agent spend recorded, ever: every spend in the budget ledgers, read again at start.",
    ),
    ("agent_budget_rejections_total", "Run starts refused because the daily budget was exhausted."),
];

/// Reads the budget for a scrape.
impl Collector for Budget {
    fn describe(&self) -> Vec<Desc> {
        let desc = |kind| {
            move |&(name, help): &(&str, &str)| Desc {
                name: name.to_string(),
                help: help.to_string(),
                kind,
            }
        };
        let gauges = GAUGES.iter().map(desc(Kind::Gauge));
        gauges
            .chain(COUNTERS.iter().map(desc(Kind::Counter)))
            .collect()
    }

    fn collect(&self) -> Vec<f64> {
        let (mut state, now) = self.lock();
        let s = state.status(now);
        vec![
            s.daily_limit,
            s.today_spend,
            s.reserved,
            s.remaining,
            s.run_estimate,
            s.forecast.exhausted_in_seconds,
            s.reset_unix,
            dollars(state.recorded),
            state.rejections as f64,
        ]
    }
}

impl Budget {
    /// Registers the budget's metrics, once. The phase counter starts from the ledgers at open,
    /// missing costs recorded from the open to this call.
    pub(crate) fn register_metrics(
        self: &Arc<Self>,
        registry: &Registry,
    ) -> Result<(), metrics::Error> {
        let help = "Dollars of agent spend recorded, by phase (unknown when none was given).";
        let phases = registry.fixed_point_counter_family(
            "agent_cost_dollars_total",
            help,
            &["phase"],
            MICROS_PER_DOLLAR,
        )?;
        let unknown_models = registry.counter(
            "conductor_pricing_unknown_models_total",
            "Models the pricing table does not name, charged its default price; each counted once, when first priced.",
        )?;
        registry.register_collector(self.clone())?;
        // Every spend the ledgers held at open, then the live ones.
        for (phase, micros) in &self.opened.phases {
            phases.inc_by(&[phase], u64::try_from(*micros).unwrap_or(0));
        }
        // A second budget registered in another registry keeps the first family.
        let _ = self.phases.set(phases);
        let _ = self.unknown_models.counter.set(unknown_models);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, DAY};
    use super::super::SpendInput;
    use super::*;
    use crate::metrics::Format;

    fn scrape(registry: &Registry) -> String {
        let mut out = Vec::new();
        registry.render(&mut out, Format::Text);
        String::from_utf8(out).unwrap()
    }

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        let prefix = format!("{series} ");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("{series} missing in\n{text}"))[prefix.len()..].trim()
    }

    #[test]
    fn scrapes_read_the_budget() {
        let f = Fixture::new("metrics");
        let budget = Arc::new(f.open(1.5, 0.15));
        let registry = Registry::new();
        budget.register_metrics(&registry).unwrap();
        budget.reserve("a", None).unwrap();
        budget
            .settle("a", SpendInput::Amount(0.25), &[("plan".into(), 0.2)])
            .unwrap();
        budget.reserve("b", None).unwrap();
        budget.spend(SpendInput::Amount(0.5), None, None).unwrap();
        budget
            .spend(SpendInput::Amount(0.5), None, Some("review"))
            .unwrap();
        while budget.reserve("x", None).is_ok() {}
        let text = scrape(&registry);
        assert_eq!(value(&text, "agent_budget_limit_dollars"), "1.5");
        assert_eq!(value(&text, "agent_budget_today_spend_dollars"), "1.25");
        assert_eq!(value(&text, "agent_budget_reserved_dollars"), "0.15");
        assert_eq!(value(&text, "agent_budget_remaining_dollars"), "0.1");
        assert_eq!(value(&text, "agent_budget_run_estimate_dollars"), "0.15");
        // $1.25 spent in the last hour leaves $0.10 for 288 seconds.
        let left = value(&text, "agent_budget_exhausted_in_seconds");
        assert!(
            (left.parse::<f64>().unwrap() - 288.0).abs() < 1e-6,
            "{left}"
        );
        let reset = value(&text, "agent_budget_reset_timestamp_seconds");
        assert_eq!(reset.parse::<f64>().unwrap(), (DAY + 1) as f64 * 86_400.0);
        assert_eq!(value(&text, "agent_budget_spend_total"), "1.25");
        assert_eq!(value(&text, "agent_budget_rejections_total"), "1");
        assert_eq!(
            value(&text, r#"agent_cost_dollars_total{phase="plan"}"#),
            "0.2"
        );
        assert_eq!(
            value(&text, r#"agent_cost_dollars_total{phase="review"}"#),
            "0.5"
        );
        assert_eq!(
            value(&text, r#"agent_cost_dollars_total{phase="unknown"}"#),
            "0.55"
        );
        f.at(DAY + 1, 1.0);
        let text = scrape(&registry);
        assert_eq!(value(&text, "agent_budget_today_spend_dollars"), "0");
        assert_eq!(value(&text, "agent_budget_spend_total"), "1.25");
        assert_eq!(value(&text, "agent_budget_exhausted_in_seconds"), "+Inf");
        assert!(budget
            .register_metrics(&registry)
            .unwrap_err()
            .is_duplicate());
    }

    #[test]
    fn the_spend_gauge_cannot_share_the_counters_family_name() {
        let registry = Registry::new();
        registry.counter("agent_budget_spend_total", "h").unwrap();
        let clash = registry.gauge("agent_budget_spend", "h").unwrap_err();
        assert!(clash.is_duplicate());
    }

    #[test]
    fn phase_costs_add_up_exactly_on_the_wire() {
        let f = Fixture::new("metrics-exact");
        let budget = Arc::new(f.open(100.0, 0.15));
        let registry = Registry::new();
        budget.register_metrics(&registry).unwrap();
        // As floats, these sum to 5.703720000000001 and 0.30000000000000004.
        let costs = [1.90124, 1.90124, 1.90124];
        let mut float_sum = 0.0;
        for c in costs {
            float_sum += c;
            budget
                .spend(SpendInput::Amount(c), None, Some("design"))
                .unwrap();
        }
        assert_ne!(float_sum.to_string(), "5.70372", "the drift this prevents");
        for c in [0.1, 0.2] {
            budget
                .spend(SpendInput::Amount(c), None, Some("plan"))
                .unwrap();
        }
        let text = scrape(&registry);
        let design = value(&text, r#"agent_cost_dollars_total{phase="design"}"#);
        assert_eq!(design, "5.70372");
        let plan = value(&text, r#"agent_cost_dollars_total{phase="plan"}"#);
        assert_eq!(plan, "0.3");
        assert_eq!(value(&text, "agent_budget_spend_total"), "6.00372");
    }

    /// The counters of every spend ever, at their values before a restart
    /// and after it: the reopened budget sums every day's ledger.
    #[test]
    fn the_spend_counters_are_the_same_after_a_reopen() {
        let f = Fixture::new("metrics-reopen");
        let counters = |text: &str| -> Vec<String> {
            let keep = |l: &&str| {
                l.starts_with("agent_budget_spend_total ")
                    || l.starts_with("agent_cost_dollars_total{")
            };
            text.lines().filter(keep).map(str::to_string).collect()
        };
        let budget = Arc::new(f.open(100.0, 0.15));
        let registry = Registry::new();
        budget.register_metrics(&registry).unwrap();
        // Yesterday's ledger, and today's: a run settled by phase with an
        // uncovered rest, direct spends with and without a phase, and one
        // operation sent twice (counted once).
        f.at(DAY - 1, 3_600.0);
        budget
            .spend(SpendInput::Amount(0.4), None, Some("review"))
            .unwrap();
        f.at(DAY, 43_200.0);
        budget.reserve("r", None).unwrap();
        let phases = [("plan".to_string(), 0.2), (String::new(), 0.05)];
        budget
            .settle("r", SpendInput::Amount(0.3), &phases)
            .unwrap();
        budget.spend(SpendInput::Amount(0.125), None, None).unwrap();
        for _ in 0..2 {
            budget
                .spend_once(Some("op-1"), SpendInput::Amount(1.5), None, Some("act"))
                .unwrap();
        }
        let mut before = counters(&scrape(&registry));
        before.sort();
        assert_eq!(
            before,
            [
                "agent_budget_spend_total 2.325",
                r#"agent_cost_dollars_total{phase="act"} 1.5"#,
                r#"agent_cost_dollars_total{phase="plan"} 0.2"#,
                r#"agent_cost_dollars_total{phase="review"} 0.4"#,
                r#"agent_cost_dollars_total{phase="unknown"} 0.225"#,
            ]
            .map(String::from),
        );
        drop(budget);
        let budget = Arc::new(f.open(100.0, 0.15));
        let registry = Registry::new();
        budget.register_metrics(&registry).unwrap();
        let mut after = counters(&scrape(&registry));
        after.sort();
        assert_eq!(after, before);
    }
}
