//! The `tracer` command line.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode, time::Duration};

// The lab's cancellation flag and signal handling.
#[cfg(feature = "lab")]
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
#[cfg(feature = "lab")]
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

    /// How to attach the TC programs: `tcx` or `legacy` (clsact + cls_bpf).
    /// Default: by kernel version, TCX from 6.6. For tests, which force
    /// `legacy` to run that path on new kernels; hidden from --help.
    #[arg(long, global = true, hide = true, env = "TRACER_TC_ATTACH", value_enum)]
    tc_attach: Option<tracer::attach::TcAttachMode>,

    #[command(subcommand)]
    command: Option<Command>,

    /// `tracer [OPTIONS]` alone runs `watch` with these options.
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace the pod interfaces and report (the default). On a terminal, a
    /// live per-interface view refreshes every interval.
    Watch(WatchArgs),
    /// node-problem-detector plugin: trace for a bounded time, print one
    /// line, exit 0 (ok), 1 (problem found) or 2 (unknown: could not trace).
    Check(CheckArgs),
    /// Build bridge and transparent nodes in network namespaces, run the same
    /// traffic through both, and compare.
    #[cfg(feature = "lab")]
    Lab(LabArgs),
    /// Not in this build: the node image leaves the lab out.
    #[cfg(not(feature = "lab"))]
    #[command(hide = true, disable_help_flag = true)]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        _args: Vec<String>,
    },
    /// Compare two JSON reports (lab or watch) figure by figure; exit 1
    /// when a figure got significantly worse, 0 otherwise, 2 on error.
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The earlier report (`tracer lab -o json` or `tracer watch -o json`).
    old: PathBuf,
    /// The later report, of the same kind.
    new: PathBuf,
    /// Worse means beyond this many percent of the old value…
    #[arg(long, default_value_t = 20.0, value_name = "PERCENT")]
    threshold_percent: f64,
    /// …and by at least this much in the figure's own unit (ms, packets…).
    #[arg(long, default_value_t = 1.0, value_name = "AMOUNT")]
    min_change: f64,
    /// Also list the figures that did not change.
    #[arg(long)]
    all: bool,
}

#[cfg(feature = "lab")]
#[derive(Debug, clap::Args)]
struct LabArgs {
    /// Workload pods per node (two DNS backend pods come on top).
    #[arg(long, default_value_t = 4)]
    pods: usize,
    /// Seconds of traffic per scenario.
    #[arg(short, long, default_value_t = 6.0, value_name = "SECONDS")]
    duration: f64,
    /// Run only these scenarios (repeatable; default: all).
    #[arg(long, value_enum)]
    scenario: Vec<tracer::lab::Scenario>,
    /// Runs of every scenario per datapath: each figure's mean and 95 %
    /// interval come from them, and "resolved by transparent" needs a
    /// significant difference. 5 is the fewest at which a rank test on
    /// per-run values can reach p < 0.05 with room (4 can, just).
    #[arg(long, default_value_t = 5, value_name = "N")]
    repeat: usize,
    /// Also capture with tcpdump/tshark and read the kernel's counters:
    /// tracer's figure, the ground truth and their difference.
    #[arg(long)]
    verify: bool,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also draw the run as SVG and PNG charts into this directory (DNS
    /// latency CDF, flood copies per port over time, pod-to-pod RTT CDF).
    /// Needs the `plot` feature (a source build has it; `cargo xtask dist`
    /// leaves it out of the node binary).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Seconds to trace (keep below the plugin's timeout).
    #[arg(short, long, default_value_t = 20.0, value_name = "SECONDS")]
    duration: f64,

    #[command(flatten)]
    dns: DnsArgs,
}

#[derive(Debug, Default, clap::Args)]
struct DnsArgs {
    /// Two queries from one socket closer than this (ms), the first still
    /// unanswered or both back to back, count as a parallel A/AAAA pair.
    #[arg(long, default_value_t = 1.0, value_name = "MS")]
    dns_pair_window_ms: f64,

    /// DNS answers at least this slow (ms) are reported one by one.
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    dns_slow_ms: f64,

    /// The pods' resolver timeout (resolv.conf `timeout:`, glibc default 5):
    /// a query still unanswered 1 s after it is reported as unanswered.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    dns_timeout: f64,

    /// The node's root, where its DNS server list is read
    /// (etc/resolv.conf, run/systemd/resolve/resolv.conf,
    /// var/lib/kubelet/config.yaml). Default: /host when it holds a node's
    /// root (a debug pod), else /.
    #[arg(long, value_name = "DIR")]
    node_root: Option<PathBuf>,

    /// A cluster DNS address pods may query besides the node's list
    /// (kube-dns service, NodeLocal DNSCache; repeatable). kubelet's
    /// clusterDNS and ClusterFirst pods' nameservers are found without it.
    #[arg(long, value_name = "IP")]
    cluster_dns: Vec<std::net::IpAddr>,
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

    /// Keep DNS names in the JSON output (they are shown on the terminal,
    /// but left out of JSON unless asked for: names can be sensitive).
    #[arg(long)]
    dns_names: bool,

    /// No live view even on a terminal: progress lines on stderr instead.
    #[arg(long)]
    no_live: bool,

    /// Azure CNI state file read for pod attribution. For tests (they
    /// cannot write the node's); hidden from --help.
    #[arg(long, hide = true, env = "TRACER_AZURE_STATE", value_name = "PATH",
          default_value = tracer::pods::AZURE_STATE)]
    azure_state: PathBuf,

    /// The kubelet's pod log root read for pod attribution. For tests;
    /// hidden from --help.
    #[arg(long, hide = true, env = "TRACER_PODS_LOG_ROOT", value_name = "PATH",
          default_value = tracer::pods::PODS_LOG_ROOT)]
    pods_log_root: PathBuf,

    /// Serve Prometheus metrics on http://ADDR/metrics while tracing.
    /// `PORT` or `:PORT` listen on 127.0.0.1 only; give `0.0.0.0:PORT` to
    /// listen on every address (of the --netns namespace, when given).
    #[arg(long, value_name = "ADDR", value_parser = tracer::metrics::parse_listen_addr)]
    prometheus: Option<std::net::SocketAddr>,

    #[command(flatten)]
    dns: DnsArgs,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum Output {
    #[default]
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Diff(args)) = &cli.command {
        // Reads two files: no privileges, no runtime, no tracing.
        return diff(args).unwrap_or_else(|err| {
            eprintln!("tracer diff: error: {err:#}");
            ExitCode::from(2)
        });
    }
    let is_check = matches!(cli.command, Some(Command::Check(_)));
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal, and not when NO_COLOR is set (no-color.org).
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) if is_check => {
            // node-problem-detector reads stdout and the exit code: 2 = unknown.
            println!("UNKNOWN: {}", tracer::escape::line(&format!("{err:#}")));
            ExitCode::from(2)
        }
        Err(err) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!(
                "tracer: error: {}",
                tracer::escape::line(&format!("{err:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

fn diff(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let read = |path: &PathBuf| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    };
    let limits = tracer::diff::Thresholds {
        percent: args.threshold_percent,
        min_change: args.min_change,
    };
    let rows = tracer::diff::diff(&read(&args.old)?, &read(&args.new)?, limits)?;
    print!("{}", tracer::diff::to_table(&rows, limits, args.all));
    Ok(if tracer::diff::regressed(&rows) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(line) = tracer::probes::kernel_unsupported() {
        anyhow::bail!(line);
    }
    if let Some(line) = privileges::check(privileges::TRACE_CAPS) {
        anyhow::bail!(line);
    }
    if let Some(name) = &cli.netns {
        // Before the runtime exists: its worker threads inherit the namespace.
        netns::enter(name)?;
    }
    // Room for the metrics server's connections next to the maps and links.
    tracer::metrics::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let netns = cli.netns;
    match cli.command.unwrap_or(Command::Watch(cli.watch)) {
        Command::Watch(args) => run_watch(&runtime, args, netns, cli.tc_attach),
        Command::Check(args) => run_check(&runtime, &args, netns, cli.tc_attach),
        #[cfg(not(feature = "lab"))]
        Command::Lab { .. } => anyhow::bail!(
            "lab: this tracer was built without the `lab` feature (the node image leaves it out); \
             build it from source: cargo build --release -p tracer"
        ),
        #[cfg(feature = "lab")]
        Command::Lab(args) => run_lab(&runtime, args),
        // Handled in main before privileges are checked.
        Command::Diff(args) => diff(&args),
    }
}

/// `tracer watch`: the live view and/or the metrics server while tracing,
/// then the report.
fn run_watch(
    runtime: &tokio::runtime::Runtime,
    args: WatchArgs,
    netns: Option<String>,
    tc_attach: Option<tracer::attach::TcAttachMode>,
) -> anyhow::Result<ExitCode> {
    let live =
        !args.no_live && matches!(args.output, Output::Table) && std::io::stdout().is_terminal();
    let mut opts = watch_options(&args.dns, netns)?;
    opts.tc_attach = tc_attach;
    opts.interfaces = args.interfaces;
    opts.duration = args.duration.map(seconds).transpose()?;
    opts.interval = seconds(args.interval)?;
    opts.ready_file = args.ready_file;
    opts.sources.azure_state = args.azure_state;
    opts.sources.pods_log_root = args.pods_log_root;
    let prometheus = args.prometheus;
    // The live view draws on the alternate screen; leaving it (drop)
    // restores the terminal before the report is printed.
    let screen = live.then(tracer::live::AltScreen::enter);
    let report = runtime.block_on(async move {
        // One snapshot channel feeds the live view and the metrics
        // server; the server binds first, so a bad address fails fast.
        let (tx, rx) = tokio::sync::watch::channel(None);
        let metrics = match prometheus {
            Some(addr) => Some(tracer::metrics::serve(addr, tx.subscribe()).await?),
            None => None,
        };
        if !live && metrics.is_none() {
            return watch::run(opts).await;
        }
        opts.snapshots = Some(tx);
        let view = live.then(|| {
            opts.progress = false;
            tokio::spawn(live_view(rx))
        });
        let report = watch::run(opts).await;
        if let Some(view) = view {
            view.abort();
            // Finished, not just told to: no frame after the view.
            let _ = view.await;
        }
        drop(metrics);
        report
    });
    drop(screen);
    let report = report?;
    let text = match args.output {
        Output::Table => report.to_table(),
        Output::Json => {
            let mut report = report;
            if !args.dns_names {
                report.dns.redact_names();
            }
            serde_json::to_string_pretty(&report)? + "\n"
        }
    };
    write_report(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `tracer check`: one line and an exit code (0 healthy, 1 a problem, 2
/// unknown).
fn run_check(
    runtime: &tokio::runtime::Runtime,
    args: &CheckArgs,
    netns: Option<String>,
    tc_attach: Option<tracer::attach::TcAttachMode>,
) -> anyhow::Result<ExitCode> {
    let mut opts = watch_options(&args.dns, netns)?;
    opts.tc_attach = tc_attach;
    opts.duration = Some(seconds(args.duration)?);
    opts.progress = false;
    let report = match runtime.block_on(watch::run(opts)) {
        Ok(report) => report,
        Err(err) => {
            println!(
                "UNKNOWN: tracer could not trace: {}",
                tracer::escape::line(&format!("{err:#}"))
            );
            return Ok(ExitCode::from(2));
        }
    };
    let (line, problem) = report.check_line();
    println!("{line}");
    Ok(if problem {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `tracer lab`: both datapaths built in namespaces and compared.
#[cfg(feature = "lab")]
fn run_lab(runtime: &tokio::runtime::Runtime, args: LabArgs) -> anyhow::Result<ExitCode> {
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = tracer::lab::LabOptions {
        pods: args.pods,
        duration: seconds(args.duration)?,
        scenarios: if args.scenario.is_empty() {
            tracer::lab::Scenario::ALL.to_vec()
        } else {
            args.scenario
        },
        verify: args.verify,
        repeat: args.repeat,
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
    write_report(&match args.output {
        Output::Table => report.to_table(),
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
    })?;
    if let Some(dir) = &args.plot {
        plot_lab(&report, dir, args.duration)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options shared by `watch` and `check`.
fn watch_options(dns: &DnsArgs, netns: Option<String>) -> anyhow::Result<watch::WatchOptions> {
    Ok(watch::WatchOptions {
        interval: Duration::from_secs(1),
        netns,
        probes: tracer::probes::ProbeSettings {
            dns_slow: Duration::from_secs_f64(dns.dns_slow_ms.max(0.0) / 1000.0),
            dns_pair_window: Duration::from_secs_f64(dns.dns_pair_window_ms.max(0.0) / 1000.0),
        },
        dns: tracer::dns::collector::DnsSettings {
            unanswered_after: seconds(dns.dns_timeout)? + Duration::from_secs(1),
            ..Default::default()
        },
        progress: true,
        dns_lists: Some(tracer::dns::server_list::ListSources::detect(
            dns.node_root.clone(),
            dns.cluster_dns.clone(),
        )),
        ..Default::default()
    })
}

/// Redraws the live view whenever the session publishes a snapshot.
async fn live_view(
    mut rx: tokio::sync::watch::Receiver<Option<std::sync::Arc<tracer::report::Report>>>,
) {
    let mut previous: Option<std::sync::Arc<tracer::report::Report>> = None;
    while rx.changed().await.is_ok() {
        let Some(report) = rx.borrow_and_update().clone() else {
            continue;
        };
        // Clear the screen and home the cursor, then draw. A terminal that
        // went away (EIO) ends the view, not the trace.
        let screen = format!(
            "\x1b[2J\x1b[H{}",
            tracer::live::render(&report, previous.as_deref())
        );
        let mut out = std::io::stdout().lock();
        if let Err(err) = out.write_all(screen.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!("live view stopped: writing to the terminal: {err}; tracing continues");
            return;
        }
        previous = Some(report);
    }
}

/// Writes the report to stdout. A full disk or a closed pipe is an error
/// line and exit code 1, not a panic (`print!` panics on write errors).
fn write_report(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the report to stdout")
}

#[cfg(all(feature = "lab", feature = "plot"))]
fn plot_lab(
    report: &tracer::lab::LabReport,
    dir: &std::path::Path,
    seconds: f64,
) -> anyhow::Result<()> {
    for path in tracer::lab::plot::write(report, dir, seconds)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(all(feature = "lab", not(feature = "plot")))]
fn plot_lab(_: &tracer::lab::LabReport, _: &std::path::Path, _: f64) -> anyhow::Result<()> {
    anyhow::bail!(
        "--plot: this tracer was built without the `plot` feature (cargo build -p tracer --features plot)"
    )
}

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{value} is not a positive number of seconds"))
}
