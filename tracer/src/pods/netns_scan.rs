//! Processes and named namespaces grouped by network namespace, and each
//! group's netnsid as this namespace sees it (no namespace is entered).

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        nsid::{NsidAttribute, NsidMessage},
    },
};

use super::PodsError;

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
pub(super) struct NsGroup {
    pub(super) name: Option<String>,
    pub(super) pids: Vec<u32>,
    /// Files that refer to the namespace; any one can be opened for its id.
    pub(super) handles: Vec<PathBuf>,
}

/// Groups processes (`<proc>/<pid>/ns/net`) and named namespaces
/// (`<netns_dir>/*`) by namespace inode. Unreadable entries are skipped.
pub(super) fn scan_namespaces(proc_root: &Path, netns_dir: &Path) -> BTreeMap<(u64, u64), NsGroup> {
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
pub(super) async fn nsid_of(
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
pub(super) async fn peer_addresses(
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
