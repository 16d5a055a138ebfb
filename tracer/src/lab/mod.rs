//! The lab: a bridge-mode node and a transparent-mode node built side by
//! side in network namespaces (same pods, same addresses, a kube-proxy-like
//! DNS service with two real dnsmasq backends), the same scenarios run on
//! both, traced by the same probes, and compared.

pub mod bridge_setup;
pub mod compare;
pub mod dns;
pub mod dns_servers;
#[cfg(feature = "plot")]
pub mod plot;
pub mod topology;
pub mod traffic;
pub mod verify;

use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tracer_common::{
    conntrack::CtKind,
    dns::{DNS_PORT, DnsStat},
};

pub use self::compare::ComparisonRow;
use self::{
    compare::Metric,
    dns::{DnsServer, ResolvConf},
    topology::{Datapath, Topology, TopologyError},
    verify::VerifyRow,
};
use crate::{
    report::Report,
    verdict::{Severity, Symptom},
    watch,
};

/// The DNS service's virtual IP (a ClusterIP) and the name the pods look up.
pub const DNS_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const LOOKUP_NAME: &str = "api.lab.test";

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Steady DNS load from glibc clients in every pod.
    Dns,
    /// Concurrent sends on one socket from two CPUs through the service DNAT.
    Conntrack,
    /// A silent receiver whose FDB entry ages out while a sender streams.
    Flood,
    /// Pod-to-pod UDP and TCP request/response latency and throughput.
    PodToPod,
    /// The node's DNS server list changes after the pods' resolv.conf was
    /// written (`dns_servers.rs`).
    DnsServers,
    /// The first pod makes the CNI build its datapath while the node
    /// resolves names over `eth0` (on a node of its own, built for it).
    BridgeSetup,
}

impl Scenario {
    pub const ALL: [Self; 6] = [
        Self::Dns,
        Self::Conntrack,
        Self::Flood,
        Self::PodToPod,
        Self::DnsServers,
        Self::BridgeSetup,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Conntrack => "conntrack",
            Self::Flood => "flood",
            Self::PodToPod => "pod-to-pod",
            Self::DnsServers => "dns-servers",
            Self::BridgeSetup => "bridge-setup",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Workload pods per node (the two DNS backend pods come on top).
    pub pods: usize,
    /// Seconds of traffic per scenario.
    pub duration: Duration,
    pub scenarios: Vec<Scenario>,
    /// Runs of every scenario per datapath (the statistics need several).
    pub repeat: usize,
    /// Also capture with tcpdump/tshark and compare every figure.
    pub verify: bool,
    /// Set from a signal handler: stop between steps and clean up.
    pub cancel: Arc<AtomicBool>,
}

/// Errors of a lab run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Dns(#[from] dns::LabDnsError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("tracing: {0:#}")]
    Trace(anyhow::Error),
    #[error("lab traffic: {0}")]
    Io(#[from] std::io::Error),
    #[error("verification: {0}")]
    Verify(String),
    #[error("interrupted")]
    Cancelled,
    #[error("need at least 3 workload pods, got {0}")]
    TooFewPods(usize),
    #[error("--repeat must be at least 1")]
    NoRuns,
}

/// Figures of one run of one datapath.
#[derive(Debug, Default, Serialize)]
pub struct DatapathRun {
    pub datapath: Option<Datapath>,
    /// Which run of this datapath, from 1.
    pub repeat: usize,
    pub dns: Option<DnsFigures>,
    pub conntrack: Option<ConntrackFigures>,
    pub flood: Option<FloodFigures>,
    pub pod_to_pod: Option<PodToPodFigures>,
    pub dns_servers: Option<dns_servers::DnsServersFigures>,
    pub bridge_setup: Option<bridge_setup::BridgeSetupFigures>,
    /// The verdicts tracer gave on this node, scenario by scenario.
    pub findings: Vec<(String, crate::verdict::Finding)>,
    /// The raw data behind the figures, for `--plot` (not in the JSON).
    #[serde(skip)]
    pub samples: Samples,
}

/// What `tracer lab --plot` draws (`plot.rs`), kept from the run.
#[derive(Debug, Default)]
pub struct Samples {
    /// tracer's DNS latency buckets of every interface, `[low_ns, high_ns, count]`.
    pub dns_buckets: Vec<[u64; 3]>,
    /// Each successful getent's wall time (ms).
    pub getent_ms: Vec<f64>,
    /// Flood episodes: start and end (s into the trace), frames flooded,
    /// victim ports.
    pub flood_episodes: Vec<(f64, f64, u64, Vec<String>)>,
    /// Pod-to-pod request/response round trips (µs).
    pub udp_rtt_us: Vec<f64>,
    pub tcp_rtt_us: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct DnsFigures {
    pub lookups: u64,
    pub lookups_failed: u64,
    /// DNS queries seen over every traced port (one query crossing two
    /// traced ports counts twice); the figures below count each exchange
    /// once, on the clients' side.
    pub queries: u64,
    pub answers: u64,
    /// Worst client interface.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub slow: u64,
    pub unanswered_sends: u64,
    pub retries_5s: u64,
    pub parallel_pairs: u64,
    /// getent's own wall time, p99 (includes process start-up).
    pub getent_p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ConntrackFigures {
    pub rounds: u64,
    pub clash_resolved: Option<u64>,
    pub insert_failed: u64,
    pub drop: u64,
    pub probe_mode: String,
    pub drops_attributed: u64,
    /// DNS queries of the race whose answer was never seen on the client's
    /// port (each a resolver timeout for a real client).
    pub answers_missing: u64,
}

#[derive(Debug, Serialize)]
pub struct FloodFigures {
    pub sent: u64,
    pub episodes: u64,
    pub frames_flooded: u64,
    pub copies_to_victims: u64,
    pub victim_ports: u64,
    pub cause: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PodToPodFigures {
    pub udp_rtt_p50_us: f64,
    pub udp_rtt_p99_us: f64,
    pub udp_pps: f64,
    pub udp_loss_percent: f64,
    pub tcp_rtt_p50_us: f64,
    pub tcp_rtt_p99_us: f64,
    pub tcp_mbit_s: f64,
    /// The first datagram to a peer after the sender's neighbour cache was
    /// flushed: includes ARP (proxy ARP in transparent mode, which answers
    /// after a random delay of up to proxy_delay, 0.8 s by default).
    pub first_packet_ms: f64,
}

/// The lab's report.
#[derive(Debug, Serialize)]
pub struct LabReport {
    pub schema_version: u32,
    pub kernel: String,
    pub pods: usize,
    /// Runs per datapath.
    pub repeat: usize,
    /// Every run of every datapath, in the order they ran.
    pub runs: Vec<DatapathRun>,
    /// One row per compared figure: bridge, transparent, resolved?
    pub comparison: Vec<ComparisonRow>,
    /// With `--verify`: tracer vs ground truth.
    pub verify: Vec<VerifyRow>,
}

/// Runs the lab: `repeat` runs of every scenario on each datapath, the two
/// nodes alternating (bridge first, then transparent first, …) so a change
/// of the machine's load over time falls on both alike; every namespace is
/// gone when this returns, also on error or interruption.
pub fn run(opts: &LabOptions) -> Result<LabReport, LabError> {
    if opts.pods < 3 {
        return Err(LabError::TooFewPods(opts.pods));
    }
    if opts.repeat == 0 {
        return Err(LabError::NoRuns);
    }
    let mut runs = Vec::new();
    let mut verify_rows = Vec::new();
    let progress = Progress::new(2 * opts.scenarios.len() * opts.repeat);
    let mut nodes = Vec::new();
    for datapath in [Datapath::Bridge, Datapath::Transparent] {
        progress.note(datapath, "building the node");
        nodes.push(LabNode::build(datapath, opts.pods)?);
    }
    for repeat in 1..=opts.repeat {
        let order = if repeat % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            runs.push(nodes[i].run(repeat, opts, &progress, &mut verify_rows)?);
        }
    }
    progress.finish();
    Ok(LabReport {
        schema_version: crate::report::SCHEMA_VERSION,
        kernel: crate::report::kernel_release(),
        pods: opts.pods,
        repeat: opts.repeat,
        comparison: compare::rows(&metrics(), &runs),
        runs,
        verify: verify_rows,
    })
}

/// One node with its DNS service, backends and configured clients. Fields
/// drop in order: the servers stop before their namespaces go.
struct LabNode {
    _dns: Vec<DnsServer>,
    _resolv: Vec<ResolvConf>,
    topo: Topology,
}

impl LabNode {
    fn build(datapath: Datapath, pods: usize) -> Result<Self, LabError> {
        let topo = Topology::build(datapath, pods + 2)?;
        let v6 = "fd00::20";
        let records = [(LOOKUP_NAME, Ipv4Addr::new(10, 96, 1, 20), v6)];
        let dns = topo.pods[..2]
            .iter()
            .map(|p| DnsServer::start(&p.netns, p.ip, &records))
            .collect::<Result<Vec<_>, _>>()?;
        topo.add_service(DNS_SERVICE, 53, &[topo.pods[0].ip, topo.pods[1].ip])?;
        let mut resolv = Vec::new();
        for client in &topo.pods[2..] {
            dns::enable_aaaa_lookups(&client.netns)?;
            resolv.push(ResolvConf::write(
                &client.netns,
                DNS_SERVICE,
                &["timeout:5", "attempts:2"],
            )?);
        }
        Ok(Self {
            topo,
            _dns: dns,
            _resolv: resolv,
        })
    }

    /// Run `repeat` of every scenario on this node.
    fn run(
        &self,
        repeat: usize,
        opts: &LabOptions,
        progress: &Progress,
        verify_rows: &mut Vec<VerifyRow>,
    ) -> Result<DatapathRun, LabError> {
        let datapath = self.topo.datapath;
        let mut run = DatapathRun {
            datapath: Some(datapath),
            repeat,
            ..DatapathRun::default()
        };
        for &scenario in &opts.scenarios {
            if opts.cancel.load(Ordering::Relaxed) {
                return Err(LabError::Cancelled);
            }
            progress.start(datapath, scenario, opts.duration, repeat);
            self.scenario(scenario, opts, &mut run, verify_rows)?;
            progress.done();
        }
        if repeat > 1 {
            // `--plot` draws the first run of each datapath.
            run.samples = Samples::default();
        }
        Ok(run)
    }

    fn clients(&self) -> &[topology::Pod] {
        &self.topo.pods[2..]
    }

    fn scenario(
        &self,
        scenario: Scenario,
        opts: &LabOptions,
        run: &mut DatapathRun,
        verify_rows: &mut Vec<VerifyRow>,
    ) -> Result<(), LabError> {
        match scenario {
            Scenario::Dns => self.dns(opts, run, verify_rows),
            Scenario::Conntrack => self.conntrack(opts, run, verify_rows),
            Scenario::Flood => self.flood(opts, run, verify_rows),
            Scenario::PodToPod => self.pod_to_pod(opts, run),
            Scenario::DnsServers => dns_servers::run(&self.topo, self.clients(), opts, run),
            Scenario::BridgeSetup => bridge_setup::run(self.topo.datapath, opts, run, verify_rows),
        }
    }

    /// A verify row's label: the datapath, the run when repeated, `what`.
    fn label(&self, opts: &LabOptions, run: &DatapathRun, what: &str) -> String {
        let name = self.topo.datapath.name();
        if opts.repeat > 1 {
            format!("{name} run {} {what}", run.repeat)
        } else {
            format!("{name} {what}")
        }
    }

    /// `getent` lookups from every client pod for the run's duration.
    fn dns(
        &self,
        opts: &LabOptions,
        run: &mut DatapathRun,
        verify_rows: &mut Vec<VerifyRow>,
    ) -> Result<(), LabError> {
        let d = opts.duration;
        let c = self.clients();
        let capture = if opts.verify {
            Some(verify::Capture::start(
                &self.topo.node,
                &c[0].host_if,
                "port 53",
            )?)
        } else {
            None
        };
        let (report, times) = trace(&self.topo.node, || {
            let workers: Vec<_> = c
                .iter()
                .map(|pod| {
                    let ns = pod.netns.clone();
                    std::thread::spawn(move || {
                        let start = Instant::now();
                        let mut times = Vec::new();
                        while start.elapsed() < d {
                            times.push(
                                dns::getent(&ns, LOOKUP_NAME).map(|t| t.as_secs_f64() * 1000.0),
                            );
                        }
                        times
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect::<Vec<_>>()
        })?;
        if let Some(capture) = capture {
            verify_rows.extend(verify::dns(
                &self.label(opts, run, "dns"),
                &report,
                &c[0].host_if,
                &capture.stop()?,
            ));
        }
        let ok: Vec<f64> = times.iter().flatten().copied().collect();
        let dnsr = &report.dns;
        let x = &dnsr.exchanges;
        let n = |stat: DnsStat| dnsr.counters[stat];
        // The client's pod port: what the lookups waited.
        let worst = dnsr
            .latency
            .iter()
            .filter(|l| l.side == x.observed_at)
            .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        run.dns = Some(DnsFigures {
            lookups: times.len() as u64,
            lookups_failed: (times.len() - ok.len()) as u64,
            queries: n(DnsStat::Queries),
            answers: x.answers,
            p50_ms: worst.map_or(0.0, |l| l.p50_ms),
            p99_ms: worst.map_or(0.0, |l| l.p99_ms),
            max_ms: worst.map_or(0.0, |l| l.max_ms),
            slow: x.tally.slow_answers,
            unanswered_sends: x.tally.lost_sends,
            retries_5s: x.tally.retry_modes.around_5s,
            parallel_pairs: x.tally.parallel_pairs,
            getent_p99_ms: traffic::percentile(&ok, 0.99),
        });
        // As the clients' veths saw them (a query also crosses the
        // server's veth: counted once).
        run.samples.dns_buckets = dnsr
            .latency
            .iter()
            .filter(|l| c.iter().any(|p| p.host_if == l.interface))
            .flat_map(|l| l.buckets.clone())
            .collect();
        run.samples.getent_ms = ok;
        keep_findings(run, "dns", &report, Symptom::DnsLatency);
        Ok(())
    }

    /// Parallel A/AAAA sends through the DNS service address (DNAT): the insert race.
    fn conntrack(
        &self,
        opts: &LabOptions,
        run: &mut DatapathRun,
        verify_rows: &mut Vec<VerifyRow>,
    ) -> Result<(), LabError> {
        let d = opts.duration;
        let c = self.clients();
        let service = SocketAddrV4::new(DNS_SERVICE, DNS_PORT);
        let (report, rounds) = trace(&self.topo.node, || {
            traffic::conntrack_race(&c[0].netns, service, d)
        })?;
        let ct = &report.conntrack;
        let kernel = ct.kernel.unwrap_or_default();
        let attributed = ct.tracer.values().sum();
        if opts.verify {
            verify_rows.push(VerifyRow::new(
                &self.label(
                    opts,
                    run,
                    "conntrack insert drops (tracer vs kernel insert_failed)",
                ),
                [CtKind::ConfirmDrop, CtKind::UnconfirmedDrop]
                    .iter()
                    .map(|k| ct.tracer.get(k.name()).copied().unwrap_or(0))
                    .sum(),
                kernel.insert_failed,
            ));
        }
        run.conntrack = Some(ConntrackFigures {
            rounds,
            clash_resolved: kernel.clash_resolved,
            insert_failed: kernel.insert_failed,
            drop: kernel.drop,
            probe_mode: ct.mode.to_owned(),
            drops_attributed: attributed,
            answers_missing: report
                .dns
                .per_interface
                .iter()
                .filter(|i| i.interface == c[0].host_if)
                .map(|i| i.unanswered_sends)
                .sum(),
        });
        keep_findings(run, "conntrack", &report, Symptom::ConntrackRace);
        Ok(())
    }

    /// A UDP stream to a receiver whose FDB entry ages out mid-stream.
    fn flood(
        &self,
        opts: &LabOptions,
        run: &mut DatapathRun,
        verify_rows: &mut Vec<VerifyRow>,
    ) -> Result<(), LabError> {
        let d = opts.duration;
        let c = self.clients();
        let (sender, receiver, bystander) = (&c[0], &c[1], &c[2]);
        if self.topo.datapath == Datapath::Bridge {
            // 2 s instead of the default 300 s, so the lab sees the
            // FDB entry age out within its run.
            self.topo.exec(
                &self.topo.node,
                "ip",
                &[
                    "link",
                    "set",
                    topology::BRIDGE,
                    "type",
                    "bridge",
                    "ageing_time",
                    "200",
                ],
            )?;
        }
        let port = 9000;
        let sink = traffic::UdpServer::start(&receiver.netns, receiver.ip, port, false)?;
        let to = SocketAddrV4::new(receiver.ip, port);
        let capture = if opts.verify {
            let mac = peer_mac(&receiver.netns)?;
            Some(verify::Capture::start(
                &self.topo.node,
                &bystander.host_if,
                &format!("ether dst {mac}"),
            )?)
        } else {
            None
        };
        // A cold neighbour cache, so B answers ARP and the bridge
        // learns it anew in every run (a warm one from the run
        // before would leave B unlearned: flooding from the start).
        flush_neighbours(&sender.netns);
        let (report, sent) = trace(&self.topo.node, || {
            // Learned now, aged out ~2 s later while the stream goes on.
            traffic::udp_stream(&sender.netns, to, 10, Duration::from_millis(300));
            traffic::udp_stream(&sender.netns, to, 1000, d.max(Duration::from_secs(4)))
        })?;
        sink.finish();
        let f = &report.flood;
        let copies_bystander = f
            .victims
            .iter()
            .find(|v| v.interface == bystander.host_if)
            .map_or(0, |v| v.victim_packets);
        if let Some(capture) = capture {
            let (copies, dropped) = capture.count()?;
            verify_rows.push(
                VerifyRow::new(
                    &self.label(
                        opts,
                        run,
                        "flooded copies to a bystander port (tracer vs tcpdump)",
                    ),
                    copies_bystander,
                    copies,
                )
                .capture_dropped(dropped),
            );
        }
        run.flood = Some(FloodFigures {
            sent,
            episodes: f.episodes.len() as u64 + f.episodes_not_listed,
            frames_flooded: f.episodes.iter().map(|e| e.packets).sum(),
            copies_to_victims: f.victims.iter().map(|v| v.victim_packets).sum(),
            victim_ports: f.victims.iter().filter(|v| v.victim_packets > 0).count() as u64,
            cause: f.episodes.first().map(|e| e.cause.kind.name().to_owned()),
        });
        run.samples.flood_episodes = f
            .episodes
            .iter()
            .map(|e| (e.start_s, e.end_s, e.packets, e.victims.clone()))
            .collect();
        keep_findings(run, "flood", &report, Symptom::UdpFlooding);
        Ok(())
    }

    /// Pod-to-pod UDP and TCP: round trips, rate, loss, the first packet.
    fn pod_to_pod(&self, opts: &LabOptions, run: &mut DatapathRun) -> Result<(), LabError> {
        let d = opts.duration;
        let c = self.clients();
        let (a, b) = (&c[0], &c[1]);
        let echo = traffic::UdpServer::start(&b.netns, b.ip, 7000, true)?;
        let sink = traffic::UdpServer::start(&b.netns, b.ip, 7001, false)?;
        let tcp = traffic::tcp_echo(&b.netns, b.ip, 7002, 2)?;
        let (_report, figures) = trace(&self.topo.node, || {
            // First packet after a cold neighbour cache.
            flush_neighbours(&a.netns);
            let first = traffic::udp_rtts(&a.netns, SocketAddrV4::new(b.ip, 7000), 1);
            let rtts = traffic::udp_rtts(&a.netns, SocketAddrV4::new(b.ip, 7000), 2000);
            let blast_for = (d / 3).max(Duration::from_secs(1));
            let sent = traffic::udp_blast(&a.netns, SocketAddrV4::new(b.ip, 7001), blast_for);
            let (tcp_rtts, mbit) =
                traffic::tcp_figures(&a.netns, SocketAddrV4::new(b.ip, 7002), 2000, blast_for);
            (first, rtts, sent, blast_for, tcp_rtts, mbit)
        })?;
        echo.finish();
        let received = sink.finish();
        let _ = tcp.join();
        let (first, rtts, sent, blast_for, tcp_rtts, mbit) = figures;
        run.pod_to_pod = Some(PodToPodFigures {
            udp_rtt_p50_us: traffic::percentile(&rtts, 0.5),
            udp_rtt_p99_us: traffic::percentile(&rtts, 0.99),
            udp_pps: received as f64 / blast_for.as_secs_f64(),
            udp_loss_percent: if sent > 0 {
                100.0 * sent.saturating_sub(received) as f64 / sent as f64
            } else {
                0.0
            },
            tcp_rtt_p50_us: traffic::percentile(&tcp_rtts, 0.5),
            tcp_rtt_p99_us: traffic::percentile(&tcp_rtts, 0.99),
            tcp_mbit_s: mbit,
            first_packet_ms: first.first().map_or(0.0, |us| us / 1000.0),
        });
        run.samples.udp_rtt_us = rtts;
        run.samples.tcp_rtt_us = tcp_rtts;
        Ok(())
    }
}

/// Keeps the findings of the symptom a scenario exercises (the others are
/// side effects of its traffic: e.g. the race's reused ports and ids).
fn keep_findings(run: &mut DatapathRun, scenario: &str, report: &Report, symptom: Symptom) {
    run.findings.extend(
        report
            .findings
            .iter()
            .filter(|f| f.detected && f.symptom == symptom)
            .map(|f| (scenario.to_owned(), f.clone())),
    );
}

/// Empties a pod's neighbour cache (best effort: a warm cache only changes
/// the figures, which show it).
fn flush_neighbours(netns: &str) {
    let _ = std::process::Command::new("ip")
        .args(["-n", netns, "neigh", "flush", "all"])
        .status();
}

/// MAC of a pod's `eth0`.
fn peer_mac(netns: &str) -> Result<String, LabError> {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-br", "link", "show", "eth0"])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .ok_or_else(|| LabError::Verify(format!("no MAC for eth0 in {netns}")))
}

/// Runs `traffic` while an in-process tracer session traces `node`; returns
/// the session's report and what `traffic` returned.
fn trace<T: Send>(node: &str, traffic: impl FnOnce() -> T + Send) -> Result<(Report, T), LabError> {
    trace_with(node, None, traffic)
}

/// [`trace`] reading the DNS server lists from `dns_lists`.
fn trace_with<T: Send>(
    node: &str,
    dns_lists: Option<crate::dns::server_list::ListSources>,
    traffic: impl FnOnce() -> T + Send,
) -> Result<(Report, T), LabError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let node = node.to_owned();
    std::thread::scope(|scope| {
        let session = scope.spawn(move || -> Result<Report, LabError> {
            crate::netns::enter(&node)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let opts = watch::WatchOptions {
                interval: Duration::from_millis(500),
                ready: Some(ready_tx),
                stop: Some(stop_rx),
                dns_lists,
                ..watch::WatchOptions::default()
            };
            runtime.block_on(watch::run(opts)).map_err(LabError::Trace)
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = stop_tx.send(true);
            return match session.join() {
                Ok(Err(err)) => Err(err),
                _ => Err(LabError::Trace(anyhow::anyhow!(
                    "tracer was not ready in 30 s"
                ))),
            };
        }
        let out = traffic();
        // Let the last answers and flooded copies arrive.
        std::thread::sleep(Duration::from_millis(300));
        let _ = stop_tx.send(true);
        let report = session
            .join()
            .map_err(|_| LabError::Trace(anyhow::anyhow!("tracer session panicked")))??;
        Ok((report, out))
    })
}

/// Reads one figure of a scenario's figures.
type Read<F, T = f64> = fn(&F) -> T;

/// The compared figures, scenario by scenario: each reads its value from
/// one run; [`compare::rows`] does the statistics.
fn metrics() -> Vec<Metric> {
    use compare::Kind::{Count, Measure, Volume};
    let lookups = |r: &DatapathRun| Some(r.dns.as_ref()?.lookups as f64);
    let rounds = |r: &DatapathRun| Some(r.conntrack.as_ref()?.rounds as f64);
    let sent = |r: &DatapathRun| Some(r.flood.as_ref()?.sent as f64);
    // (figure, kind, judged, value): failed lookups and lost queries are
    // the symptom.
    let dns: [(_, _, _, Read<DnsFigures>); 5] = [
        ("lookups failed", Count, true, |f| f.lookups_failed as f64),
        ("answer p50 ms", Measure, false, |f| f.p50_ms),
        ("answer p99 ms", Measure, false, |f| f.p99_ms),
        ("unanswered sends", Count, true, |f| {
            f.unanswered_sends as f64
        }),
        ("5 s retries", Count, false, |f| f.retries_5s as f64),
    ];
    let conntrack: [(_, Read<ConntrackFigures, Option<f64>>); 3] = [
        ("clashes resolved by the kernel", |f| {
            f.clash_resolved.map(|c| c as f64)
        }),
        ("race queries never answered", |f| {
            Some(f.answers_missing as f64)
        }),
        ("insert failures (packets dropped)", |f| {
            Some(f.insert_failed as f64)
        }),
    ];
    let flood: [(_, _, Read<FloodFigures>); 3] = [
        ("episodes", Count, |f| f.episodes as f64),
        ("copies to victim ports", Count, |f| {
            f.copies_to_victims as f64
        }),
        ("victim ports", Measure, |f| f.victim_ports as f64),
    ];
    let pod_to_pod: [(_, Read<PodToPodFigures>); 8] = [
        ("UDP RTT p50 µs", |f| f.udp_rtt_p50_us),
        ("UDP RTT p99 µs", |f| f.udp_rtt_p99_us),
        ("UDP 64 B pps received", |f| f.udp_pps),
        ("UDP loss %", |f| f.udp_loss_percent),
        ("TCP RTT p50 µs", |f| f.tcp_rtt_p50_us),
        ("TCP RTT p99 µs", |f| f.tcp_rtt_p99_us),
        ("TCP Mbit/s", |f| f.tcp_mbit_s),
        ("first packet to a new peer ms", |f| f.first_packet_ms),
    ];
    let mut metrics = vec![Metric::new("dns", "lookups", Volume, lookups)];
    metrics.extend(dns.map(|(figure, kind, judged, get)| {
        let m = Metric::new("dns", figure, kind, move |r| Some(get(r.dns.as_ref()?)));
        // Counts per lookup: the datapaths complete different numbers.
        let m = if kind == Count {
            m.per("lookup", lookups)
        } else {
            m
        };
        if judged { m.judged() } else { m }
    }));
    metrics.push(Metric::new("dns", "parallel A/AAAA pairs", Volume, |r| {
        Some(r.dns.as_ref()?.parallel_pairs as f64)
    }));
    metrics.push(Metric::new("conntrack", "race rounds", Volume, rounds));
    metrics.extend(conntrack.map(|(figure, get)| {
        Metric::new("conntrack", figure, Count, move |r| {
            get(r.conntrack.as_ref()?)
        })
        .judged()
        .per("round", rounds)
    }));
    metrics.push(
        Metric::new("flood", "frames flooded", Count, |r| {
            Some(r.flood.as_ref()?.frames_flooded as f64)
        })
        .judged()
        .per("frame sent", sent),
    );
    metrics.extend(flood.map(|(figure, kind, get)| {
        Metric::new("flood", figure, kind, move |r| {
            Some(get(r.flood.as_ref()?))
        })
    }));
    metrics.extend(pod_to_pod.map(|(figure, get)| {
        Metric::new("pod-to-pod", figure, Measure, move |r| {
            Some(get(r.pod_to_pod.as_ref()?))
        })
    }));
    metrics.extend(dns_servers::metrics());
    metrics.extend(bridge_setup::metrics());
    metrics
}

impl LabReport {
    /// The side-by-side table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tracer lab · kernel {} · {} workload pods + 2 DNS backends per node\n",
            self.kernel, self.pods
        );
        let _ = writeln!(
            out,
            "{:<11} {:<30} {:>24} {:>24} {:>7}  RESOLVED BY TRANSPARENT?",
            "SYMPTOM", "FIGURE", "BRIDGE", "TRANSPARENT", "P"
        );
        for r in &self.comparison {
            let p = r.p_holm.or(r.p_value).map_or_else(
                || "-".to_owned(),
                |p| {
                    if p < 0.001 {
                        "<0.001".to_owned()
                    } else {
                        format!("{p:.3}")
                    }
                },
            );
            let _ = writeln!(
                out,
                "{:<11} {:<30} {:>24} {:>24} {:>7}  {}",
                r.symptom, r.figure, r.bridge, r.transparent, p, r.resolved
            );
        }
        let _ = write!(out, "\n{}", compare::legend(self.repeat));
        if self.comparison.iter().any(|r| r.symptom == "dns-servers") {
            let _ = writeln!(out, "\n{}", dns_servers::MODEL_NOTE);
        }
        // The findings of each datapath's first run (every run's are in the
        // JSON).
        for run in self.runs.iter().filter(|r| r.repeat == 1) {
            let name = run.datapath.map_or("?", Datapath::name);
            let worst: Vec<String> = run
                .findings
                .iter()
                .filter(|(_, f)| f.severity >= Severity::Warning)
                .map(|(s, f)| format!("[{s}] {:?}: {}", f.severity, f.summary))
                .collect();
            if !worst.is_empty() {
                let _ = writeln!(out, "\ntracer's findings on the {name} node, run 1:");
                for w in worst {
                    let _ = writeln!(out, "  {w}");
                }
            }
        }
        if !self.verify.is_empty() {
            let _ = writeln!(out, "\nverification (tracer vs ground truth):");
            let _ = writeln!(
                out,
                "{:<64} {:>12} {:>12} {:>10}",
                "FIGURE", "TRACER", "TRUTH", "DIFF"
            );
            for v in &self.verify {
                let _ = writeln!(
                    out,
                    "{:<64} {:>12} {:>12} {:>10}",
                    v.figure, v.tracer, v.truth, v.difference
                );
            }
        }
        out
    }
}

/// A progress bar on stderr (plain lines when stderr is not a terminal).
struct Progress {
    total: usize,
    done: std::cell::Cell<usize>,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: std::cell::Cell::new(0),
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn bar(&self) -> String {
        let width = 24;
        let filled = width * self.done.get() / self.total.max(1);
        format!("▕{}{}▏", "█".repeat(filled), "░".repeat(width - filled))
    }

    fn note(&self, datapath: Datapath, what: &str) {
        self.line(&format!("{} {:<12} {what}", self.bar(), datapath.name()));
    }

    fn start(&self, datapath: Datapath, scenario: Scenario, duration: Duration, repeat: usize) {
        self.line(&format!(
            "{} {:<12} run {repeat} {} (~{:.0} s)",
            self.bar(),
            datapath.name(),
            scenario.name(),
            duration.as_secs_f64()
        ));
    }

    fn done(&self) {
        self.done.set(self.done.get() + 1);
    }

    fn finish(&self) {
        self.line(&format!(
            "{} done in {:.0} s",
            self.bar(),
            self.started.elapsed().as_secs_f64()
        ));
        if self.tty {
            eprintln!();
        }
    }

    fn line(&self, text: &str) {
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }
}
