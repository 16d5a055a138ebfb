//! The DNS programs on crafted frames through BPF_PROG_TEST_RUN (v4.12+):
//! every odd input lands in a named outcome counter, the program always
//! returns TC_ACT_UNSPEC, and the verifier never sees a problem.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use tracer::{
    attach::TcAttachments,
    dns::{self, collector::read_stats},
    probes,
};
use tracer_common::{
    dns::{DnsStat, RCODE_BASE},
    loss::Loss,
};
use tracer_tests::{
    frames::{DnsMsg, Frame, L4},
    privileged,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xa);

struct Probe {
    ebpf: Ebpf,
    _tc: TcAttachments,
}

impl Probe {
    fn new() -> Self {
        // A 100 ms pair window: consecutive test runs are not the one
        // syscall sendmmsg is, and a loaded machine spaces them out.
        let settings = probes::ProbeSettings {
            dns_pair_window: std::time::Duration::from_millis(100),
            ..probes::ProbeSettings::default()
        };
        let mut ebpf = probes::load_with(&settings).expect("load eBPF object");
        let tc =
            TcAttachments::load(&mut ebpf, &dns::PROGRAMS).expect("verifier accepts DNS programs");
        Self { ebpf, _tc: tc }
    }

    /// Runs the ingress program on `frame`; asserts it passes the packet on.
    fn run(&self, frame: &[u8]) {
        self.run_on("dns_tc_ingress", frame);
    }

    /// Runs `program` on `frame`; asserts it passes the packet on.
    fn run_on(&self, program: &str, frame: &[u8]) {
        let prog: &SchedClassifier = self.ebpf.program(program).unwrap().try_into().unwrap();
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::new()
            })
            .expect("test_run");
        assert_eq!(
            result.return_value as i32,
            -1,
            "TC_ACT_UNSPEC for {} bytes",
            frame.len()
        );
    }

    fn stat(&self, stat: DnsStat) -> u64 {
        read_stats(&self.ebpf).unwrap()[stat as usize]
    }

    fn loss(&self, loss: Loss) -> u64 {
        tracer::loss::read(&self.ebpf)
            .unwrap()
            .into_iter()
            .find(|(l, _)| *l == loss)
            .map_or(0, |(_, n)| n)
    }

    fn rcode(&self, rcode: u32) -> u64 {
        read_stats(&self.ebpf).unwrap()[(RCODE_BASE + rcode) as usize]
    }

    /// Counters other than `allowed` that moved since `before`.
    fn unexpected(&self, before: &[u64], allowed: &[DnsStat]) -> Vec<&'static str> {
        let now = read_stats(&self.ebpf).unwrap();
        DnsStat::ALL
            .iter()
            .filter(|s| !allowed.contains(s) && now[**s as usize] != before[**s as usize])
            .map(|s| s.name())
            .collect()
    }
}

fn udp_query(id: u16, name: &str, qtype: u16, sport: u16) -> Frame {
    Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: sport,
            dst: 53,
        },
        &DnsMsg::query(id, name, qtype).bytes(),
    )
}

fn udp_answer(id: u16, name: &str, qtype: u16, rcode: u8, dport: u16) -> Frame {
    Frame::ipv4(
        SERVER,
        CLIENT,
        L4::Udp {
            src: 53,
            dst: dport,
        },
        &DnsMsg::response(id, name, qtype, rcode, 1).bytes(),
    )
}

macro_rules! privileged_test {
    ($name:ident, $body:expr) => {
        #[test_log::test]
        fn $name() {
            if privileged(stringify!($name)) {
                let body: fn(Probe) = $body;
                body(Probe::new());
            }
        }
    };
}

privileged_test!(query_then_answer_is_matched, |p| {
    let before = read_stats(&p.ebpf).unwrap();
    p.run(&udp_query(0x1234, "kubernetes.default.svc.cluster.local", 1, 40000).build());
    // The answer travels the other way: on the same port, TC egress.
    p.run_on(
        "dns_tc_egress",
        &udp_answer(0x1234, "kubernetes.default.svc.cluster.local", 1, 0, 40000).build(),
    );
    assert_eq!(p.stat(DnsStat::Queries), 1);
    assert_eq!(p.stat(DnsStat::Answers), 1);
    assert_eq!(p.stat(DnsStat::Matched), 1);
    assert_eq!(p.rcode(0), 1);
    assert_eq!(
        p.unexpected(
            &before,
            &[
                DnsStat::Queries,
                DnsStat::Answers,
                DnsStat::Matched,
                DnsStat::PendingInserted
            ]
        ),
        Vec::<&str>::new()
    );
});

privileged_test!(answer_without_query_is_unmatched, |p| {
    p.run(&udp_answer(7, "example.com", 1, 3, 40001).build());
    assert_eq!(p.stat(DnsStat::Unmatched), 1);
    assert_eq!(p.rcode(3), 1, "NXDOMAIN counted");
});

privileged_test!(same_query_twice_is_resent_and_two_ids_are_a_pair, |p| {
    let q = udp_query(1, "example.com", 1, 40002).build();
    p.run(&q);
    p.run(&q);
    assert_eq!(p.stat(DnsStat::Resent), 1);
    // A and AAAA from one socket, back to back: glibc's parallel pair.
    p.run(&udp_query(2, "example.com", 28, 40002).build());
    assert_eq!(p.stat(DnsStat::ParallelPairs), 1);
    assert_eq!(p.stat(DnsStat::Queries), 3);
});

privileged_test!(truncated_headers_are_counted_never_fatal, |p| {
    let full = udp_query(3, "example.com", 1, 40003).build();
    // The kernel refuses test runs shorter than Ethernet + IPv4 headers
    // for an IPv4 frame (bpf_prog_test_run_skb pulls the IP header).
    for len in 34..full.len() {
        p.run(&udp_query(3, "example.com", 1, 40003).truncate(len).build());
    }
    // 34..42: no full UDP header → short; 42..54: no DNS header → malformed;
    // longer: a query whose question is cut.
    assert_eq!(p.stat(DnsStat::ShortHeaders), 42 - 34);
    assert_eq!(
        p.stat(DnsStat::Malformed),
        54 - 42 + 1,
        "+1: empty question"
    );
    assert!(p.stat(DnsStat::Queries) >= 1);
});

privileged_test!(ipv4_options_vlan_and_qinq_are_parsed, |p| {
    p.run(
        &udp_query(4, "example.com", 1, 40004)
            .ipv4_options(3)
            .build(),
    );
    p.run(&udp_query(5, "example.com", 1, 40005).vlan(100).build());
    p.run(
        &udp_query(6, "example.com", 1, 40006)
            .vlan(100)
            .vlan(200)
            .build(),
    );
    assert_eq!(p.stat(DnsStat::Queries), 3);
    p.run(
        &udp_query(7, "example.com", 1, 40007)
            .vlan(1)
            .vlan(2)
            .vlan(3)
            .build(),
    );
    assert_eq!(p.stat(DnsStat::VlanTooDeep), 1);
    assert_eq!(p.stat(DnsStat::Queries), 3);
});

privileged_test!(ipv6_extension_headers_up_to_the_bound, |p| {
    let query = DnsMsg::query(8, "example.com", 28).bytes();
    let frame = |chain: &[u8]| {
        Frame::ipv6(
            CLIENT6,
            SERVER6,
            L4::Udp {
                src: 40008,
                dst: 53,
            },
            &query,
        )
        .ipv6_ext_headers(chain)
        .build()
    };
    p.run(&frame(&[]));
    p.run(&frame(&[0, 60, 43]));
    assert_eq!(p.stat(DnsStat::Queries), 2);
    p.run(&frame(&[0, 60, 43, 60, 43, 60, 43]));
    assert_eq!(p.stat(DnsStat::Ipv6ExtTooDeep), 1);
    assert_eq!(p.stat(DnsStat::Queries), 2);
});

privileged_test!(tcp_dns_and_split_headers, |p| {
    let query = DnsMsg::query(9, "example.com", 1).bytes();
    let tcp = |payload: &[u8]| {
        Frame::ipv4(
            CLIENT,
            SERVER,
            L4::Tcp {
                src: 40009,
                dst: 53,
                flags: 0x18,
                seq: 1,
            },
            payload,
        )
    };
    p.run(&tcp(&query).build());
    assert_eq!(p.stat(DnsStat::Queries), 1);
    // A message split mid-header: only 5 bytes of it in this segment.
    p.run(&tcp(&query[..5]).build());
    assert_eq!(p.stat(DnsStat::TcpNoHeader), 1);
    // A bare ACK carries nothing and is not counted.
    p.run(&tcp(&[]).tcp_dns_length_prefix(false).build());
    assert_eq!(p.stat(DnsStat::TcpNoHeader), 1);
    assert_eq!(p.stat(DnsStat::Malformed), 0);
});

/// DNS-over-TCP messages back to back, each with its length prefix, in one
/// segment's payload.
fn tcp_messages(messages: &[Vec<u8>]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|m| {
            let len = u16::try_from(m.len()).unwrap().to_be_bytes();
            len.into_iter().chain(m.iter().copied())
        })
        .collect()
}

fn tcp_segment(from_client: bool, payload: &[u8]) -> Frame {
    let (src, dst, sport, dport) = if from_client {
        (CLIENT, SERVER, 40100, 53)
    } else {
        (SERVER, CLIENT, 53, 40100)
    };
    Frame::ipv4(
        src,
        dst,
        L4::Tcp {
            src: sport,
            dst: dport,
            flags: 0x18,
            seq: 1,
        },
        payload,
    )
    .tcp_dns_length_prefix(false)
}

privileged_test!(tcp_segment_with_a_and_aaaa_parses_both, |p| {
    // glibc `options use-vc`: A and AAAA written in one segment; the server
    // may answer both in one segment too.
    let name = "api.lab.test";
    let queries = tcp_messages(&[
        DnsMsg::query(0x10, name, 1).bytes(),
        DnsMsg::query(0x11, name, 28).bytes(),
    ]);
    let answers = tcp_messages(&[
        DnsMsg::response(0x10, name, 1, 0, 1).bytes(),
        DnsMsg::response(0x11, name, 28, 0, 1).bytes(),
    ]);
    let before = read_stats(&p.ebpf).unwrap();
    p.run(&tcp_segment(true, &queries).build());
    p.run_on("dns_tc_egress", &tcp_segment(false, &answers).build());
    assert_eq!(p.stat(DnsStat::Queries), 2);
    assert_eq!(p.stat(DnsStat::Answers), 2);
    assert_eq!(p.stat(DnsStat::Matched), 2);
    assert_eq!(p.stat(DnsStat::TcpMoreMessages), 2);
    assert_eq!(p.stat(DnsStat::ParallelPairs), 1);
    assert_eq!(
        p.unexpected(
            &before,
            &[
                DnsStat::Queries,
                DnsStat::Answers,
                DnsStat::Matched,
                DnsStat::TcpMoreMessages,
                DnsStat::ParallelPairs,
                DnsStat::PendingInserted,
                // v6.1: the first entries of a fresh map may spill.
                DnsStat::HistSpilled,
            ]
        ),
        Vec::<&str>::new()
    );
    assert_eq!(p.loss(Loss::DnsTailCall), 0);
});

privileged_test!(tcp_messages_past_the_cap_or_the_segment_are_counted, |p| {
    let many: Vec<Vec<u8>> = (0..10u16)
        .map(|i| DnsMsg::query(0x100 + i, &format!("n{i}.lab.test"), 1).bytes())
        .collect();
    p.run(&tcp_segment(true, &tcp_messages(&many)).build());
    let max = u64::from(tracer_common::dns::TCP_MESSAGES_MAX);
    assert_eq!(p.stat(DnsStat::Queries), max);
    assert_eq!(p.stat(DnsStat::TcpMoreMessages), max - 1);
    assert_eq!(p.stat(DnsStat::TcpMessagesOverCap), 1);
    // A message whose length runs past its segment: its header is parsed,
    // the split is counted.
    let mut split = tcp_messages(&[DnsMsg::query(0x200, "split.lab.test", 1).bytes()]);
    split.truncate(split.len() - 3);
    p.run(&tcp_segment(true, &split).build());
    assert_eq!(p.stat(DnsStat::TcpSplitMessages), 1);
    assert_eq!(p.stat(DnsStat::Queries), max + 1);
    assert_eq!(p.stat(DnsStat::TcpNextFailed), 0);
});

privileged_test!(pairs_are_a_and_aaaa_for_one_name, |p| {
    // dnsperf's shape: A only, several ids in flight on one socket.
    for id in 0..5 {
        p.run(&udp_query(0x300 + id, &format!("n{id}.lab.test"), 1, 40300).build());
    }
    // A and AAAA, but for two names.
    p.run(&udp_query(0x310, "one.lab.test", 1, 40301).build());
    p.run(&udp_query(0x311, "two.lab.test", 28, 40301).build());
    // Two A queries for one name (a re-ask with a new id).
    p.run(&udp_query(0x320, "one.lab.test", 1, 40302).build());
    p.run(&udp_query(0x321, "one.lab.test", 1, 40302).build());
    assert_eq!(p.stat(DnsStat::ParallelPairs), 0);
    p.run(&udp_query(0x322, "one.lab.test", 28, 40302).build());
    assert_eq!(p.stat(DnsStat::ParallelPairs), 1, "A then AAAA, same name");
});

privileged_test!(a_query_asked_again_after_its_answer_is_a_resend, |p| {
    let name = "again.lab.test";
    p.run(&udp_query(0x400, name, 1, 40400).build());
    p.run_on(
        "dns_tc_egress",
        &udp_answer(0x400, name, 1, 0, 40400).build(),
    );
    assert_eq!(p.stat(DnsStat::Matched), 1);
    p.run(&udp_query(0x400, name, 1, 40400).build());
    assert_eq!(
        p.stat(DnsStat::ResentAfterAnswer),
        1,
        "asked again after the answer"
    );
    assert_eq!(p.stat(DnsStat::Resent), 0);
    assert_eq!(p.stat(DnsStat::PendingInserted), 2);
});

privileged_test!(the_query_direction_is_recorded, |p| {
    use aya::maps::HashMap as BpfHashMap;
    use tracer_common::dns::{DnsKey, DnsPending, QUERY_EGRESS, QUERY_INGRESS};
    p.run(&udp_query(0x500, "in.lab.test", 1, 40500).build());
    p.run_on(
        "dns_tc_egress",
        &udp_query(0x501, "out.lab.test", 1, 40501).build(),
    );
    // An answer on ingress matches a query seen on egress.
    p.run(&udp_answer(0x501, "out.lab.test", 1, 0, 40501).build());
    assert_eq!(p.stat(DnsStat::Matched), 1);
    let pending: BpfHashMap<_, DnsKey, DnsPending> =
        BpfHashMap::try_from(p.ebpf.map("DNS_PENDING").unwrap()).unwrap();
    let dirs: Vec<(u16, u8)> = pending
        .keys()
        .map(|k| k.unwrap())
        .map(|k| (k.id, k.query_dir))
        .collect();
    assert_eq!(dirs, vec![(0x500, QUERY_INGRESS)], "{QUERY_EGRESS}");
});

privileged_test!(bogus_counts_and_bad_names, |p| {
    p.run(
        &Frame::ipv4(
            CLIENT,
            SERVER,
            L4::Udp {
                src: 40010,
                dst: 53,
            },
            &DnsMsg::query(10, "example.com", 1).qdcount(0).bytes(),
        )
        .build(),
    );
    p.run(
        &Frame::ipv4(
            CLIENT,
            SERVER,
            L4::Udp {
                src: 40011,
                dst: 53,
            },
            &DnsMsg::query(11, "example.com", 1).qdcount(9).bytes(),
        )
        .build(),
    );
    assert_eq!(p.stat(DnsStat::BogusCounts), 2);
    // A compression pointer pointing at itself.
    let looped = DnsMsg::query(12, "example.com", 1)
        .raw_name(&[0xc0, 0x0c])
        .bytes();
    p.run(
        &Frame::ipv4(
            CLIENT,
            SERVER,
            L4::Udp {
                src: 40012,
                dst: 53,
            },
            &looped,
        )
        .build(),
    );
    assert_eq!(p.stat(DnsStat::Malformed), 1);
    // A 200-byte name: longer than the question we keep.
    let long = format!("{}.example", ["abcdefghij"; 19].join("."));
    p.run(&udp_query(13, &long, 1, 40013).build());
    assert_eq!(p.stat(DnsStat::QuestionCut), 1);
    assert_eq!(p.stat(DnsStat::Queries), 4);
});

privileged_test!(fragments_and_non_dns_are_skipped, |p| {
    p.run(
        &udp_query(14, "example.com", 1, 40014)
            .ipv4_fragment(185, false)
            .build(),
    );
    assert_eq!(p.stat(DnsStat::Fragments), 1);
    let before = read_stats(&p.ebpf).unwrap();
    p.run(
        &Frame::ipv4(
            CLIENT,
            SERVER,
            L4::Udp {
                src: 40015,
                dst: 5353,
            },
            &[0; 40],
        )
        .build(),
    );
    assert_eq!(
        p.unexpected(&before, &[]),
        Vec::<&str>::new(),
        "non-DNS counts nothing"
    );
});

privileged_test!(error_rcode_and_truncated_answers, |p| {
    p.run(&udp_query(15, "example.com", 1, 40016).build());
    p.run_on(
        "dns_tc_egress",
        &udp_answer(15, "example.com", 1, 2, 40016).build(),
    );
    assert_eq!(p.rcode(2), 1, "SERVFAIL");
    p.run(&udp_query(16, "example.com", 1, 40017).build());
    p.run_on(
        "dns_tc_egress",
        &Frame::ipv4(
            SERVER,
            CLIENT,
            L4::Udp {
                src: 53,
                dst: 40017,
            },
            &DnsMsg::response(16, "example.com", 1, 0, 0)
                .truncated(true)
                .bytes(),
        )
        .build(),
    );
    assert_eq!(p.stat(DnsStat::Truncated), 1);
    assert_eq!(p.stat(DnsStat::Matched), 2);
    let losses = tracer::loss::read(&p.ebpf).unwrap();
    assert!(
        losses
            .iter()
            .all(|(l, n)| *n == 0 || *l == Loss::CounterMapFull)
    );
});

privileged_test!(verifier_work_stays_far_below_the_limit, |p| {
    // The verifier's count of processed instructions (v5.16+; none before,
    // where passing the load is the check). 1 M is the limit; the DNS
    // programs must stay far below it on every kernel the matrix boots.
    for (_, name) in tracer_common::tc::DNS_TAIL_PROGRAMS {
        let prog: &SchedClassifier = p.ebpf.program(name).unwrap().try_into().unwrap();
        let verified = prog.info().unwrap().verified_instruction_count();
        eprintln!("{name}: verified instructions {verified:?}");
        if let Some(n) = verified {
            assert!(n < 250_000, "{name}: {n} instructions verified");
        }
    }
});

privileged_test!(racing_first_answers_all_land_in_histograms, |p| {
    // Two CPUs answer a query to a server never seen before at the same
    // moment: both try to create its histogram. Every answer must land in
    // it (the loser of the insert finds the winner's entry); "map full"
    // is for a full map only.
    use std::sync::Barrier;

    use nix::{
        sched::{CpuSet, sched_setaffinity},
        unistd::Pid,
    };
    // New (interface, server) keys in one burst: as many as a node's pods
    // getting their first answer at once, within the spill map.
    const ROUNDS: u16 = 48;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for worker in 0..2u16 {
            let (p, barrier) = (&p, &barrier);
            s.spawn(move || {
                let mut set = CpuSet::new();
                set.set(usize::from(worker) % cpus).unwrap();
                sched_setaffinity(Pid::from_raw(0), &set).unwrap();
                for round in 0..ROUNDS {
                    let server = Ipv4Addr::new(10, 97, (round >> 8) as u8, round as u8);
                    let port = 41000 + worker;
                    let id = round;
                    let query = Frame::ipv4(
                        CLIENT,
                        server,
                        L4::Udp { src: port, dst: 53 },
                        &DnsMsg::query(id, "race.lab.test", 1).bytes(),
                    )
                    .build();
                    let answer = Frame::ipv4(
                        server,
                        CLIENT,
                        L4::Udp { src: 53, dst: port },
                        &DnsMsg::response(id, "race.lab.test", 1, 0, 1).bytes(),
                    )
                    .build();
                    p.run(&query);
                    barrier.wait();
                    p.run_on("dns_tc_egress", &answer);
                }
            });
        }
    });
    let matched = p.stat(DnsStat::Matched);
    assert_eq!(matched, 2 * u64::from(ROUNDS));
    let in_hists: u64 = dns::collector::read_hist_totals(&p.ebpf).unwrap();
    assert_eq!(p.loss(Loss::DnsHistMapFull), 0, "the map has room");
    assert_eq!(p.loss(Loss::DnsHistInsert), 0);
    assert_eq!(in_hists, matched, "no answer lost from the histograms");
    eprintln!(
        "{matched} answers, {} through the spill histograms",
        p.stat(DnsStat::HistSpilled)
    );
});
