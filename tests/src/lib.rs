//! Helpers shared by the integration tests: privilege gating, UDP traffic
//! between pods, and the `tracer` binary under test.

pub mod dns;
pub mod frames;
pub mod kubepod;
pub mod manifests;
pub mod podman;
pub mod prometheus;

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use tracer::{netns, privileges};

/// True when the test may touch the kernel. Otherwise prints why it skips;
/// under `CI=true` a skip is a failure, so CI can never pass by skipping.
pub fn privileged(test: &str) -> bool {
    let Some(reason) = privileges::check(privileges::TRACE_CAPS) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run: {reason}. Under CI=true a skipped privileged test is a failure."
    );
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// A UDP receiver bound inside a pod, counting datagrams until told to stop.
pub struct Receiver {
    stop: mpsc::Sender<()>,
    received: Arc<AtomicU64>,
    handle: JoinHandle<Result<u64, netns::NetnsError>>,
}

impl Receiver {
    /// Binds `ip:port` inside `netns` and starts counting. Returns once bound,
    /// so no datagram sent afterwards meets a closed port (and an ICMP error).
    pub fn start(netns: &str, ip: Ipv4Addr, port: u16) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let handle = netns::spawn_in(netns, move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(ip, port)).expect("bind receiver");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("set timeout");
            ready_tx.send(()).expect("signal ready");
            let mut buf = [0u8; 65536];
            let mut count = 0;
            loop {
                match socket.recv(&mut buf) {
                    Ok(_) => {
                        count += 1;
                        counter.store(count, Ordering::Relaxed);
                    }
                    Err(_) if stop_rx.try_recv().is_ok() => return count,
                    Err(_) => {}
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("receiver did not bind within 5 s");
        Self {
            stop,
            received,
            handle,
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` datagrams arrived; false after `timeout`.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let start = std::time::Instant::now();
        while self.received() < n {
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops after the queue drains and returns how many datagrams arrived.
    pub fn finish(self) -> u64 {
        self.stop.send(()).expect("stop receiver");
        self.handle
            .join()
            .expect("receiver thread panicked")
            .expect("receiver netns")
    }
}

/// Sends `count` datagrams of `payload` bytes from `netns` to `to`, from one
/// socket bound to a fixed source port, paced so no queue overflows.
pub fn send_udp(netns: &str, to: SocketAddrV4, src_port: u16, count: u64, payload: usize) {
    send_udp_bytes(netns, to, src_port, count, vec![0x5a_u8; payload]);
}

/// [`send_udp`] with `data` as every datagram's payload.
pub fn send_udp_bytes(netns: &str, to: SocketAddrV4, src_port: u16, count: u64, data: Vec<u8>) {
    netns::run_in(netns, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, src_port))
            .expect("bind sender");
        for i in 0..count {
            socket.send_to(&data, to).expect("send_to");
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .expect("sender netns");
}

/// The `tracer` binary under test: `$TRACER_BIN`, else the workspace's
/// `target/debug/tracer` (`cargo xtask test` builds it first).
pub fn tracer_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TRACER_BIN") {
        return path.into();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tracer");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p tracer` (cargo xtask test does)",
        path.display()
    );
    path
}

/// Ethernet + IPv4 + UDP header bytes in front of a UDP payload, as TC counts.
pub const UDP_OVERHEAD: u64 = 14 + 20 + 8;

/// Sends one datagram and waits until it arrives, so neighbour resolution
/// (proxy ARP answers after up to `proxy_delay`, 0.8 s by default) and FDB
/// learning are done before a test starts counting.
pub fn warm_up(netns: &str, rx: &Receiver, to: SocketAddrV4, src_port: u16) {
    let want = rx.received() + 1;
    send_udp(netns, to, src_port, 1, 8);
    assert!(
        rx.wait_for(want, Duration::from_secs(5)),
        "warm-up datagram to {to} did not arrive within 5 s"
    );
}

/// Names of the programs attached through TCX to `iface` of namespace `netns`,
/// both directions. Used to prove that nothing is left behind.
pub fn tcx_programs(netns: &str, iface: &str) -> Vec<String> {
    // Before v6.6 there is no TCX to query (BPF_PROG_QUERY: EINVAL), and so
    // nothing can be attached through it.
    if tracer::attach::TcAttachMode::detect() == tracer::attach::TcAttachMode::Legacy {
        return Vec::new();
    }
    let iface = iface.to_owned();
    netns::run_in(netns, move || {
        use aya::programs::{SchedClassifier, TcAttachType};
        let mut names = Vec::new();
        for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, progs) = SchedClassifier::query_tcx(&iface, dir).expect("query_tcx");
            names.extend(
                progs
                    .iter()
                    .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
            );
        }
        names
    })
    .expect("enter namespace")
}

/// One filter line of `tc filter show dev IFACE ingress|egress`: the
/// kernel's view, read with iproute2 rather than tracer's own netlink code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TcFilter {
    /// `ingress` or `egress`.
    pub hook: &'static str,
    pub pref: u32,
    /// `bpf`, `u32`, …
    pub kind: String,
    /// For cls_bpf: the program's name and id (`name X`, `id N`).
    pub name: Option<String>,
    pub id: Option<u32>,
    /// The whole line, for comparing foreign filters unchanged.
    pub line: String,
}

/// The legacy TC filters on `iface` in `netns`, both clsact hooks (none
/// without a clsact qdisc). Header lines (one per priority) are left out.
pub fn tc_filters(netns: &str, iface: &str) -> Vec<TcFilter> {
    let mut out = Vec::new();
    for hook in ["ingress", "egress"] {
        let o = Command::new("tc")
            .args(["-n", netns, "filter", "show", "dev", iface, hook])
            .output()
            .expect("run tc");
        assert!(
            o.status.success(),
            "tc filter show dev {iface} {hook}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if !line.starts_with("filter ") || !(line.contains(" handle ") || line.contains("::")) {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| (*w).to_owned())
            };
            out.push(TcFilter {
                hook,
                pref: after("pref").and_then(|p| p.parse().ok()).unwrap_or(0),
                kind: after("pref")
                    .and_then(|_| words.iter().position(|w| *w == "pref"))
                    .and_then(|i| words.get(i + 2))
                    .map_or_else(String::new, |w| (*w).to_owned()),
                name: after("name"),
                id: after("id").and_then(|i| i.parse().ok()),
                line: line.to_owned(),
            });
        }
    }
    out
}

/// The tracer filters (`tracer_ingress`/`tracer_egress`) on `iface`.
pub fn tracer_filters(netns: &str, iface: &str) -> Vec<TcFilter> {
    tc_filters(netns, iface)
        .into_iter()
        .filter(|f| f.name.as_deref().is_some_and(|n| n.starts_with("tracer_")))
        .collect()
}

/// `tc qdisc show dev IFACE` has a clsact qdisc.
pub fn has_clsact(netns: &str, iface: &str) -> bool {
    let o = Command::new("tc")
        .args(["-n", netns, "qdisc", "show", "dev", iface])
        .output()
        .expect("run tc");
    String::from_utf8_lossy(&o.stdout).contains("qdisc clsact")
}

/// Every program attached to `iface` either way: TCX links and legacy
/// cls_bpf filters of tracer. Empty = nothing of tracer's left, whichever
/// path the kernel took.
pub fn attached_programs(netns: &str, iface: &str) -> Vec<String> {
    let mut names = tcx_programs(netns, iface);
    if names.is_empty() {
        names.extend(
            tracer_filters(netns, iface)
                .into_iter()
                .filter_map(|f| f.name),
        );
    }
    names
}

/// The TC attach path a tracer without `--tc-attach` takes here: the
/// kernel's (TCX from 6.6), unless `TRACER_TC_ATTACH` forces one — the
/// tracers the tests spawn inherit it, so `TRACER_TC_ATTACH=legacy cargo
/// test` runs the path-aware tests on the legacy path of a new kernel.
pub fn default_tc_attach() -> tracer::attach::TcAttachMode {
    use tracer::attach::TcAttachMode;
    match std::env::var("TRACER_TC_ATTACH").as_deref() {
        Ok("legacy") => TcAttachMode::Legacy,
        Ok("tcx") => TcAttachMode::Tcx,
        _ => TcAttachMode::detect(),
    }
}

/// How long a started tracer may take to be ready: loading and verifying
/// the programs takes ~1 s here but ~20–60 s in the kernel matrix's QEMU
/// VMs (TCG, two tracers at once on two emulated CPUs).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a signalled tracer may take to exit (detach, final report);
/// generous for the same reason.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `tracer --netns NODE watch --output json`, stopped by a signal.
///
/// Its stdout and stderr are drained by threads while it runs: a busy
/// trace's report is larger than a pipe buffer, and a tracer blocked on a
/// full pipe could not exit.
pub struct TracerRun {
    child: Child,
    ready: PathBuf,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

impl TracerRun {
    /// Starts tracer in `node` with `extra` watch arguments and returns once
    /// its ready file says every probe is attached.
    pub fn start(node: &str, extra: &[&str]) -> Self {
        // Unique per run: two tracers may trace one node at once.
        static RUN: AtomicU64 = AtomicU64::new(0);
        let ready = std::env::temp_dir().join(format!(
            "tracer-ready-{node}-{}",
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(tracer_bin())
            .args([
                "--netns",
                node,
                "watch",
                "--output",
                "json",
                "--interval",
                "0.2",
            ])
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer");
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let start = Instant::now();
        let mut run = Self {
            child,
            ready,
            stdout,
            stderr,
        };
        while !run.ready.exists() {
            if let Some(status) = run.child.try_wait().expect("wait") {
                let stderr = std::mem::replace(&mut run.stderr, std::thread::spawn(Vec::new))
                    .join()
                    .unwrap_or_default();
                panic!(
                    "tracer exited early ({status}): {}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "tracer not ready in {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        run
    }

    /// PID of the tracer process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits (STOP_TIMEOUT at most), checks the exit and the ready
    /// file's removal, and returns the JSON report.
    pub fn stop(self, signal: Signal) -> serde_json::Value {
        self.stop_with_log(signal).0
    }

    /// `kill -9`: no chance to clean up. Waits for the exit.
    pub fn kill9(mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGKILL).expect("SIGKILL tracer");
        let status = self.child.wait().expect("wait");
        // A killed tracer cannot remove its ready file.
        let _ = std::fs::remove_file(&self.ready);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    }

    /// [`Self::stop`], also returning what tracer logged on stderr.
    pub fn stop_with_log(mut self, signal: Signal) -> (serde_json::Value, String) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("signal tracer");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if start.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let take = |h: &mut JoinHandle<Vec<u8>>| {
            std::mem::replace(h, std::thread::spawn(Vec::new))
                .join()
                .unwrap_or_default()
        };
        let stdout = take(&mut self.stdout);
        let stderr = String::from_utf8_lossy(&take(&mut self.stderr)).into_owned();
        let status = status
            .unwrap_or_else(|| panic!("tracer ignored {signal} for {STOP_TIMEOUT:?}:\n{stderr}"));
        assert!(status.success(), "tracer {status}: {stderr}");
        assert!(!self.ready.exists(), "ready file removed at exit");
        let report = serde_json::from_slice(&stdout)
            .unwrap_or_else(|e| panic!("JSON report: {e}: {}", String::from_utf8_lossy(&stdout)));
        (report, stderr)
    }
}

impl Drop for TracerRun {
    fn drop(&mut self) {
        // Only our own child, by PID, and only if still running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.ready);
    }
}

/// Sends `build(round)` from two threads pinned to CPUs 0 and 1 at the same
/// instant, `rounds` times: identical packets racing to confirm one new
/// conntrack entry. Each frame's IP packet is sent on a raw socket.
pub fn race_pinned(
    client_ns: &str,
    dst: Ipv4Addr,
    rounds: u16,
    build: impl Fn(u16) -> Vec<u8> + Send + Sync + 'static,
) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let build = Arc::new(build);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|cpu| {
            let barrier = Arc::clone(&barrier);
            let build = Arc::clone(&build);
            netns::spawn_in(client_ns, move || {
                let mut set = CpuSet::new();
                set.set(cpu).expect("cpu");
                sched_setaffinity(Pid::from_raw(0), &set).expect("pin to a CPU");
                // SAFETY: plain socket(2); the fd is closed below.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
                assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
                let to = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(dst).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                for round in 0..rounds {
                    let frame = build(round);
                    let packet = &frame[14..];
                    barrier.wait();
                    // SAFETY: valid buffer and address for the call's duration.
                    unsafe {
                        libc::sendto(
                            fd,
                            packet.as_ptr().cast(),
                            packet.len(),
                            0,
                            (&raw const to).cast(),
                            size_of::<libc::sockaddr_in>() as u32,
                        );
                    }
                }
                // SAFETY: closing the fd we opened.
                unsafe { libc::close(fd) };
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("netns");
    }
}

/// xorshift64*: small, fast, good enough to pick mutations (the fuzz
/// tests). Seeded by `TRACER_FUZZ_SEED` and a per-stream salt.
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(salt: u64) -> Self {
        let seed = std::env::var("TRACER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_7ace_u64);
        // splitmix64 of seed and salt: distinct seeds, distinct streams.
        let mut z = seed.wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Sets the node bridge's FDB ageing time (centiseconds, as `ip link`
/// takes it): a silent receiver's entry then expires during the test and
/// the bridge floods the frames addressed to it.
pub fn set_fdb_ageing(topo: &tracer::lab::topology::Topology, centiseconds: u32) {
    let ageing = centiseconds.to_string();
    topo.exec(
        &topo.node,
        "ip",
        &[
            "link",
            "set",
            &topo.bridge,
            "type",
            "bridge",
            "ageing_time",
            &ageing,
        ],
    )
    .expect("bridge ageing_time");
}

/// The number after `word` in `text` (nft and tc statistics).
pub fn number_after(text: &str, word: &str) -> u64 {
    text.split(word)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {text}"))
}

/// Polls `f` every 20 ms until it holds; false if it still does not
/// after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entries of tracer's (`pid`'s) BPF map `name`, by `bpftool`: the maps
/// are told apart from other tracers' by the ids in `pid`'s fdinfo.
pub fn map_entries(pid: u32, name: &str) -> usize {
    map_dump(pid, name).len()
}

/// The keys of tracer's (`pid`'s) BPF map `name`, as raw bytes.
pub fn map_keys(pid: u32, name: &str) -> Vec<Vec<u8>> {
    let byte = |b: &serde_json::Value| {
        b.as_str()
            .and_then(|h| u8::from_str_radix(h.trim_start_matches("0x"), 16).ok())
            .expect("bpftool key byte")
    };
    map_dump(pid, name)
        .iter()
        .map(|e| {
            e["key"]
                .as_array()
                .expect("raw key")
                .iter()
                .map(byte)
                .collect()
        })
        .collect()
}

/// `bpftool -j map dump` of tracer's (`pid`'s) BPF map `name`.
fn map_dump(pid: u32, name: &str) -> Vec<serde_json::Value> {
    let ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("map_id:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(args)
            .output()
            .expect("bpftool");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    // One `map show id` per map of `pid`'s: a plain `map show` opens every
    // map in the kernel, dying ones of other tests' tracers included,
    // which can leak a program array (reliability.rs, `loaded_ids`).
    let id = ids
        .iter()
        .copied()
        .find(|id| json(&["map", "show", "id", &id.to_string()])["name"] == name)
        .unwrap_or_else(|| panic!("tracer's map {name}"));
    match json(&["map", "dump", "id", &id.to_string()]) {
        serde_json::Value::Array(entries) => entries,
        _ => Vec::new(),
    }
}
