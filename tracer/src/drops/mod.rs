//! Why packets died: the collector side of `tracer-ebpf/src/drops.rs`.
//!
//! The kernel counts each drop of this node's packets by reason, device,
//! protocol and DNS-or-not, and by code location; userspace names the
//! reasons from the running kernel's BTF ([`reasons`]), the locations from
//! `/proc/kallsyms` ([`kallsyms`]), the devices and pods from the node's
//! view, and attaches to each unanswered DNS query the drop seen for its
//! exchange ([`DropsCollector::annotate`]).

pub mod kallsyms;
pub mod reasons;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt as _,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapError, PerCpuHashMap},
};
use serde::Serialize;
use tracer_common::drops::{
    DnsDrop, DnsDropKey, DropKey, DropLocationKey, SCOPE_ALL, SCOPE_DNS, ScopeKey,
};

use self::{kallsyms::Kallsyms, reasons::ReasonTable};
use crate::{
    area::{AreaError, InterfaceState},
    dns::collector::UnansweredReport,
    interfaces::Interface,
    pods::{PodIndex, SOURCE_INTERFACE},
};

/// The hook area's name (`hooks::HOOKS`).
pub const AREA: &str = "drops";

/// Rows of the report's drop table (the most frequent first); the totals
/// count every drop.
pub const ROWS_LISTED: usize = 200;

// IPPROTO_* numbers fit a byte (the IP header's protocol field).
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
const IPPROTO_ICMP: u8 = libc::IPPROTO_ICMP as u8;
const IPPROTO_ICMPV6: u8 = libc::IPPROTO_ICMPV6 as u8;

/// Errors of the drop collector.
#[derive(Debug, thiserror::Error)]
pub enum DropsError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("drop map: {0}")]
    Map(#[from] MapError),
    #[error("network namespace: {0}")]
    Netns(#[source] std::io::Error),
}

/// The namespaces and devices whose drops are this node's: the pods'
/// namespaces and the traced pod ports as a whole, the node's own
/// namespace for DNS only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropScope(BTreeMap<ScopeKey, u8>);

impl DropScope {
    /// The scope of the calling thread's namespace (the traced node's),
    /// its `traced` interfaces and the pods `pods` found.
    pub fn of_node(traced: &[&Interface], pods: &PodIndex) -> Result<Self, DropsError> {
        let node = node_netns()?;
        let mut scope = BTreeMap::new();
        if node != 0 {
            scope.insert(
                ScopeKey {
                    netns: node,
                    ifindex: 0,
                },
                SCOPE_DNS,
            );
            for iface in traced {
                let key = ScopeKey {
                    netns: node,
                    ifindex: iface.index,
                };
                scope.insert(key, SCOPE_ALL);
            }
        }
        for (_, pod) in pods.by_ifindex() {
            if let Some(netns) = pod.netns.as_ref().and_then(|l| u32::try_from(l.inode).ok())
                && netns != node
            {
                scope.insert(ScopeKey { netns, ifindex: 0 }, SCOPE_ALL);
            }
        }
        Ok(Self(scope))
    }

    /// Makes `DROPS_SCOPE` equal to `self`, given what `before` put there.
    fn apply(&self, ebpf: &mut Ebpf, before: &Self) -> Result<(), DropsError> {
        let map = ebpf
            .map_mut("DROPS_SCOPE")
            .ok_or(DropsError::MissingMap("DROPS_SCOPE"))?;
        let mut map: BpfHashMap<_, ScopeKey, u8> = BpfHashMap::try_from(map)?;
        for key in before.0.keys().filter(|k| !self.0.contains_key(k)) {
            map.remove(key)?;
        }
        for (key, value) in &self.0 {
            if before.0.get(key) != Some(value) {
                map.insert(key, value, 0)?;
            }
        }
        Ok(())
    }
}

/// Inode of the calling thread's network namespace.
fn node_netns() -> Result<u32, DropsError> {
    let inode = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(DropsError::Netns)?
        .ino();
    Ok(u32::try_from(inode).unwrap_or(0))
}

/// The drops section of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DropsReport {
    /// Whether this kernel gives drop reasons (v5.17+) and they were traced.
    pub available: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The `drops_kfree_skb` hook: its mechanism, or why it was refused
    /// (empty where it was not tried: before v5.17).
    pub hooks: Vec<crate::hooks::HookStatus>,
    /// Drops of this node's packets with a reason (not NOT_SPECIFIED).
    pub total: u64,
    /// Of which DNS packets (from or to port 53).
    pub dns: u64,
    /// Totals by reason (the kernel's name without `SKB_DROP_REASON_`).
    pub by_reason: BTreeMap<String, u64>,
    /// By reason, device, protocol: the [`ROWS_LISTED`] largest.
    pub rows: Vec<DropRow>,
    pub rows_not_listed: usize,
    /// Where in the kernel, by reason.
    pub locations: Vec<LocationRow>,
}

/// Drops of one (reason, device, protocol, DNS) key.
#[derive(Clone, Debug, Serialize)]
pub struct DropRow {
    pub reason: String,
    pub count: u64,
    /// `pod`: in a pod's namespace; `node`: in the node's (on a pod port,
    /// or a DNS packet anywhere there).
    pub side: &'static str,
    /// The node-side interface: the device itself on the node's side, the
    /// pod's host port on the pod's side.
    pub interface: Option<String>,
    pub pod: Option<String>,
    /// The device the packet was on and its namespace's inode; both 0 for
    /// drops inside a pod whose port vanished (`interface` still names it).
    pub ifindex: u32,
    pub netns: u32,
    pub protocol: &'static str,
    pub dns: bool,
    /// For DNS: `query` (to port 53) or `answer` (from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_packet: Option<&'static str>,
}

/// Drops at one kernel code location.
#[derive(Clone, Debug, Serialize)]
pub struct LocationRow {
    pub reason: String,
    /// `function+0xoffset`.
    pub location: String,
    pub count: u64,
}

/// The drop seen for an unanswered query's exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropSeen {
    pub reason: String,
    /// `query` or `answer`: which packet of the exchange died.
    pub packet: &'static str,
    pub location: String,
    /// Drops of that exchange's packets.
    pub count: u64,
    pub pod: Option<String>,
    pub interface: Option<String>,
}

/// What the collector needs from the session to name devices.
pub struct NodeView<'a> {
    name_of: &'a dyn Fn(u32) -> String,
    pods: &'a PodIndex,
    /// Each pod's namespace inode → its host-side port.
    port_of_netns: HashMap<u64, u32>,
}

impl<'a> NodeView<'a> {
    pub fn new(name_of: &'a dyn Fn(u32) -> String, pods: &'a PodIndex) -> Self {
        let port_of_netns = pods
            .by_ifindex()
            .into_iter()
            .filter_map(|(port, p)| Some((p.netns.as_ref()?.inode, port)))
            .collect();
        Self {
            name_of,
            pods,
            port_of_netns,
        }
    }

    /// (interface, pod) of a drop on `ifindex` in namespace `netns`.
    fn place(&self, node: u32, netns: u32, ifindex: u32) -> (Option<String>, Option<String>) {
        let port = if netns == node {
            Some(ifindex)
        } else {
            self.port_of_netns.get(&u64::from(netns)).copied()
        };
        let pod = port.and_then(|port| Some((port, self.pods.pod_of_ifindex(port)?)));
        let interface = match pod {
            Some((port, _)) => Some((self.name_of)(port)),
            None if netns == node => Some((self.name_of)(ifindex)),
            None => None,
        };
        let pod = pod
            .filter(|(_, p)| p.source != SOURCE_INTERFACE)
            .map(|(_, p)| p.label());
        (interface, pod)
    }
}

/// Reads the drop maps and keeps the scope in step with the node.
#[derive(Debug)]
pub struct DropsCollector {
    reasons: ReasonTable,
    scope: DropScope,
    node: u32,
    kallsyms: Option<Kallsyms>,
    /// Drops counted on the node's vanished ports and in their pods,
    /// whose kernel entries were deleted ([`Self::retire`]); a pod's side
    /// is keyed [`RETIRED_POD_SIDE`] and its former port.
    retired: BTreeMap<DropKey, u64>,
    /// Each pod port's namespace inode, as of the scopes set so far: the
    /// pod index may have forgotten a pod by the time its port vanishes.
    pod_ports: BTreeMap<u32, u32>,
}

/// The namespace of a retired drop that was counted inside a vanished
/// pod: its `ifindex` is then the pod's former port on the node. The
/// pod's own inode is not kept: the kernel reuses namespace inodes, and a
/// new pod's drops must not land on an old port.
pub const RETIRED_POD_SIDE: u32 = u32::MAX;

impl DropsCollector {
    pub fn new(kernel: &crate::kernel::KernelInfo) -> Self {
        Self {
            reasons: kernel.drop_reasons.clone(),
            scope: DropScope::default(),
            node: node_netns().unwrap_or(0),
            kallsyms: None,
            retired: BTreeMap::new(),
            pod_ports: BTreeMap::new(),
        }
    }

    /// Whether drop reasons are traced on this kernel, else why not.
    pub fn available(&self) -> Result<(), String> {
        self.reasons.available()
    }

    /// Points the kernel's filter at the node's current pods and ports.
    pub fn rescope(
        &mut self,
        ebpf: &mut Ebpf,
        traced: &[&Interface],
        pods: &PodIndex,
    ) -> Result<(), DropsError> {
        let scope = DropScope::of_node(traced, pods)?;
        scope.apply(ebpf, &self.scope)?;
        self.scope = scope;
        for (port, pod) in pods.by_ifindex() {
            if let Some(netns) = pod.netns.as_ref().and_then(|l| u32::try_from(l.inode).ok()) {
                self.pod_ports.insert(port, netns);
            }
        }
        Ok(())
    }

    /// The drops section; `hooks` are the area's hook statuses.
    pub fn report(
        &mut self,
        ebpf: &Ebpf,
        hooks: Vec<crate::hooks::HookStatus>,
        view: &NodeView<'_>,
    ) -> Result<DropsReport, DropsError> {
        let attached = match hooks.iter().find(|h| !h.attached) {
            Some(h) => Err(format!(
                "tp_btf kfree_skb refused: {}",
                h.error.as_deref().unwrap_or("unknown error")
            )),
            None => Ok(()),
        };
        if let Err(why) = self.available().and(attached) {
            return Ok(DropsReport {
                unavailable: Some(why),
                hooks,
                ..DropsReport::default()
            });
        }
        let mut counts: BTreeMap<DropKey, u64> = sum_per_cpu(ebpf, "DROPS")?;
        for (key, n) in &self.retired {
            *counts.entry(*key).or_default() += n;
        }
        let mut report = DropsReport {
            available: true,
            hooks,
            ..DropsReport::default()
        };
        let mut rows: Vec<DropRow> = counts
            .iter()
            .map(|(key, &count)| {
                let row = self.row(key, count, view);
                report.total += count;
                if row.dns {
                    report.dns += count;
                }
                *report.by_reason.entry(row.reason.clone()).or_default() += count;
                row
            })
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        report.rows_not_listed = rows.len().saturating_sub(ROWS_LISTED);
        rows.truncate(ROWS_LISTED);
        report.rows = rows;
        report.locations = self.locations(ebpf)?;
        Ok(report)
    }

    /// One row of the table: the reason's name, which side and where.
    fn row(&self, key: &DropKey, count: u64, view: &NodeView<'_>) -> DropRow {
        let reason = self.reasons.name(key.reason);
        let retired_pod = key.netns == RETIRED_POD_SIDE;
        let (interface, pod) = if retired_pod {
            (Some((view.name_of)(key.ifindex)), None)
        } else {
            view.place(self.node, key.netns, key.ifindex)
        };
        DropRow {
            reason,
            count,
            side: if key.netns == self.node {
                "node"
            } else {
                "pod"
            },
            interface,
            pod,
            ifindex: if retired_pod { 0 } else { key.ifindex },
            netns: if retired_pod { 0 } else { key.netns },
            protocol: protocol_name(key.proto),
            dns: key.dns != 0,
            dns_packet: (key.dns != 0).then_some(if key.answer != 0 { "answer" } else { "query" }),
        }
    }

    /// Where in the kernel drops happened, by symbol, the most first.
    fn locations(&mut self, ebpf: &Ebpf) -> Result<Vec<LocationRow>, DropsError> {
        let locations: BTreeMap<DropLocationKey, u64> = sum_per_cpu(ebpf, "DROP_LOCATIONS")?;
        let symbols = symbols(&mut self.kallsyms);
        let mut rows: Vec<LocationRow> = locations
            .iter()
            .map(|(key, &count)| LocationRow {
                reason: self.reasons.name(key.reason),
                location: symbols.describe(key.location),
                count,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.location.cmp(&b.location))
        });
        Ok(rows)
    }
}

/// The kernel's symbols, read at the first use.
fn symbols(slot: &mut Option<Kallsyms>) -> &Kallsyms {
    slot.get_or_insert_with(|| {
        Kallsyms::load().unwrap_or_else(|err| {
            tracing::warn!("/proc/kallsyms: {err}: drop locations shown as addresses");
            Kallsyms::default()
        })
    })
}

impl DropsCollector {
    /// Gives each unanswered query the drop seen for its exchange (same
    /// client address and port, transport and DNS id; the server may differ
    /// when the query died after DNAT).
    pub fn annotate(
        &mut self,
        ebpf: &Ebpf,
        unanswered: &mut [UnansweredReport],
        view: &NodeView<'_>,
    ) -> Result<(), DropsError> {
        if self.available().is_err() || unanswered.is_empty() {
            return Ok(());
        }
        let map = ebpf
            .map("DNS_DROPS")
            .ok_or(DropsError::MissingMap("DNS_DROPS"))?;
        let map: BpfHashMap<_, DnsDropKey, DnsDrop> = BpfHashMap::try_from(map)?;
        let mut seen: HashMap<ExchangeKey, DnsDrop> = HashMap::new();
        for (key, drop) in map.iter().filter_map(Result::ok) {
            let slot = seen.entry(ExchangeKey::of_drop(&key)).or_default();
            if drop.ts_ns >= slot.ts_ns {
                let count = slot.count + drop.count;
                *slot = DnsDrop { count, ..drop };
            }
        }
        for u in unanswered {
            let key = ExchangeKey::of_query(u.query.client, u.query.transport, u.query.id);
            if let Some(d) = seen.get(&key) {
                let (interface, pod) = view.place(self.node, d.netns, d.ifindex);
                u.drop = Some(DropSeen {
                    reason: self.reasons.name(d.reason),
                    packet: if d.answer != 0 { "answer" } else { "query" },
                    location: symbols(&mut self.kallsyms).describe(d.location),
                    count: d.count,
                    pod,
                    interface,
                });
            }
        }
        Ok(())
    }
}

/// A DNS exchange as the client sees it: its socket and the message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ExchangeKey {
    client: IpAddr,
    port: u16,
    proto: u8,
    id: u16,
}

impl ExchangeKey {
    fn of_drop(key: &DnsDropKey) -> Self {
        let client = if key.family == 4 {
            IpAddr::from([key.client[0], key.client[1], key.client[2], key.client[3]])
        } else {
            IpAddr::from(key.client)
        };
        Self {
            client,
            port: key.client_port,
            proto: key.proto,
            id: key.id,
        }
    }

    /// From the query's client, transport and id; TCP ids are not read by
    /// the kernel program (0).
    fn of_query(client: SocketAddr, transport: &str, id: u16) -> Self {
        let (proto, id) = if transport == "tcp" {
            (IPPROTO_TCP, 0)
        } else {
            (IPPROTO_UDP, id)
        };
        Self {
            client: client.ip(),
            port: client.port(),
            proto,
            id,
        }
    }
}

/// A per-CPU hash map's values summed over CPUs.
fn sum_per_cpu<K: aya::Pod + Ord>(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<BTreeMap<K, u64>, DropsError> {
    let map = ebpf.map(name).ok_or(DropsError::MissingMap(name))?;
    let map: PerCpuHashMap<_, K, u64> = PerCpuHashMap::try_from(map)?;
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        *out.entry(key).or_default() += per_cpu.iter().sum::<u64>();
    }
    Ok(out)
}

const fn protocol_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_UDP => "udp",
        IPPROTO_TCP => "tcp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_ICMPV6 => "icmpv6",
        0 => "not_ip",
        _ => "other",
    }
}

impl InterfaceState for DropsCollector {
    fn area(&self) -> &'static str {
        "drops"
    }

    /// Off where `tp_btf/kfree_skb` was refused.
    fn active(&self) -> bool {
        self.available().is_ok()
    }

    /// The node's `ports` vanished: keeps the drops counted on either side
    /// of each (the node's, and its pod's namespace when a scope had it)
    /// and deletes their kernel entries, so pod churn over weeks never
    /// fills `DROPS`. The pod side stays placed on its port.
    fn retire(&mut self, ebpf: &mut Ebpf, ports: &BTreeSet<u32>) -> Result<(), AreaError> {
        let node = self.node;
        // Each vanished port's pod namespace (not the node's own) → the port.
        let pods: BTreeMap<u32, u32> = ports
            .iter()
            .filter_map(|port| Some((self.pod_ports.remove(port)?, *port)))
            .filter(|&(netns, _)| netns != node)
            .collect();
        let map = ebpf
            .map_mut("DROPS")
            .ok_or(DropsError::MissingMap("DROPS"))?;
        let mut map: PerCpuHashMap<_, DropKey, u64> = PerCpuHashMap::try_from(map)?;
        let mut gone = Vec::new();
        for entry in map.iter() {
            let (key, per_cpu) = entry?;
            let kept = if key.netns == node && ports.contains(&key.ifindex) {
                key
            } else if let Some(&ifindex) = pods.get(&key.netns) {
                DropKey {
                    netns: RETIRED_POD_SIDE,
                    ifindex,
                    ..key
                }
            } else {
                continue;
            };
            *self.retired.entry(kept).or_default() += per_cpu.iter().sum::<u64>();
            gone.push(key);
        }
        for key in &gone {
            // Gone already (a racing delete) or not: its count is kept.
            let _ = map.remove(key);
        }
        Ok(())
    }

    /// Merges the drops of the node's vanished port `ifindex` (both sides)
    /// into port `into`.
    fn fold_interface(&mut self, ifindex: u32, into: u32) {
        crate::rekey::fold(
            &mut self.retired,
            |k| k.ifindex == ifindex,
            |k| DropKey { ifindex: into, ..k },
            |total, n| *total += n,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folded_port_keeps_both_sides_counts() {
        let node = 4_026_531_840;
        let key = |netns, ifindex| DropKey {
            reason: 2,
            netns,
            ifindex,
            ..DropKey::default()
        };
        let mut drops = DropsCollector {
            reasons: ReasonTable::default(),
            scope: DropScope::default(),
            node,
            kallsyms: None,
            retired: BTreeMap::from([
                (key(node, 7), 3),
                (key(RETIRED_POD_SIDE, 7), 5),
                (key(RETIRED_POD_SIDE, 8), 1),
                (key(RETIRED_POD_SIDE, 0), 10),
            ]),
            pod_ports: BTreeMap::new(),
        };
        drops.fold_interface(7, 0);
        assert_eq!(
            drops.retired,
            BTreeMap::from([
                (key(node, 0), 3),
                (key(RETIRED_POD_SIDE, 0), 15),
                (key(RETIRED_POD_SIDE, 8), 1),
            ])
        );
    }

    #[test]
    fn a_query_finds_its_exchange_whatever_the_server() {
        let mut key = DnsDropKey {
            client_port: 40000,
            server_port: 53,
            id: 9,
            proto: IPPROTO_UDP,
            family: 4,
            ..DnsDropKey::default()
        };
        key.client[..4].copy_from_slice(&[10, 240, 1, 2]);
        key.server[..4].copy_from_slice(&[10, 240, 1, 9]);
        let addr = |text: &str| text.parse::<std::net::SocketAddr>().unwrap();
        let from_report = ExchangeKey::of_query(addr("10.240.1.2:40000"), "udp", 9);
        assert_eq!(ExchangeKey::of_drop(&key), from_report);
        assert_ne!(
            ExchangeKey::of_drop(&key),
            ExchangeKey::of_query(addr("10.240.1.2:40000"), "udp", 10)
        );
        key.proto = IPPROTO_TCP;
        key.id = 0;
        assert_eq!(
            ExchangeKey::of_drop(&key),
            ExchangeKey::of_query(addr("10.240.1.2:40000"), "tcp", 77)
        );
        key.family = 6;
        key.client = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(
            ExchangeKey::of_drop(&key),
            ExchangeKey::of_query(addr("[fd00::2]:40000"), "tcp", 0)
        );
    }
}
