//! The node's routes, and which datapath its links and routes show.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
    },
};

use crate::{
    interfaces::{Interface, Kind},
    verdict::NodeDatapath,
};

use super::{PodsError, RTPROT_KERNEL};

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
    pub(super) fn is_pod_route(&self) -> bool {
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

pub(super) fn route_of(msg: &RouteMessage) -> Option<Route> {
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
