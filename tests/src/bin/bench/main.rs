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

// One file per phase and per shared part; they share their items through
// this root (each `use super::*`), as the single file did.
mod children;
mod machine;
mod output;
mod phase_dns;
mod phase_flows;
mod phase_packet;
mod phase_programs;
mod phase_startup;
mod probe_setup;
mod samples;
mod traffic;

use children::*;
use machine::*;
use output::*;
use phase_dns::*;
use phase_flows::*;
use phase_packet::*;
use phase_programs::*;
use phase_startup::*;
use probe_setup::*;
use samples::*;
use traffic::*;

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
