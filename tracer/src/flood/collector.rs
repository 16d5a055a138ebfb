//! Flood episodes: when unknown-unicast flooding started and stopped, what
//! was flooded, who paid for it, and why it started.

use std::collections::{BTreeMap, BTreeSet};

use aya::{Ebpf, maps::PerCpuHashMap};
use serde::Serialize;
use tracer_common::flood::{FloodCause, FloodCount, FloodKey, PortFlood, cause, pkt_type};

use super::{FloodError, read_ports};
use crate::{
    hooks::HookStatus,
    ring::{self, Ring},
};

/// Cause events kept (FDB and neighbour changes are rare; this is a bound).
const MAX_CAUSES: usize = 20_000;

/// A flow as the report shows it (no port: a flood reaches many).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Flow {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    dst_ip: [u8; 4],
    ip_proto: u8,
    dport: u16,
}

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

#[derive(Clone, Debug, Default)]
struct Open {
    start_ns: u64,
    last_ns: u64,
    /// Copies per victim port.
    copies: BTreeMap<u32, u64>,
    bytes: u64,
}

/// Collects flood counters, cause events and episodes over a trace.
pub struct FloodCollector {
    ring: Ring,
    start_ns: u64,
    ports_base: BTreeMap<u32, PortFlood>,
    /// Last seen per-port totals of each victim flow.
    seen: BTreeMap<(Flow, u32), FloodCount>,
    open: BTreeMap<Flow, Open>,
    closed: Vec<(Flow, Open)>,
    causes: Vec<FloodCause>,
    causes_dropped: u64,
    /// `FLOOD_FLOWS` (filled by the br_flood hook) at the start.
    bridge_base: BTreeMap<FloodKey, FloodCount>,
}

impl FloodCollector {
    /// Takes the cause ring out of `ebpf`; `start_ns` is the trace's start
    /// (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns).
    pub fn new(ebpf: &mut Ebpf, start_ns: u64) -> Result<Self, FloodError> {
        let ring = ebpf
            .take_map("FLOOD_CAUSES")
            .ok_or(FloodError::MissingMap("FLOOD_CAUSES"))?;
        let mut collector = Self {
            ring: Ring::new(ring).map_err(|e| FloodError::Ring(e.to_string()))?,
            start_ns,
            ports_base: read_ports(ebpf)?,
            seen: BTreeMap::new(),
            open: BTreeMap::new(),
            closed: Vec::new(),
            causes: Vec::new(),
            causes_dropped: 0,
            bridge_base: read_flows(ebpf, "FLOOD_FLOWS")?.into_iter().collect(),
        };
        // What was flooded before the trace is the baseline, not an episode.
        for (key, count) in read_flows(ebpf, "FLOOD_VICTIM_FLOWS")? {
            collector.seen.insert((Flow::from(&key), key.port), count);
        }
        Ok(collector)
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

    /// Advances episodes: a flow with new flooded copies since the last tick
    /// opens or extends an episode; one without closes it.
    pub fn tick(&mut self, ebpf: &Ebpf) -> Result<(), FloodError> {
        let mut active: BTreeSet<Flow> = BTreeSet::new();
        for (key, count) in read_flows(ebpf, "FLOOD_VICTIM_FLOWS")? {
            let flow = Flow::from(&key);
            let before = self
                .seen
                .insert((flow, key.port), count)
                .unwrap_or_default();
            let new = count.packets.saturating_sub(before.packets);
            if new == 0 {
                continue;
            }
            active.insert(flow);
            let episode = self.open.entry(flow).or_insert_with(|| Open {
                // A flow never seen before started at its first packet; one
                // seen before restarted after the previous tick.
                start_ns: if before.packets == 0 {
                    count.first_ns
                } else {
                    before.last_ns
                },
                ..Open::default()
            });
            *episode.copies.entry(key.port).or_default() += new;
            episode.bytes += count.bytes.saturating_sub(before.bytes);
            episode.last_ns = episode.last_ns.max(count.last_ns);
        }
        let ended: Vec<Flow> = self
            .open
            .keys()
            .filter(|f| !active.contains(f))
            .copied()
            .collect();
        for flow in ended {
            if let Some(open) = self.open.remove(&flow) {
                self.closed.push((flow, open));
            }
        }
        Ok(())
    }

    /// The flood section of the report.
    pub fn report(
        &mut self,
        ebpf: &Ebpf,
        hooks: Vec<HookStatus>,
        name_of: &dyn Fn(u32) -> String,
    ) -> Result<FloodReport, FloodError> {
        self.drain();
        self.tick(ebpf)?;
        let mut episodes: Vec<(Flow, Open, bool)> = self
            .closed
            .iter()
            .map(|(f, o)| (*f, o.clone(), false))
            .collect();
        episodes.extend(self.open.iter().map(|(f, o)| (*f, o.clone(), true)));
        episodes.sort_by_key(|(_, o, _)| o.start_ns);
        let secs = |ns: u64| ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let episodes = episodes
            .into_iter()
            .map(|(flow, open, ongoing)| {
                // Each flooded frame reaches every victim port once: the
                // busiest port's count is the number of frames flooded.
                let packets = open.copies.values().copied().max().unwrap_or(0);
                let duration = open.last_ns.saturating_sub(open.start_ns) as f64 / 1e9;
                FloodEpisode {
                    src_mac: mac(&flow.src_mac),
                    dst_mac: mac(&flow.dst_mac),
                    dst_ip: (flow.dst_ip != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(flow.dst_ip).to_string()),
                    protocol: protocol(flow.ip_proto),
                    dport: flow.dport,
                    start_s: secs(open.start_ns),
                    end_s: secs(open.last_ns),
                    ongoing,
                    packets,
                    copies: open.copies.values().sum(),
                    bytes_copied: open.bytes,
                    pps: if duration > 0.0 {
                        packets as f64 / duration
                    } else {
                        packets as f64
                    },
                    victims: open.copies.keys().map(|&p| name_of(p)).collect(),
                    cause: self.cause_of(&flow, open.start_ns, open.last_ns, name_of),
                }
            })
            .collect();
        let now = read_ports(ebpf)?;
        let mut ports: Vec<PortReport> = now
            .iter()
            .map(|(ifindex, total)| {
                let base = self.ports_base.get(ifindex).copied().unwrap_or_default();
                PortReport {
                    interface: name_of(*ifindex),
                    victim_packets: total.victim_packets - base.victim_packets,
                    victim_bytes: total.victim_bytes - base.victim_bytes,
                    broadcast_packets: total.broadcast_packets - base.broadcast_packets,
                    multicast_packets: total.multicast_packets - base.multicast_packets,
                }
            })
            .filter(|p| p.victim_packets + p.broadcast_packets + p.multicast_packets > 0)
            .collect();
        ports.sort_by_key(|p| std::cmp::Reverse(p.victim_packets));
        let neighbour_failures = self
            .causes
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
            .collect();
        let count = |kind| self.causes.iter().filter(|c| c.kind == kind).count() as u64;
        let mut bridge_floods: Vec<BridgeFlood> = read_flows(ebpf, "FLOOD_FLOWS")?
            .into_iter()
            .filter_map(|(key, count)| {
                let base = self.bridge_base.get(&key).copied().unwrap_or_default();
                let frames = count.packets.saturating_sub(base.packets);
                (frames > 0).then(|| BridgeFlood {
                    ingress: name_of(key.port),
                    src_mac: mac(&key.src_mac),
                    dst_mac: mac(&key.dst_mac),
                    dst_ip: (key.dst_ip != [0; 4])
                        .then(|| std::net::Ipv4Addr::from(key.dst_ip).to_string()),
                    protocol: protocol(key.ip_proto),
                    dport: key.dport,
                    frames,
                    bytes: count.bytes.saturating_sub(base.bytes),
                })
            })
            .collect();
        bridge_floods.sort_by_key(|f| std::cmp::Reverse(f.frames));
        Ok(FloodReport {
            hooks,
            bridge_floods,
            episodes,
            victims: ports,
            neighbour_failures,
            fdb_deletes: count(cause::FDB_DELETE),
            fdb_learns: count(cause::FDB_UPDATE),
            neighbour_updates: count(cause::NEIGH_UPDATE),
            cause_events_dropped: self.causes_dropped,
        })
    }

    /// Why a flood of `flow` started at `start_ns`: the latest FDB removal
    /// of its destination MAC, else a failed neighbour resolution of its
    /// destination IP, before the start.
    fn cause_of(
        &self,
        flow: &Flow,
        start_ns: u64,
        end_ns: u64,
        name_of: &dyn Fn(u32) -> String,
    ) -> FloodCauseReport {
        // The bridge floods as soon as an entry has *expired*, but deletes it
        // (and fires fdb_delete) only when its garbage collection runs, up to
        // an ageing interval later: a delete before the episode ends counts.
        let before =
            |c: &&FloodCause| c.ts_ns <= end_ns.max(start_ns.saturating_add(1_000_000_000));
        let fdb = self
            .causes
            .iter()
            .filter(before)
            .filter(|c| c.kind == cause::FDB_DELETE && c.mac == flow.dst_mac)
            .max_by_key(|c| c.ts_ns);
        if let Some(c) = fdb {
            return FloodCauseReport {
                kind: "fdb_entry_removed",
                at_s: Some(c.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9),
                detail: format!(
                    "the bridge forgot {} (was on {}): aged out or flushed; it floods until the MAC is learned again",
                    mac(&c.mac),
                    name_of(c.ifindex)
                ),
            };
        }
        let dead = self
            .causes
            .iter()
            .filter(before)
            .filter(|c| {
                (c.kind == cause::NEIGH_DEAD || c.kind == cause::NEIGH_FAILED)
                    && c.family == 2
                    && c.addr[..4] == flow.dst_ip
            })
            .max_by_key(|c| c.ts_ns);
        if let Some(c) = dead {
            return FloodCauseReport {
                kind: "neighbour_failed",
                at_s: Some(c.ts_ns.saturating_sub(self.start_ns) as f64 / 1e9),
                detail: format!("ARP for {} failed", ip(c)),
            };
        }
        let relearned = self
            .causes
            .iter()
            .any(|c| c.kind == cause::FDB_UPDATE && c.mac == flow.dst_mac);
        FloodCauseReport {
            kind: if relearned {
                "not_learned_yet"
            } else {
                "never_learned"
            },
            at_s: None,
            detail: format!(
                "{} was not in the bridge's FDB when the flood started (no removal seen during the trace)",
                mac(&flow.dst_mac)
            ),
        }
    }
}

fn read_flows(ebpf: &Ebpf, name: &'static str) -> Result<Vec<(FloodKey, FloodCount)>, FloodError> {
    let map = ebpf.map(name).ok_or(FloodError::MissingMap(name))?;
    let map: PerCpuHashMap<_, FloodKey, FloodCount> = PerCpuHashMap::try_from(map)?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        let mut total = FloodCount::default();
        for v in per_cpu.iter() {
            total.packets += v.packets;
            total.bytes += v.bytes;
            if v.packets > 0 {
                total.first_ns = if total.first_ns == 0 {
                    v.first_ns
                } else {
                    total.first_ns.min(v.first_ns)
                };
                total.last_ns = total.last_ns.max(v.last_ns);
            }
        }
        if key.pkt_type == pkt_type::UNICAST {
            out.push((key, total));
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

fn mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

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
    pub ongoing: bool,
    /// Frames flooded (copies reaching the busiest victim port).
    pub packets: u64,
    /// Copies delivered to all victim ports together.
    pub copies: u64,
    pub bytes_copied: u64,
    pub pps: f64,
    pub victims: Vec<String>,
    pub cause: FloodCauseReport,
}

#[derive(Debug, Serialize)]
pub struct FloodCauseReport {
    /// `fdb_entry_removed`, `neighbour_failed`, `not_learned_yet` or `never_learned`.
    pub kind: &'static str,
    pub at_s: Option<f64>,
    pub detail: String,
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
