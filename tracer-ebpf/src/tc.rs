//! The TC programs `tracer watch` attaches: one per direction, running every
//! area's per-packet code in turn.
//!
//! Each area keeps its own `<area>_tc_*` programs (tests and benchmarks load
//! them one by one), but on a node one program per hook is cheaper twice:
//! each TCX program costs a dispatch per packet, and each TCX attachment an
//! RCU grace period (tens of ms on a VM) — 2 instead of 5 per pod veth makes
//! a burst of new pods attach 2.5× faster.
//!
//! DNS packets leave through a tail call into `dns_tc_ingress` or
//! `dns_tc_egress` (one per direction: the DNS program must know which side
//! of the exchange it sees, see `tracer/src/dns/role.rs`): the DNS work
//! is verified as a program of its own. Inlined behind the in-place header
//! parse it made the verifier walk the DNS code once per way the headers
//! could be laid out, past its 1 M instruction limit; and the old verifiers
//! (v5.10, v6.1) are the ones a node agent must pass. A tail call costs a few
//! ns, paid by port-53 packets only.
//!
//! The two programs' names are tracer's identity in the kernel: before v6.6 (no TCX)
//! they are attached as cls_bpf filters, which outlive a crashed tracer, and
//! the next tracer recognises its predecessor's filters by this name
//! (`tracer/src/attach.rs`). `tracer_` makes them unmistakable (`tc_ingress`
//! is what half the eBPF examples call theirs), and ≤ 15 bytes keeps the
//! kernel's program name (BPF_OBJ_NAME_LEN 16) equal to the filter's.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::ProgramArray,
    programs::TcContext,
};
use tracer_common::{
    counter::Direction,
    loss::Loss,
    tc::{DNS_TAIL_EGRESS, DNS_TAIL_INGRESS, DNS_TAIL_SLOTS},
};

use crate::{counter, dns, flood, maps::count_loss};

/// The DNS programs by slot (`tracer_common::tc::DNS_TAIL_PROGRAMS`, set by
/// userspace). The DNS programs tail-call the next-message slot themselves.
#[map(name = "TC_DNS_TAIL")]
pub(crate) static DNS_TAIL: ProgramArray = ProgramArray::with_max_entries(DNS_TAIL_SLOTS, 0);

#[classifier]
pub fn tracer_ingress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Ingress);
    to_dns(&ctx, DNS_TAIL_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tracer_egress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Egress);
    flood::victim(&ctx);
    to_dns(&ctx, DNS_TAIL_EGRESS);
    TC_ACT_UNSPEC
}

/// Hands a DNS packet to the DNS program of this direction (`slot`);
/// returns only if the tail call failed (slot empty), which is counted.
#[inline(always)]
fn to_dns(ctx: &TcContext, slot: u32) {
    if !dns::wanted(ctx) {
        return;
    }
    // SAFETY: the slot holds a classifier of the same type, or nothing.
    unsafe { DNS_TAIL.tail_call(ctx, slot) };
    count_loss(Loss::DnsTailCall);
}
