//! Byte offsets of the kernel struct members the tracing programs read.
//!
//! Rust eBPF programs get no CO-RE field relocations, so userspace resolves
//! these offsets from the running kernel's BTF at start-up
//! (`tracer/src/btf.rs`) and hands them to the programs as one load-time
//! global. [`UNKNOWN`] marks a member this kernel does not have; programs
//! that need it are then not attached (and the report says so).

use core::mem::size_of;

/// An offset that could not be resolved.
pub const UNKNOWN: u32 = u32::MAX;

/// Offsets (bytes from the start of the named struct).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sk_buff
    pub skb_head: u32,
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_mac_header: u32,
    pub skb_network_header: u32,
    /// `_nfct`: the conntrack entry pointer with ctinfo in the low 3 bits.
    pub skb_nfct: u32,
    // struct net_device
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    // struct net
    pub net_ns_inum: u32,
    // struct nf_conn
    /// `tuplehash[IP_CT_DIR_ORIGINAL].tuple`.
    pub ct_tuple_orig: u32,
    /// `tuplehash[IP_CT_DIR_REPLY].tuple`.
    pub ct_tuple_reply: u32,
    pub ct_net: u32,
    /// `status` (IPS_* bits; IPS_CONFIRMED is bit 3).
    pub ct_status: u32,
    // struct nf_conntrack_tuple
    pub tuple_src_u3: u32,
    pub tuple_src_port: u32,
    pub tuple_l3num: u32,
    pub tuple_dst_u3: u32,
    pub tuple_dst_port: u32,
    pub tuple_protonum: u32,
    // struct net_bridge_fdb_entry
    pub fdb_addr: u32,
    pub fdb_vid: u32,
    pub fdb_dst: u32,
    /// `updated` (jiffies of the last time the entry was refreshed).
    pub fdb_updated: u32,
    // struct net_bridge_port
    pub port_dev: u32,
    /// `state` (`BR_STATE_*`, a u8).
    pub port_state: u32,
    // struct net_bridge
    pub br_dev: u32,
    /// `ageing_time` (jiffies).
    pub br_ageing_time: u32,
    // struct neighbour
    pub neigh_primary_key: u32,
    pub neigh_dev: u32,
    pub neigh_tbl: u32,
    pub neigh_nud_state: u32,
    pub neigh_ha: u32,
    // struct neigh_table
    pub tbl_family: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP` of `enum skb_drop_reason` (its
    /// number changes between kernels).
    pub drop_reason_netfilter: u32,
}

impl KernelOffsets {
    /// Everything unknown: what the object carries until userspace fills it.
    pub const UNKNOWN: Self = Self {
        skb_head: UNKNOWN,
        skb_len: UNKNOWN,
        skb_dev: UNKNOWN,
        skb_mac_header: UNKNOWN,
        skb_network_header: UNKNOWN,
        skb_nfct: UNKNOWN,
        dev_ifindex: UNKNOWN,
        dev_nd_net: UNKNOWN,
        net_ns_inum: UNKNOWN,
        ct_tuple_orig: UNKNOWN,
        ct_tuple_reply: UNKNOWN,
        ct_net: UNKNOWN,
        ct_status: UNKNOWN,
        tuple_src_u3: UNKNOWN,
        tuple_src_port: UNKNOWN,
        tuple_l3num: UNKNOWN,
        tuple_dst_u3: UNKNOWN,
        tuple_dst_port: UNKNOWN,
        tuple_protonum: UNKNOWN,
        fdb_addr: UNKNOWN,
        fdb_vid: UNKNOWN,
        fdb_dst: UNKNOWN,
        fdb_updated: UNKNOWN,
        port_dev: UNKNOWN,
        port_state: UNKNOWN,
        br_dev: UNKNOWN,
        br_ageing_time: UNKNOWN,
        neigh_primary_key: UNKNOWN,
        neigh_dev: UNKNOWN,
        neigh_tbl: UNKNOWN,
        neigh_nud_state: UNKNOWN,
        neigh_ha: UNKNOWN,
        tbl_family: UNKNOWN,
        drop_reason_netfilter: UNKNOWN,
    };
}

const _: () = assert!(size_of::<KernelOffsets>() == 34 * 4);

crate::impl_pod!(KernelOffsets);
