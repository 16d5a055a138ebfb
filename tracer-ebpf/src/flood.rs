//! Bridge flooding probe.
//!
//! `flood_tc_egress` runs on every host-side pod port: the bridge hands a
//! port each frame it forwards *or floods* to it, so a unicast frame for a
//! MAC other than the pod's is a flooded copy this pod pays for. The pod's
//! MAC per port comes from userspace (`FLOOD_PORT_MAC_SLOTS`, `FLOOD_PORT_MACS`); ports without one
//! (not a pod veth, or not known yet) count nothing.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{btf_tracepoint, classifier, fentry, kprobe, map},
    maps::{Array, HashMap, PerCpuHashMap, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TcContext},
};
use tracer_common::{
    flood::{
        BridgeKey, CAUSES_RING_BYTES, FLOWS_MAX_ENTRIES, FloodCause, FloodCount, FloodKey,
        NUD_FAILED, PORT_MAC_SLOTS as PORT_MAC_SLOTS_LEN, PORTS_MAX_ENTRIES, PortFlood, PortMac,
        SCOPE_MAX_ENTRIES, cause, fdb_reason,
    },
    loss::Loss,
};

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    kernel::{dev_netns, ifindex_of, offsets, read},
    maps::count_loss,
    parse,
};

/// Bytes of a MAC address.
const ETH_ALEN: usize = 6;
/// The I/G bit of a destination MAC: set for multicast and broadcast.
const MAC_GROUP_BIT: u8 = 1;
const BROADCAST_MAC: [u8; ETH_ALEN] = [0xff; ETH_ALEN];

#[map(name = "FLOOD_PORT_MAC_SLOTS")]
static PORT_MAC_SLOTS: Array<PortMac> = Array::with_max_entries(PORT_MAC_SLOTS_LEN, 0);

#[map(name = "FLOOD_PORT_MACS")]
static PORT_MACS: HashMap<u32, PortMac> = HashMap::with_max_entries(PORTS_MAX_ENTRIES, 0);

/// The MAC of the pod behind port `ifindex`, if userspace has told us.
#[inline(always)]
fn port_mac(ifindex: u32) -> Option<[u8; ETH_ALEN]> {
    if ifindex < PORT_MAC_SLOTS_LEN {
        let mac = PORT_MAC_SLOTS.get(ifindex)?.mac;
        return (mac != [0; ETH_ALEN]).then_some(mac);
    }
    // SAFETY: plain lookup; the value is 8 bytes of integers.
    unsafe { PORT_MACS.get(ifindex) }.map(|own| own.mac)
}

#[map(name = "FLOOD_PORTS")]
static PORTS: PerCpuHashMap<u32, PortFlood> = PerCpuHashMap::with_max_entries(PORTS_MAX_ENTRIES, 0);

#[classifier]
pub fn flood_tc_egress(ctx: TcContext) -> i32 {
    victim(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
pub(crate) fn victim(ctx: &TcContext) {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(own) = port_mac(ifindex) else {
        return;
    };
    let Ok(dst) = parse::read::<[u8; ETH_ALEN]>(ctx, 0) else {
        return;
    };
    let mut add = PortFlood::default();
    if dst[0] & MAC_GROUP_BIT != 0 {
        if dst == BROADCAST_MAC {
            add.broadcast_packets = 1;
        } else {
            add.multicast_packets = 1;
        }
    } else if dst != own {
        add.victim_packets = 1;
        add.victim_bytes = u64::from(ctx.len());
        victim_flow(ctx, ifindex, dst);
    } else {
        return;
    }
    match PORTS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        Some(value) => unsafe { (*value).add(&add) },
        None => {
            if PORTS.insert(ifindex, add, 0).is_err() {
                count_loss(Loss::FloodPortsFull);
            }
        }
    }
}

/// Records what a flooded copy carries, per victim port: where `br_flood`
/// cannot be hooked (fentry not permitted), this is how the flooded flows
/// (sender, destination, protocol, port) are still known.
#[inline(always)]
fn victim_flow(ctx: &TcContext, port: u32, dst: [u8; ETH_ALEN]) {
    let Ok(eth) = parse::read::<EthHdr>(ctx, 0) else {
        return;
    };
    let mut key = FloodKey {
        port,
        pkt_type: tracer_common::flood::pkt_type::UNICAST,
        dst_mac: dst,
        ethertype: u16::from_be(eth.ether_type),
        src_mac: eth.src_addr,
        ..FloodKey::default()
    };
    // Only IPv4 fills the flow's address (FloodKey keeps 4 bytes).
    if let Ok(l4) = parse::l4_slow(ctx)
        && l4.family == parse::FAMILY_V4
        && let Ok(ip) = parse::read::<Ipv4Hdr>(ctx, l4.l3_off)
    {
        key.ethertype = parse::ETH_P_IP;
        key.ip_proto = l4.proto;
        key.dst_ip = ip.dst_addr;
        key.dport = l4.dport;
    }
    add_flow(&VICTIM_FLOWS, key, u64::from(ctx.len()));
}

#[map(name = "FLOOD_VICTIM_FLOWS")]
static VICTIM_FLOWS: PerCpuHashMap<FloodKey, FloodCount> =
    PerCpuHashMap::with_max_entries(FLOWS_MAX_ENTRIES, 0);

// ---- br_flood: the bridge deciding to flood ---------------------------

#[map(name = "FLOOD_FLOWS")]
static FLOWS: PerCpuHashMap<FloodKey, FloodCount> =
    PerCpuHashMap::with_max_entries(FLOWS_MAX_ENTRIES, 0);

#[map(name = "FLOOD_CAUSES")]
static CAUSES: RingBuf = RingBuf::with_byte_size(CAUSES_RING_BYTES, 0);

/// Source and destination port at the start of a TCP or UDP header.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    source: [u8; 2],
    dest: [u8; 2],
}

/// `br_flood(br, skb, pkt_type, local_rcv, local_orig[, vid])` (net/bridge/
/// br_forward.c): the same first three parameters since v4.x.
#[fentry(function = "br_flood")]
pub fn flood_br_flood(ctx: FEntryContext) -> i32 {
    let skb: u64 = ctx.arg(1);
    let pkt_type: u64 = ctx.arg(2);
    flood(skb, pkt_type as u32);
    0
}

/// The same as a kprobe, where fentry cannot load (no module BTF before
/// v5.11, or trampolines refused).
#[kprobe]
pub fn flood_br_flood_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(skb), Some(pkt_type)) = (ctx.arg::<u64>(1), ctx.arg::<u64>(2)) {
        flood(skb, pkt_type as u32);
    }
    0
}

#[inline(always)]
fn flood(skb: u64, pkt_type: u32) {
    let o = offsets();
    let Ok(head) = read::<u64>(skb, o.skb_head) else {
        return;
    };
    let (Ok(mac), Ok(net)) = (
        read::<u16>(skb, o.skb_mac_header),
        read::<u16>(skb, o.skb_network_header),
    ) else {
        return;
    };
    // Kernel memory, not the packet: the TC parser (`parse`) cannot read
    // it, so the headers are read typed through bpf_probe_read_kernel.
    let Ok(eth) = read::<EthHdr>(head, u32::from(mac)) else {
        return;
    };
    let mut key = FloodKey {
        port: ifindex_of(skb, o.skb_dev, &o),
        pkt_type,
        dst_mac: eth.dst_addr,
        ethertype: u16::from_be(eth.ether_type),
        src_mac: eth.src_addr,
        ..FloodKey::default()
    };
    // The network header is past any VLAN tag the bridge kept in the
    // frame; `ethertype` then names the tag, and the flow stays addressless.
    if key.ethertype == parse::ETH_P_IP
        && let Ok(ip) = read::<Ipv4Hdr>(head, u32::from(net))
    {
        key.ip_proto = ip.proto;
        key.dst_ip = ip.dst_addr;
        if (ip.proto == parse::IPPROTO_TCP || ip.proto == parse::IPPROTO_UDP)
            && let Ok(ports) = read::<Ports>(head, u32::from(net) + u32::from(ip.ihl()))
        {
            key.dport = u16::from_be_bytes(ports.dest);
        }
    }
    // skb->len counts from the network header here; add the Ethernet
    // header so bytes compare with what TC sees on the ports.
    let bytes = u64::from(read::<u32>(skb, o.skb_len).unwrap_or(0)) + EthHdr::LEN as u64;
    add_flow(&FLOWS, key, bytes);
}

#[inline(always)]
fn add_flow(flows: &PerCpuHashMap<FloodKey, FloodCount>, key: FloodKey, bytes: u64) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match flows.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run. The
        // slot may be zeroed (another CPU inserted the key): `add` sets its
        // times then.
        Some(count) => unsafe { (*count).add(bytes, now) },
        None => {
            let mut count = FloodCount::default();
            count.add(bytes, now);
            if flows.insert(key, count, 0).is_err() {
                count_loss(Loss::FloodFlowsFull);
            }
        }
    }
}

// ---- why a flood starts: FDB and neighbour tracepoints ------------------
//
// The tracepoints are machine-wide: every bridge and every namespace of the
// host fires them. Only this node's are sent: FDB events of the traced
// bridges (`FLOOD_BRIDGES`, by namespace and ifindex), neighbour events of
// the node's namespace and its pods' (`FLOOD_NETNS`); both maps are kept by
// userspace as bridges and pods come and go.

#[map(name = "FLOOD_BRIDGES")]
static BRIDGES: HashMap<BridgeKey, u8> = HashMap::with_max_entries(SCOPE_MAX_ENTRIES, 0);

#[map(name = "FLOOD_NETNS")]
static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(SCOPE_MAX_ENTRIES, 0);

/// Whether `br` is one of the traced bridges (by its device's namespace
/// and ifindex). Where `struct net_bridge` is in no BTF tracer could read
/// (`kernel_offsets_missing`), nothing matches: FDB events are then not
/// reported at all.
#[inline(always)]
fn traced_bridge(br: u64, o: &tracer_common::kernel::KernelOffsets) -> bool {
    let key = BridgeKey {
        netns: dev_netns(br, o.br_dev, o),
        ifindex: ifindex_of(br, o.br_dev, o),
    };
    // SAFETY: plain lookup of a u8 value.
    unsafe { BRIDGES.get(key) }.is_some()
}

/// `bridge:fdb_delete(br, f)`: an FDB entry went away (aged out, its port
/// disabled or removed, flushed).
#[btf_tracepoint(function = "fdb_delete")]
pub fn flood_fdb_delete(ctx: BtfTracePointContext) -> i32 {
    let br: u64 = ctx.arg(0);
    let fdb: u64 = ctx.arg(1);
    let o = offsets();
    if !traced_bridge(br, &o) {
        return 0;
    }
    let port = read::<u64>(fdb, o.fdb_dst).unwrap_or(0);
    cause(FloodCause {
        kind: cause::FDB_DELETE,
        ifindex: ifindex_of(port, o.port_dev, &o),
        mac: read(fdb, o.fdb_addr).unwrap_or_default(),
        vid: read(fdb, o.fdb_vid).unwrap_or_default(),
        state: delete_reason(br, fdb, port, &o),
        ..FloodCause::default()
    });
    0
}

/// Why `fdb` is being deleted. The port's state is checked first: when a
/// port goes down or leaves the bridge, `br_stp_disable_port` sets it to
/// `BR_STATE_DISABLED` before `br_fdb_delete_by_port` (net/bridge/
/// br_stp_if.c, since v2.6), whatever the entries' age. Else an entry idle
/// for `ageing_time` is garbage collected (`has_expired`, br_fdb.c; the
/// topology-change hold time of STP bridges is not considered).
#[inline(always)]
fn delete_reason(br: u64, fdb: u64, port: u64, o: &tracer_common::kernel::KernelOffsets) -> u16 {
    /// `BR_STATE_DISABLED` (include/uapi/linux/if_bridge.h).
    const BR_STATE_DISABLED: u8 = 0;
    if let Ok(state) = read::<u8>(port, o.port_state)
        && state == BR_STATE_DISABLED
    {
        return fdb_reason::PORT_DISABLED;
    }
    let (Ok(updated), Ok(ageing)) = (
        read::<u64>(fdb, o.fdb_updated),
        read::<u64>(br, o.br_ageing_time),
    ) else {
        return fdb_reason::UNKNOWN;
    };
    // SAFETY: bpf_jiffies64 (v5.5) has no preconditions.
    let now = unsafe { bpf_jiffies64() };
    if now.wrapping_sub(updated) >= ageing {
        fdb_reason::AGED_OUT
    } else {
        fdb_reason::REMOVED
    }
}

/// `bridge:br_fdb_update(br, source, addr, vid, flags)`: a MAC learned on
/// (or moved to) a port — the end of an unknown-unicast flood.
#[btf_tracepoint(function = "br_fdb_update")]
pub fn flood_fdb_update(ctx: BtfTracePointContext) -> i32 {
    let br: u64 = ctx.arg(0);
    let port: u64 = ctx.arg(1);
    let addr: u64 = ctx.arg(2);
    let vid: u64 = ctx.arg(3);
    let o = offsets();
    if !traced_bridge(br, &o) {
        return 0;
    }
    cause(FloodCause {
        kind: cause::FDB_UPDATE,
        ifindex: ifindex_of(port, o.port_dev, &o),
        mac: read(addr, 0).unwrap_or_default(),
        vid: vid as u16,
        ..FloodCause::default()
    });
    0
}

/// `neigh:neigh_event_send_dead(n, err)`: resolution failed, the packet
/// waiting for it was dropped.
#[btf_tracepoint(function = "neigh_event_send_dead")]
pub fn flood_neigh_dead(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    neigh(n, cause::NEIGH_DEAD, 0);
    0
}

/// `neigh:neigh_timer_handler(n, state)`: runs after each resolution timer;
/// only its transitions to NUD_FAILED (resolution gave up) are sent.
#[btf_tracepoint(function = "neigh_timer_handler")]
pub fn flood_neigh_timer(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let o = offsets();
    if read::<u8>(n, o.neigh_nud_state).is_ok_and(|s| u16::from(s) == NUD_FAILED) {
        neigh(n, cause::NEIGH_FAILED, NUD_FAILED);
    }
    0
}

/// `neigh:neigh_update(n, lladdr, new, flags, nlmsg_pid)`.
#[btf_tracepoint(function = "neigh_update")]
pub fn flood_neigh_update(ctx: BtfTracePointContext) -> i32 {
    let n: u64 = ctx.arg(0);
    let new: u64 = ctx.arg(2);
    neigh(n, cause::NEIGH_UPDATE, new as u16);
    0
}

#[inline(always)]
fn neigh(n: u64, kind: u32, new_state: u16) {
    let o = offsets();
    let netns = dev_netns(n, o.neigh_dev, &o);
    // SAFETY: plain lookup of a u8 value.
    if unsafe { NETNS.get(netns) }.is_none() {
        return;
    }
    let family = read::<u64>(n, o.neigh_tbl)
        .and_then(|tbl| read::<u16>(tbl, o.tbl_family))
        .unwrap_or(0);
    let mut addr = [0u8; 16];
    if family == 2 {
        let v4: [u8; 4] = read(n, o.neigh_primary_key).unwrap_or_default();
        addr[..4].copy_from_slice(&v4);
    } else {
        addr = read(n, o.neigh_primary_key).unwrap_or_default();
    }
    cause(FloodCause {
        kind,
        ifindex: ifindex_of(n, o.neigh_dev, &o),
        netns,
        mac: read(n, o.neigh_ha).unwrap_or_default(),
        family,
        state: read::<u8>(n, o.neigh_nud_state).map(u16::from).unwrap_or(0),
        new_state,
        addr,
        ..FloodCause::default()
    });
}

#[inline(always)]
fn cause(mut event: FloodCause) {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    if CAUSES.output::<FloodCause>(&event, 0).is_err() {
        count_loss(Loss::FloodRingFull);
    }
}
