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

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    RouteMessageBuilder,
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        nsid::{NsidAttribute, NsidMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    },
};
use serde_json::Value;

use crate::{
    interfaces::{Interface, Kind},
    verdict::NodeDatapath,
};

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

// ---------------------------------------------------------------------------
// Routes and datapath
// ---------------------------------------------------------------------------

/// One unicast route of the node (any table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// Output interface; `None` for multipath and interface-less routes.
    pub oif: Option<u32>,
    /// `rtm_protocol`: 2 kernel, 3 boot, 4 static, …
    pub proto: u8,
}

impl Route {
    /// A route to a single address (`/32`, `/128`).
    pub fn is_host(&self) -> bool {
        match self.dst {
            IpAddr::V4(_) => self.prefix_len == 32,
            IpAddr::V6(_) => self.prefix_len == 128,
        }
    }

    /// A host route a CNI plugin (or an admin) put on interface `oif`, as
    /// opposed to one the kernel derived from an address.
    fn is_pod_route(&self) -> bool {
        self.is_host() && self.proto != RTPROT_KERNEL && self.oif.is_some()
    }
}

/// Reads the unicast IPv4 and IPv6 routes of the current network namespace
/// (every table; local and broadcast routes are left out).
pub async fn read_routes() -> Result<Vec<Route>, PodsError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(PodsError::Socket)?;
    let task = tokio::spawn(connection);
    let result = async {
        let mut out = Vec::new();
        for request in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let messages: Vec<RouteMessage> =
                handle.route().get(request).execute().try_collect().await?;
            out.extend(messages.iter().filter_map(route_of));
        }
        Ok(out)
    }
    .await;
    task.abort();
    result
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = IpAddr::V6(*a),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    Some(Route {
        dst,
        prefix_len: msg.header.destination_prefix_length,
        oif,
        proto: msg.header.protocol.into(),
    })
}

/// A bridge with its ports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BridgeInfo {
    pub name: String,
    /// Every port, by name.
    pub ports: Vec<String>,
    /// How many of them are veths (pods, or a veth uplink).
    pub veth_ports: usize,
}

/// The node's datapath and the evidence for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatapathInfo {
    pub mode: NodeDatapath,
    /// Bridges carrying at least one veth port.
    pub bridges: Vec<BridgeInfo>,
    /// Veths that are nobody's port and have a host route pointing at them.
    pub routed_veths: Vec<String>,
}

/// Decides the datapath from the namespace's links and routes; see the
/// module documentation for the rules. Pure.
pub fn detect_datapath(all: &[Interface], routes: &[Route]) -> DatapathInfo {
    let bridges: Vec<BridgeInfo> = all
        .iter()
        .filter(|b| b.kind == Kind::Bridge)
        .map(|b| {
            let ports: Vec<&Interface> = all.iter().filter(|p| p.master == Some(b.index)).collect();
            BridgeInfo {
                name: b.name.clone(),
                veth_ports: ports.iter().filter(|p| p.kind == Kind::Veth).count(),
                ports: ports.iter().map(|p| p.name.clone()).collect(),
            }
        })
        .filter(|b| b.veth_ports > 0)
        .collect();
    let routed_veths: Vec<String> = all
        .iter()
        .filter(|i| i.kind == Kind::Veth && i.master.is_none())
        .filter(|i| {
            routes
                .iter()
                .any(|r| r.is_pod_route() && r.oif == Some(i.index))
        })
        .map(|i| i.name.clone())
        .collect();
    let mode = match (!bridges.is_empty(), !routed_veths.is_empty()) {
        (true, true) => NodeDatapath::Mixed,
        (true, false) => NodeDatapath::Bridge,
        (false, true) => NodeDatapath::Transparent,
        (false, false) => NodeDatapath::Unknown,
    };
    DatapathInfo {
        mode,
        bridges,
        routed_veths,
    }
}

// ---------------------------------------------------------------------------
// Azure CNI state
// ---------------------------------------------------------------------------

/// One endpoint (pod interface) of Azure CNI's state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AzureEndpoint {
    /// Key of the endpoint (`<container id prefix>-eth0`).
    pub id: String,
    /// The network it belongs to (`azure`) and that network's `Mode`
    /// (`bridge`, `transparent`, …).
    pub network: String,
    pub mode: Option<String>,
    /// `BridgeName` of the external interface, in bridge mode.
    pub bridge: Option<String>,
    /// Host-side veth (`HostIfName`).
    pub host_if: Option<String>,
    pub ips: Vec<IpAddr>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub container_id: Option<String>,
    /// The pod's network namespace (`/var/run/netns/cni-…`).
    pub netns_path: Option<String>,
}

/// Parses Azure CNI's state (`{"Network": {"ExternalInterfaces": {<if>:
/// {"BridgeName", "Networks": {<id>: {"Mode", "Endpoints": {<id>: {…}}}}}}}}`).
/// Unknown fields are ignored, missing or null ones are `None`; an empty
/// file (Azure CNI's empty store) has no endpoints. Bad JSON or a
/// top-level shape that is not Azure CNI's is an error.
pub fn parse_azure_state(text: &str) -> Result<Vec<AzureEndpoint>, AzureStateError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root: Value = serde_json::from_str(text)?;
    let root = root
        .as_object()
        .ok_or_else(|| AzureStateError::Layout("top level is not a JSON object".into()))?;
    let network = root
        .get("Network")
        .ok_or_else(|| AzureStateError::Layout("no \"Network\" key at the top level".into()))?;
    if network.is_null() {
        return Ok(Vec::new());
    }
    let network = network
        .as_object()
        .ok_or_else(|| AzureStateError::Layout("\"Network\" is not an object".into()))?;
    let externals = match network.get("ExternalInterfaces") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(AzureStateError::Layout(
                "\"Network.ExternalInterfaces\" is not an object".into(),
            ));
        }
    };
    let mut out = Vec::new();
    for ext in externals.values() {
        let bridge = text_field(ext, &["BridgeName"]);
        let Some(networks) = ext.get("Networks").and_then(Value::as_object) else {
            continue;
        };
        for (network_id, net) in networks {
            let mode = text_field(net, &["Mode"]);
            let Some(endpoints) = net.get("Endpoints").and_then(Value::as_object) else {
                continue;
            };
            for (id, ep) in endpoints {
                if !ep.is_object() {
                    continue;
                }
                out.push(AzureEndpoint {
                    id: text_field(ep, &["Id"]).unwrap_or_else(|| id.clone()),
                    network: text_field(net, &["Id"]).unwrap_or_else(|| network_id.clone()),
                    mode: mode.clone(),
                    bridge: bridge.clone(),
                    host_if: text_field(ep, &["HostIfName"]),
                    ips: ep
                        .get("IPAddresses")
                        .and_then(Value::as_array)
                        .map(|list| list.iter().filter_map(ip_of).collect())
                        .unwrap_or_default(),
                    pod_name: text_field(ep, &["PODName", "PodName"]),
                    pod_namespace: text_field(ep, &["PODNameSpace", "PodNamespace"]),
                    container_id: text_field(ep, &["ContainerID"]),
                    netns_path: text_field(ep, &["NetworkNameSpace", "NetNsPath", "NetNs"]),
                });
            }
        }
    }
    Ok(out)
}

/// Reads and parses the state file; `Ok(None)` when there is none.
pub fn read_azure_state(path: &Path) -> Result<Option<Vec<AzureEndpoint>>, PodsError> {
    let text = match read_capped(path, AZURE_STATE_MAX_BYTES) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(ReadCapped::TooLarge(size)) => {
            return Err(PodsError::AzureState {
                path: path.to_owned(),
                source: AzureStateError::TooLarge { size },
            });
        }
        Err(ReadCapped::Io(source)) => {
            return Err(PodsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_azure_state(&text)
        .map(Some)
        .map_err(|source| PodsError::AzureState {
            path: path.to_owned(),
            source,
        })
}

enum ReadCapped {
    TooLarge(u64),
    Io(io::Error),
}

/// A whole text file of at most `cap` bytes; `None` if there is none.
/// Reads at most `cap + 1` bytes, so a file that grows while read (or a
/// FIFO, or /dev/zero behind a symlink) costs no more than the cap.
fn read_capped(path: &Path, cap: u64) -> Result<Option<String>, ReadCapped> {
    use std::io::Read as _;
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ReadCapped::Io(err)),
    };
    let size = file.metadata().map_err(ReadCapped::Io)?.len();
    if size > cap {
        return Err(ReadCapped::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadCapped::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadCapped::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|err| ReadCapped::Io(io::Error::new(io::ErrorKind::InvalidData, err)))
}

/// The first of `keys` holding a non-empty string.
fn text_field(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A Go `net.IPNet` (`{"IP": "10.0.0.5", "Mask": "//8AAA=="}`) or a
/// `"10.0.0.5/16"` string.
fn ip_of(v: &Value) -> Option<IpAddr> {
    let text = match v {
        Value::String(s) => s.as_str(),
        _ => v.get("IP")?.as_str()?,
    };
    let ip: IpAddr = text.split('/').next()?.trim().parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}

// ---------------------------------------------------------------------------
// cgroups and /var/log/pods
// ---------------------------------------------------------------------------

/// The pod UID in a `/proc/<pid>/cgroup`, if the process is in a kubepods
/// cgroup: systemd driver
/// `…/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`,
/// cgroupfs driver `/kubepods/burstable/pod<uid>/<id>`; v1 or v2.
/// Returned lowercase with dashes.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let mut in_kubepods = false;
        for component in path.split('/') {
            in_kubepods |= component.contains("kubepods");
            if !in_kubepods {
                continue;
            }
            let candidate = if let Some(slice) = component.strip_suffix(".slice") {
                slice.rfind("-pod").map(|at| &slice[at + 4..])
            } else {
                component.strip_prefix("pod")
            };
            if let Some(uid) = candidate.and_then(normalize_uid) {
                return Some(uid);
            }
        }
    }
    None
}

/// A pod UID as the kubelet writes it: a UUID (36 characters), or the
/// 32-hex-digit hash of a static pod. `_` (systemd's escape) becomes `-`.
fn normalize_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = uid.split('-').collect();
    let uuid = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| hex(g));
    let hash = uid.len() == 32 && hex(&uid);
    (uuid || hash).then_some(uid)
}

/// `/var/log/pods/<namespace>_<name>_<uid>` directory names, by UID.
/// Names and namespaces are DNS labels, so `_` only separates.
pub fn parse_pod_log_dir(dir_name: &str) -> Option<(String, String, String)> {
    let mut parts = dir_name.split('_');
    let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some((namespace.to_owned(), name.to_owned(), normalize_uid(uid)?))
}

/// Lists the pod log root: UID → (namespace, name). A missing root is empty.
pub fn read_pod_logs(root: &Path) -> Result<HashMap<String, (String, String)>, PodsError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(PodsError::Read {
                path: root.to_owned(),
                source,
            });
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| parse_pod_log_dir(e.file_name().to_str()?))
        .map(|(namespace, name, uid)| (uid, (namespace, name)))
        .collect())
}

// ---------------------------------------------------------------------------
// Network namespaces of processes
// ---------------------------------------------------------------------------

/// How a pod's veth peer was tied to a network namespace on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetnsLink {
    /// The peer's namespace id, as our namespace sees it.
    pub nsid: i32,
    /// Inode of the namespace (`net:[inode]`).
    pub inode: u64,
    /// Its name under `/run/netns`, if pinned there (`cni-…`).
    pub name: Option<String>,
    /// Processes living in it, ascending.
    pub pids: Vec<u32>,
}

/// Namespaces seen on the machine, before their ids are known.
#[derive(Debug, Default)]
struct NsGroup {
    name: Option<String>,
    pids: Vec<u32>,
    /// Files that refer to the namespace; any one can be opened for its id.
    handles: Vec<PathBuf>,
}

/// Groups processes (`<proc>/<pid>/ns/net`) and named namespaces
/// (`<netns_dir>/*`) by namespace inode. Unreadable entries are skipped.
fn scan_namespaces(proc_root: &Path, netns_dir: &Path) -> BTreeMap<(u64, u64), NsGroup> {
    // Keyed by (device, inode): a half-deleted named namespace is a plain
    // file whose inode number lives on another device.
    let mut groups: BTreeMap<(u64, u64), NsGroup> = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(proc_root) {
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let handle = entry.path().join("ns/net");
            // stat follows the magic link to the nsfs inode.
            if let Ok(meta) = fs::metadata(&handle) {
                let group = groups.entry((meta.dev(), meta.ino())).or_default();
                group.pids.push(pid);
                group.handles.push(handle);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(netns_dir) {
        for entry in entries.filter_map(Result::ok) {
            let handle = entry.path();
            if let Ok(meta) = fs::metadata(&handle) {
                let group = groups.entry((meta.dev(), meta.ino())).or_default();
                group.name = entry.file_name().to_str().map(str::to_owned);
                group.handles.insert(0, handle);
            }
        }
    }
    for group in groups.values_mut() {
        group.pids.sort_unstable();
    }
    groups
}

/// The id our namespace has for the namespace `file` refers to
/// (RTM_GETNSID with NETNSA_FD); `None` when it has none.
async fn nsid_of(
    handle: &mut rtnetlink::Handle,
    file: &fs::File,
) -> Result<Option<i32>, PodsError> {
    let mut msg = NsidMessage::default();
    let fd = u32::try_from(file.as_raw_fd()).unwrap_or(u32::MAX);
    msg.attributes.push(NsidAttribute::Fd(fd));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = handle.request(req)?;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                return Ok(m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                }));
            }
            NetlinkPayload::Error(err) if err.code.is_some() => {
                return Err(rtnetlink::Error::NetlinkError(err).into());
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The global addresses of interface `peer` in the namespace with id
/// `nsid` (RTM_GETADDR with IFA_TARGET_NETNSID; needs a strict-checking
/// socket, or the kernel ignores the target).
async fn peer_addresses(
    handle: &rtnetlink::Handle,
    peer: u32,
    nsid: i32,
) -> Result<Vec<IpAddr>, PodsError> {
    let mut request = handle.address().get();
    let msg: &mut AddressMessage = request.message_mut();
    msg.header.index = peer;
    msg.attributes.push(AddressAttribute::TargetNetNsId(nsid));
    let messages: Vec<AddressMessage> = request.execute().try_collect().await?;
    let mut out: Vec<IpAddr> = messages
        .iter()
        .filter(|m| m.header.index == peer)
        .filter_map(|m| {
            let mut local = None;
            let mut address = None;
            for attr in &m.attributes {
                match attr {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            local.or(address)
        })
        .filter(|ip| match ip {
            IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local(),
            IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local(),
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// ---------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------

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
struct Facts {
    azure: Vec<AzureEndpoint>,
    /// Namespaces of veth peers, by netnsid.
    netns: HashMap<i32, NetnsLink>,
    /// Pod UID found in the cgroup of a process of the namespace, by netnsid.
    uids: HashMap<i32, String>,
    /// UID → (namespace, name), from the pod log root.
    pod_logs: HashMap<String, (String, String)>,
    /// Addresses of each host veth's peer, by host ifindex.
    peer_addrs: HashMap<u32, Vec<IpAddr>>,
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
async fn gather_namespaces(
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
fn is_uplink(iface: &Interface, routed: &HashMap<u32, Vec<IpAddr>>, facts: &Facts) -> bool {
    !routed.contains_key(&iface.index)
        && facts
            .peer_addrs
            .get(&iface.index)
            .is_some_and(Vec::is_empty)
}

/// Puts the facts together. Pure.
fn assemble(ifaces: &[Interface], routes: &[Route], facts: Facts) -> PodIndex {
    let mut index = PodIndex::default();
    let veths: Vec<&Interface> = ifaces.iter().filter(|i| i.kind == Kind::Veth).collect();
    // Host routes per output interface: a routed pod's IPs.
    let mut routed: HashMap<u32, Vec<IpAddr>> = HashMap::new();
    for route in routes.iter().filter(|r| r.is_pod_route()) {
        if let Some(oif) = route.oif {
            routed.entry(oif).or_default().push(route.dst);
        }
    }
    let ips_of = |iface: &Interface, extra: &[IpAddr]| {
        let mut ips: Vec<IpAddr> = extra.to_vec();
        ips.extend(routed.get(&iface.index).into_iter().flatten());
        ips.extend(facts.peer_addrs.get(&iface.index).into_iter().flatten());
        // Keep the first-seen order (the CNI's own first), drop repeats.
        let mut seen = Vec::new();
        ips.retain(|ip| {
            let new = !seen.contains(ip);
            seen.push(*ip);
            new
        });
        ips
    };
    let link_of = |iface: &Interface| {
        iface
            .peer
            .and_then(|(_, nsid)| facts.netns.get(&nsid))
            .cloned()
    };
    let uid_of = |iface: &Interface| {
        iface
            .peer
            .and_then(|(_, nsid)| facts.uids.get(&nsid))
            .cloned()
    };

    // 1. Azure CNI endpoints naming a pod.
    let mut unmatched = Vec::new();
    for ep in facts.azure.iter().filter(|ep| ep.pod_name.is_some()) {
        let by_name = ep
            .host_if
            .as_deref()
            .and_then(|name| veths.iter().find(|i| i.name == name));
        let by_netns = || {
            let name = Path::new(ep.netns_path.as_deref()?).file_name()?.to_str()?;
            let nsid = facts
                .netns
                .values()
                .find(|l| l.name.as_deref() == Some(name))?
                .nsid;
            veths
                .iter()
                .find(|i| i.peer.is_some_and(|(_, id)| id == nsid))
        };
        let by_route = || {
            veths.iter().find(|i| {
                routed
                    .get(&i.index)
                    .is_some_and(|ips| ep.ips.iter().any(|ip| ips.contains(ip)))
            })
        };
        match by_name.or_else(by_netns).or_else(by_route) {
            Some(iface) if !index.by_ifindex.contains_key(&iface.index) => {
                let pod = PodRef {
                    namespace: ep.pod_namespace.clone(),
                    name: ep.pod_name.clone().unwrap_or_default(),
                    uid: uid_of(iface),
                    ips: ips_of(iface, &ep.ips),
                    host_if: Some(iface.name.clone()),
                    source: SOURCE_AZURE,
                    netns: link_of(iface),
                };
                index.by_ifindex.insert(iface.index, pod);
            }
            _ => unmatched.push(ep),
        }
    }

    // 2. and 3.: every other veth, by its processes' cgroup or by itself —
    // except the node's own uplink.
    for iface in &veths {
        if index.by_ifindex.contains_key(&iface.index) {
            continue;
        }
        let uid = uid_of(iface);
        if uid.is_none() && is_uplink(iface, &routed, &facts) {
            continue;
        }
        let known = uid.as_ref().and_then(|uid| facts.pod_logs.get(uid));
        let pod = PodRef {
            namespace: known.map(|(namespace, _)| namespace.clone()),
            name: known.map_or_else(|| iface.name.clone(), |(_, name)| name.clone()),
            source: if uid.is_some() {
                SOURCE_CGROUP
            } else {
                SOURCE_INTERFACE
            },
            uid,
            ips: ips_of(iface, &[]),
            host_if: Some(iface.name.clone()),
            netns: link_of(iface),
        };
        index.by_ifindex.insert(iface.index, pod);
    }

    // IPs: live interfaces first (lowest ifindex wins a conflict), then
    // Azure endpoints whose interface is gone or unknown.
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
    index
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn iface(index: u32, name: &str, kind: Kind, master: Option<u32>) -> Interface {
        Interface {
            index,
            name: name.into(),
            kind,
            master,
            mac: None,
            peer: None,
        }
    }

    fn veth(index: u32, name: &str, master: Option<u32>, nsid: i32) -> Interface {
        Interface {
            peer: Some((2, nsid)),
            ..iface(index, name, Kind::Veth, master)
        }
    }

    fn host_route(ip: &str, oif: u32, proto: u8) -> Route {
        let dst: IpAddr = ip.parse().unwrap();
        Route {
            prefix_len: if dst.is_ipv4() { 32 } else { 128 },
            dst,
            oif: Some(oif),
            proto,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "tracer-pods-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    // -- datapath ----------------------------------------------------------

    #[test]
    fn bridge_with_veth_ports_is_bridge_mode() {
        let all = vec![
            iface(1, "lo", Kind::Loopback, None),
            iface(2, "eth0", Kind::Other("hv_netvsc".into()), Some(3)),
            iface(3, "azure0", Kind::Bridge, None),
            veth(4, "azv1", Some(3), 0),
            veth(5, "azv2", Some(3), 1),
            iface(6, "docker0", Kind::Bridge, None),
        ];
        let routes = vec![Route {
            dst: ip("10.240.0.0"),
            prefix_len: 16,
            oif: Some(3),
            proto: RTPROT_KERNEL,
        }];
        let info = detect_datapath(&all, &routes);
        assert_eq!(info.mode, NodeDatapath::Bridge);
        assert_eq!(
            info.bridges,
            [BridgeInfo {
                name: "azure0".into(),
                ports: vec!["eth0".into(), "azv1".into(), "azv2".into()],
                veth_ports: 2,
            }],
            "docker0 without ports is no evidence"
        );
        assert!(info.routed_veths.is_empty());
    }

    #[test]
    fn veths_with_host_routes_are_transparent_mode() {
        let all = vec![
            iface(2, "eth0", Kind::Other("hv_netvsc".into()), None),
            veth(7, "azv1", None, 0),
            veth(8, "cali2", None, 1),
            veth(9, "lxc3", None, 2),
        ];
        let routes = vec![
            host_route("10.240.0.7", 7, 4),              // Azure CNI: proto static
            host_route("10.240.0.8", 8, 3),              // Calico: proto boot
            host_route("fd00::9", 9, 4),                 // IPv6 /128
            host_route("10.240.0.4", 2, 4),              // not a veth
            host_route("169.254.1.1", 9, RTPROT_KERNEL), // kernel-derived
        ];
        let info = detect_datapath(&all, &routes);
        assert_eq!(info.mode, NodeDatapath::Transparent);
        assert_eq!(info.routed_veths, ["azv1", "cali2", "lxc3"]);
        assert!(info.bridges.is_empty());
    }

    #[test]
    fn both_is_mixed_and_neither_is_unknown() {
        let all = vec![
            iface(3, "cbr0", Kind::Bridge, None),
            veth(4, "veth1", Some(3), 0),
            veth(5, "veth2", None, 1),
        ];
        let routes = vec![host_route("10.0.0.5", 5, 4)];
        assert_eq!(detect_datapath(&all, &routes).mode, NodeDatapath::Mixed);
        // An unrouted stray veth, a /24 to a veth, a kernel host route:
        // nothing says how pods are wired.
        let routes = vec![
            Route {
                dst: ip("10.0.0.0"),
                prefix_len: 24,
                oif: Some(5),
                proto: 4,
            },
            host_route("10.0.0.9", 5, RTPROT_KERNEL),
        ];
        let all = vec![veth(5, "veth2", None, 1)];
        let info = detect_datapath(&all, &routes);
        assert_eq!(info.mode, NodeDatapath::Unknown);
        assert_eq!(info, DatapathInfo::default());
    }

    #[test]
    fn a_host_route_is_full_length_per_family() {
        let mut r = host_route("10.0.0.1", 1, 4);
        assert!(r.is_host());
        r.prefix_len = 31;
        assert!(!r.is_host());
        let r = Route {
            dst: ip("fd00::1"),
            prefix_len: 32,
            oif: Some(1),
            proto: 4,
        };
        assert!(!r.is_host(), "a /32 in IPv6 is a huge prefix");
    }

    // -- Azure CNI state ---------------------------------------------------

    const AZURE_BRIDGE: &str = include_str!("pods/testdata/azure-vnet-bridge.json");
    const AZURE_TRANSPARENT: &str = include_str!("pods/testdata/azure-vnet-transparent.json");
    const AZURE_TRUNCATED: &str = include_str!("pods/testdata/azure-vnet-truncated.json");
    const AZURE_WRONG_SHAPE: &str = include_str!("pods/testdata/azure-vnet-wrong-shape.json");

    #[test]
    fn parses_bridge_mode_state() {
        let eps = parse_azure_state(AZURE_BRIDGE).unwrap();
        assert_eq!(eps.len(), 3);
        let coredns = eps
            .iter()
            .find(|e| e.pod_name.as_deref() == Some("coredns-6f7d5c9b8-x2kqp"))
            .unwrap();
        assert_eq!(coredns.pod_namespace.as_deref(), Some("kube-system"));
        assert_eq!(coredns.host_if.as_deref(), Some("azv5e1a0c7d2f4"));
        assert_eq!(coredns.ips, [ip("10.240.0.31")]);
        assert_eq!(coredns.mode.as_deref(), Some("bridge"));
        assert_eq!(coredns.bridge.as_deref(), Some("azure0"));
        assert_eq!(coredns.network, "azure");
        assert_eq!(coredns.id, "3f9c2a1b-eth0");
        assert_eq!(
            coredns.netns_path.as_deref(),
            Some("/var/run/netns/cni-5b0e8a9c-0f5e-5f7e-2c44-9d1f0c3a7b21")
        );
        assert!(
            coredns
                .container_id
                .as_deref()
                .unwrap()
                .starts_with("3f9c2a1b")
        );
        // Missing PODName/PODNameSpace, null IPAddresses: still an endpoint.
        let bare = eps.iter().find(|e| e.id == "9a0b1c2d-eth0").unwrap();
        assert_eq!(bare.pod_name, None);
        assert_eq!(bare.pod_namespace, None);
        assert!(bare.ips.is_empty());
    }

    #[test]
    fn parses_transparent_mode_state() {
        let eps = parse_azure_state(AZURE_TRANSPARENT).unwrap();
        assert_eq!(eps.len(), 2);
        assert!(eps.iter().all(|e| e.mode.as_deref() == Some("transparent")));
        assert!(eps.iter().all(|e| e.bridge.is_none()), "BridgeName is \"\"");
        let nginx = eps
            .iter()
            .find(|e| e.pod_name.as_deref() == Some("nginx"))
            .unwrap();
        assert_eq!(nginx.pod_namespace.as_deref(), Some("default"));
        assert_eq!(nginx.host_if.as_deref(), Some("azvc440f455693"));
        // Dual stack: both addresses, in the CNI's order.
        assert_eq!(nginx.ips, [ip("10.224.0.24"), ip("fd00:10:224::18")]);
    }

    #[test]
    fn bad_state_is_a_clear_error_not_a_panic() {
        let err = parse_azure_state(AZURE_TRUNCATED).unwrap_err();
        assert!(matches!(err, AzureStateError::Json(_)), "{err}");
        assert!(err.to_string().starts_with("not valid JSON"), "{err}");
        let err = parse_azure_state(AZURE_WRONG_SHAPE).unwrap_err();
        assert!(err.to_string().contains("\"Network\""), "{err}");
        for text in [
            "[1, 2]",
            "{\"Network\": 3}",
            "{\"Network\": {\"ExternalInterfaces\": []}}",
        ] {
            assert!(
                matches!(parse_azure_state(text), Err(AzureStateError::Layout(_))),
                "{text}"
            );
        }
        // Odd members deep inside are skipped, not fatal.
        let odd = r#"{"Network": {"ExternalInterfaces": {"eth0": {"Networks": {"azure":
            {"Endpoints": {"a": 7, "b": {"PODName": "p", "IPAddresses": [{"IP": 5}, "10.1.2.3/16", {"IP": "bogus"}]}}}}}}}}"#;
        let eps = parse_azure_state(odd).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ips, [ip("10.1.2.3")]);
        // Empty store and empty state: no endpoints.
        assert!(parse_azure_state("  \n").unwrap().is_empty());
        assert!(parse_azure_state("{\"Network\": null}").unwrap().is_empty());
        assert!(
            parse_azure_state("{\"Network\": {\"ExternalInterfaces\": null}}")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reading_state_files() {
        let dir = TempDir::new("azure");
        assert!(
            read_azure_state(&dir.0.join("absent.json"))
                .unwrap()
                .is_none()
        );
        let bad = dir.0.join("azure-vnet.json");
        fs::write(&bad, AZURE_TRUNCATED).unwrap();
        let err = read_azure_state(&bad).unwrap_err();
        assert!(
            err.to_string().contains("azure-vnet.json") && err.to_string().contains("JSON"),
            "{err}"
        );
    }

    #[test]
    fn huge_and_endless_state_files_are_refused_without_reading_them() {
        let dir = TempDir::new("azure-huge");
        let huge = dir.0.join("azure-vnet.json");
        // Sparse: 1 GiB that costs nothing on disk.
        fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
        let err = read_azure_state(&huge).unwrap_err().to_string();
        assert!(
            err.contains("1073741824 bytes") && err.contains("16 MiB"),
            "{err}"
        );
        // A character device reports size 0 and never ends: the cap holds.
        let endless = dir.0.join("endless.json");
        std::os::unix::fs::symlink("/dev/zero", &endless).unwrap();
        let err = read_azure_state(&endless).unwrap_err().to_string();
        assert!(err.contains("over the 16 MiB"), "{err}");
    }

    #[test]
    fn pod_log_symlinks_are_names_only_never_followed() {
        let dir = TempDir::new("pod-log-links");
        let uid = "8d2f1c3e-0b7a-4c61-9f00-4d9c8f6e2a11";
        // A link to a secret outside, one to nowhere, one looping: only the
        // entry names are read, never the targets.
        for (target, name) in [
            ("/etc/shadow", format!("kube-system_coredns-1_{uid}")),
            (
                "/nonexistent",
                "default_web-0_1f0e8d7c-6b5a-4938-8271-605f4e3d2c1b".into(),
            ),
            ("loop", "loop".into()),
        ] {
            std::os::unix::fs::symlink(target, dir.0.join(name)).unwrap();
        }
        let logs = read_pod_logs(&dir.0).unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[uid], ("kube-system".into(), "coredns-1".into()));
        // The root itself a symlink outside: listed like any directory.
        let root_link = dir.0.join("root-link");
        std::os::unix::fs::symlink(&dir.0, &root_link).unwrap();
        assert_eq!(read_pod_logs(&root_link).unwrap().len(), 2);
    }

    // -- cgroups and /var/log/pods -----------------------------------------

    #[test]
    fn pod_uids_from_cgroup_paths() {
        let systemd_v2 = "0::/kubepods.slice/kubepods-burstable.slice/\
            kubepods-burstable-pod8a6f2f52_0c3b_4c4e_9e1d_2b5f7d0c9a11.slice/\
            cri-containerd-0123abcd.scope\n";
        assert_eq!(
            pod_uid_from_cgroup(systemd_v2).as_deref(),
            Some("8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11")
        );
        let guaranteed = "0::/kubepods.slice/kubepods-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-ff.scope";
        assert_eq!(
            pod_uid_from_cgroup(guaranteed).as_deref(),
            Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
        );
        let cgroupfs_v1 = "12:pids:/kubepods/besteffort/pod0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6/4f1c\n\
            11:memory:/kubepods/besteffort/pod0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6/4f1c\n";
        assert_eq!(
            pod_uid_from_cgroup(cgroupfs_v1).as_deref(),
            Some("0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6")
        );
        // Static pods: the UID is a 32-digit config hash.
        let static_pod = "0::/kubepods/burstable/pod5e4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a/abc";
        assert_eq!(
            pod_uid_from_cgroup(static_pod).as_deref(),
            Some("5e4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a")
        );
        // kind/nested kubelet: kubepods below another hierarchy.
        let nested = "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
            kubelet-kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-9.scope";
        assert_eq!(
            pod_uid_from_cgroup(nested).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        for not_a_pod in [
            "0::/",
            "0::/user.slice/user-0.slice/session-3.scope",
            "0::/system.slice/containerd.service",
            "4:memory:/process_api/c29a891d0f8ef79a36fa508fc586cfe6",
            "0::/podman.slice/pod1234.slice", // not under kubepods
            "0::/kubepods.slice/kubepods-burstable.slice",
            "0::/kubepods/burstable/podnot-a-uid/x",
            "garbage without colons",
            "",
        ] {
            assert_eq!(pod_uid_from_cgroup(not_a_pod), None, "{not_a_pod:?}");
        }
    }

    #[test]
    fn pod_log_dirs_name_namespace_pod_and_uid() {
        assert_eq!(
            parse_pod_log_dir(
                "kube-system_coredns-6f7d5c9b8-x2kqp_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11"
            ),
            Some((
                "kube-system".into(),
                "coredns-6f7d5c9b8-x2kqp".into(),
                "8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11".into()
            ))
        );
        for bad in [
            "kube-system_coredns",
            "a_b_c_d",
            "_x_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11",
            "ns_pod_nope",
        ] {
            assert_eq!(parse_pod_log_dir(bad), None, "{bad}");
        }
        let root = TempDir::new("logs");
        for dir in [
            "kube-system_coredns-abc_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11",
            "default_web-0_0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6",
            "lost+found",
        ] {
            fs::create_dir(root.0.join(dir)).unwrap();
        }
        let logs = read_pod_logs(&root.0).unwrap();
        assert_eq!(logs.len(), 2);
        assert_eq!(
            logs["0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"],
            ("default".into(), "web-0".into())
        );
        assert!(read_pod_logs(&root.0.join("absent")).unwrap().is_empty());
    }

    #[test]
    fn namespaces_are_grouped_by_inode() {
        // A fake proc root: the ns/net "links" are plain files here, so
        // their inodes stand in for namespace inodes.
        let proc = TempDir::new("proc");
        let netns = TempDir::new("netns");
        let make = |pid: &str, target: Option<&Path>| {
            let dir = proc.0.join(pid).join("ns");
            fs::create_dir_all(&dir).unwrap();
            match target {
                Some(t) => std::os::unix::fs::symlink(t, dir.join("net")).unwrap(),
                None => fs::write(dir.join("net"), "").unwrap(),
            }
            dir.join("net")
        };
        let a = make("100", None);
        make("102", Some(&a));
        make("101", Some(&a));
        make("200", None);
        fs::create_dir_all(proc.0.join("self")).unwrap(); // not a pid
        fs::create_dir_all(proc.0.join("300")).unwrap(); // no ns: skipped
        std::os::unix::fs::symlink(&a, netns.0.join("cni-1234")).unwrap();
        let groups = scan_namespaces(&proc.0, &netns.0);
        assert_eq!(groups.len(), 2);
        let meta = fs::metadata(&a).unwrap();
        let group_a = &groups[&(meta.dev(), meta.ino())];
        assert_eq!(group_a.pids, [100, 101, 102]);
        assert_eq!(group_a.name.as_deref(), Some("cni-1234"));
        assert_eq!(group_a.handles[0], netns.0.join("cni-1234"));
        assert!(groups.values().any(|g| g.pids == [200] && g.name.is_none()));
    }

    // -- assembly ----------------------------------------------------------

    const UID_WEB: &str = "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6";

    fn link(nsid: i32, name: Option<&str>, pids: &[u32]) -> NetnsLink {
        NetnsLink {
            nsid,
            inode: 4_026_532_000 + u64::try_from(nsid).unwrap(),
            name: name.map(str::to_owned),
            pids: pids.to_vec(),
        }
    }

    #[test]
    fn a_mixed_nodes_uplink_veth_is_no_pod() {
        // Bridge cbr0 with a pod port and the node's uplink veth (its peer
        // has no address), plus a routed pod veth.
        let ifaces = vec![
            iface(3, "cbr0", Kind::Bridge, None),
            veth(4, "veth1", Some(3), 0),
            veth(5, "eth0", Some(3), 1),
            veth(6, "azv2", None, 2),
            veth(7, "azv3", None, 3), // peer unreadable: kept
        ];
        let routes = vec![host_route("10.0.0.6", 6, 4)];
        assert_eq!(detect_datapath(&ifaces, &routes).mode, NodeDatapath::Mixed);
        let mut facts = Facts::default();
        facts.peer_addrs.insert(4, vec![ip("10.0.0.4")]);
        facts.peer_addrs.insert(5, Vec::new());
        facts.peer_addrs.insert(6, Vec::new());
        let index = assemble(&ifaces, &routes, facts);
        assert!(index.pod_of_ifindex(5).is_none(), "the uplink");
        assert_eq!(index.pod_of_ifindex(4).unwrap().label(), "veth1");
        assert_eq!(index.pod_of_ifindex(6).unwrap().ips, [ip("10.0.0.6")]);
        assert!(index.pod_of_ifindex(7).is_some());
    }

    #[test]
    fn azure_first_then_cgroup_then_interface() {
        let ifaces = vec![
            iface(2, "eth0", Kind::Other("hv_netvsc".into()), None),
            veth(10, "azvc440f455693", None, 0), // Azure, by HostIfName
            veth(11, "azv2", None, 1),           // Azure, by netns path
            veth(12, "azv3", None, 2),           // cgroup → /var/log/pods
            veth(13, "azv4", None, 3),           // process, not a pod
            veth(14, "azv5", None, 4),           // nothing known
        ];
        let routes = vec![
            host_route("10.224.0.24", 10, 4),
            host_route("10.224.0.40", 12, 4),
            host_route("10.224.0.50", 14, 4),
        ];
        let mut facts = Facts {
            azure: parse_azure_state(AZURE_TRANSPARENT).unwrap(),
            ..Facts::default()
        };
        // The coredns endpoint lost its HostIfName and azv2 has no route
        // for its IP: only its netns path (cni-aaaa, nsid 1) ties them.
        facts.azure[0].host_if = None;
        facts.netns.insert(1, link(1, Some("cni-aaaa"), &[]));
        facts.netns.insert(2, link(2, None, &[500, 501]));
        facts.netns.insert(3, link(3, Some("lab-pod"), &[600]));
        facts.uids.insert(2, UID_WEB.into());
        facts
            .pod_logs
            .insert(UID_WEB.into(), ("shop".into(), "web-0".into()));
        facts.peer_addrs.insert(12, vec![ip("10.224.0.40")]);
        facts.peer_addrs.insert(13, vec![ip("10.224.0.60")]);

        let index = assemble(&ifaces, &routes, facts);
        assert_eq!(index.len(), 5, "every veth, not eth0");
        assert!(index.pod_of_ifindex(2).is_none());

        let nginx = index.pod_of_ifindex(10).unwrap();
        assert_eq!(nginx.label(), "default/nginx");
        assert_eq!(nginx.source, SOURCE_AZURE);
        assert_eq!(nginx.ips, [ip("10.224.0.24"), ip("fd00:10:224::18")]);
        assert_eq!(index.pod_of_ip(ip("fd00:10:224::18")), Some(nginx));

        let dns = index.pod_of_ifindex(11).unwrap();
        assert_eq!(dns.label(), "kube-system/coredns-597bb9d4db-l9xps");
        assert_eq!(dns.host_if.as_deref(), Some("azv2"));
        assert_eq!(
            dns.netns.as_ref().unwrap().name.as_deref(),
            Some("cni-aaaa")
        );

        let web = index.pod_of_ifindex(12).unwrap();
        assert_eq!(web.label(), "shop/web-0");
        assert_eq!(web.source, SOURCE_CGROUP);
        assert_eq!(web.uid.as_deref(), Some(UID_WEB));
        assert_eq!(web.ips, [ip("10.224.0.40")], "route and address, once");
        assert_eq!(web.netns.as_ref().unwrap().pids, [500, 501]);

        let stray = index.pod_of_ifindex(13).unwrap();
        assert_eq!(stray.label(), "azv4");
        assert_eq!(stray.source, SOURCE_INTERFACE);
        assert_eq!(stray.netns.as_ref().unwrap().pids, [600]);
        assert_eq!(index.pod_of_ip(ip("10.224.0.60")).unwrap().label(), "azv4");

        let bare = index.pod_of_ifindex(14).unwrap();
        assert_eq!(
            (bare.label(), bare.source),
            ("azv5".into(), SOURCE_INTERFACE)
        );
        assert_eq!(bare.ips, [ip("10.224.0.50")]);
        assert!(bare.netns.is_none() && bare.uid.is_none());
    }

    #[test]
    fn azure_endpoints_without_a_live_interface_still_name_their_ips() {
        // Bridge mode: no routes; one endpoint's veth is gone, and a live
        // veth (by cgroup) has since taken one of its IPs.
        let ifaces = vec![
            iface(3, "azure0", Kind::Bridge, None),
            veth(20, "azv5e1a0c7d2f4", Some(3), 0),
            veth(21, "azvnew", Some(3), 1),
        ];
        let mut facts = Facts {
            azure: parse_azure_state(AZURE_BRIDGE).unwrap(),
            ..Facts::default()
        };
        facts.peer_addrs.insert(21, vec![ip("10.240.0.45")]);
        let index = assemble(&ifaces, &[], facts);
        let coredns = index.pod_of_ifindex(20).unwrap();
        assert_eq!(coredns.label(), "kube-system/coredns-6f7d5c9b8-x2kqp");
        assert_eq!(
            index
                .pod_of_ip(ip("10.240.0.31"))
                .unwrap()
                .host_if
                .as_deref(),
            Some("azv5e1a0c7d2f4")
        );
        // konnectivity's veth is gone: its IP still maps to it …
        let gone = index.pod_of_ip(ip("10.240.0.52")).unwrap();
        assert_eq!(gone.label(), "kube-system/konnectivity-agent-7c9d8-abcde");
        assert_eq!(gone.host_if.as_deref(), Some("azv0dead0beef1"));
        // … but the live interface claiming 10.240.0.45 wins over the
        // stale endpoint that listed it too.
        assert_eq!(
            index.pod_of_ip(ip("10.240.0.45")).unwrap().label(),
            "azvnew"
        );
        // The endpoint without a pod name attributes nothing.
        assert_eq!(index.by_ifindex().len(), 2);
    }

    // -- privileged: real namespaces -----------------------------------------
    // They build their nodes with the lab's topology.
    #[cfg(feature = "lab")]
    mod in_namespaces {
        use super::*;

        use crate::{
            interfaces,
            lab::topology::{Datapath, Topology},
            netns,
            privileges::{self, Cap},
        };

        fn privileged(test: &str) -> bool {
            let Some(reason) = privileges::check(&[Cap::NetAdmin, Cap::SysAdmin]) else {
                return true;
            };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test} cannot run: {reason}. Under CI=true a skipped privileged test is a failure."
            );
            eprintln!("SKIPPED {test}: {reason}");
            false
        }

        /// Reads links and routes inside `node` and builds the index there.
        fn detect_in(node: &str, sources: Sources) -> (DatapathInfo, PodIndex, Vec<Interface>) {
            netns::run_in(node, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let all = interfaces::list().await.unwrap();
                    let routes = read_routes().await.unwrap();
                    let info = detect_datapath(&all, &routes);
                    let index = PodIndex::build(&all, &routes, &sources).await;
                    (info, index, all)
                })
            })
            .unwrap()
        }

        fn no_azure(dir: &TempDir) -> Sources {
            Sources {
                azure_state: dir.0.join("azure-vnet.json"),
                pods_log_root: dir.0.join("pods"),
                ..Sources::default()
            }
        }

        /// A process in a pod's namespace; killed (by its PID) on drop.
        struct PodProcess(std::process::Child);

        impl PodProcess {
            fn start(netns: &str) -> Self {
                let child = std::process::Command::new("ip")
                    .args(["netns", "exec", netns, "sleep", "30"])
                    .spawn()
                    .unwrap();
                let pid = child.id();
                let me = PodProcess(child);
                // `ip netns exec` enters the namespace, then execs sleep in the
                // same process: wait for the exec.
                let comm = format!("/proc/{pid}/comm");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while fs::read_to_string(&comm)
                    .map(|c| c.trim() != "sleep")
                    .unwrap_or(true)
                {
                    assert!(std::time::Instant::now() < deadline, "sleep never started");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                me
            }

            fn pid(&self) -> u32 {
                self.0.id()
            }
        }

        impl Drop for PodProcess {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }

        #[test]
        fn lab_transparent_node_is_detected_and_routed_veths_map_to_pod_ips() {
            if !privileged("lab_transparent_node_is_detected_and_routed_veths_map_to_pod_ips") {
                return;
            }
            let topo = Topology::build(Datapath::Transparent, 2).unwrap();
            let dir = TempDir::new("lab-t");
            let (info, index, all) = detect_in(&topo.node, no_azure(&dir));
            assert_eq!(info.mode, NodeDatapath::Transparent, "{info:?}");
            assert!(info.bridges.is_empty());
            let mut expected: Vec<String> = topo.pods.iter().map(|p| p.host_if.clone()).collect();
            expected.sort();
            let mut routed = info.routed_veths.clone();
            routed.sort();
            assert_eq!(routed, expected, "eth0 (the uplink veth) has no /32");
            let uplink = all.iter().find(|i| i.name == "eth0").unwrap();
            assert!(index.pod_of_ifindex(uplink.index).is_none(), "the uplink");
            for pod in &topo.pods {
                let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
                let by_if = index.pod_of_ifindex(host.index).unwrap();
                assert_eq!(by_if.source, SOURCE_INTERFACE, "no pods here: {by_if:?}");
                assert_eq!(by_if.label(), pod.host_if);
                assert_eq!(
                    by_if.ips,
                    [IpAddr::V4(pod.ip)],
                    "route and pod address agree"
                );
                assert_eq!(index.pod_of_ip(IpAddr::V4(pod.ip)), Some(by_if));
                // The pod namespace is named (ip netns), though empty of processes.
                let link = by_if.netns.as_ref().expect("namespace found");
                assert_eq!(link.name.as_deref(), Some(pod.netns.as_str()));
            }
            assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        }

        #[test]
        fn lab_bridge_node_is_detected_and_pod_ips_come_from_the_peers() {
            if !privileged("lab_bridge_node_is_detected_and_pod_ips_come_from_the_peers") {
                return;
            }
            let topo = Topology::build(Datapath::Bridge, 2).unwrap();
            let dir = TempDir::new("lab-b");
            let (info, index, all) = detect_in(&topo.node, no_azure(&dir));
            assert_eq!(info.mode, NodeDatapath::Bridge, "{info:?}");
            assert_eq!(info.bridges.len(), 1);
            let bridge = &info.bridges[0];
            assert_eq!(bridge.name, "azure0");
            // The pods' veths, and the node's eth0 (a veth to the uplink here).
            assert_eq!(bridge.veth_ports, 3);
            for pod in &topo.pods {
                assert!(bridge.ports.contains(&pod.host_if));
                let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
                let by_if = index.pod_of_ifindex(host.index).unwrap();
                assert_eq!(
                    by_if.ips,
                    [IpAddr::V4(pod.ip)],
                    "read from the pod side; warnings: {:?}",
                    index.warnings()
                );
                assert_eq!(
                    index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().host_if,
                    Some(pod.host_if.clone())
                );
            }
            assert!(info.routed_veths.is_empty());
            let uplink = all.iter().find(|i| i.name == "eth0").unwrap();
            assert!(index.pod_of_ifindex(uplink.index).is_none(), "the uplink");
        }

        #[test]
        fn lab_processes_in_a_pod_namespace_are_found() {
            if !privileged("lab_processes_in_a_pod_namespace_are_found") {
                return;
            }
            let topo = Topology::build(Datapath::Transparent, 2).unwrap();
            let pod = &topo.pods[1];
            let sleeper = PodProcess::start(&pod.netns);
            let dir = TempDir::new("lab-p");

            // Real /proc: the sleeper's cgroup is not kubepods, so the pod
            // stays its interface, with the namespace and process linked.
            let (_, index, all) = detect_in(&topo.node, no_azure(&dir));
            let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
            let found = index.pod_of_ifindex(host.index).unwrap();
            assert_eq!(found.source, SOURCE_INTERFACE);
            assert_eq!(found.label(), pod.host_if);
            let link = found
                .netns
                .as_ref()
                .unwrap_or_else(|| panic!("no namespace; warnings: {:?}", index.warnings()));
            assert_eq!(link.nsid, host.peer.unwrap().1);
            assert!(link.pids.contains(&sleeper.pid()), "{link:?}");
            assert_eq!(link.name.as_deref(), Some(pod.netns.as_str()));
            let inode = fs::metadata(format!("/proc/{}/ns/net", sleeper.pid()))
                .unwrap()
                .ino();
            assert_eq!(link.inode, inode);
            let other = index.pod_of_ifindex(
                all.iter()
                    .find(|i| i.name == topo.pods[0].host_if)
                    .unwrap()
                    .index,
            );
            assert!(
                !other
                    .unwrap()
                    .netns
                    .as_ref()
                    .unwrap()
                    .pids
                    .contains(&sleeper.pid())
            );

            // A proc root where that process sits in a kubepods cgroup (its
            // ns/net links to the real one), and the kubelet's log directory:
            // the full veth → netns → process → cgroup → pod chain.
            let proc = TempDir::new("lab-proc");
            let fake_pid = proc.0.join("4242");
            fs::create_dir_all(fake_pid.join("ns")).unwrap();
            std::os::unix::fs::symlink(
                format!("/proc/{}/ns/net", sleeper.pid()),
                fake_pid.join("ns/net"),
            )
            .unwrap();
            fs::write(
            fake_pid.join("cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-1.scope\n",
                UID_WEB.replace('-', "_")
            ),
        )
        .unwrap();
            fs::create_dir_all(dir.0.join("pods").join(format!("shop_web-0_{UID_WEB}"))).unwrap();
            let sources = Sources {
                proc_root: proc.0.clone(),
                netns_dir: dir.0.join("no-named-namespaces"),
                ..no_azure(&dir)
            };
            let (_, index, all) = detect_in(&topo.node, sources);
            let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
            let web = index.pod_of_ifindex(host.index).unwrap();
            assert_eq!(web.label(), "shop/web-0");
            assert_eq!(web.source, SOURCE_CGROUP);
            assert_eq!(web.uid.as_deref(), Some(UID_WEB));
            assert_eq!(web.netns.as_ref().unwrap().pids, [4242]);
            assert_eq!(
                index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().label(),
                "shop/web-0"
            );
            drop(sleeper);
        }

        #[test]
        fn lab_azure_state_names_the_pods() {
            if !privileged("lab_azure_state_names_the_pods") {
                return;
            }
            let topo = Topology::build(Datapath::Transparent, 2).unwrap();
            let dir = TempDir::new("lab-a");
            // Pod 0 by HostIfName; pod 1 by its netns path only.
            let state = serde_json::json!({"Network": {"ExternalInterfaces": {"eth0": {
            "Name": "eth0", "BridgeName": "",
            "Networks": {"azure": {"Id": "azure", "Mode": "transparent", "Endpoints": {
                "aaaa-eth0": {"Id": "aaaa-eth0", "HostIfName": topo.pods[0].host_if,
                    "IPAddresses": [{"IP": topo.pods[0].ip.to_string(), "Mask": "//8AAA=="}],
                    "PODName": "coredns-abc", "PODNameSpace": "kube-system"},
                "bbbb-eth0": {"Id": "bbbb-eth0",
                    "NetworkNameSpace": format!("/var/run/netns/{}", topo.pods[1].netns),
                    "IPAddresses": [{"IP": topo.pods[1].ip.to_string(), "Mask": "//8AAA=="}],
                    "PODName": "web-0", "PODNameSpace": "shop"}
            }}}}}}});
            let sources = Sources {
                azure_state: dir.0.join("azure-vnet.json"),
                ..no_azure(&dir)
            };
            fs::write(&sources.azure_state, state.to_string()).unwrap();
            let (_, index, all) = detect_in(&topo.node, sources);
            for (pod, label) in topo
                .pods
                .iter()
                .zip(["kube-system/coredns-abc", "shop/web-0"])
            {
                let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
                let found = index.pod_of_ifindex(host.index).unwrap();
                assert_eq!(
                    (found.label().as_str(), found.source),
                    (label, SOURCE_AZURE)
                );
                assert_eq!(index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().label(), label);
            }
        }
    }
}
