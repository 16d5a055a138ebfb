//! Flood episodes: when unknown-unicast flooding started and stopped, what
//! was flooded, who paid for it, and why it started.

use std::collections::{BTreeMap, BTreeSet};

use aya::{Ebpf, maps::PerCpuHashMap};
use serde::Serialize;
use tracer_common::flood::{FloodCause, FloodCount, FloodKey, PortFlood, cause, pkt_type};

use super::{
    FloodError,
    cause::{Evidence, FloodCauseReport, mac},
    episode::{Episodes, Flow, rate},
    fdb::{self, FdbEntry},
    read_ports,
    scope::Scope,
};
use crate::{
    area::{AreaError, InterfaceState},
    hooks::HookStatus,
    interfaces::Interface,
    pods::PodIndex,
    ring::{self, Ring},
};

/// Cause events kept (FDB and neighbour changes are rare; this is a bound).
const MAX_CAUSES: usize = 20_000;

impl From<&FloodKey> for Flow {
    fn from(k: &FloodKey) -> Self {
        Self {
            src_mac: k.src_mac,
            dst_mac: k.dst_mac,
            dst_ip: k.dst_ip,
            ip_proto: k.ip_proto,
            dport: k.dport,
        }
    }
}

/// Collects flood counters, cause events and episodes over a trace.
pub struct FloodCollector {
    ring: Ring,
    start_ns: u64,
    ports_base: BTreeMap<u32, PortFlood>,
    /// Final per-port counts of vanished ports, whose kernel entries were
    /// deleted ([`Self::retire`]).
    ports_retired: BTreeMap<u32, PortFlood>,
    episodes: Episodes,
    causes: Vec<FloodCause>,
    causes_dropped: u64,
    /// `FLOOD_FLOWS` (filled by the br_flood hook) at the start.
    bridge_base: BTreeMap<FloodKey, FloodCount>,
    /// Bridge floods that came in on vanished ports: frames and bytes.
    bridge_retired: BTreeMap<FloodKey, FloodCount>,
    /// Which bridges and namespaces the kernel keeps FDB and neighbour
    /// events of.
    scope: Scope,
    fdb_at_start: BTreeMap<[u8; 6], FdbEntry>,
    pods_at_start: BTreeMap<[u8; 6], u32>,
}

impl FloodCollector {
    /// Takes the cause ring out of `ebpf`, limits the cause events to the
    /// node (`traced` interfaces, `pods`' namespaces) and reads the traced
    /// bridges' FDB. `start_ns` is the trace's start (CLOCK_MONOTONIC, the
    /// clock of bpf_ktime_get_ns); `pod_macs` the pods' MACs by host port.
    pub async fn start(
        ebpf: &mut Ebpf,
        start_ns: u64,
        traced: &[Interface],
        pods: &PodIndex,
        pod_macs: &[(u32, [u8; 6])],
    ) -> Result<Self, FloodError> {
        let traced: Vec<&Interface> = traced.iter().collect();
        let scope = Scope::of_node(&traced, pods)?;
        scope.apply(ebpf, &Scope::default())?;
        // After the scope: a removal from now on is seen as an event.
        let fdb_at_start = fdb::snapshot(&scope.bridges).await.unwrap_or_else(|err| {
            tracing::warn!("reading the bridges' FDB: {err}");
            BTreeMap::new()
        });
        let ring = ebpf
            .take_map("FLOOD_CAUSES")
            .ok_or(FloodError::MissingMap("FLOOD_CAUSES"))?;
        let mut collector = Self {
            ring: Ring::new(ring).map_err(|e| FloodError::Ring(e.to_string()))?,
            start_ns,
            ports_base: read_ports(ebpf)?,
            ports_retired: BTreeMap::new(),
            episodes: Episodes::default(),
            causes: Vec::new(),
            causes_dropped: 0,
            bridge_base: read_flows(ebpf, "FLOOD_FLOWS")?
                .into_iter()
                .map(|(k, slots)| (k, sum(&slots)))
                .collect(),
            bridge_retired: BTreeMap::new(),
            scope,
            fdb_at_start,
            pods_at_start: pod_macs.iter().map(|&(port, mac)| (mac, port)).collect(),
        };
        // What was flooded before the trace is the baseline, not an episode.
        for (key, slots) in read_flows(ebpf, "FLOOD_VICTIM_FLOWS")? {
            collector
                .episodes
                .baseline(Flow::from(&key), key.port, &slots);
        }
        Ok(collector)
    }

    /// Follows the node's bridges and pods as they come and go.
    pub fn rescope(
        &mut self,
        ebpf: &mut Ebpf,
        traced: &[&Interface],
        pods: &PodIndex,
    ) -> Result<(), FloodError> {
        let scope = Scope::of_node(traced, pods)?;
        scope.apply(ebpf, &self.scope)?;
        self.scope = scope;
        Ok(())
    }

    /// Waits for cause events and keeps them.
    pub async fn readable(&mut self) -> Result<(), FloodError> {
        self.ring
            .readable()
            .await
            .map_err(|e| FloodError::Ring(e.to_string()))?;
        self.drain();
        Ok(())
    }

    /// Keeps every waiting cause event (up to the bound; the rest counted).
    pub fn drain(&mut self) {
        let (causes, dropped) = (&mut self.causes, &mut self.causes_dropped);
        self.ring
            .drain(|item| match ring::decode::<FloodCause>(item) {
                Some(c) if causes.len() < MAX_CAUSES => causes.push(c),
                _ => *dropped += 1,
            });
    }

    /// Advances episodes to `now_ns` (CLOCK_MONOTONIC): new flooded copies
    /// open or extend one, a flow silent for the episode gap closes it.
    pub fn tick(&mut self, ebpf: &Ebpf, now_ns: u64) -> Result<(), FloodError> {
        for (key, slots) in read_flows(ebpf, "FLOOD_VICTIM_FLOWS")? {
            self.episodes.observe(Flow::from(&key), key.port, &slots);
        }
        self.episodes.close_quiet(now_ns);
        Ok(())
    }

    /// The flood section of the report, at `now_ns`.
    pub fn report(
        &mut self,
        ebpf: &Ebpf,
        now_ns: u64,
        hooks: Vec<HookStatus>,
        name_of: &dyn Fn(u32) -> String,
    ) -> Result<FloodReport, FloodError> {
        self.drain();
        self.tick(ebpf, now_ns)?;
        let episodes = self.episodes_report(name_of);
        let ports = self.ports_report(ebpf, name_of)?;
        let neighbour_failures = self.neighbour_failures();
        let count = |kind| self.causes.iter().filter(|c| c.kind == kind).count() as u64;
        let bridge_floods = self.bridge_floods(ebpf, name_of)?;
        Ok(FloodReport {
            hooks,
            bridge_floods,
            episodes,
            episodes_not_listed: self.episodes.dropped(),
            victims: ports,
            neighbour_failures,
            fdb_deletes: count(cause::FDB_DELETE),
            fdb_learns: count(cause::FDB_UPDATE),
            neighbour_updates: count(cause::NEIGH_UPDATE),
            cause_events_dropped: self.causes_dropped,
            fdb_entries_at_start: self.fdb_at_start.len() as u64,
        })
    }
}

impl FloodCollector {
    /// Every episode, each with its cause.
    fn episodes_report(&self, name_of: &dyn Fn(u32) -> String) -> Vec<FloodEpisode> {
        let secs = |ns: u64| ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let evidence = Evidence {
            causes: &self.causes,
            start_ns: self.start_ns,
            fdb_at_start: &self.fdb_at_start,
            pods_at_start: &self.pods_at_start,
            name_of,
        };
        self.episodes
            .all()
            .into_iter()
            .map(|(flow, open, ongoing)| {
                // Each flooded frame reaches every victim port once: the
                // busiest port's count is the number of frames flooded.
                let packets = open.copies.values().copied().max().unwrap_or(0);
                let duration_s = open.last_ns.saturating_sub(open.start_ns) as f64 / 1e9;
                FloodEpisode {
                    src_mac: mac(&flow.src_mac),
                    dst_mac: mac(&flow.dst_mac),
                    dst_ip: (flow.dst_ip != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(flow.dst_ip).to_string()),
                    protocol: protocol(flow.ip_proto),
                    dport: flow.dport,
                    start_s: secs(open.start_ns),
                    end_s: secs(open.last_ns),
                    duration_s,
                    ongoing,
                    packets,
                    copies: open.copies.values().sum(),
                    bytes_copied: open.bytes,
                    pps: rate(packets, duration_s),
                    victims: open.copies.keys().map(|&p| name_of(p)).collect(),
                    cause: evidence.explain(&flow, open.start_ns, open.last_ns),
                }
            })
            .collect()
    }

    /// Per port, what it received flooded or broadcast (live and retired
    /// ports), the most flooded first.
    fn ports_report(
        &self,
        ebpf: &Ebpf,
        name_of: &dyn Fn(u32) -> String,
    ) -> Result<Vec<PortReport>, FloodError> {
        let now = read_ports(ebpf)?;
        let live = now.iter().map(|(ifindex, total)| {
            let base = self.ports_base.get(ifindex).copied().unwrap_or_default();
            (*ifindex, total.minus(&base))
        });
        let retired = self.ports_retired.iter().map(|(i, c)| (*i, *c));
        let mut ports: Vec<PortReport> = live
            .chain(retired)
            .map(|(ifindex, c)| PortReport {
                interface: name_of(ifindex),
                victim_packets: c.victim_packets,
                victim_bytes: c.victim_bytes,
                broadcast_packets: c.broadcast_packets,
                multicast_packets: c.multicast_packets,
            })
            .filter(|p| p.victim_packets + p.broadcast_packets + p.multicast_packets > 0)
            .collect();
        ports.sort_by_key(|p| std::cmp::Reverse(p.victim_packets));
        Ok(ports)
    }

    /// Neighbour resolutions that failed, per (namespace, interface, address).
    fn neighbour_failures(&self) -> Vec<NeighbourFailure> {
        self.causes
            .iter()
            .filter(|c| c.kind == cause::NEIGH_DEAD || c.kind == cause::NEIGH_FAILED)
            .fold(BTreeMap::<(u32, u32, String), u64>::new(), |mut acc, c| {
                *acc.entry((c.netns, c.ifindex, ip(c))).or_default() += 1;
                acc
            })
            .into_iter()
            .map(|((netns, ifindex, address), count)| NeighbourFailure {
                netns,
                ifindex,
                address,
                count,
            })
            .collect()
    }

    /// What `br_flood` flooded, per flow (live and retired ingress ports),
    /// the most frames first.
    fn bridge_floods(
        &self,
        ebpf: &Ebpf,
        name_of: &dyn Fn(u32) -> String,
    ) -> Result<Vec<BridgeFlood>, FloodError> {
        let live = read_flows(ebpf, "FLOOD_FLOWS")?
            .into_iter()
            .map(|(key, slots)| {
                let (count, base) = (sum(&slots), self.bridge_base.get(&key).copied());
                let base = base.unwrap_or_default();
                let since = FloodCount {
                    packets: count.packets.saturating_sub(base.packets),
                    bytes: count.bytes.saturating_sub(base.bytes),
                    ..count
                };
                (key, since)
            });
        let retired = self.bridge_retired.iter().map(|(k, c)| (*k, *c));
        let mut bridge_floods: Vec<BridgeFlood> = live
            .chain(retired)
            .filter_map(|(key, count)| {
                let frames = count.packets;
                (frames > 0).then(|| BridgeFlood {
                    ingress: name_of(key.port),
                    src_mac: mac(&key.src_mac),
                    dst_mac: mac(&key.dst_mac),
                    dst_ip: (key.dst_ip != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(key.dst_ip).to_string()),
                    protocol: protocol(key.ip_proto),
                    dport: key.dport,
                    frames,
                    bytes: count.bytes,
                })
            })
            .collect();
        bridge_floods.sort_by_key(|f| std::cmp::Reverse(f.frames));
        Ok(bridge_floods)
    }
}

/// Packets and bytes of a flow over CPUs.
fn sum(slots: &[FloodCount]) -> FloodCount {
    slots
        .iter()
        .fold(FloodCount::default(), |acc, s| FloodCount {
            packets: acc.packets + s.packets,
            bytes: acc.bytes + s.bytes,
            ..acc
        })
}

/// Deletes every entry of flow map `name` counted on `port`; returns the
/// unknown-unicast ones with their per-CPU slots (what episodes and bridge
/// floods count).
fn remove_port_flows(
    ebpf: &mut Ebpf,
    name: &'static str,
    ports: &BTreeSet<u32>,
) -> Result<Vec<(FloodKey, Vec<FloodCount>)>, FloodError> {
    let map = ebpf.map_mut(name).ok_or(FloodError::MissingMap(name))?;
    let mut map: PerCpuHashMap<_, FloodKey, FloodCount> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    let mut keys = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        if ports.contains(&key.port) {
            keys.push(key);
            if key.pkt_type == pkt_type::UNICAST {
                out.push((key, per_cpu.iter().copied().collect()));
            }
        }
    }
    for key in &keys {
        let _ = map.remove(key);
    }
    Ok(out)
}

/// Unknown-unicast flows of `name` with their per-CPU slots.
fn read_flows(
    ebpf: &Ebpf,
    name: &'static str,
) -> Result<Vec<(FloodKey, Vec<FloodCount>)>, FloodError> {
    let map = ebpf.map(name).ok_or(FloodError::MissingMap(name))?;
    let map: PerCpuHashMap<_, FloodKey, FloodCount> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        if key.pkt_type == pkt_type::UNICAST {
            out.push((key, per_cpu.iter().copied().collect()));
        }
    }
    Ok(out)
}

fn protocol(ip_proto: u8) -> String {
    match ip_proto {
        IPPROTO_UDP => "udp".into(),
        IPPROTO_TCP => "tcp".into(),
        0 => "non-ip".into(),
        p => format!("proto{p}"),
    }
}

/// IP protocol numbers (include/uapi/linux/in.h).
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn ip(c: &FloodCause) -> String {
    if c.family == 10 {
        std::net::Ipv6Addr::from(c.addr).to_string()
    } else {
        std::net::Ipv4Addr::new(c.addr[0], c.addr[1], c.addr[2], c.addr[3]).to_string()
    }
}

/// The flood section of a report.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub hooks: Vec<HookStatus>,
    /// Unknown-unicast frames the bridge flooded, per flow and ingress
    /// port, counted where it decides to (`br_flood`; empty when that hook
    /// is not attached — see `hooks`). Each frame is copied to every other
    /// port, so these equal what a bystander port receives.
    pub bridge_floods: Vec<BridgeFlood>,
    /// Unknown-unicast flood episodes (broadcast and multicast are not
    /// floods of this kind: they are counted per port in `victims`).
    pub episodes: Vec<FloodEpisode>,
    /// The oldest closed episodes, past the 1 000 listed.
    pub episodes_not_listed: u64,
    /// Per port: flooded unicast copies delivered to a pod that was not the
    /// destination, and broadcast/multicast kept apart.
    pub victims: Vec<PortReport>,
    /// Neighbour resolutions that failed (`neigh_timer_handler` → FAILED,
    /// `neigh_event_send_dead`), by namespace, device and address.
    pub neighbour_failures: Vec<NeighbourFailure>,
    pub fdb_deletes: u64,
    pub fdb_learns: u64,
    pub neighbour_updates: u64,
    pub cause_events_dropped: u64,
    /// Learned and static entries of the traced bridges' FDB when the trace
    /// started (what `deleted_before_trace` and `never_learned` rest on).
    pub fdb_entries_at_start: u64,
}

/// One flooded flow as `br_flood` saw it.
#[derive(Debug, Serialize)]
pub struct BridgeFlood {
    /// The port the frames came in on.
    pub ingress: String,
    pub src_mac: String,
    pub dst_mac: String,
    pub dst_ip: Option<String>,
    pub protocol: String,
    pub dport: u16,
    pub frames: u64,
    /// Bytes per frame summed, Ethernet header included.
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FloodEpisode {
    pub src_mac: String,
    pub dst_mac: String,
    pub dst_ip: Option<String>,
    pub protocol: String,
    pub dport: u16,
    /// Seconds since the trace started.
    pub start_s: f64,
    pub end_s: f64,
    /// From the first to the last flooded frame, seconds.
    pub duration_s: f64,
    pub ongoing: bool,
    /// Frames flooded (copies reaching the busiest victim port).
    pub packets: u64,
    /// Copies delivered to all victim ports together.
    pub copies: u64,
    pub bytes_copied: u64,
    /// Frames per second over the episode, measured over at least
    /// `episode::MIN_RATE_SPAN_S` (a burst shorter than that is its frame
    /// count per second, never an extrapolated rate).
    pub pps: f64,
    pub victims: Vec<String>,
    pub cause: FloodCauseReport,
}

#[derive(Debug, Serialize)]
pub struct PortReport {
    pub interface: String,
    pub victim_packets: u64,
    pub victim_bytes: u64,
    pub broadcast_packets: u64,
    pub multicast_packets: u64,
}

#[derive(Debug, Serialize)]
pub struct NeighbourFailure {
    /// Network namespace inode of the device (a pod's own namespace).
    pub netns: u32,
    pub ifindex: u32,
    pub address: String,
    pub count: u64,
}

impl InterfaceState for FloodCollector {
    fn area(&self) -> &'static str {
        "flood"
    }

    /// `ports` vanished: keeps their final counts and deletes their kernel
    /// entries (per-port counters, their pods' MACs, the flows counted on
    /// them), so pod churn over weeks never fills those maps. Episodes keep
    /// the copies they received.
    fn retire(&mut self, ebpf: &mut Ebpf, ports: &BTreeSet<u32>) -> Result<(), AreaError> {
        let totals = read_ports(ebpf)?;
        for &ifindex in ports {
            if let Some(total) = totals.get(&ifindex) {
                let base = self.ports_base.remove(&ifindex).unwrap_or_default();
                self.ports_retired
                    .entry(ifindex)
                    .or_default()
                    .add(&total.minus(&base));
            }
            super::forget_port(ebpf, ifindex)?;
        }
        for (key, slots) in remove_port_flows(ebpf, "FLOOD_VICTIM_FLOWS", ports)? {
            self.episodes.forget(Flow::from(&key), key.port, &slots);
        }
        for (key, slots) in remove_port_flows(ebpf, "FLOOD_FLOWS", ports)? {
            let (now, base) = (
                sum(&slots),
                self.bridge_base.remove(&key).unwrap_or_default(),
            );
            let total = self.bridge_retired.entry(key).or_default();
            total.packets += now.packets.saturating_sub(base.packets);
            total.bytes += now.bytes.saturating_sub(base.bytes);
        }
        Ok(())
    }

    /// Merges the vanished port `ifindex`'s counts into port `into` (the
    /// report's row of the oldest vanished interfaces).
    fn fold_interface(&mut self, ifindex: u32, into: u32) {
        if let Some(counts) = self.ports_retired.remove(&ifindex) {
            self.ports_retired.entry(into).or_default().add(&counts);
        }
        crate::rekey::fold(
            &mut self.bridge_retired,
            |k| k.port == ifindex,
            |k| FloodKey { port: into, ..k },
            |total, c| {
                total.packets += c.packets;
                total.bytes += c.bytes;
            },
        );
        self.episodes.fold_port(ifindex, into);
    }
}
