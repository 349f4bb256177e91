//! What the budget reports: its status, a refusal to reserve, and the
//! outcome of recording a spend. Plain data with JSON renderings.

use serde_json::{json, Value};

/// The budget of the current UTC day, read under one lock. Plain data;
/// safe to send and share across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The current UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// The daily limit in dollars.
    pub daily_limit: f64,
    /// Dollars recorded today, including costs of runs that started today
    /// and ended later.
    pub today_spend: f64,
    /// Dollars reserved by runs that started today and have not ended.
    pub reserved: f64,
    /// `daily_limit - today_spend - reserved`, never negative.
    pub remaining: f64,
    /// How many more run estimates fit in `remaining`.
    pub cycles_affordable: u64,
    /// Spend events recorded today.
    pub spend_events: u64,
    /// The next reset, the UTC midnight after `date`, in RFC 3339.
    pub reset_at: String,
    /// The same instant in Unix seconds.
    pub reset_unix: f64,
}

impl Status {
    /// The status as a JSON object (`reset_unix` is left out).
    pub fn to_json(&self) -> Value {
        json!({
            "date": self.date,
            "daily_limit": self.daily_limit,
            "today_spend": self.today_spend,
            "reserved": self.reserved,
            "remaining": self.remaining,
            "cycles_affordable": self.cycles_affordable,
            "spend_events": self.spend_events,
            "reset_at": self.reset_at,
        })
    }
}

/// A reservation refused because the day's budget cannot cover another run
/// estimate. Nothing was reserved or journaled. Plain data; safe to send
/// and share across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The budget at the moment of refusal.
    pub status: Status,
    /// Whole seconds until the reset, rounded up and at least 1: the value
    /// for a `Retry-After` header.
    pub retry_after_seconds: u64,
}

impl Refusal {
    /// A one-line explanation for people.
    pub fn message(&self) -> String {
        let s = &self.status;
        format!(
            "daily budget exhausted: ${} of ${} spent and ${} reserved today, ${} remaining; resets at {}",
            money_text(s.today_spend),
            money_text(s.daily_limit),
            money_text(s.reserved),
            money_text(s.remaining),
            s.reset_at,
        )
    }

    /// The refusal as the JSON body of a refused trigger.
    pub fn to_json(&self) -> Value {
        let s = &self.status;
        json!({
            "triggered": false,
            "reason": "budget_exhausted",
            "message": self.message(),
            "daily_limit": s.daily_limit,
            "today_spend": s.today_spend,
            "reserved": s.reserved,
            "remaining": s.remaining,
            "reset_at": s.reset_at,
        })
    }
}

/// A spend that is now durable in the ledger. Plain data; safe to send and
/// share across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The dollars recorded, rounded to whole micro-dollars.
    pub amount: f64,
    /// The day it was charged to, `YYYY-MM-DD`: the day a settled run
    /// started, which may be before today.
    pub day: String,
    /// Alert thresholds (percent of the limit) this spend newly reached on
    /// that day, lowest first. Each fires once per day; the caller logs a
    /// warning and posts a bus message for each.
    pub alerts: Vec<u8>,
    /// Today's budget after the spend.
    pub status: Status,
}

impl Recorded {
    /// The outcome as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "amount": self.amount,
            "day": self.day,
            "alerts": self.alerts,
            "status": self.status.to_json(),
        })
    }
}

/// Dollars with at least two decimals and no float noise: `1.50`, `0.0225`.
fn money_text(dollars: f64) -> String {
    let text = format!("{dollars:.6}");
    let text = text.trim_end_matches('0');
    let decimals = text.len() - text.find('.').map_or(text.len(), |dot| dot + 1);
    format!("{text}{}", "0".repeat(2usize.saturating_sub(decimals)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            date: "2026-11-23".into(),
            daily_limit: 1.5,
            today_spend: 0.2,
            reserved: 1.2,
            remaining: 0.1,
            cycles_affordable: 0,
            spend_events: 3,
            reset_at: "2026-11-24T00:00:00.000Z".into(),
            reset_unix: 1_795_478_400.0,
        }
    }

    #[test]
    fn money_text_keeps_cents_and_drops_noise() {
        assert_eq!(money_text(1.5), "1.50");
        assert_eq!(money_text(0.0), "0.00");
        assert_eq!(money_text(0.0225), "0.0225");
        assert_eq!(money_text(0.1 + 0.2), "0.30");
        assert_eq!(money_text(12.0), "12.00");
        assert_eq!(money_text(0.000001), "0.000001");
    }

    #[test]
    fn refusal_json_carries_the_budget() {
        let refusal = Refusal {
            status: status(),
            retry_after_seconds: 30,
        };
        let body = refusal.to_json();
        assert_eq!(body["triggered"], false);
        assert_eq!(body["reason"], "budget_exhausted");
        assert_eq!(body["daily_limit"], 1.5);
        assert_eq!(body["today_spend"], 0.2);
        assert_eq!(body["reserved"], 1.2);
        assert_eq!(body["remaining"], 0.1);
        assert_eq!(body["reset_at"], "2026-11-24T00:00:00.000Z");
        assert_eq!(
            body["message"],
            "daily budget exhausted: $0.20 of $1.50 spent and $1.20 reserved today, \
             $0.10 remaining; resets at 2026-11-24T00:00:00.000Z"
        );
    }

    #[test]
    fn status_and_recorded_json() {
        let s = status().to_json();
        assert_eq!(s["date"], "2026-11-23");
        assert_eq!(
            (s["cycles_affordable"].as_u64(), s["spend_events"].as_u64()),
            (Some(0), Some(3))
        );
        assert!(s.get("reset_unix").is_none());
        let recorded = Recorded {
            amount: 0.15,
            day: "2026-11-22".into(),
            alerts: vec![50, 80],
            status: status(),
        };
        let r = recorded.to_json();
        assert_eq!(
            (r["amount"].as_f64(), r["day"].as_str()),
            (Some(0.15), Some("2026-11-22"))
        );
        assert_eq!(r["alerts"], json!([50, 80]));
        assert_eq!(r["status"]["remaining"], 0.1);
    }

    #[test]
    fn reports_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Status>();
        assert_send_sync::<Refusal>();
        assert_send_sync::<Recorded>();
    }
}
