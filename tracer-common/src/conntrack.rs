//! conntrack insert races: the contract between
//! `tracer-ebpf/src/conntrack.rs` and `tracer/src/conntrack/`.

use core::mem::size_of;

/// Ring buffer for [`ConntrackEvent`]s, bytes.
pub const EVENTS_RING_BYTES: u32 = 1 << 18;

/// `NF_DROP` and `NF_ACCEPT` (include/uapi/linux/netfilter.h).
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;

crate::counter_enum! {
    /// What an event reports (and the index of its counter in `CT_STATS`).
    pub enum CtKind {
        /// `__nf_conntrack_confirm` returned NF_DROP: the insert failed and the
        /// packet was lost (clash not resolvable, chain too long, dying entry).
        ConfirmDrop = 0 => "insert_drops",
        /// `nf_ct_resolve_clash` returned NF_ACCEPT: two packets raced and the
        /// kernel merged the loser into the winner's entry; nothing was lost.
        ClashResolved = 1 => "clashes_resolved",
        /// `nf_ct_resolve_clash` returned NF_DROP (a subset of ConfirmDrop).
        ClashDropped = 2 => "clashes_dropped",
        /// Fallback where fexit is not allowed: `skb:kfree_skb` with reason
        /// NETFILTER_DROP for a packet whose conntrack entry was never confirmed
        /// — what a failed insert looks like from the drop tracepoint (an
        /// iptables DROP of a new flow looks the same; the kernel's
        /// `insert_failed` counter tells them apart in aggregate).
        UnconfirmedDrop = 3 => "unconfirmed_drops",
    }
}

/// Entries of the per-CPU `CT_STATS` array: [`CtKind`] counters, then
/// events lost to a full ring buffer, then reads that failed.
pub const CT_STATS_LEN: u32 = 8;
pub const CT_STAT_RING_FULL: u32 = 4;
pub const CT_STAT_READ_FAILED: u32 = 5;
/// A kretprobe found no skb saved by its kprobe for this thread (evicted,
/// or consumed by a nested call from a softirq on the same CPU).
pub const CT_STAT_ENTRY_MISSED: u32 = 6;

/// Threads inside a probed function at once, per function (kprobe →
/// kretprobe hand-over of the skb).
pub const ENTRY_SKB_MAX_ENTRIES: u32 = 4096;

/// `KFREE_SKB_FILTER` values: pick insert failures by drop reason
/// NETFILTER_DROP (v5.17+), or take every free of a packet whose conntrack
/// entry was never confirmed (older kernels: no reason argument).
pub const KFREE_SKB_BY_REASON: u32 = 1;
pub const KFREE_SKB_UNCONFIRMED_ONLY: u32 = 0;

/// One conntrack tuple (the kernel's `nf_conntrack_tuple`, flattened).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports (host order); ICMP id/type in the kernel's layout otherwise.
    pub sport: u16,
    pub dport: u16,
    /// AF_INET (2) or AF_INET6 (10).
    pub l3num: u16,
    pub protonum: u8,
    pub _pad: u8,
}

/// A drop or a clash, with where and on which CPU it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConntrackEvent {
    pub ts_ns: u64,
    /// A [`CtKind`] as u32.
    pub kind: u32,
    pub cpu: u32,
    /// Inode number of the network namespace (`ls -l /proc/<pid>/ns/net`).
    pub netns: u32,
    /// Device the packet was on (0 when unknown).
    pub ifindex: u32,
    /// Original direction (as the client sent it: service IP before DNAT).
    pub orig: CtTuple,
    /// Reply direction (after DNAT: the backend that answers).
    pub reply: CtTuple,
}

const _: () = assert!(size_of::<CtTuple>() == 40);
const _: () = assert!(size_of::<ConntrackEvent>() == 24 + 80);

crate::impl_pod!(CtTuple, ConntrackEvent);
