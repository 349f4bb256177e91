//! The budget's metrics: its state read under the budget's lock at scrape
//! time through a [`Collector`], and cost counted by phase.
//!
//! Today's spend is `conductor_budget_today_spend_dollars`, not
//! `conductor_budget_spend_dollars`: that name is the family name of the
//! counter `conductor_budget_spend_dollars_total` in OpenMetrics, so the
//! registry refuses a gauge of that name beside the counter.

use std::sync::Arc;

use crate::metrics::{self, Collector, Desc, Kind, Registry};

use super::money::dollars;
use super::Budget;

/// The metrics the collector produces, in the order of its values.
const METRICS: [(&str, &str, Kind); 7] = [
    (
        "conductor_budget_limit_dollars",
        "The daily budget limit in dollars.",
        Kind::Gauge,
    ),
    (
        "conductor_budget_today_spend_dollars",
        "Dollars recorded against the current UTC day's budget.",
        Kind::Gauge,
    ),
    (
        "conductor_budget_reserved_dollars",
        "Dollars reserved by runs that started today and have not ended.",
        Kind::Gauge,
    ),
    (
        "conductor_budget_remaining_dollars",
        "Dollars left today after spend and reservations, never negative.",
        Kind::Gauge,
    ),
    (
        "conductor_budget_reset_timestamp_seconds",
        "When the daily budget next resets (UTC midnight), in Unix seconds.",
        Kind::Gauge,
    ),
    (
        "conductor_budget_spend_dollars_total",
        "Dollars recorded since the process started.",
        Kind::Counter,
    ),
    (
        "conductor_budget_rejections_total",
        "Run starts refused because the daily budget was exhausted.",
        Kind::Counter,
    ),
];

/// The cost counter by phase.
const PHASE_METRIC: &str = "conductor_cost_dollars_total";

/// Reads the budget for a scrape. Safe to share across threads.
struct BudgetCollector(Arc<Budget>);

impl Collector for BudgetCollector {
    fn describe(&self) -> Vec<Desc> {
        let desc = |&(name, help, kind): &(&str, &str, Kind)| Desc {
            name: name.to_string(),
            help: help.to_string(),
            kind,
        };
        METRICS.iter().map(desc).collect()
    }

    fn collect(&self) -> Vec<f64> {
        let (state, _) = self.0.lock();
        let s = state.status(&self.0.settings);
        vec![
            s.daily_limit,
            s.today_spend,
            s.reserved,
            s.remaining,
            s.reset_unix,
            dollars(state.recorded),
            state.rejections as f64,
        ]
    }
}

impl Budget {
    /// Registers the budget's metrics in `registry`: the gauges and
    /// counters read together at scrape time, and
    /// `conductor_cost_dollars_total{phase}`.
    ///
    /// Register once: costs recorded before registration are missing from
    /// the phase counter (the other values are read from the budget), and
    /// a second registration fails on the duplicate names.
    pub fn register_metrics(self: &Arc<Self>, registry: &Registry) -> Result<(), metrics::Error> {
        let help = "Dollars of agent spend recorded, by phase (unknown when none was given).";
        let phases = registry.counter_family(PHASE_METRIC, help, &["phase"])?;
        registry.register_collector(Arc::new(BudgetCollector(self.clone())))?;
        // A second budget registered in another registry keeps the first family.
        let _ = self.phases.set(phases);
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
        budget.reserve("a").unwrap();
        budget
            .settle("a", SpendInput::Amount(0.25), &[("plan".into(), 0.2)])
            .unwrap();
        budget.reserve("b").unwrap();
        budget.spend(SpendInput::Amount(0.5), None, None).unwrap();
        budget
            .spend(SpendInput::Amount(0.5), None, Some("review"))
            .unwrap();
        while budget.reserve("x").is_ok() {}
        let text = scrape(&registry);
        assert_eq!(value(&text, "conductor_budget_limit_dollars"), "1.5");
        assert_eq!(value(&text, "conductor_budget_today_spend_dollars"), "1.25");
        assert_eq!(value(&text, "conductor_budget_reserved_dollars"), "0.15");
        assert_eq!(value(&text, "conductor_budget_remaining_dollars"), "0.1");
        let reset = value(&text, "conductor_budget_reset_timestamp_seconds");
        assert_eq!(reset.parse::<f64>().unwrap(), (DAY + 1) as f64 * 86_400.0);
        assert_eq!(value(&text, "conductor_budget_spend_dollars_total"), "1.25");
        assert_eq!(value(&text, "conductor_budget_rejections_total"), "1");
        assert_eq!(
            value(&text, r#"conductor_cost_dollars_total{phase="plan"}"#),
            "0.2"
        );
        assert_eq!(
            value(&text, r#"conductor_cost_dollars_total{phase="review"}"#),
            "0.5"
        );
        assert_eq!(
            value(&text, r#"conductor_cost_dollars_total{phase="unknown"}"#),
            "0.55"
        );
        f.at(DAY + 1, 1.0);
        let text = scrape(&registry);
        assert_eq!(value(&text, "conductor_budget_today_spend_dollars"), "0");
        assert_eq!(value(&text, "conductor_budget_spend_dollars_total"), "1.25");
        assert!(budget
            .register_metrics(&registry)
            .unwrap_err()
            .is_duplicate());
    }

    #[test]
    fn the_spend_gauge_cannot_share_the_counters_family_name() {
        let registry = Registry::new();
        registry
            .counter("conductor_budget_spend_dollars_total", "h")
            .unwrap();
        let clash = registry
            .gauge("conductor_budget_spend_dollars", "h")
            .unwrap_err();
        assert!(clash.is_duplicate());
    }
}
