//! The `bridge-setup` scenario: a node whose first pod makes the CNI build
//! its datapath while the node resolves names through a DNS server behind
//! its `eth0` (the seed's "initial 5-sec DNS latency … due to 'just in time'
//! bridge setup").
//!
//! The node starts as a VM does: `eth0` holds 10.240.0.4/16 and the default
//! route via the VNet gateway 10.240.0.1. Behind `eth0`, the uplink namespace
//! plays the VNet: the gateway, and Azure's DNS address 168.63.129.16 where
//! dnsmasq listens. dnsmasq forwards to an upstream that answers after
//! [`UPSTREAM_DELAY`] (a recursive resolver for a name not in its cache;
//! dnsmasq keeps no cache here), so queries are in flight as on a real node.
//! Host-network clients ([`NODE_CLIENTS`] glibc `getent` loops) resolve all
//! along, with glibc's default `timeout:5 attempts:2`. The pod arrives
//! while a query is in flight, in both modes: the upstream holds the answer
//! of the next query it receives and, in bridge mode, sends it once the
//! node's address is gone (in transparent mode, once the pod's plumbing
//! began). On a busy node an answer is always on its way back; the lab
//! makes sure one lands in the window rather than leave it to how fast a
//! shared machine runs the CNI's commands (a window of 40 ms on a fast one
//! closed before a 50 ms answer came back, and nothing was lost).
//!
//! Then the first pod arrives. Bridge mode does what Azure CNI's
//! `connectExternalInterface` does (azure-container-networking
//! `network/network_linux.go`), in its order: create the bridge, delete the
//! address from `eth0` (the kernel flushes the routes through it), add the
//! two ebtables rules (MAC SNAT on `eth0`, ARP replies to broadcast), set
//! `eth0` down, enslave it, set it and the bridge up, add the address and
//! the default route to the bridge — each step a separate command, as the
//! CNI's own netlink calls and ebtables executions are. Transparent mode adds
//! the pod's veth and its /32 route and never touches `eth0`.
//!
//! Ground truth: tcpdump on the DNS server's side of `eth0` (queries sent
//! twice with the same port and id: re-sent after a resolver timeout), and
//! each lookup's own wall time and exit status.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    DatapathRun, LOOKUP_NAME, LabError, LabOptions,
    compare::Metric,
    dns::{self, DnsServer, ResolvConf},
    topology::{self, BRIDGE, Datapath, Topology},
    verify::{Capture, VerifyRow},
};
use crate::{netns, verdict::Symptom};

/// Azure's DNS (and wire server) address, reached through the default route.
pub const DNS_SERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// The VNet gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
/// The upstream dnsmasq forwards to (inside the uplink namespace).
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 53);
/// How long the upstream takes to answer.
pub const UPSTREAM_DELAY: Duration = Duration::from_millis(50);
/// Host-network resolving loops on the node.
pub const NODE_CLIENTS: usize = 6;
/// Resolver options of node and pod: glibc's defaults, written out.
pub const RESOLVER_OPTIONS: [&str; 2] = ["timeout:5", "attempts:2"];
/// Traffic before the pod arrives, and after it (long enough for a lookup
/// caught by the window to finish its re-send: one timeout and change).
const BEFORE_POD: Duration = Duration::from_secs(2);
const AFTER_POD: Duration = Duration::from_secs(7);
/// A lookup at least this long waited a resolver timeout.
const TIMEOUT_WAITED: Duration = Duration::from_millis(4500);
/// tracer times a change when it reads the notification: the end of its
/// window may trail the lab's by the time that takes on a busy host.
pub const NOTIFY_SLACK_MS: f64 = 20.0;

/// Figures of one datapath.
#[derive(Debug, Serialize)]
pub struct BridgeSetupFigures {
    /// The CNI's steps for the first pod, ms (from the first to the last
    /// command's end, as the lab timed them).
    pub setup_ms: f64,
    /// The window as the lab's clock bounds it (0 in transparent mode):
    /// from the end of the address deletion to the start of the default
    /// route's re-add (shortest), and from the start of one to the end of
    /// the other (longest).
    pub window_lab_min_ms: f64,
    pub window_lab_max_ms: f64,
    /// How long after the upstream received the query it held the address
    /// was gone (its answer was sent then).
    pub delete_after_query_ms: f64,
    /// tracer: the node's address/default route missing, bridges created.
    pub window_ms: f64,
    pub bridges_created: u64,
    pub uplink_enslaved: u64,
    pub queries_lost: u64,
    pub queries_delayed: u64,
    /// Clients: lookups, failed ones, and ones that waited ≥ 4.5 s.
    pub lookups: u64,
    pub lookups_failed: u64,
    pub lookups_timed_out: u64,
    /// Of them, the first pod's (it starts resolving as soon as it exists).
    pub pod_lookups: u64,
    pub pod_lookups_timed_out: u64,
    /// tshark at the DNS server: queries, and exchanges (port, id) sent
    /// more than once.
    pub server_queries: u64,
    pub server_resent_exchanges: u64,
}

/// Runs the scenario on `datapath` and fills `run`.
pub fn run(
    datapath: Datapath,
    opts: &LabOptions,
    run: &mut DatapathRun,
    verify_rows: &mut Vec<VerifyRow>,
) -> Result<(), LabError> {
    let node = SetupNode::build(datapath)?;
    let uplink = lock(&node.topo).uplink();
    let capture = Capture::start(&uplink, "eth0", "udp port 53")?;
    let stop = Arc::new(AtomicBool::new(false));
    let topo = &node.topo;
    let (report, (lookups, steps)) = super::trace(&node.node_ns, || {
        let clients: Vec<_> = (0..NODE_CLIENTS)
            .map(|_| lookup_loop(node.node_ns.clone(), Arc::clone(&stop)))
            .collect();
        std::thread::sleep(BEFORE_POD);
        let mut topo = lock(topo);
        let steps = first_pod(&mut topo, &node.upstream);
        let pod_client = topo
            .pods
            .first()
            .map(|p| lookup_loop(p.netns.clone(), Arc::clone(&stop)));
        drop(topo);
        std::thread::sleep(AFTER_POD);
        stop.store(true, Ordering::Relaxed);
        let node_lookups: Vec<(Duration, bool)> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap_or_default())
            .collect();
        let pod_lookups = pod_client
            .map(|c| c.join().unwrap_or_default())
            .unwrap_or_default();
        ((node_lookups, pod_lookups), steps)
    })?;
    let steps = steps?;
    let (node_lookups, pod_lookups) = lookups;
    let timed_out =
        |l: &[(Duration, bool)]| l.iter().filter(|(t, _)| *t >= TIMEOUT_WAITED).count() as u64;
    let lookups: Vec<(Duration, bool)> = node_lookups.iter().chain(&pod_lookups).copied().collect();
    let truth = resent_at_server(&capture.tshark(
        "dns.flags.response == 0",
        &["ip.src", "udp.srcport", "dns.id"],
    )?);
    let b = &report.bridge_setup;
    let figures = BridgeSetupFigures {
        setup_ms: ms(steps.setup),
        window_lab_min_ms: ms(steps.window.0),
        window_lab_max_ms: ms(steps.window.1),
        delete_after_query_ms: ms(steps.window.2),
        window_ms: b.longest_window_ms(),
        bridges_created: b.bridges_created.len() as u64,
        uplink_enslaved: b.uplink_enslaved.len() as u64,
        queries_lost: b.queries_lost,
        queries_delayed: b.queries_delayed,
        lookups: lookups.len() as u64,
        lookups_failed: lookups.iter().filter(|(_, ok)| !ok).count() as u64,
        lookups_timed_out: timed_out(&lookups),
        pod_lookups: pod_lookups.len() as u64,
        pod_lookups_timed_out: timed_out(&pod_lookups),
        server_queries: truth.0,
        server_resent_exchanges: truth.1,
    };
    if opts.verify {
        let label = format!("{} bridge-setup", datapath.name());
        verify_rows.push(VerifyRow::new(
            &format!("{label} queries lost+delayed (tracer vs tshark re-sent)"),
            b.queries_lost + b.queries_delayed,
            figures.server_resent_exchanges,
        ));
        let (min, max) = (figures.window_lab_min_ms, figures.window_lab_max_ms);
        verify_rows.push(VerifyRow {
            figure: format!("{label} window ms (tracer vs lab's command times)"),
            tracer: format!("{:.1}", figures.window_ms),
            truth: format!("{min:.1}..{max:.1}"),
            difference: if (min..=max + NOTIFY_SLACK_MS).contains(&figures.window_ms) {
                "within".into()
            } else {
                "OUTSIDE".into()
            },
            truth_lower_bound: false,
        });
    }
    run.bridge_setup = Some(figures);
    super::keep_findings(run, "bridge-setup", &report, Symptom::BridgeSetup);
    Ok(())
}

/// Reads one figure of the scenario's figures.
type Read = fn(&BridgeSetupFigures) -> f64;

/// A run's figures of this scenario, if it ran.
fn of_run(r: &DatapathRun) -> Option<&BridgeSetupFigures> {
    r.bridge_setup.as_ref()
}

/// The scenario's compared figures. The symptom is the DNS the window cost
/// (lost, delayed, lookups that waited out a timeout or failed), per lookup
/// since the datapaths complete different numbers; the window's length, as
/// tracer and the lab's own clock saw it, and the server's view are context.
pub fn metrics() -> Vec<Metric> {
    use super::compare::Kind::{Count, Measure, Volume};
    let lookups = |r: &DatapathRun| Some(of_run(r)?.lookups as f64);
    let symptoms: [(&'static str, Read); 4] = [
        ("DNS queries lost", |f| f.queries_lost as f64),
        ("DNS queries delayed", |f| f.queries_delayed as f64),
        ("lookups that waited >= 4.5 s", |f| {
            f.lookups_timed_out as f64
        }),
        ("lookups failed", |f| f.lookups_failed as f64),
    ];
    let context: [(&'static str, _, Read); 7] = [
        ("address/route missing ms (tracer)", Measure, |f| {
            f.window_ms
        }),
        ("address/route missing ms (lab, shortest)", Measure, |f| {
            f.window_lab_min_ms
        }),
        ("address/route missing ms (lab, longest)", Measure, |f| {
            f.window_lab_max_ms
        }),
        ("bridges created", Count, |f| f.bridges_created as f64),
        ("eth0 enslaved", Count, |f| f.uplink_enslaved as f64),
        ("queries at the server (tshark)", Volume, |f| {
            f.server_queries as f64
        }),
        ("re-sent at the server (tshark)", Count, |f| {
            f.server_resent_exchanges as f64
        }),
    ];
    let mut out = vec![Metric::new(SYMPTOM, "lookups", Volume, lookups)];
    out.extend(symptoms.map(|(figure, get)| {
        Metric::new(SYMPTOM, figure, Count, move |r| Some(get(of_run(r)?)))
            .judged()
            .per("lookup", lookups)
    }));
    out.extend(context.map(|(figure, kind, get)| {
        Metric::new(SYMPTOM, figure, kind, move |r| Some(get(of_run(r)?)))
    }));
    out
}

/// The comparison rows' symptom.
const SYMPTOM: &str = "bridge-setup";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The node before its first pod, with its DNS path. Fields drop in order:
/// servers and files before the namespaces.
struct SetupNode {
    _dns: DnsServer,
    upstream: SlowUpstream,
    _resolv: ResolvConf,
    node_ns: String,
    /// Locked by the scenario's traffic thread to add the first pod.
    topo: Mutex<Topology>,
}

impl SetupNode {
    fn build(datapath: Datapath) -> Result<Self, LabError> {
        let topo = Topology::node_only(datapath, BRIDGE)?;
        let (node, uplink) = (topo.node.clone(), topo.uplink());
        let run = |ns: &str, args: &[&str]| {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            topology::ip(&full)
        };
        run(
            &node,
            &["addr", "add", &topology::node_cidr(), "dev", "eth0"],
        )?;
        run(&node, &["link", "set", "eth0", "up"])?;
        run(
            &node,
            &["route", "add", "default", "via", &GATEWAY.to_string()],
        )?;
        for addr in [
            format!("{GATEWAY}/16"),
            format!("{DNS_SERVER}/32"),
            format!("{UPSTREAM}/32"),
        ] {
            run(&uplink, &["addr", "add", &addr, "dev", "eth0"])?;
        }
        // The VNet delivers the pods' addresses to their node.
        let pods = format!(
            "{}/24",
            Ipv4Addr::from(u32::from(topology::pod_ip(0)) & !0xff)
        );
        run(
            &uplink,
            &["route", "add", &pods, "via", &topology::NODE_IP.to_string()],
        )?;
        let upstream = SlowUpstream::start(&uplink)?;
        let dns =
            DnsServer::start_with(&uplink, DNS_SERVER, &[], &[format!("--server={UPSTREAM}")])?;
        dns::enable_aaaa_lookups(&node)?;
        let resolv = ResolvConf::write(&node, DNS_SERVER, &RESOLVER_OPTIONS)?;
        Ok(Self {
            _dns: dns,
            upstream,
            _resolv: resolv,
            node_ns: node,
            topo: Mutex::new(topo),
        })
    }
}

/// How long the first pod's plumbing took.
struct Steps {
    setup: Duration,
    /// Address deleted → default route back (bridge mode): shortest and
    /// longest, see [`BridgeSetupFigures::window_lab_min_ms`]; and the
    /// in-flight query's age when the address was gone.
    window: (Duration, Duration, Duration),
    /// The pod's resolver configuration, removed when dropped.
    _resolv: ResolvConf,
}

/// The first pod arrives: the CNI's steps for `topo.datapath`, then the
/// pod. `upstream` holds the answer of a query across the first step that
/// matters (the address deletion in bridge mode).
fn first_pod(topo: &mut Topology, upstream: &SlowUpstream) -> Result<Steps, LabError> {
    let start = Instant::now();
    let mut window = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    if topo.datapath == Datapath::Bridge {
        window = connect_external_interface(topo, upstream)?;
    } else {
        upstream.hold_next_answer(HOLD_LIMIT);
        upstream.release();
    }
    topo.add_pod(0)?;
    let pod = &topo.pods[0];
    dns::enable_aaaa_lookups(&pod.netns)?;
    let resolv = ResolvConf::write(&pod.netns, DNS_SERVER, &RESOLVER_OPTIONS)?;
    Ok(Steps {
        setup: start.elapsed(),
        window,
        _resolv: resolv,
    })
}

/// Azure CNI's `connectExternalInterface`, step by step, in its order;
/// returns the shortest and longest time the node can have been without
/// its address or default route (see [`Steps::window`]), and how long after
/// the upstream saw a query the address was gone.
fn connect_external_interface(
    topo: &Topology,
    upstream: &SlowUpstream,
) -> Result<(Duration, Duration, Duration), LabError> {
    let node = topo.node.as_str();
    let bridge = topo.bridge.as_str();
    let mac = super::peer_mac(node)?;
    let ip = |args: &[&str]| {
        let mut full = vec!["-n", node];
        full.extend_from_slice(args);
        topology::ip(&full)
    };
    let ebtables = |args: &[&str]| topo.exec(node, "ebtables", args);
    let cidr = topology::node_cidr();
    let gateway = GATEWAY.to_string();
    ip(&["link", "add", bridge, "type", "bridge"])?;
    let query_seen = upstream.hold_next_answer(HOLD_LIMIT);
    let deleting = Instant::now();
    let deleted = ip(&["addr", "del", &cidr, "dev", "eth0"]).map(|_| Instant::now());
    // Sent whatever happened: a failed step must not leave answers held.
    upstream.release();
    let deleted = deleted?;
    ebtables(&[
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth0",
        "-j",
        "snat",
        "--to-src",
        &mac,
    ])?;
    ebtables(&[
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-i",
        "eth0",
        "-p",
        "ARP",
        "--arp-op",
        "Reply",
        "-j",
        "dnat",
        "--to-dst",
        "ff:ff:ff:ff:ff:ff",
        "--dnat-target",
        "ACCEPT",
    ])?;
    ip(&["link", "set", "eth0", "down"])?;
    ip(&["link", "set", "eth0", "master", bridge])?;
    ip(&["link", "set", "eth0", "up"])?;
    ip(&["link", "set", bridge, "up"])?;
    ip(&["addr", "add", &cidr, "dev", bridge])?;
    let restoring = Instant::now();
    ip(&["route", "add", "default", "via", &gateway, "dev", bridge])?;
    Ok((
        restoring - deleted,
        deleting.elapsed(),
        deleted - query_seen,
    ))
}

/// `getent ahosts` in a loop in `netns` until `stop`: each lookup's wall
/// time and success.
fn lookup_loop(netns: String, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(Duration, bool)>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = dns::getent(&netns, LOOKUP_NAME).is_some();
            out.push((start.elapsed(), ok));
        }
        out
    })
}

/// From the server-side capture's queries (one `address port id` line
/// each): (queries, exchanges sent more than once).
fn resent_at_server(queries: &str) -> (u64, u64) {
    let mut sends: BTreeMap<&str, u64> = BTreeMap::new();
    for line in queries.lines() {
        *sends.entry(line).or_default() += 1;
    }
    let queries = sends.values().sum();
    let resent = sends.values().filter(|&&n| n > 1).count() as u64;
    (queries, resent)
}

/// How long the lab waits for a query to hold (the node's clients send one
/// every few ms; a run without any fails its own checks).
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// A reply and where it goes.
type Reply = (Vec<u8>, std::net::SocketAddr);

/// A DNS upstream that answers every query after [`UPSTREAM_DELAY`]: A
/// queries with [`ANSWER`], others with an empty NOERROR. While held
/// ([`Self::hold_next_answer`]), answers wait until [`Self::release`].
struct SlowUpstream {
    /// Queries received so far.
    received: Arc<std::sync::atomic::AtomicU64>,
    /// `Some` while answers are held: the ones waiting.
    held: Arc<Mutex<Option<Vec<Reply>>>>,
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 20);

impl SlowUpstream {
    fn start(netns: &str) -> Result<Self, LabError> {
        let socket = netns::run_in(netns, || UdpSocket::bind(SocketAddrV4::new(UPSTREAM, 53)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let held: Arc<Mutex<Option<Vec<Reply>>>> = Arc::default();
        let thread = {
            let (socket, stop) = (socket.try_clone()?, Arc::clone(&stop));
            let (count, held) = (Arc::clone(&received), Arc::clone(&held));
            std::thread::spawn(move || serve(&socket, &stop, &count, &held))
        };
        Ok(Self {
            received,
            held,
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// Holds answers from now on and returns once a new query arrived (its
    /// answer is then held), or after `limit`: when it was seen.
    fn hold_next_answer(&self, limit: Duration) -> Instant {
        *lock(&self.held) = Some(Vec::new());
        let start = Instant::now();
        let before = self.received.load(Ordering::Acquire);
        while self.received.load(Ordering::Acquire) == before && start.elapsed() < limit {
            std::thread::sleep(Duration::from_micros(200));
        }
        Instant::now()
    }

    /// Sends the held answers now and stops holding.
    fn release(&self) {
        let held = lock(&self.held).take().unwrap_or_default();
        for (reply, to) in held {
            let _ = self.socket.send_to(&reply, to);
        }
    }
}

/// The upstream's loop: each query's answer is held, or sent
/// [`UPSTREAM_DELAY`] later by a second thread.
fn serve(
    socket: &UdpSocket,
    stop: &AtomicBool,
    received: &std::sync::atomic::AtomicU64,
    held: &Mutex<Option<Vec<Reply>>>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Reply)>();
    let sender = socket.try_clone().ok();
    let delayed = std::thread::spawn(move || {
        for (due, (reply, to)) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if let Some(s) = &sender {
                let _ = s.send_to(&reply, to);
            }
        }
    });
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(reply) = answer(&buf[..n]) else {
            continue;
        };
        // Counted under the lock: a query counted while holding is held.
        let mut held = lock(held);
        received.fetch_add(1, Ordering::Release);
        match held.as_mut() {
            Some(waiting) => waiting.push((reply, from)),
            None => {
                let _ = tx.send((Instant::now() + UPSTREAM_DELAY, (reply, from)));
            }
        }
    }
    drop(tx);
    let _ = delayed.join();
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// DNS header flags of the answer: QR, RD, RA, NOERROR (RFC 1035 4.1.1).
const ANSWER_FLAGS: u16 = 0x8180;
const HEADER_LEN: usize = 12;
/// Compression pointer to the question's name at offset 12.
const NAME_POINTER: u16 = 0xc000 | HEADER_LEN as u16;
const CLASS_IN: u16 = 1;

/// The answer to `query` (header + its one question + an A record for A
/// queries; the query's EDNS record is dropped), or `None` if malformed.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut end = HEADER_LEN;
    while *query.get(end)? != 0 {
        end += usize::from(query[end]) + 1;
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let mut out = query.get(..question_end)?.to_vec();
    let is_a = qtype == tracer_common::dns::QTYPE_A;
    out[2..4].copy_from_slice(&ANSWER_FLAGS.to_be_bytes());
    out[4..12].copy_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    if is_a {
        out.extend_from_slice(&NAME_POINTER.to_be_bytes());
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ANSWER.octets());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_answers_a_with_a_record_and_others_empty() {
        let q = dns::query(9, "api.lab.test");
        let a = answer(&q).unwrap();
        assert_eq!(&a[..4], &[0, 9, 0x81, 0x80]);
        assert_eq!(&a[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&a[a.len() - 4..], &[10, 96, 1, 20]);
        let mut aaaa = q.clone();
        let n = aaaa.len();
        aaaa[n - 3] = 28;
        let a = answer(&aaaa).unwrap();
        assert_eq!(a.len(), q.len());
        assert_eq!(&a[6..8], &[0, 0]);
        assert!(answer(&q[..14]).is_none());
    }
}
