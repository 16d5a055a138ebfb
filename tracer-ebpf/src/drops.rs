//! Why packets died: `skb:kfree_skb` with its drop reason (v5.17+).
//!
//! The tracepoint fires for every freed skb on the machine, so the program
//! filters first on what costs least: the reason (an argument: not-dropped,
//! consumed and NOT_SPECIFIED frees leave at once), then the device's
//! namespace and ifindex against `DROPS_SCOPE` (this node's pods and pod
//! ports; the node's own namespace only for DNS). What remains is counted
//! in per-CPU maps — by (reason, device, protocol, DNS) and by (reason, code
//! location) — and DNS drops are remembered by exchange in a small LRU that
//! userspace reads when it reports unanswered queries. No event per packet.

use aya_ebpf::{
    Global,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use tracer_common::{
    drops::{
        DNS_DROPS_MAX_ENTRIES, DNS_PORT, DROPS_MAX_ENTRIES, DnsDrop, DnsDropKey, DropKey,
        DropLocationKey, DropReasons, LOCATIONS_MAX_ENTRIES, SCOPE_DNS, SCOPE_MAX_ENTRIES,
        ScopeKey,
    },
    kernel::KernelOffsets,
    loss::Loss,
};

use crate::{
    kernel::{offsets, read},
    maps::count_loss,
    parse::{self, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, Kernel},
};

/// The reasons that are not drops, and whether the tracepoint has a reason
/// at all, from the running kernel's BTF (set at load time). Before v5.17
/// the tracepoint has two arguments and the verifier refuses a program that
/// reads a third: the read sits behind `enabled` (the dead branch is pruned).
#[unsafe(no_mangle)]
static DROP_REASONS: Global<DropReasons> = Global::new(DropReasons::DISABLED);

#[map(name = "DROPS")]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(DROPS_MAX_ENTRIES, 0);

#[map(name = "DROP_LOCATIONS")]
static LOCATIONS: PerCpuHashMap<DropLocationKey, u64> =
    PerCpuHashMap::with_max_entries(LOCATIONS_MAX_ENTRIES, 0);

#[map(name = "DNS_DROPS")]
static DNS_DROPS: LruHashMap<DnsDropKey, DnsDrop> =
    LruHashMap::with_max_entries(DNS_DROPS_MAX_ENTRIES, 0);

/// This node's namespaces and pod ports (set by userspace).
#[map(name = "DROPS_SCOPE")]
static SCOPE: HashMap<ScopeKey, u8> = HashMap::with_max_entries(SCOPE_MAX_ENTRIES, 0);

/// The IP version nibble of the first header byte.
const IP_VERSION_4: u8 = 4;
const IP_VERSION_6: u8 = 6;
/// `skb->network_header` when no header was set (`(typeof(...))~0U`).
const HEADER_UNSET: u16 = u16::MAX;

#[btf_tracepoint(function = "kfree_skb")]
pub fn drops_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = try_drops_kfree_skb(&ctx);
    0
}

#[inline(always)]
fn try_drops_kfree_skb(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let reasons = DROP_REASONS.load();
    if reasons.enabled == 0 {
        return Ok(());
    }
    // kfree_skb(skb, location, reason[, rx_sk since v6.11]).
    let reason: u64 = ctx.arg(2);
    let reason = reason as u32;
    if reason == reasons.not_specified
        || reason == reasons.consumed
        || reason == reasons.not_dropped_yet
    {
        return Ok(());
    }
    let skb: u64 = ctx.arg(0);
    let o = offsets();
    let dev = read::<u64>(skb, o.skb_dev)?;
    let ifindex = read::<u32>(dev, o.dev_ifindex)?;
    let netns = read::<u64>(dev, o.dev_nd_net).and_then(|net| read::<u32>(net, o.net_ns_inum))?;
    let scope = scope_of(netns, ifindex).ok_or(())?;
    // Filled in place, zeros when the headers cannot be read: an
    // Option<Packet> moved around left uninitialised bytes that LLVM
    // spilled to the stack, and the verifier refuses reading those
    // ("R2 !read_ok", seen on 6.18).
    let mut packet = Packet::EMPTY;
    let parsed = parse_packet(skb, &o, &mut packet).is_ok();
    let dns = parsed && is_dns(&packet.l4);
    if scope == SCOPE_DNS && !dns {
        return Ok(());
    }
    let key = DropKey {
        reason,
        netns,
        ifindex,
        proto: packet.l4.proto,
        family: packet.l4.family,
        dns: u8::from(dns),
        answer: u8::from(dns && packet.l4.sport == DNS_PORT),
    };
    add(&DROPS, &key, Loss::DropsMapFull);
    let location: u64 = ctx.arg(1);
    let at = DropLocationKey {
        reason,
        _pad: 0,
        location,
    };
    add(&LOCATIONS, &at, Loss::DropLocationsFull);
    if dns {
        remember_dns(&packet, &key, location);
    }
    Ok(())
}

/// [`SCOPE_ALL`] for a pod's namespace or a traced pod port, [`SCOPE_DNS`]
/// for the rest of the node's namespace, `None` for anything else on the
/// machine.
#[inline(always)]
fn scope_of(netns: u32, ifindex: u32) -> Option<u8> {
    // SAFETY: plain u8 values copied out.
    let port = unsafe { SCOPE.get(ScopeKey { netns, ifindex }) }.copied();
    if port.is_some() {
        return port;
    }
    // SAFETY: as above.
    unsafe { SCOPE.get(ScopeKey { netns, ifindex: 0 }) }.copied()
}

fn is_dns(l4: &parse::L4) -> bool {
    l4.sport == DNS_PORT || l4.dport == DNS_PORT
}

/// Reads the packet's UDP/TCP header and addresses, from its network
/// header on, into `p`.
#[inline(always)]
fn parse_packet(skb: u64, o: &KernelOffsets, p: &mut Packet) -> Result<(), ()> {
    let head = read::<u64>(skb, o.skb_head)?;
    let net = read::<u16>(skb, o.skb_network_header)?;
    if net == HEADER_UNSET {
        return Err(());
    }
    p.ip = Kernel {
        base: head + u64::from(net),
    };
    let first: u8 = parse::Reader::read(&p.ip, 0).map_err(|_| ())?;
    let ether_type = match first >> 4 {
        IP_VERSION_4 => ETH_P_IP,
        IP_VERSION_6 => ETH_P_IPV6,
        _ => return Err(()),
    };
    let l4 = parse::l4_from_ip(&p.ip, ether_type, 0).map_err(|_| ())?;
    p.addrs = parse::addrs_with(&p.ip, &l4).map_err(|_| ())?;
    p.l4 = l4;
    Ok(())
}

/// A dropped packet's headers, and where its IP header is.
struct Packet {
    l4: parse::L4,
    addrs: parse::Addrs,
    ip: Kernel,
}

impl Packet {
    const EMPTY: Self = Self {
        l4: parse::L4 {
            family: 0,
            proto: 0,
            sport: 0,
            dport: 0,
            l3_off: 0,
            payload_off: 0,
        },
        addrs: parse::Addrs {
            src: [0; 16],
            dst: [0; 16],
        },
        ip: Kernel { base: 0 },
    };
}

/// Adds one to a per-CPU counter, creating it (BPF_ANY writes only this
/// CPU's slot, so a race with another CPU's insert loses nothing); a full
/// map is counted as `loss`.
#[inline(always)]
fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, loss: Loss) {
    if let Some(count) = map.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe { *count += 1 };
    } else if map.insert(key, 1, 0).is_err() {
        count_loss(loss);
    }
}

/// Keeps the drop under its exchange (client first), for the report's
/// unanswered queries.
#[inline(always)]
fn remember_dns(packet: &Packet, key: &DropKey, location: u64) {
    let (l4, addrs) = (&packet.l4, &packet.addrs);
    let answer = key.answer != 0;
    // The message id opens the UDP payload; TCP's sits behind a length
    // prefix, maybe in another segment: 0 there.
    let id = if l4.proto == IPPROTO_UDP {
        parse::Reader::read::<[u8; 2]>(&packet.ip, l4.payload_off).map_or(0, u16::from_be_bytes)
    } else {
        0
    };
    let (client, server, client_port, server_port) = if answer {
        (addrs.dst, addrs.src, l4.dport, l4.sport)
    } else {
        (addrs.src, addrs.dst, l4.sport, l4.dport)
    };
    let k = DnsDropKey {
        client,
        server,
        client_port,
        server_port,
        id,
        proto: l4.proto,
        family: l4.family,
    };
    // SAFETY: a plain u64 copied out.
    let count = unsafe { DNS_DROPS.get(k) }.map_or(0, |d| d.count);
    let value = DnsDrop {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        location,
        reason: key.reason,
        netns: key.netns,
        ifindex: key.ifindex,
        answer: u8::from(answer),
        _pad: [0; 3],
        count: count + 1,
    };
    if DNS_DROPS.insert(k, value, 0).is_err() {
        count_loss(Loss::DnsDropInsert);
    }
}
