//! `tracer watch --prometheus ADDR`: the session's latest report as
//! Prometheus metrics on `GET /metrics`.
//!
//! The session publishes a fresh [`Report`] every interval; every scrape
//! encodes the newest one (prometheus-client's encoders, OpenMetrics when
//! the scraper asks for it — Prometheus does — else the classic text format
//! 0.0.4). Counters are the report's figures since the trace started, so
//! they only grow while tracer runs and restart from zero with it, which is
//! what `rate()` expects.
//!
//! Names follow node_exporter's style (`tracer_<area>_<what>_total`), and
//! per-pod series carry `interface` (the host-side interface) and, once the
//! report knows it, `pod` (see [`pod_of`]). Label values are interface
//! names, IP addresses and fixed words only: **never a DNS name** — names
//! can be sensitive (they stay out of JSON too unless `--dns-names`), and
//! they would make the series count unbounded.
//!
//! The HTTP side is deliberately tiny: one request per connection, `GET`
//! or `HEAD /metrics` (200), any other path 404, other methods 405, a
//! request that is not HTTP 400; the head is bounded in size and time,
//! connections are bounded in number, and nothing in it can panic.
//! At the connection cap a new connection evicts the oldest one rather than
//! being refused: slow or idle clients (slowloris) then cannot lock a
//! scraper out, since a real scraper sends its request at once and is done
//! in milliseconds (`tests/tests/metrics_server.rs`: 100 000 fuzzed
//! requests, 1 000 slowloris connections, scrapes answered meanwhile).
//! Why hand-written and not hyper/axum/tiny_http: README, "Design notes".

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{AbortHandle, JoinHandle},
};
use tracer_common::dns::DnsStat;

use crate::{dns::counts::NOT_FULLY_PARSED, report::Report};

/// What the session publishes: the newest report, `None` before the first.
pub type Snapshots = watch::Receiver<Option<Arc<Report>>>;

/// Content type of the OpenMetrics text format (what Prometheus asks for
/// first in its `Accept` header).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of `tracer_dns_latency_seconds` in nanoseconds (the
/// `le` labels 0.0005 … 10 s); `+Inf` comes on top.
pub const LATENCY_BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Parses `--prometheus`: `PORT` or `:PORT` listen on loopback only
/// (127.0.0.1); `IP:PORT` (`0.0.0.0:9464`, `[::]:9464`, `10.0.0.4:9464`)
/// where told; `localhost:PORT` is 127.0.0.1. Host names are refused: an
/// exporter binds to an address, not to what a resolver says today.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.strip_prefix(':').unwrap_or(text).parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(("localhost", port)) = text.rsplit_once(':')
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "{text:?} is not PORT, :PORT or IP:PORT (e.g. 9464 for 127.0.0.1:9464, 0.0.0.0:9464 for every address)"
    ))
}

// ---------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------

/// `tracer_dns_latency_seconds` of one (interface, server), folded from the
/// kernel's fine buckets onto [`LATENCY_BOUNDS_NS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Per bound (seconds; the last is `+Inf`), the answers that fall into
    /// it and no lower one — **not** cumulative: the encoder accumulates
    /// them into the `le` buckets (see [`Self::cumulative`]).
    pub buckets: Vec<(f64, u64)>,
    /// Approximate: each kernel bucket's count times its midpoint. The
    /// kernel keeps counts per bucket, not the latencies; its buckets are
    /// narrow (≤ 1/32 of their value), so the sum is within ~1.6 %.
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    /// Folds the report's kernel buckets (`[low_ns, high_ns, count]`, the
    /// range `[low, high)`). A kernel bucket counts into the first bound at
    /// or above its high edge: every latency in it is then truly `≤ le`, so
    /// a bucket straddling a bound is reported in the higher one (a
    /// histogram that never understates latency).
    pub fn from_kernel_buckets(kernel: &[[u64; 3]]) -> Self {
        let mut counts = [0u64; LATENCY_BOUNDS_NS.len() + 1];
        let mut sum_ns = 0.0;
        let mut count = 0u64;
        for &[low, high, n] in kernel {
            let index = LATENCY_BOUNDS_NS
                .iter()
                .position(|&bound| bound >= high)
                .unwrap_or(LATENCY_BOUNDS_NS.len());
            counts[index] = counts[index].saturating_add(n);
            count = count.saturating_add(n);
            sum_ns += (low as f64 + high as f64) / 2.0 * n as f64;
        }
        let buckets = LATENCY_BOUNDS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        Self {
            buckets,
            sum_seconds: sum_ns / 1e9,
            count,
        }
    }

    /// The `le` buckets as a scrape shows them: cumulative counts.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0u64;
        self.buckets
            .iter()
            .map(|&(le, n)| {
                total = total.saturating_add(n);
                (le, total)
            })
            .collect()
    }

    /// Adds another histogram over the same bounds.
    fn merge(&mut self, other: &Self) {
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
        } else {
            for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
                mine.1 = mine.1.saturating_add(theirs.1);
            }
        }
        self.sum_seconds += other.sum_seconds;
        self.count = self.count.saturating_add(other.count);
    }
}

// ---------------------------------------------------------------------------
// Report → metric families
// ---------------------------------------------------------------------------

/// A label set: fixed names, values from interface names, IPs and fixed
/// words (never DNS names).
type Labels = Vec<(&'static str, String)>;

/// A report and its interface rows by name, for the label sets.
struct View<'a> {
    report: &'a Report,
    rows: HashMap<&'a str, &'a crate::report::InterfaceReport>,
}

impl<'a> View<'a> {
    fn new(report: &'a Report) -> Self {
        let rows = report
            .interfaces
            .iter()
            .map(|row| (row.name.as_str(), row))
            .collect();
        Self { report, rows }
    }
}

impl std::ops::Deref for View<'_> {
    type Target = Report;
    fn deref(&self) -> &Report {
        self.report
    }
}

/// The `interface` label's value for every interface that vanished: their
/// series merge into one, so pods coming and going for weeks do not grow
/// the scrape (totals keep what they counted).
pub const VANISHED_LABEL: &str = "vanished";

/// `interface` (and `pod` when known) for a host interface; one label set
/// for all vanished ones ([`VANISHED_LABEL`]).
fn iface_labels(r: &View<'_>, interface: &str) -> Labels {
    let row = r.rows.get(interface);
    if row.is_some_and(|row| row.vanished) {
        return vec![("interface", VANISHED_LABEL.to_owned())];
    }
    // Interface and pod names come from the node's files and netlink:
    // escaped as everywhere else, so no control byte reaches a scraper's
    // terminal (`curl …/metrics`) either.
    let mut labels = vec![("interface", crate::escape::terminal(interface))];
    if let Some(pod) = row.and_then(|row| row.pod.as_deref()) {
        labels.push(("pod", crate::escape::terminal(pod)));
    }
    labels
}

/// A serde enum's snake_case name (the JSON report's spelling).
fn enum_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Samples of one family, merged by label set (an interface name that came
/// back after its pod was replaced must not give two equal series).
#[derive(Default)]
struct Samples<V>(BTreeMap<Labels, V>);

impl Samples<u64> {
    fn add(&mut self, labels: Labels, value: u64) {
        let slot = self.0.entry(labels).or_default();
        *slot = slot.saturating_add(value);
    }
}

impl<V> Samples<V> {
    fn one(value: V) -> Self {
        Self(BTreeMap::from([(Labels::new(), value)]))
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: &Samples<u64>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in &samples.0 {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: &Samples<i64>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in &samples.0 {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

/// One scrape's view of a snapshot.
#[derive(Debug)]
struct Snapshot(Option<Arc<Report>>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge(
            &mut encoder,
            "tracer_up",
            "1 while tracer traces and serves metrics.",
            &Samples::one(1),
        )?;
        match &self.0 {
            Some(report) => encode_report(report, &mut encoder),
            None => Ok(()),
        }
    }
}

fn encode_report(r: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    let r = &View::new(r);
    encode_dns(r, e)?;
    encode_dns_servers(r, e)?;
    encode_conntrack(r, e)?;
    encode_flood(r, e)?;
    encode_bridge_setup(r, e)?;
    encode_drops(r, e)?;
    encode_interfaces(r, e)?;
    encode_losses(r, e)?;
    encode_findings(r, e)
}

fn encode_dns(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let dns = &r.dns;
    let c = |stat: DnsStat| dns.counters[stat];
    encode_dns_latency(r, e)?;
    counter(
        e,
        "tracer_dns_queries",
        "DNS queries seen on the traced interfaces (first sends and re-sends; a query crossing two traced interfaces counts twice).",
        &Samples::one(c(DnsStat::Queries)),
    )?;
    counter(
        e,
        "tracer_dns_answers",
        "DNS answers seen on the traced interfaces.",
        &Samples::one(c(DnsStat::Answers)),
    )?;
    encode_dns_per_interface(r, e)?;
    encode_dns_exchanges(dns, e)?;
    encode_dns_outcomes(dns, e)
}

/// `tracer_dns_latency`: a histogram per (interface, server, side).
fn encode_dns_latency(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let dns = &r.dns;
    let mut latency: BTreeMap<Labels, LatencyHistogram> = BTreeMap::new();
    for row in &dns.latency {
        let mut labels = iface_labels(r, &row.interface);
        labels.push(("server", row.server.to_string()));
        labels.push(("side", row.side.name().to_owned()));
        latency
            .entry(labels)
            .or_default()
            .merge(&LatencyHistogram::from_kernel_buckets(&row.buckets));
    }
    let mut metric = e.encode_descriptor(
        "tracer_dns_latency",
        "DNS answer latency per host interface and server, from query to answer as seen on the interface; \
         side client where the client waits, side server at the DNS server's own port. \
         Bucketed in the kernel at ~3 % resolution; a kernel bucket counts into the first bound at or above its upper edge. \
         _sum is approximate (kernel bucket midpoints).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, hist) in &latency {
        metric
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(hist.sum_seconds, hist.count, &hist.buckets, None)?;
    }
    Ok(())
}

/// The DNS tallies per host interface.
fn encode_dns_per_interface(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let dns = &r.dns;
    let per_iface = |value: fn(&crate::dns::collector::InterfaceDns) -> u64| {
        let mut samples = Samples::default();
        for i in &dns.per_interface {
            samples.add(iface_labels(r, &i.interface), value(i));
        }
        samples
    };
    counter(
        e,
        "tracer_dns_unanswered",
        "DNS sends whose answer never came (each re-send after a timeout, and the last send of a query never answered), per host interface.",
        &per_iface(|i| i.unanswered_sends),
    )?;
    counter(
        e,
        "tracer_dns_resent",
        "DNS queries re-sent by the client (same socket and id) while unanswered, per host interface.",
        &per_iface(|i| i.resent),
    )?;
    counter(
        e,
        "tracer_dns_parallel_pairs",
        "Parallel query pairs (glibc's A + AAAA over one socket), per host interface.",
        &per_iface(|i| i.parallel_pairs),
    )?;
    counter(
        e,
        "tracer_dns_slow_answers",
        "DNS answers slower than --dns-slow-ms, per host interface.",
        &per_iface(|i| i.slow_answers),
    )
}

/// Answers by rcode; port-53 packets not fully parsed, by outcome.
fn encode_dns_outcomes(
    dns: &crate::dns::collector::DnsReport,
    e: &mut DescriptorEncoder,
) -> fmt::Result {
    let c = |stat: DnsStat| dns.counters[stat];
    let mut rcodes = Samples::default();
    for (rcode, n) in &dns.rcodes {
        rcodes.add(vec![("rcode", rcode.clone())], *n);
    }
    counter(
        e,
        "tracer_dns_answers_by_rcode",
        "DNS answers by response code (NOERROR, NXDOMAIN, SERVFAIL, …).",
        &rcodes,
    )?;
    let mut malformed = Samples::default();
    for stat in NOT_FULLY_PARSED {
        malformed.add(vec![("outcome", stat.name().to_owned())], c(stat));
    }
    counter(
        e,
        "tracer_dns_malformed",
        "Port-53 packets the probe could not fully parse, by outcome (zeros included).",
        &malformed,
    )
}

/// The `tracer_dns_exchange_*` counters: each exchange once, labelled with
/// the side it was observed on.
fn encode_dns_exchanges(
    dns: &crate::dns::collector::DnsReport,
    e: &mut DescriptorEncoder,
) -> fmt::Result {
    let x = &dns.exchanges;
    let at = || vec![("observed_at", x.observed_at.name().to_owned())];
    let one = |n: u64| {
        let mut samples = Samples::default();
        samples.add(at(), n);
        samples
    };
    counter(
        e,
        "tracer_dns_exchanges_answered",
        "DNS exchanges answered, each counted once on the clients' side (observed_at server when no client is traced).",
        &one(x.answers),
    )?;
    counter(
        e,
        "tracer_dns_exchange_retries",
        "DNS queries re-sent by their client (same socket and id), each counted once.",
        &one(x.tally.retries),
    )?;
    counter(
        e,
        "tracer_dns_exchange_parallel_pairs",
        "A + AAAA queries for one name from one socket within the pair window, each pair counted once.",
        &one(x.tally.parallel_pairs),
    )?;
    counter(
        e,
        "tracer_dns_exchange_slow_answers",
        "DNS answers slower than --dns-slow-ms, each counted once.",
        &one(x.tally.slow_answers),
    )?;
    let mut lost = Samples::default();
    for location in crate::dns::exchanges::LossLocation::ALL {
        let mut labels = at();
        labels.push(("lost_at", location.name().to_owned()));
        lost.add(labels, x.lost_at.get(&location).copied().unwrap_or(0));
    }
    counter(
        e,
        "tracer_dns_exchange_unanswered_sends",
        "DNS sends that got no answer, each counted once, by where they were lost \
         (before_server_port, in_server, after_server_port, unknown).",
        &lost,
    )
}

/// Per pod and DNS server: sends, answers, and whether the pod is flagged.
fn encode_dns_servers(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let mut sends = Samples::default();
    let mut answered = Samples::default();
    let mut flagged = Samples::default();
    for p in &r.dns_servers.pods {
        for s in &p.servers {
            let mut labels = iface_labels(r, &p.interface);
            labels.push(("server", s.server.to_string()));
            labels.push(("class", s.class.name().to_owned()));
            sends.add(labels.clone(), s.sends);
            answered.add(labels, s.answered);
        }
        let mut labels = iface_labels(r, &p.interface);
        for (flag, on) in [("stale", p.stale), ("first_only", p.first_only)] {
            labels.push(("flag", flag.to_owned()));
            flagged.0.insert(labels.clone(), i64::from(on));
            labels.pop();
        }
    }
    counter(
        e,
        "tracer_dns_server_sends",
        "DNS query packets a pod sent to a server; class: cluster_dns, node_list or not_in_node_list (the node's current resolv.conf and systemd-resolved list).",
        &sends,
    )?;
    counter(
        e,
        "tracer_dns_server_answered",
        "DNS exchanges a server answered for a pod (see tracer_dns_server_sends_total).",
        &answered,
    )?;
    gauge(
        e,
        "tracer_dns_server_list_flag",
        "1 when a pod queries or lists a DNS server outside the node's list (flag=stale), or lists only the first of the node's servers (flag=first_only).",
        &flagged,
    )
}

fn encode_conntrack(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let ct = &r.conntrack;
    // The kernel's own counters, for the traced namespace; absent (no
    // series rather than a false zero) when they could not be read.
    let mut insert_drops = Samples::default();
    if let Some(k) = ct.kernel {
        insert_drops.add(Labels::new(), k.insert_failed);
    }
    counter(
        e,
        "tracer_conntrack_insert_drops",
        "Packets dropped because their conntrack entry could not be inserted (kernel insert_failed, traced namespace).",
        &insert_drops,
    )?;
    let resolved = ct
        .kernel
        .and_then(|k| k.clash_resolved)
        .or_else(|| ct.tracer.get("clashes_resolved").copied());
    let mut clashes = Samples::default();
    if let Some(n) = resolved {
        clashes.add(Labels::new(), n);
    }
    counter(
        e,
        "tracer_conntrack_clashes_resolved",
        "conntrack insertion clashes the kernel resolved without a drop (kernel clashres; the probes' count on kernels without it).",
        &clashes,
    )?;
    let mut clients = Samples::default();
    for c in &ct.clients {
        let mut labels = vec![("client", c.client.to_string()), ("dns", c.dns.to_string())];
        if let Some(pod) = &c.pod {
            labels.push(("pod", crate::escape::terminal(pod)));
        }
        clients.add(labels, c.insert_drops.saturating_add(c.unconfirmed_drops));
    }
    counter(
        e,
        "tracer_conntrack_drops_attributed",
        "conntrack insert and unconfirmed drops the probes attributed to a client address (dns=true: a port-53 flow).",
        &clients,
    )
}

fn encode_flood(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let flood = &r.flood;
    let mut victims = Samples::default();
    for p in &flood.victims {
        victims.add(iface_labels(r, &p.interface), p.victim_packets);
    }
    counter(
        e,
        "tracer_bridge_flood_packets",
        "Unknown-unicast frames the bridge flooded to a port whose pod was not the destination (victim copies), per port.",
        &victims,
    )?;
    counter(
        e,
        "tracer_bridge_flood_episodes",
        "Unknown-unicast flood episodes (a flow flooded over consecutive intervals).",
        &Samples::one(flood.episodes.len() as u64),
    )?;
    counter(
        e,
        "tracer_neighbour_failures",
        "Neighbour (ARP/ND) resolutions that failed.",
        &Samples::one(flood.neighbour_failures.iter().map(|n| n.count).sum()),
    )
}

fn encode_bridge_setup(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let b = &r.bridge_setup;
    counter(
        e,
        "tracer_bridge_setup_windows",
        "Times the node's uplink address or IPv4 default route went missing (a just-in-time bridge setup moving them to a bridge).",
        &Samples::one(b.windows.len() as u64),
    )?;
    let mut queries = Samples::default();
    for (outcome, n) in [("lost", b.queries_lost), ("delayed", b.queries_delayed)] {
        queries.add(vec![("outcome", outcome.to_owned())], n);
    }
    counter(
        e,
        "tracer_bridge_setup_dns_queries",
        "DNS queries first sent in such a window (or just before it) that were never answered (lost) or answered only after a re-send (delayed).",
        &queries,
    )
}

fn encode_drops(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    // No series at all on kernels without drop reasons (not a false zero).
    let mut drops = Samples::default();
    for row in &r.drops.rows {
        let mut labels = vec![
            ("reason", crate::escape::terminal(&row.reason)),
            ("side", row.side.to_owned()),
            ("protocol", row.protocol.to_owned()),
            ("dns", row.dns.to_string()),
        ];
        if let Some(interface) = &row.interface {
            labels.push(("interface", crate::escape::terminal(interface)));
        }
        if let Some(pod) = &row.pod {
            labels.push(("pod", crate::escape::terminal(pod)));
        }
        drops.add(labels, row.count);
    }
    counter(
        e,
        "tracer_drops",
        "Packets of the node's pods (and DNS packets in the node's namespace) the kernel dropped, by its drop reason (kfree_skb, v5.17+); side=pod: in the pod's namespace, node: in the node's.",
        &drops,
    )
}

fn encode_interfaces(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let mut packets = Samples::default();
    let mut bytes = Samples::default();
    for row in &r.interfaces {
        for (direction, counts) in [("ingress", row.ingress), ("egress", row.egress)] {
            let mut labels = iface_labels(r, &row.name);
            labels.push(("direction", direction.to_owned()));
            packets.add(labels.clone(), counts.packets);
            bytes.add(labels, counts.bytes);
        }
    }
    counter(
        e,
        "tracer_interface_packets",
        "Packets through a traced interface at TC; on a host-side pod veth, ingress is what the pod sent, egress what was delivered to it.",
        &packets,
    )?;
    counter(
        e,
        "tracer_interface_bytes",
        "Bytes through a traced interface at TC (see tracer_interface_packets_total).",
        &bytes,
    )
}

fn encode_losses(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let mut losses = Samples::default();
    for l in &r.losses {
        losses.add(vec![("reason", l.reason.to_owned())], l.count);
    }
    // Losses counted outside the probes' LOSSES map.
    for (reason, count) in [
        ("conntrack_ring_full", r.conntrack.ring_full),
        ("conntrack_read_failed", r.conntrack.read_failed),
        ("conntrack_undecodable", r.conntrack.undecodable),
        ("dns_undecodable", r.dns.undecodable_events),
        ("flood_cause_events_dropped", r.flood.cause_events_dropped),
    ] {
        losses.add(vec![("reason", reason.to_owned())], count);
    }
    counter(
        e,
        "tracer_lost_events",
        "Information the probes or tracer lost, by reason (every reason, zeros included).",
        &losses,
    )
}

fn encode_findings(r: &View<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
    let mut findings = Samples::default();
    for f in &r.findings {
        findings.0.insert(
            vec![
                ("symptom", enum_name(f.symptom)),
                ("severity", enum_name(f.severity)),
                (
                    "transparent_mode_resolves",
                    enum_name(f.transparent_mode_resolves),
                ),
            ],
            i64::from(f.detected),
        );
    }
    gauge(
        e,
        "tracer_finding",
        "1 when the symptom is detected, else 0; labels give its severity and whether Azure CNI transparent mode would resolve it.",
        &findings,
    )
}

/// Scrape format, from the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// OpenMetrics when the scraper accepts it (Prometheus does, first),
    /// else the classic text format every scraper reads.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Self::OpenMetrics
            }
            _ => Self::Text,
        }
    }

    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// Encodes a snapshot (`None`: before the first, only `tracer_up`).
pub fn render(report: Option<Arc<Report>>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(report)));
    let mut out = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
    };
    if let Err(err) = encoded {
        // Writing into a String only fails if an encoder refuses a value.
        tracing::warn!("encoding metrics: {err}");
    }
    out
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Bound on a request's head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// A client must send its request head within this (Prometheus sends it
/// in one segment right after connecting).
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// …and take the response within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most (each costs a task, ~3 KiB and a
/// file descriptor): a 1 000-connection slowloris fits without evicting
/// anyone, and every slow client is dropped after [`READ_TIMEOUT`] anyway.
pub const MAX_CONNECTIONS: usize = 1024;

/// The connection cap for this process: [`MAX_CONNECTIONS`], or a quarter
/// of the open-file limit if that is lower (the rest is for tracer's maps,
/// programs, links and netlink sockets).
pub fn connection_cap() -> usize {
    let soft = open_files_limit().0;
    MAX_CONNECTIONS
        .min(usize::try_from(soft / 4).unwrap_or(usize::MAX))
        .max(1)
}

/// (soft, hard) `RLIMIT_NOFILE`.
fn open_files_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own; no other effect.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } == 0;
    if ok {
        (lim.rlim_cur, lim.rlim_max)
    } else {
        (1024, 1024)
    }
}

/// Raises the soft open-file limit to the hard one, as Go's runtime does
/// for every program since 1.19: the soft 1 024 is a relic of select(2),
/// which tracer does not use. Returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let (soft, hard) = open_files_limit();
    if soft >= hard {
        return soft;
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up
    // to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } == 0 {
        hard
    } else {
        soft
    }
}

/// The running metrics server; dropping it stops accepting connections.
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (the real port when 0 was asked for).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (an error here is the caller's: a port in use must fail
/// the command before tracing starts) and serves `snapshots` from a task.
/// Must be called inside a tokio runtime.
pub async fn serve(addr: SocketAddr, snapshots: Snapshots) -> anyhow::Result<MetricsServer> {
    let listener = listen(addr).with_context(|| format!("--prometheus: listening on {addr}"))?;
    let local_addr = listener.local_addr().unwrap_or(addr);
    tracing::info!("Prometheus metrics on http://{local_addr}/metrics");
    let task = tokio::spawn(accept_loop(listener, snapshots));
    Ok(MetricsServer { local_addr, task })
}

/// The connections being served, oldest first (ids only grow), and whether
/// each has sent its whole request head yet.
type Live = Arc<std::sync::Mutex<BTreeMap<u64, (AbortHandle, Arc<AtomicBool>)>>>;

/// Removes its connection from [`Live`] when the task ends or is aborted.
struct Registered {
    live: Live,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Connections the kernel queues for `accept` (capped by
/// `net.core.somaxconn`, 4096 since Linux 5.4). tokio's `bind` asks for
/// 1 024: a burst of reconnecting slow clients overflowed that, and a
/// scrape whose SYN was dropped waited for its 1 s retransmission.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's bind do: a restarted tracer can take its port
    // while the last run's connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(listener: TcpListener, snapshots: Snapshots) {
    let cap = connection_cap();
    let live: Live = Arc::default();
    for id in 0_u64.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::debug!("metrics: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let snapshots = snapshots.clone();
        let registered = Registered {
            live: Arc::clone(&live),
            id,
        };
        // Spawned and registered under the lock, so the task's own removal
        // (which takes the lock) always comes after its insertion.
        let head_read = Arc::new(AtomicBool::new(false));
        let evicted = {
            let mut map = live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let evicted = (map.len() >= cap).then(|| evict(&mut map)).flatten();
            let done = Arc::clone(&head_read);
            let task = tokio::spawn(async move {
                let _registered = registered;
                handle(stream, &snapshots, &done).await;
            });
            map.insert(id, (task.abort_handle(), head_read));
            evicted
        };
        // Outside the lock: aborting drops that task's future, whose guard
        // takes the lock.
        if let Some(oldest) = evicted {
            oldest.abort();
        }
    }
}

/// Takes out the connection to close for a new one: the oldest still
/// sending its request head (a slow client), else the oldest of all.
fn evict(map: &mut BTreeMap<u64, (AbortHandle, Arc<AtomicBool>)>) -> Option<AbortHandle> {
    let id = map
        .iter()
        .find(|(_, (_, head_read))| !head_read.load(Ordering::Relaxed))
        .or_else(|| map.iter().next())
        .map(|(id, _)| *id)?;
    map.remove(&id).map(|(handle, _)| handle)
}

async fn handle(mut stream: TcpStream, snapshots: &Snapshots, head_read: &AtomicBool) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        // Silent, slow or broken client: just close.
        Ok(Err(_)) | Err(_) => return,
    };
    head_read.store(true, Ordering::Relaxed);
    let response = match head {
        Head::Complete(head) => {
            let report = snapshots.borrow().clone();
            respond(&head, report)
        }
        Head::TooLarge => plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Head::Incomplete(partial) if partial.is_empty() => return,
        Head::Incomplete(_) => plain(400, "Bad Request", "incomplete request\n"),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

enum Head {
    Complete(Vec<u8>),
    /// The peer closed before the blank line.
    Incomplete(Vec<u8>),
    TooLarge,
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Incomplete(head));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

/// Where the head ends (after its blank line: CRLF CRLF, or bare LF LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole response to one request head.
pub fn respond(head: &[u8], report: Option<Arc<Report>>) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(head) else {
        return plain(400, "Bad Request", "request head is not UTF-8\n");
    };
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return plain(400, "Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return plain(400, "Bad Request", "malformed request line\n");
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, value)| value.trim());
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let head_only = match *method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = plain(405, "Method Not Allowed", "only GET and HEAD\n");
            // Insert `Allow` after the status line.
            let at = response
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(0, |i| i + 2);
            response.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            return response;
        }
    };
    if path != "/metrics" {
        return plain(404, "Not Found", "metrics are at /metrics\n");
    }
    let format = Format::from_accept(accept);
    let body = render(report, format);
    let mut response = header(200, "OK", format.content_type(), body.len());
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

fn header(status: u16, reason: &str, content_type: &str, length: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    let mut response = header(status, reason, "text/plain; charset=utf-8", body.len());
    response.extend_from_slice(body.as_bytes());
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tracer_common::dns::{HIST_BUCKETS, bucket_bounds_ns, latency_bucket};

    use super::*;
    use crate::{
        conntrack::{ClientTally, ConntrackReport},
        dns::{
            collector::{
                DnsEventRecord, DnsReport, InterfaceDns, LatencyReport, SlowNameReport,
                TimeoutModes, UnansweredQuery, UnansweredReport,
            },
            counts::DnsCounts,
            exchanges::{DnsExchanges, LossLocation, SideTally},
            question::Question,
            role::Side,
        },
        flood::collector::{FloodReport, PortReport},
        report::{Counts, InterfaceReport, LossReport},
        verdict::{self, NodeDatapath},
    };

    /// A DNS name that must never appear in a label.
    const SECRET: &str = "payroll.internal.example";

    /// Kernel buckets as the report has them, from latencies in ns.
    fn kernel_buckets(latencies_ns: &[u64]) -> Vec<[u64; 3]> {
        let mut counts = vec![0u64; HIST_BUCKETS];
        for &ns in latencies_ns {
            counts[latency_bucket(ns) as usize] += 1;
        }
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| {
                let (lo, hi) = bucket_bounds_ns(i as u32);
                [lo, hi, n]
            })
            .collect()
    }

    fn cumulative_at(h: &LatencyHistogram, le: f64) -> u64 {
        h.cumulative()
            .iter()
            .find(|(bound, _)| *bound == le)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no bound {le}"))
    }

    #[test]
    fn kernel_buckets_fold_into_le_buckets() {
        // 0.2 ms ×3, 3 ms ×2, 50 ms ×4 (its kernel bucket straddles 0.05 s),
        // 7 s ×1, 100 s ×1.
        let mut latencies = vec![200_000; 3];
        latencies.extend([3_000_000; 2]);
        latencies.extend([50_000_000; 4]);
        latencies.extend([7_000_000_000, 100_000_000_000]);
        let h = LatencyHistogram::from_kernel_buckets(&kernel_buckets(&latencies));
        assert_eq!(h.count, 11);
        assert_eq!(h.buckets.len(), LATENCY_BOUNDS_NS.len() + 1);
        assert_eq!(cumulative_at(&h, 0.0005), 3);
        assert_eq!(cumulative_at(&h, 0.0025), 3);
        assert_eq!(cumulative_at(&h, 0.005), 5);
        assert_eq!(
            cumulative_at(&h, 0.05),
            5,
            "[49.9, 50.3) ms is not all ≤ 50 ms: it goes to 0.1"
        );
        assert_eq!(cumulative_at(&h, 0.1), 9);
        assert_eq!(cumulative_at(&h, 5.0), 9);
        assert_eq!(cumulative_at(&h, 10.0), 10);
        assert_eq!(cumulative_at(&h, f64::INFINITY), 11, "+Inf = count");
        // Cumulative counts never go down.
        let c = h.cumulative();
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0));
        // _sum from midpoints: within 2 % of the true sum (the 100 s answer
        // sits in the kernel's last, saturated bucket: leave it out).
        let h = LatencyHistogram::from_kernel_buckets(&kernel_buckets(&latencies[..10]));
        let truth: f64 = latencies[..10].iter().map(|&ns| ns as f64 / 1e9).sum();
        assert!(
            (h.sum_seconds - truth).abs() / truth < 0.02,
            "sum {} vs {truth}",
            h.sum_seconds
        );
    }

    #[test]
    fn a_bucket_ending_exactly_on_a_bound_stays_in_it() {
        let h = LatencyHistogram::from_kernel_buckets(&[[900_000, 1_000_000, 2]]);
        assert_eq!(cumulative_at(&h, 0.0005), 0);
        assert_eq!(cumulative_at(&h, 0.001), 2);
        assert!((h.sum_seconds - 2.0 * 0.00095).abs() < 1e-12);
        let empty = LatencyHistogram::from_kernel_buckets(&[]);
        assert_eq!(empty.count, 0);
        assert!(empty.cumulative().iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn listen_addresses_default_to_loopback() {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(parse_listen_addr(":9464"), Ok(loopback(9464)));
        assert_eq!(parse_listen_addr("9464"), Ok(loopback(9464)));
        assert_eq!(parse_listen_addr("localhost:9464"), Ok(loopback(9464)));
        assert_eq!(
            parse_listen_addr("0.0.0.0:9464"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 9464)))
        );
        assert_eq!(
            parse_listen_addr("[::1]:9464").map(|a| a.ip().is_loopback()),
            Ok(true)
        );
        for bad in [
            "",
            "0.0.0.0",
            "example.com:9464",
            ":99999",
            "9464:",
            "[::1]",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn question() -> Question {
        Question {
            name: SECRET.to_owned(),
            qtype: "AAAA".to_owned(),
        }
    }

    /// A report with the secret name everywhere the report keeps names.
    fn report() -> Report {
        let query = UnansweredQuery {
            ifindex: 7,
            query_dir: 0,
            client: "10.240.1.2:40000".parse().unwrap(),
            server: "10.240.1.1:53".parse().unwrap(),
            transport: "udp",
            id: 9,
            question: question(),
            sends: 2,
        };
        let dns = DnsReport {
            servers: Vec::new(),
            exchanges: DnsExchanges {
                observed_at: Side::Client,
                answers: 8,
                tally: SideTally {
                    retries: 1,
                    lost_sends: 2,
                    parallel_pairs: 4,
                    ..SideTally::default()
                },
                lost_at: BTreeMap::from([(LossLocation::InServer, 2)]),
                client_latency: None,
                server_latency: None,
            },
            losses_unlocated: 0,
            pending_evicted: 0,
            counters: DnsCounts::from_fn(|stat| match stat {
                DnsStat::Queries => 10,
                DnsStat::Answers => 8,
                DnsStat::Slow => 1,
                DnsStat::Malformed => 2,
                _ => 0,
            }),
            rcodes: BTreeMap::from([("NOERROR".to_owned(), 7), ("NXDOMAIN".to_owned(), 1)]),
            latency: vec![LatencyReport::from_buckets(
                "azv1".into(),
                "10.240.1.1".parse().unwrap(),
                &{
                    let mut b = vec![0u64; HIST_BUCKETS];
                    b[latency_bucket(3_000_000) as usize] = 8;
                    b
                },
            )],
            per_interface: vec![InterfaceDns {
                interface: "azv1".into(),
                slow_answers: 1,
                resent: 1,
                resent_after_answer: 0,
                parallel_pairs: 4,
                unanswered_sends: 2,
                abandoned: 1,
                retry_modes: TimeoutModes::default(),
                late_answer_modes: TimeoutModes::default(),
            }],
            top_slow_names: vec![SlowNameReport {
                name: SECRET.into(),
                qtype: "A".into(),
                count: 1,
                max_ms: 120.0,
            }],
            slow_names_not_tracked: 0,
            unanswered_not_listed: 0,
            unanswered: vec![UnansweredReport {
                interface: "azv1".into(),
                side: Side::Client,
                query: query.clone(),
                drop: None,
            }],
            events: vec![DnsEventRecord {
                interface: Some("azv1".into()),
                side: Some(Side::Client),
                ifindex: 7,
                query_dir: 0,
                kind: vec!["slow"],
                client: query.client,
                server: query.server,
                transport: "udp",
                id: 9,
                question: question(),
                elapsed_ms: 120.0,
                sends: 1,
                rcode: Some("NOERROR".into()),
                pair_id: None,
            }],
            events_total: 1,
            undecodable_events: 0,
        };
        let conntrack = ConntrackReport {
            mode: "fexit",
            hooks: Vec::new(),
            tracer: BTreeMap::from([("clashes_resolved", 3)]),
            kernel: None,
            clients: vec![ClientTally {
                client: "10.240.1.2".parse().unwrap(),
                pod: None,
                dns: true,
                insert_drops: 2,
                clashes_resolved: 3,
                unconfirmed_drops: 1,
            }],
            events: Vec::new(),
            events_not_listed: BTreeMap::new(),
            events_in_other_namespaces: 0,
            ring_full: 0,
            read_failed: 0,
            kretprobe_entry_missed: 0,
            undecodable: 0,
        };
        let flood = FloodReport {
            hooks: Vec::new(),
            bridge_floods: Vec::new(),
            episodes: Vec::new(),
            episodes_not_listed: 0,
            victims: vec![PortReport {
                interface: "azv2".into(),
                victim_packets: 40,
                victim_bytes: 4000,
                broadcast_packets: 0,
                multicast_packets: 0,
            }],
            neighbour_failures: Vec::new(),
            fdb_deletes: 0,
            fdb_learns: 0,
            neighbour_updates: 0,
            cause_events_dropped: 0,
            fdb_entries_at_start: 0,
        };
        let interfaces = ["azv1", "azv2"]
            .iter()
            .zip(7..)
            .map(|(name, ifindex)| InterfaceReport {
                name: (*name).to_owned(),
                ifindex,
                kind: crate::interfaces::Kind::Veth,
                master: Some("azure0".into()),
                ingress: Counts {
                    packets: 11,
                    bytes: 1100,
                },
                egress: Counts {
                    packets: 12,
                    bytes: 1200,
                },
                vanished: false,
                pod: None,
                pod_ips: Vec::new(),
            })
            .collect();
        let mut report = Report {
            schema_version: crate::report::SCHEMA_VERSION,
            tracer_version: "test",
            kernel: "6.18.0".into(),
            netns: None,
            tc_attach: crate::attach::TcAttachMode::Tcx,
            tc_stale_filters: Default::default(),
            datapath: NodeDatapath::Bridge,
            bridges: Vec::new(),
            duration_seconds: 3.0,
            findings: Vec::new(),
            interfaces,
            dns,
            dns_servers: crate::dns::server_list::DnsServersReport {
                node_servers: vec!["10.1.0.2".parse().unwrap()],
                pods: vec![crate::dns::server_list::PodServers {
                    pod: "azv1".into(),
                    interface: "azv1".into(),
                    ifindex: 1,
                    config_source: None,
                    configured: vec!["10.1.0.9".parse().unwrap()],
                    servers: vec![crate::dns::server_list::PodServer {
                        server: "10.1.0.9".parse().unwrap(),
                        class: crate::dns::server_list::ServerClass::NotInNodeList,
                        configured: true,
                        sends: 6,
                        answered: 0,
                        unanswered_sends: 6,
                    }],
                    stale: true,
                    first_only: false,
                }],
                ..Default::default()
            },
            conntrack,
            flood,
            bridge_setup: crate::bridge_setup::BridgeSetupReport::default(),
            drops: crate::drops::DropsReport {
                available: true,
                total: 5,
                dns: 5,
                by_reason: BTreeMap::from([("SOCKET_RCVBUFF".to_owned(), 5)]),
                rows: vec![crate::drops::DropRow {
                    reason: "SOCKET_RCVBUFF".into(),
                    count: 5,
                    side: "pod",
                    interface: Some("azv1".into()),
                    pod: None,
                    ifindex: 2,
                    netns: 4_026_532_000,
                    protocol: "udp",
                    dns: true,
                    dns_packet: Some("query"),
                }],
                ..crate::drops::DropsReport::default()
            },
            kernel_offsets_missing: Vec::new(),
            losses: tracer_common::loss::Loss::ALL
                .iter()
                .map(|l| LossReport {
                    reason: l.name(),
                    count: 0,
                })
                .collect(),
        };
        report.findings = verdict::assess(&report.verdict_inputs(100.0));
        report
    }

    /// Every label value of every sample line of an exposition.
    fn label_values(text: &str) -> Vec<String> {
        let mut values = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(open) = line.find('{') else { continue };
            let Some(close) = line.rfind('}') else {
                continue;
            };
            let mut rest = &line[open + 1..close];
            while let Some(start) = rest.find("=\"") {
                let after = &rest[start + 2..];
                let mut end = 0;
                let bytes = after.as_bytes();
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                values.push(after[..end.min(after.len())].to_owned());
                rest = after.get(end + 1..).unwrap_or_default();
            }
        }
        values
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn no_dns_name_in_any_label_or_anywhere() {
        let report = Arc::new(report());
        assert!(
            serde_json::to_string(&*report).unwrap().contains(SECRET),
            "the test report carries the name"
        );
        for format in [Format::OpenMetrics, Format::Text] {
            let text = render(Some(Arc::clone(&report)), format);
            let values = label_values(&text);
            assert!(values.len() > 20, "{values:?}");
            for value in &values {
                for part in [SECRET, "payroll", "internal.example"] {
                    assert!(!value.contains(part), "label value {value:?} in:\n{text}");
                }
            }
            assert!(!text.contains("payroll"), "{text}");
        }
    }

    #[test]
    fn the_table_shows_drops_and_why_they_may_be_missing() {
        let mut r = report();
        let table = r.to_table();
        assert!(
            table.contains("drops (kernel reasons): 5 (5 DNS): SOCKET_RCVBUFF=5"),
            "{table}"
        );
        assert!(
            table.lines().any(|l| l.starts_with("SOCKET_RCVBUFF")
                && l.contains("azv1")
                && l.ends_with(" 5")),
            "{table}"
        );
        r.drops = crate::drops::DropsReport {
            unavailable: Some("drop reasons arrived in v5.17".into()),
            ..crate::drops::DropsReport::default()
        };
        let table = r.to_table();
        assert!(
            table.contains("drop reasons: not available (drop reasons arrived in v5.17)"),
            "{table}"
        );
        // No series rather than false zeros.
        let text = render(Some(Arc::new(r)), Format::OpenMetrics);
        assert!(!text.contains("tracer_drops_total"), "{text}");
    }

    #[test]
    fn openmetrics_exposition_has_every_family() {
        let text = render(Some(Arc::new(report())), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (series, value) in [
            ("tracer_up", 1.0),
            ("tracer_dns_queries_total", 10.0),
            (
                "tracer_dns_exchanges_answered_total{observed_at=\"client\"}",
                8.0,
            ),
            (
                "tracer_dns_exchange_unanswered_sends_total{observed_at=\"client\",lost_at=\"in_server\"}",
                2.0,
            ),
            (
                "tracer_dns_exchange_unanswered_sends_total{observed_at=\"client\",lost_at=\"before_server_port\"}",
                0.0,
            ),
            ("tracer_dns_answers_total", 8.0),
            ("tracer_dns_unanswered_total{interface=\"azv1\"}", 2.0),
            ("tracer_dns_resent_total{interface=\"azv1\"}", 1.0),
            ("tracer_dns_parallel_pairs_total{interface=\"azv1\"}", 4.0),
            ("tracer_dns_slow_answers_total{interface=\"azv1\"}", 1.0),
            ("tracer_dns_answers_by_rcode_total{rcode=\"NXDOMAIN\"}", 1.0),
            ("tracer_dns_malformed_total{outcome=\"malformed\"}", 2.0),
            ("tracer_dns_malformed_total{outcome=\"fragments\"}", 0.0),
            (
                "tracer_dns_latency_seconds_bucket{le=\"0.0025\",interface=\"azv1\",server=\"10.240.1.1\",side=\"client\"}",
                0.0,
            ),
            (
                "tracer_dns_latency_seconds_bucket{le=\"0.005\",interface=\"azv1\",server=\"10.240.1.1\",side=\"client\"}",
                8.0,
            ),
            (
                "tracer_dns_latency_seconds_bucket{le=\"+Inf\",interface=\"azv1\",server=\"10.240.1.1\",side=\"client\"}",
                8.0,
            ),
            (
                "tracer_dns_latency_seconds_count{interface=\"azv1\",server=\"10.240.1.1\",side=\"client\"}",
                8.0,
            ),
            ("tracer_conntrack_clashes_resolved_total", 3.0),
            (
                "tracer_drops_total{reason=\"SOCKET_RCVBUFF\",side=\"pod\",protocol=\"udp\",dns=\"true\",interface=\"azv1\"}",
                5.0,
            ),
            (
                "tracer_conntrack_drops_attributed_total{client=\"10.240.1.2\",dns=\"true\"}",
                3.0,
            ),
            (
                "tracer_bridge_flood_packets_total{interface=\"azv2\"}",
                40.0,
            ),
            ("tracer_bridge_flood_episodes_total", 0.0),
            ("tracer_neighbour_failures_total", 0.0),
            (
                "tracer_interface_packets_total{interface=\"azv1\",direction=\"ingress\"}",
                11.0,
            ),
            (
                "tracer_interface_bytes_total{interface=\"azv2\",direction=\"egress\"}",
                1200.0,
            ),
            (
                "tracer_dns_server_sends_total{interface=\"azv1\",server=\"10.1.0.9\",class=\"not_in_node_list\"}",
                6.0,
            ),
            (
                "tracer_dns_server_list_flag{interface=\"azv1\",flag=\"stale\"}",
                1.0,
            ),
            ("tracer_bridge_setup_windows_total", 0.0),
            (
                "tracer_bridge_setup_dns_queries_total{outcome=\"delayed\"}",
                0.0,
            ),
            ("tracer_lost_events_total{reason=\"dns_ring_full\"}", 0.0),
            (
                "tracer_lost_events_total{reason=\"conntrack_ring_full\"}",
                0.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
        // OpenMetrics HELP text may not hold a bare quote or backslash.
        for help in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(!help.contains(['"', '\\']), "{help}");
        }
        // No kernel conntrack counters: no series, not a false zero.
        assert!(
            !text.contains("tracer_conntrack_insert_drops_total"),
            "{text}"
        );
        assert!(text.contains("# TYPE tracer_dns_latency_seconds histogram"));
        assert!(text.contains("# UNIT tracer_dns_latency_seconds seconds"));
        let sum = sample(
            &text,
            "tracer_dns_latency_seconds_sum{interface=\"azv1\",server=\"10.240.1.1\",side=\"client\"}",
        )
        .expect("sum");
        assert!((sum - 8.0 * 0.003).abs() < 8.0 * 0.003 * 0.02, "{sum}");
        // One finding per symptom, detected as 1/0.
        let findings: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tracer_finding{"))
            .collect();
        assert_eq!(findings.len(), 4, "{text}");
        assert!(
            findings
                .iter()
                .any(|l| l.contains("symptom=\"dns_latency\"")
                    && l.contains("transparent_mode_resolves=")
                    && l.contains("severity="))
        );
    }

    #[test]
    fn classic_text_format_for_scrapers_that_do_not_ask_for_openmetrics() {
        let text = render(Some(Arc::new(report())), Format::Text);
        assert!(!text.contains("# EOF"));
        assert_eq!(sample(&text, "tracer_dns_answers_total"), Some(8.0));
        assert!(
            text.contains("# TYPE tracer_dns_answers_total counter"),
            "{text}"
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }

    #[test]
    fn before_the_first_snapshot_only_up() {
        let text = render(None, Format::OpenMetrics);
        assert_eq!(
            text,
            "# HELP tracer_up 1 while tracer traces and serves metrics.\n# TYPE tracer_up gauge\ntracer_up 1\n# EOF\n"
        );
    }

    fn status(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn http_requests() {
        let report = || Some(Arc::new(report()));
        let ok = respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
            report(),
        );
        assert_eq!(status(&ok), "HTTP/1.1 200 OK");
        let text = String::from_utf8_lossy(&ok);
        assert!(text.contains(&format!("Content-Type: {OPENMETRICS_CONTENT_TYPE}\r\n")));
        assert!(text.contains("Connection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.ends_with("# EOF\n"));

        let plain_text = respond(b"GET /metrics?x=1 HTTP/1.0\n\n", report());
        assert_eq!(status(&plain_text), "HTTP/1.1 200 OK");
        assert!(String::from_utf8_lossy(&plain_text).contains(TEXT_CONTENT_TYPE));

        let head = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", report());
        let head = String::from_utf8_lossy(&head);
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");

        for (request, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 404 Not Found"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (b"GET\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"", "HTTP/1.1 400 Bad Request"),
        ] {
            assert_eq!(
                status(&respond(request, report())),
                want,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        let not_allowed = respond(b"DELETE /metrics HTTP/1.1\r\n\r\n", None);
        assert!(String::from_utf8_lossy(&not_allowed).contains("\r\nAllow: GET, HEAD\r\n"));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_survives_bad_clients() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let (tx, rx) = watch::channel(Some(Arc::new(report())));
        let server = serve(parse_listen_addr(":0").unwrap(), rx).await.unwrap();
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback());
        let exchange = |request: Vec<u8>| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(&request).await.unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response).await;
            response
        };
        // A client that sends garbage and one that connects and leaves.
        let garbage = exchange(vec![0xff; 40_000]).await;
        assert!(
            garbage.is_empty() || status(&garbage).starts_with("HTTP/1.1 4"),
            "{}",
            status(&garbage)
        );
        drop(TcpStream::connect(addr).await.unwrap());
        let ok = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert_eq!(status(&ok), "HTTP/1.1 200 OK");
        assert!(String::from_utf8_lossy(&ok).contains("tracer_dns_answers_total 8\n"));
        drop(tx);
        drop(server);
    }
}
