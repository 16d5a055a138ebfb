//! The pod index: every source's facts assembled per interface and IP.

use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::interfaces::{Interface, Kind};

use super::{
    AZURE_STATE, PODS_LOG_ROOT, PROC_ROOT, PodsError, SOURCE_AZURE, SOURCE_CGROUP,
    SOURCE_INTERFACE,
    azure::{AzureEndpoint, read_azure_state},
    cgroup::{pod_uid_from_cgroup, read_pod_logs},
    datapath::Route,
    netns_scan::{NetnsLink, nsid_of, peer_addresses, scan_namespaces},
};

/// The pod behind a host interface or an IP.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PodRef {
    /// Kubernetes namespace, when known.
    pub namespace: Option<String>,
    /// Pod name; the host interface's name when the pod is unknown.
    pub name: String,
    pub uid: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Host-side veth.
    pub host_if: Option<String>,
    /// Where the name came from: [`SOURCE_AZURE`], [`SOURCE_CGROUP`] or
    /// [`SOURCE_INTERFACE`].
    pub source: &'static str,
    /// The peer's network namespace, when it was found on this machine.
    pub netns: Option<NetnsLink>,
}

impl PodRef {
    /// `namespace/name` (`kube-system/coredns-abc`), else the name (for an
    /// unknown pod, its interface).
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Where [`PodIndex::build`] looks; [`Sources::default`] is the real node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    pub azure_state: PathBuf,
    pub proc_root: PathBuf,
    pub pods_log_root: PathBuf,
    /// Named network namespaces (`ip netns`, CNI's `cni-…`).
    pub netns_dir: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            azure_state: AZURE_STATE.into(),
            proc_root: PROC_ROOT.into(),
            pods_log_root: PODS_LOG_ROOT.into(),
            netns_dir: crate::netns::NETNS_RUN_DIR.into(),
        }
    }
}

/// Pods by host ifindex and by IP.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    by_ifindex: HashMap<u32, PodRef>,
    by_ip: HashMap<IpAddr, PodRef>,
    warnings: Vec<String>,
}

/// What [`PodIndex::build`] gathered, for the pure assembly.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub(super) azure: Vec<AzureEndpoint>,
    /// Namespaces of veth peers, by netnsid.
    pub(super) netns: HashMap<i32, NetnsLink>,
    /// Pod UID found in the cgroup of a process of the namespace, by netnsid.
    pub(super) uids: HashMap<i32, String>,
    /// UID → (namespace, name), from the pod log root.
    pub(super) pod_logs: HashMap<String, (String, String)>,
    /// Addresses of each host veth's peer, by host ifindex.
    pub(super) peer_addrs: HashMap<u32, Vec<IpAddr>>,
}

impl PodIndex {
    /// Attributes the veths of `ifaces` (the current namespace's links) to
    /// pods; see the module documentation. Never fails: a source that cannot
    /// be read is skipped, and said so in [`PodIndex::warnings`].
    pub async fn build(ifaces: &[Interface], routes: &[Route], sources: &Sources) -> Self {
        let mut warnings = Vec::new();
        let mut facts = Facts::default();
        match read_azure_state(&sources.azure_state) {
            Ok(endpoints) => facts.azure = endpoints.unwrap_or_default(),
            Err(err) => warnings.push(err.to_string()),
        }
        match read_pod_logs(&sources.pods_log_root) {
            Ok(logs) => facts.pod_logs = logs,
            Err(err) => warnings.push(err.to_string()),
        }
        let peers: Vec<(u32, u32, i32)> = ifaces
            .iter()
            .filter(|i| i.kind == Kind::Veth)
            .filter_map(|i| i.peer.map(|(peer, nsid)| (i.index, peer, nsid)))
            .collect();
        if !peers.is_empty()
            && let Err(err) = gather_namespaces(&peers, sources, &mut facts).await
        {
            warnings.push(format!("finding the pods' network namespaces: {err}"));
        }
        let mut index = assemble(ifaces, routes, facts);
        index.warnings = warnings;
        index
    }

    /// The pod behind host interface `ifindex`.
    pub fn pod_of_ifindex(&self, ifindex: u32) -> Option<&PodRef> {
        self.by_ifindex.get(&ifindex)
    }

    /// The pod owning `ip`.
    pub fn pod_of_ip(&self, ip: IpAddr) -> Option<&PodRef> {
        self.by_ip.get(&ip)
    }

    /// Every attributed host interface, by ascending ifindex.
    pub fn by_ifindex(&self) -> Vec<(u32, &PodRef)> {
        let mut all: Vec<_> = self.by_ifindex.iter().map(|(i, p)| (*i, p)).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all
    }

    pub fn len(&self) -> usize {
        self.by_ifindex.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ifindex.is_empty() && self.by_ip.is_empty()
    }

    /// Sources that could not be used (unreadable, malformed).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Namespaces of the veth peers, the pod UIDs in their processes' cgroups,
/// and the peers' addresses.
pub(super) async fn gather_namespaces(
    peers: &[(u32, u32, i32)],
    sources: &Sources,
    facts: &mut Facts,
) -> Result<(), PodsError> {
    let (connection, mut handle, _) =
        rtnetlink::new_connection_with_strict_check().map_err(PodsError::Socket)?;
    let task = tokio::spawn(connection);
    let result = async {
        let wanted: Vec<i32> = peers.iter().map(|(_, _, nsid)| *nsid).collect();
        for ((_, inode), group) in scan_namespaces(&sources.proc_root, &sources.netns_dir) {
            let mut nsid = None;
            for path in &group.handles {
                // The process may be gone, a named namespace half deleted
                // (its mount point then is a plain file the kernel rejects):
                // try the next handle.
                let Ok(file) = fs::File::open(path) else {
                    continue;
                };
                match nsid_of(&mut handle, &file).await {
                    Ok(id) => {
                        nsid = id;
                        break;
                    }
                    Err(PodsError::Netlink(rtnetlink::Error::NetlinkError(err))) => {
                        tracing::debug!("namespace id of {}: {err}", path.display());
                    }
                    Err(err) => return Err(err),
                }
            }
            let Some(nsid) = nsid.filter(|id| wanted.contains(id)) else {
                continue;
            };
            if let Some(uid) = group.pids.iter().find_map(|pid| {
                let path = sources.proc_root.join(pid.to_string()).join("cgroup");
                pod_uid_from_cgroup(&fs::read_to_string(path).ok()?)
            }) {
                facts.uids.insert(nsid, uid);
            }
            facts.netns.insert(
                nsid,
                NetnsLink {
                    nsid,
                    inode,
                    name: group.name,
                    pids: group.pids,
                },
            );
        }
        for (host, peer, nsid) in peers {
            match peer_addresses(&handle, *peer, *nsid).await {
                Ok(addrs) => {
                    facts.peer_addrs.insert(*host, addrs);
                }
                Err(err) => tracing::debug!("addresses of the peer of {host}: {err}"),
            }
        }
        Ok(())
    }
    .await;
    task.abort();
    result
}

/// A veth that is no pod's: nothing routes a pod address to it and its
/// peer, read successfully, has no global address (a pod's `eth0` always
/// has one). That is a node whose uplink is a veth (nested nodes, the lab,
/// a mixed node's `eth0` enslaved to the bridge), not a pod.
pub(super) fn is_uplink(
    iface: &Interface,
    routed: &HashMap<u32, Vec<IpAddr>>,
    facts: &Facts,
) -> bool {
    !routed.contains_key(&iface.index)
        && facts
            .peer_addrs
            .get(&iface.index)
            .is_some_and(Vec::is_empty)
}

/// Puts the facts together. Pure.
pub(super) fn assemble(ifaces: &[Interface], routes: &[Route], facts: Facts) -> PodIndex {
    let node = Assembly::new(ifaces, routes, &facts);
    let mut index = PodIndex::default();
    // 1. Azure CNI endpoints naming a pod.
    let mut unmatched = Vec::new();
    for ep in facts.azure.iter().filter(|ep| ep.pod_name.is_some()) {
        match node.azure_iface(ep) {
            Some(iface) if !index.by_ifindex.contains_key(&iface.index) => {
                let pod = PodRef {
                    namespace: ep.pod_namespace.clone(),
                    name: ep.pod_name.clone().unwrap_or_default(),
                    uid: node.uid_of(iface),
                    ips: node.ips_of(iface, &ep.ips),
                    host_if: Some(iface.name.clone()),
                    source: SOURCE_AZURE,
                    netns: node.link_of(iface),
                };
                index.by_ifindex.insert(iface.index, pod);
            }
            _ => unmatched.push(ep),
        }
    }
    // 2. and 3.: every other veth, by its processes' cgroup or by itself —
    // except the node's own uplink.
    for iface in &node.veths {
        if let std::collections::hash_map::Entry::Vacant(slot) = index.by_ifindex.entry(iface.index)
            && let Some(pod) = node.other_pod(iface)
        {
            slot.insert(pod);
        }
    }
    index_ips(&mut index, &unmatched);
    index
}

/// What [`assemble`] looks pods up in.
struct Assembly<'a> {
    veths: Vec<&'a Interface>,
    /// Host routes per output interface: a routed pod's IPs.
    routed: HashMap<u32, Vec<IpAddr>>,
    facts: &'a Facts,
}

impl<'a> Assembly<'a> {
    fn new(ifaces: &'a [Interface], routes: &[Route], facts: &'a Facts) -> Self {
        let mut routed: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        for route in routes.iter().filter(|r| r.is_pod_route()) {
            if let Some(oif) = route.oif {
                routed.entry(oif).or_default().push(route.dst);
            }
        }
        Self {
            veths: ifaces.iter().filter(|i| i.kind == Kind::Veth).collect(),
            routed,
            facts,
        }
    }

    fn ips_of(&self, iface: &Interface, extra: &[IpAddr]) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = extra.to_vec();
        ips.extend(self.routed.get(&iface.index).into_iter().flatten());
        ips.extend(
            self.facts
                .peer_addrs
                .get(&iface.index)
                .into_iter()
                .flatten(),
        );
        // Keep the first-seen order (the CNI's own first), drop repeats.
        let mut seen = Vec::new();
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        ips
    }

    fn link_of(&self, iface: &Interface) -> Option<NetnsLink> {
        let (_, nsid) = iface.peer?;
        self.facts.netns.get(&nsid).cloned()
    }

    fn uid_of(&self, iface: &Interface) -> Option<String> {
        let (_, nsid) = iface.peer?;
        self.facts.uids.get(&nsid).cloned()
    }

    /// The live veth of an Azure endpoint: by `HostIfName`, else by its
    /// network namespace's name, else by a host route to one of its IPs.
    fn azure_iface(&self, ep: &AzureEndpoint) -> Option<&'a Interface> {
        let by_name = ep
            .host_if
            .as_deref()
            .and_then(|name| self.veths.iter().find(|i| i.name == name));
        let by_netns = || {
            let name = Path::new(ep.netns_path.as_deref()?).file_name()?.to_str()?;
            let nsid = self
                .facts
                .netns
                .values()
                .find(|l| l.name.as_deref() == Some(name))?
                .nsid;
            self.veths
                .iter()
                .find(|i| i.peer.is_some_and(|(_, id)| id == nsid))
        };
        let by_route = || {
            self.veths.iter().find(|i| {
                self.routed
                    .get(&i.index)
                    .is_some_and(|ips| ep.ips.iter().any(|ip| ips.contains(ip)))
            })
        };
        by_name.or_else(by_netns).or_else(by_route).copied()
    }

    /// A veth no Azure endpoint claimed: its pod by cgroup, else the
    /// interface itself; `None` for the node's own uplink.
    fn other_pod(&self, iface: &Interface) -> Option<PodRef> {
        let uid = self.uid_of(iface);
        if uid.is_none() && is_uplink(iface, &self.routed, self.facts) {
            return None;
        }
        let known = uid.as_ref().and_then(|uid| self.facts.pod_logs.get(uid));
        Some(PodRef {
            namespace: known.map(|(namespace, _)| namespace.clone()),
            name: known.map_or_else(|| iface.name.clone(), |(_, name)| name.clone()),
            source: if uid.is_some() {
                SOURCE_CGROUP
            } else {
                SOURCE_INTERFACE
            },
            uid,
            ips: self.ips_of(iface, &[]),
            host_if: Some(iface.name.clone()),
            netns: self.link_of(iface),
        })
    }
}

/// IPs: live interfaces first (lowest ifindex wins a conflict), then Azure
/// endpoints whose interface is gone or unknown.
fn index_ips(index: &mut PodIndex, unmatched: &[&AzureEndpoint]) {
    let mut indices: Vec<u32> = index.by_ifindex.keys().copied().collect();
    indices.sort_unstable();
    for ifindex in indices {
        let pod = &index.by_ifindex[&ifindex];
        for ip in &pod.ips {
            if !index.by_ip.contains_key(ip) {
                index.by_ip.insert(*ip, pod.clone());
            }
        }
    }
    for ep in unmatched {
        let pod = PodRef {
            namespace: ep.pod_namespace.clone(),
            name: ep.pod_name.clone().unwrap_or_default(),
            uid: None,
            ips: ep.ips.clone(),
            host_if: ep.host_if.clone(),
            source: SOURCE_AZURE,
            netns: None,
        };
        for ip in &ep.ips {
            index.by_ip.entry(*ip).or_insert_with(|| pod.clone());
        }
    }
}
