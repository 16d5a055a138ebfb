//! Proves the DNS harness (`tracer_tests::dns`) on a bridge-mode topology:
//! pod 0 runs dnsmasq, pods 1 and 2 look names up with real glibc programs,
//! tcpdump/tshark on the clients' host-side veths (node namespace) see it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use tracer::lab::topology::{Datapath, Pod, Topology};
use tracer_tests::{
    dns::{
        Capture, DnsPacket, DnsServer, DropFirstAaaaAnswer, QTYPE_A, QTYPE_AAAA, ResolvConf,
        Transport, allow_aaaa_lookups, getaddrinfo_unspec, getent_ahosts, getent_ahosts_many,
        netem_delay, query,
    },
    privileged,
};

const NAME: &str = "svc1.lab.test";
const V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10);

fn records() -> Vec<(&'static str, Ipv4Addr, Ipv6Addr)> {
    vec![
        (NAME, V4, V6),
        (
            "svc2.lab.test",
            Ipv4Addr::new(10, 96, 0, 11),
            "fd00::11".parse().unwrap(),
        ),
        (
            "svc3.lab.test",
            Ipv4Addr::new(10, 96, 0, 12),
            "fd00::12".parse().unwrap(),
        ),
        (
            "short",
            Ipv4Addr::new(10, 96, 0, 13),
            "fd00::13".parse().unwrap(),
        ),
    ]
}

fn lab() -> (Topology, Pod, Pod, Pod) {
    let topo = Topology::build(Datapath::Bridge, 3).expect("build topology");
    let (server, c1, c2) = (
        topo.pods[0].clone(),
        topo.pods[1].clone(),
        topo.pods[2].clone(),
    );
    (topo, server, c1, c2)
}

fn show(packets: &[DnsPacket]) {
    for p in packets {
        eprintln!(
            "{:.6} {}:{} -> {}:{} {} id={:#06x} {} {} type={} rcode={} dns.time={:?}{}",
            p.time,
            p.src,
            p.src_port,
            p.dst,
            p.dst_port,
            if p.tcp { "tcp" } else { "udp" },
            p.id,
            if p.response { "resp" } else { "qry " },
            p.name,
            p.qtype,
            p.rcode,
            p.dns_time,
            if p.retransmission { " RETRANS" } else { "" },
        );
    }
}

/// Queries and responses of `packets`.
fn split(packets: &[DnsPacket]) -> (Vec<&DnsPacket>, Vec<&DnsPacket>) {
    packets.iter().partition(|p| !p.response)
}

#[test]
fn lookup_is_two_queries_two_answers_on_the_client_veth() {
    if !privileged("lookup_is_two_queries_two_answers_on_the_client_veth") {
        return;
    }
    let (topo, server, client, _) = lab();
    let dns = DnsServer::start(&server.netns, server.ip, &records());
    let _conf = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
    allow_aaaa_lookups(&client.netns);

    let capture = Capture::start(&topo.node, &client.host_if);
    let lookup = getent_ahosts(&client.netns, NAME);
    let packets = capture.stop();
    show(&packets);
    eprintln!("{lookup:?}");

    assert!(lookup.ok(), "lookup failed: {lookup:?}");
    assert!(lookup.addrs.contains(&IpAddr::V4(V4)), "{lookup:?}");
    assert!(lookup.addrs.contains(&IpAddr::V6(V6)), "{lookup:?}");
    assert!(lookup.elapsed < Duration::from_secs(1), "{lookup:?}");

    let (queries, responses) = split(&packets);
    assert_eq!(queries.len(), 2, "A and AAAA queries");
    assert_eq!(responses.len(), 2, "A and AAAA responses");
    let mut types: Vec<u16> = queries.iter().map(|q| q.qtype).collect();
    types.sort_unstable();
    assert_eq!(types, [QTYPE_A, QTYPE_AAAA]);
    // One UDP socket for both (glibc's parallel sendmmsg).
    assert_eq!(queries[0].src_port, queries[1].src_port);
    for q in &queries {
        assert!(!q.tcp);
        assert_eq!((q.src, q.dst, q.dst_port), (client.ip, server.ip, 53));
        assert_eq!(q.name, NAME);
    }
    for r in &responses {
        assert_eq!((r.src, r.src_port, r.dst), (server.ip, 53, client.ip));
        assert_eq!(r.rcode, 0);
        assert!(queries.iter().any(|q| q.id == r.id && q.qtype == r.qtype));
        let t = r.dns_time.expect("dns.time on every response");
        assert!(t > 0.0 && t < 0.1, "dns.time {t}");
    }
    assert_eq!(dns.queries_logged("A", NAME, client.ip), 1);
    assert_eq!(dns.queries_logged("AAAA", NAME, client.ip), 1);
}

#[test]
fn a_only_perl_tcp_and_concurrent_lookups() {
    if !privileged("a_only_perl_tcp_and_concurrent_lookups") {
        return;
    }
    let (topo, server, c1, c2) = lab();
    let dns = DnsServer::start(&server.netns, server.ip, &records());
    let _conf1 = ResolvConf::write(&c1.netns, server.ip, &["timeout:5", "attempts:2"]);
    let _conf2 = ResolvConf::write(&c2.netns, server.ip, &["timeout:5", "attempts:2", "use-vc"]);

    // The harness's own client, both transports.
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = query(
            &c1.netns,
            dns.addr(),
            NAME,
            QTYPE_AAAA,
            transport,
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("{transport:?} query: {e}"));
        assert_eq!((reply.rcode, reply.answers), (0, 1), "{transport:?}");
        let refused = query(
            &c1.netns,
            dns.addr(),
            "nope.lab.test",
            QTYPE_A,
            transport,
            Duration::from_secs(2),
        )
        .expect("query for an unknown name");
        assert_eq!(refused.rcode, 5, "unknown names are REFUSED (no upstream)");
    }

    let cap1 = Capture::start(&topo.node, &c1.host_if);
    let cap2 = Capture::start(&topo.node, &c2.host_if);
    // No IPv6 in the pod: AI_ADDRCONFIG makes getent ask A only.
    let a_only = getent_ahosts(&c1.netns, NAME);
    // perl's getaddrinfo has no AI_ADDRCONFIG: A + AAAA.
    let both = getaddrinfo_unspec(&c1.netns, NAME);
    let missing = getent_ahosts(&c1.netns, "nope.lab.test");
    // glibc over TCP (`options use-vc`).
    allow_aaaa_lookups(&c2.netns);
    let over_tcp = getent_ahosts(&c2.netns, NAME);
    let p1 = cap1.stop();
    let p2 = cap2.stop();
    eprintln!("pod 1:");
    show(&p1);
    eprintln!("pod 2:");
    show(&p2);

    assert!(
        a_only.ok() && a_only.addrs == [IpAddr::V4(V4)],
        "{a_only:?}"
    );
    assert!(both.ok(), "{both:?}");
    assert!(
        both.addrs.contains(&IpAddr::V4(V4)) && both.addrs.contains(&IpAddr::V6(V6)),
        "{both:?}"
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(over_tcp.ok() && over_tcp.addrs.len() == 2, "{over_tcp:?}");

    let (q1, r1) = split(&p1);
    // getent A; perl A + AAAA; unknown name: A, REFUSED, then tried again.
    let qtypes: Vec<(&str, u16)> = q1.iter().map(|q| (q.name.as_str(), q.qtype)).collect();
    assert_eq!(
        &qtypes[..3],
        [(NAME, QTYPE_A), (NAME, QTYPE_A), (NAME, QTYPE_AAAA)]
    );
    assert!(q1[3..].iter().all(|q| q.name == "nope.lab.test"));
    assert!(
        r1.iter()
            .filter(|r| r.name == NAME)
            .all(|r| r.rcode == 0 && r.dns_time.is_some())
    );
    assert!(r1.iter().filter(|r| r.name != NAME).all(|r| r.rcode == 5));
    assert!(p1.iter().all(|p| !p.tcp));

    let (q2, r2) = split(&p2);
    assert_eq!(q2.len(), 2, "A + AAAA over TCP");
    assert_eq!(r2.len(), 2);
    assert!(p2.iter().all(|p| p.tcp));
    assert!(r2.iter().all(|r| r.dns_time.is_some() && r.rcode == 0));

    // Concurrent lookups, distinct and repeated names.
    allow_aaaa_lookups(&c1.netns);
    let cap = Capture::start(&topo.node, &c1.host_if);
    let names = [
        "svc1.lab.test",
        "svc2.lab.test",
        "svc3.lab.test",
        "short",
        "svc1.lab.test",
    ];
    let lookups = getent_ahosts_many(&c1.netns, &names, true);
    let packets = cap.stop();
    show(&packets);
    for l in &lookups {
        assert!(l.ok() && l.addrs.len() == 2, "{l:?}");
    }
    let (q, r) = split(&packets);
    assert_eq!((q.len(), r.len()), (10, 10));
    assert!(r.iter().all(|r| r.dns_time.is_some()));
    let sequential = getent_ahosts_many(&c1.netns, &names[..2], false);
    assert!(sequential.iter().all(|l| l.ok()));
}

#[test]
fn delayed_answers_show_in_dns_time() {
    if !privileged("delayed_answers_show_in_dns_time") {
        return;
    }
    const DELAY: Duration = Duration::from_millis(50);
    let (topo, server, client, tcp_client) = lab();
    let dns = match netem_delay(&server.netns, "eth0", DELAY) {
        Ok(()) => {
            eprintln!("delay by netem on the server pod's eth0");
            DnsServer::start(&server.netns, server.ip, &records())
        }
        Err(err) => {
            eprintln!("{err}\n→ delay by DnsServer::start_delayed instead");
            DnsServer::start_delayed(&server.netns, server.ip, &records(), DELAY)
        }
    };
    let _conf = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
    allow_aaaa_lookups(&client.netns);
    assert!(
        getent_ahosts(&client.netns, NAME).ok(),
        "warm-up lookup (ARP)"
    );

    let _tcp_conf = ResolvConf::write(&tcp_client.netns, server.ip, &["use-vc"]);
    allow_aaaa_lookups(&tcp_client.netns);
    assert!(
        getent_ahosts(&tcp_client.netns, NAME).ok(),
        "warm-up lookup (ARP)"
    );

    let capture = Capture::start(&topo.node, &client.host_if);
    let tcp_capture = Capture::start(&topo.node, &tcp_client.host_if);
    let lookups = getent_ahosts_many(&client.netns, &[NAME, "svc2.lab.test", "short"], false);
    let tcp_lookup = getent_ahosts(&tcp_client.netns, NAME);
    let reply = query(
        &client.netns,
        dns.addr(),
        NAME,
        QTYPE_A,
        Transport::Tcp,
        Duration::from_secs(1),
    )
    .expect("TCP query");
    let packets = capture.stop();
    let tcp_packets = tcp_capture.stop();
    show(&packets);
    show(&tcp_packets);
    assert!(reply.elapsed >= DELAY, "{reply:?}");
    assert!(
        tcp_lookup.ok() && tcp_lookup.elapsed >= DELAY,
        "{tcp_lookup:?}"
    );
    // Pipelined A + AAAA over one connection: both wait DELAY, not 2 × DELAY.
    assert!(tcp_lookup.elapsed < 2 * DELAY, "{tcp_lookup:?}");
    let (_, tcp_responses) = split(&tcp_packets);
    assert_eq!(tcp_responses.len(), 2);
    for r in tcp_responses {
        assert!(r.tcp);
        let t = r.dns_time.expect("dns.time");
        assert!(
            // The delay is a floor; an upper bound would only measure how
            // busy the machine is (other tests run in parallel).
            (0.050..0.250).contains(&t),
            "TCP dns.time {t:.6} s is not ≥ 50 ms"
        );
    }

    for l in &lookups {
        assert!(l.ok(), "{l:?}");
        assert!(l.elapsed >= DELAY, "{l:?}");
    }
    let (queries, responses) = split(&packets);
    // 6 from getent, then the harness's TCP query.
    assert_eq!((queries.len(), responses.len()), (7, 7));
    for r in responses {
        let t = r.dns_time.expect("dns.time");
        assert!(
            (0.050..0.250).contains(&t),
            "dns.time {t:.6} s is not ≥ 50 ms"
        );
    }
}

#[test]
fn lost_aaaa_answer_costs_one_resolver_timeout() {
    if !privileged("lost_aaaa_answer_costs_one_resolver_timeout") {
        return;
    }
    let (topo, server, client, _) = lab();
    let _dns = DnsServer::start(&server.netns, server.ip, &records());
    let _conf = ResolvConf::write(&client.netns, server.ip, &["timeout:5", "attempts:2"]);
    allow_aaaa_lookups(&client.netns);
    let drop = DropFirstAaaaAnswer::install(&server.netns, NAME);
    // Another name's AAAA answer is not affected.
    assert!(getent_ahosts(&client.netns, "svc2.lab.test").elapsed < Duration::from_secs(1));
    assert_eq!(drop.packets_dropped(), 0);

    let capture = Capture::start(&topo.node, &client.host_if);
    let lookup = getent_ahosts(&client.netns, NAME);
    let packets = capture.stop();
    show(&packets);
    eprintln!("{lookup:?}");

    assert!(lookup.ok() && lookup.addrs.len() == 2, "{lookup:?}");
    assert!(
        lookup.elapsed >= Duration::from_secs(5) && lookup.elapsed < Duration::from_millis(5500),
        "one 5 s resolver timeout, took {:?}",
        lookup.elapsed
    );
    assert_eq!(drop.packets_dropped(), 1);
    assert_eq!(drop.packets_passed(), 1, "the re-sent AAAA was answered");

    // First round: A + AAAA in parallel, only the A answer comes back.
    // After 5 s glibc re-sends BOTH, from the same socket (source port) with
    // the same ids, now one at a time: AAAA only once A is answered (it
    // switched to single-request mode).
    let (queries, responses) = split(&packets);
    assert_eq!(queries.len(), 4, "A + AAAA, then both again");
    assert_eq!(responses.len(), 3, "the first AAAA answer was dropped");
    let (first, retry) = queries.split_at(2);
    let ports: Vec<u16> = queries.iter().map(|q| q.src_port).collect();
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "same source port: {ports:?}"
    );
    let key = |q: &&DnsPacket| (q.qtype, q.id);
    let mut a: Vec<_> = first.iter().map(key).collect();
    let mut b: Vec<_> = retry.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "same types and ids re-sent");
    let gap = retry[0].time - first[1].time;
    assert!((4.99..5.1).contains(&gap), "re-sent after {gap:.3} s");
    assert_eq!(retry[0].qtype, QTYPE_A);
    let a_answer = responses
        .iter()
        .find(|r| r.qtype == QTYPE_A && r.time > first[1].time + 1.0);
    let a_answer = a_answer.expect("re-sent A answered");
    assert!(
        a_answer.time <= retry[1].time,
        "AAAA re-sent only after the A answer"
    );

    // tshark: the re-sent A (first copy answered) is a new transaction; the
    // re-sent AAAA (first copy unanswered) is a retransmission, and its
    // answer is matched to the original query: dns.time includes the 5 s.
    assert!(!retry[0].retransmission && retry[1].retransmission);
    let a_time = a_answer.dns_time.expect("dns.time of the re-sent A");
    assert!(a_time < 0.1, "A re-sent, answered in {a_time} s");
    let aaaa = responses
        .iter()
        .find(|r| r.qtype == QTYPE_AAAA)
        .expect("AAAA answer");
    let aaaa_time = aaaa.dns_time.expect("dns.time of the AAAA answer");
    assert!(
        // 5 s timeout; the upper bound only allows for a busy machine.
        (5.0..5.5).contains(&aaaa_time),
        "AAAA answered {aaaa_time} s after the first query"
    );

    // The rule is spent: the next lookup of the same name is fast.
    assert!(getent_ahosts(&client.netns, NAME).elapsed < Duration::from_secs(1));
    assert_eq!(drop.packets_dropped(), 1);
    assert_eq!(drop.packets_passed(), 2);
}
