//! `cargo xtask bench`: overhead and capacity of tracer, as ratios against
//! no probes and against tcpdump (see `tests/src/bin/bench.rs`).
//!
//! Builds `tracer` and the bench program in release mode, then runs the
//! bench as root. It prints a Markdown table and writes `bench/results.json`
//! and `bench/RESULTS.md`. Not a timed test: it takes about six minutes on a
//! 2-core machine and keeps itself under ten (`--budget`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

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
    eprintln!("xtask bench: {} (about 6 minutes)", bench.display());
    let status = Command::new(&bench)
        .arg("--tracer")
        .arg(&tracer)
        .arg("--out")
        .arg(&out)
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
