//! `tracer lab --plot DIR`: the run as pictures (SVG and PNG), each with the
//! run's parameters in its caption. The text table stays the primary
//! output. Feature `plot` (off in the node binary, see `crate::plot`).

use std::path::{Path, PathBuf};

use super::{DatapathRun, LabReport, Samples};
use crate::plot::{Body, Chart, PlotError, Series, draw};

/// One chart per file, this size.
const SIZE: (u32, u32) = (900, 520);

/// Writes `dns-latency-cdf`, `flood-copies` and `pod-to-pod-rtt` as `.svg`
/// and `.png` into `dir` (created if missing), for the scenarios that ran.
/// Returns the files written.
pub fn write(report: &LabReport, dir: &Path, seconds: f64) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|e| PlotError::Draw {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let caption = format!(
        "tracer lab: kernel {}, {} workload pods per node, {seconds} s per scenario; bridge and transparent nodes ran the same traffic",
        report.kernel, report.pods
    );
    let charts = [
        ("dns-latency-cdf", dns_cdf(report, &caption)),
        ("flood-copies", flood_copies(report, &caption, seconds)),
        ("pod-to-pod-rtt", rtt_cdf(report, &caption)),
    ];
    let mut written = Vec::new();
    for (name, chart) in charts {
        let Some(chart) = chart else { continue };
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{name}.{ext}"));
            draw(&path, std::slice::from_ref(&chart), 1, SIZE)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn datapath(run: &DatapathRun) -> &'static str {
    run.datapath.map_or("?", |d| d.name())
}

/// The empirical CDF of `values` as (value, fraction ≤ value).
fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, (i + 1) as f64 / n))
        .collect()
}

/// The CDF of kernel buckets: at each bucket's upper edge (ms), the share
/// of answers at or below it.
fn bucket_cdf(buckets: &[[u64; 3]]) -> Vec<(f64, f64)> {
    let mut sorted = buckets.to_vec();
    sorted.sort_by_key(|b| b[1]);
    let total: u64 = sorted.iter().map(|b| b[2]).sum();
    let mut seen = 0u64;
    sorted
        .iter()
        .map(|&[_, high, n]| {
            seen += n;
            (high as f64 / 1e6, seen as f64 / total.max(1) as f64)
        })
        .collect()
}

fn chart(title: &str, x: &str, y: &str, caption: &str, series: Vec<Series>) -> Option<Chart> {
    (!series.is_empty()).then(|| Chart {
        title: title.to_owned(),
        x_label: x.to_owned(),
        y_label: y.to_owned(),
        caption: caption.to_owned(),
        body: Body::Lines(series),
        x_limit: None,
    })
}

/// A CDF chart whose x axis ends at the highest p99 of its series (the
/// tail beyond would squeeze the body into a few pixels); the caption
/// says so, with the largest value left out.
fn cdf_chart(title: &str, x: &str, caption: &str, series: Vec<Series>) -> Option<Chart> {
    let p99 = |s: &Series| {
        s.points
            .iter()
            .find(|p| p.1 >= 0.99)
            .or(s.points.last())
            .map_or(0.0, |p| p.0)
    };
    let limit = series.iter().map(p99).fold(0.0, f64::max) * 1.1;
    let max = series
        .iter()
        .filter_map(|s| s.points.last())
        .map(|p| p.0)
        .fold(0.0, f64::max);
    let caption = if max > limit {
        format!(
            "{caption}. x axis cut at 1.1 × the highest p99 ({limit:.1}); largest value {max:.1}"
        )
    } else {
        caption.to_owned()
    };
    let mut chart = chart(title, x, "share at or below", &caption, series)?;
    chart.x_limit = Some(limit).filter(|l| *l > 0.0);
    Some(chart)
}

/// The first run of each datapath (with `--repeat`, later runs keep no
/// samples).
fn first_runs(report: &LabReport) -> impl Iterator<Item = &DatapathRun> {
    report.runs.iter().filter(|r| r.repeat <= 1)
}

fn series_of(
    report: &LabReport,
    what: &str,
    points: impl Fn(&Samples) -> Vec<(f64, f64)>,
) -> Vec<Series> {
    first_runs(report)
        .map(|run| Series {
            name: format!("{} {what}", datapath(run)),
            points: points(&run.samples),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn dns_cdf(report: &LabReport, caption: &str) -> Option<Chart> {
    let mut series = series_of(report, "(tracer, clients' veths)", |s| {
        bucket_cdf(&s.dns_buckets)
    });
    series.extend(series_of(report, "(getent wall time)", |s| {
        cdf(&s.getent_ms)
    }));
    cdf_chart(
        "DNS latency CDF per datapath",
        "milliseconds",
        caption,
        series,
    )
}

/// Cumulative flooded copies per victim port over the trace, from the
/// episodes (copies spread evenly over each episode's span).
fn flood_copies(report: &LabReport, caption: &str, seconds: f64) -> Option<Chart> {
    let mut series = Vec::new();
    for run in first_runs(report) {
        let mut ports: Vec<&String> = run
            .samples
            .flood_episodes
            .iter()
            .flat_map(|e| &e.3)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        for port in ports {
            let mut total = 0.0;
            let mut points = vec![(0.0, 0.0)];
            for (start, end, packets, _) in run
                .samples
                .flood_episodes
                .iter()
                .filter(|e| e.3.contains(port))
            {
                points.push((*start, total));
                total += *packets as f64;
                points.push((end.max(*start), total));
            }
            series.push(Series {
                name: format!("{} {port}", datapath(run)),
                points,
            });
        }
    }
    // A node that ran the scenario and flooded nothing (transparent mode)
    // gets a flat line, so its absence reads as "none", not "not run".
    for run in first_runs(report) {
        if run.flood.is_some() && run.samples.flood_episodes.is_empty() {
            series.push(Series {
                name: format!("{} (no flooding)", datapath(run)),
                points: vec![(0.0, 0.0), (seconds.max(1.0), 0.0)],
            });
        }
    }
    chart(
        "Flooded copies per victim port over time",
        "seconds into the flood scenario",
        "copies received (cumulative)",
        caption,
        series,
    )
}

fn rtt_cdf(report: &LabReport, caption: &str) -> Option<Chart> {
    let mut series = series_of(report, "UDP", |s| cdf(&s.udp_rtt_us));
    series.extend(series_of(report, "TCP", |s| cdf(&s.tcp_rtt_us)));
    cdf_chart(
        "Pod-to-pod round-trip time CDF",
        "microseconds",
        caption,
        series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdfs_end_at_one() {
        let c = cdf(&[3.0, 1.0, 2.0]);
        assert_eq!(c, [(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
        let b = bucket_cdf(&[[2_000_000, 3_000_000, 1], [1_000_000, 2_000_000, 3]]);
        assert_eq!(b, [(2.0, 0.75), (3.0, 1.0)]);
    }
}
