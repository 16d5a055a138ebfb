//! deploy/grafana/tracer-dashboard.json against a real Prometheus that
//! scraped a real tracer: a lab node with slow DNS answers, one lost answer
//! (a re-send), and a bridge flood. Every PromQL expression of every panel,
//! with Grafana's variables filled in, must return series; the alerting
//! rules' metrics must exist too. The panels' data is drawn into a PNG
//! (`tracer::plot`): `TRACER_UPDATE_PICTURES=1` writes it to
//! deploy/grafana/tracer-dashboard.png, the picture in the README.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::{
    lab::topology::{Datapath, Topology},
    plot::{Body, Chart, Heatmap, Series},
};
use tracer_tests::{
    Receiver, TracerRun,
    dns::{DnsServer, DropFirstAaaaAnswer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    kubepod::KubePod,
    privileged,
    prometheus::{Prometheus, free_ports, prometheus_installed, unix_now, urlencode},
    warm_up,
};

const NAME: &str = "shop.dash.test";
/// Its first AAAA answer is dropped: one unanswered send, one re-send.
const LOST_NAME: &str = "lost.dash.test";
const DELAY: Duration = Duration::from_millis(20);
/// What the test puts for Grafana's `$__rate_interval` (scrapes are 1 s
/// apart; Grafana's own choice would be at least 4 scrape intervals).
const RATE_INTERVAL: &str = "10s";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A panel expression with the dashboard's variables as "All".
fn fill_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$instance", ".*")
        .replace("$pod", ".*")
        .replace("$server", ".*")
}

/// A legend from Grafana's `{{label}}` template and a series' labels; a
/// label the series lacks renders empty, as in Grafana.
fn legend(format: &str, labels: &Value) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").map_or(rest.len(), |e| e + start);
        let name = rest[start + 2..end].trim();
        out.push_str(labels[name].as_str().unwrap_or_default());
        rest = rest.get(end + 2..).unwrap_or_default();
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Grafana's unit ids in words.
fn unit_words(unit: &str) -> &str {
    match unit {
        "s" => "seconds",
        "ops" => "per second",
        "pps" => "packets per second",
        "short" => "count",
        other => other,
    }
}

/// A range query's series: its labels and `(seconds since start, value)`.
type Ranged = (Value, Vec<(f64, f64)>);

fn range(prometheus: &Prometheus, expr: &str, start: f64, end: f64) -> Vec<Ranged> {
    let data = prometheus.api(&format!(
        "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
        urlencode(expr)
    ));
    data["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| {
                            let t = v[0].as_f64()?;
                            let y: f64 = v[1].as_str()?.parse().ok()?;
                            y.is_finite().then_some((t - start, y))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (s["metric"].clone(), points)
        })
        .collect()
}

/// Cumulative `le` series into a heatmap: per time step, each bucket's own
/// rate (the difference to the bucket below), as Grafana shows
/// `format: heatmap`.
fn heatmap(series: &[Ranged]) -> Heatmap {
    let mut by_le: Vec<(f64, String, &Ranged)> = series
        .iter()
        .map(|s| {
            let le = s.0["le"].as_str().unwrap_or("+Inf").to_owned();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            (bound, le, s)
        })
        .collect();
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cells = Vec::new();
    let mut below: BTreeMap<i64, f64> = BTreeMap::new();
    for (row, (_, _, (_, points))) in by_le.iter().enumerate() {
        for &(t, cumulative) in points {
            let key = t.round() as i64;
            let lower = below.insert(key, cumulative).unwrap_or(0.0);
            cells.push((t, row, (cumulative - lower).max(0.0)));
        }
    }
    Heatmap {
        rows: by_le.iter().map(|(_, le, _)| format!("≤ {le} s")).collect(),
        cells,
        x_step: 1.0,
    }
}

/// Slow lookups, one lost AAAA answer, and a flood, on a running tracer.
fn traffic(topo: &Topology) {
    let (server, client, receiver, third) =
        (&topo.pods[0], &topo.pods[1], &topo.pods[2], &topo.pods[3]);
    for _ in 0..6 {
        assert!(getent_ahosts(&client.netns, NAME).ok());
    }
    assert!(getent_ahosts(&client.netns, LOST_NAME).ok());
    // The receiver never answers; its FDB entry ages out after 1 s and the
    // bridge floods the stream to every other port.
    tracer_tests::set_fdb_ageing(topo, 100);
    let rx = Receiver::start(&receiver.netns, receiver.ip, 9100);
    let to = SocketAddrV4::new(receiver.ip, 9100);
    warm_up(&third.netns, &rx, to, 9100);
    for _ in 0..3 {
        tracer::lab::traffic::udp_stream(&third.netns, to, 500, Duration::from_secs(2));
        assert!(getent_ahosts(&client.netns, NAME).ok());
        assert!(getent_ahosts(&server.netns, NAME).ok());
    }
    rx.finish();
}

fn charts(
    dashboard: &Value,
    prometheus: &Prometheus,
    start: f64,
    end: f64,
    caption: &str,
) -> Vec<Chart> {
    let mut charts = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"]
            .as_str()
            .expect("title")
            .replace("$pod → $server", "all pods → all servers");
        let is_heatmap = panel["type"] == "heatmap";
        let mut lines = Vec::new();
        let mut map = Heatmap::default();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = fill_variables(target["expr"].as_str().expect("expr"));
            let series = range(prometheus, &expr, start, end);
            assert!(
                !series.is_empty(),
                "panel {title:?}: {expr} returned no series"
            );
            eprintln!("panel {title:?}: {} series from {expr}", series.len());
            if is_heatmap {
                map = heatmap(&series);
                continue;
            }
            let format = target["legendFormat"].as_str().unwrap_or_default();
            lines.extend(series.into_iter().map(|(labels, points)| Series {
                name: legend(format, &labels),
                points,
            }));
        }
        let unit = unit_words(
            panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or(""),
        );
        charts.push(Chart {
            title,
            x_label: "seconds into the run".into(),
            y_label: if is_heatmap {
                "latency bucket".into()
            } else {
                unit.into()
            },
            caption: caption.to_owned(),
            x_limit: None,
            body: if is_heatmap {
                Body::Heatmap(map)
            } else {
                Body::Lines(lines)
            },
        });
    }
    charts
}

/// Every `tracer_…` metric the alerting rules' expressions use has series in a real
/// scrape (a renamed metric would leave an alert that can never fire).
fn alert_metrics_exist(prometheus: &Prometheus) {
    let rules =
        std::fs::read_to_string(repo("deploy/prometheus/tracer-rules.yaml")).expect("rules");
    let exprs: String = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
        .collect();
    let mut names: Vec<&str> = exprs
        .match_indices("tracer_")
        .map(|(i, _)| {
            let rest = &exprs[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| n.ends_with("_total") || n.ends_with("_seconds"))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let name = name.replace("_seconds", "_seconds_count");
        let found = prometheus.query(&format!("count({{__name__=\"{name}\"}})"));
        assert!(
            !found.is_empty(),
            "the rules use {name}, which tracer does not export"
        );
    }
}

#[test_log::test]
fn every_dashboard_query_returns_series() {
    if !privileged("every_dashboard_query_returns_series")
        || !prometheus_installed("every_dashboard_query_returns_series")
    {
        return;
    }
    let began = Instant::now();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/tracer-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let records = [
        (
            NAME,
            "10.96.0.40".parse().unwrap(),
            "fd00::40".parse().unwrap(),
        ),
        (
            LOST_NAME,
            "10.96.0.41".parse().unwrap(),
            "fd00::41".parse().unwrap(),
        ),
    ];
    let topo = Topology::build(Datapath::Bridge, 4).expect("topology");
    let server = topo.pods[0].clone();
    let _dns = DnsServer::start_delayed(&server.netns, server.ip, &records, DELAY);
    let _drop = DropFirstAaaaAnswer::install(&server.netns, LOST_NAME);
    let resolvs: Vec<ResolvConf> = topo
        .pods
        .iter()
        .map(|p| {
            allow_aaaa_lookups(&p.netns);
            ResolvConf::write(&p.netns, server.ip, &["timeout:1", "attempts:2"])
        })
        .collect();

    let _names: Vec<KubePod> = [
        "kube-system/coredns-lab",
        "shop/web-1",
        "shop/sink-1",
        "shop/streamer-1",
    ]
    .iter()
    .zip(&topo.pods)
    .map(|(label, pod)| {
        let (namespace, name) = label.split_once('/').expect("namespace/name");
        KubePod::name(&pod.netns, namespace, name)
    })
    .collect();
    let (tracer_port, prometheus_port) = free_ports(&topo.node);
    let target = SocketAddr::from(([127, 0, 0, 1], tracer_port));
    let tracer = TracerRun::start(
        &topo.node,
        &[
            "--prometheus",
            &target.to_string(),
            "--dns-pair-window-ms",
            "15",
        ],
    );
    let prometheus = Prometheus::start(&topo.node, prometheus_port, target);
    prometheus.wait_for("up{job=\"tracer\"}", "first scrape", |v| v == 1.0);
    let start = unix_now();
    traffic(&topo);
    let settled = unix_now() + 2.0;
    prometheus.wait_for(
        "timestamp(tracer_up{job=\"tracer\"})",
        "a scrape after the traffic",
        |ts| ts > settled,
    );
    let end = unix_now();

    for (variable, label) in [
        ("instance", "instance"),
        ("server", "server"),
        ("pod", "pod"),
    ] {
        let values = prometheus.api(&format!("/api/v1/label/{label}/values"));
        assert!(
            values.as_array().is_some_and(|v| !v.is_empty()),
            "variable {variable}: no {label} values"
        );
    }
    alert_metrics_exist(&prometheus);
    let caption = format!(
        "lab node, bridge datapath, 4 pods: {DELAY:?} DNS answers, one AAAA answer dropped (resolver timeout:1), \
         a 500 pkt/s UDP stream to a silent pod with bridge ageing 1 s; {RATE_INTERVAL} rate window; {:.0} s",
        end - start
    );
    let charts = charts(&dashboard, &prometheus, start, end, &caption);
    let report = tracer.stop(Signal::SIGINT);
    drop(prometheus);
    drop(resolvs);
    assert!(
        report["flood"]["episodes"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "a flood"
    );

    let out = if std::env::var("TRACER_UPDATE_PICTURES").as_deref() == Ok("1") {
        repo("deploy/grafana/tracer-dashboard.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tracer-dashboard.png")
    };
    tracer::plot::draw(&out, &charts, 2, (760, 340)).expect("draw");
    let png = std::fs::read(&out).expect("png");
    assert_eq!(&png[1..4], b"PNG");
    eprintln!(
        "{} ({} bytes) in {:?}",
        out.display(),
        png.len(),
        began.elapsed()
    );
}
