//! Decoder fuzzing: the userspace side that turns kernel bytes and kernel
//! text into reports survives generated and mutated input without a panic.
//!
//! A seeded xorshift generator (no shrinking, no corpus files): the same
//! inputs on every run, so a failure reproduces. `TRACER_FUZZ_SEED=<n>`
//! explores other inputs; `TRACER_FUZZ_SCALE=<k>` multiplies every count.
//! Each test prints how many inputs it tried; together they try over one
//! million.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use tracer::{
    conntrack::stat::ConntrackStats,
    dns::{
        collector::{LatencyReport, TimeoutModes},
        question::{self, Question},
    },
    privileges::CapSet,
    ring,
};
use tracer_common::{
    conntrack::ConntrackEvent,
    dns::{DnsEvent, HIST_BUCKETS, QUESTION_CAP, bucket_bounds_ns, flag, latency_bucket},
    flood::FloodCause,
};
use tracer_tests::{
    Rng,
    frames::{DnsMsg, Frame, L4},
};

/// Bytes a parser treats specially: label lengths at the edges, pointer
/// tags, zeros, all-ones.
const INTERESTING: [u8; 12] = [
    0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xfe, 0xff, b'.',
];

/// One to four random edits of `base`.
fn mutate(rng: &mut Rng, base: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = *rng.pick(&INTERESTING);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, *rng.pick(&INTERESTING));
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            5 => {
                let len = rng.below(v.len() + 1);
                v.truncate(len);
            }
            6 if v.len() > 1 => {
                // Duplicate a chunk: repeated labels, repeated pointers.
                let a = rng.below(v.len());
                let b = a + rng.below(v.len() - a) + 1;
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                v.splice(i..i, extra);
            }
        }
    }
    v.truncate(max_len);
    v
}

/// Scale factor for every count (`TRACER_FUZZ_SCALE`, default 1).
fn scale(n: u64) -> u64 {
    let k = std::env::var("TRACER_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    n * k.max(1)
}

/// A random valid name: labels of `[a-z0-9]`, 1-63 bytes each, at most
/// `max` wire bytes.
fn random_name(rng: &mut Rng, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut labels: Vec<String> = Vec::new();
    let mut wire = 1;
    for _ in 0..1 + rng.below(8) {
        let longest = if rng.chance(8) { 63 } else { 12 };
        let len = 1 + rng.below(longest);
        if wire + len + 1 > max {
            break;
        }
        wire += len + 1;
        labels.push((0..len).map(|_| *rng.pick(ALPHABET) as char).collect());
    }
    if labels.is_empty() {
        labels.push("a".into());
    }
    labels.join(".")
}

/// The question bytes the kernel copies: wire name, qtype, qclass.
fn wire_question(name: &str, qtype: u16) -> Vec<u8> {
    let msg = DnsMsg::query(0, name, qtype).bytes();
    msg[12..].to_vec()
}

fn report(test: &str, inputs: u64, start: Instant) {
    eprintln!(
        "fuzz {test}: {inputs} inputs tried in {:.1?}, no panic",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// DNS question decoding
// ---------------------------------------------------------------------------

/// `question::decode` on arbitrary and mutated question bytes, any qtype,
/// cut or not: never panics, always names something, and a valid name that
/// fits round-trips exactly.
#[test]
fn question_decode_survives_arbitrary_and_mutated_bytes() {
    let start = Instant::now();
    let mut rng = Rng::new(1);
    let mut tried = 0u64;
    let rounds = scale(60_000);
    for _ in 0..rounds {
        let qtype = if rng.chance(2) {
            *rng.pick(&[1, 28, 33, 65, 255, 0, 0xffff])
        } else {
            rng.next_u64() as u16
        };
        let name = random_name(&mut rng, QUESTION_CAP - 4);
        let wire = wire_question(&name, qtype);

        // The valid question round-trips.
        let q = question::decode(&wire, qtype, false);
        assert_eq!(q.name, name, "round trip of {wire:02x?}");
        assert_eq!(q.qtype, question::qtype_name(qtype));
        tried += 1;

        // Cut at every kind of point, flagged as the kernel flags it.
        let cut_at = rng.below(wire.len() + 1);
        check(&question::decode(&wire[..cut_at], qtype, true), qtype);
        tried += 1;

        // Mutated, with and without the cut flag.
        for _ in 0..6 {
            let bytes = mutate(&mut rng, &wire, QUESTION_CAP);
            check(&question::decode(&bytes, qtype, rng.chance(3)), qtype);
            tried += 1;
        }

        // Pure noise, from empty to the kernel's cap.
        let len = rng.below(QUESTION_CAP + 1);
        let noise = rng.bytes(len);
        check(&question::decode(&noise, qtype, rng.chance(2)), qtype);
        tried += 1;
    }
    // The root name (priming queries: `NS .`), whole or cut.
    assert_eq!(question::decode(&[0, 0, 2, 0, 1], 2, false).name, "<root>");
    assert_eq!(question::decode(&[0], 2, true).name, "<root>");
    // Names built to trip a decoder: pointer chains, pointer to itself,
    // label lengths past the end, 0x40/0x80 label types.
    for tag in [0x40u8, 0x80, 0xc0] {
        for b in 0..=255u8 {
            for bytes in [vec![tag | (b & 0x3f), b], vec![1, b'a', tag, b, 0, 1, 0, 1]] {
                check(&question::decode(&bytes, 1, false), 1);
                check(&question::decode(&bytes, 1, true), 1);
                tried += 2;
            }
        }
    }
    report("question::decode", tried, start);
}

fn check(q: &Question, qtype: u16) {
    assert!(!q.name.is_empty(), "a name, even for garbage");
    assert_eq!(q.qtype, question::qtype_name(qtype));
}

// ---------------------------------------------------------------------------
// Ring-buffer records
// ---------------------------------------------------------------------------

/// The bytes of a `Pod` value.
fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: T is Pod (plain integers, no padding): every byte is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// `ring::decode::<T>` on records of every length around `size_of::<T>()`,
/// at every alignment: `None` exactly when too short, else the record's
/// bytes, unchanged.
fn ring_decode<T: aya::Pod>(rng: &mut Rng, rounds: u64) -> u64 {
    let size = size_of::<T>();
    let mut backing = vec![0u8; 2 * size + 16];
    for _ in 0..rounds {
        let len = if rng.chance(2) {
            size + rng.below(16)
        } else {
            rng.below(2 * size + 1)
        };
        let offset = rng.below(8);
        for b in &mut backing[offset..offset + len] {
            *b = rng.byte();
        }
        let item = &backing[offset..offset + len];
        match ring::decode::<T>(item) {
            None => assert!(len < size, "{len}-byte record refused"),
            Some(value) => {
                assert!(len >= size);
                assert_eq!(bytes_of(&value), &item[..size]);
            }
        }
    }
    rounds
}

/// Every event type the kernel sends through a ring buffer decodes (or is
/// refused when short) without a panic, and a decoded DNS event goes through
/// the collector's per-event decoding (question, qtype, rcode, timing).
#[test]
fn ring_records_of_any_length_and_alignment_decode_or_are_refused() {
    let start = Instant::now();
    let mut rng = Rng::new(2);
    let mut tried = 0;
    tried += ring_decode::<DnsEvent>(&mut rng, scale(100_000));
    tried += ring_decode::<ConntrackEvent>(&mut rng, scale(100_000));
    tried += ring_decode::<FloodCause>(&mut rng, scale(100_000));

    // What the DNS collector does with each event, on random events.
    let mut modes = TimeoutModes::default();
    let mut record = vec![0u8; size_of::<DnsEvent>()];
    let events = scale(100_000);
    for i in 0..events {
        for b in &mut record {
            *b = rng.byte();
        }
        let event = ring::decode::<DnsEvent>(&record).expect("full record");
        // As DnsCollector::record: the kept length, clamped to the array.
        let len = usize::from(event.question_len).min(event.question.len());
        let q = question::decode(
            &event.question[..len],
            event.qtype,
            event.flags & flag::QUESTION_CUT != 0,
        );
        check(&q, event.qtype);
        assert!(!question::rcode_name(event.rcode).is_empty());
        modes.add(Duration::from_nanos(event.elapsed_ns));
        assert_eq!(modes.total(), i + 1);
    }
    tried += events;
    report(
        "ring::decode (DnsEvent, ConntrackEvent, FloodCause)",
        tried,
        start,
    );
}

/// The latency histogram path: any bucket counts a kernel histogram can
/// hold become percentiles without a panic, and every latency lands in a
/// bucket that contains it.
#[test]
fn latency_buckets_and_percentiles_survive_any_counts() {
    let start = Instant::now();
    let mut rng = Rng::new(3);
    let mut tried = 0u64;
    for _ in 0..scale(200_000) {
        let ns = match rng.below(3) {
            0 => rng.next_u64(),
            1 => rng.next_u64() >> rng.below(64),
            _ => rng.below(20_000_000_000) as u64,
        };
        let b = latency_bucket(ns);
        assert!((b as usize) < HIST_BUCKETS);
        let (lo, hi) = bucket_bounds_ns(b);
        assert!(lo <= ns, "{ns} below its bucket {b}");
        assert!(
            ns < hi || b as usize == HIST_BUCKETS - 1,
            "{ns} above bucket {b}"
        );
        tried += 1;
    }
    let mut buckets = vec![0u64; HIST_BUCKETS];
    for _ in 0..scale(2_000) {
        buckets.iter_mut().for_each(|n| *n = 0);
        for _ in 0..rng.below(40) {
            let i = rng.below(HIST_BUCKETS);
            // Per-CPU sums of a trace: large, but far from wrapping.
            buckets[i] = rng.next_u64() >> (20 + rng.below(44));
        }
        let r = LatencyReport::from_buckets("if".into(), [10, 0, 0, 1].into(), &buckets);
        assert!(r.p50_ms <= r.p90_ms && r.p90_ms <= r.p99_ms, "{r:?}");
        assert!(r.p50_ms.is_finite() && r.max_ms.is_finite());
        tried += 1;
    }
    report("latency buckets", tried, start);
}

// ---------------------------------------------------------------------------
// Kernel text
// ---------------------------------------------------------------------------

const STAT_618: &str = include_str!("../../tracer/src/conntrack/testdata/nf_conntrack-6.18.txt");
const STAT_419: &str = include_str!("../../tracer/src/conntrack/testdata/nf_conntrack-4.19.txt");

/// Text edits that keep the shape of `/proc/net/stat/nf_conntrack`.
fn mutate_stat(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    for _ in 0..1 + rng.below(3) {
        let li = rng.below(lines.len());
        let count = lines.len();
        let line = &mut lines[li];
        match rng.below(9) {
            0 if !line.is_empty() => {
                let i = rng.below(line.len());
                line.remove(i);
            }
            1 => line.push(format!("{:x}", rng.next_u64())),
            2 if !line.is_empty() => {
                let i = rng.below(line.len());
                line[i] = "ffffffffffffffff".into();
            }
            3 if !line.is_empty() => {
                let i = rng.below(line.len());
                line[i] = (*rng.pick(&[
                    "",
                    "-1",
                    "0x10",
                    "g",
                    "entries",
                    "1ffffffffffffffff",
                    "\u{fffd}",
                ]))
                .into();
            }
            4 => {
                let copy = line.clone();
                let at = rng.below(count + 1);
                lines.insert(at, copy);
            }
            5 if count > 1 => {
                lines.remove(li);
            }
            6 => {
                let at = rng.below(count + 1);
                lines.insert(at, Vec::new());
            }
            7 if !line.is_empty() => {
                // A header name repeated or swapped.
                let i = rng.below(line.len());
                let j = rng.below(line.len());
                line.swap(i, j);
            }
            _ => {
                let bytes = mutate(rng, line.join(" ").as_bytes(), 400);
                *line = vec![String::from_utf8_lossy(&bytes).into_owned()];
            }
        }
    }
    let sep = if rng.chance(4) { "\t" } else { "  " };
    lines
        .iter()
        .map(|l| l.join(sep))
        .collect::<Vec<_>>()
        .join(if rng.chance(8) { "\r\n" } else { "\n" })
}

/// `ConntrackStats::parse` on mutated real layouts (old and new columns)
/// and on arbitrary text: an error or a value, never a panic; a value has
/// every header column and deltas between any two never panic.
#[test]
fn conntrack_stat_parse_survives_mutated_layouts_and_noise() {
    let start = Instant::now();
    let mut rng = Rng::new(4);
    let mut tried = 0u64;
    let base_new = ConntrackStats::parse(STAT_618).expect("6.18 layout");
    let base_old = ConntrackStats::parse(STAT_419).expect("4.19 layout");
    let mut parsed_ok = 0u64;
    for _ in 0..scale(40_000) {
        let base = if rng.chance(2) { STAT_618 } else { STAT_419 };
        let text = mutate_stat(&mut rng, base);
        if let Ok(stats) = ConntrackStats::parse(&text) {
            parsed_ok += 1;
            if let Some(header) = text.lines().find(|l| !l.trim().is_empty()) {
                for name in header.split_whitespace() {
                    assert!(stats.get(name).is_some(), "column {name} of {text:?}");
                }
            }
            let _ = stats.delta(&base_new);
            let _ = base_old.delta(&stats);
            let _ = stats.clash_resolved();
        }
        tried += 1;

        // Arbitrary text from the file's alphabet, and raw noise.
        let alphabet = b"0123456789abcdefxyz_ \t\n\n";
        let len = rng.below(600);
        let text: String = (0..len).map(|_| *rng.pick(alphabet) as char).collect();
        let _ = ConntrackStats::parse(&text);
        let n = rng.below(300);
        let noise = rng.bytes(n);
        let _ = ConntrackStats::parse(&String::from_utf8_lossy(&noise));
        tried += 2;
    }
    assert!(parsed_ok > 0, "some mutations keep the file valid");
    report(
        &format!("ConntrackStats::parse ({parsed_ok} mutated layouts accepted)"),
        tried,
        start,
    );
}

/// `CapSet::parse_status` (the privilege check's reading of
/// `/proc/self/status`) on mutated and arbitrary text.
#[test]
fn capability_status_parse_survives_noise() {
    let start = Instant::now();
    let mut rng = Rng::new(5);
    let real = std::fs::read_to_string("/proc/self/status").expect("read status");
    let mut tried = 0u64;
    for _ in 0..scale(50_000) {
        let bytes = mutate(&mut rng, real.as_bytes(), 4096);
        let _ = CapSet::parse_status(&String::from_utf8_lossy(&bytes));
        let line = format!(
            "CapEff:\t{}\n",
            String::from_utf8_lossy(&{
                let n = rng.below(20);
                rng.bytes(n)
            })
        );
        let _ = CapSet::parse_status(&line);
        tried += 2;
    }
    report("CapSet::parse_status", tried, start);
}

// ---------------------------------------------------------------------------
// The DNS collector on events the kernel made from mutated frames
// ---------------------------------------------------------------------------

/// Mutated DNS frames through the real DNS program (BPF_PROG_TEST_RUN), each
/// run twice so queries come back as re-send events carrying whatever
/// question bytes the kernel kept; answers with random rcodes and TC bits
/// make rcode and truncation events. The real `DnsCollector` drains,
/// sweeps, reports and serialises it all: no panic, no undecodable event,
/// and the program passes every frame on.
#[test]
fn dns_collector_survives_events_from_mutated_frames() {
    use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
    use tracer::dns::collector::{DnsCollector, DnsSettings};

    if !tracer_tests::privileged("dns_collector_survives_events_from_mutated_frames") {
        return;
    }
    let start = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let mut ebpf = tracer::probes::load().expect("load eBPF object");
    let _tc = tracer::attach::TcAttachments::load(&mut ebpf, &tracer::dns::PROGRAMS)
        .expect("verifier accepts DNS programs");
    let mut dns = DnsCollector::new(&mut ebpf, DnsSettings::default()).expect("collector");

    let mut rng = Rng::new(6);
    let client = Ipv4Addr::new(10, 240, 1, 1);
    let server = Ipv4Addr::new(10, 96, 0, 10);
    let client6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let server6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xa);
    let frames = scale(15_000);
    let (mut runs, mut refused) = (0u64, 0u64);
    for i in 0..frames {
        let id = rng.next_u64() as u16;
        let sport = 1024 + rng.below(60_000) as u16;
        let max = if rng.chance(4) { 250 } else { 60 };
        let name = random_name(&mut rng, max);
        let any = rng.next_u64() as u16;
        let qtype = *rng.pick(&[1u16, 28, 33, 255, any]);
        let query = DnsMsg::query(id, &name, qtype);
        let query = if rng.chance(10) {
            query.qdcount(rng.next_u64() as u16)
        } else {
            query
        };
        let answer = DnsMsg::response(id, &name, qtype, rng.below(16) as u8, rng.below(3) as u16)
            .truncated(rng.chance(4));
        let (q_l4, a_l4) = if rng.chance(4) {
            (
                L4::Tcp {
                    src: sport,
                    dst: 53,
                    flags: 0x18,
                    seq: 1,
                },
                L4::Tcp {
                    src: 53,
                    dst: sport,
                    flags: 0x18,
                    seq: 1,
                },
            )
        } else {
            (
                L4::Udp {
                    src: sport,
                    dst: 53,
                },
                L4::Udp {
                    src: 53,
                    dst: sport,
                },
            )
        };
        let (mut q, mut a) = if rng.chance(4) {
            (
                Frame::ipv6(client6, server6, q_l4, &query.bytes()),
                Frame::ipv6(server6, client6, a_l4, &answer.bytes()),
            )
        } else {
            (
                Frame::ipv4(client, server, q_l4, &query.bytes()),
                Frame::ipv4(server, client, a_l4, &answer.bytes()),
            )
        };
        if rng.chance(8) {
            q = q.vlan(7);
            a = a.vlan(7);
        }
        let (q, a) = (q.build(), a.build());
        // Mutate past the Ethernet header, mostly in the DNS message.
        let mut_q = {
            let keep = 14 + rng.below(q.len() - 14);
            let mut m = q[..keep].to_vec();
            m.extend(mutate(&mut rng, &q[keep..], 1500));
            m
        };
        let sequence: Vec<&[u8]> = match rng.below(3) {
            0 => vec![&mut_q, &mut_q],
            1 => vec![&q, &q, &a],
            _ => vec![&mut_q, &mut_q, &a],
        };
        let prog: &SchedClassifier = ebpf
            .program("dns_tc_ingress")
            .expect("program")
            .try_into()
            .expect("classifier");
        for frame in sequence {
            match prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            }) {
                // TC_ACT_UNSPEC: the probe never changes a packet's fate.
                Ok(result) => assert_eq!(result.return_value as i32, -1),
                // The kernel refuses frames shorter than their IP header.
                Err(_) => refused += 1,
            }
            runs += 1;
        }
        // Drain well before the 1 MiB ring (4854 events) fills.
        if i % 500 == 499 {
            dns.drain();
        }
    }
    dns.drain();
    // Every pending query (mutated questions included) as unanswered.
    dns.sweep(&mut ebpf, u64::MAX).expect("sweep");
    let name_of = |i: u32| format!("if{i}");
    let report = dns
        .report(
            &ebpf,
            &tracer::dns::collector::NodeView {
                name_of: &name_of,
                is_bridge: &|_| false,
                traced_pod_ip: &|_| false,
            },
            true,
        )
        .expect("report");
    let json = serde_json::to_string(&report).expect("serialise report");
    assert_eq!(report.undecodable_events, 0);
    assert!(report.events_total > 0, "events were made");
    let lost: u64 = tracer::loss::read(&ebpf)
        .expect("losses")
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(lost, 0, "drained in time");
    eprintln!(
        "fuzz DnsCollector: {frames} generated frames, {runs} program runs ({refused} refused \
         by the kernel), {} events decoded, {} unanswered decoded, {} bytes of JSON, {:.1?}",
        report.events_total,
        report.unanswered.len(),
        json.len(),
        start.elapsed()
    );
}
