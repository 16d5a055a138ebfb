//! DNS harness for integration tests with real programs: Debian's dnsmasq as
//! the server, glibc's resolver (`getent`, `perl`) as the clients, tcpdump
//! and tshark to see what went over the wire, nftables to lose an answer.
//!
//! Everything runs inside the namespaces a test built (a
//! [`Topology`](tracer::lab::topology::Topology)); nothing talks to an
//! address outside them. Each guard owns exactly the processes, files and
//! tables it made and removes them on drop, also during a panic.
//!
//! Typical use, pod 0 serving and pod 1 asking:
//!
//! ```no_run
//! # use std::net::{Ipv4Addr, Ipv6Addr};
//! # use tracer::lab::topology::{Datapath, Topology};
//! # use tracer_tests::dns::*;
//! let topo = Topology::build(Datapath::Bridge, 3).unwrap();
//! let (server, client) = (&topo.pods[0], &topo.pods[1]);
//! let records = [("svc.lab.test", Ipv4Addr::new(10, 9, 0, 1), "fd00::1".parse().unwrap())];
//! let dns = DnsServer::start(&server.netns, server.ip, &records);
//! let _conf = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
//! allow_aaaa_lookups(&client.netns);
//! let capture = Capture::start(&topo.node, &client.host_if);
//! let lookup = getent_ahosts(&client.netns, "svc.lab.test");
//! let packets = capture.stop();
//! # drop(dns);
//! ```
//!
//! Facts of this machine the harness is built around:
//! - `getent ahosts` calls `getaddrinfo(AF_UNSPEC, AI_ADDRCONFIG)`. With
//!   IPv6 disabled in a pod, `AI_ADDRCONFIG` makes glibc ask **only A**.
//!   [`allow_aaaa_lookups`] puts a ULA on the pod's `lo` (nothing is sent on
//!   any wire) so glibc sends A and AAAA in parallel (one UDP socket, one
//!   `sendmmsg`). [`getaddrinfo_unspec`] (perl, no `AI_ADDRCONFIG`, like
//!   Python, Java or Go's cgo resolver) asks both without it.
//! - The kernel has no `sch_netem` (`CONFIG_NET_SCH_NETEM` is not set), so
//!   [`netem_delay`] fails here; [`DnsServer::start_delayed`] delays the
//!   answers in user space instead (see there).
//! - tcpdump must run with `--immediate-mode`: with the default TPACKET_V3
//!   block timeout, packets still in the ring when SIGINT arrives are lost.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
    },
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracer::netns;

/// Debian's dnsmasq (package dnsmasq-base).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// DNS record types as numbers, as tshark prints `dns.qry.type`.
pub const QTYPE_A: u16 = 1;
/// See [`QTYPE_A`].
pub const QTYPE_AAAA: u16 = 28;

/// How long a server or capture may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Where dnsmasq listens behind the delaying relay of
/// [`DnsServer::start_delayed`], inside the server's namespace.
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5353);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, for temp files and nft tables.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// `ip netns exec NETNS program args…`, as a command to spawn. iproute2
/// `exec`s the program in place (no fork), so the child's PID is the
/// program's own PID, and bind-mounts `/etc/netns/NETNS/*` over `/etc/*`.
fn netns_exec(netns: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]).args(args);
    cmd
}

/// Runs a command to completion; panics (with its stderr) unless it exits 0.
fn run_ok(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops a child we spawned: `signal` to its own PID (only while it is not
/// reaped yet, so the PID cannot belong to anyone else), then waits; after
/// `grace` it gets SIGKILL. Returns its exit status.
fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    let _ = kill(pid, signal);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Collects a child's stderr lines on a thread. The first line containing
/// `ready_marker` (if any) is also sent on the returned channel.
fn drain_lines<R: Read + Send + 'static>(
    stream: R,
    ready_marker: Option<&'static str>,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if ready_marker.is_some_and(|m| line.contains(m)) {
                let _ = tx.send(line.clone());
            }
            sink.lock().expect("log lock").push(line);
        }
    });
    (lines, rx)
}

// ---------------------------------------------------------------------------
// DNS server
// ---------------------------------------------------------------------------

/// dnsmasq serving fixed A/AAAA records inside one namespace, UDP and TCP.
///
/// Started as `ip netns exec NETNS dnsmasq --no-daemon …`: foreground, no
/// config file, no `/etc/resolv.conf`, no `/etc/hosts`, no upstream, cache
/// disabled, no pid file, logging every query to stderr ([`Self::log`]).
/// `--no-daemon` (debug mode) also makes dnsmasq serve TCP in the same
/// process instead of forking a child per connection, so the one PID this
/// guard tracks is the whole server. Names not in `records` get REFUSED
/// (dnsmasq's answer when it has no upstream).
///
/// Dropping it sends SIGTERM to that PID only and waits for it.
pub struct DnsServer {
    netns: String,
    listen: Ipv4Addr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    relay: Option<Relay>,
}

impl DnsServer {
    /// Starts dnsmasq in `netns`, listening on `listen`:53 (UDP and TCP)
    /// only, answering `(name, ipv4, ipv6)` records authoritatively (TTL 0).
    /// Returns once the server answers a query sent from inside `netns`.
    pub fn start(netns: &str, listen: Ipv4Addr, records: &[(&str, Ipv4Addr, Ipv6Addr)]) -> Self {
        Self::spawn(netns, listen, records, None, None)
    }

    /// dnsmasq in `netns` on `listen`:53 with no records of its own,
    /// forwarding every query to `upstream` (no cache: each query goes
    /// upstream), as CoreDNS forwards to the node's resolver. `upstream_delay`
    /// is how long the upstream takes (readiness probes wait that long).
    /// `probe_name` must be a name the upstream answers.
    pub fn start_forwarding(
        netns: &str,
        listen: Ipv4Addr,
        upstream: SocketAddrV4,
        upstream_delay: Duration,
        probe_name: &'static str,
    ) -> Self {
        let probe = [(probe_name, Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)];
        Self::spawn(
            netns,
            listen,
            &probe,
            None,
            Some((upstream, upstream_delay)),
        )
    }

    /// Like [`Self::start`], but every answer leaves `delay` after its query
    /// arrived: the netem stand-in for kernels without `sch_netem` (ours).
    ///
    /// dnsmasq listens on 127.0.0.1:5353 inside `netns`; a relay thread of
    /// the test process (in `netns`) owns `listen`:53 for UDP and TCP,
    /// forwards each query to dnsmasq over loopback and sends the answer from
    /// `listen`:53, no earlier than `delay` after the query arrived. On the
    /// wire this is indistinguishable from a slow server: same addresses,
    /// ports, ids and payloads. Queries are handled concurrently, so two
    /// parallel queries are both answered after `delay`, not `2 × delay`.
    pub fn start_delayed(
        netns: &str,
        listen: Ipv4Addr,
        records: &[(&str, Ipv4Addr, Ipv6Addr)],
        delay: Duration,
    ) -> Self {
        Self::spawn(netns, listen, records, Some(delay), None)
    }

    /// `records` are served unless `upstream` is given: then only the first
    /// record's name is used, as the readiness probe.
    fn spawn(
        netns: &str,
        listen: Ipv4Addr,
        records: &[(&str, Ipv4Addr, Ipv6Addr)],
        delay: Option<Duration>,
        upstream: Option<(SocketAddrV4, Duration)>,
    ) -> Self {
        let (address, port) = match delay {
            None => (listen, 53),
            Some(_) => (*BACKEND.ip(), BACKEND.port()),
        };
        let mut args: Vec<String> = [
            "--no-daemon",
            "--log-facility=-",
            "--log-queries",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file",
            "--cache-size=0",
            "--no-negcache",
            "--bind-interfaces",
            "--local-ttl=0",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        args.push(format!("--listen-address={address}"));
        args.push(format!("--port={port}"));
        match upstream {
            Some((to, _)) => args.push(format!("--server={}#{}", to.ip(), to.port())),
            None => {
                for (name, v4, v6) in records {
                    args.push(format!("--host-record={name},{v4},{v6}"));
                }
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = netns_exec(netns, DNSMASQ, &args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning dnsmasq in {netns}: {e}"));
        let (log, _) = drain_lines(child.stderr.take().expect("piped stderr"), None);
        let mut server = Self {
            netns: netns.to_owned(),
            listen,
            child,
            log,
            relay: None,
        };
        // Backend first, then the relay in front of it.
        let probe_name = records.first().map_or("ready.invalid", |r| r.0);
        let upstream_delay = upstream.map_or(Duration::ZERO, |(_, d)| d);
        server.wait_answering(SocketAddrV4::new(address, port), probe_name, upstream_delay);
        if let Some(delay) = delay {
            server.relay = Some(Relay::start(netns, listen, delay));
            server.wait_answering(SocketAddrV4::new(listen, 53), probe_name, delay);
        }
        server
    }

    /// Polls with UDP queries from inside the namespace until one is answered.
    fn wait_answering(&mut self, to: SocketAddrV4, name: &str, delay: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dnsmasq in {} exited ({status}) before answering:\n{}",
                    self.netns,
                    self.log().join("\n")
                );
            }
            let per_try = delay + Duration::from_millis(200);
            if query(&self.netns, to, name, QTYPE_A, Transport::Udp, per_try).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "dnsmasq in {} did not answer on {to} within {START_TIMEOUT:?}:\n{}",
                self.netns,
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's address, `listen`:53.
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.listen, 53)
    }

    /// PID of the dnsmasq process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// dnsmasq's log so far: `query[AAAA] name from 10.240.1.2`, then
    /// `config name is …` per answer. Includes the readiness probes (sent
    /// from the server's own namespace, so they never cross a veth).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// How many queries of type `qtype` (`"A"`, `"AAAA"`) for `name` dnsmasq
    /// logged from `client` (not counting the readiness probes, which come
    /// from the server's own address or, behind the relay, from 127.0.0.1:
    /// then every query is logged as from 127.0.0.1 and `client` is ignored).
    pub fn queries_logged(&self, qtype: &str, name: &str, client: Ipv4Addr) -> usize {
        let from = if self.relay.is_some() {
            "from 127.0.0.1".to_owned()
        } else {
            format!("from {client}")
        };
        let needle = format!("query[{qtype}] {name} {from}");
        self.log().iter().filter(|l| l.ends_with(&needle)).count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.stop();
        }
        stop_child(&mut self.child, Signal::SIGTERM, Duration::from_secs(3));
    }
}

/// The user-space delaying relay of [`DnsServer::start_delayed`].
struct Relay {
    netns: String,
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), netns::NetnsError>>>,
}

impl Relay {
    /// Binds `listen`:53 UDP and TCP inside `netns`; returns once bound.
    fn start(netns: &str, listen: Ipv4Addr, delay: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = SocketAddrV4::new(listen, 53);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();

        let udp_stop = Arc::clone(&stop);
        let udp_ready = ready_tx.clone();
        let udp = netns::spawn_in(netns, move || {
            let socket = match UdpSocket::bind(addr).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_millis(20)))
                    .map(|()| s)
            }) {
                Ok(s) => {
                    let _ = udp_ready.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = udp_ready.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 4096];
            while !udp_stop.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let arrived = Instant::now();
                let msg = buf[..len].to_vec();
                let reply_socket = socket.try_clone().expect("clone relay socket");
                // The thread inherits this thread's network namespace.
                std::thread::spawn(move || {
                    if let Ok(answer) = ask_backend(&msg) {
                        sleep_until(arrived + delay);
                        let _ = reply_socket.send_to(&answer, from);
                    }
                });
            }
        });

        let tcp_stop = Arc::clone(&stop);
        let tcp = netns::spawn_in(netns, move || {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Blocking accept, so a query's arrival time is not late by a
            // polling interval; `stop` wakes it with a connection of its own.
            while let Ok((stream, _)) = listener.accept() {
                if tcp_stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::spawn(move || relay_tcp(stream, delay));
            }
        });

        for _ in 0..2 {
            ready_rx
                .recv_timeout(START_TIMEOUT)
                .expect("relay did not start")
                .unwrap_or_else(|e| panic!("relay cannot bind {addr} in {netns}: {e}"));
        }
        Self {
            netns: netns.to_owned(),
            addr,
            stop,
            threads: vec![udp, tcp],
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let addr = self.addr;
        // Wakes the blocking accept. If that fails (the namespace is already
        // gone), the threads are left behind rather than joined forever.
        let woken = netns::run_in(&self.netns, move || {
            TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(1)).is_ok()
        });
        if !matches!(woken, Ok(true)) {
            return;
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Sends one DNS message to dnsmasq behind the relay, returns its answer.
fn ask_backend(msg: &[u8]) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    socket.connect(BACKEND)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(msg)?;
    let mut buf = vec![0u8; 65535];
    let len = socket.recv(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// One TCP client of the relay: each length-prefixed query is answered on
/// its own thread (so pipelined A+AAAA both wait `delay`, not twice).
fn relay_tcp(stream: TcpStream, delay: Duration) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    let mut reader = stream;
    let mut pending = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if reader.read_exact(&mut len).is_err() {
            break;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if reader.read_exact(&mut msg).is_err() {
            break;
        }
        let arrived = Instant::now();
        let writer = Arc::clone(&writer);
        pending.push(std::thread::spawn(move || {
            if let Ok(answer) = ask_backend(&msg) {
                sleep_until(arrived + delay);
                let mut framed = u16::try_from(answer.len())
                    .expect("answer fits 64 KiB")
                    .to_be_bytes()
                    .to_vec();
                framed.extend_from_slice(&answer);
                let _ = writer.lock().expect("writer lock").write_all(&framed);
            }
        }));
    }
    for t in pending {
        let _ = t.join();
    }
}

// ---------------------------------------------------------------------------
// A minimal DNS client, for readiness checks and diagnostics only
// ---------------------------------------------------------------------------

/// Transport of a [`query`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// Length-prefixed over one TCP connection (RFC 1035 §4.2.2).
    Tcp,
}

/// What [`query`] got back.
#[derive(Clone, Debug)]
pub struct DnsReply {
    pub id: u16,
    pub rcode: u8,
    /// Answer records.
    pub answers: u16,
    /// Query sent → answer read.
    pub elapsed: Duration,
}

/// Sends one hand-made query for `name`/`qtype` from inside `netns` and
/// waits up to `timeout` for its answer. For readiness checks and to prove
/// the TCP path of a server; tests should make their traffic with real
/// programs ([`getent_ahosts`], [`getaddrinfo_unspec`]; for TCP, glibc with
/// `options use-vc` in [`ResolvConf`]).
pub fn query(
    netns: &str,
    server: SocketAddrV4,
    name: &str,
    qtype: u16,
    transport: Transport,
    timeout: Duration,
) -> io::Result<DnsReply> {
    let id = u16::try_from(NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xffff).unwrap_or(0) ^ 0x5a5a;
    let msg = build_query(id, name, qtype);
    netns::run_in(netns, move || {
        let start = Instant::now();
        let reply = match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
                socket.connect(server)?;
                socket.set_read_timeout(Some(timeout))?;
                socket.send(&msg)?;
                let mut buf = vec![0u8; 65535];
                loop {
                    let len = socket.recv(&mut buf)?;
                    if len >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                        buf.truncate(len);
                        break buf;
                    }
                }
            }
            Transport::Tcp => {
                let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(server), timeout)?;
                stream.set_read_timeout(Some(timeout))?;
                let mut framed = u16::try_from(msg.len())
                    .expect("query fits")
                    .to_be_bytes()
                    .to_vec();
                framed.extend_from_slice(&msg);
                stream.write_all(&framed)?;
                let mut len = [0u8; 2];
                stream.read_exact(&mut len)?;
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut buf)?;
                buf
            }
        };
        let elapsed = start.elapsed();
        if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short or foreign reply",
            ));
        }
        Ok(DnsReply {
            id,
            rcode: reply[3] & 0x0f,
            answers: u16::from_be_bytes([reply[6], reply[7]]),
            elapsed,
        })
    })
    .map_err(io::Error::other)?
}

/// `name` in DNS wire format: length-prefixed labels and the root's 0.
/// Panics on an empty or over-long label.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l));
        let len = len.unwrap_or_else(|| panic!("bad DNS label {label:?} in {name:?}"));
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A DNS query message (RD, one question, class IN).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    msg.extend_from_slice(&wire_name(name));
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // class IN
    msg
}

// ---------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------

/// `/etc/netns/<netns>/` for one client namespace: `resolv.conf` with the
/// given nameserver and options, an `nsswitch.conf` equal to the system's
/// but with `hosts: dns`, and an empty `hosts`. `ip netns exec NETNS …`
/// bind-mounts each over its `/etc` twin, so every program run that way
/// (getent, perl; not threads of the test process) resolves through DNS only.
///
/// Options are glibc's (`resolv.conf(5)`): `timeout:5 attempts:2`,
/// `single-request`, `use-vc` (TCP only), … Dropping it removes the
/// directory.
pub struct ResolvConf {
    dir: PathBuf,
}

impl ResolvConf {
    pub fn write(netns: &str, nameserver: Ipv4Addr, options: &[&str]) -> Self {
        let dir = PathBuf::from("/etc/netns").join(netns);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let guard = Self { dir };
        let mut resolv = format!("nameserver {nameserver}\n");
        if !options.is_empty() {
            let _ = writeln!(resolv, "options {}", options.join(" "));
        }
        let system = fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let mut nsswitch: String = system
            .lines()
            .filter(|l| !l.trim_start().starts_with("hosts:"))
            .map(|l| format!("{l}\n"))
            .collect();
        nsswitch.push_str("hosts: dns\n");
        for (file, text) in [
            ("resolv.conf", resolv.as_str()),
            ("nsswitch.conf", nsswitch.as_str()),
            ("hosts", ""),
        ] {
            let path = guard.dir.join(file);
            fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        guard
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Makes glibc's `AI_ADDRCONFIG` see IPv6 in `netns`, so `getent ahosts`
/// (and most C programs) ask AAAA as well as A: enables IPv6 on `lo` only
/// and adds `fd00:ffff::1/128` there. The pod's `eth0` keeps IPv6 disabled,
/// so no router solicitation or DAD packet appears on any wire. Undone by
/// deleting the namespace.
pub fn allow_aaaa_lookups(netns: &str) {
    run_ok(netns_exec(
        netns,
        "sysctl",
        &["-q", "-w", "net.ipv6.conf.lo.disable_ipv6=0"],
    ));
    run_ok(netns_exec(
        netns,
        "ip",
        &["-6", "addr", "replace", "fd00:ffff::1/128", "dev", "lo"],
    ));
}

// ---------------------------------------------------------------------------
// Lookups with real programs
// ---------------------------------------------------------------------------

/// Result of one lookup by a real program.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub name: String,
    /// Distinct addresses, in the program's order.
    pub addrs: Vec<IpAddr>,
    pub status: ExitStatus,
    /// Wall time of the whole program run (includes `ip netns exec`, a few ms).
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Lookup {
    /// Exit status 0 and at least one address.
    pub fn ok(&self) -> bool {
        self.status.success() && !self.addrs.is_empty()
    }
}

fn run_lookup(netns: &str, name: &str, mut cmd: Command) -> Lookup {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning lookup of {name} in {netns}: {e}"));
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut addrs = Vec::new();
    for addr in stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<IpAddr>().ok())
    {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Lookup {
        name: name.to_owned(),
        addrs,
        status: out.status,
        elapsed,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ip netns exec NETNS getent ahosts NAME`: glibc `getaddrinfo` with
/// `AF_UNSPEC` and `AI_ADDRCONFIG`. A and AAAA go out in parallel over one
/// UDP socket (`sendmmsg`) when the namespace has IPv6 (see
/// [`allow_aaaa_lookups`]), else only A. Exit status 2 when not found.
pub fn getent_ahosts(netns: &str, name: &str) -> Lookup {
    run_lookup(netns, name, netns_exec(netns, "getent", &["ahosts", name]))
}

/// glibc `getaddrinfo(name, AF_UNSPEC, SOCK_STREAM)` **without**
/// `AI_ADDRCONFIG`, through Debian's perl (`Socket::getaddrinfo`): always
/// A + AAAA in parallel over one socket, like Python or Java would. Prints
/// one numeric address per line; exit status 2 with glibc's message on
/// stderr when the lookup fails.
pub fn getaddrinfo_unspec(netns: &str, name: &str) -> Lookup {
    const SCRIPT: &str = r#"
        use Socket qw(:addrinfo SOCK_STREAM);
        my ($err, @res) = getaddrinfo($ARGV[0], "", {socktype => SOCK_STREAM});
        if ($err) { print STDERR "getaddrinfo: $err\n"; exit 2; }
        for my $ai (@res) {
            my ($e, $host) = getnameinfo($ai->{addr}, NI_NUMERICHOST, NIx_NOSERV);
            print "$host\n";
        }
    "#;
    run_lookup(
        netns,
        name,
        netns_exec(netns, "/usr/bin/perl", &["-e", SCRIPT, name]),
    )
}

/// Runs [`getent_ahosts`] for each of `names` (repeat a name to look it up
/// several times), all at once (`concurrent`, one process each, started
/// back to back) or one after the other. Results in the order of `names`.
pub fn getent_ahosts_many(netns: &str, names: &[&str], concurrent: bool) -> Vec<Lookup> {
    if !concurrent {
        return names.iter().map(|n| getent_ahosts(netns, n)).collect();
    }
    let handles: Vec<_> = names
        .iter()
        .map(|n| {
            let (netns, name) = (netns.to_owned(), (*n).to_owned());
            std::thread::spawn(move || getent_ahosts(&netns, &name))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("lookup thread panicked"))
        .collect()
}

// ---------------------------------------------------------------------------
// Packet capture
// ---------------------------------------------------------------------------

/// One DNS message seen on the wire (a TCP segment may carry several; each
/// is its own `DnsPacket`, with the frame's time and addresses).
#[derive(Clone, Debug, PartialEq)]
pub struct DnsPacket {
    /// Capture time, seconds since the epoch (µs resolution).
    pub time: f64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Over TCP (else UDP).
    pub tcp: bool,
    pub id: u16,
    pub response: bool,
    /// First question's name, as tshark prints it (`svc.lab.test`).
    pub name: String,
    /// First question's type ([`QTYPE_A`], [`QTYPE_AAAA`], …).
    pub qtype: u16,
    pub rcode: u8,
    /// For a response: seconds since the query tshark matched it to (same
    /// id, addresses and ports). `None` for queries and unmatched responses.
    /// When a query was re-sent while unanswered, the answer is matched to
    /// the **original** query, so this includes the resolver timeout
    /// (≈ 5.0 s); a query re-sent after its first copy was answered starts
    /// a new transaction (see [`RETRANSMISSION_TIMER`]).
    pub dns_time: Option<f64>,
    /// tshark's `dns.retransmission`: a query re-sent (same id, addresses
    /// and ports, within [`RETRANSMISSION_TIMER`]) while its first copy was
    /// unanswered, or a duplicate response.
    pub retransmission: bool,
}

/// A running tcpdump writing DNS packets (port 53, UDP and TCP) seen on one
/// interface to a temp pcap. tcpdump runs as
/// `ip netns exec NETNS tcpdump --immediate-mode -U -Z root -n -i IFACE -w FILE port 53`;
/// its PID is tracked and only it is signalled.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    /// Starts capturing on `iface` in `netns`; returns once tcpdump reports
    /// `listening on IFACE` (the socket is bound and filtered: from then on
    /// no packet is missed).
    pub fn start(netns: &str, iface: &str) -> Self {
        Self::start_filtered(netns, iface, "port 53")
    }

    /// As [`Capture::start`], with any tcpdump capture filter.
    pub fn start_filtered(netns: &str, iface: &str, filter: &str) -> Self {
        let file = std::env::temp_dir().join(format!("{}.pcap", unique("tracer-dns-")));
        let file_arg = file.to_str().expect("utf-8 temp path").to_owned();
        let mut child = netns_exec(
            netns,
            "tcpdump",
            &[
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-n",
                "-i",
                iface,
                "-w",
                &file_arg,
                filter,
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning tcpdump in {netns}: {e}"));
        let (stderr, ready) =
            drain_lines(child.stderr.take().expect("piped"), Some("listening on"));
        let mut capture = Self {
            child: Some(child),
            file,
            stderr,
        };
        let start = Instant::now();
        loop {
            if ready.recv_timeout(Duration::from_millis(20)).is_ok() {
                return capture;
            }
            let child = capture.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tcpdump on {iface} in {netns} exited ({status}): {}",
                    capture.stderr.lock().expect("lock").join("\n")
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "tcpdump on {iface} in {netns} not listening after {START_TIMEOUT:?}"
            );
        }
    }

    /// Waits 100 ms for packets in flight, stops tcpdump and counts the
    /// captured packets (`tcpdump -r`), then removes the file.
    pub fn count(mut self) -> u64 {
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let out = Command::new("tcpdump")
            .args(["-r", self.file.to_str().expect("utf-8"), "-n", "-q"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("spawning tcpdump -r");
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    }

    /// Waits 100 ms for packets in flight, stops tcpdump (SIGINT to its PID,
    /// then waits), decodes the pcap with tshark and removes it. DNS
    /// messages in capture order.
    pub fn stop(mut self) -> Vec<DnsPacket> {
        std::thread::sleep(Duration::from_millis(100));
        self.halt();
        let out = Command::new("tshark")
            .args(["-r", self.file.to_str().expect("utf-8"), "-n", "-Y", "dns"])
            .args([
                "-o",
                &format!("dns.retransmission_timer:{RETRANSMISSION_TIMER}"),
            ])
            .args(["-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"])
            .args(["-E", "occurrence=a"])
            .args(TSHARK_FIELDS.iter().flat_map(|f| ["-e", f]))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("spawning tshark");
        assert!(
            out.status.success(),
            "tshark -r {} failed ({}): {}",
            self.file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        parse_tshark(&String::from_utf8_lossy(&out.stdout))
    }

    /// tcpdump's stderr so far (the `listening on` line, then its counters).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGINT, Duration::from_secs(5));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
        let _ = fs::remove_file(&self.file);
    }
}

/// Seconds within which tshark takes a query with an id already seen (same
/// addresses and ports) for a retransmission (`dns.retransmission_timer`,
/// 5 by default, which glibc's default `timeout:5` retry just misses).
pub const RETRANSMISSION_TIMER: u32 = 60;

/// The tshark fields [`parse_tshark`] expects, in order.
const TSHARK_FIELDS: [&str; 14] = [
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "dns.id",
    "dns.flags.response",
    "dns.qry.name",
    "dns.qry.type",
    "dns.flags.rcode",
    "dns.time",
    "dns.retransmission",
];

/// Parses `tshark -T fields` output of [`TSHARK_FIELDS`] (tab separated,
/// `,` between the values of the several DNS messages of one TCP frame).
pub fn parse_tshark(text: &str) -> Vec<DnsPacket> {
    let mut packets = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let many = |i: usize| -> Vec<&str> {
            let v = field(i);
            if v.is_empty() {
                Vec::new()
            } else {
                v.split(',').collect()
            }
        };
        let time: f64 = field(0)
            .parse()
            .unwrap_or_else(|_| panic!("time in {line:?}"));
        let src: Ipv4Addr = field(1)
            .parse()
            .unwrap_or_else(|_| panic!("ip.src in {line:?}"));
        let dst: Ipv4Addr = field(2)
            .parse()
            .unwrap_or_else(|_| panic!("ip.dst in {line:?}"));
        let tcp = field(3).is_empty();
        let (sp, dp) = if tcp {
            (field(5), field(6))
        } else {
            (field(3), field(4))
        };
        let port = |s: &str| -> u16 { s.parse().unwrap_or_else(|_| panic!("port in {line:?}")) };
        let (src_port, dst_port) = (port(sp), port(dp));
        let ids = many(7);
        let responses = many(8);
        let names = many(9);
        let qtypes = many(10);
        let rcodes = many(11);
        let times = many(12);
        let retrans = many(13);
        let mut response_index = 0;
        for (i, id) in ids.iter().enumerate() {
            let id = u16::from_str_radix(id.trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("dns.id in {line:?}"));
            let response = matches!(responses.get(i).copied(), Some("1" | "True" | "true"));
            // dns.time appears for matched responses only; align in order.
            let dns_time = if response {
                let t = times.get(response_index).and_then(|t| t.parse().ok());
                response_index += 1;
                t
            } else {
                None
            };
            packets.push(DnsPacket {
                time,
                src,
                dst,
                src_port,
                dst_port,
                tcp,
                id,
                response,
                name: names.get(i).copied().unwrap_or("").to_owned(),
                qtype: qtypes.get(i).and_then(|q| q.parse().ok()).unwrap_or(0),
                rcode: rcodes.get(i).and_then(|r| r.parse().ok()).unwrap_or(0),
                dns_time,
                // Present (as 1/True) only on retransmitted messages; with
                // several messages in one frame it cannot be attributed, so
                // it is set on all of them.
                retransmission: !retrans.is_empty(),
            });
        }
    }
    packets
}

// ---------------------------------------------------------------------------
// Delay and loss
// ---------------------------------------------------------------------------

/// `tc qdisc replace dev IFACE root netem delay Xms` inside `netns`.
///
/// Fails on kernels without `sch_netem` (`CONFIG_NET_SCH_NETEM` unset,
/// this VM's 6.18 included): use [`DnsServer::start_delayed`] there.
pub fn netem_delay(netns: &str, iface: &str, delay: Duration) -> Result<(), String> {
    let usecs = format!("{}us", delay.as_micros());
    let out = netns_exec(
        netns,
        "tc",
        &[
            "qdisc", "replace", "dev", iface, "root", "netem", "delay", &usecs,
        ],
    )
    .output()
    .map_err(|e| format!("spawning tc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tc netem on {iface} in {netns} failed ({}): {} (kernel without sch_netem, \
             CONFIG_NET_SCH_NETEM?)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An nftables table in the server's namespace that drops exactly the
/// first AAAA answer for one name leaving the server over UDP, and nothing
/// else.
///
/// The rule matches on the output hook: UDP source port 53, the QR bit, the
/// question name's wire bytes at offset 12 of the DNS message and qtype 28
/// right after it (offsets computed from the name's wire length). The first
/// match adds an element to a dynamic set and is dropped; later matches find
/// the set non-empty and are accepted. (`quota until 1 bytes` cannot do
/// this: nft's quota adds the packet's length before comparing, so even the
/// first packet is over a 1-byte quota.) The name must be spelt as the
/// client sends it (glibc sends it as given, no search domain with our
/// [`ResolvConf`]). Dropping the guard deletes the table; deleting the
/// namespace does too.
pub struct DropFirstAaaaAnswer {
    netns: String,
    table: String,
}

impl DropFirstAaaaAnswer {
    pub fn install(netns: &str, name: &str) -> Self {
        let table = unique("tracer_dns_drop_");
        let wire = wire_name(name);
        // Offsets from the UDP header, in bits: DNS header at 8 bytes,
        // question name at 8 + 12, qtype right after the name.
        let mut matchers = String::from("udp sport 53 @th,80,1 1");
        let mut offset = (8 + 12) * 8;
        for chunk in wire.chunks(16) {
            let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(matchers, " @th,{offset},{} 0x{hex}", chunk.len() * 8);
            offset += chunk.len() * 8;
        }
        let _ = write!(matchers, " @th,{offset},16 {QTYPE_AAAA}");
        let ruleset = format!(
            "table ip {table} {{\n\
             \tset done {{ type inet_proto; flags dynamic; size 1; }}\n\
             \tchain out {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\t{matchers} ip protocol @done counter accept\n\
             \t\t{matchers} add @done {{ ip protocol }} counter drop\n\
             \t}}\n\
             }}\n"
        );
        let mut child = netns_exec(netns, "nft", &["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning nft");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(ruleset.as_bytes())
            .expect("writing ruleset to nft");
        let out = child.wait_with_output().expect("waiting for nft");
        assert!(
            out.status.success(),
            "nft -f in {netns} failed ({}): {}\n{ruleset}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            netns: netns.to_owned(),
            table,
        }
    }

    /// Answers dropped so far (0 or 1), from the drop rule's counter.
    pub fn packets_dropped(&self) -> u64 {
        self.counter(" drop")
    }

    /// Matching answers let through after the first.
    pub fn packets_passed(&self) -> u64 {
        self.counter(" accept")
    }

    fn counter(&self, verdict: &str) -> u64 {
        let text = run_ok(netns_exec(
            &self.netns,
            "nft",
            &["list", "table", "ip", &self.table],
        ));
        let line = text
            .lines()
            .find(|l| l.contains("counter packets") && l.trim_end().ends_with(verdict.trim()))
            .unwrap_or_else(|| panic!("no{verdict} rule in table {}:\n{text}", self.table));
        let after = line.split("counter packets ").nth(1).expect("counter");
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse counter in {line:?}"))
    }

    /// The table's name (`ip` family), for `nft list table ip NAME`.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Drop for DropFirstAaaaAnswer {
    fn drop(&mut self) {
        // The namespace may already be gone; then so is the table.
        let _ = netns_exec(&self.netns, "nft", &["delete", "table", "ip", &self.table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Distinct `(src_port)` values of the queries in `packets` — a helper for
/// retry analysis (did the resolver keep its socket?).
pub fn query_source_ports(packets: &[DnsPacket]) -> BTreeSet<u16> {
    packets
        .iter()
        .filter(|p| !p.response)
        .map(|p| p.src_port)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        assert_eq!(wire_name("svc1.lab.test"), b"\x04svc1\x03lab\x04test\x00");
        assert_eq!(wire_name("a."), b"\x01a\x00");
    }

    #[test]
    fn parses_udp_and_multi_message_tcp_frames() {
        let text = "1795530758.408857000\t10.99.0.2\t10.99.0.1\t55194\t53\t\t\t0x86c2\t0\tsvc1.lab.test\t1\t0\t\t\n\
             1795530758.409000000\t10.99.0.1\t10.99.0.2\t\t\t53\t55194\t0x86c2,0x8dc7\t1,1\ta.b,a.b\t1,28\t0,0\t0.000546000,0.000583000\t\n";
        let p = parse_tshark(text);
        assert_eq!(p.len(), 3);
        assert!(!p[0].tcp && !p[0].response && p[0].dns_time.is_none());
        assert_eq!((p[0].id, p[0].qtype, p[0].src_port), (0x86c2, 1, 55194));
        assert!(p[1].tcp && p[1].response && p[2].response);
        assert_eq!((p[2].id, p[2].qtype, p[2].dst_port), (0x8dc7, 28, 55194));
        assert_eq!(p[2].dns_time, Some(0.000583));
    }
}
