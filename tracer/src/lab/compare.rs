//! The comparison table as statistics: every compared figure is read from
//! each run of each datapath ([`Metric`]: a name, a kind and a getter, so a
//! scenario adds rows without touching this file), summarised as a mean
//! with a 95 % interval, and the two datapaths are tested against each
//! other by the kind's test ([`crate::stats`]).
//!
//! "Resolved by transparent?" is answered for symptom counts only, and only
//! from a significant difference (Holm-adjusted over the judged rows):
//! - `yes`: bridge has it, transparent has significantly less and none;
//! - `partly (−x %)`: significantly less, but transparent still has some;
//! - `no`: both have it, no significant difference;
//! - `no (worse)`: transparent has significantly more;
//! - `not shown`: neither has it, or the runs cannot decide.

use serde::Serialize;

use super::{DatapathRun, topology::Datapath};
use crate::stats;

type Getter = Box<dyn Fn(&DatapathRun) -> Option<f64>>;

/// What a figure is, which decides its interval and its test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Events counted in a run (unanswered sends, flooded frames): exact
    /// Poisson interval, exact conditional Poisson test.
    Count,
    /// A value measured in a run (a percentile, a rate): Student's t
    /// interval, Mann–Whitney U on the per-run values.
    Measure,
    /// How much traffic ran (lookups, rounds): t interval, no test.
    Volume,
}

/// One compared figure.
pub struct Metric {
    symptom: &'static str,
    figure: &'static str,
    kind: Kind,
    /// Answers "resolved by transparent?".
    judged: bool,
    value: Getter,
    /// What a count is per (lookups, rounds, frames sent), so datapaths
    /// that ran different amounts of traffic compare as rates.
    exposure: Option<(&'static str, Getter)>,
}

impl Metric {
    /// A figure of `kind`, read from each run by `value` (`None`: this run
    /// has no such figure, e.g. its scenario did not run).
    pub fn new(
        symptom: &'static str,
        figure: &'static str,
        kind: Kind,
        value: impl Fn(&DatapathRun) -> Option<f64> + 'static,
    ) -> Self {
        Self {
            symptom,
            figure,
            kind,
            judged: false,
            value: Box::new(value),
            exposure: None,
        }
    }

    /// Makes the row answer "resolved by transparent?": for a symptom's
    /// count ([`Kind::Count`]); other kinds stay unjudged.
    #[must_use]
    pub fn judged(mut self) -> Self {
        self.judged = true;
        self
    }

    /// Compares the count per `name` (each run's `exposure`) instead of
    /// per run.
    #[must_use]
    pub fn per(
        mut self,
        name: &'static str,
        exposure: impl Fn(&DatapathRun) -> Option<f64> + 'static,
    ) -> Self {
        self.exposure = Some((name, Box::new(exposure)));
        self
    }
}

/// One datapath's runs of a figure.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub mean: f64,
    /// 95 % interval of the mean (absent for a measure of one run).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// One row of the table.
#[derive(Debug, Serialize)]
pub struct ComparisonRow {
    pub symptom: &'static str,
    pub figure: &'static str,
    pub kind: Kind,
    /// Mean per run and 95 % interval, as the table shows them.
    pub bridge: String,
    pub transparent: String,
    /// Did transparent mode resolve it on this kernel (see the module
    /// documentation); `-` for rows that are not a symptom's count.
    pub resolved: String,
    pub bridge_stats: Option<Summary>,
    pub transparent_stats: Option<Summary>,
    /// The test behind `p_value`.
    pub test: Option<String>,
    pub p_value: Option<f64>,
    /// `p_value` adjusted by Holm over the judged rows (what `resolved`
    /// uses).
    pub p_holm: Option<f64>,
}

/// A figure's values over one datapath's runs.
struct Runs {
    values: Vec<f64>,
    exposures: Vec<f64>,
}

impl Runs {
    fn of(metric: &Metric, runs: &[&DatapathRun]) -> Self {
        let (mut values, mut exposures) = (Vec::new(), Vec::new());
        for run in runs {
            if let Some(v) = (metric.value)(run) {
                values.push(v);
                exposures.push(
                    metric
                        .exposure
                        .as_ref()
                        .map_or(Some(1.0), |(_, e)| e(run))
                        .unwrap_or(1.0),
                );
            }
        }
        Self { values, exposures }
    }

    fn total(&self) -> u64 {
        self.values.iter().sum::<f64>().round() as u64
    }

    fn rate(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.exposures.iter().sum::<f64>()
    }

    fn summary(&self, kind: Kind) -> Option<Summary> {
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        // Every lab figure is ≥ 0: a t interval that reaches below is cut
        // at 0.
        let t = stats::t_interval(&self.values).map(|(lo, hi)| (lo.max(0.0), hi));
        let ci = if kind == Kind::Count {
            // The exact Poisson interval, widened to Student's t interval
            // when the runs vary more than Poisson counts would.
            let (lo, hi) = stats::poisson_interval(self.total());
            let (lo, hi) = (lo / n as f64, hi / n as f64);
            Some(t.map_or((lo, hi), |(a, b)| (lo.min(a), hi.max(b))))
        } else {
            t
        };
        Some(Summary {
            runs: n,
            mean: stats::mean(&self.values),
            ci_low: ci.map(|c| c.0),
            ci_high: ci.map(|c| c.1),
        })
    }
}

/// The test of a count: exact conditional Poisson, or quasi-Poisson when
/// Pearson's dispersion test rejects Poisson variation between runs at 5 %.
fn count_test(b: &Runs, t: &Runs, per: Option<&str>) -> (String, f64) {
    let groups = [
        (&b.values[..], &b.exposures[..]),
        (&t.values[..], &t.exposures[..]),
    ];
    let (eb, et) = (b.exposures.iter().sum(), t.exposures.iter().sum());
    let per = per.map_or_else(String::new, |p| format!(" per {p}"));
    match stats::dispersion(&groups) {
        Some((phi, df)) if stats::chi_square_sf(phi * df as f64, df as f64) < stats::ALPHA => (
            format!("quasi-Poisson score test{per} (dispersion {phi:.1})"),
            stats::quasi_poisson_test(b.total(), eb, t.total(), et, phi),
        ),
        _ => (
            format!("exact conditional Poisson test{per}"),
            stats::poisson_conditional_test(b.total(), eb, t.total(), et),
        ),
    }
}

/// The comparison rows of `metrics` over `runs` (any number of runs per
/// datapath); a figure no run has is left out.
pub fn rows(metrics: &[Metric], runs: &[DatapathRun]) -> Vec<ComparisonRow> {
    let of = |d: Datapath| -> Vec<&DatapathRun> {
        runs.iter().filter(|r| r.datapath == Some(d)).collect()
    };
    let (bridge, transparent) = (of(Datapath::Bridge), of(Datapath::Transparent));
    let mut rows: Vec<(ComparisonRow, Option<Rates>)> = metrics
        .iter()
        .filter_map(|m| row(m, &bridge, &transparent))
        .collect();
    // Holm over the judged rows that have a test.
    let judged: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].1.is_some() && rows[i].0.p_value.is_some())
        .collect();
    let p: Vec<f64> = judged.iter().filter_map(|&i| rows[i].0.p_value).collect();
    for (&i, adjusted) in judged.iter().zip(stats::holm(&p)) {
        let (row, rates) = &mut rows[i];
        row.p_holm = Some(adjusted);
        if let Some(rates) = rates {
            row.resolved = rates.resolved(adjusted);
        }
    }
    rows.into_iter().map(|(row, _)| row).collect()
}

/// What a judged row's verdict needs besides its p-value.
struct Rates {
    bridge: f64,
    transparent: f64,
    transparent_total: u64,
}

impl Rates {
    fn resolved(&self, p: f64) -> String {
        let significant = p < stats::ALPHA;
        if significant && self.bridge > self.transparent {
            if self.transparent_total == 0 {
                "yes".to_owned()
            } else {
                let change = 100.0 * (self.transparent / self.bridge - 1.0);
                format!("partly ({change:+.0} %)")
            }
        } else if significant {
            "no (worse)".to_owned()
        } else if self.bridge > 0.0 && self.transparent > 0.0 {
            "no".to_owned()
        } else {
            "not shown".to_owned()
        }
    }
}

/// A row, and for a judged row what its verdict needs.
fn row(
    metric: &Metric,
    bridge: &[&DatapathRun],
    transparent: &[&DatapathRun],
) -> Option<(ComparisonRow, Option<Rates>)> {
    let (b, t) = (Runs::of(metric, bridge), Runs::of(metric, transparent));
    if b.values.is_empty() && t.values.is_empty() {
        return None;
    }
    let both = !b.values.is_empty() && !t.values.is_empty();
    let test = match metric.kind {
        Kind::Count if both => Some(count_test(&b, &t, metric.exposure.as_ref().map(|e| e.0))),
        Kind::Measure if both => Some((
            "Mann–Whitney U on per-run values".to_owned(),
            stats::mann_whitney(&b.values, &t.values).1,
        )),
        _ => None,
    };
    let (bs, ts) = (b.summary(metric.kind), t.summary(metric.kind));
    // Only a count has a rate to judge; `judged()` on another kind is inert.
    let judged = (metric.judged && metric.kind == Kind::Count && test.is_some()).then(|| Rates {
        bridge: b.rate(),
        transparent: t.rate(),
        transparent_total: t.total(),
    });
    let resolved = if judged.is_some() { "not shown" } else { "-" };
    Some((
        ComparisonRow {
            symptom: metric.symptom,
            figure: metric.figure,
            kind: metric.kind,
            bridge: show(bs.as_ref()),
            transparent: show(ts.as_ref()),
            resolved: resolved.to_owned(),
            bridge_stats: bs,
            transparent_stats: ts,
            p_value: test.as_ref().map(|t| t.1),
            test: test.map(|t| t.0),
            p_holm: None,
        },
        judged,
    ))
}

/// "mean [low, high]" with as many digits as the size calls for.
fn show(summary: Option<&Summary>) -> String {
    let Some(s) = summary else {
        return "n/a".to_owned();
    };
    match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) => format!("{} [{}, {}]", num(s.mean), num(lo), num(hi)),
        _ => num(s.mean),
    }
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Shown under the table: what the numbers are.
pub fn legend(repeat: usize) -> String {
    format!(
        "BRIDGE, TRANSPARENT: mean per run [95 % interval, cut at 0] over {repeat} runs per
  datapath, the two nodes taking turns.
Counts: exact Poisson (Garwood) interval, widened to Student's t when the runs vary more;
  P: exact conditional Poisson test of the two totals (per lookup, round or frame sent
  where the amount of traffic differs), a quasi-Poisson score test when Pearson's
  dispersion test rejects Poisson variation between runs.
Measures and volumes: Student's t interval; P (measures): Mann-Whitney U on the per-run
  values, exact up to 20 runs in all (4+ runs per datapath can reach 5 %).
RESOLVED: yes / partly / no / no (worse) / not shown, from P < 0.05 after Holm's
  adjustment over the judged rows (their P is the adjusted one).
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::FloodFigures;

    fn flood_run(datapath: Datapath, flooded: u64) -> DatapathRun {
        DatapathRun {
            datapath: Some(datapath),
            flood: Some(FloodFigures {
                sent: 4000,
                episodes: u64::from(flooded > 0),
                frames_flooded: flooded,
                copies_to_victims: 5 * flooded,
                victim_ports: 5 * u64::from(flooded > 0),
                cause: None,
            }),
            ..DatapathRun::default()
        }
    }

    fn metrics() -> Vec<Metric> {
        vec![
            Metric::new("flood", "frames flooded", Kind::Count, |r| {
                Some(r.flood.as_ref()?.frames_flooded as f64)
            })
            .judged()
            .per("frame sent", |r| Some(r.flood.as_ref()?.sent as f64)),
            Metric::new("flood", "episodes", Kind::Measure, |r| {
                Some(r.flood.as_ref()?.episodes as f64)
            }),
        ]
    }

    fn verdict(bridge: &[u64], transparent: &[u64]) -> String {
        let runs: Vec<DatapathRun> = bridge
            .iter()
            .map(|&f| flood_run(Datapath::Bridge, f))
            .chain(
                transparent
                    .iter()
                    .map(|&f| flood_run(Datapath::Transparent, f)),
            )
            .collect();
        rows(&metrics(), &runs)[0].resolved.clone()
    }

    #[test]
    fn verdicts_need_significance() {
        // Thousands every run against none: resolved, even over-dispersed.
        assert_eq!(verdict(&[4273, 3900, 4400], &[0, 0, 0]), "yes");
        // 4 against 0 in one run each was "yes" before; it cannot decide
        // (exact conditional test p = 2 · 0.5^4 = 0.125).
        assert_eq!(verdict(&[4], &[0]), "not shown");
        assert_eq!(verdict(&[0, 0], &[0, 0]), "not shown");
        // Comparable rates on both.
        assert_eq!(
            verdict(&[19000, 19400, 18800], &[19300, 18900, 19500]),
            "no"
        );
        assert_eq!(verdict(&[0, 0, 0], &[300, 280, 310]), "no (worse)");
        assert!(verdict(&[1000, 1010, 990], &[100, 90, 110]).starts_with("partly (-90 %"));
    }

    #[test]
    fn rows_carry_intervals_and_tests() {
        let runs = [4273, 3900, 4400]
            .map(|f| flood_run(Datapath::Bridge, f))
            .into_iter()
            .chain([0, 0, 0].map(|f| flood_run(Datapath::Transparent, f)))
            .collect::<Vec<_>>();
        let rows = rows(&metrics(), &runs);
        let flooded = &rows[0];
        let b = flooded.bridge_stats.as_ref().unwrap();
        assert_eq!(b.runs, 3);
        assert!(b.ci_low.unwrap() < 4191.0 && b.ci_high.unwrap() > 4191.0);
        // None in 3 runs: Garwood's 3.689 over 3 runs.
        let t = flooded.transparent_stats.as_ref().unwrap();
        assert!((t.ci_high.unwrap() - 3.688_879 / 3.0).abs() < 1e-5);
        assert!(flooded.test.as_deref().unwrap().contains("quasi-Poisson"));
        // 3 against 3 runs cannot reach 5 % by rank: the smallest p is 0.1.
        assert_eq!(rows[1].resolved, "-");
        assert!(rows[1].p_value.unwrap() >= 0.1);
    }
}
