//! `cargo xtask dist`: the shipped artifact. A static (musl) `tracer`, its
//! eBPF object embedded by `tracer/build.rs`, alone in `target/dist/` — the
//! build context of `deploy/Containerfile`, and what `scp` copies to a node.
//!
//! Then it checks what it promises, so the test suite need not rebuild it:
//! the ELF asks for no program interpreter and no shared library, and
//! `tracer --version` runs from an empty directory with an empty
//! environment, and (as root) inside an empty chroot, which is all a
//! `FROM scratch` image gives it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

/// The version every workspace crate shares, `tracer`'s included.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let target = musl_target();
    ensure_target(&target)?;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // No default features: the node binary leaves out `plot` (charts for
    // `tracer lab --plot`, a lab-machine feature).
    let args = [
        "build",
        "--release",
        "--target",
        &target,
        "-p",
        "tracer",
        "--no-default-features",
    ];
    eprintln!("xtask dist: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(&root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!(
            "cargo {} failed: {status} (the musl target links with the system `cc` \
             as linker driver: apt-get install gcc; a C dependency would also need \
             musl-gcc: apt-get install musl-tools)",
            args.join(" ")
        );
    }

    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let built = target_dir.join(&target).join("release/tracer");
    // The image's build context: the binary and nothing else.
    let dist = target_dir.join("dist");
    let (out, stripped) = build_context(&built, &dist)?;
    let expected = format!("tracer {VERSION}");
    let chroot = check_binary(&out, &expected)?;
    report(&root, &out, &dist, &target, stripped, chroot.is_some())
}

/// `dist/` with the binary alone (stripped when `strip` is there): its
/// path, and whether it was stripped.
fn build_context(built: &Path, dist: &Path) -> anyhow::Result<(PathBuf, bool)> {
    if dist.exists() {
        fs::remove_dir_all(dist).with_context(|| format!("removing {}", dist.display()))?;
    }
    fs::create_dir_all(dist).with_context(|| format!("creating {}", dist.display()))?;
    let out = dist.join("tracer");
    let stripped = strip(built, &out)?;
    if !stripped {
        fs::copy(built, &out).with_context(|| format!("copying {}", built.display()))?;
    }
    Ok((out, stripped))
}

/// Static, and `--version` right from an empty directory and (as root) an
/// empty chroot; the chroot's line when that check ran.
fn check_binary(out: &Path, expected: &str) -> anyhow::Result<Option<String>> {
    let elf = fs::read(out).with_context(|| format!("reading {}", out.display()))?;
    check_static(&elf).with_context(|| format!("{} is not static", out.display()))?;
    describe(out);
    let from_empty_dir = version_in_empty_dir(out)?;
    ensure!(
        from_empty_dir == expected,
        "`tracer --version` from an empty directory printed {from_empty_dir:?}, not {expected:?}"
    );
    let chroot = version_in_empty_chroot(out)?;
    if let Some(line) = &chroot {
        ensure!(
            *line == expected,
            "`tracer --version` in an empty chroot printed {line:?}, not {expected:?}"
        );
    }
    Ok(chroot)
}

/// What was built, where, and how to build the image from it.
fn report(
    root: &Path,
    out: &Path,
    dist: &Path,
    target: &str,
    stripped: bool,
    chroot_checked: bool,
) -> anyhow::Result<()> {
    let expected = format!("tracer {VERSION}");
    let size = fs::metadata(out)?.len();
    let shown = out.strip_prefix(root).unwrap_or(out).display().to_string();
    eprintln!(
        "xtask dist: {shown}: {:.1} MiB ({size} bytes{}), {target}, static: no ELF \
         interpreter, no shared library",
        size as f64 / (1024.0 * 1024.0),
        if stripped { ", symbols stripped" } else { "" },
    );
    eprintln!(
        "xtask dist: `tracer --version` = {expected:?} from an empty directory with an empty \
         environment{}",
        if chroot_checked {
            " and inside an empty chroot"
        } else {
            " (empty-chroot check skipped: needs root and chroot)"
        }
    );
    let context = dist
        .strip_prefix(root)
        .unwrap_or(dist)
        .display()
        .to_string();
    eprintln!(
        "xtask dist: image: podman build -f deploy/Containerfile -t REGISTRY/tracer:{VERSION} \
         {context}   (or docker build / buildah build, same arguments)"
    );
    Ok(())
}

/// The workspace root: xtask's manifest directory is `<root>/xtask`.
fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// musl for the build machine's architecture: the eBPF object is built for
/// the same one (`bpf_target_arch`), and nodes run what we build on.
fn musl_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// The musl standard library comes from rustup only (Debian's `musl-tools`
/// has the C side, musl-gcc, but no Rust std). Installs it when missing, or
/// says exactly what to run.
fn ensure_target(target: &str) -> anyhow::Result<()> {
    if has_std(target) {
        return Ok(());
    }
    let command = format!("rustup target add {target}");
    let has_rustup = Command::new("rustup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_rustup {
        bail!(
            "the Rust standard library for {target} is missing and rustup is not installed; \
             install rustup (https://rustup.rs), then run: {command}"
        );
    }
    eprintln!("xtask dist: {command}");
    // RUSTUP_TOOLCHAIN, set by the rustup proxy that started us, makes this
    // the toolchain cargo builds with.
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .context("running rustup")?;
    if !status.success() || !has_std(target) {
        bail!(
            "could not install the Rust standard library for {target} ({status}); run \
             `{command}` once rustup's dist server is reachable. Without it, the fallback is \
             a glibc build (`cargo build --release -p tracer`, dynamically linked) on a glibc \
             base image instead of FROM scratch"
        );
    }
    Ok(())
}

/// Whether rustc has a precompiled `std` for `target`.
fn has_std(target: &str) -> bool {
    let Ok(out) = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

/// Copies `from` to `to` without its symbol table (about a quarter of the
/// size). The embedded eBPF object is data, untouched by this. False when
/// binutils' `strip` is not installed: the caller copies it as it is.
fn strip(from: &Path, to: &Path) -> anyhow::Result<bool> {
    let Ok(status) = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
    else {
        return Ok(false);
    };
    if !status.success() {
        bail!("strip --strip-all {} failed: {status}", from.display());
    }
    Ok(true)
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// A static executable: 64-bit little-endian ELF without a `PT_INTERP`
/// (the dynamic loader) and without `DT_NEEDED` (shared libraries). A
/// static-pie has a `PT_DYNAMIC` for its own relocations, nothing more.
fn check_static(elf: &[u8]) -> anyhow::Result<()> {
    ensure!(elf.get(..4) == Some(b"\x7fELF"), "not an ELF file");
    ensure!(
        elf.get(4) == Some(&2) && elf.get(5) == Some(&1),
        "not a 64-bit little-endian ELF"
    );
    let phoff = usize::try_from(u64_at(elf, 0x20)?)?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(elf, ph)? {
            PT_INTERP => bail!("it has a program interpreter (PT_INTERP): dynamically linked"),
            PT_DYNAMIC => {
                let offset = usize::try_from(u64_at(elf, ph + 8)?)?;
                let len = usize::try_from(u64_at(elf, ph + 32)?)?;
                for entry in (offset..offset + len).step_by(16) {
                    match u64_at(elf, entry)? {
                        DT_NULL => break,
                        DT_NEEDED => bail!("it needs a shared library (DT_NEEDED)"),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn bytes_at<const N: usize>(elf: &[u8], at: usize) -> anyhow::Result<[u8; N]> {
    elf.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("truncated ELF (offset {at:#x})"))
}

fn u16_at(elf: &[u8], at: usize) -> anyhow::Result<u16> {
    bytes_at(elf, at).map(u16::from_le_bytes)
}

fn u32_at(elf: &[u8], at: usize) -> anyhow::Result<u32> {
    bytes_at(elf, at).map(u32::from_le_bytes)
}

fn u64_at(elf: &[u8], at: usize) -> anyhow::Result<u64> {
    bytes_at(elf, at).map(u64::from_le_bytes)
}

/// What `file` and `ldd` say, for the log (both optional: the ELF check
/// above is the verdict).
fn describe(path: &Path) {
    for tool in ["file", "ldd"] {
        if let Ok(out) = Command::new(tool).arg(path).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            let line = format!("{} {}", text.trim(), err.trim());
            eprintln!("xtask dist: {tool}: {}", line.trim());
        }
    }
}

/// A directory of our own under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("tracer-dist-{tag}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ignored = fs::remove_dir_all(&self.0);
    }
}

/// `tracer --version` run from an empty directory, with no environment.
fn version_in_empty_dir(binary: &Path) -> anyhow::Result<String> {
    let dir = TempDir::new("cwd")?;
    let binary = fs::canonicalize(binary)?;
    let out = Command::new(&binary)
        .arg("--version")
        .current_dir(&dir.0)
        .env_clear()
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    ensure!(
        out.status.success(),
        "`tracer --version` from an empty directory failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `tracer --version` as the only file of an empty root directory, which is
/// what the scratch image is. `None` when that cannot be tried (not root,
/// or no `chroot` command).
fn version_in_empty_chroot(binary: &Path) -> anyhow::Result<Option<String>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // Found on our PATH: the child's environment is empty.
    let Some(chroot) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chroot"))
            .find(|path| path.is_file())
    }) else {
        return Ok(None);
    };
    let root = TempDir::new("root")?;
    fs::copy(binary, root.0.join("tracer"))?;
    let Ok(out) = Command::new(chroot)
        .arg(&root.0)
        .args(["/tracer", "--version"])
        .env_clear()
        .output()
    else {
        return Ok(None);
    };
    ensure!(
        out.status.success(),
        "`tracer --version` in an empty chroot failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::check_static;

    /// This test binary, linked against glibc, asks for the dynamic loader.
    #[cfg(target_env = "gnu")]
    #[test]
    fn a_dynamic_executable_is_not_static() {
        let elf = std::fs::read("/proc/self/exe").expect("read own executable");
        let err = check_static(&elf).expect_err("dynamically linked");
        assert!(err.to_string().contains("PT_INTERP"), "{err}");
    }

    #[test]
    fn a_script_or_a_truncated_elf_is_refused() {
        assert!(check_static(b"#!/bin/sh\n").is_err());
        assert!(check_static(b"\x7fELF\x02\x01\x01").is_err());
    }
}
