//! `cargo xtask test --kernel …`: the kernel-matrix subset of the tests, run
//! as root in QEMU on Debian's kernels (one boot per kernel), and the
//! README's kernel × hook table built from what those runs measured.
//!
//! Program loading is slow under TCG (~20 s per object), so the matrix runs
//! a focused subset: every program loads and attaches with the mechanism the
//! kernel must give; exact counters; the real `tracer watch` with DNS
//! answers equal to tshark's and flooded copies equal to tcpdump's;
//! conntrack drops and clashes equal to the kernel's counters (exact hooks
//! where they attach); `br_flood` against tcpdump; legacy TC clean-up after
//! `kill -9`, two tracers at once, foreign filters untouched; drop reasons
//! against the kernel's counters.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::vm::{self, Kernel};

/// Test target and the libtest arguments that pick its matrix tests.
/// Tests written for this host's speed (pacing, pair windows of ms) are
/// left out: under TCG a VM runs ~20× slower; the matrix tests assert exact
/// counts and loose times.
const SUBSET: &[(&str, &[&str])] = &[
    ("kernel_matrix", &["matrix_"]),
    (
        "counter",
        &[
            "counts_exact_udp_on_bridge_mode",
            "counter_program_test_run",
        ],
    ),
    ("legacy_tc", &["legacy_"]),
    // ~45 s per kernel under TCG: every named drop reason against the
    // kernel's counters (before v5.17: the report says why there are none).
    ("drops", &["drop_reasons_"]),
    // Vanished pods' kernel entries freed (map deletes on every kernel).
    ("churn", &["vanished_pods_"]),
];

/// One run of the whole subset on one kernel may take this long under TCG.
const TIMEOUT_PER_KERNEL: Duration = Duration::from_secs(40 * 60);

/// Where the table and the per-kernel files go.
const OUT: &str = "target/kernel-matrix";

/// Runs the subset on each kernel, then on this machine's own, and writes
/// the kernel × hook table. Fails if any kernel failed.
pub fn run(kernels: &[Kernel]) -> anyhow::Result<()> {
    let binaries = test_binaries()?;
    let out = PathBuf::from(OUT);
    let _ = fs::remove_dir_all(&out);
    let mut failed = Vec::new();
    for &kernel in kernels {
        let started = Instant::now();
        let options = vm::Options {
            timeout: TIMEOUT_PER_KERNEL,
        };
        let argv = vec!["sh".into(), "-c".into(), script(&binaries)?];
        let (code, files) = vm::run_in_vm_with(kernel, &argv, &[], &options)?;
        save(&out.join(kernel.name()), &files)?;
        eprintln!(
            "xtask test: kernel {kernel}: {} in {:.0} s",
            if code == 0 { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if code != 0 {
            failed.push(kernel.name());
        }
    }
    host_row(&binaries, &out.join("host"))?;
    let table = table(&out)?;
    fs::write(out.join("KERNELS.md"), &table)?;
    println!("{table}");
    println!(
        "kernel matrix: {} passed, {} failed",
        kernels.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The test executables of the tests crate, by target name (built, not run).
fn test_binaries() -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "-p",
            "tracer-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("cargo test --no-run")?;
    if !output.status.success() {
        bail!(
            "building the tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut binaries = BTreeMap::new();
    for line in output.stdout.split(|&b| b == b'\n') {
        let Ok(message) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        if message["target"]["kind"][0] == "test" {
            binaries.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(binaries)
}

/// The guest's script: every subset entry in turn, all of them even after a
/// failure; exit 1 if any failed.
fn script(binaries: &BTreeMap<String, PathBuf>) -> anyhow::Result<String> {
    let mut script = String::from("failed=''\nuname -r\n");
    for (target, args) in SUBSET {
        let exe = binaries
            .get(*target)
            .with_context(|| format!("no test target {target}"))?;
        let args: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        writeln!(
            script,
            "echo '== {target}'\n'{}' --test-threads=1 {} || failed=\"$failed {target}\"",
            exe.display(),
            args.join(" ")
        )?;
    }
    script.push_str(
        "if [ -n \"$failed\" ]; then echo \"kernel matrix: failed:$failed\"; exit 1; fi\n",
    );
    Ok(script)
}

fn save(dir: &Path, files: &[vm::OutFile]) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, data) in files {
        fs::write(dir.join(name), data)?;
    }
    Ok(())
}

/// This machine's own kernel, for the table (its tests ran in the host suite).
fn host_row(binaries: &BTreeMap<String, PathBuf>, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    let exe = binaries
        .get("kernel_matrix")
        .context("no test target kernel_matrix")?;
    let status = Command::new(exe)
        .args([
            "matrix_hooks_attach_with_the_expected_mechanism",
            "--exact",
            "--test-threads=1",
        ])
        .env("TRACER_VM_OUT", dir)
        .status()?;
    if !status.success() {
        bail!("the hook test failed on this machine's kernel");
    }
    Ok(())
}

/// Markdown: a column per kernel, a row per hook: the mechanism that
/// attached, or what was refused.
fn table(out: &Path) -> anyhow::Result<String> {
    let mut columns: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut hooks: Vec<String> = Vec::new();
    for dir in ["5.10", "6.1", "6.12", "host"] {
        let Ok(text) = fs::read_to_string(out.join(dir).join("hooks.json")) else {
            continue;
        };
        let doc: Value = serde_json::from_str(&text)?;
        let mut cells = BTreeMap::new();
        for row in doc["rows"].as_array().into_iter().flatten() {
            let hook = row["hook"].as_str().unwrap_or("?").to_owned();
            if !hooks.contains(&hook) {
                hooks.push(hook.clone());
            }
            cells.insert(hook, cell(row));
        }
        let kernel = doc["kernel"].as_str().unwrap_or(dir).to_owned();
        columns.push((kernel, cells));
    }
    let mut md = String::from("| hook |");
    for (kernel, _) in &columns {
        write!(md, " {kernel} |")?;
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    md.push('\n');
    for hook in &hooks {
        write!(md, "| `{hook}` |")?;
        for (_, cells) in &columns {
            write!(md, " {} |", cells.get(hook).map_or("—", String::as_str))?;
        }
        md.push('\n');
    }
    Ok(md)
}

fn cell(row: &Value) -> String {
    let refused = row["refused"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(short_refusal)
        .collect::<Vec<_>>()
        .join(", ");
    match (row["mechanism"].as_str(), row["btf_object"].as_str()) {
        (Some(m), Some(obj)) => format!("{m} ({obj})"),
        (Some(m), None) => m.to_owned(),
        (None, _) => format!("fallback (refused: {refused})"),
    }
}

/// "fexit: BPF_PROG_LOAD: Operation not permitted …" → "fexit EPERM".
fn short_refusal(refusal: &str) -> String {
    let (kind, why) = refusal.split_once(": ").unwrap_or((refusal, ""));
    let why = if why.contains("Operation not permitted") {
        "EPERM".to_owned()
    } else if why.contains("kprobe/type") {
        "no kprobe PMU".to_owned()
    } else {
        why.chars().take(40).collect()
    };
    format!("{kind} {why}")
}
