//! Just-in-time bridge setup: Azure CNI in bridge mode creates `azure0` when
//! the first pod arrives, enslaves the node's uplink (`eth0`) to it and moves
//! the uplink's address and default route over (azure-container-networking
//! `network/network_linux.go`, `connectExternalInterface`: the address is
//! deleted from `eth0` first, the routes are re-added on the bridge last).
//! Until then the node has no address and no default route: answers that
//! arrive are dropped, sends fail, and resolvers wait their timeout (5 s).
//!
//! Watched over rtnetlink (links, IPv4 addresses and routes). The kernel
//! does not announce the routes it flushes when a device loses its last
//! address (`fib_disable_ip`, no RTM_DELROUTE), so every address or route
//! notification re-reads the two facts that matter — is a node address
//! present, is there a default route — instead of replaying the messages.
//! Times are CLOCK_MONOTONIC when the notification was read (the probes'
//! clock), so DNS losses can be put on the same time line.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, MulticastGroup, RouteMessageBuilder,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        route::{RouteAttribute, RouteMessage, RouteType},
    },
};
use serde::Serialize;

use crate::{
    dns::{collector::LossTime, exchanges::ExchangeId},
    interfaces::{Interface, Kind},
    watch::monotonic_ns,
};

/// A query whose first send came this long before the window opened is
/// still counted: its answer was in flight when the address went away.
pub const IN_FLIGHT_GRACE_NS: u64 = 1_000_000_000;

/// The main routing table (RT_TABLE_MAIN).
const RT_TABLE_MAIN: u32 = 254;

/// A bridge device that appeared during the trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BridgeCreated {
    pub bridge: String,
    /// Seconds into the trace.
    pub at_s: f64,
}

/// The uplink became a port of a bridge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UplinkEnslaved {
    pub uplink: String,
    pub bridge: String,
    pub at_s: f64,
}

/// A time the node's address or default route was missing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MissingWindow {
    pub start_s: f64,
    /// `None`: still missing when the report was made.
    pub end_s: Option<f64>,
    pub duration_ms: f64,
    /// Of it, the node's address was gone / the default route was gone.
    pub address_missing_ms: f64,
    pub default_route_missing_ms: f64,
    /// DNS queries first sent inside the window (or up to
    /// [`IN_FLIGHT_GRACE_NS`] before it) that were never answered.
    pub queries_lost: u64,
    /// … that were re-sent (answered only after a resolver timeout).
    pub queries_delayed: u64,
}

/// The report section.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BridgeSetupReport {
    /// Whether link/address/route changes were watched (a failed netlink
    /// subscription leaves this false and the rest empty).
    pub watched: bool,
    /// The interface that held the default route when the trace started.
    pub uplink: Option<String>,
    /// Its IPv4 addresses then: the node's addresses.
    pub node_addresses: Vec<String>,
    /// Bridges that already existed when the trace started (a setup that
    /// happened before it cannot be seen).
    pub bridges_at_start: Vec<String>,
    pub bridges_created: Vec<BridgeCreated>,
    pub uplink_enslaved: Vec<UplinkEnslaved>,
    pub windows: Vec<MissingWindow>,
    /// Over every window, each query once.
    pub queries_lost: u64,
    pub queries_delayed: u64,
}

impl BridgeSetupReport {
    /// Anything of a bridge setup seen during the trace.
    pub fn happened(&self) -> bool {
        !self.bridges_created.is_empty()
            || !self.uplink_enslaved.is_empty()
            || !self.windows.is_empty()
    }

    /// Longest window, ms.
    pub fn longest_window_ms(&self) -> f64 {
        self.windows
            .iter()
            .map(|w| w.duration_ms)
            .fold(0.0, f64::max)
    }
}

/// The time line the watcher builds (times: CLOCK_MONOTONIC ns).
#[derive(Debug, Default)]
struct Timeline {
    start_ns: u64,
    uplink: Option<(u32, String)>,
    node_addresses: Vec<Ipv4Addr>,
    bridges_at_start: Vec<String>,
    /// Bridges by ifindex, with names.
    bridges: BTreeMap<u32, String>,
    uplink_master: Option<u32>,
    created: Vec<(u64, String)>,
    enslaved: Vec<(u64, String)>,
    /// Closed windows: (start, end, address missing ns, route missing ns).
    windows: Vec<(u64, u64, u64, u64)>,
    open: Option<OpenWindow>,
}

#[derive(Debug, Clone, Copy)]
struct OpenWindow {
    start_ns: u64,
    address_gone: Option<u64>,
    route_gone: Option<u64>,
    address_ns: u64,
    route_ns: u64,
}

impl Timeline {
    /// Applies "address present / default route present" at `now`.
    fn state(&mut self, now: u64, has_address: bool, has_route: bool) {
        if self.open.is_none() && (!has_address || !has_route) {
            self.open = Some(OpenWindow {
                start_ns: now,
                address_gone: None,
                route_gone: None,
                address_ns: 0,
                route_ns: 0,
            });
        }
        let Some(w) = &mut self.open else {
            return;
        };
        track(&mut w.address_gone, &mut w.address_ns, has_address, now);
        track(&mut w.route_gone, &mut w.route_ns, has_route, now);
        if has_address && has_route {
            self.windows
                .push((w.start_ns, now, w.address_ns, w.route_ns));
            self.open = None;
        }
    }

    /// A notification about one of the node's addresses (a node with
    /// thousands of pod routes must not re-read its tables for each).
    fn concerns_address(&self, m: &AddressMessage) -> bool {
        m.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(IpAddr::V4(v4)) if self.node_addresses.contains(v4))
        })
    }

    /// A notification about a default route, or any route change while a
    /// window is open (the kernel's own flush sends none).
    fn concerns_route(&self, m: &RouteMessage) -> bool {
        !self.node_addresses.is_empty()
            && (m.header.destination_prefix_length == 0 || self.open.is_some())
    }

    fn link(&mut self, now: u64, iface: &Interface) {
        if iface.kind == Kind::Bridge && !self.bridges.contains_key(&iface.index) {
            self.bridges.insert(iface.index, iface.name.clone());
            self.created.push((now, iface.name.clone()));
        }
        if self.uplink.as_ref().is_some_and(|(i, _)| *i == iface.index)
            && iface.master != self.uplink_master
        {
            self.uplink_master = iface.master;
            if let Some(master) = iface.master {
                let name = self
                    .bridges
                    .get(&master)
                    .cloned()
                    .unwrap_or_else(|| format!("if{master}"));
                self.enslaved.push((now, name));
            }
        }
    }

    fn report(&self, now: u64, losses: &[LossTime]) -> BridgeSetupReport {
        let secs = |ns: u64| ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut spans: Vec<(u64, Option<u64>, u64, u64)> = self
            .windows
            .iter()
            .map(|&(s, e, a, r)| (s, Some(e), a, r))
            .collect();
        if let Some(w) = self.open {
            let mut open = w;
            track(&mut open.address_gone, &mut open.address_ns, true, now);
            track(&mut open.route_gone, &mut open.route_ns, true, now);
            spans.push((w.start_ns, None, open.address_ns, open.route_ns));
        }
        let mut all_lost = BTreeSet::new();
        let mut all_delayed = BTreeSet::new();
        let windows = spans
            .into_iter()
            .map(|(start, end, address_ns, route_ns)| {
                let (lost, delayed) = affected(losses, start, end.unwrap_or(now));
                all_lost.extend(lost.iter().copied());
                all_delayed.extend(delayed.iter().copied());
                MissingWindow {
                    start_s: secs(start),
                    end_s: end.map(secs),
                    duration_ms: ms(end.unwrap_or(now).saturating_sub(start)),
                    address_missing_ms: ms(address_ns),
                    default_route_missing_ms: ms(route_ns),
                    queries_lost: lost.len() as u64,
                    queries_delayed: delayed.len() as u64,
                }
            })
            .collect();
        all_delayed.retain(|id| !all_lost.contains(id));
        let uplink = self.uplink.as_ref().map(|(_, n)| n.clone());
        BridgeSetupReport {
            watched: true,
            node_addresses: self
                .node_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            bridges_at_start: self.bridges_at_start.clone(),
            bridges_created: self
                .created
                .iter()
                .map(|(t, b)| BridgeCreated {
                    bridge: b.clone(),
                    at_s: secs(*t),
                })
                .collect(),
            uplink_enslaved: self
                .enslaved
                .iter()
                .map(|(t, b)| UplinkEnslaved {
                    uplink: uplink.clone().unwrap_or_default(),
                    bridge: b.clone(),
                    at_s: secs(*t),
                })
                .collect(),
            uplink,
            windows,
            queries_lost: all_lost.len() as u64,
            queries_delayed: all_delayed.len() as u64,
        }
    }
}

/// Adds the time a fact was missing: `gone` holds since when.
fn track(gone: &mut Option<u64>, total: &mut u64, present: bool, now: u64) {
    match (*gone, present) {
        (None, false) => *gone = Some(now),
        (Some(since), true) => {
            *total += now.saturating_sub(since);
            *gone = None;
        }
        _ => {}
    }
}

/// The distinct queries first sent in `[start - grace, end]`: (never
/// answered, re-sent but not abandoned).
fn affected(
    losses: &[LossTime],
    start: u64,
    end: u64,
) -> (BTreeSet<ExchangeId>, BTreeSet<ExchangeId>) {
    let from = start.saturating_sub(IN_FLIGHT_GRACE_NS);
    let mut lost = BTreeSet::new();
    let mut delayed = BTreeSet::new();
    for l in losses
        .iter()
        .filter(|l| (from..=end).contains(&l.first_send_ns))
    {
        if l.never_answered {
            lost.insert(l.exchange);
        } else {
            delayed.insert(l.exchange);
        }
    }
    delayed.retain(|id| !lost.contains(id));
    (lost, delayed)
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum BridgeSetupError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("reading links, addresses or routes: {0}")]
    Netlink(#[from] rtnetlink::Error),
}

/// Watches the namespace for a bridge setup until dropped.
pub struct Watcher {
    timeline: Arc<Mutex<Timeline>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Subscribes (before reading the starting state, so nothing in between
    /// is missed) and starts following.
    pub async fn start() -> Result<Self, BridgeSetupError> {
        let (connection, handle, mut messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv4Route,
        ])?;
        tokio::spawn(connection);
        let now = monotonic_ns();
        let links = crate::interfaces::list().await.unwrap_or_default();
        let routes = default_routes(&handle).await?;
        let uplink = routes
            .first()
            .and_then(|oif| links.iter().find(|l| l.index == *oif))
            .or_else(|| links.iter().find(|l| l.name == "eth0"));
        let addresses = ipv4_addresses(&handle).await?;
        let mut timeline = Timeline {
            start_ns: now,
            uplink: uplink.map(|u| (u.index, u.name.clone())),
            uplink_master: uplink.and_then(|u| u.master),
            node_addresses: uplink
                .map(|u| {
                    addresses
                        .iter()
                        .filter(|(i, _)| *i == u.index)
                        .map(|(_, a)| *a)
                        .collect()
                })
                .unwrap_or_default(),
            ..Timeline::default()
        };
        for bridge in links.iter().filter(|l| l.kind == Kind::Bridge) {
            timeline.bridges.insert(bridge.index, bridge.name.clone());
            timeline.bridges_at_start.push(bridge.name.clone());
        }
        let timeline = Arc::new(Mutex::new(timeline));
        let shared = Arc::clone(&timeline);
        let task = tokio::spawn(async move {
            while let Some((message, _)) = messages.next().await {
                let now = monotonic_ns();
                let NetlinkPayload::InnerMessage(inner) = message.payload else {
                    continue;
                };
                match inner {
                    RouteNetlinkMessage::NewLink(link) => {
                        let iface = crate::interfaces::from_message(link);
                        lock(&shared).link(now, &iface);
                    }
                    RouteNetlinkMessage::DelLink(link) => {
                        lock(&shared).bridges.remove(&link.header.index);
                    }
                    RouteNetlinkMessage::NewAddress(m) | RouteNetlinkMessage::DelAddress(m)
                        if lock(&shared).concerns_address(&m) =>
                    {
                        refresh(&shared, &handle, now).await;
                    }
                    RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m)
                        if lock(&shared).concerns_route(&m) =>
                    {
                        refresh(&shared, &handle, now).await;
                    }
                    _ => {}
                }
            }
        });
        Ok(Self { timeline, task })
    }

    /// The section of the report, with the DNS losses put on the time line.
    pub fn report(&self, losses: &[LossTime]) -> BridgeSetupReport {
        lock(&self.timeline).report(monotonic_ns(), losses)
    }
}

/// Re-reads whether a node address and a default route are present.
async fn refresh(shared: &Mutex<Timeline>, handle: &Handle, now: u64) {
    let wanted = lock(shared).node_addresses.clone();
    let (Ok(addrs), Ok(routes)) = (ipv4_addresses(handle).await, default_routes(handle).await)
    else {
        return;
    };
    let has_address = addrs.iter().any(|(_, a)| wanted.contains(a));
    lock(shared).state(now, has_address, !routes.is_empty());
}

fn lock(t: &Mutex<Timeline>) -> std::sync::MutexGuard<'_, Timeline> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// IPv4 addresses of the namespace: (ifindex, address).
async fn ipv4_addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Addr)>, rtnetlink::Error> {
    let messages: Vec<AddressMessage> = handle.address().get().execute().try_collect().await?;
    Ok(messages
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) => Some((m.header.index, *v4)),
                _ => None,
            })
        })
        .collect())
}

/// Output interfaces of the IPv4 default routes of the main table.
async fn default_routes(handle: &Handle) -> Result<Vec<u32>, rtnetlink::Error> {
    let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let messages: Vec<RouteMessage> = handle.route().get(request).execute().try_collect().await?;
    Ok(messages
        .iter()
        .filter(|m| m.header.destination_prefix_length == 0 && m.header.kind == RouteType::Unicast)
        .filter(|m| table(m) == RT_TABLE_MAIN)
        .map(|m| {
            m.attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
                .unwrap_or(0)
        })
        .collect())
}

fn table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16) -> ExchangeId {
        ExchangeId {
            family: 4,
            client: [0; 16],
            client_port: port,
            proto: 17,
            id: 1,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_window_spans_from_the_first_missing_fact_to_both_back() {
        let mut t = Timeline {
            start_ns: 10 * S,
            ..Timeline::default()
        };
        t.state(11 * S, true, true);
        t.state(12 * S, false, false); // address deleted: routes flushed
        t.state(12 * S + 300_000_000, true, false); // address on the bridge
        t.state(12 * S + 310_000_000, true, true); // default route re-added
        let losses = [
            // In flight when the window opened: answered after a re-send.
            LossTime {
                exchange: id(1),
                first_send_ns: 12 * S - 40_000_000,
                never_answered: false,
            },
            // Re-sent, then abandoned: lost (counted once).
            LossTime {
                exchange: id(2),
                first_send_ns: 12 * S + 100,
                never_answered: false,
            },
            LossTime {
                exchange: id(2),
                first_send_ns: 12 * S + 100,
                never_answered: true,
            },
            // Long after: not the setup's.
            LossTime {
                exchange: id(3),
                first_send_ns: 20 * S,
                never_answered: false,
            },
        ];
        let r = t.report(30 * S, &losses);
        assert_eq!(r.windows.len(), 1);
        let w = &r.windows[0];
        assert_eq!(w.start_s, 2.0);
        assert!((w.duration_ms - 310.0).abs() < 1e-6);
        assert!((w.address_missing_ms - 300.0).abs() < 1e-6);
        assert!((w.default_route_missing_ms - 310.0).abs() < 1e-6);
        assert_eq!((w.queries_lost, w.queries_delayed), (1, 1));
        assert_eq!((r.queries_lost, r.queries_delayed), (1, 1));
        assert!(r.happened());
    }

    #[test]
    fn bridge_creation_and_enslavement_are_recorded_once() {
        let mut t = Timeline {
            uplink: Some((2, "eth0".into())),
            ..Timeline::default()
        };
        let bridge = Interface {
            index: 7,
            name: "azure0".into(),
            kind: Kind::Bridge,
            master: None,
            mac: None,
            peer: None,
        };
        t.link(S, &bridge);
        t.link(2 * S, &bridge);
        let eth0 = Interface {
            index: 2,
            name: "eth0".into(),
            kind: Kind::Veth,
            master: Some(7),
            mac: None,
            peer: None,
        };
        t.link(3 * S, &eth0);
        t.link(4 * S, &eth0);
        let r = t.report(5 * S, &[]);
        assert_eq!(r.bridges_created.len(), 1);
        assert_eq!(r.uplink_enslaved.len(), 1);
        assert_eq!(r.uplink_enslaved[0].bridge, "azure0");
        assert!(r.windows.is_empty());
    }

    #[test]
    fn nothing_seen_is_not_a_setup() {
        let t = Timeline::default();
        let r = t.report(S, &[]);
        assert!(!r.happened());
    }
}
