//! What a scenario found: named figures with units and, where the issue sets one, a target.
//! Printed as one table for people and as JSON for scripts.

use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Which way a target points.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost,
    AtLeast,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub bound: Bound,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

impl Figure {
    pub fn met(&self) -> Option<bool> {
        self.target.as_ref().map(|t| match t.bound {
            Bound::AtMost => self.value <= t.value,
            Bound::AtLeast => self.value >= t.value,
        })
    }
}

/// One scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    /// The run's parameters (sizes, store), so a figure can be reproduced.
    pub params: Value,
    pub figures: Vec<Figure>,
    /// What the reader should know to judge the figures.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: impl Into<String>, params: Value) -> Report {
        Report {
            scenario: scenario.into(),
            params,
            figures: vec![],
            notes: vec![],
        }
    }

    pub fn add(&mut self, name: impl Into<String>, value: f64, unit: &'static str) -> &mut Self {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
            target: None,
        });
        self
    }

    /// Adds a figure with the target the issue sets for it.
    pub fn add_target(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        bound: Bound,
        target: f64,
    ) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit,
            target: Some(Target { bound, value: target }),
        });
    }

    /// p50, p90 and p99 of a latency sample, in milliseconds.
    pub fn add_latency(&mut self, name: &str, sample: &Sample) {
        for (label, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
            self.add(format!("{name} {label}"), sample.quantile_ms(q), "ms");
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn table(&self) -> String {
        let width = self
            .figures
            .iter()
            .map(|f| f.name.len())
            .max()
            .unwrap_or(10)
            .max(10);
        let mut out = format!("== {} ({})\n", self.scenario, self.params);
        for f in &self.figures {
            let target = match (&f.target, f.met()) {
                (Some(t), Some(met)) => format!(
                    "  target {} {} {}",
                    match t.bound {
                        Bound::AtMost => "≤",
                        Bound::AtLeast => "≥",
                    },
                    fmt_value(t.value),
                    if met { "✓ met" } else { "✗ MISSED" }
                ),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<width$}  {:>12} {:<5}{}\n",
                f.name,
                fmt_value(f.value),
                f.unit,
                target
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }

    pub fn json(&self) -> Value {
        json!(self)
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A set of measured durations (signed: "the agent started before the client heard back" is a
/// negative interval worth showing rather than hiding).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    ms: Vec<f64>,
}

impl Sample {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    pub fn push_ms(&mut self, ms: f64) {
        self.ms.push(ms);
    }

    pub fn extend(&mut self, other: &Sample) {
        self.ms.extend_from_slice(&other.ms);
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    /// The `q` quantile (nearest rank), in milliseconds; NaN for an empty sample.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut s = Sample::default();
        for i in 1..=100 {
            s.push_ms(f64::from(i));
        }
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
    }
}
