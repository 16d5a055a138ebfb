//! `tracer watch --prometheus` end to end: the real tracer binary in a lab
//! node, real DNS traffic (dnsmasq in a server pod, glibc's `getent` in a
//! client pod), and a real Prometheus (Debian's) scraping tracer every
//! second. What Prometheus stored must equal tracer's final JSON report,
//! and no label value may carry the DNS name that was looked up.
//!
//! tracer runs with `--netns NODE`, so its metrics listener is on the node
//! namespace's loopback; Prometheus runs there too (`ip netns exec`), and
//! the test talks to both from a thread inside that namespace. Nothing
//! leaves the namespaces the test built.

use std::{net::SocketAddr, time::Duration};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    TracerRun,
    dns::{DnsServer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    privileged,
    prometheus::{Prometheus, free_ports, http_get, prometheus_installed, unix_now, urlencode},
};

/// The name looked up: it must never show up in a label value.
const NAME: &str = "payroll.prom.test";
const LOOKUPS: usize = 8;
/// Every answer leaves the server this late: all land above 10 ms.
const DELAY: Duration = Duration::from_millis(20);

fn row<'a>(rows: &'a Value, interface: &str) -> &'a Value {
    rows.as_array()
        .and_then(|rows| rows.iter().find(|r| r["interface"] == interface))
        .unwrap_or_else(|| panic!("no row for {interface}: {rows:#}"))
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test_log::test]
fn prometheus_scrapes_what_the_report_says() {
    if !privileged("prometheus_scrapes_what_the_report_says")
        || !prometheus_installed("prometheus_scrapes_what_the_report_says")
    {
        return;
    }
    let records = [(
        NAME,
        "10.96.0.30".parse().unwrap(),
        "fd00::30".parse().unwrap(),
    )];
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (server, client) = (topo.pods[0].clone(), topo.pods[1].clone());
    let dns = DnsServer::start_delayed(&server.netns, server.ip, &records, DELAY);
    let _resolv = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
    allow_aaaa_lookups(&client.netns);

    let (tracer_port, prometheus_port) = free_ports(&topo.node);
    let target = SocketAddr::from(([127, 0, 0, 1], tracer_port));
    // Every answer (≥ 20 ms) is slow at 5 ms: the name is then kept in
    // tracer's slowest-names list as well as in its events.
    let tracer = TracerRun::start(
        &topo.node,
        // Answers take 20 ms: a 15 ms pair window holds sendmmsg's two
        // packets even on a loaded machine, and nothing sequential fits.
        &[
            "--prometheus",
            &target.to_string(),
            "--dns-slow-ms",
            "5",
            "--dns-pair-window-ms",
            "15",
        ],
    );
    let prometheus = Prometheus::start(&topo.node, prometheus_port, target);
    prometheus.wait_for("up{job=\"tracer\"}", "first scrape", |v| v == 1.0);

    for _ in 0..LOOKUPS {
        let lookup = getent_ahosts(&client.netns, NAME);
        assert!(lookup.ok(), "{lookup:?}");
        assert_eq!(lookup.addrs.len(), 2, "A and AAAA: {lookup:?}");
    }
    // No traffic from here on. tracer publishes a snapshot every 0.2 s
    // (TracerRun's --interval): one published 0.5 s from now holds every
    // answer; wait until Prometheus stored a scrape started after that.
    let settled = unix_now() + 0.5;
    prometheus.wait_for(
        "timestamp(tracer_up{job=\"tracer\"})",
        "a scrape after the traffic",
        |ts| ts > settled,
    );

    let iface = client.host_if.as_str();
    let server_ip = server.ip.to_string();
    let on_client = |metric: &str, extra: &str| {
        prometheus.value(&format!(
            "{metric}{{job=\"tracer\",interface=\"{iface}\"{extra}}}"
        ))
    };
    let latency = format!(",server=\"{server_ip}\"");
    let scraped_queries = prometheus.value("tracer_dns_queries_total");
    let scraped_answers = prometheus.value("tracer_dns_answers_total");
    let scraped_noerror = prometheus.value("tracer_dns_answers_by_rcode_total{rcode=\"NOERROR\"}");
    let scraped_pairs = on_client("tracer_dns_parallel_pairs_total", "");
    let scraped_slow = on_client("tracer_dns_slow_answers_total", "");
    let scraped_unanswered = on_client("tracer_dns_unanswered_total", "");
    let scraped_count = on_client("tracer_dns_latency_seconds_count", &latency);
    let scraped_sum = on_client("tracer_dns_latency_seconds_sum", &latency);
    let bucket = |le: &str| {
        on_client(
            "tracer_dns_latency_seconds_bucket",
            &format!("{latency},le=\"{le}\""),
        )
    };
    let (le_10ms, le_50ms, le_inf) = (bucket("0.01"), bucket("0.05"), bucket("+Inf"));
    let scraped_packets = on_client("tracer_interface_packets_total", ",direction=\"ingress\"");
    // Every latency series has an interface label: the client's veth and
    // the server's, each with its 15 `le` buckets.
    let buckets = prometheus.query("tracer_dns_latency_seconds_bucket");
    assert!(!buckets.is_empty());
    let mut interfaces: Vec<&str> = buckets
        .iter()
        .map(|s| s["metric"]["interface"].as_str().expect("interface label"))
        .collect();
    interfaces.sort_unstable();
    interfaces.dedup();
    assert!(interfaces.contains(&iface), "{interfaces:?}");
    assert!(
        interfaces.contains(&server.host_if.as_str()),
        "{interfaces:?}"
    );
    assert_eq!(buckets.len(), 15 * interfaces.len(), "{buckets:#?}");
    // Prometheus parsed OpenMetrics: only that format carries the unit.
    let metadata = prometheus.api("/api/v1/metadata?metric=tracer_dns_latency_seconds");
    let metadata = &metadata["tracer_dns_latency_seconds"][0];
    assert_eq!(metadata["type"], "histogram", "{metadata}");
    assert_eq!(metadata["unit"], "seconds", "{metadata}");
    // One per symptom: DNS, conntrack, flooding, DNS servers, bridge setup.
    assert_eq!(prometheus.query("tracer_finding").len(), 5);
    assert_eq!(prometheus.value("tracer_up{job=\"tracer\"}"), 1.0);
    let losses = prometheus.query("tracer_lost_events_total");
    assert!(losses.len() >= 7, "{losses:#?}");

    // No label value of any stored series holds the name (nor a piece).
    let series = prometheus.api(&format!(
        "/api/v1/series?match[]={}",
        urlencode("{job=\"tracer\"}")
    ));
    let series = series.as_array().expect("series");
    assert!(series.len() > 50, "{} series", series.len());
    for s in series {
        for (label, value) in s.as_object().expect("labels") {
            let value = value.as_str().unwrap_or_default();
            for piece in [NAME, "payroll", "prom.test"] {
                assert!(
                    !value.contains(piece),
                    "label {label}={value:?} holds the DNS name: {s}"
                );
            }
        }
    }
    // The exposition itself, as Prometheus asks for it.
    let scrape = http_get(
        &topo.node,
        target,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(scrape.status, 200, "{}", scrape.head);
    assert!(
        scrape
            .head
            .contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{}",
        scrape.head
    );
    assert!(scrape.body.ends_with("# EOF\n"));
    assert!(!scrape.body.contains("payroll"), "{}", scrape.body);
    let plain = http_get(&topo.node, target, "/metrics", None);
    assert!(
        plain
            .head
            .contains("Content-Type: text/plain; version=0.0.4")
    );
    assert_eq!(http_get(&topo.node, target, "/", None).status, 404);

    let report = tracer.stop(Signal::SIGINT);
    drop(prometheus);
    drop(dns);

    // What Prometheus stored equals the final report: no traffic came after
    // the scrape.
    let counter = |name: &str| as_f64(&report["dns"]["counters"][name]);
    eprintln!(
        "scraped: {scraped_queries} queries, {scraped_answers} answers, {scraped_pairs} pairs, \
         {scraped_slow} slow, latency count {scraped_count} (≤10 ms {le_10ms}, ≤50 ms {le_50ms}), \
         sum {scraped_sum:.4} s, {scraped_packets} packets from the client pod"
    );
    assert_eq!(scraped_queries, counter("queries"));
    assert_eq!(scraped_answers, counter("answers"));
    assert!(scraped_queries >= (2 * LOOKUPS) as f64, "{scraped_queries}");
    assert_eq!(scraped_noerror, as_f64(&report["dns"]["rcodes"]["NOERROR"]));
    let tally = row(&report["dns"]["per_interface"], iface);
    assert_eq!(scraped_pairs, as_f64(&tally["parallel_pairs"]));
    assert_eq!(scraped_pairs, LOOKUPS as f64, "one A/AAAA pair per lookup");
    assert_eq!(scraped_slow, as_f64(&tally["slow_answers"]));
    assert_eq!(scraped_unanswered, as_f64(&tally["unanswered_sends"]));
    assert_eq!(scraped_unanswered, 0.0);
    let rows = report["dns"]["latency"].as_array().expect("latency");
    let latency_row = rows
        .iter()
        .find(|r| r["interface"] == iface && r["server"] == server_ip.as_str())
        .unwrap_or_else(|| panic!("no latency row: {rows:#?}"));
    let answers = as_f64(&latency_row["answers"]);
    assert_eq!(answers, (2 * LOOKUPS) as f64);
    assert_eq!(scraped_count, answers);
    assert_eq!(le_inf, answers, "+Inf bucket = count");
    assert_eq!(le_10ms, 0.0, "every answer took ≥ {DELAY:?}");
    // The ≤ 50 ms bucket holds the kernel buckets whose upper edge is ≤ 50 ms.
    let within_50ms: f64 = latency_row["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .filter(|b| b[1].as_u64().expect("high_ns") <= 50_000_000)
        .map(|b| as_f64(&b[2]))
        .sum();
    assert_eq!(le_50ms, within_50ms);
    // _sum from bucket midpoints is within the buckets' width (~3 %) of
    // count × mean; p50 stands in for the mean (constant delay).
    let p50 = as_f64(&latency_row["p50_ms"]) / 1000.0;
    assert!(
        (scraped_sum - answers * p50).abs() <= answers * p50 * 0.1,
        "sum {scraped_sum} vs {answers} × {p50}"
    );
    // Background packets (ARP, IGMP) may still pass after the scrape.
    let packets = report["interfaces"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == iface))
        .map(|r| as_f64(&r["ingress"]["packets"]))
        .unwrap_or_else(|| panic!("no interface row for {iface}: {report:#}"));
    assert!(
        scraped_packets > 0.0 && scraped_packets <= packets,
        "{scraped_packets} vs {packets}"
    );
    assert!(
        !report.to_string().contains(NAME),
        "no --dns-names: the JSON has no names either"
    );
}
