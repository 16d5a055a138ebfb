//! Which side of a DNS exchange an observation is on.
//!
//! One exchange crosses several traced interfaces (the client pod's port,
//! the bridge, the DNS server pod's port), and each measures it. Counting
//! every observation counts one exchange two or three times; the figures a
//! finding rests on count it once, where the client is.
//!
//! The kernel records the TC direction of each query (`DnsKey::query_dir`).
//! A query *enters* the node's datapath at the port the client sits behind
//! and *leaves* it at the port in front of the server:
//! - a pod's host-side veth (and any other port: the uplink, a transparent
//!   mode veth): TC ingress is what the device behind it sends, so a query on
//!   ingress comes from the client behind it (client side), a query on
//!   egress is delivered to the server behind it (server side);
//! - the bridge device itself is the host stack's port: its TC egress is what
//!   the host sends into the bridge, its ingress what the bridge hands up to
//!   the host. A query on egress comes from a client on the host (client
//!   side); on ingress it goes to a server on the host (server side).

use serde::Serialize;
use tracer_common::dns::QUERY_INGRESS;

/// Which side of an exchange an observation was made on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The port the client sits behind: the latency the client waits.
    Client,
    /// The port in front of the DNS server: the server's own latency.
    Server,
}

impl Side {
    /// Stable snake_case name (reports, metrics labels).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// The side of an observation on an interface (`bridge`: the bridge device
/// itself) whose query was seen in `query_dir`.
pub const fn side(bridge: bool, query_dir: u8) -> Side {
    if (query_dir == QUERY_INGRESS) != bridge {
        Side::Client
    } else {
        Side::Server
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::dns::QUERY_EGRESS;

    use super::*;

    #[test]
    fn pod_ports_and_the_bridge_see_opposite_sides() {
        // A pod's port: the query it sends is on ingress.
        assert_eq!(side(false, QUERY_INGRESS), Side::Client);
        assert_eq!(side(false, QUERY_EGRESS), Side::Server);
        // The bridge: a host client's query is on egress.
        assert_eq!(side(true, QUERY_EGRESS), Side::Client);
        assert_eq!(side(true, QUERY_INGRESS), Side::Server);
    }
}
