//! A lab pod named the way a kubelet names it, so tracer's attribution
//! (tracer/src/pods.rs, path 2) finds `namespace/name`: a process lives in
//! the pod's network namespace and in a `kubepods/…/pod<uid>` cgroup
//! (cgroupfs driver layout), and `/var/log/pods/<namespace>_<name>_<uid>`
//! exists. Nothing is faked inside tracer: it reads /proc, the cgroup and
//! the log root as on a node.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// The cgroup v1 hierarchy the pod's process is put in (any controller
/// shows in `/proc/<pid>/cgroup`); cgroup v2's root on hybrid hosts.
const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];
const PODS_LOG_ROOT: &str = "/var/log/pods";

/// A named pod; dropping it ends its process (by PID) and removes the
/// cgroup and the log directory.
pub struct KubePod {
    child: Child,
    cgroup: PathBuf,
    log_dir: PathBuf,
    /// `namespace/name`, as tracer labels it.
    pub label: String,
}

impl KubePod {
    /// Names the pod whose network namespace is `netns`.
    pub fn name(netns: &str, namespace: &str, name: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let uid = format!(
            "{:08x}-7ace-4000-8000-{:012x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let root = CGROUP_ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|r| r.join("cgroup.procs").exists())
            .expect("a writable cgroup hierarchy");
        let cgroup = root.join(format!("kubepods/burstable/pod{uid}"));
        std::fs::create_dir_all(&cgroup).expect("pod cgroup");
        let log_dir = PathBuf::from(PODS_LOG_ROOT).join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&log_dir).expect("pod log dir");
        // `ip netns exec` execs sleep: the child's PID is the pod process.
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("pod process");
        let pod = Self {
            child,
            cgroup,
            log_dir,
            label: format!("{namespace}/{name}"),
        };
        std::fs::write(pod.cgroup.join("cgroup.procs"), pod.child.id().to_string())
            .expect("move the pod process into its cgroup");
        // Wait until the exec into the namespace happened (the process's
        // netns is no longer ours).
        let ours = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let start = std::time::Instant::now();
        while std::fs::read_link(format!("/proc/{}/ns/net", pod.child.id())).ok()
            == Some(ours.clone())
        {
            assert!(
                start.elapsed().as_secs() < 5,
                "pod process never entered {netns}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        pod
    }
}

impl Drop for KubePod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Parents too, when no other pod still uses them (remove_dir only
        // removes empty directories).
        for dir in self.cgroup.ancestors().take(3) {
            let _ = std::fs::remove_dir(dir);
        }
        for dir in self.log_dir.ancestors().take(2) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
