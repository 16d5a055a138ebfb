//! An adversarial pod next to normal ones (issue 19): one pod sends DNS at
//! the highest rate this machine allows — random ids from a new source port
//! per packet (a new 5-tuple each time, never answered, so every one is a
//! pending entry), maximal names, compression loops, labels that run past
//! the message — and holds TCP streams to port 53 that never end; two normal
//! pods resolve names through a real DNS server meanwhile. tracer must keep
//! measuring the normal pods exactly (answers equal to tshark's, p50/p99
//! within 5 %, their losses right), count what it had to give up under
//! named losses, and stay within its memory bound.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;
use tracer::{
    lab::{
        topology::{Datapath, Topology},
        traffic::percentile,
    },
    netns,
};
use tracer_tests::{
    Rng, TracerRun,
    dns::{Capture, DnsPacket, DnsServer, ResolvConf, allow_aaaa_lookups, getent_ahosts},
    frames::{DnsMsg, Frame, L4},
    privileged,
};

const NAME: &str = "api.lab.test";
/// The normal pods' server answers after this, so latencies are well above
/// the scheduling noise of a machine the attack keeps busy.
const DELAY: Duration = Duration::from_millis(20);
const ATTACK: Duration = Duration::from_secs(8);
const BASELINE: Duration = Duration::from_secs(3);
/// The bound `cargo xtask bench` holds tracer's RSS to (issue 16).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// tracer's process, as a share of one core, while the attack runs with
/// the tests' five report ticks a second: each tick reads the whole
/// pending map (16 384 entries) in batches. Measured 10–12 %.
const CPU_BOUND: f64 = 0.25;
/// DNS over TCP: a 2-byte length, then the message.
const TCP_STREAMS: usize = 16;
const DNS_PORT: u16 = 53;
const QTYPE_A: u16 = 1;

fn records() -> Vec<(&'static str, Ipv4Addr, Ipv6Addr)> {
    vec![(
        NAME,
        Ipv4Addr::new(10, 96, 0, 20),
        "fd00::20".parse().unwrap(),
    )]
}

/// A DNS name of the maximal 255 bytes on the wire (3 × 63 + 61 + length
/// bytes + root), random letters.
fn maximal_name(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(255);
    for len in [63usize, 63, 63, 61] {
        out.push(u8::try_from(len).expect("label"));
        out.extend((0..len).map(|_| b'a' + (rng.byte() % 26)));
    }
    out.push(0);
    out
}

/// One hostile DNS message: the kinds rotate so each is sent at about the
/// same rate.
fn hostile_message(rng: &mut Rng, n: u64) -> Vec<u8> {
    let id = u16::try_from(rng.next_u64() & 0xffff).expect("u16");
    let base = DnsMsg::query(id, "x", QTYPE_A);
    match n % 3 {
        0 => base.raw_name(&maximal_name(rng)).bytes(),
        // A compression pointer to itself (offset 12, the question).
        1 => base.raw_name(&[0xc0, 0x0c]).bytes(),
        // A label that claims 63 bytes where 3 remain.
        _ => base.raw_name(&[63, b'a', b'b', b'c']).bytes(),
    }
}

/// Sends hostile UDP queries from `from` (a raw socket: a random source
/// port per packet) to `to`:53 until `stop`; returns how many were sent.
fn udp_attack(from: &str, src: Ipv4Addr, to: Ipv4Addr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let handle = netns::spawn_in(from, move || {
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut rng = Rng::new(0xad5e);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // Ports 1024..65535: a new 5-tuple per packet.
            let port = 1024 + u16::try_from(rng.below(64_511)).expect("port");
            let msg = hostile_message(&mut rng, sent);
            let l4 = L4::Udp {
                src: port,
                dst: DNS_PORT,
            };
            let frame = Frame::ipv4(src, to, l4, &msg).build();
            let packet = &frame[14..];
            // SAFETY: valid buffer and address for the call's duration.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const dst).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if n > 0 {
                sent += 1;
            }
        }
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        sent
    });
    std::thread::spawn(move || handle.join().expect("attack").expect("netns"))
}

/// TCP streams to `to`:53 that never end: a length prefix of 65535, then
/// a trickle of random bytes, until `stop`.
fn tcp_attack(from: &str, to: Ipv4Addr, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let handle = netns::spawn_in(from, move || {
        let mut streams: Vec<TcpStream> = (0..TCP_STREAMS)
            .filter_map(|_| TcpStream::connect(SocketAddrV4::new(to, DNS_PORT)).ok())
            .collect();
        assert!(!streams.is_empty(), "no TCP stream to the sink");
        let mut rng = Rng::new(0x7c9);
        for s in &mut streams {
            let _ = s.write_all(&u16::MAX.to_be_bytes());
        }
        while !stop.load(Ordering::Relaxed) {
            for s in &mut streams {
                let _ = s.write_all(&rng.bytes(512));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::spawn(move || handle.join().expect("tcp").expect("netns"))
}

/// The attack's target: a pod that reads and drops everything sent to
/// port 53 (UDP and TCP) and answers nothing, so every hostile query stays
/// pending in tracer until it gives up on it.
fn sink(netns_name: &str, ip: Ipv4Addr, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let udp_stop = Arc::clone(&stop);
    let udp = netns::spawn_in(netns_name, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(ip, DNS_PORT)).expect("bind sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        while !udp_stop.load(Ordering::Relaxed) {
            let _ = socket.recv(&mut buf);
        }
    });
    let tcp = netns::spawn_in(netns_name, move || {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, DNS_PORT)).expect("bind sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut conns: Vec<TcpStream> = Vec::new();
        let mut buf = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((c, _)) = listener.accept() {
                c.set_nonblocking(true).expect("nonblocking");
                conns.push(c);
            }
            for c in &mut conns {
                let _ = c.read(&mut buf);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    [udp, tcp]
        .into_iter()
        .map(|h| std::thread::spawn(move || h.join().expect("sink").expect("netns")))
        .collect()
}

/// Normal lookups from `netns_name` until `stop`: (lookups, failures).
fn resolve_until(netns_name: String, stop: Arc<AtomicBool>) -> JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut lookups, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            lookups += 1;
            if !getent_ahosts(&netns_name, NAME).ok() {
                failed += 1;
            }
        }
        (lookups, failed)
    })
}

/// CPU time of `pid` so far (utime + stime), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The attack's rate with nobody watching, for comparison.
fn baseline_rate(from: &str, src: Ipv4Addr, to: Ipv4Addr) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let udp = udp_attack(from, src, to, Arc::clone(&stop));
    std::thread::sleep(BASELINE);
    stop.store(true, Ordering::Relaxed);
    udp.join().expect("baseline") as f64 / started.elapsed().as_secs_f64()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// tracer's figures for one normal pod against tshark's on its veth.
fn check_normal_pod(
    report: &Value,
    host_if: &str,
    server: Ipv4Addr,
    packets: &[DnsPacket],
    lookups: u64,
) {
    let queries = packets.iter().filter(|p| !p.response).count() as u64;
    let answers = packets.iter().filter(|p| p.response).count() as u64;
    let mut times: Vec<f64> = packets
        .iter()
        .filter_map(|p| p.dns_time)
        .map(|t| t * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    assert!(
        answers >= 20,
        "{host_if}: only {answers} answers on the wire"
    );
    let row = report["dns"]["latency"]
        .as_array()
        .expect("latency rows")
        .iter()
        .find(|r| r["interface"] == host_if && r["server"] == server.to_string())
        .unwrap_or_else(|| panic!("no latency row for {host_if}: {:#}", report["dns"]));
    assert_eq!(row["answers"].as_u64(), Some(answers), "{host_if}: {row}");
    for (field, q) in [("p50_ms", 0.5), ("p99_ms", 0.99)] {
        let ours = row[field].as_f64().expect(field);
        let truth = percentile(&times, q);
        eprintln!("{host_if} {field}: tracer {ours:.3} ms, tshark {truth:.3} ms");
        assert!(
            (ours - truth).abs() <= truth * 0.05,
            "{host_if} {field}: tracer {ours} vs tshark {truth}"
        );
    }
    // A query tshark saw without its answer is a send the client timed
    // out on; tracer must see the same number of them, no more.
    let unanswered = queries.saturating_sub(answers);
    let iface = report["dns"]["per_interface"]
        .as_array()
        .expect("per_interface")
        .iter()
        .find(|r| r["interface"] == host_if);
    let ours = iface.map_or(0, |r| r["unanswered_sends"].as_u64().unwrap_or(0));
    assert_eq!(ours, unanswered, "{host_if}: unanswered sends");
    // Each glibc lookup is one parallel A/AAAA pair from one socket: the
    // flood of new sockets must not evict the normal pods' socket state.
    let pairs = iface.map_or(0, |r| r["parallel_pairs"].as_u64().unwrap_or(0));
    assert_eq!(pairs, lookups, "{host_if}: parallel pairs");
}

#[test_log::test]
fn hostile_pod_does_not_blind_tracer_to_normal_pods() {
    if !privileged("hostile_pod_does_not_blind_tracer_to_normal_pods") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 5).expect("topology");
    let [server, normal_a, normal_b, hostile, target] =
        <[_; 5]>::try_from(topo.pods.clone()).expect("five pods");
    let _dns = DnsServer::start_delayed(&server.netns, server.ip, &records(), DELAY);
    let _resolv: Vec<ResolvConf> = [&normal_a, &normal_b]
        .iter()
        .map(|p| {
            allow_aaaa_lookups(&p.netns);
            ResolvConf::write(&p.netns, server.ip, &["timeout:1", "attempts:3"])
        })
        .collect();
    let sink_stop = Arc::new(AtomicBool::new(false));
    let sinks = sink(&target.netns, target.ip, Arc::clone(&sink_stop));
    std::thread::sleep(Duration::from_millis(200));
    let baseline = baseline_rate(&hostile.netns, hostile.ip, target.ip);

    let tracer = TracerRun::start(&topo.node, &["--dns-pair-window-ms", "20"]);
    let ticks_before = cpu_ticks(tracer.pid());
    let captures: Vec<Capture> = [&normal_a, &normal_b]
        .iter()
        .map(|p| Capture::start(&topo.node, &p.host_if))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let udp = udp_attack(&hostile.netns, hostile.ip, target.ip, Arc::clone(&stop));
    let tcp = tcp_attack(&hostile.netns, target.ip, Arc::clone(&stop));
    let normal: Vec<_> = [&normal_a, &normal_b]
        .iter()
        .map(|p| resolve_until(p.netns.clone(), Arc::clone(&stop)))
        .collect();
    std::thread::sleep(ATTACK);
    stop.store(true, Ordering::Relaxed);
    let sent = udp.join().expect("udp attack");
    tcp.join().expect("tcp attack");
    let lookups: Vec<(u64, u64)> = normal.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let packets: Vec<Vec<DnsPacket>> = captures.into_iter().map(Capture::stop).collect();
    let rss = peak_rss_kib(tracer.pid());
    let ticks = cpu_ticks(tracer.pid()) - ticks_before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_share = ticks as f64 / hz / elapsed;
    let report = tracer.stop(Signal::SIGINT);
    sink_stop.store(true, Ordering::Relaxed);
    sinks.into_iter().for_each(|h| h.join().expect("sink"));

    let losses: Vec<(String, u64)> = report["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .filter(|l| l["count"].as_u64().unwrap_or(0) > 0)
        .map(|l| {
            (
                l["reason"].as_str().unwrap_or("?").to_owned(),
                l["count"].as_u64().unwrap(),
            )
        })
        .collect();
    eprintln!(
        "hostile: {sent} UDP queries in {elapsed:.1} s ({:.0}/s, {baseline:.0}/s untraced); \
         normal lookups {lookups:?}; tracer peak RSS {rss} KiB, CPU {:.1} % of a core; \
         losses {losses:?}; counters {}",
        sent as f64 / elapsed,
        cpu_share * 100.0,
        report["dns"]["counters"]
    );
    for ((pod, wire), (n, failed)) in [&normal_a, &normal_b].iter().zip(&packets).zip(&lookups) {
        assert_eq!(*failed, 0, "{}: lookups failed under the attack", pod.netns);
        check_normal_pod(&report, &pod.host_if, server.ip, wire, *n);
    }
    assert!(sent > 10_000, "the attack sent only {sent} queries");
    // What tracer gave up is counted, by name: the queries the flood pushed
    // out of the pending map (every hostile query is one, on two ports).
    let lost = |name: &str| losses.iter().find(|(n, _)| n == name).map_or(0, |l| l.1);
    assert!(lost("dns_pending_evicted") > sent, "{losses:?}");
    // The never-ending TCP streams' junk is a named outcome, not a guess.
    let malformed = report["dns"]["counters"]["malformed"].as_u64().unwrap_or(0);
    assert!(malformed > 0, "no malformed outcome counted");
    assert!(rss <= RSS_BOUND_KIB, "tracer peak RSS {rss} KiB");
    assert!(
        cpu_share <= CPU_BOUND,
        "tracer used {:.1} % of a core",
        cpu_share * 100.0
    );
    // The node's own packet rate is the bench's to bound (on a quiet
    // machine, `cargo xtask bench`); here it is reported, not asserted.
    eprintln!(
        "attack rate traced / untraced: {:.2}",
        sent as f64 / elapsed / baseline
    );
}
