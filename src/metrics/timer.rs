//! A guard that times a block and observes the seconds into a histogram.

use std::time::Instant;

use super::histogram::Histogram;
use super::labelled::HistogramFamily;

/// A timer observing the elapsed seconds when dropped, or at [`Timer::stop`]; never if discarded.
#[must_use = "a timer observes when dropped; bind it to a variable"]
pub struct Timer {
    start: Instant,
    target: Option<Target>,
}

enum Target {
    Plain(Histogram),
    Family(HistogramFamily, Vec<String>),
}

impl Histogram {
    /// Starts a timer that observes the elapsed seconds when dropped.
    pub fn start_timer(&self) -> Timer {
        Timer {
            start: Instant::now(),
            target: Some(Target::Plain(self.clone())),
        }
    }
}

impl HistogramFamily {
    /// Starts a timer that observes the elapsed seconds into the series for `values` when dropped.
    pub fn start_timer(&self, values: &[&str]) -> Timer {
        Timer {
            start: Instant::now(),
            target: Some(Target::Family(
                self.clone(),
                values.iter().map(|s| s.to_string()).collect(),
            )),
        }
    }
}

impl Timer {
    /// Sets label `name`'s value for the observation; false for a name the family lacks.
    pub fn set_label(&mut self, name: &str, value: &str) -> bool {
        let Some(Target::Family(family, values)) = &mut self.target else {
            return false;
        };
        let i = family.label_names().iter().position(|n| n == name);
        let Some(slot) = i.and_then(|i| values.get_mut(i)) else {
            return false;
        };
        *slot = value.to_string();
        true
    }

    /// Observes now and returns the elapsed seconds.
    pub fn stop(mut self) -> f64 {
        self.observe()
    }

    /// Drops the timer without observing.
    pub fn discard(mut self) {
        self.target = None;
    }

    fn observe(&mut self) -> f64 {
        let seconds = self.start.elapsed().as_secs_f64();
        match self.target.take() {
            Some(Target::Plain(h)) => h.observe(seconds),
            Some(Target::Family(family, values)) => {
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                family.observe(&values, seconds);
            }
            None => {}
        }
        seconds
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.observe();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Registry;

    #[test]
    fn outcome_label_is_set_before_drop() {
        let r = Registry::new();
        let f = r
            .histogram_family("op_seconds", "op", &["kind", "result"], &[1.0])
            .unwrap();
        {
            let mut t = f.start_timer(&["merge", "error"]);
            assert!(t.set_label("result", "conflict"));
            assert!(!t.set_label("nope", "x"));
        }
        let t = f.start_timer(&["merge", "success"]);
        let took = t.stop();
        f.start_timer(&["merge", "error"]).discard();
        let mut counts = Vec::new();
        assert_eq!(f.get(&["merge", "conflict"]).snapshot(&mut counts).1, 1);
        assert_eq!(
            f.get(&["merge", "success"]).snapshot(&mut counts),
            (took, 1)
        );
        assert_eq!(f.get(&["merge", "error"]).snapshot(&mut counts).1, 0);
    }

    /// Checked when the tests compile: timer is send.
    const _: () = {
        const fn assert_send<T: Send>() {}
        assert_send::<super::Timer>();
    };
}
