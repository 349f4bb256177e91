//! Token prices: dollars per million input and output tokens, by model,
//! with a default for models the table does not name.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::Error;

use super::money::{self, Charge, SpendInput};

/// The price of models the table does not name, deliberately high so an
/// unknown model is over- rather than under-charged.
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

/// A pricing table: model name to price, plus a default price. See
/// `docs/budget.md` for the file format.
#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    models: HashMap<String, Price>,
    default: Price,
}

impl Pricing {
    /// No models: published prices change; they belong in the file, not in
    /// code.
    pub(crate) fn default_table() -> Pricing {
        Pricing {
            models: HashMap::new(),
            default: DEFAULT_PRICE,
        }
    }

    /// Parses a pricing file's text. Errors are [`Error::Invalid`] naming
    /// the offending key.
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

    pub(crate) fn names(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// The cost in dollars, before the rounding to whole micro-dollars
    /// that recording applies.
    pub(crate) fn cost(&self, model: Option<&str>, input_tokens: u64, output_tokens: u64) -> f64 {
        let p = self.price(model);
        // Dollars per million tokens are micro-dollars per token.
        let micros = input_tokens as f64 * p.input + output_tokens as f64 * p.output;
        micros / f64::from(money::MICROS_PER_DOLLAR)
    }
}

fn price(value: &Value, field: &str) -> Result<Price, Error> {
    let Value::Object(object) = value else {
        let message = "must be an object like {\"input\": 3.0, \"output\": 15.0}";
        return Err(Error::invalid(field, message));
    };
    Ok(Price {
        input: per_million(object, field, "input")?,
        output: per_million(object, field, "output")?,
    })
}

fn per_million(object: &Map<String, Value>, field: &str, key: &str) -> Result<f64, Error> {
    let field = format!("{field}.{key}");
    let message = "must be a non-negative number of dollars per million tokens";
    match object.get(key).and_then(Value::as_f64) {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(Error::invalid(&field, message)),
    }
}

impl SpendInput {
    /// Prices the input in micro-dollars, keeping what the ledger records;
    /// too large a token cost is an [`Error::Invalid`] naming `input_tokens`.
    pub(crate) fn charge(&self, pricing: &Pricing) -> Result<Charge, Error> {
        match self {
            SpendInput::Amount(amount) => Ok(Charge::of(money::to_micros(*amount, "amount")?)),
            SpendInput::Tokens {
                input_tokens,
                output_tokens,
                model,
            } => Ok(Charge {
                micros: money::to_micros(
                    pricing.cost(model.as_deref(), *input_tokens, *output_tokens),
                    "input_tokens",
                )?,
                model: model.clone(),
                tokens: Some((*input_tokens, *output_tokens)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert!(!p.names("anything"));
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
        assert!(p.names("claude-x") && !p.names("default"));
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
        assert_eq!((p.names("a"), p.price(Some("nope"))), (true, DEFAULT_PRICE));
        let text = r#"{"a": {"input": 1, "output": 2}, "default": {"input": 0, "output": 0}}"#;
        let p = Pricing::from_json(text).unwrap();
        assert!(p.names("a") && !p.names("default"));
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
