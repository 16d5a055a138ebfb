//! The TC programs `tracer watch` attaches: one per direction, running every
//! area's per-packet code in turn.
//!
//! Each area keeps its own `<area>_tc_*` programs (tests and benchmarks load
//! them one by one), but on a node one program per hook is cheaper twice:
//! each TCX program costs a dispatch per packet, and each TCX attachment an
//! RCU grace period (tens of ms on a VM) — 2 instead of 5 per pod veth makes
//! a burst of new pods attach 2.5× faster.
//!
//! Their names are tracer's identity in the kernel: before v6.6 (no TCX)
//! they are attached as cls_bpf filters, which outlive a crashed tracer, and
//! the next tracer recognises its predecessor's filters by this name
//! (`tracer/src/attach.rs`). `tracer_` makes them unmistakable (`tc_ingress`
//! is what half the eBPF examples call theirs), and ≤ 15 bytes keeps the
//! kernel's program name (BPF_OBJ_NAME_LEN 16) equal to the filter's.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use tracer_common::counter::Direction;

use crate::{counter, dns, flood};

#[classifier]
pub fn tracer_ingress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Ingress);
    dns::dns(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tracer_egress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Egress);
    dns::dns(&ctx);
    flood::victim(&ctx);
    TC_ACT_UNSPEC
}
