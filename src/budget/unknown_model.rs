//! Models the pricing table does not name, charged its default price: so
//! that a missing entry is found, each is said once in a `warn` line and
//! counted in `conductor_pricing_unknown_models_total` when first durable.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use crate::log::Logger;
use crate::metrics::Counter;

use super::pricing::Price;
use super::Budget;

/// The most model names remembered. Names come from clients, so the set
/// must not grow without bound; past it, one last line says that later
/// models are neither named nor counted.
pub(super) const REMEMBERED: usize = 1000;

/// The model names seen so far, and where to say and count a new one.
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
    /// being priced at `default`.
    fn note(&self, model: &str, default: Price) {
        let named = {
            // Only inserts and lookups happen under this lock: it cannot
            // be poisoned half-way through an update.
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            match seen.len() {
                n if n < REMEMBERED && seen.insert(model.to_string()) => true,
                n if n == REMEMBERED && !seen.contains(model) => {
                    // One more entry, never a model name, marks that the
                    // last line was said.
                    seen.insert(String::new());
                    false
                }
                _ => return,
            }
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
                    ("input_dollars_per_million", serde_json::json!(default.input)),
                    ("output_dollars_per_million", serde_json::json!(default.output)),
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
    pub(crate) fn log_to(&self, log: Logger) {
        // A second call keeps the first logger.
        let _ = self.unknown_models.log.set(log);
    }

    /// Notes the models of a durable spend or run end. Tokens without a
    /// model (or with an empty one) are priced by the default on purpose.
    pub(super) fn note_models<'a>(&self, models: impl IntoIterator<Item = &'a str>) {
        let unknown = |m: &&str| !m.is_empty() && !self.pricing.names(m);
        for model in models.into_iter().filter(unknown) {
            self.unknown_models.note(model, self.pricing.price(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::super::SpendInput;
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
        let tokens = |model: Option<&str>| SpendInput::Tokens {
            input_tokens: 1_000_000,
            output_tokens: 0,
            model: model.map(str::to_string),
        };
        for model in [Some("known"), None, Some("mystery"), Some("mystery")] {
            budget.spend(tokens(model), None, None).unwrap();
        }
        assert_eq!(counted(), 1.0, "a named model, or none, is not unknown");
        // A run's end: its models are noted when it is charged, once durable.
        let mut end = budget
            .price("r", SpendInput::Amount(1.0), &[], 0.0)
            .unwrap();
        end.models = vec!["known".into(), "mystery".into(), "other".into()];
        assert_eq!(counted(), 1.0, "nothing is noted before the charge");
        budget.charge(&end);
        assert_eq!(counted(), 2.0);
        budget.note_models(
            (0..REMEMBERED + 10)
                .map(|n| format!("m{n}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        let seen = budget.unknown_models.seen.lock().unwrap().len();
        assert_eq!(seen, REMEMBERED + 1, "the set stops growing");
        assert_eq!(counted(), REMEMBERED as f64);
    }
}
