//! The counter probe on real topologies: exact packet and byte counts for a
//! known number of UDP datagrams between pods, in both datapaths.

use std::{net::SocketAddrV4, time::Duration};

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use tracer::{
    attach::{TcAttachMode, TcAttachments},
    counter,
    lab::topology::{Datapath, Topology},
    netns, probes,
};
use tracer_common::counter::{Direction, IfaceCounters};
use tracer_tests::{Receiver, UDP_OVERHEAD, privileged, send_udp, warm_up};

const DATAGRAMS: u64 = 500;
const PAYLOAD: usize = 100;
const PORT: u16 = 5301;

fn exact_counts(datapath: Datapath, mode: TcAttachMode) {
    let topo = Topology::build(datapath, 3).expect("build topology");
    let pods = topo.pods.clone();
    let (sender, receiver) = (&pods[0], &pods[1]);

    let rx = Receiver::start(&receiver.netns, receiver.ip, PORT);
    let to = SocketAddrV4::new(receiver.ip, PORT);
    warm_up(&sender.netns, &rx, to, PORT);

    let host_ifs: Vec<String> = pods.iter().map(|p| p.host_if.clone()).collect();
    let sender_ns = sender.netns.clone();
    let (delta, ifindex) = netns::run_in(&topo.node, move || {
        let mut ebpf = probes::load().expect("load eBPF object");
        let mut tc = TcAttachments::load_with_mode(&mut ebpf, &counter::PROGRAMS, mode)
            .expect("load programs");
        for name in &host_ifs {
            tc.attach(&mut ebpf, name).expect("attach");
        }
        let ifindex: Vec<u32> = host_ifs
            .iter()
            .map(|n| nix::net::if_::if_nametoindex(n.as_str()).expect("ifindex"))
            .collect();
        let before = counter::read(&ebpf).expect("read counters");
        send_udp(&sender_ns, to, PORT, DATAGRAMS, PAYLOAD);
        std::thread::sleep(Duration::from_millis(200));
        let after = counter::read(&ebpf).expect("read counters");
        tc.detach_all(&mut ebpf);
        (counter::delta(&before, &after), ifindex)
    })
    .expect("enter node namespace");
    assert_eq!(rx.finish(), DATAGRAMS + 1, "receiver got every datagram");

    let get = |i: usize, dir| delta.get(&(ifindex[i], dir)).copied().unwrap_or_default();
    let expected = IfaceCounters {
        packets: DATAGRAMS,
        bytes: DATAGRAMS * (UDP_OVERHEAD + PAYLOAD as u64),
    };
    let none = IfaceCounters::default();
    assert_eq!(
        get(0, Direction::Ingress),
        expected,
        "{datapath:?}: sender's host veth, from the pod"
    );
    assert_eq!(
        get(1, Direction::Egress),
        expected,
        "{datapath:?}: receiver's host veth, to the pod"
    );
    assert_eq!(
        get(0, Direction::Egress),
        none,
        "{datapath:?}: nothing back to the sender"
    );
    assert_eq!(
        get(1, Direction::Ingress),
        none,
        "{datapath:?}: nothing from the receiver"
    );
    assert_eq!(
        get(2, Direction::Egress),
        none,
        "{datapath:?}: FDB knows the receiver: no flood to the bystander"
    );
    assert_eq!(
        get(2, Direction::Ingress),
        none,
        "{datapath:?}: bystander silent"
    );
}

#[test_log::test]
fn counts_exact_udp_on_bridge_mode() {
    if privileged("counts_exact_udp_on_bridge_mode") {
        exact_counts(Datapath::Bridge, TcAttachMode::detect());
    }
}

#[test_log::test]
fn counts_exact_udp_on_transparent_mode() {
    if privileged("counts_exact_udp_on_transparent_mode") {
        exact_counts(Datapath::Transparent, TcAttachMode::detect());
    }
}

/// The same through clsact + cls_bpf filters, on any kernel.
#[test_log::test]
fn legacy_counter_counts_exact_udp_on_bridge_mode() {
    if privileged("legacy_counter_counts_exact_udp_on_bridge_mode") {
        exact_counts(Datapath::Bridge, TcAttachMode::Legacy);
    }
}

/// BPF_PROG_TEST_RUN (v4.12+) on a crafted frame: the program runs, returns
/// TC_ACT_UNSPEC (TCX_NEXT) and counts each run against the test device.
#[test_log::test]
fn counter_program_test_run() {
    if !privileged("counter_program_test_run") {
        return;
    }
    let mut ebpf = probes::load().expect("load eBPF object");
    let _tc = TcAttachments::load(&mut ebpf, &counter::PROGRAMS).expect("load programs");
    let frame = [0u8; 64];
    for program in counter::PROGRAMS {
        let prog: &SchedClassifier = ebpf
            .program(program.name)
            .expect("program")
            .try_into()
            .expect("classifier");
        let opts = TestRunOptions {
            data_in: Some(&frame),
            repeat: 10,
            ..TestRunOptions::new()
        };
        let result = prog.test_run(opts).expect("test_run");
        assert_eq!(
            result.return_value as i32, -1,
            "{} returns TC_ACT_UNSPEC",
            program.name
        );
    }
    let counts = counter::read(&ebpf).expect("read counters");
    let total = |dir| -> u64 {
        counts
            .iter()
            .filter(|((_, d), _)| *d == dir)
            .map(|(_, c)| c.packets)
            .sum()
    };
    assert_eq!(total(Direction::Ingress), 10);
    assert_eq!(total(Direction::Egress), 10);
    let bytes: u64 = counts.values().map(|c| c.bytes).sum();
    assert_eq!(bytes, 20 * 64);
}
