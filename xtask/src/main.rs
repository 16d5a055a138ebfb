//! Project automation: `cargo xtask setup|test|dist|lab|bench|soak|vm`.
//!
//! Every command runs `setup` first, so a fresh machine needs nothing but
//! this repository, cargo and root.

mod bench;
mod dist;
mod matrix;
mod setup;
mod soak;
mod vm;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "tracer's build, test and lab tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing: LLVM 22, nightly rust-src, bpf-linker, test tools.
    Setup,
    /// fmt, clippy (userspace and eBPF target), every test (privileged ones
    /// included), then the kernel matrix: a subset in QEMU on Debian's kernels.
    Test {
        /// Kernels for the matrix: `all` (5.10, 6.1, 6.12), a list such as
        /// `5.10,6.1`, or `none`.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only the kernel matrix: no fmt, clippy or host suite.
        #[arg(long)]
        matrix_only: bool,
    },
    /// Static (musl) tracer with its probes embedded in target/dist/, checked; see deploy/.
    Dist,
    /// Build tracer and run `tracer lab` (both datapaths side by side) as root.
    Lab {
        /// Arguments passed to `tracer lab`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Overhead and capacity as ratios (no probes, tcpdump); writes bench/. Root.
    Bench {
        /// Arguments passed to the bench program (--runs N, --only PHASES, --budget S).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A long run under DNS load, pod churn, floods and slow /metrics
    /// clients: RSS/CPU slopes, losses, fds, scrape latency; writes
    /// bench/SOAK.md. Root; not part of `test`.
    Soak {
        /// How long: `1h`, `10m`, `600s`.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// DNS queries per second (dnsperf).
        #[arg(long, default_value_t = 10_000)]
        qps: u64,
    },
    /// Debian kernels 5.10, 6.1, 6.12 in QEMU: fetch them, run a command in one.
    #[command(subcommand)]
    Vm(vm::VmTask),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::cargo_bin_on_path();
    setup::run()?;
    match cli.command {
        Task::Setup => Ok(()),
        Task::Test {
            kernel,
            matrix_only,
        } => test(&kernel, matrix_only),
        Task::Dist => dist::run(),
        Task::Lab { args } => lab(&args),
        Task::Bench { args } => bench::run(&args),
        Task::Soak { duration, qps } => soak::run(&duration, qps),
        Task::Vm(task) => vm::run(task),
    }
}

fn test(kernels: &str, matrix_only: bool) -> anyhow::Result<()> {
    let kernels = if kernels == "none" {
        Vec::new()
    } else {
        vm::Kernel::parse_list(kernels)?
    };
    if !matrix_only {
        host_suite()?;
    } else {
        cargo(&["build", "-p", "tracer"])?;
    }
    if kernels.is_empty() {
        return Ok(());
    }
    matrix::run(&kernels)
}

fn host_suite() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])
        .context("cargo fmt --check (run `cargo fmt --all`)")?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"]).context("clippy (userspace)")?;
    // The node binary's build (`cargo xtask dist`): no lab, no plotting.
    cargo(&[
        "clippy",
        "-p",
        "tracer",
        "--all-targets",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ])
    .context("clippy (node build, no default features)")?;
    clippy_ebpf().context("clippy (eBPF target)")?;
    // The integration tests run the real binary, and tests/tests/podman.rs
    // builds the image from the shipped one (target/dist).
    cargo(&["build", "-p", "tracer"])?;
    dist::run().context("cargo xtask dist (the image's build context)")?;
    cargo(&["test", "--no-fail-fast"])
}

/// Clippy on the programs as the kernel gets them: bpfel-unknown-none, nightly.
fn clippy_ebpf() -> anyhow::Result<()> {
    let status = Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "-p",
            "tracer-ebpf",
            "--bins",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // aya-ebpf-bindings picks its per-arch bindings by this cfg, which
        // aya-build passes the same way when it builds the programs.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        )
        .status()?;
    if !status.success() {
        bail!("eBPF clippy failed: {status}");
    }
    Ok(())
}

fn lab(args: &[String]) -> anyhow::Result<()> {
    cargo(&["build", "--release", "-p", "tracer"])?;
    let status = Command::new("target/release/tracer")
        .arg("lab")
        .args(args)
        .status()
        .context("running target/release/tracer")?;
    if !status.success() {
        bail!("tracer lab failed: {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo).args(args).status()?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
