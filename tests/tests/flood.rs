//! Unknown-unicast flooding end to end: a silent receiver whose FDB entry
//! ages out, a sender that keeps streaming, the real `tracer` binary, and
//! tcpdump on a bystander's port as ground truth.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::{
    lab::topology::{Datapath, Topology},
    netns,
};
use tracer_tests::{Receiver, TracerRun, dns::Capture, privileged, warm_up};

const PORT: u16 = 9000;
const RATE_PPS: u64 = 1000;
const SECONDS: u64 = 6;

/// MAC of `eth0` in a pod namespace.
fn pod_mac(ns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", "eth0"])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .expect("mac column")
        .to_owned()
}

/// Streams UDP from `netns` at a fixed rate for `seconds`.
fn stream(netns: &str, to: SocketAddrV4, seconds: u64) -> u64 {
    netns::run_in(netns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind");
        let start = Instant::now();
        let mut sent = 0;
        while sent < RATE_PPS * seconds {
            // Paced by the clock, not by sleeps, so the rate holds.
            let due = Duration::from_micros(sent * 1_000_000 / RATE_PPS);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            socket.send_to(&[0u8; 64], to).expect("send");
            sent += 1;
        }
        sent
    })
    .expect("netns")
}

fn flood_run(datapath: Datapath) -> (Topology, Value, u64, u64) {
    let topo = Topology::build(datapath, 3).expect("topology");
    let (a, b, c) = (&topo.pods[0], &topo.pods[1], &topo.pods[2]);
    if datapath == Datapath::Bridge {
        // Age FDB entries after 2 s (ageing_time is in centiseconds).
        tracer_tests::set_fdb_ageing(&topo, 200);
    }
    // Tracing first: the FDB entry learned during the warm-up must age out
    // under our eyes for the episode to name its cause.
    let tracer = TracerRun::start(&topo.node, &[]);
    let rx = Receiver::start(&b.netns, b.ip, PORT);
    let to = SocketAddrV4::new(b.ip, PORT);
    warm_up(&a.netns, &rx, to, PORT);
    let b_mac = pod_mac(&b.netns);

    let capture = Capture::start_filtered(&topo.node, &c.host_if, &format!("ether dst {b_mac}"));
    let sent = stream(&a.netns, to, SECONDS);
    let on_wire = capture.count();
    std::thread::sleep(Duration::from_millis(300));
    let report = tracer.stop(Signal::SIGINT);
    let received = rx.finish();
    assert!(received > sent, "B got {received} of {sent} (+1 warm-up)");
    (topo, report, on_wire, sent)
}

fn victim_packets(report: &Value, iface: &str) -> u64 {
    report["flood"]["victims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["interface"] == iface)
        .map_or(0, |v| v["victim_packets"].as_u64().unwrap())
}

#[test_log::test]
fn fdb_expiry_flood_is_counted_per_victim_and_explained() {
    if !privileged("fdb_expiry_flood_is_counted_per_victim_and_explained") {
        return;
    }
    let (topo, report, on_wire, sent) = flood_run(Datapath::Bridge);
    let (b, c) = (&topo.pods[1], &topo.pods[2]);
    let ours = victim_packets(&report, &c.host_if);
    eprintln!("flooded to C: tracer {ours}, tcpdump {on_wire}, sent {sent}");
    // The entry ages out after ~2 s of a 6 s stream: most of it floods.
    assert!(
        on_wire > sent / 3,
        "the bridge flooded ({on_wire} of {sent})"
    );
    assert!(
        ours.abs_diff(on_wire) * 100 <= on_wire,
        "tracer {ours} vs tcpdump {on_wire}: more than 1 % apart"
    );
    let episodes = report["flood"]["episodes"].as_array().unwrap();
    let b_mac = pod_mac(&b.netns);
    let episode = episodes
        .iter()
        .find(|e| e["dst_mac"] == b_mac.as_str())
        .unwrap_or_else(|| panic!("no episode for {b_mac}: {:#}", report["flood"]));
    assert_eq!(episode["cause"]["kind"], "aged_out", "{episode:#}");
    assert_eq!(episode["protocol"], "udp");
    assert_eq!(episode["dport"], PORT);
    assert_eq!(episode["dst_ip"], b.ip.to_string());
    let victims: Vec<&str> = episode["victims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(victims.contains(&c.host_if.as_str()), "{victims:?}");
    assert!(
        !victims.contains(&b.host_if.as_str()),
        "the destination is no victim"
    );
}

#[test_log::test]
fn transparent_mode_has_no_flood() {
    if !privileged("transparent_mode_has_no_flood") {
        return;
    }
    let (topo, report, on_wire, _) = flood_run(Datapath::Transparent);
    assert_eq!(on_wire, 0, "tcpdump: nothing for B reached C");
    for pod in &topo.pods {
        assert_eq!(victim_packets(&report, &pod.host_if), 0);
    }
    assert_eq!(report["flood"]["episodes"].as_array().unwrap().len(), 0);
}

/// Traffic to an address no pod answers ARP for: the sender's own
/// namespace reports the failed resolution.
#[test_log::test]
fn neighbour_failure_is_attributed_to_the_sender() {
    if !privileged("neighbour_failure_is_attributed_to_the_sender") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let a = &topo.pods[0];
    let tracer = TracerRun::start(&topo.node, &[]);
    let nobody = SocketAddrV4::new(Ipv4Addr::new(10, 240, 3, 3), PORT);
    netns::run_in(&a.netns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        // ARP gives up after ucast/mcast probes (3 × 1 s by default).
        for _ in 0..40 {
            let _ = socket.send_to(b"hello", nobody);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .expect("netns");
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(Signal::SIGTERM);
    let a_netns = std::fs::metadata(format!("/run/netns/{}", a.netns))
        .expect("netns")
        .ino();
    let failures = report["flood"]["neighbour_failures"].as_array().unwrap();
    let ours = failures
        .iter()
        .find(|f| f["address"] == "10.240.3.3")
        .unwrap_or_else(|| panic!("no failure for 10.240.3.3: {:#}", report["flood"]));
    assert_eq!(
        ours["netns"].as_u64(),
        Some(a_netns),
        "in the sender's namespace"
    );
    assert!(ours["count"].as_u64().unwrap() >= 1);
}
