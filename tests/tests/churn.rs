//! Pod churn during a trace: 100 pod veths appear and vanish while tracer
//! runs. Each is attached within a second of appearing, detached when it
//! goes, reported up to its last packet, and the surviving pods' counts are
//! untouched.

use std::{
    io::Write as _,
    net::SocketAddrV4,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tracer::lab::topology::{Datapath, Topology};
use tracer_tests::{
    Receiver, TracerRun, UDP_OVERHEAD, attached_programs, number_after, privileged, send_udp,
    wait_until, warm_up,
};

const CHURN: usize = 100;

/// Runs `ip -n NS -batch -` with `lines`: one process for 100 links.
fn ip_batch(netns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.join("\n").as_bytes())
        .expect("write batch");
    assert!(child.wait().expect("wait").success(), "ip -batch failed");
}

#[test_log::test]
fn hundred_pods_come_and_go_during_a_trace() {
    if !privileged("hundred_pods_come_and_go_during_a_trace") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (a, b) = (&topo.pods[0], &topo.pods[1]);
    let rx = Receiver::start(&b.netns, b.ip, 6100);
    let to = SocketAddrV4::new(b.ip, 6100);
    warm_up(&a.netns, &rx, to, 6100);
    let tracer = TracerRun::start(&topo.node, &[]);

    // 100 new "pods": veths enslaved to the bridge, as a CNI adds them.
    let names: Vec<String> = (0..CHURN).map(|i| format!("churn{i}")).collect();
    let add: Vec<String> = names
        .iter()
        .flat_map(|n| {
            [
                format!("link add {n} type veth peer name {n}p"),
                format!("link set {n} master azure0 up"),
            ]
        })
        .collect();
    ip_batch(&topo.node, &add);
    // Traffic between the surviving pods while the others come and go.
    send_udp(&a.netns, to, 6100, 300, 100);

    // A burst of 100 pods (200 veth ends, ~5 netlink events each) is
    // attached within a few seconds; a single new pod within a second.
    let wait_attached = |names: &[String], limit: Duration| {
        let start = Instant::now();
        let mut missing = names.to_vec();
        while !missing.is_empty() && start.elapsed() < limit {
            missing.retain(|n| attached_programs(&topo.node, n).is_empty());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            missing.is_empty(),
            "not attached within {limit:?}: {missing:?}"
        );
        start.elapsed()
    };
    let burst = wait_attached(&names, Duration::from_secs(20));
    eprintln!("burst of {CHURN} pods attached in {burst:?}");
    ip_batch(
        &topo.node,
        &[
            "link add single type veth peer name singlep".to_owned(),
            "link set single master azure0 up".to_owned(),
        ],
    );
    let single = wait_attached(&["single".to_owned()], Duration::from_secs(1));
    eprintln!("one new pod attached in {single:?}");

    let del: Vec<String> = names
        .iter()
        .chain(std::iter::once(&"single".to_owned()))
        .map(|n| format!("link del {n}"))
        .collect();
    ip_batch(&topo.node, &del);
    send_udp(&a.netns, to, 6100, 200, 100);
    assert!(rx.wait_for(501, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(500));
    let report = tracer.stop(Signal::SIGINT);

    let rows = report["interfaces"].as_array().expect("interfaces");
    let row = |name: &str| rows.iter().find(|r| r["name"] == name);
    // The survivors: exact, as if nothing had happened around them.
    let sender = row(&a.host_if).expect("sender row");
    assert_eq!(sender["ingress"]["packets"], 500);
    assert_eq!(sender["ingress"]["bytes"], 500 * (UDP_OVERHEAD + 100));
    assert_eq!(sender["vanished"], false);
    assert_eq!(
        row(&b.host_if).expect("receiver row")["egress"]["packets"],
        500
    );
    // The vanished: still reported, marked gone.
    let gone = names
        .iter()
        .filter(|n| row(n).is_some_and(|r| r["vanished"] == true))
        .count();
    assert_eq!(gone, CHURN, "every churned port is reported as vanished");
    assert!(
        report["losses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["count"] == 0)
    );
}

/// Pods that resolve a name, drop a few datagrams and go, one after
/// another: tracer deletes the kernel entries of each vanished port (DNS
/// histograms, flood counters, drops on either side of it) so a node whose
/// pods churn for weeks never fills those maps, and the report still
/// counts every answer and drop, on the vanished ports' own rows. Ground
/// truth: each `dig` that printed its answer, each pod's nft counter.
#[test_log::test]
fn vanished_pods_free_their_kernel_entries_and_keep_their_answers() {
    if !privileged("vanished_pods_free_their_kernel_entries_and_keep_their_answers") {
        return;
    }
    const PODS: usize = 10;
    let mut topo = Topology::build(Datapath::Bridge, 1).expect("topology");
    let server = topo.pods[0].clone();
    let records = [(
        "api.lab.test",
        std::net::Ipv4Addr::new(10, 96, 0, 20),
        "fd00::20".parse().expect("v6"),
    )];
    let _dns = tracer_tests::dns::DnsServer::start(&server.netns, server.ip, &records);
    let tracer = TracerRun::start(&topo.node, &[]);
    let at = format!("@{}", server.ip);
    let mut answered = 0;
    let mut gone = Vec::new();
    let mut netfilter = Vec::new();
    let drops_on = tracer::probes::kernel_info()
        .drop_reasons
        .available()
        .is_ok();
    for i in 1..=PODS {
        topo.add_pod(i).expect("pod");
    }
    let pods = topo.pods[1..].to_vec();
    // The queries must find tracer on each port (both directions), and
    // the drops each pod's namespace in tracer's scope (its pod index is
    // refreshed on the next 1 s tick after a link event).
    let attached = wait_until(Duration::from_secs(20), || {
        pods.iter()
            .all(|p| attached_programs(&topo.node, &p.host_if).len() >= 2)
    });
    assert!(attached, "tracer on every new port within 20 s");
    if drops_on {
        let inodes: Vec<u32> = pods.iter().map(|p| netns_inode(&p.netns)).collect();
        // 60 s: a TCG VM of the kernel matrix runs tracer's tick (netns
        // scan, pod index) many times slower; on this host it takes ~1 s.
        let scoped = wait_until(Duration::from_secs(60), || {
            let keys = tracer_tests::map_keys(tracer.pid(), "DROPS_SCOPE");
            inodes.iter().all(|inode| {
                keys.iter()
                    .any(|k| k.get(..4) == Some(&inode.to_ne_bytes()[..]))
            })
        });
        assert!(
            scoped,
            "every pod's namespace in the drop scope within 60 s"
        );
    }
    for pod in pods {
        let out = Command::new("ip")
            .args(["netns", "exec", &pod.netns, "dig", "+short", "+tries=1"])
            .args(["+time=2", &at, "api.lab.test", "A"])
            .output()
            .expect("dig");
        if String::from_utf8_lossy(&out.stdout).trim() == "10.96.0.20" {
            answered += 1;
        }
        // A drop inside the pod (nft input rule, with a counter): the
        // pod side of the drops map, placed on its port.
        let nft = format!(
            "add table ip churn; add chain ip churn input {{ type filter hook input priority 0; }}; \
             add rule ip churn input udp dport {DROPPED_PORT} counter drop"
        );
        assert!(
            Command::new("ip")
                .args(["netns", "exec", &pod.netns, "nft", &nft])
                .status()
                .expect("nft")
                .success()
        );
        send_udp(
            &server.netns,
            SocketAddrV4::new(pod.ip, DROPPED_PORT),
            7000,
            DROPPED,
            10,
        );
        std::thread::sleep(Duration::from_millis(50));
        netfilter.push(nft_counter(&pod.netns));
        assert!(
            Command::new("ip")
                .args(["-n", &topo.node, "link", "del", &pod.host_if])
                .status()
                .expect("ip link del")
                .success()
        );
        gone.push(pod.host_if);
    }
    assert_eq!(answered, PODS, "every dig answered");
    // tracer follows a deletion within its 1 s tick at the latest.
    let pid = tracer.pid();
    let entries = |map: &str| tracer_tests::map_entries(pid, map);
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries("DNS_HIST") > 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Left: the server's port and the bridge (one key per direction and
    // server each at most), never one per pod that came and went.
    let (hist, ports) = (entries("DNS_HIST"), entries("FLOOD_PORTS"));
    assert!(hist <= 3, "{hist} DNS_HIST entries after {PODS} pods went");
    assert!(
        ports <= 2,
        "{ports} FLOOD_PORTS entries after {PODS} pods went"
    );
    if drops_on {
        let drops = entries("DROPS");
        assert!(drops <= 2, "{drops} DROPS entries after {PODS} pods went");
    }
    let report = tracer.stop(Signal::SIGINT);
    let latency = report["dns"]["latency"].as_array().expect("latency");
    for name in &gone {
        let answers: u64 = latency
            .iter()
            .filter(|r| r["interface"] == name.as_str() && r["side"] == "client")
            .map(|r| r["answers"].as_u64().expect("answers"))
            .sum();
        assert_eq!(
            answers, 1,
            "{name}'s answer, kept after it vanished: {latency:#?}"
        );
    }
    if !drops_on {
        return;
    }
    let rows = report["drops"]["rows"].as_array().expect("drop rows");
    for (name, want) in gone.iter().zip(&netfilter) {
        let got: u64 = rows
            .iter()
            .filter(|r| r["reason"] == "NETFILTER_DROP" && r["interface"] == name.as_str())
            .filter_map(|r| r["count"].as_u64())
            .sum();
        assert_eq!(
            got, *want,
            "{name}: tracer vs the pod's nft counter: {rows:#?}"
        );
    }
}

/// Port the churned pods' nft rule drops, and datagrams sent to it per pod.
const DROPPED_PORT: u16 = 9;
const DROPPED: u64 = 3;

/// The inode of named namespace `netns` (what the kernel keys it by).
fn netns_inode(netns: &str) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(format!("/run/netns/{netns}")).expect("netns file");
    u32::try_from(meta.ino()).expect("32-bit namespace inode")
}

/// Packets the `churn` table's counter saw in `netns`.
fn nft_counter(netns: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "nft", "list", "table", "ip", "churn",
        ])
        .output()
        .expect("nft list");
    number_after(&String::from_utf8_lossy(&out.stdout), "counter packets")
}
