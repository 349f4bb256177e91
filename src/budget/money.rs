//! Money as whole micro-dollars: every amount becomes an `i64` on entry, so sums are exact (a
//! thousand spends of 0.01 make exactly 10); dollars only on output. Token prices are dollars per
//! million input and output tokens, by model, with a default for models the table does not name.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::error::Error;
use crate::log::Logger;
use crate::metrics::Counter;

use super::Budget;

pub(crate) const MICROS_PER_DOLLAR: u32 = 1_000_000;

/// The largest single amount accepted, in dollars: far above any real spend, and small enough
/// that sums of micro-dollars stay exact.
pub(crate) const MAX_AMOUNT: f64 = 1_000_000_000.0;

/// Dollars to micro-dollars; an amount out of range is an [`Error::Invalid`] naming `field`.
pub(crate) fn to_micros(dollars: f64, field: &str) -> Result<i64, Error> {
    if !dollars.is_finite() || dollars < 0.0 {
        let message = "must be a finite, non-negative number of dollars";
        return Err(Error::invalid(field, message));
    }
    if dollars > MAX_AMOUNT {
        let message = format!("must be at most {MAX_AMOUNT} dollars");
        return Err(Error::invalid(field, message));
    }
    Ok((dollars * f64::from(MICROS_PER_DOLLAR)).round() as i64)
}

pub(crate) fn dollars(micros: i64) -> f64 {
    micros as f64 / f64::from(MICROS_PER_DOLLAR)
}

/// What a spend costs: dollars, or token counts priced by model (default price if none or unknown).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SpendInput {
    Amount(f64),
    Tokens {
        input_tokens: u64,
        output_tokens: u64,
        model: Option<String>,
    },
}

/// The price of models the table does not name: high, so they are over- not under-charged.
pub(crate) const DEFAULT_PRICE: Price = Price {
    input: 15.0,
    output: 75.0,
};

/// One model's prices, in dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Price {
    pub input: f64,
    pub output: f64,
}

/// A pricing table: model name to price, plus a default price (format: `docs/budget.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    models: HashMap<String, Price>,
    default: Price,
}

impl Pricing {
    /// No models: published prices change; they belong in the file.
    pub(crate) fn default_table() -> Pricing {
        Pricing {
            models: HashMap::new(),
            default: DEFAULT_PRICE,
        }
    }

    /// Parses a pricing file; errors name the offending key.
    pub fn from_json(text: &str) -> Result<Pricing, Error> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("pricing", format!("not valid JSON: {e}")))?;
        let Value::Object(top) = value else {
            return Err(Error::invalid("pricing", "must be a JSON object"));
        };
        let mut pricing = Pricing::default_table();
        if top.contains_key("models") {
            for (key, value) in &top {
                match key.as_str() {
                    "models" => pricing.add_models(value, "pricing.models")?,
                    "default" => pricing.default = price(value, "pricing.default")?,
                    other => {
                        // Likely a typo.
                        let message = "unknown key; expected \"models\" and \"default\"";
                        return Err(Error::invalid(&format!("pricing.{other}"), message));
                    }
                }
            }
        } else {
            pricing.add_models(&Value::Object(top), "pricing")?;
            if let Some(default) = pricing.models.remove("default") {
                pricing.default = default;
            }
        }
        Ok(pricing)
    }

    fn add_models(&mut self, value: &Value, field: &str) -> Result<(), Error> {
        let Value::Object(models) = value else {
            return Err(Error::invalid(field, "must be an object of model prices"));
        };
        for (model, value) in models {
            let price = price(value, &format!("{field}.{model}"))?;
            self.models.insert(model.clone(), price);
        }
        Ok(())
    }

    pub(crate) fn price(&self, model: Option<&str>) -> Price {
        model
            .and_then(|m| self.models.get(m))
            .copied()
            .unwrap_or(self.default)
    }

    /// The cost in dollars, before rounding to whole micro-dollars.
    pub(crate) fn cost(&self, model: Option<&str>, input_tokens: u64, output_tokens: u64) -> f64 {
        let p = self.price(model);
        // Dollars per million tokens are micro-dollars per token.
        let micros = input_tokens as f64 * p.input + output_tokens as f64 * p.output;
        micros / f64::from(MICROS_PER_DOLLAR)
    }
}

fn price(value: &Value, field: &str) -> Result<Price, Error> {
    let Value::Object(object) = value else {
        let message = "must be an object like {\"input\": 3.0, \"output\": 15.0}";
        return Err(Error::invalid(field, message));
    };
    let per_million = |key: &str| match object.get(key).and_then(Value::as_f64) {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(Error::invalid(
            &format!("{field}.{key}"),
            "must be a non-negative number of dollars per million tokens",
        )),
    };
    Ok(Price {
        input: per_million("input")?,
        output: per_million("output")?,
    })
}

/// The most model names remembered (they come from clients); past it, one last line says so.
pub(super) const REMEMBERED: usize = 1000;

/// Models the pricing table does not name, charged its default price: each said once in a
/// `warn` line and counted when first durable, to find them.
#[derive(Default)]
pub(super) struct UnknownModels {
    seen: Mutex<HashSet<String>>,
    /// Set at registration; until then a new model is only remembered.
    pub(super) counter: OnceLock<Counter>,
    /// Set by [`Budget::log_to`]; until then nothing is said.
    log: OnceLock<Logger>,
}

impl UnknownModels {
    /// Notes `model`, priced at `default` as the table does not name it.
    fn note(&self, model: &str, default: Price) {
        let named = {
            // Only inserts and lookups: a poisoned lock holds a whole set.
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > REMEMBERED || seen.contains(model) {
                return;
            }
            // Past the bound, one more entry, never a model name, marks the last line said.
            let name = if seen.len() < REMEMBERED { model } else { "" };
            seen.insert(name.to_string());
            !name.is_empty()
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
    /// Has the budget warn in `log` of models the pricing table does not name.
    pub(crate) fn log_to(&self, log: Logger) {
        // A second call keeps the first logger.
        let _ = self.unknown_models.log.set(log);
    }

    /// Notes the models of a durable spend; no model (or an empty one) is default on purpose.
    pub(super) fn note_models<'a>(&self, models: impl IntoIterator<Item = &'a str>) {
        let unknown = |m: &&str| !m.is_empty() && !self.pricing.models.contains_key(*m);
        for model in models.into_iter().filter(unknown) {
            self.unknown_models.note(model, self.pricing.price(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Pricing;

    #[test]
    fn dollars_round_to_whole_micros() {
        assert_eq!(to_micros(0.15, "amount"), Ok(150_000));
        assert_eq!(to_micros(1.5, "amount"), Ok(1_500_000));
        assert_eq!(to_micros(0.0000004, "amount"), Ok(0));
        assert_eq!(to_micros(0.0000005, "amount"), Ok(1));
        assert_eq!(to_micros(MAX_AMOUNT, "amount"), Ok(1_000_000_000_000_000));
        assert_eq!(dollars(150_000), 0.15);
        assert_eq!(dollars(16_000_000), 16.0);
    }

    #[test]
    fn sums_of_micros_are_exact_where_floats_drift() {
        let cent = to_micros(0.01, "amount").unwrap();
        let micros: i64 = (0..1000).map(|_| cent).sum();
        assert_eq!(dollars(micros), 10.0);
        let floats: f64 = (0..1000).map(|_| 0.01).sum();
        assert_ne!(floats, 10.0, "the reason micro-dollars exist");
        assert_eq!(dollars(to_micros(0.15, "e").unwrap() * 10), 1.5);
    }

    #[test]
    fn bad_amounts_name_their_field() {
        for bad in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2e9] {
            match to_micros(bad, "amount") {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "amount"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let err = SpendInput::Amount(-1.0).charge(&Pricing::default_table());
        assert!(matches!(err, Err(Error::Invalid { field, .. }) if field == "amount"));
    }

    #[test]
    fn inputs_are_priced() {
        let pricing = Pricing::default_table();
        let free = SpendInput::Amount(0.0).charge(&pricing).unwrap();
        assert_eq!((free.micros, free.model, free.tokens), (0, None, None));
        assert_eq!(free.kind, "direct");
        let tokens = SpendInput::Tokens {
            input_tokens: 1000,
            output_tokens: 100,
            model: Some("unknown-model".into()),
        };
        // 1000 × $15/M + 100 × $75/M = $0.015 + $0.0075.
        let charge = tokens.charge(&pricing).unwrap();
        assert_eq!(charge.micros, 22_500);
        assert_eq!(charge.model, Some("unknown-model"));
        assert_eq!(charge.tokens, Some((1000, 100)));
    }
}

#[cfg(test)]
mod pricing_tests {
    use super::*;

    fn cost_micros(
        p: &Pricing,
        model: Option<&str>,
        input: u64,
        output: u64,
    ) -> Result<i64, Error> {
        let tokens = SpendInput::Tokens {
            input_tokens: input,
            output_tokens: output,
            model: model.map(str::to_string),
        };
        tokens.charge(p).map(|c| c.micros)
    }

    fn field_of(result: Result<Pricing, Error>) -> String {
        match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn default_table_charges_the_default_price() {
        let p = Pricing::default_table();
        assert!(!p.models.contains_key("anything"));
        assert_eq!(p.price(Some("anything")), DEFAULT_PRICE);
        assert_eq!(p.price(None), DEFAULT_PRICE);
        assert_eq!(p.cost(None, 1_000_000, 0), 15.0);
        assert_eq!(p.cost(Some("x"), 0, 1_000_000), 75.0);
        assert_eq!(cost_micros(&p, None, 1000, 100), Ok(22_500));
    }

    #[test]
    fn parses_the_models_form() {
        let text = r#"{"models": {"claude-x": {"input": 3.0, "output": 15, "cache_read": 0.3}},
                      "default": {"input": 10, "output": 50}}"#;
        let p = Pricing::from_json(text).unwrap();
        assert!(p.models.contains_key("claude-x") && !p.models.contains_key("default"));
        let x = Price {
            input: 3.0,
            output: 15.0,
        };
        assert_eq!(p.price(Some("claude-x")), x);
        assert_eq!(p.price(Some("Claude-X")).input, 10.0);
        assert_eq!(p.cost(Some("claude-x"), 1_000_000, 1_000_000), 18.0);
        assert_eq!(cost_micros(&p, Some("claude-x"), 1, 1), Ok(18));
        assert_eq!(p.cost(None, 0, 2_000_000), 100.0);
    }

    #[test]
    fn parses_the_flat_form_with_optional_default() {
        let p = Pricing::from_json(r#"{"a": {"input": 1, "output": 2}}"#).unwrap();
        assert_eq!(
            (p.models.contains_key("a"), p.price(Some("nope"))),
            (true, DEFAULT_PRICE)
        );
        let text = r#"{"a": {"input": 1, "output": 2}, "default": {"input": 0, "output": 0}}"#;
        let p = Pricing::from_json(text).unwrap();
        assert!(p.models.contains_key("a") && !p.models.contains_key("default"));
        assert_eq!(p.cost(Some("zzz"), 1000, 1000), 0.0);
        assert_eq!(cost_micros(&p, Some("a"), 1000, 1000), Ok(3000));
        assert_eq!(Pricing::from_json("{}").unwrap(), Pricing::default_table());
    }

    #[test]
    fn rejects_malformed_tables_naming_the_key() {
        assert_eq!(field_of(Pricing::from_json("nope")), "pricing");
        assert_eq!(field_of(Pricing::from_json("[1]")), "pricing");
        let bad_model = r#"{"m": {"input": -1, "output": 2}}"#;
        assert_eq!(field_of(Pricing::from_json(bad_model)), "pricing.m.input");
        let missing = r#"{"models": {"m": {"input": 1}}}"#;
        assert_eq!(
            field_of(Pricing::from_json(missing)),
            "pricing.models.m.output"
        );
        let typo = r#"{"models": {}, "defualt": {"input": 1, "output": 1}}"#;
        assert_eq!(field_of(Pricing::from_json(typo)), "pricing.defualt");
        let not_object = r#"{"models": [1]}"#;
        assert_eq!(field_of(Pricing::from_json(not_object)), "pricing.models");
        let text_price = r#"{"m": {"input": "3", "output": 2}}"#;
        assert_eq!(field_of(Pricing::from_json(text_price)), "pricing.m.input");
    }

    #[test]
    fn absurd_token_costs_are_rejected() {
        let p = Pricing::default_table();
        let err = cost_micros(&p, None, u64::MAX, u64::MAX).unwrap_err();
        assert!(matches!(err, Error::Invalid { field, .. } if field == "input_tokens"));
    }
}

#[cfg(test)]
mod unknown_model_tests {
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
