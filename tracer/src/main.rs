//! The `tracer` command line.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode, time::Duration};

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracer::{netns, privileges, watch};
use tracing_subscriber::EnvFilter;

/// eBPF tracer for DNS latency, conntrack insert races and bridge flooding
/// on Kubernetes nodes.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Act inside this named network namespace (`ip netns list`), e.g. a lab node.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    /// Log filter (tracing EnvFilter syntax); RUST_LOG works too.
    #[arg(long, global = true, default_value = "info", env = "RUST_LOG")]
    log: String,

    #[command(subcommand)]
    command: Option<Command>,

    /// `tracer [OPTIONS]` alone runs `watch` with these options.
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace the pod interfaces and report (the default).
    Watch(WatchArgs),
    /// Build bridge and transparent nodes in network namespaces, run the same
    /// traffic through both, and compare.
    Lab(LabArgs),
}

#[derive(Debug, clap::Args)]
struct LabArgs {
    /// Pods per node.
    #[arg(long, default_value_t = 4)]
    pods: usize,
    /// Datagrams each pod sends in the pod-to-pod scenario.
    #[arg(long, default_value_t = 1000)]
    datagrams: u64,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Default, clap::Args)]
struct WatchArgs {
    /// Trace only this interface (repeatable). Default: every veth and every
    /// bridge with veth ports.
    #[arg(short, long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,

    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(short, long, value_name = "SECONDS")]
    duration: Option<f64>,

    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    interval: f64,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,

    /// Write this file once every probe is attached; removed at exit.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,

    /// DNS answers at least this slow (ms) are reported one by one.
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    dns_slow_ms: f64,

    /// The pods' resolver timeout (resolv.conf `timeout:`, glibc default 5):
    /// a query still unanswered 1 s after it is reported as unanswered.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    dns_timeout: f64,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum Output {
    #[default]
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("tracer: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(line) = privileges::check(privileges::TRACE_CAPS) {
        anyhow::bail!(line);
    }
    if let Some(name) = &cli.netns {
        // Before the runtime exists: its worker threads inherit the namespace.
        netns::enter(name)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Watch(cli.watch)) {
        Command::Watch(args) => {
            let output = args.output;
            let opts = watch::WatchOptions {
                interfaces: args.interfaces,
                duration: args.duration.map(seconds).transpose()?,
                interval: seconds(args.interval)?,
                ready_file: args.ready_file,
                netns: cli.netns,
                probes: tracer::probes::ProbeSettings {
                    dns_slow: Duration::from_secs_f64(args.dns_slow_ms.max(0.0) / 1000.0),
                    ..Default::default()
                },
                dns: tracer::dns::collector::DnsSettings {
                    unanswered_after: seconds(args.dns_timeout)? + Duration::from_secs(1),
                    ..Default::default()
                },
                snapshots: None,
                progress: true,
            };
            let report = runtime.block_on(watch::run(opts))?;
            match output {
                Output::Table => print!("{}", report.to_table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lab(args) => {
            let cancel = Arc::new(AtomicBool::new(false));
            let opts = tracer::lab::LabOptions {
                pods: args.pods,
                datagrams: args.datagrams,
                cancel: Arc::clone(&cancel),
            };
            // The lab blocks; Ctrl-C/SIGTERM only raise the flag, so the lab
            // stops between steps and its guards delete every namespace.
            let report = runtime.block_on(async move {
                let mut lab = tokio::task::spawn_blocking(move || tracer::lab::run(&opts));
                let mut sigterm = signal(SignalKind::terminate())?;
                let mut sigint = signal(SignalKind::interrupt())?;
                tokio::select! {
                    result = &mut lab => return Ok::<_, anyhow::Error>(result??),
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
                tracing::warn!("interrupted: cleaning up the lab");
                cancel.store(true, Ordering::Relaxed);
                Ok(lab.await??)
            })?;
            match args.output {
                Output::Table => print!("{}", report.to_table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{value} is not a positive number of seconds"))
}
