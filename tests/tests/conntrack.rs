//! conntrack insert races end to end: a kube-proxy-like service (DNAT to
//! backends, conntrack doing the reverse NAT) in the node namespace, real
//! clients, the real `tracer` binary, and the kernel's own counters for the
//! node namespace as ground truth.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::{
    conntrack::stat::ConntrackStats,
    lab::topology::{Datapath, Topology},
};
use tracer_tests::{
    TracerRun,
    dns::{DnsServer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    frames::{Frame, L4},
    privileged,
};

const DNS_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// The kernel's conntrack counters of namespace `ns`.
fn kernel_counters(topo: &Topology, ns: &str) -> ConntrackStats {
    let out = topo
        .exec(ns, "cat", &["/proc/net/stat/nf_conntrack"])
        .expect("read conntrack stats");
    ConntrackStats::parse(&String::from_utf8_lossy(&out.stdout)).expect("parse stats")
}

fn tracer_count(report: &Value, name: &str) -> u64 {
    report["conntrack"]["tracer"][name].as_u64().unwrap_or(0)
}

/// glibc clients in three pods resolving through a two-backend DNS service,
/// in parallel on both CPUs, for a bounded time. tracer's figures equal the
/// kernel's own counters for the node namespace over the same interval.
fn dns_service_workload(datapath: Datapath) {
    let topo = Topology::build(datapath, 5).expect("topology");
    let records = [(
        "api.lab.test",
        Ipv4Addr::new(10, 96, 1, 1),
        "fd00::1".parse().unwrap(),
    )];
    let _dns: Vec<DnsServer> = topo.pods[..2]
        .iter()
        .map(|p| DnsServer::start(&p.netns, p.ip, &records))
        .collect();
    topo.add_service(DNS_SERVICE, 53, &[topo.pods[0].ip, topo.pods[1].ip])
        .expect("service");
    let clients = topo.pods[2..].to_vec();
    let _resolv: Vec<ResolvConf> = clients
        .iter()
        .map(|c| {
            allow_aaaa_lookups(&c.netns);
            ResolvConf::write(&c.netns, DNS_SERVICE, &["timeout:1", "attempts:2"])
        })
        .collect();

    let before = kernel_counters(&topo, &topo.node);
    let tracer = TracerRun::start(&topo.node, &[]);
    let deadline = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = clients
        .iter()
        .map(|c| {
            let ns = c.netns.clone();
            std::thread::spawn(move || {
                let mut lookups = 0;
                while Instant::now() < deadline {
                    let _ = getent_ahosts(&ns, "api.lab.test");
                    lookups += 1;
                }
                lookups
            })
        })
        .collect();
    let lookups: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);
    let after = kernel_counters(&topo, &topo.node);
    let truth = after.delta(&before);

    let ct = &report["conntrack"];
    eprintln!(
        "{datapath:?}: {lookups} lookups; kernel insert_failed +{}, drop +{}, clash_resolve +{:?}; tracer mode {}, {}",
        truth.insert_failed, truth.drop, truth.clash_resolved, ct["mode"], ct["tracer"]
    );
    assert!(lookups > 20, "workload ran: {lookups} lookups");
    let reported = &ct["kernel"];
    assert_eq!(reported["insert_failed"], truth.insert_failed);
    assert_eq!(reported["drop"], truth.drop);
    assert_eq!(reported["clash_resolved"].as_u64(), truth.clash_resolved);
    // Drops attributed by the probes, whichever hook this kernel allowed.
    let attributed = match ct["mode"].as_str() {
        Some("fexit" | "kretprobe") => {
            assert_eq!(
                tracer_count(&report, "clashes_resolved"),
                truth.clash_resolved.unwrap_or(0)
            );
            tracer_count(&report, "insert_drops")
        }
        Some("kfree_skb") => tracer_count(&report, "unconfirmed_drops"),
        other => panic!("no conntrack hook attached ({other:?}): {ct:#}"),
    };
    assert_eq!(attributed, truth.insert_failed, "{ct:#}");
}

#[test_log::test]
fn dns_service_conntrack_counts_equal_kernel_counters_bridge() {
    if privileged("dns_service_conntrack_counts_equal_kernel_counters_bridge") {
        dns_service_workload(Datapath::Bridge);
    }
}

#[test_log::test]
fn dns_service_conntrack_counts_equal_kernel_counters_transparent() {
    if privileged("dns_service_conntrack_counts_equal_kernel_counters_transparent") {
        dns_service_workload(Datapath::Transparent);
    }
}

/// Sends the same TCP SYN from two threads pinned to CPUs 0 and 1 at the
/// same instant, a new source port each round. TCP does not allow clashes
/// (`allow_clash` is false), so when both SYNs miss the table and race to
/// confirm, the loser is dropped in `__nf_conntrack_confirm`.
fn race_syns(client_ns: &str, client: Ipv4Addr, rounds: u16, first_port: u16) {
    tracer_tests::race_pinned(client_ns, TCP_SERVICE, rounds, move |round| {
        Frame::ipv4(
            client,
            TCP_SERVICE,
            L4::Tcp {
                src: first_port + round,
                dst: 80,
                flags: 0x02,
                seq: 1000,
            },
            &[],
        )
        .tcp_dns_length_prefix(false)
        .build()
    });
}

/// A real NF_DROP in the confirm path, provoked on purpose, attributed to
/// the right pod and 5-tuple, and equal to the kernel's insert_failed.
#[test_log::test]
fn provoked_insert_drop_is_attributed_to_pod_and_tuple() {
    if !privileged("provoked_insert_drop_is_attributed_to_pod_and_tuple") {
        return;
    }
    let topo = Topology::build(Datapath::Transparent, 2).expect("topology");
    let (backend, client) = (topo.pods[0].clone(), topo.pods[1].clone());
    topo.add_service(TCP_SERVICE, 80, &[backend.ip])
        .expect("service");
    // The client pod must not answer the backend's SYN-ACK/RST with resets
    // of its own that could disturb the counts: drop what comes back.
    topo.exec(
        &client.netns,
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--sport", "80", "-j", "DROP"],
    )
    .expect("client firewall");

    let before = kernel_counters(&topo, &topo.node);
    let tracer = TracerRun::start(&topo.node, &[]);
    let start = Instant::now();
    let mut port = 20000;
    loop {
        race_syns(&client.netns, client.ip, 500, port);
        port += 500;
        let failed = kernel_counters(&topo, &topo.node)
            .delta(&before)
            .insert_failed;
        if failed >= 3 || start.elapsed() > Duration::from_secs(20) || port > 60000 {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGINT);
    let truth = kernel_counters(&topo, &topo.node).delta(&before);
    let ct = &report["conntrack"];
    eprintln!(
        "provoked: kernel insert_failed +{}, drop +{}; tracer {}",
        truth.insert_failed, truth.drop, ct["tracer"]
    );
    assert!(
        truth.insert_failed >= 1,
        "the race never lost a SYN in {} rounds",
        port - 20000
    );
    let kind = if ct["mode"] == "fexit" || ct["mode"] == "kretprobe" {
        "insert_drops"
    } else {
        "unconfirmed_drops"
    };
    assert_eq!(tracer_count(&report, kind), truth.insert_failed, "{ct:#}");
    let events: Vec<&Value> = ct["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    // The report lists at most 500 events; the rest are counted per kind.
    let not_listed = ct["events_not_listed"][kind].as_u64().unwrap_or(0);
    assert_eq!(events.len() as u64 + not_listed, truth.insert_failed);
    for e in events {
        assert_eq!(e["protocol"], "tcp");
        let original = e["original"].as_str().unwrap();
        assert!(
            original.starts_with(&format!("{}:", client.ip)),
            "{original}"
        );
        assert!(
            original.ends_with(&format!("-> {TCP_SERVICE}:80")),
            "{original}"
        );
        let reply = e["reply"].as_str().unwrap();
        assert!(
            reply.starts_with(&format!("{}:80 ->", backend.ip)),
            "DNAT'd to the backend: {reply}"
        );
    }
    let tally = ct["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == client.ip.to_string())
        .unwrap_or_else(|| panic!("client tally: {ct:#}"));
    assert_eq!(tally[kind], truth.insert_failed);
    let _ = SocketAddrV4::new(client.ip, 0);
}
