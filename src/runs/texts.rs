//! A run's optional texts in one allocation: eight `Option<Box<str>>` would cost
//! 128 bytes and an allocation each in every run held.

use serde_json::Value;

/// Which of a run's texts; the JSON key of each is [`Text::key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    Agent,
    Goal,
    /// The error a failed run reported, or a cancelled one's reason.
    Error,
    WorkOrderId,
    /// The id that ties its logs and events together.
    CorrelationId,
    Strategy,
    /// The W3C `traceparent` it was started with.
    Traceparent,
    /// The `metrics` JSON text its `run_completed` carried, on one line.
    Metrics,
}

impl Text {
    /// Every text, in the order they are stored.
    pub const ALL: [Text; 8] = [
        Text::Agent,
        Text::Goal,
        Text::Error,
        Text::WorkOrderId,
        Text::CorrelationId,
        Text::Strategy,
        Text::Traceparent,
        Text::Metrics,
    ];

    /// The member that holds it in a run's records and in the API.
    pub fn key(self) -> &'static str {
        const KEYS: [&str; 8] = [
            "agent",
            "goal",
            "error",
            "work_order_id",
            "correlation_id",
            "strategy",
            "traceparent",
            "metrics",
        ];
        KEYS[self as usize]
    }
}

/// The length of an absent text; the longest text, `metrics`, is at most 4096 bytes.
const ABSENT: u16 = u16::MAX;

/// A run's texts: each present or absent, stored end to end.
#[derive(Clone, PartialEq, Eq)]
pub struct Texts {
    lens: [u16; 8],
    all: Box<str>,
}

impl Default for Texts {
    fn default() -> Texts {
        Texts {
            lens: [ABSENT; 8],
            all: Box::default(),
        }
    }
}

impl Texts {
    /// The texts of a JSON object's string members named by [`Text::key`].
    pub fn from_json(v: &Value) -> Texts {
        Texts::from_each(|which| v[which.key()].as_str())
    }

    /// The texts `text` gives, in one allocation; one too long to store is absent.
    fn from_each<'a>(text: impl Fn(Text) -> Option<&'a str>) -> Texts {
        let texts = Text::ALL.map(|which| text(which).filter(|t| t.len() < usize::from(ABSENT)));
        let mut lens = [ABSENT; 8];
        let mut all = String::with_capacity(texts.iter().flatten().map(|t| t.len()).sum());
        for (i, t) in texts.into_iter().enumerate() {
            if let Some(t) = t {
                all.push_str(t);
                lens[i] = t.len() as u16;
            }
        }
        Texts {
            lens,
            all: all.into_boxed_str(),
        }
    }

    pub fn get(&self, which: Text) -> Option<&str> {
        let i = which as usize;
        if self.lens[i] == ABSENT {
            return None;
        }
        let start: usize = self.lens[..i]
            .iter()
            .filter(|&&n| n != ABSENT)
            .map(|&n| usize::from(n))
            .sum();
        Some(&self.all[start..start + usize::from(self.lens[i])])
    }

    pub fn stored_bytes(&self) -> usize {
        self.all.len()
    }

    pub fn set(&mut self, which: Text, text: Option<&str>) {
        *self = Texts::from_each(|each| if each == which { text } else { self.get(each) });
    }
}

impl std::fmt::Debug for Texts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = Text::ALL.into_iter();
        let present = present.filter_map(|which| Some((which.key(), self.get(which)?)));
        f.debug_map().entries(present).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_text_reads_back_as_set_and_empty_differs_from_absent() {
        let mut t =
            Texts::from_json(&json!({"agent": "a", "goal": "", "strategy": "s-1", "error": 3}));
        assert_eq!(t.get(Text::Agent), Some("a"));
        assert_eq!(t.get(Text::Goal), Some(""));
        assert_eq!(t.get(Text::Error), None, "not a string");
        assert_eq!(t.get(Text::Strategy), Some("s-1"));
        t.set(Text::Error, Some("boom"));
        t.set(Text::Metrics, Some("{\"k\":1}"));
        t.set(Text::Agent, None);
        assert_eq!(t.get(Text::Agent), None);
        assert_eq!(t.get(Text::Error), Some("boom"));
        assert_eq!(t.get(Text::Strategy), Some("s-1"));
        assert_eq!(t.get(Text::Metrics), Some("{\"k\":1}"));
        assert_eq!(
            format!("{t:?}"),
            r#"{"goal": "", "error": "boom", "strategy": "s-1", "metrics": "{\"k\":1}"}"#
        );
    }

    #[test]
    fn texts_past_the_length_limit_are_absent_and_the_others_stay() {
        let long = "x".repeat(usize::from(ABSENT));
        let mut t = Texts::default();
        t.set(Text::Goal, Some("g"));
        t.set(Text::Metrics, Some(&long));
        assert_eq!(t.get(Text::Metrics), None);
        assert_eq!(t.get(Text::Goal), Some("g"));
        assert_eq!(std::mem::size_of::<Texts>(), 32);
    }
}
