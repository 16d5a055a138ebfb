//! Which BPF programs live processes hold open.
//!
//! A running tracer keeps an fd of every program it loaded for as long as
//! it runs (aya's `ProgramFd`); once it is dead, a legacy cls_bpf filter is
//! the only thing left holding its program. So a filter whose program no
//! process holds belongs to a dead loader. Each open fd of a BPF program
//! shows as `anon_inode:bpf-prog` in `/proc/PID/fd/N`, and its
//! `/proc/PID/fdinfo/N` carries a `prog_id:` line with the kernel's id.
//!
//! The answer is only complete when every process's fd table could be
//! read: `/proc/PID/fd` needs ptrace read access (CAP_SYS_PTRACE for a
//! process with capabilities we lack), and processes of a parent PID
//! namespace are not in our `/proc` at all. [`Holders::incomplete`] says why
//! it is not, and callers must then treat every program as held.
//!
//! Hence a second proof that needs no access to other processes:
//! [`OwnerLock`]. A tracer holds an exclusive `flock` on
//! `/run/tracer/prog-ID.lock` for each of its TC programs from before it
//! attaches them until it dies (the kernel drops the lock with the last fd,
//! `kill -9` included). Whoever can take that lock knows the program's
//! loader is dead. Program ids are unique until reboot, as is `/run`.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// Where tracers keep one lock file per attached TC program.
pub const OWNER_LOCK_DIR: &str = "/run/tracer";

fn lock_path(dir: &Path, prog_id: u32) -> PathBuf {
    dir.join(format!("prog-{prog_id}.lock"))
}

/// An exclusive lock held for as long as this process runs a program.
#[derive(Debug)]
pub struct OwnerLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl OwnerLock {
    /// Takes the lock of `prog_id` in `dir` (created if missing).
    pub fn take(dir: &Path, prog_id: u32) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = lock_path(dir, prog_id);
        // O_CLOEXEC (std's default): a child must not keep the lock alive.
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Unlinked while still locked: a cleaner that opened it just before
        // gets the lock only once we are done.
        let _ = fs::remove_file(&self.path);
    }
}

/// What the lock file of a program says about its loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No lock file: the loader did not register (or not here).
    Absent,
    /// Locked: the loader is alive.
    Held,
    /// The lock could be taken: the loader is dead. The file is removed.
    Dead,
}

/// Probes the lock of `prog_id` in `dir` without blocking.
pub fn probe_lock(dir: &Path, prog_id: u32) -> io::Result<LockState> {
    let path = lock_path(dir, prog_id);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(LockState::Absent),
        Err(err) => return Err(err),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_lock) => {
            let _ = fs::remove_file(&path);
            Ok(LockState::Dead)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(LockState::Held),
        Err((_, errno)) => Err(errno.into()),
    }
}

/// `PROC_PID_INIT_INO` (include/linux/proc_ns.h): the inode of the initial
/// PID namespace, the only one whose `/proc` lists every process.
pub const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// What a scan of `/proc` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// Ids of the programs some process holds an fd of.
    pub prog_ids: BTreeSet<u32>,
    /// Processes whose fd table could not be read.
    pub unreadable: Vec<u32>,
    /// BPF program fds whose fdinfo had no `prog_id:`.
    pub without_id: usize,
    /// Not in the initial PID namespace: other processes are invisible.
    pub foreign_pid_namespace: bool,
}

impl Holders {
    /// Why the scan cannot prove that a program is held by nobody, if so.
    pub fn incomplete(&self) -> Option<String> {
        if self.foreign_pid_namespace {
            return Some(
                "not in the host's PID namespace (hostPID): other processes are invisible".into(),
            );
        }
        if !self.unreadable.is_empty() {
            return Some(format!(
                "the open files of {} processes could not be read (needs CAP_SYS_PTRACE), e.g. PID {}",
                self.unreadable.len(),
                self.unreadable[0]
            ));
        }
        if self.without_id > 0 {
            return Some(format!(
                "{} BPF program fds without prog_id in fdinfo",
                self.without_id
            ));
        }
        None
    }
}

/// The `prog_id:` of a BPF program fd's fdinfo text.
pub fn prog_id_of_fdinfo(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Scans `proc` (normally `/proc`).
pub fn scan(proc: &Path) -> io::Result<Holders> {
    let mut holders = Holders {
        foreign_pid_namespace: fs::metadata(proc.join("self/ns/pid"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m) != PROC_PID_INIT_INO)
            .unwrap_or(true),
        ..Holders::default()
    };
    for entry in fs::read_dir(proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fd_dir = entry.path().join("fd");
        let fds = match fs::read_dir(&fd_dir) {
            Ok(fds) => fds,
            // Exited since the listing: it holds nothing any more.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                holders.unreadable.push(pid);
                continue;
            }
        };
        for fd in fds {
            let Ok(fd) = fd else { continue };
            match fs::read_link(fd.path()) {
                Ok(target) if target.as_os_str() == "anon_inode:bpf-prog" => {}
                Ok(_) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    holders.unreadable.push(pid);
                    break;
                }
            }
            let info = entry.path().join("fdinfo").join(fd.file_name());
            match fs::read_to_string(&info) {
                Ok(text) => match prog_id_of_fdinfo(&text) {
                    Some(id) => {
                        holders.prog_ids.insert(id);
                    }
                    None => holders.without_id += 1,
                },
                // Closed between readlink and read: no longer held.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(_) => {
                    holders.unreadable.push(pid);
                    break;
                }
            }
        }
    }
    holders.unreadable.dedup();
    Ok(holders)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/PID/fdinfo/N` of a running tracer's `tracer_ingress` fd on 6.18.
    const FDINFO_6_18: &str = include_str!("testdata/fdinfo-prog-6.18.txt");

    #[test]
    fn prog_id_from_fdinfo() {
        assert_eq!(prog_id_of_fdinfo(FDINFO_6_18), Some(480));
        assert_eq!(
            prog_id_of_fdinfo("pos:\t0\nflags:\t02\nmap_type:\t1\nmap_id:\t7\n"),
            None
        );
        assert_eq!(prog_id_of_fdinfo(""), None);
    }

    #[test]
    fn incomplete_scans_say_why() {
        let mut holders = Holders::default();
        assert_eq!(holders.incomplete(), None);
        holders.unreadable = vec![1, 77];
        let why = holders.incomplete().expect("incomplete");
        assert!(
            why.contains("2 processes") && why.contains("PID 1"),
            "{why}"
        );
        holders.foreign_pid_namespace = true;
        assert!(
            holders
                .incomplete()
                .expect("incomplete")
                .contains("hostPID")
        );
    }

    /// A lock is held while its owner lives, and provably free after.
    #[test]
    fn owner_lock_held_then_dead() {
        let dir = std::env::temp_dir().join(format!("tracer-lock-test-{}", std::process::id()));
        assert_eq!(probe_lock(&dir, 7).expect("probe"), LockState::Absent);
        let lock = OwnerLock::take(&dir, 7).expect("take");
        assert_eq!(probe_lock(&dir, 7).expect("probe"), LockState::Held);
        drop(lock);
        assert_eq!(
            probe_lock(&dir, 7).expect("probe"),
            LockState::Absent,
            "a clean exit removes its file"
        );
        // A crashed owner: its lock goes with its fd, the file stays.
        let file = File::create(lock_path(&dir, 8)).expect("create");
        let crashed = Flock::lock(file, FlockArg::LockExclusiveNonblock).expect("lock");
        assert_eq!(probe_lock(&dir, 8).expect("probe"), LockState::Held);
        drop(crashed);
        assert_eq!(probe_lock(&dir, 8).expect("probe"), LockState::Dead);
        assert!(!lock_path(&dir, 8).exists(), "the prover removes it");
        let _ = fs::remove_dir(&dir);
    }

    /// The real /proc: this test process holds no BPF program, and the
    /// scan of its own fd table works without privileges.
    #[test]
    fn scan_of_the_real_proc_runs() {
        let holders = scan(Path::new("/proc")).expect("scan /proc");
        assert!(!holders.unreadable.contains(&std::process::id()));
    }
}
