//! Raw Ethernet frames to feed TC classifiers through `BPF_PROG_TEST_RUN`:
//! DNS over UDP or TCP on IPv4 or IPv6, with VLAN tags, IPv4 options and
//! fragments, IPv6 extension headers, and forged DNS messages to exercise the
//! bounds checks of the in-kernel DNS parser.
//!
//! [`Frame::build`] fills every length (Ethernet type, IPv4 total length, IPv6
//! payload length, UDP length, DNS-over-TCP prefix) and every checksum (IPv4
//! header, UDP and TCP over the pseudo-header) correctly. Only
//! [`Frame::truncate`] and [`DnsMsg`]'s forging setters make a frame lie, and
//! they do so on purpose.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Source MAC of every frame (locally administered).
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC of every frame (locally administered).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_TYPE_AAAA: u16 = 28;
const FLAG_TC: u16 = 0x0200;

/// A DNS message with one question and optional answers, in wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMsg {
    id: u16,
    flags: u16,
    qdcount: u16,
    name: Vec<u8>,
    qtype: u16,
    answers: u16,
}

impl DnsMsg {
    /// A standard query with RD set for `name` (dotted, trailing dot
    /// optional; `""` or `"."` is the root), class IN.
    ///
    /// Panics on an empty label or one longer than 63 bytes: forge those
    /// with [`DnsMsg::raw_name`].
    pub fn query(id: u16, name: &str, qtype: u16) -> Self {
        Self {
            id,
            flags: 0x0100,
            qdcount: 1,
            name: encode_name(name),
            qtype,
            answers: 0,
        }
    }

    /// A response (QR, RD, RA set) carrying `rcode` (low 4 bits) and
    /// `answers` records. Each record names the question through the
    /// compression pointer 0xC00C, has class IN and TTL 60, and is AAAA
    /// `2001:db8::N` when `qtype` is AAAA (28), else A `192.0.2.N` (N mod
    /// 256), with N counting from 1.
    pub fn response(id: u16, name: &str, qtype: u16, rcode: u8, answers: u16) -> Self {
        Self {
            flags: 0x8180 | u16::from(rcode & 0x0f),
            answers,
            ..Self::query(id, name, qtype)
        }
    }

    /// Sets or clears the TC (truncated) flag.
    pub fn truncated(mut self, tc: bool) -> Self {
        self.flags = if tc {
            self.flags | FLAG_TC
        } else {
            self.flags & !FLAG_TC
        };
        self
    }

    /// Overrides QDCOUNT (1 by default). The message still carries exactly
    /// one question, so any other value is a lie for the parser to catch.
    pub fn qdcount(mut self, n: u16) -> Self {
        self.qdcount = n;
        self
    }

    /// Replaces the encoded question name with `bytes`, verbatim: no
    /// terminating zero is added. Forges compression-pointer loops
    /// (`[0xC0, 0x0C]` points at itself), over-long labels, names past 255
    /// bytes, or names that run off the end of the message.
    pub fn raw_name(mut self, bytes: &[u8]) -> Self {
        self.name = bytes.to_vec();
        self
    }

    /// The wire bytes: 12-byte header, the question, then the answers.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for word in [self.id, self.flags, self.qdcount, self.answers, 0, 0] {
            b.extend_from_slice(&word.to_be_bytes());
        }
        b.extend_from_slice(&self.name);
        b.extend_from_slice(&self.qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes()); // class IN
        for i in 1..=self.answers {
            let (rtype, rdata) = if self.qtype == DNS_TYPE_AAAA {
                let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i);
                (DNS_TYPE_AAAA, addr.octets().to_vec())
            } else {
                let [_, lo] = i.to_be_bytes();
                (1, vec![192, 0, 2, lo])
            };
            b.extend_from_slice(&[0xc0, 0x0c]);
            b.extend_from_slice(&rtype.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes()); // class IN
            b.extend_from_slice(&60u32.to_be_bytes()); // TTL
            b.extend_from_slice(&be16(rdata.len()));
            b.extend_from_slice(&rdata);
        }
        b
    }
}

/// Encodes a dotted name as length-prefixed labels ending in the root label.
fn encode_name(name: &str) -> Vec<u8> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::new();
    if !name.is_empty() {
        for label in name.split('.') {
            assert!(
                (1..=63).contains(&label.len()),
                "label {label:?} of {name:?} is empty or over 63 bytes: use DnsMsg::raw_name"
            );
            out.extend_from_slice(&[label.len() as u8]);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    out
}

/// Transport header of a [`Frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// UDP from port `src` to port `dst`.
    Udp {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// TCP with no options, ACK number 0 and window 65535.
    Tcp {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
        /// Raw flags byte, e.g. 0x18 for PSH|ACK, 0x02 for SYN.
        flags: u8,
        /// Sequence number.
        seq: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ip {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// An Ethernet frame carrying `payload` (usually [`DnsMsg::bytes`]) over
/// UDP or TCP over IPv4 or IPv6, from [`SRC_MAC`] to [`DST_MAC`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    ip: Ip,
    l4: L4,
    payload: Vec<u8>,
    vlans: Vec<u16>,
    ipv4_option_words: u8,
    ext_headers: Vec<u8>,
    fragment: Option<(u16, bool)>,
    tcp_length_prefix: bool,
    truncate: Option<usize>,
}

impl Frame {
    fn new(ip: Ip, l4: L4, payload: &[u8]) -> Self {
        Self {
            ip,
            l4,
            payload: payload.to_vec(),
            vlans: Vec::new(),
            ipv4_option_words: 0,
            ext_headers: Vec::new(),
            fragment: None,
            tcp_length_prefix: true,
            truncate: None,
        }
    }

    /// An IPv4 frame (TTL 64, DF set unless [`Frame::ipv4_fragment`]).
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, l4: L4, payload: &[u8]) -> Self {
        Self::new(Ip::V4 { src, dst }, l4, payload)
    }

    /// An IPv6 frame (hop limit 64, no traffic class or flow label).
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, l4: L4, payload: &[u8]) -> Self {
        Self::new(Ip::V6 { src, dst }, l4, payload)
    }

    /// Adds a VLAN tag with ID `vid` (low 12 bits, priority 0). Tags appear
    /// in call order, the first outermost: one tag is 802.1Q (TPID 0x8100);
    /// with two or more the outer one is 802.1ad (TPID 0x88a8, QinQ).
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push(vid);
        self
    }

    /// IPv4 only: appends `len_words` 32-bit words of NOP options, so
    /// IHL = 5 + `len_words` (at most 10 words, IHL 15).
    pub fn ipv4_options(mut self, len_words: u8) -> Self {
        self.ipv4_option_words = len_words;
        self
    }

    /// IPv6 only: inserts one 8-byte extension header per entry of
    /// `next_headers`, in order, each a protocol number (0 hop-by-hop, 60
    /// destination options, 43 routing, 44 fragment, ...). The chain is
    /// linked through the Next Header fields and ends in the L4 protocol.
    /// Every header has Hdr Ext Len 0; options headers (0, 60) carry one
    /// PadN option, all others zeros (routing type 0 with no segments left,
    /// fragment offset 0 without MF).
    pub fn ipv6_ext_headers(mut self, next_headers: &[u8]) -> Self {
        self.ext_headers = next_headers.to_vec();
        self
    }

    /// IPv4 only: marks the packet as a fragment at `offset_8` (in 8-byte
    /// units, low 13 bits) with MF = `more`, and clears DF. The L4 header
    /// and payload still follow the IP header even when the offset is not
    /// zero, so a parser that ignores fragmentation would misread them.
    pub fn ipv4_fragment(mut self, offset_8: u16, more: bool) -> Self {
        self.fragment = Some((offset_8, more));
        self
    }

    /// TCP only (ignored for UDP): whether the payload is preceded by the
    /// 2-byte big-endian length that DNS over TCP requires. On by default.
    pub fn tcp_dns_length_prefix(mut self, on: bool) -> Self {
        self.tcp_length_prefix = on;
        self
    }

    /// Cuts the built frame to at most `len` bytes. Headers keep the
    /// lengths and checksums of the whole frame.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    /// The frame's bytes.
    ///
    /// Panics when a modifier does not fit the IP version, when there are
    /// more than 10 words of IPv4 options, or when a length overflows 16 bits.
    pub fn build(&self) -> Vec<u8> {
        let (proto, mut l4) = self.segment();
        let mut f = Vec::with_capacity(128 + l4.len());
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        for (i, vid) in self.vlans.iter().enumerate() {
            let outer = i == 0 && self.vlans.len() > 1;
            let tpid = if outer { ETH_P_8021AD } else { ETH_P_8021Q };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let pseudo = match self.ip {
            Ip::V4 { src, dst } => {
                assert!(
                    self.ext_headers.is_empty(),
                    "IPv6 extension headers on IPv4"
                );
                assert!(self.ipv4_option_words <= 10, "IPv4 options exceed IHL 15");
                let ihl = 5 + self.ipv4_option_words;
                let frag = match self.fragment {
                    None => 0x4000, // DF
                    Some((offset, more)) => offset & 0x1fff | if more { 0x2000 } else { 0 },
                };
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let start = f.len();
                f.extend_from_slice(&[0x40 | ihl, 0]);
                f.extend_from_slice(&be16(usize::from(ihl) * 4 + l4.len()));
                f.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
                f.extend_from_slice(&frag.to_be_bytes());
                f.extend_from_slice(&[64, proto, 0, 0]); // TTL, protocol, checksum
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.resize(start + usize::from(ihl) * 4, 1); // NOP options
                let sum = checksum(&f[start..]);
                f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
                [
                    &src.octets()[..],
                    &dst.octets(),
                    &[0, proto],
                    &be16(l4.len()),
                ]
                .concat()
            }
            Ip::V6 { src, dst } => {
                assert!(self.ipv4_option_words == 0, "IPv4 options on IPv6");
                assert!(self.fragment.is_none(), "IPv4 fragment on IPv6");
                let first = self.ext_headers.first().copied().unwrap_or(proto);
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                f.extend_from_slice(&0x6000_0000u32.to_be_bytes());
                f.extend_from_slice(&be16(self.ext_headers.len() * 8 + l4.len()));
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                for (i, &kind) in self.ext_headers.iter().enumerate() {
                    let next = self.ext_headers.get(i + 1).copied().unwrap_or(proto);
                    f.extend_from_slice(&[next, 0]);
                    match kind {
                        0 | 60 => f.extend_from_slice(&[1, 4, 0, 0, 0, 0]), // PadN
                        _ => f.extend_from_slice(&[0; 6]),
                    }
                }
                let len = u32::try_from(l4.len()).expect("L4 length fits 32 bits");
                let tail = [0, 0, 0, proto];
                [&src.octets()[..], &dst.octets(), &len.to_be_bytes(), &tail].concat()
            }
        };
        let at = if proto == IPPROTO_UDP { 6 } else { 16 };
        let sum = match checksum(&[pseudo, l4.clone()].concat()) {
            0 if proto == IPPROTO_UDP => 0xffff, // 0 means "no checksum"
            sum => sum,
        };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&l4);
        if let Some(len) = self.truncate {
            f.truncate(len);
        }
        f
    }

    /// The IP protocol number and the L4 header plus payload, checksum zero.
    fn segment(&self) -> (u8, Vec<u8>) {
        let mut s = Vec::with_capacity(22 + self.payload.len());
        match self.l4 {
            L4::Udp { src, dst } => {
                s.extend_from_slice(&src.to_be_bytes());
                s.extend_from_slice(&dst.to_be_bytes());
                s.extend_from_slice(&be16(8 + self.payload.len()));
                s.extend_from_slice(&[0, 0]);
                s.extend_from_slice(&self.payload);
                (IPPROTO_UDP, s)
            }
            L4::Tcp {
                src,
                dst,
                flags,
                seq,
            } => {
                s.extend_from_slice(&src.to_be_bytes());
                s.extend_from_slice(&dst.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(&0u32.to_be_bytes()); // ACK number
                s.extend_from_slice(&[5 << 4, flags]); // data offset 5 words
                s.extend_from_slice(&0xffffu16.to_be_bytes()); // window
                s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                if self.tcp_length_prefix {
                    s.extend_from_slice(&be16(self.payload.len()));
                }
                s.extend_from_slice(&self.payload);
                (IPPROTO_TCP, s)
            }
        }
    }
}

/// `len` as a big-endian u16; panics if it does not fit.
fn be16(len: usize) -> [u8; 2] {
    u16::try_from(len)
        .expect("length fits 16 bits")
        .to_be_bytes()
}

/// The Internet checksum (RFC 1071) of `data`, odd length padded with zero.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = data
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const UDP: L4 = L4::Udp {
        src: 40000,
        dst: 53,
    };
    const TCP: L4 = L4::Tcp {
        src: 40000,
        dst: 53,
        flags: 0x18,
        seq: 1,
    };

    fn dns() -> Vec<u8> {
        DnsMsg::query(0xbeef, "example.com", 1).bytes()
    }

    fn u16_at(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    /// Asserts the DNS message sits at `at` and runs to the end of the frame.
    fn assert_dns_at(f: &[u8], at: usize) {
        assert_eq!(f.len(), at + dns().len(), "frame length");
        assert_eq!(&f[at..], dns(), "DNS message at {at}");
    }

    /// Asserts the `proto` checksum of the segment at `l4` verifies over
    /// the pseudo-header built from the IP header at `ip`.
    fn assert_l4_checksum(f: &[u8], ip: usize, l4: usize, proto: u8) {
        let seg = &f[l4..];
        let pseudo = if f[ip] >> 4 == 4 {
            [&f[ip + 12..ip + 20], &[0, proto], &be16(seg.len())].concat()
        } else {
            let len = (seg.len() as u32).to_be_bytes();
            [&f[ip + 8..ip + 40], &len, &[0, 0, 0, proto]].concat()
        };
        assert_eq!(checksum(&[&pseudo[..], seg].concat()), 0, "L4 checksum");
    }

    #[test]
    fn name_encoding() {
        let q = dns();
        assert_eq!(&q[12..], b"\x07example\x03com\x00\x00\x01\x00\x01");
        let dotted = DnsMsg::query(0xbeef, "example.com.", 1).bytes();
        assert_eq!(dotted, q);
        assert_eq!(&DnsMsg::query(1, ".", 2).bytes()[12..], [0, 0, 2, 0, 1]);
        assert_eq!(&DnsMsg::query(1, "", 2).bytes()[12..], [0, 0, 2, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "raw_name")]
    fn long_label_needs_raw_name() {
        DnsMsg::query(1, &"a".repeat(64), 1);
    }

    #[test]
    fn query_header() {
        let q = dns();
        assert_eq!(q.len(), 12 + 13 + 4);
        let words: Vec<u16> = (0..6).map(|i| u16_at(&q, 2 * i)).collect();
        assert_eq!(words, [0xbeef, 0x0100, 1, 0, 0, 0]);
    }

    #[test]
    fn response_with_answers() {
        let r = DnsMsg::response(7, "example.com", 1, 3, 2).bytes();
        assert_eq!(u16_at(&r, 2), 0x8183);
        assert_eq!(u16_at(&r, 6), 2, "ANCOUNT");
        let a = 12 + 13 + 4;
        assert_eq!(r.len(), a + 2 * 16);
        assert_eq!(
            r[a..a + 16],
            [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]
        );
        assert_eq!(r[a + 28..], [192, 0, 2, 2]);

        let r = DnsMsg::response(7, "example.com", 28, 0, 1).bytes();
        assert_eq!(r.len(), a + 12 + 16);
        assert_eq!(r[a..a + 12], [0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        assert_eq!(
            r[a + 12..],
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets()
        );
    }

    #[test]
    fn forging_setters() {
        let r = DnsMsg::response(7, "a", 1, 0, 0).truncated(true).qdcount(9);
        let b = r.clone().bytes();
        assert_eq!(u16_at(&b, 2), 0x8380);
        assert_eq!(u16_at(&b, 4), 9);
        assert_eq!(u16_at(&r.truncated(false).bytes(), 2), 0x8180);

        let looped = DnsMsg::query(1, "x", 1).raw_name(&[0xc0, 0x0c]).bytes();
        assert_eq!(&looped[12..], [0xc0, 0x0c, 0, 1, 0, 1]);
    }

    #[test]
    fn ipv4_udp() {
        let f = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns()).build();
        assert_eq!(f[..12], [DST_MAC, SRC_MAC].concat());
        assert_eq!(u16_at(&f, 12), 0x0800);
        assert_eq!(f[14], 0x45);
        assert_eq!(
            usize::from(u16_at(&f, 16)),
            20 + 8 + dns().len(),
            "total length"
        );
        assert_eq!(u16_at(&f, 20), 0x4000, "DF, no fragment");
        assert_eq!(f[23], IPPROTO_UDP);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        assert_eq!(usize::from(u16_at(&f, 38)), 8 + dns().len(), "UDP length");
        assert_l4_checksum(&f, 14, 34, IPPROTO_UDP);
        assert_dns_at(&f, 14 + 20 + 8);
    }

    #[test]
    fn vlan_and_qinq() {
        let f = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns()).vlan(100).build();
        assert_eq!(
            [u16_at(&f, 12), u16_at(&f, 14), u16_at(&f, 16)],
            [0x8100, 100, 0x0800]
        );
        assert_eq!(checksum(&f[18..38]), 0);
        assert_dns_at(&f, 14 + 4 + 20 + 8);

        let f = Frame::ipv6(V6_SRC, V6_DST, UDP, &dns())
            .vlan(0x1064) // priority bits are dropped
            .vlan(200)
            .build();
        let tags: Vec<u16> = (0..5).map(|i| u16_at(&f, 12 + 2 * i)).collect();
        assert_eq!(tags, [0x88a8, 0x064, 0x8100, 200, 0x86dd]);
        assert_dns_at(&f, 14 + 8 + 40 + 8);
    }

    #[test]
    fn ipv4_options() {
        let f = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns())
            .ipv4_options(3)
            .build();
        assert_eq!(f[14], 0x48);
        assert_eq!(f[34..46], [1; 12], "NOP options");
        assert_eq!(usize::from(u16_at(&f, 16)), 32 + 8 + dns().len());
        assert_eq!(checksum(&f[14..46]), 0);
        assert_l4_checksum(&f, 14, 46, IPPROTO_UDP);
        assert_dns_at(&f, 14 + 32 + 8);
        let max = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns())
            .ipv4_options(10)
            .build();
        assert_eq!(max[14], 0x4f);
        assert_dns_at(&max, 14 + 60 + 8);
    }

    #[test]
    fn ipv4_fragment() {
        let base = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns());
        let f = base.clone().ipv4_fragment(0, true).build();
        assert_eq!(u16_at(&f, 20), 0x2000);
        assert_eq!(checksum(&f[14..34]), 0);
        let f = base.ipv4_fragment(185, false).build();
        assert_eq!(u16_at(&f, 20), 185);
        assert_eq!(checksum(&f[14..34]), 0);
        assert_dns_at(&f, 14 + 20 + 8);
    }

    #[test]
    fn ipv6_ext_headers() {
        let chain = [0, 60, 43, 44];
        for n in 0..=chain.len() {
            let f = Frame::ipv6(V6_SRC, V6_DST, UDP, &dns())
                .ipv6_ext_headers(&chain[..n])
                .build();
            assert_eq!(u16_at(&f, 12), 0x86dd);
            assert_eq!(f[14] >> 4, 6);
            let payload = 8 * n + 8 + dns().len();
            assert_eq!(usize::from(u16_at(&f, 18)), payload, "payload length");
            // Walk the chain: every Next Header names the following header.
            let mut next = f[20];
            let mut at = 54;
            for &kind in &chain[..n] {
                assert_eq!(next, kind);
                assert_eq!(f[at + 1], 0, "Hdr Ext Len");
                next = f[at];
                at += 8;
            }
            assert_eq!(next, IPPROTO_UDP);
            assert_eq!(
                usize::from(u16_at(&f, at + 4)),
                8 + dns().len(),
                "UDP length"
            );
            assert_l4_checksum(&f, 14, at, IPPROTO_UDP);
            assert_dns_at(&f, 14 + 40 + 8 * n + 8);
        }
    }

    #[test]
    fn tcp_length_prefix() {
        let f = Frame::ipv4(V4_SRC, V4_DST, TCP, &dns()).build();
        assert_eq!(f[23], IPPROTO_TCP);
        assert_eq!(usize::from(u16_at(&f, 16)), 20 + 20 + 2 + dns().len());
        assert_eq!([f[46], f[47]], [0x50, 0x18], "data offset, flags");
        assert_eq!(
            usize::from(u16_at(&f, 54)),
            dns().len(),
            "DNS length prefix"
        );
        assert_eq!(checksum(&f[14..34]), 0);
        assert_l4_checksum(&f, 14, 34, IPPROTO_TCP);
        assert_dns_at(&f, 14 + 20 + 20 + 2);

        let bare = Frame::ipv4(V4_SRC, V4_DST, TCP, &dns()).tcp_dns_length_prefix(false);
        assert_dns_at(&bare.build(), 14 + 20 + 20);

        let f = Frame::ipv6(V6_SRC, V6_DST, TCP, &dns())
            .ipv6_ext_headers(&[0])
            .build();
        assert_eq!(f[54], IPPROTO_TCP);
        assert_l4_checksum(&f, 14, 62, IPPROTO_TCP);
        assert_dns_at(&f, 14 + 40 + 8 + 20 + 2);
    }

    #[test]
    fn udp_prefix_setting_is_ignored() {
        let f = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns()).tcp_dns_length_prefix(true);
        assert_dns_at(&f.build(), 14 + 20 + 8);
    }

    #[test]
    fn truncate_keeps_header_lengths() {
        let full = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns()).build();
        let cut = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns())
            .truncate(50)
            .build();
        assert_eq!(cut, full[..50]);
        assert_eq!(usize::from(u16_at(&cut, 16)), 20 + 8 + dns().len());
        let long = Frame::ipv4(V4_SRC, V4_DST, UDP, &dns())
            .truncate(9999)
            .build();
        assert_eq!(long, full);
    }

    #[test]
    #[should_panic(expected = "IPv4 options on IPv6")]
    fn ipv4_modifier_on_ipv6_panics() {
        Frame::ipv6(V6_SRC, V6_DST, UDP, &[])
            .ipv4_options(1)
            .build();
    }

    #[test]
    fn checksum_known_vector() {
        // RFC 1071 section 3 example: the one's complement sum is 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }
}
