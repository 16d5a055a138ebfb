//! crun (1.8.1, Debian 12) refuses to start any container on a "hybrid"
//! cgroup host (cgroup v1 controllers under a tmpfs `/sys/fs/cgroup`, a
//! cgroup2 at `/sys/fs/cgroup/unified`) whose cgroup2 still holds a
//! controller: "cgroups in hybrid mode not supported, drop all controllers
//! from cgroupv2". This machine boots that way, with `hugetlb` left on the
//! cgroup2 side because no v1 hierarchy claims it. Mounting a v1 hierarchy
//! for such a controller moves it there (the kernel allows it while no
//! cgroup2 `subtree_control` enables it), and crun runs. Mounts do not
//! survive a reboot: setup checks every time.

use std::path::Path;

use anyhow::{Context as _, bail};

const ROOT: &str = "/sys/fs/cgroup";
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The controllers a hybrid host's cgroup2 still holds; empty on a pure
/// cgroup v1 or a pure cgroup v2 host (crun handles both).
pub fn v2_controllers_on_hybrid() -> Vec<String> {
    if !Path::new(UNIFIED).join("cgroup.controllers").exists() {
        return Vec::new();
    }
    std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

pub fn mount_command(controller: &str) -> String {
    format!(
        "mkdir -p {ROOT}/{controller} && mount -t cgroup -o {controller} cgroup {ROOT}/{controller}"
    )
}

/// Mounts `controller`'s v1 hierarchy, which takes it off cgroup2.
pub fn mount_v1(controller: &str) -> anyhow::Result<()> {
    let dir = Path::new(ROOT).join(controller);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = std::process::Command::new("mount")
        .args(["-t", "cgroup", "-o", controller, "cgroup"])
        .arg(&dir)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): crun cannot start containers while cgroup2 holds \
             {controller} on this hybrid cgroup host",
            mount_command(controller)
        );
    }
    Ok(())
}
