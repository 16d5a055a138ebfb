//! Bounds-checked packet parsing shared by the TC probes.
//!
//! Every read goes through `TcContext::load` (bpf_skb_load_bytes), which
//! checks bounds in the kernel and also works on non-linear skbs (GRO'd veth
//! traffic), so no raw pointer arithmetic on `data`/`data_end` is needed.

use aya_ebpf::programs::TcContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// IPv6 extension headers walked before giving up (hop-by-hop, routing,
/// destination options, fragment, AH). Real traffic has 0–2.
pub(crate) const IPV6_EXT_MAX: usize = 6;

/// Why a packet has no usable L4 header.
#[derive(Clone, Copy)]
pub(crate) enum Skip {
    /// Not IPv4/IPv6, or not UDP/TCP: not our business, not counted.
    Other,
    /// A header was cut short.
    Short,
    /// More than two VLAN tags.
    VlanTooDeep,
    /// More than [`IPV6_EXT_MAX`] IPv6 extension headers.
    Ipv6ExtTooDeep,
    /// A non-first fragment.
    Fragment,
}

/// Addresses and ports of a UDP or TCP packet, and where its payload starts.
pub(crate) struct L4 {
    pub family: u8,
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// Offset of the L4 payload from the start of the frame.
    pub payload_off: usize,
}

#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Result<T, Skip> {
    ctx.load::<T>(off).map_err(|_| Skip::Short)
}

/// Parses Ethernet (with up to two VLAN tags), IPv4/IPv6 and UDP/TCP.
#[inline(always)]
pub(crate) fn l4(ctx: &TcContext) -> Result<L4, Skip> {
    let eth: EthHdr = load(ctx, 0)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    // 802.1Q / QinQ. On a veth the tag is usually already in skb metadata
    // (vlan offload) and absent from the data; an in-band tag is parsed here.
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: VlanHdr = load(ctx, off)?;
        ether_type = u16::from_be(vlan.ether_type);
        off += VlanHdr::LEN;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Skip::VlanTooDeep);
    }
    let mut l4 = L4 {
        family: 0,
        proto: 0,
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        payload_off: 0,
    };
    match ether_type {
        ETH_P_IP => {
            let ip: Ipv4Hdr = load(ctx, off)?;
            let ihl = usize::from(ip.vihl & 0x0f) * 4;
            if ihl < Ipv4Hdr::LEN {
                return Err(Skip::Short);
            }
            // Fragment offset ≠ 0: no L4 header in this packet.
            if u16::from_be_bytes(ip.frags) & 0x1fff != 0 {
                return Err(Skip::Fragment);
            }
            l4.family = 4;
            l4.proto = ip.proto;
            l4.src[..4].copy_from_slice(&ip.src_addr);
            l4.dst[..4].copy_from_slice(&ip.dst_addr);
            off += ihl; // IPv4 options skipped via IHL.
        }
        ETH_P_IPV6 => {
            let ip: Ipv6Hdr = load(ctx, off)?;
            l4.family = 6;
            l4.src = ip.src_addr;
            l4.dst = ip.dst_addr;
            off += Ipv6Hdr::LEN;
            let mut next = ip.next_hdr;
            let mut done = false;
            for _ in 0..IPV6_EXT_MAX {
                match next {
                    // Hop-by-hop, routing, destination options: (len+1)*8 bytes.
                    0 | 43 | 60 => {
                        let ext: [u8; 2] = load(ctx, off)?;
                        next = ext[0];
                        off += (usize::from(ext[1]) + 1) * 8;
                    }
                    // Fragment header: 8 bytes; only the first fragment has L4.
                    44 => {
                        let frag: [u8; 4] = load(ctx, off)?;
                        if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                            return Err(Skip::Fragment);
                        }
                        next = frag[0];
                        off += 8;
                    }
                    // Authentication header: (len+2)*4 bytes.
                    51 => {
                        let ext: [u8; 2] = load(ctx, off)?;
                        next = ext[0];
                        off += (usize::from(ext[1]) + 2) * 4;
                    }
                    _ => {
                        done = true;
                        break;
                    }
                }
            }
            // The bound used up is fine when the chain ended right there.
            if !done && matches!(next, 0 | 43 | 44 | 51 | 60) {
                return Err(Skip::Ipv6ExtTooDeep);
            }
            l4.proto = next;
        }
        _ => return Err(Skip::Other),
    }
    match l4.proto {
        IPPROTO_UDP => {
            let udp: UdpHdr = load(ctx, off)?;
            l4.sport = u16::from_be_bytes(udp.src);
            l4.dport = u16::from_be_bytes(udp.dst);
            l4.payload_off = off + UdpHdr::LEN;
        }
        IPPROTO_TCP => {
            let tcp: TcpHdr = load(ctx, off)?;
            let doff = usize::from(tcp.doff()) * 4;
            if doff < TcpHdr::LEN {
                return Err(Skip::Short);
            }
            l4.sport = u16::from_be_bytes(tcp.source);
            l4.dport = u16::from_be_bytes(tcp.dest);
            l4.payload_off = off + doff;
        }
        _ => return Err(Skip::Other),
    }
    Ok(l4)
}

/// Reads `len` bytes at `off` into `dst[..len]`, for a `len` only known at
/// run time (1..=`dst.len()`).
///
/// `TcContext::load_bytes` re-derives the length with a `min()` that the
/// verifier sees as possibly zero, which bpf_skb_load_bytes rejects
/// ("invalid zero-sized read"). Here the bounds are checked on a value
/// LLVM cannot fold away (volatile read), right before the call.
#[inline(always)]
pub(crate) fn load_var(ctx: &TcContext, off: usize, dst: &mut [u8], len: usize) -> Result<(), ()> {
    // SAFETY: reading a local through a valid reference.
    let len = unsafe { core::ptr::read_volatile(&len) };
    if len == 0 || len > dst.len() {
        return Err(());
    }
    // SAFETY: dst has at least `len` writable bytes; the helper checks the
    // packet bounds itself.
    let ret = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            dst.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(()) }
}
