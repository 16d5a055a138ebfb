//! Per-interface packet and byte counters kept by the `counter_tc_*` programs.
//!
//! This is the skeleton every TC probe grows from: a per-CPU hash keyed by the
//! interface and the hook direction, summed across CPUs in userspace.

use core::mem::size_of;

/// Which TC hook saw the packet.
///
/// On a host-side pod veth, *ingress* carries what the pod sends and *egress*
/// what is delivered to the pod.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    /// Decodes the raw value stored in [`IfaceKey::direction`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Ingress),
            1 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// Key of the `COUNTERS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// Interface index in the network namespace the program is attached in.
    pub ifindex: u32,
    /// A [`Direction`] as `u32`.
    pub direction: u32,
}

/// Value of the `COUNTERS` map (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    pub packets: u64,
    /// Bytes as seen by TC: `skb->len`, i.e. from the Ethernet header on.
    pub bytes: u64,
}

impl IfaceCounters {
    /// Adds another CPU's (or another interval's) counters to these.
    pub const fn add(&mut self, other: &Self) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Upper bound of distinct (interface, direction) keys. A node with 250 pods
/// and a bridge needs ~500; churn leaves stale keys until userspace prunes them.
pub const COUNTERS_MAX_ENTRIES: u32 = 8192;

const _: () = assert!(size_of::<IfaceKey>() == 8);
const _: () = assert!(size_of::<IfaceCounters>() == 16);

crate::impl_pod!(IfaceKey, IfaceCounters);
