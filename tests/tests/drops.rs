//! Drop reasons end to end: each named reason provoked on purpose in
//! namespaces the test creates, the real `tracer` binary, and the kernel's
//! own view of the same drops as ground truth:
//! - SOCKET_RCVBUFF: a DNS server socket with the smallest SO_RCVBUF that
//!   never reads; truth: the server namespace's `/proc/net/snmp` Udp
//!   RcvbufErrors;
//! - NETFILTER_DROP: an nft input rule with a counter; truth: the counter;
//! - NEIGH_FAILED: datagrams to an address of the pod subnet nobody owns;
//!   truth: every datagram sent (none can leave), and `ip neigh` FAILED;
//! - QDISC_DROP: a tiny tbf on the client's eth0; truth: `tc -s qdisc`
//!   dropped.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::{
    lab::topology::{Datapath, Topology},
    netns,
};
use tracer_tests::{
    TracerRun, dns::build_query, number_after, privileged, send_udp, send_udp_bytes,
};

/// Port the nft rule drops.
const DISCARD_PORT: u16 = 9;
/// An address in the pods' /16 that no pod has.
const ABSENT: Ipv4Addr = Ipv4Addr::new(10, 240, 200, 200);
const QUERY_ID: u16 = 0x4d21;
const QTYPE_A: u16 = 1;

/// A UDP socket bound in a pod with the smallest receive buffer, never
/// read: an overloaded DNS server.
struct StuckServer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Result<(), netns::NetnsError>>,
}

impl StuckServer {
    fn start(ns: &str, addr: SocketAddrV4) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let handle = netns::spawn_in(ns, move || {
            let socket = UdpSocket::bind(addr).expect("bind stuck server");
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and an int option of the right size;
            // the kernel raises it to its minimum (SOCK_MIN_RCVBUF).
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_RCVBUF");
            ready_tx.send(()).expect("ready");
            let _ = stop_rx.recv();
            drop(socket);
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("stuck server bound");
        Self { stop, handle }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.handle.join().expect("join").expect("netns");
    }
}

fn run(topo: &Topology, ns: &str, args: &[&str]) -> String {
    let out = topo.exec(ns, args[0], &args[1..]).expect("exec");
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Udp:` counter `field` of `/proc/net/snmp` in `ns`.
fn udp_snmp(topo: &Topology, ns: &str, field: &str) -> u64 {
    let text = run(topo, ns, &["cat", "/proc/net/snmp"]);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().expect("header"), udp.next().expect("values"));
    let at = names
        .split_whitespace()
        .position(|n| n == field)
        .unwrap_or_else(|| panic!("{field} not in {names}"));
    values
        .split_whitespace()
        .nth(at)
        .expect("value")
        .parse()
        .expect("number")
}

/// tracer's drops of `reason` attributed to the pod behind `host_if`.
fn traced(report: &Value, reason: &str, host_if: &str) -> u64 {
    report["drops"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["reason"] == reason && r["interface"] == host_if)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

#[test_log::test]
fn drop_reasons_equal_the_kernels_counters() {
    if !privileged("drop_reasons_equal_the_kernels_counters") {
        return;
    }
    let started = Instant::now();
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    if let Err(why) = tracer::probes::kernel_info().drop_reasons.available() {
        // Before v5.17: no reasons, and the report says why.
        let report = TracerRun::start(&topo.node, &[]).stop(Signal::SIGINT);
        assert_eq!(report["drops"]["available"], false, "{:#}", report["drops"]);
        assert_eq!(report["drops"]["unavailable"], why.as_str());
        assert!(why.contains("v5.17"), "{why}");
        eprintln!("no drop reasons on this kernel, as the report says: {why}");
        return;
    }
    let (client, server) = (&topo.pods[0], &topo.pods[1]);
    let stuck = StuckServer::start(&server.netns, SocketAddrV4::new(server.ip, 53));
    run(
        &topo,
        &server.netns,
        &[
            "nft",
            &format!(
                "add table ip drops_test; add chain ip drops_test input {{ type filter hook input priority 0; }}; \
         add rule ip drops_test input udp dport {DISCARD_PORT} counter drop"
            ),
        ],
    );
    // Neighbour resolution fails after one probe 100 ms later (default:
    // three probes a second apart).
    for (key, value) in [("mcast_solicit", "1"), ("retrans_time_ms", "100")] {
        run(
            &topo,
            &client.netns,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.neigh.eth0.{key}={value}"),
            ],
        );
    }
    let rcvbuf_before = udp_snmp(&topo, &server.netns, "RcvbufErrors");
    let tracer = TracerRun::start(&topo.node, &["--dns-timeout", "1"]);

    // SOCKET_RCVBUFF: one DNS query re-sent 200 times to the stuck server.
    let query = build_query(QUERY_ID, "drop.lab.test", QTYPE_A);
    send_udp_bytes(
        &client.netns,
        SocketAddrV4::new(server.ip, 53),
        40053,
        200,
        query,
    );
    // NETFILTER_DROP.
    send_udp(
        &client.netns,
        SocketAddrV4::new(server.ip, DISCARD_PORT),
        40009,
        150,
        64,
    );
    // NEIGH_FAILED: three datagrams wait in the neighbour's queue and die
    // with it.
    const TO_ABSENT: u64 = 3;
    send_udp(
        &client.netns,
        SocketAddrV4::new(ABSENT, DISCARD_PORT),
        40010,
        TO_ABSENT,
        64,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let neigh = loop {
        let neigh = run(
            &topo,
            &client.netns,
            &["ip", "-s", "neigh", "show", &ABSENT.to_string()],
        );
        if neigh.contains("FAILED") || Instant::now() > deadline {
            break neigh;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // QDISC_DROP: a 3 kB tbf queue at 100 kbit/s, 300 datagrams of 500 B.
    run(
        &topo,
        &client.netns,
        &[
            "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "100kbit", "burst", "1600",
            "limit", "3000",
        ],
    );
    send_udp(
        &client.netns,
        SocketAddrV4::new(server.ip, DISCARD_PORT),
        40011,
        300,
        500,
    );
    let qdisc = run(
        &topo,
        &client.netns,
        &["tc", "-s", "qdisc", "show", "dev", "eth0"],
    );
    // The query is unanswered 2 s (timeout + 1 s) after its last send.
    std::thread::sleep(Duration::from_millis(2600));
    let report = tracer.stop(Signal::SIGINT);
    stuck.stop();

    let drops = &report["drops"];
    assert_eq!(drops["available"], true, "{drops:#}");
    let rcvbuf = udp_snmp(&topo, &server.netns, "RcvbufErrors") - rcvbuf_before;
    let nft = run(
        &topo,
        &server.netns,
        &["nft", "list", "table", "ip", "drops_test"],
    );
    let netfilter = number_after(&nft, "counter packets");
    let qdisc_dropped = number_after(&qdisc, "dropped");
    let figures = [
        (
            "SOCKET_RCVBUFF",
            traced(&report, "SOCKET_RCVBUFF", &server.host_if),
            rcvbuf,
        ),
        (
            "NETFILTER_DROP",
            traced(&report, "NETFILTER_DROP", &server.host_if),
            netfilter,
        ),
        (
            "NEIGH_FAILED",
            traced(&report, "NEIGH_FAILED", &client.host_if)
                + traced(&report, "NEIGH_QUEUEFULL", &client.host_if),
            TO_ABSENT,
        ),
        (
            "QDISC_DROP",
            traced(&report, "QDISC_DROP", &client.host_if),
            qdisc_dropped,
        ),
    ];
    for (reason, tracer_count, kernel) in figures {
        eprintln!("{reason}: tracer {tracer_count}, kernel {kernel}");
    }
    eprintln!(
        "by reason: {}; locations: {}",
        drops["by_reason"], drops["locations"]
    );
    assert!(neigh.contains("FAILED"), "neighbour not failed: {neigh}");
    for (reason, tracer_count, kernel) in figures {
        assert!(kernel > 0, "{reason} not provoked: {drops:#}");
        assert_eq!(tracer_count, kernel, "{reason}: {drops:#}");
    }
    // The unanswered query carries the reason its re-sends died of.
    let unanswered = report["dns"]["unanswered"].as_array().expect("unanswered");
    let ours = unanswered
        .iter()
        .find(|u| u["id"] == QUERY_ID && u["drop"].is_object())
        .unwrap_or_else(|| panic!("no unanswered query {QUERY_ID} with a drop: {unanswered:#?}"));
    assert_eq!(ours["drop"]["reason"], "SOCKET_RCVBUFF", "{ours:#}");
    assert_eq!(ours["drop"]["packet"], "query", "{ours:#}");
    assert_eq!(ours["drop"]["count"], rcvbuf, "{ours:#}");
    // The DNS verdict follows the reason: an overloaded server, not the
    // bridge.
    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["symptom"] == "dns_latency")
        .expect("dns finding");
    assert_eq!(finding["detected"], true, "{finding:#}");
    assert_eq!(finding["transparent_mode_resolves"], "no", "{finding:#}");
    assert!(
        finding["why"]
            .as_str()
            .unwrap_or_default()
            .contains("server is overloaded"),
        "{finding:#}"
    );
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
