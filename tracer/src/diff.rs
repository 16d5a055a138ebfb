//! `tracer diff OLD.json NEW.json`: what changed between two reports of the
//! same kind (two `tracer lab -o json` runs, or two `tracer watch -o json`
//! runs), figure by figure, and whether any got significantly worse.
//!
//! Both reports are walked as JSON: every number is a figure, named by its
//! path. Arrays of rows are matched by their identifying fields (datapath,
//! interface, server, reason, …), not by position, so a row that moved is
//! not a change. Each figure's name says which way is worse ([`direction`]):
//! latencies, percentiles, drops, losses, floods and failures up is worse;
//! rates and throughput down is worse; plain volumes (queries sent, packets
//! seen) are context and never a regression. Every statistic a report
//! carries for a figure (p50, p99, max, …) is its own row.
//!
//! A change is **significant** when it exceeds both the relative threshold
//! (`--threshold-percent`, of the old value) and the absolute one
//! (`--min-change`, in the figure's own unit): a 0 → 1 drop is not news, a
//! 2 ms → 2.5 ms p99 is noise for most runs.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use crate::stats;

/// Which way a figure gets worse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More is worse: latency, drops, losses, flooding.
    UpIsWorse,
    /// Less is worse: throughput, packet rates.
    DownIsWorse,
    /// Context (volumes, settings): shown, never judged.
    Neutral,
}

/// Fields that identify a row in an array of objects, most specific last.
/// A row that names its pod is keyed by the pod alone: a pod's veth gets a
/// new name when the pod is recreated, its `namespace/name` often does not.
const ROW_KEYS: &[&str] = &[
    "pod",
    "datapath",
    "scenario",
    "symptom",
    "figure",
    "interface",
    "server",
    "client",
    "reason",
    "name",
];

/// Figure names (the last path component) ending like this get worse
/// downwards.
const DOWN_IS_WORSE: &[&str] = &["_pps", "_mbit_s", "_per_second"];

/// …and these are context, whatever their value.
const NEUTRAL: &[&str] = &[
    "schema_version",
    "repeat",
    "answers",
    "pods",
    "lookups",
    "queries",
    "rounds",
    "sent",
    "duration_seconds",
    "ifindex",
    // A namespace's inode: an identity, not a figure.
    "netns",
    "packets",
    "bytes",
    "parallel_pairs",
    "clash_resolved",
    "clashes_resolved",
    "searched",
    "found",
    "new",
    "insert",
    "delete",
    "invalid",
    "ignore",
    "remedies",
    "fdb_learns",
    "fdb_deletes",
    "fdb_entries_at_start",
    "low_ns",
    "high_ns",
    "buckets",
];

/// Which way `figure` (a path) gets worse, from its last component (for a
/// list's length, the list's name).
pub fn direction(figure: &str) -> Direction {
    let figure = figure.strip_suffix(".count_rows").unwrap_or(figure);
    let last = figure
        .rsplit(['.', ']'])
        .find(|s| !s.is_empty())
        .unwrap_or(figure);
    let last = last.trim_start_matches('[');
    // A lab's comparison rows are statistics of its runs, which are
    // compared themselves.
    if NEUTRAL.contains(&last)
        || figure.starts_with("comparison[")
        || figure.contains(".buckets")
        || figure.contains("ingress.")
        || figure.contains("egress.")
    {
        Direction::Neutral
    } else if DOWN_IS_WORSE.iter().any(|s| last.ends_with(s)) {
        Direction::DownIsWorse
    } else {
        Direction::UpIsWorse
    }
}

/// Thresholds for "significantly worse".
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Relative change, percent of the old value.
    pub percent: f64,
    /// Absolute change, in the figure's unit.
    pub min_change: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            percent: 20.0,
            min_change: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Worse,
    Better,
    /// Changed, but within the thresholds (or a neutral figure).
    Changed,
    Same,
    /// In only one of the reports.
    Added,
    Removed,
}

impl Verdict {
    const fn name(self) -> &'static str {
        match self {
            Self::Worse => "WORSE",
            Self::Better => "better",
            Self::Changed => "~",
            Self::Same => "",
            Self::Added => "new",
            Self::Removed => "gone",
        }
    }
}

/// One figure in both reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub figure: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
    pub verdict: Verdict,
    /// Two-sided p-value of old vs new, when both reports have two or more
    /// runs of the figure (lab `--repeat`): see [`significance`].
    pub p_value: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(
        "the reports are of different kinds ({old} vs {new}): diff two lab reports or two watch reports"
    )]
    Kinds {
        old: &'static str,
        new: &'static str,
    },
    #[error("{0} is neither a lab nor a watch report (no `runs` or `interfaces`)")]
    Unknown(&'static str),
}

/// `lab` or `watch`, from the report's shape.
fn kind(report: &Value) -> Option<&'static str> {
    if report.get("runs").is_some() {
        Some("lab")
    } else if report.get("interfaces").is_some() {
        Some("watch")
    } else {
        None
    }
}

/// Every numeric figure of `value` by path. Booleans count as 0/1 (a
/// finding's `detected`); a severity word as its rank; arrays of rows are
/// keyed by [`ROW_KEYS`], `[name, value]` pairs by the name, and other
/// arrays by their length.
pub fn figures(value: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    walk(value, String::new(), &mut out);
    out
}

fn walk(value: &Value, path: String, out: &mut BTreeMap<String, f64>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Number(n) => {
            if let Some(n) = n.as_f64() {
                out.insert(path, n);
            }
        }
        Value::Bool(b) => {
            out.insert(path, f64::from(u8::from(*b)));
        }
        Value::String(s) if path.ends_with("severity") => {
            if let Some(rank) = ["ok", "info", "warning", "critical"]
                .iter()
                .position(|w| w == s)
            {
                out.insert(path, rank as f64);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, join(k), out);
            }
        }
        Value::Array(items) => walk_array(items, &path, out),
        _ => {}
    }
}

fn walk_array(items: &[Value], path: &str, out: &mut BTreeMap<String, f64>) {
    let keyed: Option<Vec<(String, &Value)>> = items.iter().map(row_key).collect();
    match keyed {
        Some(rows) if !rows.is_empty() => {
            // Equal keys (a row that is there twice) get a sequence number.
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for (key, row) in rows {
                let n = seen.entry(key.clone()).or_default();
                let key = if *n == 0 { key } else { format!("{key}#{n}") };
                *n += 1;
                walk(row, format!("{path}[{key}]"), out);
            }
        }
        _ => {
            out.insert(format!("{path}.count_rows"), items.len() as f64);
        }
    }
}

/// A row's key and the part to compare: an object's identifying fields
/// (the object itself), or a `[name, value]` pair's name (the value).
fn row_key(item: &Value) -> Option<(String, &Value)> {
    match item {
        Value::Object(map) => {
            let has_pod = map.get("pod").is_some_and(Value::is_string);
            let parts: Vec<&str> = ROW_KEYS
                .iter()
                .filter(|k| !(has_pod && matches!(**k, "interface" | "name")))
                .filter_map(|k| map.get(*k).and_then(Value::as_str))
                .collect();
            (!parts.is_empty()).then(|| (parts.join(" "), item))
        }
        Value::Array(pair) if pair.len() == 2 => {
            let name = pair[0].as_str()?;
            let inner = row_key(&pair[1]).map_or_else(String::new, |(k, _)| format!(" {k}"));
            Some((format!("{name}{inner}"), &pair[1]))
        }
        _ => None,
    }
}

/// Compares two reports of the same kind.
pub fn diff(old: &Value, new: &Value, limits: Thresholds) -> Result<Vec<Row>, DiffError> {
    let old_kind = kind(old).ok_or(DiffError::Unknown("OLD"))?;
    let new_kind = kind(new).ok_or(DiffError::Unknown("NEW"))?;
    if old_kind != new_kind {
        return Err(DiffError::Kinds {
            old: old_kind,
            new: new_kind,
        });
    }
    let group = |figures: BTreeMap<String, f64>| {
        if old_kind == "lab" {
            runs_of(figures)
        } else {
            figures.into_iter().map(|(k, v)| (k, vec![v])).collect()
        }
    };
    let (old, new) = (group(figures(old)), group(figures(new)));
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|figure| {
            let (o, n) = (old.get(figure), new.get(figure));
            let mean = |v: Option<&Vec<f64>>| v.map(|v| stats::mean(v));
            let p_value = o.zip(n).and_then(|(o, n)| significance(o, n));
            let mut verdict = judge(figure, mean(o), mean(n), limits);
            // Beyond the thresholds but within what the runs' own spread
            // explains: a change, not a regression (or an improvement).
            if matches!(verdict, Verdict::Worse | Verdict::Better)
                && p_value.is_some_and(|p| p >= stats::ALPHA)
            {
                verdict = Verdict::Changed;
            }
            Row {
                figure: figure.clone(),
                old: mean(o),
                new: mean(n),
                verdict,
                p_value,
            }
        })
        .collect())
}

/// Old vs new when both have at least two runs: counts (whole numbers)
/// by the exact conditional Poisson test on their totals per run, other
/// figures by Mann–Whitney U on the per-run values — the lab's own tests.
/// `None` with fewer runs: then the thresholds alone decide.
pub fn significance(old: &[f64], new: &[f64]) -> Option<f64> {
    if old.len() < 2 || new.len() < 2 {
        return None;
    }
    let whole = |v: &[f64]| v.iter().all(|x| *x >= 0.0 && x.fract() == 0.0);
    if whole(old) && whole(new) {
        let total = |v: &[f64]| v.iter().sum::<f64>() as u64;
        Some(stats::poisson_conditional_test(
            total(old),
            old.len() as f64,
            total(new),
            new.len() as f64,
        ))
    } else {
        Some(stats::mann_whitney(old, new).1)
    }
}

/// A lab report with `--repeat N` has N runs per datapath (`runs[bridge]`,
/// `runs[bridge#1]`, …): each of their figures is grouped over the runs, so
/// reports with different numbers of runs compare by their mean, and the
/// runs' spread says whether a change is more than noise.
fn runs_of(figures: BTreeMap<String, f64>) -> BTreeMap<String, Vec<f64>> {
    let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (name, value) in figures {
        let name = match name.strip_prefix("runs[").and_then(|r| r.split_once(']')) {
            Some((key, rest)) => {
                let datapath = key.split_once('#').map_or(key, |(d, _)| d);
                format!("runs[{datapath}]{rest}")
            }
            None => name,
        };
        runs.entry(name).or_default().push(value);
    }
    runs
}

fn judge(figure: &str, old: Option<f64>, new: Option<f64>, limits: Thresholds) -> Verdict {
    let (old, new) = match (old, new) {
        (Some(o), Some(n)) => (o, n),
        // A row that appeared (a new victim port, a new loss reason) is
        // judged from zero: appearing with 3000 flooded copies is worse.
        (None, Some(n)) => {
            return match judge(figure, Some(0.0), Some(n), limits) {
                Verdict::Worse => Verdict::Worse,
                _ => Verdict::Added,
            };
        }
        (_, None) => return Verdict::Removed,
    };
    if old == new {
        return Verdict::Same;
    }
    let delta = new - old;
    let significant = delta.abs() >= limits.min_change
        && (old == 0.0 || delta.abs() / old.abs() * 100.0 > limits.percent);
    let worse = match direction(figure) {
        Direction::Neutral => return Verdict::Changed,
        Direction::UpIsWorse => delta > 0.0,
        Direction::DownIsWorse => delta < 0.0,
    };
    match (significant, worse) {
        (false, _) => Verdict::Changed,
        (true, true) => Verdict::Worse,
        (true, false) => Verdict::Better,
    }
}

fn number(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            }
        },
    )
}

fn change(row: &Row) -> String {
    match (row.old, row.new) {
        (Some(o), Some(n)) if o != 0.0 => format!("{:+.0} %", (n - o) / o.abs() * 100.0),
        (Some(o), Some(n)) => format!("{:+}", number(Some(n - o))),
        _ => String::new(),
    }
}

/// The rows as a table: the worst first, unchanged rows only with `all`;
/// a summary line at the end.
pub fn to_table(rows: &[Row], limits: Thresholds, all: bool) -> String {
    let mut shown: Vec<&Row> = rows
        .iter()
        .filter(|r| all || r.verdict != Verdict::Same)
        .collect();
    shown.sort_by(|a, b| a.verdict.cmp(&b.verdict).then(a.figure.cmp(&b.figure)));
    let width = shown
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>12}  {:>9}  {:>6}  verdict\n",
        "figure", "old", "new", "change", "p"
    );
    for r in &shown {
        let p = r
            .p_value
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"));
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>9}  {p:>6}  {}",
            r.figure,
            number(r.old),
            number(r.new),
            change(r),
            r.verdict.name()
        );
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "{} worse, {} better, {} changed within thresholds, {} unchanged, {} new, {} gone \
         (worse = beyond +{} % and {} in the figure's unit, and p < 0.05 where both \
         reports have 2+ runs: exact Poisson test for counts, Mann-Whitney U otherwise)",
        count(Verdict::Worse),
        count(Verdict::Better),
        count(Verdict::Changed),
        count(Verdict::Same),
        count(Verdict::Added),
        count(Verdict::Removed),
        limits.percent,
        limits.min_change
    );
    out
}

/// True when any figure got significantly worse.
pub fn regressed(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.verdict == Verdict::Worse)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lab(p99: f64, copies: u64, pps: f64) -> Value {
        json!({
            "schema_version": 1, "kernel": "6.18", "pods": 4,
            "runs": [
                {"datapath": "transparent", "dns": {"queries": 10, "p99_ms": 1.0},
                 "flood": {"copies_to_victims": 0}, "pod_to_pod": {"udp_pps": 9000.0}},
                {"datapath": "bridge", "dns": {"queries": 12, "p99_ms": p99},
                 "flood": {"copies_to_victims": copies}, "pod_to_pod": {"udp_pps": pps},
                 "findings": [["flood", {"symptom": "udp_flooding", "severity": "ok", "detected": false}]]}
            ],
            "comparison": [], "verify": []
        })
    }

    #[test]
    fn rows_match_by_datapath_not_position() {
        let old = lab(2.0, 0, 9000.0);
        let mut new = old.clone();
        new["runs"].as_array_mut().expect("runs").reverse();
        let rows = diff(&old, &new, Thresholds::default()).expect("diff");
        assert!(rows.iter().all(|r| r.verdict == Verdict::Same), "{rows:#?}");
        assert!(rows.iter().any(|r| r.figure == "runs[bridge].dns.p99_ms"));
    }

    #[test]
    fn worse_better_and_within_thresholds() {
        let old = lab(2.0, 0, 9000.0);
        let new = lab(10.0, 500, 4000.0);
        let rows = diff(&old, &new, Thresholds::default()).expect("diff");
        let verdict = |f: &str| rows.iter().find(|r| r.figure == f).expect(f).verdict;
        assert_eq!(verdict("runs[bridge].dns.p99_ms"), Verdict::Worse);
        assert_eq!(
            verdict("runs[bridge].flood.copies_to_victims"),
            Verdict::Worse
        );
        assert_eq!(verdict("runs[bridge].pod_to_pod.udp_pps"), Verdict::Worse);
        assert_eq!(verdict("runs[transparent].dns.p99_ms"), Verdict::Same);
        assert!(regressed(&rows));
        // Reversed, the same changes are improvements.
        let back = diff(&new, &old, Thresholds::default()).expect("diff");
        assert!(!regressed(&back));
        // 2 → 2.3 ms is +15 %: within 20 %.
        let small = diff(&old, &lab(2.3, 0, 9000.0), Thresholds::default()).expect("diff");
        assert!(!regressed(&small), "{small:#?}");
        // …and beyond 10 % only if 0.3 ms is beyond --min-change.
        let tight = Thresholds {
            percent: 10.0,
            min_change: 0.1,
        };
        assert!(regressed(
            &diff(&old, &lab(2.3, 0, 9000.0), tight).expect("diff")
        ));
        let table = to_table(&rows, Thresholds::default(), false);
        assert!(
            table.lines().nth(1).expect("row").ends_with("WORSE"),
            "{table}"
        );
    }

    #[test]
    fn volumes_are_context_and_findings_count() {
        let old = lab(2.0, 0, 9000.0);
        let mut new = old.clone();
        new["runs"][1]["dns"]["queries"] = json!(1000);
        new["runs"][1]["findings"][0][1]["detected"] = json!(true);
        new["runs"][1]["findings"][0][1]["severity"] = json!("warning");
        let rows = diff(&old, &new, Thresholds::default()).expect("diff");
        let verdict = |f: &str| rows.iter().find(|r| r.figure == f).expect(f).verdict;
        assert_eq!(verdict("runs[bridge].dns.queries"), Verdict::Changed);
        assert_eq!(
            verdict("runs[bridge].findings[flood udp_flooding].detected"),
            Verdict::Worse
        );
        assert_eq!(
            verdict("runs[bridge].findings[flood udp_flooding].severity"),
            Verdict::Worse
        );
    }

    #[test]
    fn repeated_runs_compare_by_their_mean() {
        let old = lab(2.0, 0, 9000.0);
        let mut new = old.clone();
        let runs = new["runs"].as_array_mut().expect("runs");
        let mut second = runs[1].clone();
        second["repeat"] = json!(2);
        second["dns"]["p99_ms"] = json!(5.0);
        runs[1]["repeat"] = json!(1);
        runs.push(second);
        // Bridge p99 2 and 5 ms over two runs: mean 3.5, +75 % of 2 ms.
        let rows = diff(&old, &new, Thresholds::default()).expect("diff");
        let row = rows
            .iter()
            .find(|r| r.figure == "runs[bridge].dns.p99_ms")
            .expect("folded");
        assert_eq!(row.new, Some(3.5));
        assert_eq!(row.verdict, Verdict::Worse);
        assert!(rows.iter().all(|r| !r.figure.contains('#')), "{rows:#?}");
        assert_eq!(
            direction("comparison[dns answer p99 ms].bridge_stats.mean"),
            Direction::Neutral
        );
    }

    /// A lab report with one bridge run per (p99, copies).
    fn lab_runs(runs: &[(f64, u64)]) -> Value {
        let runs: Vec<Value> = runs
            .iter()
            .enumerate()
            .map(|(i, (p99, copies))| {
                json!({"datapath": "bridge", "repeat": i + 1, "dns": {"p99_ms": p99},
                       "flood": {"copies_to_victims": copies}})
            })
            .collect();
        json!({"schema_version": 1, "kernel": "6.18", "pods": 4, "runs": runs,
               "comparison": [], "verify": []})
    }

    #[test]
    fn repeated_runs_need_significance_to_be_worse() {
        let old = lab_runs(&[(2.0, 0), (2.2, 0), (1.9, 0)]);
        // p99 +65 % and +1.3 ms on average, but one run of three carries it:
        // Mann-Whitney on 3 + 3 runs cannot call that (p = 0.7).
        let new = lab_runs(&[(1.9, 4000), (6.0, 4100), (2.0, 3900)]);
        let rows = diff(&old, &new, Thresholds::default()).expect("diff");
        let row = |name: &str| rows.iter().find(|r| r.figure == name).expect(name);
        let p99 = row("runs[bridge].dns.p99_ms");
        assert_eq!(p99.verdict, Verdict::Changed, "{p99:?}");
        assert!(p99.p_value.expect("3 runs each") > 0.05, "{p99:?}");
        // 0 → ~4000 flooded copies in every run: the exact Poisson test.
        let copies = row("runs[bridge].flood.copies_to_victims");
        assert_eq!(copies.verdict, Verdict::Worse, "{copies:?}");
        assert!(copies.p_value.expect("3 runs each") < 1e-6, "{copies:?}");
        // One run each: the thresholds alone, no p-value.
        assert_eq!(significance(&[1.0], &[5.0, 6.0]), None);
    }

    #[test]
    fn kinds_must_match() {
        let watch = json!({"interfaces": [], "dns": {}});
        assert!(matches!(
            diff(&lab(1.0, 0, 1.0), &watch, Thresholds::default()),
            Err(DiffError::Kinds { .. })
        ));
        assert!(matches!(
            diff(&json!({}), &watch, Thresholds::default()),
            Err(DiffError::Unknown("OLD"))
        ));
    }

    #[test]
    fn directions_from_names() {
        assert_eq!(direction("runs[bridge].dns.p99_ms"), Direction::UpIsWorse);
        assert_eq!(
            direction("losses[dns_ring_full].count"),
            Direction::UpIsWorse
        );
        assert_eq!(
            direction("runs[bridge].pod_to_pod.tcp_mbit_s"),
            Direction::DownIsWorse
        );
        assert_eq!(direction("dns.counters.queries"), Direction::Neutral);
        assert_eq!(
            direction("interfaces[azv1].ingress.packets"),
            Direction::Neutral
        );
        assert_eq!(direction("flood.episodes.count_rows"), Direction::UpIsWorse);
        // The bridge's FDB size when the trace began is context.
        assert_eq!(direction("flood.fdb_entries_at_start"), Direction::Neutral);
    }

    #[test]
    fn rows_with_a_pod_are_keyed_by_it() {
        let row = json!({"name": "azv123", "pod": "shop/web-1", "x": 1});
        assert_eq!(row_key(&row).expect("key").0, "shop/web-1");
        let row = json!({"interface": "azv123", "server": "10.0.0.10"});
        assert_eq!(row_key(&row).expect("key").0, "azv123 10.0.0.10");
    }
}
