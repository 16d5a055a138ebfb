//! Which datapath the node uses, and which pod each host veth (and each pod
//! IP) belongs to.
//!
//! # Datapath
//!
//! [`detect_datapath`] is pure: *bridge* when a bridge (any name: `azure0`,
//! `cbr0`, `cni0`, `docker0`) has veth ports; *transparent* (routed) when a
//! veth that is nobody's port has a host route (`/32`, `/128`) pointing at
//! it, as Azure CNI transparent mode, Calico (`cali*`) and Cilium's legacy
//! routing (`lxc*`) program; *mixed* when both; otherwise *unknown*.
//! [`read_routes`] supplies the routes.
//!
//! # Pods
//!
//! [`PodIndex::build`] attributes every host veth, in this order:
//!
//! 1. **Azure CNI state** (`/var/run/azure-vnet.json`): endpoints carry the
//!    pod's name and namespace, its IPs and `HostIfName`. An endpoint is
//!    matched to a live interface by `HostIfName`, else by its network
//!    namespace path (`/var/run/netns/cni-…`, see below), else by a host
//!    route to one of its IPs.
//! 2. **veth peer → network namespace → process → cgroup → pod UID →
//!    `/var/log/pods/<namespace>_<name>_<uid>`**.
//! 3. The interface name, with the IPs found for it.
//!
//! ## veth → namespace → processes
//!
//! The kernel already tells us, for each host veth, the *netnsid* of the
//! namespace its peer lives in (IFLA_LINK_NETNSID, in
//! [`Interface::peer`]); dumping the links is what makes the kernel assign
//! those ids. What we need is the reverse: which processes live in the
//! namespace with that netnsid. No namespace is entered:
//!
//! - every process's namespace is identified by the inode of
//!   `/proc/<pid>/ns/net` (one `stat` per process); processes are grouped
//!   by inode, so a pod's pause and app containers form one group;
//! - named namespaces (`/run/netns/*`, where CNI plugins and `ip netns`
//!   pin them) join the same groups by inode, which names the namespace
//!   and covers namespaces with no process in them;
//! - per group (not per process), one `/proc/<pid>/ns/net` (or
//!   `/run/netns/<name>`) is opened and the kernel asked for its netnsid
//!   as seen from our namespace: RTM_GETNSID with NETNSA_FD, what
//!   `ip netns list-id` does. Namespaces that are no veth's peer have no id
//!   and are dropped.
//!
//! The cgroup of the group's processes (`/proc/<pid>/cgroup`, read until
//! one names a pod) then gives the pod UID, and `/var/log/pods` (listed
//! once) its namespace and name. The pod's own addresses are read from its
//! side of the veth with RTM_GETADDR and IFA_TARGET_NETNSID, again without
//! entering it, so pod IPs are known in bridge mode too.
//!
//! Cost for a node with ~250 pods and a few thousand processes: one `stat`
//! per process, one `open` + one netlink round trip per namespace (~250),
//! a few small `/proc/<pid>/cgroup` reads per pod, one `/var/log/pods`
//! listing and one address dump per veth: a few milliseconds, all of it
//! userspace bookkeeping, no thread moves between namespaces. Entering each
//! namespace (setns on a helper thread) would have worked too, but costs a
//! thread switch per namespace and CAP_SYS_ADMIN; comparing peer MACs would
//! have needed exactly that.
//!
//! Limits: `/proc/<pid>/ns/net` is the thread-group leader's namespace;
//! hostNetwork pods have no veth and are not in the index; reading other
//! users' `/proc/<pid>/ns` needs root (without it step 2 finds nothing and
//! step 3 applies).

use std::{io, path::PathBuf};

/// Azure CNI's network state file.
pub const AZURE_STATE: &str = "/var/run/azure-vnet.json";
/// Where the kubelet keeps one log directory per pod.
pub const PODS_LOG_ROOT: &str = "/var/log/pods";
/// The proc filesystem.
pub const PROC_ROOT: &str = "/proc";

/// [`PodRef::source`]: the Azure CNI state file.
pub const SOURCE_AZURE: &str = "azure-cni";
/// [`PodRef::source`]: a process's kubepods cgroup and `/var/log/pods`.
pub const SOURCE_CGROUP: &str = "cgroup";
/// [`PodRef::source`]: nothing better than the interface itself.
pub const SOURCE_INTERFACE: &str = "interface";

/// `rtm_protocol` of routes the kernel derives from addresses.
pub const RTPROT_KERNEL: u8 = 2;

/// Errors reading routes, state files and the proc filesystem.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Azure CNI state {path}: {source}")]
    AzureState {
        path: PathBuf,
        #[source]
        source: AzureStateError,
    },
}

/// Why an Azure CNI state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AzureStateError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected layout: {0}")]
    Layout(String),
    #[error(
        "{size} bytes, over the {} MiB tracer reads (ignored; a node's real state is well under 1 MiB)",
        AZURE_STATE_MAX_BYTES >> 20
    )]
    TooLarge { size: u64 },
}

/// Largest Azure CNI state file read. Each endpoint is ~1–2 KiB and a node
/// runs at most a few hundred pods: 16 MiB is far above any real file, and
/// bounds what a huge or endless file can cost.
pub const AZURE_STATE_MAX_BYTES: u64 = 16 << 20;

mod azure;
mod cgroup;
mod datapath;
mod index;
mod netns_scan;

pub use self::{azure::*, cgroup::*, datapath::*, index::*, netns_scan::*};

#[cfg(test)]
mod tests;
