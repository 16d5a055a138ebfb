//! Bounds-checked packet parsing shared by the TC probes.
//!
//! Headers are read with direct packet access (`skb->data`..`data_end`): a
//! load and a compare, ~1 ns, where a `bpf_skb_load_bytes` call costs ~20 ns
//! (measured by `cargo xtask bench`). Only the linear part of an skb is
//! reachable that way; when a header lies beyond it (a GRO'd or paged skb)
//! the same parser runs again over `bpf_skb_load_bytes`, which reads paged
//! data too. Every read goes through [`Reader::read`]: no raw offsets.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// IPv6 extension headers walked before giving up (hop-by-hop, routing,
/// destination options, fragment, AH). Real traffic has 0–2.
pub(crate) const IPV6_EXT_MAX: usize = 6;
/// VLAN tags parsed in-band (802.1Q, QinQ).
const VLAN_MAX: usize = 2;
/// IPv4 "more fragments" flag and offset mask of `frag_off` (RFC 791).
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// IPv6 fragment header: offset bits of its second 16-bit word (RFC 8200).
const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;
/// Length of the IPv6 fragment header.
const IPV6_FRAG_HDR_LEN: usize = 8;

// network-types stores ethertypes in network byte order.
pub(crate) const ETH_P_IP: u16 = u16::from_be(EtherType::Ipv4 as u16);
pub(crate) const ETH_P_IPV6: u16 = u16::from_be(EtherType::Ipv6 as u16);
const ETH_P_8021Q: u16 = u16::from_be(EtherType::Ieee8021q as u16);
const ETH_P_8021AD: u16 = u16::from_be(EtherType::Ieee8021ad as u16);

pub(crate) const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub(crate) const IPPROTO_UDP: u8 = IpProto::Udp as u8;
const IPPROTO_HOPOPT: u8 = IpProto::HopOpt as u8;
const IPPROTO_ROUTING: u8 = IpProto::Ipv6Route as u8;
const IPPROTO_FRAGMENT: u8 = IpProto::Ipv6Frag as u8;
const IPPROTO_AH: u8 = IpProto::Ah as u8;
const IPPROTO_DSTOPTS: u8 = IpProto::Ipv6Opts as u8;

/// IP versions as the DNS contract encodes `family` (`DnsKey::family`).
pub(crate) const FAMILY_V4: u8 = 4;
pub(crate) const FAMILY_V6: u8 = 6;

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
    /// Headers reach past the linear part of the skb: parse with the helper.
    NonLinear,
}

/// Reads a `T` at a frame offset, bounds-checked.
pub(crate) trait Reader {
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip>;
}

/// The linear part of the skb, read in place.
pub(crate) struct Direct {
    data: usize,
    end: usize,
}

impl Direct {
    #[inline(always)]
    pub(crate) fn new(ctx: &TcContext) -> Self {
        Self {
            data: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Bytes reachable in place.
    #[inline(always)]
    pub(crate) fn linear_len(&self) -> usize {
        self.end.saturating_sub(self.data)
    }
}

impl Reader for Direct {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip> {
        let start = self.data + off;
        // The verifier learns the packet range from this very compare of a
        // packet pointer against data_end (every kernel since v4.7).
        if start + size_of::<T>() > self.end {
            return Err(Skip::Short);
        }
        // SAFETY: [start, start + size_of::<T>()) lies inside the linear
        // packet data just checked; headers are not aligned, hence unaligned.
        Ok(unsafe { core::ptr::read_unaligned(start as *const T) })
    }
}

/// Kernel memory from `base` on, through `bpf_probe_read_kernel`: the
/// headers of an skb seen by a tracing program (no packet context there).
pub(crate) struct Kernel {
    pub(crate) base: u64,
}

impl Reader for Kernel {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip> {
        crate::kernel::read::<T>(self.base, off as u32).map_err(|()| Skip::Short)
    }
}

/// The whole skb through `bpf_skb_load_bytes` (paged data included).
pub(crate) struct Helper<'a>(pub(crate) &'a TcContext);

impl Reader for Helper<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, Skip> {
        self.0.load::<T>(off).map_err(|_| Skip::Short)
    }
}

/// Where a UDP or TCP packet's headers are, and its ports.
#[derive(Clone, Copy)]
pub(crate) struct L4 {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the IP header from the start of the frame.
    pub l3_off: usize,
    /// Offset of the L4 payload from the start of the frame.
    pub payload_off: usize,
}

/// Source and destination addresses, IPv6-sized (IPv4 in the first 4 bytes).
pub(crate) struct Addrs {
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Parses Ethernet (with up to two VLAN tags), IPv4/IPv6 and UDP/TCP ports
/// in place: the per-packet fast path. Headers beyond the linear part (rare:
/// local senders and GRO keep headers linear) give [`Skip::NonLinear`]; the
/// caller then uses [`l4_slow`].
///
/// Callers keep what follows the two apart: only a verdict (not the parsed
/// offsets) flows from this parse into the slow path, so the verifier can
/// prune the states where both meet instead of walking the rest of the
/// program once per way the headers were read (together they exceeded the
/// 1 M instruction limit).
#[inline(always)]
pub(crate) fn l4_fast(ctx: &TcContext) -> Result<L4, Skip> {
    let direct = Direct::new(ctx);
    match l4_with(&direct) {
        Err(Skip::Short) if (ctx.len() as usize) > direct.linear_len() => Err(Skip::NonLinear),
        other => other,
    }
}

/// [`l4_fast`] through `bpf_skb_load_bytes`: paged data included, ~20 ns a
/// header. For what is rare: DNS packets, flooded frames, non-linear headers.
#[inline(always)]
pub(crate) fn l4_slow(ctx: &TcContext) -> Result<L4, Skip> {
    l4_with(&Helper(ctx))
}

/// A `T` at `off`: in place when linear, else through the helper.
#[inline(always)]
pub(crate) fn read<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, Skip> {
    match Direct::new(ctx).read(off) {
        Ok(value) => Ok(value),
        Err(_) => Helper(ctx).read(off),
    }
}

/// The addresses of a packet [`l4_slow`] parsed.
#[inline(always)]
pub(crate) fn addrs(ctx: &TcContext, l4: &L4) -> Result<Addrs, Skip> {
    addrs_with(&Helper(ctx), l4)
}

/// The addresses of a packet parsed from `r`.
#[inline(always)]
pub(crate) fn addrs_with<R: Reader>(r: &R, l4: &L4) -> Result<Addrs, Skip> {
    let mut addrs = Addrs {
        src: [0; 16],
        dst: [0; 16],
    };
    if l4.family == FAMILY_V4 {
        let ip: Ipv4Hdr = r.read(l4.l3_off)?;
        addrs.src[..4].copy_from_slice(&ip.src_addr);
        addrs.dst[..4].copy_from_slice(&ip.dst_addr);
    } else {
        let ip: Ipv6Hdr = r.read(l4.l3_off)?;
        addrs.src = ip.src_addr;
        addrs.dst = ip.dst_addr;
    }
    Ok(addrs)
}

#[inline(always)]
fn l4_with<R: Reader>(r: &R) -> Result<L4, Skip> {
    let (ether_type, l3_off) = l3(r)?;
    l4_from_ip(r, ether_type, l3_off)
}

/// [`l4_with`] from the IP header at `l3_off` on, for a packet whose
/// ethertype is known (the kernel's skb->protocol, or the IP version).
#[inline(always)]
pub(crate) fn l4_from_ip<R: Reader>(r: &R, ether_type: u16, l3_off: usize) -> Result<L4, Skip> {
    let (family, proto, l4_off) = match ether_type {
        ETH_P_IP => ipv4(r, l3_off)?,
        ETH_P_IPV6 => ipv6(r, l3_off)?,
        _ => return Err(Skip::Other),
    };
    let (sport, dport, payload_off) = match proto {
        IPPROTO_UDP => {
            let udp: UdpHdr = r.read(l4_off)?;
            (udp.src, udp.dst, l4_off + UdpHdr::LEN)
        }
        IPPROTO_TCP => {
            let tcp: TcpHdr = r.read(l4_off)?;
            let doff = usize::from(tcp.doff()) * 4;
            if doff < TcpHdr::LEN {
                return Err(Skip::Short);
            }
            (tcp.source, tcp.dest, l4_off + doff)
        }
        _ => return Err(Skip::Other),
    };
    Ok(L4 {
        family,
        proto,
        sport: u16::from_be_bytes(sport),
        dport: u16::from_be_bytes(dport),
        l3_off,
        payload_off,
    })
}

/// The ethertype after up to [`VLAN_MAX`] in-band tags, and where L3 starts.
/// On a veth the tag is usually in skb metadata (VLAN offload) and absent
/// from the data; an in-band one is parsed here.
#[inline(always)]
fn l3<R: Reader>(r: &R) -> Result<(u16, usize), Skip> {
    let eth: EthHdr = r.read(0)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    for _ in 0..VLAN_MAX {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            return Ok((ether_type, off));
        }
        let vlan: VlanHdr = r.read(off)?;
        ether_type = u16::from_be(vlan.ether_type);
        off += VlanHdr::LEN;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Skip::VlanTooDeep);
    }
    Ok((ether_type, off))
}

#[inline(always)]
fn ipv4<R: Reader>(r: &R, off: usize) -> Result<(u8, u8, usize), Skip> {
    let ip: Ipv4Hdr = r.read(off)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(Skip::Short);
    }
    // A fragment offset ≠ 0: no L4 header in this packet.
    if u16::from_be_bytes(ip.frags) & IPV4_FRAG_OFFSET_MASK != 0 {
        return Err(Skip::Fragment);
    }
    // IPv4 options are skipped via IHL.
    Ok((FAMILY_V4, ip.proto, off + ihl))
}

#[inline(always)]
fn ipv6<R: Reader>(r: &R, off: usize) -> Result<(u8, u8, usize), Skip> {
    let ip: Ipv6Hdr = r.read(off)?;
    let mut off = off + Ipv6Hdr::LEN;
    let mut next = ip.next_hdr;
    for _ in 0..IPV6_EXT_MAX {
        match next {
            // (len + 1) * 8 bytes.
            IPPROTO_HOPOPT | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: [u8; 2] = r.read(off)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 1) * 8;
            }
            // Only the first fragment carries the L4 header.
            IPPROTO_FRAGMENT => {
                let frag: [u8; 4] = r.read(off)?;
                if u16::from_be_bytes([frag[2], frag[3]]) & IPV6_FRAG_OFFSET_MASK != 0 {
                    return Err(Skip::Fragment);
                }
                next = frag[0];
                off += IPV6_FRAG_HDR_LEN;
            }
            // (len + 2) * 4 bytes.
            IPPROTO_AH => {
                let ext: [u8; 2] = r.read(off)?;
                next = ext[0];
                off += (usize::from(ext[1]) + 2) * 4;
            }
            _ => return Ok((FAMILY_V6, next, off)),
        }
    }
    // The bound used up is fine when the chain ended right there.
    if is_ipv6_ext(next) {
        return Err(Skip::Ipv6ExtTooDeep);
    }
    Ok((FAMILY_V6, next, off))
}

#[inline(always)]
fn is_ipv6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPT | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

/// Reads `len` bytes at `off` into `dst[..len]`, for a `len` only known at
/// run time (1..=N, N a power of two).
///
/// bpf_skb_load_bytes needs a size the verifier can prove ≥ 1. LLVM folds
/// `len == 0 || len > N` into one unsigned compare of `len - 1`; verifiers
/// before v6.12 do not carry that bound back to `len` (the 5.10 and 6.1
/// verifiers refused the program: "R3 min value is outside of the allowed
/// memory range"). So the size passed is rebuilt as `(len - 1) & (N - 1)) + 1`
/// from a value LLVM cannot see through (volatile read): [1, N] on every
/// verifier, and equal to `len` since `len - 1 < N` was checked. That
/// length is returned: callers use it instead of `len`, so what follows sees
/// the same [1, N] range on every path.
#[inline(always)]
pub(crate) fn load_var<const N: usize>(
    ctx: &TcContext,
    off: usize,
    dst: &mut [u8; N],
    len: usize,
) -> Result<usize, ()> {
    const { assert!(N.is_power_of_two()) };
    if len == 0 || len > N {
        return Err(());
    }
    let minus_one = len - 1;
    // SAFETY: reading a local through a valid reference.
    let minus_one = unsafe { core::ptr::read_volatile(&minus_one) };
    let len = (minus_one & (N - 1)) + 1;
    // SAFETY: dst has N ≥ len writable bytes; the helper checks the packet
    // bounds itself.
    let ret = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            dst.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if ret == 0 { Ok(len) } else { Err(()) }
}
