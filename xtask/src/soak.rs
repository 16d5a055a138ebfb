//! `cargo xtask soak --duration 1h`: tracer (release build) for a long run
//! under 10 k q/s of DNS, pod churn, recurring floods and 50 slow
//! `/metrics` clients; `tests/tests/soak.rs` does the work and the
//! assertions, this task sets its length and rate and writes
//! `bench/SOAK.md`. Not part of CI (the suite runs the same test for 45 s
//! at 2 k q/s on the debug build).

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, bail};

pub fn run(duration: &str, qps: u64) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask soak needs root: it builds network namespaces and loads eBPF programs");
    }
    let secs = parse_duration(duration)?.as_secs();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "tracer"])
        .current_dir(&root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build --release -p tracer failed: {status}");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let report = root.join("bench/SOAK.md");
    eprintln!("xtask soak: {secs} s at {qps} q/s; results in bench/SOAK.md");
    let status = Command::new(&cargo)
        .args([
            "test",
            "-p",
            "tracer-tests",
            "--test",
            "soak",
            "--",
            "--nocapture",
        ])
        .env("TRACER_BIN", target.join("release/tracer"))
        .env("TRACER_SOAK_SECS", secs.to_string())
        .env("TRACER_SOAK_QPS", qps.to_string())
        .env("TRACER_SOAK_REPORT", &report)
        .current_dir(&root)
        .status()
        .context("running the soak test")?;
    if !status.success() {
        bail!("soak failed ({status}); the figures it measured are in bench/SOAK.md");
    }
    Ok(())
}

/// `90`, `90s`, `10m`, `1h`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .with_context(|| format!("{text}: a duration such as 300s, 10m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => bail!("{text}: unknown unit {other:?} (s, m or h)"),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        let d = |t| super::parse_duration(t).map(|d| d.as_secs()).ok();
        assert_eq!(d("1h"), Some(3600));
        assert_eq!(d("10m"), Some(600));
        assert_eq!(d("45"), Some(45));
        assert_eq!(d("45s"), Some(45));
        assert_eq!(d("1d"), None);
        assert_eq!(d("m"), None);
    }
}
