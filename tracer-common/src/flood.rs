//! UDP flooding on the bridge: the contract between
//! `tracer-ebpf/src/flood.rs` and `tracer/src/flood/`.
//!
//! Two vantage points:
//! - TC egress on every host-side pod port: a unicast frame whose
//!   destination is not the pod's own MAC is a flooded copy that the pod
//!   (the *victim*) receives and drops — the cost every other pod pays;
//! - `br_flood` (fentry): the bridge deciding to flood, with the frame's
//!   destination and what it carries — the *cause*.

use core::mem::size_of;

/// Ports whose pod MAC is known (set by userspace).
pub const PORTS_MAX_ENTRIES: u32 = 4096;
/// Distinct flooded flows tracked by `br_flood`.
pub const FLOWS_MAX_ENTRIES: u32 = 4096;
/// Ring buffer for [`FloodCause`] events, bytes.
pub const CAUSES_RING_BYTES: u32 = 1 << 18;
/// Bridges whose FDB events are this node's, and namespaces whose neighbour
/// events are (the node's and its pods').
pub const SCOPE_MAX_ENTRIES: u32 = 4096;

/// A flow silent this long on a CPU starts a new burst there
/// ([`FloodCount::burst_ns`]); the same gap ends a flood episode in
/// userspace. 1 s: a paced stream's gaps (scheduler hiccups of a few hundred
/// ms) stay inside one episode, while a flood that stops because the MAC was
/// learned again and restarts at the next ageing (≥ 1 s: `ageing_time` is at
/// least 1 s in practice, 300 s by default) is a new one.
pub const EPISODE_GAP_NS: u64 = 1_000_000_000;

/// Ports whose pod MAC is kept in `FLOOD_PORT_MAC_SLOTS`, an array indexed
/// by ifindex: the flood check runs on every frame a pod port delivers, and
/// an array lookup is a bounds check and an add (the verifier inlines it,
/// v4.x+) where a hash lookup was ~25 ns. Ports with a larger ifindex (a
/// node whose namespace has churned through this many interfaces) use the
/// `FLOOD_PORT_MACS` hash.
pub const PORT_MAC_SLOTS: u32 = 4096;

/// Value of `FLOOD_PORT_MAC_SLOTS` (index: the host-side port's ifindex)
/// and of `FLOOD_PORT_MACS` (key: the ifindex): the MAC of the pod behind
/// it (the veth peer's address). In the array, an all-zero MAC is an empty
/// slot (no pod MAC is all zeros).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortMac {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Per-CPU value of `FLOOD_PORTS`, keyed by port ifindex: what the port
/// delivered to its pod that was not addressed to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortFlood {
    /// Unicast frames for another MAC: flooded copies.
    pub victim_packets: u64,
    pub victim_bytes: u64,
    /// Broadcast frames (ARP requests, DHCP): flooded by design.
    pub broadcast_packets: u64,
    /// Multicast frames.
    pub multicast_packets: u64,
}

impl PortFlood {
    pub const fn add(&mut self, other: &Self) {
        self.victim_packets += other.victim_packets;
        self.victim_bytes += other.victim_bytes;
        self.broadcast_packets += other.broadcast_packets;
        self.multicast_packets += other.multicast_packets;
    }

    /// The counts since `base` was read.
    #[must_use]
    pub const fn minus(&self, base: &Self) -> Self {
        Self {
            victim_packets: self.victim_packets.saturating_sub(base.victim_packets),
            victim_bytes: self.victim_bytes.saturating_sub(base.victim_bytes),
            broadcast_packets: self
                .broadcast_packets
                .saturating_sub(base.broadcast_packets),
            multicast_packets: self
                .multicast_packets
                .saturating_sub(base.multicast_packets),
        }
    }
}

/// `enum br_pkt_type` (net/bridge/br_private.h): what `br_flood` floods.
pub mod pkt_type {
    pub const UNICAST: u32 = 0;
    pub const MULTICAST: u32 = 1;
    pub const BROADCAST: u32 = 2;
}

/// Key of `FLOOD_FLOWS` (one flooded flow as `br_flood` sees it, `port` =
/// the port it came in on) and of `FLOOD_VICTIM_FLOWS` (a flooded copy as a
/// victim port's TC egress sees it, `port` = that victim port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FloodKey {
    pub port: u32,
    /// [`pkt_type`] value.
    pub pkt_type: u32,
    pub dst_mac: [u8; 6],
    /// Ethertype (host order), e.g. 0x0800.
    pub ethertype: u16,
    /// IP protocol (17 UDP, 6 TCP), 0 if not IP.
    pub ip_proto: u8,
    pub _pad: u8,
    /// Destination port, 0 if not UDP/TCP.
    pub dport: u16,
    /// Destination IPv4 address (0 if not IPv4).
    pub dst_ip: [u8; 4],
    /// The sender's MAC.
    pub src_mac: [u8; 6],
    pub _pad2: [u8; 2],
}

/// Per-CPU value of `FLOOD_FLOWS` and `FLOOD_VICTIM_FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodCount {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns` of the first and the latest flooded frame on this
    /// CPU; 0 on a CPU that has seen none (a per-CPU hash inserts the value
    /// on the inserting CPU only, the other CPUs' slots start zeroed).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Start of this CPU's current burst: the first frame after a silence of
    /// at least [`EPISODE_GAP_NS`] on this CPU. Across CPUs, the earliest
    /// burst start after the flow's previous last frame is when a flood
    /// restarted, whichever CPU the sender runs on.
    pub burst_ns: u64,
}

impl FloodCount {
    /// Adds one frame of `bytes` seen at `now` on this CPU's slot.
    #[inline(always)]
    pub const fn add(&mut self, bytes: u64, now: u64) {
        if self.first_ns == 0 {
            self.first_ns = now;
        }
        if self.last_ns == 0 || now.saturating_sub(self.last_ns) >= EPISODE_GAP_NS {
            self.burst_ns = now;
        }
        self.packets += 1;
        self.bytes += bytes;
        self.last_ns = now;
    }
}

/// Key of `FLOOD_BRIDGES`: a bridge by network namespace inode and ifindex
/// (ifindexes are per namespace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeKey {
    pub netns: u32,
    pub ifindex: u32,
}

/// Why `bridge:fdb_delete` removed an entry, sent in [`FloodCause::state`].
pub mod fdb_reason {
    /// Not known (a member offset is missing on this kernel).
    pub const UNKNOWN: u16 = 0;
    /// Idle for at least the bridge's `ageing_time`: garbage collection.
    pub const AGED_OUT: u16 = 1;
    /// Its port left the forwarding state (`BR_STATE_DISABLED`): the port
    /// went down or is being removed (veth deleted, `nomaster`), and the
    /// bridge flushed every entry learned on it.
    pub const PORT_DISABLED: u16 = 2;
    /// Neither: removed while fresh on a live port (`bridge fdb del`, a
    /// flush, a MAC moving under a static entry).
    pub const REMOVED: u16 = 3;
}

/// What a [`FloodCause`] reports.
pub mod cause {
    /// `bridge:fdb_delete`: an FDB entry was removed (aged out or flushed).
    pub const FDB_DELETE: u32 = 1;
    /// `bridge:br_fdb_update`: a MAC was (re)learned on a port.
    pub const FDB_UPDATE: u32 = 2;
    /// `neigh:neigh_event_send_dead`: a packet sent to a neighbour entry
    /// being destroyed was dropped.
    pub const NEIGH_DEAD: u32 = 3;
    /// `neigh:neigh_update`: a neighbour entry changed state.
    pub const NEIGH_UPDATE: u32 = 4;
    /// `neigh:neigh_timer_handler` leaving the entry in NUD_FAILED: address
    /// resolution gave up (ARP got no answer), queued packets were dropped.
    pub const NEIGH_FAILED: u32 = 5;
}

/// `NUD_FAILED` (include/uapi/linux/neighbour.h).
pub const NUD_FAILED: u16 = 0x20;

/// An FDB or neighbour event explaining why a flood started or stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodCause {
    pub ts_ns: u64,
    /// A [`cause`] value.
    pub kind: u32,
    /// Bridge port (FDB) or neighbour device (neigh).
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Neighbour: address family (2 = AF_INET, 10 = AF_INET6).
    pub family: u16,
    /// Neighbour: NUD state (old for updates, see `new_state`); FDB delete:
    /// an [`fdb_reason`] value.
    pub state: u16,
    pub new_state: u16,
    /// FDB: the VLAN; neighbour: 0.
    pub vid: u16,
    pub _pad: u16,
    /// Neighbour address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Inode number of the device's network namespace: neighbour events of
    /// a pod happen in the pod's own namespace.
    pub netns: u32,
    pub _pad2: u32,
}

const _: () = assert!(size_of::<PortMac>() == 8);
const _: () = assert!(size_of::<PortFlood>() == 32);
const _: () = assert!(size_of::<FloodKey>() == 32);
const _: () = assert!(size_of::<FloodCount>() == 40);
const _: () = assert!(size_of::<BridgeKey>() == 8);
const _: () = assert!(size_of::<FloodCause>() == 56);

crate::impl_pod!(
    PortMac, PortFlood, FloodKey, FloodCount, FloodCause, BridgeKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_first_used_after_insertion_gets_its_times() {
        // The slot of a CPU other than the inserting one starts zeroed.
        let mut c = FloodCount::default();
        c.add(60, 5_000);
        assert_eq!((c.first_ns, c.burst_ns, c.last_ns), (5_000, 5_000, 5_000));
        c.add(60, 5_000 + EPISODE_GAP_NS - 1);
        assert_eq!(c.burst_ns, 5_000, "a short gap continues the burst");
        let restart = 5_000 + 3 * EPISODE_GAP_NS;
        c.add(60, restart);
        assert_eq!((c.first_ns, c.burst_ns, c.packets), (5_000, restart, 3));
    }
}
