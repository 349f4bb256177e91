//! The learned run estimate (`--run-estimate auto`): each agent's recent run costs, fed by the
//! run store at every run end (live and on replay) and carried in its snapshot.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

const LEARNED_RUNS: usize = 50;
/// The most agents kept (names come from clients); past it, the longest idle is forgotten.
const LEARNED_AGENTS: usize = 1_000;
const LEARNED_PERCENTILE: f64 = 0.9;
/// Agents whose latest run ended this recently make up the status's estimate (their largest).
const RECENT_AGENT_SECONDS: f64 = 86_400.0;

/// One agent's recent costs (oldest first), as a run snapshot carries them; runs without an
/// agent learn together, as agent `None`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AgentCosts {
    pub agent: Option<String>,
    /// The end of its latest run.
    pub last_end: f64,
    pub costs: Vec<i64>,
}

impl AgentCosts {
    pub fn to_json(&self) -> Value {
        json!({"agent": self.agent, "last_end": self.last_end, "costs": self.costs})
    }

    /// `None` when `v` is not what [`AgentCosts::to_json`] writes.
    pub fn from_json(v: &Value) -> Option<AgentCosts> {
        let agent = match &v["agent"] {
            Value::Null => None,
            a => Some(a.as_str()?.to_string()),
        };
        let costs = v["costs"].as_array()?.iter();
        let costs = costs.map(|c| c.as_i64().filter(|c| *c >= 0));
        Some(AgentCosts {
            agent,
            last_end: v["last_end"].as_f64()?,
            costs: costs.collect::<Option<_>>()?,
        })
    }
}

/// An agent's history, its percentile worked out once per run end for admission and status.
#[derive(Debug, Default)]
struct History {
    costs: VecDeque<i64>,
    percentile: i64,
    last_end: f64,
}

/// The nearest-rank 90th percentile: of 50 costs, the 45th smallest.
fn percentile(costs: &VecDeque<i64>) -> i64 {
    let mut sorted: Vec<i64> = costs.iter().copied().collect();
    sorted.sort_unstable();
    let rank = (LEARNED_PERCENTILE * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0)
}

#[derive(Debug, Default)]
pub(crate) struct Learned {
    agents: HashMap<Option<Box<str>>, History>,
}

impl Learned {
    pub fn observe(&mut self, agent: Option<&str>, micros: i64, at: f64) {
        let key = agent.map(Box::from);
        if !self.agents.contains_key(&key) && self.agents.len() >= LEARNED_AGENTS {
            let agents = self.agents.iter();
            let oldest = agents.min_by(|a, b| a.1.last_end.total_cmp(&b.1.last_end));
            if let Some(oldest) = oldest.map(|(k, _)| k.clone()) {
                self.agents.remove(&oldest);
            }
        }
        let history = self.agents.entry(key).or_default();
        history.costs.push_back(micros);
        if history.costs.len() > LEARNED_RUNS {
            history.costs.pop_front();
        }
        history.last_end = history.last_end.max(at);
        history.percentile = percentile(&history.costs);
    }

    pub fn percentile(&self, agent: Option<&str>) -> Option<i64> {
        let key = agent.map(Box::from);
        self.agents.get(&key).map(|h| h.percentile)
    }

    /// The largest percentile of agents whose latest run ended within [`RECENT_AGENT_SECONDS`]
    /// of `now` (or after it: clocks step back).
    pub fn largest_recent(&self, now: f64) -> Option<i64> {
        self.agents
            .values()
            .filter(|h| h.last_end > now - RECENT_AGENT_SECONDS)
            .map(|h| h.percentile)
            .max()
    }

    /// Every agent's costs, the longest idle first.
    pub fn export(&self) -> Vec<AgentCosts> {
        let mut all: Vec<AgentCosts> = self
            .agents
            .iter()
            .map(|(agent, h)| AgentCosts {
                agent: agent.as_deref().map(str::to_string),
                last_end: h.last_end,
                costs: h.costs.iter().copied().collect(),
            })
            .collect();
        all.sort_by(|a, b| {
            let by_time = a.last_end.total_cmp(&b.last_end);
            by_time.then_with(|| a.agent.cmp(&b.agent))
        });
        all
    }

    pub fn restore(&mut self, all: Vec<AgentCosts>) {
        self.agents.clear();
        for a in all {
            for micros in a.costs {
                self.observe(a.agent.as_deref(), micros, a.last_end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let of = |costs: &[i64]| percentile(&costs.iter().copied().collect());
        assert_eq!(of(&[]), 0);
        assert_eq!(of(&[7]), 7);
        assert_eq!(of(&[1, 2]), 2);
        let ten: Vec<i64> = (1..=10).rev().collect();
        assert_eq!(of(&ten), 9, "9 of 10 are at or below it");
        let fifty: Vec<i64> = (1..=50).collect();
        assert_eq!(of(&fifty), 45);
    }

    #[test]
    fn each_agent_learns_from_its_last_fifty_runs() {
        let mut l = Learned::default();
        assert_eq!(l.percentile(Some("a")), None);
        for i in 0..100 {
            // The first fifty are expensive and must be forgotten.
            let cost = if i < 50 { 9_000_000 } else { 1_000 + i };
            l.observe(Some("a"), cost, f64::from(i as u32));
        }
        assert_eq!(l.percentile(Some("a")), Some(1_000 + 94));
        l.observe(None, 5, 0.0);
        assert_eq!(
            (l.percentile(None), l.percentile(Some(""))),
            (Some(5), None),
            "no agent is not the empty agent"
        );
        let exported = l.export();
        assert_eq!(exported[0].agent, None);
        assert_eq!(exported[1].costs.len(), LEARNED_RUNS);
        let mut again = Learned::default();
        again.restore(exported.clone());
        assert_eq!(again.export(), exported);
        let json: Vec<_> = exported.iter().map(AgentCosts::to_json).collect();
        let back: Vec<_> = json
            .iter()
            .map(|v| AgentCosts::from_json(v).unwrap())
            .collect();
        assert_eq!(back, exported);
        assert_eq!(
            AgentCosts::from_json(&json!({"costs": [-1], "last_end": 0})),
            None
        );
    }

    #[test]
    fn the_budget_wide_estimate_is_the_largest_of_recent_agents() {
        let mut l = Learned::default();
        let now = 10.0 * RECENT_AGENT_SECONDS;
        l.observe(
            Some("retired"),
            50_000_000,
            now - RECENT_AGENT_SECONDS - 1.0,
        );
        assert_eq!(l.largest_recent(now), None);
        l.observe(Some("cheap"), 100_000, now - 60.0);
        l.observe(Some("dear"), 3_000_000, now - 3_600.0);
        assert_eq!(l.largest_recent(now), Some(3_000_000));
    }

    #[test]
    fn agents_are_bounded_and_the_longest_idle_goes_first() {
        let mut l = Learned::default();
        for i in 0..LEARNED_AGENTS {
            l.observe(Some(&format!("a{i}")), 1, i as f64);
        }
        l.observe(Some("new"), 2, 1e9);
        assert_eq!(l.agents.len(), LEARNED_AGENTS);
        assert_eq!(l.percentile(Some("a0")), None);
        assert_eq!(l.percentile(Some("a1")), Some(1));
        assert_eq!(l.percentile(Some("new")), Some(2));
    }
}
