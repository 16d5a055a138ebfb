//! One QEMU boot: the kernel and its initramfs, the host's / over virtio-9p,
//! a per-run exchange directory (the command in, its exit code out), the
//! serial console on our stdout.

use std::{
    fmt, fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{cache_dir, fetch::Unpacked};

/// A KVM boot that works reaches the command in seconds; a broken one stops
/// early (QEMU then waits forever with the VM paused).
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Emulation; the only choice where /dev/kvm is absent or paravirtual
    /// (kvm_pvm: stock kernels die in early boot, "failed to set MSR
    /// 0x10a" or "KVM internal error").
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        })
    }
}

/// What a boot gave.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    /// From starting QEMU to the command starting.
    pub boot: Duration,
    pub total: Duration,
    /// The command's output ended without a newline.
    pub partial_line: bool,
    /// Files the command left in `$TRACER_VM_OUT` (name, contents).
    pub files: Vec<super::OutFile>,
}

/// KVM if a probe boot with it reaches the command, else TCG. The answer is
/// cached per host kernel; `TRACER_VM_ACCEL=kvm|tcg` overrides.
pub fn accel(kernel: &Unpacked) -> anyhow::Result<Accel> {
    match std::env::var("TRACER_VM_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        Ok(other) => bail!("TRACER_VM_ACCEL={other}: expected kvm or tcg"),
        Err(_) => {}
    }
    let kvm_opens = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_opens {
        return Ok(Accel::Tcg);
    }
    let host = host_release();
    let cached = cache_dir().join("kvm-probe");
    if let Some(answer) = fs::read_to_string(&cached).ok().and_then(|s| {
        s.strip_prefix(&format!("{host} "))
            .map(|a| a.trim() == "kvm")
    }) {
        return Ok(if answer { Accel::Kvm } else { Accel::Tcg });
    }
    eprintln!(
        "xtask vm: probing whether KVM can boot {} …",
        kernel.release
    );
    let works =
        run(kernel, "exit 0\n", Accel::Kvm, KVM_PROBE_TIMEOUT, false).is_ok_and(|o| o.code == 0);
    let accel = if works { Accel::Kvm } else { Accel::Tcg };
    eprintln!(
        "xtask vm: KVM usable: {works}; using {accel} (cached in {})",
        cached.display()
    );
    fs::write(&cached, format!("{host} {accel}\n"))?;
    Ok(accel)
}

fn host_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Boots `kernel`, runs `script` (sh) in it and powers it off. With `echo`,
/// the command's output goes to our stdout; the boot log is shown only when
/// the boot fails.
pub fn run(
    kernel: &Unpacked,
    script: &str,
    accel: Accel,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<Outcome> {
    let xchg = Exchange::create()?;
    fs::write(xchg.0.join("cmd.sh"), script)?;
    fs::create_dir_all(xchg.0.join(OUT_DIR))?;
    let markers = Markers::new();
    fs::write(xchg.0.join("token"), &markers.token)?;
    let started = Instant::now();
    let mut child = qemu(kernel, accel, &xchg.0)?
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let fatal = Arc::new(AtomicBool::new(false));
    let console = {
        let stdout = child.stdout.take().context("qemu stdout")?;
        thread::spawn(move || Console::follow(stdout, &markers, echo))
    };
    let stderr = {
        let stderr = child.stderr.take().context("qemu stderr")?;
        let fatal = Arc::clone(&fatal);
        thread::spawn(move || qemu_stderr(stderr, &fatal))
    };
    let finished = wait(&mut child, started + timeout, &fatal)?;
    let console = console.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let total = started.elapsed();
    let diagnose = || format!("{}\nqemu: {}", console.tail(), stderr.trim());
    if !finished {
        match console.started {
            Some(_) => bail!(
                "the command in the VM ({}) did not finish within {} s; QEMU killed",
                kernel.release,
                timeout.as_secs()
            ),
            None => bail!(
                "the VM ({}) did not reach the command within {} s; QEMU killed. Console:\n{}",
                kernel.release,
                timeout.as_secs(),
                diagnose()
            ),
        }
    }
    let code = fs::read_to_string(xchg.0.join("exit"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let (Some(code), Some(boot)) = (code, console.started) else {
        bail!(
            "the VM ({}) ended without the command's exit code. Console:\n{}",
            kernel.release,
            diagnose()
        );
    };
    Ok(Outcome {
        code,
        boot: boot - started,
        total,
        partial_line: console.partial_line,
        files: collect(&xchg.0.join(OUT_DIR)),
    })
}

fn qemu(kernel: &Unpacked, accel: Accel, xchg: &Path) -> anyhow::Result<Command> {
    let modules = kernel.modules.to_string_lossy();
    ensure!(
        !modules.contains(char::is_whitespace),
        "the VM cache path must not contain spaces: {modules}"
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel.args())
        .args(["-m", "2048", "-smp", "2"])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 random.trust_cpu=on tracer.kmods={modules}"
        ))
        .args(["-device", "virtio-rng-pci"])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=xchg,security_model=none,multidevs=remap",
            xchg.to_string_lossy().replace(',', ",,")
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // QEMU must not outlive us (killed xtask, no timeout left to end it).
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(cmd)
}

/// Waits for QEMU until `deadline`; kills it then, or when its stderr said
/// the VM is dead. True if it exited by itself.
fn wait(child: &mut Child, deadline: Instant, fatal: &AtomicBool) -> anyhow::Result<bool> {
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline || fatal.load(Ordering::Relaxed) {
            child.kill()?;
            child.wait()?;
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// QEMU's own messages; a KVM internal error leaves the VM paused forever.
fn qemu_stderr(stderr: impl Read, fatal: &AtomicBool) -> String {
    let mut all = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("KVM internal error") || line.contains("failed to set MSR") {
            fatal.store(true, Ordering::Relaxed);
        }
        all.push_str(&line);
        all.push('\n');
    }
    all
}

/// The lines stage2.sh prints around the command, with a per-run token.
struct Markers {
    token: String,
    start: String,
    end: String,
}

impl Markers {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let token = format!("{:x}{nanos:x}", std::process::id());
        Self {
            start: format!("TRACER_VM_START {token}"),
            end: format!("TRACER_VM_END {token}"),
            token,
        }
    }
}

/// The serial console: boot messages until the start marker (kept for
/// diagnosis), then the command's output (echoed) until the end marker.
#[derive(Debug, Default)]
struct Console {
    log: Vec<String>,
    started: Option<Instant>,
    partial_line: bool,
}

impl Console {
    fn follow(stdout: impl Read, markers: &Markers, echo: bool) -> Self {
        let mut console = Self::default();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut out = std::io::stdout();
        let mut ended = false;
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            if console.started.is_none() || ended {
                if text.contains(&markers.start) {
                    console.started = Some(Instant::now());
                } else {
                    console.log.push(text.trim_end().to_owned());
                }
            } else if let Some(at) = find(&line, markers.end.as_bytes()) {
                // The command's last line may lack a newline: the marker
                // follows it.
                if echo {
                    let _ = out.write_all(&line[..at]);
                }
                console.partial_line = at > 0;
                ended = true;
            } else if echo {
                let _ = out.write_all(&line);
                let _ = out.flush();
            }
            line.clear();
        }
        let _ = out.flush();
        console
    }

    /// The last boot messages, for an error.
    fn tail(&self) -> String {
        let skip = self.log.len().saturating_sub(40);
        self.log[skip..].join("\n")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where in the exchange share the command may leave files for the host
/// (`$TRACER_VM_OUT` in the guest).
pub const OUT_DIR: &str = "out";

/// The regular files of `dir`, by name; none if it does not exist.
fn collect(dir: &std::path::Path) -> Vec<super::OutFile> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<super::OutFile> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, fs::read(e.path()).ok()?)))
        .collect();
    files.sort();
    files
}

/// A per-run directory shared with the guest read-write; removed on drop.
struct Exchange(PathBuf);

impl Exchange {
    fn create() -> anyhow::Result<Self> {
        use std::sync::atomic::AtomicU32;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tracer-vm-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
