//! Packet and byte counters per interface and TC direction.
//!
//! Attached to every host-side pod veth and the bridge. The programs never
//! change the packet's fate: they return `TC_ACT_UNSPEC` (TCX_NEXT since
//! v6.6), so programs after ours in the TCX chain or cls_bpf list still run.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use tracer_common::{
    counter::{COUNTERS_MAX_ENTRIES, Direction, IfaceCounters, IfaceKey},
    loss::Loss,
};

use crate::maps::count_loss;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuHashMap<IfaceKey, IfaceCounters> =
    PerCpuHashMap::with_max_entries(COUNTERS_MAX_ENTRIES, 0);

#[classifier]
pub fn counter_tc_ingress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Ingress);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn counter_tc_egress(ctx: TcContext) -> i32 {
    count(&ctx, Direction::Egress);
    TC_ACT_UNSPEC
}

#[inline(always)]
pub(crate) fn count(ctx: &TcContext, direction: Direction) {
    // SAFETY: ctx.skb is the valid __sk_buff the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = IfaceKey {
        ifindex,
        direction: direction as u32,
    };
    let len = u64::from(ctx.len());
    if let Some(value) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*value).packets += 1;
            (*value).bytes += len;
        }
        return;
    }
    let first = IfaceCounters {
        packets: 1,
        bytes: len,
    };
    // BPF_ANY on a per-CPU hash writes only this CPU's slot, also when another
    // CPU created the key between our lookup and this insert (the bucket lock
    // serialises them), so no packet is lost to that race. It fails only when
    // the map is full.
    if COUNTERS.insert(key, first, 0).is_err() {
        count_loss(Loss::CounterMapFull);
    }
}
