//! Reliability and security of the real `tracer` binary: malformed traffic
//! through real veths, full maps and ring buffers, crash safety (`kill -9`
//! leaves nothing behind), refused hooks, and running with less than root.
//! (Decoder fuzzing is in `fuzz.rs`; interface churn and the metrics
//! endpoint are tested where they are built.)
//!
//! Frames are injected with an `AF_PACKET` socket inside a pod, on its
//! `eth0`: the host-side veth's TC ingress sees exactly what the pod sent.
//! The pods are on the *transparent* datapath (no bridge), and the frames
//! carry addresses no route leads to (client 10.97.0.1, server 10.96.0.10,
//! IPv6 disabled on the node), so the node drops every frame after TC: each
//! is seen by exactly one DNS hook, once, and the expected counts are exact.
//!
//! To fill the ring buffer on purpose, the collector is stalled with
//! SIGSTOP (our own child, by PID): the kernel side keeps producing events
//! and nothing drains them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;
use tracer::{
    lab::topology::{Datapath, Pod, Topology},
    netns,
};
use tracer_common::dns::{DnsStat, PENDING_MAX_ENTRIES};
use tracer_tests::{
    TracerRun, attached_programs, default_tc_attach,
    frames::{DnsMsg, Frame, L4},
    privileged, tracer_bin, tracer_filters, wait_until,
};

/// A client address nothing routes to: answers sent to it die in the node.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
/// A service address nothing routes to: queries sent to it die in the node.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xa);
const A: u16 = 1;
const AAAA: u16 = 28;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The MAC address of `iface` in namespace `ns` (`ip -o link show`).
fn mac_of(ns: &str, iface: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", iface])
        .output()
        .expect("run ip link show");
    assert!(out.status.success(), "ip link show {iface} in {ns}");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {text}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

/// An `AF_PACKET` raw socket bound to a pod's `eth0`: what it sends leaves
/// the pod as is, and the host-side veth's TC ingress sees it.
struct PodWire {
    fd: OwnedFd,
    src: [u8; 6],
    dst: [u8; 6],
    sent: u64,
    bytes: u64,
}

impl PodWire {
    /// Opens the socket inside `pod`; frames get the pod's own MAC as source
    /// and the MAC of `to` (the host-side veth or the bridge, in `node`) as
    /// destination.
    fn open(node: &str, pod: &Pod, to: &str) -> Self {
        let src = mac_of(&pod.netns, "eth0");
        let dst = mac_of(node, to);
        Self::bound(&pod.netns, "eth0", src, dst)
    }

    /// The other way: a socket on the host-side veth `host_if` in `node`,
    /// sending to the pod. What it sends leaves through the veth's TC egress,
    /// as an answer to the pod does.
    fn to_pod(node: &str, pod: &Pod) -> Self {
        let src = mac_of(node, &pod.host_if);
        let dst = mac_of(&pod.netns, "eth0");
        Self::bound(node, &pod.host_if, src, dst)
    }

    fn bound(netns: &str, iface: &str, src: [u8; 6], dst: [u8; 6]) -> Self {
        let iface = std::ffi::CString::new(iface).expect("interface name");
        let where_ = netns.to_owned();
        let fd = netns::run_in(netns, move || {
            // SAFETY: plain syscalls on values we own; the fd is checked.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                let fd = OwnedFd::from_raw_fd(fd);
                let ifindex = libc::if_nametoindex(iface.as_ptr());
                assert!(ifindex > 0, "{iface:?} in {where_}");
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                let ret = libc::bind(
                    fd.as_raw_fd(),
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
                fd
            }
        })
        .expect("enter pod namespace");
        Self {
            fd,
            src,
            dst,
            sent: 0,
            bytes: 0,
        }
    }

    /// Sends `frame` with its MACs replaced by the pod's and the veth's.
    fn send(&mut self, frame: &[u8]) {
        self.send_as(frame, self.dst);
    }

    /// Sends `frame` from the pod's MAC to `dst`.
    fn send_as(&mut self, frame: &[u8], dst: [u8; 6]) {
        let mut frame = frame.to_vec();
        assert!(frame.len() >= 14, "AF_PACKET needs a whole Ethernet header");
        frame[..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&self.src);
        // SAFETY: sends `frame.len()` initialised bytes on our socket.
        let ret = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            ret,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
        self.sent += 1;
        self.bytes += frame.len() as u64;
    }
}

fn udp(n: u16) -> L4 {
    L4::Udp {
        src: 20000 + n,
        dst: 53,
    }
}

fn tcp(n: u16) -> L4 {
    L4::Tcp {
        src: 20000 + n,
        dst: 53,
        flags: 0x18,
        seq: 1,
    }
}

/// Query number `n`: its own id and source port, so no two frames share a
/// pending key or a client socket (no re-sends, no parallel pairs).
fn query4(n: u16, name: &str) -> Frame {
    Frame::ipv4(CLIENT, SERVER, udp(n), &DnsMsg::query(n, name, A).bytes())
}

fn query6(n: u16, name: &str) -> Frame {
    Frame::ipv6(
        CLIENT6,
        SERVER6,
        udp(n),
        &DnsMsg::query(n, name, AAAA).bytes(),
    )
}

fn counters(report: &Value) -> BTreeMap<String, u64> {
    report["dns"]["counters"]
        .as_object()
        .unwrap_or_else(|| panic!("dns.counters: {report:#}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("counter value")))
        .collect()
}

fn losses(report: &Value) -> BTreeMap<String, u64> {
    report["losses"]
        .as_array()
        .unwrap_or_else(|| panic!("losses: {report:#}"))
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().expect("reason").to_owned(),
                l["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

fn interface<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} in report: {report:#}"))
}

/// Expected DNS outcome counters: every name of `DnsStat`, zero unless added.
#[derive(Default)]
struct Expect(BTreeMap<String, u64>);

impl Expect {
    fn new() -> Self {
        Self(
            DnsStat::ALL
                .iter()
                .map(|s| (s.name().to_owned(), 0))
                .collect(),
        )
    }

    fn add(&mut self, outcomes: &[DnsStat]) {
        for s in outcomes {
            *self.0.get_mut(s.name()).expect("known counter") += 1;
        }
    }
}

/// A `tracer --netns NODE watch` we spawned ourselves, to choose its output
/// format, see its stderr and reap it with `wait4` (for its peak RSS). Its
/// pipes are drained by threads, as a big report outgrows a pipe buffer.
struct Proc {
    child: Child,
    ready: PathBuf,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    reaped: bool,
}

/// How a [`Proc`] ended.
struct Exit {
    /// Exit code, or `None` when killed by a signal.
    code: Option<i32>,
    signal: Option<i32>,
    /// Peak resident set size over its whole life, KiB (`ru_maxrss`).
    max_rss_kib: i64,
    stdout: String,
    stderr: String,
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

impl Proc {
    /// Starts tracer in `node` with `args` after `watch`; returns once its
    /// ready file says every probe is attached.
    fn start(node: &str, args: &[&str]) -> Self {
        let ready = std::env::temp_dir().join(format!("tracer-ready-proc-{node}"));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(tracer_bin())
            .args(["--netns", node, "watch", "--interval", "0.2"])
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let mut proc = Self {
            child,
            ready,
            stdout,
            stderr,
            reaped: false,
        };
        let ok = wait_until(tracer_tests::READY_TIMEOUT, || {
            proc.ready.exists() || !matches!(proc.child.try_wait(), Ok(None))
        });
        if !proc.ready.exists() {
            let exit = proc.wait(Duration::from_secs(1));
            panic!("tracer not ready (timed out: {}): {}", !ok, exit.stderr);
        }
        proc
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    /// Sends `signal` to our tracer (by PID, only while not reaped).
    fn signal(&self, signal: Signal) {
        assert!(!self.reaped);
        kill(self.pid(), signal).expect("signal tracer");
    }

    /// `VmRSS` and `VmHWM` (KiB) from `/proc/PID/status`.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in {status}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Waits for the exit (SIGKILL after `timeout`), reaping with `wait4`.
    fn wait(&mut self, timeout: Duration) -> Exit {
        let start = Instant::now();
        let pid = self.pid().as_raw();
        let mut status = 0;
        // SAFETY: rusage is plain data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waits for our own child only; pointers are valid.
            let ret = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            assert!(ret >= 0, "wait4: {}", std::io::Error::last_os_error());
            if ret == pid {
                break;
            }
            if start.elapsed() > timeout {
                let _ = kill(self.pid(), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reaped = true;
        let _ = std::fs::remove_file(&self.ready);
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            String::from_utf8_lossy(&h.map(|h| h.join().unwrap_or_default()).unwrap_or_default())
                .into_owned()
        };
        Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            max_rss_kib: usage.ru_maxrss,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }

    /// Stops it with `signal` and checks a clean exit: code 0, no panic.
    fn stop(mut self, signal: Signal) -> Exit {
        self.signal(signal);
        let exit = self.wait(tracer_tests::STOP_TIMEOUT);
        assert_eq!(exit.code, Some(0), "tracer after {signal}: {}", exit.stderr);
        assert_no_panic(&exit.stderr);
        exit
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only our own child, by PID, and only if not reaped yet.
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.ready);
    }
}

fn assert_no_panic(stderr: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad:?} in stderr:\n{stderr}");
    }
}

/// A UDP DNS query from `client`, number `n`: id `n`, source port 20000 + `n`.
fn query_from(client: Ipv4Addr, n: u16) -> Vec<u8> {
    Frame::ipv4(
        client,
        SERVER,
        udp(n),
        &DnsMsg::query(n, "lru.test", A).bytes(),
    )
    .build()
}

/// The NOERROR answer to [`query_from`]`(client, n)`.
fn answer_to(client: Ipv4Addr, n: u16) -> Vec<u8> {
    let from53 = L4::Udp {
        src: 53,
        dst: 20000 + n,
    };
    Frame::ipv4(
        SERVER,
        client,
        from53,
        &DnsMsg::response(n, "lru.test", A, 0, 1).bytes(),
    )
    .build()
}

// ---------------------------------------------------------------------------
// Malformed traffic through a real veth
// ---------------------------------------------------------------------------

/// Every kind of odd frame, sent from a pod through its real veth, lands
/// under its named outcome with the exact count; the collector decodes the
/// odd questions the kernel kept without a panic; nothing is lost.
///
/// Transparent datapath: only the host-side veth's TC ingress sees each
/// frame. (Through a bridge, frames addressed to it would also cross
/// `azure0`'s own TC ingress, but only those br_netfilter finds valid, when
/// that module is loaded: not an exact count.)
#[test]
fn malformed_frames_through_a_real_veth_land_in_named_outcomes() {
    if !privileged("malformed_frames_through_a_real_veth_land_in_named_outcomes") {
        return;
    }
    use DnsStat::*;
    let topo = Topology::build(Datapath::Transparent, 1).expect("topology");
    let pod = &topo.pods[0];
    let mut wire = PodWire::open(&topo.node, pod, &pod.host_if);
    // Unanswered after 1.2 s, so the report lists the odd questions the
    // kernel kept, decoded by the collector (names shown: `--dns-names`).
    let tracer = TracerRun::start(
        &topo.node,
        &[
            "--interface",
            &pod.host_if,
            "--dns-timeout",
            "0.2",
            "--dns-names",
        ],
    );

    let mut t = Inject {
        wire: &mut wire,
        expect: Expect::new(),
        n: std::cell::Cell::new(0),
    };

    // UDP query (71 bytes) cut at every length from a bare Ethernet header.
    for len in 14..=71 {
        let frame = query4(t.id(), "example.com").truncate(len).build();
        let outcomes: &[DnsStat] = match len {
            14..=41 => &[ShortHeaders],         // IPv4 or UDP header cut
            42..=53 => &[Malformed],            // DNS header cut
            54 => &[Queries, Malformed],        // no question at all
            55..=68 => &[Queries, QuestionCut], // name or qtype cut
            _ => &[Queries],                    // qclass cut, or whole
        };
        t.send(frame, outcomes);
    }

    // DNS over TCP (85 bytes: 20-byte TCP header, 2-byte length prefix)
    // cut at every length past the IPv4 header.
    let tcp_query = |n| {
        Frame::ipv4(
            CLIENT,
            SERVER,
            tcp(n),
            &DnsMsg::query(n, "example.com", A).bytes(),
        )
    };
    for len in 34..=85 {
        let frame = tcp_query(t.id()).truncate(len).build();
        let outcomes: &[DnsStat] = match len {
            34..=53 => &[ShortHeaders], // TCP header cut
            54 => &[],                  // no payload: like a bare ACK
            55..=67 => &[TcpNoHeader],  // split mid-header
            // From here the length prefix says more than the segment
            // holds: a message running past its segment.
            68 => &[Queries, Malformed, TcpSplitMessages], // header, no question
            69..=82 => &[Queries, QuestionCut, TcpSplitMessages], // name or qtype cut
            83..=84 => &[Queries, TcpSplitMessages],       // qclass cut
            _ => &[Queries],
        };
        t.send(frame, outcomes);
    }
    // A message split mid-header by the sender: prefix + 5 header bytes.
    let n = t.id();
    let msg = DnsMsg::query(n, "example.com", A).bytes();
    let split = Frame::ipv4(CLIENT, SERVER, tcp(n), &msg[..5]).build();
    t.send(split, &[TcpNoHeader]);
    // A bare ACK: nothing to count.
    let ack = Frame::ipv4(CLIENT, SERVER, tcp(t.id()), &[])
        .tcp_dns_length_prefix(false)
        .build();
    t.send(ack, &[]);
    // TCP data offset 4 words (< 20 bytes): a lying header.
    let mut bad_doff = tcp_query(t.id()).build();
    bad_doff[14 + 20 + 12] = 4 << 4;
    t.send(bad_doff, &[ShortHeaders]);

    // IPv4 options (IHL 8 and the maximum 15) are skipped; IHL 4 is a lie.
    t.send(
        query4(t.id(), "example.com").ipv4_options(3).build(),
        &[Queries],
    );
    t.send(
        query4(t.id(), "example.com").ipv4_options(10).build(),
        &[Queries],
    );
    let mut ihl4 = query4(t.id(), "example.com").build();
    ihl4[14] = 0x44;
    t.send(ihl4, &[ShortHeaders]);
    // Fragments: the first one carries the UDP header, later ones do not.
    t.send(
        query4(t.id(), "example.com").ipv4_fragment(0, true).build(),
        &[Queries],
    );
    t.send(
        query4(t.id(), "example.com")
            .ipv4_fragment(185, false)
            .build(),
        &[Fragments],
    );

    // IPv6 extension-header chains: up to the bound of 6 headers the L4
    // header is found; 7 or more are too deep.
    let chain = [0, 60, 43, 60, 43, 60, 43, 60];
    for depth in 0..=chain.len() {
        let frame = query6(t.id(), "example.com")
            .ipv6_ext_headers(&chain[..depth])
            .build();
        let outcomes: &[DnsStat] = if depth <= 6 {
            &[Queries]
        } else {
            &[Ipv6ExtTooDeep]
        };
        t.send(frame, outcomes);
    }
    // A non-first IPv6 fragment (offset 23 × 8 in its fragment header).
    let mut frag6 = query6(t.id(), "example.com")
        .ipv6_ext_headers(&[44])
        .build();
    frag6[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&(23u16 << 3).to_be_bytes());
    t.send(frag6, &[Fragments]);
    // An IPv6 chain cut inside its second extension header.
    let cut6 = query6(t.id(), "example.com")
        .ipv6_ext_headers(&[0, 60])
        .truncate(14 + 40 + 9)
        .build();
    t.send(cut6, &[ShortHeaders]);
    // An IPv6 header cut short.
    t.send(
        query6(t.id(), "example.com").truncate(14 + 39).build(),
        &[ShortHeaders],
    );

    // VLAN tags. See the test's notes: the veth's receive path moves the
    // outermost tag into skb metadata before TC, so TC parses one tag less
    // than the pod sent.
    for tags in 1..=4u16 {
        let mut frame = query4(t.id(), "example.com");
        for t in 0..tags {
            frame = frame.vlan(100 + t);
        }
        let outcomes: &[DnsStat] = if tags <= 3 {
            &[Queries]
        } else {
            &[VlanTooDeep]
        };
        t.send(frame.build(), outcomes);
    }
    // QinQ cut inside the inner tag.
    let qinq_cut = query4(t.id(), "example.com")
        .vlan(1)
        .vlan(2)
        .truncate(14 + 6)
        .build();
    t.send(qinq_cut, &[ShortHeaders]);

    // DNS messages that lie.
    for qdcount in [0, 2, 9, 0xffff] {
        let n = t.id();
        let msg = DnsMsg::query(n, "example.com", A).qdcount(qdcount).bytes();
        t.send(
            Frame::ipv4(CLIENT, SERVER, udp(n), &msg).build(),
            &[Queries, BogusCounts],
        );
    }
    // A compression pointer pointing at itself, and one pointing forward.
    for name in [
        &[0xc0, 0x0c][..],
        &[0xc0, 0xff],
        &[0x03, b'w', b'w', b'w', 0xc0, 0x0c],
    ] {
        let n = t.id();
        let msg = DnsMsg::query(n, "x", A).raw_name(name).bytes();
        t.send(
            Frame::ipv4(CLIENT, SERVER, udp(n), &msg).build(),
            &[Queries, Malformed],
        );
    }
    // A label longer than 63 bytes (its length byte has bit 6 set).
    let mut long_label = vec![64];
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.push(0);
    let n = t.id();
    let msg = DnsMsg::query(n, "x", A).raw_name(&long_label).bytes();
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(n), &msg).build(),
        &[Queries, Malformed],
    );
    // A 255-byte name (legal, longer than the 128 bytes kept) and a 300-byte
    // one (illegal): both kept cut.
    let long = ["abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0"; 3].join(".");
    t.send(
        query4(
            t.id(),
            &format!("{long}.abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu"),
        )
        .build(),
        &[Queries, QuestionCut],
    );
    let mut huge = Vec::new();
    for _ in 0..5 {
        huge.push(59);
        huge.extend_from_slice(&[b'h'; 59]);
    }
    huge.push(0);
    let n = t.id();
    let msg = DnsMsg::query(n, "x", A).raw_name(&huge).bytes();
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(n), &msg).build(),
        &[Queries, QuestionCut],
    );
    // A label running past the end of the message.
    let n = t.id();
    let msg = DnsMsg::query(n, "x", A).raw_name(&[50, b'a', b'b']).bytes();
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(n), &msg).build(),
        &[Queries, QuestionCut],
    );
    // Not a standard query: opcode 2 (STATUS).
    let mut status = DnsMsg::query(t.id(), "example.com", A).bytes();
    status[2] |= 2 << 3;
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(n), &status).build(),
        &[Malformed],
    );
    // An answer sent *to* port 53, and a query sent *from* it.
    let n = t.id();
    let answer = DnsMsg::response(n, "example.com", A, 0, 1).bytes();
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(n), &answer).build(),
        &[Malformed],
    );
    let n = t.id();
    let query = DnsMsg::query(n, "example.com", A).bytes();
    let from53 = L4::Udp {
        src: 53,
        dst: 20000 + n,
    };
    t.send(
        Frame::ipv4(SERVER, CLIENT, from53, &query).build(),
        &[Malformed],
    );
    // An answer no query is pending for.
    let n = t.id();
    let answer = DnsMsg::response(n, "example.com", A, 3, 1).bytes();
    let from53 = L4::Udp {
        src: 53,
        dst: 20000 + n,
    };
    t.send(
        Frame::ipv4(SERVER, CLIENT, from53, &answer).build(),
        &[Answers, Unmatched],
    );
    // Port 53 over UDP with no payload at all.
    t.send(
        Frame::ipv4(CLIENT, SERVER, udp(t.id()), &[]).build(),
        &[Malformed],
    );

    let mut want = t.expect.0;
    // Every query here is distinct: each one went into the pending LRU.
    let queries = want["queries"];
    want.insert("pending_inserted".to_owned(), queries);
    let frames = wire.sent;
    let bytes = wire.bytes;
    // Let the sweep (every 0.2 s) list the pending queries as unanswered.
    std::thread::sleep(Duration::from_millis(2000));
    let report = tracer.stop(Signal::SIGINT);

    let row = interface(&report, &pod.host_if);
    assert_eq!(row["ingress"]["packets"], frames, "every frame reached TC");
    // The outer VLAN tag of the 5 tagged frames is in skb metadata, not in
    // the bytes TC counts.
    assert_eq!(row["ingress"]["bytes"], bytes - 5 * 4);
    let got = counters(&report);
    let diff: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "DNS outcomes differ:\n{}\n{report:#}",
        diff.join("\n")
    );
    assert_eq!(got.len(), want.len(), "no unknown counters: {got:?}");
    assert!(
        losses(&report).values().all(|&n| n == 0),
        "{:?}",
        losses(&report)
    );
    assert_eq!(report["dns"]["undecodable_events"], 0);
    assert_eq!(report["dns"]["events_total"], 0, "no re-sends, no pairs");

    // The collector decoded every question the kernel kept, odd or not.
    let unanswered = report["dns"]["unanswered"].as_array().expect("unanswered");
    assert_eq!(
        unanswered.len() as u64,
        want["queries"],
        "one per pending query"
    );
    let names: Vec<&str> = unanswered
        .iter()
        .map(|u| u["question"]["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"example.com"), "{names:?}");
    assert!(names.contains(&"<malformed>"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("hhhh") && n.ends_with('…')),
        "{names:?}"
    );
    eprintln!(
        "malformed: {frames} frames, outcomes {got:?}, {} unanswered decoded",
        unanswered.len()
    );
}

/// Frames for one trace and the outcomes they should land in.
struct Inject<'a> {
    wire: &'a mut PodWire,
    expect: Expect,
    n: std::cell::Cell<u16>,
}

impl Inject<'_> {
    /// A fresh number for a frame's DNS id and source port.
    fn id(&self) -> u16 {
        self.n.set(self.n.get() + 1);
        self.n.get()
    }

    fn send(&mut self, frame: Vec<u8>, outcomes: &[DnsStat]) {
        self.wire.send(&frame);
        self.expect.add(outcomes);
    }
}

// ---------------------------------------------------------------------------
// Limits: a full pending-query LRU and a full ring buffer
// ---------------------------------------------------------------------------

/// Distinct queries per blast: more than the pending LRU holds.
const BLAST: u16 = 20_000;
/// Bytes of one ring record: a `DnsEvent` and the ring's 8-byte header.
const RING_RECORD: u64 = 208 + 8;

/// More distinct unanswered queries than the pending LRU holds, and more
/// re-send events than the ring buffer holds, all while the collector is
/// stopped (SIGSTOP: the kernel side keeps going, nothing drains the ring):
/// - every event the kernel wanted to send is either delivered or counted
///   in `losses.dns_ring_full`, exactly;
/// - queries pushed out of the LRU show up as unmatched answers when their
///   answer comes; the rest are listed as unanswered, at most the LRU's size;
/// - tracer's peak RSS over the whole run, report included, stays < 64 MiB.
#[test]
fn full_pending_lru_and_ring_are_counted_and_memory_stays_bounded() {
    if !privileged("full_pending_lru_and_ring_are_counted_and_memory_stays_bounded") {
        return;
    }
    let topo = Topology::build(Datapath::Transparent, 1).expect("topology");
    let pod = &topo.pods[0];
    let mut wire = PodWire::open(&topo.node, pod, &pod.host_if);
    // Answers travel to the pod: through the veth's TC egress, where tracer
    // expects an answer to a query its ingress saw.
    let mut answers = PodWire::to_pod(&topo.node, pod);
    // Unanswered after 1.5 s; no answer is slow (so re-sends are the only
    // events); names left out of the JSON (the default).
    let tracer = Proc::start(
        &topo.node,
        &[
            "--output",
            "json",
            "--interface",
            &pod.host_if,
            "--dns-timeout",
            "0.5",
            "--dns-slow-ms",
            "600000",
        ],
    );
    let (rss_idle, _) = tracer.rss_kib();
    let client_a = CLIENT;
    let client_b = Ipv4Addr::new(10, 97, 0, 2);

    tracer.signal(Signal::SIGSTOP);
    let started = Instant::now();
    // 1. 20000 distinct queries: the oldest are pushed out of the LRU.
    for n in 1..=BLAST {
        wire.send(&query_from(client_a, n));
    }
    // 2. The newest half re-sent: one event each, 2x what the ring holds.
    let resends = BLAST / 2;
    for n in (BLAST - resends + 1)..=BLAST {
        wire.send(&query_from(client_a, n));
    }
    // 3. Every query answered: evicted ones find nothing.
    for n in 1..=BLAST {
        answers.send(&answer_to(client_a, n));
    }
    // 4. 20000 more distinct queries that no one answers.
    for n in 1..=BLAST {
        wire.send(&query_from(client_b, n));
    }
    let blast = started.elapsed();
    let (rss_stopped, _) = tracer.rss_kib();
    tracer.signal(Signal::SIGCONT);
    // Drain, then sweep the phase-4 queries as unanswered (1.5 s).
    std::thread::sleep(Duration::from_millis(2500));
    let (rss_swept, hwm_running) = tracer.rss_kib();
    let exit = tracer.stop(Signal::SIGINT);
    let report: Value = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}: {}", exit.stderr));

    let c = counters(&report);
    let l = losses(&report);
    let dns = &report["dns"];
    let events_total = dns["events_total"].as_u64().expect("events_total");
    let ring_full = l["dns_ring_full"];
    let blast_n = u64::from(BLAST);
    assert_eq!(c["queries"], 2 * blast_n + u64::from(resends), "{c:?}");
    assert_eq!(c["answers"], blast_n);
    assert_eq!(c["parallel_pairs"], 0);
    assert_eq!(c["slow_answers"], 0);
    // The ring: every re-send event delivered or counted as lost.
    assert!(
        c["resent"] * RING_RECORD > 1 << 20,
        "more re-sends than the ring holds: {c:?}"
    );
    assert!(ring_full > 0, "a stalled collector loses events: {l:?}");
    assert_eq!(
        events_total + ring_full,
        c["resent"],
        "events delivered + dns_ring_full = events sent"
    );
    assert!(
        events_total <= (1 << 20) / RING_RECORD,
        "no more delivered than the ring holds"
    );
    assert_eq!(dns["undecodable_events"], 0);
    // The LRU: never an insert failure, only evictions.
    assert_eq!(l["dns_pending_insert_failed"], 0, "{l:?}");
    let (matched, unmatched) = (c["matched"], c["unmatched_answers"]);
    assert_eq!(matched + unmatched, blast_n);
    assert!(matched <= u64::from(PENDING_MAX_ENTRIES), "{c:?}");
    assert!(
        unmatched >= blast_n - u64::from(PENDING_MAX_ENTRIES),
        "answers to evicted queries are unmatched: {c:?}"
    );
    let unanswered = dns["unanswered"].as_array().expect("unanswered");
    let listed = unanswered.len() as u64;
    assert!(
        listed > 0 && listed <= u64::from(PENDING_MAX_ENTRIES),
        "{listed} unanswered"
    );
    assert!(
        unanswered.iter().all(|u| u["client"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.97.0.2:"))),
        "only the never-answered blast is left"
    );
    // Exposure: without --dns-names, JSON carries no DNS name.
    assert!(
        unanswered
            .iter()
            .all(|u| u["question"]["name"] == "<redacted>"),
        "names redacted by default"
    );
    assert!(!exit.stdout.contains("lru.test"), "no name in the JSON");
    // The JSON lists the first 1 000 never-answered queries
    // (`UNANSWERED_LISTED`) and counts the rest: nothing abandoned goes
    // uncounted.
    let not_listed = dns["unanswered_not_listed"].as_u64().expect("not listed");
    let per_if = &dns["per_interface"][0];
    assert_eq!(per_if["abandoned"], listed + not_listed, "{per_if:?}");
    assert_eq!(
        listed,
        per_if["abandoned"]
            .as_u64()
            .unwrap_or(0)
            .min(tracer::dns::collector::UNANSWERED_LISTED as u64)
    );
    // Memory.
    let peak = exit.max_rss_kib;
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB >= 64 MiB");
    eprintln!(
        "limits: {} frames in {blast:.2?}; ring: {} re-send events, {events_total} delivered, \
         {ring_full} lost (dns_ring_full); LRU ({PENDING_MAX_ENTRIES}): {matched} answers matched, \
         {unmatched} unmatched (their queries were evicted), of {BLAST} never-answered \
         queries {listed} listed and {not_listed} counted as unanswered, {} evicted without \
         any counter; RSS KiB: idle {rss_idle}, \
         stopped {rss_stopped}, swept {rss_swept}, running peak {hwm_running}, lifetime peak {peak}",
        wire.sent,
        c["resent"],
        blast_n - listed - not_listed
    );
}

// ---------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------

/// `prog_id`s and `link_id`s of the BPF objects a process holds open
/// (`/proc/PID/fdinfo/*`), and its map ids.
#[derive(Debug, Default)]
struct BpfFds {
    progs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

fn bpf_fds(pid: Pid) -> BpfFds {
    let mut fds = BpfFds::default();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).expect("read fdinfo") {
        let Ok(text) = std::fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        if let Some(link) = field("link_id:") {
            fds.links.insert(link);
        } else if let Some(prog) = field("prog_id:") {
            fds.progs.insert(prog);
        } else if let Some(map) = field("map_id:") {
            fds.maps.insert(map);
        }
    }
    fds
}

/// Program, link and map ids in the kernel right now, walked with
/// `BPF_*_GET_NEXT_ID` alone: nothing is opened. Opening a dying
/// program array by id (as `bpftool map show` or aya's `loaded_maps` do)
/// raises its user count again; when that count falls back to zero while
/// the array's first deferred clear is still queued (a loaded machine),
/// the second `prog_array_map_clear` takes a map reference its already
/// queued work item never puts, and the array outlives the process for
/// good (seen on 6.18: TC_DNS_TAIL arrays left with no program, link or fd
/// on them). Merely watching a killed tracer must not cause that.
fn loaded_ids() -> (BTreeSet<u32>, BTreeSet<u32>, BTreeSet<u32>) {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
    let walk = |cmd: libc::c_long| {
        let mut ids = BTreeSet::new();
        // union bpf_attr's get-next-id arm: start_id, next_id, open_flags.
        let mut attr = [0u32; 3];
        loop {
            // SAFETY: attr outlives the call and its size is passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    cmd,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                )
            };
            if rc != 0 {
                break;
            }
            ids.insert(attr[1]);
            attr[0] = attr[1];
        }
        ids
    };
    (
        walk(BPF_PROG_GET_NEXT_ID),
        walk(BPF_LINK_GET_NEXT_ID),
        walk(BPF_MAP_GET_NEXT_ID),
    )
}

/// For a failure message: each map's name and type, the programs that
/// use it and the processes with an fd on it.
fn who_holds(maps: &BTreeSet<u32>) -> String {
    let mut out = Vec::new();
    for info in aya::maps::loaded_maps().filter_map(Result::ok) {
        if !maps.contains(&info.id()) {
            continue;
        }
        let id = info.id();
        let progs: Vec<String> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.map_ids().ok().flatten().is_some_and(|m| m.contains(&id)))
            .map(|p| format!("{}:{}", p.id(), p.name_as_str().unwrap_or("?")))
            .collect();
        let mut procs = Vec::new();
        for pid in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let fdinfo = pid.path().join("fdinfo");
            let Ok(fds) = std::fs::read_dir(&fdinfo) else {
                continue;
            };
            let needle = format!("map_id:\t{id}\n");
            if fds
                .flatten()
                .any(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|t| t.contains(&needle)))
            {
                let comm = std::fs::read_to_string(pid.path().join("comm")).unwrap_or_default();
                procs.push(format!(
                    "{}:{}",
                    pid.file_name().to_string_lossy(),
                    comm.trim()
                ));
            }
        }
        out.push(format!(
            "map {id} {:?} {:?}: programs {progs:?}, processes {procs:?}",
            info.name_as_str().unwrap_or("?"),
            info.map_type()
        ));
    }
    out.join("; ")
}

/// `tc qdisc show` and `tc filter show` (both directions) of `iface`.
fn tc_state(node: &str, iface: &str) -> String {
    let mut out = String::new();
    for args in [
        &["qdisc", "show", "dev", iface][..],
        &["filter", "show", "dev", iface, "ingress"],
        &["filter", "show", "dev", iface, "egress"],
    ] {
        let o = Command::new("ip")
            .args(["netns", "exec", node, "tc"])
            .args(args)
            .output()
            .expect("run tc");
        assert!(o.status.success(), "tc {args:?}");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// `kill -9` of a running tracer, on the path this kernel takes by itself.
/// TCX (v6.6+): nothing is left behind: no TCX program on any interface, no
/// tc qdisc or filter, and every BPF link and program it held is gone from
/// the kernel (its ids, not names: other tests may be running their own
/// tracer). Legacy (before v6.6): its cls_bpf filters are left, by design,
/// holding its programs; the next tracer removes them, and then the
/// programs are gone too (tests/tests/legacy_tc.rs covers that path in
/// detail, forced on any kernel).
#[test]
fn sigkill_leaves_no_link_filter_or_qdisc_behind() {
    if !privileged("sigkill_leaves_no_link_filter_or_qdisc_behind") {
        return;
    }
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let mut ifaces: Vec<String> = topo.pods.iter().map(|p| p.host_if.clone()).collect();
    ifaces.extend(["azure0".to_owned(), "eth0".to_owned()]);
    let tc_before: Vec<String> = ifaces.iter().map(|i| tc_state(&topo.node, i)).collect();

    let mut tracer = Proc::start(&topo.node, &["--output", "json"]);
    let legacy = default_tc_attach() == tracer::attach::TcAttachMode::Legacy;
    let held = bpf_fds(tracer.pid());
    for iface in &ifaces {
        assert!(
            !attached_programs(&topo.node, iface).is_empty(),
            "tracer attached to {iface}"
        );
    }
    let (progs, links, maps) = loaded_ids();
    if !legacy {
        assert!(
            held.links.len() >= 2 * ifaces.len(),
            "a TCX link per interface and direction at least: {held:?}"
        );
    }
    assert!(held.links.is_subset(&links) && held.progs.is_subset(&progs));
    assert!(held.maps.is_subset(&maps));

    tracer.signal(Signal::SIGKILL);
    // A killed process exits once its fds are closed: each TCX link's
    // release takes RTNL, which namespace teardown elsewhere can hold long.
    let exit = tracer.wait(tracer_tests::STOP_TIMEOUT);
    assert_eq!(exit.signal, Some(libc::SIGKILL));

    if legacy {
        // Filters outlive a killed tracer before TCX: two per interface.
        for iface in &ifaces {
            assert_eq!(
                tracer_filters(&topo.node, iface).len(),
                2,
                "the killed tracer's filters on {iface}"
            );
        }
        // The next start removes them; it attaches and exits cleanly.
        let out = Command::new(tracer_bin())
            .args(["--netns", &topo.node, "watch", "-d", "1", "-o", "json"])
            .output()
            .expect("run tracer");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(report["tc_stale_filters"]["removed"], 2 * ifaces.len());
    }
    for (iface, before) in ifaces.iter().zip(&tc_before) {
        if legacy {
            // The killed tracer's clsact qdiscs stay: the next one cannot
            // know it created them (tests/tests/legacy_tc.rs).
            assert_eq!(tracer_filters(&topo.node, iface), Vec::new(), "{iface}");
            continue;
        }
        assert_eq!(
            attached_programs(&topo.node, iface),
            Vec::<String>::new(),
            "TCX programs left on {iface}"
        );
        let after = tc_state(&topo.node, iface);
        assert_eq!(&after, before, "tc qdisc/filter state of {iface}");
        assert!(
            !after.contains("clsact") && !after.contains("filter"),
            "{iface}: {after}"
        );
    }
    // Links go when their last fd closes; programs and maps after an RCU
    // grace period and a work item, which a loaded 2-CPU machine (the other
    // tests of this file flood veths meanwhile) can hold back for seconds.
    let mut left = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let gone = wait_until(tracer_tests::STOP_TIMEOUT, || {
        let (progs, links, maps) = loaded_ids();
        left = (
            held.progs.intersection(&progs).copied().collect(),
            held.links.intersection(&links).copied().collect(),
            held.maps.intersection(&maps).copied().collect(),
        );
        left.0.is_empty() && left.1.is_empty() && left.2.is_empty()
    });
    assert!(
        gone,
        "left in the kernel: programs {:?}, links {:?}, maps {:?}; {}",
        left.0,
        left.1,
        left.2,
        who_holds(&left.2)
    );
    eprintln!(
        "kill -9 ({}): {} links, {} programs, {} maps released; {} on {} interfaces",
        if legacy { "legacy" } else { "tcx" },
        held.links.len(),
        held.progs.len(),
        held.maps.len(),
        if legacy {
            "its filters removed by the next start"
        } else {
            "0 TCX programs, tc state unchanged"
        },
        ifaces.len()
    );
}

/// SIGTERM with the table output: a clean exit with the report on stdout,
/// losses included, every probe detached; and a hook the kernel refused is
/// named in the table, not only in the log.
#[test]
fn sigterm_prints_the_table_with_losses_and_detaches() {
    if !privileged("sigterm_prints_the_table_with_losses_and_detaches") {
        return;
    }
    const QUERIES: u16 = 6000;
    let topo = Topology::build(Datapath::Transparent, 1).expect("topology");
    let pod = &topo.pods[0];
    let mut wire = PodWire::open(&topo.node, pod, &pod.host_if);
    let tracer = Proc::start(&topo.node, &["--output", "table", "--dns-names"]);
    // Stall the collector and make more events than the ring holds.
    tracer.signal(Signal::SIGSTOP);
    for _ in 0..2 {
        for n in 1..=QUERIES {
            wire.send(&query_from(CLIENT, n));
        }
    }
    tracer.signal(Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(300));
    let exit = tracer.stop(Signal::SIGTERM);
    let table = &exit.stdout;

    assert!(table.contains("INTERFACE"), "{table}");
    assert!(table.contains(&pod.host_if), "{table}");
    assert!(
        table.contains(&format!("DNS: {} queries", 2 * QUERIES)),
        "{table}"
    );
    let losses = table
        .lines()
        .find(|l| l.starts_with("losses:"))
        .unwrap_or_else(|| panic!("a losses line: {table}"));
    let lost: u64 = losses
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dns_ring_full="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("dns_ring_full in {losses}"));
    assert!(lost > 0, "{losses}");
    // Degraded, never silent: each hook the log says was refused is also
    // named in the table.
    let refused: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains("not attached"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "WARN").nth(1))
        .collect();
    for program in &refused {
        assert!(
            table.contains(&format!("hook {program} ")),
            "hook {program} refused (stderr) but not in the table:\n{table}"
        );
    }
    for iface in [pod.host_if.as_str(), "eth0"] {
        assert_eq!(attached_programs(&topo.node, iface), Vec::<String>::new());
    }
    eprintln!("SIGTERM table: {losses}; refused hooks named: {refused:?}");
}

// ---------------------------------------------------------------------------
// Missing hooks and missing privileges
// ---------------------------------------------------------------------------

/// A hook the kernel refuses (fentry/fexit on this VM: EPERM) degrades the
/// trace, visibly: the JSON lists it with `attached: false` and an error,
/// stderr has a warning naming it, and the TC probes (DNS, flood victims)
/// still count.
#[test]
fn refused_hooks_are_reported_and_tc_probes_still_run() {
    if !privileged("refused_hooks_are_reported_and_tc_probes_still_run") {
        return;
    }
    const FLOODED: u64 = 5;
    let topo = Topology::build(Datapath::Bridge, 2).expect("topology");
    let (sender, victim) = (&topo.pods[0], &topo.pods[1]);
    let mut wire = PodWire::open(&topo.node, sender, "azure0");
    let tracer = Proc::start(&topo.node, &["--output", "json"]);
    wire.send(&query4(1, "example.com").build());
    // Unicast to a MAC the bridge never learned: flooded to every port.
    let unknown = [0x02, 0, 0, 0, 0, 0x99];
    let frame = Frame::ipv4(
        sender.ip,
        Ipv4Addr::new(10, 240, 9, 9),
        L4::Udp {
            src: 7000,
            dst: 7000,
        },
        &[0; 32],
    )
    .build();
    for _ in 0..FLOODED {
        wire.send_as(&frame, unknown);
    }
    std::thread::sleep(Duration::from_millis(300));
    let exit = tracer.stop(Signal::SIGINT);
    let report: Value = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("JSON report: {e}: {}", exit.stderr));

    let hooks: Vec<&Value> = ["conntrack", "flood", tracer::drops::AREA]
        .iter()
        .flat_map(|area| report[area]["hooks"].as_array().expect("hooks"))
        .collect();
    // The drop-reason hook is not tried before v5.17 (nothing to count).
    let reasons = tracer::probes::kernel_info()
        .drop_reasons
        .available()
        .is_ok();
    let tried = tracer::hooks::HOOKS
        .iter()
        .filter(|h| reasons || h.area != tracer::drops::AREA)
        .count();
    assert_eq!(hooks.len(), tried, "every hook listed");
    let mut refused = Vec::new();
    for h in &hooks {
        let program = h["program"].as_str().expect("program");
        let error = h["error"].as_str().unwrap_or("");
        if h["attached"] == true {
            assert!(h["error"].is_null(), "{h}");
            continue;
        }
        assert!(!error.trim().is_empty(), "refused without a reason: {h}");
        assert!(
            exit.stderr
                .lines()
                .any(|l| l.contains(program) && l.contains("not attached")),
            "no warning for {program}:\n{}",
            exit.stderr
        );
        refused.push(format!("{program} ({})", h["kind"].as_str().unwrap_or("?")));
    }
    // tp_btf hooks need no more than BTF: they attach wherever fentry is
    // refused for policy reasons.
    for h in hooks.iter().filter(|h| h["kind"] == "tp_btf") {
        assert_eq!(h["attached"], true, "{h}");
    }
    // The TC probes ran regardless.
    assert!(counters(&report)["queries"] >= 1, "DNS probe ran");
    let victims = report["flood"]["victims"].as_array().expect("victims");
    let copies = victims
        .iter()
        .find(|v| v["interface"] == victim.host_if.as_str())
        .unwrap_or_else(|| panic!("{} in flood.victims: {victims:#?}", victim.host_if));
    assert_eq!(copies["victim_packets"], FLOODED, "flood TC probe ran");
    eprintln!("refused hooks, reported in JSON and on stderr: {refused:?}");
}

/// Runs `setpriv ARGS… tracer --netns NODE watch -d 1 -o json`.
fn tracer_with(setpriv: &[&str], node: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(setpriv)
        .arg(tracer_bin())
        .args(["--netns", node, "watch", "-d", "1", "-o", "json"])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv")
}

/// Each of the three capabilities, missing alone: exit 1 with one line on
/// stderr naming exactly it, no panic or backtrace (RUST_BACKTRACE=1). And
/// the positive side of least privilege: CAP_SYS_ADMIN stands in for
/// CAP_BPF as tracer's check claims, and uid 65534 with exactly CAP_BPF,
/// CAP_PERFMON and CAP_NET_ADMIN traces.
#[test]
fn each_missing_capability_is_one_line_and_three_suffice() {
    if !privileged("each_missing_capability_is_one_line_and_three_suffice") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED each_missing_capability_is_one_line_and_three_suffice: not root");
        return;
    }
    let topo = Topology::build(Datapath::Transparent, 1).expect("topology");
    // CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON: drop it with them.
    for (drop, missing) in [
        ("-bpf,-sys_admin", "CAP_BPF"),
        ("-perfmon,-sys_admin", "CAP_PERFMON"),
        ("-net_admin", "CAP_NET_ADMIN"),
    ] {
        let bounding = format!("--bounding-set={drop}");
        let out = tracer_with(&[&bounding], &topo.node);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{drop}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{drop}: one line: {stderr}"
        );
        assert!(
            stderr.contains(&format!("missing capability {missing}:")),
            "{drop}: {stderr}"
        );
        assert_no_panic(&stderr);
        assert!(out.stdout.is_empty(), "no report");
    }

    // Only CAP_BPF dropped: CAP_SYS_ADMIN stands in, the kernel agrees.
    let out = tracer_with(&["--bounding-set=-bpf"], &topo.node);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["schema_version"], 1);

    // uid 65534 with exactly the three capabilities (ambient, so they
    // survive the exec), inside the node namespace (setns would need
    // CAP_SYS_ADMIN, which a real node's tracer does not use).
    let caps = "+bpf,+perfmon,+net_admin";
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.node, "setpriv"])
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
            &format!("--bounding-set=-all,{caps}"),
        ])
        .arg(tracer_bin())
        .args([
            "watch",
            "-d",
            "1",
            "-o",
            "json",
            "--interface",
            &topo.pods[0].host_if,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "three caps as uid 65534: {stderr}"
    );
    assert_no_panic(&stderr);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        report["interfaces"][0]["name"],
        topo.pods[0].host_if.as_str()
    );
    assert_eq!(
        attached_programs(&topo.node, &topo.pods[0].host_if),
        Vec::<String>::new()
    );
}
