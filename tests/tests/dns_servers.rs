//! The `dns_servers` finding: the node's DNS server list changes from
//! [A] to [B, D] while pods keep the resolv.conf they were given. Real
//! glibc resolvers (`getent ahosts`) in pod namespaces, two dnsmasq servers
//! (A is stopped when it leaves the list, as a decommissioned server is),
//! the real tracer binary with `--node-root` pointing at the node's files.
//! Ground truth: tshark on each server's own `eth0`.
//!
//! Pods:
//! - `stale` keeps `nameserver A`: every query goes to a server no longer in
//!   the node's list, none is answered;
//! - `updated` was rewritten to [B, D] (what a CNI that follows the list
//!   does): not flagged;
//! - `first` was rewritten to [B] only (the truncation the AKS FAQ blames
//!   on bridge mode): flagged `first_only`, not stale;
//! - `cluster` uses the cluster DNS service with a ClusterFirst search
//!   list: its server is the cluster DNS, not stale — but the service's
//!   backend, a CoreDNS stand-in (dnsmasq forwarding to the upstream it
//!   was given at start, A, as CoreDNS's `forward . /etc/resolv.conf` does
//!   without re-reading it), is: its lookups fail, and tracer names the
//!   CoreDNS pod and its queries to A.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::lab::{
    dns_servers,
    topology::{Datapath, Topology},
};
use tracer_tests::{
    TracerRun,
    dns::{Capture, DnsPacket, DnsServer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    privileged,
};

const NAME: &str = "api.lab.test";
const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The node's second new server: listed, never queried (glibc asks B first).
const D: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 9);
const LOOKUPS: usize = 4;

/// A directory standing for the node's root; removed when dropped.
struct NodeRoot(PathBuf);

impl NodeRoot {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-node-root-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).expect("node root");
        Self(dir)
    }

    fn set_list(&self, servers: &[Ipv4Addr]) {
        write_resolv(&self.0.join("etc/resolv.conf"), servers, "");
    }
}

impl Drop for NodeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_resolv(path: &Path, servers: &[Ipv4Addr], search: &str) {
    dns_servers::write_resolv(path, servers, search)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn pod_resolv(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns).join("resolv.conf")
}

/// A long-lived process in the pod (its "pause" container): tracer reads the
/// pod's resolv.conf through `/proc/<pid>/root`. Killed by PID on drop.
struct PodProcess(Child);

impl PodProcess {
    fn start(netns: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        // `ip netns exec` mounts /etc/netns/<name> files before exec'ing.
        let root = PathBuf::from(format!("/proc/{}/root/etc/resolv.conf", child.id()));
        let start = Instant::now();
        while fs::read_to_string(&root).map_or(true, |t| !t.contains("nameserver")) {
            assert!(
                start.elapsed().as_secs() < 5,
                "{} not mounted",
                root.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child)
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn queries_from(packets: &[DnsPacket], client: Ipv4Addr) -> u64 {
    packets
        .iter()
        .filter(|p| !p.response && p.src == client)
        .count() as u64
}

fn answers_to(packets: &[DnsPacket], client: Ipv4Addr) -> u64 {
    packets
        .iter()
        .filter(|p| p.response && p.dst == client)
        .count() as u64
}

fn pod_row<'a>(report: &'a Value, host_if: &str) -> &'a Value {
    report["dns_servers"]["pods"]
        .as_array()
        .expect("dns_servers.pods")
        .iter()
        .find(|p| p["interface"] == host_if)
        .unwrap_or_else(|| {
            panic!(
                "no dns_servers row for {host_if}: {:#}",
                report["dns_servers"]
            )
        })
}

fn server(row: &Value, ip: Ipv4Addr) -> &Value {
    row["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["server"] == ip.to_string())
        .unwrap_or_else(|| panic!("no server {ip} in {row:#}"))
}

#[test_log::test]
fn stale_and_truncated_server_lists_against_tshark() {
    if !privileged("stale_and_truncated_server_lists_against_tshark") {
        return;
    }
    let started = Instant::now();
    let topo = Topology::build(Datapath::Bridge, 7).expect("topology");
    let (a, b, coredns) = (
        topo.pods[0].clone(),
        topo.pods[1].clone(),
        topo.pods[6].clone(),
    );
    let clients = &topo.pods[2..6];
    let [stale, updated, first, cluster] = [0, 1, 2, 3].map(|i| clients[i].clone());
    let records = [(
        NAME,
        Ipv4Addr::new(10, 96, 1, 20),
        "fd00::20".parse::<Ipv6Addr>().unwrap(),
    )];
    let mut server_a = Some(DnsServer::start(&a.netns, a.ip, &records));
    let _server_b = DnsServer::start(&b.netns, b.ip, &records);
    // CoreDNS (dnsPolicy Default) got the node's list at start: [A].
    let _coredns_resolv = ResolvConf::write(&coredns.netns, a.ip, &[]);
    let _coredns = DnsServer::start_forwarding(
        &coredns.netns,
        coredns.ip,
        SocketAddrV4::new(a.ip, 53),
        Duration::ZERO,
        NAME,
    );
    topo.add_service(SERVICE, 53, &[coredns.ip])
        .expect("service");

    // Before the change: the node lists A; every pod was given A (the
    // cluster pod the service, with kubelet's ClusterFirst search list).
    let node = NodeRoot::new();
    node.set_list(&[a.ip]);
    let _resolv: Vec<ResolvConf> = clients
        .iter()
        .map(|p| ResolvConf::write(&p.netns, a.ip, &["timeout:1", "attempts:2"]))
        .collect();
    write_resolv(
        &pod_resolv(&cluster.netns),
        &[SERVICE],
        "search default.svc.cluster.local svc.cluster.local cluster.local\n",
    );
    for p in clients {
        allow_aaaa_lookups(&p.netns);
    }
    let _procs: Vec<PodProcess> = clients
        .iter()
        .map(|p| PodProcess::start(&p.netns))
        .collect();

    // The change: the node's list becomes [B, D], A is decommissioned; the
    // `updated` pod follows, the `first` pod gets only the first server.
    node.set_list(&[b.ip, D]);
    drop(server_a.take());
    write_resolv(&pod_resolv(&updated.netns), &[b.ip, D], "");
    write_resolv(&pod_resolv(&first.netns), &[b.ip], "");

    let root = node.0.to_str().expect("utf-8").to_owned();
    let tracer = TracerRun::start(&topo.node, &["--node-root", &root, "--dns-timeout", "1"]);
    let cap_a = Capture::start(&a.netns, "eth0");
    let cap_b = Capture::start(&b.netns, "eth0");
    let cap_coredns = Capture::start(&coredns.netns, "eth0");
    let mut ok = std::collections::BTreeMap::new();
    // The cluster pod's failing lookups walk its search list (~6 s each):
    // one is enough.
    for (pod, lookups) in [
        (&stale, LOOKUPS),
        (&updated, LOOKUPS),
        (&first, LOOKUPS),
        (&cluster, 1),
    ] {
        let n = (0..lookups)
            .filter(|_| getent_ahosts(&pod.netns, NAME).ok())
            .count();
        ok.insert(pod.netns.clone(), n);
    }
    let (at_a, at_b, at_coredns) = (cap_a.stop(), cap_b.stop(), cap_coredns.stop());
    let report = tracer.stop(Signal::SIGINT);
    eprintln!("lookups ok per pod: {ok:?}");

    // Client side: the stale pod's and the cluster pod's lookups all fail
    // (the latter through the stale CoreDNS), the others' succeed.
    assert_eq!(ok[&stale.netns], 0);
    assert_eq!(ok[&cluster.netns], 0);
    for pod in [&updated, &first] {
        assert_eq!(ok[&pod.netns], LOOKUPS, "{}", pod.netns);
    }

    // tracer's per-pod, per-server sends equal what reached each server.
    let s = pod_row(&report, &stale.host_if);
    let to_a = server(s, a.ip);
    let wire_a = queries_from(&at_a, stale.ip);
    eprintln!(
        "stale pod → A: tracer {} sends / {} answered, tshark at A {wire_a} queries / {} answers",
        to_a["sends"],
        to_a["answered"],
        answers_to(&at_a, stale.ip)
    );
    assert!(
        wire_a >= 2 * LOOKUPS as u64,
        "A + AAAA per lookup: {at_a:#?}"
    );
    assert_eq!(to_a["sends"], wire_a, "{s:#}");
    assert_eq!(to_a["answered"], 0);
    assert_eq!(answers_to(&at_a, stale.ip), 0);
    assert_eq!(to_a["class"], "not_in_node_list");
    assert_eq!(to_a["configured"], true);
    assert_eq!(s["stale"], true, "{s:#}");
    assert!(
        s["config_source"]
            .as_str()
            .unwrap_or("")
            .starts_with("/proc/"),
        "read through the pod's process: {s:#}"
    );

    for (pod, via, at) in [
        (&updated, b.ip, &at_b),
        (&first, b.ip, &at_b),
        (&cluster, SERVICE, &at_coredns),
    ] {
        let row = pod_row(&report, &pod.host_if);
        let wire = queries_from(at, pod.ip);
        let answered = answers_to(at, pod.ip);
        let used = server(row, via);
        eprintln!(
            "{} → {via}: tracer {} sends / {} answered, tshark at its server {wire} / {answered}",
            pod.netns, used["sends"], used["answered"]
        );
        assert_eq!(used["sends"], wire, "{row:#}");
        assert_eq!(used["answered"], answered, "{row:#}");
        assert_eq!(row["stale"], false, "{row:#}");
        assert_eq!(queries_from(&at_a, pod.ip), 0);
    }
    assert_eq!(
        server(pod_row(&report, &cluster.host_if), SERVICE)["class"],
        "cluster_dns"
    );
    assert_eq!(
        server(pod_row(&report, &updated.host_if), b.ip)["class"],
        "node_list"
    );
    assert_eq!(pod_row(&report, &first.host_if)["first_only"], true);
    assert_eq!(pod_row(&report, &updated.host_if)["first_only"], false);

    // The CoreDNS stand-in forwards to A: stale, every query to A counted.
    let c = pod_row(&report, &coredns.host_if);
    let upstream = server(c, a.ip);
    let wire = queries_from(&at_a, coredns.ip);
    eprintln!(
        "coredns → A: tracer {} sends / {} answered, tshark at A {wire}",
        upstream["sends"], upstream["answered"]
    );
    assert!(wire > 0, "the forwarder asked A: {at_a:#?}");
    assert_eq!(upstream["sends"], wire, "{c:#}");
    assert_eq!(upstream["answered"], 0);
    assert_eq!(upstream["configured"], true, "{c:#}");
    assert_eq!(c["stale"], true, "{c:#}");

    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["symptom"] == "dns_servers")
        .unwrap_or_else(|| panic!("no dns_servers finding: {:#}", report["findings"]));
    assert_eq!(finding["detected"], true, "{finding:#}");
    assert_eq!(finding["severity"], "warning", "{finding:#}");
    eprintln!("finding: {}", finding["summary"]);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
