//! `tracer watch`: attach to the pod interfaces, trace until the duration
//! ends or SIGINT/SIGTERM arrives, detach, and report.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attach::{TcAttachments, TcProgram},
    conntrack::ConntrackCollector,
    counter,
    dns::{
        self,
        collector::{DnsCollector, DnsSettings},
    },
    flood::{self, collector::FloodCollector},
    hooks, interfaces,
    kernel::KernelInfo,
    loss,
    probes::{self, ProbeSettings},
    report::{self, LossReport, Report},
};

/// What to trace and for how long.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Interfaces to attach to; empty = discover.
    pub interfaces: Vec<String>,
    /// Stop after this long; `None` = until a signal.
    pub duration: Option<Duration>,
    /// Print a progress line this often (to stderr).
    pub interval: Duration,
    /// Written once every probe is attached (for scripts and tests).
    pub ready_file: Option<PathBuf>,
    /// `--netns`, for the report.
    pub netns: Option<String>,
    /// Load-time settings of the probes.
    pub probes: ProbeSettings,
    /// DNS collector settings.
    pub dns: DnsSettings,
}

/// Runs a trace and returns its report. Everything attached is detached
/// before returning, also on error.
pub async fn run(opts: WatchOptions) -> anyhow::Result<Report> {
    let kernel = probes::kernel_info();
    let mut ebpf = probes::load_full(&opts.probes, &kernel).context("loading eBPF programs")?;
    let programs: Vec<TcProgram> = counter::PROGRAMS
        .into_iter()
        .chain(dns::PROGRAMS)
        .chain(flood::PROGRAMS)
        .collect();
    let mut tc = TcAttachments::load(&mut ebpf, &programs)?;

    let all = interfaces::list().await?;
    let traced = interfaces::select(&all, &opts.interfaces)?;
    if traced.is_empty() {
        anyhow::bail!(
            "no pod interface found (no veth, no bridge with veth ports); name one with --interface"
        );
    }
    let result = trace(&mut ebpf, &kernel, &mut tc, &all, &traced, &opts).await;
    tc.detach_all(&mut ebpf);
    if let Some(path) = &opts.ready_file {
        let _ignored = std::fs::remove_file(path);
    }
    result
}

async fn trace(
    ebpf: &mut aya::Ebpf,
    kernel: &KernelInfo,
    tc: &mut TcAttachments,
    all: &[interfaces::Interface],
    traced: &[interfaces::Interface],
    opts: &WatchOptions,
) -> anyhow::Result<Report> {
    for iface in traced {
        tc.attach(ebpf, &iface.name)?;
    }
    let names: Vec<&str> = tc.interfaces().collect();
    tracing::info!(
        "attached to {} interfaces: {}",
        names.len(),
        names.join(" ")
    );
    // Which MAC sits behind each pod port, so flooded copies can be told
    // from frames addressed to the pod.
    flood::set_port_macs(ebpf, &interfaces::peer_macs(traced).await?)?;
    let hooks = hooks::attach(ebpf, kernel, &["conntrack", "flood"]);

    let start = Instant::now();
    let start_ns = monotonic_ns();
    let baseline = counter::read(ebpf)?;
    let mut dns = DnsCollector::new(ebpf, opts.dns)?;
    let mut conntrack = ConntrackCollector::new(ebpf)?;
    let mut floods = FloodCollector::new(ebpf, start_ns)?;
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }

    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
            result = dns.readable() => result?,
            result = conntrack.readable() => result?,
            result = floods.readable() => result?,
            _ = ticker.tick() => {
                dns.sweep(ebpf, monotonic_ns())?;
                floods.tick(ebpf)?;
                let now = counter::read(ebpf)?;
                let delta = counter::delta(&baseline, &now);
                let packets: u64 = delta.values().map(|c| c.packets).sum();
                tracing::info!("{:>6.1} s: {packets} packets on {} interfaces", start.elapsed().as_secs_f64(), names.len());
            }
        }
    }

    dns.drain();
    dns.sweep(ebpf, monotonic_ns())?;
    let counts = counter::delta(&baseline, &counter::read(ebpf)?);
    let name_of = |ifindex: u32| {
        all.iter()
            .find(|i| i.index == ifindex)
            .map_or_else(|| format!("if{ifindex}"), |i| i.name.clone())
    };
    let dns = dns.report(ebpf, &name_of)?;
    conntrack.drain();
    let area = |name: &str| {
        hooks
            .iter()
            .filter(|h| h.area == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let conntrack = conntrack.report(ebpf, area("conntrack"), &|_| None)?;
    let flood = floods.report(ebpf, area("flood"), &name_of)?;
    let losses = loss::read(ebpf)?
        .into_iter()
        .map(|(loss, count)| LossReport {
            reason: loss.name(),
            count,
        })
        .collect();
    Ok(Report {
        schema_version: report::SCHEMA_VERSION,
        tracer_version: env!("CARGO_PKG_VERSION"),
        kernel: report::kernel_release(),
        netns: opts.netns.clone(),
        duration_seconds: start.elapsed().as_secs_f64(),
        interfaces: report::interfaces(traced, all, &counts),
        dns,
        conntrack,
        flood,
        kernel_offsets_missing: kernel.missing.clone(),
        losses,
    })
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| {
            u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(ts.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
