//! DNS latency: the contract between `tracer-ebpf/src/dns.rs` and
//! `tracer/src/dns/`.
//!
//! The kernel matches each answer to its query in an LRU hash keyed by
//! [`DnsKey`], adds the latency to a per-interface histogram
//! ([`latency_bucket`]) and sends a [`DnsEvent`] only for what is rare.

use core::mem::size_of;

/// The DNS port the probes watch (UDP and TCP).
pub const DNS_PORT: u16 = 53;

/// Bytes of the question (wire-format name, then qtype and qclass) kept per
/// query and per event; longer questions are cut and flagged. A power of two:
/// the kernel masks indexes with `QUESTION_CAP - 1`.
pub const QUESTION_CAP: usize = 128;

/// Entries of the pending-query LRU (set at load time by userspace).
pub const PENDING_MAX_ENTRIES: u32 = 16384;
/// Entries of the per-socket LRU used to spot parallel A/AAAA pairs.
pub const SOCKETS_MAX_ENTRIES: u32 = 16384;
/// Interfaces with a latency histogram.
pub const HIST_MAX_ENTRIES: u32 = 1024;
/// Entries of the shared, preallocated histograms a sample goes to when its
/// per-CPU entry cannot be created at that moment (256 × 8 KiB = 2 MiB).
/// An entry stays for the trace: a key spills at most once per burst of new
/// keys, and v5.10's atomic per-CPU allocations fail more often than the
/// bpf_mem_alloc cache of v6.1+.
pub const HIST_SPILL_ENTRIES: u32 = 256;
/// Ring buffer for [`DnsEvent`]s, bytes (power of two).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// Identifies one query on one interface: where it was seen, the client's
/// socket, the server's socket, the transport and the DNS id.
///
/// Queries and answers map to the same key: for a query the client is the
/// source, for an answer the destination. Addresses are IPv6-sized; IPv4 uses
/// the first 4 bytes and zeros the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DnsKey {
    pub ifindex: u32,
    /// DNS message id; 0 in the per-socket map.
    pub id: u16,
    pub client_port: u16,
    pub server_port: u16,
    /// IPPROTO_UDP (17) or IPPROTO_TCP (6).
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// TC direction the *query* was seen in ([`QUERY_INGRESS`] or
    /// [`QUERY_EGRESS`]; an answer carries its query's). With the kind of
    /// interface it tells which side of the exchange this observation is on
    /// (see `tracer/src/dns/role.rs`).
    pub query_dir: u8,
    pub _pad: [u8; 3],
    pub client: [u8; 16],
    pub server: [u8; 16],
}

/// [`DnsKey::query_dir`]: the query was seen on TC ingress.
pub const QUERY_INGRESS: u8 = 0;
/// [`DnsKey::query_dir`]: the query was seen on TC egress.
pub const QUERY_EGRESS: u8 = 1;

/// A query waiting for its answer (value of the pending LRU).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsPending {
    /// `bpf_ktime_get_ns` of the first send.
    pub first_ns: u64,
    /// Of the latest send (retransmissions move it).
    pub last_ns: u64,
    /// 1 + retransmissions seen with the same key.
    pub sends: u32,
    pub qtype: u16,
    /// Valid bytes in `question`.
    pub question_len: u16,
    pub question: [u8; QUESTION_CAP],
}

/// Last queries seen from a client socket (value of the per-socket LRU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsSocketLast {
    pub ts_ns: u64,
    /// Hash of the last query's name (the kernel's: a checksum of its
    /// bytes, folded with its length), to tell "the same name" apart.
    pub name_hash: u32,
    /// Id of the last query, and of the one before it: a new query with
    /// either id (and no pending entry) was answered here and is asked again.
    pub id: u16,
    pub prev_id: u16,
    pub qtype: u16,
    pub _pad: [u16; 3],
}

/// Query types a parallel pair is made of (RFC 1035, RFC 3596).
pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

/// Whether two query types are an A and an AAAA, in either order.
#[inline(always)]
pub const fn is_a_aaaa_pair(q1: u16, q2: u16) -> bool {
    (q1 == QTYPE_A && q2 == QTYPE_AAAA) || (q1 == QTYPE_AAAA && q2 == QTYPE_A)
}

/// Why an event was sent: a bit set, since an answer can be slow *and*
/// truncated.
pub mod reason {
    /// An answer slower than the load-time threshold.
    pub const SLOW: u32 = 1 << 0;
    /// An answer with an rcode other than NOERROR and NXDOMAIN (those two are
    /// only counted, per rcode, in the stats).
    pub const RCODE: u32 = 1 << 1;
    /// An answer with the TC (truncated) bit.
    pub const TRUNCATED: u32 = 1 << 2;
    /// A query re-sent with the same key while still pending, or after its
    /// answer passed here ([`super::flag::ANSWERED_HERE`]).
    pub const RESENT: u32 = 1 << 3;
    /// A second query (not a re-send) from the same client socket within
    /// the pair window, an A and an AAAA for the same name: the glibc
    /// parallel A/AAAA pattern.
    pub const PARALLEL: u32 = 1 << 4;
}

/// Event flags.
pub mod flag {
    /// The packet was an answer (QR set).
    pub const RESPONSE: u8 = 1 << 0;
    /// The question did not fit in `question`.
    pub const QUESTION_CUT: u8 = 1 << 1;
    /// A [`super::reason::RESENT`] query whose earlier send was *answered*
    /// where this observation was made (no pending entry was left): at the
    /// server's port, the answer left and the client asked again.
    pub const ANSWERED_HERE: u8 = 1 << 2;
}

/// A rare DNS observation, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    /// `bpf_ktime_get_ns` when the packet was seen.
    pub ts_ns: u64,
    /// Answers and re-sends: since the query's first send. Pairs: the gap
    /// between the two queries.
    pub elapsed_ns: u64,
    pub key: DnsKey,
    /// [`reason`] bits.
    pub reasons: u32,
    /// Sends of the query so far (answers, re-sends).
    pub sends: u32,
    pub qtype: u16,
    /// For [`reason::PARALLEL`]: id of the earlier query of the pair.
    pub other_id: u16,
    pub rcode: u8,
    /// [`flag`] bits.
    pub flags: u8,
    pub question_len: u16,
    pub question: [u8; QUESTION_CAP],
}

crate::counter_enum! {
    /// Per-CPU DNS outcome counters, the `DNS_STATS` array's indices.
    pub enum DnsStat {
        /// Queries seen (first sends and re-sends).
        Queries = 0 => "queries",
        /// Answers seen.
        Answers = 1 => "answers",
        /// Answers matched to a pending query.
        Matched = 2 => "matched",
        /// Answers with no pending query (never seen, evicted, or already swept).
        Unmatched = 3 => "unmatched_answers",
        /// Queries re-sent while pending.
        Resent = 4 => "resent",
        /// Parallel query pairs from one socket.
        ParallelPairs = 5 => "parallel_pairs",
        /// Answers slower than the threshold.
        Slow = 6 => "slow_answers",
        /// Answers with the TC bit.
        Truncated = 7 => "truncated_answers",
        /// Headers cut short before the DNS header (Ethernet/VLAN/IP/UDP/TCP).
        ShortHeaders = 8 => "short_headers",
        /// Port 53 packets too short for a DNS header, or not a query/answer.
        Malformed = 9 => "malformed",
        /// qdcount other than 1: matched by id, question not read.
        BogusCounts = 10 => "bogus_counts",
        /// IPv6 extension-header chain longer than the parse bound.
        Ipv6ExtTooDeep = 11 => "ipv6_ext_too_deep",
        /// Non-first IP fragments (no L4 header to read).
        Fragments = 12 => "fragments",
        /// More than two VLAN tags.
        VlanTooDeep = 13 => "vlan_too_deep",
        /// TCP segments on port 53 with too few bytes for length + DNS header
        /// (handshake, ACKs, or a message split mid-header).
        TcpNoHeader = 14 => "tcp_no_header",
        /// Questions longer than [`QUESTION_CAP`] (kept cut).
        QuestionCut = 15 => "question_cut",
        /// New entries put in the pending LRU. With answers matched, queries
        /// swept as unanswered and entries still there, this tells how many the
        /// LRU evicted (silently, by design of BPF_MAP_TYPE_LRU_HASH).
        PendingInserted = 16 => "pending_inserted",
        /// DNS-over-TCP messages after the first in one segment (glibc's
        /// `use-vc` writes A and AAAA in one segment), each parsed.
        TcpMoreMessages = 17 => "tcp_more_messages",
        /// DNS-over-TCP messages whose length runs past their segment: the
        /// header was parsed, the rest of the message arrives in a later segment,
        /// which then does not start with a message (not parsed).
        TcpSplitMessages = 18 => "tcp_split_messages",
        /// Messages beyond [`TCP_MESSAGES_MAX`] in one segment: not parsed.
        TcpMessagesOverCap = 19 => "tcp_messages_over_cap",
        /// The tail call to the next message's program failed: not parsed.
        TcpNextFailed = 20 => "tcp_next_failed",
        /// Queries asked again (same socket, same id) after their answer had
        /// passed this interface: not counted under [`DnsStat::Resent`] (glibc
        /// re-sends A and AAAA when only one answer was lost).
        ResentAfterAnswer = 21 => "resent_after_answer",
        /// Answers added to the spill histograms ([`HIST_SPILL_ENTRIES`]): the
        /// per-CPU entry could not be created at that moment.
        HistSpilled = 22 => "hist_spilled",
    }
}

/// DNS-over-TCP messages parsed per segment (one tail call each after the
/// first; the kernel allows 33 tail calls per packet).
pub const TCP_MESSAGES_MAX: u32 = 8;

/// Answers counted per rcode (0..=15) after the [`DnsStat`] counters.
pub const RCODE_BASE: u32 = 32;
/// Length of the `DNS_STATS` array.
pub const DNS_STATS_LEN: u32 = RCODE_BASE + 16;

const _: () = assert!((DnsStat::ALL.len() as u32) <= RCODE_BASE);

// ---- latency histogram -------------------------------------------------

/// Sub-buckets per power of two: a bucket is at most 1/32 of its lower
/// bound wide, so a value reported at the bucket's midpoint is within 1.6 %.
pub const HIST_SUB_BITS: u32 = 5;
const SUB: u64 = 1 << HIST_SUB_BITS;
/// Buckets per histogram: values up to 2^36 µs (19 h) fit; larger ones land
/// in the last bucket.
pub const HIST_BUCKETS: usize = 1024;

/// Key of the latency histograms: one per interface and DNS server (the
/// service IP on a client's veth, the backend on the server pod's veth).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DnsHistKey {
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    /// [`DnsKey::query_dir`] of the exchanges counted.
    pub query_dir: u8,
    pub _pad: [u8; 2],
    pub server: [u8; 16],
}

/// A per-interface latency histogram over microseconds
/// (`ns >> 10`, i.e. units of 1.024 µs: a shift is cheaper than a division
/// in the kernel; userspace converts back exactly).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsHist {
    pub buckets: [u64; HIST_BUCKETS],
}

/// Histogram unit: latencies are bucketed as `ns >> HIST_UNIT_SHIFT`.
pub const HIST_UNIT_SHIFT: u32 = 10;

/// Bucket of a latency in nanoseconds.
#[inline(always)]
pub const fn latency_bucket(ns: u64) -> u32 {
    let v = ns >> HIST_UNIT_SHIFT;
    if v < SUB {
        return v as u32;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - HIST_SUB_BITS;
    let index = (shift as u64 + 1) * SUB + ((v >> shift) & (SUB - 1));
    if index >= HIST_BUCKETS as u64 {
        (HIST_BUCKETS - 1) as u32
    } else {
        index as u32
    }
}

/// `[low, high)` bounds of a bucket, in nanoseconds.
pub const fn bucket_bounds_ns(index: u32) -> (u64, u64) {
    let index = index as u64;
    let (low, width) = if index < SUB {
        (index, 1)
    } else {
        let shift = index / SUB - 1;
        let sub = index % SUB;
        ((SUB + sub) << shift, 1 << shift)
    };
    (low << HIST_UNIT_SHIFT, (low + width) << HIST_UNIT_SHIFT)
}

const _: () = assert!(QUESTION_CAP.is_power_of_two());
const _: () = assert!(size_of::<DnsKey>() == 48);
const _: () = assert!(size_of::<DnsPending>() == 24 + QUESTION_CAP);
const _: () = assert!(size_of::<DnsSocketLast>() == 24);
const _: () = assert!(size_of::<DnsEvent>() == 80 + QUESTION_CAP);
const _: () = assert!(size_of::<DnsHist>() == 8 * HIST_BUCKETS);
const _: () = assert!(size_of::<DnsHistKey>() == 24);

crate::impl_pod!(
    DnsKey,
    DnsPending,
    DnsSocketLast,
    DnsEvent,
    DnsHist,
    DnsHistKey
);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_contain_their_values() {
        let mut last = 0;
        for ns in (0..40_000_000_000u64).step_by(7_919_993) {
            let b = latency_bucket(ns);
            assert!(b >= last, "bucket of {ns} went down");
            last = b;
        }
        for ns in [1, 1023, 1024, 33 << 10, 5_000_000_000, 1 << 40] {
            let b = latency_bucket(ns);
            let (lo, hi) = bucket_bounds_ns(b);
            assert!(lo <= ns && ns < hi, "{ns} not in bucket {b} [{lo}, {hi})");
        }
        assert_eq!(latency_bucket(u64::MAX), (HIST_BUCKETS - 1) as u32);
    }

    #[test]
    fn bucket_error_is_within_two_percent_above_32_units() {
        for b in 32..HIST_BUCKETS as u32 {
            let (lo, hi) = bucket_bounds_ns(b);
            let mid = (lo + hi) / 2;
            assert!((hi - lo) as f64 / 2.0 / mid as f64 <= 0.016, "bucket {b}");
        }
    }

    #[test]
    fn a_aaaa_pairs() {
        assert!(is_a_aaaa_pair(QTYPE_AAAA, QTYPE_A));
        assert!(is_a_aaaa_pair(QTYPE_A, QTYPE_AAAA));
        assert!(!is_a_aaaa_pair(QTYPE_A, QTYPE_A));
        assert!(!is_a_aaaa_pair(QTYPE_AAAA, 0));
    }

    #[test]
    fn consecutive_buckets_tile_the_line() {
        for b in 0..(HIST_BUCKETS as u32 - 1) {
            assert_eq!(
                bucket_bounds_ns(b).1,
                bucket_bounds_ns(b + 1).0,
                "gap after {b}"
            );
        }
    }
}
