//! conntrack insert races.
//!
//! glibc's parallel A/AAAA share one socket 5-tuple; through DNAT both
//! packets can miss the table and race to insert in `__nf_conntrack_confirm`.
//! Since v5.6 (6a757c07e51f) the kernel usually *resolves* such a clash;
//! when it cannot, the loser is dropped (NF_DROP) and the client waits for
//! its resolver timeout. Two function-return hooks tell the cases apart:
//! - `__nf_conntrack_confirm` returning NF_DROP: an insert that lost a packet;
//! - `nf_ct_resolve_clash` returning NF_ACCEPT (resolved) or NF_DROP.
//!
//! Each exists twice: fexit (BTF trampoline, arguments and return value in
//! one context) and kprobe + kretprobe (where fexit cannot load: kernels
//! before v5.11 have no module BTF, and some kernels refuse trampolines). A
//! kretprobe sees only the return value, so the kprobe on entry keeps the
//! skb per thread until the return. Userspace attaches one of the two
//! (`tracer/src/hooks.rs`); both feed the same `record`.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext},
};
use tracer_common::{
    conntrack::{
        CT_STAT_ENTRY_MISSED, CT_STAT_READ_FAILED, CT_STAT_RING_FULL, CT_STATS_LEN, ConntrackEvent,
        CtKind, CtTuple, ENTRY_SKB_MAX_ENTRIES, EVENTS_RING_BYTES, KFREE_SKB_BY_REASON, NF_ACCEPT,
        NF_DROP,
    },
    kernel::KernelOffsets,
};

use crate::{
    kernel::{dev_netns, ifindex_of, offsets, read},
    maps,
};

/// Parameters of `nf_ct_resolve_clash` on this kernel: 3 since v5.10
/// (skb, h, repl_idx), 4 before (net, skb, ctinfo, h). Set at load time.
#[unsafe(no_mangle)]
static CT_CLASH_NARGS: Global<u32> = Global::new(3);

/// How `conntrack_kfree_skb` picks insert failures, set at load time:
/// [`KFREE_SKB_BY_REASON`] where the tracepoint has a drop reason (v5.17+)
/// and the kernel names SKB_DROP_REASON_NETFILTER_DROP; otherwise every free
/// of a packet with an unconfirmed entry. Before v5.17 the tracepoint has
/// two arguments and the verifier refuses a program that reads a third, so
/// the read sits behind this constant (the verifier prunes the dead branch).
#[unsafe(no_mangle)]
static KFREE_SKB_FILTER: Global<u32> = Global::new(KFREE_SKB_BY_REASON);

#[map(name = "CT_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CT_STATS_LEN, 0);

#[map(name = "CT_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[fexit(function = "__nf_conntrack_confirm")]
pub fn conntrack_confirm_exit(ctx: FExitContext) -> i32 {
    // int __nf_conntrack_confirm(struct sk_buff *skb): the return value
    // follows the single argument.
    let skb: u64 = ctx.arg(0);
    let verdict: i64 = ctx.arg(1);
    if verdict as i32 == NF_DROP {
        record(skb, CtKind::ConfirmDrop);
    }
    0
}

#[fexit(function = "nf_ct_resolve_clash")]
pub fn conntrack_resolve_clash_exit(ctx: FExitContext) -> i32 {
    // int nf_ct_resolve_clash(skb, h, repl_idx) (v5.10+); the return value
    // follows the three arguments. Only this form: picking indexes by
    // CT_CLASH_NARGS compiled to a variable ctx offset, which the verifier
    // refuses ("dereference of modified ctx ptr", seen on 6.12), and an
    // unconditional read past the arguments is refused too. Userspace
    // skips this program on the 4-argument kernels; the kretprobe covers them.
    let skb: u64 = ctx.arg(0);
    let verdict: i64 = ctx.arg(3);
    clash_verdict(skb, verdict as i32);
    0
}

#[inline(always)]
fn clash_verdict(skb: u64, verdict: i32) {
    match verdict {
        NF_ACCEPT => record(skb, CtKind::ClashResolved),
        NF_DROP => record(skb, CtKind::ClashDropped),
        _ => {}
    }
}

// ---- kprobe + kretprobe: where fexit cannot load --------------------------

/// The skb of each thread inside `__nf_conntrack_confirm`, keyed by
/// pid_tgid, from the kprobe to the kretprobe. LRU: an entry whose return
/// was never seen (kretprobe instances exhausted) ages out instead of
/// filling the map.
#[map(name = "CT_CONFIRM_SKB")]
static CONFIRM_SKB: LruHashMap<u64, u64> = LruHashMap::with_max_entries(ENTRY_SKB_MAX_ENTRIES, 0);

/// The same for `nf_ct_resolve_clash`, which runs *inside*
/// `__nf_conntrack_confirm` on the same thread: a map of its own.
#[map(name = "CT_CLASH_SKB")]
static CLASH_SKB: LruHashMap<u64, u64> = LruHashMap::with_max_entries(ENTRY_SKB_MAX_ENTRIES, 0);

#[kprobe]
pub fn conntrack_confirm_kprobe(ctx: ProbeContext) -> u32 {
    // int __nf_conntrack_confirm(struct sk_buff *skb)
    save_entry(&CONFIRM_SKB, ctx.arg(0));
    0
}

#[kretprobe]
pub fn conntrack_confirm_kretprobe(ctx: RetProbeContext) -> u32 {
    let verdict: i64 = ctx.ret();
    if let Some(skb) = take_entry(&CONFIRM_SKB)
        && verdict as i32 == NF_DROP
    {
        record(skb, CtKind::ConfirmDrop);
    }
    0
}

#[kprobe]
pub fn conntrack_resolve_clash_kprobe(ctx: ProbeContext) -> u32 {
    // (skb, h, repl_idx) since v5.10, (net, skb, ctinfo, h) before. Both
    // registers are read and one is picked: choosing the offset instead
    // compiles to a variable ctx offset, which the verifier refuses
    // ("dereference of modified ctx ptr").
    let (first, second) = (ctx.arg(0), ctx.arg(1));
    let skb = if CT_CLASH_NARGS.load() == 4 {
        second
    } else {
        first
    };
    save_entry(&CLASH_SKB, skb);
    0
}

#[kretprobe]
pub fn conntrack_resolve_clash_kretprobe(ctx: RetProbeContext) -> u32 {
    let verdict: i64 = ctx.ret();
    if let Some(skb) = take_entry(&CLASH_SKB) {
        clash_verdict(skb, verdict as i32);
    }
    0
}

#[inline(always)]
fn save_entry(map: &LruHashMap<u64, u64>, skb: Option<u64>) {
    let Some(skb) = skb else {
        return stat(CT_STAT_READ_FAILED);
    };
    let thread = bpf_get_current_pid_tgid();
    if map.insert(thread, skb, 0).is_err() {
        stat(CT_STAT_ENTRY_MISSED);
    }
}

/// The skb the kprobe saved for this thread; a return without one (the
/// entry was evicted, or a softirq on this thread's CPU ran the same
/// function in between and consumed it) is counted, not guessed.
#[inline(always)]
fn take_entry(map: &LruHashMap<u64, u64>) -> Option<u64> {
    let thread = bpf_get_current_pid_tgid();
    // SAFETY: a plain u64 copied out before the entry is removed.
    let skb = unsafe { map.get(thread) }.copied();
    if skb.is_some() {
        let _ = map.remove(thread);
    } else {
        stat(CT_STAT_ENTRY_MISSED);
    }
    skb
}

/// `IPS_CONFIRMED_BIT` (include/uapi/linux/netfilter/nf_conntrack_common.h).
const IPS_CONFIRMED: u64 = 1 << 3;

/// `skb:kfree_skb(skb, location[, reason[, rx_sk]])` (reason since v5.17):
/// the fallback where neither fexit nor kprobes load. A NETFILTER_DROP of a
/// packet whose conntrack entry is still unconfirmed is how an insert
/// failure ends.
#[btf_tracepoint(function = "kfree_skb")]
pub fn conntrack_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let o = offsets();
    if KFREE_SKB_FILTER.load() == KFREE_SKB_BY_REASON {
        let reason: u64 = ctx.arg(2);
        if reason as u32 != o.drop_reason_netfilter {
            return 0;
        }
    }
    let skb: u64 = ctx.arg(0);
    let ct = match read::<u64>(skb, o.skb_nfct) {
        Ok(nfct) if nfct & !7 != 0 => nfct & !7,
        _ => return 0,
    };
    match read::<u64>(ct, o.ct_status) {
        Ok(status) if status & IPS_CONFIRMED == 0 => record(skb, CtKind::UnconfirmedDrop),
        _ => {}
    }
    0
}

#[inline(always)]
fn stat(index: u32) {
    maps::increment(&STATS, index);
}

#[inline(always)]
fn record(skb: u64, kind: CtKind) {
    stat(kind as u32);
    let o = offsets();
    // skb->_nfct: the entry pointer, ctinfo in the low 3 bits (NFCT_PTRMASK).
    let ct = match read::<u64>(skb, o.skb_nfct) {
        Ok(nfct) if nfct & !7 != 0 => nfct & !7,
        _ => return stat(CT_STAT_READ_FAILED),
    };
    let Some(mut entry) = EVENTS.reserve::<ConntrackEvent>(0) else {
        return stat(CT_STAT_RING_FULL);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved, writable event in the ring.
    unsafe {
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).kind = kind as u32;
        (*event).cpu = bpf_get_smp_processor_id();
        (*event).netns = read::<u64>(ct, o.ct_net)
            .and_then(|net| read::<u32>(net, o.net_ns_inum))
            .unwrap_or_else(|()| dev_netns(skb, o.skb_dev, &o));
        (*event).ifindex = ifindex_of(skb, o.skb_dev, &o);
        (*event).orig = tuple(ct, o.ct_tuple_orig, &o);
        (*event).reply = tuple(ct, o.ct_tuple_reply, &o);
    }
    entry.submit(0);
}

#[inline(always)]
fn tuple(ct: u64, off: u32, o: &KernelOffsets) -> CtTuple {
    let Some(base) = ct.checked_add(u64::from(off)) else {
        return CtTuple::default();
    };
    CtTuple {
        src: read(base, o.tuple_src_u3).unwrap_or_default(),
        dst: read(base, o.tuple_dst_u3).unwrap_or_default(),
        sport: u16::from_be(read(base, o.tuple_src_port).unwrap_or_default()),
        dport: u16::from_be(read(base, o.tuple_dst_port).unwrap_or_default()),
        l3num: read(base, o.tuple_l3num).unwrap_or_default(),
        protonum: read(base, o.tuple_protonum).unwrap_or_default(),
        _pad: 0,
    }
}
