//! Money as whole micro-dollars: every amount becomes an `i64` as soon as it
//! enters, so sums are exact (a thousand spends of 0.01 add up to exactly
//! 10). Dollars appear again only on output.

use crate::error::Error;

pub(crate) const MICROS_PER_DOLLAR: u32 = 1_000_000;

/// The largest single amount accepted, in dollars: far above any real
/// spend, and small enough that sums of micro-dollars stay exact.
pub(crate) const MAX_AMOUNT: f64 = 1_000_000_000.0;

/// Dollars to micro-dollars; an amount out of range is an
/// [`Error::Invalid`] naming `field`.
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

/// What a spend costs: a dollar amount, or token counts priced by model
/// (the table's default price when the model is absent or unknown).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SpendInput {
    Amount(f64),
    Tokens {
        input_tokens: u64,
        output_tokens: u64,
        model: Option<String>,
    },
}

/// A priced spend, ready for the ledger.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Charge {
    pub micros: i64,
    pub model: Option<String>,
    /// `(input, output)` tokens.
    pub tokens: Option<(u64, u64)>,
}

impl Charge {
    pub fn of(micros: i64) -> Charge {
        Charge {
            micros,
            ..Charge::default()
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
        assert_eq!(
            SpendInput::Amount(0.0).charge(&pricing),
            Ok(Charge {
                micros: 0,
                model: None,
                tokens: None
            })
        );
        let tokens = SpendInput::Tokens {
            input_tokens: 1000,
            output_tokens: 100,
            model: Some("unknown-model".into()),
        };
        // 1000 × $15/M + 100 × $75/M = $0.015 + $0.0075.
        let charge = tokens.charge(&pricing).unwrap();
        assert_eq!(charge.micros, 22_500);
        assert_eq!(charge.model.as_deref(), Some("unknown-model"));
        assert_eq!(charge.tokens, Some((1000, 100)));
    }
}
