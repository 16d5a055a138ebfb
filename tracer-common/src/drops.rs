//! Why packets died: the contract between `tracer-ebpf/src/drops.rs` and
//! `tracer/src/drops/`.
//!
//! `skb:kfree_skb` carries `enum skb_drop_reason` since v5.17. The program
//! counts, in the kernel, each drop of this node's packets by (reason,
//! namespace, device, protocol, DNS or not) and by (reason, code location);
//! DNS drops are also kept by flow and message id in a small LRU, so the
//! report can say why an unanswered query went unanswered. Nothing is sent
//! per packet.

use core::mem::size_of;

/// Distinct [`DropKey`]s counted.
pub const DROPS_MAX_ENTRIES: u32 = 4096;
/// Distinct [`DropLocationKey`]s counted (code locations are few: each
/// `kfree_skb_reason` call site).
pub const LOCATIONS_MAX_ENTRIES: u32 = 512;
/// Recent DNS drops remembered by flow and id (LRU: the oldest go first).
pub const DNS_DROPS_MAX_ENTRIES: u32 = 1024;
/// Namespaces and devices whose drops are this node's.
pub const SCOPE_MAX_ENTRIES: u32 = 4096;

/// The well-known DNS port: a packet from or to it is a DNS packet.
pub const DNS_PORT: u16 = 53;

/// Value of `DROPS_SCOPE`: every drop in that namespace (a pod's) or on
/// that device (a traced pod port in the node's namespace) counts.
pub const SCOPE_ALL: u8 = 1;
/// Value of `DROPS_SCOPE` for the node's namespace as a whole (ifindex 0):
/// only DNS drops count there (the node's own traffic is not a pod's).
pub const SCOPE_DNS: u8 = 2;

/// Key of `DROPS_SCOPE`: `ifindex` 0 stands for the whole namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeKey {
    pub netns: u32,
    pub ifindex: u32,
}

/// `enum skb_drop_reason` values that are not drops, from the running
/// kernel's BTF (load-time global `DROP_REASONS`): their numbers changed
/// (NOT_SPECIFIED is 0 on v5.17–5.18, 2 since SKB_NOT_DROPPED_YET and
/// SKB_CONSUMED arrived). [`NO_REASON`] where the kernel lacks one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropReasons {
    /// 0 = the program does nothing: the tracepoint has no reason (before
    /// v5.17), and reading a third argument would be refused.
    pub enabled: u32,
    pub not_dropped_yet: u32,
    pub consumed: u32,
    pub not_specified: u32,
}

/// A reason value no kernel uses.
pub const NO_REASON: u32 = u32::MAX;

impl DropReasons {
    pub const DISABLED: Self = Self {
        enabled: 0,
        not_dropped_yet: NO_REASON,
        consumed: NO_REASON,
        not_specified: NO_REASON,
    };
}

/// Key of the per-CPU `DROPS` counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DropKey {
    pub reason: u32,
    /// Namespace inode of the device the skb was on (0: no device).
    pub netns: u32,
    pub ifindex: u32,
    /// IPPROTO_* of the packet; 0 when not IP or its header not readable.
    pub proto: u8,
    /// 4 or 6; 0 when not IP.
    pub family: u8,
    /// 1 when from or to port 53.
    pub dns: u8,
    /// 1 when from port 53 (a DNS answer; with `dns`).
    pub answer: u8,
}

/// Key of the per-CPU `DROP_LOCATIONS` counters: the code address the
/// kernel freed the packet at (`location`, symbolised by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DropLocationKey {
    pub reason: u32,
    pub _pad: u32,
    pub location: u64,
}

/// Key of `DNS_DROPS`: the DNS exchange a dropped packet belonged to,
/// client first whichever way the packet went.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsDropKey {
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    /// DNS message id (0 for TCP: the id is behind the length prefix,
    /// possibly in a later segment).
    pub id: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of `DNS_DROPS`: the last drop of that exchange.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsDrop {
    pub ts_ns: u64,
    pub location: u64,
    pub reason: u32,
    pub netns: u32,
    pub ifindex: u32,
    /// 1 when the dropped packet was the answer (from the server's port).
    pub answer: u8,
    pub _pad: [u8; 3],
    /// Drops of this exchange (the query's re-sends may die the same way).
    pub count: u64,
}

const _: () = assert!(size_of::<ScopeKey>() == 8);
const _: () = assert!(size_of::<DropReasons>() == 16);
const _: () = assert!(size_of::<DropKey>() == 16);
const _: () = assert!(size_of::<DropLocationKey>() == 16);
const _: () = assert!(size_of::<DnsDropKey>() == 40);
const _: () = assert!(size_of::<DnsDrop>() == 40);

crate::impl_pod!(
    ScopeKey,
    DropReasons,
    DropKey,
    DropLocationKey,
    DnsDropKey,
    DnsDrop
);
