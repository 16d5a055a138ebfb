//! `cargo xtask bench`: overhead and capacity of tracer, as ratios against
//! no probes and against tcpdump (see `tests/src/bin/bench/`, one file per phase).
//!
//! Builds `tracer` and the bench program in release mode, then runs the
//! bench as root. It prints a Markdown table and writes `bench/results.json`
//! and `bench/RESULTS.md`. Not a timed test: it takes about eight minutes on
//! a 2-core machine and keeps build and run under ten (`--budget`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Build and bench together, with a margin for writing the results.
const TOTAL: Duration = Duration::from_secs(585);
/// Below this the bench could not measure every phase once.
const MIN_BUDGET: Duration = Duration::from_secs(240);

pub fn run(args: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask bench needs root: it builds network namespaces, loads eBPF \
             programs and runs tcpdump (sudo -E cargo xtask bench)"
        );
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let start = Instant::now();
    for args in [
        &["build", "--release", "-p", "tracer"][..],
        &["build", "--release", "-p", "tracer-tests", "--bin", "bench"],
    ] {
        eprintln!("xtask bench: cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(&root)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("cargo {} failed: {status}", args.join(" "));
        }
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bench = target.join("release/bench");
    let tracer = target.join("release/tracer");
    let out = root.join("bench");
    // The whole task stays under ten minutes: the bench gets what the build
    // left (it runs fewer runs rather than overrun). `--budget` overrides.
    let budget = TOTAL.saturating_sub(start.elapsed()).max(MIN_BUDGET);
    eprintln!(
        "xtask bench: {} (about 8 minutes; budget {} s)",
        bench.display(),
        budget.as_secs()
    );
    let status = Command::new(&bench)
        .arg("--tracer")
        .arg(&tracer)
        .arg("--out")
        .arg(&out)
        .arg("--budget")
        .arg(budget.as_secs().to_string())
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {}", bench.display()))?;
    if !status.success() {
        bail!(
            "bench failed ({status}); whatever it measured is in {}",
            shown(&out.join("RESULTS.md"), &root)
        );
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn shown(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
