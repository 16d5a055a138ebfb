//! Which interfaces of the (current) network namespace carry pod traffic.
//!
//! Read over rtnetlink rather than `/sys/class/net`: sysfs shows the namespace
//! it was mounted in, not the one `--netns` moved us into.

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// What kind of device an interface is, as far as tracer cares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Veth,
    Bridge,
    Loopback,
    Other(String),
}

impl Kind {
    /// The kind as the table and the live view show it: the JSON report's
    /// spelling, and the kernel's own kind for the others (`vxlan`).
    pub fn label(&self) -> &str {
        match self {
            Self::Veth => "veth",
            Self::Bridge => "bridge",
            Self::Loopback => "loopback",
            Self::Other(kind) => kind,
        }
    }
}

/// One interface of the namespace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub kind: Kind,
    /// Index of the bridge (or other controller) this interface is a port of.
    pub master: Option<u32>,
    #[serde(skip)]
    pub mac: Option<[u8; 6]>,
    /// For a veth: the peer's ifindex and the id of the namespace it lives
    /// in, as seen from ours (IFLA_LINK, IFLA_LINK_NETNSID).
    #[serde(skip)]
    pub peer: Option<(u32, i32)>,
}

/// Errors reading interfaces.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("listing links over netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
}

/// Lists every link in the current network namespace.
pub async fn list() -> Result<Vec<Interface>, InterfaceError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    task.abort();
    Ok(links.into_iter().map(from_message).collect())
}

/// An interface from a link message (a dump's or a notification's).
pub fn from_message(msg: LinkMessage) -> Interface {
    let mut iface = Interface {
        index: msg.header.index,
        name: String::new(),
        kind: Kind::Other(String::new()),
        master: None,
        mac: None,
        peer: None,
    };
    let (mut link, mut link_netnsid) = (None, None);
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => iface.name = name,
            LinkAttribute::Controller(index) => iface.master = Some(index),
            LinkAttribute::Address(addr) => iface.mac = <[u8; 6]>::try_from(addr.as_slice()).ok(),
            LinkAttribute::Link(index) => link = Some(index),
            LinkAttribute::LinkNetNsId(id) => link_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        iface.kind = match kind {
                            InfoKind::Veth => Kind::Veth,
                            InfoKind::Bridge => Kind::Bridge,
                            other => Kind::Other(format!("{other:?}").to_lowercase()),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if iface.name == "lo" {
        iface.kind = Kind::Loopback;
    }
    if iface.kind == Kind::Veth
        && let (Some(index), Some(netnsid)) = (link, link_netnsid)
    {
        iface.peer = Some((index, netnsid));
    }
    iface
}

/// MAC addresses of the veth peers (the pods' `eth0`) of `ifaces`, by the
/// host-side ifindex. Asks the kernel for the peer in its own namespace
/// (RTM_GETLINK with IFLA_TARGET_NETNSID, Linux 4.20+), so no namespace
/// has to be entered. Peers that cannot be read are left out.
pub async fn peer_macs(ifaces: &[Interface]) -> Result<Vec<(u32, [u8; 6])>, InterfaceError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let mut out = Vec::new();
    for iface in ifaces {
        let Some((peer, netnsid)) = iface.peer else {
            continue;
        };
        let mut request = handle.link().get().match_index(peer);
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::IfNetnsId(netnsid));
        let reply: Result<Vec<LinkMessage>, _> = request.execute().try_collect().await;
        match reply {
            Ok(messages) => {
                if let Some(mac) = messages.into_iter().find_map(|m| from_message(m).mac) {
                    out.push((iface.index, mac));
                }
            }
            Err(err) => tracing::debug!("peer of {}: {err}", crate::escape::Shown(&iface.name)),
        }
    }
    task.abort();
    Ok(out)
}

/// The interfaces to trace: the named ones if any were given, else every veth
/// (host-side pod ends, bridged or routed) and every bridge with a veth port.
pub fn select(all: &[Interface], wanted: &[String]) -> Result<Vec<Interface>, InterfaceError> {
    if !wanted.is_empty() {
        return wanted
            .iter()
            .map(|name| {
                all.iter()
                    .find(|iface| &iface.name == name)
                    .cloned()
                    .ok_or_else(|| InterfaceError::NoSuchInterface(name.clone()))
            })
            .collect();
    }
    Ok(all
        .iter()
        .filter(|iface| match iface.kind {
            Kind::Veth => true,
            Kind::Bridge => all
                .iter()
                .any(|port| port.kind == Kind::Veth && port.master == Some(iface.index)),
            _ => false,
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn selects_veths_and_bridges_with_veth_ports() {
        let all = vec![
            iface(1, "lo", Kind::Loopback, None),
            iface(2, "azure0", Kind::Bridge, None),
            iface(3, "docker0", Kind::Bridge, None),
            iface(4, "azv1", Kind::Veth, Some(2)),
            iface(5, "eth0", Kind::Other("dummy".into()), Some(2)),
        ];
        let names: Vec<_> = select(&all, &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["azure0", "azv1"]);
        let named = select(&all, &["eth0".into()]).unwrap();
        assert_eq!(named[0].index, 5);
        assert!(matches!(
            select(&all, &["nope".into()]),
            Err(InterfaceError::NoSuchInterface(_))
        ));
    }
}

/// A change of the namespace's links, from the kernel's RTNLGRP_LINK
/// notifications (`ip monitor link`).
#[derive(Clone, Debug)]
pub enum LinkEvent {
    /// A link appeared or changed (new pod veth, enslaved to a bridge, up).
    Changed(Interface),
    /// A link was deleted (pod gone).
    Removed { index: u32, name: String },
}

/// Subscribes to link notifications. The subscription lives as long as the
/// returned receiver is polled by a runtime task.
pub fn monitor() -> Result<tokio::sync::mpsc::UnboundedReceiver<LinkEvent>, InterfaceError> {
    use futures_util::StreamExt as _;
    use rtnetlink::{
        MulticastGroup, packet_core::NetlinkPayload, packet_route::RouteNetlinkMessage,
    };

    let (mut connection, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    // A burst of pods is hundreds of notifications at once; the default
    // buffer overflows (ENOBUFS) and the kernel drops them. 4 MiB holds
    // thousands; the session also re-lists links every tick, so anything
    // still lost is caught up within one.
    {
        use rtnetlink::sys::AsyncSocket as _;
        let _ = connection.socket_mut().socket_mut().set_rx_buf_sz(4 << 20);
    }
    tokio::spawn(connection);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    LinkEvent::Changed(from_message(link))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let iface = from_message(link);
                    LinkEvent::Removed {
                        index: iface.index,
                        name: iface.name,
                    }
                }
                _ => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
