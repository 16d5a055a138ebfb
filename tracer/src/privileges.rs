//! Checks, before touching the kernel, that we hold the capabilities the
//! probes need, so a missing one is one readable line instead of an EPERM
//! deep inside the loader.

use std::fs;

/// A Linux capability we may need, with its bit number (linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    NetAdmin = 12,
    SysAdmin = 21,
    SysResource = 24,
    Perfmon = 38,
    Bpf = 39,
}

impl Cap {
    pub const fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::SysResource => "CAP_SYS_RESOURCE",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }
}

/// The effective capability set of this process.
#[derive(Clone, Copy, Debug)]
pub struct CapSet(u64);

impl CapSet {
    /// Reads `CapEff` from `/proc/self/status`.
    pub fn current() -> std::io::Result<Self> {
        let status = fs::read_to_string("/proc/self/status")?;
        Self::parse_status(&status).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no CapEff line in /proc/self/status",
            )
        })
    }

    /// Parses the `CapEff:` line of a `/proc/<pid>/status` text.
    pub fn parse_status(status: &str) -> Option<Self> {
        status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .map(Self)
    }

    pub const fn has(self, cap: Cap) -> bool {
        self.0 & (1 << cap as u64) != 0
    }

    /// Capabilities from `needed` that are missing. CAP_SYS_ADMIN stands in
    /// for CAP_BPF and CAP_PERFMON, as on kernels before v5.8 that lack them.
    pub fn missing(self, needed: &[Cap]) -> Vec<Cap> {
        needed
            .iter()
            .copied()
            .filter(|&cap| {
                let covered = matches!(cap, Cap::Bpf | Cap::Perfmon) && self.has(Cap::SysAdmin);
                !self.has(cap) && !covered
            })
            .collect()
    }
}

/// What attaching TC probes needs: loading programs and maps (CAP_BPF),
/// pointer arithmetic on packets and reading kernel memory (CAP_PERFMON), and
/// creating TCX links or qdiscs (CAP_NET_ADMIN).
pub const TRACE_CAPS: &[Cap] = &[Cap::Bpf, Cap::Perfmon, Cap::NetAdmin];

/// One line naming what is missing and how to get it, or `None` when all is there.
pub fn check(needed: &[Cap]) -> Option<String> {
    let caps = match CapSet::current() {
        Ok(caps) => caps,
        Err(err) => return Some(format!("cannot read capabilities: {err}")),
    };
    let missing = caps.missing(needed);
    if missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing.iter().map(|cap| cap.name()).collect();
    Some(format!(
        "missing capability {}: run tracer as root (sudo), or in a privileged debug pod \
         (kubectl debug node/<node> --profile=sysadmin), or grant it with \
         `setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin+ep tracer`",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_root_and_unprivileged_sets() {
        let root = CapSet::parse_status("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(root.missing(TRACE_CAPS).is_empty());
        let none = CapSet::parse_status("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(
            none.missing(TRACE_CAPS),
            vec![Cap::Bpf, Cap::Perfmon, Cap::NetAdmin]
        );
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon() {
        let caps = CapSet((1 << Cap::SysAdmin as u64) | (1 << Cap::NetAdmin as u64));
        assert!(caps.missing(TRACE_CAPS).is_empty());
    }

    #[test]
    fn missing_line_is_absent() {
        assert!(CapSet::parse_status("Name:\tx\n").is_none());
    }
}
