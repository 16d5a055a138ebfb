//! Flooding on topologies the lab does not build: a bridge named `cni0`
//! (as the bridge and flannel CNI plugins name it), pods without a default
//! route, a second node next to ours. Each case checks what an SRE reads in
//! the finding — episodes, start, rate, cause — against ground truth taken
//! outside tracer: tcpdump on a bystander port, `bridge monitor fdb`,
//! `bridge fdb show`, `ip monitor neigh` and the sender's own timings.
//!
//! Each test takes 5–12 s (tracer start-up included).

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::unix::fs::MetadataExt as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sched::{CpuSet, sched_setaffinity},
    sys::signal::Signal,
    unistd::Pid,
};
use serde_json::Value;
use tracer::netns;
use tracer_tests::{Receiver, TracerRun, dns::Capture, privileged, warm_up};

const PORT: u16 = 9100;
/// The bridge CNI plugin's default bridge name.
const BRIDGE: &str = "cni0";
/// An address and MAC no port of the node has: frames to it are flooded
/// from the first one on.
const NOBODY_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 99);
const NOBODY_MAC: &str = "02:00:00:00:99:99";

/// A node namespace with bridge `cni0` (10.88.0.1/16) and pods
/// `10.88.0.10+i` behind host veths `veth<i>`; dropping it deletes every
/// namespace it made.
struct CniNode {
    node: String,
    pods: Vec<CniPod>,
    created: Vec<String>,
}

struct CniPod {
    netns: String,
    ip: Ipv4Addr,
    host_if: String,
    mac: String,
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl CniNode {
    fn build(pods: usize) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "trf{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut node = Self {
            node: format!("{prefix}-node"),
            pods: Vec::new(),
            created: Vec::new(),
        };
        let ns = node.node.clone();
        node.add_netns(&ns);
        run(&["ip", "-n", &ns, "link", "add", BRIDGE, "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            "10.88.0.1/16",
            "dev",
            BRIDGE,
        ]);
        run(&["ip", "-n", &ns, "link", "set", BRIDGE, "up"]);
        for i in 0..pods {
            let pod_ns = format!("{prefix}-p{i}");
            node.add_netns(&pod_ns);
            let host_if = format!("veth{i}");
            let ip = Ipv4Addr::new(10, 88, 0, 10 + u8::try_from(i).unwrap());
            run(&[
                "ip", "-n", &ns, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &pod_ns,
            ]);
            run(&[
                "ip", "-n", &ns, "link", "set", &host_if, "master", BRIDGE, "up",
            ]);
            run(&[
                "ip",
                "-n",
                &pod_ns,
                "addr",
                "add",
                &format!("{ip}/16"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &pod_ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", &pod_ns, "link", "set", "lo", "up"]);
            let mac = run(&["ip", "-n", &pod_ns, "-br", "link", "show", "eth0"])
                .split_whitespace()
                .nth(2)
                .expect("mac column")
                .to_owned();
            node.pods.push(CniPod {
                netns: pod_ns,
                ip,
                host_if,
                mac,
            });
        }
        node
    }

    /// A namespace without IPv6: a new interface's router solicitations
    /// and MLD reports would make a silent receiver speak (and be learned).
    fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.created.push(name.to_owned());
        for key in ["all", "default"] {
            run(&[
                "ip",
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]);
        }
    }

    /// Sets the bridge's FDB ageing time (seconds).
    fn ageing(&self, seconds: u32) {
        run(&[
            "ip",
            "-n",
            &self.node,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "ageing_time",
            &(seconds * 100).to_string(),
        ]);
    }

    /// Whether `mac` is in the bridge's FDB (`bridge fdb show`).
    fn fdb_has(&self, mac: &str) -> bool {
        run(&[
            "ip", "netns", "exec", &self.node, "bridge", "fdb", "show", "br", BRIDGE,
        ])
        .lines()
        .any(|l| l.starts_with(mac))
    }
}

impl Drop for CniNode {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A monitor command (`bridge monitor fdb`, `ip monitor neigh`) in a
/// namespace, its lines collected until stopped.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    fn start(netns: &str, cmd: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The monitor subscribes before its first read; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        Self {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.kill();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.lines.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.kill();
        }
    }
}

/// What a paced stream did: when each datagram left, and on which CPUs.
struct Sent {
    at: Vec<Instant>,
    cpus: Vec<i32>,
}

impl Sent {
    fn after(&self, t: Instant) -> u64 {
        self.at.iter().filter(|&&s| s >= t).count() as u64
    }

    /// Span (s) and rate of the last `n` datagrams, by the sender's clock:
    /// the ground truth for an episode of the stream's last `n` frames.
    fn tail(&self, n: u64) -> (f64, f64) {
        let n = usize::try_from(n).unwrap().clamp(1, self.at.len());
        let span = self.at[self.at.len() - 1]
            .duration_since(self.at[self.at.len() - n])
            .as_secs_f64();
        (span, (n - 1) as f64 / span)
    }
}

/// The episode's span and rate equal the sender's for the frames it counts
/// (the stream's last ones): within 0.1 s and 3 %.
fn check_rate(e: &Value, sent: &Sent) {
    let packets = e["packets"].as_u64().unwrap();
    let (span, rate) = sent.tail(packets);
    let (duration, pps) = (f64_of(&e["duration_s"]), f64_of(&e["pps"]));
    eprintln!("sender: last {packets} frames over {span:.2} s at {rate:.1} pps");
    assert!(
        (duration - span).abs() < 0.1,
        "episode {duration:.2} s, sender {span:.2} s"
    );
    assert!(
        (pps - rate).abs() < rate * 0.03,
        "episode {pps:.1} pps, sender {rate:.1} pps"
    );
}

/// Streams `count` UDP datagrams from `netns` to `to` at `pps`, paced by the
/// clock. With `migrate`, the sending thread is pinned to CPU 0 and CPU 1 in
/// turn every 100 ms.
fn stream(netns: &str, to: SocketAddrV4, pps: u64, count: u64, migrate: bool) -> Sent {
    netns::run_in(netns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind");
        let mut sent = Sent {
            at: Vec::with_capacity(usize::try_from(count).unwrap()),
            cpus: Vec::new(),
        };
        let start = Instant::now();
        for i in 0..count {
            if migrate && i % (pps / 10) == 0 {
                let mut set = CpuSet::new();
                set.set(usize::try_from((i / (pps / 10)) % 2).unwrap())
                    .expect("cpu");
                sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
                // SAFETY: sched_getcpu has no preconditions.
                sent.cpus.push(unsafe { libc::sched_getcpu() });
            }
            let due = Duration::from_micros(i * 1_000_000 / pps);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            socket.send_to(&[0u8; 64], to).expect("send");
            sent.at.push(Instant::now());
        }
        sent
    })
    .expect("netns")
}

fn episodes_to<'a>(report: &'a Value, mac: &str) -> Vec<&'a Value> {
    report["flood"]["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["dst_mac"] == mac)
        .collect()
}

/// The one episode of the flood to `receiver`, with its cause and port.
fn the_episode<'a>(report: &'a Value, receiver: &CniPod, cause: &str) -> &'a Value {
    let episodes = episodes_to(report, &receiver.mac);
    assert_eq!(
        episodes.len(),
        1,
        "one flood, one episode: {:#}",
        report["flood"]
    );
    let e = episodes[0];
    eprintln!(
        "episode: {} frames from {:.2} s for {:.2} s, {:.1} pps, cause {}",
        e["packets"],
        f64_of(&e["start_s"]),
        f64_of(&e["duration_s"]),
        f64_of(&e["pps"]),
        e["cause"]["kind"]
    );
    assert_eq!(e["cause"]["kind"], cause, "{e:#}");
    assert_eq!(e["cause"]["port"], receiver.host_if.as_str(), "{e:#}");
    e
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn flood_finding(report: &Value) -> &Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["symptom"] == "udp_flooding")
        .expect("flooding finding")
}

/// A receiver whose veth is deleted mid-stream: the bridge flushes its
/// entry (`bridge monitor fdb`: Deleted … dev vethB), the sender keeps its
/// MAC, the rest is flooded. One episode, "port removed", at the stream's
/// rate.
#[test_log::test]
fn a_receiver_that_disappears_is_a_port_removal() {
    if !privileged("a_receiver_that_disappears_is_a_port_removal") {
        return;
    }
    const PPS: u64 = 500;
    let node = CniNode::build(3);
    let (a, b, c) = (&node.pods[0], &node.pods[1], &node.pods[2]);
    let tracer = TracerRun::start(&node.node, &[]);
    let rx = Receiver::start(&b.netns, b.ip, PORT);
    let to = SocketAddrV4::new(b.ip, PORT);
    warm_up(&a.netns, &rx, to, PORT);
    let fdb = Monitor::start(&node.node, &["bridge", "monitor", "fdb"]);
    let capture = Capture::start_filtered(&node.node, &c.host_if, &format!("ether dst {}", b.mac));
    let (ns, host_if) = (node.node.clone(), b.host_if.clone());
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let begin = Instant::now();
        run(&["ip", "-n", &ns, "link", "del", &host_if]);
        (begin, Instant::now())
    });
    let sent = stream(&a.netns, to, PPS, PPS * 4, false);
    // The port went somewhere between `ip link del` starting and exiting.
    let (del_begin, del_end) = deleter.join().unwrap();
    let on_wire = capture.count();
    let fdb_lines = fdb.stop();
    std::thread::sleep(Duration::from_millis(300));
    let report = tracer.stop(Signal::SIGINT);
    rx.finish();

    let (most, least) = (sent.after(del_begin), sent.after(del_end));
    eprintln!("flooded to C: tcpdump {on_wire}, sent after the deletion {least}..={most}");
    assert!(
        fdb_lines
            .iter()
            .any(|l| l.starts_with("Deleted") && l.contains(&b.mac) && l.contains(&b.host_if)),
        "bridge monitor fdb saw the entry go with its port: {fdb_lines:?}"
    );
    let e = the_episode(&report, b, "port_removed");
    let packets = e["packets"].as_u64().unwrap();
    assert!(
        packets.abs_diff(on_wire) <= on_wire / 100 + 2,
        "episode {packets} frames vs tcpdump {on_wire}"
    );
    assert!(
        (least.saturating_sub(2)..=most + 2).contains(&packets),
        "episode {packets} frames vs {least}..={most} sent after the port went"
    );
    check_rate(e, &sent);
    let finding = flood_finding(&report);
    assert_eq!(finding["severity"], "warning", "{finding:#}");
    assert!(
        !finding["why"].as_str().unwrap().contains("aged out"),
        "{finding:#}"
    );
}

/// The flood is already running when tracer starts (the silent receiver's
/// entry aged out and was collected before: `bridge fdb show` no longer
/// has it), and the sender hops between CPU 0 and CPU 1 every 100 ms. One
/// episode, labelled "deleted before the trace", with the stream's rate.
#[test_log::test]
fn a_flood_running_before_the_trace_across_cpus_is_one_episode() {
    if !privileged("a_flood_running_before_the_trace_across_cpus_is_one_episode") {
        return;
    }
    const PPS: u64 = 1000;
    const SECONDS: u64 = 9;
    let node = CniNode::build(3);
    let (a, b, c) = (&node.pods[0], &node.pods[1], &node.pods[2]);
    node.ageing(2);
    let rx = Receiver::start(&b.netns, b.ip, PORT);
    let to = SocketAddrV4::new(b.ip, PORT);
    warm_up(&a.netns, &rx, to, PORT);
    assert!(node.fdb_has(&b.mac), "learned by the warm-up");
    let a_ns = a.netns.clone();
    let sender = std::thread::spawn(move || stream(&a_ns, to, PPS, PPS * SECONDS, true));
    // Ageing 2 s, collected within ~1 s more (br_fdb_cleanup).
    let t0 = Instant::now();
    while node.fdb_has(&b.mac) {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "entry never aged out"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let fdb = Monitor::start(&node.node, &["bridge", "monitor", "fdb"]);
    let tracer = TracerRun::start(&node.node, &[]);
    let ready = Instant::now();
    let capture = Capture::start_filtered(&node.node, &c.host_if, &format!("ether dst {}", b.mac));
    let sent = sender.join().unwrap();
    let on_wire = capture.count();
    let fdb_lines = fdb.stop();
    assert!(
        !fdb_lines.iter().any(|l| l.starts_with(&b.mac)),
        "B stayed silent, never re-learned: one flood ({fdb_lines:?})"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = tracer.stop(Signal::SIGINT);
    rx.finish();

    let cpus: std::collections::BTreeSet<i32> = sent.cpus.iter().copied().collect();
    assert_eq!(cpus.len(), 2, "the sender ran on both CPUs: {cpus:?}");
    let after_ready = sent.after(ready);
    let span = sent.at.last().unwrap().duration_since(ready).as_secs_f64();
    eprintln!(
        "sent after tracer was ready: {after_ready} over {span:.2} s; tcpdump on C {on_wire}"
    );
    // The sender's MAC, at least, was in the FDB read at the start.
    assert!(
        report["flood"]["fdb_entries_at_start"].as_u64() >= Some(1),
        "{:#}",
        report["flood"]
    );
    let e = the_episode(&report, b, "deleted_before_trace");
    let packets = e["packets"].as_u64().unwrap();
    // Tracer counts from its baseline, a little before it says ready;
    // tcpdump from a little after.
    assert!(
        packets >= on_wire && packets >= after_ready,
        "episode {packets} frames, tcpdump {on_wire}, sent after ready {after_ready}"
    );
    assert!(
        packets <= after_ready + PPS,
        "episode {packets} frames, sent after ready {after_ready}"
    );
    let start = f64_of(&e["start_s"]);
    assert!(start < 1.0, "the flood ran when the trace started: {start}");
    check_rate(e, &sent);
}

/// One unknown-unicast frame, copied by the bridge to the two other ports
/// microseconds apart: an episode of one frame, not a rate of 100 000 pps.
#[test_log::test]
fn a_single_flooded_frame_makes_no_rate() {
    if !privileged("a_single_flooded_frame_makes_no_rate") {
        return;
    }
    let node = CniNode::build(3);
    let (a, b, c) = (&node.pods[0], &node.pods[1], &node.pods[2]);
    run(&[
        "ip",
        "-n",
        &a.netns,
        "neigh",
        "add",
        &NOBODY_IP.to_string(),
        "lladdr",
        NOBODY_MAC,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let tracer = TracerRun::start(&node.node, &[]);
    let filter = format!("ether dst {NOBODY_MAC}");
    let (cap_b, cap_c) = (
        Capture::start_filtered(&node.node, &b.host_if, &filter),
        Capture::start_filtered(&node.node, &c.host_if, &filter),
    );
    netns::run_in(&a.netns, || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        socket
            .send_to(b"one", SocketAddrV4::new(NOBODY_IP, PORT))
            .expect("send");
    })
    .expect("netns");
    let (on_b, on_c) = (cap_b.count(), cap_c.count());
    std::thread::sleep(Duration::from_millis(300));
    let report = tracer.stop(Signal::SIGINT);
    assert_eq!((on_b, on_c), (1, 1), "tcpdump: one copy on each other port");
    let episodes = episodes_to(&report, NOBODY_MAC);
    assert_eq!(episodes.len(), 1, "{:#}", report["flood"]);
    let e = episodes[0];
    assert_eq!(e["packets"], 1);
    assert_eq!(e["copies"], 2);
    assert!(f64_of(&e["pps"]) <= 1.0, "{e:#}");
    assert_eq!(e["cause"]["kind"], "never_learned", "{e:#}");
    let finding = flood_finding(&report);
    assert_eq!(finding["severity"], "warning", "{finding:#}");
}

/// A second node next to ours — its own namespace and a bridge of the same
/// name — with FDB churn and a failing ARP resolution in one of its pods:
/// none of it is ours. Ours does one FDB add/del and one failing ARP, which
/// must be counted, exactly as `bridge monitor fdb` saw them.
#[test_log::test]
fn events_of_unrelated_namespaces_are_not_counted() {
    if !privileged("events_of_unrelated_namespaces_are_not_counted") {
        return;
    }
    let ours = CniNode::build(2);
    let other = CniNode::build(2);
    let tracer = TracerRun::start(&ours.node, &[]);
    let our_fdb = Monitor::start(&ours.node, &["bridge", "monitor", "fdb"]);
    let other_fdb = Monitor::start(&other.node, &["bridge", "monitor", "fdb"]);
    let other_neigh = Monitor::start(&other.pods[0].netns, &["ip", "monitor", "neigh"]);
    let churn = |node: &CniNode, times: usize| {
        for i in 0..times {
            let mac = format!("02:00:00:00:aa:{i:02x}");
            let port = &node.pods[i % node.pods.len()].host_if;
            let ns = node.node.as_str();
            run(&[
                "ip", "netns", "exec", ns, "bridge", "fdb", "add", &mac, "dev", port, "master",
                "static",
            ]);
            run(&[
                "ip", "netns", "exec", ns, "bridge", "fdb", "del", &mac, "dev", port, "master",
            ]);
        }
    };
    churn(&other, 20);
    churn(&ours, 1);
    // Unanswered ARP in both: ARP gives up after 3 probes, 1 s apart.
    let silent = |ns: String, ip: Ipv4Addr| {
        netns::spawn_in(&ns, move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
            for _ in 0..45 {
                let _ = socket.send_to(b"anyone?", SocketAddrV4::new(ip, PORT));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let theirs = silent(other.pods[0].netns.clone(), Ipv4Addr::new(10, 88, 0, 78));
    let mine = silent(ours.pods[0].netns.clone(), Ipv4Addr::new(10, 88, 0, 77));
    theirs.join().unwrap().expect("netns");
    mine.join().unwrap().expect("netns");
    let (our_lines, other_lines, neigh_lines) =
        (our_fdb.stop(), other_fdb.stop(), other_neigh.stop());
    let report = tracer.stop(Signal::SIGINT);

    let deleted = |lines: &[String]| lines.iter().filter(|l| l.starts_with("Deleted")).count();
    assert!(deleted(&other_lines) >= 20, "their churn: {other_lines:?}");
    assert!(
        neigh_lines
            .iter()
            .any(|l| l.contains("10.88.0.78") && l.contains("FAILED")),
        "their ARP failed: {neigh_lines:?}"
    );
    let flood = &report["flood"];
    assert_eq!(
        flood["fdb_deletes"].as_u64(),
        Some(deleted(&our_lines) as u64),
        "our deletes only ({our_lines:?}): {flood:#}"
    );
    let failures = flood["neighbour_failures"].as_array().unwrap();
    assert!(
        failures.iter().all(|f| f["address"] != "10.88.0.78"),
        "their ARP failure is not ours: {failures:#?}"
    );
    let our_pod_ns = std::fs::metadata(format!("/run/netns/{}", ours.pods[0].netns))
        .unwrap()
        .ino();
    assert!(
        failures
            .iter()
            .any(|f| f["address"] == "10.88.0.77" && f["netns"].as_u64() == Some(our_pod_ns)),
        "our pod's ARP failure is: {failures:#?}"
    );
}
