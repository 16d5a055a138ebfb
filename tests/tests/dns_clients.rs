//! DNS findings on cases the lab does not build: a bridge named `cni0` or
//! `docker0`, clients other than glibc's UDP `getent` (glibc `use-vc`,
//! `dig +tcp`, dnsperf, a static musl program), a slow upstream behind the
//! DNS server, answers dropped inside the server pod. The real tracer binary
//! traces every port; ground truth is tshark on the client's port, nft's own
//! counters and the clients' timings.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::lab::topology::{Datapath, Pod, Topology};
use tracer_tests::{
    TracerRun,
    dns::{
        Capture, DnsPacket, DnsServer, QTYPE_A, QTYPE_AAAA, ResolvConf, allow_aaaa_lookups,
        getent_ahosts,
    },
    privileged,
};

const NAME: &str = "api.lab.test";

fn records() -> Vec<(&'static str, Ipv4Addr, Ipv6Addr)> {
    let mut r = vec![(
        NAME,
        Ipv4Addr::new(10, 96, 0, 20),
        "fd00::20".parse().unwrap(),
    )];
    for (i, name) in ["n0.lab.test", "n1.lab.test", "n2.lab.test", "n3.lab.test"]
        .into_iter()
        .enumerate()
    {
        let i = u8::try_from(i).unwrap();
        r.push((
            name,
            Ipv4Addr::new(10, 96, 1, i),
            Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, u16::from(i)),
        ));
    }
    r
}

/// A bridge-mode node whose bridge is `bridge`, with `pods` pods.
fn node(bridge: &str, pods: usize) -> Topology {
    let topo = Topology::build_with_bridge(Datapath::Bridge, pods, bridge).expect("topology");
    assert_eq!(topo.bridge, bridge);
    topo
}

fn dns_finding(report: &Value) -> &Value {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["symptom"] == "dns_latency")
        .unwrap_or_else(|| panic!("no DNS finding: {report:#}"))
}

fn counter(report: &Value, name: &str) -> u64 {
    report["dns"]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name}"))
}

/// The latency row of `iface` (one server each in these tests).
fn row<'a>(report: &'a Value, iface: &str) -> &'a Value {
    report["dns"]["latency"]
        .as_array()
        .expect("latency")
        .iter()
        .find(|r| r["interface"] == iface)
        .unwrap_or_else(|| panic!("no latency row for {iface}: {report:#}"))
}

/// Sockets (client port) that sent an A and an AAAA query for one name:
/// the pairs, from tshark.
fn pairs_on_wire(packets: &[DnsPacket]) -> usize {
    let mut by_socket: std::collections::BTreeMap<(u16, &str), (bool, bool)> =
        std::collections::BTreeMap::new();
    for p in packets.iter().filter(|p| !p.response) {
        let e = by_socket.entry((p.src_port, &p.name)).or_default();
        e.0 |= p.qtype == QTYPE_A;
        e.1 |= p.qtype == QTYPE_AAAA;
    }
    by_socket.values().filter(|(a, aaaa)| *a && *aaaa).count()
}

fn run(topo: &Topology, netns: &str, program: &str, args: &[&str]) -> std::process::Output {
    let out = topo.exec(netns, program, args).expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Lab {
    topo: Topology,
    server: Pod,
    client: Pod,
}

fn lab(bridge: &str, pods: usize) -> Lab {
    let topo = node(bridge, pods);
    let (server, client) = (topo.pods[0].clone(), topo.pods[1].clone());
    Lab {
        topo,
        server,
        client,
    }
}

/// glibc with `options use-vc` writes A and AAAA in one TCP segment and the
/// server may answer both in one: every message is counted. `dig +tcp`
/// sends one query per connection. Each exchange counts once in the
/// exchange figures although two ports saw it.
fn tcp_clients(bridge: &str) {
    const LOOKUPS: usize = 8;
    const DIGS: usize = 4;
    let l = lab(bridge, 2);
    let _dns = DnsServer::start(&l.server.netns, l.server.ip, &records());
    let _resolv = ResolvConf::write(&l.client.netns, l.server.ip, &["use-vc", "timeout:2"]);
    allow_aaaa_lookups(&l.client.netns);
    let tracer = TracerRun::start(&l.topo.node, &["--dns-pair-window-ms", "50"]);
    let capture = Capture::start(&l.topo.node, &l.client.host_if);
    for _ in 0..LOOKUPS {
        let lookup = getent_ahosts(&l.client.netns, NAME);
        assert_eq!(lookup.addrs.len(), 2, "{lookup:?}");
    }
    let server = l.server.ip.to_string();
    for _ in 0..DIGS {
        run(
            &l.topo,
            &l.client.netns,
            "dig",
            &[
                "+tcp",
                "+tries=1",
                "+time=2",
                &format!("@{server}"),
                NAME,
                "A",
            ],
        );
    }
    let packets = capture.stop();
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);

    let queries = packets.iter().filter(|p| !p.response && p.tcp).count() as u64;
    let answers = packets.iter().filter(|p| p.response && p.tcp).count() as u64;
    assert_eq!(queries, (2 * LOOKUPS + DIGS) as u64, "tshark: {packets:#?}");
    assert_eq!(answers, queries);
    let x = &report["dns"]["exchanges"];
    assert_eq!(x["observed_at"], "client", "{x:#}");
    assert_eq!(x["answers"], answers, "each exchange once: {x:#}");
    assert_eq!(row(&report, &l.client.host_if)["answers"], answers);
    assert_eq!(row(&report, &l.client.host_if)["side"], "client");
    assert_eq!(row(&report, &l.server.host_if)["side"], "server");
    // Both ports saw every message, none was left unmatched.
    assert_eq!(counter(&report, "queries"), 2 * queries);
    assert_eq!(counter(&report, "matched"), 2 * answers);
    assert_eq!(counter(&report, "unmatched_answers"), 0, "{report:#}");
    let multi = packets
        .windows(2)
        .filter(|w| w[0].time == w[1].time && w[0].src_port == w[1].src_port)
        .count() as u64;
    eprintln!(
        "{bridge}: {queries} TCP queries, {multi} messages sharing a segment with the one before"
    );
    assert!(
        counter(&report, "tcp_more_messages") >= multi,
        "every message sharing a segment parsed: {report:#}"
    );
    assert_eq!(counter(&report, "tcp_split_messages"), 0);
    assert_eq!(counter(&report, "tcp_messages_over_cap"), 0);
    // getent's A + AAAA per connection are pairs; dig's lone A is not.
    assert_eq!(pairs_on_wire(&packets), LOOKUPS);
    assert_eq!(x["parallel_pairs"], LOOKUPS as u64, "{x:#}");
    assert_eq!(x["lost_sends"], 0, "{x:#}");
}

#[test_log::test]
fn use_vc_and_dig_tcp_on_cni0() {
    if privileged("use_vc_and_dig_tcp_on_cni0") {
        tcp_clients("cni0");
    }
}

/// dnsperf asks A only, many ids in flight on one socket: zero pairs, and
/// nothing taken for a re-send.
#[test_log::test]
fn dnsperf_a_only_makes_no_pairs_on_docker0() {
    if !privileged("dnsperf_a_only_makes_no_pairs_on_docker0") {
        return;
    }
    let l = lab("docker0", 2);
    let _dns = DnsServer::start(&l.server.netns, l.server.ip, &records());
    let input = std::env::temp_dir().join(format!("tracer-dnsperf-{}.txt", std::process::id()));
    let names: String = records().iter().map(|r| format!("{} A\n", r.0)).collect();
    std::fs::write(&input, names).unwrap();
    let _cleanup = RemoveOnDrop(input.clone());
    let tracer = TracerRun::start(&l.topo.node, &[]);
    let capture = Capture::start(&l.topo.node, &l.client.host_if);
    let server = l.server.ip.to_string();
    let out = run(
        &l.topo,
        &l.client.netns,
        "dnsperf",
        &[
            "-s",
            &server,
            "-d",
            input.to_str().unwrap(),
            "-n",
            "200",
            "-Q",
            "1000",
            "-c",
            "1",
        ],
    );
    let packets = capture.stop();
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);

    let answers = packets.iter().filter(|p| p.response).count() as u64;
    let summary = String::from_utf8_lossy(&out.stdout);
    let completed: u64 = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries completed:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("dnsperf summary: {summary}"));
    eprintln!("dnsperf completed {completed}, tshark saw {answers} answers");
    assert!(completed >= 900, "{summary}");
    assert_eq!(answers, completed, "{summary}");
    assert_eq!(pairs_on_wire(&packets), 0);
    let x = &report["dns"]["exchanges"];
    assert_eq!(x["parallel_pairs"], 0, "{x:#}");
    assert_eq!(counter(&report, "parallel_pairs"), 0);
    assert_eq!(counter(&report, "resent_after_answer"), 0);
    assert_eq!(x["answers"], answers, "{x:#}");
    assert_eq!(x["lost_sends"], 0, "{x:#}");
    // Nothing lost from the histograms: every matched answer is in one.
    let in_hists: u64 = report["dns"]["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["answers"].as_u64().unwrap())
        .sum();
    assert_eq!(in_hists, counter(&report, "matched"));
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A static musl program resolving with getaddrinfo(AF_UNSPEC): musl sends
/// A and AAAA at once from one socket to every nameserver; one nameserver
/// here, so one pair per lookup.
#[test_log::test]
fn musl_static_client_pairs_and_latency() {
    if !privileged("musl_static_client_pairs_and_latency") {
        return;
    }
    const LOOKUPS: usize = 6;
    let bin = musl_resolver();
    let _bin = RemoveOnDrop(bin.clone());
    let l = lab("cni0", 2);
    let _dns = DnsServer::start(&l.server.netns, l.server.ip, &records());
    let _resolv = ResolvConf::write(&l.client.netns, l.server.ip, &[]);
    let tracer = TracerRun::start(&l.topo.node, &["--dns-pair-window-ms", "50"]);
    let capture = Capture::start(&l.topo.node, &l.client.host_if);
    for _ in 0..LOOKUPS {
        let out = run(&l.topo, &l.client.netns, bin.to_str().unwrap(), &[NAME]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("10.96.0.20") && text.contains("fd00::20"),
            "{text}"
        );
    }
    let packets = capture.stop();
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);
    let answers = packets.iter().filter(|p| p.response).count() as u64;
    assert_eq!(answers, 2 * LOOKUPS as u64, "{packets:#?}");
    assert_eq!(pairs_on_wire(&packets), LOOKUPS);
    let x = &report["dns"]["exchanges"];
    assert_eq!(x["parallel_pairs"], LOOKUPS as u64, "{x:#}");
    assert_eq!(x["answers"], answers, "{x:#}");
    assert_eq!(row(&report, &l.client.host_if)["answers"], answers);
}

/// Builds a tiny resolver client with `musl-gcc -static` (Debian's
/// musl-tools); returns its path.
fn musl_resolver() -> PathBuf {
    const SOURCE: &str = r#"
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
    struct addrinfo hints, *res, *p;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) { fprintf(stderr, "%s\n", gai_strerror(rc)); return 2; }
    for (p = res; p; p = p->ai_next) {
        char buf[64];
        void *a = p->ai_family == AF_INET
            ? (void *)&((struct sockaddr_in *)p->ai_addr)->sin_addr
            : (void *)&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
        printf("%s\n", inet_ntop(p->ai_family, a, buf, sizeof buf));
    }
    freeaddrinfo(res);
    return 0;
}
"#;
    let dir = std::env::temp_dir();
    let stem = format!("tracer-musl-resolve-{}", std::process::id());
    let src = dir.join(format!("{stem}.c"));
    let bin = dir.join(stem);
    std::fs::write(&src, SOURCE).unwrap();
    let _src = RemoveOnDrop(src.clone());
    let out = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("musl-gcc (musl-tools, installed by `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "musl-gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// The DNS server forwards to an upstream that takes 150 ms: the client
/// waits 150 ms and so does the server's own port. The finding says slow,
/// not bridge-related, transparent mode would not change it, with both
/// latencies as evidence.
#[test_log::test]
fn slow_upstream_behind_the_server_is_not_the_bridge() {
    if !privileged("slow_upstream_behind_the_server_is_not_the_bridge") {
        return;
    }
    const DELAY: Duration = Duration::from_millis(150);
    const LOOKUPS: usize = 6;
    let l = lab("cni0", 3);
    let upstream = l.topo.pods[2].clone();
    let _upstream = DnsServer::start_delayed(&upstream.netns, upstream.ip, &records(), DELAY);
    let _forwarder = DnsServer::start_forwarding(
        &l.server.netns,
        l.server.ip,
        SocketAddrV4::new(upstream.ip, 53),
        DELAY,
        NAME,
    );
    let _resolv = ResolvConf::write(&l.client.netns, l.server.ip, &["timeout:3"]);
    allow_aaaa_lookups(&l.client.netns);
    let tracer = TracerRun::start(&l.topo.node, &["--dns-slow-ms", "100"]);
    let capture = Capture::start(&l.topo.node, &l.client.host_if);
    for _ in 0..LOOKUPS {
        let lookup = getent_ahosts(&l.client.netns, NAME);
        assert!(lookup.ok(), "{lookup:?}");
        assert!(lookup.elapsed >= DELAY, "client waited: {lookup:?}");
    }
    let packets = capture.stop();
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);

    let mut times: Vec<f64> = packets.iter().filter_map(|p| p.dns_time).collect();
    times.sort_by(f64::total_cmp);
    let truth_ms = times[times.len() / 2] * 1000.0;
    let f = dns_finding(&report);
    let evidence = |name: &str| -> f64 {
        f["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == name)
            .unwrap_or_else(|| panic!("evidence {name}: {f:#}"))[1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (client_ms, server_ms) = (evidence("client_p50_ms"), evidence("server_side_p50_ms"));
    eprintln!(
        "tshark p50 {truth_ms:.1} ms; client side {client_ms:.1}, server side {server_ms:.1}"
    );
    assert!((client_ms - truth_ms).abs() <= truth_ms * 0.05, "{f:#}");
    assert!(server_ms >= DELAY.as_secs_f64() * 1000.0 * 0.95, "{f:#}");
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert_eq!(f["bridge_related"], "no", "{f:#}");
    assert_eq!(f["transparent_mode_resolves"], "no", "{f:#}");
    assert!(
        f["why"].as_str().unwrap().contains("not a bridge problem"),
        "{f:#}"
    );
}

/// nftables in the server pod drops every answer dnsmasq sends: the
/// client's queries reach the server's port and no answer leaves it. Each
/// lost send is counted once and located in the server.
#[test_log::test]
fn answers_dropped_in_the_server_pod_are_located_there() {
    if !privileged("answers_dropped_in_the_server_pod_are_located_there") {
        return;
    }
    const LOOKUPS: usize = 2;
    let l = lab("docker0", 2);
    let _dns = DnsServer::start(&l.server.netns, l.server.ip, &records());
    // The table lives in the server pod's namespace and goes with it.
    run(
        &l.topo,
        &l.server.netns,
        "nft",
        &["add table inet tracer_drop; \
             add chain inet tracer_drop out { type filter hook output priority 0; }; \
             add rule inet tracer_drop out udp sport 53 counter drop"],
    );
    let _resolv = ResolvConf::write(&l.client.netns, l.server.ip, &["timeout:1", "attempts:2"]);
    allow_aaaa_lookups(&l.client.netns);
    let tracer = TracerRun::start(&l.topo.node, &["--dns-timeout", "1"]);
    let capture = Capture::start(&l.topo.node, &l.client.host_if);
    let start = Instant::now();
    for _ in 0..LOOKUPS {
        assert!(!getent_ahosts(&l.client.netns, NAME).ok());
    }
    // Let the sweep (timeout + 1 s after the last send) take them.
    std::thread::sleep(Duration::from_millis(2500));
    let packets = capture.stop();
    let report = tracer.stop(Signal::SIGINT);
    let dropped = nft_counter(&l.topo, &l.server.netns);
    eprintln!("{LOOKUPS} failed lookups in {:?}", start.elapsed());

    let queries = packets.iter().filter(|p| !p.response).count() as u64;
    assert_eq!(packets.iter().filter(|p| p.response).count(), 0);
    assert_eq!(
        dropped, queries,
        "each query answered and dropped in the pod"
    );
    let x = &report["dns"]["exchanges"];
    // Every send the client made got no answer: counted once each.
    assert_eq!(x["lost_sends"], queries, "{x:#}");
    assert_eq!(
        x["lost_at"],
        serde_json::json!({"in_server": queries}),
        "{x:#}"
    );
    let f = dns_finding(&report);
    assert_eq!(f["bridge_related"], "no", "{f:#}");
    assert_eq!(f["transparent_mode_resolves"], "no", "{f:#}");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("{queries} unanswered sends")),
        "{f:#}"
    );
}

/// Packets the drop rule counted.
fn nft_counter(topo: &Topology, netns: &str) -> u64 {
    let out = run(
        topo,
        netns,
        "nft",
        &["list", "table", "inet", "tracer_drop"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {text}"))
}

/// nftables on the node's bridge drops first the answers, then the queries,
/// between the two pods' ports: the lost sends are located after the
/// server's port (its answer left) and before it (never arrived), from the
/// client's side, and the finding blames the path, in part the bridge.
#[test_log::test]
fn loss_on_the_bridge_is_located_between_the_ports() {
    if !privileged("loss_on_the_bridge_is_located_between_the_ports") {
        return;
    }
    let l = lab("cni0", 2);
    let _dns = DnsServer::start(&l.server.netns, l.server.ip, &records());
    let _resolv = ResolvConf::write(&l.client.netns, l.server.ip, &["timeout:1", "attempts:2"]);
    allow_aaaa_lookups(&l.client.netns);
    let nft = |rule: &str| {
        run(&l.topo, &l.topo.node, "nft", &[rule]);
    };
    // The table lives in the node's namespace and goes with it.
    nft("add table bridge tracer_drop; \
         add chain bridge tracer_drop pass { type filter hook forward priority 0; }");
    let tracer = TracerRun::start(&l.topo.node, &["--dns-timeout", "1"]);
    let at_client = Capture::start(&l.topo.node, &l.client.host_if);
    let at_server = Capture::start(&l.topo.node, &l.server.host_if);
    nft("add rule bridge tracer_drop pass udp sport 53 drop");
    assert!(!getent_ahosts(&l.client.netns, "n0.lab.test").ok());
    nft("flush chain bridge tracer_drop pass; add rule bridge tracer_drop pass udp dport 53 drop");
    assert!(!getent_ahosts(&l.client.netns, "n1.lab.test").ok());
    std::thread::sleep(Duration::from_millis(2500));
    let (client_side, server_side) = (at_client.stop(), at_server.stop());
    let report = tracer.stop(Signal::SIGINT);

    let sent: Vec<&DnsPacket> = client_side.iter().filter(|p| !p.response).collect();
    assert!(
        client_side.iter().all(|p| !p.response),
        "no answer reached the client"
    );
    let answered_at_server = |id: u16| server_side.iter().any(|p| p.response && p.id == id);
    let after = sent.iter().filter(|p| answered_at_server(p.id)).count() as u64;
    let before = sent.len() as u64 - after;
    eprintln!(
        "{} sends: {after} answered at the server's port, {before} never reached it",
        sent.len()
    );
    assert!(after > 0 && before > 0);
    let x = &report["dns"]["exchanges"];
    assert_eq!(x["lost_sends"], sent.len() as u64, "{x:#}");
    assert_eq!(
        x["lost_at"],
        serde_json::json!({"after_server_port": after, "before_server_port": before}),
        "{x:#}"
    );
    let f = dns_finding(&report);
    assert_eq!(f["bridge_related"], "partly", "{f:#}");
}
