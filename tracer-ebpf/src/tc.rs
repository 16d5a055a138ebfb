//! The TC programs `tracer watch` attaches: one per direction, running every
//! area's per-packet code in turn.
//!
//! Each area keeps its own `<area>_tc_*` programs (tests and benchmarks load
//! them one by one), but on a node one program per hook is cheaper twice:
//! each TCX program costs a dispatch per packet, and each TCX attachment an
//! RCU grace period (tens of ms on a VM) — 2 instead of 5 per pod veth makes
//! a burst of new pods attach 2.5× faster.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use tracer_common::counter::Direction;

use crate::{counter, dns, flood};

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Ingress);
    dns::dns(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Egress);
    dns::dns(&ctx);
    flood::victim(&ctx);
    TC_ACT_UNSPEC
}
