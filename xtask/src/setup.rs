//! `cargo xtask setup`: makes a fresh Debian/Ubuntu machine able to build
//! and test tracer. Idempotent: everything is checked before it is installed.
//!
//! The eBPF toolchain is the verified recipe: LLVM 22 dev packages, `rust-src`
//! for nightly (for `-Z build-std=core`), and bpf-linker built against LLVM 22
//! (the LLVM major of our nightly rustc).

mod cgroup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// bpf-linker version we build; pinned so a new release cannot change CI.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Debian packages: the first four build bpf-linker; then the real peers and
/// ground truth the tests and the lab run; then five for `xtask vm` (QEMU,
/// the archive keys its private apt lists are checked with, xz for Debian's
/// compressed modules, and kmod: the guest runs the host's `modprobe`, and
/// `depmod` indexes the extracted kernels); the last three run the image
/// under a real container runtime (tests/tests/podman.rs): podman with crun,
/// and catatonit, from which podman builds the pod's infra ("pause") image
/// locally (installed without recommends, it would be missing).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "util-linux",
    "bpftool",
    "tcpdump",
    "tshark",
    "dnsmasq-base",
    "dnsperf",
    "bind9-dnsutils",
    "musl-tools",
    "nftables",
    "iptables",
    "ebtables",
    "conntrack",
    "prometheus",
    "qemu-system-x86",
    "debian-archive-keyring",
    "xz-utils",
    "zstd",
    "kmod",
    "podman",
    "crun",
    "catatonit",
];

pub fn run() -> anyhow::Result<()> {
    let mut todo = Vec::new();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !deb_installed(pkg))
        .collect();
    if !missing.is_empty() {
        todo.push(Step::Apt(missing));
    }
    if !has_rust_src() {
        todo.push(Step::RustSrc);
    }
    if bpf_linker().is_none() {
        todo.push(Step::BpfLinker);
    }
    let shared = cgroup::v2_controllers_on_hybrid();
    if !shared.is_empty() {
        todo.push(Step::CgroupV1(shared));
    }
    if todo.is_empty() {
        return Ok(());
    }
    let can_install = nix_is_root() && which("apt-get").is_some();
    if !can_install {
        let commands: Vec<String> = todo.iter().map(Step::command).collect();
        bail!(
            "missing build/test dependencies; as root on Debian/Ubuntu run:\n  {}",
            commands.join("\n  ")
        );
    }
    for step in &todo {
        eprintln!("xtask setup: {}", step.command());
        step.run()?;
    }
    Ok(())
}

enum Step<'a> {
    Apt(Vec<&'a str>),
    RustSrc,
    BpfLinker,
    CgroupV1(Vec<String>),
}

impl Step<'_> {
    fn command(&self) -> String {
        match self {
            Self::Apt(pkgs) => format!(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
                pkgs.join(" ")
            ),
            Self::RustSrc => {
                "rustup toolchain install nightly --profile minimal --component rust-src \
                              (or: rustup component add rust-src --toolchain nightly)"
                    .into()
            }
            Self::BpfLinker => format!(
                "PATH={LLVM_BIN}:$PATH cargo install bpf-linker --version {BPF_LINKER_VERSION} \
                 --locked --no-default-features --features llvm-22"
            ),
            Self::CgroupV1(controllers) => controllers
                .iter()
                .map(|c| cgroup::mount_command(c))
                .collect::<Vec<_>>()
                .join(" && "),
        }
    }

    fn run(&self) -> anyhow::Result<()> {
        match self {
            Self::Apt(pkgs) => {
                sh(Command::new("apt-get").args(["update", "-qq"]))?;
                sh(Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends"])
                    .args(pkgs)
                    .env("DEBIAN_FRONTEND", "noninteractive"))
            }
            Self::RustSrc => {
                let has_nightly = Command::new("rustup")
                    .args(["run", "nightly", "rustc", "--version"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if has_nightly {
                    sh(Command::new("rustup").args([
                        "component",
                        "add",
                        "rust-src",
                        "--toolchain",
                        "nightly",
                    ]))
                } else {
                    sh(Command::new("rustup").args([
                        "toolchain",
                        "install",
                        "nightly",
                        "--profile",
                        "minimal",
                        "--component",
                        "rust-src",
                    ]))
                }
            }
            Self::BpfLinker => {
                let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
                sh(Command::new("cargo")
                    .args([
                        "install",
                        "bpf-linker",
                        "--version",
                        BPF_LINKER_VERSION,
                        "--locked",
                    ])
                    .args(["--no-default-features", "--features", "llvm-22"])
                    .env("PATH", path))
            }
            Self::CgroupV1(controllers) => controllers.iter().try_for_each(|c| cgroup::mount_v1(c)),
        }
    }
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
        })
}

/// bpf-linker on PATH or in cargo's bin directory (not always on PATH).
fn bpf_linker() -> Option<PathBuf> {
    which("bpf-linker").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let path = home.join("bin/bpf-linker");
        path.exists().then_some(path)
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Puts cargo's bin directory (where bpf-linker is installed) on PATH for
/// every command xtask starts; a fresh shell may not have it there.
pub fn cargo_bin_on_path() {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    else {
        return;
    };
    let bin = home.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}
