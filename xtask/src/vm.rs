//! `cargo xtask vm fetch|run`: run a command as root on the Debian kernels
//! our users have (5.10 bullseye, 6.1 bookworm, 6.12 bookworm-backports),
//! booted in QEMU with the host's root filesystem (read-only 9p under a tmpfs
//! overlay: the guest may write anywhere, the host sees none of it).
//!
//! [`run_in_vm`] is the library entry point for other tasks (e.g. a kernel
//! matrix in `xtask test`).

mod boot;
mod cpio;
mod fetch;

use std::{fmt, io::IsTerminal as _, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context as _, bail};
use clap::Subcommand;

/// The default for `--timeout` and [`Options::timeout`]; `TRACER_VM_TIMEOUT`
/// (seconds) overrides it for [`run_in_vm`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// Host environment variables passed into the guest as they are, with every
/// `TRACER_*` one.
const PASSED_ENV: &[&str] = &[
    "CI",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_TEST_THREADS",
    "RUST_TEST_NOCAPTURE",
    "NO_COLOR",
    "TERM",
];

/// Where the exchange share is mounted in the guest (xtask/src/vm/init.sh).
const GUEST_XCHG: &str = "/run/tracer-vm";

const GUEST_PATH: &str =
    "/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A Debian kernel series we can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// bullseye (Debian 11): BTF, no ring-buffer-era extras such as TCX.
    V5_10,
    /// bookworm (Debian 12).
    V6_1,
    /// bookworm-backports: TCX, module BTF for nf_conntrack and bridge.
    V6_12,
}

impl Kernel {
    pub const ALL: [Self; 3] = [Self::V5_10, Self::V6_1, Self::V6_12];

    pub fn name(self) -> &'static str {
        match self {
            Self::V5_10 => "5.10",
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// The suite whose `linux-image-amd64` is this series. The generic
    /// flavour: `-cloud-amd64` has no 9p.
    fn suite(self) -> &'static str {
        match self {
            Self::V5_10 => "bullseye",
            Self::V6_1 => "bookworm",
            Self::V6_12 => "bookworm-backports",
        }
    }

    /// `5.10`, `6.1,6.12` or `all`.
    pub fn parse_list(list: &str) -> anyhow::Result<Vec<Self>> {
        if list == "all" {
            return Ok(Self::ALL.to_vec());
        }
        list.split(',').map(|k| k.trim().parse()).collect()
    }
}

impl FromStr for Kernel {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| format!("unknown kernel {s:?} (known: 5.10, 6.1, 6.12, all)"))
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Subcommand)]
pub enum VmTask {
    /// Download and unpack the kernels and build their initramfs (idempotent;
    /// picks up a newer build of a series).
    Fetch {
        /// 5.10, 6.1, 6.12, a comma-separated list, or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
    /// Boot a kernel and run CMD in it as root, in the current directory;
    /// exits with CMD's exit code.
    Run {
        /// 5.10, 6.1, 6.12, a comma-separated list, or all (one VM each, in turn).
        #[arg(long)]
        kernel: String,
        /// Seconds before QEMU is killed and the run fails.
        #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
}

pub fn run(task: VmTask) -> anyhow::Result<()> {
    match task {
        VmTask::Fetch { kernel } => {
            for kernel in Kernel::parse_list(&kernel)? {
                let unpacked = fetch::fetch(kernel, true)?;
                eprintln!("xtask vm: {kernel}: {}", unpacked.release);
            }
            Ok(())
        }
        VmTask::Run {
            kernel,
            timeout,
            cmd,
        } => {
            let options = Options {
                timeout: Duration::from_secs(timeout),
            };
            let mut last_failure = 0;
            for kernel in Kernel::parse_list(&kernel)? {
                let (code, _) = run_in_vm_with(kernel, &cmd, &[], &options)?;
                if code != 0 {
                    last_failure = code;
                }
            }
            if last_failure != 0 {
                std::process::exit(last_failure);
            }
            Ok(())
        }
    }
}

/// A file the command left in `$TRACER_VM_OUT`: name, contents.
pub type OutFile = (String, Vec<u8>);

/// How a command runs in the VM.
#[derive(Debug, Clone)]
pub struct Options {
    /// QEMU is killed after this long and the run fails.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let timeout = std::env::var("TRACER_VM_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Self { timeout }
    }
}

/// Boots `kernel` (fetching it first if it is not cached) and runs `argv` as
/// root in it, in the current directory, with `env` added to the passed-on
/// host variables. The command's output goes to our stdout. Returns its exit
/// code and the files the command left in `$TRACER_VM_OUT` (name, contents);
/// an error means the VM itself failed (no boot, timeout).
pub fn run_in_vm_with(
    kernel: Kernel,
    argv: &[String],
    env: &[(String, String)],
    options: &Options,
) -> anyhow::Result<(i32, Vec<OutFile>)> {
    if argv.is_empty() {
        bail!("no command to run in the VM");
    }
    let unpacked = fetch::ensure(kernel)?;
    let accel = boot::accel(&unpacked)?;
    let cwd = std::env::current_dir().context("current directory")?;
    let script = command_script(&cwd, argv, env);
    let outcome = boot::run(&unpacked, &script, accel, options.timeout, true)?;
    if outcome.partial_line {
        eprintln!();
    }
    eprintln!(
        "xtask vm: {kernel} ({}, {accel}): booted in {:.1} s, total {:.1} s, exit code {}",
        unpacked.release,
        outcome.boot.as_secs_f64(),
        outcome.total.as_secs_f64(),
        outcome.code
    );
    Ok((outcome.code, outcome.files))
}

/// The shell script the guest runs: cd, a clean environment, exec. The
/// host's `env`, not busybox's: Debian's busybox prefers its own applets to
/// what PATH finds (its `ip` has no `netns`).
fn command_script(cwd: &std::path::Path, argv: &[String], extra: &[(String, String)]) -> String {
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        ("PATH".into(), GUEST_PATH.into()),
        (
            "TRACER_VM_OUT".into(),
            format!("{GUEST_XCHG}/{}", boot::OUT_DIR),
        ),
    ];
    for (key, value) in std::env::vars() {
        if PASSED_ENV.contains(&key.as_str()) || key.starts_with("TRACER_") {
            env.push((key, value));
        }
    }
    // The guest's stdout is its serial console, a tty: tell colouring
    // programs (libtest, cargo) what ours is.
    if !std::io::stdout().is_terminal() {
        env.retain(|(key, _)| key != "TERM");
        env.push(("TERM".into(), "dumb".into()));
    }
    env.extend(extra.iter().cloned());
    let mut script = format!(
        "cd {} || exit 125\nexec /usr/bin/env -i",
        quote(&cwd.to_string_lossy())
    );
    for (key, value) in env {
        script.push(' ');
        script.push_str(&quote(&format!("{key}={value}")));
    }
    for arg in argv {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    script.push('\n');
    script
}

/// POSIX shell single quoting.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Where kernels, their initramfs and the private apt state live; outlives
/// clones of the repository. `TRACER_VM_CACHE` overrides.
fn cache_dir() -> PathBuf {
    std::env::var_os("TRACER_VM_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/tracer-vm"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists() {
        assert_eq!(Kernel::parse_list("all").unwrap(), Kernel::ALL);
        assert_eq!(
            Kernel::parse_list("6.1,6.12").unwrap(),
            [Kernel::V6_1, Kernel::V6_12]
        );
        assert!(Kernel::parse_list("6.2").is_err());
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
