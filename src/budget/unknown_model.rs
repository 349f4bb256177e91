//! Models the pricing table does not name. Their tokens are charged the
//! table's default price, deliberately high; so that a missing entry is
//! found, each such model is said once in a `warn` line and counted in
//! `conductor_pricing_unknown_models_total`, the first time tokens of it
//! are priced (a spend given as tokens, or a run's end).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use crate::log::Logger;
use crate::metrics::Counter;

use super::money::{Charge, SpendInput};
use super::{Budget, Error};

/// The most model names remembered. Names come from clients, so the set
/// must not grow without bound; past it, one last line says that later
/// models are neither named nor counted.
pub(super) const REMEMBERED: usize = 1000;

/// The model names seen so far, and where to say and count a new one.
/// Safe to share across threads.
#[derive(Default)]
pub(super) struct UnknownModels {
    seen: Mutex<HashSet<String>>,
    /// Set at registration; until then a new model is only remembered.
    pub(super) counter: OnceLock<Counter>,
    /// Set by [`Budget::log_to`]; until then nothing is said.
    log: OnceLock<Logger>,
}

impl UnknownModels {
    /// Notes that tokens of `model`, which the table does not name, are
    /// being priced at `default` (input, output dollars per million).
    fn note(&self, model: &str, default: (f64, f64)) {
        let first = {
            // Only inserts and lookups happen under this lock: it cannot
            // be poisoned half-way through an update.
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            match seen.len() {
                n if n < REMEMBERED => seen.insert(model.to_string()).then_some(true),
                n if n == REMEMBERED && !seen.contains(model) => {
                    // One more entry, never a model name, marks that the
                    // last line was said.
                    seen.insert(String::new());
                    Some(false)
                }
                _ => None,
            }
        };
        let Some(named) = first else {
            return;
        };
        if named {
            if let Some(counter) = self.counter.get() {
                counter.inc();
            }
        }
        let Some(log) = self.log.get() else {
            return;
        };
        if named {
            log.warn(
                "a model the pricing table does not name is charged the default price; add it to the --pricing file",
                &[
                    ("model", serde_json::json!(model)),
                    ("input_dollars_per_million", serde_json::json!(default.0)),
                    ("output_dollars_per_million", serde_json::json!(default.1)),
                ],
            );
        } else {
            log.warn(
                "more models the pricing table does not name: later ones are charged the default price without a word",
                &[("models_named", serde_json::json!(REMEMBERED))],
            );
        }
    }
}

impl Budget {
    /// Has the budget say in `log` what an operator should fix: a model
    /// the pricing table does not name. Call once, at start.
    pub fn log_to(&self, log: Logger) {
        // A second call keeps the first logger.
        let _ = self.unknown_models.log.set(log);
    }

    /// The cost in dollars of the given tokens of `model` (see
    /// [`super::Pricing::cost`]), noting a model the table does not name.
    pub fn cost(&self, model: Option<&str>, input_tokens: u64, output_tokens: u64) -> f64 {
        self.note_model(model);
        self.pricing.cost(model, input_tokens, output_tokens)
    }

    /// Prices `input` by the table, noting a model it does not name.
    pub(super) fn price_input(&self, input: &SpendInput) -> Result<Charge, Error> {
        if let SpendInput::Tokens { model, .. } = input {
            self.note_model(model.as_deref());
        }
        input.charge(&self.pricing)
    }

    fn note_model(&self, model: Option<&str>) {
        // Tokens without a model are priced by the default on purpose.
        if let Some(model) = model.filter(|m| !self.pricing.names(m)) {
            let default = self.pricing.price(None);
            self.unknown_models
                .note(model, (default.input, default.output));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::super::{BudgetConfig, Pricing};
    use super::*;
    use crate::log::{Level, LogFormat};
    use crate::metrics::Registry;
    use std::sync::Arc;

    #[test]
    fn each_unknown_model_is_counted_once_and_named_ones_not_at_all() {
        let f = Fixture::new("unknown-models");
        let config = BudgetConfig {
            pricing: Pricing::from_json(r#"{"known": {"input": 1, "output": 2}}"#).unwrap(),
            ..BudgetConfig::new(f.dir.parent().unwrap())
        };
        let budget = Arc::new(Budget::open(config, f.clock.clone()).unwrap());
        let registry = Registry::new();
        budget.register_metrics(&registry).unwrap();
        budget.log_to(Logger::new(Level::Error, LogFormat::Json));
        let counted = || budget.unknown_models.counter.get().unwrap().get();
        assert_eq!(budget.cost(Some("known"), 1_000_000, 0), 1.0);
        assert_eq!(budget.cost(None, 1_000_000, 0), 15.0);
        assert_eq!(counted(), 0.0, "a named model, or none, is not unknown");
        assert_eq!(budget.cost(Some("mystery"), 1_000_000, 0), 15.0);
        assert_eq!(budget.cost(Some("mystery"), 0, 1_000_000), 75.0);
        let tokens = |model: &str| SpendInput::Tokens {
            input_tokens: 10,
            output_tokens: 0,
            model: Some(model.to_string()),
        };
        budget.spend(tokens("other"), None, None).unwrap();
        budget.spend(tokens("known"), None, None).unwrap();
        assert_eq!(counted(), 2.0);
        for n in 0..REMEMBERED + 10 {
            budget.cost(Some(&format!("m{n}")), 1, 1);
        }
        let seen = budget.unknown_models.seen.lock().unwrap().len();
        assert_eq!(seen, REMEMBERED + 1, "the set stops growing");
        assert_eq!(counted(), REMEMBERED as f64);
    }
}
