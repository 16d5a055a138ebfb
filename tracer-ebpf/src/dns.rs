//! DNS latency probe: parses DNS over UDP and every message of a DNS-over-TCP
//! segment on every host-side pod veth and the bridge, matches each answer to
//! its query, keeps per-interface latency histograms in the kernel and sends
//! an event only for what is rare (slow, error rcode, truncated, re-sent,
//! parallel pair).
//!
//! Both TC directions run the same code: a query is a QR=0 message to port
//! 53, an answer a QR=1 message from port 53, whichever way it travels, so the
//! client's veth and the DNS server pod's veth each measure their own view.
//! Each observation carries the direction its query was seen in
//! (`DnsKey::query_dir`): with the interface's kind, userspace knows which
//! side of the exchange it is on, and counts each exchange once.
//!
//! A TCP segment may carry several messages (glibc's `use-vc` writes A and
//! AAAA in one): the first is parsed by the direction's program, each next
//! one by `dns_tc_more`, reached by a tail call with the message's offset in
//! `skb->cb` — one program of unchanged size per message, so the verifier's
//! work does not grow with the number of messages.

use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_csum_diff, bpf_ktime_get_ns},
    macros::{classifier, map},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TcContext,
};
use tracer_common::{
    dns::{
        DNS_PORT, DNS_STATS_LEN, DnsEvent, DnsHist, DnsHistKey, DnsKey, DnsPending, DnsSocketLast,
        DnsStat, EVENTS_RING_BYTES, HIST_BUCKETS, HIST_MAX_ENTRIES, HIST_SPILL_ENTRIES,
        PENDING_MAX_ENTRIES, QUERY_EGRESS, QUERY_INGRESS, QUESTION_CAP, RCODE_BASE,
        SOCKETS_MAX_ENTRIES, TCP_MESSAGES_MAX, flag, is_a_aaaa_pair, latency_bucket, reason,
    },
    loss::Loss,
    tc::DNS_TAIL_MORE,
};

use crate::{
    maps::{self, count_loss},
    parse::{self, IPPROTO_TCP, Skip},
    tc::DNS_TAIL,
};

/// Answers at least this slow (ns) are sent as events. Set at load time.
#[unsafe(no_mangle)]
static DNS_SLOW_NS: Global<u64> = Global::new(100_000_000);

/// An A and an AAAA query for one name from one socket closer than this (ns)
/// are a parallel pair: glibc's sendmmsg of A and AAAA. Set at load time.
/// The trade-off: glibc's two sends are µs apart on an idle node but can be
/// ms apart on a loaded one (the second waits for the CPU); a client that
/// asks A then AAAA one after the other (`single-request`) is not a race
/// risk but falls inside the window when its server answers faster than the
/// window. 1 ms keeps the second case out for answers over 1 ms.
#[unsafe(no_mangle)]
static DNS_PAIR_WINDOW_NS: Global<u64> = Global::new(1_000_000);

#[map(name = "DNS_PENDING")]
static PENDING: LruHashMap<DnsKey, DnsPending> =
    LruHashMap::with_max_entries(PENDING_MAX_ENTRIES, 0);

#[map(name = "DNS_SOCKETS")]
static SOCKETS: LruHashMap<DnsKey, DnsSocketLast> =
    LruHashMap::with_max_entries(SOCKETS_MAX_ENTRIES, 0);

/// Not preallocated: 8 KiB per entry per CPU would reserve
/// HIST_MAX_ENTRIES × 8 KiB × CPUs up front; entries exist only for the
/// (interface, server) pairs actually seen.
#[map(name = "DNS_HIST")]
static HIST: PerCpuHashMap<DnsHistKey, DnsHist> =
    PerCpuHashMap::with_max_entries(HIST_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Where an answer's latency goes when its per-CPU histogram cannot be
/// created right then. A map without preallocation takes its entries from
/// a per-CPU cache the kernel refills asynchronously (bpf_mem_alloc, v6.1+;
/// an atomic per-CPU allocation before): when several (interface, server)
/// pairs get their first answer in one burst the cache runs dry and the
/// insert fails with ENOMEM although the map has room — 304 of 400 inserts
/// in a two-CPU test on v6.18. This map is preallocated (256 × 8 KiB,
/// shared by the CPUs, atomic adds); the next answer on that CPU tries the
/// per-CPU entry again. Userspace adds the two. Only when this one is full
/// too is a sample lost (`dns_hist_insert_failed`).
#[map(name = "DNS_HIST_SPILL")]
static HIST_SPILL: HashMap<DnsHistKey, DnsHist> = HashMap::with_max_entries(HIST_SPILL_ENTRIES, 0);

#[map(name = "DNS_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_STATS_LEN, 0);

#[map(name = "DNS_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Scratch space: a `DnsPending` (152 bytes) and a zeroed histogram (8 KiB)
/// do not fit the 512-byte BPF stack.
#[map(name = "DNS_SCRATCH")]
static SCRATCH: PerCpuArray<DnsPending> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "DNS_ZERO_HIST")]
static ZERO_HIST: PerCpuArray<DnsHist> = PerCpuArray::with_max_entries(1, 0);

/// TC direction of the packet, in the [`DnsKey::query_dir`] encoding.
const PACKET_INGRESS: u8 = QUERY_INGRESS;
const PACKET_EGRESS: u8 = QUERY_EGRESS;

#[classifier]
pub fn dns_tc_ingress(ctx: TcContext) -> i32 {
    dns(&ctx, PACKET_INGRESS, None);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn dns_tc_egress(ctx: TcContext) -> i32 {
    dns(&ctx, PACKET_EGRESS, None);
    TC_ACT_UNSPEC
}

/// The next DNS-over-TCP message of a segment: its offset and the packet's
/// direction are in `skb->cb` ([`CB_OFFSET`], [`CB_STATE`]).
#[classifier]
pub fn dns_tc_more(ctx: TcContext) -> i32 {
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel passed us; cb[] is the
    // scratch area TC programs may read and write (it survives tail calls).
    let (off, state) = unsafe { ((*ctx.skb.skb).cb[CB_OFFSET], (*ctx.skb.skb).cb[CB_STATE]) };
    let dir = (state & CB_DIR_MASK) as u8;
    let index = state >> CB_INDEX_SHIFT;
    dns(&ctx, dir, Some((off as usize, index)));
    TC_ACT_UNSPEC
}

/// `skb->cb` words handed to [`dns_tc_more`]: the offset of the message's
/// length prefix, and direction | message index << [`CB_INDEX_SHIFT`].
const CB_OFFSET: usize = 0;
const CB_STATE: usize = 1;
const CB_DIR_MASK: u32 = 0xff;
const CB_INDEX_SHIFT: u32 = 8;

#[inline(always)]
fn stat(stat: DnsStat) {
    stat_index(stat as u32);
}

#[inline(always)]
fn stat_index(index: u32) {
    maps::increment(&STATS, index);
}

/// DNS header (RFC 1035 §4.1.1): 12 bytes; flags QR (bit 15), opcode
/// (bits 11–14), TC (bit 9), rcode (bits 0–3).
const DNS_HEADER_LEN: usize = 12;
const DNS_FLAG_QR: u16 = 0x8000;
const DNS_FLAG_TC: u16 = 0x0200;
const DNS_OPCODE_SHIFT: u16 = 11;
const DNS_OPCODE_MASK: u16 = 0xf;
const DNS_OPCODE_QUERY: u16 = 0;
const DNS_RCODE_MASK: u16 = 0xf;
const DNS_RCODE_NOERROR: u32 = 0;
const DNS_RCODE_NXDOMAIN: u32 = 3;
/// DNS over TCP prefixes each message with its 2-byte length (RFC 1035 §4.2.2).
const TCP_LEN_PREFIX: usize = 2;
/// A label byte with either of the top two bits set is a compression
/// pointer (or a reserved label type), not a length.
const DNS_LABEL_POINTER: usize = 0xc0;

/// The DNS header fields we use.
struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
}

/// Per packet, in the combined TC programs: whether this is a DNS packet
/// (port 53 either way) that [`dns`] must see, from the in-place parse
/// (~10 ns). Headers past the linear part say yes: `dns` reads them with the
/// helper. The skips are counted here, so `dns` never sees them twice.
#[inline(always)]
pub(crate) fn wanted(ctx: &TcContext) -> bool {
    match parse::l4_fast(ctx) {
        Ok(l4) => l4.sport == DNS_PORT || l4.dport == DNS_PORT,
        Err(Skip::NonLinear) => true,
        Err(skip) => {
            skipped(skip);
            false
        }
    }
}

#[inline(always)]
fn skipped(skip: Skip) {
    match skip {
        Skip::Other | Skip::NonLinear => {}
        Skip::Short => stat(DnsStat::ShortHeaders),
        Skip::VlanTooDeep => stat(DnsStat::VlanTooDeep),
        Skip::Ipv6ExtTooDeep => stat(DnsStat::Ipv6ExtTooDeep),
        Skip::Fragment => stat(DnsStat::Fragments),
    }
}

/// The DNS work on one message of a packet: parse (through the helper, paged
/// data included), match, histogram, events. `more` is the offset and index
/// of a later message of a TCP segment; `None` is the packet's first.
#[inline(always)]
fn dns(ctx: &TcContext, dir: u8, more: Option<(usize, u32)>) {
    let l4 = match parse::l4_slow(ctx) {
        Ok(l4) => l4,
        Err(skip) => return skipped(skip),
    };
    let to_server = l4.dport == DNS_PORT;
    let from_server = l4.sport == DNS_PORT;
    if !to_server && !from_server {
        return;
    }
    let skb_len = ctx.len() as usize;
    let (mut dns_off, index) = more.unwrap_or_else(|| (opaque(ctx, l4.payload_off), 0));
    let mut next = None;
    if l4.proto == IPPROTO_TCP {
        // Handshakes and bare ACKs carry nothing; a segment with fewer bytes
        // than length prefix + header is a message split mid-header.
        let payload = skb_len.saturating_sub(dns_off);
        if payload == 0 {
            return;
        }
        if payload < TCP_LEN_PREFIX + DNS_HEADER_LEN {
            return stat(DnsStat::TcpNoHeader);
        }
        let Ok(prefix) = ctx.load::<[u8; TCP_LEN_PREFIX]>(dns_off) else {
            return stat(DnsStat::Malformed);
        };
        let end = dns_off + TCP_LEN_PREFIX + usize::from(u16::from_be_bytes(prefix));
        if end > skb_len {
            stat(DnsStat::TcpSplitMessages);
        } else if end < skb_len {
            next = Some(end);
        }
        dns_off += TCP_LEN_PREFIX;
    }
    message(ctx, &l4, dir, dns_off);
    if let Some(end) = next {
        more_messages(ctx, dir, end, index + 1);
    }
}

/// `off`, as a value the verifier knows nothing about (a round trip through
/// `skb->cb`, ~1 ns). The payload offset differs with every header layout
/// (VLAN tags, IP options, IPv6 extension headers); carried as is, it made
/// the verifier walk the DNS code once per layout (278 k instructions on
/// v6.18 instead of 130 k). From here on every layout is one state, as in
/// `dns_tc_more`, whose offset comes from `skb->cb` anyway.
#[inline(always)]
fn opaque(ctx: &TcContext, off: usize) -> usize {
    // SAFETY: as in dns_tc_more: cb[] is TC's scratch area.
    // Volatile: LLVM would forward the stored value to the load.
    unsafe {
        let slot = &raw mut (*ctx.skb.skb).cb[CB_OFFSET];
        core::ptr::write_volatile(slot, off as u32);
        core::ptr::read_volatile(slot) as usize
    }
}

/// Hands the segment's next message, at `off`, to [`dns_tc_more`].
#[inline(always)]
fn more_messages(ctx: &TcContext, dir: u8, off: usize, index: u32) {
    if index >= TCP_MESSAGES_MAX {
        return stat(DnsStat::TcpMessagesOverCap);
    }
    stat(DnsStat::TcpMoreMessages);
    // SAFETY: as in dns_tc_more; constant indexes into cb[5].
    unsafe {
        (*ctx.skb.skb).cb[CB_OFFSET] = off as u32;
        (*ctx.skb.skb).cb[CB_STATE] = u32::from(dir) | (index << CB_INDEX_SHIFT);
    }
    // SAFETY: the slot holds a classifier of the same type, or nothing.
    unsafe { DNS_TAIL.tail_call(ctx, DNS_TAIL_MORE) };
    stat(DnsStat::TcpNextFailed);
}

/// One DNS message whose header starts at `dns_off`.
#[inline(always)]
fn message(ctx: &TcContext, l4: &parse::L4, dir: u8, dns_off: usize) {
    let Ok(raw) = ctx.load::<[u8; DNS_HEADER_LEN]>(dns_off) else {
        return stat(DnsStat::Malformed);
    };
    let header = Header {
        id: u16::from_be_bytes([raw[0], raw[1]]),
        flags: u16::from_be_bytes([raw[2], raw[3]]),
        qdcount: u16::from_be_bytes([raw[4], raw[5]]),
    };
    let is_response = header.flags & DNS_FLAG_QR != 0;
    let opcode = (header.flags >> DNS_OPCODE_SHIFT) & DNS_OPCODE_MASK;
    if opcode != DNS_OPCODE_QUERY {
        return stat(DnsStat::Malformed);
    }
    let Ok(addrs) = parse::addrs(ctx, l4) else {
        return stat(DnsStat::ShortHeaders);
    };
    let to_server = l4.dport == DNS_PORT;
    let from_server = l4.sport == DNS_PORT;
    let (client, server, client_port, server_port) = match (is_response, to_server, from_server) {
        (false, true, _) => (addrs.src, addrs.dst, l4.sport, l4.dport),
        (true, _, true) => (addrs.dst, addrs.src, l4.dport, l4.sport),
        _ => return stat(DnsStat::Malformed),
    };
    // An answer travels the other way from its query.
    let query_dir = if is_response { dir ^ 1 } else { dir };
    // SAFETY: ctx.skb.skb is the __sk_buff the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = DnsKey {
        ifindex,
        id: header.id,
        client_port,
        server_port,
        proto: l4.proto,
        family: l4.family,
        query_dir,
        _pad: [0; 3],
        client,
        server,
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if is_response {
        answer(&key, &header, now);
    } else {
        query(ctx, &key, &header, dns_off + DNS_HEADER_LEN, now);
    }
}

/// A query: one insert when it is new (the common case), a lookup only for
/// a re-send (the insert found its key). Looking up first would cost every
/// new query a hash walk of its 48-byte key for nothing.
#[inline(always)]
fn query(ctx: &TcContext, key: &DnsKey, header: &Header, question_off: usize, now: u64) {
    stat(DnsStat::Queries);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, ours while we run.
    let pending = unsafe { &mut *scratch };
    pending.first_ns = now;
    pending.last_ns = now;
    pending.sends = 1;
    pending.qtype = 0;
    pending.question_len = 0;
    let question = if header.qdcount == 1 {
        read_question(ctx, question_off, pending)
    } else {
        Question::BogusCount
    };
    // By reference: a by-value DnsPending would be copied onto the 512-byte
    // BPF stack. BPF_NOEXIST: a key still pending is a re-send, which must
    // not reset its first send's time.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "keep the 152-byte value off the BPF stack"
    )]
    let inserted = PENDING.insert(key, &*pending, u64::from(BPF_NOEXIST));
    match inserted {
        Ok(()) => stat(DnsStat::PendingInserted),
        Err(err) if err == -EEXIST => return resent(key, now),
        Err(_) => count_loss(Loss::DnsPendingInsert),
    }
    new_query(key, pending, question, now);
}

/// A query whose key is still pending: a retransmission.
#[inline(always)]
fn resent(key: &DnsKey, now: u64) {
    let Some(pending) = PENDING.get_ptr_mut(key) else {
        // Answered or evicted between our insert and this lookup: the
        // insert was refused, so this send is in no entry.
        return count_loss(Loss::DnsPendingInsert);
    };
    // SAFETY: pointer from the map; integers only.
    let pending = unsafe { &mut *pending };
    pending.sends += 1;
    pending.last_ns = now;
    stat(DnsStat::Resent);
    // A re-send is never half of a parallel pair: glibc re-sends one
    // query at a time once it has fallen back to single-request mode.
    emit(
        key,
        pending,
        reason::RESENT,
        now.wrapping_sub(pending.first_ns),
        0,
        0,
        0,
        now,
    );
}

/// The first send of a query: what its question and its socket's previous
/// queries say.
#[inline(always)]
fn new_query(key: &DnsKey, pending: &mut DnsPending, question: Question, now: u64) {
    let (cut, name_len) = match question {
        Question::Read { name_len } => (false, name_len),
        Question::Cut { name_len } => (true, name_len),
        Question::Malformed { name_len } => {
            stat(DnsStat::Malformed);
            (false, name_len)
        }
        Question::BogusCount => {
            stat(DnsStat::BogusCounts);
            (false, 0)
        }
    };
    if cut {
        stat(DnsStat::QuestionCut);
    }
    let seen = socket_seen(key, &mut *pending, name_len, now);
    let flags = if cut { flag::QUESTION_CUT } else { 0 };
    match seen {
        Seen::Pair { other_id, gap } => {
            stat(DnsStat::ParallelPairs);
            emit(key, pending, reason::PARALLEL, gap, other_id, 0, flags, now);
        }
        Seen::AnsweredHere { gap } => {
            stat(DnsStat::ResentAfterAnswer);
            emit(
                key,
                pending,
                reason::RESENT,
                gap,
                0,
                0,
                flags | flag::ANSWERED_HERE,
                now,
            );
        }
        Seen::Nothing => {}
    }
}

/// What [`read_question`] found. Counted by the caller once it knows the
/// query is new (a re-send's question was counted with its first send).
enum Question {
    /// The name's length in bytes (wire format, root label included).
    Read { name_len: usize },
    /// The name did not fit in [`QUESTION_CAP`] bytes.
    Cut { name_len: usize },
    /// No question bytes, or a compression pointer in the name.
    Malformed { name_len: usize },
    /// QDCOUNT is not 1: no question read.
    BogusCount,
}

/// What the client socket's previous queries say about a new one.
enum Seen {
    Nothing,
    /// The other half of an A/AAAA pair, `gap` ns earlier.
    Pair {
        other_id: u16,
        gap: u64,
    },
    /// The same id as one of the socket's last two queries, which left no
    /// pending entry: it was answered here and is asked again.
    AnsweredHere {
        gap: u64,
    },
}

/// A hash of the question's name (its first `name_len` bytes): the
/// Internet checksum of its whole 4-byte words (`bpf_csum_diff`, v4.6+)
/// folded with its length. One helper call, nothing for the verifier to
/// walk: a hashing loop over the bytes of a name of unknown length took the
/// v5.10 verifier past its 1 M instructions. Two names of one length whose
/// 4-byte words are a permutation of each other collide; for "the AAAA
/// query of the A one just before from the same socket" that is harmless.
#[inline(always)]
fn name_hash(pending: &mut DnsPending, name_len: usize) -> u32 {
    // Whole words only (the helper wants a multiple of 4), bounded for the
    // verifier: [0, QUESTION_CAP - 4].
    let words = name_len & (QUESTION_CAP - 4);
    // SAFETY: `question` has QUESTION_CAP ≥ words bytes; the helper only
    // reads them.
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            pending.question.as_mut_ptr().cast(),
            words as u32,
            0,
        )
    };
    (sum as u32) ^ ((name_len as u32) << 24)
}

/// Looks the query's socket up in the per-socket LRU and records the query.
#[inline(always)]
fn socket_seen(key: &DnsKey, pending: &mut DnsPending, name_len: usize, now: u64) -> Seen {
    let hash = name_hash(pending, name_len);
    let mut socket_key = *key;
    socket_key.id = 0;
    let Some(last) = SOCKETS.get_ptr_mut(socket_key) else {
        let last = DnsSocketLast {
            ts_ns: now,
            name_hash: hash,
            id: key.id,
            prev_id: key.id,
            qtype: pending.qtype,
            _pad: [0; 3],
        };
        let _ = SOCKETS.insert(socket_key, last, 0);
        return Seen::Nothing;
    };
    // SAFETY: the pointer comes from the map; the value is integers, a torn
    // read from a concurrent update is harmless.
    let last = unsafe { &mut *last };
    let gap = now.wrapping_sub(last.ts_ns);
    // An A and an AAAA for the same name from the same socket within the
    // window: glibc's sendmmsg pair. Whether the first was answered in
    // between says nothing: under load the server (on the other CPU) often
    // answers A before AAAA has left the sender's stack. An A-only client
    // (dnsperf) never makes one.
    let seen = if key.id == last.id || key.id == last.prev_id {
        Seen::AnsweredHere { gap }
    } else if gap <= DNS_PAIR_WINDOW_NS.load()
        && is_a_aaaa_pair(last.qtype, pending.qtype)
        && last.name_hash == hash
    {
        Seen::Pair {
            other_id: last.id,
            gap,
        }
    } else {
        Seen::Nothing
    };
    last.ts_ns = now;
    last.prev_id = last.id;
    last.id = key.id;
    last.qtype = pending.qtype;
    last.name_hash = hash;
    seen
}

/// Copies the question into `pending` and finds its qtype and the name's
/// length.
#[inline(always)]
fn read_question(ctx: &TcContext, off: usize, pending: &mut DnsPending) -> Question {
    let skb_len = ctx.len() as usize;
    let available = skb_len.saturating_sub(off);
    if available == 0 {
        return Question::Malformed { name_len: 0 };
    }
    // From here on `len` is the copied length as load_var hands it back:
    // [1, QUESTION_CAP] to the verifier whichever way the headers were laid
    // out, so the walk below is verified once, not once per header layout
    // (v5.10 ran out of its 1 M instructions otherwise).
    let Ok(len) = parse::load_var(ctx, off, &mut pending.question, available.min(QUESTION_CAP))
    else {
        return Question::Read { name_len: 0 };
    };
    // Walk the labels to the root label; qtype follows it.
    let mut pos = 0usize;
    for _ in 0..QUESTION_CAP {
        if pos >= len {
            break;
        }
        let Some(label) = byte_at(&pending.question, pos) else {
            break;
        };
        let label = usize::from(label);
        if label == 0 {
            let qtype_at = pos + 1;
            if qtype_at + 2 <= len
                && let (Some(hi), Some(lo)) = (
                    byte_at(&pending.question, qtype_at),
                    byte_at(&pending.question, qtype_at + 1),
                )
            {
                pending.qtype = u16::from_be_bytes([hi, lo]);
                pending.question_len = (qtype_at + 4).min(len) as u16;
                return Question::Read { name_len: qtype_at };
            }
            break;
        }
        if label & DNS_LABEL_POINTER != 0 {
            // A compression pointer has no place in a question we send.
            pending.question_len = pos as u16;
            return Question::Malformed { name_len: pos };
        }
        pos += label + 1;
    }
    pending.question_len = len as u16;
    Question::Cut { name_len: len }
}

/// `buf[i]`, with a bound the verifier is sure to see.
#[inline(always)]
fn byte_at(buf: &[u8; QUESTION_CAP], i: usize) -> Option<u8> {
    if i >= QUESTION_CAP {
        return None;
    }
    // SAFETY: reading a local through a valid reference.
    let i = unsafe { core::ptr::read_volatile(&i) };
    // A no-op after the check above, but one LLVM cannot drop: the index the
    // verifier sees is masked right before the access, so even the bounds
    // tracking of v5.10 accepts it.
    Some(buf[i & (QUESTION_CAP - 1)])
}

#[inline(always)]
fn answer(key: &DnsKey, header: &Header, now: u64) {
    stat(DnsStat::Answers);
    let rcode = u32::from(header.flags & DNS_RCODE_MASK);
    stat_index(RCODE_BASE + rcode);
    let truncated = header.flags & DNS_FLAG_TC != 0;
    if truncated {
        stat(DnsStat::Truncated);
    }
    let Some(pending) = PENDING.get_ptr(key) else {
        return stat(DnsStat::Unmatched);
    };
    // SAFETY: pointer from the map, read before we delete the entry.
    let pending = unsafe { &*pending };
    stat(DnsStat::Matched);
    let latency = now.wrapping_sub(pending.first_ns);
    hist_add(key, latency);
    let mut reasons = 0;
    if latency >= DNS_SLOW_NS.load() {
        stat(DnsStat::Slow);
        reasons |= reason::SLOW;
    }
    if rcode != DNS_RCODE_NOERROR && rcode != DNS_RCODE_NXDOMAIN {
        reasons |= reason::RCODE;
    }
    if truncated {
        reasons |= reason::TRUNCATED;
    }
    if reasons != 0 {
        emit(
            key,
            pending,
            reasons,
            latency,
            0,
            rcode as u8,
            flag::RESPONSE,
            now,
        );
    }
    let _ = PENDING.remove(key);
}

#[inline(always)]
fn hist_add(key: &DnsKey, latency_ns: u64) {
    let hist_key = DnsHistKey {
        ifindex: key.ifindex,
        family: key.family,
        query_dir: key.query_dir,
        _pad: [0; 2],
        server: key.server,
    };
    // LLVM knows latency_bucket() < HIST_BUCKETS and would drop a plain bound
    // check, but its branchless clamp leaves the verifier with a wider range
    // (it rejected index 1055). A volatile read makes the check stick.
    let bucket = latency_bucket(latency_ns) as usize;
    // SAFETY: reading a local through a valid reference.
    let bucket = unsafe { core::ptr::read_volatile(&bucket) };
    if bucket >= HIST_BUCKETS {
        return;
    }
    let hist = match HIST.get_ptr_mut(hist_key) {
        Some(hist) => hist,
        None => {
            let Some(zero) = ZERO_HIST.get_ptr(0) else {
                return;
            };
            // SAFETY: a zeroed per-CPU value used only as the insert source.
            let zero = unsafe { &*zero };
            // By reference: an 8 KiB histogram cannot cross the BPF stack.
            // BPF_NOEXIST: when CPUs race to create the entry, one insert
            // wins and the others fail with EEXIST; they then find the
            // winner's entry (each CPU has its own slot in it) below. Only
            // E2BIG means the map is full; any other failure with no entry
            // to be found is counted apart.
            let inserted = HIST.insert(hist_key, zero, u64::from(BPF_NOEXIST));
            match HIST.get_ptr_mut(hist_key) {
                Some(hist) => hist,
                None if inserted == Err(-E2BIG) => return count_loss(Loss::DnsHistMapFull),
                None => return spill(&hist_key, zero, bucket),
            }
        }
    };
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    unsafe { (*hist).buckets[bucket] += 1 };
}

/// Adds one answer to the shared spill histogram of `key`.
#[inline(always)]
fn spill(key: &DnsHistKey, zero: &DnsHist, bucket: usize) {
    let _ = HIST_SPILL.insert(key, zero, u64::from(BPF_NOEXIST));
    let Some(hist) = HIST_SPILL.get_ptr_mut(key) else {
        return count_loss(Loss::DnsHistInsert);
    };
    if bucket >= HIST_BUCKETS {
        return;
    }
    stat(DnsStat::HistSpilled);
    // SAFETY: a bucket of a map value; shared by the CPUs, hence atomic:
    // the plain atomic add every kernel has (BPF_XADD), not the fetching
    // one (v5.12+). core offers no atomic add on the BPF target.
    unsafe {
        let slot = &raw mut (*hist).buckets[bucket];
        core::arch::asm!(
            "lock *(u64 *)({slot} + 0) += {one}",
            slot = in(reg) slot,
            one = in(reg) 1u64,
        );
    }
}

/// The errno a full BPF hash map's update returns.
const E2BIG: i32 = 7;
/// The errno of a BPF_NOEXIST update whose key exists.
const EEXIST: i32 = 17;

#[expect(clippy::too_many_arguments, reason = "flat fields of one event")]
#[inline(always)]
fn emit(
    key: &DnsKey,
    pending: &DnsPending,
    reasons: u32,
    elapsed_ns: u64,
    other_id: u16,
    rcode: u8,
    flags: u8,
    now: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        return count_loss(Loss::DnsRingFull);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved, writable DnsEvent in the ring.
    unsafe {
        (*event).ts_ns = now;
        (*event).elapsed_ns = elapsed_ns;
        (*event).key = *key;
        (*event).reasons = reasons;
        (*event).sends = pending.sends;
        (*event).qtype = pending.qtype;
        (*event).other_id = other_id;
        (*event).rcode = rcode;
        (*event).flags = flags;
        (*event).question_len = pending.question_len;
        (*event).question = pending.question;
    }
    entry.submit(0);
}
