//! `cargo xtask bench`: tracer's overhead and capacity (issue "Benchmarks:
//! overhead and capacity, as ratios against no probes and against tcpdump").
//!
//! Not a timed test: a program, run as root, that prints a Markdown table and
//! writes `results.json` and `RESULTS.md` to `--out`. Each figure is measured
//! in one run of alternating configurations (probes off / on, tracer /
//! tcpdump / nothing); every figure is the median of `--runs` runs with its
//! min–max.
//!
//! Phases, all traffic inside namespaces built here (`Topology`, RAII):
//! 1. `programs`: `BPF_PROG_TEST_RUN` on crafted frames, ns per program and
//!    code path.
//! 2. `packet`: 64-byte UDP pod→pod at the highest rate two pinned `sendmmsg`
//!    senders reach, through the bridge, every TC probe attached vs none;
//!    `BPF_ENABLE_STATS` for each program's real per-packet cost.
//! 3. `dns`: a built-in UDP DNS responder and load generator (1024 sockets,
//!    ids per socket), observed by the real `tracer` binary, by `tcpdump`, or
//!    by nothing: capacity, lost events, unmatched answers, collector CPU and
//!    RSS, cost against tcpdump.
//! 4. `flows`: 1 M DNS queries with distinct (source port, id): tracer's RSS.
//! 5. `startup`: `tracer watch` attaching to 100 pod veths.
//!
//! Child processes are stopped by their own PID (guards also do it on
//! panic); SIGINT/SIGTERM stop the run between measurements, so every guard
//! still cleans up.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{self, BufRead as _, BufReader, Read as _, Seek as _},
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun as _, TestRunOptions},
    sys::{Stats, enable_stats},
};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use tracer::{
    attach::{TcAttachments, TcProgram},
    counter, dns, flood, hooks, interfaces,
    lab::topology::{Datapath, Topology},
    netns,
    probes::{self, ProbeSettings},
    watch,
};
use tracer_tests::frames::{self, DnsMsg, Frame, L4};

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// Repetitions per `BPF_PROG_TEST_RUN` on a fixed path.
const TEST_RUN_REPEAT: u32 = 1_000_000;
/// Query/answer pairs per run for the stateful DNS paths (one test run each).
const DNS_LOOP: usize = 20_000;
/// UDP payload of the packet-path datagrams.
const PACKET_PAYLOAD: usize = 64;
/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;
/// Port of the packet-path receivers.
const SINK_PORT: u16 = 9000;
/// Client sockets of the DNS load generator (distinct source ports).
const DNS_SOCKETS: usize = 1024;
/// Question of every generated query (a realistic length).
const QNAME: &str = "kubernetes.default.svc.cluster.local";
/// Queries of the flows phase.
const FLOWS: u64 = 1_000_000;
/// A flows-phase socket is replaced after this many queries (new port).
const FLOWS_REOPEN: u32 = 16;
/// Pods of the startup phase.
const STARTUP_PODS: usize = 100;

/// Targets of the issue.
const TARGET_PATH_RATIO: f64 = 0.97;
const TARGET_NS_OTHER: f64 = 40.0;
const TARGET_NS_DNS: f64 = 150.0;
const TARGET_CPU_PCT: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_PEER_RATIO: f64 = 0.2;

/// Other load (% of a core) below which the machine counts as quiet.
const QUIET_PCT: f64 = 20.0;
/// DNS samples with more other load than this stay out of the ratios.
const DISTURBED_PCT: f64 = 25.0;

/// Raised by SIGINT/SIGTERM (or the time budget): stop between measurements.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

struct Args {
    tracer: PathBuf,
    out: PathBuf,
    runs: usize,
    budget: Duration,
    /// Wait at most this long at the start for other load to drop.
    quiet_wait: Duration,
    only: Vec<String>,
}

const PHASES: [&str; 5] = ["programs", "packet", "dns", "flows", "startup"];

fn parse_args() -> Result<Args> {
    let mut args = Args {
        tracer: PathBuf::from("target/release/tracer"),
        out: PathBuf::from("bench"),
        runs: 5,
        budget: Duration::from_secs(570),
        quiet_wait: Duration::from_secs(60),
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--tracer" => args.tracer = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--runs" => args.runs = value()?.parse().context("--runs")?,
            "--budget" => args.budget = Duration::from_secs(value()?.parse().context("--budget")?),
            "--quiet-wait" => {
                args.quiet_wait = Duration::from_secs(value()?.parse().context("--quiet-wait")?);
            }
            "--only" => args
                .only
                .extend(value()?.split(',').map(|s| s.trim().to_owned())),
            "-h" | "--help" => {
                println!(
                    "bench [--tracer PATH] [--out DIR] [--runs N] [--budget SECONDS] \
                     [--quiet-wait SECONDS] \
                     [--only {}]",
                    PHASES.join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    ensure!(args.runs >= 1, "--runs must be at least 1");
    for phase in &args.only {
        ensure!(
            PHASES.contains(&phase.as_str()),
            "unknown phase {phase:?}: one of {}",
            PHASES.join(", ")
        );
    }
    Ok(args)
}

// ---------------------------------------------------------------------------
// Samples and results
// ---------------------------------------------------------------------------

/// One figure over runs.
#[derive(Clone, Debug, Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, v: f64) {
        if v.is_finite() {
            self.0.push(v);
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> Option<f64> {
        let v = self.sorted();
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    /// `median (min–max)`, each through `f`.
    fn show(&self, f: impl Fn(f64) -> String) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(m), Some(lo), Some(hi)) if self.0.len() > 1 => {
                format!("{} ({}–{})", f(m), f(lo), f(hi))
            }
            (Some(m), ..) => f(m),
            _ => "n/a".into(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "median": self.median(),
            "min": self.min(),
            "max": self.max(),
            "runs": self.0,
        })
    }
}

/// A row of the summary table.
struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

/// Everything measured so far.
struct Bench {
    args: Args,
    start: Instant,
    rows: Vec<Row>,
    /// Markdown sections after the table (breakdowns, "what dominates").
    details: Vec<String>,
    json: serde_json::Map<String, Value>,
    /// Other processes' CPU (% of a core, median) during each phase.
    others: Vec<(&'static str, f64)>,
}

impl Bench {
    fn row(&mut self, figure: &str, value: String, target: &str, met: Option<bool>) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value,
            target: target.to_owned(),
            met,
        });
    }

    fn detail(&mut self, text: String) {
        self.details.push(text);
    }

    fn wants(&self, phase: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|p| p == phase)
    }

    fn time_left(&self) -> Duration {
        self.args.budget.saturating_sub(self.start.elapsed())
    }

    /// Runs `count` runs unless the budget (minus `reserve` for what
    /// follows) is spent; returns how many fit. Each run is `per_run` long.
    fn runs_that_fit(&self, per_run: Duration, reserve: Duration) -> usize {
        let left = self.time_left().saturating_sub(reserve);
        let fit = (left.as_secs_f64() / per_run.as_secs_f64().max(0.001)).floor() as usize;
        fit.min(self.args.runs)
    }
}

fn ns(v: f64) -> String {
    format!("{v:.0} ns")
}

fn ratio(v: f64) -> String {
    format!("{v:.3}")
}

fn pct(v: f64) -> String {
    format!("{v:.2} %")
}

fn kpps(v: f64) -> String {
    format!("{:.0} kpps", v / 1000.0)
}

fn kqps(v: f64) -> String {
    format!("{:.1} k/s", v / 1000.0)
}

fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

// ---------------------------------------------------------------------------
// Machine, processes, CPU
// ---------------------------------------------------------------------------

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "cpu_model": model,
        "cores": cores,
        "kernel": kernel,
        "memory_mib": mem_kib / 1024,
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pins the calling thread to `cpu` (modulo the CPUs there are).
fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu % cores()).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat`).
fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/PID/stat without ')'")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time of every live thread of a process, ns (`/proc/PID/task/*/schedstat`).
fn process_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .map(|t| schedstat(&t.path().join("schedstat").display().to_string()).0)
                .sum()
        })
        .unwrap_or(0)
}

/// Busy and total ticks over all CPUs (`/proc/stat`).
fn system_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 8, "short /proc/stat line");
    // user nice system idle iowait irq softirq steal (guest is in user).
    let idle = v[3] + v[4];
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok((busy, busy + idle))
}

/// CPU use between two samples, in % of one core.
struct CpuWindow {
    at: Instant,
    system: (u64, u64),
    process: Option<(u32, u64)>,
}

impl CpuWindow {
    fn start(pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            system: system_ticks()?,
            process: pid.map(|p| proc_cpu_ticks(p).map(|t| (p, t))).transpose()?,
        })
    }

    /// (whole machine busy, the process) in % of one core.
    fn end(&self) -> Result<(f64, Option<f64>)> {
        let secs = self.at.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let (busy, _) = system_ticks()?;
        let system = (busy - self.system.0) as f64 / hz / secs * 100.0;
        let process = match self.process {
            Some((pid, before)) => Some((proc_cpu_ticks(pid)? - before) as f64 / hz / secs * 100.0),
            None => None,
        };
        Ok((system, process))
    }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// A child we spawned; stopped by its own PID, also on drop.
struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `signal` to our child's PID (only while it is unreaped, so the PID is
    /// still ours), then wait; SIGKILL after `grace`.
    fn stop(&mut self, signal: Signal, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects a stream's lines on a thread.
fn drain_lines<R: io::Read + Send + 'static>(stream: Option<R>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        if let Some(stream) = stream {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines lock").push(line);
            }
        }
    });
    lines
}

fn lines_of(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines.lock().expect("lines lock").clone()
}

/// The real `tracer` binary: `tracer --netns NODE watch -o json`.
struct TracerProc {
    guard: ChildGuard,
    ready: PathBuf,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Spawn to ready file.
    startup: Duration,
    /// Just before the spawn (to pick its programs out of the kernel's list).
    spawned_at: SystemTime,
}

impl TracerProc {
    /// Starts it; `interfaces` empty = every pod interface (the default).
    fn start(bin: &Path, node: &str, interfaces: &[&str]) -> Result<Self> {
        Self::start_with(bin, node, interfaces, &[])
    }

    /// [`Self::start`] with more `watch` arguments.
    fn start_with(bin: &Path, node: &str, interfaces: &[&str], extra: &[&str]) -> Result<Self> {
        let ready = std::env::temp_dir().join(format!("tracer-bench-ready-{node}"));
        let _ = std::fs::remove_file(&ready);
        let spawned_at = SystemTime::now();
        let t0 = Instant::now();
        let mut child = Command::new(bin)
            .args(["--netns", node, "watch", "--output", "json", "--ready-file"])
            .arg(&ready)
            .args(interfaces.iter().flat_map(|i| ["--interface", i]))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut out = child.stdout.take();
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(out) = out.as_mut() {
                let _ = out.read_to_end(&mut buf);
            }
            buf
        });
        let stderr = drain_lines(child.stderr.take());
        let mut guard = ChildGuard { child };
        while !ready.exists() {
            if let Some(status) = guard.exited() {
                std::thread::sleep(Duration::from_millis(50));
                bail!(
                    "tracer exited before ready ({status}): {}",
                    lines_of(&stderr).join("\n")
                );
            }
            if STOP.load(Ordering::SeqCst) {
                guard.stop(Signal::SIGTERM, Duration::from_secs(5));
                bail!("interrupted");
            }
            if t0.elapsed() > Duration::from_secs(90) {
                guard.stop(Signal::SIGTERM, Duration::from_secs(5));
                bail!("tracer not ready after {:?}", t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Self {
            guard,
            ready,
            stdout: Some(stdout),
            stderr,
            startup: t0.elapsed(),
            spawned_at,
        })
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// SIGINT, wait, and the JSON report.
    fn stop(mut self) -> Result<Value> {
        let status = self.guard.stop(Signal::SIGINT, Duration::from_secs(20));
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.ready);
        ensure!(
            status.is_some_and(|s| s.success()),
            "tracer exited with {status:?}: {}",
            lines_of(&self.stderr).join("\n")
        );
        serde_json::from_slice(&stdout).context("tracer's JSON report")
    }
}

/// `tcpdump -i IFACE port 53 -w /dev/null` inside the node namespace.
struct Tcpdump {
    guard: ChildGuard,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tcpdump {
    fn start(node: &str, iface: &str) -> Result<Self> {
        // `ip netns exec` execs tcpdump in place: the child PID is tcpdump's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", node, "tcpdump", "-i", iface])
            .args(["port", "53", "-w", "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning tcpdump (apt-get install tcpdump)")?;
        let stderr = drain_lines(child.stderr.take());
        let mut guard = ChildGuard { child };
        let t0 = Instant::now();
        while !lines_of(&stderr).iter().any(|l| l.contains("listening on")) {
            if let Some(status) = guard.exited() {
                bail!(
                    "tcpdump exited ({status}): {}",
                    lines_of(&stderr).join("\n")
                );
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "tcpdump not listening"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self { guard, stderr })
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// SIGINT; (captured, dropped by kernel) from its summary.
    fn stop(mut self) -> (u64, u64) {
        self.guard.stop(Signal::SIGINT, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
        let lines = lines_of(&self.stderr);
        let find = |what: &str| {
            lines
                .iter()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (find("captured"), find("dropped by kernel"))
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

/// Sends 64-byte datagrams to `to` with `sendmmsg` as fast as the CPU allows
/// until `stop` (what arrives is counted at the receiver).
fn blast(to: SocketAddrV4, cpu: usize, stop: &AtomicBool) -> io::Result<()> {
    pin(cpu);
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(to)?;
    let payload = [0x5a_u8; PACKET_PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH)
        .map(|_| {
            let mut m = zeroed_mmsghdr();
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs point at one valid iovec over `payload`, all alive.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), SEND_BATCH as u32, 0) };
    }
    Ok(())
}

/// A minimal UDP DNS responder: echoes each query with QR set
/// (`recvmmsg`/`sendmmsg`, one pinned thread), until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    /// `/proc/self/task/TID/schedstat` of its thread.
    schedstat: String,
    handle: Option<JoinHandle<Result<io::Result<()>, netns::NetnsError>>>,
}

impl Responder {
    fn start(netns: &str, ip: Ipv4Addr, cpu: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let handle = netns::spawn_in(netns, move || respond(ip, cpu, &stop2, &ready_tx));
        let mut responder = Self {
            stop,
            schedstat: String::new(),
            handle: Some(handle),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(tid) => {
                responder.schedstat = format!("/proc/self/task/{tid}/schedstat");
                Ok(responder)
            }
            Err(_) => {
                let err = responder.join();
                bail!("DNS responder did not start: {err:?}")
            }
        }
    }

    fn join(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => bail!("responder: {e}"),
                Ok(Err(e)) => bail!("responder netns: {e}"),
                Err(_) => bail!("responder panicked"),
            }
        }
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

fn respond(
    ip: Ipv4Addr,
    cpu: usize,
    stop: &AtomicBool,
    ready: &mpsc::Sender<libc::pid_t>,
) -> io::Result<()> {
    const BATCH: usize = 64;
    pin(cpu);
    let socket = UdpSocket::bind(SocketAddrV4::new(ip, 53))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let fd = socket.as_raw_fd();
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads a valid c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    // SAFETY: gettid has no preconditions.
    let _ = ready.send(unsafe { libc::gettid() });
    let mut bufs = vec![[0u8; 512]; BATCH];
    // SAFETY: sockaddr_in is plain data.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| zeroed_mmsghdr()).collect();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..BATCH {
            iovs[i].iov_len = 512;
            let m = &mut msgs[i];
            m.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &raw mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = msgs[i].msg_len as usize;
            if len >= 12 {
                bufs[i][2] |= 0x80; // QR: a response, rcode 0
            }
            iovs[i].iov_len = len;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: as above; names are the queries' sources.
            let sent = unsafe {
                libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0)
            };
            if sent <= 0 {
                break;
            }
            done += sent as usize;
        }
    }
    Ok(())
}

/// What the DNS load generator is asked to do.
#[derive(Clone, Copy, Debug)]
struct Load {
    /// Queries per second; `None` = as fast as possible.
    rate: Option<u64>,
    duration: Option<Duration>,
    total: Option<u64>,
    /// Replace a socket (new source port) after this many queries; 0 never.
    reopen_every: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct LoadResult {
    sent: u64,
    errors: u64,
    answers: u64,
    /// Queries given up on after 1 s without an answer.
    timeouts: u64,
    secs: f64,
    /// CPU time of the generator thread (softirqs run in its context too).
    cpu_ns: u64,
}

impl LoadResult {
    fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    fn answer_rate(&self) -> f64 {
        self.answers as f64 / self.secs
    }
}

/// Runs the load generator in `netns` on `cpu`; `progress` counts queries.
fn generate(
    netns: &str,
    server: SocketAddrV4,
    load: Load,
    cpu: usize,
    progress: Arc<AtomicU64>,
) -> Result<LoadResult> {
    netns::run_in(netns, move || generate_here(server, load, cpu, &progress))?
}

fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}

/// A client socket: like a resolver's, one query in flight at a time.
struct Client {
    socket: UdpSocket,
    next_id: u16,
    queries: u32,
    in_flight: Option<Instant>,
}

fn generate_here(
    server: SocketAddrV4,
    load: Load,
    cpu: usize,
    progress: &AtomicU64,
) -> Result<LoadResult> {
    pin(cpu);
    let open = || -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(server)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let mut clients: Vec<Client> = (0..DNS_SOCKETS)
        .map(|i| {
            Ok(Client {
                socket: open()?,
                next_id: (i as u16).wrapping_mul(40503),
                queries: 0,
                in_flight: None,
            })
        })
        .collect::<io::Result<_>>()
        .context("opening client sockets")?;
    let mut query = DnsMsg::query(0, QNAME, 1).bytes();
    let mut buf = [0u8; 512];
    let mut r = LoadResult::default();
    let mut cursor = 0usize;
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let end = load.duration.map(|d| start + d);
    loop {
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) || load.total.is_some_and(|t| r.sent >= t) {
            break;
        }
        let mut quota = match load.rate {
            Some(rate) => {
                let due = (rate as f64 * (now - start).as_secs_f64()) as u64;
                if due <= r.sent + r.errors {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                (due - r.sent - r.errors).min(1024)
            }
            None => 256,
        };
        if let Some(total) = load.total {
            quota = quota.min(total - r.sent);
        }
        // Visit sockets round robin; a socket still waiting for its answer
        // is skipped (closed loop: at most one query per socket in flight).
        let mut visited = 0;
        while quota > 0 && visited < DNS_SOCKETS {
            let c = &mut clients[cursor];
            cursor = (cursor + 1) % DNS_SOCKETS;
            visited += 1;
            while c.socket.recv(&mut buf).is_ok() {
                r.answers += 1;
                c.in_flight = None;
            }
            if let Some(at) = c.in_flight {
                if at.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                r.timeouts += 1;
            }
            if load.reopen_every > 0 && c.queries >= load.reopen_every {
                c.socket = open().context("reopening a client socket")?;
                c.queries = 0;
            }
            query[..2].copy_from_slice(&c.next_id.to_be_bytes());
            c.next_id = c.next_id.wrapping_add(1);
            c.queries += 1;
            match c.socket.send(&query) {
                Ok(_) => {
                    r.sent += 1;
                    c.in_flight = Some(Instant::now());
                }
                Err(_) => r.errors += 1,
            }
            quota -= 1;
            visited = 0;
        }
        if visited >= DNS_SOCKETS && load.rate.is_some() {
            // Every socket waits for its answer: do not spin.
            std::thread::sleep(Duration::from_micros(50));
        }
        progress.store(r.sent, Ordering::Relaxed);
    }
    r.secs = start.elapsed().as_secs_f64();
    // Answers still in flight.
    let grace = Instant::now() + Duration::from_millis(150);
    while Instant::now() < grace {
        for c in &clients {
            while c.socket.recv(&mut buf).is_ok() {
                r.answers += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    r.cpu_ns = thread_cpu_ns() - cpu0;
    Ok(r)
}

// ---------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------

/// The TC programs `tracer watch` attaches: one per direction, each running
/// the counter, DNS and (egress) flood code in turn.
fn tc_programs() -> Vec<TcProgram> {
    watch::TC_PROGRAMS.to_vec()
}

/// Each area's own programs (the same code, one program per area), to see
/// what each part of the deployed programs costs.
fn area_programs() -> Vec<TcProgram> {
    counter::PROGRAMS
        .into_iter()
        .chain(dns::PROGRAMS)
        .chain(flood::PROGRAMS)
        .collect()
}

fn classifier<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier> {
    ebpf.program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not a classifier"))
}

/// Average ns per run of `name` on `frame` over `repeat` runs.
fn test_run(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> Result<f64> {
    let result = classifier(ebpf, name)?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::new()
        })
        .with_context(|| format!("test_run {name}"))?;
    Ok(result.duration.as_nanos() as f64)
}

/// (run_time ns, run_count) per program name.
fn program_stats(
    ebpf: &Ebpf,
    programs: &[TcProgram],
) -> Result<BTreeMap<&'static str, (u64, u64)>> {
    programs
        .iter()
        .map(|p| {
            let info = ebpf
                .program(p.name)
                .with_context(|| format!("no program {}", p.name))?
                .info()?;
            Ok((
                p.name,
                (
                    u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    info.run_count(),
                ),
            ))
        })
        .collect()
}

/// `BPF_PROG_LOAD` attributes (the leading fields of `union bpf_attr`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `BPF_PROG_TEST_RUN` attributes.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// A classifier that only returns TC_ACT_UNSPEC: what `BPF_PROG_TEST_RUN`
/// itself costs per repetition (the floor under every program's figure).
struct EmptyProgram(std::os::fd::OwnedFd);

impl EmptyProgram {
    fn load() -> Result<Self> {
        // r0 = -1 (TC_ACT_UNSPEC); exit
        let insns: [u64; 2] = [0xffff_ffff_0000_00b7, 0x95];
        let license = b"GPL\0";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..10].copy_from_slice(b"bench_noop");
        // SAFETY: attr is a valid, fully initialised prefix of bpf_attr; the
        // pointers it holds outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &raw mut attr,
                size_of::<ProgLoadAttr>(),
            )
        };
        ensure!(
            fd >= 0,
            "loading an empty classifier: {}",
            io::Error::last_os_error()
        );
        let fd = i32::try_from(fd)?;
        // SAFETY: the kernel just returned this fd to us; we own it.
        Ok(Self(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// Average ns per repetition.
    fn run(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        let mut attr = TestRunAttr {
            prog_fd: u32::try_from(self.0.as_raw_fd())?,
            data_size_in: u32::try_from(frame.len())?,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestRunAttr::default()
        };
        // SAFETY: as in load(); data_in points at `frame`, alive.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>(),
            )
        };
        ensure!(
            ret == 0,
            "test run of the empty classifier: {}",
            io::Error::last_os_error()
        );
        Ok(f64::from(attr.duration))
    }
}

// ---------------------------------------------------------------------------
// Phase 1: per-packet cost by test run
// ---------------------------------------------------------------------------

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 1);

fn query_frame(id: u16, sport: u16) -> Vec<u8> {
    let q = DnsMsg::query(id, QNAME, 1).bytes();
    Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: sport,
            dst: 53,
        },
        &q,
    )
    .build()
}

fn answer_frame(id: u16, dport: u16) -> Vec<u8> {
    let a = DnsMsg::response(id, QNAME, 1, 0, 1).bytes();
    Frame::ipv4(
        SERVER,
        CLIENT,
        L4::Udp {
            src: 53,
            dst: dport,
        },
        &a,
    )
    .build()
}

fn phase_programs(b: &mut Bench) -> Result<()> {
    let runs = b.args.runs;
    let t0 = Instant::now();
    let kernel = probes::kernel_info();
    let t_btf = t0.elapsed();
    let mut ebpf = probes::load_full(&ProbeSettings::default(), &kernel)?;
    let t_object = t0.elapsed();
    let deployed = tc_programs();
    let _tc = TcAttachments::load(&mut ebpf, &deployed)?;
    let t_verified = t0.elapsed();
    let _areas = TcAttachments::load(&mut ebpf, &area_programs())?;
    let programs: Vec<TcProgram> = deployed.iter().copied().chain(area_programs()).collect();
    // test_run's skb comes in on the loopback device (ifindex 1): give it a
    // pod MAC equal to the frames' destination, so flood_tc_egress takes the
    // path of every frame addressed to its pod.
    flood::set_port_macs(&mut ebpf, &[(1, frames::DST_MAC)])?;
    let empty = EmptyProgram::load()?;

    let udp = Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: 40000,
            dst: SINK_PORT,
        },
        &[0x5a; PACKET_PAYLOAD],
    )
    .build();
    // A DNS header cut after 6 bytes: counted as malformed.
    let malformed = Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: 40000,
            dst: 53,
        },
        &DnsMsg::query(1, QNAME, 1).bytes(),
    )
    .truncate(14 + 20 + 8 + 6)
    .build();
    let unmatched = answer_frame(0x7777, 40001);
    // Not IP: the parser stops after the Ethernet header (diagnostic).
    let mut arp = udp.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let fixed: [(&str, &[u8]); 4] = [
        ("non-DNS UDP", &udp),
        ("ARP (stops after Ethernet)", &arp),
        ("malformed DNS", &malformed),
        ("DNS answer, no query", &unmatched),
    ];
    // Stateful paths: (query's program, answer's program). An answer leaves
    // the way its query came (the kernel matches by the query's direction):
    // a client pod's query is its host veth's ingress, the answer its
    // egress; a server pod's the other way round. DNS's own programs once.
    let dns_pairs: [(&str, &str); 3] = [
        (watch::TC_PROGRAMS[0].name, watch::TC_PROGRAMS[1].name),
        (watch::TC_PROGRAMS[1].name, watch::TC_PROGRAMS[0].name),
        (dns::PROGRAMS[0].name, dns::PROGRAMS[1].name),
    ];

    // ns per program run, net of the empty program's figure.
    let mut cost: BTreeMap<(String, &'static str), Series> = BTreeMap::new();
    let mut floor = Series::default();
    let mut floor_single = Series::default();
    let mut id: u16 = 1;
    for _ in 0..runs {
        check_stop()?;
        let base = empty.run(&udp, TEST_RUN_REPEAT)?;
        floor.push(base);
        for (path, frame) in fixed {
            for p in &programs {
                let v = test_run(&ebpf, p.name, frame, TEST_RUN_REPEAT)?;
                cost.entry((path.to_owned(), p.name))
                    .or_default()
                    .push(v - base);
            }
        }
        // Stateful paths: one repetition per test run, so each run also
        // pays the timer and cold caches once; the empty program timed the
        // same way is subtracted.
        let mut single = 0.0;
        for _ in 0..DNS_LOOP {
            single += empty.run(&udp, 1)?;
        }
        let base1 = single / DNS_LOOP as f64;
        floor_single.push(base1);
        // A new query and its matched answer, a new id and one of 1024
        // source ports each time; then queries whose QDCOUNT (2) makes the
        // probe skip copying the question (diagnostic).
        for (name, answer_name) in dns_pairs {
            let (mut q_ns, mut a_ns, mut q2_ns) = (0.0, 0.0, 0.0);
            for k in 0..DNS_LOOP {
                id = id.wrapping_add(1);
                let sport = 30000 + (k % 1024) as u16;
                q_ns += test_run(&ebpf, name, &query_frame(id, sport), 1)?;
                a_ns += test_run(&ebpf, answer_name, &answer_frame(id, sport), 1)?;
            }
            for k in 0..DNS_LOOP {
                id = id.wrapping_add(1);
                let sport = 30000 + (k % 1024) as u16;
                let q = DnsMsg::query(id, QNAME, 1).qdcount(2).bytes();
                let f = Frame::ipv4(
                    CLIENT,
                    SERVER,
                    L4::Udp {
                        src: sport,
                        dst: 53,
                    },
                    &q,
                )
                .build();
                q2_ns += test_run(&ebpf, name, &f, 1)?;
                test_run(&ebpf, answer_name, &answer_frame(id, sport), 1)?;
            }
            let n = DNS_LOOP as f64;
            for (path, prog, total) in [
                ("DNS query (new)", name, q_ns),
                ("DNS answer (matched)", answer_name, a_ns),
                ("DNS query (new), question not copied", name, q2_ns),
            ] {
                cost.entry((path.into(), prog))
                    .or_default()
                    .push(total / n - base1);
            }
        }
    }
    let stats = dns::collector::read_stats(&ebpf)?;
    let matched = stats[tracer_common::dns::DnsStat::Matched as usize];
    // A "matched answer" that found no query would time the unmatched path.
    let expected = (runs * dns_pairs.len() * 2 * DNS_LOOP) as u64;
    ensure!(
        matched == expected,
        "{matched} of {expected} test-run answers matched their query"
    );

    // Table per path: each program, worst program against the target.
    let paths = [
        ("non-DNS UDP", Some(TARGET_NS_OTHER)),
        ("DNS query (new)", Some(TARGET_NS_DNS)),
        ("DNS answer (matched)", Some(TARGET_NS_DNS)),
        ("DNS answer, no query", Some(TARGET_NS_DNS)),
        ("malformed DNS", Some(TARGET_NS_DNS)),
        ("ARP (stops after Ethernet)", None),
        ("DNS query (new), question not copied", None),
    ];
    let mut md = String::from(
        "### Per-packet cost by `BPF_PROG_TEST_RUN` (ns per program run, net of an empty \
         program; median (min–max)). `tracer_ingress`/`tracer_egress` are what `tracer watch` \
         attaches; the others are the same code split by area.\n\n",
    );
    let names: Vec<&str> = programs.iter().map(|p| p.name).collect();
    let _ = writeln!(md, "| path | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(programs.len()));
    let mut json_paths = serde_json::Map::new();
    for (path, target) in paths {
        let mut cells = Vec::new();
        let mut per_prog = serde_json::Map::new();
        let mut worst: Option<(&str, f64, &Series)> = None;
        for p in &programs {
            match cost.get(&(path.to_owned(), p.name)) {
                Some(s) => {
                    cells.push(s.show(|v| format!("{v:.1}")));
                    per_prog.insert(p.name.into(), s.json());
                    let m = s.median().unwrap_or(f64::NAN);
                    // Targets apply to what nodes run.
                    let is_deployed = deployed.iter().any(|d| d.name == p.name);
                    if is_deployed && worst.is_none_or(|(_, w, _)| m > w) {
                        worst = Some((p.name, m, s));
                    }
                }
                None => cells.push("–".into()),
            }
        }
        let _ = writeln!(md, "| {path} | {} |", cells.join(" | "));
        json_paths.insert(path.into(), Value::Object(per_prog));
        if let (Some((name, m, s)), Some(target)) = (worst, target) {
            b.row(
                &format!("test run, {path}: slowest program ({name})"),
                s.show(ns),
                &format!("≤ {target:.0} ns"),
                Some(m <= target),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nFixed paths: repeat {TEST_RUN_REPEAT}, minus the empty program's {} per \
         repetition (the harness: `local_bh_disable`, timer, loop). New query / matched \
         answer: {DNS_LOOP} pairs per run and program, one repetition per test run, minus \
         the empty program timed the same way ({}). Test runs call the program directly: \
         the TCX dispatch is not in them (see the packet path). {matched} answers matched \
         in total. Load: BTF {:.0} ms, object {:.0} ms, verifier (the 2 deployed TC \
         programs) {:.0} ms.",
        floor.show(ns),
        floor_single.show(ns),
        t_btf.as_secs_f64() * 1e3,
        (t_object - t_btf).as_secs_f64() * 1e3,
        (t_verified - t_object).as_secs_f64() * 1e3,
    );
    // What dominates, from differences between paths (medians).
    let med = |path: &str, prog: &str| {
        cost.get(&(path.to_owned(), prog))
            .and_then(Series::median)
            .unwrap_or(f64::NAN)
    };
    let d = "dns_tc_ingress";
    let (udp_ns, arp_ns) = (med("non-DNS UDP", d), med("ARP (stops after Ethernet)", d));
    let (new_q, no_copy) = (
        med("DNS query (new)", d),
        med("DNS query (new), question not copied", d),
    );
    // The answer to a query seen on ingress is timed in the egress program.
    let (matched_a, unmatched_a) = (
        med("DNS answer (matched)", dns::PROGRAMS[1].name),
        med("DNS answer, no query", dns::PROGRAMS[1].name),
    );
    let malformed_ns = med("malformed DNS", d);
    let parts = |path: &str| {
        (
            med(path, "tracer_egress"),
            med(path, "counter_tc_egress"),
            med(path, "dns_tc_egress"),
            med(path, "flood_tc_egress"),
        )
    };
    let (te, tc, td, tf) = parts("non-DNS UDP");
    let largest = [("counter", tc), ("DNS", td), ("flood", tf)]
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or("?", |(n, _)| n);
    let deployed_line = format!(
        "- Deployed `tracer_egress` on a non-DNS packet: {te:.0} ns; the same code as separate \
         programs: counter {tc:.0} + DNS {td:.0} + flood {tf:.0} = {:.0} ns; the largest part \
         is {largest}.\n",
        tc + td + tf
    );
    let dominates = format!(
        "\n**What dominates** (differences of the medians above, `{d}`):\n\n{deployed_line}\
         - Non-DNS packets: {udp_ns:.0} ns, of which {arp_ns:.0} ns reach the end of the \
         Ethernet header (one `bpf_skb_load_bytes`); IPv4 and UDP headers (two more helper \
         calls) add {:.0} ns, about {:.0} ns per call. The counter's single per-CPU hash \
         update costs {:.0} ns; flood_tc_egress's array lookup plus one load {:.0} ns.\n\
         - New query: {new_q:.0} ns. Copying and walking the question is {:.0} ns of it; \
         the rest ({:.0} ns more than a packet whose DNS header is cut, which stops before any map) is the per-socket \
         LRU lookup and the pending LRU's insert of a {}-byte entry.\n\
         - Matched answer: {matched_a:.0} ns, {:.0} ns more than an answer with no query: \
         the pending hit, the per-CPU histogram update and the LRU delete.\n",
        udp_ns - arp_ns,
        (udp_ns - arp_ns) / 2.0,
        med("non-DNS UDP", "counter_tc_ingress"),
        med("non-DNS UDP", "flood_tc_egress"),
        new_q - no_copy,
        no_copy - malformed_ns,
        size_of::<tracer_common::dns::DnsPending>(),
        matched_a - unmatched_a,
    );
    md.push_str(&dominates);
    b.detail(md);
    b.json.insert(
        "test_run".into(),
        json!({
            "repeat": TEST_RUN_REPEAT,
            "stateful_pairs_per_run": DNS_LOOP,
            "empty_program_ns_repeat": floor.json(),
            "empty_program_ns_single": floor_single.json(),
            "net_ns_per_run": json_paths,
            "load_ms": {
                "btf": t_btf.as_secs_f64() * 1e3,
                "object": (t_object - t_btf).as_secs_f64() * 1e3,
                "verify_deployed_tc": (t_verified - t_object).as_secs_f64() * 1e3,
            },
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Phase 2: packet path
// ---------------------------------------------------------------------------

#[derive(Default)]
struct PathResults {
    /// Delivered pps per configuration, one value per run.
    pps: BTreeMap<&'static str, Series>,
    /// CPU ns per delivered packet (senders + ksoftirqd), per run.
    cpu_ns: BTreeMap<&'static str, Series>,
    /// CPU used by everything else on the machine, % of one core.
    other: Series,
    pps_ratio: Series,
    cpu_ratio: Series,
    /// ns per run, per program, from BPF_ENABLE_STATS.
    prog_ns: BTreeMap<&'static str, Series>,
    /// Program runs per delivered packet.
    prog_runs_per_pkt: BTreeMap<&'static str, Series>,
    interfaces: usize,
    windows: usize,
    toggle_ms: Series,
}

fn read_rx_packets(file: &mut File) -> Result<u64> {
    file.rewind()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == "eth0").then(|| rest.split_whitespace().nth(1)?.parse().ok())?
        })
        .context("no eth0 in /proc/net/dev")
}

/// (run ns, wait ns) of a task from `/proc/PID/schedstat`.
fn schedstat(path: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// `/proc/PID/schedstat` of every ksoftirqd.
fn ksoftirqd_paths() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let path = entry.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.starts_with("ksoftirqd/") {
                out.push(path.join("schedstat").display().to_string());
            }
        }
    }
    out
}

/// One measuring window's counters.
#[derive(Clone, Copy, Default)]
struct PathSample {
    rx: u64,
    cpu_ns: u64,
    busy_ticks: u64,
    at: Option<Instant>,
}

fn phase_packet(b: &mut Bench) -> Result<()> {
    const PAIRS: usize = 6;
    const WINDOW: Duration = Duration::from_millis(300);
    const GAP: Duration = Duration::from_millis(50);
    // Windows plus attach/detach (each TCX change waits an RCU grace period).
    let per_run = Duration::from_secs(9);
    let runs = b.runs_that_fit(per_run, Duration::from_secs(410));
    ensure!(runs >= 1, "no time left for the packet path");
    let topo = Topology::build(Datapath::Bridge, 4)?;
    let pods = topo.pods.clone();
    // Receivers: a bound socket (never read: the packet has crossed every
    // traced hook by then; a full queue drops it) and the receiving pod's
    // /proc/net/dev, opened inside the pod so it keeps showing that pod.
    let mut rx_files = Vec::new();
    let mut sinks = Vec::new();
    for pod in [&pods[1], &pods[3]] {
        let ip = pod.ip;
        let (sock, file) = netns::run_in(&pod.netns, move || -> io::Result<(UdpSocket, File)> {
            let s = UdpSocket::bind(SocketAddrV4::new(ip, SINK_PORT))?;
            let f = File::open("/proc/thread-self/net/dev")?;
            Ok((s, f))
        })??;
        sinks.push(sock);
        rx_files.push(file);
    }
    // Senders: pod0 → pod1 on CPU 0, pod2 → pod3 on CPU 1. Each reports its
    // thread id: its CPU time (softirqs run in its context) is read from
    // /proc/self/task/TID/schedstat.
    let stop = Arc::new(AtomicBool::new(false));
    struct StopSenders(Arc<AtomicBool>);
    impl Drop for StopSenders {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop_guard = StopSenders(Arc::clone(&stop));
    let (tid_tx, tid_rx) = mpsc::channel();
    let mut senders = Vec::new();
    for (k, (from, to)) in [(0usize, 1usize), (2, 3)].into_iter().enumerate() {
        let to = SocketAddrV4::new(pods[to].ip, SINK_PORT);
        let stop = Arc::clone(&stop);
        let tid_tx = tid_tx.clone();
        senders.push(netns::spawn_in(&pods[from].netns, move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            blast(to, k, &stop)
        }));
    }
    let mut cpu_paths = ksoftirqd_paths();
    for _ in 0..2 {
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .context("sender did not start")?;
        cpu_paths.push(format!("/proc/self/task/{tid}/schedstat"));
    }

    let node = topo.node.clone();
    let result = netns::run_in(&node, move || -> Result<PathResults> {
        let programs = tc_programs();
        let mut ebpf = probes::load()?;
        let mut tc = TcAttachments::load(&mut ebpf, &programs)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let all = rt.block_on(interfaces::list())?;
        let traced = interfaces::select(&all, &[])?;
        let macs = rt.block_on(interfaces::peer_macs(&traced))?;
        flood::set_port_macs(&mut ebpf, &macs)?;
        let names: Vec<String> = traced.iter().map(|i| i.name.clone()).collect();
        let mut res = PathResults {
            interfaces: names.len(),
            ..PathResults::default()
        };
        let sample = |files: &mut Vec<File>| -> Result<PathSample> {
            let rx = files.iter_mut().map(read_rx_packets).sum::<Result<u64>>()?;
            let cpu_ns = cpu_paths.iter().map(|p| schedstat(p).0).sum();
            let busy_ticks = system_ticks()?.0;
            Ok(PathSample {
                rx,
                cpu_ns,
                busy_ticks,
                at: Some(Instant::now()),
            })
        };
        // Warm up: ARP, FDB learning, caches.
        std::thread::sleep(Duration::from_millis(500));
        for run in 0..runs {
            check_stop()?;
            // (packets, cpu ns, seconds) per configuration over the run.
            let mut sums: BTreeMap<bool, (u64, u64, f64)> = BTreeMap::new();
            let (mut busy, mut ours, mut elapsed) = (0u64, 0u64, 0.0);
            for k in 0..2 * PAIRS {
                // off on | on off | off on …: each pair starts with the other.
                let on = (k % 2 == 1) ^ ((k / 2 + run) % 2 == 1);
                let t = Instant::now();
                if on {
                    for name in &names {
                        tc.attach(&mut ebpf, name)?;
                    }
                } else {
                    tc.detach_all(&mut ebpf);
                }
                res.toggle_ms.push(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(GAP);
                let a = sample(&mut rx_files)?;
                std::thread::sleep(WINDOW);
                let z = sample(&mut rx_files)?;
                let dt = z.at.zip(a.at).map_or(0.0, |(z, a)| (z - a).as_secs_f64());
                let s = sums.entry(on).or_default();
                s.0 += z.rx - a.rx;
                s.1 += z.cpu_ns - a.cpu_ns;
                s.2 += dt;
                busy += z.busy_ticks - a.busy_ticks;
                ours += z.cpu_ns - a.cpu_ns;
                elapsed += dt;
                res.windows += 1;
            }
            let (off, on) = (sums[&false], sums[&true]);
            let pps = |s: (u64, u64, f64)| s.0 as f64 / s.2;
            let cpu = |s: (u64, u64, f64)| s.1 as f64 / s.0.max(1) as f64;
            res.pps.entry("probes off").or_default().push(pps(off));
            res.pps.entry("probes on").or_default().push(pps(on));
            res.cpu_ns.entry("probes off").or_default().push(cpu(off));
            res.cpu_ns.entry("probes on").or_default().push(cpu(on));
            res.pps_ratio.push(pps(on) / pps(off));
            res.cpu_ratio.push(cpu(off) / cpu(on));
            let busy_ns = busy as f64 * 1e9 / clock_ticks();
            res.other
                .push((busy_ns - ours as f64).max(0.0) / (elapsed * 1e9) * 100.0);
            // Per-program cost in place: BPF_ENABLE_STATS over two windows.
            for name in &names {
                tc.attach(&mut ebpf, name)?;
            }
            let stats_fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
            std::thread::sleep(GAP);
            let p0 = program_stats(&ebpf, &programs)?;
            let a = sample(&mut rx_files)?;
            std::thread::sleep(2 * WINDOW);
            let z = sample(&mut rx_files)?;
            let p1 = program_stats(&ebpf, &programs)?;
            drop(stats_fd);
            let delivered = (z.rx - a.rx).max(1) as f64;
            for p in &programs {
                let ((t0, c0), (t1, c1)) = (p0[p.name], p1[p.name]);
                let n = c1.saturating_sub(c0);
                if n > 0 {
                    res.prog_ns
                        .entry(p.name)
                        .or_default()
                        .push(t1.saturating_sub(t0) as f64 / n as f64);
                    res.prog_runs_per_pkt
                        .entry(p.name)
                        .or_default()
                        .push(n as f64 / delivered);
                }
            }
            eprintln!(
                "bench: packet run {}: off {:.0} pps {:.0} ns/pkt, on {:.0} pps {:.0} ns/pkt, other load {:.0} % of a core",
                run + 1,
                pps(off),
                cpu(off),
                pps(on),
                cpu(on),
                res.other.0.last().unwrap_or(&0.0)
            );
        }
        tc.detach_all(&mut ebpf);
        Ok(res)
    })?;
    drop(stop_guard);
    for s in senders {
        match s.join() {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("bench: sender: {e}"),
            Ok(Err(e)) => eprintln!("bench: sender netns: {e}"),
            Err(_) => eprintln!("bench: sender panicked"),
        }
    }
    drop(sinks);
    drop(topo);
    let res = result?;

    if let Some(m) = res.other.median() {
        b.others.push(("packet-path", m));
    }
    let off = res.pps.get("probes off").cloned().unwrap_or_default();
    let on = res.pps.get("probes on").cloned().unwrap_or_default();
    let cpu_off = res.cpu_ns.get("probes off").cloned().unwrap_or_default();
    let cpu_on = res.cpu_ns.get("probes on").cloned().unwrap_or_default();
    b.row(
        "packet path: pps with every TC probe ÷ none (64-byte UDP pod→pod, bridge)",
        res.pps_ratio.show(ratio),
        &format!("≥ {TARGET_PATH_RATIO}"),
        res.pps_ratio.median().map(|r| r >= TARGET_PATH_RATIO),
    );
    b.row(
        "packet path: packets per CPU-second with probes ÷ none (immune to other load)",
        res.cpu_ratio.show(ratio),
        &format!("≥ {TARGET_PATH_RATIO}"),
        res.cpu_ratio.median().map(|r| r >= TARGET_PATH_RATIO),
    );
    b.row(
        "packet path: pps without / with probes",
        format!("{} / {}", off.show(kpps), on.show(kpps)),
        "—",
        None,
    );
    let mut worst: Option<(&str, f64, Series)> = None;
    let rows: Vec<(&str, &Series, f64, f64)> = res
        .prog_ns
        .iter()
        .map(|(name, s)| {
            let per_pkt = res
                .prog_runs_per_pkt
                .get(name)
                .and_then(Series::median)
                .unwrap_or(0.0);
            (*name, s, s.median().unwrap_or(f64::NAN), per_pkt)
        })
        .collect();
    let sum_ns_per_pkt: f64 = rows.iter().map(|(_, _, m, n)| m * n).sum();
    let mut lines = String::new();
    for (name, s, m, per_pkt) in rows {
        let _ = writeln!(
            lines,
            "| {name} | {} | {per_pkt:.2} | {:.1} | {:.0} % |",
            s.show(|v| format!("{v:.1}")),
            m * per_pkt,
            m * per_pkt / sum_ns_per_pkt * 100.0
        );
        if worst.as_ref().is_none_or(|(_, w, _)| m > *w) {
            worst = Some((name, m, s.clone()));
        }
    }
    if let Some((name, m, s)) = &worst {
        b.row(
            &format!("packet path, BPF stats: slowest program per run ({name})"),
            s.show(ns),
            &format!("≤ {TARGET_NS_OTHER:.0} ns"),
            Some(*m <= TARGET_NS_OTHER),
        );
    }
    let (c_off, c_on) = (
        cpu_off.median().unwrap_or(f64::NAN),
        cpu_on.median().unwrap_or(f64::NAN),
    );
    let mut md = format!(
        "### Packet path (bridge, {} traced interfaces, 2 senders × sendmmsg pinned to CPU 0 \
         and 1, {PACKET_PAYLOAD}-byte payloads; per run {PAIRS} off/on pairs of {} ms windows, \
         order alternating; {} runs)\n\n\
         | configuration | delivered pps | CPU ns per packet (senders + ksoftirqd) |\n|---|---|---|\n",
        res.interfaces,
        WINDOW.as_millis(),
        res.pps_ratio.0.len()
    );
    for (label, s) in &res.pps {
        let c = res.cpu_ns.get(label).cloned().unwrap_or_default();
        let _ = writeln!(md, "| {label} | {} | {} |", s.show(kpps), c.show(ns));
    }
    let _ = writeln!(
        md,
        "\nEverything else on the machine used {} of a core meanwhile. \
         Attaching or detaching all programs took {} per toggle.\n\n\
         | program (BPF_ENABLE_STATS, in place) | ns per run | runs per packet | ns per packet \
         | share |\n|---|---|---|---|---|\n{lines}\nWhat the probes add: {:.0} ns of CPU per packet \
         ({c_off:.0} → {c_on:.0}). Their programs' own run time (stats, which add a clock read \
         per run) is {sum_ns_per_pkt:.0} ns per packet; the rest is TCX dispatch (one \
         retpolined indirect call per program) and cache misses.",
        res.other.show(pct),
        res.toggle_ms.show(|v| format!("{v:.1} ms")),
        c_on - c_off,
    );
    b.detail(md);
    let map = |m: &BTreeMap<&'static str, Series>| -> Value {
        Value::Object(m.iter().map(|(k, s)| ((*k).to_owned(), s.json())).collect())
    };
    b.json.insert(
        "packet_path".into(),
        json!({
            "interfaces": res.interfaces,
            "window_ms": WINDOW.as_millis() as u64,
            "pairs_per_run": PAIRS,
            "payload_bytes": PACKET_PAYLOAD,
            "pps": map(&res.pps),
            "cpu_ns_per_packet": map(&res.cpu_ns),
            "ratio_pps_on_off": res.pps_ratio.json(),
            "ratio_packets_per_cpu_on_off": res.cpu_ratio.json(),
            "other_load_pct_of_core": res.other.json(),
            "toggle_ms": res.toggle_ms.json(),
            "bpf_stats_ns_per_run": map(&res.prog_ns),
            "bpf_runs_per_packet": map(&res.prog_runs_per_pkt),
            "bpf_ns_per_packet": sum_ns_per_pkt,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Phase 3: DNS capacity, collector, peer
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observer {
    Nothing,
    /// `tracer watch`: every pod veth and the bridge.
    Tracer,
    /// `tracer watch -i <client veth>`: what tcpdump watches.
    TracerOneVeth,
    Tcpdump,
}

#[derive(Clone, Copy, Debug)]
struct DnsConfig {
    label: &'static str,
    observer: Observer,
    rate: Option<u64>,
    secs: u64,
    /// BPF_ENABLE_STATS during the load (tracer's programs' real cost).
    bpf_stats: bool,
}

const DNS_CONFIGS: [DnsConfig; 8] = [
    DnsConfig {
        label: "nothing @ max",
        observer: Observer::Nothing,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tracer @ 10k",
        observer: Observer::Tracer,
        rate: Some(10_000),
        secs: 5,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tracer @ 50k",
        observer: Observer::Tracer,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tracer @ max",
        observer: Observer::Tracer,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tracer -i veth @ 50k",
        observer: Observer::TracerOneVeth,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: true,
    },
    DnsConfig {
        label: "tcpdump @ 50k",
        observer: Observer::Tcpdump,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "tcpdump @ max",
        observer: Observer::Tcpdump,
        rate: None,
        secs: 3,
        bpf_stats: false,
    },
    DnsConfig {
        label: "nothing @ 50k",
        observer: Observer::Nothing,
        rate: Some(50_000),
        secs: 3,
        bpf_stats: false,
    },
];

/// One measurement of one configuration.
#[derive(Clone, Debug, Default)]
struct DnsSample {
    load: LoadResult,
    /// A fixed-rate run whose generator fell short of the rate (the
    /// machine was busy): not a measurement at that rate, left out.
    short: bool,
    system_cpu: f64,
    observer_cpu: Option<f64>,
    /// From the observer's threads' schedstat (ns precision), % of a core.
    observer_cpu_precise: Option<f64>,
    /// CPU used by other processes meanwhile (machine busy minus the DNS
    /// path and the observer), % of a core.
    others_cpu: f64,
    /// CPU of generator, responder and ksoftirqd per answered query: the
    /// whole DNS path, kernel included, wherever the softirqs ran.
    path_ns_per_query: f64,
    /// The observer process's CPU per answered query.
    observer_ns_per_query: Option<f64>,
    // tracer only
    startup_s: Option<f64>,
    hwm_mib: Option<f64>,
    losses: Option<u64>,
    loss_reasons: BTreeMap<String, u64>,
    unmatched: Option<u64>,
    matched_client: Option<u64>,
    queries_seen: Option<u64>,
    events: Option<u64>,
    /// ns per run of tracer's programs (BPF stats), by name.
    /// tracer's programs over the load: (ns per run, runs per answered
    /// query, ns per answered query), by name.
    prog: BTreeMap<String, (f64, f64, f64)>,
    /// All of tracer's programs, ns per answered query (BPF stats).
    bpf_ns_per_query: Option<f64>,
    // tcpdump only
    tcpdump_captured: Option<u64>,
    tcpdump_dropped: Option<u64>,
}

/// (id, name, run_time ns, run_count) of tracer's programs: the TC ones on
/// `ifaces` (asked of the kernel through TCX in `node`), and its tracing
/// hooks (by name, loaded since `since`).
fn tracer_programs(
    node: &str,
    ifaces: &[String],
    since: SystemTime,
) -> Result<Vec<(u32, String, u64, u64)>> {
    let ifaces = ifaces.to_vec();
    let mut out: BTreeMap<u32, (String, u64, u64)> = netns::run_in(node, move || {
        let mut out = BTreeMap::new();
        for iface in &ifaces {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                let Ok((_, progs)) = SchedClassifier::query_tcx(iface, dir) else {
                    continue;
                };
                for p in progs {
                    out.insert(
                        p.id(),
                        (
                            p.name_as_str().unwrap_or("?").to_owned(),
                            u64::try_from(p.run_time().as_nanos()).unwrap_or(0),
                            p.run_count(),
                        ),
                    );
                }
            }
        }
        out
    })?;
    let since = since - Duration::from_secs(1);
    let hook_names: Vec<&str> = hooks::HOOKS
        .iter()
        .flat_map(|h| h.chain)
        .flat_map(|a| a.programs.iter().copied())
        .collect();
    for p in aya::programs::loaded_programs().flatten() {
        let name = p.name_as_str().unwrap_or("").to_owned();
        // Kernel names are cut at 15 bytes.
        let ours = hook_names
            .iter()
            .any(|h| !name.is_empty() && h.starts_with(name.as_str()));
        if ours && p.loaded_at().is_some_and(|t| t >= since) {
            out.insert(
                p.id(),
                (
                    name,
                    u64::try_from(p.run_time().as_nanos()).unwrap_or(0),
                    p.run_count(),
                ),
            );
        }
    }
    Ok(out
        .into_iter()
        .map(|(id, (name, t, c))| (id, name, t, c))
        .collect())
}

struct DnsLab {
    topo: Topology,
    responder: Responder,
    ksoftirqd: Vec<String>,
    server: SocketAddrV4,
    client_netns: String,
    client_if: String,
    server_if: String,
}

impl DnsLab {
    fn build() -> Result<Self> {
        let topo = Topology::build(Datapath::Bridge, 2)?;
        let (server_pod, client_pod) = (topo.pods[0].clone(), topo.pods[1].clone());
        let responder = Responder::start(&server_pod.netns, server_pod.ip, 1)?;
        let lab = Self {
            server: SocketAddrV4::new(server_pod.ip, 53),
            client_netns: client_pod.netns.clone(),
            client_if: client_pod.host_if.clone(),
            server_if: server_pod.host_if.clone(),
            topo,
            responder,
            ksoftirqd: ksoftirqd_paths(),
        };
        // Warm up: ARP, FDB, socket caches.
        let warm = lab.load(
            Load {
                rate: Some(5_000),
                duration: Some(Duration::from_millis(500)),
                total: None,
                reopen_every: 0,
            },
            Arc::new(AtomicU64::new(0)),
        )?;
        ensure!(
            warm.answers > 0,
            "the DNS responder answered nothing during warm-up ({warm:?})"
        );
        Ok(lab)
    }

    /// The tasks that carry the DNS path besides the generator: the
    /// responder's thread and every ksoftirqd (schedstat paths).
    fn path_tasks(&self) -> Vec<String> {
        let mut v = self.ksoftirqd.clone();
        v.push(self.responder.schedstat.clone());
        v
    }

    fn load(&self, load: Load, progress: Arc<AtomicU64>) -> Result<LoadResult> {
        generate(&self.client_netns, self.server, load, 0, progress)
    }

    fn measure(&self, bin: &Path, cfg: DnsConfig) -> Result<DnsSample> {
        let mut sample = DnsSample::default();
        let tracer = match cfg.observer {
            Observer::Tracer => Some(TracerProc::start(bin, &self.topo.node, &[])?),
            Observer::TracerOneVeth => Some(TracerProc::start(
                bin,
                &self.topo.node,
                &[self.client_if.as_str()],
            )?),
            _ => None,
        };
        let tcpdump = match cfg.observer {
            Observer::Tcpdump => Some(Tcpdump::start(&self.topo.node, &self.client_if)?),
            _ => None,
        };
        let pid = tracer
            .as_ref()
            .map(TracerProc::pid)
            .or(tcpdump.as_ref().map(Tcpdump::pid));
        let ifaces = vec![self.client_if.clone(), self.server_if.clone()];
        let stats_fd = if cfg.bpf_stats {
            Some(enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?)
        } else {
            None
        };
        let progs0 = match (&tracer, cfg.bpf_stats) {
            (Some(t), true) => Some(tracer_programs(&self.topo.node, &ifaces, t.spawned_at)?),
            _ => None,
        };
        let window = CpuWindow::start(pid)?;
        let path0: u64 = self.path_tasks().iter().map(|p| schedstat(p).0).sum();
        let obs0 = pid.map(process_cpu_ns);
        let load = self.load(
            Load {
                rate: cfg.rate,
                duration: Some(Duration::from_secs(cfg.secs)),
                total: None,
                reopen_every: 0,
            },
            Arc::new(AtomicU64::new(0)),
        )?;
        let (system_cpu, observer_cpu) = window.end()?;
        let path1: u64 = self.path_tasks().iter().map(|p| schedstat(p).0).sum();
        let obs1 = pid.map(process_cpu_ns);
        sample.path_ns_per_query =
            (path1 - path0 + load.cpu_ns) as f64 / load.answers.max(1) as f64;
        if let (Some(a), Some(z)) = (obs0, obs1) {
            sample.observer_ns_per_query =
                Some(z.saturating_sub(a) as f64 / load.answers.max(1) as f64);
            sample.observer_cpu_precise = Some(z.saturating_sub(a) as f64 / load.secs / 1e7);
        }
        let ours = (path1 - path0 + load.cpu_ns) as f64 / load.secs / 1e7
            + sample.observer_cpu_precise.unwrap_or(0.0);
        sample.others_cpu = (system_cpu - ours).max(0.0);
        sample.load = load;
        sample.system_cpu = system_cpu;
        sample.observer_cpu = observer_cpu;
        if let (Some(t), Some(before)) = (&tracer, progs0) {
            let after = tracer_programs(&self.topo.node, &ifaces, t.spawned_at)?;
            let mut total = 0u64;
            let queries = load.answers.max(1) as f64;
            for (id, name, t1, c1) in &after {
                if let Some((_, _, t0, c0)) = before.iter().find(|p| p.0 == *id) {
                    let runs = c1.saturating_sub(*c0);
                    let dt = t1.saturating_sub(*t0);
                    total += dt;
                    if runs > 0 {
                        sample.prog.insert(
                            name.clone(),
                            (
                                dt as f64 / runs as f64,
                                runs as f64 / queries,
                                dt as f64 / queries,
                            ),
                        );
                    }
                }
            }
            sample.bpf_ns_per_query = Some(total as f64 / queries);
        }
        drop(stats_fd);
        if let Some(t) = tracer {
            sample.startup_s = Some(t.startup.as_secs_f64());
            sample.hwm_mib = Some(proc_kib(t.pid(), "VmHWM")? as f64 / 1024.0);
            let report = t.stop()?;
            self.read_report(&report, &mut sample);
        }
        if let Some(d) = tcpdump {
            let (captured, dropped) = d.stop();
            sample.tcpdump_captured = Some(captured);
            sample.tcpdump_dropped = Some(dropped);
        }
        Ok(sample)
    }

    fn read_report(&self, report: &Value, sample: &mut DnsSample) {
        let mut losses = 0;
        if let Some(list) = report["losses"].as_array() {
            for l in list {
                let n = l["count"].as_u64().unwrap_or(0);
                losses += n;
                if n > 0 {
                    sample
                        .loss_reasons
                        .insert(l["reason"].as_str().unwrap_or("?").to_owned(), n);
                }
            }
        }
        sample.losses = Some(losses);
        let counters = &report["dns"]["counters"];
        sample.unmatched = counters["unmatched_answers"].as_u64();
        sample.queries_seen = counters["queries"].as_u64();
        sample.events = report["dns"]["events_total"].as_u64();
        sample.matched_client = report["dns"]["latency"].as_array().map(|l| {
            l.iter()
                .filter(|e| e["interface"].as_str() == Some(self.client_if.as_str()))
                .filter_map(|e| e["answers"].as_u64())
                .sum()
        });
    }
}

fn phase_dns(b: &mut Bench) -> Result<()> {
    // Loads, plus about 2.5 s to start and stop each tracer.
    let per_cycle = Duration::from_secs(DNS_CONFIGS.iter().map(|c| c.secs + 2).sum::<u64>());
    let runs = b.runs_that_fit(per_cycle, Duration::from_secs(210));
    ensure!(runs >= 1, "no time left for the DNS phase");
    let lab = DnsLab::build()?;
    let mut samples: BTreeMap<&'static str, Vec<DnsSample>> = BTreeMap::new();
    let mut short_runs: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut disturbed = 0usize;
    let mut tracer_vs_tcpdump_cpu = Series::default();
    let mut tracer_vs_tcpdump_sys = Series::default();
    let mut tracer_vs_tcpdump_qps = Series::default();
    let mut cost_tracer = Series::default();
    let mut cost_tcpdump = Series::default();
    let mut cost_one_veth = Series::default();
    let mut delta_tracer = Series::default();
    let mut delta_ratio = Series::default();
    let mut per_cpu_vs_tcpdump = Series::default();
    let mut per_cpu_vs_nothing = Series::default();
    let mut one_veth_vs_tcpdump = Series::default();
    let mut tracer_vs_nothing_qps = Series::default();
    for run in 0..runs {
        let mut this: BTreeMap<&'static str, DnsSample> = BTreeMap::new();
        for k in 0..DNS_CONFIGS.len() {
            check_stop()?;
            let cfg = DNS_CONFIGS[(run + k) % DNS_CONFIGS.len()];
            let mut s = lab
                .measure(&b.args.tracer, cfg)
                .with_context(|| format!("DNS run {}: {}", run + 1, cfg.label))?;
            s.short = cfg
                .rate
                .is_some_and(|r| s.load.answer_rate() < 0.95 * r as f64);
            if s.short {
                *short_runs.entry(cfg.label).or_default() += 1;
            }
            eprintln!(
                "bench: dns run {} {:<14} sent {:>7.0}/s answered {:>7.0}/s cpu {:>5.1} % obs {:?}",
                run + 1,
                cfg.label,
                s.load.sent_rate(),
                s.load.answer_rate(),
                s.system_cpu,
                s.observer_cpu.map(|c| (c * 100.0).round() / 100.0)
            );
            this.insert(cfg.label, s);
        }
        // Ratios compare CPU between configurations: a sample during which
        // other processes took a real share of the machine is left out.
        let get = |l: &str| {
            this.get(l)
                .filter(|s| !s.short && s.others_cpu < DISTURBED_PCT)
        };
        disturbed += this
            .values()
            .filter(|s| !s.short && s.others_cpu >= DISTURBED_PCT)
            .count();
        if let (Some(t), Some(d)) = (get("tracer @ 50k"), get("tcpdump @ 50k")) {
            if let (Some(tc), Some(dc)) = (t.observer_cpu_precise, d.observer_cpu_precise) {
                tracer_vs_tcpdump_cpu.push(tc / dc.max(1e-9));
            }
            // Whole cost per query: what the DNS path's CPU grew by over no
            // observer, plus the observer process itself.
            if let Some(n) = get("nothing @ 50k") {
                let cost = |x: &DnsSample| {
                    x.path_ns_per_query - n.path_ns_per_query
                        + x.observer_ns_per_query.unwrap_or(0.0)
                };
                // tracer's kernel side is known exactly (BPF stats, its
                // own clock reads included); tcpdump's only as the growth
                // of the path's CPU over no observer.
                let exact = |x: &DnsSample| {
                    x.bpf_ns_per_query.unwrap_or(0.0) + x.observer_ns_per_query.unwrap_or(0.0)
                };
                let (ct, cd) = (exact(t), cost(d));
                cost_tracer.push(ct);
                cost_tcpdump.push(cd);
                delta_tracer.push(cost(t));
                if cd > 0.0 {
                    tracer_vs_tcpdump_sys.push(ct / cd);
                    delta_ratio.push(cost(t).max(0.0) / cd);
                }
                if let Some(o) = get("tracer -i veth @ 50k") {
                    let co = exact(o);
                    cost_one_veth.push(co);
                    if cd > 0.0 {
                        one_veth_vs_tcpdump.push(co / cd);
                    }
                }
            }
        }
        // At max: answered q/s (what the issue asks, at the mercy of other
        // load), and queries per CPU-second of the path (immune to it).
        if let (Some(t), Some(d)) = (get("tracer @ max"), get("tcpdump @ max")) {
            tracer_vs_tcpdump_qps.push(t.load.answer_rate() / d.load.answer_rate());
            per_cpu_vs_tcpdump.push(d.path_ns_per_query / t.path_ns_per_query);
        }
        if let (Some(t), Some(n)) = (get("tracer @ max"), get("nothing @ max")) {
            tracer_vs_nothing_qps.push(t.load.answer_rate() / n.load.answer_rate());
            per_cpu_vs_nothing.push(n.path_ns_per_query / t.path_ns_per_query);
        }
        for (label, s) in this {
            samples.entry(label).or_default().push(s);
        }
    }
    drop(lab);

    let series = |label: &str, f: &dyn Fn(&DnsSample) -> Option<f64>| -> Series {
        let mut s = Series::default();
        for x in samples
            .get(label)
            .into_iter()
            .flatten()
            .filter(|x| !x.short)
        {
            if let Some(v) = f(x) {
                s.push(v);
            }
        }
        s
    };
    // Capacity rows.
    for label in ["tracer @ 10k", "tracer @ 50k", "tracer @ max"] {
        let answered = series(label, &|s| Some(s.load.answer_rate()));
        let sent = series(label, &|s| Some(s.load.sent_rate()));
        let lost = series(label, &|s| s.losses.map(|v| v as f64));
        let unmatched = series(label, &|s| s.unmatched.map(|v| v as f64));
        let matched = series(label, &|s| {
            s.matched_client
                .map(|m| m as f64 / s.load.sent.max(1) as f64)
        });
        let target = if label == "tracer @ 50k" {
            "0 lost"
        } else {
            "—"
        };
        let met = (label == "tracer @ 50k").then(|| lost.max() == Some(0.0));
        b.row(
            &format!("DNS {label}: sent / answered q/s; lost events; unmatched answers; matched ÷ sent (client veth)"),
            format!(
                "{} / {}; {}; {}; {}",
                sent.show(kqps),
                answered.show(kqps),
                lost.show(count),
                unmatched.show(count),
                matched.show(|v| format!("{v:.4}"))
            ),
            target,
            met,
        );
    }
    let nothing_max = series("nothing @ max", &|s| Some(s.load.answer_rate()));
    b.row(
        "DNS at max: answered q/s with no observer; tracer ÷ none in q/s; in queries per CPU-second",
        format!(
            "{}; {}; {}",
            nothing_max.show(kqps),
            tracer_vs_nothing_qps.show(ratio),
            per_cpu_vs_nothing.show(ratio)
        ),
        "—",
        None,
    );
    // Collector.
    let cpu10 = series("tracer @ 10k", &|s| s.observer_cpu);
    let cpu10_precise = series("tracer @ 10k", &|s| s.observer_cpu_precise);
    b.row(
        "collector CPU at 10k q/s (% of one core): utime+stime; threads' schedstat",
        format!("{}; {}", cpu10.show(pct), cpu10_precise.show(pct)),
        &format!("≤ {TARGET_CPU_PCT} %"),
        cpu10
            .median()
            .zip(cpu10_precise.median())
            .map(|(a, b)| a.max(b) <= TARGET_CPU_PCT),
    );
    let hwm10 = series("tracer @ 10k", &|s| s.hwm_mib);
    b.row(
        "collector peak RSS at 10k q/s (VmHWM)",
        hwm10.show(mib),
        &format!("≤ {TARGET_RSS_MIB:.0} MiB"),
        hwm10.max().map(|m| m <= TARGET_RSS_MIB),
    );
    // Peer.
    b.row(
        "peer: process CPU tracer ÷ tcpdump at 50k q/s (user space only)",
        tracer_vs_tcpdump_cpu.show(ratio),
        &format!("≤ {TARGET_PEER_RATIO}"),
        tracer_vs_tcpdump_cpu
            .median()
            .map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: CPU per query tracer ÷ tcpdump at 50k q/s (process + kernel: tracer's BPF time; tcpdump's path growth over none)",
        format!(
            "{} ({} vs {} per query)",
            tracer_vs_tcpdump_sys.show(ratio),
            cost_tracer.show(ns),
            cost_tcpdump.show(ns)
        ),
        &format!("≤ {TARGET_PEER_RATIO}"),
        tracer_vs_tcpdump_sys
            .median()
            .map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: the same, tracer on tcpdump's one veth only (`-i`)",
        format!(
            "{} ({} vs {} per query)",
            one_veth_vs_tcpdump.show(ratio),
            cost_one_veth.show(ns),
            cost_tcpdump.show(ns)
        ),
        &format!("≤ {TARGET_PEER_RATIO}"),
        one_veth_vs_tcpdump.median().map(|m| m <= TARGET_PEER_RATIO),
    );
    b.row(
        "peer: at max, tracer ÷ tcpdump: answered q/s; queries per CPU-second",
        format!(
            "{}; {}",
            tracer_vs_tcpdump_qps.show(ratio),
            per_cpu_vs_tcpdump.show(ratio)
        ),
        "≥ 1",
        per_cpu_vs_tcpdump.median().map(|m| m >= 1.0),
    );

    // Details.
    let mut md = format!(
        "### DNS ({} runs; built-in responder pinned to CPU 1, generator pinned to CPU 0, \
         {DNS_SOCKETS} client sockets each with one query in flight, a new id per query)\n\n\
         | configuration | sent q/s | answered q/s | path CPU per query | observer CPU per \
         query | observer CPU (% of a core) | other processes (% of a core) | lost events | \
         unmatched | tracer startup |\n|---|---|---|---|---|---|---|---|---|---|\n",
        runs
    );
    for cfg in DNS_CONFIGS {
        let l = cfg.label;
        let _ = writeln!(
            md,
            "| {l} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            series(l, &|s| Some(s.load.sent_rate())).show(kqps),
            series(l, &|s| Some(s.load.answer_rate())).show(kqps),
            series(l, &|s| Some(s.path_ns_per_query)).show(ns),
            series(l, &|s| s.observer_ns_per_query).show(ns),
            series(l, &|s| s.observer_cpu_precise).show(|v| format!("{v:.2}")),
            series(l, &|s| Some(s.others_cpu)).show(|v| format!("{v:.0}")),
            series(l, &|s| s.losses.map(|v| v as f64)).show(count),
            series(l, &|s| s.unmatched.map(|v| v as f64)).show(count),
            series(l, &|s| s.startup_s).show(secs),
        );
    }
    let mut others = Series::default();
    for x in samples.values().flatten() {
        others.push(x.others_cpu);
    }
    if let Some(m) = others.median() {
        b.others.push(("DNS", m));
    }
    let tcpdump_drops = series("tcpdump @ max", &|s| s.tcpdump_dropped.map(|v| v as f64));
    let tcpdump_capt = series("tcpdump @ max", &|s| s.tcpdump_captured.map(|v| v as f64));
    let _ = writeln!(
        md,
        "\ntcpdump @ max: {} packets captured, {} dropped by kernel per run.",
        tcpdump_capt.show(count),
        tcpdump_drops.show(count)
    );
    let _ = writeln!(
        md,
        "\nThe ratios pair configurations of the same run; {disturbed} of {} samples were \
         left out of them because other processes used ≥ {DISTURBED_PCT:.0} % of a core \
         meanwhile.",
        runs * DNS_CONFIGS.len()
    );
    if !short_runs.is_empty() {
        let _ = writeln!(
            md,
            "\nLeft out (the generator fell short of the rate, the machine being busy): \
             {short_runs:?}."
        );
    }
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.values().flatten() {
        for (r, n) in &s.loss_reasons {
            *reasons.entry(r.clone()).or_default() += n;
        }
    }
    if !reasons.is_empty() {
        let _ = writeln!(md, "\nLoss reasons over every tracer run: {reasons:?}.");
    }
    // Programs under DNS load (tracer's own, BPF stats).
    let _ = writeln!(
        md,
        "\nDifferential cost per query at 50k q/s (path CPU with tracer − without, plus \
         the process; BPF stats were on in the tracer runs): tracer {}, ratio to tcpdump {} \
         — noisier than BPF stats, same conclusion.",
        delta_tracer.show(ns),
        delta_ratio.show(ratio)
    );
    let mut prog: BTreeMap<String, Series> = BTreeMap::new();
    let mut prog_table = String::new();
    for label in ["tracer @ 10k", "tracer @ 50k"] {
        let mut per: BTreeMap<String, [Series; 3]> = BTreeMap::new();
        for s in samples.get(label).into_iter().flatten() {
            for (name, (run, runs, per_q)) in &s.prog {
                let e = per.entry(name.clone()).or_default();
                e[0].push(*run);
                e[1].push(*runs);
                e[2].push(*per_q);
            }
        }
        let total = series(label, &|s| s.bpf_ns_per_query);
        let _ = writeln!(
            prog_table,
            "\ntracer's programs at {} (BPF_ENABLE_STATS; all together {} per query):\n\n\
             | program | ns per run | runs per query | ns per query | share |\n|---|---|---|---|---|",
            &label[9..],
            total.show(ns)
        );
        let all = total.median().unwrap_or(f64::NAN);
        for (name, [run, runs, per_q]) in &per {
            let _ = writeln!(
                prog_table,
                "| {name} | {} | {} | {} | {:.0} % |",
                run.show(|v| format!("{v:.0}")),
                runs.show(|v| format!("{v:.2}")),
                per_q.show(|v| format!("{v:.0}")),
                per_q.median().unwrap_or(0.0) / all * 100.0
            );
            if label == "tracer @ 10k" {
                prog.insert(name.clone(), run.clone());
            }
        }
    }
    md.push_str(&prog_table);
    let bpf_share = series("tracer @ 10k", &|s| {
        s.bpf_ns_per_query.map(|v| v * 1e4 / 1e7)
    });
    let slowest_dns = prog
        .iter()
        .filter(|(k, _)| k.starts_with("dns_"))
        .max_by(|a, b| {
            a.1.median()
                .unwrap_or(0.0)
                .total_cmp(&b.1.median().unwrap_or(0.0))
        });
    if let Some((name, s)) = slowest_dns {
        let m = s.median().unwrap_or(f64::NAN);
        b.row(
            &format!("DNS load 10k q/s, BPF stats: slowest DNS program per run ({name})"),
            s.show(ns),
            &format!("≤ {TARGET_NS_DNS:.0} ns"),
            Some(m <= TARGET_NS_DNS),
        );
    }
    b.detail(md);

    let mut j = serde_json::Map::new();
    for cfg in DNS_CONFIGS {
        let l = cfg.label;
        j.insert(
            l.into(),
            json!({
                "rate": cfg.rate,
                "seconds": cfg.secs,
                "sent_qps": series(l, &|s| Some(s.load.sent_rate())).json(),
                "answered_qps": series(l, &|s| Some(s.load.answer_rate())).json(),
                "send_errors": series(l, &|s| Some(s.load.errors as f64)).json(),
                "machine_cpu_pct_of_core": series(l, &|s| Some(s.system_cpu)).json(),
                "other_processes_pct_of_core": series(l, &|s| Some(s.others_cpu)).json(),
                "path_cpu_ns_per_query": series(l, &|s| Some(s.path_ns_per_query)).json(),
                "observer_cpu_ns_per_query": series(l, &|s| s.observer_ns_per_query).json(),
                "observer_cpu_pct_of_core_schedstat": series(l, &|s| s.observer_cpu_precise).json(),
                "timeouts": series(l, &|s| Some(s.load.timeouts as f64)).json(),
                "observer_cpu_pct_of_core": series(l, &|s| s.observer_cpu).json(),
                "lost_events": series(l, &|s| s.losses.map(|v| v as f64)).json(),
                "unmatched_answers": series(l, &|s| s.unmatched.map(|v| v as f64)).json(),
                "matched_client_veth": series(l, &|s| s.matched_client.map(|v| v as f64)).json(),
                "queries_seen_all_veths": series(l, &|s| s.queries_seen.map(|v| v as f64)).json(),
                "dns_events": series(l, &|s| s.events.map(|v| v as f64)).json(),
                "tracer_startup_s": series(l, &|s| s.startup_s).json(),
                "tracer_vmhwm_mib": series(l, &|s| s.hwm_mib).json(),
                "tcpdump_captured": series(l, &|s| s.tcpdump_captured.map(|v| v as f64)).json(),
                "tcpdump_dropped": series(l, &|s| s.tcpdump_dropped.map(|v| v as f64)).json(),
            }),
        );
    }
    j.insert(
        "ratios".into(),
        json!({
            "tracer_vs_tcpdump_process_cpu_50k": tracer_vs_tcpdump_cpu.json(),
            "tracer_vs_tcpdump_cpu_per_query_50k": tracer_vs_tcpdump_sys.json(),
            "tracer_cost_ns_per_query_50k": cost_tracer.json(),
            "tcpdump_cost_ns_per_query_50k": cost_tcpdump.json(),
            "tracer_one_veth_vs_tcpdump_cpu_per_query_50k": one_veth_vs_tcpdump.json(),
            "tracer_one_veth_cost_ns_per_query_50k": cost_one_veth.json(),
            "tracer_vs_tcpdump_max_answered_qps": tracer_vs_tcpdump_qps.json(),
            "tracer_vs_nothing_max_answered_qps": tracer_vs_nothing_qps.json(),
            "tracer_vs_nothing_max_queries_per_cpu_second": per_cpu_vs_nothing.json(),
            "tracer_vs_tcpdump_max_queries_per_cpu_second": per_cpu_vs_tcpdump.json(),
            "tracer_differential_cost_ns_per_query_50k": delta_tracer.json(),
            "tracer_vs_tcpdump_differential_50k": delta_ratio.json(),
        }),
    );
    j.insert(
        "tracer_programs_ns_per_run_10k".into(),
        prog.iter()
            .map(|(k, s)| (k.clone(), s.json()))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    j.insert("tracer_programs_pct_of_core_10k".into(), bpf_share.json());
    j.insert("loss_reasons".into(), json!(reasons));
    j.insert("short_runs_left_out".into(), json!(short_runs));
    j.insert(
        "samples_left_out_of_ratios_other_load".into(),
        json!(disturbed),
    );
    b.json.insert("dns".into(), Value::Object(j));
    Ok(())
}

// ---------------------------------------------------------------------------
// Phase 4: 1 M distinct flows
// ---------------------------------------------------------------------------

fn phase_flows(b: &mut Bench) -> Result<()> {
    let runs = b.runs_that_fit(Duration::from_secs(20), Duration::from_secs(110));
    ensure!(runs >= 1, "no time left for the flows phase");
    let lab = DnsLab::build()?;
    let mut rss_end = Series::default();
    let mut hwm = Series::default();
    let mut growth = Series::default();
    let mut qps = Series::default();
    let mut lost = Series::default();
    let mut unmatched = Series::default();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut trace: Vec<Value> = Vec::new();
    for run in 0..runs {
        check_stop()?;
        let tracer = TracerProc::start(&b.args.tracer, &lab.topo.node, &[])?;
        let pid = tracer.pid();
        let rss_ready = proc_kib(pid, "VmRSS")? as f64 / 1024.0;
        // Sample RSS against queries sent.
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (progress, done) = (Arc::clone(&progress), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut points = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(kib) = proc_kib(pid, "VmRSS") {
                        points.push((progress.load(Ordering::Relaxed), kib as f64 / 1024.0));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                points
            })
        };
        let load = lab.load(
            Load {
                rate: None,
                duration: Some(Duration::from_secs(60)),
                total: Some(FLOWS),
                reopen_every: FLOWS_REOPEN,
            },
            Arc::clone(&progress),
        );
        // One more tick of the collector (sweep, snapshot) after the load.
        std::thread::sleep(Duration::from_millis(1500));
        done.store(true, Ordering::Relaxed);
        let points = sampler.join().unwrap_or_default();
        let load = load?;
        let end = proc_kib(pid, "VmRSS")? as f64 / 1024.0;
        let peak = proc_kib(pid, "VmHWM")? as f64 / 1024.0;
        let report = tracer.stop()?;
        let mut s = DnsSample::default();
        lab.read_report(&report, &mut s);
        // RSS once 10 % of the flows were sent, against the end.
        let early = points
            .iter()
            .find(|(n, _)| *n >= FLOWS / 10)
            .map_or(rss_ready, |(_, r)| *r);
        rss_end.push(end);
        hwm.push(peak);
        growth.push(end - early);
        qps.push(load.answer_rate());
        lost.push(s.losses.unwrap_or(0) as f64);
        for (r, n) in &s.loss_reasons {
            *reasons.entry(r.clone()).or_default() += n;
        }
        unmatched.push(s.unmatched.unwrap_or(0) as f64);
        eprintln!(
            "bench: flows run {}: {} queries in {:.1} s, RSS ready {rss_ready:.1} → end {end:.1} MiB, HWM {peak:.1} MiB",
            run + 1,
            load.sent,
            load.secs
        );
        trace.push(json!({
            "sent": load.sent,
            "answers": load.answers,
            "seconds": load.secs,
            "rss_ready_mib": rss_ready,
            "rss_end_mib": end,
            "vmhwm_mib": peak,
            "rss_by_queries_sent": points.iter().map(|(n, r)| json!([n, r])).collect::<Vec<_>>(),
            "lost_events": s.losses,
            "unmatched_answers": s.unmatched,
        }));
    }
    drop(lab);
    b.row(
        "collector RSS after 1 M distinct DNS flows (VmRSS; peak VmHWM)",
        format!("{}; peak {}", rss_end.show(mib), hwm.show(mib)),
        &format!("≤ {TARGET_RSS_MIB:.0} MiB"),
        hwm.max().map(|m| m <= TARGET_RSS_MIB),
    );
    b.row(
        "collector RSS growth from 100 k to 1 M flows",
        growth.show(mib),
        "flat",
        growth.max().map(|g| g <= 2.0),
    );
    b.detail(format!(
        "### 1 M distinct flows ({runs} runs)\n\nEach run: {FLOWS} queries at the generator's \
         top speed, {DNS_SOCKETS} sockets, each replaced by a new one (new source port) after \
         {FLOWS_REOPEN} queries, so every (source port, id) is new. Answered {} per run; lost \
         events {} (over all runs: {reasons:?}); unmatched answers {}.",
        qps.show(kqps),
        lost.show(count),
        unmatched.show(count)
    ));
    b.json.insert(
        "flows".into(),
        json!({
            "queries": FLOWS,
            "reopen_every": FLOWS_REOPEN,
            "rss_end_mib": rss_end.json(),
            "vmhwm_mib": hwm.json(),
            "rss_growth_10pct_to_end_mib": growth.json(),
            "answered_qps": qps.json(),
            "lost_events": lost.json(),
            "unmatched_answers": unmatched.json(),
            "runs": trace,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Phase 5: startup with 100 pods
// ---------------------------------------------------------------------------

fn phase_startup(b: &mut Bench) -> Result<()> {
    ensure!(
        b.time_left() > Duration::from_secs(60),
        "no time left for the startup phase"
    );
    let t = Instant::now();
    let topo = Topology::build(Datapath::Transparent, STARTUP_PODS)?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("bench: built {STARTUP_PODS} pods in {build_s:.1} s");
    let mut startup = Series::default();
    let mut attached = Vec::new();
    // Each run attaches and detaches 505 TCX links, about 17 s, then starts
    // once more with legacy TC, a few seconds.
    let runs = b.runs_that_fit(Duration::from_secs(22), Duration::from_secs(25));
    let mut stop_failures: Vec<String> = Vec::new();
    for _ in 0..runs.max(1) {
        check_stop()?;
        let tracer = TracerProc::start(&b.args.tracer, &topo.node, &[])?;
        startup.push(tracer.startup.as_secs_f64());
        let line = lines_of(&tracer.stderr)
            .into_iter()
            .find(|l| l.contains("attached to"));
        // tracer writes its ready file before it installs its SIGINT
        // handler: a signal right away can kill it (seen once in 25 runs).
        std::thread::sleep(Duration::from_millis(300));
        match tracer.stop() {
            Ok(report) => attached.push(report["interfaces"].as_array().map_or(0, Vec::len)),
            Err(e) => {
                eprintln!("bench: stopping tracer: {e:#}");
                stop_failures.push(format!("{e:#}").lines().next().unwrap_or("").to_owned());
            }
        }
        if let Some(line) = line {
            let n: String = line
                .split("attached to ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            eprintln!(
                "bench: startup {:.2} s, attached to {n}",
                startup.0.last().unwrap_or(&0.0)
            );
        }
    }
    // The same start with legacy TC (clsact + cls_bpf), which attaches
    // without an RCU grace period per program: the other side of the
    // trade-off README's performance section describes.
    let mut legacy = Series::default();
    for _ in 0..runs.max(1) {
        check_stop()?;
        let tracer =
            TracerProc::start_with(&b.args.tracer, &topo.node, &[], &["--tc-attach", "legacy"])?;
        legacy.push(tracer.startup.as_secs_f64());
        std::thread::sleep(Duration::from_millis(300));
        if let Err(e) = tracer.stop() {
            stop_failures.push(
                format!("legacy: {e:#}")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    // Where the time goes, in this process, the way watch does it.
    let node = topo.node.clone();
    let (breakdown, attachments) = netns::run_in(
        &node,
        move || -> Result<(Vec<(&'static str, f64)>, usize)> {
            let mut steps = Vec::new();
            let mut t = Instant::now();
            let mut lap = |name: &'static str, steps: &mut Vec<(&'static str, f64)>| {
                steps.push((name, t.elapsed().as_secs_f64()));
                t = Instant::now();
            };
            let kernel = probes::kernel_info();
            lap("read kernel BTF", &mut steps);
            let mut ebpf = probes::load_full(&ProbeSettings::default(), &kernel)?;
            lap("parse + create maps", &mut steps);
            let programs = tc_programs();
            let mut tc = TcAttachments::load(&mut ebpf, &programs)?;
            lap("verify TC programs", &mut steps);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let all = rt.block_on(interfaces::list())?;
            let traced = interfaces::select(&all, &[])?;
            lap("list interfaces", &mut steps);
            for iface in &traced {
                tc.attach(&mut ebpf, &iface.name)?;
            }
            lap("attach TC programs", &mut steps);
            let macs = rt.block_on(interfaces::peer_macs(&traced))?;
            flood::set_port_macs(&mut ebpf, &macs)?;
            lap("peer MACs", &mut steps);
            let _hooks = hooks::attach(&mut ebpf, &kernel, &["conntrack", "flood"]);
            lap("load + attach tracing hooks", &mut steps);
            tc.detach_all(&mut ebpf);
            Ok((steps, traced.len() * programs.len()))
        },
    )??;
    let t = Instant::now();
    drop(topo);
    let teardown_s = t.elapsed().as_secs_f64();
    b.row(
        &format!(
            "startup: `tracer watch` spawn → ready with {STARTUP_PODS} pod veths (transparent)"
        ),
        startup.show(secs),
        "—",
        None,
    );
    b.row(
        &format!("startup with --tc-attach legacy ({STARTUP_PODS} pod veths)"),
        legacy.show(secs),
        "—",
        None,
    );
    let total: f64 = breakdown.iter().map(|(_, s)| s).sum();
    let attach_s = breakdown
        .iter()
        .find(|(n, _)| *n == "attach TC programs")
        .map_or(0.0, |(_, s)| *s);
    let per_attach_ms = attach_s * 1e3 / attachments.max(1) as f64;
    let steps = breakdown
        .iter()
        .map(|(n, s)| format!("{n} {:.0} ms ({:.0} %)", s * 1e3, s / total * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    b.detail(format!(
        "### Startup ({STARTUP_PODS} pods, transparent; building them took {build_s:.1} s, \
         deleting {teardown_s:.1} s)\n\nReports listed {} interfaces. The same steps in this \
         process: {steps}. {attachments} TCX attachments, {per_attach_ms:.1} ms each: the kernel \
         swaps the hook's program array and waits for an RCU grace period \
         (`tcx_entry_sync()`, under rtnl) on every attach.{}",
        attached
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/"),
        if stop_failures.is_empty() {
            String::new()
        } else {
            format!(
                " Stopping tracer failed {} times: {}",
                stop_failures.len(),
                stop_failures.join("; ")
            )
        },
    ));
    b.json.insert(
        "startup".into(),
        json!({
            "pods": STARTUP_PODS,
            "spawn_to_ready_s": startup.json(),
            "legacy_tc_spawn_to_ready_s": legacy.json(),
            "interfaces_in_report": attached,
            "stop_failures": stop_failures,
            "topology_build_s": build_s,
            "topology_delete_s": teardown_s,
            "tcx_attachments": attachments,
            "ms_per_attachment": per_attach_ms,
            "steps_s": breakdown.iter().map(|(n, s)| ((*n).to_owned(), json!(s))).collect::<serde_json::Map<_, _>>(),
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn markdown(b: &Bench, machine: &Value, errors: &[String]) -> String {
    let mut md = String::from("## tracer benchmarks\n\n");
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, kernel {}, {} MiB RAM. Other processes on it used {:.0} % \
         of a core when the run started{}. {} runs per figure (median, min–max), \
         configurations alternated within each run; total {:.0} s.\n",
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["memory_mib"],
        machine["background_busy_pct_of_core_at_start"]
            .as_f64()
            .unwrap_or(f64::NAN),
        b.others
            .iter()
            .map(|(phase, v)| format!(", {v:.0} % during the {phase} phase"))
            .collect::<String>(),
        b.args.runs,
        b.start.elapsed().as_secs_f64()
    );
    md.push_str("| figure | value | target | met? |\n|---|---|---|---|\n");
    for r in &b.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", r.figure, r.value, r.target);
    }
    if !errors.is_empty() {
        md.push_str("\nNot measured:\n\n");
        for e in errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    for d in &b.details {
        md.push('\n');
        md.push_str(d);
        md.push('\n');
    }
    md
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run() -> Result<bool> {
    let args = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "bench needs root: it builds network namespaces and loads eBPF programs"
    );
    ensure!(
        args.tracer.exists(),
        "{} missing: cargo build --release -p tracer",
        args.tracer.display()
    );
    install_signal_handlers();
    // The flows phase and the generator open thousands of sockets.
    let nofile = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit reads a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) };
    let mut b = Bench {
        args,
        start: Instant::now(),
        rows: Vec::new(),
        details: Vec::new(),
        json: serde_json::Map::new(),
        others: Vec::new(),
    };
    // A watchdog: past the budget, stop between measurements.
    let budget = b.args.budget + Duration::from_secs(20);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("bench: time budget exceeded, stopping");
        STOP.store(true, Ordering::SeqCst);
    });
    let mut machine = machine();
    // What else runs here: the figures are only as quiet as the machine.
    // Wait a little for a quiet machine (2 s samples, at most --quiet-wait).
    let waited = Instant::now();
    let mut background = f64::NAN;
    while !STOP.load(Ordering::SeqCst) {
        if let Ok((busy, _)) = CpuWindow::start(None).and_then(|w| {
            std::thread::sleep(Duration::from_secs(2));
            w.end()
        }) {
            background = busy;
        }
        if background < QUIET_PCT || waited.elapsed() >= b.args.quiet_wait {
            break;
        }
        eprintln!("bench: other processes keep {background:.0} % of a core busy: waiting");
    }
    if let Value::Object(m) = &mut machine {
        m.insert(
            "background_busy_pct_of_core_at_start".into(),
            json!(background),
        );
        m.insert(
            "waited_for_quiet_s".into(),
            json!(waited.elapsed().as_secs_f64()),
        );
    }
    eprintln!("bench: {machine}");
    type Phase = fn(&mut Bench) -> Result<()>;
    let phases: [(&str, Phase); 5] = [
        ("programs", phase_programs),
        ("packet", phase_packet),
        ("dns", phase_dns),
        ("flows", phase_flows),
        ("startup", phase_startup),
    ];
    let mut errors = Vec::new();
    let mut timings = serde_json::Map::new();
    for (name, phase) in phases {
        if !b.wants(name) {
            continue;
        }
        if STOP.load(Ordering::SeqCst) {
            errors.push(format!("{name}: skipped (interrupted or out of time)"));
            continue;
        }
        eprintln!(
            "bench: phase {name} ({:.0} s elapsed)",
            b.start.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        if let Err(e) = phase(&mut b) {
            eprintln!("bench: phase {name} failed: {e:#}");
            errors.push(format!("{name}: {e:#}"));
        }
        timings.insert(name.into(), json!(t.elapsed().as_secs_f64()));
    }
    let md = markdown(&b, &machine, &errors);
    println!("{md}");
    std::fs::create_dir_all(&b.args.out)?;
    let rows: Vec<Value> = b
        .rows
        .iter()
        .map(|r| json!({"figure": r.figure, "value": r.value, "target": r.target, "met": r.met}))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("machine".into(), machine);
    out.insert("runs".into(), json!(b.args.runs));
    out.insert(
        "total_seconds".into(),
        json!(b.start.elapsed().as_secs_f64()),
    );
    out.insert("phase_seconds".into(), Value::Object(timings));
    out.insert("table".into(), Value::Array(rows));
    out.insert("errors".into(), json!(errors));
    out.extend(std::mem::take(&mut b.json));
    let json_path = b.args.out.join("results.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&Value::Object(out))?,
    )?;
    std::fs::write(b.args.out.join("RESULTS.md"), &md)?;
    eprintln!("bench: wrote {} and RESULTS.md", json_path.display());
    Ok(errors.is_empty())
}
