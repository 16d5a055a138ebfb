//! Debian's kernels for `xtask vm`: resolved, downloaded and unpacked with a
//! private apt (own source list, state and cache under the VM cache; the
//! machine's apt configuration is never touched), indexed with `depmod`, and
//! given an initramfs. Everything lands in the cache, which outlives clones
//! of the repository, so only the first run on a machine downloads.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use super::{Kernel, cache_dir, cpio::Archive};

const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// busybox is the initramfs's userland; the static build needs no libraries.
const BUSYBOX_SUITE: &str = "bookworm";

/// Modules the initramfs loads (with their dependencies) to reach the host's
/// root: virtio PCI transport, 9p over virtio, overlayfs; virtio-rng so the
/// guest's entropy pool is ready at once. A module built into the kernel
/// (not in modules.dep) is skipped.
const INITRAMFS_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio-rng"];

/// One unpacked kernel in the cache.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    /// `lib/modules/<release>` of this kernel, on the host.
    pub modules: PathBuf,
}

impl Unpacked {
    fn at(dir: &Path, release: &str) -> Self {
        Self {
            release: release.to_owned(),
            vmlinuz: dir.join(format!("boot/vmlinuz-{release}")),
            initramfs: dir.join(format!("initramfs-{:016x}.cpio", initramfs_id())),
            modules: dir.join(format!("lib/modules/{release}")),
        }
    }
}

/// The cached kernel of `kernel`'s series, fetched first if there is none.
pub fn ensure(kernel: Kernel) -> anyhow::Result<Unpacked> {
    fetch(kernel, false)
}

/// Resolves the series' current kernel; with `refresh`, asks the archive even
/// if one is cached (and falls back to the cached one when offline). A
/// release the archive replaced is removed from the cache.
pub fn fetch(kernel: Kernel, refresh: bool) -> anyhow::Result<Unpacked> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = Lock::take(&cache.join("lock"))?;
    let pointer = cache.join(format!("{}.release", kernel.name()));
    let cached = fs::read_to_string(&pointer)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|release| kernel_dir(&cache, release).join(".complete").exists());
    let apt = Apt::new(&cache, kernel.suite())?;
    let release = match &cached {
        Some(release) if !refresh => release.clone(),
        _ => resolve(&apt, cached.as_deref())?,
    };
    let dir = kernel_dir(&cache, &release);
    if !dir.join(".complete").exists() {
        let started = Instant::now();
        unpack(&apt, &release, &dir)?;
        eprintln!(
            "xtask vm: {} ({release}) fetched and unpacked in {:.1} s",
            kernel.name(),
            started.elapsed().as_secs_f64()
        );
    }
    fs::write(&pointer, format!("{release}\n"))?;
    let unpacked = Unpacked::at(&dir, &release);
    if !unpacked.initramfs.exists() {
        build_initramfs(&unpacked, &busybox(&cache)?)?;
    }
    if let Some(old) = cached.filter(|old| *old != release) {
        eprintln!("xtask vm: removing the replaced {old}");
        fs::remove_dir_all(kernel_dir(&cache, &old))?;
    }
    Ok(unpacked)
}

fn kernel_dir(cache: &Path, release: &str) -> PathBuf {
    cache.join("kernels").join(release)
}

/// The release the suite's `linux-image-amd64` points to now (updating the
/// private lists, which the download then uses); the cached one if the
/// archive cannot be reached.
fn resolve(apt: &Apt, cached: Option<&str>) -> anyhow::Result<String> {
    match apt.update().and_then(|()| apt.image_package()) {
        Ok(package) => release_of(&package),
        Err(err) => match cached {
            Some(release) => {
                eprintln!("xtask vm: {err:#}; using the cached {release}");
                Ok(release.to_owned())
            }
            None => Err(err),
        },
    }
}

/// `linux-image-6.1.0-28-amd64` -> `6.1.0-28-amd64` (`uname -r` in the guest).
fn release_of(package: &str) -> anyhow::Result<String> {
    package
        .strip_prefix("linux-image-")
        .filter(|r| r.ends_with("-amd64") && !r.ends_with("-cloud-amd64"))
        .map(str::to_owned)
        .with_context(|| format!("unexpected kernel package name {package}"))
}

/// Downloads, extracts and indexes the kernel, in a scratch directory
/// renamed into place when complete.
fn unpack(apt: &Apt, release: &str, dir: &Path) -> anyhow::Result<()> {
    let scratch = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let deb = apt.download(&format!("linux-image-{release}"))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch))?;
    // Later packages install modules under usr/lib; depmod -b wants lib/.
    if !scratch.join("lib").exists() && scratch.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", scratch.join("lib"))?;
    }
    let unpacked = Unpacked::at(&scratch, release);
    ensure!(
        unpacked.vmlinuz.exists() && unpacked.modules.is_dir(),
        "{} has no boot/vmlinuz-{release} or lib/modules/{release}",
        deb.display()
    );
    run(Command::new("depmod").arg("-b").arg(&scratch).arg(release))?;
    fs::write(scratch.join(".complete"), "")?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&scratch, dir)?;
    let _ = fs::remove_file(&deb);
    Ok(())
}

/// Identifies what goes into an initramfs besides the kernel's modules, so
/// a cached one is rebuilt when the scripts or the module list change
/// (FNV-1a: stable across Rust releases, unlike `DefaultHasher`).
fn initramfs_id() -> u64 {
    let inputs = [
        include_str!("init.sh"),
        include_str!("stage2.sh"),
        &INITRAMFS_MODULES.join(" "),
    ];
    inputs
        .iter()
        .flat_map(|s| s.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Writes the kernel's initramfs. Older ones stay: another checkout of the
/// repository (other scripts, so another name) may be booting with them.
fn build_initramfs(kernel: &Unpacked, busybox: &Path) -> anyhow::Result<()> {
    let mut archive = Archive::new(Vec::new());
    for dir in ["bin", "dev", "proc", "sys", "modules"] {
        archive.dir(dir)?;
    }
    archive.char_dev("dev/console", 5, 1)?;
    archive.file("bin/busybox", 0o755, &fs::read(busybox)?)?;
    archive.file("init", 0o755, include_bytes!("init.sh"))?;
    archive.file("stage2", 0o644, include_bytes!("stage2.sh"))?;
    let mut order = String::new();
    for path in module_load_order(&kernel.modules)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .with_context(|| format!("module path {}", path.display()))?
            .to_owned();
        let bytes = decompressed(&kernel.modules.join(&path))?;
        archive.file(&format!("modules/{name}.ko"), 0o644, &bytes)?;
        order.push_str(&format!("{name}.ko\n"));
    }
    archive.file("modules/order", 0o644, order.as_bytes())?;
    // Renamed into place: a concurrent `vm run` never sees half a file.
    let partial = kernel.initramfs.with_extension("partial");
    fs::write(&partial, archive.finish()?)?;
    fs::rename(&partial, &kernel.initramfs)?;
    Ok(())
}

/// INITRAMFS_MODULES and their dependencies from modules.dep, each after
/// everything it needs (paths relative to lib/modules/<release>).
fn module_load_order(modules: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dep = fs::read_to_string(modules.join("modules.dep"))?;
    let deps: Vec<(&str, Vec<&str>)> = dep
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, needs)| (module, needs.split_whitespace().collect()))
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for wanted in INITRAMFS_MODULES {
        if let Some((path, _)) = deps.iter().find(|(p, _)| module_name(p) == *wanted) {
            visit(path, &deps, &mut seen, &mut order);
        }
    }
    Ok(order.into_iter().map(PathBuf::from).collect())
}

fn visit<'a>(
    path: &'a str,
    deps: &[(&'a str, Vec<&'a str>)],
    seen: &mut HashSet<&'a str>,
    order: &mut Vec<&'a str>,
) {
    if !seen.insert(path) {
        return;
    }
    if let Some((_, needs)) = deps.iter().find(|(p, _)| *p == path) {
        for need in needs {
            visit(need, deps, seen, order);
        }
    }
    order.push(path);
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` -> `9pnet_virtio`; modprobe treats `-`
/// and `_` alike, so do we.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

fn decompressed(path: &Path) -> anyhow::Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return Ok(fs::read(path)?),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}"))?;
    ensure!(out.status.success(), "{tool} -dc {} failed", path.display());
    Ok(out.stdout)
}

/// busybox from Debian's busybox-static, cached once for every kernel.
fn busybox(cache: &Path) -> anyhow::Result<PathBuf> {
    let path = cache.join("busybox/busybox");
    if path.exists() {
        return Ok(path);
    }
    let apt = Apt::new(cache, BUSYBOX_SUITE)?;
    apt.update()?;
    let deb = apt.download("busybox-static")?;
    let scratch = cache.join("busybox/partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch))?;
    fs::rename(scratch.join("bin/busybox"), &path)?;
    fs::remove_dir_all(&scratch)?;
    let _ = fs::remove_file(&deb);
    Ok(path)
}

/// apt-get/apt-cache with a private source list (one suite), state and
/// cache: nothing under /etc/apt or /var/lib/apt is read for sources or
/// written.
struct Apt {
    dir: PathBuf,
    suite: &'static str,
}

impl Apt {
    fn new(cache: &Path, suite: &'static str) -> anyhow::Result<Self> {
        let dir = cache.join("apt").join(suite);
        for sub in ["state/lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        ensure!(
            Path::new(KEYRING).exists(),
            "{KEYRING} is missing (apt-get install debian-archive-keyring)"
        );
        // Only the Packages index: the host's apt.conf.d may add
        // translations or AppStream targets we do not need.
        let sources = format!(
            "Types: deb\nURIs: {MIRROR}\nSuites: {suite}\nComponents: main\n\
             Architectures: amd64\nTargets: Packages\nLanguages: none\nSigned-By: {KEYRING}\n"
        );
        fs::write(dir.join("debian.sources"), sources)?;
        fs::write(dir.join("status"), "")?;
        Ok(Self { dir, suite })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/debian.sources"),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            "-oDir::Etc::Preferences=/dev/null".into(),
            "-oDir::Etc::PreferencesParts=/dev/null".into(),
            format!("-oDir::State={d}/state"),
            format!("-oDir::State::status={d}/status"),
            format!("-oDir::Cache={d}/cache"),
            // The _apt sandbox user may not write to our cache.
            "-oAPT::Sandbox::User=root".into(),
            "-oDebug::NoLocking=1".into(),
            "-qq".into(),
        ]
    }

    fn update(&self) -> anyhow::Result<()> {
        run(Command::new("apt-get").args(self.options()).arg("update"))
            .with_context(|| format!("apt-get update for {}", self.suite))
    }

    /// The exact image package the suite's `linux-image-amd64` depends on.
    fn image_package(&self) -> anyhow::Result<String> {
        let out = Command::new("apt-cache")
            .args(self.options())
            .args(["depends", "linux-image-amd64"])
            .output()
            .context("running apt-cache")?;
        ensure!(
            out.status.success(),
            "apt-cache depends linux-image-amd64 ({}): {}",
            self.suite,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_owned)
            .with_context(|| format!("no linux-image dependency in {}: {text}", self.suite))
    }

    fn download(&self, package: &str) -> anyhow::Result<PathBuf> {
        let debs = self.dir.join("debs");
        let started = Instant::now();
        run(Command::new("apt-get")
            .args(self.options())
            .args(["download", package])
            .current_dir(&debs))
        .with_context(|| format!("apt-get download {package} ({})", self.suite))?;
        let prefix = format!("{package}_");
        let deb = fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        eprintln!(
            "xtask vm: downloaded {} in {:.1} s",
            package,
            started.elapsed().as_secs_f64()
        );
        Ok(deb)
    }
}

/// An exclusive flock, so two tasks do not unpack the same kernel at once.
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn take(path: &Path) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let file = fs::File::create(path)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { _file: file })
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}
