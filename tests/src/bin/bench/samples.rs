//! Samples and results.

use super::*;

/// One figure over runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series(pub(crate) Vec<f64>);

impl Series {
    pub(crate) fn push(&mut self, v: f64) {
        if v.is_finite() {
            self.0.push(v);
        }
    }

    pub(crate) fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub(crate) fn median(&self) -> Option<f64> {
        let v = self.sorted();
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub(crate) fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub(crate) fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// `median (min–max)`, each through `f`.
    pub(crate) fn show(&self, f: impl Fn(f64) -> String) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) if self.0.len() > 1 => {
                format!("{} ({}–{})", f(m), f(lo), f(hi))
            }
            (Some(m), ..) => f(m),
            _ => "n/a".into(),
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "median": self.median(),
            "min": self.min(),
            "max": self.max(),
            "runs": self.0,
        })
    }
}

/// A row of the summary table.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) value: String,
    pub(crate) target: String,
    pub(crate) met: Option<bool>,
}

/// Everything measured so far.
pub(crate) struct Bench {
    pub(crate) args: Args,
    pub(crate) start: Instant,
    pub(crate) rows: Vec<Row>,
    /// Markdown sections after the table (breakdowns, "what dominates").
    pub(crate) details: Vec<String>,
    pub(crate) json: serde_json::Map<String, Value>,
    /// Other processes' CPU (% of a core, median) during each phase.
    pub(crate) others: Vec<(&'static str, f64)>,
}

impl Bench {
    pub(crate) fn row(&mut self, figure: &str, value: String, target: &str, met: Option<bool>) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value,
            target: target.to_owned(),
            met,
        });
    }

    pub(crate) fn detail(&mut self, text: String) {
        self.details.push(text);
    }

    pub(crate) fn wants(&self, phase: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|p| p == phase)
    }

    pub(crate) fn time_left(&self) -> Duration {
        self.args.budget.saturating_sub(self.start.elapsed())
    }

    /// Runs `count` runs unless the budget (minus `reserve` for what
    /// follows) is spent; returns how many fit. Each run is `per_run` long.
    pub(crate) fn runs_that_fit(&self, per_run: Duration, reserve: Duration) -> usize {
        let left = self.time_left().saturating_sub(reserve);
        let fit = (left.as_secs_f64() / per_run.as_secs_f64().max(0.001)).floor() as usize;
        fit.min(self.args.runs)
    }
}

pub(crate) fn ns(v: f64) -> String {
    format!("{v:.0} ns")
}

pub(crate) fn ratio(v: f64) -> String {
    format!("{v:.3}")
}

pub(crate) fn pct(v: f64) -> String {
    format!("{v:.2} %")
}

pub(crate) fn kpps(v: f64) -> String {
    format!("{:.0} kpps", v / 1000.0)
}

pub(crate) fn kqps(v: f64) -> String {
    format!("{:.1} k/s", v / 1000.0)
}

pub(crate) fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

pub(crate) fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

pub(crate) fn count(v: f64) -> String {
    format!("{v:.0}")
}
