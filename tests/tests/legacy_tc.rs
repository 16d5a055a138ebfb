//! Legacy TC (clsact + cls_bpf, the only way before v6.6), forced with
//! `--tc-attach legacy` so it runs on any kernel: exact counts, a clean exit
//! leaves nothing, `kill -9` leaves filters the next start removes, two
//! tracers at once, and foreign filters untouched. Ground truth is `tc`.
//!
//! The `legacy_` tests also run by name in VMs with older kernels, where
//! legacy is what tracer picks by itself (forcing it there changes nothing).

use std::{collections::BTreeSet, net::SocketAddrV4, process::Command, time::Duration};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    Receiver, TcFilter, TracerRun, UDP_OVERHEAD, has_clsact, privileged, send_udp, tc_filters,
    tcx_programs, tracer_filters, warm_up,
};

const PAYLOAD: usize = 64;
const LEGACY: [&str; 2] = ["--tc-attach", "legacy"];

/// The interfaces tracer attaches to on a bridge node: pod ports, the
/// bridge, and the node's uplink (a veth too).
fn traced(topo: &Topology) -> Vec<String> {
    let mut ifaces: Vec<String> = topo.pods.iter().map(|p| p.host_if.clone()).collect();
    ifaces.extend(["azure0".to_owned(), "eth0".to_owned()]);
    ifaces
}

/// Program ids of tracer's filters on every interface.
fn filter_ids(node: &str, ifaces: &[String]) -> BTreeSet<u32> {
    ifaces
        .iter()
        .flat_map(|i| tracer_filters(node, i))
        .filter_map(|f| f.id)
        .collect()
}

fn packets(report: &Value, iface: &str, dir: &str) -> u64 {
    interface_count(report, iface, dir, "packets")
}

fn bytes(report: &Value, iface: &str, dir: &str) -> u64 {
    interface_count(report, iface, dir, "bytes")
}

/// `interfaces[name == iface][dir][field]` of a JSON report.
fn interface_count(report: &Value, iface: &str, dir: &str, field: &str) -> u64 {
    report["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|r| r["name"] == iface)
        .unwrap_or_else(|| panic!("{iface} in report"))[dir][field]
        .as_u64()
        .unwrap_or_else(|| panic!("{iface} {dir} {field}"))
}

/// A bridge node with two pods, a receiver on B and warmed-up paths.
struct Node {
    topo: Topology,
    rx: Receiver,
    to: SocketAddrV4,
    port: u16,
}

impl Node {
    fn build(port: u16) -> Self {
        let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
        let b = &topo.pods[1];
        let rx = Receiver::start(&b.netns, b.ip, port);
        let to = SocketAddrV4::new(b.ip, port);
        warm_up(&topo.pods[0].netns, &rx, to, port);
        // A's entry for B never goes stale: no ARP probe lands in the
        // counted batches when a run is slow (minutes in a TCG VM, past the
        // ~30 s reachable time).
        let b_mac = std::process::Command::new("ip")
            .args(["-n", &b.netns, "-br", "link", "show", "eth0"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .nth(2)
                    .map(str::to_owned)
            })
            .expect("ip link")
            .expect("B's MAC");
        let b_ip = b.ip.to_string();
        topo.exec(
            &topo.pods[0].netns,
            "ip",
            &[
                "neigh",
                "replace",
                &b_ip,
                "lladdr",
                &b_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )
        .expect("permanent neighbour");
        Self { topo, rx, to, port }
    }

    /// Sends `count` datagrams A → B and waits until B has them all.
    fn send(&self, count: u64) {
        let want = self.rx.received() + count;
        send_udp(&self.topo.pods[0].netns, self.to, self.port, count, PAYLOAD);
        assert!(
            self.rx.wait_for(want, Duration::from_secs(5)),
            "B received {} of {want}",
            self.rx.received()
        );
        // The last packets' TC egress runs before the socket wakes up,
        // but give the counters' per-CPU updates a moment anyway.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Exact counts on the sender's and the receiver's host veths.
    fn assert_counted(&self, report: &Value, count: u64, who: &str) {
        let (a, b) = (&self.topo.pods[0].host_if, &self.topo.pods[1].host_if);
        assert_eq!(
            packets(report, a, "ingress"),
            count,
            "{who}: A's veth ingress"
        );
        assert_eq!(
            bytes(report, a, "ingress"),
            count * (UDP_OVERHEAD + PAYLOAD as u64),
            "{who}: A's veth ingress bytes"
        );
        assert_eq!(
            packets(report, b, "egress"),
            count,
            "{who}: B's veth egress"
        );
    }
}

/// Forced legacy on a bridge node: two cls_bpf filters per interface (and
/// no TCX program), exact counts of known UDP traffic, and after SIGTERM
/// no filter and no qdisc: `tc` shows the interfaces as before.
#[test_log::test]
fn legacy_counts_exact_udp_and_sigterm_leaves_nothing() {
    if !privileged("legacy_counts_exact_udp_and_sigterm_leaves_nothing") {
        return;
    }
    const COUNT: u64 = 300;
    let node = Node::build(6210);
    let ifaces = traced(&node.topo);
    let node_ns = node.topo.node.clone();
    for iface in &ifaces {
        assert!(!has_clsact(&node_ns, iface), "{iface} starts bare");
    }

    let tracer = TracerRun::start(&node_ns, &LEGACY);
    for iface in &ifaces {
        let filters = tracer_filters(&node_ns, iface);
        let names: BTreeSet<(&str, &str)> = filters
            .iter()
            .map(|f| (f.hook, f.name.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([("egress", "tracer_egress"), ("ingress", "tracer_ingress")]),
            "{iface}: {filters:#?}"
        );
        assert!(
            filters.iter().all(|f| f.line.contains("direct-action")),
            "{filters:#?}"
        );
        assert_eq!(tcx_programs(&node_ns, iface), Vec::<String>::new());
    }
    node.send(COUNT);
    let (report, log) = tracer.stop_with_log(Signal::SIGTERM);

    assert_eq!(report["tc_attach"], "legacy");
    assert!(log.contains("TC attach: legacy"), "{log}");
    node.assert_counted(&report, COUNT, "legacy tracer");
    for iface in &ifaces {
        assert_eq!(
            tc_filters(&node_ns, iface),
            Vec::<TcFilter>::new(),
            "{iface}"
        );
        assert!(!has_clsact(&node_ns, iface), "{iface}: our clsact removed");
    }
    eprintln!(
        "legacy: {COUNT} datagrams counted exactly; SIGTERM left 0 filters and 0 qdiscs on {} interfaces",
        ifaces.len()
    );
}

/// `kill -9` leaves the filters (they keep running the dead tracer's
/// programs); the next tracer removes exactly those, says so in its log and
/// report, counts exactly, and leaves a foreign classic-BPF filter, a
/// foreign u32 filter and their clsact qdisc as they were, through it all.
#[test_log::test]
fn legacy_sigkill_leaves_filters_and_next_start_removes_them() {
    if !privileged("legacy_sigkill_leaves_filters_and_next_start_removes_them") {
        return;
    }
    const COUNT: u64 = 200;
    let node = Node::build(6220);
    let ifaces = traced(&node.topo);
    let node_ns = node.topo.node.clone();
    // Another tool's filters on A's veth, installed first: the qdisc is
    // theirs too. (matchall is not built into this host's kernel; u32 and
    // classic cls_bpf are.)
    let a_if = node.topo.pods[0].host_if.clone();
    for args in [
        vec!["qdisc", "add", "dev", &a_if, "clsact"],
        vec![
            "filter",
            "add",
            "dev",
            &a_if,
            "ingress",
            "pref",
            "20",
            "bpf",
            "bytecode",
            "1,6 0 0 0,",
        ],
        vec![
            "filter", "add", "dev", &a_if, "egress", "pref", "30", "u32", "match", "u32", "0", "0",
        ],
    ] {
        let out = Command::new("tc")
            .args(["-n", &node_ns])
            .args(&args)
            .output()
            .expect("tc");
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let foreign = tc_filters(&node_ns, &a_if);
    assert_eq!(foreign.len(), 2, "{foreign:#?}");

    let first = TracerRun::start(&node_ns, &LEGACY);
    let dead_ids = filter_ids(&node_ns, &ifaces);
    assert_eq!(dead_ids.len(), 2, "one program per direction: {dead_ids:?}");
    first.kill9();
    let left: Vec<TcFilter> = ifaces
        .iter()
        .flat_map(|i| tracer_filters(&node_ns, i))
        .collect();
    assert_eq!(
        left.len(),
        2 * ifaces.len(),
        "kill -9 leaves them: {left:#?}"
    );

    let second = TracerRun::start(&node_ns, &LEGACY);
    let live_ids = filter_ids(&node_ns, &ifaces);
    let per_iface: Vec<usize> = ifaces
        .iter()
        .map(|i| tracer_filters(&node_ns, i).len())
        .collect();
    node.send(COUNT);
    let (report, log) = second.stop_with_log(Signal::SIGTERM);
    assert!(
        live_ids.is_disjoint(&dead_ids),
        "the dead tracer's filters are gone: {live_ids:?} vs {dead_ids:?}; {}\n{log}",
        report["tc_stale_filters"]
    );
    assert!(per_iface.iter().all(|n| *n == 2), "{per_iface:?}");
    let cleanup = &report["tc_stale_filters"];
    assert_eq!(cleanup["removed"], 2 * ifaces.len(), "{cleanup}");
    let cleaned: BTreeSet<&str> = cleanup["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        cleaned,
        ifaces.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert_eq!(cleanup["skipped"], Value::Null);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("a dead tracer left behind"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line per cleanup: {log}");
    assert!(
        lines[0].contains(&format!("removed {} TC filters", 2 * ifaces.len())),
        "{}",
        lines[0]
    );
    node.assert_counted(&report, COUNT, "the tracer after the kill");

    for iface in &ifaces {
        assert_eq!(tracer_filters(&node_ns, iface), Vec::new(), "{iface}");
    }
    assert_eq!(
        tc_filters(&node_ns, &a_if),
        foreign,
        "foreign filters intact"
    );
    assert!(
        has_clsact(&node_ns, &a_if),
        "the foreign tool's qdisc stays"
    );
    eprintln!(
        "legacy kill -9: {} filters left, removed at the next start on {} interfaces; foreign filters intact",
        left.len(),
        cleaned.len()
    );
}

/// Two tracers on one node at once: each counts the same traffic exactly;
/// the second's start-up cleanup removes nothing of the first; the second's
/// exit leaves the first's filters, which go on counting; the first's exit
/// then leaves the node as it found it.
fn two_tracers(mode: &'static str) {
    const COUNT: u64 = 150;
    let node = Node::build(6230);
    let ifaces = traced(&node.topo);
    let node_ns = node.topo.node.clone();
    let args = ["--tc-attach", mode];
    let legacy = mode == "legacy";

    let first = TracerRun::start(&node_ns, &args);
    let first_ids = filter_ids(&node_ns, &ifaces);
    let second = TracerRun::start(&node_ns, &args);
    let both_ids = filter_ids(&node_ns, &ifaces);
    assert!(
        first_ids.is_subset(&both_ids),
        "the second start kept the first's filters"
    );
    for iface in &ifaces {
        let (tcx, filters) = (
            tcx_programs(&node_ns, iface).len(),
            tracer_filters(&node_ns, iface).len(),
        );
        let want = if legacy { (0, 4) } else { (4, 0) };
        assert_eq!((tcx, filters), want, "{iface}: (TCX, legacy) programs");
    }

    node.send(COUNT);
    let (report, _) = second.stop_with_log(Signal::SIGTERM);
    node.assert_counted(&report, COUNT, "second tracer");
    assert_eq!(report["tc_attach"], mode);
    let cleanup = &report["tc_stale_filters"];
    assert_eq!(cleanup["removed"], 0, "{cleanup}");
    if legacy {
        assert_eq!(cleanup["kept_live"], 2 * ifaces.len(), "{cleanup}");
        assert_eq!(
            filter_ids(&node_ns, &ifaces),
            first_ids,
            "the second's exit removed its own filters only"
        );
    }
    for iface in &ifaces {
        assert_eq!(
            tcx_programs(&node_ns, iface).len() + tracer_filters(&node_ns, iface).len(),
            2,
            "{iface}: the first tracer's two programs remain"
        );
    }

    node.send(COUNT);
    let report = first.stop(Signal::SIGTERM);
    node.assert_counted(&report, 2 * COUNT, "first tracer, both batches");
    for iface in &ifaces {
        assert_eq!(tcx_programs(&node_ns, iface), Vec::<String>::new());
        assert_eq!(
            tc_filters(&node_ns, iface),
            Vec::<TcFilter>::new(),
            "{iface}"
        );
        assert!(!has_clsact(&node_ns, iface), "{iface}: qdisc removed");
    }
    eprintln!(
        "{mode}: two tracers counted {COUNT} and {} datagrams exactly",
        2 * COUNT
    );
}

#[test_log::test]
fn legacy_two_tracers_count_exactly_and_keep_each_others_filters() {
    if privileged("legacy_two_tracers_count_exactly_and_keep_each_others_filters") {
        two_tracers("legacy");
    }
}

/// The same on TCX (v6.6+ only: forcing TCX on an older kernel fails).
#[test_log::test]
fn tcx_two_tracers_count_exactly_and_keep_each_others_links() {
    if !privileged("tcx_two_tracers_count_exactly_and_keep_each_others_links") {
        return;
    }
    if tracer_tests::default_tc_attach() != tracer::attach::TcAttachMode::Tcx {
        eprintln!("SKIPPED tcx_two_tracers…: kernel before 6.6 has no TCX");
        return;
    }
    two_tracers("tcx");
}
